"""Parsing order-file rows: every error names its row, nothing is half-accepted."""

from __future__ import annotations

from typing import Any

import pytest
from market_factories import INTERVAL, bid, offer

from market.domain import Bid, BusId, Offer, Order
from market.errors import InvalidOrder
from market.orderbook import ORDER_COLUMNS, build_order_book, parse_order_rows

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


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"bus": "Z"}, r"row 3 \(order o-3\): unknown bus 'Z'"),
        ({"side": "hold"}, r"row 3 \(order o-3\): side must be 'buy' or 'sell', got 'hold'"),
        ({"side": ""}, r"row 3 \(order o-3\): side must be"),
        ({"energy_wh": "0"}, r"row 3 \(order o-3\): energy_wh must be >= 1"),
        ({"energy_wh": "-5"}, r"row 3 \(order o-3\): energy_wh must be >= 1"),
        ({"energy_wh": "1500.5"}, r"row 3 \(order o-3\): energy_wh must be a whole number"),
        ({"energy_wh": 1500.5}, r"row 3 \(order o-3\): energy_wh must be a whole number"),
        ({"energy_wh": ""}, r"row 3 \(order o-3\): missing energy_wh"),
        ({"energy_wh": None}, r"row 3 \(order o-3\): missing energy_wh"),
        ({"energy_wh": True}, r"row 3 \(order o-3\): energy_wh must be a number"),
        ({"limit_price": "nan"}, r"row 3 \(order o-3\): limit_price must be finite"),
        ({"limit_price": float("nan")}, r"row 3 \(order o-3\): limit_price must be finite"),
        ({"limit_price": "inf"}, r"row 3 \(order o-3\): limit_price must be finite"),
        ({"limit_price": "-1"}, r"row 3 \(order o-3\): limit_price must be >= 0"),
        ({"limit_price": "cheap"}, r"row 3 \(order o-3\): limit_price is not a number: 'cheap'"),
        ({"limit_price": "0.25"}, r"row 3 \(order o-3\): limit_price must be a whole number"),
        ({"participant": "GRID"}, r"row 3 \(order o-3\): .*reserved"),
        ({"participant": ""}, r"row 3 \(order o-3\): .*participant is empty"),
        ({"order_id": ""}, r"row 3: empty order_id"),
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


def test_big_integer_strings_are_exact_or_rejected() -> None:
    raw = str(2**53 + 1)  # 9007199254740993: no double has this value
    try:
        book = parse_order_rows([row(limit_price=raw)], INTERVAL, BUSES)
    except InvalidOrder:
        return
    assert book.bids[0].limit_price == 2**53 + 1
