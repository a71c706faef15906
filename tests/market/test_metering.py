"""Metered energy from counter readings at an interval's two boundaries (``market.metering``)."""

from __future__ import annotations

import pytest
from market_factories import INTERVAL, meter_reading, snapshots

from market.domain import DeviceId, MeterReading, MeterRole, ParticipantId, ReadingQuality
from market.errors import SettlementError
from market.metering import Meter, MeteredEnergy, counting_devices, metered_energy

ALICE = ParticipantId("alice")
T0, T1 = INTERVAL.start, INTERVAL.end


def test_counter_deltas_are_summed_over_a_participants_devices() -> None:
    start = {
        DeviceId("a-meter"): meter_reading("a-meter", ALICE, T0, 10_000, 500),
        DeviceId("a-pv"): meter_reading("a-pv", ALICE, T0, 7, 90_000),
    }
    end = {
        DeviceId("a-meter"): meter_reading("a-meter", ALICE, T1, 10_400, 520),
        DeviceId("a-pv"): meter_reading("a-pv", ALICE, T1, 8, 90_900),
    }
    assert metered_energy(start, end) == {
        ALICE: MeteredEnergy(
            participant=ALICE,
            import_wh=401,  # type: ignore[arg-type]
            export_wh=920,  # type: ignore[arg-type]
            counted=(DeviceId("a-meter"), DeviceId("a-pv")),
            unsigned=(DeviceId("a-meter"), DeviceId("a-pv")),  # read without signatures
        )
    }


def test_every_device_problem_is_named_in_device_order() -> None:
    start = {
        DeviceId("m-3"): meter_reading("m-3", ALICE, T0, 500, 0),
        DeviceId("m-2"): meter_reading("m-2", ALICE, T0, 0, 0, ReadingQuality.STALE),
        DeviceId("m-1"): meter_reading("m-1", ALICE, T0, 100, 0),
    }
    end = {
        DeviceId("m-3"): meter_reading("m-3", ALICE, T1, 499, 0),  # reset
        DeviceId("m-2"): meter_reading("m-2", ALICE, T1, 0, 0),
        DeviceId("m-1"): meter_reading("m-1", ALICE, T1, 150, 0),
    }
    (alice,) = metered_energy(start, end).values()
    assert not alice.complete
    assert alice.import_wh == 50  # what did read is still reported
    assert alice.reason == "m-2: reading stale/ok; m-3: counter went backwards (meter reset?)"


def test_listed_meters_name_unread_devices_and_participants_without_any() -> None:
    start, end = snapshots(("alice", 5, 0, True))
    meters = {
        ALICE: [
            Meter(DeviceId("alice-meter"), MeterRole.LOAD),
            Meter(DeviceId("alice-battery"), MeterRole.STORAGE),
        ],
        ParticipantId("bob"): [],
    }
    metered = metered_energy(start, end, meters)
    assert metered[ALICE].reason == "alice-battery: no reading at the interval's start or end"
    assert metered[ALICE].import_wh == 5
    assert metered[ParticipantId("bob")].reason == "no metering device: energy cannot be verified"
    assert set(metered) == set(meters)


def test_without_a_list_a_device_read_at_one_end_only_is_incomplete() -> None:
    start, end = snapshots(("alice", 5, 0, True), ("bob", 0, 7, True))
    del start[DeviceId("bob-meter")]
    metered = metered_energy(start, end)
    assert metered[ALICE].complete
    assert not metered[ParticipantId("bob")].complete
    assert metered[ParticipantId("bob")].reason == (
        "bob-meter: no reading at the interval's start or end"
    )


def test_negative_metered_energy_is_refused() -> None:
    with pytest.raises(SettlementError, match="counter go backwards"):
        MeteredEnergy(participant=ALICE, import_wh=-1, export_wh=0)  # type: ignore[arg-type]
    with pytest.raises(SettlementError, match=">= 0 Wh"):
        MeteredEnergy(participant=ALICE, import_wh=0, export_wh=-5)  # type: ignore[arg-type]


def _net_and_pv() -> tuple[dict[DeviceId, MeterReading], dict[DeviceId, MeterReading]]:
    """A net meter importing 300 Wh and exporting 50 Wh, and a PV behind it making 900 Wh."""
    start = {
        DeviceId("a-net"): meter_reading("a-net", ALICE, T0, 10_000, 500),
        DeviceId("a-pv"): meter_reading("a-pv", ALICE, T0, 0, 90_000),
    }
    end = {
        DeviceId("a-net"): meter_reading("a-net", ALICE, T1, 10_300, 550),
        DeviceId("a-pv"): meter_reading("a-pv", ALICE, T1, 0, 90_900),
    }
    return start, end


def test_a_connection_point_meter_alone_meters_its_participant() -> None:
    start, end = _net_and_pv()
    meters = {
        ALICE: [
            Meter(DeviceId("a-pv"), MeterRole.GENERATION),
            Meter(DeviceId("a-net"), MeterRole.CONNECTION_POINT),
        ]
    }
    alice = metered_energy(start, end, meters)[ALICE]
    assert (alice.import_wh, alice.export_wh, alice.complete) == (300, 50, True)
    assert alice.counted == (DeviceId("a-net"),)


def test_without_a_connection_point_every_device_is_summed() -> None:
    """The same readings with the net meter declared a load: the PV is counted on top."""
    start, end = _net_and_pv()
    meters = {
        ALICE: [
            Meter(DeviceId("a-net"), MeterRole.LOAD),
            Meter(DeviceId("a-pv"), MeterRole.GENERATION),
        ]
    }
    alice = metered_energy(start, end, meters)[ALICE]
    assert (alice.import_wh, alice.export_wh) == (300, 950)


def test_counting_devices_prefers_every_connection_point_meter() -> None:
    meters = [
        Meter(DeviceId("pv"), MeterRole.GENERATION),
        Meter(DeviceId("cp-1"), MeterRole.CONNECTION_POINT),
        Meter(DeviceId("bat"), MeterRole.STORAGE),
        Meter(DeviceId("cp-2"), MeterRole.CONNECTION_POINT),
    ]
    assert counting_devices(meters) == (DeviceId("cp-1"), DeviceId("cp-2"))
    assert counting_devices(meters[:1] + meters[2:3]) == (DeviceId("pv"), DeviceId("bat"))
    assert counting_devices([]) == ()


def test_a_meter_role_is_a_known_role() -> None:
    assert Meter(DeviceId("m"), "load").role is MeterRole.LOAD  # type: ignore[arg-type]
    with pytest.raises(SettlementError, match="unknown meter role 'net'"):
        Meter(DeviceId("m"), "net")  # type: ignore[arg-type]
