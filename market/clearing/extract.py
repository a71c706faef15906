"""Turn a solved model into a :class:`~market.domain.ClearingResult` (integers from here on).

Rounding happens here and only through :func:`market.units.round_half_even`:

* each order group's accepted energy [kWh float] -> Wh, clamped to ``[0, energy_wh]``;
* a group's Wh are shared among its orders pro rata to their size, by largest remainder,
  ties to the smaller order id (deterministic, and no Wh is created or lost);
* each bus's price = ``-dual`` of its energy balance [token units / kWh].

Pay-as-clear at the bus price, clamped to the order's own limit: a buyer never pays more than
its limit and a seller never receives less than its limit, even where rounding or a degenerate
dual would say otherwise. The upstream grid trades the integer residual of the local orders at
the slack bus's price, clamped to the tariffs (it sells at >= the import tariff and buys at <=
the export tariff).
"""

from __future__ import annotations

from market.clearing.model import CURRENCY_PER_UNIT, BuiltModel, ClearingOptions, OrderGroup
from market.clearing.solve import SolveOutcome
from market.domain import (
    GRID,
    BusId,
    ClearingResult,
    ClearingStatus,
    Interval,
    OrderId,
    OrderResult,
    Side,
    SolverReport,
)
from market.matching import Leg, match
from market.units import PricePerKwh, TokenUnits, Wh, round_half_even


def share_pro_rata(group: OrderGroup, accepted_wh: int) -> dict[OrderId, int]:
    """Split ``accepted_wh`` [Wh] of ``group`` among its orders by largest remainder."""
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


def group_accepted_wh(group: OrderGroup, kwh: float) -> int:
    """Accepted energy of a group [Wh] from the optimiser's kWh, rounded and clamped."""
    return min(max(round_half_even(kwh * 1000.0), 0), group.energy_wh)


def extract(
    built: BuiltModel,
    outcome: SolveOutcome,
    options: ClearingOptions,
    interval: Interval,
    timings: tuple[float, float],
) -> ClearingResult:
    """Build the result of a solved model (``outcome.status`` must be ok).

    ``timings`` are the build and solve times [s] for the solver report.
    """
    network = built.network
    names = network.bus_names
    prices = [round_half_even(-d / CURRENCY_PER_UNIT) for d in outcome.balance_duals]

    results: list[OrderResult] = []
    welfare_numerator = 0
    sellers: list[Leg] = []
    buyers: list[Leg] = []
    for g, group in enumerate(built.groups):
        accepted = group_accepted_wh(group, float(outcome.accepted_kwh[g]))
        bus_price = prices[group.bus]
        price = (
            min(bus_price, group.limit_price)
            if group.side is Side.BUY
            else max(bus_price, group.limit_price)
        )
        price = max(price, 0)
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
                    amount=TokenUnits(0),
                )
            )
            if wh:
                leg = Leg(order.participant, group.bus, order.order_id, wh, price)
                (buyers if group.side is Side.BUY else sellers).append(leg)

    bought = sum(leg.remaining_wh for leg in buyers)
    sold = sum(leg.remaining_wh for leg in sellers)
    grid_import = max(bought - sold, 0)
    grid_export = max(sold - bought, 0)
    slack_price = max(prices[network.slack], 0)
    if grid_import:
        sellers.append(
            Leg(GRID, network.slack, None, grid_import, max(slack_price, options.import_price))
        )
    if grid_export:
        buyers.append(
            Leg(GRID, network.slack, None, grid_export, min(slack_price, options.export_price))
        )
    trades = match(interval, network, sellers, buyers)

    paid: dict[OrderId, int] = {}
    for t in trades:
        if t.buyer_order is not None:
            paid[t.buyer_order] = paid.get(t.buyer_order, 0) + t.buyer_amount
        if t.seller_order is not None:
            paid[t.seller_order] = paid.get(t.seller_order, 0) + t.seller_amount
    orders = tuple(
        OrderResult(
            order_id=r.order_id,
            participant=r.participant,
            bus=r.bus,
            side=r.side,
            accepted_wh=r.accepted_wh,
            price=r.price,
            amount=TokenUnits(paid.get(r.order_id, 0)),
        )
        for r in sorted(results, key=lambda r: r.order_id)
    )
    welfare_numerator += grid_export * options.export_price - grid_import * options.import_price
    rent = sum(t.buyer_amount - t.seller_amount for t in trades)
    cleared_any = bool(bought or sold)
    status = ClearingStatus.CLEARED if cleared_any else ClearingStatus.NO_CROSSING
    reason = (
        f"cleared {bought} Wh bought, {sold} Wh sold locally; grid import {grid_import} Wh, "
        f"export {grid_export} Wh"
        if cleared_any
        else "no order crossed: no bid meets an offer or a grid tariff"
    )
    build_s, solve_s = timings
    return ClearingResult(
        interval=interval,
        status=status,
        reason=reason,
        orders=orders,
        prices=tuple((BusId(names[b]), PricePerKwh(p)) for b, p in enumerate(prices)),
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
