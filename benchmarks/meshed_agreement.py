"""Sweep many books on meshed feeders: do both engines and a shuffled book publish the same?

For each seed and size, a book of MV-sized orders (the one of ``tests/grid_models/test_meshed.py``:
bids 90,000-290,000 and offers 40,000-280,000 token units/kWh, 50-800 kWh each, at random
non-slack buses) is cleared by the highspy path, by the pyomo reference and by the highspy path
with its orders shuffled; any difference in prices or orders (or anything for the shuffle) is
printed. Grids: ``cigre-mv-meshed`` and SimBench MV grids with their open points closed.

    python benchmarks/meshed_agreement.py --grids cigre-mv-meshed --seeds 400
    python benchmarks/meshed_agreement.py --grids simbench:1-MV-rural--0-sw --close-loops \
        --seeds 100
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import market.clearing as mc
from grid_models.grids import Grid, load_grid
from grid_models.linear import build_linear_grid
from market.clearing import ClearingOptions, Engine
from market.codec import result_to_dict
from market.domain import Bid, Interval, Offer
from market.orderbook import build_order_book

IV = Interval.containing(datetime(2026, 6, 21, 12, tzinfo=UTC), 900)
SIZES = (2, 5, 11, 23, 40)


def book_of(names: list[str], seed: int, n: int):
    """The MV-sized book of ``seed`` with ``n`` orders."""
    rng = random.Random(seed)
    orders: list[Bid | Offer] = []
    for i in range(n):
        bus = rng.choice(names)
        wh = rng.randint(50_000, 800_000)
        kind, tag, prices = (
            (Bid, "b", (90_000, 290_000)) if i % 2 else (Offer, "s", (40_000, 280_000))
        )
        oid = f"{tag}{i}"
        orders.append(
            kind(
                order_id=oid,
                participant=oid,
                bus=bus,
                interval=IV,
                energy_wh=wh,
                limit_price=rng.randint(*prices),
            )
        )
    return build_order_book(IV, orders)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grids", nargs="+", default=["cigre-mv-meshed"])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--close-loops", action="store_true", help="close every open line switch")
    args = ap.parse_args()
    total_bad = 0
    for spec in args.grids:
        grid = load_grid(spec)
        if args.close_loops:
            net = copy.deepcopy(grid.net)
            net.switch.loc[net.switch["et"] == "l", "closed"] = True
            grid = Grid(f"{spec} (loops closed)", net)
        linear = build_linear_grid(grid)
        network = linear.network
        names = [b for i, b in enumerate(network.bus_names) if i != network.slack]
        started = time.perf_counter()
        bad = books = 0
        for seed in range(args.seeds):
            for n in SIZES:
                book = book_of(names, seed, n)
                books += 1
                fast = result_to_dict(mc.clear(book, network, ClearingOptions()))
                ref = result_to_dict(mc.clear(book, network, ClearingOptions(engine=Engine.PYOMO)))
                orders = list(book.orders)
                random.Random(seed).shuffle(orders)
                again = result_to_dict(
                    mc.clear(build_order_book(IV, orders), network, ClearingOptions())
                )
                found = [k for k in ("prices", "orders") if ref[k] != fast[k]]
                if again != fast:
                    found.append("shuffle")
                if found:
                    bad += 1
                    print(f"  {spec} seed {seed} n {n}: {', '.join(found)}: {fast['reason'][:120]}")
        total_bad += bad
        print(
            f"{grid.spec}: {'meshed' if network.is_meshed else 'radial'}, {books} books, "
            f"{bad} disagreeing ({time.perf_counter() - started:.1f} s)"
        )
    sys.exit(1 if total_bad else 0)


if __name__ == "__main__":
    main()
