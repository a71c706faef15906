"""Standing orders + readings/forecast -> each interval's orders, and results -> setpoints (pure).

Forecast: a :class:`Forecaster` gives each device's expected average power over the interval
[W, GRID sign: + = consumption, - = production]. Without one (or where it has no figure) the
latest reading's ``p_w`` is used (persistence). A device whose reading is MISSING and that has
no forecast makes its participant's derived orders skip this interval, with a reason; fixed
``buy``/``sell`` orders need no forecast.

Energy rounding: forecast power [W] -> energy [Wh] goes through
:func:`market.units.power_to_energy_wh` (the one rounding function).

**Unsold surplus is not curtailed for the market's sake** (:func:`clear_with_export_steps`).
PV surplus that nobody buys is still worth the export tariff to the upstream grid, so the
only reason to curtail it is the network. A ``sell_surplus`` order with a floor at or below
the export tariff is one offer of the whole forecast surplus (the grid already takes what
the local market does not; a second offer would count the same energy twice). A floor above
the tariff is first offered as it is, to the local market; whatever it leaves unsold is
cleared again as an *export step*: the same participant, bus and PV inverter, the whole
surplus at the export tariff, so the network limits see it and its accepted energy is a
cleared sale (to GRID at the export tariff, or to a local buyer when the network prices it
higher). A floor offer that the local market takes whole keeps its floor. In the final
clearing, PV is curtailed only by what the network could not take (a voltage, thermal or
upstream limit, or losses that make the bus's energy worth less than the offer), and each
curtailed inverter's setpoint says so (:attr:`market.domain.Setpoint.reason`).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from controller.config import DeviceConfig, DeviceKind, OrderKind, ParticipantConfig, StandingOrder
from market.clearing.pricing import demand_bid_price
from market.domain import (
    Bid,
    BusId,
    ClearingResult,
    DeviceId,
    Interval,
    MeterReading,
    MeterRole,
    Offer,
    Order,
    OrderBook,
    OrderId,
    ParticipantId,
    ReadingQuality,
    Setpoint,
    SetpointKind,
)
from market.units import (
    SECONDS_PER_HOUR,
    PricePerKwh,
    W,
    Wh,
    buyer_payment,
    power_to_energy_wh,
    round_half_even,
)


class Forecaster(Protocol):
    """Expected average power of a device over an interval [W, + = consumption]."""

    def forecast_w(self, device: DeviceConfig, interval: Interval) -> float | None:
        """Return the forecast, or None when there is none.

        Parameters
        ----------
        device : DeviceConfig
            The device.
        interval : Interval
            The interval the power is averaged over.

        Returns
        -------
        float or None
            Average power over ``interval`` [W, + = consumption, - = production].
        """
        ...


class PlannedKind(enum.StrEnum):
    """What a planned order is for: its standing order's kind, or a battery's direction.

    ``setpoints_for`` reads it: an unsold ``sell_surplus`` offer or ``surplus_export`` step
    curtails its PV inverter, accepted ``battery_charge`` / ``battery_discharge`` energy sets
    its battery's power. A ``surplus_export`` step is a ``sell_surplus`` order's surplus
    offered at the export tariff (:func:`clear_with_export_steps`).
    """

    SELL_SURPLUS = "sell_surplus"
    SURPLUS_EXPORT = "surplus_export"
    BUY_DEMAND = "buy_demand"
    BUY = "buy"
    SELL = "sell"
    BATTERY_CHARGE = "battery_charge"
    BATTERY_DISCHARGE = "battery_discharge"


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedOrder:
    """An order with the device it drives (for setpoints) and what it is for."""

    order: Order
    device: DeviceId | None
    kind: PlannedKind


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The orders of one interval, the device forecasts [W] used, and skipped participants."""

    orders: tuple[PlannedOrder, ...]
    forecast_w: Mapping[DeviceId, float]
    skipped: tuple[str, ...]


def _device_power(
    device: DeviceConfig,
    interval: Interval,
    readings: Mapping[DeviceId, MeterReading],
    forecaster: Forecaster | None,
) -> float | None:
    if forecaster is not None:
        value = forecaster.forecast_w(device, interval)
        if value is not None:
            return value
    reading = readings.get(device.id)
    if reading is None or reading.quality is ReadingQuality.MISSING:
        return None
    return float(reading.p_w)


def plan_orders(
    interval: Interval,
    participants: tuple[ParticipantConfig, ...],
    devices: tuple[DeviceConfig, ...],
    readings: Mapping[DeviceId, MeterReading],
    forecaster: Forecaster | None = None,
    *,
    import_price: int = 0,
    orders_in_force: Mapping[ParticipantId, Sequence[tuple[str, StandingOrder]]] | None = None,
) -> Plan:
    """Turn every participant's standing orders into orders for ``interval``.

    A ``buy_demand`` order is the household's *inflexible* consumption: it happens whatever the
    market decides, and what is not bought locally comes from the grid at the import tariff.
    Its bid is therefore placed at no less than ``import_price`` [token units / kWh] (the
    participant pays that to the grid anyway), so the market's physical dispatch always
    contains it; a configured price above the tariff still counts (e.g. to buy local energy
    through a congested connection). The rule is
    :func:`market.clearing.pricing.demand_bid_price`.

    Each participant's net forecast power is its connection-point meters' power where it has
    any (they net everything behind them), else the sum over its non-battery devices (the
    ``forecaster``'s figure, else the latest reading's ``p_w``); a ``sell_surplus`` or
    ``buy_demand`` order of a participant with a device lacking both is skipped, with the
    reason in ``Plan.skipped``.

    Parameters
    ----------
    interval : Interval
        The interval the orders are for.
    participants : tuple of ParticipantConfig
        The participants with their standing orders.
    devices : tuple of DeviceConfig
        Every device of the site.
    readings : Mapping of DeviceId to MeterReading
        The latest reading of each device (GRID sign, ``p_w`` [W]; ``soc_percent`` [%]).
    forecaster : Forecaster or None
        Expected average power per device over ``interval`` [W]; ``None`` uses the readings.
    import_price : int
        The grid's import tariff [token units/kWh], the floor of ``buy_demand`` bids.
    orders_in_force : Mapping or None
        Per participant, the standing orders in force this interval with their id tags,
        instead of its site-file ones (``(str(n), order)`` for the ``n``-th of those); a
        participant it leaves out keeps its site-file orders. Signed standing orders
        (:func:`controller.intake.signed_book`) are tagged with their EIP-712 digest.

    Returns
    -------
    Plan
        Orders in a deterministic order with ids ``<participant>:<interval_id>:<kind>:<n>``
        (``<n>`` the id tag; battery orders append ``:<device>:charge`` or
        ``:<device>:discharge``), the device forecasts used [W] and the skipped
        participants' reasons.
    """
    planned: list[PlannedOrder] = []
    forecasts: dict[DeviceId, float] = {}
    skipped: list[str] = []
    for p in participants:
        own = [d for d in devices if d.participant == p.id]
        # A connection-point meter already nets everything behind it (PV, loads, battery):
        # where a participant has one, its forecast is that meter's, so nothing counts twice.
        at_connection = [d for d in own if d.role is MeterRole.CONNECTION_POINT]
        non_battery = at_connection or [d for d in own if d.kind is not DeviceKind.BATTERY]
        powers: dict[DeviceId, float] = {}
        missing: list[str] = []
        for d in non_battery:
            value = _device_power(d, interval, readings, forecaster)
            if value is None:
                missing.append(d.id)
            else:
                powers[d.id] = value
                forecasts[d.id] = value
        net_w = sum(powers.values())
        tagged = (orders_in_force or {}).get(p.id)
        if tagged is None:
            tagged = [(str(n), so) for n, so in enumerate(p.orders)]
        for n, so in tagged:
            oid = OrderId(f"{p.id}:{interval.interval_id}:{so.kind}:{n}")
            needs_forecast = so.kind in {OrderKind.SELL_SURPLUS, OrderKind.BUY_DEMAND}
            if needs_forecast and missing:
                skipped.append(
                    f"{p.id}: {so.kind} skipped, no reading or forecast for {', '.join(missing)}"
                )
                continue
            standing = so
            floor = demand_bid_price(so.price, import_price)
            if so.kind is OrderKind.BUY_DEMAND and floor != so.price:
                standing = dataclasses.replace(so, price=floor)
            planned.extend(_orders_for(p, standing, oid, interval, net_w, own, readings))
    return Plan(orders=tuple(planned), forecast_w=forecasts, skipped=tuple(skipped))


def _orders_for(
    p: ParticipantConfig,
    so: StandingOrder,
    oid: OrderId,
    interval: Interval,
    net_w: float,
    own: list[DeviceConfig],
    readings: Mapping[DeviceId, MeterReading],
) -> list[PlannedOrder]:
    pv = next((d.id for d in own if d.kind is DeviceKind.PV), None)

    def make(cls: type[Bid] | type[Offer], order_id: str, energy: int, price: int) -> Order:
        return cls(
            order_id=OrderId(order_id),
            participant=p.id,
            bus=p.bus,
            interval=interval,
            energy_wh=Wh(energy),
            limit_price=PricePerKwh(price),
        )

    if so.kind is OrderKind.SELL_SURPLUS:
        energy = power_to_energy_wh(-net_w, interval.length_s) if net_w < 0 else 0
        if energy <= 0:
            return []
        offer = make(Offer, oid, energy, so.price)
        return [PlannedOrder(order=offer, device=pv, kind=PlannedKind.SELL_SURPLUS)]
    if so.kind is OrderKind.BUY_DEMAND:
        energy = power_to_energy_wh(net_w, interval.length_s) if net_w > 0 else 0
        if energy <= 0:
            return []
        bid = make(Bid, oid, energy, so.price)
        return [PlannedOrder(order=bid, device=None, kind=PlannedKind.BUY_DEMAND)]
    if so.kind in {OrderKind.BUY, OrderKind.SELL}:
        buy = so.kind is OrderKind.BUY
        order = make(Bid if buy else Offer, oid, so.energy_wh, so.price)
        kind = PlannedKind.BUY if buy else PlannedKind.SELL
        return [PlannedOrder(order=order, device=None, kind=kind)]
    # battery
    out: list[PlannedOrder] = []
    for bat in (d for d in own if d.kind is DeviceKind.BATTERY):
        reading = readings.get(bat.id)
        if reading is None or reading.quality is not ReadingQuality.OK:
            continue
        if reading.soc_percent is None:
            continue
        soc = reading.soc_percent
        # rounded down: an order's energy over the interval never asks more than the rated
        # power (42 Wh in 30 s would be a 5,040 W setpoint for a 5,000 W battery)
        power_wh = Wh(bat.rated_w * interval.length_s // SECONDS_PER_HOUR)
        room = round_half_even((so.max_soc_percent - soc) / 100 * bat.capacity_wh)
        stock = round_half_even((soc - so.min_soc_percent) / 100 * bat.capacity_wh)
        charge, discharge = min(power_wh, room), min(power_wh, stock)
        if charge > 0:
            charge_bid = make(Bid, f"{oid}:{bat.id}:charge", charge, so.price)
            out.append(
                PlannedOrder(order=charge_bid, device=bat.id, kind=PlannedKind.BATTERY_CHARGE)
            )
        if discharge > 0:
            discharge_offer = make(
                Offer, f"{oid}:{bat.id}:discharge", discharge, so.discharge_price
            )
            out.append(
                PlannedOrder(
                    order=discharge_offer, device=bat.id, kind=PlannedKind.BATTERY_DISCHARGE
                )
            )
    return out


def cap_by_credit(plan: Plan, credit: Mapping[ParticipantId, int]) -> Plan:
    """Cap each participant's bids so that what they can cost fits its free escrow.

    A bid of ``wh`` at ``limit`` costs at most ``ceil(wh * limit / 1000)``
    (:func:`market.units.buyer_payment`); bids are served dearest first (ties by order id),
    each cut to ``floor(remaining * 1000 / limit)`` [Wh]. A bid cut to 0 Wh is dropped.
    Offers, bids at a zero limit and bids of participants not in ``credit`` are left alone;
    the orders keep their original sequence.

    Parameters
    ----------
    plan : Plan
        The interval's planned orders.
    credit : Mapping of ParticipantId to int
        Each participant's escrow not yet spoken for [token units].

    Returns
    -------
    Plan
        The capped plan; each cut is noted in ``skipped``.
    """
    remaining = dict(credit)
    out: list[PlannedOrder] = []
    notes = list(plan.skipped)
    order = sorted(
        range(len(plan.orders)),
        key=lambda i: (-plan.orders[i].order.limit_price, plan.orders[i].order.order_id),
    )
    capped: dict[int, PlannedOrder | None] = {}
    for i in order:
        po = plan.orders[i]
        o = po.order
        if not isinstance(o, Bid) or o.participant not in remaining or o.limit_price == 0:
            continue
        budget = remaining[o.participant]
        affordable = max(budget, 0) * 1000 // o.limit_price
        wh = min(o.energy_wh, affordable)
        remaining[o.participant] = budget - buyer_payment(wh, o.limit_price)
        if wh < o.energy_wh:
            notes.append(
                f"{o.order_id}: cut from {o.energy_wh} to {wh} Wh: escrow of {o.participant} "
                f"covers no more at {o.limit_price} per kWh"
            )
            capped[i] = (
                dataclasses.replace(po, order=dataclasses.replace(o, energy_wh=Wh(wh)))
                if wh > 0
                else None
            )
    for i, po in enumerate(plan.orders):
        if i in capped:
            if capped[i] is not None:
                out.append(capped[i])  # type: ignore[arg-type]
        else:
            out.append(po)
    return Plan(orders=tuple(out), forecast_w=plan.forecast_w, skipped=tuple(notes))


MAX_SURPLUS_PASSES = 3
"""Clearings per interval at most: the floors, then unsold floor offers moved to the export
tariff, then (only if the local market left a floor offer unsold again) every floor above the
tariff moved there, which leaves nothing for the market to curtail."""


def export_steps(
    plan: Plan,
    accepted_wh: Mapping[OrderId, int],
    export_price: int,
    *,
    every_floor: bool = False,
) -> Plan | None:
    """The plan with unsold floor-priced surplus re-offered as export steps, or ``None``.

    A ``sell_surplus`` offer whose limit is above ``export_price`` and which was not accepted
    whole becomes an export step: kind ``SURPLUS_EXPORT``, id ``<offer id>:export``, the same
    participant, bus, device and energy [Wh] (the whole forecast surplus, so nothing counts
    twice), limit ``export_price``. Offers at or below the tariff, fully accepted floor offers
    and every other order are kept as they are. With ``every_floor`` every floor above the
    tariff is moved, accepted or not (the last clearing, so no cheaper step can leave a floor
    offer unsold).

    Parameters
    ----------
    plan : Plan
        The plan that was cleared.
    accepted_wh : Mapping of OrderId to int
        Accepted energy per order of that clearing [Wh].
    export_price : int
        The site's export tariff [token units / kWh].
    every_floor : bool
        Move every floor above the tariff, not only the unsold ones.

    Returns
    -------
    Plan or None
        The next plan (a note per moved offer in ``skipped``), or ``None`` when no offer moves.
    """
    out: list[PlannedOrder] = []
    notes = list(plan.skipped)
    for po in plan.orders:
        o = po.order
        accepted = accepted_wh.get(o.order_id, 0)
        floor_above = po.kind is PlannedKind.SELL_SURPLUS and o.limit_price > export_price
        if floor_above and (every_floor or accepted < o.energy_wh):
            step = dataclasses.replace(
                o, order_id=OrderId(f"{o.order_id}:export"), limit_price=PricePerKwh(export_price)
            )
            out.append(dataclasses.replace(po, order=step, kind=PlannedKind.SURPLUS_EXPORT))
            notes.append(
                f"{o.order_id}: {o.energy_wh - accepted} of {o.energy_wh} Wh unsold at the floor "
                f"{o.limit_price} per kWh; the surplus is offered at the export tariff "
                f"{export_price} per kWh ({step.order_id})"
                if accepted < o.energy_wh
                else f"{o.order_id}: the surplus is offered at the export tariff {export_price} "
                f"per kWh ({step.order_id}) so that no floor offer is left unsold"
            )
        else:
            out.append(po)
    if len(notes) == len(plan.skipped):
        return None
    return Plan(orders=tuple(out), forecast_w=plan.forecast_w, skipped=tuple(notes))


@dataclass(frozen=True, slots=True, kw_only=True)
class SurplusClearing:
    """The clearing that is acted on: its plan, book and result, and how many were run."""

    plan: Plan
    book: OrderBook
    result: ClearingResult
    passes: int


def clear_with_export_steps(
    plan: Plan,
    clear: Callable[[Plan], tuple[OrderBook, ClearingResult]],
    export_price: int,
    *,
    max_passes: int = MAX_SURPLUS_PASSES,
) -> SurplusClearing:
    """Clear ``plan``, re-offering unsold floor-priced PV surplus at the export tariff.

    1. clear the plan as it is (each floor offer of a ``sell_surplus`` order is the local
       market's);
    2. while the result is ok and a floor offer above the tariff is not accepted whole, clear
       again with it as an export step (:func:`export_steps`); the last of ``max_passes``
       clearings moves every floor above the tariff, so a cheaper step can never leave a
       floor offer unsold;
    3. a clearing that is not ok (infeasible, grid only) is dropped and the previous one
       kept: offering more never undoes a dispatch that was found.

    Parameters
    ----------
    plan : Plan
        The interval's planned orders.
    clear : Callable
        Clears a plan on the feeder: its order book and result.
    export_price : int
        The site's export tariff [token units / kWh].
    max_passes : int
        Clearings at most (>= 1).

    Returns
    -------
    SurplusClearing
        The last ok clearing (or the first one, when it is not ok) and the number of passes.
    """
    book, result = clear(plan)
    passes = 1
    while result.is_ok and passes < max_passes:
        accepted = result.accepted_wh
        nxt = export_steps(plan, accepted, export_price)
        if nxt is None:
            break
        if passes + 1 == max_passes:
            nxt = export_steps(plan, accepted, export_price, every_floor=True) or nxt
        next_book, next_result = clear(nxt)
        passes += 1
        if not next_result.is_ok:
            break
        plan, book, result = nxt, next_book, next_result
    return SurplusClearing(plan=plan, book=book, result=result, passes=passes)


VM_BOUND_TOLERANCE_PU = 0.002
"""A voltage this close to its band edge [p.u.] counts as at its bound in a reason."""

LOADING_BOUND_PERCENT = 99.0
"""A branch loaded this much [%] counts as at its thermal limit in a reason."""


def describe_network(result: ClearingResult, vm_min_pu: float, vm_max_pu: float) -> str:
    """The AC check of a dispatch in words, naming the limits at their bound.

    Parameters
    ----------
    result : ClearingResult
        The clearing acted on (its AC check, if any).
    vm_min_pu, vm_max_pu : float
        The site's voltage band [p.u.].

    Returns
    -------
    str
        E.g. ``"voltage at the 1.03 p.u. ceiling (AC 0.981-1.030 p.u.); max loading 41.2 %"``.
    """
    check = result.check
    if check is None:
        return "no AC check"
    loading = max(check.max_line_loading_percent, check.max_trafo_loading_percent)
    at_bound: list[str] = []
    if check.max_vm_pu >= vm_max_pu - VM_BOUND_TOLERANCE_PU:
        at_bound.append(f"voltage at the {vm_max_pu:g} p.u. ceiling")
    if check.min_vm_pu <= vm_min_pu + VM_BOUND_TOLERANCE_PU:
        at_bound.append(f"voltage at the {vm_min_pu:g} p.u. floor")
    if loading >= LOADING_BOUND_PERCENT:
        at_bound.append("a branch at its thermal limit")
    head = ", ".join(at_bound) if at_bound else "no voltage or thermal limit at its bound"
    return (
        f"{head} (AC {check.min_vm_pu:.3f}-{check.max_vm_pu:.3f} p.u., band "
        f"{vm_min_pu:g}-{vm_max_pu:g}); max loading {loading:.1f} %"
    )


def setpoints_for(
    interval: Interval,
    plan: Plan,
    accepted_wh: Mapping[OrderId, int],
    devices: tuple[DeviceConfig, ...],
    *,
    acted: bool = True,
    prices: Mapping[BusId, int] | None = None,
    export_price: int | None = None,
    network: str = "",
) -> tuple[Setpoint, ...]:
    """Setpoints that make devices deliver what cleared.

    With ``acted=False`` (the grid-only fallback: no market decision was taken) every PV
    inverter runs free at its rating and batteries idle: surplus goes to the grid at the export
    tariff through imbalance settlement, nothing is curtailed on the market's account.

    * PV: curtailed by the surplus that did not sell (``offered - accepted`` of its
      ``sell_surplus`` offers and export steps, as average power) below its forecast
      production; 100 % of its rating when all sold or nothing was offered. A curtailed
      inverter's setpoint carries the reason: each unsold offer (bus, Wh, limit, the bus's
      nodal price) and why it did not sell: at or below the export tariff the grid would have
      bought it, so the network could not take it (``network`` describes the AC check);
      above the tariff, its floor was not met.
    * Battery: ``(discharge accepted - charge accepted) / hours`` [W], 0 when nothing cleared.

    A PV inverter without a forecast keeps its rating (nothing is curtailed blindly). Meters
    get no setpoint.

    Parameters
    ----------
    interval : Interval
        The interval the setpoints hold for.
    plan : Plan
        The interval's planned orders and device forecasts [W].
    accepted_wh : Mapping of OrderId to int
        Energy accepted per order by the clearing [Wh].
    devices : tuple of DeviceConfig
        Every device of the site (``rated_w`` [W]).
    acted : bool
        Whether the market's decision is acted on; ``False`` for the grid-only fallback.
    prices : Mapping of BusId to int or None
        Nodal price per bus [token units / kWh], for the reasons.
    export_price : int or None
        The export tariff [token units / kWh], for the reasons.
    network : str
        The dispatch's AC check in words (:func:`describe_network`), for the reasons.

    Returns
    -------
    tuple of Setpoint
        One per PV inverter (``PV_LIMIT`` [W], at most its rating; ``reason`` when it is held
        below its forecast) and per battery (``BATTERY`` [W], + = discharge), in site-file
        order.
    """
    hours = interval.hours
    if not acted:
        plan = Plan(orders=(), forecast_w=plan.forecast_w, skipped=plan.skipped)
    by_id = {d.id: d for d in devices}
    pv_cut_w: dict[DeviceId, float] = {}
    pv_why: dict[DeviceId, list[str]] = {}
    battery_w: dict[DeviceId, float] = {d.id: 0.0 for d in devices if d.kind is DeviceKind.BATTERY}
    surplus = {PlannedKind.SELL_SURPLUS, PlannedKind.SURPLUS_EXPORT}
    for po in plan.orders:
        if po.device is None:
            continue
        accepted = accepted_wh.get(po.order.order_id, 0)
        if po.kind in surplus:
            unsold = po.order.energy_wh - accepted
            pv_cut_w[po.device] = pv_cut_w.get(po.device, 0.0) + unsold / hours
            if unsold > 0:
                pv_why.setdefault(po.device, []).append(
                    _unsold_reason(po, unsold, prices or {}, export_price)
                )
        elif po.kind is PlannedKind.BATTERY_DISCHARGE:
            battery_w[po.device] += accepted / hours
        elif po.kind is PlannedKind.BATTERY_CHARGE:
            battery_w[po.device] -= accepted / hours
    out: list[Setpoint] = []
    for d in devices:
        if d.kind is DeviceKind.PV:
            limit = float(d.rated_w)
            reason = ""
            forecast = 0.0
            if d.id in pv_cut_w and d.id in plan.forecast_w and pv_cut_w[d.id] > 0:
                production = forecast = -plan.forecast_w[d.id]
                limit = max(production - pv_cut_w[d.id], 0.0)
                reason = (
                    f"curtailed to {round_half_even(limit)} W of {round_half_even(production)} "
                    f"W forecast: {'; '.join(pv_why.get(d.id, []))}"
                    + (f"; network: {network}" if network else "")
                )
            out.append(
                Setpoint(
                    device_id=d.id,
                    interval=interval,
                    kind=SetpointKind.PV_LIMIT,
                    p_w=W(min(round_half_even(limit), d.rated_w)),
                    reason=reason,
                    forecast_w=W(round_half_even(forecast)),
                )
            )
        elif d.kind is DeviceKind.BATTERY and d.id in by_id:
            out.append(
                Setpoint(
                    device_id=d.id,
                    interval=interval,
                    kind=SetpointKind.BATTERY,
                    p_w=W(round_half_even(battery_w[d.id])),
                )
            )
    return tuple(out)


def _unsold_reason(
    po: PlannedOrder, unsold: int, prices: Mapping[BusId, int], export_price: int | None
) -> str:
    """Why ``unsold`` Wh of a surplus offer did not sell, in words."""
    o = po.order
    price = prices.get(o.bus)
    at = f"nodal price there {price}" if price is not None else "no nodal price"
    head = (
        f"{o.order_id} at {o.bus}: {unsold} of {o.energy_wh} Wh unsold at {o.limit_price} "
        f"per kWh ({at})"
    )
    if export_price is None:
        return head
    if o.limit_price <= export_price:
        return (
            f"{head}: the grid buys at the export tariff {export_price}, so the network "
            "could not take more there (a voltage, thermal or upstream limit, or losses)"
        )
    return f"{head}: its floor is above the export tariff {export_price} and was not met"


__all__ = [
    "MAX_SURPLUS_PASSES",
    "Forecaster",
    "Plan",
    "PlannedKind",
    "PlannedOrder",
    "SurplusClearing",
    "cap_by_credit",
    "clear_with_export_steps",
    "describe_network",
    "export_steps",
    "plan_orders",
    "setpoints_for",
]
