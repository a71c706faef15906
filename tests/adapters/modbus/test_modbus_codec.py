"""The pure codec against literal register vectors (pymodbus style)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.modbus.codec import (
    RegisterKind,
    WordOrder,
    apply_scale_factor,
    decode,
    decode_scale_factor,
    encode,
    register_count,
    remove_scale_factor,
)
from adapters.modbus.errors import AdapterError, CodecError

K = RegisterKind
ABCD = WordOrder.ABCD
CDAB = WordOrder.CDAB

# (kind, word order, registers, value): decode(registers) == value and encode(value) == registers
VECTORS = [
    (K.INT16, ABCD, [0x0000], 0),
    (K.INT16, ABCD, [0x7FFF], 32767),
    (K.INT16, ABCD, [0xFFFE], -2),
    (K.INT16, ABCD, [0x8001], -32767),
    (K.SUNSSF, ABCD, [0xFFFE], -2),
    (K.SUNSSF, ABCD, [0x0003], 3),
    (K.UINT16, ABCD, [0x1234], 0x1234),
    (K.UINT16, ABCD, [0xFFFE], 65534),
    (K.ENUM16, ABCD, [0x0001], 1),
    (K.INT32, ABCD, [0xFFFF, 0xFFFE], -2),
    (K.INT32, CDAB, [0xFFFE, 0xFFFF], -2),
    (K.INT32, ABCD, [0x0001, 0x0000], 65536),
    (K.INT32, CDAB, [0x0001, 0x0000], 1),
    (K.INT32, ABCD, [0x7FFF, 0xFFFF], 2**31 - 1),
    (K.UINT32, ABCD, [0x1234, 0x5678], 0x12345678),
    (K.UINT32, CDAB, [0x1234, 0x5678], 0x56781234),
    (K.ACC32, ABCD, [0x0001, 0xE240], 123456),
    (K.ACC32, CDAB, [0xE240, 0x0001], 123456),
    (K.FLOAT32, ABCD, [0x4479, 0xC000], 999.0),
    (K.FLOAT32, CDAB, [0xC000, 0x4479], 999.0),
    (K.FLOAT32, ABCD, [0x3F80, 0x0000], 1.0),
    (K.FLOAT32, ABCD, [0xC120, 0x0000], -10.0),
    (K.FLOAT32, ABCD, [0x449A, 0x5000], 1234.5),
    (K.INT64, ABCD, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], -2),
    (K.INT64, CDAB, [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF], -2),
    (K.UINT64, ABCD, [0x0000, 0x0001, 0x0000, 0x0000], 2**32),
    (K.UINT64, CDAB, [0x0000, 0x0000, 0x0001, 0x0000], 2**32),
    (K.ACC64, ABCD, [0x0000, 0x0000, 0x0000, 0x0007], 7),
    (K.FLOAT64, ABCD, [0x3FF0, 0x0000, 0x0000, 0x0000], 1.0),
    (K.FLOAT64, CDAB, [0x0000, 0x0000, 0x0000, 0x3FF0], 1.0),
    (K.ACC16, ABCD, [0x0102], 258),
    (K.BITFIELD16, ABCD, [0x8001], 0x8001),
    (K.ENUM32, ABCD, [0x0000, 0x0002], 2),
    (K.ENUM32, CDAB, [0x0002, 0x0000], 2),
    (K.BITFIELD32, ABCD, [0x8000, 0x0001], 0x80000001),
]


@pytest.mark.parametrize(("kind", "order", "registers", "value"), VECTORS)
def test_decode_literal_vectors(kind, order, registers, value):
    assert decode(registers, kind, order) == value


@pytest.mark.parametrize(("kind", "order", "registers", "value"), VECTORS)
def test_encode_literal_vectors(kind, order, registers, value):
    assert encode(value, kind, order) == registers


# SunSpec "not implemented": None, unless sunspec_nulls=False
NOT_IMPLEMENTED = [
    (K.INT16, [0x8000], -32768),
    (K.SUNSSF, [0x8000], -32768),
    (K.UINT16, [0xFFFF], 65535),
    (K.ENUM16, [0xFFFF], 65535),
    (K.INT32, [0x8000, 0x0000], -(2**31)),
    (K.UINT32, [0xFFFF, 0xFFFF], 2**32 - 1),
    (K.ACC32, [0x0000, 0x0000], 0),
    (K.INT64, [0x8000, 0, 0, 0], -(2**63)),
    (K.UINT64, [0xFFFF] * 4, 2**64 - 1),
    (K.ACC64, [0, 0, 0, 0], 0),
    (K.ACC16, [0x0000], 0),
    (K.BITFIELD16, [0xFFFF], 65535),
    (K.ENUM32, [0xFFFF, 0xFFFF], 2**32 - 1),
    (K.BITFIELD32, [0xFFFF, 0xFFFF], 2**32 - 1),
]


@pytest.mark.parametrize(("kind", "registers", "raw"), NOT_IMPLEMENTED)
def test_sunspec_not_implemented_decodes_to_none(kind, registers, raw):
    assert decode(registers, kind) is None
    assert decode(registers, kind, sunspec_nulls=False) == raw
    assert encode(None, kind) == registers


@pytest.mark.parametrize(
    ("kind", "registers"), [(K.FLOAT32, [0x7FC0, 0x0000]), (K.FLOAT64, [0x7FF8, 0, 0, 0])]
)
def test_nan_is_none_always(kind, registers):
    assert decode(registers, kind) is None
    assert decode(registers, kind, sunspec_nulls=False) is None
    assert math.isnan(
        __import__("struct").unpack(">f" if kind is K.FLOAT32 else ">d", b"".join(
            r.to_bytes(2, "big") for r in encode(None, kind)))[0]
    )  # fmt: skip


def test_strings():
    assert decode([0x5375, 0x6E53], K.STRING) == "SunS"
    assert decode([0x4142, 0x4300, 0x0000], K.STRING) == "ABC"
    assert decode([0x4142, 0x2020], K.STRING) == "AB"  # trailing blanks dropped
    assert decode([0, 0], K.STRING) is None
    assert decode([0, 0], K.STRING, sunspec_nulls=False) == ""
    assert encode("SunS", K.STRING, length=2) == [0x5375, 0x6E53]
    assert encode("ABC", K.STRING, length=3) == [0x4142, 0x4300, 0x0000]
    # word order never applies to strings
    assert encode("SunS", K.STRING, CDAB, length=2) == [0x5375, 0x6E53]


def test_register_count():
    assert register_count(K.INT16) == 1
    assert register_count(K.ACC32) == 2
    assert register_count(K.FLOAT64) == 4
    assert register_count(K.STRING, 8) == 8
    with pytest.raises(CodecError, match="length"):
        register_count(K.STRING)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: decode([1, 2], K.INT16), "takes 1 register"),
        (lambda: decode([1], K.FLOAT32), "takes 2 register"),
        (lambda: decode([0x10000], K.UINT16), "0..65535"),
        (lambda: decode([-1], K.UINT16), "0..65535"),
        (lambda: decode([], K.STRING), "at least one"),
        (lambda: encode(40000, K.INT16), "does not fit"),
        (lambda: encode(-1, K.UINT16), "does not fit"),
        (lambda: encode(2**32, K.UINT32), "does not fit"),
        (lambda: encode(1.5, K.INT32), "not an integer"),
        (lambda: encode("7", K.INT32), "expected an integer"),
        (lambda: encode(True, K.UINT16), "expected an integer"),
        (lambda: encode("x", K.FLOAT32), "expected a number"),
        (lambda: encode(1e39, K.FLOAT32), "does not fit"),
        (lambda: encode("too long", K.STRING, length=2), "longer than 2 registers"),
        (lambda: encode("Grüße", K.STRING, length=8), "not ASCII"),
        (lambda: encode(5, K.STRING, length=2), "expected str"),
    ],
)
def test_codec_errors(call, match):
    with pytest.raises(CodecError, match=match) as info:
        call()
    assert isinstance(info.value, AdapterError)
    assert isinstance(info.value, ValueError)


def test_integral_floats_encode():
    assert encode(3.0, K.INT16) == [3]


def test_scale_factors():
    assert decode_scale_factor(0xFFFE) == -2
    assert decode_scale_factor(0x0000) == 0
    assert decode_scale_factor(0x8000) is None
    with pytest.raises(CodecError, match=r"outside -10\.\.10"):
        decode_scale_factor(0x000B)
    assert apply_scale_factor(1234, -1) == 123.4
    assert apply_scale_factor(3000, -2) == 30.0
    assert apply_scale_factor(5, 3) == 5000.0
    assert apply_scale_factor(None, 0) is None
    assert apply_scale_factor(5, None) is None
    assert remove_scale_factor(123.4, -1) == pytest.approx(1234)
    assert remove_scale_factor(5000, 3) == 5.0
    with pytest.raises(CodecError):
        apply_scale_factor(1, -11)


@given(st.integers(-(2**31) + 1, 2**31 - 1), st.sampled_from(list(WordOrder)))
def test_int32_round_trip(value, order):
    regs = encode(value, K.INT32, order)
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert decode(regs, K.INT32, order) == value


@given(st.integers(1, 2**64 - 2), st.sampled_from(list(WordOrder)))
def test_uint64_round_trip(value, order):
    assert decode(encode(value, K.UINT64, order), K.UINT64, order) == value


@given(st.floats(width=32, allow_nan=False), st.sampled_from(list(WordOrder)))
def test_float32_round_trip(value, order):
    assert decode(encode(value, K.FLOAT32, order), K.FLOAT32, order) == value


def test_word_orders_are_mirror_images():
    value = 0x0102_0304_0506_0708
    assert encode(value, K.UINT64, CDAB) == list(reversed(encode(value, K.UINT64, ABCD)))
