"""Order validation and parsing of order rows (pure: no files, no sockets).

Rows come from CSV or JSON order files (read by the controller) as mappings of column name to
value. Every error names the row and the field, and nothing is half-accepted: either the whole
book is valid or :class:`~market.errors.InvalidOrder` is raised.
"""

from __future__ import annotations

import difflib
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
from market.units import MAX_ORDER_WH, MAX_PRICE_PER_KWH, PricePerKwh, Wh

ORDER_COLUMNS = ("order_id", "participant", "bus", "side", "energy_wh", "limit_price")
"""Columns of an order file: ``energy_wh`` a whole number of Wh from 1 to
:data:`~market.units.MAX_ORDER_WH`, ``limit_price`` a whole number of token base units per kWh
from 0 to :data:`~market.units.MAX_PRICE_PER_KWH`."""


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
            msg = f"order {order.order_id}: {unknown_bus_message(order.bus, known_buses)}"
            raise InvalidOrder(msg)
        if isinstance(order, Bid):
            bids.append(order)
        else:
            offers.append(order)
    return OrderBook(interval, tuple(bids), tuple(offers))


def unknown_bus_message(bus: str, known_buses: Collection[str]) -> str:
    """``unknown bus 'X'``, with the closest known names (:class:`difflib.SequenceMatcher`).

    Parameters
    ----------
    bus : str
        The name that is not in the grid.
    known_buses : collection of str
        The grid's bus names.

    Returns
    -------
    str
        E.g. ``unknown bus 'Bus R19' (closest: 'Bus R1', 'Bus R18', 'Bus R11')``: up to three
        names with a :class:`difflib.SequenceMatcher` ratio of at least 0.6, the closest
        first, equally close ones in alphabetical order; no parenthesis when none is close.
    """
    matcher = difflib.SequenceMatcher(b=bus)
    scored = []
    for name in set(known_buses):
        matcher.set_seq1(name)
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
            score = matcher.ratio()
            if score >= 0.6:  # difflib's default cutoff
                scored.append((-score, name))
    close = [name for _, name in sorted(scored)[:3]]
    hint = f" (closest: {', '.join(repr(c) for c in close)})" if close else ""
    return f"unknown bus {_shown(bus)}{hint}"


_NUMBER_RULES: dict[str, tuple[int, int, str]] = {
    "energy_wh": (1, MAX_ORDER_WH, "Wh"),
    "limit_price": (0, MAX_PRICE_PER_KWH, "token base units per kWh"),
}
"""Numeric columns: (minimum, maximum, unit) of each."""


def _parse_int(row_label: str, field: str, raw: Any) -> int:  # noqa: ANN401 - CSV or JSON
    """The whole number in ``raw``, or :class:`InvalidOrder` with one message for every fault.

    Non-numbers, booleans, NaN, infinities, fractions and values outside the column's range
    all get the same sentence, so a user learns the whole rule from any one mistake.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        msg = f"{row_label}: missing {field}"
        raise InvalidOrder(msg)
    minimum, maximum, unit = _NUMBER_RULES[field]
    value: Decimal | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = Decimal(raw)
    elif isinstance(raw, float | str):
        try:
            value = Decimal(str(raw).strip().replace("_", ""))
        except InvalidOperation:
            value = None
    if (
        value is None
        or not value.is_finite()
        or not minimum <= value <= maximum
        or value != value.to_integral_value()
    ):
        msg = (
            f"{row_label}: {field} must be a whole number of {unit} from {minimum} to "
            f"{maximum:_}, got {_shown(raw)}"
        )
        raise InvalidOrder(msg)
    return int(value)


def _shown(raw: object) -> str:
    """``repr(raw)``, cut to 40 characters: a message quotes the value, not a whole file."""
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def _parse_text(row_label: str, field: str, raw: Any) -> str:  # noqa: ANN401 - CSV or JSON
    """A text column: a string (or a JSON integer), stripped; ``None`` is empty."""
    if raw is None:
        return ""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        msg = f"{row_label}: {field} must be text, got {_shown(raw)}"
        raise InvalidOrder(msg)
    return str(raw).strip()


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
        ``sell`` (case-insensitive); ``energy_wh`` 1 to 10**9 [Wh]; ``limit_price`` 0 to
        10**9 [token base units / kWh], both whole numbers (``1500``, ``1500.0`` and
        ``1.5e3`` are the same; ``1500.7``, NaN and infinities are not). Numbers may be
        strings (CSV) or numbers (JSON); text columns strings (or JSON integers).
    interval : Interval
        The interval the orders are for.
    known_buses : collection of BusId, optional
        The grid's bus names; an order at any other bus is rejected.

    Raises
    ------
    InvalidOrder
        On the first bad row, naming it and the column (``row 3 (order o-17): energy_wh
        must be ...``); an unknown bus with the closest known names.
    """
    orders: list[Order] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        label = f"row {number}"
        missing = [c for c in ORDER_COLUMNS if c not in row]
        if missing:
            msg = f"{label}: missing column(s) {', '.join(missing)}"
            raise InvalidOrder(msg)
        order_id = _parse_text(label, "order_id", row["order_id"])
        if not order_id:
            msg = f"{label}: empty order_id"
            raise InvalidOrder(msg)
        label = f"row {number} (order {order_id if len(order_id) <= 40 else _shown(order_id)})"
        if order_id in seen:
            msg = f"{label}: duplicate order_id, first seen in row {seen[order_id]}"
            raise InvalidOrder(msg)
        seen[order_id] = number
        participant = _parse_text(label, "participant", row["participant"])
        bus = _parse_text(label, "bus", row["bus"])
        side_raw = _parse_text(label, "side", row["side"]).lower()
        if side_raw not in {s.value for s in Side}:
            msg = f"{label}: side must be 'buy' or 'sell', got {_shown(row['side'])}"
            raise InvalidOrder(msg)
        if known_buses is not None and bus not in known_buses:
            msg = f"{label}: {unknown_bus_message(bus, known_buses)}"
            raise InvalidOrder(msg)
        energy = _parse_int(label, "energy_wh", row["energy_wh"])
        price = _parse_int(label, "limit_price", row["limit_price"])
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
