"""What a site file can now say, wired into the runtime: Modbus RTU devices sharing a serial
line, ``map = "sunspec"`` (models discovered on first contact), the pricing mechanism, the
clearing engine, gate closure, and meter roles in settlement.

RTU runs over a socat pty pair with the project's simulators on one
:class:`~adapters.modbus.simulators.RtuBus` (one line, several unit ids), SunSpec against the
SunSpec simulators; everything goes through :func:`controller.wiring.build_runtime`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.modbus.discovered import DiscoveringReader
from adapters.modbus.simulators import (
    BatterySim,
    LoadMeterSim,
    PVInverterSim,
    RtuBus,
    constant_profile,
)
from adapters.modbus.simulators.pty import socat_pair
from controller.config import SiteConfig, parse_site
from controller.errors import ConfigError
from controller.wiring import build_devices, build_runtime
from market.clearing.options import Engine
from market.codec import book_to_dict
from market.domain import (
    DeviceId,
    Interval,
    Mechanism,
    MeterRole,
    ParticipantId,
    ReadingQuality,
    Setpoint,
    SetpointKind,
)
from market.metering import Meter


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pty ends from socat (the devices' end, the controller's end)."""
    with socat_pair(tmp_path) as pair:
        yield pair


T0 = datetime(2026, 6, 21, 12, tzinfo=UTC)
T1 = T0 + timedelta(minutes=15)
BAUD = 115200

HEAD = """
[site]
grid = "cigre-lv"
database = "sqlite:///{db}"
base_load_scale = 0.35
{site_extra}

[[participants]]
id = "alice"
bus = "Bus R11"

[[participants]]
id = "bob"
bus = "Bus R15"
"""


def site_of(tmp_path: Path, devices: str = "", site_extra: str = "", **fmt: object) -> SiteConfig:
    text = HEAD.format(db=tmp_path / "site.sqlite", site_extra=site_extra) + devices.format(**fmt)
    return parse_site(tomllib.loads(text))


# ---------------------------------------------------------------------------- Modbus RTU

RTU_DEVICES = """
[[devices]]
id = "alice-meter"
participant = "alice"
kind = "meter"
role = "load"
transport = "rtu"
serial_port = "{line}"
baudrate = {baud}
unit = 1
map = "sdm630"

[[devices]]
id = "alice-pv"
participant = "alice"
kind = "pv"
transport = "rtu"
serial_port = "{line}"
baudrate = {baud}
unit = 2
map = "sunspec"
rated_w = 5000

[[devices]]
id = "bob-battery"
participant = "bob"
kind = "battery"
transport = "rtu"
serial_port = "{line}"
baudrate = {baud}
unit = 3
map = "battery"
rated_w = 5000
capacity_wh = 10000

[[devices]]
id = "bob-meter"
participant = "bob"
kind = "meter"
transport = "rtu"
serial_port = "{line}"
baudrate = {baud}
unit = 4
map = "sdm630"
"""


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_rtu_devices_share_one_serial_line(tmp_path: Path, serial_pair) -> None:
    """Four devices on one line: a meter, a SunSpec PV inverter (discovered on first contact),
    a battery and a meter whose unit does not answer. The cycle reads all of them through
    one line; the dead unit is MISSING without holding up the others; setpoints are written
    and read back over the same line."""
    device_end, controller_end = serial_pair
    meter = LoadMeterSim(constant_profile(1234), unit_id=1, start_at=T0)
    pv = PVInverterSim(5000, constant_profile(3200), unit_id=2, start_at=T0)
    battery = BatterySim(10_000, 5000, 40, unit_id=3, start_at=T0)
    site = site_of(tmp_path, RTU_DEVICES, line=controller_end, baud=BAUD)
    with (
        RtuBus(device_end, [meter, pv, battery], baudrate=BAUD),
        build_runtime(site, grid=False, chain=False) as rt,
    ):
        assert len(rt.devices.lines) == 1
        assert {c.endpoint for c in rt.devices.clients} == {
            f"rtu:{controller_end}@{BAUD}/{unit}" for unit in (1, 2, 3, 4)
        }
        for sim in (meter, pv, battery):
            sim.advance(T1)
        readings = rt.cycle.read_all(T1)
        ok = {d: r for d, r in readings.items() if r.quality is ReadingQuality.OK}
        assert set(ok) == {"alice-meter", "alice-pv", "bob-battery"}, readings
        assert ok[DeviceId("alice-meter")].p_w == round(meter.p_w)
        assert ok[DeviceId("alice-meter")].import_wh_total == round(meter.imported_wh)
        assert ok[DeviceId("alice-pv")].p_w == -round(pv.p_w)
        assert ok[DeviceId("alice-pv")].export_wh_total == round(pv.produced_wh)
        assert ok[DeviceId("bob-battery")].soc_percent == pytest.approx(40.0)
        dead = readings[DeviceId("bob-meter")]
        assert dead.quality is ReadingQuality.MISSING
        assert "no answer" in dead.reason
        assert isinstance(rt.devices.readers[DeviceId("alice-pv")], DiscoveringReader)

        interval = Interval(T1)
        charge = Setpoint(
            device_id=DeviceId("bob-battery"),
            interval=interval,
            kind=SetpointKind.BATTERY,
            p_w=-2500,
        )
        limit = Setpoint(
            device_id=DeviceId("alice-pv"), interval=interval, kind=SetpointKind.PV_LIMIT, p_w=2000
        )
        for setpoint in (charge, limit):
            result = rt.devices.writers[setpoint.device_id].write(setpoint)
            assert result.ok, result.reason
            assert result.readback_w == setpoint.p_w
        battery.advance(T1 + timedelta(minutes=6))
        assert battery.p_w == pytest.approx(-2500)  # charging, as written


def test_one_serial_line_has_one_setting_and_distinct_units(tmp_path: Path) -> None:
    """Devices on one serial port must agree on its settings and have different unit ids."""
    line = str(tmp_path / "ttyS9")
    base = site_of(tmp_path, RTU_DEVICES, line=line, baud=9600)
    assert len(build_devices(base).lines) == 1  # nothing is opened before the first request

    # refused by the site's validation or, at the latest, when the devices are built
    other_baud = RTU_DEVICES.replace("baudrate = {baud}\nunit = 3", "baudrate = 19200\nunit = 3")
    with pytest.raises(ConfigError, match=r"ttyS9.*(alice-meter|bob-battery)|bob-battery.*ttyS9"):
        build_devices(site_of(tmp_path, other_baud, line=line, baud=9600))
    same_unit = RTU_DEVICES.replace("unit = 3", "unit = 2")
    with pytest.raises(ConfigError, match=r"unit 2"):
        build_devices(site_of(tmp_path, same_unit, line=line, baud=9600))


# ---------------------------------------------------------------------------- SunSpec discovery

SUNSPEC_DEVICES = """
[[devices]]
id = "alice-pv"
participant = "alice"
kind = "pv"
port = {pv_port}
map = "sunspec"
rated_w = 6000

[[devices]]
id = "bob-battery"
participant = "bob"
kind = "battery"
port = {battery_port}
map = "sunspec"
rated_w = 5000
capacity_wh = 10000

[[devices]]
id = "bob-meter"
participant = "bob"
kind = "meter"
port = {meter_port}
map = "sunspec"
"""


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_sunspec_devices_are_discovered_on_first_contact(tmp_path: Path) -> None:
    """Three SunSpec simulators (DER inverter 701-704, storage 124, meter 203) named only
    ``map = "sunspec"``: discovered at the first read, the maps kept, then read and written."""
    with (
        PVInverterSim(
            6000, constant_profile(4100), register_map="sunspec_der_inverter", start_at=T0
        ) as pv,
        BatterySim(10_000, 5000, 50, register_map="sunspec_storage", start_at=T0) as battery,
        LoadMeterSim(constant_profile(-700), register_map="sunspec_meter", start_at=T0) as meter,
    ):
        site = site_of(
            tmp_path,
            SUNSPEC_DEVICES,
            pv_port=pv.port,
            battery_port=battery.port,
            meter_port=meter.port,
        )
        with build_runtime(site, grid=False, chain=False) as rt:
            readers = rt.devices.readers
            for sim in (pv, battery, meter):
                sim.advance(T1)
            readings = rt.cycle.read_all(T1)
            assert all(r.quality is ReadingQuality.OK for r in readings.values()), readings
            assert readings[DeviceId("alice-pv")].p_w == -round(pv.p_w)
            assert readings[DeviceId("bob-meter")].export_wh_total == round(meter.exported_wh)
            assert readings[DeviceId("bob-battery")].soc_percent == pytest.approx(50.0)
            maps = {d: r.found.register_map for d, r in readers.items()}  # type: ignore[attr-defined]
            assert "models 1, 701, 702, 704" in maps[DeviceId("alice-pv")].description
            assert "124" in maps[DeviceId("bob-battery")].description

            charge = Setpoint(
                device_id=DeviceId("bob-battery"),
                interval=Interval(T1),
                kind=SetpointKind.BATTERY,
                p_w=-2000,
            )
            result = rt.devices.writers[DeviceId("bob-battery")].write(charge)
            assert result.ok, result.reason
            assert rt.cycle.read_all(T1 + timedelta(minutes=1)).keys() == readings.keys()
            # the maps were kept: the same objects after more reads and a write
            assert {d: r.found.register_map for d, r in readers.items()} == maps  # type: ignore[attr-defined]


PV_AND_SDM630_AS_SUNSPEC = """
[[devices]]
id = "alice-pv"
participant = "alice"
kind = "pv"
port = {pv_port}
map = "sunspec"
rated_w = 6000

[[devices]]
id = "bob-meter"
participant = "bob"
kind = "meter"
port = {meter_port}
map = "sunspec"
"""


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_failed_discovery_is_a_missing_reading_and_the_cycle_goes_on(tmp_path: Path) -> None:
    """A SunSpec device that is down at the first tick, and a device that is not SunSpec:
    both MISSING with the reason, the tick completes; the first is discovered once it is up."""
    pv = PVInverterSim(6000, constant_profile(4100), start_at=T0)
    pv.start()
    port = pv.port
    pv.stop()
    with LoadMeterSim(constant_profile(900), start_at=T0) as not_sunspec:  # an SDM630
        site = site_of(
            tmp_path,
            PV_AND_SDM630_AS_SUNSPEC,
            pv_port=port,
            meter_port=not_sunspec.port,
        )
        with build_runtime(site, grid=False, chain=False) as rt:
            report = rt.cycle.tick(T0, clear_next=False)
            assert report.readings_ok == 0
            reasons = dict(m.split(": ", 1) for m in report.readings_missing)
            assert reasons["alice-pv"].startswith("SunSpec discovery failed: ")
            assert "no SunSpec marker" in reasons["bob-meter"]
            limit = Setpoint(
                device_id=DeviceId("alice-pv"),
                interval=Interval(T0),
                kind=SetpointKind.PV_LIMIT,
                p_w=1000,
            )
            refused = rt.devices.writers[DeviceId("alice-pv")].write(limit)
            assert not refused.ok
            assert refused.reason.startswith("SunSpec discovery failed: ")
            with pv:  # back on the same port
                pv.advance(T1)
                reading = rt.cycle.read_all(T1)[DeviceId("alice-pv")]
                assert reading.quality is ReadingQuality.OK, reading.reason
                assert reading.p_w == -round(pv.p_w)


# ---------------------------------------------------------------------------- clearing options

FIXED_ORDERS = """
[[participants]]
id = "carol"
bus = "Bus R17"
  [[participants.orders]]
  kind = "sell"
  energy_wh = 2000
  price = 50_000

[[participants]]
id = "dave"
bus = "Bus R18"
  [[participants.orders]]
  kind = "buy"
  energy_wh = 1500
  price = 250_000
"""


def test_mechanism_engine_and_gate_closure_come_from_the_site(tmp_path: Path) -> None:
    site = site_of(
        tmp_path,
        FIXED_ORDERS,
        site_extra='mechanism = "uniform"\nengine = "pyomo"\ngate_closure_s = 300',
    )
    with build_runtime(site, devices=False, chain=False) as rt:
        assert rt.cycle.options.mechanism is Mechanism.UNIFORM
        assert rt.cycle.options.engine is Engine.PYOMO
        interval = Interval(T0)
        assert rt.cycle.gate_closure(interval) == T0 - timedelta(seconds=300)
        cleared = rt.cycle.tick(T0).cleared
        assert cleared is not None
        assert cleared.gate_closure == T0 - timedelta(minutes=5)
        assert cleared.result.mechanism is Mechanism.UNIFORM
        assert cleared.result.accepted_wh == {"carol:1782043200:sell:0": 2000,
                                              "dave:1782043200:buy:0": 1500}  # fmt: skip
        # one price for all under "uniform"; the auditor re-clears with the record's mechanism
        assert len({o.price for o in cleared.result.orders if o.accepted_wh}) == 1
        record = {
            "interval": interval.interval_id,
            "length_s": interval.length_s,
            "book": book_to_dict(cleared.book),
        }
        assert rt.cycle.reclear(record)["mechanism"] == "uniform"
        as_bid = rt.cycle.reclear({**record, "result": {"mechanism": "pay-as-bid"}})
        assert as_bid["mechanism"] == "pay-as-bid"
        assert {o["price"] for o in as_bid["orders"]} == {50_000, 250_000}


def test_defaults_are_nodal_highspy_and_no_gate_closure_margin(tmp_path: Path) -> None:
    with build_runtime(site_of(tmp_path), grid=False, devices=False, chain=False) as rt:
        assert rt.cycle.options.mechanism is Mechanism.NODAL
        assert rt.cycle.options.engine is Engine.HIGHSPY
        assert rt.cycle.gate_closure(Interval(T0)) == T0


# ---------------------------------------------------------------------------- meter roles

NET_METER_PLUS_PV = """
[[devices]]
id = "alice-net"
participant = "alice"
kind = "meter"
port = {net_port}

[[devices]]
id = "alice-pv"
participant = "alice"
kind = "pv"
port = {pv_port}
rated_w = 5000

[[devices]]
id = "bob-meter"
participant = "bob"
kind = "meter"
role = "load"
port = {bob_port}
"""


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_net_meter_plus_pv_is_settled_on_the_net_meter(tmp_path: Path) -> None:
    """Alice's net meter at her connection point (a meter's default role) imports 1000 W,
    her PV behind it produces 3000 W. Over 15 minutes she took 250 Wh from the microgrid,
    and that is what she is settled on: her PV's 750 Wh are inside the net figure already.
    Summing every device (the rule without roles) would say she exported 750 Wh."""
    with (
        LoadMeterSim(constant_profile(1000), start_at=T0) as net,
        PVInverterSim(5000, constant_profile(3000), start_at=T0) as pv,
        LoadMeterSim(constant_profile(400), start_at=T0) as bob,
    ):
        site = site_of(
            tmp_path, NET_METER_PLUS_PV, net_port=net.port, pv_port=pv.port, bob_port=bob.port
        )
        assert [d.role for d in site.devices] == ["connection_point", "generation", "load"]
        with build_runtime(site, chain=False) as rt:
            assert rt.cycle.meters()[ParticipantId("alice")] == [
                Meter(DeviceId("alice-net"), MeterRole.CONNECTION_POINT),
                Meter(DeviceId("alice-pv"), MeterRole.GENERATION),
            ]
            first = rt.cycle.tick(T0)
            assert first.readings_ok == 3, first.readings_missing
            for sim in (net, pv, bob):
                sim.advance(T1)
            second = rt.cycle.tick(T1, clear_next=False)
        (settled,) = second.settlements
        assert settled.batch is not None
        lines = {line.participant: line for line in settled.batch.lines}
        alice = lines[ParticipantId("alice")]
        assert alice.metered
        assert (alice.metered_import_wh, alice.metered_export_wh) == (250, 0)
        assert alice.imbalance_wh == 250  # nothing cleared: all of it bought from the grid
        bob_line = lines[ParticipantId("bob")]
        assert (bob_line.metered_import_wh, bob_line.metered_export_wh) == (100, 0)
