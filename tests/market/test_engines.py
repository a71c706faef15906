"""The fast highspy path and the pyomo reference model solve the same LP."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from market.clearing import ClearingOptions
from market.clearing.lp import build_lp
from market.clearing.model import build_model
from market.clearing.solve import solve, solve_lp
from market.domain import Bid, BusId, Interval, Offer
from market.network import NetworkModel
from market.orderbook import build_order_book

IV = Interval(datetime(2026, 6, 21, 12, tzinfo=UTC))


@st.composite
def cases(draw: st.DrawFn) -> tuple[NetworkModel, list[Bid | Offer]]:
    n = draw(st.integers(2, 7))
    parents = [draw(st.integers(0, i - 1)) for i in range(1, n)]
    names = tuple(BusId(f"b{i}") for i in range(n))
    network = NetworkModel(
        bus_names=names,
        slack=0,
        vm_slack_pu=1.0,
        from_bus=np.array(parents, dtype=np.int64),
        to_bus=np.arange(1, n, dtype=np.int64),
        r_pu=np.array([draw(st.floats(0.01, 0.5)) for _ in range(n - 1)]),
        x_pu=np.array([draw(st.floats(0.01, 0.3)) for _ in range(n - 1)]),
        s_max_va=np.array(
            [draw(st.sampled_from([np.inf, 20_000.0, 50_000.0])) for _ in range(n - 1)]
        ),
        branch_names=tuple(f"k{i}" for i in range(n - 1)),
        branch_kinds=("line",) * (n - 1),
        vm_min_pu=np.full(n, 0.9),
        vm_max_pu=np.full(n, 1.1),
        base_p_w=np.array([0.0] + [draw(st.floats(-20_000, 20_000)) for _ in range(n - 1)]),
        base_q_var=np.array([0.0] + [draw(st.floats(-3_000, 3_000)) for _ in range(n - 1)]),
        v_offset_pu2=np.zeros(n),
        s_base_va=1e6,
        losses=draw(st.booleans()),
    )
    orders: list[Bid | Offer] = []
    for i in range(draw(st.integers(1, 10))):
        cls = draw(st.sampled_from([Bid, Offer]))
        orders.append(
            cls(
                order_id=f"o{i}",
                participant=f"p{i}",
                bus=names[draw(st.integers(0, n - 1))],
                interval=IV,
                energy_wh=draw(st.integers(1, 20_000)),
                limit_price=draw(st.integers(0, 500_000)),
            )
        )
    return network, orders


@settings(max_examples=60, deadline=None)
@given(cases())
def test_fast_path_equals_pyomo_reference(case: tuple[NetworkModel, list[Bid | Offer]]) -> None:
    network, orders = case
    book = build_order_book(IV, orders)
    options = ClearingOptions()
    fast = solve_lp(build_lp(book, network, options), options)
    ref = solve(build_model(book, network, options), options)
    assert fast.status == ref.status
    if not fast.status.is_ok:
        return
    assert abs(fast.objective - ref.objective) <= 1e-6 * max(1.0, abs(ref.objective))
    # Both optimal: the same welfare; primal values and duals may differ only where the LP is
    # degenerate, so they are not compared here (tests/market/test_clearing.py pins prices).
