"""Unsold PV surplus is sold to GRID at the export tariff; only the network curtails it.

Issue 10, "Devices fail safe": a ``sell_surplus`` floor above the export tariff used to
curtail whatever the local market did not buy, on a feeder with no limit anywhere near. Here
the real clearing (LP + AC loop on CIGRE LV) runs through
:func:`controller.bidding.clear_with_export_steps` as the cycle runs it, and pandapower's AC
power flow cross-checks the curtailed dispatch; the last test runs the real cycle of the demo
(Modbus simulators, embedded chain) at midday.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pandapower as pp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.bidding import (
    Plan,
    PlannedKind,
    SurplusClearing,
    clear_with_export_steps,
    describe_network,
    plan_orders,
    setpoints_for,
)
from controller.config import DeviceConfig, DeviceKind, OrderKind, ParticipantConfig, StandingOrder
from controller.grid_clearing import clear_on_grid
from grid_models.grids import Grid, load_grid
from grid_models.linear import build_linear_grid
from market.clearing import ClearingOptions, empty_result
from market.domain import (
    COMMUNITY,
    GRID,
    ClearingResult,
    ClearingStatus,
    DeviceId,
    Interval,
    MeterReading,
    MeterRole,
    OrderBook,
    ReadingQuality,
    Setpoint,
    Side,
    Tariffs,
)
from market.orderbook import build_order_book
from market.settlement import settle
from market.units import seller_revenue

IV = Interval(datetime(2026, 6, 21, 12, tzinfo=UTC))
IMPORT, EXPORT = 300_000, 80_000
OPTIONS = ClearingOptions(import_price=IMPORT, export_price=EXPORT)
FAR_BUS = "Bus R18"  # the end of the residential feeder
SHOP_BUS = "Bus C12"  # the commercial feeder


def pv(pid: str, rated_w: int, port: int) -> DeviceConfig:
    return DeviceConfig(
        id=f"{pid}-pv",
        participant=pid,
        kind=DeviceKind.PV,
        host="h",
        port=port,
        unit=1,
        map="m",
        rated_w=rated_w,
    )


def load_meter(pid: str, port: int) -> DeviceConfig:
    return DeviceConfig(
        id=f"{pid}-meter",
        participant=pid,
        kind=DeviceKind.METER,
        host="h",
        port=port,
        unit=1,
        map="m",
        role=MeterRole.LOAD,
    )


def person(pid: str, bus: str, kind: OrderKind, price: int) -> ParticipantConfig:
    return ParticipantConfig(
        id=pid,
        bus=bus,
        account="derive",
        deposit=0,
        orders=(StandingOrder(kind=kind, price=price),),
    )


def reading(device: DeviceConfig, p_w: int) -> MeterReading:
    return MeterReading(
        device_id=device.id,
        participant=device.participant,
        bus="",
        measured_at=IV.start,
        p_w=p_w,
        import_wh_total=0,
        export_wh_total=0,
        quality=ReadingQuality.OK,
    )


def community(far_w: int) -> tuple[tuple[ParticipantConfig, ...], tuple[DeviceConfig, ...], Plan]:
    """PV at the residential feeder's end (``far_w`` [W]), at R11 and on the commercial feeder.

    Every floor is above the export tariff (the demo's trouble), and one household buys.
    """
    participants = (
        person("far", FAR_BUS, OrderKind.SELL_SURPLUS, 120_000),
        person("mid", "Bus R11", OrderKind.SELL_SURPLUS, 90_000),
        person("shop", SHOP_BUS, OrderKind.SELL_SURPLUS, 95_000),
        person("home", "Bus C13", OrderKind.BUY_DEMAND, 320_000),
    )
    devices = (
        pv("far", far_w, 1),
        pv("mid", 10_000, 2),
        pv("shop", 20_000, 3),
        load_meter("home", 4),
    )
    produced = {"far-pv": -far_w, "mid-pv": -8_000, "shop-pv": -15_000, "home-meter": 3_000}
    readings = {d.id: reading(d, produced[d.id]) for d in devices}
    plan = plan_orders(IV, participants, devices, readings, import_price=IMPORT)
    return participants, devices, plan


@pytest.fixture(scope="module")
def feeder() -> Grid:
    return load_grid("cigre-lv").scaled(load_scale=0.35)


def clear_plan(grid: Grid, plan: Plan, vm_max_pu: float, *, max_passes: int = 3) -> SurplusClearing:
    """Clear ``plan`` as :meth:`controller.cycle.Cycle._clear` does."""
    linear = build_linear_grid(grid, vm_min_pu=0.95, vm_max_pu=vm_max_pu)

    def clear(planned: Plan) -> tuple[OrderBook, ClearingResult]:
        book = build_order_book(IV, [po.order for po in planned.orders])
        return book, clear_on_grid(grid, linear, book, OPTIONS)

    return clear_with_export_steps(plan, clear, EXPORT, max_passes=max_passes)


def setpoints(
    final: SurplusClearing, devices: tuple[DeviceConfig, ...], vm_max_pu: float
) -> tuple[Setpoint, ...]:
    """The setpoints of a clearing, with their reasons, as the cycle derives them."""
    result = final.result
    return setpoints_for(
        IV,
        final.plan,
        result.accepted_wh,
        devices,
        acted=result.is_ok,
        prices=result.price_by_bus,
        export_price=EXPORT,
        network=describe_network(result, 0.95, vm_max_pu),
    )


def curtailed(sps: tuple[Setpoint, ...], plan: Plan) -> dict[DeviceId, int]:
    """PV held below its forecast production [W] per inverter (the check both tests use)."""
    out: dict[DeviceId, int] = {}
    for sp in sps:
        production = -plan.forecast_w.get(sp.device_id, 0.0)
        if sp.kind.value == "pv_limit" and sp.p_w < production - 1:
            out[sp.device_id] = round(production - sp.p_w)
    return out


def ac_max_vm(grid: Grid, injections_w: Mapping[str, float]) -> float:
    """pandapower's own AC power flow of the feeder plus these bus injections [W, + = export]."""
    net = copy.deepcopy(grid.net)
    for bus, w in injections_w.items():
        index = grid.bus_index(bus)
        if w >= 0:
            pp.create_sgen(net, index, p_mw=w / 1e6)
        else:
            pp.create_load(net, index, p_mw=-w / 1e6)
    pp.runpp(net, numba=False)
    return float(net.res_bus.vm_pu.max())


def dispatch_w(result: ClearingResult) -> dict[str, float]:
    """The cleared dispatch as average bus injections [W, + = export]."""
    out: dict[str, float] = {}
    for o in result.orders:
        sign = 1.0 if o.side is Side.SELL else -1.0
        out[o.bus] = out.get(o.bus, 0.0) + sign * o.accepted_wh / IV.hours
    return out


def test_unconstrained_interval_sells_the_surplus_to_grid_and_curtails_nothing(
    feeder: Grid,
) -> None:
    _, devices, plan = community(60_000)
    final = clear_plan(feeder, plan, 1.05)
    result = final.result
    assert result.status is ClearingStatus.CLEARED
    assert final.passes == 2  # the floors, then the unsold surplus at the export tariff
    assert result.check is not None
    assert result.check.ok
    assert result.check.max_vm_pu < 1.05 - 0.01  # nowhere near a limit
    sps = setpoints(final, devices, 1.05)
    assert curtailed(sps, plan) == {}
    assert all(sp.reason == "" for sp in sps)
    assert {sp.device_id: sp.p_w for sp in sps} == {d.id: d.rated_w for d in devices if d.rated_w}

    steps = [po for po in final.plan.orders if po.kind is PlannedKind.SURPLUS_EXPORT]
    assert {po.order.participant for po in steps} == {"far", "mid", "shop"}
    accepted = result.accepted_wh
    for po in steps:  # the whole surplus, once, at the tariff, and all of it accepted
        assert po.order.limit_price == EXPORT
        assert accepted[po.order.order_id] == po.order.energy_wh
    assert sum(po.order.energy_wh for po in steps) == 15_000 + 2_000 + 3_750

    # the trades: GRID buys at exactly the export tariff; sellers get at least the tariff
    to_grid = [t for t in result.trades if t.buyer == GRID]
    assert to_grid
    assert result.grid_export_wh == sum(t.energy_wh for t in to_grid) > 0
    assert {t.buyer_price for t in to_grid} == {EXPORT}
    # the export steps (and COMMUNITY, selling the losses the market saves) sell to GRID
    assert all(str(t.seller_order).endswith(":export") or t.seller == COMMUNITY for t in to_grid)
    assert any(str(t.seller_order).endswith(":export") for t in to_grid)
    by_order = {o.order_id: o for o in result.orders}
    for po in steps:
        o = by_order[po.order.order_id]
        assert o.price >= EXPORT
        assert o.amount >= seller_revenue(o.accepted_wh, EXPORT)

    # settlement, metered exactly as cleared: sellers credited, GRID debited, zero-sum
    start, end = metered_as_cleared(result, devices)
    batch = settle(result, start, end, Tariffs(import_price=IMPORT, export_price=EXPORT))
    amounts = dict(batch.amounts)
    assert sum(amounts.values()) == 0
    assert amounts[GRID] < 0
    for pid in ("far", "mid", "shop"):
        line = next(ln for ln in batch.lines if ln.participant == pid)
        assert line.imbalance_wh == 0
        assert amounts[pid] == line.trade_amount > 0


def test_the_unconstrained_check_catches_the_old_curtailment(feeder: Grid) -> None:
    """One clearing (the behaviour before issue 10) curtails, and the same check says so."""
    _, devices, plan = community(60_000)
    final = clear_plan(feeder, plan, 1.05, max_passes=1)
    cut = curtailed(setpoints(final, devices, 1.05), plan)
    assert set(cut) == {"far-pv", "mid-pv", "shop-pv"}
    assert sum(cut.values()) > 60_000  # all of far's 60 kW and more


def test_a_voltage_rise_limit_curtails_only_at_that_feeder_end(feeder: Grid) -> None:
    """150 kW at the end of the residential feeder with a 1.02 p.u. ceiling."""
    vm_max = 1.02
    _, devices, plan = community(150_000)
    final = clear_plan(feeder, plan, vm_max)
    result = final.result
    assert result.status is ClearingStatus.CLEARED
    sps = setpoints(final, devices, vm_max)
    cut = curtailed(sps, plan)
    assert set(cut) == {"far-pv"}  # the commercial feeder and R11 sell all they have
    assert 0 < cut["far-pv"] < 150_000
    far = next(sp for sp in sps if sp.device_id == "far-pv")
    assert "far:" in far.reason
    assert ":export at Bus R18" in far.reason
    assert f"the grid buys at the export tariff {EXPORT}" in far.reason
    assert "voltage at the 1.02 p.u. ceiling" in far.reason
    assert all(sp.reason == "" for sp in sps if sp.device_id != "far-pv")
    assert result.price_by_bus[FAR_BUS] == EXPORT  # the step is marginal where the limit binds
    assert result.accepted_wh[next(o.order_id for o in result.orders if o.bus == SHOP_BUS)] > 0

    # pandapower's AC power flow, outside PeerGrid's loop: the curtailed dispatch holds the
    # ceiling, the whole surplus would not (so the limit really binds)
    assert result.check is not None
    assert result.check.ok
    assert ac_max_vm(feeder, dispatch_w(result)) <= vm_max + 0.001
    uncurtailed = dispatch_w(result)
    uncurtailed[FAR_BUS] += cut["far-pv"]
    assert ac_max_vm(feeder, uncurtailed) > vm_max + 0.001


def test_a_failed_second_clearing_keeps_the_first_dispatch(feeder: Grid) -> None:
    """Offering more never undoes a dispatch: a pass that is not ok is dropped."""
    _, _, plan = community(60_000)
    linear = build_linear_grid(feeder)
    calls: list[int] = []

    def clear(planned: Plan) -> tuple[OrderBook, ClearingResult]:
        calls.append(len(planned.orders))
        book = build_order_book(IV, [po.order for po in planned.orders])
        if len(calls) == 2:
            return book, empty_result(book, ClearingStatus.INFEASIBLE, "injected failure")
        return book, clear_on_grid(feeder, linear, book, OPTIONS)

    final = clear_with_export_steps(plan, clear, EXPORT)
    assert len(calls) == 2
    assert final.passes == 2
    assert final.plan is plan  # the first clearing's plan, book and result stand
    assert final.result.is_ok
    assert all(po.kind is not PlannedKind.SURPLUS_EXPORT for po in final.plan.orders)


def metered_as_cleared(
    result: ClearingResult, devices: tuple[DeviceConfig, ...]
) -> tuple[dict[DeviceId, MeterReading], dict[DeviceId, MeterReading]]:
    """Counter snapshots in which every participant delivers exactly what cleared."""
    net: dict[str, int] = {}
    for o in result.orders:
        net[o.participant] = net.get(o.participant, 0) + (
            o.accepted_wh if o.side is Side.SELL else -o.accepted_wh
        )
    start: dict[DeviceId, MeterReading] = {}
    end: dict[DeviceId, MeterReading] = {}
    for d in devices:
        wh = net.get(d.participant, 0)
        base = reading(d, 0)
        start[d.id] = base
        end[d.id] = MeterReading(
            device_id=d.id,
            participant=d.participant,
            bus="",
            measured_at=IV.end,
            p_w=0,
            import_wh_total=max(-wh, 0),
            export_wh_total=max(wh, 0),
            quality=ReadingQuality.OK,
        )
    return start, end


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_the_demo_cycle_at_midday_curtails_nothing_and_grid_pays_the_tariff(
    tmp_path: Path,
) -> None:
    """The real cycle (simulators, embedded chain) at 10:30, when the feeder exports."""
    from controller.demo import demo_runtime

    with demo_runtime(tmp_path, start=datetime(2026, 6, 21, 10, 30, tzinfo=UTC)) as rt:
        first = rt.tick(0)
        cleared = first.cleared
        assert cleared is not None
        assert cleared.result.status is ClearingStatus.CLEARED
        pv_sps = [sp for sp in cleared.setpoints if sp.kind.value == "pv_limit"]
        rated = {d.id: d.rated_w for d in rt.site.devices if d.kind is DeviceKind.PV}
        assert {sp.device_id: sp.p_w for sp in pv_sps} == rated  # nothing curtailed
        assert all(sp.reason == "" for sp in pv_sps)
        steps = [o for o in cleared.book.offers if o.order_id.endswith(":export")]
        assert steps
        assert all(o.limit_price == rt.site.export_price for o in steps)
        assert cleared.result.grid_export_wh > 0
        to_grid = [t for t in cleared.result.trades if t.buyer == GRID]
        assert {t.buyer_price for t in to_grid} == {rt.site.export_price}
        stored = rt.store.result(cleared.interval.interval_id)
        assert stored is not None
        assert stored["curtailed"] == {}

        second = rt.tick(1, clear_next=False)
        settled = second.settled
        assert settled is not None
        assert settled.outcome is not None
        assert settled.batch is not None
        amounts = dict(settled.batch.amounts)
        assert amounts[GRID] < 0  # GRID paid for the exported surplus (net of imbalance)
        sellers = {o.participant for o in steps}
        assert all(amounts[p] > 0 for p in sellers)
        assert rt.conservation()["holds"]
        assert rt.verify()["problems"] == []


BUSES = ("Bus R11", "Bus R15", "Bus R18", "Bus I2", "Bus C12", "Bus C17")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sellers=st.lists(
        st.tuples(
            st.sampled_from(BUSES),
            st.integers(1_000, 20_000),  # forecast production [W]
            st.sampled_from([0, 60_000, 80_000, 85_000, 120_000, 250_000]),  # floor
        ),
        min_size=1,
        max_size=5,
    ),
    demand_w=st.integers(0, 30_000),
)
def test_surplus_is_offered_once_and_never_curtailed_on_an_open_feeder(
    feeder: Grid, sellers: list[tuple[str, int, int]], demand_w: int
) -> None:
    """Random floors around the tariff, PV up to 20 kW a bus, a 0.95-1.05 band: whatever the
    floors, every participant's surplus is offered once in the final book (never twice),
    nothing is curtailed, and GRID pays exactly the tariff for what it buys."""
    participants = [
        person(f"s{i}", bus, OrderKind.SELL_SURPLUS, floor)
        for i, (bus, _, floor) in enumerate(sellers)
    ]
    devices = [pv(f"s{i}", w, i + 1) for i, (_, w, _) in enumerate(sellers)]
    produced = {f"s{i}-pv": -w for i, (_, w, _) in enumerate(sellers)}
    if demand_w:
        participants.append(person("home", "Bus C13", OrderKind.BUY_DEMAND, 320_000))
        devices.append(load_meter("home", 99))
        produced["home-meter"] = demand_w
    readings = {d.id: reading(d, produced[d.id]) for d in devices}
    plan = plan_orders(IV, tuple(participants), tuple(devices), readings, import_price=IMPORT)
    final = clear_plan(feeder, plan, 1.05)
    result = final.result
    assert result.is_ok
    surplus = {po.order.participant: po.order.energy_wh for po in plan.orders if po.device}
    offered: dict[str, int] = {}
    for po in final.plan.orders:
        if po.kind in {PlannedKind.SELL_SURPLUS, PlannedKind.SURPLUS_EXPORT}:
            offered[po.order.participant] = offered.get(po.order.participant, 0) + (
                po.order.energy_wh
            )
            assert po.order.limit_price <= EXPORT or result.accepted_wh[po.order.order_id] == (
                po.order.energy_wh
            )  # a floor above the tariff survives only where the local market took it whole
    assert offered == surplus
    sps = setpoints(final, tuple(devices), 1.05)
    assert curtailed(sps, plan) == {}
    assert {t.buyer_price for t in result.trades if t.buyer == GRID} <= {EXPORT}
