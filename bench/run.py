#!/usr/bin/env python3
"""fogmesh benchmark harness.

Runs benchmark scenarios side by side with the tools people would use instead, in one
invocation on one machine, and writes the figures as JSON and as a Markdown table (with the
machine and the date) into bench/results/<date>-<host>/.

    bench/run.py                 every scenario
    bench/run.py startup         only the named ones
    bench/run.py --list
    bench/run.py --runs 5        repetitions per measurement (medians are reported)

Figures vary from run to run on a shared machine; compare the rows of one run with each other
(the ratio column), not with another day's numbers.
"""

import argparse
import datetime
import importlib
import json
import os
import platform
import pkgutil
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import scenarios  # noqa: E402
from scenarios.common import Context  # noqa: E402


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    return {"host": socket.gethostname(), "kernel": platform.release(), "cpu": cpu,
            "cores": os.cpu_count(), "memory_gib": round(mem_kb / 1048576, 1)}


def git_rev():
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                       text=True)
    return r.stdout.strip() or "?"


def all_scenarios():
    found = {}
    for m in pkgutil.iter_modules(scenarios.__path__):
        if m.name == "common" or m.name.startswith("_"):
            continue
        mod = importlib.import_module("scenarios." + m.name)
        found[mod.NAME] = mod
    return dict(sorted(found.items(), key=lambda kv: getattr(kv[1], "ORDER", 100)))


def markdown(report):
    out = [f"# fogmesh benchmarks, {report['date']}", "",
           f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
           f"{report['machine']['memory_gib']} GiB, Linux {report['machine']['kernel']}; "
           f"fogmesh {report['version']} at {report['commit']}.", ""]
    for sc in report["scenarios"]:
        out += [f"## {sc['name']}: {sc['title']}", "", sc.get("goal", ""), ""]
        if sc.get("error"):
            out += [f"Not measured: {sc['error']}", ""]
            continue
        out += ["| measurement | system | value | unit | vs baseline |",
                "|---|---|---:|---|---:|"]
        for r in sc["rows"]:
            ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else ""
            out.append(f"| {r['metric']} | {r['system']} | {r['value']:.4g} | {r['unit']} "
                       f"| {ratio} |")
        out += [""] + [f"- {n}" for n in sc.get("notes", [])] + [""]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build", default=os.environ.get("FOGMESH_BUILD",
                                                      os.path.join(ROOT, "build")))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()

    found = all_scenarios()
    if args.list:
        for name, mod in found.items():
            print(f"{name:12} {mod.TITLE}")
        return 0
    unknown = [n for n in args.names if n not in found]
    if unknown:
        print(f"bench: unknown scenario(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    chosen = args.names or list(found)

    now = datetime.datetime.now(datetime.timezone.utc)
    report = {"date": now.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "commit": git_rev(), "version": "?", "scenarios": []}
    ctx = Context(build=args.build, runs=args.runs)
    report["version"] = ctx.version()
    for name in chosen:
        mod = found[name]
        print(f"== {name}: {mod.TITLE}", flush=True)
        sc = {"name": name, "title": mod.TITLE, "goal": getattr(mod, "GOAL", ""), "rows": [],
              "notes": []}
        try:
            mod.run(ctx, sc)
        except Exception as e:  # one broken scenario must not lose the others' figures
            sc["error"] = f"{type(e).__name__}: {e}"
            print(f"   not measured: {sc['error']}", flush=True)
        finally:
            ctx.cleanup()
        for r in sc["rows"]:
            ratio = f"  ({r['ratio']:.2f}x baseline)" if r.get("ratio") is not None else ""
            print(f"   {r['metric']:<40} {r['system']:<10} {r['value']:>10.4g} {r['unit']}"
                  f"{ratio}", flush=True)
        report["scenarios"].append(sc)

    folder = os.path.join(args.out, now.strftime("%Y%m%d-%H%M%S") + "-" + socket.gethostname())
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(folder, "results.md"), "w") as f:
        f.write(markdown(report))
    print(f"results in {os.path.relpath(folder)}/results.md and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
