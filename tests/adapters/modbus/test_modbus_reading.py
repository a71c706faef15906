"""DeviceReader against literal registers (OpenEMS DummyModbusBridge style)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from modbus_dumps import BATTERY, SDM630, SUNSPEC, BrokenClient

from adapters.modbus.errors import RegisterMapError
from adapters.modbus.fake import FakeRegisterClient
from adapters.modbus.mapfiles import load_register_map, parse_register_map
from adapters.modbus.reading import Backoff, DeviceReader
from market.domain import BusId, DeviceId, ParticipantId, ReadingQuality
from market.errors import InvalidInterval

T0 = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)
ALICE = ParticipantId("alice")
BUS = BusId("bus_1")


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


def test_unexpected_client_errors_never_escape():
    r = reader(BrokenClient(), "sdm630").read(T0)
    assert r.quality is ReadingQuality.MISSING
    assert "unexpected RuntimeError: driver bug" in r.reason


def test_naive_now_is_rejected():
    with pytest.raises(InvalidInterval, match="timezone-aware"):
        reader(FakeRegisterClient(input=SDM630), "sdm630").read(datetime(2026, 1, 1))  # noqa: DTZ001


def test_map_without_power_cannot_be_read():
    m = parse_register_map({"name": "m", "fields": [{"name": "x", "address": 0, "kind": "int16"}]})
    with pytest.raises(RegisterMapError, match="has no field for p_w"):
        DeviceReader(DeviceId("d"), ALICE, BUS, FakeRegisterClient(), m)
