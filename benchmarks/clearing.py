"""Clearing benchmark: PeerGrid end to end vs. HiGHS alone on the identical LP.

For each grid and order count, random orders (seeded) are cleared with
``grid_models.acloop.clear_on_grid`` (build + solve + extract + AC check loop). The reference,
measured in the same run, is raw highspy solving the very same LP: the pyomo model PeerGrid
builds is written to an LP file and HiGHS reads and solves it directly (read time excluded).

    python benchmarks/clearing.py [--orders 100 1000] [--grids cigre-lv simbench:1-LV-rural1--0-sw]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import highspy

from grid_models.acloop import clear_on_grid
from grid_models.grids import load_grid
from grid_models.linear import build_linear_grid
from market.clearing import ClearingOptions
from market.clearing.model import build_model
from market.domain import Bid, Interval, Offer
from market.orderbook import build_order_book

IV = Interval(datetime(2026, 6, 21, 12, tzinfo=UTC))


def random_book(bus_names, n, seed=7):
    rng = random.Random(seed)
    orders = []
    for i in range(n):
        bus = rng.choice(bus_names)
        wh = rng.randint(100, 3000)
        if rng.random() < 0.5:
            orders.append(
                Bid(
                    order_id=f"b{i}",
                    participant=f"p{i}",
                    bus=bus,
                    interval=IV,
                    energy_wh=wh,
                    limit_price=rng.randint(150_000, 400_000),
                )
            )
        else:
            orders.append(
                Offer(
                    order_id=f"s{i}",
                    participant=f"p{i}",
                    bus=bus,
                    interval=IV,
                    energy_wh=wh,
                    limit_price=rng.randint(20_000, 250_000),
                )
            )
    return build_order_book(IV, orders)


def raw_highs_seconds(lp_path: Path) -> float:
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.readModel(str(lp_path))
    t = time.perf_counter()
    h.run()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--grids", nargs="+", default=["cigre-lv", "simbench:1-LV-rural1--0-sw"])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    options = ClearingOptions()
    print(
        f"{'grid':<30} {'orders':>6} {'peergrid s':>10} {'build':>7} {'solve':>7} "
        f"{'extract':>7} {'AC it':>5} {'raw highs s':>11} {'ratio':>6}"
    )
    for spec in args.grids:
        grid = load_grid(spec)
        grid = grid.at_time_step(48) if grid.profiles else grid.scaled(0.35)
        linear = build_linear_grid(grid)
        names = [
            n
            for n in linear.network.bus_names
            if n != linear.network.bus_names[linear.network.slack]
        ]
        for n in args.orders:
            book = random_book(names, n)
            times, res = [], None
            for _ in range(args.repeat):
                t = time.perf_counter()
                res = clear_on_grid(grid, linear, book, options)
                times.append(time.perf_counter() - t)
            built = build_model(book, linear.network, options)
            with tempfile.TemporaryDirectory() as d:
                lp = Path(d) / "model.lp"
                built.model.write(str(lp), io_options={"symbolic_solver_labels": False})
                raw = statistics.median(raw_highs_seconds(lp) for _ in range(args.repeat))
            e2e = statistics.median(times)
            s = res.solver
            print(
                f"{spec:<30} {n:>6} {e2e:>10.3f} {s.build_s:>7.3f} {s.solve_s:>7.3f} "
                f"{s.extract_s:>7.3f} {res.iterations:>5} {raw:>11.4f} {e2e / raw:>6.1f}"
            )


if __name__ == "__main__":
    main()
