"""Clearing benchmark: PeerGrid on SimBench feeders vs raw HiGHS, pandapower's AC OPF, pymarket.

For each grid (``load_grid_cached(spec, time_step)``; loading is excluded from every time, the
network-model build is reported on its own) and each order count N, a seeded random book of N
orders (half bids, half offers, at random non-slack buses of the model) is cleared by
``controller.grid_clearing.clear_on_grid`` (build + solve + extract + the AC power-flow loop) and
compared, in the same run, with:

1. **raw HiGHS** on the identical LP: every LP the run built (``market.clearing.lp.build_lp``,
   captured, one per AC iteration) solved by a fresh ``highspy.Highs()`` with PeerGrid's own
   options (``threads=1``, ``solver=choose``); only ``run()`` is timed. "ratio" is PeerGrid's
   build + solve + extract over that time (target <= 2x).
2. **pandapower's AC OPF** (``pp.runopp``, PIPS): the same order groups as controllable loads
   and sgens with linear costs, the ext_grid controllable and priced at the tariffs around its
   base-case exchange, the same effective voltage band and loading limits, slack voltage
   pinned, ``calculate_voltage_angles=False``; run in a forked child with a timeout. Welfare
   of both sides is measured in AC: each side's accepted orders at their limits, less the
   change of the slack's AC exchange at the import (or export) tariff. Targets: PeerGrid's
   AC welfare >= 99.5 % of the OPF's, at >= 20x its speed (end to end vs ``runopp``).
3. **No network**: the merit-order optimum (sorted curves), PeerGrid on a one-bus network
   (every bus name an alias of one bus), and pymarket 0.7.6's mechanisms (huang, muda, p2p;
   they have no grid and no upstream tariffs), peer-only and with the tariffs.

Orders (seeded, the same values on every grid; only the buses differ): bids buy 50-2,000 Wh at
80,000-300,000 token units/kWh (between the export and import tariffs), offers sell 50-2,000 Wh
at 40,000-285,000; tariffs import 300,000, export 80,000 (``ClearingOptions`` defaults). The
interval is the SimBench time step's 15 minutes (from 2016-01-01, as ``peergrid clear``).

Timing comes from the loop itself: ``clear_on_grid(..., profile=LoopProfile())`` records per
solve the build, HiGHS's runs, the canonical rules, the AC power flow, the limit check and the
re-linearisation, and for the kept solve the extraction (prices, orders, trades) and the full
AC summary; "other" is the rest. Each case is also cleared once more with its orders shuffled:
the result must be identical (``result_to_dict``). Medians of ``--repeat`` runs.

Grids are SimBench codes or a built-in spec (``cigre-mv-meshed``: CIGRE MV with its loop
switches closed, cleared on its linearised AC power flow; ``--energy-scale 200`` makes the
balanced book's orders MV-sized). ``--close-loops`` closes every open line switch of each grid
(a SimBench MV grid's normally open points): its feeders then run meshed.

Books (``--books``, default all four; seeded and deterministic, the same on every run):

- ``balanced``: the random book above (every bus equally likely for bids and offers: the
  network rarely binds).
- ``midday-export``: cheap offers (40,000-120,000) crowded onto the far half (by depth in
  the tree, at or beyond each feeder's median) of the buses of ``CROWDED_FEEDERS`` LV
  feeders (SimBench subnets, ``net.bus.subnet``, e.g. "LV1.201", drawn with a seed), dear
  bids (150,000-300,000) on every other bus: export through those feeders' lines and
  transformers, voltage rise.
- ``trafo-limited``: the same prices, every offer on the LV busbar of one MV/LV transformer
  (drawn with a seed): the exchange through it is many times its rating.
- ``evening-demand``: dear bids crowded onto ``CROWDED_FEEDERS`` LV feeders, cheap offers on
  every other bus, at the evening time step (``--evening-step``, default 76 = 19:00, the
  grid's own loads high): demand congests the crowded feeders.

The congested books need LV feeders: they run on grids with at least
``2 * CROWDED_FEEDERS`` LV subnets (the MV/LV grids) and are skipped elsewhere. For them the
loop's profile also counts the lazy network bounds: per solve, the HiGHS runs ("rounds"), the
network bounds in force at the first run (those the previous solve of the same book needed)
and those put back after it; the final LP's active bounds (flow bounds per branch kind,
voltage bounds) are counted on the last solve's columns.

    python benchmarks/clearing.py                 # full run (~10 min on 2 cores)
    python benchmarks/clearing.py --quick         # LV grids, N <= 1,000 (~1 min)
    python benchmarks/clearing.py --grids 1-MVLV-rural-all-0-sw --orders 10000 --no-opf
    python benchmarks/clearing.py --grids 1-MVLV-rural-all-0-sw 1-MVLV-semiurb-all-0-sw \
        --orders 1000 --books midday-export trafo-limited evening-demand --no-opf --no-pymarket

The default run (all six grids, all four books, N up to 10,000, runopp included) is the
balanced run's ~10 min plus the congested books on the two MV/LV grids: three books x three
N there, with runopp at N = 100 (each up to ``--opf-timeout``); budget ~30 min on 2 cores, or
pass ``--no-opf`` (a few minutes more than the balanced run).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import json
import math
import os
import platform
import random
import shlex
import statistics
import sys
import time
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

try:  # run as a script (benchmarks/ on sys.path) or as ``python -m benchmarks.clearing``
    import _refs  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    from benchmarks import _refs

from controller import grid_clearing
from controller.clearing_job import SIMBENCH_YEAR_START
from grid_models.grids import BUILTIN_GRIDS, Grid, load_grid_cached
from grid_models.linear import build_linear_grid
from grid_models.powerflow import LOADING_TOLERANCE_PERCENT, VM_TOLERANCE_PU, summarise
from market import clearing
from market.clearing import ClearingOptions
from market.clearing.groups import group_orders
from market.codec import result_to_dict
from market.domain import Bid, Interval, Offer, Side, ViolationKind
from market.orderbook import build_order_book

# ``market.clearing.solve`` as an attribute is the function ``solve``: take the module itself
solve_module = importlib.import_module("market.clearing.solve")
extract_module = importlib.import_module("market.clearing.extract")

GRIDS = (
    "1-LV-rural1--0-sw",
    "1-LV-semiurb4--0-sw",
    "1-LV-urban6--0-sw",
    "1-MV-semiurb--0-sw",
    "1-MVLV-rural-all-0-sw",
    "1-MVLV-semiurb-all-0-sw",
)
QUICK_GRIDS = GRIDS[:3]
ORDERS = (100, 1000, 10000)
QUICK_ORDERS = (100, 1000)
IMPORT_PRICE = 300_000
EXPORT_PRICE = 80_000
BID_PRICES = (80_000, 300_000)
OFFER_PRICES = (40_000, 285_000)
ENERGY_WH = (50, 2000)
BOOKS = ("balanced", "midday-export", "trafo-limited", "evening-demand")
CROWDED_FEEDERS = 3
CHEAP_OFFER_PRICES = (40_000, 120_000)
DEAR_BID_PRICES = (150_000, 300_000)
EVENING_STEP = 76  # 19:00
C = 1e-6  # currency per token unit


# --------------------------------------------------------------------------- orders


def order_values(n: int, seed: int, scale: int = 1) -> list[tuple[bool, int, int]]:
    """(is_bid, energy_wh, limit_price) of the N orders: half bids, half offers.

    ``scale`` multiplies every energy (``--energy-scale``: MV feeders need larger orders to
    congest).
    """
    rng = random.Random(f"peergrid-bench:{seed}:{n}")
    out = []
    for i in range(n):
        is_bid = i < n // 2
        lo, hi = BID_PRICES if is_bid else OFFER_PRICES
        out.append((is_bid, rng.randint(*ENERGY_WH) * scale, rng.randint(lo, hi)))
    return out


def make_book(values: list[tuple[bool, int, int]], names: list[str], interval: Interval, tag: str):
    """The order book of ``values`` at random buses among ``names`` (seeded by ``tag``)."""
    rng = random.Random(f"peergrid-bench-buses:{tag}:{len(values)}")
    orders: list[Bid | Offer] = []
    for i, (is_bid, wh, price) in enumerate(values):
        kind = Bid if is_bid else Offer
        orders.append(
            kind(
                order_id=f"{'b' if is_bid else 's'}{i:05d}",
                participant=f"p{i:05d}",
                bus=rng.choice(names),
                interval=interval,
                energy_wh=wh,
                limit_price=price,
            )
        )
    return build_order_book(interval, orders)


def congested_values(n: int, seed: int, kind: str) -> list[tuple[bool, int, int]]:
    """(is_bid, energy_wh, limit_price) of a congested book: cheap offers, dear bids."""
    rng = random.Random(f"peergrid-bench-congested:{kind}:{seed}:{n}")
    out = []
    for i in range(n):
        is_bid = i < n // 2
        lo, hi = DEAR_BID_PRICES if is_bid else CHEAP_OFFER_PRICES
        out.append((is_bid, rng.randint(*ENERGY_WH), rng.randint(lo, hi)))
    return out


def lv_feeders(grid, linear) -> dict[str, list[str]]:
    """Model bus names per LV subnet of the SimBench grid (``net.bus.subnet``, "LV...")."""
    subnet = grid.net.bus.get("subnet")
    out: dict[str, list[str]] = {}
    if subnet is None:
        return out
    net = linear.network
    for i, name in enumerate(net.bus_names):
        sub = str(subnet.get(int(linear.pp_index[i]), ""))
        if i != net.slack and sub.startswith("LV") and "_" not in sub:
            out.setdefault(sub, []).append(name)
    return out


def congested_book(kind: str, values, grid, linear, interval: Interval, tag: str):
    """The ``kind`` book of the module docstring and what it crowds (for the report)."""
    net = linear.network
    feeders = lv_feeders(grid, linear)
    rng = random.Random(f"peergrid-bench-feeders:{kind}:{tag}")
    names = [n for i, n in enumerate(net.bus_names) if i != net.slack]
    if kind == "trafo-limited":
        trafos = grid.net.trafo
        by_pp = {int(p): net.bus_names[i] for i, p in enumerate(linear.pp_index)}
        candidates = sorted(
            (str(t["name"]), by_pp[int(t["lv_bus"])])
            for _, t in trafos.iterrows()
            if int(t["lv_bus"]) in by_pp
            and str(grid.net.bus.at[int(t["lv_bus"]), "subnet"]) in feeders
        )
        trafo_name, busbar = rng.choice(candidates)
        crowded = [busbar]
        what = f"trafo {trafo_name} (LV busbar {busbar})"
    else:
        chosen = rng.sample(sorted(feeders), CROWDED_FEEDERS)
        crowded = [b for sub in chosen for b in feeders[sub]]
        what = "feeders " + ", ".join(chosen)
        if kind == "midday-export":  # the far half of each feeder: voltage rise, line loading
            depth = np.zeros(net.n_bus, dtype=np.int64)
            parent = net.parents()
            for node in net.bfs_order[1:].tolist():
                depth[node] = depth[parent[node]] + 1
            index = {name: i for i, name in enumerate(net.bus_names)}
            far = []
            for sub in chosen:
                d = np.array([depth[index[b]] for b in feeders[sub]])
                far += [b for b, x in zip(feeders[sub], d, strict=True) if x >= np.median(d)]
            crowded = far
            what += ", the buses at or beyond each one's median depth"
        what += f" ({len(crowded)} buses)"
    crowded_set = set(crowded)
    elsewhere = [b for b in names if b not in crowded_set]
    rng_bus = random.Random(f"peergrid-bench-buses:{kind}:{tag}:{len(values)}")
    orders: list[Bid | Offer] = []
    for i, (is_bid, wh, price) in enumerate(values):
        crowd = is_bid == (kind == "evening-demand")
        orders.append(
            (Bid if is_bid else Offer)(
                order_id=f"{'b' if is_bid else 's'}{i:05d}",
                participant=f"p{i:05d}",
                bus=rng_bus.choice(crowded if crowd else elsewhere),
                interval=interval,
                energy_wh=wh,
                limit_price=price,
            )
        )
    return build_order_book(interval, orders), what


# --------------------------------------------------------------------------- instrumentation


def bounds_of(profile: grid_clearing.LoopProfile) -> dict[str, Any]:
    """Lazy-bound figures of one ``clear_on_grid`` (see the module docstring)."""
    steps = profile.solves
    lazies = [st.solved.outcome.lazy for st in steps]
    out: dict[str, Any] = {
        "highs_runs": [lz.runs if lz else 1 for lz in lazies],
        "started_with": [lz.started_with if lz else 0 for lz in lazies],
        "added": [sum(lz.added) if lz else 0 for lz in lazies],
        "rounds_added": [list(lz.added) if lz else [] for lz in lazies],
        "full": [bool(lz and lz.full) for lz in lazies],
        "active_line": 0,
        "active_trafo": 0,
        "active_v": 0,
        "proved_unique": [bool(st.solved.outcome.unique) for st in steps],
        "canonical_s": sum(st.qp_s for st in steps),
    }
    last = steps[-1].solved if steps else None
    if last is not None and last.quantities is not None:
        lp, x = last.built, np.asarray(last.quantities.outcome.col_value)
        lo, hi = lp.col_lower, lp.col_upper
        tol = 1e-7 * np.maximum(
            1.0,
            np.maximum(
                np.abs(np.where(np.isfinite(lo), lo, 0)),
                np.abs(np.where(np.isfinite(hi), hi, 0)),
            ),
        )
        at = (np.isfinite(lo) & (x <= lo + tol)) | (np.isfinite(hi) & (x >= hi - tol))
        p0, v0 = lp.col_p0, lp.col_v0
        kinds = np.array(lp.network.branch_kinds)
        flows = at[p0:v0]
        out["active_line"] = int(flows[kinds != "trafo"].sum())
        out["active_trafo"] = int(flows[kinds == "trafo"].sum())
        v_at = at[v0:].copy()
        v_at[lp.network.slack] = False
        out["active_v"] = int(v_at.sum())
    return out


@dataclasses.dataclass
class Run:
    e2e: float
    solves: int
    build: float
    solve: float
    rules: float
    extract: float
    ac: float
    ac_runs: int
    check: float = 0.0
    relin: float = 0.0
    summary: float = 0.0
    bounds: dict[str, Any] = dataclasses.field(default_factory=dict)
    solve_each: list[float] = dataclasses.field(default_factory=list)
    final_lp: float = 0.0  # the last solve's build + solve + rules, plus the extraction

    @property
    def ours_lp(self) -> float:
        return self.build + self.solve + self.rules + self.extract

    @property
    def other(self) -> float:
        named = self.ours_lp + self.ac + self.check + self.relin + self.summary
        return max(self.e2e - named, 0.0)


def measure(grid, linear, book, options: ClearingOptions, repeat: int):
    """Median run of ``clear_on_grid`` (by end-to-end time), its result and its LPs.

    The loop reports its own profile (``grid_clearing.LoopProfile``: per solve the build,
    HiGHS's runs, the canonical rules, the AC power flow, the limit check and the
    re-linearisation, and the kept solve's extraction and full AC summary); nothing is
    wrapped from outside.
    """
    runs = []
    for _ in range(repeat):
        prof = grid_clearing.LoopProfile()
        t = time.perf_counter()
        result = grid_clearing.clear_on_grid(grid, linear, book, options, profile=prof)
        e2e = time.perf_counter() - t
        steps = prof.solves
        runs.append(
            (
                Run(
                    e2e=e2e,
                    solves=len(steps),
                    build=sum(st.build_s for st in steps),
                    solve=sum(st.solve_s for st in steps),
                    rules=sum(st.rules_s for st in steps),
                    extract=prof.extract_s,
                    ac=sum(st.ac_s for st in steps),
                    ac_runs=sum(1 for st in steps if st.ac_s),
                    check=sum(st.check_s for st in steps),
                    relin=sum(st.relin_s for st in steps),
                    summary=prof.summary_s,
                    bounds=bounds_of(prof),
                    solve_each=[st.solve_s for st in steps],
                    final_lp=(
                        steps[-1].build_s + steps[-1].solve_s + steps[-1].rules_s + prof.extract_s
                        if steps
                        else 0.0
                    ),
                ),
                result,
                [st.solved.built for st in steps],
            )
        )
    runs.sort(key=lambda r: r[0].e2e)
    return runs[(len(runs) - 1) // 2]


# --------------------------------------------------------------------------- welfare


def order_welfare(result, limits: dict[str, int]) -> float:
    """Accepted orders at their own limits [currency]."""
    total = 0
    for o in result.orders:
        if o.accepted_wh:
            sign = 1 if o.side is Side.BUY else -1
            total += sign * o.accepted_wh * limits[o.order_id]
    return total / 1000 * C


def grid_term(grid_kwh: float) -> float:
    """What the market pays (-) or earns (+) for a net grid exchange [currency]."""
    tariff = IMPORT_PRICE if grid_kwh > 0 else EXPORT_PRICE
    return -grid_kwh * tariff * C


# --------------------------------------------------------------------------- main


def fmt(x: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f} %"


def versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for pkg in ("highspy", "pandapower", "numpy", "scipy", "pymarket"):
        try:
            parts.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{pkg} not installed")
    try:
        import numba  # noqa: F401

        parts.append("numba installed")
    except ImportError:
        parts.append("no numba")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="LV grids, N <= 1,000")
    ap.add_argument("--grids", nargs="+", help="SimBench codes (default: all six)")
    ap.add_argument("--orders", type=int, nargs="+", help="order counts (default 100 1000 10000)")
    ap.add_argument("--time-step", type=int, default=48, help="SimBench 15-min step (48 = 12:00)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; medians are reported")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--books",
        nargs="+",
        choices=BOOKS,
        help="book kinds (default: all; see the module docstring)",
    )
    ap.add_argument(
        "--evening-step",
        type=int,
        default=EVENING_STEP,
        help="SimBench time step of the evening-demand book (76 = 19:00)",
    )
    ap.add_argument(
        "--close-loops",
        action="store_true",
        help="close every open line switch (SimBench MV grids' open points): meshed feeders",
    )
    ap.add_argument(
        "--energy-scale",
        type=int,
        default=1,
        help="multiply the balanced book's order energies (e.g. 200 on the 20 kV cigre-mv-meshed)",
    )
    ap.add_argument("--solver", default="choose", help="HiGHS solver option (both sides)")
    ap.add_argument("--no-opf", action="store_true", help="skip pandapower's runopp")
    ap.add_argument("--opf-max-buses", type=int, default=1000)
    ap.add_argument("--opf-max-orders", type=int, default=1000)
    ap.add_argument(
        "--opf-large-orders",
        type=int,
        default=100,
        help="on grids above --opf-max-buses, runopp only up to this N (0: never)",
    )
    ap.add_argument("--opf-timeout", type=float, default=480.0, help="seconds per runopp")
    ap.add_argument("--no-pymarket", action="store_true")
    ap.add_argument("--p2p-max-orders", type=int, default=100, help="p2p is O(N^3)")
    ap.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    ap.add_argument(
        "--unique-rules-always",
        action="store_true",
        help="run the unique-price QPs on every book (the behaviour before the proved-unique skip)",
    )
    args = ap.parse_args()
    if args.unique_rules_always:
        solve_module.unique_optimum = lambda _lp, _h: (False, False)  # type: ignore[assignment]
    grids = args.grids or list(QUICK_GRIDS if args.quick else GRIDS)
    orders_n = args.orders or list(QUICK_ORDERS if args.quick else ORDERS)
    books = args.books or list(BOOKS)
    if args.quick:
        orders_n = [n for n in orders_n if n <= 1000]
    options = ClearingOptions(
        import_price=IMPORT_PRICE, export_price=EXPORT_PRICE, solver=args.solver
    )
    ts = args.time_step
    interval = Interval.containing(SIMBENCH_YEAR_START + timedelta(minutes=15 * ts), 900)
    hours = interval.hours
    command = "python benchmarks/clearing.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    started = time.perf_counter()
    load0 = os.getloadavg()
    print(f"# {command.strip()}")
    print(f"# {versions()}; {os.cpu_count()} cores; load average at start {load0[0]:.2f}")
    print(f"# time step {ts} ({interval.start:%Y-%m-%d %H:%M} UTC, {hours} h), seed {args.seed}")

    grid_rows: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    books_for_nonet: dict[int, Any] = {}
    values_by_n = {n: order_values(n, args.seed, args.energy_scale) for n in orders_n}
    for code in grids:
        builtin = code in BUILTIN_GRIDS  # e.g. cigre-mv-meshed: no profiles, no time step
        spec = code if builtin else f"simbench:{code}"
        steps: dict[int, list[str]] = {}
        for kind in books:
            steps.setdefault(args.evening_step if kind == "evening-demand" else ts, []).append(kind)
        n_feeders: int | None = None  # LV feeders of the grid, once loaded
        for step, step_books in steps.items():
            few = n_feeders is not None and n_feeders < 2 * CROWDED_FEEDERS
            if few and "balanced" not in step_books:
                print(f"\n## {code}: {', '.join(step_books)} skipped ({n_feeders} LV feeders)")
                continue
            interval = Interval.containing(SIMBENCH_YEAR_START + timedelta(minutes=15 * step), 900)
            t = time.perf_counter()
            grid = load_grid_cached(spec, None if builtin else step)
            if args.close_loops:  # every open line switch closed: the feeder runs meshed
                net_copy = copy.deepcopy(grid.net)
                is_line = net_copy.switch["et"] == "l"
                net_copy.switch.loc[is_line, "closed"] = True
                grid = Grid(f"{spec} (loops closed)", net_copy, None, grid.time_step)
            load_s = time.perf_counter() - t
            t = time.perf_counter()
            linear = build_linear_grid(grid)
            model_s = time.perf_counter() - t
            net = linear.network
            base_check = summarise(grid, linear.base, linear.vm_min_pu, linear.vm_max_pu)
            base_viol = {(v.kind, v.index): v.value for v in base_check.violations}
            grid_rows.append(
                {
                    "grid": code,
                    "time_step": step,
                    "pp_buses": len(grid.net.bus),
                    "model_buses": net.n_bus,
                    "branches": net.n_branch,
                    "load_s": load_s,
                    "model_s": model_s,
                    "base_vm_min": base_check.min_vm_pu,
                    "base_vm_max": base_check.max_vm_pu,
                    "base_max_line": base_check.max_line_loading_percent,
                    "base_max_trafo": base_check.max_trafo_loading_percent,
                    "base_violations": len(base_check.violations),
                    "model": (
                        f"meshed ({net.n_branch - net.n_bus + 1} loops)"
                        if net.is_meshed
                        else "radial"
                    ),
                }
            )
            print(
                f"\n## {code} at time step {step}: {len(grid.net.bus)} buses ({net.n_bus} in the "
                f"{grid_rows[-1]['model']} model), cached load "
                f"{load_s:.2f} s, network model {model_s:.2f} s, base vm "
                f"{base_check.min_vm_pu:.4f}-{base_check.max_vm_pu:.4f}, "
                f"{len(base_check.violations)} base violation(s)",
                flush=True,
            )
            names = [n for i, n in enumerate(net.bus_names) if i != net.slack]
            feeders = lv_feeders(grid, linear)
            n_feeders = len(feeders)
            line_limits, trafo_limits = linear.effective_loading_limits()
            for kind in step_books:
                if kind != "balanced" and len(feeders) < 2 * CROWDED_FEEDERS:
                    print(f"  {kind}: skipped ({len(feeders)} LV feeder(s) in {code})")
                    continue
                for n in orders_n:
                    tag = f"{args.seed}:{code}"
                    if kind == "balanced":
                        values = values_by_n[n]
                        book = make_book(values, names, interval, tag)
                        books_for_nonet.setdefault(n, book)
                        crowded = "-"
                    else:
                        values = congested_values(n, args.seed, kind)
                        book, crowded = congested_book(kind, values, grid, linear, interval, tag)
                    limits = {o.order_id: o.limit_price for o in book.orders}
                    run, result, lps = measure(grid, linear, book, options, args.repeat)
                    raw = [
                        statistics.median(
                            _refs.raw_highs(lp, args.solver, options.time_limit_s)[0]
                            for _ in range(args.repeat)
                        )
                        for lp in lps
                    ]
                    raw_s = sum(raw)
                    raw_final = raw[-1] if raw else float("nan")
                    # the same orders in another order: the same result, to the bit
                    shuffled = list(book.orders)
                    random.Random(f"peergrid-bench-shuffle:{tag}:{n}").shuffle(shuffled)
                    again = grid_clearing.clear_on_grid(
                        grid, linear, build_order_book(book.interval, shuffled), options
                    )
                    shuffle_same = result_to_dict(again) == result_to_dict(result)
                    check = result.check
                    new_viol = 0
                    if check is not None:
                        for v in check.violations:
                            on_bus = v.kind.element_type == "bus"
                            tol = VM_TOLERANCE_PU if on_bus else LOADING_TOLERANCE_PERCENT
                            before = base_viol.get((v.kind, v.index))
                            if before is None or (
                                abs(v.value - before) > tol
                                and (
                                    (v.kind is ViolationKind.VM_MIN and v.value < before)
                                    or (v.kind is not ViolationKind.VM_MIN and v.value > before)
                                )
                            ):
                                new_viol += 1
                    grid_kwh_ac = (
                        (check.slack_p_w - linear.base.slack_p_w) * hours / 1000 if check else 0.0
                    )
                    w_lp = result.welfare * C
                    w_ac = order_welfare(result, limits) + grid_term(grid_kwh_ac)
                    groups = group_orders(book, net)
                    row: dict[str, Any] = {
                        "grid": code,
                        "book": kind,
                        "time_step": step,
                        "crowded": crowded,
                        "buses": net.n_bus,
                        "orders": n,
                        "groups": len(groups),
                        "status": str(result.status),
                        "e2e_s": run.e2e,
                        "build_s": run.build,
                        "solve_s": run.solve,
                        "extract_s": run.extract,
                        "ac_s": run.ac,
                        "ac_runs": run.ac_runs,
                        "other_s": run.other,
                        "relin_s": run.relin,
                        "summary_s": run.summary,
                        "bounds": run.bounds,
                        "line_limit_max": float(np.nanmax(line_limits)) if len(line_limits) else 0,
                        "trafo_limit_max": float(np.nanmax(trafo_limits))
                        if len(trafo_limits)
                        else 0,
                        "vm_max_limit": linear.vm_max_pu,
                        "vm_min_limit": linear.vm_min_pu,
                        "iterations": result.iterations,
                        "lp_rows": lps[-1].num_row if lps else 0,
                        "lp_cols": lps[-1].num_col if lps else 0,
                        "raw_highs_s": raw_s,
                        "raw_final_s": raw_final,
                        "shuffle_identical": shuffle_same,
                        "final_lp_s": run.final_lp,
                        "final_ratio": run.final_lp / raw_final if raw_final else float("nan"),
                        "loop_vs_raw": run.e2e / raw_s if raw_s else float("nan"),
                        "rules_s": run.rules,
                        "check_s": run.check,
                        "solve_each": run.solve_each,
                        "ours_lp_s": run.ours_lp,
                        "ratio": run.ours_lp / raw_s if raw_s else float("nan"),
                        "solve_ratio": run.solve / raw_s if raw_s else float("nan"),
                        "min_vm": check.min_vm_pu if check else float("nan"),
                        "max_vm": check.max_vm_pu if check else float("nan"),
                        "max_line": check.max_line_loading_percent if check else float("nan"),
                        "max_trafo": check.max_trafo_loading_percent if check else float("nan"),
                        "violations": len(check.violations) if check else -1,
                        "base_violations": len(base_viol),
                        "new_violations": new_viol,
                        "welfare_lp": w_lp,
                        "welfare_ac": w_ac,
                        "grid_kwh_ac": grid_kwh_ac,
                        "lp_grid_kwh": (result.grid_import_wh - result.grid_export_wh) / 1000,
                        "traded_kwh": result.cleared_wh / 1000,
                    }
                    b = run.bounds
                    row["binds"] = b["active_line"] + b["active_trafo"] + b["active_v"] > 0
                    if kind != "balanced" and not row["binds"]:
                        print(
                            f"  WARNING: the {kind} book binds no network bound: a bug of the book"
                        )
                    print(
                        f"  {kind} N={n:>6} groups {len(groups):>5} {row['status']:<9} "
                        f"e2e {run.e2e:.3f} s (build {run.build:.3f} solve {run.solve:.3f} "
                        f"rules {run.rules:.3f} extract {run.extract:.3f} AC {run.ac:.3f} "
                        f"x{run.ac_runs} check {run.check:.3f} relin {run.relin:.3f} summary "
                        f"{run.summary:.3f} other {run.other:.3f}) it {result.iterations} | "
                        f"raw HiGHS final LP {raw_final:.3f} s (ours {run.final_lp:.3f}, "
                        f"{row['final_ratio']:.2f}x), all LPs {raw_s:.3f} s (loop "
                        f"{row['loop_vs_raw']:.2f}x) | shuffled "
                        f"{'identical' if shuffle_same else 'DIFFERENT'} | "
                        f"viol {row['violations']} (base {len(base_viol)}, "
                        f"new {new_viol}) | welfare LP {w_lp:.4f} AC {w_ac:.4f} | HiGHS runs "
                        f"{b['highs_runs']} network bounds at start {b['started_with']} added "
                        f"{b['rounds_added']}, "
                        f"active line/trafo/v {b['active_line']}/{b['active_trafo']}/"
                        f"{b['active_v']} | max line {fmt(row['max_line'], 1)} % trafo "
                        f"{fmt(row['max_trafo'], 1)} % vm {fmt(row['max_vm'], 4)}-"
                        f"{fmt(row['min_vm'], 4)} | {crowded}",
                        flush=True,
                    )
                    # ---- pandapower's AC OPF
                    opf_ok = not args.no_opf and (
                        (net.n_bus <= args.opf_max_buses and n <= args.opf_max_orders)
                        or (net.n_bus > args.opf_max_buses and n <= args.opf_large_orders)
                    )
                    if opf_ok:
                        opf = _refs.opf_reference(
                            grid,
                            linear,
                            groups,
                            IMPORT_PRICE,
                            EXPORT_PRICE,
                            hours,
                            args.opf_timeout,
                        )
                    else:
                        opf = _refs.OpfOutcome(
                            status="skipped",
                            detail="--no-opf"
                            if args.no_opf
                            else f"size cap ({net.n_bus} buses, N={n})",
                        )
                    row["opf"] = dataclasses.asdict(opf)
                    if opf.status == "converged":
                        row["opf_share"] = w_ac / opf.welfare if opf.welfare else float("nan")
                        row["opf_share_lp"] = w_lp / opf.welfare if opf.welfare else float("nan")
                        row["opf_speedup"] = opf.seconds / run.e2e
                        print(
                            f"    runopp {opf.seconds:.2f} s welfare {opf.welfare:.4f} -> ours(AC) "
                            f"{pct(row['opf_share'])} at {row['opf_speedup']:.0f}x",
                            flush=True,
                        )
                    elif opf.status != "skipped":
                        print(
                            f"    runopp {opf.status} {fmt(opf.seconds, 1)} s {opf.detail}",
                            flush=True,
                        )
                    rows.append(row)

    # ---- no network: merit order, PeerGrid on one bus, pymarket
    nonet: list[dict[str, Any]] = []
    pm_version = _refs.pymarket_version()
    for n, book in books_for_nonet.items():
        values = values_by_n[n]
        bids = [(wh / 1000, p * C) for b, wh, p in values if b]
        offers = [(wh / 1000, p * C) for b, wh, p in values if not b]
        merit_peer, vol_peer = _refs.merit_order(bids, offers)
        merit_grid, vol_grid = _refs.merit_order(bids, offers, IMPORT_PRICE * C, EXPORT_PRICE * C)
        names = sorted({o.bus for o in book.orders})
        one_bus = _refs.one_bus_network(names)
        peer_only = ClearingOptions(import_price=10**9, export_price=0, solver=args.solver)
        t = time.perf_counter()
        r_peer = clearing.clear(book, one_bus, peer_only)
        t_peer = time.perf_counter() - t
        t = time.perf_counter()
        r_grid = clearing.clear(book, one_bus, options)
        t_grid = time.perf_counter() - t
        entry: dict[str, Any] = {
            "orders": n,
            "merit_peer": merit_peer,
            "merit_peer_kwh": vol_peer,
            "merit_grid": merit_grid,
            "merit_grid_kwh": vol_grid,
            "one_bus_peer": r_peer.welfare * C,
            "one_bus_peer_s": t_peer,
            "one_bus_grid": r_grid.welfare * C,
            "one_bus_grid_s": t_grid,
            "feeders_ac": {
                r["grid"]: r["welfare_ac"]
                for r in rows
                if r["orders"] == n and r["book"] == "balanced"
            },
            "feeders_lp": {
                r["grid"]: r["welfare_lp"]
                for r in rows
                if r["orders"] == n and r["book"] == "balanced"
            },
            "pymarket": {},
        }
        print(
            f"\n## no network, N={n}: merit order {merit_peer:.4f} (peer only) / "
            f"{merit_grid:.4f} (with tariffs); PeerGrid one bus {entry['one_bus_peer']:.4f} "
            f"({t_peer:.3f} s) / {entry['one_bus_grid']:.4f} ({t_grid:.3f} s)",
            flush=True,
        )
        if pm_version and not args.no_pymarket:
            pm_orders = [(wh / 1000, p * C, b) for b, wh, p in values]
            for mech in ("huang", "muda", "p2p"):
                if mech == "p2p" and n > args.p2p_max_orders:
                    entry["pymarket"][mech] = {"skipped": f"N > {args.p2p_max_orders}"}
                    continue
                try:
                    w, vol, secs, note = _refs.pymarket_run(pm_orders, mech, args.seed)
                except Exception as exc:  # pymarket is 2019 code on today's pandas
                    entry["pymarket"][mech] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                    print(f"  pymarket {mech}: {type(exc).__name__}: {exc}", flush=True)
                    continue
                entry["pymarket"][mech] = {
                    "welfare": w,
                    "kwh": vol,
                    "seconds": secs,
                    "note": note,
                }
                print(
                    f"  pymarket {mech}: {w:.4f} ({pct(w / merit_peer)} of the peer-only "
                    f"optimum), {vol:.1f} kWh, {secs:.2f} s {note}",
                    flush=True,
                )
        nonet.append(entry)

    elapsed = time.perf_counter() - started
    load1 = os.getloadavg()
    report(command, args, grid_rows, rows, nonet, pm_version, elapsed, load0, load1, ts)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": command.strip(),
                    "versions": versions(),
                    "time_step": ts,
                    "grids": grid_rows,
                    "rows": rows,
                    "no_network": nonet,
                    "elapsed_s": elapsed,
                },
                indent=1,
                default=str,
            )
        )


def report(command, args, grid_rows, rows, nonet, pm_version, elapsed, load0, load1, ts) -> None:
    """Print the markdown tables for RESULTS.md."""
    out = print
    out("\n\n<!-- markdown for benchmarks/RESULTS.md -->")
    out(
        f"\nCommand: `{command.strip()}` ({elapsed / 60:.1f} min; load average "
        f"{load0[0]:.2f} at start, {load1[0]:.2f} at end). {versions()}. SimBench time step "
        f"{ts} (evening-demand: {args.evening_step}); medians of {args.repeat} runs; grid "
        "loading excluded."
    )
    out("\n### Grids and network models\n")
    out(
        "| grid | time step | pandapower buses | model buses | model | cached load s | "
        "network model s | base vm min-max pu | base max line / trafo % | base violations |"
    )
    out("| --- | ---: | ---: | ---: | --- | ---: | ---: | --- | --- | ---: |")
    for g in grid_rows:
        out(
            f"| {g['grid']} | {g['time_step']} | {g['pp_buses']} | {g['model_buses']} | "
            f"{g['model']} | "
            f"{g['load_s']:.2f} | "
            f"{g['model_s']:.2f} | {g['base_vm_min']:.4f}-{g['base_vm_max']:.4f} | "
            f"{g['base_max_line']:.1f} / {g['base_max_trafo']:.1f} | {g['base_violations']} |"
        )
    out("\n### PeerGrid end to end (clear_on_grid) vs raw HiGHS on the identical LP\n")
    out(
        "| grid | book | N | groups | status | end-to-end s | build s | solve s | extract s | "
        "AC pf s (runs) | other s | AC it | LP rows x cols | raw HiGHS s | ours LP s | "
        "ratio | solve / raw | final vm min-max pu | max line / trafo % | "
        "violations (base / new) |"
    )
    out(
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | "
        "---: | ---: | ---: | ---: | --- | --- | --- |"
    )
    for r in rows:
        out(
            f"| {r['grid']} | {r['book']} | {r['orders']} | {r['groups']} | {r['status']} | "
            f"{r['e2e_s']:.3f} | {r['build_s']:.3f} | {r['solve_s']:.3f} | {r['extract_s']:.3f} | "
            f"{r['ac_s']:.3f} ({r['ac_runs']}) | {r['other_s']:.3f} | {r['iterations']} | "
            f"{r['lp_rows']} x {r['lp_cols']} | {r['raw_highs_s']:.3f} | {r['ours_lp_s']:.3f} | "
            f"{r['ratio']:.2f} | {r['solve_ratio']:.2f} | "
            f"{fmt(r['min_vm'], 4)}-{fmt(r['max_vm'], 4)} | "
            f"{fmt(r['max_line'], 1)} / {fmt(r['max_trafo'], 1)} | "
            f"{r['violations']} ({r['base_violations']} / {r['new_violations']}) |"
        )
    out("\n### PeerGrid vs pandapower's AC OPF (runopp) on the same orders\n")
    out(
        "| grid | book | N | runopp | runopp s | PeerGrid s | speed-up | OPF welfare | "
        "PeerGrid welfare LP / AC | PeerGrid AC / OPF | traded kWh ours / OPF | "
        "AC grid kWh ours / OPF |"
    )
    out("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | --- |")
    for r in rows:
        o = r["opf"]
        if o["status"] == "converged":
            out(
                f"| {r['grid']} | {r['book']} | {r['orders']} | converged | {o['seconds']:.2f} | "
                f"{r['e2e_s']:.3f} | {r['opf_speedup']:.0f}x | {o['welfare']:.4f} | "
                f"{r['welfare_lp']:.4f} / {r['welfare_ac']:.4f} | {pct(r['opf_share'])} | "
                f"{r['traded_kwh']:.2f} / {o['bought_kwh']:.2f} | "
                f"{r['grid_kwh_ac']:.3f} / {o['grid_kwh']:.3f} |"
            )
        else:
            out(
                f"| {r['grid']} | {r['book']} | {r['orders']} | {o['status']}: {o['detail']} | "
                f"{fmt(o['seconds'], 1)} | {r['e2e_s']:.3f} | | | "
                f"{r['welfare_lp']:.4f} / {r['welfare_ac']:.4f} | | | |"
            )
    profile(rows)
    out(
        "\n### Welfare without a network: merit order, PeerGrid on one bus, pymarket "
        f"{pm_version or '(not installed)'}\n"
    )
    out(
        "Welfare in currency (token units / 1e6) per 15-min interval; pymarket has no upstream "
        "grid, so its mechanisms are compared with the peer-only optimum. pymarket is not a "
        "project dependency: `pip install pymarket==0.7.6` (pulls pulp and matplotlib).\n"
    )
    out(
        "| N | merit order, peer only | PeerGrid 1 bus, peer only | huang | muda | p2p | "
        "merit order with tariffs | PeerGrid 1 bus with tariffs | PeerGrid on the feeders, "
        "AC (min-max over grids) |"
    )
    out("| ---: | ---: | ---: | --- | --- | --- | ---: | ---: | --- |")
    for e in nonet:
        cells = []
        for mech in ("huang", "muda", "p2p"):
            m = e["pymarket"].get(mech)
            if not m:
                cells.append("not run")
            elif "welfare" in m:
                share = m["welfare"] / e["merit_peer"] if e["merit_peer"] else float("nan")
                note = f" ({m['note']})" if m["note"] else ""
                cells.append(f"{m['welfare']:.4f} ({pct(share)}; {m['seconds']:.2f} s){note}")
            else:
                cells.append(next(iter(m.values())))
        feeders = list(e["feeders_ac"].values())
        rng = f"{min(feeders):.4f}-{max(feeders):.4f}" if feeders else "n/a"
        out(
            f"| {e['orders']} | {e['merit_peer']:.4f} | {e['one_bus_peer']:.4f} "
            f"({e['one_bus_peer_s']:.3f} s) | {' | '.join(cells)} | {e['merit_grid']:.4f} | "
            f"{e['one_bus_grid']:.4f} ({e['one_bus_grid_s']:.3f} s) | {rng} |"
        )
    targets(rows)


def profile(rows) -> None:
    """Print where each case's time goes, the lazy bounds and whether the limits bind."""
    out = print
    out("\n### Where the time goes, lazy network bounds, binding limits\n")
    out(
        "clear_s is ``clear_on_grid`` end to end, from the loop's own profile "
        "(``grid_clearing.LoopProfile``): build (the LPs), solve (HiGHS's ``run()``s, per solve), "
        "rules (the canonical rules and rounding to Wh; in brackets the QPs, and y/n whether "
        "the basis proved the optimum unique so the QPs were skipped), AC pf (pandapower's "
        "power flows), check (the AC state against the limits), relin (re-linearisation), "
        "extract (prices, orders, trades of the kept solve), AC summary (its full per-element "
        "figures, once); other is the rest. Raw HiGHS: a fresh ``Highs()`` on the final LP with "
        "every bound (what a plain solve costs) and the sum over every LP of the loop; "
        "final x: the final solve's build + solve + rules plus the extraction over raw HiGHS on "
        "that LP. HiGHS runs: per solve (the first run without the network bounds the previous "
        "solve did not need, then rounds with the violated ones put back); bounds: the network "
        "bounds in force at a solve's first run + those put back after it; active: the final "
        "LP's bounds at their limit (line / trafo flows, voltages). Max line / trafo loading "
        "and the voltage range are the final result's AC figures.\n"
    )
    out(
        "| grid | book | N | status | clear_s | solves | build s | solve s (per solve) | "
        "rules s (QPs s; unique) | AC pf s (runs) | check s | relin s | extract s | "
        "AC summary s | other s | raw HiGHS final LP s | final x | raw HiGHS all LPs s | "
        "HiGHS runs | bounds at start + added | active line / trafo / v | "
        "max line / trafo % | vm min-max pu |"
    )
    out("| --- | --- | ---: | --- |" + " ---: |" * 15 + " --- | --- | --- | --- | --- |")
    for r in rows:
        b = r["bounds"]
        each = "+".join(f"{x:.3f}" for x in r["solve_each"])
        runs = "+".join(str(a) for a in b["highs_runs"])
        bounds = ", ".join(f"{s0}+{a}" for s0, a in zip(b["started_with"], b["added"], strict=True))
        out(
            f"| {r['grid']} | {r['book']} | {r['orders']} | {r['status']} | {r['e2e_s']:.3f} | "
            f"{r['iterations']} | {r['build_s']:.3f} | {r['solve_s']:.3f} ({each}) | "
            f"{r['rules_s']:.3f} ({b['canonical_s']:.3f}; "
            f"{'/'.join('y' if u else 'n' for u in b['proved_unique'])}) | {r['ac_s']:.3f} "
            f"({r['ac_runs']}) | {r['check_s']:.3f} | {r['relin_s']:.3f} | "
            f"{r['extract_s']:.3f} | {r['summary_s']:.3f} | {r['other_s']:.3f} | "
            f"{r['raw_final_s']:.3f} | {r['final_ratio']:.2f} | {r['raw_highs_s']:.3f} | "
            f"{runs} | {bounds} | {b['active_line']} / {b['active_trafo']} / "
            f"{b['active_v']} | {fmt(r['max_line'], 1)} / {fmt(r['max_trafo'], 1)} | "
            f"{fmt(r['min_vm'], 4)}-{fmt(r['max_vm'], 4)} |"
        )
    crowded = {(r["grid"], r["book"]): r["crowded"] for r in rows if r["book"] != "balanced"}
    if crowded:
        out("")
        for (grid, book), what in crowded.items():
            out(f"- {grid}, {book}: {what}")


def targets(rows) -> None:
    """Print the issue's targets against what was measured."""
    print("\n### Targets\n")
    for code, limit in (("1-MVLV-rural-all-0-sw", 1.0), ("1-MVLV-semiurb-all-0-sw", 1.5)):
        for r in rows:
            if r["grid"] != code or r["orders"] != 10000:
                continue
            ok = "met" if r["e2e_s"] <= limit and r["iterations"] <= 3 else "missed"
            print(
                f"- 10,000 orders ({r['book']}) on {code} in <= {limit:g} s end to end, <= 3 "
                f"solves: {ok} ({r['e2e_s']:.3f} s, {r['iterations']} solve(s))"
            )
    same = [r["shuffle_identical"] for r in rows]
    print(
        f"- the same result for a shuffled book: {sum(same)}/{len(same)} cases identical "
        "(``result_to_dict``: prices, orders, amounts, trades, AC check)"
    )
    ratios = [r["final_ratio"] for r in rows if not math.isnan(r["final_ratio"])]
    if ratios:
        worst = max(rows, key=lambda r: -1 if math.isnan(r["final_ratio"]) else r["final_ratio"])
        print(
            f"- <= 2x raw HiGHS on the final LP (its build + solve + rules + extraction): "
            f"{sum(x <= 2 for x in ratios)}/{len(ratios)} cases met; worst "
            f"{worst['final_ratio']:.2f}x ({worst['grid']}, {worst['book']}, "
            f"N={worst['orders']})"
        )
    conv = [r for r in rows if r["opf"]["status"] == "converged"]
    if conv:
        shares = [r["opf_share"] for r in conv]
        speed = [r["opf_speedup"] for r in conv]
        print(
            f"- welfare >= 99.5 % of AC OPF: {sum(s >= 0.995 for s in shares)}/{len(conv)} "
            f"met (min {pct(min(shares))}); >= 20x its speed: "
            f"{sum(s >= 20 for s in speed)}/{len(conv)} met (min {min(speed):.0f}x)"
        )
    new = sum(r["new_violations"] for r in rows)
    print(
        f"- zero new AC violations in every final result: "
        f"{'met' if new == 0 else 'missed'} ({new} new in total)"
    )


if __name__ == "__main__":
    main()
