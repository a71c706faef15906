"""Modbus RTU over a virtual serial pair made by socat: every simulator kind read with correct
values, setpoints obeyed, faults (bad CRC, exception, silence) reported, latency measured."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.modbus import sunspec
from adapters.modbus.client import ModbusTkClient, RtuLine
from adapters.modbus.errors import DeviceError, DeviceUnavailable, InvalidArgument, InvalidFrame
from adapters.modbus.reading import DeviceReader
from adapters.modbus.simulators import (
    BatterySim,
    LoadMeterSim,
    PVInverterSim,
    RtuBus,
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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

T0 = datetime(2026, 6, 21, 12, tzinfo=UTC)
H = timedelta(hours=1)


def _reader(client, register_map, max_age_s=0.0):
    return DeviceReader(
        DeviceId("d"), ParticipantId("p"), BusId("b"), client, register_map, max_age_s
    )


KINDS = {
    "pv sunspec_inverter": lambda **kw: PVInverterSim(5000, constant_profile(3200), **kw),
    "pv sunspec_der_inverter": lambda **kw: PVInverterSim(
        6000, constant_profile(4100), register_map="sunspec_der_inverter", **kw),
    "meter sdm630": lambda **kw: LoadMeterSim(constant_profile(1234), **kw),
    "meter sunspec_meter": lambda **kw: LoadMeterSim(
        constant_profile(-700), register_map="sunspec_meter", **kw),
    "battery battery": lambda **kw: BatterySim(10_000, 5000, 40, **kw),
    "battery sunspec_storage": lambda **kw: BatterySim(
        10_000, 5000, 40, register_map="sunspec_storage", **kw),
    "battery sunspec_der_storage": lambda **kw: BatterySim(
        10_000, 5000, 40, register_map="sunspec_der_storage", **kw),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_simulator_kind_reads_correctly_over_rtu(no_leaks, serial_pair, kind):
    device_end, master_end = serial_pair
    sim = KINDS[kind](port=None, rtu=device_end, baudrate=115200, unit_id=5, start_at=T0)
    with sim, ModbusTkClient.rtu(master_end, 5, baudrate=115200, timeout_s=0.5) as client:
        sim.advance(T0 + H)
        rmap = sim.register_map
        if rmap.name.startswith("sunspec"):
            device = sunspec.discover(client)
            assert device.base_address == 40000
            rmap = device.register_map("discovered")
        r = _reader(client, rmap).read(T0 + H)
    assert r.quality is ReadingQuality.OK, r.reason
    if isinstance(sim, PVInverterSim):
        assert r.p_w == -round(sim.p_w)
        assert r.export_wh_total == round(sim.produced_wh)
    elif isinstance(sim, LoadMeterSim):
        assert r.p_w == round(sim.p_w)
        assert (r.import_wh_total, r.export_wh_total) == (
            round(sim.imported_wh), round(sim.exported_wh))  # fmt: skip
    else:
        assert r.p_w == 0
        assert r.soc_percent == pytest.approx(40.0)


def test_setpoints_are_written_read_back_and_obeyed_over_rtu(no_leaks, serial_pair):
    device_end, master_end = serial_pair
    bat = BatterySim(10_000, 5000, 50, register_map="sunspec_storage", port=None,
                     rtu=device_end, baudrate=115200, start_at=T0)  # fmt: skip
    with bat, ModbusTkClient.rtu(master_end, 1, baudrate=115200) as client:
        rmap = sunspec.discover(client).register_map("bat")
        result = DeviceWriter(DeviceId("bat"), client, rmap).write(
            Setpoint(
                device_id=DeviceId("bat"),
                interval=Interval(T0),
                kind=SetpointKind.BATTERY,
                p_w=-2500,
            )
        )
        assert result.ok, result.reason
        assert result.readback_w == -2500
        bat.advance(T0 + H)
        r = _reader(client, rmap).read(T0 + H)
    assert bat.soc_percent == pytest.approx(75.0)
    assert r.p_w == 2500  # charging: importing
    assert r.soc_percent == pytest.approx(75.0)


def test_bad_crc_exception_and_silence_over_rtu(no_leaks, serial_pair):
    device_end, master_end = serial_pair
    meter = LoadMeterSim(constant_profile(500), port=None, rtu=device_end, baudrate=115200,
                         start_at=T0)  # fmt: skip
    with meter, ModbusTkClient.rtu(master_end, 1, baudrate=115200, timeout_s=0.2,
                                   retries=0) as client:  # fmt: skip
        meter.set_fault("corrupt")
        with pytest.raises(InvalidFrame, match="Invalid CRC"):
            client.read_registers("input", 0x34, 2)
        meter.set_fault("exception")
        with pytest.raises(DeviceError) as info:
            client.read_registers("input", 0x34, 2)
        assert info.value.code == 4
        meter.set_fault("no_answer")
        started = time.perf_counter()
        with pytest.raises(DeviceUnavailable, match="timed out"):
            client.read_registers("input", 0x34, 2)
        assert time.perf_counter() - started < 0.5
        meter.set_fault("none")
        assert client.read_registers("input", 0x34, 2) == [0x43FA, 0x0000]  # 500.0 W
        # a request for another unit on the line gets no answer, as on RS-485
        other = ModbusTkClient.rtu(master_end, 9, baudrate=115200, timeout_s=0.1, retries=0)
        with other, pytest.raises(DeviceUnavailable, match="timed out"):
            other.read_registers("input", 0x34, 2)


@pytest.mark.parametrize("baud", [115200, 9600])
def test_rtu_latency(no_leaks, serial_pair, baud):
    device_end, master_end = serial_pair
    meter = LoadMeterSim(constant_profile(500), port=None, rtu=device_end, baudrate=baud)
    with meter, ModbusTkClient.rtu(master_end, 1, baudrate=baud, timeout_s=0.5) as client:
        client.read_registers("input", 0, 50)
        n = 20
        started = time.perf_counter()
        for _ in range(n):
            assert len(client.read_registers("input", 0, 50)) == 50
        mean_ms = (time.perf_counter() - started) / n * 1000
    print(f"\nRTU over socat at {baud} baud: {mean_ms:.2f} ms per 50-register read")
    assert mean_ms < 100


def test_a_missing_serial_device_is_reported(no_leaks, tmp_path):
    sim = LoadMeterSim(constant_profile(1), port=None, rtu=str(tmp_path / "nowhere"))
    with pytest.raises(OSError, match="nowhere"):
        sim.start()
    assert not sim.running
    client = ModbusTkClient.rtu(str(tmp_path / "nowhere"), 1, timeout_s=0.1, retries=0)
    with client, pytest.raises(DeviceUnavailable, match="nowhere"):
        client.read_registers("input", 0, 2)
    assert Path(tmp_path).exists()


def test_a_bus_serves_several_units_on_one_line_with_their_faults(no_leaks, serial_pair):
    """Three simulators on one RtuBus, read through one RtuLine: each answers its own unit,
    a fault of one (silence) leaves the others answering; two at one unit id are refused."""
    device_end, master_end = serial_pair
    sims = [LoadMeterSim(constant_profile(100 * u), unit_id=u, start_at=T0) for u in (1, 2, 3)]
    with (
        RtuBus(device_end, sims, baudrate=115200),
        RtuLine(master_end, 115200, timeout_s=0.3) as line,
    ):
        for sim in sims:
            sim.advance(T0 + H)
        readers = [_reader(line.client(s.unit_id, retries=0), s.register_map) for s in sims]
        assert [r.read(T0 + H).p_w for r in readers] == [100, 200, 300]
        sims[1].set_fault("no_answer")
        again = [r.read(T0 + H) for r in readers]
        assert [r.quality for r in again] == [
            ReadingQuality.OK, ReadingQuality.MISSING, ReadingQuality.OK]  # fmt: skip
    with pytest.raises(InvalidArgument, match="unit id 1"):
        RtuBus(device_end, [sims[0], LoadMeterSim(constant_profile(1), unit_id=1)])
