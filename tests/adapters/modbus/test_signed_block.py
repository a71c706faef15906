"""The signed-reading block over real Modbus TCP on 127.0.0.1 (issue 17).

Simulators with a P-256 key serve the block; a ``DeviceReader`` reads it in one request of
88 input registers and its reading carries the signed power, counters and time, which verify
under the simulator's public key and equal the map's own registers. Each of the simulator's
tampers (forged counters, a replayed block, another key, a late clock) fails the check it
should, and a device with no measurement yet is UNVERIFIED with the reason. The register
codec round-trips (hypothesis) and refuses what is not a block.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.modbus.client import ModbusTkClient
from adapters.modbus.errors import CodecError, InvalidArgument
from adapters.modbus.mapfiles import load_register_map
from adapters.modbus.reading import DeviceReader
from adapters.modbus.signed_block import BLOCK_REGISTERS, from_registers, to_registers
from adapters.modbus.simulators import LoadMeterSim, PVInverterSim, constant_profile
from adapters.modbus.simulators.base import DeviceSimulator, SignedTamper
from market.domain import BusId, DeviceId, MeterReading, ParticipantId, ReadingQuality
from market.signed_readings import (
    ReadingPayload,
    check_reading,
    new_private_key,
    sign,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

T0 = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)
BLOCK = 0x7000
KEY = new_private_key()


@pytest.fixture
def pv(no_leaks: object) -> Iterator[DeviceSimulator]:
    sim = PVInverterSim(
        5000,
        constant_profile(4000),
        start_at=T0,
        device_id="alice-pv",
        signed_block=BLOCK,
        signing_key=KEY,
    )
    with sim:
        yield sim


def reader_of(sim: DeviceSimulator, map_name: str) -> tuple[DeviceReader, ModbusTkClient]:
    client = ModbusTkClient("127.0.0.1", sim.port, 1, timeout_s=0.5, retries=1, backoff_s=0.01)
    reader = DeviceReader(
        DeviceId(sim.device_id),
        ParticipantId("alice"),
        BusId("b1"),
        client,
        load_register_map(map_name),
        signed_block=BLOCK,
    )
    return reader, client


def verdict(reading: MeterReading, sim: DeviceSimulator, last_seq: int | None, at: datetime) -> str:
    assert reading.signed is not None
    result = check_reading(
        reading.signed,
        device_id=sim.device_id,
        public_key=sim.public_key,
        last_seq=last_seq,
        boundary_ms=int(at.timestamp() * 1000),
        max_age_ms=60_000,
    )
    return result.reason


def test_the_signed_block_is_read_in_one_request_and_verifies(pv: DeviceSimulator) -> None:
    reader, client = reader_of(pv, "sunspec_inverter")
    plain = DeviceReader(
        DeviceId("alice-pv"), ParticipantId("alice"), BusId("b1"), client,
        load_register_map("sunspec_inverter"),
    )  # fmt: skip
    try:
        pv.advance(T0 + timedelta(minutes=15))
        first = reader.read(T0 + timedelta(minutes=15))
        unsigned = plain.read(T0 + timedelta(minutes=15))
        assert first.quality is ReadingQuality.OK
        assert first.signed is not None
        assert verdict(first, pv, None, T0 + timedelta(minutes=15)) == ""
        # the signed values are the map's own, at the simulated time
        assert (first.p_w, first.import_wh_total, first.export_wh_total) == (
            unsigned.p_w,
            unsigned.import_wh_total,
            unsigned.export_wh_total,
        )
        assert first.export_wh_total == 1000  # 4 kW for a quarter hour
        assert first.measured_at == T0 + timedelta(minutes=15)
        pv.advance(T0 + timedelta(minutes=30))
        second = reader.read(T0 + timedelta(minutes=30))
        assert second.signed is not None
        assert second.signed.payload.seq > first.signed.payload.seq
        assert verdict(second, pv, first.signed.payload.seq, T0 + timedelta(minutes=30)) == ""
    finally:
        client.close()


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (SignedTamper.FORGED, "signature not valid under alice-pv's key"),
        (SignedTamper.FOREIGN_KEY, "signature not valid under alice-pv's key"),
        (SignedTamper.REPLAYED, "does not follow the last accepted"),
        (SignedTamper.LATE, "from its boundary, more than 60 s"),
    ],
)
def test_each_tamper_fails_its_check(
    pv: DeviceSimulator, tamper: SignedTamper, reason: str
) -> None:
    reader, client = reader_of(pv, "sunspec_inverter")
    try:
        last = None
        for k in (1, 2):
            pv.advance(T0 + timedelta(minutes=15 * k))
            good = reader.read(T0 + timedelta(minutes=15 * k))
            assert verdict(good, pv, last, T0 + timedelta(minutes=15 * k)) == ""
            assert good.signed is not None
            last = good.signed.payload.seq
        pv.signed_tamper = tamper
        at = T0 + timedelta(minutes=45)
        pv.advance(at)
        bad = reader.read(at)
        assert reason in verdict(bad, pv, last, at)
    finally:
        client.close()


def test_a_device_that_has_not_measured_yet_is_unverified(no_leaks: object) -> None:
    sim = LoadMeterSim(
        constant_profile(1500), device_id="bob-meter", signed_block=BLOCK, signing_key=KEY
    )
    with sim:
        reader, client = reader_of(sim, "sdm630")
        try:
            reading = reader.read(T0)
        finally:
            client.close()
    assert reading.quality is ReadingQuality.UNVERIFIED
    assert reading.signed is None
    assert reading.reason.startswith("signed block: not a signed reading: format")


def test_a_signed_block_needs_a_key_and_room() -> None:
    with pytest.raises(InvalidArgument, match="needs a signing key"):
        LoadMeterSim(constant_profile(1), signed_block=BLOCK)
    with pytest.raises(InvalidArgument, match="signed block at 0"):  # overlaps the map
        LoadMeterSim(constant_profile(1), signed_block=0, signing_key=KEY)


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(-(2**31), 2**31 - 1),
)
def test_the_register_codec_round_trips(seq: int, counter: int, p_w: int) -> None:
    payload = ReadingPayload(
        device_id="m1",
        seq=seq,
        measured_at_ms=1_782_043_200_000,
        import_wh_total=counter,
        export_wh_total=counter // 2,
        p_w=p_w,
    )
    signed = sign(KEY, payload)
    registers = to_registers(signed)
    assert len(registers) == BLOCK_REGISTERS <= 125
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert from_registers(registers) == signed


def test_what_is_not_a_block_is_refused() -> None:
    with pytest.raises(CodecError, match="88 registers"):
        from_registers([0] * 87)
    with pytest.raises(CodecError, match="16-bit"):
        from_registers([0x10000] + [0] * 87)
    with pytest.raises(CodecError, match="not a signed reading"):
        from_registers([0] * 88)
