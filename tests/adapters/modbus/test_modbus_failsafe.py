"""Devices fail safe: revert timers carried by every setpoint, backoff of a dead device's
writes, and a battery that reports its capacity and power.

Everything runs over real Modbus TCP on 127.0.0.1 against the project's simulators. The
revert timers are the simulator's own clock: injected (a :class:`FakeClock`) where a test
needs exact times, the real monotonic clock in the end-to-end tests, which only poll with a
generous deadline and never assume how fast the machine is.
"""

from __future__ import annotations

import json
import socket
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.modbus.client import ModbusTkClient
from adapters.modbus.errors import DeviceUnavailable
from adapters.modbus.mapfiles import load_register_map, parse_register_map
from adapters.modbus.reading import Backoff, fetch_fields
from adapters.modbus.regmap import Target
from adapters.modbus.simulators import BatterySim, PVInverterSim, SimFault, constant_profile
from adapters.modbus.simulators.base import DeviceSimulator
from adapters.modbus.writing import DeviceWriter, WriteResult
from controller.config import parse_site
from controller.wiring import REVERT_INTERVALS, build_devices
from market.domain import DeviceId, Interval, Setpoint, SetpointKind

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T0 = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)
TICK = timedelta(minutes=15)
PV_MAPS = ("sunspec_inverter", "sunspec_der_inverter")
BATTERY_MAPS = ("battery", "sunspec_der_storage", "sunspec_storage")
WAIT_S = 60.0
"""Generous deadline [s] of the end-to-end waits (they poll; a fast machine is done in ~2 s)."""


class FakeClock:
    """A device clock that moves only when told to [s]."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingClient:
    """A real :class:`ModbusTkClient`, with every request and every failed one counted.

    Each failed request costs one client timeout (its retries included), so ``failures`` is
    the number of timeouts a caller paid.
    """

    def __init__(self, client: ModbusTkClient) -> None:
        self.client = client
        self.requests = 0
        self.failures = 0

    def _count(self, call: Callable[[], object]) -> object:
        self.requests += 1
        try:
            return call()
        except DeviceUnavailable:
            self.failures += 1
            raise

    def read_registers(self, table: str, address: int, count: int) -> list[int]:
        out = self._count(lambda: self.client.read_registers(table, address, count))
        assert isinstance(out, list)
        return out

    def write_registers(self, address: int, values: Sequence[int]) -> None:
        self._count(lambda: self.client.write_registers(address, values))

    def close(self) -> None:
        self.client.close()


def client_of(port: int, *, timeout_s: float = 0.5, retries: int = 1) -> ModbusTkClient:
    return ModbusTkClient("127.0.0.1", port, 1, timeout_s=timeout_s, retries=retries)


def pv_limit(p_w: int, interval: Interval | None = None) -> Setpoint:
    return Setpoint(
        device_id=DeviceId("pv"),
        interval=interval or Interval(T0),
        kind=SetpointKind.PV_LIMIT,
        p_w=p_w,
    )


def battery(p_w: int, interval: Interval | None = None) -> Setpoint:
    return Setpoint(
        device_id=DeviceId("bat"),
        interval=interval or Interval(T0),
        kind=SetpointKind.BATTERY,
        p_w=p_w,
    )


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout_s`` [s] passed (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pv_sim(no_leaks, clock, request) -> Iterator[PVInverterSim]:
    register_map = getattr(request, "param", "sunspec_inverter")
    sim = PVInverterSim(
        5000, constant_profile(4000), register_map=register_map, start_at=T0, revert_clock=clock
    )
    with sim:
        yield sim


def pv_writer(sim: DeviceSimulator, client, revert_s: float | None = 60.0) -> DeviceWriter:
    return DeviceWriter(DeviceId("pv"), client, sim.register_map, rated_w=5000, revert_s=revert_s)


# ---------------------------------------------------------------------------- PV limit revert


@pytest.mark.parametrize("pv_sim", PV_MAPS, indirect=True)
def test_a_pv_limit_carries_its_revert_timer_and_reverts_when_not_refreshed(pv_sim, clock):
    with client_of(pv_sim.port) as client:
        result = pv_writer(pv_sim, client, revert_s=60).write(pv_limit(2000))
        assert result.ok, result.reason
        assert result.revert_s == 60
        names = [name for name, _ in result.written]
        timer = pv_sim.register_map.for_target(Target.W_MAX_LIM_RVRT_S).name
        pct = pv_sim.register_map.for_target(Target.W_MAX_LIM_PCT).name
        assert names.index(timer) < names.index(pct)  # the timer is armed before the limit
        assert dict(result.readback)[timer] == 60
        assert pv_sim.limit_w == pytest.approx(2000)
        clock.now += 59.9
        assert pv_sim.limit_w == pytest.approx(2000)
        clock.now += 0.1
        # What a client reads: the device ran its timer out before answering.
        values = fetch_fields(client, pv_sim.register_map, [pct])
        assert values[pct] == 100.0
        assert pv_sim.limit_w == pytest.approx(5000)
        assert pv_sim.revert_timers[0].reverts == 1
        pv_sim.advance(T0 + timedelta(hours=1))
        assert pv_sim.p_w == pytest.approx(4000)  # producing freely again


@pytest.mark.parametrize("pv_sim", PV_MAPS, indirect=True)
def test_refreshing_every_tick_keeps_the_limit(pv_sim, clock):
    with client_of(pv_sim.port) as client:
        writer = pv_writer(pv_sim, client, revert_s=60)
        interval = Interval(T0)
        for _ in range(10):  # ten ticks, each 50 s after the last: always within the 60 s
            assert writer.write(pv_limit(1500, interval)).ok
            clock.now += 50
            assert pv_sim.limit_w == pytest.approx(1500)
            interval = interval.next()
        assert pv_sim.revert_timers[0].reverts == 0
        clock.now += 10  # 60 s after the last write: the controller has stopped
        assert pv_sim.limit_w == pytest.approx(5000)


def test_without_a_revert_time_the_device_holds_the_limit(pv_sim, clock):
    """The harness can fail: a writer that carries no timer leaves the limit forever."""
    with client_of(pv_sim.port) as client:
        result = pv_writer(pv_sim, client, revert_s=None).write(pv_limit(1000))
        assert result.ok
        assert result.revert_s is None
        clock.now += 10**6
        assert pv_sim.limit_w == pytest.approx(1000)
        assert pv_sim.revert_timers[0].reverts == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    revert_s=st.integers(1, 120),
    steps=st.lists(st.tuples(st.integers(0, 240), st.booleans()), min_size=1, max_size=8),
)
def test_the_limit_holds_exactly_while_refreshed_within_the_revert_time(revert_s, steps):
    """Property: after any pattern of writes and pauses, the limit is in force iff the last
    write is less than ``revert_s`` seconds old (the simulator as a real device, over TCP)."""
    clock = FakeClock()
    sim = PVInverterSim(5000, constant_profile(4000), start_at=T0, revert_clock=clock)
    with sim, client_of(sim.port) as client:
        writer = pv_writer(sim, client, revert_s=revert_s)
        assert writer.write(pv_limit(1000)).ok
        last_write = clock.now
        interval = Interval(T0)
        for gap_s, write in steps:
            clock.now += gap_s
            limited = clock.now - last_write < revert_s
            assert sim.limit_w == pytest.approx(1000 if limited else 5000)
            if write:
                interval = interval.next()
                assert writer.write(pv_limit(1000, interval)).ok
                last_write = clock.now


def test_a_revert_time_beyond_the_timer_field_is_written_as_its_maximum(pv_sim):
    with client_of(pv_sim.port) as client:
        result = pv_writer(pv_sim, client, revert_s=2 * 86400).write(pv_limit(1000))
    assert result.ok
    assert result.revert_s == 65534
    assert "revert time 172800 s is beyond 123.WMaxLimPct_RvrtTms max 65534 s" in result.reason


# ---------------------------------------------------------------------------- battery revert


@pytest.mark.parametrize("register_map", BATTERY_MAPS)
def test_a_battery_setpoint_reverts_to_idle_when_its_watchdog_runs_out(
    no_leaks, clock, register_map
):
    sim = BatterySim(10_000, 5000, 50, register_map=register_map, start_at=T0, revert_clock=clock)
    with sim, client_of(sim.port) as client:
        writer = DeviceWriter(DeviceId("bat"), client, sim.register_map, revert_s=1800)
        result = writer.write(battery(2000))
        assert result.ok, result.reason
        assert result.revert_s == 1800
        assert result.reason == ""
        assert sim.setpoint_w == pytest.approx(2000)
        clock.now += 1799
        assert sim.setpoint_w == pytest.approx(2000)
        clock.now += 1
        assert sim.setpoint_w == 0
        soc = sim.soc_percent
        sim.advance(T0 + timedelta(hours=1))
        assert sim.p_w == 0
        assert sim.soc_percent == soc  # idle: the battery did not move


def test_the_vendor_battery_map_documents_its_watchdog():
    rmap = load_register_map("battery")
    fld = rmap.for_target(Target.BATTERY_SETPOINT_RVRT_S)
    assert fld.name == "WatchdogTimeout"
    assert fld.writable
    assert "returns to 0 W" in fld.description
    assert "watchdog" in rmap.description.lower()


def test_a_map_without_a_revert_timer_still_writes_and_says_the_device_would_hold(
    no_leaks, clock, tmp_path
):
    data = json.loads(
        (Path(__file__).parents[3] / "adapters/modbus/registermaps/battery.json").read_text()
    )
    data["fields"] = [f for f in data["fields"] if f["name"] != "WatchdogTimeout"]
    data["name"] = "battery_without_watchdog"
    rmap = parse_register_map(data)
    sim = BatterySim(10_000, 5000, 50, register_map=rmap, start_at=T0, revert_clock=clock)
    with sim, client_of(sim.port) as client:
        result = DeviceWriter(DeviceId("bat"), client, rmap, revert_s=1800).write(battery(-1000))
    assert result.ok
    assert result.revert_s is None
    assert "no revert timer (battery_setpoint_rvrt_s)" in result.reason
    assert "holds this setpoint if the controller stops" in result.reason
    clock.now += 10**6
    assert sim.setpoint_w == pytest.approx(-1000)


# ---------------------------------------------------------------------------- end to end

SITE = """
[site]
grid = "cigre-lv"
database = "sqlite:///{db}"
interval_s = 900

[[participants]]
id = "alice"
bus = "Bus R11"

[[devices]]
id = "alice-pv"
participant = "alice"
kind = "pv"
port = {pv_port}
map = "sunspec_inverter"
rated_w = 5000

[[devices]]
id = "alice-battery"
participant = "alice"
kind = "battery"
port = {bat_port}
map = "battery"
rated_w = 5000
capacity_wh = 10000
"""


def test_the_wired_writers_carry_two_intervals_as_revert_time(tmp_path):
    site = parse_site(tomllib.loads(SITE.format(db=tmp_path / "s.sqlite", pv_port=1, bat_port=2)))
    devices = build_devices(site)
    try:
        for device_id in ("alice-pv", "alice-battery"):
            writer = devices.writers[DeviceId(device_id)]
            assert isinstance(writer, DeviceWriter)
            assert writer.revert_s == REVERT_INTERVALS * 900 == 1800
    finally:
        devices.close()


def test_a_stopped_controller_leaves_the_devices_to_revert_by_themselves(no_leaks, tmp_path):
    """The real simulators on 127.0.0.1 with their real clocks, the site's writers with a 2 s
    revert time: write, stop the controller, watch the devices return to their defaults."""
    pv = PVInverterSim(5000, constant_profile(4000), start_at=T0)
    bat = BatterySim(10_000, 5000, 50, start_at=T0)
    with pv, bat:
        text = SITE.format(db=tmp_path / "s.sqlite", pv_port=pv.port, bat_port=bat.port)
        devices = build_devices(parse_site(tomllib.loads(text)), revert_s=2.0)
        try:
            limit = Setpoint(
                device_id=DeviceId("alice-pv"),
                interval=Interval(T0),
                kind=SetpointKind.PV_LIMIT,
                p_w=1000,
            )
            charge = Setpoint(
                device_id=DeviceId("alice-battery"),
                interval=Interval(T0),
                kind=SetpointKind.BATTERY,
                p_w=-3000,
            )
            results: list[WriteResult] = []
            for sp in (limit, charge):
                result = devices.writers[sp.device_id].write(sp)
                assert isinstance(result, WriteResult)
                results.append(result)
            assert [r.ok for r in results] == [True, True], [r.reason for r in results]
            assert [r.revert_s for r in results] == [2, 2]
            assert [r.readback_w for r in results] == [1000, -3000]  # in force when written
        finally:
            devices.close()  # the controller stops: nobody refreshes the setpoints
        with client_of(pv.port) as pv_client, client_of(bat.port) as bat_client:

            def reverted() -> bool:
                pv_regs = fetch_fields(pv_client, pv.register_map, ["123.WMaxLimPct"])
                bat_regs = fetch_fields(bat_client, bat.register_map, ["PowerSetpoint"])
                return pv_regs["123.WMaxLimPct"] == 100.0 and bat_regs["PowerSetpoint"] == 0

            assert wait_until(reverted, WAIT_S), "the devices kept the setpoints"
        assert pv.limit_w == pytest.approx(5000)
        assert bat.setpoint_w == 0
        assert [t.reverts for t in (*pv.revert_timers, *bat.revert_timers)] == [1, 1]


def test_the_wait_harness_reports_a_device_that_never_reverts(no_leaks):
    """The end-to-end harness can fail: without a timer nothing reverts and it says so."""
    pv = PVInverterSim(5000, constant_profile(4000), start_at=T0)
    with pv, client_of(pv.port) as client:
        assert pv_writer(pv, client, revert_s=None).write(pv_limit(1000)).ok

        def reverted() -> bool:
            return (
                fetch_fields(client, pv.register_map, ["123.WMaxLimPct"])["123.WMaxLimPct"] == 100
            )

        assert not wait_until(reverted, 0.5)


# ---------------------------------------------------------------------------- dead devices


def dead_writer(port: int, **kwargs) -> tuple[DeviceWriter, CountingClient]:
    client = CountingClient(client_of(port, timeout_s=0.2, retries=1))
    rmap = load_register_map("sunspec_inverter")
    return DeviceWriter(DeviceId("pv"), client, rmap, rated_w=5000, revert_s=1800, **kwargs), client


def test_a_tick_of_writes_to_a_dead_device_costs_one_timeout(no_leaks):
    writer, client = dead_writer(closed_port())
    n = 6
    try:
        first, *rest = [writer.write(pv_limit(1000 + i)) for i in range(n)]
        assert client.failures == 1  # one timeout for the whole tick
        assert client.requests == 1
        assert not first.ok
        assert not first.skipped
        assert first.reason.startswith("device error: ")
        assert first.reason.endswith("; writes paused for 1 s")
        for result in rest:
            assert not result.ok
            assert result.skipped
            assert result.reason.startswith("skipped: writes paused after 1 failure until ")
            assert "last error: device error: " in result.reason
        # The next tick tries again, once: the pause is counted on the setpoints' clock.
        second_tick = [writer.write(pv_limit(1000, Interval(T0 + TICK))) for _ in range(n)]
        assert client.failures == 2
        assert [r.skipped for r in second_tick] == [False] + [True] * (n - 1)
        assert "paused after 2 failures" in second_tick[-1].reason
    finally:
        client.close()


def test_without_the_backoff_every_write_pays_its_timeout(no_leaks):
    """The counting harness can fail: with no pause, N writes cost N timeouts."""
    writer, client = dead_writer(closed_port(), backoff=Backoff(initial_s=0.0, max_s=0.0))
    try:
        results = [writer.write(pv_limit(1000)) for _ in range(4)]
        assert client.failures == 4
        assert not any(r.skipped for r in results)
    finally:
        client.close()


def test_a_device_that_does_not_answer_costs_one_timeout_per_tick_and_recovers(no_leaks):
    sim = PVInverterSim(5000, constant_profile(4000), start_at=T0)
    with sim:
        writer, client = dead_writer(sim.port)
        try:
            sim.set_fault(SimFault.NO_ANSWER)
            results = [writer.write(pv_limit(2000)) for _ in range(5)]
            assert client.failures == 1
            assert [r.skipped for r in results] == [False, True, True, True, True]
            assert "timed out" in results[0].reason or "no answer" in results[0].reason
            sim.set_fault(SimFault.NONE)
            back = writer.write(pv_limit(2000, Interval(T0 + TICK)))
            assert back.ok, back.reason
            assert writer.failures == 0
            assert writer.paused_until is None
            assert sim.limit_w == pytest.approx(2000)
        finally:
            client.close()


def test_a_refused_value_pauses_nothing(no_leaks):
    writer, client = dead_writer(closed_port())
    try:
        refused = [writer.write(pv_limit(-1)) for _ in range(3)]
        assert [r.reason for r in refused] == ["refused: a PV limit must be >= 0 W, got -1 W"] * 3
        assert client.requests == 0
        assert writer.failures == 0
    finally:
        client.close()


# ---------------------------------------------------------------------------- battery ratings


@pytest.mark.parametrize("register_map", BATTERY_MAPS)
@pytest.mark.parametrize(
    ("capacity_wh", "max_p_w"), [(13_500, 5000), (4_000, 1200), (96_000, 30_000)]
)
def test_the_battery_reports_the_capacity_and_power_it_was_started_with(
    no_leaks, register_map, capacity_wh, max_p_w
):
    sim = BatterySim(capacity_wh, max_p_w, 50, register_map=register_map, start_at=T0)
    rmap = sim.register_map
    capacity = rmap.for_target(Target.CAPACITY_WH)
    power = rmap.for_target(Target.W_MAX)
    assert capacity is not None
    assert power is not None
    with sim, client_of(sim.port) as client:
        values = fetch_fields(client, rmap, [capacity.name, power.name])
    assert capacity.to_canonical(values[capacity.name]) == pytest.approx(capacity_wh, rel=1e-3)
    assert power.to_canonical(values[power.name]) == pytest.approx(max_p_w, rel=1e-3)
