"""Poller: many devices in one cycle, concurrently; a dead, slow or raising device never stops
or stretches the cycle beyond its deadline. Unit tests with fake readers, then real
simulators over loopback TCP with injected faults."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from adapters.modbus.client import ModbusTkClient
from adapters.modbus.errors import DeviceError, DeviceUnavailable, InvalidFrame
from adapters.modbus.fake import FakeRegisterClient
from adapters.modbus.mapfiles import load_register_map
from adapters.modbus.polling import Poller, poll_all
from adapters.modbus.reading import Backoff, DeviceReader
from adapters.modbus.simulators import (
    BatterySim,
    LoadMeterSim,
    PVInverterSim,
    SimulatedSite,
    constant_profile,
)
from market.domain import BusId, DeviceId, MeterReading, ParticipantId, ReadingQuality
from market.errors import InvalidInterval

T0 = datetime(2026, 6, 21, 12, tzinfo=UTC)


class Scripted:
    """A reader that waits on an event, or raises, or answers at once."""

    def __init__(self, name, *, gate=None, boom=None):
        self.device_id = DeviceId(name)
        self.participant = ParticipantId("p")
        self.bus = BusId("b")
        self.gate = gate
        self.boom = boom
        self.threads = set()

    def read(self, now):
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(5)
        if self.boom is not None:
            raise self.boom
        return MeterReading(
            device_id=self.device_id, participant=self.participant, bus=self.bus,
            measured_at=now, p_w=1, import_wh_total=0, export_wh_total=0,
        )  # fmt: skip


def test_poll_reads_every_device_in_parallel_and_keeps_the_order(no_leaks):
    gate = threading.Event()
    readers = {DeviceId(f"d{i}"): Scripted(f"d{i}", gate=gate) for i in range(8)}
    threading.Timer(0.05, gate.set).start()  # all eight must be waiting at once to pass
    with Poller(readers, max_workers=8) as poller:
        readings = poller.poll(T0)
    assert list(readings) == list(readers)
    assert all(r.quality is ReadingQuality.OK for r in readings.values())
    assert len({t for r in readers.values() for t in r.threads}) == 8
    assert poller.last_cycle_s < 1


def test_a_raising_reader_is_missing_not_fatal(no_leaks):
    readers = {
        DeviceId("ok"): Scripted("ok"),
        DeviceId("bug"): Scripted("bug", boom=ZeroDivisionError("oops")),
    }
    readings = poll_all(readers, T0)
    assert readings[DeviceId("ok")].quality is ReadingQuality.OK
    bug = readings[DeviceId("bug")]
    assert bug.quality is ReadingQuality.MISSING
    assert bug.reason == "reader failed: ZeroDivisionError: oops"


def test_the_deadline_ends_the_cycle_and_a_late_read_is_not_doubled(no_leaks):
    gate = threading.Event()
    slow = Scripted("slow", gate=gate)
    readers = {DeviceId("fast"): Scripted("fast"), DeviceId("slow"): slow}
    with Poller(readers, deadline_s=0.1) as poller:
        started = time.perf_counter()
        first = poller.poll(T0)
        assert time.perf_counter() - started < 0.5
        assert first[DeviceId("fast")].quality is ReadingQuality.OK
        assert first[DeviceId("slow")].quality is ReadingQuality.MISSING
        assert "no answer within the cycle deadline (0.1 s)" in first[DeviceId("slow")].reason
        second = poller.poll(T0 + timedelta(seconds=1))
        assert "previous read still running" in second[DeviceId("slow")].reason
        gate.set()
        time.sleep(0.05)
        third = poller.poll(T0 + timedelta(seconds=2))
        assert third[DeviceId("slow")].quality is ReadingQuality.OK


def test_a_device_reader_past_the_deadline_stands_in_with_stale_values(no_leaks):
    fake = FakeRegisterClient(input={0x34: 0x447A, 0x35: 0})  # 1000 W
    meter = DeviceReader(
        DeviceId("m"), ParticipantId("p"), BusId("b"), fake, load_register_map("sdm630"),
        max_age_s=60,
    )  # fmt: skip
    meter.read(T0)
    stale = meter.unavailable(T0 + timedelta(seconds=10), "no answer within the cycle deadline")
    assert stale.quality is ReadingQuality.STALE
    assert stale.p_w == 1000
    assert "no answer within the cycle deadline" in stale.reason


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_workers"):
        Poller({}, max_workers=0)
    with pytest.raises(ValueError, match="deadline_s"):
        Poller({}, deadline_s=0)
    with Poller({}) as poller, pytest.raises(InvalidInterval):
        poller.poll(datetime(2026, 6, 21, 12))  # noqa: DTZ001 - naive on purpose


# ---------------------------------------------------------------------------- real devices


def _sims(n):
    kinds = [
        lambda: PVInverterSim(5000, constant_profile(3000), start_at=T0),
        lambda: LoadMeterSim(constant_profile(800), start_at=T0),
        lambda: BatterySim(10_000, 5000, start_at=T0),
        lambda: PVInverterSim(8000, constant_profile(2000), start_at=T0,
                              register_map="sunspec_der_inverter"),
        lambda: LoadMeterSim(constant_profile(-300), start_at=T0, register_map="sunspec_meter"),
    ]  # fmt: skip
    return {f"dev{i:02d}": kinds[i % len(kinds)]() for i in range(n)}


@pytest.fixture
def fleet(no_leaks):
    site = SimulatedSite(_sims(15))
    with site:
        clients = {
            name: ModbusTkClient("127.0.0.1", sim.port, 1, timeout_s=0.2, retries=1, backoff_s=0)
            for name, sim in site.simulators.items()
        }
        readers = {
            DeviceId(name): DeviceReader(
                DeviceId(name), ParticipantId("p"), BusId("b"), clients[name],
                sim.register_map, backoff=Backoff(initial_s=30, max_s=300),
            )
            for name, sim in site.simulators.items()
        }  # fmt: skip
        yield site, readers, clients
        for client in clients.values():
            client.close()


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_faults_never_stop_a_cycle_and_dead_devices_are_paused(fleet):
    site, readers, _ = fleet
    site["dev01"].set_fault("no_answer")
    site["dev02"].set_fault("exception")
    site["dev03"].set_fault("corrupt")
    site["dev04"].stop()
    site["dev05"].set_fault("slow", delay_s=0.5)
    with Poller(readers) as poller:
        first = poller.poll(T0)
        first_s = poller.last_cycle_s
        second = poller.poll(T0 + timedelta(seconds=1))
        second_s = poller.last_cycle_s
    bad = {"dev01": "timed out", "dev02": "Modbus exception code 4", "dev03": "byte count",
           "dev04": "connection refused", "dev05": "timed out"}  # fmt: skip
    for name, reading in first.items():
        if name in bad:
            assert reading.quality is ReadingQuality.MISSING, name
            assert bad[name] in reading.reason, (name, reading.reason)
        else:
            assert reading.quality is ReadingQuality.OK, (name, reading.reason)
    # Worst device: 2 attempts x 0.2 s timeout. Everything else in parallel.
    assert first_s < 1.0
    # Second cycle: the five are paused (backoff 30 s) and answer at once.
    assert all("paused after 1 failure" in second[n].reason for n in bad)
    assert second_s < 0.2
    assert sum(r.quality is ReadingQuality.OK for r in second.values()) == 10


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_injected_faults_seen_by_the_client(fleet):
    site, _, clients = fleet
    pv = site["dev00"]
    client = clients["dev00"]
    pv.set_fault("corrupt")
    with pytest.raises(InvalidFrame, match="byte count"):
        client.read_registers("holding", 40000, 2)
    pv.set_fault("exception")
    with pytest.raises(DeviceError) as info:
        client.read_registers("holding", 40000, 2)
    assert info.value.code == 4
    pv.set_fault("slow", delay_s=0.3)
    with pytest.raises(DeviceUnavailable, match="timed out"):
        client.read_registers("holding", 40000, 2)
    pv.set_fault("none")
    time.sleep(0.4)  # the late answers arrive; the next request must not take them
    assert client.read_registers("holding", 40000, 2) == [0x5375, 0x6E53]
    assert pv.fault.value == "none"
