"""The engine cross-check harness: random books and networks, and what the two engines differ in.

Not a test module (no ``test_`` prefix); ``tests/market/test_engines.py`` and
``tests/market/test_engines_properties.py`` import it by name (pytest's ``prepend`` import mode
puts ``tests/market`` on ``sys.path``, as for ``market_factories``).

:func:`engine_differences` clears one book on one network through the public entry point,
``clear(book, network, ClearingOptions(engine=...))``, once with ``highspy`` (the sparse fast
path) and once with ``pyomo`` (the algebraic reference), and solves the staged models once more
for the LP objective. It lists every difference in

* the status;
* the LP objective (welfare [currency]): equal within :data:`OBJECTIVE_REL` relative or
  :data:`OBJECTIVE_ABS` absolute (measured: the engines agree to ~1e-14);
* the accepted energy of every order and the grid exchange [Wh]: exactly, after the single
  rounding of ``market.clearing.extract``.

Prices are not compared yet: where the LP is dual degenerate the two engines may return
different (equally valid) duals; a later issue makes published prices unique.

Exact quantities need a unique optimum. With two order groups at the same limit price, or an
order priced exactly at a grid tariff, the LP can have a whole face of optimal solutions and the
two engines may pick different vertices. The books here therefore give every order its own
limit price, none equal to a tariff, so the optimum is unique (for generic networks; hypothesis
draws the impedances and injections as floats).

The networks (:func:`relinearised_networks`) are small radial feeders as
``grid_models.dispatch.relinearise`` leaves them after one AC iteration: losses linearised at a
moved operating point ``p_op_w`` (halfway between the base case's flows and a dispatch's, from
:func:`market.network.linear_state`), non-zero AC voltage offsets ``v_offset_pu2``, a voltage
band narrowed to 0.95-0.99 / 1.01-1.05 p.u. (widened where the base case is already outside,
as ``grid_models.linear`` does) and, often, finite slack import/export limits placed around the
base case's own exchange so that they bind.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np
from hypothesis import strategies as st

import market.clearing as mc
from market.clearing import ClearingOptions, Engine
from market.domain import Bid, BusId, Interval, Offer, OrderBook
from market.network import NetworkModel, linear_state
from market.orderbook import build_order_book

IV = Interval(datetime(2026, 6, 21, 12, tzinfo=UTC))
"""A 15-minute interval (0.25 h)."""

OPTIONS = ClearingOptions(import_price=300_000, export_price=80_000)
"""Tariffs [token base units / kWh] of every case."""

OBJECTIVE_REL = 1e-7
"""Relative tolerance on the LP objective [-]."""

OBJECTIVE_ABS = 1e-9
"""Absolute tolerance on the LP objective [currency] (a thousandth of a token base unit)."""


def engine_differences(
    book: OrderBook, network: NetworkModel, options: ClearingOptions = OPTIONS
) -> list[str]:
    """Every way in which the two engines' clearings of ``book`` on ``network`` differ.

    Parameters
    ----------
    book : OrderBook
        The orders.
    network : NetworkModel
        The feeder.
    options : ClearingOptions
        Tariffs [token base units / kWh]; its ``engine`` is overridden for each side.

    Returns
    -------
    list of str
        One line per difference (status, objective, an order's accepted Wh, the grid exchange);
        empty when the engines agree.
    """
    fast = mc.clear(book, network, dataclasses.replace(options, engine=Engine.HIGHSPY))
    ref = mc.clear(book, network, dataclasses.replace(options, engine=Engine.PYOMO))
    if fast.status is not ref.status:
        return [f"status: highspy {fast.status.value}, pyomo {ref.status.value}"]
    found: list[str] = []
    if fast.is_ok:
        fast_objective = mc.solve_lp(mc.build_lp(book, network, options), options).objective
        ref_objective = mc.solve(mc.build_model(book, network, options), options).objective
        gap = abs(fast_objective - ref_objective)
        if gap > max(OBJECTIVE_REL * abs(ref_objective), OBJECTIVE_ABS):
            found.append(f"objective: highspy {fast_objective!r}, pyomo {ref_objective!r}")
    ref_wh = {o.order_id: o.accepted_wh for o in ref.orders}
    for o in fast.orders:
        if ref_wh.get(o.order_id) != o.accepted_wh:
            found.append(
                f"order {o.order_id}: highspy {o.accepted_wh} Wh, pyomo {ref_wh.get(o.order_id)}"
            )
    if {o.order_id for o in fast.orders} != set(ref_wh):
        found.append("the engines report different sets of orders")
    for what in ("grid_import_wh", "grid_export_wh"):
        a, b = getattr(fast, what), getattr(ref, what)
        if a != b:
            found.append(f"{what}: highspy {a}, pyomo {b}")
    return found


@st.composite
def books(draw: st.DrawFn, buses: Sequence[BusId], max_orders: int = 12) -> OrderBook:
    """A book of 1..``max_orders`` bids and offers at ``buses``, each at its own limit price.

    Energies 1 Wh - 30 kWh; limit prices 0 - 500,000 base units / kWh, all different and none
    equal to a tariff of :data:`OPTIONS` (see the module docstring: a unique optimum).
    """
    tariffs = {OPTIONS.import_price, OPTIONS.export_price}
    n = draw(st.integers(1, max_orders))
    prices = draw(
        st.lists(
            st.integers(0, 500_000).filter(lambda p: p not in tariffs),
            min_size=n,
            max_size=n,
            unique=True,
        )
    )
    orders: list[Bid | Offer] = []
    for i, price in enumerate(prices):
        kind = draw(st.sampled_from([Bid, Offer]))
        orders.append(
            kind(
                order_id=f"o{i:02d}",
                participant=f"p{i:02d}",
                bus=draw(st.sampled_from(list(buses))),
                interval=IV,
                energy_wh=draw(st.integers(1, 30_000)),
                limit_price=price,
            )
        )
    return build_order_book(IV, orders)


def with_slack_limits(
    network: NetworkModel, import_margin_w: float | None, export_margin_w: float | None
) -> NetworkModel:
    """``network`` with its upstream limits set around the base case's own exchange.

    Parameters
    ----------
    network : NetworkModel
        The feeder.
    import_margin_w, export_margin_w : float or None
        Limit minus the base case's import (export) [W], floored at 0 W; ``None`` for none.
        A small or negative margin binds (or makes the base case infeasible).

    Returns
    -------
    NetworkModel
        The copy.
    """
    base_import_w = -float(network.base_p_w.sum())
    changes: dict[str, object] = {}
    if import_margin_w is not None:
        changes["slack_import_max_w"] = max(0.0, base_import_w + import_margin_w)
    if export_margin_w is not None:
        changes["slack_export_max_w"] = max(0.0, -base_import_w + export_margin_w)
    return network.with_changes(**changes)


def with_voltage_band(network: NetworkModel, vm_min_pu: float, vm_max_pu: float) -> NetworkModel:
    """``network`` with the voltage band ``vm_min_pu``-``vm_max_pu`` [p.u.] at every bus.

    Widened, as ``grid_models.linear`` does, where the base case (the model's own voltage with
    its AC offset) is already outside: the clearing may not worsen it, so zero trade stays
    feasible.
    """
    _, v_base = linear_state(network, network.base_p_w)
    vm_base = np.sqrt(np.maximum(v_base + network.v_offset_pu2, 0.0))
    lo = np.minimum(np.full(network.n_bus, vm_min_pu), vm_base)
    hi = np.maximum(np.full(network.n_bus, vm_max_pu), vm_base)
    return network.with_changes(vm_min_pu=lo, vm_max_pu=hi)


BANDS = st.tuples(st.floats(0.95, 0.99), st.floats(1.01, 1.05))
"""Voltage bands [p.u.] (see :func:`with_voltage_band`): often narrow enough to bind."""

MARGINS = st.one_of(st.none(), st.integers(-2_000, 40_000).map(float))
"""Slack limit margins [W] (see :func:`with_slack_limits`); ``None`` = no limit."""


WHOLE_VAR = st.integers(-5_000, 5_000)
"""Reactive base injections [var], whole like the watts below."""


@st.composite
def relinearised_networks(draw: st.DrawFn) -> NetworkModel:
    """A 2-8 bus radial feeder re-linearised at a dispatch (see the module docstring)."""
    n = draw(st.integers(2, 8))
    parents = [draw(st.integers(0, i - 1)) for i in range(1, n)]
    # whole watts, as meters and the site's units give them: a sub-microwatt injection against
    # a cap of the same size is below HiGHS's tolerances (its unique-price QP then ends
    # Infeasible and falls back to the duals, with a note), a case no feeder produces
    base_p_w = np.array([0.0] + [float(draw(st.integers(-30_000, 30_000))) for _ in range(n - 1)])
    flat = NetworkModel(
        bus_names=tuple(BusId(f"b{i}") for i in range(n)),
        slack=0,
        vm_slack_pu=draw(st.floats(0.98, 1.03)),
        from_bus=np.array(parents, dtype=np.int64),
        to_bus=np.arange(1, n, dtype=np.int64),
        r_pu=np.array([draw(st.floats(0.005, 0.5)) for _ in range(n - 1)]),
        x_pu=np.array([draw(st.floats(0.005, 0.2)) for _ in range(n - 1)]),
        s_max_va=np.array(
            [draw(st.sampled_from([math.inf, 15_000.0, 40_000.0])) for _ in range(n - 1)]
        ),
        branch_names=tuple(f"k{i}" for i in range(n - 1)),
        branch_kinds=("line",) * (n - 1),
        vm_min_pu=np.full(n, 0.95),
        vm_max_pu=np.full(n, 1.05),
        base_p_w=base_p_w,
        base_q_var=np.array([0.0] + [float(draw(WHOLE_VAR)) for _ in range(n - 1)]),
        v_offset_pu2=np.zeros(n),
        losses=True,
    )
    # the operating point after one AC iteration: a dispatch moved the flows (losses are
    # linearised halfway, as grid_models.dispatch.relinearise does) ...
    dispatch_w = np.array([0.0] + [float(draw(st.integers(-20_000, 20_000))) for _ in range(n - 1)])
    flows_kw, _ = linear_state(flat, base_p_w + dispatch_w)
    base_kw, _ = linear_state(flat, base_p_w)
    moved = flat.with_changes(p_op_w=(flows_kw + base_kw) / 2 * 1000.0)
    # ... and the AC power flow disagrees with the linear voltages by an offset per bus
    offset = np.array([0.0] + [draw(st.floats(-0.03, 0.03)) for _ in range(n - 1)])
    network = with_voltage_band(moved.with_changes(v_offset_pu2=offset), *draw(BANDS))
    return with_slack_limits(network, draw(MARGINS), draw(MARGINS))


WITHOUT: dict[str, Callable[[NetworkModel], NetworkModel]] = {
    "AC voltage offsets": lambda n: n.with_changes(v_offset_pu2=np.zeros(n.n_bus)),
    "slack limits": lambda n: n.with_changes(
        slack_import_max_w=math.inf, slack_export_max_w=math.inf
    ),
    "re-linearised operating point": lambda n: n.with_changes(p_op_w=None),
}
"""Features of the network that a broken engine could leave out (the fault-injection tests)."""
