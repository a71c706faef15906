"""Decompose cleared quantities into seller -> buyer trades (provenance and settlement).

Local sellers are matched to local buyers first, electrically closest first (tree-path
resistance between their buses), then what is left trades with :data:`~market.domain.GRID` at the
slack bus. The work is per pair of *buses*, not per pair of orders: at most one walk over the
orders of each bus pair, so 10,000 orders at a few hundred buses stay cheap. Within a bus,
orders are taken in canonical order (price, then id), which makes the result deterministic.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from market.domain import GRID, BusId, Interval, OrderId, ParticipantId, Trade
from market.network import NetworkModel, electrical_distance
from market.units import PricePerKwh, Wh, buyer_payment, seller_revenue


@dataclass(slots=True)
class Leg:
    """One side's cleared position in the matching: who, where, how much, at what price."""

    participant: ParticipantId
    bus: int
    order_id: OrderId | None
    remaining_wh: int
    price: int


def match(
    interval: Interval,
    network: NetworkModel,
    sellers: list[Leg],
    buyers: list[Leg],
) -> tuple[Trade, ...]:
    """Pair ``sellers`` with ``buyers`` into trades; total sold must equal total bought [Wh].

    ``sellers``/``buyers`` are consumed (their ``remaining_wh`` drops to zero). Legs whose
    participant is :data:`GRID` are matched after every local pair.

    Raises
    ------
    ValueError
        If the two sides do not carry the same energy.
    """
    total_sold = sum(leg.remaining_wh for leg in sellers)
    total_bought = sum(leg.remaining_wh for leg in buyers)
    if total_sold != total_bought:
        msg = f"cannot match {total_sold} Wh sold against {total_bought} Wh bought"
        raise ValueError(msg)
    names = network.bus_names
    parent = network.parents()
    depth, path_r = network.depth_and_path_r()
    sell_at: dict[int, list[Leg]] = defaultdict(list)
    buy_at: dict[int, list[Leg]] = defaultdict(list)
    for leg in sellers:
        sell_at[leg.bus].append(leg)
    for leg in buyers:
        buy_at[leg.bus].append(leg)

    def rank(pair: tuple[int, int]) -> tuple[float, int, int]:
        s_bus, b_bus = pair
        return (electrical_distance(parent, depth, path_r, s_bus, b_bus), s_bus, b_bus)

    pairs = sorted(((s, b) for s in sell_at for b in buy_at), key=rank)
    trades: list[Trade] = []

    def eligible(legs: list[Leg], local: bool) -> list[Leg]:
        return [x for x in legs if x.remaining_wh and not (local and x.participant == GRID)]

    def run(local: bool) -> None:
        for s_bus, b_bus in pairs:
            s_legs, b_legs = eligible(sell_at[s_bus], local), eligible(buy_at[b_bus], local)
            si = bi = 0
            while si < len(s_legs) and bi < len(b_legs):
                s, b = s_legs[si], b_legs[bi]
                wh = min(s.remaining_wh, b.remaining_wh)
                trades.append(_trade(interval, names, s, b, wh))
                s.remaining_wh -= wh
                b.remaining_wh -= wh
                if s.remaining_wh == 0:
                    si += 1
                if b.remaining_wh == 0:
                    bi += 1

    run(local=True)
    run(local=False)
    return tuple(trades)


def _trade(interval: Interval, names: tuple[BusId, ...], s: Leg, b: Leg, wh: int) -> Trade:
    return Trade(
        interval=interval,
        seller=s.participant,
        buyer=b.participant,
        seller_bus=names[s.bus],
        buyer_bus=names[b.bus],
        seller_order=s.order_id,
        buyer_order=b.order_id,
        energy_wh=Wh(wh),
        seller_price=PricePerKwh(s.price),
        buyer_price=PricePerKwh(b.price),
        buyer_amount=buyer_payment(wh, b.price),
        seller_amount=seller_revenue(wh, s.price),
    )
