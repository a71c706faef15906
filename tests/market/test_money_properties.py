"""Money to the unit (issue 10): one rounding per order, split over its trades, zero-sum batches.

The rule (DESIGN.md section 3, :mod:`market.matching`): a buy order pays exactly
``ceil(accepted_wh * price / 1000)`` and a sell order receives exactly
``floor(accepted_wh * price / 1000)``; GRID and COMMUNITY legs are rounded once per leg; each
order's or leg's amount is split over its trades by largest remainder; COMMUNITY receives the
difference, so every batch sums to zero. :mod:`money_checks` states the rule as code and returns
what is broken.

Books: random books (1-40 orders, one in ten of 150-300 orders; energies from 1 Wh, where rounding
dominates, to 25 kWh; prices free or tied to a tariff) cleared with the direct HiGHS path
(:func:`market.clearing.clear`, no AC loop) on the linear models of the reference grids, CIGRE LV
at 35 % load and SimBench ``1-LV-rural1--0-sw`` at step 48 (both with losses, so COMMUNITY
legs occur), and on a hand-written congested feeder (thermal limits, so nodal prices split),
under the three mechanisms: 3 networks x 3 mechanisms x 120 books = 1,080 books, each settled
twice (no readings, and complete readings with random imbalances).

That the checks can fail: :func:`old_rule` rebuilds a result as the code before issue 10 did
(each trade rounded on its own, orders the sum of their trades); on a known book it charges a
buyer more than its limit allows and the checker says so, and on a seeded 300-order book on
CIGRE it breaks the formula for many orders. A split monkeypatched back to per-trade rounding
is caught inside :func:`market.clearing.extract.extract` itself.

Units: energies [Wh], prices [token base units / kWh], amounts [token base units].
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from market_factories import INTERVAL, bid, offer, radial_network, snapshots
from money_checks import legs_of, money_problems, per_trade_amounts, split_problems

import market.matching
from grid_models.grids import load_grid, load_grid_cached
from grid_models.linear import build_linear_grid
from market.clearing import ClearingOptions, clear
from market.domain import (
    COMMUNITY,
    GRID,
    BusId,
    ClearingResult,
    Order,
    OrderId,
    ParticipantId,
    Side,
    Tariffs,
)
from market.errors import InvalidQuantity, UnbalancedEnergy
from market.matching import Leg, match
from market.network import NetworkModel
from market.orderbook import build_order_book
from market.settlement import settle
from market.units import (
    PricePerKwh,
    TokenUnits,
    apportion_exact,
    buyer_payment,
    seller_revenue,
)

MECHANISMS = ("nodal", "uniform", "pay-as-bid")
BOOKS_PER_CASE = 120  # x 3 networks x 3 mechanisms = 1,080 books
MAX_PRICE = 500_000

CONGESTED = radial_network(
    ["S", "A", "B", "C", "D"],
    [("S", "A"), ("A", "B"), ("S", "C"), ("C", "D")],
    r_pu=[0.02, 0.05, 0.03, 0.04],
    x_pu=0.02,
    s_max_va=[float("inf"), 6_001, 9_003, 4_002],
    vm_min_pu=0.9,
    vm_max_pu=1.1,
)
"""Thermal limits that bind at fractional Wh, so nodal prices differ from bus to bus."""


@pytest.fixture(scope="module")
def networks() -> dict[str, NetworkModel]:
    """The linear models of the reference grids (losses on, as built) and the congested one."""
    cigre = build_linear_grid(load_grid("cigre-lv").scaled(load_scale=0.35)).network
    rural = build_linear_grid(load_grid_cached("simbench:1-LV-rural1--0-sw", 48)).network
    return {"cigre-lv": cigre, "rural1": rural, "congested": CONGESTED}


# ---------------------------------------------------------------------- books


@st.composite
def books(draw: st.DrawFn, buses: tuple[BusId, ...]) -> tuple[list[Order], int, int]:
    """Orders at random buses (several per participant) and tariffs (export <= import).

    Nine books in ten have 1-40 orders drawn one by one (hypothesis shrinks them); one in ten
    has 150-300 orders made from a drawn seed (cheap to draw, reproducible from the seed).
    """
    export_price, import_price = sorted(
        draw(st.tuples(st.integers(0, 400_000), st.integers(0, 400_000)))
    )
    ties = [export_price, import_price, 123_457]
    if draw(st.integers(0, 9)) == 0:
        rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
        n = rnd.randint(150, 300)
        rows = [
            (
                rnd.random() < 0.5,
                rnd.choice(buses),
                rnd.randint(1, 60 if rnd.random() < 0.3 else 25_000),
                rnd.choice(ties) if rnd.random() < 0.2 else rnd.randint(0, MAX_PRICE),
                rnd.randint(0, n // 3),
            )
            for _ in range(n)
        ]
    else:
        price = st.one_of(st.integers(0, MAX_PRICE), st.sampled_from(ties))
        energy = st.one_of(st.integers(1, 60), st.integers(1, 25_000))
        rows = draw(
            st.lists(
                st.tuples(st.booleans(), st.sampled_from(buses), energy, price, st.integers(0, 15)),
                min_size=1,
                max_size=40,
            )
        )
    orders: list[Order] = [
        (bid if buying else offer)(f"o{i:03d}", bus, wh, limit, f"p{who}")
        for i, (buying, bus, wh, limit, who) in enumerate(rows)
    ]
    return orders, import_price, export_price


def cleared(
    network: NetworkModel, orders: list[Order], mechanism: str, tariffs: tuple[int, int]
) -> ClearingResult:
    import_price, export_price = tariffs
    options = ClearingOptions(
        import_price=import_price, export_price=export_price, mechanism=mechanism
    )
    return clear(build_order_book(INTERVAL, orders), network, options)


def limits_of(orders: list[Order]) -> dict[OrderId, int]:
    return {o.order_id: o.limit_price for o in orders}


def old_rule(result: ClearingResult) -> ClearingResult:
    """``result`` as the code before issue 10 computed it: every trade rounded on its own
    (buyer ceil, seller floor), every order's amount the sum of its trades."""
    trades = tuple(
        dataclasses.replace(t, buyer_amount=TokenUnits(b), seller_amount=TokenUnits(s))
        for t in result.trades
        for b, s in [per_trade_amounts(t)]
    )
    paid: dict[OrderId, int] = defaultdict(int)
    for t in trades:
        if t.buyer_order is not None:
            paid[t.buyer_order] += t.buyer_amount
        if t.seller_order is not None:
            paid[t.seller_order] += t.seller_amount
    orders = tuple(
        dataclasses.replace(r, amount=TokenUnits(paid[r.order_id])) for r in result.orders
    )
    return dataclasses.replace(result, trades=trades, orders=orders)


def batch_checks(result: ClearingResult, tariffs: tuple[int, int], rnd: random.Random) -> None:
    """Settle with no readings and with complete readings; both batches sum to zero and each
    participant's trade amount is its orders' amounts."""
    import_price, export_price = tariffs
    tariff = Tariffs(import_price=PricePerKwh(import_price), export_price=PricePerKwh(export_price))
    net: dict[ParticipantId, int] = defaultdict(int)
    bought: dict[ParticipantId, int] = defaultdict(int)
    sold: dict[ParticipantId, int] = defaultdict(int)
    for r in result.orders:
        net[r.participant] += r.amount if r.side is Side.SELL else -r.amount
        (bought if r.side is Side.BUY else sold)[r.participant] += r.accepted_wh
    unmetered = settle(result, {}, {}, tariff)
    meters = []
    for p in sorted(set(bought) | set(sold)):
        imbalance = rnd.randint(-500, 500)
        imp = max(bought[p] - sold[p] + imbalance, 0)
        exp = max(sold[p] - bought[p] - imbalance, 0)
        meters.append((p, imp, exp, True))
    metered = settle(result, *snapshots(*meters), tariff)
    for batch in (unmetered, metered):
        assert sum(a for _, a in batch.amounts) == 0
        for line in batch.lines:
            assert line.trade_amount == net[line.participant], line


# ---------------------------------------------------------------------- properties


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("grid", ["cigre-lv", "rural1", "congested"])
@settings(max_examples=BOOKS_PER_CASE, deadline=None)
@given(data=st.data(), rnd=st.randoms(use_true_random=False))
def test_every_order_pays_its_formula_and_every_batch_is_zero_sum(
    networks: dict[str, NetworkModel],
    grid: str,
    mechanism: str,
    data: st.DataObject,
    rnd: random.Random,
) -> None:
    """Per order: its formula, within its limit's bound, its trades summing to it (energy and
    amount); per leg (GRID, COMMUNITY too): one rounding, split by largest remainder; per
    batch: zero-sum to the unit."""
    network = networks[grid]
    orders, import_price, export_price = data.draw(books(network.bus_names))
    limits = limits_of(orders)
    result = cleared(network, orders, mechanism, (import_price, export_price))
    event(f"{'150-300' if len(orders) >= 150 else '1-40'} orders: {result.status.value}")
    event(f"COMMUNITY leg: {any(COMMUNITY in (t.buyer, t.seller) for t in result.trades)}")
    split = any(len(trades) > 1 for trades in legs_of(result).values())
    event(f"a leg split over several trades: {split}")
    event(f"the old per-trade rule breaks it: {bool(money_problems(old_rule(result), limits))}")
    assert money_problems(result, limits) == []
    batch_checks(result, (import_price, export_price), rnd)


# ---------------------------------------------------------------------- the checks can fail


KNOWN_BOOK: list[Order] = [
    offer("s1", "S", 1, 0),
    offer("s2", "S", 1, 0),
    bid("b", "S", 2, 1),
]
"""Two 1-Wh offers at 0 and one 2-Wh bid at 1 per kWh, pay-as-bid, tariffs 0 / 1000.

The bid buys both offers: two trades of 1 Wh at 1 per kWh (0.001 units each). Its formula is
``ceil(2 * 1 / 1000) = 1``; rounding each trade up on its own makes it pay 2, above its limit's
``ceil(2 * 1 / 1000) = 1``.
"""


def test_the_known_book_pays_once_and_the_old_rule_overcharges() -> None:
    result = cleared(radial_network(["S"]), KNOWN_BOOK, "pay-as-bid", (1000, 0))
    assert result.accepted_wh == {"b": 2, "s1": 1, "s2": 1}
    assert [t.energy_wh for t in result.trades] == [1, 1]
    assert money_problems(result, limits_of(KNOWN_BOOK)) == []
    assert result.orders[0].amount == 1  # "b": ceil(0.002)
    # the first trade (tie on the remainder) takes the unit, the second none
    assert [(t.buyer_amount, t.seller_amount) for t in result.trades] == [(1, 0), (0, 0)]

    problems = money_problems(old_rule(result), limits_of(KNOWN_BOOK))
    assert "buyer b pays 2 > limit's 1" in problems
    assert "buy b: amount 2 != formula 1" in problems


def test_the_old_rule_breaks_the_formula_on_a_large_book(
    networks: dict[str, NetworkModel],
) -> None:
    """A seeded 300-order book on CIGRE: the old per-trade rule misses the formula for many
    orders (the issue's finding), the new one for none."""
    rnd = random.Random(10)
    buses = networks["cigre-lv"].bus_names
    orders: list[Order] = [
        (bid if rnd.random() < 0.5 else offer)(
            f"o{i:03d}", rnd.choice(buses), rnd.randint(1, 5000), rnd.randint(0, MAX_PRICE)
        )
        for i in range(300)
    ]
    for mechanism in MECHANISMS:
        result = cleared(networks["cigre-lv"], orders, mechanism, (300_000, 80_000))
        assert money_problems(result, limits_of(orders)) == []
        old = old_rule(result)
        wrong = [
            r
            for r in old.orders
            if r.amount
            != (buyer_payment if r.side is Side.BUY else seller_revenue)(r.accepted_wh, r.price)
        ]
        assert len(wrong) >= 10, (mechanism, len(wrong))
        assert money_problems(old, limits_of(orders))


def test_extract_refuses_trades_that_do_not_sum_to_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The split put back to per-trade floors: extract's own check raises."""

    def per_trade(energies_wh: list[int], price: int, amount: int) -> list[int]:
        del amount
        return [wh * price // 1000 for wh in energies_wh]

    monkeypatch.setattr(market.matching, "split_amount", per_trade)
    with pytest.raises(UnbalancedEnergy, match="order b: trades carry 2 Wh and 0 units"):
        cleared(radial_network(["S"]), KNOWN_BOOK, "pay-as-bid", (1000, 0))


def test_a_split_against_the_largest_remainder_is_caught() -> None:
    """Three trades of a buy leg at 500 per kWh: 1, 2 and 1 Wh, exact 0.5, 1.0 and 0.5 units;
    the leg pays ceil(2.0) = 2. Largest remainder: floors 0 + 1 + 0, the missing unit to the
    first 0.5 (equal remainders: the earlier trade). Any other split is reported."""
    key = ("buy", OrderId("b"), 500)
    assert split_problems(key, [(1, 1), (2, 1), (1, 0)]) == []
    assert split_problems(key, [(1, 0), (2, 1), (1, 1)]) == [
        f"{key}: rounded up (-500, 2) ranks after rounded down (-500, 0)"
    ]
    assert split_problems(key, [(1, 0), (2, 2), (1, 0)]) == [
        f"{key}: trade 1 (2 Wh) gets 2, not 1 or up"
    ]
    assert split_problems(key, [(1, 0), (2, 1), (1, 0)]) == [
        f"{key}: trades sum to 1, the leg's formula is 2"
    ]


# ---------------------------------------------------------------------- the split itself


def test_match_splits_each_leg_by_largest_remainder() -> None:
    """A 3-Wh buyer at 333 per kWh against three 1-Wh sellers at 333: the buyer pays
    ceil(0.999) = 1, on its first trade (equal remainders, trade order); each seller
    floor(0.333) = 0. A GRID leg is rounded once the same way."""
    network = radial_network(["S", "A"], [("S", "A")])
    sellers = [Leg(ParticipantId(f"s{i}"), 1, OrderId(f"s{i}"), 1, 333) for i in range(3)]
    buyers = [Leg(ParticipantId("b"), 1, OrderId("b"), 3, 333)]
    trades = match(INTERVAL, network, sellers, buyers)
    assert [(t.seller, t.buyer_amount, t.seller_amount) for t in trades] == [
        ("s0", 1, 0),
        ("s1", 0, 0),
        ("s2", 0, 0),
    ]
    grid = [Leg(GRID, 0, None, 7, 142_857)]  # 7 Wh: 999.999 units in all
    buyers = [
        Leg(ParticipantId(f"b{i}"), 1, OrderId(f"b{i}"), wh, 200_000) for i, wh in enumerate([3, 4])
    ]
    trades = match(INTERVAL, network, grid, buyers)
    assert sum(t.seller_amount for t in trades) == seller_revenue(7, 142_857) == 999
    assert [t.seller_amount for t in trades] == [428, 571]  # 428.571 / 571.428: the first up
    assert [t.buyer_amount for t in trades] == [600, 800]


def test_community_legs_are_rounded_once() -> None:
    """With losses on, COMMUNITY's leg (the losses it buys) sums to one ceil on its energy."""
    lossy = radial_network(
        ["S", "A", "B"], [("S", "A"), ("A", "B")], r_pu=0.05, x_pu=0.02, base_p_w=[0, -20_000, 0]
    )
    network = dataclasses.replace(lossy, losses=True)
    orders: list[Order] = [offer(f"s{i}", "B", 997 + i, 50_003 + i) for i in range(4)]
    orders += [bid(f"b{i}", "S", 1_501 + i, 250_001) for i in range(2)]
    result = cleared(network, orders, "nodal", (300_000, 80_000))
    community = [t for t in result.trades if COMMUNITY in (t.buyer, t.seller)]
    assert community, result.reason
    assert money_problems(result, limits_of(orders)) == []


# ---------------------------------------------------------------------- apportion_exact


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 10**12), min_size=1, max_size=30),
    st.integers(1, 10**6),
    st.booleans(),
)
def test_apportion_exact_rounds_each_quota_down_or_up_to_the_total(
    numerators: list[int], denominator: int, up: bool
) -> None:
    total = -(-sum(numerators) // denominator) if up else sum(numerators) // denominator
    shares = apportion_exact(numerators, denominator, total)
    assert sum(shares) == total
    rests = [n % denominator for n in numerators]
    floors = [n // denominator for n in numerators]
    for i, share in enumerate(shares):
        assert share - floors[i] in (0, 1)
        assert share == floors[i] or rests[i] > 0  # a whole quota is never rounded up
    rounded_up = [(-rests[i], i) for i in range(len(shares)) if shares[i] > floors[i]]
    rounded_down = [(-rests[i], i) for i in range(len(shares)) if shares[i] == floors[i]]
    rounded_down = [(r, i) for r, i in rounded_down if r]
    if rounded_up and rounded_down:
        # largest remainders first, ties to the earlier item
        assert max(rounded_up) < min(rounded_down)


def test_apportion_exact_refuses_what_rounding_cannot_reach() -> None:
    assert apportion_exact([500, 500, 0], 1000, 1) == [1, 0, 0]
    with pytest.raises(InvalidQuantity, match="cannot share 3"):
        apportion_exact([500, 500, 0], 1000, 3)  # the third quota is whole: no unit for it
    with pytest.raises(InvalidQuantity, match="cannot share -1"):
        apportion_exact([500], 1000, -1)
    with pytest.raises(InvalidQuantity, match="denominator"):
        apportion_exact([1], 0, 0)
    with pytest.raises(InvalidQuantity, match="numerators"):
        apportion_exact([-1], 1000, 0)
