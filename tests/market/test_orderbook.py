"""Parsing order-file rows: every error names its row, nothing is half-accepted."""

from __future__ import annotations

from typing import Any

import pytest
from market_factories import INTERVAL, bid, offer

from market.domain import Bid, BusId, Offer, Order
from market.errors import InvalidOrder
from market.orderbook import (
    ORDER_COLUMNS,
    build_order_book,
    parse_order_rows,
    unknown_bus_message,
)
from market.units import MAX_ORDER_WH, MAX_PRICE_PER_KWH

BUSES = {BusId("S"), BusId("A")}


def row(**changes: Any) -> dict[str, Any]:
    """A valid CSV-like row (all strings), with ``changes`` applied."""
    out: dict[str, Any] = {
        "order_id": "o-1",
        "participant": "alice",
        "bus": "A",
        "side": "buy",
        "energy_wh": "1500",
        "limit_price": "250000",
    }
    out.update(changes)
    return out


def good(order_id: str) -> dict[str, Any]:
    return row(order_id=order_id, participant=f"p-{order_id}")


def test_valid_rows_make_a_book() -> None:
    rows = [
        row(order_id="b1", side="buy", energy_wh="1500", limit_price="250000"),
        row(order_id="s1", participant="bob", bus="S", side="SELL", energy_wh=800, limit_price=0),
    ]
    book = parse_order_rows(rows, INTERVAL, BUSES)
    assert book.bids == (bid("b1", "A", 1500, 250_000, "alice"),)
    assert book.offers == (offer("s1", "S", 800, 0, "bob"),)
    assert isinstance(book.bids[0], Bid)
    assert isinstance(book.offers[0], Offer)


@pytest.mark.parametrize("raw", ["1500", "1500.0", " 1500 ", 1500, 1500.0, "1.5e3"])
def test_whole_numbers_in_any_spelling_are_accepted(raw: object) -> None:
    book = parse_order_rows([row(energy_wh=raw, limit_price=raw)], INTERVAL, BUSES)
    (order,) = book.bids
    assert order.energy_wh == 1500
    assert order.limit_price == 1500
    assert type(order.energy_wh) is int
    assert type(order.limit_price) is int


def test_strings_are_stripped_and_side_is_case_insensitive() -> None:
    book = parse_order_rows(
        [row(order_id=" o-9 ", participant=" al ", bus=" A ", side=" Buy ")], INTERVAL
    )
    (order,) = book.bids
    assert (order.order_id, order.participant, order.bus) == ("o-9", "al", "A")


ENERGY_RULE = r"energy_wh must be a whole number of Wh from 1 to 1_000_000_000, got "
PRICE_RULE = (
    r"limit_price must be a whole number of token base units per kWh from 0 to 1_000_000_000, "
    r"got "
)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"bus": "Z"}, r"row 3 \(order o-3\): unknown bus 'Z'$"),
        ({"bus": "AA"}, r"row 3 \(order o-3\): unknown bus 'AA' \(closest: 'A'\)$"),
        ({"side": "hold"}, r"row 3 \(order o-3\): side must be 'buy' or 'sell', got 'hold'"),
        ({"side": ""}, r"row 3 \(order o-3\): side must be"),
        ({"energy_wh": "0"}, rf"row 3 \(order o-3\): {ENERGY_RULE}'0'$"),
        ({"energy_wh": "-5"}, rf"row 3 \(order o-3\): {ENERGY_RULE}'-5'$"),
        ({"energy_wh": "1500.5"}, rf"row 3 \(order o-3\): {ENERGY_RULE}'1500.5'$"),
        ({"energy_wh": "1500.7"}, rf"row 3 \(order o-3\): {ENERGY_RULE}'1500.7'$"),
        ({"energy_wh": 1500.5}, rf"row 3 \(order o-3\): {ENERGY_RULE}1500.5$"),
        ({"energy_wh": str(2**63 - 1)}, rf"{ENERGY_RULE}'9223372036854775807'$"),
        ({"energy_wh": 2**63 - 1}, rf"{ENERGY_RULE}9223372036854775807$"),
        ({"energy_wh": 10**9 + 1}, rf"{ENERGY_RULE}1000000001$"),
        ({"energy_wh": "1e999999999"}, rf"{ENERGY_RULE}'1e999999999'$"),
        ({"energy_wh": ""}, r"row 3 \(order o-3\): missing energy_wh"),
        ({"energy_wh": None}, r"row 3 \(order o-3\): missing energy_wh"),
        ({"energy_wh": True}, rf"row 3 \(order o-3\): {ENERGY_RULE}True$"),
        ({"energy_wh": [1]}, rf"row 3 \(order o-3\): {ENERGY_RULE}\[1\]$"),
        ({"limit_price": "nan"}, rf"row 3 \(order o-3\): {PRICE_RULE}'nan'$"),
        ({"limit_price": float("nan")}, rf"row 3 \(order o-3\): {PRICE_RULE}nan$"),
        ({"limit_price": "inf"}, rf"row 3 \(order o-3\): {PRICE_RULE}'inf'$"),
        ({"limit_price": float("-inf")}, rf"row 3 \(order o-3\): {PRICE_RULE}-inf$"),
        ({"limit_price": "1e308"}, rf"row 3 \(order o-3\): {PRICE_RULE}'1e308'$"),
        ({"limit_price": 1e308}, rf"row 3 \(order o-3\): {PRICE_RULE}1e\+308$"),
        ({"limit_price": "9.2e18"}, rf"row 3 \(order o-3\): {PRICE_RULE}'9.2e18'$"),
        ({"limit_price": "-1"}, rf"row 3 \(order o-3\): {PRICE_RULE}'-1'$"),
        ({"limit_price": "cheap"}, rf"row 3 \(order o-3\): {PRICE_RULE}'cheap'$"),
        ({"limit_price": "0.25"}, rf"row 3 \(order o-3\): {PRICE_RULE}'0.25'$"),
        ({"participant": "GRID"}, r"row 3 \(order o-3\): .*reserved"),
        ({"participant": ""}, r"row 3 \(order o-3\): .*participant is empty"),
        ({"participant": ["al"]}, r"row 3 \(order o-3\): participant must be text, got \['al'\]"),
        ({"bus": 1.5}, r"row 3 \(order o-3\): bus must be text, got 1.5"),
        ({"order_id": ""}, r"row 3: empty order_id"),
        ({"order_id": {"id": 1}}, r"row 3: order_id must be text"),
        ({"order_id": "o-1"}, r"row 3 \(order o-1\): duplicate order_id, first seen in row 1"),
    ],
)
def test_bad_row_is_named(bad: dict[str, Any], match: str) -> None:
    rows = [good("o-1"), good("o-2"), {**good("o-3"), **bad}, good("o-4")]
    with pytest.raises(InvalidOrder, match=match):
        parse_order_rows(rows, INTERVAL, BUSES)


@pytest.mark.parametrize("column", ORDER_COLUMNS)
def test_missing_column_is_named(column: str) -> None:
    broken = good("o-2")
    del broken[column]
    with pytest.raises(InvalidOrder, match=rf"row 2: missing column\(s\) {column}$"):
        parse_order_rows([good("o-1"), broken], INTERVAL, BUSES)


def test_every_missing_column_is_listed() -> None:
    with pytest.raises(InvalidOrder, match=r"row 1: missing column\(s\) side, energy_wh"):
        parse_order_rows(
            [{"order_id": "x", "participant": "p", "bus": "A", "limit_price": 1}], INTERVAL
        )


def test_unknown_buses_are_allowed_without_a_bus_list() -> None:
    book = parse_order_rows([row(bus="anywhere")], INTERVAL)
    assert book.bids[0].bus == "anywhere"


def test_invalid_order_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="row 1"):
        parse_order_rows([row(energy_wh="0")], INTERVAL)


def test_build_order_book_checks_buses_and_splits_sides() -> None:
    orders: list[Order] = [offer("s", "S", 10, 1), bid("b", "A", 10, 2)]
    book = build_order_book(INTERVAL, orders, BUSES)
    assert [o.order_id for o in book.bids] == ["b"]
    assert [o.order_id for o in book.offers] == ["s"]
    with pytest.raises(InvalidOrder, match="order x: unknown bus 'Q'"):
        build_order_book(INTERVAL, [*orders, bid("x", "Q", 1, 1)], BUSES)


@pytest.mark.parametrize("raw", [10**9, "1000000000", "1_000_000_000", "1e9", 1e9])
def test_the_maxima_themselves_are_accepted_exactly(raw: object) -> None:
    book = parse_order_rows([row(energy_wh=raw, limit_price=raw)], INTERVAL, BUSES)
    (order,) = book.bids
    assert order.energy_wh == MAX_ORDER_WH == 10**9
    assert order.limit_price == MAX_PRICE_PER_KWH == 10**9


def test_a_price_of_zero_is_allowed_and_energy_of_zero_is_not() -> None:
    assert parse_order_rows([row(limit_price="0")], INTERVAL).bids[0].limit_price == 0
    with pytest.raises(InvalidOrder, match="energy_wh must be a whole number of Wh from 1"):
        parse_order_rows([row(energy_wh="0")], INTERVAL)


def test_json_integers_in_text_columns_become_text() -> None:
    book = parse_order_rows([row(order_id=7, participant=42)], INTERVAL)
    assert (book.bids[0].order_id, book.bids[0].participant) == ("7", "42")


def test_unknown_bus_names_the_closest_known_ones_in_a_stable_order() -> None:
    buses = [BusId(b) for b in ("LV3", "LV1", "MV", "LV0", "LV2", "Bus R1")]
    assert unknown_bus_message("LV7", buses) == "unknown bus 'LV7' (closest: 'LV0', 'LV1', 'LV2')"
    assert unknown_bus_message("Feeder 9", buses) == "unknown bus 'Feeder 9'"
    with pytest.raises(InvalidOrder, match=r"order x: unknown bus 'LV7' \(closest: 'LV0'"):
        build_order_book(INTERVAL, [bid("x", "LV7", 1, 1)], buses)


def test_messages_quote_a_long_value_cut_short() -> None:
    with pytest.raises(InvalidOrder) as caught:
        parse_order_rows([row(order_id="x" * 5000, limit_price="9" * 100_000)], INTERVAL)
    message = str(caught.value)
    assert len(message) < 250
    assert message.endswith("got '" + "9" * 36 + "...")
