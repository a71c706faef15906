"""The fast highspy path and the pyomo reference model solve the same LP.

``ClearingOptions(engine=...)`` picks the path that ``clear`` takes; the random cross-checks
are in ``test_engines_properties.py`` (harness: ``engine_cases.py``). Here: the plain
cross-check on flat feeders, and proof that the harness can fail: a coefficient one engine gets
wrong, or a feature of the network one engine leaves out (the AC voltage offsets, the slack
limits, the re-linearised operating point), is found by :func:`engine_differences` on the same
random cases the property tests draw.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pytest
from engine_cases import WITHOUT, books, engine_differences, relinearised_networks
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

import market.clearing as mc
from market.clearing import ClearingOptions, Engine
from market.clearing.groups import OrderGroup
from market.clearing.lp import LpData
from market.clearing.model import BuiltModel
from market.clearing.solve import solve, solve_lp
from market.domain import Bid, BusId, Interval, Offer, OrderBook
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
    fast = solve_lp(mc.build_lp(book, network, options), options)
    ref = solve(mc.build_model(book, network, options), options)
    assert fast.status == ref.status
    if not fast.status.is_ok:
        return
    assert abs(fast.objective - ref.objective) <= 1e-6 * max(1.0, abs(ref.objective))
    # Prices may repeat here, so the LP can be degenerate: primal values and duals may differ
    # between two optimal vertices and are not compared. test_engines_properties.py compares
    # the accepted energy on books where every order has its own price.


def test_the_engine_option_picks_the_path_clear_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    build_lp, build_model = mc.build_lp, mc.build_model

    def spy_lp(*args: object) -> LpData:
        built.append("highspy")
        return build_lp(*args)  # type: ignore[arg-type]

    def spy_model(*args: object) -> BuiltModel:
        built.append("pyomo")
        return build_model(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(mc, "build_lp", spy_lp)
    monkeypatch.setattr(mc, "build_model", spy_model)
    book = build_order_book(
        IV,
        [
            Offer(
                order_id="s",
                participant="s",
                bus="b1",
                interval=IV,
                energy_wh=900,
                limit_price=90_000,
            ),
            Bid(
                order_id="b",
                participant="b",
                bus="b1",
                interval=IV,
                energy_wh=700,
                limit_price=250_000,
            ),
        ],
    )
    network = cases_network()
    for engine in ("pyomo", "highspy", Engine.PYOMO):
        mc.clear(book, network, ClearingOptions(engine=engine))
    assert built == ["pyomo", "highspy", "pyomo"]


def cases_network() -> NetworkModel:
    """Two buses, nothing binding."""
    return NetworkModel(
        bus_names=(BusId("b0"), BusId("b1")),
        slack=0,
        vm_slack_pu=1.0,
        from_bus=np.array([0], dtype=np.int64),
        to_bus=np.array([1], dtype=np.int64),
        r_pu=np.array([0.01]),
        x_pu=np.array([0.01]),
        s_max_va=np.array([np.inf]),
        branch_names=("k0",),
        branch_kinds=("line",),
        vm_min_pu=np.full(2, 0.9),
        vm_max_pu=np.full(2, 1.1),
        base_p_w=np.zeros(2),
        base_q_var=np.zeros(2),
        v_offset_pu2=np.zeros(2),
    )


# ---------------------------------------------------------------- the harness can fail

FIND = settings(
    max_examples=300,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

RelinearisedCase = tuple[NetworkModel, OrderBook]


@st.composite
def relinearised_cases(draw: st.DrawFn) -> RelinearisedCase:
    network = draw(relinearised_networks())
    return network, draw(books(network.bus_names))


def found_by_harness() -> RelinearisedCase:
    """A case of the property test's strategy on which the engines differ (or NoSuchExample)."""
    return find(
        relinearised_cases(), lambda case: bool(engine_differences(case[1], case[0])), settings=FIND
    )


def test_an_objective_coefficient_off_by_one_unit_is_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The highspy LP values the first order group one token base unit per kWh off."""
    build_lp = mc.build_lp

    def off_by_one(
        book: OrderBook,
        network: NetworkModel,
        options: ClearingOptions,
        groups: tuple[OrderGroup, ...] | None = None,
    ) -> LpData:
        lp = build_lp(book, network, options, groups)
        cost = lp.col_cost.copy()
        cost[0] += 1e-6  # [currency / kWh]: 1 base unit
        return dataclasses.replace(lp, col_cost=cost)

    monkeypatch.setattr(mc, "build_lp", off_by_one)
    network, book = found_by_harness()
    differences = engine_differences(book, network)
    assert any(d.startswith("objective") for d in differences), differences
    monkeypatch.setattr(mc, "build_lp", build_lp)
    assert engine_differences(book, network) == []  # the fault, not the case, made them differ


@pytest.mark.parametrize("feature", sorted(WITHOUT))
def test_a_feature_left_out_by_the_reference_is_found(
    monkeypatch: pytest.MonkeyPatch, feature: str
) -> None:
    """The pyomo model is built without ``feature``; the random cases notice."""
    build_model = mc.build_model
    drop = WITHOUT[feature]

    def without(
        book: OrderBook,
        network: NetworkModel,
        options: ClearingOptions,
        groups: tuple[OrderGroup, ...] | None = None,
    ) -> BuiltModel:
        return build_model(book, drop(network), options, groups)

    monkeypatch.setattr(mc, "build_model", without)
    network, book = found_by_harness()
    assert engine_differences(book, network)
    monkeypatch.setattr(mc, "build_model", build_model)
    assert engine_differences(book, network) == []  # the fault, not the case, made them differ
