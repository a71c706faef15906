"""Turn a solved model into a :class:`~market.domain.ClearingResult` (integers from here on).

Rounding happens only through :func:`market.units.round_half_even`:

* each order group's accepted energy [kWh float] -> Wh, clamped to ``[0, energy_wh]``, with
  both market sides rounded jointly so that they balance exactly;
* a group's Wh are shared among its orders pro rata to their size, by largest remainder,
  ties to the smaller order id (deterministic, and no Wh is created or lost);
* each bus's price = ``-dual`` of its energy balance [token units / kWh]
  (:func:`market.clearing.pricing.nodal_prices`).

Before any rounding, the solver's optimum is replaced by the book's unique one
(:func:`market.clearing.unique.canonical_outcome`: the optimal duals closest to the tariffs'
midpoint, then the optimal dispatch sharing ties pro rata), so every engine and the lazy-bounds
solve publish the same prices and quantities.

Money is exact per order: a buy order pays ``ceil(accepted_wh * price / 1000)`` and a sell
order receives ``floor(accepted_wh * price / 1000)`` (:func:`order_amount`), rounded once on
its whole accepted energy; :func:`market.matching.match` splits the same amount over the
order's trades by largest remainder, and :func:`check_amounts` checks that the trades sum to
each order, to the Wh and the unit.

Every price comes from :mod:`market.clearing.pricing` (nodal prices from the duals, each
order's settlement price under the mechanism, clamped to its limit, the grid at its tariffs).
Both sides of the market are rounded to the same integer total (:func:`balanced_quantities`),
so energy balances to the Wh and the upstream grid trades exactly what the LP traded with it,
at exactly its tariffs; the difference to the slack bus's price (congestion at the upstream
connection) goes to the community.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from market.clearing.groups import OrderGroup
from market.clearing.lp import LpData
from market.clearing.model import BuiltModel
from market.clearing.options import ClearingOptions
from market.clearing.pricing import book_crosses, nodal_prices, settlement_prices
from market.clearing.solve import SolveOutcome
from market.clearing.unique import canonical_outcome
from market.domain import (
    COMMUNITY,
    GRID,
    BusId,
    ClearingResult,
    ClearingStatus,
    Interval,
    OrderId,
    OrderResult,
    Side,
    SolverReport,
    Trade,
)
from market.errors import UnbalancedEnergy
from market.matching import Leg, match
from market.units import (
    PricePerKwh,
    TokenUnits,
    Wh,
    apportion,
    buyer_payment,
    round_half_even,
    seller_revenue,
)


def share_pro_rata(group: OrderGroup, accepted_wh: int) -> dict[OrderId, int]:
    """Split ``accepted_wh`` of ``group`` among its orders by largest remainder.

    Parameters
    ----------
    group : OrderGroup
        Orders of one bus, side and limit price.
    accepted_wh : int
        The group's accepted energy [Wh], ``0 <= accepted_wh``.

    Returns
    -------
    dict of OrderId to int
        Each order's share [Wh], pro rata to its size; the Wh left by the floors go to the
        largest remainders, ties to the smaller order id. The shares sum to ``accepted_wh``
        (to the group's total when more is accepted).
    """
    total = group.energy_wh
    if accepted_wh >= total:
        return {o.order_id: o.energy_wh for o in group.orders}
    shares: dict[OrderId, int] = {}
    remainders: list[tuple[int, OrderId]] = []
    for order in group.orders:
        whole, rest = divmod(accepted_wh * order.energy_wh, total)
        shares[order.order_id] = whole
        remainders.append((-rest, order.order_id))
    left = accepted_wh - sum(shares.values())
    for _, order_id in sorted(remainders)[:left]:
        shares[order_id] += 1
    return shares


def balanced_quantities(
    built: BuiltModel | LpData, outcome: SolveOutcome
) -> tuple[list[int], int, int, int]:
    """Accepted Wh per group and the grid's import/export [Wh], balanced exactly.

    Rounding every group on its own can leave a few Wh that nobody sold (or bought), which
    would then be booked against the grid at a tariff the LP never paid. Instead both sides
    of the market (buys + grid export, sells + grid import) are rounded to the same integer
    total with :func:`market.units.apportion`, so energy balances to the Wh and the grid
    trades only what the LP traded with it. The totals go through
    :func:`market.units.round_half_even`.

    With losses, the sell side (sells + grid import) exceeds the buy side (buys + grid export)
    by the market's incremental losses; each side is rounded to its own total and the fourth
    value returned is the loss energy [Wh] (negative when the market *reduces* the feeder's
    losses). Without losses the two totals are one.

    Parameters
    ----------
    built : BuiltModel or LpData
        The model that was solved (its order groups and network).
    outcome : SolveOutcome
        Its ok solution [kWh].

    Returns
    -------
    accepted_wh : list of int
        Accepted energy per group [Wh].
    grid_import_wh, grid_export_wh : int
        The market's net exchange with the upstream grid [Wh] (one of them is 0).
    loss_wh : int
        The market's incremental losses [Wh] (sell side minus buy side).
    """
    groups = built.groups
    kwh = outcome.accepted_kwh
    buy_idx = [g for g, grp in enumerate(groups) if grp.side is Side.BUY]
    sell_idx = [g for g, grp in enumerate(groups) if grp.side is Side.SELL]
    big = 10**15  # the grid has no cap of its own here; network limits are in the LP
    buy_vals = [float(kwh[g]) * 1000 for g in buy_idx] + [outcome.grid_export_kwh * 1000]
    sell_vals = [float(kwh[g]) * 1000 for g in sell_idx] + [outcome.grid_import_kwh * 1000]
    buy_caps = [groups[g].energy_wh for g in buy_idx] + [big]
    sell_caps = [groups[g].energy_wh for g in sell_idx] + [big]
    buy_total = sum(min(max(v, 0.0), c) for v, c in zip(buy_vals, buy_caps, strict=True))
    sell_total = sum(min(max(v, 0.0), c) for v, c in zip(sell_vals, sell_caps, strict=True))
    if built.network.losses:
        total_buy = round_half_even(buy_total)
        total_sell = round_half_even(sell_total)
    else:
        total_buy = total_sell = round_half_even((buy_total + sell_total) / 2)
    buys = apportion(buy_vals, buy_caps, total_buy)
    sells = apportion(sell_vals, sell_caps, total_sell)
    accepted = [0] * len(groups)
    for g, wh in zip(buy_idx, buys, strict=False):
        accepted[g] = wh
    for g, wh in zip(sell_idx, sells, strict=False):
        accepted[g] = wh
    grid_export, grid_import = buys[-1], sells[-1]
    net = min(grid_export, grid_import)  # never both: net them
    return accepted, grid_import - net, grid_export - net, total_sell - total_buy


def order_amount(side: Side, accepted_wh: int, price: int) -> TokenUnits:
    """An order's exact amount [token base units], rounded once on its whole energy.

    Parameters
    ----------
    side : Side
        BUY pays ``ceil(accepted_wh * price / 1000)``; SELL receives
        ``floor(accepted_wh * price / 1000)``.
    accepted_wh : int
        The order's accepted energy [Wh].
    price : int
        Its settlement price [token base units / kWh].

    Returns
    -------
    TokenUnits
        :func:`market.units.buyer_payment` or :func:`market.units.seller_revenue`.
    """
    if side is Side.BUY:
        return buyer_payment(accepted_wh, price)
    return seller_revenue(accepted_wh, price)


def check_amounts(orders: tuple[OrderResult, ...], trades: tuple[Trade, ...]) -> None:
    """Check that every order's trades sum to its energy and its amount, to the Wh and unit.

    Parameters
    ----------
    orders : tuple of OrderResult
        The orders with their accepted energy [Wh] and amount [token base units].
    trades : tuple of Trade
        Their trades (:func:`market.matching.match`).

    Raises
    ------
    UnbalancedEnergy
        If an order's trades do not sum to it (a bug, never an input).
    """
    energy: dict[OrderId, int] = defaultdict(int)
    paid: dict[OrderId, int] = defaultdict(int)
    for t in trades:
        if t.buyer_order is not None:
            energy[t.buyer_order] += t.energy_wh
            paid[t.buyer_order] += t.buyer_amount
        if t.seller_order is not None:
            energy[t.seller_order] += t.energy_wh
            paid[t.seller_order] += t.seller_amount
    for r in orders:
        if (energy[r.order_id], paid[r.order_id]) != (r.accepted_wh, r.amount):
            msg = (
                f"order {r.order_id}: trades carry {energy[r.order_id]} Wh and "
                f"{paid[r.order_id]} units, the order {r.accepted_wh} Wh and {r.amount} units"
            )
            raise UnbalancedEnergy(msg)


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Quantities:
    """A solved book's canonical optimum, rounded to the Wh: the dispatch before any price.

    What the AC loop checks after each solve (``controller.grid_clearing``); :func:`extract`
    turns the one it keeps into the result (prices, orders, trades, money).

    Parameters
    ----------
    outcome : SolveOutcome
        The canonical optimum (:func:`market.clearing.unique.canonical_outcome`).
    note : str
        Empty, or why the solver's own optimum was kept.
    qp_s : float
        Time in the canonical rules' QPs [s] (reported, never decides anything).
    accepted_wh : tuple of int
        Accepted energy per order group [Wh] (:func:`balanced_quantities`).
    grid_import_wh, grid_export_wh : int
        The market's exchange with the upstream grid [Wh] (one of them 0).
    loss_wh : int
        The market's incremental losses [Wh].
    """

    outcome: SolveOutcome
    note: str
    qp_s: float
    accepted_wh: tuple[int, ...]
    grid_import_wh: int
    grid_export_wh: int
    loss_wh: int


def quantities(
    built: BuiltModel | LpData, outcome: SolveOutcome, options: ClearingOptions
) -> Quantities:
    """The canonical optimum of a solved model in Wh (``outcome.status`` must be ok).

    Parameters
    ----------
    built : BuiltModel or LpData
        The model that was solved.
    outcome : SolveOutcome
        Its ok solution, whatever vertex the solver returned.
    options : ClearingOptions
        The tariffs (the canonical prices' reference).

    Returns
    -------
    Quantities
        The book's unique optimum (:mod:`market.clearing.unique`) rounded jointly to Wh.
    """
    canonical = canonical_outcome(
        built if isinstance(built, LpData) else built.lp, outcome, options
    )
    accepted, grid_import, grid_export, loss_wh = balanced_quantities(built, canonical.outcome)
    return Quantities(
        outcome=canonical.outcome,
        note=canonical.note,
        qp_s=canonical.qp_s,
        accepted_wh=tuple(accepted),
        grid_import_wh=grid_import,
        grid_export_wh=grid_export,
        loss_wh=loss_wh,
    )


def extract(
    built: BuiltModel | LpData,
    solved: Quantities,
    options: ClearingOptions,
    interval: Interval,
    timings: tuple[float, float],
) -> ClearingResult:
    """Build the result of a solved model from its canonical quantities.

    ``prices`` in the result are always the nodal prices (the duals: what energy is worth at
    each bus); each order's ``price`` is what it settles at under ``options.mechanism``.

    Parameters
    ----------
    built : BuiltModel or LpData
        The model that was solved.
    solved : Quantities
        Its canonical optimum in Wh (:func:`quantities`).
    options : ClearingOptions
        Tariffs [token units / kWh] and mechanism.
    interval : Interval
        The interval the trades belong to.
    timings : tuple of float
        Build and solve times [s] for the solver report.

    Returns
    -------
    ClearingResult
        CLEARED, or BLOCKED / NO_CROSSING when nothing trades, with prices, trades and the
        reason in words (``extract_s`` is left at 0 for the caller to fill in).

    Raises
    ------
    UnbalancedEnergy
        If the rounded quantities do not balance to the Wh (a bug, never expected).
    """
    network = built.network
    names = network.bus_names
    outcome = solved.outcome
    prices = nodal_prices(outcome.balance_duals)
    accepted_by_group = list(solved.accepted_wh)
    grid_import, grid_export = solved.grid_import_wh, solved.grid_export_wh
    loss_wh = solved.loss_wh
    group_prices, price_note = settlement_prices(
        built.groups,
        accepted_by_group,
        prices,
        slack=network.slack,
        mechanism=options.mechanism,
        grid_import_wh=grid_import,
        grid_export_wh=grid_export,
        import_price=options.import_price,
        export_price=options.export_price,
    )
    results: list[OrderResult] = []
    welfare_numerator = 0
    sellers: list[Leg] = []
    buyers: list[Leg] = []
    for g, group in enumerate(built.groups):
        accepted = accepted_by_group[g]
        price = group_prices[g]
        sign = 1 if group.side is Side.BUY else -1
        welfare_numerator += sign * accepted * group.limit_price
        shares = share_pro_rata(group, accepted)
        for order in group.orders:
            wh = shares[order.order_id]
            results.append(
                OrderResult(
                    order_id=order.order_id,
                    participant=order.participant,
                    bus=order.bus,
                    side=order.side,
                    accepted_wh=Wh(wh),
                    price=PricePerKwh(price),
                    amount=order_amount(order.side, wh, price),
                )
            )
            if wh:
                leg = Leg(order.participant, group.bus, order.order_id, wh, price)
                (buyers if group.side is Side.BUY else sellers).append(leg)

    bought = sum(leg.remaining_wh for leg in buyers)
    sold = sum(leg.remaining_wh for leg in sellers)
    if bought + grid_export + loss_wh != sold + grid_import:  # pragma: no cover
        msg = (
            f"unbalanced extraction: {bought} + {grid_export} + losses {loss_wh} "
            f"!= {sold} + {grid_import}"
        )
        raise UnbalancedEnergy(msg)
    # The grid is paid exactly its tariffs; any congestion rent at the slack goes to the
    # community, like every other price difference.
    if grid_import:
        sellers.append(Leg(GRID, network.slack, None, grid_import, options.import_price))
    if grid_export:
        buyers.append(Leg(GRID, network.slack, None, grid_export, options.export_price))
    # The market's incremental losses are bought (or, when it reduces the feeder's losses,
    # sold) by the community at the slack bus's price, paid from the loss rent.
    slack_price = prices[network.slack]
    if loss_wh > 0:
        buyers.append(Leg(COMMUNITY, network.slack, None, loss_wh, slack_price))
    elif loss_wh < 0:
        sellers.append(Leg(COMMUNITY, network.slack, None, -loss_wh, slack_price))
    trades = match(interval, network, sellers, buyers)

    orders = tuple(sorted(results, key=lambda r: r.order_id))
    check_amounts(orders, trades)
    welfare_numerator += grid_export * options.export_price - grid_import * options.import_price
    # What the community nets from the trades: every buyer/seller spread (congestion, loss and
    # rounding rent) less what it paid for the market's losses (or plus what it sold).
    rent = sum(t.buyer_amount - t.seller_amount for t in trades)
    rent -= sum(t.buyer_amount for t in trades if t.buyer == COMMUNITY)
    rent += sum(t.seller_amount for t in trades if t.seller == COMMUNITY)
    cleared_any = bool(bought or sold)
    status = ClearingStatus.CLEARED
    if not cleared_any:
        status = (
            ClearingStatus.BLOCKED
            if book_crosses(built.groups, options.import_price, options.export_price)
            else ClearingStatus.NO_CROSSING
        )
    parts = [
        f"cleared {bought} Wh bought, {sold} Wh sold; grid import {grid_import} Wh, "
        f"export {grid_export} Wh"
    ]
    if loss_wh > 0:
        parts.append(f"the market adds {loss_wh} Wh of losses (bought by the community)")
    elif loss_wh < 0:
        parts.append(f"the market saves {-loss_wh} Wh of losses (sold by the community)")
    if price_note:
        parts.append(price_note)
    if solved.note:
        parts.append(solved.note)
    if cleared_any:
        reason = "; ".join(parts)
    elif status is ClearingStatus.BLOCKED:
        lo, hi = min(prices), max(prices)
        reason = (
            "the book crosses (a bid meets an offer or a tariff) but network limits or losses "
            f"block every trade: nodal prices range {lo}-{hi} per kWh"
        )
    else:
        reason = "no order crossed: no bid meets an offer or a grid tariff"
    build_s, solve_s = timings
    return ClearingResult(
        interval=interval,
        status=status,
        reason=reason,
        orders=orders,
        prices=tuple(
            sorted(
                [(BusId(names[b]), PricePerKwh(p)) for b, p in enumerate(prices)]
                + [(BusId(alias), PricePerKwh(prices[b])) for alias, b in network.aliases]
            )
        ),
        grid_import_wh=Wh(grid_import),
        grid_export_wh=Wh(grid_export),
        trades=trades,
        welfare=TokenUnits(round_half_even(welfare_numerator / 1000)),
        community_rent=TokenUnits(rent),
        solver=SolverReport(
            name="highs",
            version=outcome.solver_version,
            termination=outcome.termination,
            build_s=build_s,
            solve_s=solve_s,
            extract_s=0.0,
        ),
        mechanism=options.mechanism,
    )
