"""Every price rule of the market, in one place.

Prices are integers [token base units / kWh]; the solver works in currency (token base units
x :data:`CURRENCY_PER_UNIT`) so that its coefficients stay near 1.

* **Nodal prices** (:func:`nodal_prices`): a bus's price is the negative dual of its energy
  balance [currency / kWh], converted to token units and rounded half to even, never below 0
  (distribution locational marginal prices).
* **Unique prices** (:func:`reference_price`): where the duals are degenerate (a range of
  prices clears the book equally well), the published prices are the optimal duals closest
  in least squares to the midpoint of the grid's tariffs (:mod:`market.clearing.unique`).
* **Limits** (:func:`clamp_to_limit`): no buyer pays above its limit and no seller receives
  below its limit, whatever the mechanism, rounding or a degenerate dual would say.
* **Settlement price per mechanism** (:class:`Mechanism`, :func:`settlement_prices`):
  ``nodal`` pay-as-clear at the order's bus price; ``uniform`` one price for every accepted
  order; ``pay-as-bid`` every order at its own limit.
* **Grid tariffs.** The upstream grid sells to the market at the import tariff and buys from it
  at the export tariff, exactly (any congestion rent at the slack goes to the community); the
  community buys (or sells) the market's incremental losses at the slack bus's nodal price.
  A book "crosses" (:func:`book_crosses`) when a bid beats the cheapest supply (an offer or
  the import tariff) or an offer beats the best demand (a bid or the export tariff). A bid
  for inflexible demand is never placed below the import tariff (:func:`demand_bid_price`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from market.clearing.groups import OrderGroup
from market.domain import Mechanism, Side
from market.units import round_half_even

CURRENCY_PER_UNIT = 1e-6
"""The objective is in currency (token base units x 1e-6), which keeps coefficients near 1."""

NO_UPPER_PRICE = 10**18
"""Upper end of the uniform price's range when no buyer is accepted [token units / kWh]."""


def nodal_prices(balance_duals: NDArray[np.float64]) -> list[int]:
    """Nodal prices from the duals of the buses' energy balances.

    Parameters
    ----------
    balance_duals : ndarray of float
        Dual of each bus's energy balance [currency / kWh], in bus order.

    Returns
    -------
    list of int
        ``max(round_half_even(-dual / CURRENCY_PER_UNIT), 0)`` per bus [token units / kWh].
    """
    return [max(round_half_even(-d / CURRENCY_PER_UNIT), 0) for d in balance_duals]


def reference_price(import_price: int, export_price: int) -> int:
    """The price a bus gets where the book leaves its price open (degenerate duals).

    Where no order is marginal at a bus (supply exactly meets demand there, a flow is pinned
    at its limit), a whole range of prices clears the book equally well.
    :mod:`market.clearing.unique` then publishes the prices in that range closest, in least
    squares over all buses, to this reference: the midpoint of the grid's tariffs, rounded
    half to even. It depends on no order (nobody can move it by bidding), lies in
    ``[export_price, import_price]``, the range every uncongested bus's price lies in, and
    splits the open surplus evenly between the buyers and the sellers at the bus.

    Parameters
    ----------
    import_price, export_price : int
        The grid's tariffs [token base units / kWh].

    Returns
    -------
    int
        ``round_half_even((import_price + export_price) / 2)`` [token base units / kWh],
        exact in integers.
    """
    total = import_price + export_price
    half, odd = divmod(total, 2)
    return half + (odd and half % 2)


def clamp_to_limit(side: Side, price: int, limit_price: int) -> int:
    """``price`` moved inside what an order of ``side`` accepts.

    Parameters
    ----------
    side : Side
        BUY (never pays above its limit) or SELL (never receives below its limit).
    price : int
        The price the rule proposes [token units / kWh].
    limit_price : int
        The order's limit [token units / kWh].

    Returns
    -------
    int
        ``min(price, limit)`` for a buyer, ``max(price, limit)`` for a seller.
    """
    return min(price, limit_price) if side is Side.BUY else max(price, limit_price)


def settlement_prices(
    groups: Sequence[OrderGroup],
    accepted_wh: Sequence[int],
    nodal: Sequence[int],
    *,
    slack: int,
    mechanism: Mechanism,
    grid_import_wh: int,
    grid_export_wh: int,
    import_price: int,
    export_price: int,
) -> tuple[list[int], str]:
    """The price each group's orders settle at, and a note for the result's reason.

    * ``nodal``: the group's bus price, clamped to the group's limit;
    * ``uniform``: one price for every accepted order, the slack bus's price moved into the
      range that respects every accepted limit ``[max sell limit, min buy limit]``; the grid
      counts as an accepted seller at the import tariff when the market imports and as a
      buyer at the export tariff when it exports, so it is never paid more than buyers pay.
      When congestion leaves that range empty, each order is clamped to its own limit (noted);
    * ``pay-as-bid``: every order at its own limit.

    Parameters
    ----------
    groups : sequence of OrderGroup
        The clearing's order groups.
    accepted_wh : sequence of int
        Accepted energy per group [Wh].
    nodal : sequence of int
        Nodal price per bus [token units / kWh] (:func:`nodal_prices`).
    slack : int
        Index of the slack bus.
    mechanism : Mechanism
        The pricing rule.
    grid_import_wh, grid_export_wh : int
        The market's exchange with the upstream grid [Wh].
    import_price, export_price : int
        The grid's tariffs [token units / kWh].

    Returns
    -------
    prices : list of int
        Settlement price per group [token units / kWh], never below 0.
    note : str
        What the mechanism did, in words ("" for nodal).
    """
    if mechanism is Mechanism.PAY_AS_BID:
        return [max(g.limit_price, 0) for g in groups], "pay-as-bid: every order at its limit"
    if mechanism is Mechanism.UNIFORM:
        sells = [
            g.limit_price
            for g, a in zip(groups, accepted_wh, strict=True)
            if a and g.side is Side.SELL
        ]
        buys = [
            g.limit_price
            for g, a in zip(groups, accepted_wh, strict=True)
            if a and g.side is Side.BUY
        ]
        if grid_import_wh:
            sells.append(import_price)
        if grid_export_wh:
            buys.append(export_price)
        lo, hi = max(sells, default=0), min(buys, default=NO_UPPER_PRICE)
        ref = nodal[slack]
        note = ""
        if lo > hi:
            note = (
                f"uniform: no single price respects every limit (sells up to {lo}, buys from "
                f"{hi}) because the network binds; orders clamped to their limits"
            )
        uniform = min(max(ref, lo), hi) if lo <= hi else ref
        out = [max(clamp_to_limit(g.side, uniform, g.limit_price), 0) for g in groups]
        return out, note or f"uniform price {uniform}"
    return [max(clamp_to_limit(g.side, nodal[g.bus], g.limit_price), 0) for g in groups], ""


def book_crosses(groups: Sequence[OrderGroup], import_price: int, export_price: int) -> bool:
    """Whether some trade pays at the published tariffs, ignoring the network.

    Parameters
    ----------
    groups : sequence of OrderGroup
        The clearing's order groups.
    import_price, export_price : int
        The grid's tariffs [token units / kWh].

    Returns
    -------
    bool
        True when a bid is above the cheapest supply (the lowest offer or the import tariff),
        or an offer below the best demand (the highest bid or the export tariff).
    """
    bids = [g.limit_price for g in groups if g.side is Side.BUY]
    offers = [g.limit_price for g in groups if g.side is Side.SELL]
    cheapest = min([*offers, import_price])
    dearest = max([*bids, export_price])
    return any(b > cheapest for b in bids) or any(o < dearest for o in offers)


def demand_bid_price(price: int, import_price: int) -> int:
    """The limit of a bid for inflexible demand: never below the import tariff.

    Inflexible consumption happens whatever the market decides, and what is not bought locally
    comes from the grid at the import tariff, so its bid is placed at no less than that
    tariff (the market's dispatch then always contains it); a configured price above the
    tariff still counts (e.g. to buy local energy through a congested connection).

    Parameters
    ----------
    price : int
        The configured limit [token units / kWh].
    import_price : int
        The grid's import tariff [token units / kWh].

    Returns
    -------
    int
        ``max(price, import_price)``.
    """
    return max(price, import_price)
