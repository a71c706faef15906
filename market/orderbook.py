"""Order validation and parsing of order rows (pure: no files, no sockets).

Rows come from CSV or JSON order files (read by the controller) as mappings of column name to
value. Every error names the row and the field, and nothing is half-accepted: either the whole
book is valid or :class:`~market.errors.InvalidOrder` is raised.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from market.domain import (
    Bid,
    BusId,
    Interval,
    Offer,
    Order,
    OrderBook,
    OrderId,
    ParticipantId,
    Side,
)
from market.errors import InvalidOrder
from market.units import PricePerKwh, Wh

ORDER_COLUMNS = ("order_id", "participant", "bus", "side", "energy_wh", "limit_price")
"""Columns of an order file; ``energy_wh`` in Wh, ``limit_price`` in token base units / kWh."""


def build_order_book(
    interval: Interval,
    orders: Iterable[Order],
    known_buses: Collection[BusId] | None = None,
) -> OrderBook:
    """Validate ``orders`` and freeze them into the book of ``interval``.

    Parameters
    ----------
    interval : Interval
        The interval every order must be for.
    orders : iterable of Bid or Offer
        The orders, in any order.
    known_buses : collection of BusId, optional
        If given, every order's bus must be one of them.

    Raises
    ------
    InvalidOrder
        Duplicate id, wrong interval or unknown bus; the message names the order.
    """
    bids: list[Bid] = []
    offers: list[Offer] = []
    for order in orders:
        if known_buses is not None and order.bus not in known_buses:
            msg = f"order {order.order_id}: unknown bus {order.bus!r}"
            raise InvalidOrder(msg)
        if isinstance(order, Bid):
            bids.append(order)
        else:
            offers.append(order)
    return OrderBook(interval, tuple(bids), tuple(offers))


def _parse_int(row_label: str, field: str, raw: Any, *, minimum: int) -> int:  # noqa: ANN401
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        msg = f"{row_label}: missing {field}"
        raise InvalidOrder(msg)
    if isinstance(raw, bool):
        msg = f"{row_label}: {field} must be a number, got {raw!r}"
        raise InvalidOrder(msg)
    if isinstance(raw, int):
        value = Decimal(raw)
    else:
        try:
            value = Decimal(str(raw).strip().replace("_", ""))
        except InvalidOperation:
            msg = f"{row_label}: {field} is not a number: {raw!r}"
            raise InvalidOrder(msg) from None
    if not value.is_finite():
        msg = f"{row_label}: {field} must be finite, got {raw!r}"
        raise InvalidOrder(msg)
    if value != value.to_integral_value():
        msg = f"{row_label}: {field} must be a whole number, got {raw!r}"
        raise InvalidOrder(msg)
    result = int(value)
    if result < minimum:
        msg = f"{row_label}: {field} must be >= {minimum}, got {raw!r}"
        raise InvalidOrder(msg)
    return result


def parse_order_rows(
    rows: Iterable[Mapping[str, Any]],
    interval: Interval,
    known_buses: Collection[BusId] | None = None,
) -> OrderBook:
    """Turn order-file rows into a validated :class:`OrderBook`.

    Parameters
    ----------
    rows : iterable of mapping
        One mapping per order with the keys of :data:`ORDER_COLUMNS`; ``side`` is ``buy`` or
        ``sell`` (case-insensitive); ``energy_wh`` > 0 [Wh]; ``limit_price`` >= 0
        [token base units / kWh]. Numbers may be strings (CSV) or numbers (JSON).
    interval : Interval
        The interval the orders are for.
    known_buses : collection of BusId, optional
        The grid's bus names; an order at any other bus is rejected.

    Raises
    ------
    InvalidOrder
        On the first bad row, naming it (``row 3 (order o-17): ...``).
    """
    orders: list[Order] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        missing = [c for c in ORDER_COLUMNS if c not in row]
        label = f"row {number}"
        if missing:
            msg = f"{label}: missing column(s) {', '.join(missing)}"
            raise InvalidOrder(msg)
        order_id = str(row["order_id"] or "").strip()
        if not order_id:
            msg = f"{label}: empty order_id"
            raise InvalidOrder(msg)
        label = f"row {number} (order {order_id})"
        if order_id in seen:
            msg = f"{label}: duplicate order_id, first seen in row {seen[order_id]}"
            raise InvalidOrder(msg)
        seen[order_id] = number
        participant = str(row["participant"] or "").strip()
        bus = str(row["bus"] or "").strip()
        side_raw = str(row["side"] or "").strip().lower()
        if side_raw not in {s.value for s in Side}:
            msg = f"{label}: side must be 'buy' or 'sell', got {row['side']!r}"
            raise InvalidOrder(msg)
        if known_buses is not None and bus not in known_buses:
            msg = f"{label}: unknown bus {bus!r}"
            raise InvalidOrder(msg)
        energy = _parse_int(label, "energy_wh", row["energy_wh"], minimum=1)
        price = _parse_int(label, "limit_price", row["limit_price"], minimum=0)
        cls = Bid if side_raw == Side.BUY.value else Offer
        try:
            orders.append(
                cls(
                    order_id=OrderId(order_id),
                    participant=ParticipantId(participant),
                    bus=BusId(bus),
                    interval=interval,
                    energy_wh=Wh(energy),
                    limit_price=PricePerKwh(price),
                )
            )
        except InvalidOrder as exc:
            msg = f"{label}: {exc}"
            raise InvalidOrder(msg) from None
    return build_order_book(interval, orders, known_buses)
