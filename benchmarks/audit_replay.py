"""Audit replay benchmark: N days of the demo site re-verified by a second process.

The demo site (``controller/sites/demo.toml``: ten prosumers on CIGRE LV) runs its real
interval cycle in accelerated time (:func:`controller.demo.demo_runtime`, the simulators'
clocks jump from boundary to boundary) for ``--days`` days of 15-minute intervals on an anvil
node whose state file persists: every interval is read, cleared, AC-checked, written, metered,
settled on-chain and recorded. The database and the chain state are then copied, the
originals deleted, a fresh anvil node started from the copied state, and a second process runs

    peergrid audit verify --db sqlite:///COPY --rpc URL --settlement ADDRESS --json

(no site file), once in full (every record re-cleared from its recorded book, parameters and
grid, and compared with the chain both ways) and once with ``--no-reclear``. Measured:

* ``cycle s/interval``: wall time of the cycle's tick per interval (read, settle the ended
  interval on paper and on-chain, clear the next, write setpoints, record);
* ``clear s/interval``: the clearing part of it (``IntervalReport.wall_s``: standing orders,
  credit reads, base case, LP, AC loop, setpoints), the reference;
* ``verify s/interval``: the second process's wall time divided by the intervals (process
  start-up, imports and the anvil node's start included), and ``verify / clear``;
* the same for ``--no-reclear`` (hashes, roots, tables and the chain only).

The run fails (exit 1) unless every interval settled and both verifies report 0 problems.

    python benchmarks/audit_replay.py [--days 30] [--start 2026-06-01T00:00Z] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.chain.backends import AnvilNode
from controller.demo import demo_runtime

INTERVALS_PER_DAY = 96


def run_days(out: Path, start: datetime, intervals: int) -> dict[str, Any]:
    """Run the demo cycle for ``intervals`` intervals on anvil; time every tick."""
    ticks: list[float] = []
    clears: list[float] = []
    settled = 0
    started = time.perf_counter()
    with demo_runtime(out, start, "anvil") as rt:
        setup_s = time.perf_counter() - started
        settlement = str(rt.client.settlement.address)
        for k in range(intervals + 1):
            t0 = time.perf_counter()
            report = rt.tick(k, clear_next=k < intervals)
            ticks.append(time.perf_counter() - t0)
            if report.cleared is not None:
                clears.append(report.cleared.wall_s)
            if report.settled is not None and report.settled.outcome is not None:
                settled += 1
            if k and k % INTERVALS_PER_DAY == 0:
                done = time.perf_counter() - started
                print(f"  day {k // INTERVALS_PER_DAY} done, {done:.0f} s", flush=True)
    return {
        "settlement": settlement,
        "setup_s": setup_s,
        "run_s": time.perf_counter() - started,
        "settled": settled,
        "tick_s": ticks,
        "clear_s": clears,
    }


def verify(database: Path, state: Path, settlement: str, *extra: str) -> dict[str, Any]:
    """One ``peergrid audit verify`` process against a node started on a copy of ``state``."""
    copy = state.with_name(f"chain-{time.monotonic_ns()}.json")
    shutil.copy2(state, copy)  # the node rewrites its state file when it stops
    cwd = Path(tempfile.mkdtemp(prefix="verify-cwd-"))
    with AnvilNode(state_path=copy) as node:
        argv = [
            sys.executable,
            "-m",
            "controller",
            "audit",
            "verify",
            "--db",
            f"sqlite:///{database.as_posix()}",
            "--rpc",
            node.url,
            "--settlement",
            settlement,
            "--json",
            *extra,
        ]
        started = time.perf_counter()
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, check=False, env=dict(os.environ)
        )
        wall = time.perf_counter() - started
    shutil.rmtree(cwd, ignore_errors=True)
    try:
        summary = json.loads(proc.stdout)
    except json.JSONDecodeError:
        summary = {"problems": [f"no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}"]}
    return {"exit": proc.returncode, "wall_s": wall, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 unless everything settled and verified with 0 problems."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=30, help="days of 96 intervals (30)")
    parser.add_argument(
        "--start",
        default="2026-06-01T00:00Z",
        help="first boundary, UTC (default 2026-06-01T00:00Z)",
    )
    parser.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)
    start = datetime.fromisoformat(args.start.replace("Z", "+00:00")).astimezone(UTC)
    intervals = args.days * INTERVALS_PER_DAY
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="audit-replay-"))
    demo, auditor = work / "demo", work / "auditor"
    auditor.mkdir(parents=True, exist_ok=True)
    print(f"audit replay: {args.days} day(s), {intervals} intervals from {args.start} in {work}")
    run = run_days(demo, start, intervals)
    for name in ("peergrid-demo.sqlite", "anvil-state.json"):
        shutil.copy2(demo / name, auditor / name)
    shutil.rmtree(demo)
    database, state = auditor / "peergrid-demo.sqlite", auditor / "anvil-state.json"
    full = verify(database, state, run["settlement"])
    quick = verify(database, state, run["settlement"], "--no-reclear")

    clear = statistics.fmean(run["clear_s"])
    tick = statistics.fmean(run["tick_s"])
    per = {k: v["wall_s"] / intervals for k, v in (("full", full), ("quick", quick))}
    problems = [*full["summary"].get("problems", []), *quick["summary"].get("problems", [])]
    ok = (
        run["settled"] == intervals
        and not problems
        and full["exit"] == quick["exit"] == 0
        and full["summary"].get("verified") == intervals
        and (full["summary"].get("chain") or {}).get("settled_on_chain") == intervals
    )
    results = {
        "days": args.days,
        "intervals": intervals,
        "settled": run["settled"],
        "setup_s": round(run["setup_s"], 2),
        "run_s": round(run["run_s"], 1),
        "cycle_s_per_interval": round(tick, 3),
        "cycle_s_median": round(statistics.median(run["tick_s"]), 3),
        "clear_s_per_interval": round(clear, 3),
        "clear_s_median": round(statistics.median(run["clear_s"]), 3),
        "verify_s": round(full["wall_s"], 1),
        "verify_s_per_interval": round(per["full"], 3),
        "verify_over_clear": round(per["full"] / clear, 2),
        "verify_over_cycle": round(per["full"] / tick, 2),
        "verify_no_reclear_s": round(quick["wall_s"], 1),
        "verify_no_reclear_s_per_interval": round(per["quick"], 3),
        "verified": full["summary"].get("verified"),
        "records": full["summary"].get("records"),
        "chain": {
            k: v for k, v in (full["summary"].get("chain") or {}).items() if not isinstance(v, list)
        },
        "accepted": len(full["summary"].get("accepted") or []),
        "problems": problems[:20],
        "ok": ok,
    }
    print(
        f"{'days':>4} {'intervals':>9} {'cycle s/int':>11} {'clear s/int':>11} "
        f"{'verify s':>8} {'verify s/int':>12} {'verify/clear':>12} {'no-reclear s/int':>16} "
        f"{'problems':>8}"
    )
    print(
        f"{args.days:>4} {intervals:>9} {tick:>11.3f} {clear:>11.3f} {full['wall_s']:>8.1f} "
        f"{per['full']:>12.3f} {per['full'] / clear:>12.2f} {per['quick']:>16.3f} "
        f"{len(problems):>8}"
    )
    print(
        f"run {run['run_s']:.0f} s (set-up {run['setup_s']:.1f} s); "
        f"{results['verified']}/{results['records']} verified, chain {results['chain']}; "
        + ("OK" if ok else f"FAILED: {problems[:5]}")
    )
    if args.json:
        print(json.dumps(results, indent=2))
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
