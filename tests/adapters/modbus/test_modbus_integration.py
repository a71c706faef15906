"""Real Modbus TCP on 127.0.0.1: simulators served by modbus_tk, read and written through
ModbusTkClient, DeviceReader and DeviceWriter."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from adapters.modbus.client import ModbusTkClient, RegisterClient
from adapters.modbus.errors import DeviceError, DeviceUnavailable, WriteRefused
from adapters.modbus.mapfiles import load_register_map
from adapters.modbus.reading import DeviceReader
from adapters.modbus.simulators import (
    BatterySim,
    LoadMeterSim,
    PVInverterSim,
    SimulatedSite,
    constant_profile,
)
from adapters.modbus.writing import DeviceWriter
from market.domain import (
    BusId,
    DeviceId,
    Interval,
    ParticipantId,
    ReadingQuality,
    Setpoint,
    SetpointKind,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]

T0 = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
MAPS = {"pv": "sunspec_inverter", "load": "sdm630", "bat": "battery"}


@pytest.fixture
def site(no_leaks):
    sims = SimulatedSite(
        {
            "pv": PVInverterSim(5000, constant_profile(4000), start_at=T0),
            "load": LoadMeterSim(constant_profile(1500), start_at=T0),
            "bat": BatterySim(10_000, 5000, soc0=50, start_at=T0),
        }
    )
    with sims:
        yield sims


@pytest.fixture
def clients(site):
    made = {
        name: ModbusTkClient("127.0.0.1", port, 1, timeout_s=0.2, retries=1, backoff_s=0.01)
        for name, port in site.ports.items()
    }
    yield made
    for client in made.values():
        client.close()


def make_reader(name, client, max_age_s=0.0):
    return DeviceReader(
        DeviceId(name), ParticipantId("alice"), BusId("b1"), client, load_register_map(MAPS[name]),
        max_age_s,
    )  # fmt: skip


def make_writer(name, client):
    return DeviceWriter(DeviceId(name), client, load_register_map(MAPS[name]))


def setpoint(name, kind, p_w):
    return Setpoint(device_id=DeviceId(name), interval=Interval(T0), kind=kind, p_w=p_w)


def test_read_every_kind_of_device(site, clients):
    site.advance(T0 + H)
    readings = {n: make_reader(n, c).read(T0 + H) for n, c in clients.items()}
    assert all(r.quality is ReadingQuality.OK for r in readings.values()), readings
    assert (readings["pv"].p_w, readings["pv"].export_wh_total) == (-4000, 4000)
    assert (readings["load"].p_w, readings["load"].import_wh_total) == (1500, 1500)
    assert (readings["bat"].p_w, readings["bat"].soc_percent) == (0, 50.0)
    assert isinstance(clients["pv"], RegisterClient)


def test_curtailment_setpoint_really_lowers_produced_energy(site, clients):
    pv = make_reader("pv", clients["pv"])
    site.advance(T0 + H)
    before = pv.read(T0 + H)
    result = make_writer("pv", clients["pv"]).write(setpoint("pv", SetpointKind.PV_LIMIT, 1000))
    assert result.ok, result.reason
    assert result.readback_w == 1000
    site.advance(T0 + 2 * H)
    after = pv.read(T0 + 2 * H)
    assert after.export_wh_total - before.export_wh_total == 1000  # not 4000
    assert after.p_w == -1000
    result = make_writer("pv", clients["pv"]).write(setpoint("pv", SetpointKind.PV_LIMIT, 5000))
    assert result.ok
    site.advance(T0 + 3 * H)
    assert pv.read(T0 + 3 * H).export_wh_total - after.export_wh_total == 4000


def test_battery_follows_the_setpoint_and_its_soc_moves(site, clients):
    bat = make_reader("bat", clients["bat"])
    writer = make_writer("bat", clients["bat"])
    assert writer.write(setpoint("bat", SetpointKind.BATTERY, 2500)).ok
    site.advance(T0 + H)
    r = bat.read(T0 + H)
    assert (r.p_w, r.soc_percent, r.export_wh_total) == (-2500, 25.0, 2500)
    assert writer.write(setpoint("bat", SetpointKind.BATTERY, -5000)).ok
    site.advance(T0 + 2 * H)
    r = bat.read(T0 + 2 * H)
    assert (r.p_w, r.soc_percent, r.import_wh_total) == (5000, 75.0, 5000)


def test_out_of_range_write_is_refused_and_reported(site, clients):
    result = make_writer("bat", clients["bat"]).write(setpoint("bat", SetpointKind.BATTERY, 9000))
    assert not result.ok
    assert "9000 W for 'PowerSetpoint' is outside the allowed -5000..5000 W" in result.reason
    assert site["bat"].get_field("PowerSetpoint") == 0
    site.advance(T0 + H)
    assert site["bat"].soc_percent == 50


def test_device_refuses_writes_outside_its_writable_fields(site, clients):
    with pytest.raises(DeviceError) as info:
        clients["pv"].write_registers(40084, [1])
    assert info.value.code == 2
    with pytest.raises(WriteRefused):
        clients["pv"].write_registers(40155, [70000])
    with pytest.raises(ValueError, match=r"1\.\.125"):
        clients["pv"].read_registers("holding", 40000, 200)


def test_dead_device_is_missing_fast_then_paused(site, clients):
    pv = make_reader("pv", clients["pv"])
    assert pv.read(T0).quality is ReadingQuality.OK
    site["pv"].set_fault("no_answer")
    start = time.perf_counter()
    r = pv.read(T0 + timedelta(seconds=10))
    elapsed = time.perf_counter() - start
    assert r.quality is ReadingQuality.MISSING
    assert "no answer after 2 attempt(s): timed out" in r.reason
    assert elapsed < 1.0  # 2 attempts x 0.2 s + backoff
    start = time.perf_counter()
    r = pv.read(T0 + timedelta(seconds=10.5))
    assert time.perf_counter() - start < 0.05  # paused: no socket touched
    assert r.reason.startswith("paused after 1 failure")
    site["pv"].set_fault("none")
    assert pv.read(T0 + timedelta(seconds=11)).quality is ReadingQuality.OK


def test_dead_device_never_blocks_the_others(site, clients):
    site["pv"].set_fault("no_answer")
    slow = ModbusTkClient("127.0.0.1", site.ports["pv"], 1, timeout_s=0.6, retries=0)
    dead = make_reader("pv", slow)
    outcome = {}

    def read_dead():
        start = time.perf_counter()
        outcome["reading"] = dead.read(T0)
        outcome["elapsed"] = time.perf_counter() - start

    thread = threading.Thread(target=read_dead)
    thread.start()
    try:
        time.sleep(0.05)  # the dead read is waiting for its answer now
        live = [make_reader(n, clients[n]) for n in ("load", "bat")]
        start = time.perf_counter()
        for _ in range(10):
            assert all(r.read(T0).quality is ReadingQuality.OK for r in live)
        live_elapsed = time.perf_counter() - start
        assert thread.is_alive()  # still waiting while the others were read
    finally:
        thread.join()
        slow.close()
    assert live_elapsed < 0.4
    assert outcome["reading"].quality is ReadingQuality.MISSING
    assert outcome["elapsed"] >= 0.5


def test_a_cycle_over_all_devices_is_bounded_with_one_dead(site, clients):
    readers = [make_reader(n, c) for n, c in clients.items()]
    site["bat"].set_fault("no_answer")
    start = time.perf_counter()
    readings = [r.read(T0) for r in readers]
    assert time.perf_counter() - start < 1.0
    assert [r.quality for r in readings] == [
        ReadingQuality.OK,
        ReadingQuality.OK,
        ReadingQuality.MISSING,
    ]
    start = time.perf_counter()
    readings = [r.read(T0 + timedelta(seconds=0.5)) for r in readers]  # bat is paused now
    assert time.perf_counter() - start < 0.1


def test_refused_connection_then_recovery_on_the_same_port(site, clients):
    pv = make_reader("pv", clients["pv"])
    assert pv.read(T0).quality is ReadingQuality.OK
    port = site["pv"].port
    site["pv"].stop()
    start = time.perf_counter()
    r = pv.read(T0 + timedelta(seconds=1))
    assert time.perf_counter() - start < 0.5
    assert r.quality is ReadingQuality.MISSING
    assert "connection refused" in r.reason or "reset" in r.reason.lower()
    assert site["pv"].start() == port
    r = pv.read(T0 + timedelta(seconds=3))  # after the 1 s pause: reconnects
    assert r.quality is ReadingQuality.OK, r.reason


def test_exception_responses_are_reported_with_their_code(site, clients):
    site["load"].set_fault("exception")
    r = make_reader("load", clients["load"]).read(T0)
    assert r.quality is ReadingQuality.MISSING
    assert "Modbus exception code 4" in r.reason
    with pytest.raises(DeviceError) as info:
        clients["load"].read_registers("input", 0x34, 2)
    assert info.value.code == 4


def test_wrong_unit_id_times_out(site):
    client = ModbusTkClient("127.0.0.1", site.ports["load"], 7, timeout_s=0.1, retries=0)
    with client, pytest.raises(DeviceUnavailable, match="timed out") as info:
        client.read_registers("input", 0x34, 2)
    assert isinstance(info.value, ConnectionError)


def test_stale_values_stand_in_over_the_wire(site, clients):
    load = make_reader("load", clients["load"], max_age_s=30)
    good = load.read(T0)
    site["load"].stop()
    r = load.read(T0 + timedelta(seconds=5))
    assert r.quality is ReadingQuality.STALE
    assert r.p_w == good.p_w


def test_start_returns_when_the_port_accepts(no_leaks):
    sim = LoadMeterSim(constant_profile(100))
    for _ in range(5):
        port = sim.start()
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            pass
        sim.stop()
        assert not sim.running
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            pass


def test_a_busy_port_is_reported(no_leaks):
    with LoadMeterSim(constant_profile(100)) as first:
        second = LoadMeterSim(constant_profile(100), port=first.port)
        with pytest.raises(OSError, match="in use"):
            second.start()
        assert not second.running


@pytest.mark.timeout(30)
def test_read_latency_over_loopback(site, clients):
    reader = make_reader("pv", clients["pv"])
    reader.read(T0)  # connect and check identity first
    n = 100
    start = time.perf_counter()
    for _ in range(n):
        assert reader.read(T0).quality is ReadingQuality.OK
    mean_ms = (time.perf_counter() - start) / n * 1000
    print(f"\nmean time to read one SunSpec inverter over loopback: {mean_ms:.2f} ms")
    assert mean_ms < 20
