#!/usr/bin/env python3
"""Counts the test cases in every JUnit XML file of a folder; prints the failures and a last
line "N passed, N failed" (skipped ones are reported after). Exits 1 when anything failed or
when no test ran at all."""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def main(folder):
    passed = failed = skipped = 0
    failures = []
    files = sorted(Path(folder).glob("*.xml"))
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except ET.ParseError as e:
            failed += 1
            failures.append(f"{f.name}: unreadable results ({e})")
            continue
        for case in root.iter("testcase"):
            name = f"{f.stem}: {case.get('classname', '')}::{case.get('name')}"
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
                failures.append(name)
            elif case.find("skipped") is not None:
                skipped += 1
            else:
                passed += 1
    for name in failures:
        print(f"FAILED {name}")
    tail = f", {skipped} skipped" if skipped else ""
    print(f"{passed} passed, {failed} failed{tail}")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
