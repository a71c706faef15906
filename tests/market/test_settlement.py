"""Settlement: cleared trades plus metered imbalance make one zero-sum batch.

Literal cases use a real clearing on one bus (numbers derived in the docstrings); the
properties use hand-built results with random trades and meters. Meters are counter readings
at the interval's two boundaries (``market_factories.snapshots``), as the cycle stores them.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from market_factories import INTERVAL, bid, meter_reading, offer, radial_network, snapshots

from market.clearing import ClearingOptions, clear
from market.domain import (
    COMMUNITY,
    GRID,
    BusId,
    ClearingResult,
    ClearingStatus,
    DeviceId,
    MeterReading,
    MeterRole,
    OrderId,
    OrderResult,
    ParticipantId,
    ReadingQuality,
    SettlementBatch,
    SettlementLine,
    Side,
    Tariffs,
    Trade,
    trade_to_dict,
)
from market.errors import SettlementError
from market.merkle import EMPTY_ROOT, merkle_root
from market.metering import Meter
from market.orderbook import build_order_book
from market.settlement import settle, verified_local_wh
from market.units import PricePerKwh, TokenUnits, Wh, buyer_payment, seller_revenue

IMPORT = 300_001
EXPORT = 80_001
"""Imbalance tariffs [units / kWh], chosen so that 101 Wh is never a whole number of units."""
TARIFFS = Tariffs(import_price=PricePerKwh(IMPORT), export_price=PricePerKwh(EXPORT))

Metered = tuple[str, int, int, bool]
"""(participant, metered import [Wh], metered export [Wh], complete)."""

ALICE = ParticipantId("alice")
BOB = ParticipantId("bob")


@pytest.fixture(scope="module")
def cleared() -> ClearingResult:
    """Bob offers 333 Wh @ 150k, alice bids 1000 Wh @ 200_001 on one bus (grid 300k / 80k).

    Alice takes all 333 Wh of bob's (the rest would cost 300k from the grid); her bid is the
    partly accepted one, so the price is 200_001 for both. 333 * 200_001 / 1000 = 66_600.333:
    alice pays 66_601, bob receives 66_600, the community keeps 1.
    """
    book = build_order_book(
        INTERVAL,
        [bid("b-alice", "S", 1000, 200_001, "alice"), offer("s-bob", "S", 333, 150_000, "bob")],
    )
    result = clear(book, radial_network(["S"]), ClearingOptions())
    assert result.status is ClearingStatus.CLEARED
    assert result.accepted_wh == {"b-alice": 333, "s-bob": 333}
    (trade,) = result.trades
    assert (trade.buyer_amount, trade.seller_amount) == (66_601, 66_600)
    return result


def metered(participant: ParticipantId, import_wh: int, export_wh: int) -> Metered:
    return (participant, import_wh, export_wh, True)


def settle_with(result: ClearingResult, *meters: Metered) -> SettlementBatch:
    return settle(result, *snapshots(*meters), TARIFFS)


def load(device: str) -> Meter:
    return Meter(DeviceId(device), MeterRole.LOAD)


def line_of(batch: SettlementBatch, participant: str) -> SettlementLine:
    (line,) = [x for x in batch.lines if x.participant == participant]
    return line


def test_metered_as_cleared_pays_the_trades_only(cleared: ClearingResult) -> None:
    batch = settle_with(cleared, metered(ALICE, 333, 0), metered(BOB, 0, 333))
    assert dict(batch.amounts) == {ALICE: -66_601, BOB: 66_600, COMMUNITY: 1}
    assert [a for a, _ in batch.amounts] == sorted(a for a, _ in batch.amounts)
    for participant, amount in ((ALICE, -66_601), (BOB, 66_600)):
        line = line_of(batch, participant)
        assert line.metered
        assert line.imbalance_wh == 0
        assert line.imbalance_amount == 0
        assert line.trade_amount == amount
        assert line.net_amount == amount
    assert line_of(batch, ALICE).cleared_buy_wh == 333
    assert line_of(batch, BOB).cleared_sell_wh == 333
    assert batch.debits == 66_601


def test_over_consumption_buys_from_the_grid_at_the_import_tariff(
    cleared: ClearingResult,
) -> None:
    """Alice meters 434 Wh, cleared 333: 101 Wh * 300_001 / 1000 = 30_300.101 units.

    She pays the ceiling 30_301, GRID receives the floor 30_300, the community the 1 between.
    """
    batch = settle_with(cleared, metered(ALICE, 434, 0), metered(BOB, 0, 333))
    line = line_of(batch, ALICE)
    assert line.imbalance_wh == 101
    assert line.imbalance_amount == -30_301
    assert line.net_amount == -66_601 - 30_301
    assert dict(batch.amounts) == {
        ALICE: -66_601 - 30_301,
        BOB: 66_600,
        GRID: 30_300,
        COMMUNITY: 1 + 1,
    }


def test_under_consumption_sells_to_the_grid_at_the_export_tariff(
    cleared: ClearingResult,
) -> None:
    """Alice meters 232 Wh, cleared 333: 101 Wh * 80_001 / 1000 = 8_080.101 units.

    GRID pays the ceiling 8_081, alice receives the floor 8_080.
    """
    batch = settle_with(cleared, metered(ALICE, 232, 0), metered(BOB, 0, 333))
    line = line_of(batch, ALICE)
    assert line.imbalance_wh == -101
    assert line.imbalance_amount == 8_080
    assert dict(batch.amounts) == {
        ALICE: -66_601 + 8_080,
        BOB: 66_600,
        GRID: -8_081,
        COMMUNITY: 1 + 1,
    }


def test_under_production_is_bought_from_the_grid(cleared: ClearingResult) -> None:
    """Bob sold 333 Wh but fed in 300: he took 33 Wh more than cleared, at the import tariff:
    33 * 300_001 / 1000 = 9_900.033 -> he pays 9_901."""
    batch = settle_with(cleared, metered(ALICE, 333, 0), metered(BOB, 0, 300))
    line = line_of(batch, BOB)
    assert line.imbalance_wh == 33
    assert line.imbalance_amount == -9_901
    assert dict(batch.amounts)[BOB] == 66_600 - 9_901
    assert dict(batch.amounts)[GRID] == 9_900


def test_net_metering_uses_import_minus_export(cleared: ClearingResult) -> None:
    """Alice imports 400 and exports 67 Wh: net 333, exactly as cleared."""
    batch = settle_with(cleared, metered(ALICE, 400, 67), metered(BOB, 10, 343))
    assert all(line.imbalance_wh == 0 for line in batch.lines)
    assert dict(batch.amounts) == {ALICE: -66_601, BOB: 66_600, COMMUNITY: 1}


def test_missing_participant_is_flagged_and_settled_as_cleared(cleared: ClearingResult) -> None:
    batch = settle_with(cleared, metered(BOB, 0, 100))
    line = line_of(batch, ALICE)
    assert not line.metered
    assert line.imbalance_wh == 0
    assert line.imbalance_amount == 0
    assert line.trade_amount == -66_601
    assert "no reading" in line.reason
    assert line_of(batch, BOB).metered
    assert dict(batch.amounts)[ALICE] == -66_601


def test_incomplete_reading_is_flagged_with_its_reason(cleared: ClearingResult) -> None:
    """Alice's m-1 read 5000 Wh, her m-7 was MISSING at the end: what was read is reported."""
    start, end = snapshots(metered(BOB, 0, 333))
    t0, t1 = INTERVAL.start, INTERVAL.end
    start |= {
        DeviceId("m-1"): meter_reading("m-1", ALICE, t0, 0, 0),
        DeviceId("m-7"): meter_reading("m-7", ALICE, t0, 0, 0),
    }
    end |= {
        DeviceId("m-1"): meter_reading("m-1", ALICE, t1, 5000, 0),
        DeviceId("m-7"): meter_reading("m-7", ALICE, t1, 0, 0, ReadingQuality.MISSING),
    }
    batch = settle(cleared, start, end, TARIFFS)
    line = line_of(batch, ALICE)
    assert not line.metered
    assert line.imbalance_wh == 0
    assert line.metered_import_wh == 5000
    assert line.reason == "unmetered, settled as cleared: m-7: reading ok/missing"
    assert GRID not in dict(batch.amounts)


def test_listed_meters_decide_who_is_metered(cleared: ClearingResult) -> None:
    """With the site's meters given, a participant without a device, or whose device was not
    read at all, is unmetered with that reason; a listed participant without orders gets a
    line too."""
    start, end = snapshots(metered(ALICE, 333, 0), metered(BOB, 0, 333))
    meters = {
        ALICE: [load("alice-meter"), Meter(DeviceId("alice-pv"), MeterRole.GENERATION)],
        BOB: [load("bob-meter")],
        ParticipantId("carol"): [],
    }
    batch = settle(cleared, start, end, TARIFFS, meters=meters)
    assert line_of(batch, ALICE).reason == (
        "unmetered, settled as cleared: alice-pv: no reading at the interval's start or end"
    )
    assert line_of(batch, BOB).metered
    carol = line_of(batch, "carol")
    assert carol.reason == (
        "unmetered, settled as cleared: no metering device: energy cannot be verified"
    )
    assert (carol.trade_amount, carol.imbalance_amount) == (0, 0)


def _net_meter_plus_pv() -> tuple[dict[DeviceId, MeterReading], dict[DeviceId, MeterReading]]:
    """Alice's net meter at her connection point imports 333 Wh (she used 1333 Wh, her PV
    behind the meter made 1000 Wh); her PV inverter's export counter says 1000 Wh. Bob's
    single meter exports 333 Wh."""
    start, end = snapshots(metered(BOB, 0, 333))
    t0, t1 = INTERVAL.start, INTERVAL.end
    start |= {
        DeviceId("alice-net"): meter_reading("alice-net", ALICE, t0, 50_000, 7_000),
        DeviceId("alice-pv"): meter_reading("alice-pv", ALICE, t0, 3, 90_000),
    }
    end |= {
        DeviceId("alice-net"): meter_reading("alice-net", ALICE, t1, 50_333, 7_000),
        DeviceId("alice-pv"): meter_reading("alice-pv", ALICE, t1, 3, 91_000),
    }
    return start, end


NET_PLUS_PV = {
    ALICE: [
        Meter(DeviceId("alice-net"), MeterRole.CONNECTION_POINT),
        Meter(DeviceId("alice-pv"), MeterRole.GENERATION),
    ],
    BOB: [Meter(DeviceId("bob-meter"), MeterRole.CONNECTION_POINT)],
}


def test_a_net_meter_plus_pv_counts_the_pv_once(cleared: ClearingResult) -> None:
    """Alice cleared 333 Wh and her connection point took 333 Wh: no imbalance. Her PV's
    1000 Wh are already inside the net meter's figure; counting them again would pay her for
    1000 Wh of export she never delivered (1000 * 80_001 / 1000 = 80_001 units)."""
    batch = settle(cleared, *_net_meter_plus_pv(), TARIFFS, meters=NET_PLUS_PV)
    line = line_of(batch, ALICE)
    assert line.metered
    assert (line.metered_import_wh, line.metered_export_wh) == (333, 0)
    assert line.imbalance_wh == 0
    assert dict(batch.amounts) == {ALICE: -66_601, BOB: 66_600, COMMUNITY: 1}


def test_ignoring_the_roles_counts_the_pv_twice(cleared: ClearingResult) -> None:
    """The same readings with every device summed (no roles): alice's PV export is counted on
    top of the net meter, so she is paid for 1000 Wh that the net meter never saw leave.
    This is the check above failing when roles are ignored."""
    ignoring = {p: [load(m.device_id) for m in ms] for p, ms in NET_PLUS_PV.items()}
    for meters in (ignoring, None):
        batch = settle(cleared, *_net_meter_plus_pv(), TARIFFS, meters=meters)
        line = line_of(batch, ALICE)
        assert (line.metered_import_wh, line.metered_export_wh) == (333, 1000)
        assert line.imbalance_wh == -1000
        assert dict(batch.amounts)[ALICE] == -66_601 + 80_001


def test_the_connection_point_meter_decides_completeness(cleared: ClearingResult) -> None:
    """A PV inverter behind a working net meter may fail to read: the participant is still
    metered. A failed net meter makes it unmetered even when the PV read."""
    start, end = _net_meter_plus_pv()
    pv_dead = end | {
        DeviceId("alice-pv"): meter_reading(
            "alice-pv", ALICE, INTERVAL.end, 0, 0, ReadingQuality.MISSING
        )
    }
    assert line_of(settle(cleared, start, pv_dead, TARIFFS, meters=NET_PLUS_PV), ALICE).metered
    net_dead = end | {
        DeviceId("alice-net"): meter_reading(
            "alice-net", ALICE, INTERVAL.end, 0, 0, ReadingQuality.MISSING
        )
    }
    line = line_of(settle(cleared, start, net_dead, TARIFFS, meters=NET_PLUS_PV), ALICE)
    assert not line.metered
    assert line.reason == "unmetered, settled as cleared: alice-net: reading ok/missing"


def test_metered_participant_without_orders_settles_imbalance_only(
    cleared: ClearingResult,
) -> None:
    """Carol did not trade but took 10 Wh: 10 * 300_001 / 1000 = 3000.01 -> she pays 3001."""
    carol = ParticipantId("carol")
    batch = settle_with(
        cleared, metered(ALICE, 333, 0), metered(BOB, 0, 333), metered(carol, 10, 0)
    )
    line = line_of(batch, carol)
    assert (line.cleared_buy_wh, line.cleared_sell_wh, line.imbalance_wh) == (0, 0, 10)
    assert dict(batch.amounts)[carol] == -3001


def test_batch_must_sum_to_zero() -> None:
    with pytest.raises(SettlementError, match="sums to 1, not 0"):
        SettlementBatch(
            interval=INTERVAL,
            lines=(),
            amounts=((ALICE, TokenUnits(-5)), (BOB, TokenUnits(6))),
            trades_root=EMPTY_ROOT,
            readings_root=EMPTY_ROOT,
            import_price=IMPORT,
            export_price=EXPORT,
        )


def test_roots_commit_to_trades_and_readings(cleared: ClearingResult) -> None:
    """One readings leaf per device read at both ends, written out by hand here."""
    start, end = snapshots(metered(ALICE, 333, 0), metered(BOB, 0, 333))
    del end[DeviceId("bob-meter")]  # read at the start only: no leaf
    batch = settle(cleared, start, end, TARIFFS)
    reading = {
        "device_id": "alice-meter",
        "participant": "alice",
        "bus": "S",
        "p_w": 0,
        "quality": "ok",
        "reason": "",
        "soc_percent": None,
    }
    leaf = {
        "device_id": "alice-meter",
        "participant": "alice",
        "start": reading
        | {
            "measured_at": "2026-06-21T12:00:00+00:00",
            "import_wh_total": 1000,
            "export_wh_total": 2000,
        },
        "end": reading
        | {
            "measured_at": "2026-06-21T12:15:00+00:00",
            "import_wh_total": 1333,
            "export_wh_total": 2000,
        },
    }
    assert batch.trades_root == merkle_root(trade_to_dict(t) for t in cleared.trades)
    assert batch.readings_root == merkle_root([leaf])
    assert settle_with(cleared).readings_root == EMPTY_ROOT


def test_batch_id_is_deterministic_and_commits_to_every_amount(cleared: ClearingResult) -> None:
    readings = [metered(ALICE, 434, 0), metered(BOB, 0, 300)]
    batch = settle_with(cleared, *readings)
    assert settle_with(cleared, *reversed(readings)).batch_id == batch.batch_id
    assert len(batch.batch_id) == 64

    ids = {batch.batch_id}
    amounts = list(batch.amounts)
    for i in range(len(amounts)):
        j = (i + 1) % len(amounts)
        moved = list(amounts)
        moved[i] = (moved[i][0], TokenUnits(moved[i][1] + 1))
        moved[j] = (moved[j][0], TokenUnits(moved[j][1] - 1))
        ids.add(dataclasses.replace(batch, amounts=tuple(moved)).batch_id)
    assert len(ids) == 1 + len(amounts)

    one_more_wh = settle_with(cleared, metered(ALICE, 435, 0), metered(BOB, 0, 300))
    assert one_more_wh.batch_id != batch.batch_id
    other_interval = dataclasses.replace(batch, interval=INTERVAL.next())
    assert other_interval.batch_id != batch.batch_id
    other_root = dataclasses.replace(batch, readings_root=b"\x01" * 32)
    assert other_root.batch_id != batch.batch_id


# ---------------------------------------------------------------------- properties

PEOPLE = [ParticipantId(p) for p in ("alice", "bob", "carol", "dave")]

TRADES = st.lists(
    st.tuples(
        st.sampled_from([*PEOPLE, GRID]),  # seller
        st.sampled_from([*PEOPLE, GRID]),  # buyer
        st.integers(1, 5000),  # Wh
        st.integers(0, 500_000),  # seller price
        st.integers(0, 200_000),  # buyer price above the seller's
    ).filter(lambda t: t[0] != t[1]),
    max_size=10,
)
METERED = st.dictionaries(
    st.sampled_from(PEOPLE),
    st.tuples(st.integers(0, 20_000), st.integers(0, 20_000), st.booleans()),
)


def hand_result(rows: list[tuple[ParticipantId, ParticipantId, int, int, int]]) -> ClearingResult:
    """A result whose orders are exactly its trades (one buy and one sell order per trade)."""
    trades: list[Trade] = []
    orders: list[OrderResult] = []
    for i, (seller, buyer, wh, s_price, premium) in enumerate(rows):
        b_price = s_price + premium
        trade = Trade(
            interval=INTERVAL,
            seller=seller,
            buyer=buyer,
            seller_bus=BusId("S"),
            buyer_bus=BusId("S"),
            seller_order=None if seller == GRID else OrderId(f"s{i}"),
            buyer_order=None if buyer == GRID else OrderId(f"b{i}"),
            energy_wh=Wh(wh),
            seller_price=PricePerKwh(s_price),
            buyer_price=PricePerKwh(b_price),
            buyer_amount=buyer_payment(wh, b_price),
            seller_amount=seller_revenue(wh, s_price),
        )
        trades.append(trade)
        for who, oid, side, price, amount in (
            (seller, trade.seller_order, Side.SELL, s_price, trade.seller_amount),
            (buyer, trade.buyer_order, Side.BUY, b_price, trade.buyer_amount),
        ):
            if oid is not None:
                orders.append(
                    OrderResult(
                        order_id=oid,
                        participant=who,
                        bus=BusId("S"),
                        side=side,
                        accepted_wh=Wh(wh),
                        price=PricePerKwh(price),
                        amount=amount,
                    )
                )
    return ClearingResult(
        interval=INTERVAL,
        status=ClearingStatus.CLEARED,
        reason="built by hand",
        orders=tuple(orders),
        prices=(),
        grid_import_wh=Wh(0),
        grid_export_wh=Wh(0),
        trades=tuple(trades),
        welfare=TokenUnits(0),
        community_rent=TokenUnits(sum(t.buyer_amount - t.seller_amount for t in trades)),
        solver=None,
    )


@settings(max_examples=150)
@given(TRADES, METERED, st.integers(0, 500_000), st.integers(0, 500_000))
def test_batch_is_zero_sum_and_lines_add_up(
    rows: list[tuple[ParticipantId, ParticipantId, int, int, int]],
    meters: dict[ParticipantId, tuple[int, int, bool]],
    tariff_a: int,
    tariff_b: int,
) -> None:
    export_price, import_price = sorted((tariff_a, tariff_b))
    result = hand_result(rows)
    readings = {p: (p, imp, exp, complete) for p, (imp, exp, complete) in meters.items()}
    tariffs = Tariffs(
        import_price=PricePerKwh(import_price), export_price=PricePerKwh(export_price)
    )
    batch = settle(result, *snapshots(*readings.values()), tariffs)
    amounts = dict(batch.amounts)
    assert sum(amounts.values()) == 0
    assert len(amounts) == len(batch.amounts)
    assert 0 not in amounts.values()

    bought: dict[ParticipantId, int] = defaultdict(int)
    sold: dict[ParticipantId, int] = defaultdict(int)
    for t in result.trades:
        bought[t.buyer] += t.energy_wh
        sold[t.seller] += t.energy_wh
    expected_people = ({*bought, *sold} - {GRID}) | set(readings)
    assert {line.participant for line in batch.lines} == expected_people

    remainders = 0
    for line in batch.lines:
        p = line.participant
        assert amounts.get(p, 0) == line.net_amount
        assert (line.cleared_buy_wh, line.cleared_sell_wh) == (bought[p], sold[p])
        reading = readings.get(p)
        if reading is None or not reading[3]:
            assert not line.metered
            assert (line.imbalance_wh, line.imbalance_amount) == (0, 0)
            continue
        assert line.metered
        imbalance = (reading[1] - reading[2]) - (bought[p] - sold[p])
        assert line.imbalance_wh == imbalance
        tariff = import_price if imbalance > 0 else export_price
        exact = Fraction(abs(imbalance) * tariff, 1000)
        if imbalance > 0:  # pays at least the exact amount, less than one unit more
            assert exact <= -line.imbalance_amount < exact + 1
        else:  # receives at most the exact amount, less than one unit less
            assert exact - 1 < line.imbalance_amount <= exact
        remainders += exact.denominator != 1

    # the community keeps every trade's spread and one unit per inexact imbalance payment
    spread = sum(t.buyer_amount - t.seller_amount for t in result.trades)
    assert amounts.get(COMMUNITY, 0) == spread + remainders
    assert amounts.get(COMMUNITY, 0) >= 0  # every trade here has buyer price >= seller price
    assert batch.debits == sum(a for a in amounts.values() if a > 0)


@settings(max_examples=50)
@given(TRADES)
def test_metered_equal_to_cleared_has_no_imbalance(
    rows: list[tuple[ParticipantId, ParticipantId, int, int, int]],
) -> None:
    result = hand_result(rows)
    net: dict[ParticipantId, int] = defaultdict(int)
    for t in result.trades:
        net[t.buyer] += t.energy_wh
        net[t.seller] -= t.energy_wh
    readings = [(p, max(n, 0), max(-n, 0), True) for p, n in net.items() if p != GRID]
    batch = settle(result, *snapshots(*readings), TARIFFS)
    assert all(line.metered and line.imbalance_wh == 0 for line in batch.lines)
    trade_amount: dict[ParticipantId, int] = defaultdict(int)
    for t in result.trades:
        trade_amount[t.buyer] -= t.buyer_amount
        trade_amount[t.seller] += t.seller_amount
        trade_amount[COMMUNITY] += t.buyer_amount - t.seller_amount
    assert dict(batch.amounts) == {p: a for p, a in trade_amount.items() if a}


def test_rewards_count_only_metered_energy_sold_to_participants() -> None:
    network = radial_network(["S", "A"], [("S", "A")])
    orders = [offer("pv", "A", 1000, 50_000), bid("home", "A", 600, 320_000)]
    result = clear(build_order_book(INTERVAL, orders), network, ClearingOptions())
    # 600 Wh go to the neighbour, 400 Wh to the grid at the export tariff
    assert result.accepted_wh == {"pv": 1000, "home": 600}

    tariffs = Tariffs(import_price=PricePerKwh(300_000), export_price=PricePerKwh(80_000))

    def batch(export_wh: int, complete: bool = True) -> SettlementBatch:
        meters = snapshots(("p-pv", 0, export_wh, complete), ("p-home", 600, 0, True))
        return settle(result, *meters, tariffs)

    assert batch(1000).rewards_wh == (("p-pv", 600),)
    assert batch(500).rewards_wh == (("p-pv", 500),)  # the meter caps it
    assert batch(1000, complete=False).rewards_wh == ()  # unverified: nothing
    assert batch(1000).batch_id != batch(500).batch_id
    assert verified_local_wh(result, batch(1000).lines) == (("p-pv", 600),)
