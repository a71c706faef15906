"""Signed readings: the encoding round-trips, signatures verify only unchanged, checks name why.

Property tests (hypothesis) over every field's range: encode/decode and the OCMF form
round-trip; a signature verifies under its key and under no other; any changed byte of the
message, the high-``s`` twin of a signature and another device's key all fail. The checks of
``check_reading`` each fail with their own reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.errors import InvalidQuantity
from market.signed_readings import (
    MAX_TIME_MS,
    P256_ORDER,
    PAYLOAD_BYTES,
    VERIFIED,
    ReadingPayload,
    SignedReading,
    check_reading,
    new_private_key,
    public_key_bytes,
    sign,
    signature_valid,
)

DEVICE_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", fullmatch=True)
U64 = st.integers(0, 2**64 - 1)

payloads = st.builds(
    ReadingPayload,
    device_id=DEVICE_IDS,
    seq=U64,
    measured_at_ms=st.integers(0, MAX_TIME_MS),
    import_wh_total=U64,
    export_wh_total=U64,
    p_w=st.integers(-(2**31), 2**31 - 1),
)

KEY = new_private_key()
OTHER = new_private_key()
PUBLIC = public_key_bytes(KEY)


@given(payloads)
def test_the_encoding_round_trips(payload: ReadingPayload) -> None:
    message = payload.encode()
    assert len(message) == PAYLOAD_BYTES
    assert ReadingPayload.decode(message) == payload


@settings(max_examples=60)
@given(payloads, st.data())
def test_a_signature_verifies_unchanged_and_nothing_else(
    payload: ReadingPayload, data: st.DataObject
) -> None:
    signed = sign(KEY, payload)
    assert signature_valid(PUBLIC, signed)
    assert not signature_valid(public_key_bytes(OTHER), signed)  # another device's key
    s = int.from_bytes(signed.signature[32:], "big")
    assert s <= P256_ORDER // 2  # low s only
    twin = SignedReading(payload, signed.signature[:32] + (P256_ORDER - s).to_bytes(32, "big"))
    assert not signature_valid(PUBLIC, twin)  # the high-s twin is refused
    # any one changed byte of the message: refused, or not even a message
    message = bytearray(payload.encode())
    at = data.draw(st.integers(0, PAYLOAD_BYTES - 1))
    message[at] ^= data.draw(st.integers(1, 255))
    try:
        changed = ReadingPayload.decode(bytes(message))
    except InvalidQuantity:
        return
    assert not signature_valid(PUBLIC, SignedReading(changed, signed.signature))


@settings(max_examples=60)
@given(payloads)
def test_the_ocmf_form_round_trips_and_must_agree_with_its_message(
    payload: ReadingPayload,
) -> None:
    signed = sign(KEY, payload)
    ocmf = signed.to_ocmf()
    assert SignedReading.from_ocmf(ocmf) == signed
    assert ocmf["MS"] == payload.device_id
    assert [r["RV"] for r in ocmf["RD"]] == [
        payload.import_wh_total,
        payload.export_wh_total,
        payload.p_w,
    ]
    edited: dict[str, Any] = {**ocmf, "RD": [dict(r) for r in ocmf["RD"]]}
    edited["RD"][0]["RV"] = payload.import_wh_total + 1
    with pytest.raises(InvalidQuantity, match="differ from its message"):
        SignedReading.from_ocmf(edited)


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (b"PGR1" + bytes(PAYLOAD_BYTES - 5), "is 112 bytes"),
        (b"PGR2" + b"m1" + bytes(PAYLOAD_BYTES - 6), "format"),
        (b"PGR1" + b"m1" + bytes(PAYLOAD_BYTES - 7) + b"\x01", "reserved"),
        (b"PGR1" + b"m\x001" + bytes(PAYLOAD_BYTES - 7), "NUL-padded"),
        (b"PGR1" + bytes(PAYLOAD_BYTES - 4), "1-64 bytes"),
    ],
)
def test_a_malformed_message_is_refused_with_its_reason(message: bytes, match: str) -> None:
    with pytest.raises(InvalidQuantity, match=match):
        ReadingPayload.decode(message)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("device_id", "x" * 65, "1-64 bytes"),
        ("device_id", "zähler", "not ASCII"),
        ("seq", -1, "0..2"),
        ("import_wh_total", 2**64, "0..2"),
        ("p_w", 2**31, "int32"),
        ("seq", True, "integer"),
        ("measured_at_ms", MAX_TIME_MS + 1, "year 9999"),
    ],
)
def test_a_field_out_of_its_range_is_refused(field: str, value: object, match: str) -> None:
    good = {
        "device_id": "m1",
        "seq": 1,
        "measured_at_ms": 0,
        "import_wh_total": 0,
        "export_wh_total": 0,
        "p_w": 0,
    }
    with pytest.raises(InvalidQuantity, match=match):
        ReadingPayload(**{**good, field: value})  # type: ignore[arg-type]


BOUNDARY_MS = 1_782_043_200_000


def reading(**fields: Any) -> ReadingPayload:
    base = {
        "device_id": "alice-meter",
        "seq": 42,
        "measured_at_ms": BOUNDARY_MS + 1_500,
        "import_wh_total": 12_345,
        "export_wh_total": 6_789,
        "p_w": -2_500,
    }
    return ReadingPayload(**{**base, **fields})


def verdict(signed: SignedReading, **over: Any) -> str:
    kwargs: dict[str, Any] = {
        "device_id": "alice-meter",
        "public_key": PUBLIC,
        "last_seq": 41,
        "boundary_ms": BOUNDARY_MS,
        "max_age_ms": 5_000,
        **over,
    }
    result = check_reading(signed, **kwargs)
    return "" if result is VERIFIED else result.reason


def test_each_way_a_reading_fails_its_checks_is_named() -> None:
    good = sign(KEY, reading())
    assert verdict(good) == ""
    forged = SignedReading(dataclasses.replace(good.payload, export_wh_total=9_999), good.signature)
    assert verdict(forged) == "signature not valid under alice-meter's key"
    assert verdict(sign(OTHER, reading())) == "signature not valid under alice-meter's key"
    assert verdict(good, last_seq=42) == "sequence 42 does not follow the last accepted 42"
    assert verdict(good, last_seq=50) == "sequence 42 does not follow the last accepted 50"
    late = sign(KEY, reading(measured_at_ms=BOUNDARY_MS - 900_000))
    assert verdict(late) == "measured -900.000 s from its boundary, more than 5 s"
    assert verdict(good, public_key=None) == "alice-meter has no registered key in force"
    assert verdict(sign(KEY, reading(device_id="bob-meter"))) == (
        "signed as device 'bob-meter', read from alice-meter"
    )
    assert "unusable" in verdict(good, public_key=bytes(64))
