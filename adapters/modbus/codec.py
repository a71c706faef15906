"""Registers <-> values: the pure Modbus codec (no sockets, no device knowledge).

A Modbus register is a 16-bit word, sent big-endian on the wire. Wider values span several
registers; the order of those words is the device's choice:

==========  =====================================================================
word order  meaning (for 32 bits; 64-bit values reverse all four words the same way)
==========  =====================================================================
``ABCD``    most significant word first ("big-endian", SunSpec, Eastron, most devices)
``CDAB``    least significant word first ("word-swapped", many PLCs and batteries)
==========  =====================================================================

Bytes inside a word are always big-endian. Strings are ASCII, two characters per register,
first character in the high byte, padded with NUL, never word-swapped.

SunSpec reserves one raw value per type for "not implemented"; with ``sunspec_nulls=True``
(the default) those decode to ``None``:

=========================  =====================================
kind                       "not implemented" value
=========================  =====================================
``int16``, ``sunssf``      ``0x8000``
``uint16``, ``enum16``,    ``0xFFFF``
``bitfield16``
``int32``                  ``0x80000000``
``uint32``, ``enum32``,    ``0xFFFFFFFF``
``bitfield32``
``acc16``, ``acc32``,      ``0`` (an accumulator that never counted)
``acc64``
``int64``                  ``0x8000000000000000``
``uint64``                 ``0xFFFFFFFFFFFFFFFF``
``float32``, ``float64``   NaN (decoded NaN is ``None`` even without ``sunspec_nulls``)
``string``                 all registers ``0x0000``
=========================  =====================================

Scale factors follow SunSpec: ``value = raw * 10**sf`` with ``sf`` a signed 16-bit register in
``-10 .. 10`` (:func:`apply_scale_factor`, :func:`remove_scale_factor`).

Examples
--------
>>> decode([0x4479, 0xC000], RegisterKind.FLOAT32)
999.0
>>> decode([0xC000, 0x4479], RegisterKind.FLOAT32, WordOrder.CDAB)
999.0
>>> encode(-2, RegisterKind.INT32)
[65535, 65534]
>>> apply_scale_factor(1234, -1)
123.4
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Sequence

from adapters.modbus.errors import CodecError


class RegisterKind(enum.StrEnum):
    """Data type of a field, as SunSpec names them."""

    INT16 = "int16"
    UINT16 = "uint16"
    SUNSSF = "sunssf"  # a SunSpec scale factor: int16
    ENUM16 = "enum16"  # a SunSpec enumeration: uint16
    BITFIELD16 = "bitfield16"  # SunSpec flags: uint16, 0xFFFF = not implemented
    ACC16 = "acc16"  # a SunSpec accumulator: uint16, 0 = not implemented
    INT32 = "int32"
    UINT32 = "uint32"
    ENUM32 = "enum32"
    BITFIELD32 = "bitfield32"
    ACC32 = "acc32"  # a SunSpec accumulator: uint32, 0 = not implemented
    FLOAT32 = "float32"
    INT64 = "int64"
    UINT64 = "uint64"
    ACC64 = "acc64"
    FLOAT64 = "float64"
    STRING = "string"


class WordOrder(enum.StrEnum):
    """Order of the 16-bit words of a multi-register value."""

    ABCD = "ABCD"  # most significant word first
    CDAB = "CDAB"  # least significant word first


class Table(enum.StrEnum):
    """The register table a field lives in (Modbus function 3 or 4)."""

    HOLDING = "holding"  # read with function 3, written with 16
    INPUT = "input"  # read-only, function 4


# kind -> (register count, struct format, not-implemented raw value or None)
_LAYOUT: dict[RegisterKind, tuple[int, str, int | None]] = {
    RegisterKind.INT16: (1, ">h", -0x8000),
    RegisterKind.SUNSSF: (1, ">h", -0x8000),
    RegisterKind.UINT16: (1, ">H", 0xFFFF),
    RegisterKind.ENUM16: (1, ">H", 0xFFFF),
    RegisterKind.BITFIELD16: (1, ">H", 0xFFFF),
    RegisterKind.ACC16: (1, ">H", 0),
    RegisterKind.INT32: (2, ">i", -0x80000000),
    RegisterKind.UINT32: (2, ">I", 0xFFFFFFFF),
    RegisterKind.ENUM32: (2, ">I", 0xFFFFFFFF),
    RegisterKind.BITFIELD32: (2, ">I", 0xFFFFFFFF),
    RegisterKind.ACC32: (2, ">I", 0),
    RegisterKind.FLOAT32: (2, ">f", None),
    RegisterKind.INT64: (4, ">q", -0x8000000000000000),
    RegisterKind.UINT64: (4, ">Q", 0xFFFFFFFFFFFFFFFF),
    RegisterKind.ACC64: (4, ">Q", 0),
    RegisterKind.FLOAT64: (4, ">d", None),
}

INTEGER_KINDS = frozenset(k for k, (_, fmt, _) in _LAYOUT.items() if fmt[-1] not in "fd")
"""Kinds that hold integers (everything but floats and strings)."""
FLOAT_KINDS = frozenset({RegisterKind.FLOAT32, RegisterKind.FLOAT64})
"""Kinds that hold IEEE-754 floats."""

SCALE_FACTOR_RANGE = range(-10, 11)
"""Valid SunSpec scale factors: ``-10 .. 10``."""

Value = int | float | str
"""A decoded register value."""


def register_count(kind: RegisterKind, length: int | None = None) -> int:
    """Number of 16-bit registers a value of ``kind`` occupies.

    Parameters
    ----------
    kind : RegisterKind
        The data type.
    length : int, optional
        For ``string`` only: the length [registers] (2 characters each).

    Returns
    -------
    int
        Register count.

    Raises
    ------
    CodecError
        A string without a positive length.
    """
    if kind is RegisterKind.STRING:
        if length is None or length <= 0:
            msg = f"a string needs a length > 0 [registers], got {length!r}"
            raise CodecError(msg)
        return length
    return _LAYOUT[kind][0]


def _to_bytes(registers: Sequence[int], word_order: WordOrder) -> bytes:
    for reg in registers:
        if isinstance(reg, bool) or not isinstance(reg, int) or not 0 <= reg <= 0xFFFF:
            msg = f"a register is an integer 0..65535, got {reg!r}"
            raise CodecError(msg)
    words = list(registers)
    if word_order is WordOrder.CDAB:
        words.reverse()
    return b"".join(w.to_bytes(2, "big") for w in words)


def _to_registers(blob: bytes, word_order: WordOrder) -> list[int]:
    words = [int.from_bytes(blob[i : i + 2], "big") for i in range(0, len(blob), 2)]
    if word_order is WordOrder.CDAB:
        words.reverse()
    return words


def decode(
    registers: Sequence[int],
    kind: RegisterKind,
    word_order: WordOrder = WordOrder.ABCD,
    *,
    sunspec_nulls: bool = True,
) -> Value | None:
    """Decode raw registers into a value.

    Parameters
    ----------
    registers : sequence of int
        Raw register contents, each ``0 .. 65535``, in address order.
    kind : RegisterKind
        The data type; its register count must match ``len(registers)`` (any length for
        ``string``).
    word_order : WordOrder
        Order of the words of a multi-register value (ignored for strings).
    sunspec_nulls : bool
        Decode SunSpec's "not implemented" values to ``None`` (see the module docstring).
        NaN floats are ``None`` either way.

    Returns
    -------
    int, float, str or None
        The value; ``None`` when the device says "not implemented".

    Raises
    ------
    CodecError
        Wrong register count or a register outside ``0 .. 65535``.
    """
    kind = RegisterKind(kind)
    if kind is RegisterKind.STRING:
        blob = _to_bytes(registers, WordOrder.ABCD)
        if not registers:
            msg = "a string needs at least one register"
            raise CodecError(msg)
        if sunspec_nulls and not any(blob):
            return None
        return blob.split(b"\x00", 1)[0].decode("latin-1").rstrip()
    count, fmt, null = _LAYOUT[kind]
    if len(registers) != count:
        msg = f"{kind.value} takes {count} register(s), got {len(registers)}: {list(registers)}"
        raise CodecError(msg)
    (value,) = struct.unpack(fmt, _to_bytes(registers, WordOrder(word_order)))
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if sunspec_nulls and value == null:
        return None
    return int(value)


def encode(
    value: Value | None,
    kind: RegisterKind,
    word_order: WordOrder = WordOrder.ABCD,
    *,
    length: int | None = None,
) -> list[int]:
    """Encode a value into raw registers (the inverse of :func:`decode`).

    Parameters
    ----------
    value : int, float, str or None
        The value. ``None`` encodes SunSpec's "not implemented" value of ``kind``. Integer
        kinds take integers (or integral floats); round first, with
        :func:`market.units.round_half_even`.
    kind : RegisterKind
        The data type.
    word_order : WordOrder
        Order of the words of a multi-register value (ignored for strings).
    length : int, optional
        For ``string``: the field length [registers]; shorter strings are NUL-padded.

    Returns
    -------
    list of int
        Registers, each ``0 .. 65535``, in address order.

    Raises
    ------
    CodecError
        A value of the wrong type, not integral, or out of the range of ``kind``.
    """
    kind = RegisterKind(kind)
    word_order = WordOrder(word_order)
    if kind is RegisterKind.STRING:
        count = register_count(kind, length)
        text = "" if value is None else value
        if not isinstance(text, str):
            msg = f"string field: expected str, got {value!r}"
            raise CodecError(msg)
        try:
            blob = text.encode("ascii")
        except UnicodeEncodeError as exc:
            msg = f"string field: {text!r} is not ASCII"
            raise CodecError(msg) from exc
        if len(blob) > 2 * count:
            msg = f"string {text!r} is longer than {count} registers ({2 * count} characters)"
            raise CodecError(msg)
        return _to_registers(blob.ljust(2 * count, b"\x00"), WordOrder.ABCD)
    _, fmt, null = _LAYOUT[kind]
    packed: int | float
    if kind in FLOAT_KINDS:
        if value is None:
            packed = math.nan
        elif isinstance(value, bool) or not isinstance(value, int | float):
            msg = f"{kind.value}: expected a number, got {value!r}"
            raise CodecError(msg)
        else:
            packed = float(value)
    else:
        packed = _integral(null if value is None else value, kind)
    try:
        blob = struct.pack(fmt, packed)
    except (struct.error, OverflowError) as exc:
        msg = f"{value!r} does not fit a {kind.value}"
        raise CodecError(msg) from exc
    return _to_registers(blob, word_order)


def _integral(value: Value | None, kind: RegisterKind) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{kind.value}: expected an integer, got {value!r}"
        raise CodecError(msg)
    if isinstance(value, float):
        if not value.is_integer():
            msg = f"{kind.value}: {value!r} is not an integer (round it first)"
            raise CodecError(msg)
        return int(value)
    return value


def decode_scale_factor(register: int) -> int | None:
    """Decode a SunSpec scale-factor register (``sunssf``, int16; ``0x8000`` -> ``None``).

    Parameters
    ----------
    register : int
        The raw register, ``0 .. 65535``.

    Returns
    -------
    int or None
        The exponent ``sf`` in ``-10 .. 10``, or ``None`` when not implemented.

    Raises
    ------
    CodecError
        A scale factor outside ``-10 .. 10``.
    """
    sf = decode([register], RegisterKind.SUNSSF)
    if sf is None:
        return None
    return _check_scale_factor(int(sf))


def _check_scale_factor(sf: int) -> int:
    if sf not in SCALE_FACTOR_RANGE:
        msg = f"scale factor {sf} is outside -10..10"
        raise CodecError(msg)
    return sf


def apply_scale_factor(value: float | None, sf: int | None) -> float | None:
    """Scale a raw value: ``value * 10**sf``.

    Parameters
    ----------
    value : int, float or None
        The raw value (``None`` = not implemented).
    sf : int or None
        The scale factor exponent, ``-10 .. 10`` (``None`` = not implemented).

    Returns
    -------
    float or None
        The scaled value; ``None`` when either input is ``None``.

    Raises
    ------
    CodecError
        A scale factor outside ``-10 .. 10``.
    """
    if value is None or sf is None:
        return None
    sf = _check_scale_factor(sf)
    # Dividing by an exact power of ten rounds once; multiplying by 0.1 would round twice.
    return value / 10**-sf if sf < 0 else float(value * 10**sf)


def remove_scale_factor(value: float, sf: int) -> float:
    """Invert :func:`apply_scale_factor`: the raw value ``value / 10**sf`` (not yet rounded).

    Parameters
    ----------
    value : float
        The scaled value.
    sf : int
        The scale factor exponent, ``-10 .. 10``.

    Returns
    -------
    float
        The raw value before rounding.

    Raises
    ------
    CodecError
        A scale factor outside ``-10 .. 10``.
    """
    sf = _check_scale_factor(sf)
    return float(value * 10**-sf) if sf < 0 else value / 10**sf


__all__ = [
    "FLOAT_KINDS",
    "INTEGER_KINDS",
    "SCALE_FACTOR_RANGE",
    "RegisterKind",
    "Table",
    "Value",
    "WordOrder",
    "apply_scale_factor",
    "decode",
    "decode_scale_factor",
    "encode",
    "register_count",
    "remove_scale_factor",
]
