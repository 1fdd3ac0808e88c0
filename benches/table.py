"""Runs benchmarks several times with each broker placement and prints one table of their
rates and ratios: the median of the runs and their spread (lowest–highest).

Each bench run writes its results with ``--json``; a run that fails is reported and left out.

Usage:
    python benches/table.py [--benches producer,sink,analytics] [--brokers in-process,process,kafka]
                            [--runs 3] [--keep FOLDER]
    python benches/table.py --report FOLDER [FOLDER ...]   # the table of runs kept earlier

Rows and arguments per bench are the ones ``benches/README.md`` gives; extra arguments for
a bench can be set with ``--args BENCH="..."`` (e.g. ``--args sink="--rows 1000000"``).
"""

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARGS = {
    "producer": "--rows 500000 --tutorial-rows 300",
    "sink": "--rows 500000 --tutorial-seconds 5",
    "analytics": "--rows 300000",
    "query": "--rows 10000000 --sample 20000 --repeat 5",
    "scaling": "--rows 2000000",
}


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--benches", default="producer,sink,analytics")
    p.add_argument("--brokers", default="in-process,process,kafka")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--keep", type=Path, help="keep each run's JSON and output in this folder")
    p.add_argument("--args", action="append", default=[], metavar="BENCH=ARGS")
    p.add_argument("--report", nargs="+", type=Path, metavar="FOLDER")
    a = p.parse_args()
    if a.report:
        results = {}
        for folder in a.report:
            for path in sorted(folder.glob("*.json")):
                bench, rest = path.stem.split("-", 1)
                placement = rest.rsplit("-", 1)[0]
                results.setdefault((bench, placement), []).append(json.loads(path.read_text()))
        print_table(results, a.benches.split(","), a.brokers.split(","), a.runs, a.report)
        return
    args = dict(ARGS)
    for extra in a.args:
        bench, _, text = extra.partition("=")
        args[bench] = text
    folder = a.keep or Path(tempfile.mkdtemp(prefix="bench-table-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = {}  # (bench, placement) -> [dict per run]
    for bench in a.benches.split(","):
        for placement in a.brokers.split(","):
            for run in range(a.runs):
                out = folder / f"{bench}-{placement}-{run}"
                cmd = [sys.executable, str(HERE / f"{bench}.py"), *shlex.split(args[bench])]
                cmd += ["--json", f"{out}.json"]
                if placement != "in-process":
                    cmd += ["--broker", placement]
                began = time.perf_counter()
                with open(f"{out}.log", "w") as log:
                    code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
                took = time.perf_counter() - began
                status = "ok" if code == 0 else f"FAILED ({code}), see {out}.log"
                print(f"{bench} · {placement} · run {run + 1}: {took:.0f} s {status}", flush=True)
                if code == 0:
                    results.setdefault((bench, placement), []).append(
                        json.loads(Path(f"{out}.json").read_text())
                    )
    print_table(results, a.benches.split(","), a.brokers.split(","), a.runs, folder)


def print_table(results, benches, placements, runs, folder):
    print(f"\nmedian (lowest–highest) of {runs} runs; outputs in {folder}\n")
    print("| bench | result | " + " | ".join(placements) + " |")
    print("|---|---|" + "---:|" * len(placements))
    for bench in benches:
        names = []
        for placement in placements:
            for run in results.get((bench, placement), []):
                names += [n for n in run if n not in names]
        for name in names:
            cells = []
            for placement in placements:
                values = [r[name] for r in results.get((bench, placement), []) if name in r]
                cells.append(cell(values))
            print(f"| {bench} | {name} | " + " | ".join(cells) + " |")


def cell(values):
    if not values:
        return "–"
    mid, low, high = statistics.median(values), min(values), max(values)
    if mid >= 1000:
        return f"{mid:,.0f} ({low:,.0f}–{high:,.0f})"
    return f"{mid:.2f} ({low:.2f}–{high:.2f})"


if __name__ == "__main__":
    main()
