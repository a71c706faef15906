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
    python benchmarks/audit_replay.py --out DIR --verify-only SETTLEMENT   # verify DIR's run again
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.chain.backends import AnvilNode
from controller.demo import demo_runtime

INTERVALS_PER_DAY = 96
DEMO_FILES = ("peergrid-demo.sqlite", "anvil-state.json")
"""What the first process leaves for the auditor: the database and the chain's state."""


@dataclass(frozen=True)
class DemoRun:
    """A demo run handed over to an auditor: copies only, the originals are deleted.

    ``database`` and ``state`` are the copies; ``settlement`` the contract's address;
    ``interval_ids`` the intervals settled on-chain [Unix s]; ``errors`` the send errors of
    intervals that did not settle; times in seconds (``tick_s``: each tick, ``clear_s``: the
    clearing part of each, :attr:`controller.cycle.IntervalReport.wall_s`).
    """

    database: Path
    state: Path
    settlement: str
    interval_ids: tuple[int, ...]
    errors: tuple[str, ...]
    setup_s: float
    run_s: float
    tick_s: tuple[float, ...]
    clear_s: tuple[float, ...]


def run_demo(work: Path, start: datetime, intervals: int, *, progress: bool = False) -> DemoRun:
    """Run the demo cycle on anvil, then hand its database and chain state to an auditor.

    The demo runs in ``work/demo`` for ``intervals`` intervals from ``start`` (every tick
    timed); the database and anvil's state file are copied to ``work/auditor`` and
    ``work/demo`` is deleted, so a verify can only read the copies.

    Parameters
    ----------
    work : Path
        Working folder.
    start : datetime
        The first boundary (UTC).
    intervals : int
        Intervals to run.
    progress : bool
        Print a line after every day.

    Returns
    -------
    DemoRun
        The copies and the times.
    """
    demo, auditor = work / "demo", work / "auditor"
    ticks: list[float] = []
    clears: list[float] = []
    settled: list[int] = []
    errors: list[str] = []
    started = time.perf_counter()
    with demo_runtime(demo, start, "anvil") as rt:
        setup_s = time.perf_counter() - started
        settlement = str(rt.client.settlement.address)
        for k in range(intervals + 1):
            t0 = time.perf_counter()
            report = rt.tick(k, clear_next=k < intervals)
            ticks.append(time.perf_counter() - t0)
            if report.cleared is not None:
                clears.append(report.cleared.wall_s)
            if report.settled is not None:
                if report.settled.outcome is not None:
                    settled.append(report.settled.interval.interval_id)
                else:
                    errors.append(str(report.settled.error))
            if progress and k and k % INTERVALS_PER_DAY == 0:
                done = time.perf_counter() - started
                print(f"  day {k // INTERVALS_PER_DAY} done, {done:.0f} s", flush=True)
    # leaving the runtime stopped the node, which wrote its state file
    run_s = time.perf_counter() - started
    auditor.mkdir(parents=True, exist_ok=True)
    for name in DEMO_FILES:
        shutil.copy2(demo / name, auditor / name)
    shutil.rmtree(demo)  # the second process can only read the copies
    return DemoRun(
        database=auditor / DEMO_FILES[0],
        state=auditor / DEMO_FILES[1],
        settlement=settlement,
        interval_ids=tuple(settled),
        errors=tuple(errors),
        setup_s=setup_s,
        run_s=run_s,
        tick_s=tuple(ticks),
        clear_s=tuple(clears),
    )


@dataclass(frozen=True)
class VerifyRun:
    """One ``peergrid audit verify`` process: its exit code, JSON summary and wall time [s]."""

    exit: int
    summary: dict[str, Any]
    wall_s: float


def verify_process(
    database: Path,
    state: Path,
    settlement: str,
    *extra: str,
    cwd: Path | None = None,
    timeout_s: float | None = None,
) -> VerifyRun:
    """``peergrid audit verify --db ... --rpc ... --settlement ... --json`` in a second process.

    The chain is a fresh anvil node started on a copy of ``state`` (the node rewrites its
    state file when it stops); the process gets no site file and no operator key, and runs
    in ``cwd`` (default: an empty temporary folder, deleted after).

    Parameters
    ----------
    database, state : Path
        The auditor's copies.
    settlement : str
        The settlement contract's address.
    *extra : str
        More arguments (``--no-reclear``).
    cwd : Path, optional
        The working folder.
    timeout_s : float, optional
        Longest wait for the process [s].

    Returns
    -------
    VerifyRun
        A summary ``{"problems": [...]}`` naming the failure if it printed no JSON.
    """
    copy = state.with_name(f"chain-{time.monotonic_ns()}.json")
    shutil.copy2(state, copy)
    folder = cwd if cwd is not None else Path(tempfile.mkdtemp(prefix="verify-cwd-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERGRID_OPERATOR")}
    try:
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
                argv,
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
            wall = time.perf_counter() - started
    finally:
        copy.unlink(missing_ok=True)
        if cwd is None:
            shutil.rmtree(folder, ignore_errors=True)
    try:
        summary = json.loads(proc.stdout)
    except json.JSONDecodeError:
        summary = {"problems": [f"no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}"]}
    return VerifyRun(exit=proc.returncode, summary=summary, wall_s=wall)


def verify_only(auditor: Path, settlement: str) -> int:
    """Verify a run left by an earlier ``--out`` (full and ``--no-reclear``); print the times."""
    database, state = auditor / DEMO_FILES[0], auditor / DEMO_FILES[1]
    ok = True
    for extra in ((), ("--no-reclear",)):
        load = os.getloadavg()
        done = verify_process(database, state, settlement, *extra)
        n = int(done.summary.get("records") or 0)
        problems = done.summary.get("problems", [])
        ok = ok and done.exit == 0 and not problems and n > 0
        print(
            f"verify {' '.join(extra) or '(full)'}: {done.wall_s:.1f} s, "
            f"{done.wall_s / max(1, n):.3f} s/interval, {done.summary.get('verified')}/{n} "
            f"verified, {len(problems)} problem(s); load {load} -> {os.getloadavg()}"
        )
    return 0 if ok else 1


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
    parser.add_argument(
        "--verify-only",
        metavar="SETTLEMENT",
        default=None,
        help="only verify the run left in --out (its auditor/ folder; the contract's address)",
    )
    args = parser.parse_args(argv)
    if args.verify_only:
        return verify_only(Path(args.out) / "auditor", args.verify_only)
    start = datetime.fromisoformat(args.start.replace("Z", "+00:00")).astimezone(UTC)
    intervals = args.days * INTERVALS_PER_DAY
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="audit-replay-"))
    print(f"audit replay: {args.days} day(s), {intervals} intervals from {args.start} in {work}")
    load = {"start": os.getloadavg()}
    run = run_demo(work, start, intervals, progress=True)
    load["after_run"] = os.getloadavg()
    full = verify_process(run.database, run.state, run.settlement)
    quick = verify_process(run.database, run.state, run.settlement, "--no-reclear")
    load["after_verify"] = os.getloadavg()

    clear = statistics.fmean(run.clear_s)
    tick = statistics.fmean(run.tick_s)
    per = {"full": full.wall_s / intervals, "quick": quick.wall_s / intervals}
    problems = [*full.summary.get("problems", []), *quick.summary.get("problems", [])]
    ok = (
        len(run.interval_ids) == intervals
        and not problems
        and full.exit == quick.exit == 0
        and full.summary.get("verified") == intervals
        and (full.summary.get("chain") or {}).get("settled_on_chain") == intervals
    )
    results = {
        "days": args.days,
        "intervals": intervals,
        "settled": len(run.interval_ids),
        "setup_s": round(run.setup_s, 2),
        "run_s": round(run.run_s, 1),
        "cycle_s_per_interval": round(tick, 3),
        "cycle_s_median": round(statistics.median(run.tick_s), 3),
        "clear_s_per_interval": round(clear, 3),
        "clear_s_median": round(statistics.median(run.clear_s), 3),
        "verify_s": round(full.wall_s, 1),
        "verify_s_per_interval": round(per["full"], 3),
        "verify_over_clear": round(per["full"] / clear, 2),
        "verify_over_cycle": round(per["full"] / tick, 2),
        "verify_no_reclear_s": round(quick.wall_s, 1),
        "verify_no_reclear_s_per_interval": round(per["quick"], 3),
        "verified": full.summary.get("verified"),
        "records": full.summary.get("records"),
        "chain": {
            k: v for k, v in (full.summary.get("chain") or {}).items() if not isinstance(v, list)
        },
        "accepted": len(full.summary.get("accepted") or []),
        "problems": problems[:20],
        "load_average": {k: [round(x, 2) for x in v] for k, v in load.items()},
        "ok": ok,
    }
    print(
        f"{'days':>4} {'intervals':>9} {'cycle s/int':>11} {'clear s/int':>11} "
        f"{'verify s':>8} {'verify s/int':>12} {'verify/clear':>12} {'no-reclear s/int':>16} "
        f"{'problems':>8}"
    )
    print(
        f"{args.days:>4} {intervals:>9} {tick:>11.3f} {clear:>11.3f} {full.wall_s:>8.1f} "
        f"{per['full']:>12.3f} {per['full'] / clear:>12.2f} {per['quick']:>16.3f} "
        f"{len(problems):>8}"
    )
    print(
        f"run {run.run_s:.0f} s (set-up {run.setup_s:.1f} s); "
        f"{results['verified']}/{results['records']} verified, chain {results['chain']}; "
        + ("OK" if ok else f"FAILED: {problems[:5]}")
    )
    print(f"load average (1, 5, 15 min): {results['load_average']}")
    if args.json:
        print(json.dumps(results, indent=2))
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
