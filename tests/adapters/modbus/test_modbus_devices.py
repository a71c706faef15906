"""DeviceReader and DeviceWriter against literal registers (OpenEMS DummyModbusBridge style)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.modbus import sunspec
from adapters.modbus.devices import Backoff, DeviceReader, DeviceWriter
from adapters.modbus.errors import RegisterMapError
from adapters.modbus.fake import FakeRegisterClient
from adapters.modbus.registermaps import load_register_map, parse_register_map
from market.domain import (
    BusId,
    DeviceId,
    Interval,
    ParticipantId,
    ReadingQuality,
    Setpoint,
    SetpointKind,
)
from market.errors import InvalidInterval

T0 = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)
ALICE = ParticipantId("alice")
BUS = BusId("bus_1")

# A SunSpec inverter at base 40000 as a register dump: identity, W = 3000 * 10^-1 = 300 W,
# WH = 123456 Wh, WRtg = 5000 W, WMaxLimPct = 10000 * 10^-2 = 100 %, limit disabled.
SUNSPEC = {
    40000: 0x5375, 40001: 0x6E53,  # "SunS"
    40002: 1, 40003: 66,
    40070: 103, 40071: 50,
    40084: 0x0BB8, 40085: 0xFFFF,  # W, W_SF = -1
    40094: 0x0001, 40095: 0xE240, 40096: 0x0000,  # WH (acc32), WH_SF = 0
    40122: 120, 40123: 26,
    40125: 5000, 40126: 0,  # WRtg, WRtg_SF
    40150: 123, 40151: 24,
    40155: 10000, 40159: 0, 40173: 0xFFFE,  # WMaxLimPct, WMaxLim_Ena, WMaxLimPct_SF = -2
    40176: 0xFFFF, 40177: 0,
}  # fmt: skip

# An SDM630: float32 input registers. 1234.5 W, 12.345 kWh imported, 0.5 kWh exported.
SDM630 = {
    0x34: 0x449A, 0x35: 0x5000,
    0x48: 0x4145, 0x49: 0x851F,
    0x4A: 0x3F00, 0x4B: 0x0000,
}  # fmt: skip

# A vendor battery: charging at 2000 W (device sign: negative = charge), SoC 50.0 %,
# charged 100000 Wh and discharged 12345 Wh (uint32, word-swapped), setpoint 0.
BATTERY = {
    100: 0xFFFF, 101: 0xF830,
    102: 500,
    104: 0x86A0, 105: 0x0001,
    106: 0x3039, 107: 0x0000,
    200: 0, 201: 0,
}  # fmt: skip


def reader(client, map_name, max_age_s=0.0, **kwargs):
    return DeviceReader(
        DeviceId(map_name), ALICE, BUS, client, load_register_map(map_name), max_age_s, **kwargs
    )


def test_sunspec_inverter_reading():
    fake = FakeRegisterClient(holding=SUNSPEC)
    r = reader(fake, "sunspec_inverter").read(T0)
    assert r.quality is ReadingQuality.OK
    assert r.reason == ""
    assert r.p_w == -300  # producing 300 W = exporting
    assert r.export_wh_total == 123456
    assert r.import_wh_total == 0
    assert r.soc_percent is None
    assert (r.device_id, r.participant, r.bus, r.measured_at) == (
        "sunspec_inverter",
        ALICE,
        BUS,
        T0,
    )


def test_identity_is_checked_once_then_only_measurements_are_read():
    fake = FakeRegisterClient(holding=SUNSPEC)
    rd = reader(fake, "sunspec_inverter")
    rd.read(T0)
    first = len(fake.requests)
    assert first == 2  # identity + measurements, merged: 40000+4 and 40070+108
    rd.read(T0 + timedelta(seconds=1))
    assert len(fake.requests) == first + 1
    assert fake.requests[-1].address == 40084


def test_wrong_device_fails_the_identity_check():
    fake = FakeRegisterClient(holding={**SUNSPEC, 40000: 0x4142, 40001: 0x4344})
    rd = reader(fake, "sunspec_inverter")
    r = rd.read(T0)
    assert r.quality is ReadingQuality.MISSING
    assert "identity check failed: SunS is 'ABCD', expected 'SunS'" in r.reason
    fake.set_registers("holding", 40000, [0x5375, 0x6E53])
    assert rd.read(T0 + timedelta(seconds=1)).quality is ReadingQuality.OK


def test_model_id_mismatch_is_reported():
    fake = FakeRegisterClient(holding={**SUNSPEC, 40070: 101})
    r = reader(fake, "sunspec_inverter").read(T0)
    assert r.quality is ReadingQuality.MISSING
    assert "103.ID is 101, expected 103" in r.reason


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({40084: 0x8000}, "p_w not available: 103.W is not implemented"),
        ({40085: 0x8000}, "p_w not available"),
        ({40085: 0x000B}, "cannot decode: scale factor 11 is outside -10..10"),
    ],
)
def test_not_implemented_power_is_missing(patch, reason):
    r = reader(FakeRegisterClient(holding={**SUNSPEC, **patch}), "sunspec_inverter").read(T0)
    assert r.quality is ReadingQuality.MISSING
    assert reason in r.reason
    assert (r.p_w, r.import_wh_total, r.export_wh_total) == (0, 0, 0)


def test_accumulator_that_never_counted_reads_zero():
    fake = FakeRegisterClient(holding={**SUNSPEC, 40094: 0, 40095: 0})
    r = reader(fake, "sunspec_inverter").read(T0)
    assert r.quality is ReadingQuality.OK
    assert r.export_wh_total == 0


def test_sdm630_reading_converts_kwh_and_rounds_half_even():
    r = reader(FakeRegisterClient(input=SDM630), "sdm630").read(T0)
    assert r.quality is ReadingQuality.OK
    assert r.p_w == 1234  # 1234.5 W -> 1234: ties go to the even neighbour
    assert r.import_wh_total == 12345  # float32(12.345) kWh = 12345.0003 Wh
    assert r.export_wh_total == 500
    fake = FakeRegisterClient(input={**SDM630, 0x34: 0x449A, 0x35: 0x7000})  # 1235.5 W
    assert reader(fake, "sdm630").read(T0).p_w == 1236


def test_sdm630_negative_power_is_export():
    fake = FakeRegisterClient(input={**SDM630, 0x34: 0xC47A, 0x35: 0x0000})  # -1000.0 W
    assert reader(fake, "sdm630").read(T0).p_w == -1000


def test_battery_reading_inverts_sign_and_swaps_words():
    r = reader(FakeRegisterClient(holding=BATTERY), "battery").read(T0)
    assert r.quality is ReadingQuality.OK
    assert r.p_w == 2000  # charging = importing
    assert r.soc_percent == pytest.approx(50.0)
    assert r.import_wh_total == 100000
    assert r.export_wh_total == 12345


def test_negative_counter_is_missing():
    m = parse_register_map(
        {
            "name": "m",
            "fields": [
                {"name": "p", "address": 0, "kind": "int16", "unit": "W", "target": "p_w"},
                {"name": "e", "address": 1, "kind": "int16", "unit": "Wh",
                 "target": "import_wh_total"},
            ],
        }
    )  # fmt: skip
    fake = FakeRegisterClient(holding={0: 5, 1: 0xFFFF})
    r = DeviceReader(DeviceId("d"), ALICE, BUS, fake, m).read(T0)
    assert r.quality is ReadingQuality.MISSING
    assert "import_wh_total is negative" in r.reason


def test_failure_is_missing_and_pauses_with_exponential_backoff():
    fake = FakeRegisterClient(input=SDM630)
    rd = reader(fake, "sdm630")
    fake.set_fault("unavailable")
    r = rd.read(T0)
    assert r.quality is ReadingQuality.MISSING
    assert "unavailable" in r.reason
    assert "paused for 1 s" in r.reason
    assert rd.health.failures == 1
    assert rd.health.paused_until == T0 + timedelta(seconds=1)
    n = len(fake.requests)

    r = rd.read(T0 + timedelta(seconds=0.5))  # paused: the transport is not touched
    assert r.quality is ReadingQuality.MISSING
    assert r.reason.startswith("paused after 1 failure until")
    assert len(fake.requests) == n

    r = rd.read(T0 + timedelta(seconds=1))  # pause over: try again, fail, pause 2 s
    assert len(fake.requests) == n + 1
    assert "paused for 2 s" in r.reason
    assert rd.read(T0 + timedelta(seconds=2.9)).reason.startswith("paused after 2 failures")
    assert len(fake.requests) == n + 1
    r = rd.read(T0 + timedelta(seconds=3))
    assert "paused for 4 s" in r.reason

    fake.set_fault("none")
    r = rd.read(T0 + timedelta(seconds=7))
    assert r.quality is ReadingQuality.OK
    assert rd.health.failures == 0
    assert rd.health.paused_until is None
    assert rd.health.last_ok_at == T0 + timedelta(seconds=7)


def test_backoff_doubles_up_to_the_cap():
    b = Backoff()
    assert [b.delay_s(n) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert b.delay_s(10_000) == 60
    assert Backoff(initial_s=0.1, factor=3, max_s=1).delay_s(3) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)


def test_clock_going_back_does_not_keep_the_device_paused():
    fake = FakeRegisterClient(input=SDM630)
    rd = reader(fake, "sdm630")
    fake.set_fault("unavailable")
    rd.read(T0)
    fake.set_fault("none")
    assert rd.read(T0 - timedelta(hours=1)).quality is ReadingQuality.OK


def test_exception_response_is_missing_with_its_code():
    fake = FakeRegisterClient(input=SDM630)
    fake.set_fault("exception")
    r = reader(fake, "sdm630").read(T0)
    assert r.quality is ReadingQuality.MISSING
    assert "Modbus exception code 4 (server device failure)" in r.reason


def test_strict_device_rejecting_a_gap_read_is_missing():
    fake = FakeRegisterClient(input=SDM630, fill=None)  # 0x36..0x47 are undefined here
    r = reader(fake, "sdm630").read(T0)
    assert r.quality is ReadingQuality.MISSING
    assert "code 2 (illegal data address)" in r.reason


def test_recent_good_values_stand_in_as_stale():
    fake = FakeRegisterClient(input=SDM630)
    rd = reader(fake, "sdm630", max_age_s=10)
    good = rd.read(T0)
    fake.set_fault("unavailable")
    r = rd.read(T0 + timedelta(seconds=4))
    assert r.quality is ReadingQuality.STALE
    assert (r.p_w, r.import_wh_total, r.measured_at) == (good.p_w, good.import_wh_total, T0)
    assert "unavailable" in r.reason
    assert "last good values from 4 s ago" in r.reason
    r = rd.read(T0 + timedelta(seconds=4.5))  # paused, still recent enough
    assert r.quality is ReadingQuality.STALE
    assert r.reason.startswith("paused after 1 failure")
    r = rd.read(T0 + timedelta(seconds=11))  # too old now
    assert r.quality is ReadingQuality.MISSING
    assert r.measured_at == T0 + timedelta(seconds=11)


class _BrokenClient:
    """A RegisterClient that lets a library error escape unwrapped."""

    def read_registers(self, table, address, count):
        msg = "driver bug"
        raise RuntimeError(msg)

    def write_registers(self, address, values):
        msg = "driver bug"
        raise RuntimeError(msg)

    def close(self):
        pass


def test_unexpected_client_errors_never_escape():
    r = reader(_BrokenClient(), "sdm630").read(T0)
    assert r.quality is ReadingQuality.MISSING
    assert "unexpected RuntimeError: driver bug" in r.reason
    w = DeviceWriter(DeviceId("b"), _BrokenClient(), load_register_map("battery"))
    result = w.write(_setpoint("b", SetpointKind.BATTERY, 100))
    assert not result.ok
    assert "unexpected RuntimeError" in result.reason


def test_naive_now_is_rejected():
    with pytest.raises(InvalidInterval, match="timezone-aware"):
        reader(FakeRegisterClient(input=SDM630), "sdm630").read(datetime(2026, 1, 1))  # noqa: DTZ001


def test_map_without_power_cannot_be_read():
    m = parse_register_map({"name": "m", "fields": [{"name": "x", "address": 0, "kind": "int16"}]})
    with pytest.raises(RegisterMapError, match="has no field for p_w"):
        DeviceReader(DeviceId("d"), ALICE, BUS, FakeRegisterClient(), m)


# ---------------------------------------------------------------------------- writer


def _setpoint(device, kind, p_w):
    return Setpoint(device_id=DeviceId(device), interval=Interval(T0), kind=kind, p_w=p_w)


def pv_writer(fake, **kwargs):
    return DeviceWriter(DeviceId("pv"), fake, load_register_map("sunspec_inverter"), **kwargs)


def test_pv_limit_is_written_as_percent_then_enabled_and_confirmed():
    fake = FakeRegisterClient(holding=SUNSPEC)
    result = pv_writer(fake).write(_setpoint("pv", SetpointKind.PV_LIMIT, 2000))
    assert result.ok, result.reason
    assert result.reason == ""
    assert result.readback_w == 2000
    # 2000 W of WRtg 5000 W = 40 %, with WMaxLimPct_SF = -2: 4000
    assert [(w.address, w.values) for w in fake.writes] == [(40155, (4000,)), (40159, (1,))]
    assert fake.registers["holding"][40155] == 4000
    assert dict(result.written) == {"123.WMaxLimPct": 40.0, "123.WMaxLim_Ena": 1.0}
    assert dict(result.readback) == {"123.WMaxLimPct": 40.0, "123.WMaxLim_Ena": 1}


def test_pv_limit_with_a_given_rating_and_rounding():
    fake = FakeRegisterClient(holding=SUNSPEC)
    result = pv_writer(fake, rated_w=3000).write(_setpoint("pv", SetpointKind.PV_LIMIT, 1000))
    assert result.ok
    assert fake.registers["holding"][40155] == 3333  # 33.333 % -> 33.33 %
    assert result.readback_w == 1000  # 33.33 % of 3000 W = 999.9 W


def test_pv_limit_above_the_rating_means_no_curtailment_and_says_so():
    fake = FakeRegisterClient(holding=SUNSPEC)
    result = pv_writer(fake).write(_setpoint("pv", SetpointKind.PV_LIMIT, 8000))
    assert result.ok
    assert "8000 W is above WMax 5000 W: written as 100 %" in result.reason
    assert fake.registers["holding"][40155] == 10000


def test_negative_pv_limit_is_refused_and_nothing_is_written():
    fake = FakeRegisterClient(holding=SUNSPEC)
    result = pv_writer(fake).write(_setpoint("pv", SetpointKind.PV_LIMIT, -5))
    assert not result.ok
    assert result.reason == "refused: a PV limit must be >= 0 W, got -5 W"
    assert fake.writes == []


def test_pv_limit_without_a_known_rating_is_refused():
    fake = FakeRegisterClient(holding={**SUNSPEC, 40125: 0xFFFF})  # WRtg not implemented
    result = pv_writer(fake).write(_setpoint("pv", SetpointKind.PV_LIMIT, 1000))
    assert not result.ok
    assert "WMax unknown" in result.reason
    assert fake.writes == []


def battery_writer(fake):
    return DeviceWriter(DeviceId("bat"), fake, load_register_map("battery"))


@pytest.mark.parametrize(("p_w", "registers"), [(2000, (0, 2000)), (-5000, (0xFFFF, 0xEC78))])
def test_battery_setpoint_is_written_and_confirmed(p_w, registers):
    fake = FakeRegisterClient(holding=BATTERY)
    result = battery_writer(fake).write(_setpoint("bat", SetpointKind.BATTERY, p_w))
    assert result.ok, result.reason
    assert result.readback_w == p_w
    assert [(w.address, w.values) for w in fake.writes] == [(200, registers)]


@pytest.mark.parametrize("p_w", [5001, -9000])
def test_out_of_range_battery_setpoint_is_refused_and_reported(p_w):
    fake = FakeRegisterClient(holding=BATTERY)
    result = battery_writer(fake).write(_setpoint("bat", SetpointKind.BATTERY, p_w))
    assert not result.ok
    assert f"{p_w} W for 'PowerSetpoint' is outside the allowed -5000..5000 W" in result.reason
    assert fake.writes == []
    assert result.readback_w is None


def test_setpoints_need_a_writable_field():
    fake = FakeRegisterClient(input=SDM630)
    w = DeviceWriter(DeviceId("m"), fake, load_register_map("sdm630"))
    result = w.write(_setpoint("m", SetpointKind.PV_LIMIT, 100))
    assert not result.ok
    assert "has no field for w_max_lim_pct" in result.reason
    doc = {
        "name": "ro",
        "fields": [
            {"name": "p", "address": 0, "kind": "int16", "unit": "W", "target": "p_w"},
            {"name": "sp", "address": 1, "kind": "int16", "unit": "W",
             "target": "battery_setpoint_w"},
        ],
    }  # fmt: skip
    fake = FakeRegisterClient(holding={0: 0, 1: 0})
    w = DeviceWriter(DeviceId("b"), fake, parse_register_map(doc))
    result = w.write(_setpoint("b", SetpointKind.BATTERY, 100))
    assert not result.ok
    assert "'sp' (battery_setpoint_w) is not in the allow-list" in result.reason
    assert fake.writes == []


def test_setpoint_for_another_device_is_refused():
    result = battery_writer(FakeRegisterClient(holding=BATTERY)).write(
        _setpoint("other", SetpointKind.BATTERY, 100)
    )
    assert not result.ok
    assert "setpoint for 'other' sent to 'bat'" in result.reason


def test_device_rejecting_the_write_is_reported():
    fake = FakeRegisterClient(holding=BATTERY, writable=())
    result = battery_writer(fake).write(_setpoint("bat", SetpointKind.BATTERY, 100))
    assert not result.ok
    assert result.reason.startswith("device error: ")
    assert "code 2" in result.reason


class _SlowDevice(FakeRegisterClient):
    """A device that acknowledges writes but keeps its old value."""

    def write_registers(self, address, values):
        super().write_registers(address, [0] * len(values))  # keeps the old value


def test_read_back_mismatch_is_not_ok():
    fake = _SlowDevice(holding=BATTERY)
    result = battery_writer(fake).write(_setpoint("bat", SetpointKind.BATTERY, 1500))
    assert not result.ok
    assert "read back PowerSetpoint = 0" in result.reason
    assert "after writing registers [0, 1500]" in result.reason
    assert result.written == (("PowerSetpoint", 1500.0),)


def test_unavailable_device_write_is_not_ok():
    fake = FakeRegisterClient(holding=SUNSPEC)
    fake.set_fault("unavailable")
    result = pv_writer(fake).write(_setpoint("pv", SetpointKind.PV_LIMIT, 1000))
    assert not result.ok
    assert result.reason == "device error: fake device: unavailable (injected fault)"


# ---------------------------------------------------------------------------- SunSpec control

DER_STORAGE = [1, 701, 702, 704, 802]


def der_storage(make_sunspec_image, **values):
    regs = make_sunspec_image(DER_STORAGE, values={
        "704.WSet_SF": 0, "704.WMaxLimPct_SF": 0xFFFE, "704.WSet": [0, 0], "704.WSetEna": 0,
        "704.WSetMod": 0, "802.WChaDisChaMax_SF": 0, "802.WChaRteMax": 4000,
        "802.WDisChaRteMax": 3000, **values,
    })  # fmt: skip
    fake = FakeRegisterClient(holding=regs)
    rmap = sunspec.discover(fake).register_map("bat")
    fake.requests.clear()
    return fake, DeviceWriter(DeviceId("bat"), fake, rmap)


def test_704_watt_setpoint_writes_mode_then_value_then_enable(make_sunspec_image):
    fake, writer = der_storage(make_sunspec_image)
    result = writer.write(_setpoint("bat", SetpointKind.BATTERY, -2500))  # charge 2.5 kW
    assert result.ok, result.reason
    assert result.readback_w == -2500
    assert [name for name, _ in result.written] == ["704.WSetMod", "704.WSet", "704.WSetEna"]
    wset = writer.register_map.field("704.WSet").address
    holding = fake.registers["holding"]
    assert [holding[wset], holding[wset + 1]] == [0xFFFF, 0xF63C]  # int32 -2500


@pytest.mark.parametrize(
    ("p_w", "message"),
    [(3001, "3001 W discharge is beyond 802.WDisChaRteMax = 3000 W"),
     (-4001, "4001 W charge is beyond 802.WChaRteMax = 4000 W")],
)  # fmt: skip
def test_704_setpoint_beyond_the_battery_rating_never_reaches_the_wire(
    make_sunspec_image, p_w, message
):
    fake, writer = der_storage(make_sunspec_image)
    result = writer.write(_setpoint("bat", SetpointKind.BATTERY, p_w))
    assert not result.ok
    assert message in result.reason
    assert fake.writes == []


def test_an_unbounded_setpoint_is_refused(make_sunspec_image):
    fake, writer = der_storage(make_sunspec_image, **{"802.WDisChaRteMax": 0xFFFF})
    result = writer.write(_setpoint("bat", SetpointKind.BATTERY, 1000))
    assert not result.ok
    assert "no bounds" in result.reason
    assert "refusing an unbounded write" in result.reason
    assert fake.writes == []


def test_704_pv_limit_and_its_enable(make_sunspec_image):
    regs = make_sunspec_image([1, 701, 702, 704], values={
        "702.W_SF": 0, "702.WMaxRtg": 8000, "704.WMaxLimPct_SF": 0xFFFE,
        "704.WMaxLimPct": 10000, "704.WMaxLimPctEna": 0,
    })  # fmt: skip
    fake = FakeRegisterClient(holding=regs)
    rmap = sunspec.discover(fake).register_map("pv")
    result = DeviceWriter(DeviceId("pv"), fake, rmap).write(
        _setpoint("pv", SetpointKind.PV_LIMIT, 2000)
    )
    assert result.ok, result.reason
    assert dict(result.written) == {"704.WMaxLimPct": 25.0, "704.WMaxLimPctEna": 1.0}
    assert result.readback_w == 2000


def test_124_storage_rates_pin_the_power(make_sunspec_image):
    regs = make_sunspec_image([1, 103, 120, 124], values={
        "124.WChaMax": 5000, "124.WChaMax_SF": 0, "124.InOutWRte_SF": 0xFFFE,
        "124.InWRte": 10000, "124.OutWRte": 10000, "124.StorCtl_Mod": 0,
    })  # fmt: skip
    fake = FakeRegisterClient(holding=regs)
    rmap = sunspec.discover(fake).register_map("bat")
    writer = DeviceWriter(DeviceId("bat"), fake, rmap)
    result = writer.write(_setpoint("bat", SetpointKind.BATTERY, 1500))  # discharge 30 %
    assert result.ok, result.reason
    assert dict(result.written) == {"124.InWRte": -30.0, "124.OutWRte": 30.0,
                                    "124.StorCtl_Mod": 3.0}  # fmt: skip
    assert result.readback_w == 1500
    in_rte = rmap.field("124.InWRte").address
    assert fake.registers["holding"][in_rte] == (-3000) & 0xFFFF
    fake.requests.clear()
    refused = writer.write(_setpoint("bat", SetpointKind.BATTERY, -6000))
    assert not refused.ok
    assert "beyond 124.WChaMax = 5000 W" in refused.reason
    assert fake.writes == []


def test_no_unlisted_or_out_of_range_write_reaches_the_wire(make_sunspec_image):
    """Whatever is asked, the only addresses written are the allow-listed ones."""
    fake, writer = der_storage(make_sunspec_image)
    allowed = {a for f in writer.register_map.writable_fields for a in range(f.address, f.end)}
    for p_w in (-(10**9), -4001, -4000, -1, 0, 1, 2999, 3000, 3001, 10**9):
        writer.write(_setpoint("bat", SetpointKind.BATTERY, p_w))
        writer.write(_setpoint("bat", SetpointKind.PV_LIMIT, p_w))
    written = {a for w in fake.writes for a in range(w.address, w.address + w.count)}
    assert written <= allowed
    values = [
        w.values for w in fake.writes if w.address == writer.register_map.field("704.WSet").address
    ]
    setpoints = {(v[0] << 16 | v[1]) - (1 << 32 if v[0] >> 15 else 0) for v in values}
    assert setpoints <= set(range(-4000, 3001))
