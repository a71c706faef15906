"""The field codec: a register map field's registers <-> its physical value (pure).

:mod:`adapters.modbus.codec` turns registers into raw numbers; this module adds what the
field declares (:class:`~adapters.modbus.regmap.RegisterField`): its ``scale``, its SunSpec
scale factor and "not implemented" values. The value is in the field's own ``unit`` and
sign; :meth:`~adapters.modbus.regmap.RegisterField.to_canonical` then converts it to the
target's unit and sign::

    decode:  raw = codec.decode(registers)       value = raw * scale * 10**sf
    encode:  raw = value / 10**sf / scale         registers = codec.encode(round(raw))

Examples
--------
>>> from adapters.modbus.codec import RegisterKind
>>> from adapters.modbus.regmap import RegisterField
>>> w = RegisterField(name="W", address=0, kind=RegisterKind.INT16, scale=10, unit="W")
>>> encode_field(w, 1234.0)
[123]
>>> decode_field(w, [123])
1230
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from adapters.modbus import codec
from adapters.modbus.codec import Value
from adapters.modbus.errors import CodecError
from adapters.modbus.regmap import RegisterField
from market.units import round_half_even


def decode_field(
    fld: RegisterField, registers: Sequence[int], scale_factor: int | None = None
) -> Value | None:
    """Decode a field's registers into its physical value (the field's ``unit`` and sign).

    Parameters
    ----------
    fld : RegisterField
        The field.
    registers : sequence of int
        Its raw registers (``fld.count`` of them).
    scale_factor : int, optional
        The decoded value of ``fld.scale_factor_field`` (``None`` = not implemented).

    Returns
    -------
    int, float, str or None
        ``raw * scale * 10**sf``; ``None`` when the value or its scale factor is not
        implemented.

    Raises
    ------
    CodecError
        Registers that do not fit the field.
    """
    raw = codec.decode(registers, fld.kind, fld.word_order, sunspec_nulls=fld.sunspec_nulls)
    if raw is None or isinstance(raw, str):
        return raw
    value: float = raw if fld.scale == 1 else raw * fld.scale
    if fld.scale_factor_field is not None:
        return codec.apply_scale_factor(value, scale_factor)
    return value


def encode_field(
    fld: RegisterField, value: Value | None, scale_factor: int | None = None
) -> list[int]:
    """Encode a physical value (the field's ``unit`` and sign) into the field's registers.

    Integer kinds are rounded with :func:`market.units.round_half_even` after removing the
    scale and scale factor.

    Parameters
    ----------
    fld : RegisterField
        The field.
    value : int, float, str or None
        The value; ``None`` writes the "not implemented" pattern.
    scale_factor : int, optional
        The scale factor exponent, required when the field has a ``scale_factor_field``.

    Returns
    -------
    list of int
        ``fld.count`` registers.

    Raises
    ------
    CodecError
        A value that does not fit, or a missing scale factor.
    """
    if value is None or isinstance(value, str):
        return codec.encode(value, fld.kind, fld.word_order, length=fld.length)
    raw: float = value
    if fld.scale_factor_field is not None:
        if scale_factor is None:
            msg = f"field {fld.name!r}: its scale factor {fld.scale_factor_field!r} is unknown"
            raise CodecError(msg)
        raw = codec.remove_scale_factor(raw, scale_factor)
    if fld.scale != 1:
        raw = raw / fld.scale
    if fld.kind in codec.INTEGER_KINDS:
        if not math.isfinite(raw):
            msg = f"field {fld.name!r}: {value!r} is not a finite number"
            raise CodecError(msg)
        return codec.encode(round_half_even(raw), fld.kind, fld.word_order)
    return codec.encode(raw, fld.kind, fld.word_order)


__all__ = ["decode_field", "encode_field"]
