"""Published prices and dispatch are unique for a book: every solve path publishes the same.

Three paths clear each book: the lazy-bounds highspy solve (the default on small books), the
full highspy LP (lazy bounds switched off) and the pyomo model. Where the LP is degenerate
(flows pinned at a thermal or slack limit, orders priced exactly at a tariff or at each
other's price, offers exactly matching bids) they used to return different optimal vertices,
so different nodal prices (and sometimes dispatches); :mod:`market.clearing.unique` now picks
one optimum by a strictly convex rule on the full LP and all three publish it.

* two regression books, found by random search, where the three paths disagreed; each test
  also shows that the comparison fails with the rule switched off (fault injection);
* hypothesis books built to be degenerate, on ideal feeders and on re-linearised ones with
  losses, voltage offsets and slack limits (:mod:`engine_cases`);
* the chosen duals are optimal (dual objective = primal objective) and, where no range is
  open, equal the solver's own; the reference price rounds half to even in integers.
"""

from __future__ import annotations

import dataclasses
import importlib
import operator
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from engine_cases import IV, books, relinearised_networks
from hypothesis import HealthCheck, Phase, event, find, given, settings
from hypothesis import strategies as st
from market_factories import INTERVAL, bid, offer, radial_network

import market.clearing as mc
from market.clearing import ClearingOptions, Engine
from market.clearing.lp import LpData, build_lp
from market.clearing.pricing import CURRENCY_PER_UNIT, reference_price
from market.clearing.unique import Canonical, canonical_outcome, canonical_prices
from market.domain import Bid, BusId, ClearingResult, Offer, OrderBook
from market.network import NetworkModel
from market.orderbook import build_order_book

solve_module = importlib.import_module("market.clearing.solve")
extract_module = importlib.import_module("market.clearing.extract")

OPTIONS = ClearingOptions(import_price=300_000, export_price=80_000)
"""Tariffs [token base units / kWh]; the reference price is their midpoint, 190,000."""

PATHS = ("lazy", "full", "pyomo")


@contextmanager
def rule_switched_off() -> Iterator[None]:
    """Publish the solver's own optimum (the behaviour before unique prices)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(extract_module, "canonical_outcome", lambda _lp, o, _opt: Canonical(o, "", 0))
        yield


def clear_by(path: str, book: OrderBook, network: NetworkModel) -> ClearingResult:
    """Clear ``book`` by one of :data:`PATHS`."""
    if path == "pyomo":
        return mc.clear(book, network, dataclasses.replace(OPTIONS, engine=Engine.PYOMO))
    with pytest.MonkeyPatch.context() as mp:
        if path == "full":
            mp.setattr(solve_module, "LAZY_MAX_GROUPS_PER_BUS", -1.0)
        return mc.clear(book, network, OPTIONS)


def published(result: ClearingResult) -> tuple[object, ...]:
    """Everything a participant sees: status, prices, each order's Wh/price/amount, trades."""
    return (
        result.status,
        result.prices,
        tuple((o.order_id, o.accepted_wh, o.price, o.amount) for o in result.orders),
        result.grid_import_wh,
        result.grid_export_wh,
        result.trades,
        result.community_rent,
    )


def path_differences(book: OrderBook, network: NetworkModel) -> list[str]:
    """How the three paths' published results differ ([] when identical)."""
    results = {path: published(clear_by(path, book, network)) for path in PATHS}
    names = ("status", "prices", "orders", "grid import", "grid export", "trades", "rent")
    found = []
    for path in PATHS[1:]:
        for name, a, b in zip(names, results["lazy"], results[path], strict=True):
            if a != b:
                found.append(f"{name}: lazy {a!r}, {path} {b!r}")
    return found


def lazy_is_used(book: OrderBook, network: NetworkModel) -> bool:
    """Whether the default highspy path takes the lazy-bounds solve for ``book``."""
    groups = len({(o.bus, o.side, o.limit_price) for o in book.orders})
    return bool(groups <= solve_module.LAZY_MAX_GROUPS_PER_BUS * network.n_bus)


# ---- regression books (random search over degenerate books; the paths disagreed)

TARIFF_BOOK = build_order_book(
    INTERVAL, [bid("o0", "b1", 5000, 80_000), offer("o1", "b1", 2500, 300_000)]
)
"""A bid exactly at the export tariff and an offer exactly at the import tariff: nothing
trades and any price in [80,000, 300,000] clears the book. The lazy solve published 300,000,
the full LP and pyomo 80,000."""
TARIFF_NET = radial_network(["b0", "b1"], [("b0", "b1")], s_max_va=10_000.0)

PINNED_BOOK = build_order_book(
    INTERVAL,
    [
        offer("o0", "b2", 1000, 200_000),
        bid("o1", "b3", 5000, 200_000),
        offer("o2", "b2", 1000, 150_000),
        bid("o3", "b1", 5000, 300_000),
    ],
)
"""Two 5 kW branches pinned at their limit, an offer and a bid at the same price behind them:
the lazy solve and pyomo accepted 1000/750/1000/5000 Wh, the full LP 250/0/1000/1250 Wh."""
PINNED_NET = radial_network(
    ["b0", "b1", "b2", "b3"],
    [("b0", "b1"), ("b1", "b2"), ("b2", "b3")],
    s_max_va=[float("inf"), 5000.0, 5000.0],
)


def test_tariff_book_publishes_the_reference_price_on_every_path() -> None:
    assert lazy_is_used(TARIFF_BOOK, TARIFF_NET)
    assert path_differences(TARIFF_BOOK, TARIFF_NET) == []
    result = clear_by("lazy", TARIFF_BOOK, TARIFF_NET)
    assert dict(result.prices) == {"b0": 190_000, "b1": 190_000}
    assert all(o.accepted_wh == 0 for o in result.orders)


def test_tariff_book_differs_without_the_rule() -> None:
    with rule_switched_off():
        found = path_differences(TARIFF_BOOK, TARIFF_NET)
    assert any(line.startswith("prices:") for line in found), found


def test_pinned_book_publishes_one_dispatch_on_every_path() -> None:
    assert lazy_is_used(PINNED_BOOK, PINNED_NET)
    assert path_differences(PINNED_BOOK, PINNED_NET) == []
    result = clear_by("full", PINNED_BOOK, PINNED_NET)
    # the most volume among the optimal dispatches: the bid at the import tariff is served
    assert {o.order_id: o.accepted_wh for o in result.orders} == {
        "o0": 1000,
        "o1": 750,
        "o2": 1000,
        "o3": 5000,
    }
    assert result.grid_import_wh == 3750


def test_pinned_book_differs_without_the_rule() -> None:
    with rule_switched_off():
        found = path_differences(PINNED_BOOK, PINNED_NET)
    assert any(line.startswith(("orders:", "prices:")) for line in found), found


# ---- degenerate books by construction

PRICES = st.sampled_from([0, 80_000, 150_000, 190_000, 200_000, 300_000, 350_000])
"""Few limit prices, the tariffs among them: ties between orders and with the grid."""
ENERGIES = st.sampled_from([1000, 2500, 5000])
"""Few sizes [Wh]: offers exactly matching bids, flows exactly at a limit."""


@st.composite
def degenerate_books(draw: st.DrawFn, buses: tuple[BusId, ...]) -> OrderBook:
    """Orders at few prices and sizes, often in offer/bid pairs that exactly match."""
    orders: list[Bid | Offer] = []
    for i in range(draw(st.integers(1, 4))):
        bus, price, energy = draw(st.sampled_from(buses)), draw(PRICES), draw(ENERGIES)
        if draw(st.booleans()):  # an exactly matching pair, maybe at another bus
            other = draw(st.sampled_from(buses))
            orders.append(offer(f"s{i}", bus, energy, price))
            orders.append(bid(f"b{i}", other, energy, draw(st.sampled_from([price, 300_000]))))
        else:
            make_bid = draw(st.booleans())
            orders.append((bid if make_bid else offer)(f"o{i}", bus, energy, price))
    return build_order_book(INTERVAL, orders)


@st.composite
def pinned_networks(draw: st.DrawFn) -> NetworkModel:
    """A 2-5 bus feeder whose thermal and slack limits are multiples of the order sizes."""
    n = draw(st.integers(2, 5))
    names = [f"b{i}" for i in range(n)]
    branches = [(names[draw(st.integers(0, i - 1))], names[i]) for i in range(1, n)]
    limit = st.sampled_from([float("inf"), 4000.0, 10_000.0, 20_000.0])  # 1, 2.5, 5 kWh in 15 min
    return radial_network(
        names,
        branches,
        s_max_va=[draw(limit) for _ in branches],
        slack_import_max_w=draw(limit),
        slack_export_max_w=draw(limit),
    )


SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@SETTINGS
@given(st.data())
def test_degenerate_books_publish_identical_results_on_every_path(data: st.DataObject) -> None:
    network = data.draw(pinned_networks())
    book = data.draw(degenerate_books(network.bus_names))
    assert path_differences(book, network) == []


@SETTINGS
@given(st.data())
def test_relinearised_feeders_publish_identical_results_on_every_path(
    data: st.DataObject,
) -> None:
    network = data.draw(relinearised_networks())
    tied = data.draw(st.booleans())
    if tied:
        book = data.draw(degenerate_books(network.bus_names))
        book = build_order_book(IV, [dataclasses.replace(o, interval=IV) for o in book.orders])
    else:
        book = data.draw(books(list(network.bus_names), max_orders=6))
    assert path_differences(book, network) == []


# ---- the rule itself


def dual_objective(lp: LpData, u: np.ndarray) -> float:
    """The LP dual's objective at row duals ``u`` [token units per row unit] (maximisation)."""
    col_of = np.repeat(np.arange(lp.num_col), np.diff(lp.a_start))
    aty = np.bincount(col_of, weights=lp.a_value * u[lp.a_index], minlength=lp.num_col)
    d = lp.col_cost / CURRENCY_PER_UNIT - aty
    tol = 1e-6
    rows = np.where(u > tol, u * np.where(u > tol, lp.row_upper, 0.0), 0.0)
    rows += np.where(u < -tol, u * np.where(u < -tol, lp.row_lower, 0.0), 0.0)
    cols = np.where(d > tol, d * np.where(d > tol, lp.col_upper, 0.0), 0.0)
    cols += np.where(d < -tol, d * np.where(d < -tol, lp.col_lower, 0.0), 0.0)
    return float(rows.sum() + cols.sum())


@settings(max_examples=60, deadline=None, database=None)
@given(st.data())
def test_chosen_duals_are_optimal_and_keep_unique_prices(data: st.DataObject) -> None:
    network = data.draw(relinearised_networks())
    book = data.draw(books(list(network.bus_names)))
    lp = build_lp(book, network, OPTIONS)
    outcome = solve_module.solve_lp(lp, OPTIONS)
    if not outcome.status.is_ok:
        return
    ok, status, u = canonical_prices(lp, outcome.col_value, reference_price(300_000, 80_000))
    assert ok, status
    primal = outcome.objective / CURRENCY_PER_UNIT  # [token units]
    assert dual_objective(lp, u) == pytest.approx(primal, rel=1e-9, abs=1e-3)
    chosen = canonical_outcome(lp, outcome, OPTIONS)
    assert chosen.note == ""
    # the dispatch is still optimal
    welfare = float(lp.col_cost @ chosen.outcome.col_value) / CURRENCY_PER_UNIT
    assert welfare == pytest.approx(primal, rel=1e-9, abs=1e-3)


def test_a_wrong_dual_fails_the_optimality_check() -> None:
    lp = build_lp(PINNED_BOOK, PINNED_NET, OPTIONS)
    outcome = solve_module.solve_lp(lp, OPTIONS)
    u = canonical_prices(lp, outcome.col_value, 190_000)[2]
    primal = outcome.objective / CURRENCY_PER_UNIT
    assert dual_objective(lp, u) == pytest.approx(primal, abs=1e-3)
    wrong = u.copy()
    wrong[: lp.network.n_bus] -= 1_000.0  # every price 1,000 units higher
    assert dual_objective(lp, wrong) != pytest.approx(primal, abs=1e-3)


@pytest.mark.parametrize(
    ("import_price", "export_price", "expected"),
    [(300_000, 80_000, 190_000), (3, 0, 2), (5, 0, 2), (1, 0, 0), (7, 2, 4), (0, 0, 0)],
)
def test_reference_price_is_the_tariff_midpoint_rounded_half_to_even(
    import_price: int, export_price: int, expected: int
) -> None:
    assert reference_price(import_price, export_price) == expected


# ---- the rules are skipped only when the solver's optimum is the only one


@contextmanager
def rules_forced() -> Iterator[None]:
    """:func:`unique_optimum` answers ``(False, False)``: both QP rules always run."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(solve_module, "unique_optimum", lambda _lp, _h: (False, False))
        yield


@settings(max_examples=60, deadline=None, database=None)
@given(st.data())
def test_a_proved_unique_optimum_is_what_the_rules_publish(data: st.DataObject) -> None:
    network = data.draw(relinearised_networks())
    book = data.draw(books(list(network.bus_names)))
    lp = build_lp(book, network, OPTIONS)
    outcome = solve_module.solve_lp(lp, OPTIONS)
    if not outcome.status.is_ok or not (outcome.unique_prices or outcome.unique_dispatch):
        return
    # each part the basis proves unique, kept, equals what its QP rule picks on the face
    skipped = canonical_outcome(lp, outcome, OPTIONS)
    if outcome.unique:
        assert skipped.qp_s == 0.0
    none_proved = dataclasses.replace(outcome, unique_prices=False, unique_dispatch=False)
    ruled = canonical_outcome(lp, none_proved, OPTIONS)
    assert ruled.note == ""
    if outcome.unique_prices:
        assert ruled.outcome.balance_duals == pytest.approx(
            outcome.balance_duals, abs=1e-3 * CURRENCY_PER_UNIT
        )
    if outcome.unique_dispatch:
        assert ruled.outcome.accepted_kwh == pytest.approx(outcome.accepted_kwh, abs=1e-7)
    # and what participants see is identical with and without the skips
    with rules_forced():
        forced = published(mc.clear(book, network, OPTIONS))
    assert published(mc.clear(book, network, OPTIONS)) == forced


def test_a_typical_book_is_proved_unique_and_skips_the_rules() -> None:
    rng = np.random.default_rng(7)
    buses = [f"b{i}" for i in range(6)]
    network = radial_network(buses, [(buses[i - 1], buses[i]) for i in range(1, 6)])
    orders: list[Bid | Offer] = []
    for i in range(40):  # distinct prices: no ties between orders or with the tariffs
        price = int(rng.integers(90_000, 290_000)) * 10 + 1
        bus = buses[int(rng.integers(1, 6))]
        make = bid if i % 2 else offer
        orders.append(make(f"o{i}", bus, int(rng.integers(500, 3000)), price // 10))
    book = build_order_book(INTERVAL, orders)
    outcome = solve_module.solve_lp(build_lp(book, network, OPTIONS), OPTIONS)
    assert outcome.status.is_ok
    assert outcome.unique


@pytest.mark.parametrize(
    ("book", "network"), [(TARIFF_BOOK, TARIFF_NET), (PINNED_BOOK, PINNED_NET)]
)
def test_degenerate_books_are_never_called_unique(book: OrderBook, network: NetworkModel) -> None:
    outcome = solve_module.solve_lp(build_lp(book, network, OPTIONS), OPTIONS)
    assert outcome.status.is_ok
    assert not outcome.unique


@pytest.mark.parametrize(
    ("claim", "book", "network", "part"),
    [
        ((True, True), TARIFF_BOOK, TARIFF_NET, "prices:"),
        ((False, True), TARIFF_BOOK, TARIFF_NET, "prices:"),
        ((True, False), PINNED_BOOK, PINNED_NET, "orders:"),
    ],
    ids=["both", "prices", "dispatch"],
)
def test_calling_a_degenerate_book_unique_breaks_agreement(
    claim: tuple[bool, bool], book: OrderBook, network: NetworkModel, part: str
) -> None:
    # fault injection: a skip that trusted any basis (or half of one) would publish the
    # solver's vertex again
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(solve_module, "unique_optimum", lambda _lp, _h: claim)
        found = path_differences(book, network)
    assert any(line.startswith(part) for line in found), found


# ---- the AC loop's start mask publishes what a solve without it does (issue 14)


@st.composite
def next_models(draw: st.DrawFn) -> tuple[NetworkModel, NetworkModel]:
    """A feeder's model and the AC loop's next one: voltage offsets and limits moved."""
    first = draw(relinearised_networks())
    n = first.n_bus
    shift = np.array([0.0] + [draw(st.floats(-0.02, 0.02)) for _ in range(n - 1)])
    tighten = np.array([draw(st.sampled_from([1.0, 1.0, 0.7])) for _ in range(n - 1)])
    second = first.with_changes(
        v_offset_pu2=first.v_offset_pu2 + shift, s_max_va=first.s_max_va * tighten
    )
    return first, second


def with_and_without_start(
    book: OrderBook, first: NetworkModel, second: NetworkModel, *, stale: bool = False
) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """What the AC loop publishes for ``second`` after solving ``first``, and a fresh clear.

    The session's second solve starts with the network bounds the first one needed (its start
    mask). ``stale`` (fault injection) solves ``first`` again instead of ``second``.
    """
    session = mc.BookClearing(book, OPTIONS)
    session.solve(first)
    started = session.solve(first if stale else second)
    return published(session.result(started)), published(mc.clear(book, second, OPTIONS))


@settings(max_examples=80, deadline=None, database=None)
@given(st.data())
def test_a_solve_with_a_start_mask_publishes_what_one_without_does(data: st.DataObject) -> None:
    first, second = data.draw(next_models())
    book = data.draw(books(list(first.bus_names)))
    session = mc.BookClearing(book, OPTIONS)
    lazy = session.solve(first).outcome.lazy
    event(f"the second solve starts with network bounds: {bool(lazy and sum(lazy.added))}")
    started, fresh = with_and_without_start(book, first, second)
    assert started == fresh


def test_a_start_mask_is_used_and_changes_nothing_on_a_pinned_book() -> None:
    # deterministic: the first solve needs the two pinned branches' bounds, the next starts
    # with them (no lazy round), and publishes what a solve without the mask does
    session = mc.BookClearing(PINNED_BOOK, OPTIONS)
    first = session.solve(PINNED_NET)
    assert first.outcome.lazy is not None
    assert sum(first.outcome.lazy.added) > 0
    moved = PINNED_NET.with_changes(v_offset_pu2=PINNED_NET.v_offset_pu2 + 0.001)
    second = session.solve(moved)
    assert second.outcome.lazy is not None
    assert second.outcome.lazy.started_with > 0
    assert published(session.result(second)) == published(mc.clear(PINNED_BOOK, moved, OPTIONS))


def test_the_start_mask_comparison_sees_a_stale_model() -> None:
    # fault injection: a session that solved the old model again is caught
    first, second, book = find(
        st.tuples(next_models(), st.data()).map(
            lambda t: (*t[0], t[1].draw(books(list(t[0][0].bus_names))))
        ),
        lambda case: operator.ne(*with_and_without_start(case[2], case[0], case[1], stale=True)),
        settings=settings(max_examples=300, deadline=None, database=None, phases=[Phase.generate]),
    )
    assert operator.ne(*with_and_without_start(book, first, second, stale=True))
    assert operator.eq(*with_and_without_start(book, first, second))


def test_far_ends_are_bounded_first_on_a_radial_feeder() -> None:
    # b0 - b1 - b2 - b3 and b1 - b4: b1, b2, b3 and b4 violated, only b3 and b4 are far ends
    network = radial_network(
        ["b0", "b1", "b2", "b3", "b4"], [("b0", "b1"), ("b1", "b2"), ("b2", "b3"), ("b1", "b4")]
    )
    violated = np.array([False, True, True, True, True])
    far = solve_module._deepest(network, violated)
    assert far.tolist() == [False, False, False, True, True]
    assert solve_module._deepest(network, np.zeros(5, dtype=bool)).tolist() == [False] * 5
