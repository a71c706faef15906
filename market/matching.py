"""Decompose cleared quantities into seller -> buyer trades (provenance and settlement).

Electrically close partners first, on the feeder's tree: the buses are walked from the leaves
up; at each bus, the sellers and buyers still unmatched in its subtree are paired, and what
is left moves up to the parent. A pair is therefore matched at the deepest bus that connects
them (their lowest common ancestor): neighbours on the same lateral trade with each other
before anything crosses the transformer. A meshed feeder has no tree: there every (seller
bus, buyer bus) pair is taken in order of its electrical distance from the sensitivities
(:class:`~market.network.Sensitivities`: how far apart a transfer between them pushes their
voltages), the same bus first (:func:`_pair_by_distance`). Legs of
:data:`~market.domain.GRID` and :data:`~market.domain.COMMUNITY` (the upstream grid and the
market's losses, both at the slack) are matched last. Each leg climbs at most the depth of the
tree, so 10,000 orders on a 5,000-bus feeder cost milliseconds. Within a bus, legs keep their
canonical order, which makes the result deterministic.

Money is fixed per leg, then shared over its trades (DESIGN.md section 3):

* a buying leg pays exactly ``ceil(wh * price / 1000)`` of its whole energy, a selling leg
  receives exactly ``floor(wh * price / 1000)`` (:func:`market.units.buyer_payment`,
  :func:`market.units.seller_revenue`). One leg is one order, or one GRID or COMMUNITY
  position, so each order's amount is its formula, rounded once, not a sum of roundings;
* the leg's amount is split over its trades by largest remainder
  (:func:`market.units.apportion_exact`): each trade gets its exact value
  ``wh_t * price / 1000`` rounded down, and the units still missing go to the largest
  fractional parts, ties to the earlier trade. Every trade amount is therefore its exact value
  rounded down or up, a trade's buyer and seller amounts differ by the price spread and at
  most one unit of rounding each, and the trades of a leg sum to the leg to the unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from market.domain import COMMUNITY, GRID, BusId, Interval, OrderId, ParticipantId, Trade
from market.errors import UnbalancedEnergy
from market.network import NetworkModel
from market.units import (
    WH_PER_KWH,
    PricePerKwh,
    TokenUnits,
    Wh,
    apportion_exact,
    buyer_payment,
    seller_revenue,
)

SYSTEM_ACCOUNTS = frozenset({GRID, COMMUNITY})


@dataclass(slots=True)
class Leg:
    """One side's cleared position in the matching: who, where, how much, at what price.

    ``remaining_wh`` [Wh] is consumed by :func:`match`; ``price`` is in token base units per
    kWh.
    """

    participant: ParticipantId
    bus: int
    order_id: OrderId | None
    remaining_wh: int
    price: int


@dataclass(slots=True)
class _Pairing:
    """A trade before its amounts are known: the two legs (by position) and the energy [Wh]."""

    seller: int
    buyer: int
    energy_wh: int


def leg_amount(leg: Leg, energy_wh: int, *, buying: bool) -> int:
    """The exact amount of a whole leg [token base units]: ceil for a buyer, floor for a seller.

    Parameters
    ----------
    leg : Leg
        The leg (its price [token base units / kWh]).
    energy_wh : int
        The leg's whole energy [Wh].
    buying : bool
        Whether the leg pays (buyer side) or receives (seller side).

    Returns
    -------
    int
        :func:`market.units.buyer_payment` or :func:`market.units.seller_revenue`.
    """
    return (buyer_payment if buying else seller_revenue)(energy_wh, leg.price)


def split_amount(energies_wh: list[int], price: int, amount: int) -> list[int]:
    """Share one leg's ``amount`` over its trades by largest remainder, exactly.

    Parameters
    ----------
    energies_wh : list of int
        The leg's trades' energies [Wh], in trade order (the tie-break).
    price : int
        The leg's price [token base units / kWh].
    amount : int
        The leg's amount [token base units]: the ceiling or the floor of
        ``sum(energies_wh) * price / 1000``.

    Returns
    -------
    list of int
        Each trade's amount [token base units]: its exact value ``wh * price / 1000`` rounded
        down or up, summing to ``amount``.
    """
    return apportion_exact([wh * price for wh in energies_wh], WH_PER_KWH, amount)


def match(
    interval: Interval,
    network: NetworkModel,
    sellers: list[Leg],
    buyers: list[Leg],
) -> tuple[Trade, ...]:
    """Pair ``sellers`` with ``buyers`` into trades, electrically closest first.

    Parameters
    ----------
    interval : Interval
        The interval the trades belong to.
    network : NetworkModel
        The feeder (its tree decides who meets whom first).
    sellers, buyers : list of Leg
        The two sides; consumed (their ``remaining_wh`` drops to zero). Their totals [Wh]
        must be equal.

    Returns
    -------
    tuple of Trade
        Each with the seller's and the buyer's price and amounts [token base units]: every
        leg's exact amount (:func:`market.units.buyer_payment` of a buying leg's whole energy,
        :func:`market.units.seller_revenue` of a selling leg's) split over its trades by
        largest remainder (:func:`split_amount`), so the trades of a leg sum to its amount.

    Raises
    ------
    UnbalancedEnergy
        If the two sides do not carry the same energy (a ``ValueError``).
    """
    total_sold = sum(leg.remaining_wh for leg in sellers)
    total_bought = sum(leg.remaining_wh for leg in buyers)
    if total_sold != total_bought:
        msg = f"cannot match {total_sold} Wh sold against {total_bought} Wh bought"
        raise UnbalancedEnergy(msg)
    names = network.bus_names
    n = network.n_bus
    sell_at: list[list[Leg]] = [[] for _ in range(n)]
    buy_at: list[list[Leg]] = [[] for _ in range(n)]
    system_sells: list[Leg] = []
    system_buys: list[Leg] = []
    for leg in sellers:
        if leg.remaining_wh:
            (system_sells if leg.participant in SYSTEM_ACCOUNTS else sell_at[leg.bus]).append(leg)
    for leg in buyers:
        if leg.remaining_wh:
            (system_buys if leg.participant in SYSTEM_ACCOUNTS else buy_at[leg.bus]).append(leg)

    legs = [*sellers, *buyers]
    position = {id(leg): i for i, leg in enumerate(legs)}
    energy = [leg.remaining_wh for leg in legs]
    pairings: list[_Pairing] = []
    if network.meshed is not None:
        left_sells, left_buys = _pair_by_distance(
            network.meshed.distance, position, sell_at, buy_at, pairings
        )
    else:
        parent = network.parents()
        for bus in network.bfs_order[::-1].tolist():
            sells, buys = _pair(position, sell_at[bus], buy_at[bus], pairings)
            up = int(parent[bus])
            if up >= 0:
                sell_at[up].extend(sells)
                buy_at[up].extend(buys)
            else:
                sell_at[bus], buy_at[bus] = sells, buys
        left_sells, left_buys = sell_at[network.slack], buy_at[network.slack]
    rest_sells = left_sells + system_sells
    rest_buys = left_buys + system_buys
    left_sells, left_buys = _pair(position, rest_sells, rest_buys, pairings)
    if left_sells or left_buys:  # pragma: no cover - excluded by the totals check above
        msg = "matching left energy unpaired"
        raise UnbalancedEnergy(msg)
    amounts = _trade_amounts(legs, energy, len(sellers), pairings)
    return tuple(
        _trade(interval, names, legs[p.seller], legs[p.buyer], p.energy_wh, amount)
        for p, amount in zip(pairings, amounts, strict=True)
    )


def _pair_by_distance(
    distance: NDArray[np.float64],
    position: dict[int, int],
    sell_at: list[list[Leg]],
    buy_at: list[list[Leg]],
    pairings: list[_Pairing],
) -> tuple[list[Leg], list[Leg]]:
    """Pair a meshed feeder's legs by electrical distance, closest buses first.

    Every (seller bus, buyer bus) pair is taken in order of ``distance`` (ties by the two bus
    indices: deterministic), the same bus first (distance 0); what is left, in bus order, goes
    to the grid and the community's legs.
    """
    sell_buses = [b for b, legs in enumerate(sell_at) if legs]
    buy_buses = [b for b, legs in enumerate(buy_at) if legs]
    pairs = sorted(
        (0.0 if a == b else float(distance[a, b]), a, b) for a in sell_buses for b in buy_buses
    )
    for _, a, b in pairs:
        if sell_at[a] and buy_at[b]:
            sell_at[a], buy_at[b] = _pair(position, sell_at[a], buy_at[b], pairings)
    return (
        [leg for b in sell_buses for leg in sell_at[b]],
        [leg for b in buy_buses for leg in buy_at[b]],
    )


def _trade_amounts(
    legs: list[Leg], energy: list[int], n_sellers: int, pairings: list[_Pairing]
) -> list[tuple[int, int]]:
    """(buyer amount, seller amount) of every pairing [token base units], per leg exact."""
    trades_of: list[list[int]] = [[] for _ in legs]
    for t, p in enumerate(pairings):
        trades_of[p.seller].append(t)
        trades_of[p.buyer].append(t)
    buyer_amount = [0] * len(pairings)
    seller_amount = [0] * len(pairings)
    for i, leg in enumerate(legs):
        if not trades_of[i]:
            continue
        buying = i >= n_sellers
        shares = split_amount(
            [pairings[t].energy_wh for t in trades_of[i]],
            leg.price,
            leg_amount(leg, energy[i], buying=buying),
        )
        for t, share in zip(trades_of[i], shares, strict=True):
            (buyer_amount if buying else seller_amount)[t] = share
    return list(zip(buyer_amount, seller_amount, strict=True))


def _pair(
    position: dict[int, int],
    sells: list[Leg],
    buys: list[Leg],
    pairings: list[_Pairing],
) -> tuple[list[Leg], list[Leg]]:
    """Pair two queues in order; return what is left of each (one of them is empty)."""
    si = bi = 0
    while si < len(sells) and bi < len(buys):
        s, b = sells[si], buys[bi]
        wh = min(s.remaining_wh, b.remaining_wh)
        pairings.append(_Pairing(position[id(s)], position[id(b)], wh))
        s.remaining_wh -= wh
        b.remaining_wh -= wh
        if s.remaining_wh == 0:
            si += 1
        if b.remaining_wh == 0:
            bi += 1
    return sells[si:], buys[bi:]


def _trade(
    interval: Interval,
    names: tuple[BusId, ...],
    s: Leg,
    b: Leg,
    wh: int,
    amounts: tuple[int, int],
) -> Trade:
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
        buyer_amount=TokenUnits(amounts[0]),
        seller_amount=TokenUnits(amounts[1]),
    )
