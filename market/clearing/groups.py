"""Orders aggregated into the clearing's variables: one per (bus, side, limit price).

Both engines (:mod:`market.clearing.lp` and :mod:`market.clearing.model`) clear groups, never
single orders, so an LP has one column per group and not one per order and bus; extraction
(:mod:`market.clearing.extract`) shares each group's accepted energy among its orders.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from market.domain import BusId, Order, OrderBook, Side
from market.errors import InvalidOrder
from market.network import NetworkModel


@dataclass(frozen=True, slots=True)
class OrderGroup:
    """Orders of equal bus, side and limit price; one LP variable.

    Parameters
    ----------
    bus : int
        Index of the bus in the :class:`~market.network.NetworkModel`.
    side : Side
        BUY or SELL.
    limit_price : int
        The orders' common limit [token base units / kWh].
    energy_wh : int
        Sum of the orders' energy [Wh].
    orders : tuple of Order
        The orders, in the book's canonical order.
    """

    bus: int
    side: Side
    limit_price: int
    energy_wh: int
    orders: tuple[Order, ...]


def group_orders(book: OrderBook, network: NetworkModel) -> tuple[OrderGroup, ...]:
    """Aggregate the book's orders by (bus, side, limit price), in canonical order.

    Parameters
    ----------
    book : OrderBook
        The interval's validated orders; a bus may be named by an alias.
    network : NetworkModel
        The feeder the orders' buses are looked up in.

    Returns
    -------
    tuple of OrderGroup
        Sorted by bus index, side and limit price.

    Raises
    ------
    InvalidOrder
        If an order's bus is not in the network.
    """
    index = network.bus_index()
    buckets: dict[tuple[int, Side, int], list[Order]] = defaultdict(list)
    for order in book.orders:
        if order.bus not in index:
            msg = f"order {order.order_id}: bus {order.bus!r} is not in the network"
            raise InvalidOrder(msg)
        buckets[(index[BusId(order.bus)], order.side, order.limit_price)].append(order)
    return tuple(
        OrderGroup(
            bus=bus,
            side=side,
            limit_price=price,
            energy_wh=sum(o.energy_wh for o in orders),
            orders=tuple(orders),
        )
        for (bus, side, price), orders in sorted(
            buckets.items(), key=lambda kv: (kv[0][0], kv[0][1].value, kv[0][2])
        )
    )
