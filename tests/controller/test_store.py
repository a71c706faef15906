"""The database keeps the exactly-once rules, on SQLite and on PostgreSQL (``database_url``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from controller.store import Store
from market.domain import MeterReading, ReadingQuality


@pytest.fixture
def s(database_url: str) -> Iterator[Store]:
    """A new store on each backend, closed after the test (PostgreSQL: its pool)."""
    store = Store(database_url)
    yield store
    store.close()


def test_an_interval_is_claimed_once(s: Store) -> None:
    assert s.claim_interval(1_782_032_400, 900)
    assert not s.claim_interval(1_782_032_400, 900)
    assert s.record_tick(1_782_032_400, "ran")
    assert not s.record_tick(1_782_032_400, "ran")
    assert s.last_tick() == 1_782_032_400


def test_settlement_intent_is_recorded_once_and_resolvable(s: Store) -> None:
    batch = {"batch_id": "ab" * 32, "amounts": [["a", -5], ["b", 5]]}
    assert s.record_intent(7, "ab" * 32, batch)
    assert not s.record_intent(7, "ab" * 32, batch)
    assert [p.interval_id for p in s.pending_settlements()] == [7]
    s.mark_failed(7, "node down")
    assert [p.interval_id for p in s.pending_settlements()] == [7]
    s.mark_settled(7, tx_hash="0x01", block_number=3, gas_used=100)
    assert s.pending_settlements() == []
    assert s.settlement(7)["state"] == "settled"


def test_readings_round_trip_timezone_aware(s: Store) -> None:
    r = MeterReading(
        device_id="m",
        participant="p",
        bus="b",
        measured_at=datetime(2026, 6, 21, 12, tzinfo=UTC),
        p_w=-1500,
        import_wh_total=10,
        export_wh_total=20,
        quality=ReadingQuality.OK,
        soc_percent=40.5,
    )
    s.save_readings(100, {"m": r})
    s.save_readings(100, {"m": r})  # idempotent
    assert s.readings_at(100) == {"m": r}


def test_audit_record_hash(s: Store) -> None:
    h1 = s.save_audit(5, {"x": 1})
    h2 = s.save_audit(5, {"x": 2})
    assert h1 != h2
    assert [r["record"] for r in s.audit_records()] == [{"x": 2}]


def _cleared(store: Store, interval_id: int, params: dict[str, int] | None) -> None:
    """Claim ``interval_id`` and store a result whose inputs hold ``params`` (``None``: an
    abandoned interval, stored without inputs)."""
    assert store.claim_interval(interval_id, 900)
    result: dict[str, object] = {"reason": "x"}
    if params is not None:
        result["inputs"] = {"params": params}
    store.save_result(
        interval_id, status="cleared", reason="x", book_hash="", n_orders=0, result=result,
        setpoints=[],
    )  # fmt: skip


def test_the_gate_closure_in_force_is_the_one_the_latest_clearing_announced(s: Store) -> None:
    assert s.gate_closure_in_force(0, 900) == 0  # nothing cleared: the site file's
    _cleared(s, 900, {"gate_closure_s": 0, "interval_s": 900})  # an earlier release's record
    assert s.gate_closure_in_force(60, 900) == 60
    _cleared(s, 1800, {"gate_closure_s": 0, "next_gate_closure_s": 300})
    assert s.gate_closure_in_force(0, 900) == 300
    _cleared(s, 2700, None)  # abandoned: nothing read; the announcement before it stands
    assert s.gate_closure_in_force(0, 900) == 300
    s.claim_interval(3600, 900)  # claimed, no result yet
    assert s.gate_closure_in_force(0, 900) == 300
    assert s.gate_closure_in_force(0, 300) == 0  # not below a shorter interval: the file's
    _cleared(s, 4500, {"gate_closure_s": 300, "next_gate_closure_s": 0})
    assert s.gate_closure_in_force(120, 900) == 0


def test_signed_readings_keep_their_signature_and_the_last_accepted_sequence(s: Store) -> None:
    import dataclasses

    from market.domain import BusId, DeviceId, ParticipantId
    from market.signed_readings import ReadingPayload, new_private_key, sign

    key = new_private_key()

    def reading(device: str, seq: int, at: int, quality: ReadingQuality) -> MeterReading:
        payload = ReadingPayload(
            device_id=device, seq=seq, measured_at_ms=at * 1000, import_wh_total=seq,
            export_wh_total=0, p_w=0,
        )  # fmt: skip
        return MeterReading(
            device_id=DeviceId(device), participant=ParticipantId("p"), bus=BusId("b"),
            measured_at=datetime.fromtimestamp(at, UTC), p_w=0, import_wh_total=seq,
            export_wh_total=0, quality=quality, signed=sign(key, payload),
        )  # type: ignore[arg-type]  # fmt: skip

    ok, bad = ReadingQuality.OK, ReadingQuality.UNVERIFIED
    s.save_readings(900, {DeviceId("m1"): reading("m1", 5, 900, ok)}, key_block=7)
    refused = reading("m1", 9, 1800, bad)
    s.save_readings(
        1800, {DeviceId("m1"): refused, DeviceId("m2"): reading("m2", 3, 1800, ok)}, key_block=8
    )
    s.save_readings(2700, {DeviceId("m1"): reading("m1", 6, 2700, ok)}, key_block=9)
    back = s.readings_at(1800)
    assert back[DeviceId("m1")] == refused  # the signature round-trips
    assert s.key_blocks_at(1800) == [8]
    assert s.last_seqs(900) == {}
    assert s.last_seqs(1800) == {"m1": 5}
    assert s.last_seqs(2700) == {"m1": 5, "m2": 3}  # the unverified 9 was never accepted
    assert s.last_seqs(3600) == {"m1": 6, "m2": 3}
    unsigned = dataclasses.replace(reading("m3", 1, 3600, ok), signed=None)
    s.save_readings(3600, {DeviceId("m3"): unsigned})
    assert s.readings_at(3600)[DeviceId("m3")].signed is None
    assert "m3" not in s.last_seqs(4500)
