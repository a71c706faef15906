"""Standing orders + readings/forecast -> each interval's orders, and results -> setpoints (pure).

Forecast: a :class:`Forecaster` gives each device's expected average power over the interval
[W, GRID sign: + = consumption, - = production]. Without one (or where it has no figure) the
latest reading's ``p_w`` is used (persistence). A device whose reading is MISSING and that has
no forecast makes its participant's derived orders skip this interval, with a reason; fixed
``buy``/``sell`` orders need no forecast.

Energy rounding: forecast power [W] -> energy [Wh] goes through
:func:`market.units.power_to_energy_wh` (the one rounding function).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from controller.config import DeviceConfig, DeviceKind, OrderKind, ParticipantConfig, StandingOrder
from market.clearing.pricing import demand_bid_price
from market.domain import (
    Bid,
    DeviceId,
    Interval,
    MeterReading,
    MeterRole,
    Offer,
    Order,
    OrderId,
    ParticipantId,
    ReadingQuality,
    Setpoint,
    SetpointKind,
)
from market.units import PricePerKwh, W, Wh, buyer_payment, power_to_energy_wh, round_half_even


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

    ``setpoints_for`` reads it: an unsold ``sell_surplus`` offer curtails its PV inverter,
    accepted ``battery_charge`` / ``battery_discharge`` energy sets its battery's power.
    """

    SELL_SURPLUS = "sell_surplus"
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

    Returns
    -------
    Plan
        Orders in a deterministic order with ids ``<participant>:<interval_id>:<kind>:<n>``
        (battery orders append ``:<device>:charge`` or ``:<device>:discharge``), the device
        forecasts used [W] and the skipped participants' reasons.
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
        for n, so in enumerate(p.orders):
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
        power_wh = power_to_energy_wh(bat.rated_w, interval.length_s)
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


def setpoints_for(
    interval: Interval,
    plan: Plan,
    accepted_wh: Mapping[OrderId, int],
    devices: tuple[DeviceConfig, ...],
    *,
    acted: bool = True,
) -> tuple[Setpoint, ...]:
    """Setpoints that make devices deliver what cleared.

    With ``acted=False`` (the grid-only fallback: no market decision was taken) every PV
    inverter runs free at its rating and batteries idle: surplus goes to the grid at the export
    tariff through imbalance settlement, nothing is curtailed on the market's account.

    * PV: curtailed by the surplus that did not sell (``offered - accepted``, as average power)
      below its forecast production; 100 % of its rating when all sold or nothing was offered.
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

    Returns
    -------
    tuple of Setpoint
        One per PV inverter (``PV_LIMIT`` [W], at most its rating) and per battery
        (``BATTERY`` [W], + = discharge), in site-file order.
    """
    hours = interval.hours
    if not acted:
        plan = Plan(orders=(), forecast_w=plan.forecast_w, skipped=plan.skipped)
    by_id = {d.id: d for d in devices}
    pv_cut_w: dict[DeviceId, float] = {}
    battery_w: dict[DeviceId, float] = {d.id: 0.0 for d in devices if d.kind is DeviceKind.BATTERY}
    for po in plan.orders:
        if po.device is None:
            continue
        accepted = accepted_wh.get(po.order.order_id, 0)
        if po.kind is PlannedKind.SELL_SURPLUS:
            unsold = po.order.energy_wh - accepted
            pv_cut_w[po.device] = pv_cut_w.get(po.device, 0.0) + unsold / hours
        elif po.kind is PlannedKind.BATTERY_DISCHARGE:
            battery_w[po.device] += accepted / hours
        elif po.kind is PlannedKind.BATTERY_CHARGE:
            battery_w[po.device] -= accepted / hours
    out: list[Setpoint] = []
    for d in devices:
        if d.kind is DeviceKind.PV:
            limit = float(d.rated_w)
            if d.id in pv_cut_w and d.id in plan.forecast_w and pv_cut_w[d.id] > 0:
                production = -plan.forecast_w[d.id]
                limit = max(production - pv_cut_w[d.id], 0.0)
            out.append(
                Setpoint(
                    device_id=d.id,
                    interval=interval,
                    kind=SetpointKind.PV_LIMIT,
                    p_w=W(min(round_half_even(limit), d.rated_w)),
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


__all__ = [
    "Forecaster",
    "Plan",
    "PlannedKind",
    "PlannedOrder",
    "cap_by_credit",
    "plan_orders",
    "setpoints_for",
]
