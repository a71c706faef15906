"""``map = "sunspec"``: models discovered on first contact, the map kept, failures as values.

Against literal SunSpec register images (``make_sunspec_image``) in a FakeRegisterClient;
the simulators over TCP and RTU are in tests/controller/test_site_devices.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.modbus.discovered import DiscoveredMap, DiscoveringReader, DiscoveringWriter
from adapters.modbus.fake import FakeRegisterClient
from adapters.modbus.reading import Backoff
from market.domain import (
    BusId,
    DeviceId,
    Interval,
    ParticipantId,
    ReadingQuality,
    Setpoint,
    SetpointKind,
)

T0 = datetime(2026, 6, 21, 12, tzinfo=UTC)
NO_PAUSE = Backoff(initial_s=0, max_s=0)
INVERTER = {"103.W": 3000, "103.W_SF": 0, "103.WH": [0, 4000], "103.WH_SF": 0}


def _reader(client: FakeRegisterClient, max_age_s: float = 0.0) -> DiscoveringReader:
    found = DiscoveredMap(client, "sunspec:pv")
    return DiscoveringReader(
        DeviceId("pv"), ParticipantId("alice"), BusId("b"), found, max_age_s, backoff=NO_PAUSE
    )


def _discoveries(client: FakeRegisterClient) -> int:
    """How often the SunSpec marker at 40000 was read (once per discovery)."""
    return sum(1 for r in client.requests if r.address == 40000 and r.count == 2)


def test_models_are_discovered_once_and_read_through(make_sunspec_image) -> None:
    client = FakeRegisterClient(holding=make_sunspec_image([1, 103], values=INVERTER))
    reader = _reader(client)
    assert reader.found.register_map is None
    first = reader.read(T0)
    assert first.quality is ReadingQuality.OK, first.reason
    assert (first.p_w, first.export_wh_total) == (-3000, 4000)  # production is export
    found = reader.found.register_map
    assert found is not None
    assert "models 1, 103" in found.description
    for k in range(1, 4):
        assert reader.read(T0 + timedelta(minutes=k)).quality is ReadingQuality.OK
    assert reader.found.register_map is found
    assert _discoveries(client) == 1


def test_a_failed_discovery_is_missing_with_its_reason_and_tried_again(make_sunspec_image):
    client = FakeRegisterClient(holding=make_sunspec_image([1, 103], values=INVERTER))
    client.set_fault("unavailable")
    reader = _reader(client)
    missing = reader.read(T0)
    assert missing.quality is ReadingQuality.MISSING
    assert missing.reason.startswith("SunSpec discovery failed: ")
    assert "unavailable" in missing.reason
    assert reader.found.register_map is None
    client.set_fault("none")
    assert reader.read(T0 + timedelta(minutes=1)).quality is ReadingQuality.OK


def test_a_device_without_sunspec_is_missing_not_an_exception() -> None:
    reader = _reader(FakeRegisterClient(fill=None))  # every holding address is illegal
    reading = reader.read(T0)
    assert reading.quality is ReadingQuality.MISSING
    assert "no SunSpec marker 'SunS' at 40000, 0, 50000" in reading.reason


def test_a_chain_without_a_power_point_is_missing_and_rediscovered(make_sunspec_image):
    client = FakeRegisterClient(holding=make_sunspec_image([1]))  # the common model only
    reader = _reader(client)
    reading = reader.read(T0)
    assert reading.quality is ReadingQuality.MISSING
    assert reading.reason.startswith("SunSpec device cannot be read: ")
    assert "no field for p_w" in reading.reason
    assert reader.found.register_map is None  # the device may still be booting: ask again
    reader.read(T0 + timedelta(minutes=1))
    assert _discoveries(client) == 2


def test_changed_models_are_discovered_again(make_sunspec_image) -> None:
    """The device goes away and comes back with new firmware that puts model 101 where 103
    was: the identity check after the outage fails (STALE from the last good values), the
    map is dropped, and the next read discovers the new chain."""
    client = FakeRegisterClient(holding=make_sunspec_image([1, 103], values=INVERTER))
    reader = _reader(client, max_age_s=600)
    assert reader.read(T0).quality is ReadingQuality.OK
    client.set_fault("unavailable")
    assert reader.read(T0 + timedelta(minutes=1)).quality is ReadingQuality.STALE
    single_phase = {"101.W": 1500, "101.W_SF": 0, "101.WH": [0, 4100], "101.WH_SF": 0}
    client.registers = FakeRegisterClient(
        holding=make_sunspec_image([1, 101], values=single_phase)
    ).registers
    client.set_fault("none")
    changed = reader.read(T0 + timedelta(minutes=2))
    assert changed.quality is ReadingQuality.STALE
    assert "identity check failed: 103.ID is 101, expected 103" in changed.reason
    assert reader.found.register_map is None
    again = reader.read(T0 + timedelta(minutes=3))
    assert again.quality is ReadingQuality.OK, again.reason
    assert (again.p_w, again.export_wh_total) == (-1500, 4100)
    assert _discoveries(client) == 2


def test_the_writer_shares_the_readers_map_and_reports_a_failed_discovery(
    make_sunspec_image,
) -> None:
    regs = make_sunspec_image([1, 103, 120, 123], values={**INVERTER, "123.WMaxLimPct_SF": 0})
    client = FakeRegisterClient(holding=regs)
    reader = _reader(client)
    writer = DiscoveringWriter(DeviceId("pv"), reader.found, rated_w=5000)
    limit = Setpoint(
        device_id=DeviceId("pv"), interval=Interval(T0), kind=SetpointKind.PV_LIMIT, p_w=2000
    )
    client.set_fault("unavailable")
    refused = writer.write(limit)
    assert not refused.ok
    assert refused.reason.startswith("SunSpec discovery failed: ")
    assert client.writes == []
    client.set_fault("none")
    client.requests.clear()
    written = writer.write(limit)
    assert written.ok, written.reason
    assert dict(written.written)["123.WMaxLimPct"] == 40.0  # 2000 W of 5000 W
    assert reader.read(T0).quality is ReadingQuality.OK
    assert _discoveries(client) == 1  # the reader uses the map the writer found
