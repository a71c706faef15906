"""Core types: intervals, order validation, the canonical order book and its digest."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from market_factories import INTERVAL, bid, offer

from market.canonical import content_hash
from market.domain import (
    COMMUNITY,
    GRID,
    Bid,
    BusId,
    ClearingStatus,
    Interval,
    MeterReading,
    Offer,
    OrderBook,
    OrderId,
    ParticipantId,
    Side,
    Tariffs,
    Trade,
    ViolationKind,
)
from market.errors import InvalidInterval, InvalidOrder, MarketError, SettlementError
from market.units import PricePerKwh, TokenUnits, W, Wh

NOON = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)

# ------------------------------------------------------------------ Interval


def test_interval_is_aligned_half_open_and_utc() -> None:
    iv = Interval(NOON, 900)
    assert iv.end == NOON + timedelta(minutes=15)
    assert iv.hours == 0.25
    assert iv.interval_id == int(NOON.timestamp())
    assert iv.contains(NOON)
    assert iv.contains(iv.end - timedelta(microseconds=1))
    assert not iv.contains(iv.end)
    assert not iv.contains(NOON - timedelta(microseconds=1))
    assert iv.label() == "2026-06-21T12:00Z"


def test_interval_converts_other_timezones_to_utc() -> None:
    cest = timezone(timedelta(hours=2))
    iv = Interval(datetime(2026, 6, 21, 14, 0, tzinfo=cest), 900)
    assert iv == Interval(NOON, 900)
    assert iv.start.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "start",
    [
        NOON + timedelta(minutes=7),
        NOON + timedelta(seconds=1),
        NOON + timedelta(microseconds=1),
    ],
)
def test_interval_rejects_misaligned_start(start: datetime) -> None:
    with pytest.raises(InvalidInterval, match="not aligned"):
        Interval(start, 900)


def test_interval_alignment_is_checked_in_utc() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    start = datetime(2026, 6, 21, 12, 0, tzinfo=ist)  # 06:30Z
    assert Interval(start, 900).start == datetime(2026, 6, 21, 6, 30, tzinfo=UTC)
    with pytest.raises(InvalidInterval, match="not aligned"):
        Interval(start, 3600)


def test_interval_rejects_naive_datetimes() -> None:
    naive = datetime(2026, 6, 21, 12, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(InvalidInterval, match="timezone-aware"):
        Interval(naive, 900)
    with pytest.raises(InvalidInterval, match="timezone-aware"):
        Interval.containing(naive)
    with pytest.raises(InvalidInterval, match="timezone-aware"):
        INTERVAL.contains(naive)


@pytest.mark.parametrize("length_s", [0, -900])
def test_interval_rejects_non_positive_length(length_s: int) -> None:
    with pytest.raises(InvalidInterval, match="> 0"):
        Interval(NOON, length_s)


def test_interval_errors_are_market_errors_and_value_errors() -> None:
    with pytest.raises(MarketError):
        Interval(NOON + timedelta(seconds=1), 900)
    with pytest.raises(ValueError, match="aligned"):
        Interval(NOON + timedelta(seconds=1), 900)


def test_containing_next_and_from_id_literal() -> None:
    moment = datetime(2026, 6, 21, 12, 7, 30, 500_000, tzinfo=UTC)
    iv = Interval.containing(moment, 900)
    assert iv.start == NOON
    assert iv.next().start == datetime(2026, 6, 21, 12, 15, tzinfo=UTC)
    assert iv.next().length_s == 900
    assert Interval.containing(moment, 3600).start == NOON
    assert Interval.containing(datetime(2026, 6, 21, 12, 15, tzinfo=UTC), 900) == iv.next()
    assert Interval.from_id(iv.interval_id, 900) == iv
    with pytest.raises(InvalidInterval):
        Interval.from_id(iv.interval_id + 60, 900)


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    st.sampled_from([60, 300, 900, 1800, 3600, 86_400]),
)
def test_containing_contains_the_moment(moment: datetime, length_s: int) -> None:
    iv = Interval.containing(moment, length_s)
    assert iv.contains(moment)
    assert iv.start <= moment < iv.end
    assert iv.interval_id % length_s == 0
    nxt = iv.next()
    assert nxt.start == iv.end
    assert not nxt.contains(moment)
    assert Interval.from_id(iv.interval_id, length_s) == iv


# ------------------------------------------------------------------ orders


def test_bid_and_offer_carry_their_side() -> None:
    assert bid("b", "S", 1, 0).side is Side.BUY
    assert offer("o", "S", 1, 0).side is Side.SELL


def test_orders_are_immutable() -> None:
    order = bid("b", "S", 1000, 100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        order.energy_wh = Wh(2000)  # type: ignore[misc]


@pytest.mark.parametrize("cls", [Bid, Offer])
@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"energy_wh": 0}, "energy_wh must be > 0"),
        ({"energy_wh": -5}, "energy_wh must be > 0"),
        ({"energy_wh": True}, "energy_wh must be an integer"),
        ({"energy_wh": 1500.0}, "energy_wh must be an integer"),
        ({"energy_wh": "1500"}, "energy_wh must be an integer"),
        ({"limit_price": -1}, "limit_price must be >= 0"),
        ({"limit_price": False}, "limit_price must be an integer"),
        ({"limit_price": 0.25}, "limit_price must be an integer"),
        ({"participant": "GRID"}, "reserved"),
        ({"participant": "COMMUNITY"}, "reserved"),
        ({"participant": ""}, "participant is empty"),
        ({"bus": ""}, "bus is empty"),
        ({"order_id": ""}, "non-empty string"),
    ],
)
def test_order_validation(cls: type[Bid | Offer], changes: dict[str, object], match: str) -> None:
    kwargs: dict[str, object] = {
        "order_id": "o-1",
        "participant": "alice",
        "bus": "S",
        "interval": INTERVAL,
        "energy_wh": 1500,
        "limit_price": 250_000,
    }
    kwargs.update(changes)
    with pytest.raises(InvalidOrder, match=match):
        cls(**kwargs)  # type: ignore[arg-type]


def test_reserved_names_are_the_module_constants() -> None:
    assert {GRID, COMMUNITY} == {"GRID", "COMMUNITY"}


def test_order_errors_name_the_order() -> None:
    with pytest.raises(InvalidOrder, match="order o-77"):
        bid("o-77", "S", 0, 100)


def test_zero_price_is_a_valid_limit() -> None:
    assert offer("o", "S", 1, 0).limit_price == 0


# ------------------------------------------------------------------ OrderBook


def test_book_rejects_duplicate_ids_across_sides() -> None:
    with pytest.raises(InvalidOrder, match="duplicate order id 'x'"):
        OrderBook(INTERVAL, (bid("x", "S", 1, 1),), (offer("x", "A", 1, 1),))


def test_book_rejects_orders_of_another_interval() -> None:
    later = INTERVAL.next()
    with pytest.raises(InvalidOrder, match="order b-late is for 2026-06-21T12:15Z"):
        OrderBook(INTERVAL, (bid("b-late", "S", 1, 1, interval=later),))


def test_book_canonical_order_literal() -> None:
    """Canonical order = (bus, side, price, id); bids first in ``orders``."""
    orders = [
        bid("b3", "B", 100, 200),
        bid("b1", "A", 100, 300),
        bid("b2", "A", 100, 100),
        bid("b0", "A", 100, 100),
        offer("o2", "A", 100, 50),
        offer("o1", "B", 100, 10),
    ]
    book = OrderBook(
        INTERVAL,
        tuple(o for o in orders if isinstance(o, Bid)),
        tuple(o for o in orders if isinstance(o, Offer)),
    )
    assert [o.order_id for o in book.bids] == ["b0", "b2", "b1", "b3"]
    assert [o.order_id for o in book.offers] == ["o2", "o1"]
    assert [o.order_id for o in book.orders] == ["b0", "b2", "b1", "b3", "o2", "o1"]
    assert len(book) == 6


ORDER_ROWS = st.lists(
    st.tuples(
        st.booleans(),
        st.sampled_from(["A", "B", "C"]),
        st.integers(1, 10_000),
        st.integers(0, 1_000),  # few prices: ties on (bus, side, price) are common
    ),
    min_size=0,
    max_size=15,
)


@given(ORDER_ROWS, st.randoms(use_true_random=False))
def test_book_order_and_digest_do_not_depend_on_input_order(
    rows: list[tuple[bool, str, int, int]], rnd: object
) -> None:
    orders = [
        (bid if is_buy else offer)(f"o{i:02d}", bus, wh, price)
        for i, (is_buy, bus, wh, price) in enumerate(rows)
    ]
    shuffled = list(orders)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]

    def book_of(seq: list[Bid | Offer]) -> OrderBook:
        return OrderBook(
            INTERVAL,
            tuple(o for o in seq if isinstance(o, Bid)),
            tuple(o for o in seq if isinstance(o, Offer)),
        )

    a, b = book_of(orders), book_of(shuffled)
    assert a.orders == b.orders
    assert a.digest() == b.digest()
    keys = [(o.bus, o.side.value, o.limit_price, o.order_id) for o in a.bids]
    assert keys == sorted(keys)


def test_digest_changes_with_any_field() -> None:
    base = OrderBook(INTERVAL, (bid("b", "S", 1000, 100),), (offer("o", "S", 1000, 50),))
    variants = [
        OrderBook(INTERVAL, (bid("b", "S", 1001, 100),), (offer("o", "S", 1000, 50),)),
        OrderBook(INTERVAL, (bid("b", "S", 1000, 101),), (offer("o", "S", 1000, 50),)),
        OrderBook(INTERVAL, (bid("b", "A", 1000, 100),), (offer("o", "S", 1000, 50),)),
        OrderBook(INTERVAL, (bid("b", "S", 1000, 100, "zed"),), (offer("o", "S", 1000, 50),)),
        OrderBook(INTERVAL, (bid("b2", "S", 1000, 100),), (offer("o", "S", 1000, 50),)),
        OrderBook(
            INTERVAL.next(),
            (bid("b", "S", 1000, 100, interval=INTERVAL.next()),),
            (offer("o", "S", 1000, 50, interval=INTERVAL.next()),),
        ),
    ]
    digests = {base.digest(), *(v.digest() for v in variants)}
    assert len(digests) == 1 + len(variants)
    assert len(base.digest()) == 64
    int(base.digest(), 16)


def test_content_hash_ignores_key_order() -> None:
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})


# ------------------------------------------------------------------ small types


def test_violation_kinds_name_their_pandapower_table() -> None:
    assert {k.value: k.element_type for k in ViolationKind} == {
        "vm_min": "bus",
        "vm_max": "bus",
        "line_loading": "line",
        "trafo_loading": "trafo",
        "not_converged": "grid",
    }
    assert {k for k in ViolationKind if k.is_loading} == {
        ViolationKind.LINE_LOADING,
        ViolationKind.TRAFO_LOADING,
    }
    assert ViolationKind("line_loading") == "line_loading"  # the stored strings are unchanged


def test_tariffs_are_integer_prices_of_at_least_zero() -> None:
    tariffs = Tariffs(import_price=PricePerKwh(300_000), export_price=PricePerKwh(0))
    assert (tariffs.import_price, tariffs.export_price) == (300_000, 0)
    for bad in (-1, 1.5, True):
        with pytest.raises(SettlementError, match="export_price"):
            Tariffs(import_price=PricePerKwh(1), export_price=bad)  # type: ignore[arg-type]


def test_only_cleared_no_crossing_and_blocked_are_ok() -> None:
    ok = {s for s in ClearingStatus if s.is_ok}
    assert ok == {ClearingStatus.CLEARED, ClearingStatus.NO_CROSSING, ClearingStatus.BLOCKED}


def test_trade_id_is_a_content_hash() -> None:
    def trade(wh: int) -> Trade:
        return Trade(
            interval=INTERVAL,
            seller=ParticipantId("bob"),
            buyer=ParticipantId("alice"),
            seller_bus=BusId("S"),
            buyer_bus=BusId("S"),
            seller_order=OrderId("o"),
            buyer_order=OrderId("b"),
            energy_wh=Wh(wh),
            seller_price=PricePerKwh(100_000),
            buyer_price=PricePerKwh(100_000),
            buyer_amount=TokenUnits(wh * 100),
            seller_amount=TokenUnits(wh * 100),
        )

    assert trade(500).trade_id == trade(500).trade_id
    assert trade(500).trade_id != trade(501).trade_id


def test_meter_reading_rejects_naive_time() -> None:
    with pytest.raises(InvalidInterval, match="measured_at"):
        MeterReading(
            device_id="m1",  # type: ignore[arg-type]
            participant=ParticipantId("alice"),
            bus=BusId("S"),
            measured_at=datetime(2026, 6, 21, 12, 0),  # noqa: DTZ001
            p_w=W(0),
            import_wh_total=Wh(0),
            export_wh_total=Wh(0),
        )
