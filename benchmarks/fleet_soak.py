"""Soak and fault test of a fleet: N real ``peergrid worker`` processes x M sites, hours of it.

Everything is real but the devices: a throwaway PostgreSQL cluster (Debian's binaries,
:mod:`controller.pgcluster`), an anvil node, per site its own contracts and operator key
(:func:`fleetkit.make_sites`), the real clearing with its AC check and settlement on anvil;
readings are simulated in-process (``--simulate-devices``). The verdict comes from the
database's unique constraints and from every site's own contract
(:func:`fleetkit.fleet_verdict`).

It prints and writes (``--out``/result.json):

* the time to start: from the workers' start until every site has run its first step
  (runtimes built: grid, chain client, store schema migrated);
* per worker: steps run, CPU seconds, CPU per step, resident memory (peak, and once every
  site's runtime is built);
* sites per worker per core at a 15-minute interval: ``900 s / CPU s per step``, the number
  of sites one core can step (each step: read, settle, clear with the AC check, audit);
* the verdict while all workers live (nothing missed, each interval settled once), and with
  ``--kill-at-s`` the verdict around a ``kill -9`` of one worker: its sites go on elsewhere
  within ``--stall-s``, boundaries lost in the gap recorded ``missed``/``crashed`` with a
  reason, 0 double settlements.

Examples
--------
The issue's soak (3 workers x 300 sites, 60-second intervals for 15 minutes, one worker
killed after 7 minutes)::

    python benchmarks/fleet_soak.py --sites 300 --workers 3 --minutes 15 --kill-at-s 420

Memory and start time of one worker with 100 sites::

    python benchmarks/fleet_soak.py --sites 100 --workers 1 --minutes 4
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "tests" / "controller"))

from fleetkit import WorkerProcess, fleet_verdict, make_sites, process_cpu_s  # noqa: E402

from adapters.chain.backends import AnvilNode, rpc_web3  # noqa: E402
from controller.fleet import Fleet  # noqa: E402
from controller.pgcluster import throwaway_cluster  # noqa: E402

STEP = re.compile(
    r"^(\S+ \S+) INFO procrastinate.worker: Job peergrid:peergrid\.site_step\[\d+\]"
    r"\(.*?\) ended with status: (\w+), lasted ([\d.]+) s",
    re.MULTILINE,
)


def _ran(conninfo: str, site_ids: list[str]) -> int:
    """How many of ``site_ids`` have run at least one tick."""
    import psycopg

    n = 0
    with psycopg.connect(conninfo) as conn:
        for site_id in site_ids:
            table = f"site_{site_id}.ticks"
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:  # type: ignore[index]
                continue
            found = conn.execute(f"SELECT 1 FROM {table} WHERE outcome = 'ran' LIMIT 1").fetchone()
            n += found is not None
    return n


def bare_steps(
    cluster: object, database: str, site_file: Path, env: dict[str, str], n: int
) -> float:
    """The reference: CPU seconds per step of one site stepped in this process, no engine.

    The same site, store (a schema of the same database) and chain; ``run_step`` called
    directly for ``n`` consecutive boundaries (after a first one that builds caches), no
    worker, no procrastinate, no hold check (a no-op hold).
    """
    import dataclasses
    import os
    from datetime import UTC, datetime, timedelta

    from controller.fleet import load_site_text, run_step
    from controller.simdevices import simulated_devices
    from controller.wiring import build_runtime

    os.environ.update(env)
    site = load_site_text(site_file.read_text(), str(site_file), site_file.parent)
    site = dataclasses.replace(site, database=cluster.url(database, schema="reference"))  # type: ignore[attr-defined]

    class NoHold:
        site_id = "reference"

        def __call__(self) -> None:
            return None

    start = datetime(2026, 6, 21, 6, tzinfo=UTC)
    with build_runtime(site, device_factory=simulated_devices) as runtime:
        run_step(runtime, NoHold(), start + timedelta(seconds=site.interval_s))
        t0 = time.process_time()
        for k in range(2, n + 2):
            run_step(runtime, NoHold(), start + timedelta(seconds=k * site.interval_s))
        return (time.process_time() - t0) / n


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a kill cleans up as Ctrl-C does
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=300)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--interval-s", type=int, default=60, help="the sites' interval (>= 60)")
    parser.add_argument(
        "--gate-closure-s", type=int, default=20, help="the sites' gate closure [s] (0: none)"
    )
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--kill-at-s", type=float, default=None, help="kill -9 a worker then")
    parser.add_argument("--stall-s", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=1, help="site steps per worker at once")
    parser.add_argument(
        "--start-timeout-s", type=float, default=300, help="longest wait for every site's start"
    )
    parser.add_argument(
        "--reference-steps", type=int, default=20, help="steps of the in-process reference"
    )
    parser.add_argument(
        "--anvil-prune-history",
        type=int,
        default=128,
        help="anvil keeps this many recent states in memory, none on disk, as a full node "
        "(geth keeps 128); 0: anvil's default (every state, old ones written to disk)",
    )
    parser.add_argument(
        "--block-time-s",
        type=int,
        default=None,
        help="once the sites are deployed, anvil mines a block every this many seconds, as a "
        "chain does (default: a block per transaction, each with its state root computed over "
        "every site's contracts)",
    )
    parser.add_argument("--out", type=Path, default=Path("fleet-soak"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}}

    prune = args.anvil_prune_history or None
    with (
        throwaway_cluster(max_connections=300) as cluster,
        AnvilNode(prune_history=prune) as node,
    ):
        database = cluster.create_database("fleet")
        url, conninfo = cluster.url(database), cluster.conninfo(database)
        t0 = time.perf_counter()
        fleet = make_sites(
            args.out,
            node.url,
            args.sites + 1,  # the last one is the reference's, never added
            interval_s=args.interval_s,
            gate_closure_s=args.gate_closure_s,
        )
        result["deploy_s"] = round(time.perf_counter() - t0, 1)
        if args.block_time_s:
            w3 = rpc_web3(node.url)
            for method, params in (
                ("evm_setAutomine", [False]),
                ("evm_setIntervalMining", [args.block_time_s]),
            ):
                answer = w3.provider.make_request(method, params)  # type: ignore[arg-type]
                if "error" in answer:
                    msg = f"anvil refused {method}: {answer['error']}"
                    raise SystemExit(msg)
        reference = fleet.sites.pop()
        result["bare_cpu_per_step_s"] = round(
            bare_steps(cluster, database, reference.site, fleet.env, args.reference_steps), 3
        )
        print(f"reference: {result['bare_cpu_per_step_s']} CPU s per step in-process, no engine")
        t0 = time.perf_counter()
        registry = Fleet(url)
        for site in fleet.sites:
            registry.add_site(site.site_id, site.site)
        result["add_s"] = round(time.perf_counter() - t0, 1)
        print(
            f"{args.sites} sites deployed in {result['deploy_s']} s, added in {result['add_s']} s"
        )

        workers = [
            WorkerProcess(
                f"w{i}",
                url,
                args.out / f"w{i}.log",
                fleet.env,
                None,
                args.stall_s,
                concurrency=args.concurrency,
            )
            for i in range(args.workers)
        ]
        for log in (w.log for w in workers):
            log.unlink(missing_ok=True)
        peak = {w.name: 0.0 for w in workers}
        cpu = {w.name: 0.0 for w in workers}  # the last reading: a killed worker's stays
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                for w in workers:
                    peak[w.name] = max(peak[w.name], w.rss_mb())
                    cpu[w.name] = max(cpu[w.name], w.cpu_s())

        try:
            started = time.time()
            for w in workers:
                w.start()
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            ids = [s.site_id for s in fleet.sites]
            while _ran(conninfo, ids) < len(ids):
                if time.time() - started > args.start_timeout_s:
                    print(f"not every site ran a tick within {args.start_timeout_s:.0f} s")
                    break
                time.sleep(2)
            result["start_all_s"] = round(time.time() - started, 1)
            result["rss_after_start_mb"] = {w.name: round(w.rss_mb()) for w in workers}
            print(
                f"every site ran its first step {result['start_all_s']} s after the workers' start"
            )
            first = int(time.time()) - int(time.time()) % args.interval_s + args.interval_s
            time.sleep(max(first - time.time(), 0))
            cpu_at_first = {w.name: w.cpu_s() for w in workers}  # steady state from here
            node_cpu_at_first = process_cpu_s(node.pid)
            end_at = started + args.minutes * 60
            victim = None
            killed_at = None
            while time.time() < end_at:
                if (
                    args.kill_at_s is not None
                    and victim is None
                    and time.time() - started >= args.kill_at_s
                ):
                    victim = workers[0]
                    victim.kill()
                    killed_at = time.time()
                    print(
                        f"kill -9 {victim.name} (pid {victim.pid}) at +{killed_at - started:.0f} s"
                    )
                time.sleep(1)
            for w in workers:
                cpu[w.name] = max(cpu[w.name], w.cpu_s())
            node_cpu_s = process_cpu_s(node.pid) - node_cpu_at_first
            end = int(time.time()) - int(time.time()) % args.interval_s
            for w in workers:
                if w is not victim:
                    w.stop()
            stop.set()
            sampler.join()

        finally:  # never leave a worker behind
            stop.set()
            for w in workers:
                if w.process is not None and w.process.poll() is None:
                    w.process.kill()
                    w.process.wait(timeout=30)

        steps: dict[str, list[float]] = {}
        for w in workers:
            found = STEP.finditer(w.log.read_text(errors="replace"))
            steps[w.name] = [
                float(m.group(3))
                for m in found
                if datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
                .replace(tzinfo=UTC)
                .timestamp()
                >= first
            ]
        result["workers"] = {
            w.name: {
                "steps": len(steps[w.name]),
                "median_step_s": round(median(steps[w.name]), 3) if steps[w.name] else None,
                "cpu_s": round(cpu[w.name], 1),
                "cpu_per_step_s": round(
                    (cpu[w.name] - cpu_at_first[w.name]) / len(steps[w.name]), 3
                )
                if steps[w.name]
                else None,
                "peak_rss_mb": round(peak[w.name]),
                "killed": w is victim,
            }
            for w in workers
        }
        total_steps = sum(len(v) for v in steps.values())
        total_cpu = sum(cpu[name] - cpu_at_first[name] for name in cpu)
        per_step = total_cpu / total_steps if total_steps else float("nan")
        result["cpu_per_step_s"] = round(per_step, 3)
        result["anvil_cpu_per_step_s"] = round(node_cpu_s / total_steps, 3) if total_steps else None
        result["sites_per_core_at_15_min"] = int(900 / per_step) if total_steps else 0
        result["worker_over_bare"] = round(per_step / result["bare_cpu_per_step_s"], 2)  # type: ignore[operator]

        live_end = end if killed_at is None else int(killed_at) - int(killed_at) % args.interval_s
        live = range(first, live_end, args.interval_s)
        v_live = fleet_verdict(conninfo, fleet, live, allow_missed=False)
        whole = range(first, end, args.interval_s)
        v_all = fleet_verdict(conninfo, fleet, whole, allow_missed=True)
        result["live"] = {
            "boundaries": len(live),
            "problems": v_live.problems[:50],
            "counts": dict(v_live.counts),
        }
        result["whole"] = {
            "boundaries": len(whole),
            "problems": v_all.problems[:50],
            "counts": dict(v_all.counts),
            "missed": [list(m) for m in v_all.missed[:200]],
            "n_missed": len(v_all.missed),
        }
        if killed_at is not None:
            late = [b - killed_at for _, b, _ in v_all.missed]
            result["missed_after_kill_s"] = (
                [round(min(late), 1), round(max(late), 1)] if late else []
            )
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "whole"}, indent=2))
    print(
        f"whole run: {len(v_all.problems)} problems, {len(v_all.missed)} missed boundaries, "
        f"counts {dict(v_all.counts)}"
    )
    ok = not v_live.problems and not v_all.problems
    print("VERDICT:", "OK" if ok else "PROBLEMS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
