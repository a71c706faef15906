"""The network-constrained double auction on hand-written LinDistFlow networks.

No pandapower here: every ``NetworkModel`` is built from numpy arrays, and every expected number
is derived in the test (merit order, or by hand in a docstring), never copied from a run.

Units: energies [Wh], prices [token base units / kWh], amounts and welfare [token base units],
so ``Wh * price / 1000`` is token units.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from market_factories import INTERVAL, bid, offer, radial_network
from money_checks import money_problems
from pyomo.contrib.solver.common.results import TerminationCondition

from market.clearing import ClearingOptions, clear
from market.clearing.extract import share_pro_rata
from market.clearing.groups import OrderGroup
from market.clearing.status import TERMINATION_TO_STATUS, status_of
from market.domain import (
    GRID,
    Bid,
    ClearingResult,
    ClearingStatus,
    Interval,
    Offer,
    Order,
    OrderId,
    Side,
    trade_to_dict,
)
from market.errors import InvalidOrder
from market.network import NetworkModel
from market.orderbook import build_order_book

OPTIONS = ClearingOptions(import_price=300_000, export_price=80_000)

ONE_BUS = radial_network(["S"])
CHAIN = radial_network(["S", "A", "B"], [("S", "A"), ("A", "B")])
TREE = radial_network(
    ["S", "A", "B", "C"], [("S", "A"), ("S", "B"), ("B", "C")], r_pu=0.01, x_pu=0.01
)
"""Networks that never bind: no thermal limits, a 0.5-1.5 p.u. band, and at most 60 kWh in
15 min (240 kW) through <= 0.02 p.u. of resistance on a 1 MVA base moves v by < 0.01 p.u.^2."""


def clear_orders(
    orders: list[Order],
    network: NetworkModel,
    options: ClearingOptions = OPTIONS,
    interval: Interval = INTERVAL,
) -> ClearingResult:
    return clear(build_order_book(interval, orders), network, options)


def serialised(result: ClearingResult) -> tuple[object, ...]:
    return (
        result.status,
        result.orders,
        result.prices,
        result.grid_import_wh,
        result.grid_export_wh,
        tuple(trade_to_dict(t) for t in result.trades),
        result.welfare,
        result.community_rent,
    )


# ---------------------------------------------------------------------- a. merit-order reference


@dataclass(frozen=True)
class MeritOrder:
    """Welfare-maximising outcome of an unconstrained single-price market.

    ``welfare_wh_price`` is the welfare times 1000 [Wh * token units / kWh]: exact.
    ``[price_low, price_high]`` is the interval of market-clearing prices.
    """

    welfare_wh_price: int
    price_low: int
    price_high: int


def merit_order(
    bids: list[Bid], offers: list[Offer], import_price: int, export_price: int
) -> MeritOrder:
    """Walk the supply curve up and the demand curve down while demand pays more than supply.

    Supply = offers plus the grid's unlimited supply at ``import_price``; demand = bids plus the
    grid's unlimited demand at ``export_price``. ``None`` marks an unlimited step. The walk ends
    at the latest where both grid steps meet, since ``export_price <= import_price``.

    The clearing prices are ``[max(S(Q), D(Q+1)), min(D(Q), S(Q+1))]`` where ``Q`` is the traded
    quantity and ``S(q)``/``D(q)`` the price of the ``q``-th unit on each curve.
    """
    supply: list[tuple[int, int | None]] = sorted(
        [(o.limit_price, o.energy_wh) for o in offers] + [(import_price, None)],
        key=lambda s: (s[0], s[1] is None),
    )
    demand: list[tuple[int, int | None]] = sorted(
        [(b.limit_price, b.energy_wh) for b in bids] + [(export_price, None)],
        key=lambda d: (-d[0], d[1] is None),
    )
    si = di = 0
    s_left, d_left = supply[0][1], demand[0][1]
    last_s: int | None = None
    last_d: int | None = None
    welfare = 0
    while demand[di][0] > supply[si][0]:
        assert s_left is not None or d_left is not None  # both grid steps: export >= import
        take = min(x for x in (s_left, d_left) if x is not None)
        welfare += take * (demand[di][0] - supply[si][0])
        last_s, last_d = supply[si][0], demand[di][0]
        if s_left is not None:
            s_left -= take
            if s_left == 0:
                si += 1
                s_left = supply[si][1]
        if d_left is not None:
            d_left -= take
            if d_left == 0:
                di += 1
                d_left = demand[di][1]
    low = demand[di][0] if last_s is None else max(last_s, demand[di][0])
    high = supply[si][0] if last_d is None else min(last_d, supply[si][0])
    assert low <= high
    return MeritOrder(welfare_wh_price=welfare, price_low=low, price_high=high)


def test_merit_order_reference_on_a_literal_book() -> None:
    """The reference itself, on numbers checked by hand.

    Offers 1000 Wh @ 100k and 1000 Wh @ 250k, bids 1500 Wh @ 400k and 1000 Wh @ 200k, grid
    300k / 80k. Walk: 1000 Wh (400k vs 100k) + 500 Wh (400k vs 250k); then the 200k bid meets
    the 250k offer: stop. Welfare = 1000*300k + 500*150k = 375_000_000 Wh*units/kWh.
    Clearing prices: max(S(1500)=250k, D(1501)=200k) .. min(D(1500)=400k, S(1501)=250k).
    """
    ref = merit_order(
        [bid("b1", "S", 1500, 400_000), bid("b2", "S", 1000, 200_000)],
        [offer("o1", "S", 1000, 100_000), offer("o2", "S", 1000, 250_000)],
        300_000,
        80_000,
    )
    assert ref == MeritOrder(welfare_wh_price=375_000_000, price_low=250_000, price_high=250_000)


PRICES = st.one_of(
    st.integers(0, 500_000),
    st.sampled_from([0, 80_000, 100_000, 250_000, 300_000, 500_000]),  # ties with tariffs
)
ORDER_ROWS = st.lists(
    st.tuples(st.booleans(), st.integers(0, 3), st.integers(1, 5000), PRICES),
    min_size=1,
    max_size=12,
)


def orders_from_rows(
    rows: list[tuple[bool, int, int, int]], network: NetworkModel, interval: Interval = INTERVAL
) -> list[Order]:
    names = network.bus_names
    return [
        (bid if is_buy else offer)(f"o{i:02d}", names[b % len(names)], wh, price, None, interval)
        for i, (is_buy, b, wh, price) in enumerate(rows)
    ]


@settings(max_examples=60, deadline=None)
@given(
    ORDER_ROWS,
    st.tuples(PRICES, PRICES),
    st.sampled_from([ONE_BUS, CHAIN, TREE]),
    st.sampled_from([900, 3600]),
)
def test_unconstrained_clearing_matches_merit_order(
    rows: list[tuple[bool, int, int, int]],
    tariffs: tuple[int, int],
    network: NetworkModel,
    length_s: int,
) -> None:
    """Where the network never binds, the LP is the textbook single-price market.

    Welfare is compared exactly: with no network constraint binding, an optimal vertex accepts
    sums and differences of whole order sizes, so every group's kWh is a whole number of Wh up to
    the solver's ~1e-7 kWh tolerance and rounds back exactly; both sides then round the same
    exact numerator / 1000 half-to-even. An order whose limit lies strictly outside the interval
    of clearing prices is decided in *every* optimum (complementary slackness against any
    clearing price), so it is checked; an order at a clearing price may be partly accepted.
    """
    export_price, import_price = sorted(tariffs)
    options = ClearingOptions(import_price=import_price, export_price=export_price)
    interval = Interval(INTERVAL.start, length_s)
    orders = orders_from_rows(rows, network, interval)
    result = clear_orders(orders, network, options, interval)
    bids = [o for o in orders if isinstance(o, Bid)]
    offers = [o for o in orders if isinstance(o, Offer)]
    ref = merit_order(bids, offers, import_price, export_price)

    assert result.is_ok, result.reason
    assert result.welfare == round(Fraction(ref.welfare_wh_price, 1000))
    accepted = result.accepted_wh
    for o in bids:
        if o.limit_price > ref.price_low:
            assert accepted[o.order_id] == o.energy_wh, (o, ref)
        if o.limit_price < ref.price_high:
            assert accepted[o.order_id] == 0, (o, ref)
    for s in offers:
        if s.limit_price < ref.price_high:
            assert accepted[s.order_id] == s.energy_wh, (s, ref)
        if s.limit_price > ref.price_low:
            assert accepted[s.order_id] == 0, (s, ref)
    for bus, price in result.prices:
        assert ref.price_low <= price <= ref.price_high, (bus, price, ref)
    if ref.welfare_wh_price > 0:
        assert result.status is ClearingStatus.CLEARED


# ---------------------------------------------------------------------- b. properties


CONGESTED = radial_network(
    ["S", "A", "B", "C"],
    [("S", "A"), ("A", "B"), ("S", "C")],
    s_max_va=[math.inf, 4000, 2000],
    base_p_w=[0, -800, 1200, 400],
)
"""Thermal limits only (wide band, tiny impedances). In 15 min the limits are 1000 Wh and
500 Wh and the base flows 300 Wh and 100 Wh: whole Wh, so an optimal vertex is whole Wh too and
extraction has no rounding residual. The base case (no trade) is feasible."""


def branch_flows_w(network: NetworkModel, injection_w: np.ndarray) -> np.ndarray:
    """Active flow [W] of each branch from parent to child: minus the child subtree's injection."""
    parent = network.parents()
    subtree = injection_w.astype(float).copy()
    depth, _ = network.depth_and_path_r()
    for b in sorted(range(network.n_bus), key=lambda i: -depth[i]):
        if parent[b] >= 0:
            subtree[parent[b]] += subtree[b]
    return np.array([-subtree[int(j)] for j in network.to_bus])


def dispatch_injection_w(result: ClearingResult, network: NetworkModel) -> np.ndarray:
    """Net injection [W] per bus of the cleared dispatch, base included, slack excluded."""
    h = result.interval.hours
    inj = network.base_p_w.astype(float).copy()
    index = network.bus_index()
    for o in result.orders:
        sign = 1.0 if o.side is Side.SELL else -1.0
        inj[index[o.bus]] += sign * o.accepted_wh / h
    inj[network.slack] = 0.0
    return inj


def check_invariants(orders: list[Order], result: ClearingResult) -> None:
    """Balance, limit prices, trade provenance and payment rules of any ok result."""
    assert result.is_ok, result.reason
    limit = {o.order_id: o for o in orders}
    res = {r.order_id: r for r in result.orders}
    assert set(res) == set(limit)

    bought = sum(r.accepted_wh for r in result.orders if r.side is Side.BUY)
    sold = sum(r.accepted_wh for r in result.orders if r.side is Side.SELL)
    assert bought + result.grid_export_wh == sold + result.grid_import_wh
    assert min(result.grid_import_wh, result.grid_export_wh) == 0
    assert result.cleared_wh == bought

    for oid, r in res.items():
        order = limit[oid]
        assert 0 <= r.accepted_wh <= order.energy_wh
        assert (r.participant, r.bus, r.side) == (order.participant, order.bus, order.side)
        if r.accepted_wh:
            if r.side is Side.BUY:
                assert 0 <= r.price <= order.limit_price
            else:
                assert r.price >= order.limit_price

    per_order: dict[OrderId | None, int] = defaultdict(int)
    paid: dict[OrderId | None, int] = defaultdict(int)
    grid_sold = grid_bought = 0
    for t in result.trades:
        assert t.energy_wh > 0
        if t.buyer == GRID:
            assert t.buyer_order is None
            grid_bought += t.energy_wh
        else:
            assert t.buyer_order is not None
            assert t.buyer_price == res[t.buyer_order].price
            assert t.buyer_bus == res[t.buyer_order].bus
            per_order[t.buyer_order] += t.energy_wh
            paid[t.buyer_order] += t.buyer_amount
        if t.seller == GRID:
            assert t.seller_order is None
            grid_sold += t.energy_wh
        else:
            assert t.seller_order is not None
            assert t.seller_price == res[t.seller_order].price
            per_order[t.seller_order] += t.energy_wh
            paid[t.seller_order] += t.seller_amount
    assert grid_sold == result.grid_import_wh
    assert grid_bought == result.grid_export_wh
    for oid, r in res.items():
        assert per_order[oid] == r.accepted_wh
        assert paid[oid] == r.amount
    # each order pays/receives its formula once, split over its trades by largest remainder
    assert money_problems(result, {o.order_id: o.limit_price for o in orders}) == []
    assert result.community_rent == sum(t.buyer_amount - t.seller_amount for t in result.trades)


@settings(max_examples=40, deadline=None)
@given(ORDER_ROWS, st.tuples(PRICES, PRICES), st.randoms(use_true_random=False))
def test_congested_clearing_invariants(
    rows: list[tuple[bool, int, int, int]],
    tariffs: tuple[int, int],
    rnd: random.Random,
) -> None:
    """Energy balances to the Wh, no order trades beyond its limit, trades account for every
    accepted Wh and token, the dispatch respects the thermal limits, the community's rent is
    never negative (base case feasible, no rounding residual: see ``CONGESTED``), and shuffling
    the input changes nothing."""
    export_price, import_price = sorted(tariffs)
    options = ClearingOptions(import_price=import_price, export_price=export_price)
    orders = orders_from_rows(rows, CONGESTED)
    result = clear_orders(orders, CONGESTED, options)
    check_invariants(orders, result)
    assert result.community_rent >= 0

    flows = branch_flows_w(CONGESTED, dispatch_injection_w(result, CONGESTED))
    assert np.all(np.abs(flows) <= CONGESTED.s_max_va + 1e-6), flows

    shuffled = list(orders)
    rnd.shuffle(shuffled)
    assert serialised(clear_orders(shuffled, CONGESTED, options)) == serialised(result)


TIGHT = radial_network(
    ["S", "A", "B", "C"],
    [("S", "A"), ("A", "B"), ("S", "C")],
    r_pu=[0.05, 0.1, 0.08],
    x_pu=0.02,
    s_max_va=[math.inf, 4002, 2999],
    vm_min_pu=0.97,
    vm_max_pu=1.03,
)
"""Voltage and thermal limits that bind at fractional Wh (4002 VA * 0.25 h = 1000.5 Wh)."""


@settings(max_examples=30, deadline=None)
@given(ORDER_ROWS, st.tuples(PRICES, PRICES))
def test_invariants_hold_when_the_dispatch_is_fractional(
    rows: list[tuple[bool, int, int, int]], tariffs: tuple[int, int]
) -> None:
    """Rounding each group to whole Wh keeps every invariant; limits hold to the rounding.

    Each order group moves by at most 0.5 Wh = 2 W in 15 min, so a flow moves by at most
    2 W per group and v by at most 2 * (0.05 + 0.1) * 2 W / 1 MVA per group.
    """
    export_price, import_price = sorted(tariffs)
    options = ClearingOptions(import_price=import_price, export_price=export_price)
    orders = orders_from_rows(rows, TIGHT)
    result = clear_orders(orders, TIGHT, options)
    check_invariants(orders, result)
    injection = dispatch_injection_w(result, TIGHT)
    slack_w = 2.0 * (len(orders) + 1)
    flows = branch_flows_w(TIGHT, injection)
    assert np.all(np.abs(flows) <= TIGHT.s_max_va + slack_w), flows
    v = lindistflow_v2(TIGHT, injection)
    v_slack = 2 * 0.15 * slack_w / TIGHT.s_base_va
    assert np.all(v <= TIGHT.vm_max_pu**2 + v_slack), v
    assert np.all(v >= TIGHT.vm_min_pu**2 - v_slack), v


@settings(max_examples=25, deadline=None)
@given(ORDER_ROWS, st.sampled_from([ONE_BUS, TREE]))
def test_single_price_markets_charge_everyone_the_same(
    rows: list[tuple[bool, int, int, int]], network: NetworkModel
) -> None:
    """Without congestion all nodal prices are equal and, rounding aside, rent is zero."""
    orders = orders_from_rows(rows, network)
    result = clear_orders(orders, network)
    check_invariants(orders, result)
    assert len({p for _, p in result.prices}) == 1
    # at one price a trade's two amounts are its exact value rounded up or down on each side
    # (the split of each order's amount), so they differ by at most one unit
    for t in result.trades:
        if t.buyer_price == t.seller_price:
            assert abs(t.buyer_amount - t.seller_amount) <= 1


# ---------------------------------------------------------------------- c. congestion


THREE_BUS_THERMAL = radial_network(
    ["S", "A", "B"], [("S", "A"), ("A", "B")], s_max_va=[math.inf, 4000.0]
)


@pytest.mark.parametrize("length_s", [900, 3600])
def test_thermal_limit_splits_prices_marginal_bid(length_s: int) -> None:
    """A cheap seller behind a 4 kVA line; the buyer's limit sets the price on its side.

    S (slack) - A - B; line A-B limited to 4000 VA, S-A unlimited. Offer at B: 3C Wh @ 50k;
    bid at A: 2C Wh @ 250k, with C = 4000 W * h the most energy A-B can carry in the interval
    (pure active power: the octagon's vertex on the P axis is exactly S_max).

    * The bid can take at most C from B; the rest would come from the grid at 300k > 250k,
      so the bid is accepted C Wh (partly): price at A = 250k, and S-A is free so S = 250k.
    * The offer is accepted C Wh of 3C (partly): price at B = its limit, 50k.
    * Welfare = C (250k - 50k) / 1000; rent = the same (the buyer pays 250k, the seller gets
      50k, on C Wh); no grid trade.
    """
    interval = Interval(INTERVAL.start, length_s)
    cap = round(4000 * interval.hours)
    orders: list[Order] = [
        offer("s-b", "B", 3 * cap, 50_000, interval=interval),
        bid("b-a", "A", 2 * cap, 250_000, interval=interval),
    ]
    result = clear_orders(orders, THREE_BUS_THERMAL, OPTIONS, interval)
    check_invariants(orders, result)
    assert result.status is ClearingStatus.CLEARED
    assert result.price_by_bus == {"S": 250_000, "A": 250_000, "B": 50_000}
    assert result.accepted_wh == {"s-b": cap, "b-a": cap}
    assert (result.grid_import_wh, result.grid_export_wh) == (0, 0)
    assert result.welfare == cap * 200
    assert result.community_rent == cap * 200
    (trade,) = result.trades
    assert (trade.seller, trade.buyer, trade.energy_wh) == ("p-s-b", "p-b-a", cap)
    assert (trade.buyer_amount, trade.seller_amount) == (cap * 250, cap * 50)


def test_thermal_limit_splits_prices_import_tariff() -> None:
    """As above (C = 1000 Wh in 15 min), but the bid is 3000 Wh @ 350k: above the tariff.

    The bid is accepted fully: 1000 Wh from B (all the line carries) and 2000 Wh from the grid
    at 300k, which is now the marginal supply at A and S: price 300k there, 50k at B.
    Welfare = 1000*(350k-50k)/1000 + 2000*(350k-300k)/1000 = 300_000 + 100_000.
    Rent = 1000 * (300k - 50k) / 1000 = 250_000 (the grid gets exactly its tariff).
    """
    orders: list[Order] = [offer("s-b", "B", 3000, 50_000), bid("b-a", "A", 3000, 350_000)]
    result = clear_orders(orders, THREE_BUS_THERMAL)
    check_invariants(orders, result)
    assert result.price_by_bus == {"S": 300_000, "A": 300_000, "B": 50_000}
    assert result.accepted_wh == {"s-b": 1000, "b-a": 3000}
    assert result.grid_import_wh == 2000
    assert result.welfare == 400_000
    assert result.community_rent == 250_000
    grid = [t for t in result.trades if t.seller == GRID]
    assert [(t.energy_wh, t.seller_price, t.seller_amount) for t in grid] == [
        (2000, 300_000, 600_000)
    ]


def test_slack_import_limit_binds() -> None:
    """A 4 kW connection in 15 min delivers at most 1000 Wh; the bid's limit sets the price.

    Bid 3000 Wh @ 400k on one bus, grid at 300k but capped at 4000 W: 1000 Wh accepted, the bid
    is marginal, price 400k. Welfare = 1000 * (400k - 300k) / 1000 = 100_000.
    """
    network = radial_network(["S"], slack_import_max_w=4000.0)
    orders: list[Order] = [bid("b", "S", 3000, 400_000)]
    result = clear_orders(orders, network)
    check_invariants(orders, result)
    assert result.accepted_wh == {"b": 1000}
    assert result.grid_import_wh == 1000
    assert result.price_by_bus == {"S": 400_000}
    assert result.welfare == 100_000
    # The grid is paid its tariff; the scarcity rent at the connection goes to the community.
    (grid_trade,) = result.trades
    assert grid_trade.seller == GRID
    assert grid_trade.seller_price == 300_000
    assert grid_trade.buyer_price == 400_000
    assert result.community_rent == 100_000


def test_base_injection_is_not_traded() -> None:
    """Inflexible generation shapes flows but never sells to market buyers for free.

    One bus with 50 kW of base PV and a bid at 200k below the 300k import tariff: nothing to buy
    from, so nothing clears.
    """
    network = radial_network(["S"], base_p_w=50_000.0)
    result = clear_orders([bid("b", "S", 1000, 200_000)], network)
    assert result.status is ClearingStatus.NO_CROSSING
    assert result.accepted_wh == {"b": 0}


def test_base_case_overload_is_never_worsened_nor_charged_to_the_market() -> None:
    """S - B with a 10 kVA line and 12 kW of inflexible load at B: 2 kW over before any trade.

    The line's limit becomes its base-case flow (never worsened; the reason says so). The market
    is not forced to buy 500 Wh from the 400k seller at B to relieve a violation it did not
    cause (which would cost the community 160_000), and a bid at B cannot add load on the line
    (the seller at B is above its limit), so nothing clears and the rent is 0.
    """
    network = radial_network(["S", "B"], [("S", "B")], s_max_va=10_000.0, base_p_w=[0, -12_000])
    orders: list[Order] = [offer("s", "B", 2000, 400_000), bid("b", "B", 1000, 350_000)]
    result = clear_orders(orders, network)
    check_invariants(orders, result)
    assert result.accepted_wh == {"s": 0, "b": 0}
    assert result.community_rent == 0
    assert result.welfare == 0


def test_rounding_residual_never_makes_rent_negative() -> None:
    """A 4002 VA line carries 1000.5 Wh in 15 min; the LP accepts fractional Wh.

    S - A - B, offer at B 3000 Wh @ 249_990 (marginal: price 249_990 at B), bids at A 301 Wh
    @ 260k (fully accepted) and 2000 Wh @ 250k (marginal: price 250k at A and S).
    The LP accepts 1000.5 Wh from B and 301 + 699.5 Wh at A. Rounded half-to-even per group:
    seller 1000, bids 301 + 700 = 1001. The 1 Wh difference is bought from GRID at the 300k
    tariff (300 units) while the buyers pay 250k for it (250 units). The congestion rent is
    only 1000 Wh * 10 units/kWh = 10 units, so the community ends up at
    75_250 + 175_000 - 249_990 - 300 = -40 units, although the base case is feasible and the
    LP's own merchandising surplus is 1000.5 * 10 / 1000 > 0. (The LP's grid import is 0: the
    1 Wh grid trade exists only in the rounded result.)
    """
    network = radial_network(["S", "A", "B"], [("S", "A"), ("A", "B")], s_max_va=[math.inf, 4002])
    orders: list[Order] = [
        offer("s-b", "B", 3000, 249_990),
        bid("b-a1", "A", 301, 260_000),
        bid("b-a2", "A", 2000, 250_000),
    ]
    result = clear_orders(orders, network)
    check_invariants(orders, result)
    assert result.community_rent >= 0, (result.community_rent, result.grid_import_wh)


# ---------------------------------------------------------------------- d. voltage


def lindistflow_v2(network: NetworkModel, injection_w: np.ndarray) -> np.ndarray:
    """Squared voltages [p.u.^2] from LinDistFlow: v_j = v_i - 2 (r P + x Q) / S_base.

    ``injection_w`` [W] per bus (slack ignored); no reactive power.
    """
    flows = branch_flows_w(network, injection_w)
    v = np.full(network.n_bus, np.nan)
    v[network.slack] = network.vm_slack_pu**2
    depth, _ = network.depth_and_path_r()
    branch_of = {int(j): k for k, j in enumerate(network.to_bus)}
    for b in sorted(range(network.n_bus), key=lambda i: depth[i]):
        if b == network.slack:
            continue
        k = branch_of[b]
        i = int(network.from_bus[k])
        v[b] = v[i] - 2 * network.r_pu[k] * flows[k] / network.s_base_va
    return v


@pytest.mark.parametrize(("offset_b", "expected_wh"), [(0.0, 25_250), (0.0104, 18_750)])
def test_voltage_limit_curtails_a_remote_seller(offset_b: float, expected_wh: int) -> None:
    """S - A - B, r = 0.1 p.u. per branch on 1 MVA; 40 kWh offered at B @ 10k; vm_max(B) = 1.02.

    Injecting p [kW] at B raises v_B by 2 (r1 + r2) p / S_base = 0.4 p / 1000 [p.u.^2]. The
    band allows v_B <= 1.02^2 - delta_B; from v_S = 1:

    * delta_B = 0: p <= 0.0404 * 1000 / 0.4 = 101 kW -> 25_250 Wh in 15 min;
    * delta_B = 0.0104 (AC sits 0.0104 above LinDistFlow): p <= 0.03 * 1000 / 0.4 = 75 kW
      -> 18_750 Wh.

    The grid buys at 80k (price at S); the seller is marginal (price 10k at B). An extra kW at
    A raises v_B by r1 / (r1 + r2) = half as much as at B, so the price at A is
    80k - (80k - 10k) / 2 = 45k.
    """
    network = radial_network(
        ["S", "A", "B"],
        [("S", "A"), ("A", "B")],
        r_pu=0.1,
        x_pu=0.05,
        vm_min_pu=0.9,
        vm_max_pu=[1.1, 1.1, 1.02],
    ).with_changes(v_offset_pu2=np.array([0.0, 0.0, offset_b]))
    orders: list[Order] = [offer("pv", "B", 40_000, 10_000)]
    result = clear_orders(orders, network)
    check_invariants(orders, result)
    accepted = result.accepted_wh[OrderId("pv")]
    assert accepted < 40_000
    assert abs(accepted - expected_wh) <= 1
    assert result.grid_export_wh == accepted
    prices = {str(bus): int(price) for bus, price in result.prices}
    assert prices["S"] == 80_000
    assert prices["B"] == 10_000
    assert abs(prices["A"] - 45_000) <= 1

    v = lindistflow_v2(network, dispatch_injection_w(result, network))
    bound = 1.02**2 - offset_b
    # one Wh in 15 min is 4 W; it moves v_B by 0.4 * 0.004 / 1000 = 1.6e-6
    assert v[2] == pytest.approx(bound, abs=2e-6)
    assert np.all(v <= network.vm_max_pu**2 - network.v_offset_pu2 + 2e-6)


# ---------------------------------------------------------------------- e. edge statuses


def test_empty_book_is_no_crossing() -> None:
    result = clear_orders([], TREE)
    assert result.status is ClearingStatus.NO_CROSSING
    assert result.is_ok
    assert result.orders == ()
    assert result.trades == ()
    assert (result.grid_import_wh, result.grid_export_wh, result.welfare) == (0, 0, 0)


def test_book_without_crossing_accepts_nothing() -> None:
    """Bid 50k < offer 200k; the bid is below the 300k import tariff and the offer above the
    80k export tariff: no pair crosses, with each other or with the grid."""
    orders: list[Order] = [
        bid("b", "A", 1000, 50_000),
        offer("s", "B", 1000, 200_000),
        bid("b2", "C", 700, 80_000),
        offer("s2", "S", 500, 299_999),
    ]
    result = clear_orders(orders, TREE)
    assert result.status is ClearingStatus.NO_CROSSING
    assert result.is_ok
    assert result.accepted_wh == {"b": 0, "s": 0, "b2": 0, "s2": 0}
    assert result.trades == ()
    assert (result.grid_import_wh, result.grid_export_wh, result.welfare) == (0, 0, 0)
    assert all(r.amount == 0 for r in result.orders)


def test_infeasible_network_is_a_status_not_an_exception() -> None:
    """400 kW of base load behind r = 0.2 p.u. (1 MVA base): v_B = 1 - 2 * 0.2 * 0.4 = 0.84 <
    0.95^2 whatever the market does; the clearing must say INFEASIBLE and accept nothing."""
    network = radial_network(
        ["S", "B"],
        [("S", "B")],
        r_pu=0.2,
        x_pu=0.0,
        vm_min_pu=0.95,
        vm_max_pu=1.05,
        base_p_w=[0, -400_000],
    )
    result = clear_orders([bid("b", "B", 1000, 250_000), offer("s", "S", 1000, 10_000)], network)
    assert result.status is ClearingStatus.INFEASIBLE
    assert not result.is_ok
    assert result.orders == ()
    assert result.trades == ()
    assert "cannot hold" in result.reason
    assert result.solver is not None


def test_order_at_an_unknown_bus_is_rejected() -> None:
    with pytest.raises(InvalidOrder, match="bus 'Z' is not in the network"):
        clear_orders([bid("b", "Z", 1000, 1)], CHAIN)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"import_price": 100, "export_price": 101}, "above import price"),
        ({"import_price": -1, "export_price": 0}, ">= 0"),
        ({"mechanism": "vickrey"}, "unknown pricing mechanism"),
        ({"engine": "gurobi"}, "unknown engine"),
        ({"solver": "barrier"}, "unknown solver"),
        ({"time_limit_s": 0}, "time_limit_s"),
    ],
)
def test_clearing_options_are_validated(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidOrder, match=match):
        ClearingOptions(**kwargs)  # type: ignore[arg-type]


def test_status_table_covers_every_termination() -> None:
    assert set(TERMINATION_TO_STATUS) == set(TerminationCondition)
    assert status_of(TerminationCondition.convergenceCriteriaSatisfied) is ClearingStatus.CLEARED
    assert status_of(TerminationCondition.provenInfeasible) is ClearingStatus.INFEASIBLE
    assert status_of(TerminationCondition.maxTimeLimit) is ClearingStatus.TIME_LIMIT


# ---------------------------------------------------------------------- f. pro rata


def test_pro_rata_within_a_price_group_largest_remainder() -> None:
    """Offers 3000 and 1000 Wh at the same bus and price share 2001 Wh sold to one bid.

    Exact shares 2001 * 3/4 = 1500.75 and 2001 * 1/4 = 500.25: floors 1500 + 500 leave 1 Wh,
    which goes to the larger remainder (0.75): 1501 + 500. The offers ask 100k, above the 80k
    export tariff, so the grid does not take the rest; the partly accepted group sets the price.
    """
    orders: list[Order] = [
        offer("o-a", "S", 3000, 100_000),
        offer("o-b", "S", 1000, 100_000),
        bid("b", "S", 2001, 200_000),
    ]
    result = clear_orders(orders, ONE_BUS)
    check_invariants(orders, result)
    assert result.accepted_wh == {"o-a": 1501, "o-b": 500, "b": 2001}
    assert result.price_by_bus == {"S": 100_000}


def test_pro_rata_ties_go_to_the_smaller_order_id() -> None:
    """Three equal offers share 2000 Wh: 666.67 each; the two spare Wh go to the two smallest
    ids (remainders tie), whatever the input order."""
    orders: list[Order] = [
        offer("o-3", "S", 1000, 100_000),
        offer("o-1", "S", 1000, 100_000),
        offer("o-2", "S", 1000, 100_000),
        bid("b", "S", 2000, 200_000),
    ]
    result = clear_orders(orders, ONE_BUS)
    check_invariants(orders, result)
    assert result.accepted_wh == {"o-1": 667, "o-2": 667, "o-3": 666, "b": 2000}


@given(st.lists(st.integers(1, 5000), min_size=1, max_size=8), st.data())
def test_share_pro_rata_is_exact_and_proportional(sizes: list[int], data: st.DataObject) -> None:
    total = sum(sizes)
    accepted = data.draw(st.integers(0, total))
    orders = tuple(offer(f"o{i}", "S", wh, 1) for i, wh in enumerate(sizes))
    group = OrderGroup(bus=0, side=Side.SELL, limit_price=1, energy_wh=total, orders=orders)
    shares = share_pro_rata(group, accepted)
    assert sum(shares.values()) == accepted
    for o in orders:
        exact = Fraction(accepted * o.energy_wh, total)
        assert 0 <= shares[o.order_id] <= o.energy_wh
        assert math.floor(exact) <= shares[o.order_id] <= math.floor(exact) + 1
