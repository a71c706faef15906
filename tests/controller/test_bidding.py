"""Standing orders -> orders, and cleared results -> setpoints."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from controller.bidding import PlannedKind, plan_orders, setpoints_for
from controller.config import DeviceConfig, DeviceKind, OrderKind, ParticipantConfig, StandingOrder
from market.domain import Interval, MeterReading, MeterRole, ReadingQuality, SetpointKind, Side

IV = Interval(datetime(2026, 6, 21, 12, tzinfo=UTC))
NOW = IV.start


def reading(
    device: str, p_w: int, quality: ReadingQuality = ReadingQuality.OK, soc: float | None = None
) -> MeterReading:
    return MeterReading(
        device_id=device,
        participant="p",
        bus="Bus R11",
        measured_at=NOW,
        p_w=p_w,
        import_wh_total=0,
        export_wh_total=0,
        quality=quality,
        soc_percent=soc,
    )


def participant(*orders: StandingOrder) -> ParticipantConfig:
    return ParticipantConfig(id="p", bus="Bus R11", account="derive", deposit=0, orders=orders)


PV = DeviceConfig(
    id="pv", participant="p", kind=DeviceKind.PV, host="h", port=1, unit=1, map="m", rated_w=8000
)
METER = DeviceConfig(  # a household load meter beside the PV inverter
    id="meter",
    participant="p",
    kind=DeviceKind.METER,
    host="h",
    port=2,
    unit=1,
    map="m",
    role=MeterRole.LOAD,
)
NET_METER = DeviceConfig(  # a net meter at the connection point: PV and load behind it
    id="net", participant="p", kind=DeviceKind.METER, host="h", port=4, unit=1, map="m"
)
BAT = DeviceConfig(
    id="bat",
    participant="p",
    kind=DeviceKind.BATTERY,
    host="h",
    port=3,
    unit=1,
    map="m",
    rated_w=4000,
    capacity_wh=10_000,
)


def test_surplus_becomes_an_offer_and_unsold_surplus_is_curtailed() -> None:
    p = participant(
        StandingOrder(kind=OrderKind.SELL_SURPLUS, price=90_000),
        StandingOrder(kind=OrderKind.BUY_DEMAND, price=300_000),
    )
    plan = plan_orders(
        IV, (p,), (PV, METER), {"pv": reading("pv", -6000), "meter": reading("meter", 2000)}
    )
    [po] = plan.orders
    assert po.order.side is Side.SELL
    assert po.order.energy_wh == 1000  # 4 kW net export for 15 min
    assert po.order.limit_price == 90_000
    sps = setpoints_for(IV, plan, {po.order.order_id: 600}, (PV, METER))
    [sp] = sps
    assert sp.kind is SetpointKind.PV_LIMIT
    # 400 Wh unsold over 0.25 h = 1.6 kW less than the 6 kW forecast
    assert sp.p_w == 4400
    full = setpoints_for(IV, plan, {po.order.order_id: 1000}, (PV, METER))
    assert full[0].p_w == 8000


def test_demand_becomes_a_bid() -> None:
    p = participant(
        StandingOrder(kind=OrderKind.SELL_SURPLUS, price=90_000),
        StandingOrder(kind=OrderKind.BUY_DEMAND, price=300_000),
    )
    plan = plan_orders(
        IV, (p,), (PV, METER), {"pv": reading("pv", -1000), "meter": reading("meter", 3000)}
    )
    [po] = plan.orders
    assert po.order.side is Side.BUY
    assert po.order.energy_wh == 500


def test_missing_reading_skips_forecast_orders_but_not_fixed_ones() -> None:
    p = participant(
        StandingOrder(kind=OrderKind.BUY_DEMAND, price=300_000),
        StandingOrder(kind=OrderKind.BUY, price=250_000, energy_wh=700),
    )
    plan = plan_orders(IV, (p,), (METER,), {"meter": reading("meter", 0, ReadingQuality.MISSING)})
    assert [po.order.energy_wh for po in plan.orders] == [700]
    assert plan.skipped
    assert "meter" in plan.skipped[0]


def test_battery_orders_respect_soc_window_and_setpoint_sign() -> None:
    p = participant(
        StandingOrder(
            kind=OrderKind.BATTERY,
            price=120_000,
            discharge_price=280_000,
            min_soc_percent=10,
            max_soc_percent=90,
        )
    )
    plan = plan_orders(IV, (p,), (BAT,), {"bat": reading("bat", 0, soc=85.0)})
    by_kind = {po.kind: po.order for po in plan.orders}
    assert by_kind[PlannedKind.BATTERY_CHARGE].energy_wh == 500  # 5 % of 10 kWh room
    assert by_kind[PlannedKind.BATTERY_DISCHARGE].energy_wh == 1000  # 4 kW for 15 min
    sps = setpoints_for(IV, plan, {by_kind[PlannedKind.BATTERY_DISCHARGE].order_id: 800}, (BAT,))
    assert sps[0].kind is SetpointKind.BATTERY
    assert sps[0].p_w == 3200  # positive = discharge
    sps = setpoints_for(IV, plan, {by_kind[PlannedKind.BATTERY_CHARGE].order_id: 500}, (BAT,))
    assert sps[0].p_w == -2000


def test_battery_orders_never_ask_more_than_the_rated_power() -> None:
    """Short (development) intervals: 5,000 W for 30 s is 41.67 Wh; 42 Wh would be 5,040 W."""
    p = participant(
        StandingOrder(
            kind=OrderKind.BATTERY,
            price=1,
            discharge_price=2,
            min_soc_percent=10,
            max_soc_percent=90,
        )
    )
    bat = dataclasses.replace(BAT, rated_w=5000)
    for length_s in (30, 60, 7, 900):
        iv = Interval(datetime(2026, 6, 21, 12, tzinfo=UTC), length_s)
        plan = plan_orders(iv, (p,), (bat,), {"bat": reading("bat", 0, soc=50.0)})
        accepted = {po.order.order_id: po.order.energy_wh for po in plan.orders}
        for po in plan.orders:
            sps = setpoints_for(iv, plan, {po.order.order_id: accepted[po.order.order_id]}, (bat,))
            assert abs(sps[0].p_w) <= bat.rated_w, (length_s, po.kind, sps[0].p_w)
    assert {po.order.energy_wh for po in plan.orders} == {1250}  # 15 min: exact, unchanged


def test_order_ids_are_deterministic() -> None:
    p = participant(StandingOrder(kind=OrderKind.BUY, price=1, energy_wh=5))
    a = plan_orders(IV, (p,), (), {})
    b = plan_orders(IV, (p,), (), {})
    assert a.orders == b.orders
    assert a.orders[0].order.order_id == f"p:{IV.interval_id}:buy:0"


def test_inflexible_demand_bids_at_least_the_import_tariff() -> None:
    cheap = participant(StandingOrder(kind=OrderKind.BUY_DEMAND, price=250_000))
    dear = participant(StandingOrder(kind=OrderKind.BUY_DEMAND, price=350_000))
    readings = {"meter": reading("meter", 2000)}
    low = plan_orders(IV, (cheap,), (METER,), readings, import_price=300_000)
    high = plan_orders(IV, (dear,), (METER,), readings, import_price=300_000)
    assert low.orders[0].order.limit_price == 300_000
    assert high.orders[0].order.limit_price == 350_000


def test_bids_are_capped_by_free_escrow_dearest_first() -> None:
    from controller.bidding import cap_by_credit

    p = participant(
        StandingOrder(kind=OrderKind.BUY, price=400_000, energy_wh=1000),
        StandingOrder(kind=OrderKind.BUY, price=300_000, energy_wh=1000),
        StandingOrder(kind=OrderKind.SELL, price=50_000, energy_wh=500),
    )
    plan = plan_orders(IV, (p,), (), {})
    # 400k * 1 kWh = 400_000 units for the dear bid; 200_000 left buys 666 Wh at 300k
    capped = cap_by_credit(plan, {"p": 600_000})
    energy = {po.order.limit_price: po.order.energy_wh for po in capped.orders}
    assert energy == {400_000: 1000, 300_000: 666, 50_000: 500}
    assert any("cut from 1000 to 666 Wh" in note for note in capped.skipped)
    broke = cap_by_credit(plan, {"p": 0})
    assert [po.order.side.value for po in broke.orders] == ["sell"]  # offers are never capped
    assert cap_by_credit(plan, {}).orders == plan.orders


def test_a_net_meter_plus_pv_forecasts_the_net_once() -> None:
    """Behind a connection-point meter the PV is already netted: counting it again would
    offer 1.5 kWh where the participant exports only 4 kW - 2 kW = 2 kW (500 Wh)."""
    assert NET_METER.role is MeterRole.CONNECTION_POINT
    assert PV.role is MeterRole.GENERATION  # a PV built without a role is never the net meter
    p = participant(StandingOrder(kind=OrderKind.SELL_SURPLUS, price=90_000))
    readings = {"pv": reading("pv", -6000), "net": reading("net", -2000)}
    [po] = plan_orders(IV, (p,), (PV, NET_METER), readings).orders
    assert po.order.side is Side.SELL
    assert po.order.energy_wh == 500
    # the same devices with the meter declared a load meter sum both (the old rule)
    load_meter = dataclasses.replace(NET_METER, role=MeterRole.LOAD)
    [summed] = plan_orders(IV, (p,), (PV, load_meter), readings).orders
    assert summed.order.energy_wh == 2000


def test_a_floor_at_or_below_the_export_tariff_is_one_offer_and_never_a_step() -> None:
    """The grid already takes it at the tariff: a second offer would count it twice."""
    from controller.bidding import export_steps

    p = participant(StandingOrder(kind=OrderKind.SELL_SURPLUS, price=60_000))
    plan = plan_orders(IV, (p,), (PV,), {"pv": reading("pv", -4000)})
    [po] = plan.orders
    assert (po.order.energy_wh, po.order.limit_price) == (1000, 60_000)
    assert export_steps(plan, {}, 80_000) is None  # unsold, but below the tariff: no step
    assert export_steps(plan, {}, 80_000, every_floor=True) is None


def test_unsold_surplus_above_the_tariff_becomes_an_export_step_of_the_whole_surplus() -> None:
    from controller.bidding import export_steps

    p = participant(
        StandingOrder(kind=OrderKind.SELL_SURPLUS, price=120_000),
        StandingOrder(kind=OrderKind.BUY, price=300_000, energy_wh=200),
    )
    plan = plan_orders(IV, (p,), (PV,), {"pv": reading("pv", -4000)})
    floor, fixed = plan.orders
    moved = export_steps(plan, {floor.order.order_id: 300}, 80_000)
    assert moved is not None
    step, kept = moved.orders
    assert kept == fixed
    assert step.kind is PlannedKind.SURPLUS_EXPORT
    assert step.device == floor.device == "pv"
    assert step.order.order_id == f"{floor.order.order_id}:export"
    assert (step.order.participant, step.order.bus) == (floor.order.participant, floor.order.bus)
    assert step.order.side is Side.SELL
    assert step.order.energy_wh == floor.order.energy_wh == 1000  # the whole surplus, once
    assert step.order.limit_price == 80_000
    assert any("700 of 1000 Wh unsold at the floor 120000" in n for n in moved.skipped)
    # a floor the local market took whole keeps its floor, unless every floor must move
    assert export_steps(plan, {floor.order.order_id: 1000}, 80_000) is None
    every = export_steps(plan, {floor.order.order_id: 1000}, 80_000, every_floor=True)
    assert every is not None
    assert every.orders[0].order.limit_price == 80_000


def test_a_curtailed_inverter_says_why() -> None:
    from controller.bidding import export_steps

    p = participant(StandingOrder(kind=OrderKind.SELL_SURPLUS, price=120_000))
    plan = plan_orders(IV, (p,), (PV,), {"pv": reading("pv", -6000)})
    moved = export_steps(plan, {}, 80_000)
    assert moved is not None
    [step] = moved.orders
    network = "voltage at the 1.02 p.u. ceiling (AC 0.98-1.02 p.u.)"
    [sp] = setpoints_for(
        IV,
        moved,
        {step.order.order_id: 1000},
        (PV,),
        prices={"Bus R11": 80_000},
        export_price=80_000,
        network=network,
    )
    assert sp.p_w == 4000  # 500 Wh unsold over 0.25 h = 2 kW below the 6 kW forecast
    assert sp.reason.startswith("curtailed to 4000 W of 6000 W forecast: ")
    assert f"{step.order.order_id} at Bus R11: 500 of 1500 Wh unsold at 80000" in sp.reason
    assert "nodal price there 80000" in sp.reason
    assert "network could not take more there" in sp.reason
    assert sp.reason.endswith(f"network: {network}")
    [free] = setpoints_for(IV, moved, {step.order.order_id: 1500}, (PV,), export_price=80_000)
    assert (free.p_w, free.reason) == (8000, "")
    # a floor above the tariff left unsold (no step was cleared) says its floor was not met
    [floor_sp] = setpoints_for(IV, plan, {}, (PV,), export_price=80_000)
    assert "floor is above the export tariff 80000 and was not met" in floor_sp.reason
