#!/usr/bin/env python3
"""Counts the test cases in every JUnit XML file of a folder and prints, in this order: one line
per file (suite) with its counts, the failures, the skipped tests grouped by their reason
("skipped: needs root (network namespaces): 7 tests ..."), and a last line
"N passed, N failed[, N skipped]". A skip is never silent: a test that did not run because the
machine lacks root, a container engine or a capability is named with the reason, so a run that
passed only because it skipped says so. Exits 1 when anything failed or when no test ran at
all."""

import sys
import xml.etree.ElementTree as ET
from collections import OrderedDict
from pathlib import Path


def skip_reason(el):
    """The reason pytest (message="...") or meson (text) gave for a skip."""
    msg = (el.get("message") or el.text or "").strip()
    # pytest's text is "path:line: reason"; its message is the reason alone.
    return msg.splitlines()[0] if msg else "no reason given"


def main(folder):
    passed = failed = skipped = 0
    failures = []
    skips = OrderedDict()  # reason -> [test names]
    suites = []
    files = sorted(Path(folder).glob("*.xml"))
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except ET.ParseError as e:
            failed += 1
            failures.append(f"{f.name}: unreadable results ({e})")
            suites.append(f"{f.stem}: unreadable")
            continue
        p = fl = sk = 0
        for case in root.iter("testcase"):
            name = f"{f.stem}: {case.get('classname', '')}::{case.get('name')}"
            s = case.find("skipped")
            if case.find("failure") is not None or case.find("error") is not None:
                fl += 1
                failures.append(name)
            elif s is not None:
                sk += 1
                skips.setdefault(skip_reason(s), []).append(name)
            else:
                p += 1
        passed, failed, skipped = passed + p, failed + fl, skipped + sk
        suites.append(f"{f.stem}: {p} passed, {fl} failed" + (f", {sk} skipped" if sk else ""))
    for line in suites:
        print(f"  {line}")
    for name in failures:
        print(f"FAILED {name}")
    for reason, names in skips.items():
        shown = ", ".join(names[:5]) + (f", ... ({len(names) - 5} more)" if len(names) > 5 else "")
        print(f"skipped: {reason}: {len(names)} test{'s' if len(names) != 1 else ''} ({shown})")
    tail = f", {skipped} skipped" if skipped else ""
    print(f"{passed} passed, {failed} failed{tail}")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
