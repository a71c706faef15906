"""CPU of one fleet site's steps, in-process: the clearing step and the boundary step apart.

What a worker spends on a site at each event, without the engine: one site as
:func:`fleetkit.make_sites` makes them (cigre-lv, 2 participants, 60-second intervals, 20-second
gate closure), its store a schema of a throwaway PostgreSQL, settlement on anvil (a full node,
``--prune-history 128``), devices simulated. Between steps anvil mines ``--blocks-between``
blocks, as the other sites of a fleet do, so the re-check of recent settlements sees what a
fleet site sees; before each clearing the interval's shared base case is warmed (its network
model and audit split), as the fleet's other sites on the feeder have done.

``--pad-env N`` adds N variables to the environment, as a soak worker holds its sites' keys
(``PEERGRID_FLEET_KEY_n``). The reference, same run: building the network model of one base
case (:func:`grid_models.linear.build_linear_grid`), what a clearing costs without sharing.

Examples
--------
::

    python benchmarks/fleet_step.py --steps 20 --pad-env 300
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import mean

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "tests" / "controller"))

from fleetkit import make_sites  # noqa: E402

from adapters.chain.backends import AnvilNode, rpc_web3  # noqa: E402
from controller.fleet import load_site_text, run_step  # noqa: E402
from controller.pgcluster import throwaway_cluster  # noqa: E402
from controller.simdevices import simulated_devices  # noqa: E402
from controller.wiring import build_runtime, shared_linear_grid, shared_split  # noqa: E402
from grid_models.linear import build_linear_grid  # noqa: E402
from market.domain import Interval  # noqa: E402


class _NoHold:
    """A hold that always holds (no fleet here)."""

    site_id = "bench"

    def __call__(self) -> None:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="intervals timed (2 steps each)")
    parser.add_argument("--pad-env", type=int, default=0, help="extra environment variables")
    parser.add_argument("--blocks-between", type=int, default=300)
    args = parser.parse_args()
    for n in range(args.pad_env):
        os.environ[f"PEERGRID_PAD_KEY_{n}"] = f"0x{n:064x}"
    with (
        tempfile.TemporaryDirectory() as folder,
        throwaway_cluster(max_connections=50) as cluster,
        AnvilNode(prune_history=128) as node,
    ):
        database = cluster.create_database("bench")
        fleet = make_sites(Path(folder), node.url, 1, interval_s=60, gate_closure_s=20)
        os.environ.update(fleet.env)
        path = fleet.sites[0].site
        site = load_site_text(path.read_text(), str(path), path.parent)
        site = dataclasses.replace(site, database=cluster.url(database, schema="bench"))
        w3 = rpc_web3(node.url)
        start = datetime(2026, 6, 21, 6, tzinfo=UTC)
        times = []
        for k in range(1, args.steps + 3):
            boundary = start + timedelta(seconds=60 * k)
            times += [boundary - timedelta(seconds=20), boundary]
        cpu: dict[str, list[float]] = {"clearing": [], "boundary": []}
        build: list[float] = []
        with build_runtime(site, device_factory=simulated_devices) as runtime:
            for at in times[:4]:  # caches, first settlements
                run_step(runtime, _NoHold(), at)
            for i, at in enumerate(times[4:]):
                w3.provider.make_request("anvil_mine", [args.blocks_between])  # type: ignore[arg-type]
                kind = "clearing" if i % 2 == 0 else "boundary"
                if kind == "clearing":
                    grid = runtime.cycle.base_grid_for(
                        Interval.containing(at + timedelta(seconds=30), 60)
                    )
                    t0 = time.process_time()
                    build_linear_grid(grid, vm_min_pu=site.vm_min_pu, vm_max_pu=site.vm_max_pu)
                    build.append(time.process_time() - t0)
                    shared_linear_grid(grid, site.vm_min_pu, site.vm_max_pu)
                    shared_split(grid)
                t0 = time.process_time()
                run_step(runtime, _NoHold(), at)
                cpu[kind].append(time.process_time() - t0)
    reference = mean(build)
    print(f"environment: {len(os.environ)} variables; {args.steps} intervals")
    print(f"reference: building one base case's network model {reference:.4f} CPU s")
    for kind, values in cpu.items():
        print(
            f"{kind} step: {mean(values):.4f} CPU s (mean of {len(values)}), "
            f"{mean(values) / reference:.2f}x the reference"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
