"""Fleet benchmark (`make bench`): scheduling and dispatch at 10, 100 and 1,000 simulated Macs.

Each row starts a fresh `redis-server`, the simulated hosts (production agents over in-process
Anka models, in `--agent-procs` processes) and the controller (the real reconciler with the
in-process Kubernetes stand-in, in its own process), submits a burst of AnkaJobs and measures;
see `anklet/dev/fleet/bench.py` for the protocol and `docs/benchmarks.md` for the results.
Prints the table (Markdown) and writes every figure as JSON. A benchmark, not a test: it
asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from anklet.dev.fleet.bench import Row, Scenario, default_workdir, machine, run_row, table

# hosts × pending jobs. 10 hosts × 2,000+ is left out: 20 slots behind a 2,000-job queue only
# repeats the 10 × 1,000 row's story at twice the wall time.
GRID = [
    (10, 10),
    (10, 100),
    (10, 1000),
    (100, 100),
    (100, 1000),
    (100, 2000),
    (100, 10000),
    (1000, 100),
    (1000, 1000),
    (1000, 2000),
    (1000, 10000),
]
QUICK = [(10, 10), (100, 1000), (1000, 2000)]


def parse_grid(text: str) -> list[tuple[int, int]]:
    cells = []
    for cell in text.split(","):
        hosts, pending = cell.lower().split("x")
        cells.append((int(hosts), int(pending)))
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grid", type=parse_grid, help="cells as HOSTSxPENDING,... (default: the full grid)")
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK}")
    parser.add_argument("--agent-procs", type=int, default=2, help="processes the simulated hosts share")
    parser.add_argument("--rate", type=float, help="submit jobs at this rate per second (default: a burst)")
    parser.add_argument("--out", type=Path, default=Path(".state/bench/fleet.json"), help="JSON results")
    parser.add_argument("--keep", action="store_true", help="keep each row's working directory (logs)")
    args = parser.parse_args()
    grid = args.grid or (QUICK if args.quick else GRID)
    info = machine()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, "
          f"load at start {info['load_at_start']}", flush=True)  # fmt: skip
    rows: list[Row] = []
    details = []
    started = time.monotonic()
    for hosts, pending in grid:
        sc = Scenario(hosts=hosts, pending=pending, agent_procs=min(args.agent_procs, hosts), rate=args.rate)
        workdir = default_workdir()
        print(f"- {hosts:>5} hosts × {pending:>6} jobs ...", end=" ", flush=True)
        try:
            row, detail = run_row(sc, workdir)
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        rows.append(row)
        details.append({"row": asdict(row), **detail})
        print(
            f"placed {row.placed} in {row.wall:.0f} s; dispatch p99 {row.dispatch_p99:.0f} ms"
            + ("" if row.settled else "  (did not settle: see JSON)"),
            flush=True,
        )
    print()
    print(table(rows))
    print(f"\ntotal {time.monotonic() - started:.0f} s; command: {' '.join(sys.argv)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, "argv": sys.argv, "rows": details}, indent=2))
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
