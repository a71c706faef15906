"""Declarative register maps: where a device keeps each quantity, and how to read it.

A register map lists a device model's fields (address, table, type, word order, scale, sign,
unit) and maps the ones PeerGrid uses onto canonical *targets*: the fields of
:class:`market.domain.MeterReading` and the control points a
:class:`~adapters.modbus.devices.DeviceWriter` may write. Maps are JSON files in this folder
(the format is in ``README.md`` here); vendor register numbers live in those files and nowhere
else, as in OpenEMS's ``defineModbusProtocol`` or pvlib's ``VARIABLE_MAP``.

From registers to a canonical value (``decode_field`` then ``RegisterField.to_canonical``)::

    raw       = codec.decode(registers, kind, word_order)   # None = "not implemented"
    physical  = raw * scale * 10**sf                         # in the field's own unit and sign
    canonical = physical * unit_factor * (-1 if invert)      # W, Wh, % ... and GRID sign

Targets and their canonical units and signs:

===========================  ========  =============================================================
target                       unit      meaning
===========================  ========  =============================================================
``p_w``                      W         active power at the device's connection, GRID convention:
                                       **positive = import (consumption), negative = export**
``import_wh_total``          Wh        cumulative energy imported (consumed, battery charged)
``export_wh_total``          Wh        cumulative energy exported (produced, battery discharged)
``soc_percent``              %         battery state of charge
``w_max``                    W         the power that ``w_max_lim_pct`` is a percentage of
``w_max_lim_pct``            %         active power limit, percent of ``w_max`` (SunSpec WMaxLimPct)
``w_max_lim_ena``            (enum)    0 = limit disabled, 1 = limit enabled (SunSpec WMaxLim_Ena)
``battery_setpoint_w``       W         battery power command, **positive = discharge, negative =
                                       charge** (the sign of a BATTERY
                                       :class:`market.domain.Setpoint`)
``battery_setpoint_ena``     (enum)    written 1 after ``battery_setpoint_w`` (SunSpec 704 WSetEna)
``battery_setpoint_mode``    (enum)    written 1 (watts) before it (SunSpec 704 WSetMod)
``storage_charge_pct``       %         charge rate limit, percent of ``storage_w_max``; negative
                                       forces a discharge (SunSpec 124 InWRte)
``storage_discharge_pct``    %         discharge rate limit, percent of ``storage_w_max``; negative
                                       forces a charge (SunSpec 124 OutWRte)
``storage_control_mode``     (bits)    bit 0 activates the charge limit, bit 1 the discharge limit
                                       (SunSpec 124 StorCtl_Mod)
``storage_w_max``            W         the 100 % of the two storage rates (SunSpec 124 WChaMax)
``w_charge_max``             W         largest charge power; battery setpoints beyond it are refused
``w_discharge_max``          W         largest discharge power; likewise
===========================  ========  =============================================================

A map is either a list of fields, or (``"sunspec"`` in the JSON) a SunSpec layout whose fields
are generated from pysunspec2's model definitions by :mod:`adapters.modbus.sunspec`.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from adapters.modbus import codec
from adapters.modbus.codec import RegisterKind, Table, Value, WordOrder
from adapters.modbus.errors import AdapterError, CodecError, RegisterMapError
from market.units import round_half_even

MAX_READ_REGISTERS = 125
"""Most registers one Modbus read request may ask for (function 3/4)."""
MAX_WRITE_REGISTERS = 123
"""Most registers one Modbus write request may carry (function 16)."""


class Target(enum.StrEnum):
    """Canonical quantities a field can feed; see the module docstring for units and signs."""

    P_W = "p_w"
    IMPORT_WH_TOTAL = "import_wh_total"
    EXPORT_WH_TOTAL = "export_wh_total"
    SOC_PERCENT = "soc_percent"
    W_MAX = "w_max"
    W_MAX_LIM_PCT = "w_max_lim_pct"
    W_MAX_LIM_ENA = "w_max_lim_ena"
    BATTERY_SETPOINT_W = "battery_setpoint_w"
    BATTERY_SETPOINT_ENA = "battery_setpoint_ena"
    BATTERY_SETPOINT_MODE = "battery_setpoint_mode"
    STORAGE_CHARGE_PCT = "storage_charge_pct"
    STORAGE_DISCHARGE_PCT = "storage_discharge_pct"
    STORAGE_CONTROL_MODE = "storage_control_mode"
    STORAGE_W_MAX = "storage_w_max"
    W_CHARGE_MAX = "w_charge_max"
    W_DISCHARGE_MAX = "w_discharge_max"


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """Canonical unit of a target, the field units accepted for it, and whether it is signed.

    Parameters
    ----------
    unit : str
        Canonical unit.
    units : Mapping[str, float]
        Field unit -> factor that converts it to the canonical unit (``kWh`` -> 1000).
    signed : bool
        Whether ``invert`` is meaningful for the target.
    """

    unit: str
    units: Mapping[str, float]
    signed: bool = False


_POWER = {"W": 1.0, "kW": 1e3}
_ENERGY = {"Wh": 1.0, "kWh": 1e3, "MWh": 1e6}
TARGETS: Mapping[Target, TargetSpec] = {
    Target.P_W: TargetSpec("W", _POWER, signed=True),
    Target.IMPORT_WH_TOTAL: TargetSpec("Wh", _ENERGY),
    Target.EXPORT_WH_TOTAL: TargetSpec("Wh", _ENERGY),
    Target.SOC_PERCENT: TargetSpec("%", {"%": 1.0}),
    Target.W_MAX: TargetSpec("W", _POWER),
    Target.W_MAX_LIM_PCT: TargetSpec("%", {"%": 1.0}),
    Target.W_MAX_LIM_ENA: TargetSpec("", {"": 1.0}),
    Target.BATTERY_SETPOINT_W: TargetSpec("W", _POWER, signed=True),
    Target.BATTERY_SETPOINT_ENA: TargetSpec("", {"": 1.0}),
    Target.BATTERY_SETPOINT_MODE: TargetSpec("", {"": 1.0}),
    Target.STORAGE_CHARGE_PCT: TargetSpec("%", {"%": 1.0}),
    Target.STORAGE_DISCHARGE_PCT: TargetSpec("%", {"%": 1.0}),
    Target.STORAGE_CONTROL_MODE: TargetSpec("", {"": 1.0}),
    Target.STORAGE_W_MAX: TargetSpec("W", _POWER),
    Target.W_CHARGE_MAX: TargetSpec("W", _POWER),
    Target.W_DISCHARGE_MAX: TargetSpec("W", _POWER),
}
"""One row per :class:`Target`: its canonical unit, accepted units and sign."""

MEASUREMENT_TARGETS = frozenset(
    {Target.P_W, Target.IMPORT_WH_TOTAL, Target.EXPORT_WH_TOTAL, Target.SOC_PERCENT}
)
"""Targets a :class:`~adapters.modbus.devices.DeviceReader` reads into a MeterReading."""


def _fail(where: str, problem: str) -> RegisterMapError:
    return RegisterMapError(f"{where}: {problem}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterField:
    """One quantity of a device: where it is, its type, and how it maps onto a target.

    Parameters
    ----------
    name : str
        Unique name in the map (the vendor's name, e.g. ``W`` or ``total_system_power``).
    address : int
        First register, 0-based protocol address ``0 .. 65535`` (SunSpec ``40000``, not the
        1-based "40001" of some manuals).
    kind : RegisterKind
        Data type (``int16``, ``float32``, ``acc32``, ``string`` ...).
    table : Table
        ``holding`` (function 3, writable) or ``input`` (function 4, read-only).
    word_order : WordOrder
        ``ABCD`` (most significant word first) or ``CDAB``.
    length : int, optional
        Length [registers] of a ``string``; unused otherwise.
    scale : float
        Multiplier from the raw value to ``unit`` (``0.1`` for a register in tenths).
    scale_factor_field : str, optional
        Name of a ``sunssf``/``int16`` field holding a SunSpec exponent: ``raw * 10**sf``.
    invert : bool
        Flip the sign to reach the target's convention (GRID for ``p_w``: positive = import).
    unit : str
        Unit of the scaled value (``W``, ``kWh``, ``%`` ...); must be accepted by ``target``.
    target : Target, optional
        The canonical quantity this field feeds; ``None`` for information-only fields.
    writable : bool
        Whether PeerGrid may write the field: the allow-list. Only ``holding`` fields.
    min, max : float, optional
        Bounds for writes, in the target's canonical unit and sign (or in ``unit`` for a field
        without target). A write outside them is refused, never clamped silently.
    expect : int or str, optional
        Identity check: the value the device must hold here (``"SunS"``, a model id). A
        reader that finds something else reports the device MISSING.
    sunspec_nulls : bool
        Decode SunSpec's "not implemented" values to ``None``.
    description : str
        Free text for people.
    """

    name: str
    address: int
    kind: RegisterKind
    table: Table = Table.HOLDING
    word_order: WordOrder = WordOrder.ABCD
    length: int | None = None
    scale: float = 1.0
    scale_factor_field: str | None = None
    invert: bool = False
    unit: str = ""
    target: Target | None = None
    writable: bool = False
    min: float | None = None
    max: float | None = None
    expect: int | str | None = None
    sunspec_nulls: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        where = f"field {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise _fail(where, "name must be a non-empty string")
        for attr, enum_type in (
            ("kind", RegisterKind),
            ("table", Table),
            ("word_order", WordOrder),
        ):
            raw = getattr(self, attr)
            try:
                object.__setattr__(self, attr, enum_type(raw))
            except ValueError:
                known = ", ".join(m.value for m in enum_type)
                raise _fail(where, f"unknown {attr} {raw!r} (known: {known})") from None
        if self.target is not None:
            try:
                object.__setattr__(self, "target", Target(self.target))
            except ValueError:
                known = ", ".join(t.value for t in Target)
                raise _fail(where, f"unknown target {self.target!r} (known: {known})") from None
        if isinstance(self.address, bool) or not isinstance(self.address, int):
            raise _fail(where, f"address must be an integer, got {self.address!r}")
        if self.kind is RegisterKind.STRING:
            if isinstance(self.length, bool) or not isinstance(self.length, int):
                raise _fail(where, "a string needs 'length' [registers], an integer > 0")
            if self.length <= 0:
                raise _fail(where, f"length must be > 0 registers, got {self.length}")
        elif self.length is not None and self.length != self.count:
            raise _fail(where, f"length {self.length} contradicts {self.kind.value}")
        if self.address < 0 or self.address + self.count > 0x10000:
            raise _fail(where, f"address {self.address} (+{self.count}) is outside 0..65535")
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float):
            raise _fail(where, f"scale must be a number, got {self.scale!r}")
        if not math.isfinite(self.scale) or self.scale == 0:
            raise _fail(where, f"scale must be finite and non-zero, got {self.scale!r}")
        numeric = self.kind is not RegisterKind.STRING
        if not numeric and (self.scale != 1 or self.scale_factor_field or self.target):
            raise _fail(where, "a string field takes no scale, scale factor or target")
        if self.writable and self.table is not Table.HOLDING:
            raise _fail(where, "only holding registers are writable")
        for bound in (self.min, self.max):
            if bound is not None and (
                isinstance(bound, bool) or not isinstance(bound, int | float)
            ):
                raise _fail(where, f"min/max must be numbers, got {bound!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _fail(where, f"min {self.min} > max {self.max}")
        if self.target is not None:
            spec = TARGETS[self.target]
            if self.unit not in spec.units:
                accepted = ", ".join(repr(u) for u in spec.units)
                raise _fail(
                    where, f"unit {self.unit!r} cannot feed {self.target.value} (use {accepted})"
                )
            if self.invert and not spec.signed:
                raise _fail(where, f"invert makes no sense for {self.target.value}")
        elif self.invert:
            raise _fail(where, "invert needs a target")
        if self.expect is not None:
            try:
                codec.encode(self.expect, self.kind, self.word_order, length=self.length)
            except CodecError as exc:
                raise _fail(where, f"expect {self.expect!r}: {exc}") from None

    @property
    def count(self) -> int:
        """Number of registers the field occupies."""
        return codec.register_count(self.kind, self.length)

    @property
    def end(self) -> int:
        """First address after the field."""
        return self.address + self.count

    @property
    def unit_factor(self) -> float:
        """Factor from ``unit`` to the target's canonical unit (1 without target)."""
        return 1.0 if self.target is None else TARGETS[self.target].units[self.unit]

    def to_canonical(self, physical: float) -> float:
        """Convert a decoded value (``unit``, device sign) to the target's unit and sign."""
        value = physical * self.unit_factor
        return -value if self.invert else value

    def from_canonical(self, value: float) -> float:
        """Convert a value in the target's unit and sign to the field's ``unit`` and sign."""
        physical = value / self.unit_factor
        return -physical if self.invert else physical

    def expected_registers(self) -> list[int] | None:
        """The raw registers an identity check expects, or ``None`` without ``expect``."""
        if self.expect is None:
            return None
        return codec.encode(self.expect, self.kind, self.word_order, length=self.length)


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers of ``table`` from ``address``."""

    table: Table
    address: int
    count: int

    @property
    def end(self) -> int:
        """First address after the block."""
        return self.address + self.count


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterMap:
    """A device model's fields, validated as a whole.

    Parameters
    ----------
    name : str
        Map name (the JSON file's stem for built-in maps).
    fields : tuple of RegisterField
        The fields, any order.
    unit_id : int
        Default Modbus unit id (slave address) of such a device, ``0 .. 255``.
    max_read_gap : int
        Largest run of unused registers [registers] a read may span to save a request; ``0``
        for devices that reject reads of undefined addresses.
    description : str
        Free text for people.
    """

    name: str
    fields: tuple[RegisterField, ...]
    unit_id: int = 1
    max_read_gap: int = 32
    description: str = ""
    _by_name: Mapping[str, RegisterField] = dataclasses.field(init=False, repr=False, compare=False)
    _by_target: Mapping[Target, RegisterField] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        where = f"register map {self.name!r}"
        object.__setattr__(self, "fields", tuple(self.fields))
        if isinstance(self.unit_id, bool) or not isinstance(self.unit_id, int):
            raise _fail(where, f"unit_id must be an integer, got {self.unit_id!r}")
        if not 0 <= self.unit_id <= 255:
            raise _fail(where, f"unit_id must be 0..255, got {self.unit_id}")
        if not isinstance(self.max_read_gap, int) or self.max_read_gap < 0:
            raise _fail(where, f"max_read_gap must be an integer >= 0, got {self.max_read_gap!r}")
        if not self.fields:
            raise _fail(where, "has no fields")
        by_name: dict[str, RegisterField] = {}
        by_target: dict[Target, RegisterField] = {}
        for f in self.fields:
            if f.name in by_name:
                raise _fail(where, f"field {f.name!r} is defined twice")
            by_name[f.name] = f
            if f.target is not None:
                if f.target in by_target:
                    other = by_target[f.target].name
                    raise _fail(
                        where,
                        f"field {f.name!r}: target {f.target.value} is already fed by {other!r}",
                    )
                by_target[f.target] = f
        for f in self.fields:
            if f.scale_factor_field is None:
                continue
            sf = by_name.get(f.scale_factor_field)
            if sf is None:
                raise _fail(
                    where, f"field {f.name!r}: scale factor field {f.scale_factor_field!r} "
                    "does not exist"
                )  # fmt: skip
            if sf.kind not in {RegisterKind.SUNSSF, RegisterKind.INT16}:
                raise _fail(
                    where,
                    f"field {f.name!r}: scale factor field {sf.name!r} must be sunssf or int16, "
                    f"not {sf.kind.value}",
                )
        for table in Table:
            ordered = sorted((f for f in self.fields if f.table is table), key=lambda f: f.address)
            for before, after in itertools.pairwise(ordered):
                if after.address < before.end:
                    raise _fail(
                        where,
                        f"field {after.name!r} ({table.value} {after.address}) overlaps "
                        f"{before.name!r} ({before.address}..{before.end - 1})",
                    )
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_by_target", by_target)

    def field(self, name: str) -> RegisterField:
        """The field called ``name``.

        Raises
        ------
        RegisterMapError
            No such field.
        """
        try:
            return self._by_name[name]
        except KeyError:
            where = f"register map {self.name!r}"
            raise _fail(where, f"no field {name!r}") from None

    def for_target(self, target: Target | str) -> RegisterField | None:
        """The field feeding ``target``, or ``None`` if the device has none."""
        return self._by_target.get(Target(target))

    def scale_factor_of(self, fld: RegisterField) -> RegisterField | None:
        """The scale factor field of ``fld``, or ``None``."""
        if fld.scale_factor_field is None:
            return None
        return self._by_name[fld.scale_factor_field]

    def with_scale_factors(self, flds: Iterable[RegisterField]) -> tuple[RegisterField, ...]:
        """``flds`` plus the scale factor fields they need, without duplicates, in order."""
        out: dict[str, RegisterField] = {}
        for f in flds:
            out[f.name] = f
            sf = self.scale_factor_of(f)
            if sf is not None:
                out[sf.name] = sf
        return tuple(out.values())

    @property
    def identity_fields(self) -> tuple[RegisterField, ...]:
        """Fields with an ``expect`` value (markers, model ids)."""
        return tuple(f for f in self.fields if f.expect is not None)

    @property
    def writable_fields(self) -> tuple[RegisterField, ...]:
        """The allow-list: fields PeerGrid may write."""
        return tuple(f for f in self.fields if f.writable)


def plan_reads(
    flds: Iterable[RegisterField],
    max_gap: int = 32,
    max_count: int = MAX_READ_REGISTERS,
) -> tuple[ReadBlock, ...]:
    """Group fields into as few read requests as the protocol allows.

    Fields of one table are sorted by address; neighbours share a request when the unused
    registers between them are at most ``max_gap`` and the request stays within
    ``max_count`` registers.

    Parameters
    ----------
    flds : iterable of RegisterField
        The fields to read.
    max_gap : int
        Largest run of unused registers [registers] a request may span.
    max_count : int
        Largest request [registers]; 125 for Modbus function 3/4.

    Returns
    -------
    tuple of ReadBlock
        Requests, holding registers first, each in address order.
    """
    blocks: list[ReadBlock] = []
    for table in Table:
        current: ReadBlock | None = None
        for f in sorted((f for f in flds if f.table is table), key=lambda f: f.address):
            if current is not None:
                end = max(current.end, f.end)
                if f.address - current.end <= max_gap and end - current.address <= max_count:
                    current = ReadBlock(table, current.address, end - current.address)
                    continue
                blocks.append(current)
            current = ReadBlock(table, f.address, f.count)
        if current is not None:
            blocks.append(current)
    return tuple(blocks)


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


# ---------------------------------------------------------------------------- loading

_FIELD_KEYS = frozenset(f.name for f in dataclasses.fields(RegisterField))
_MAP_KEYS = frozenset({"name", "description", "unit_id", "max_read_gap", "defaults", "fields"})
_SUNSPEC_MAP_KEYS = frozenset({"name", "description", "unit_id", "sunspec"})
_SUNSPEC_KEYS = frozenset({"base_address", "models"})
_DEFAULT_KEYS = frozenset({"table", "word_order", "sunspec_nulls"})
_MAP_DIR = resources.files(__name__)


def available_register_maps() -> tuple[str, ...]:
    """Names of the built-in register maps (the JSON files next to this module)."""
    return tuple(
        sorted(p.name.removesuffix(".json") for p in _MAP_DIR.iterdir() if p.name.endswith(".json"))
    )


def _parse_address(value: Any, where: str) -> int:  # noqa: ANN401 - raw JSON
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            raise _fail(where, f"address {value!r} is not an integer or 0x-hex string") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"address must be an integer or 0x-hex string, got {value!r}")
    return value


def _parse_field(raw: Any, defaults: Mapping[str, Any], index: int) -> RegisterField:  # noqa: ANN401
    if not isinstance(raw, dict):
        where = f"field #{index}"
        raise _fail(where, f"must be a JSON object, got {type(raw).__name__}")
    name = raw.get("name")
    where = f"field {name!r}" if name else f"field #{index}"
    unknown = set(raw) - _FIELD_KEYS
    if unknown:
        raise _fail(where, f"unknown key(s) {sorted(unknown)} (known: {sorted(_FIELD_KEYS)})")
    for key in ("name", "address", "kind"):
        if key not in raw:
            raise _fail(where, f"missing {key!r}")
    values = {**defaults, **raw}
    values["address"] = _parse_address(raw["address"], where)
    for flag in ("invert", "writable", "sunspec_nulls"):
        if flag in values and not isinstance(values[flag], bool):
            raise _fail(where, f"{flag} must be true or false, got {values[flag]!r}")
    try:
        return RegisterField(**values)
    except TypeError as exc:
        raise _fail(where, str(exc)) from None


def parse_register_map(data: Any, source: str = "<data>") -> RegisterMap:  # noqa: ANN401
    """Build a :class:`RegisterMap` from parsed JSON (pure; the format is in ``README.md``).

    Parameters
    ----------
    data : dict
        The JSON document.
    source : str
        Where it came from, for error messages.

    Returns
    -------
    RegisterMap
        The validated map.

    Raises
    ------
    RegisterMapError
        Anything wrong; the message names the source and the field.
    """
    if not isinstance(data, dict):
        msg = f"{source}: a register map is a JSON object, got {type(data).__name__}"
        raise RegisterMapError(msg)
    where = "map"
    try:
        if "sunspec" in data:
            return _parse_sunspec_map(data)
        unknown = set(data) - _MAP_KEYS
        if unknown:
            raise _fail(where, f"unknown key(s) {sorted(unknown)} (known: {sorted(_MAP_KEYS)})")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise _fail(where, f"'name' must be a non-empty string, got {name!r}")
        defaults = data.get("defaults", {})
        if not isinstance(defaults, dict) or set(defaults) - _DEFAULT_KEYS:
            raise _fail(where, f"'defaults' may only set {sorted(_DEFAULT_KEYS)}, got {defaults!r}")
        raw_fields = data.get("fields")
        if not isinstance(raw_fields, list):
            raise _fail(where, "'fields' must be a list")
        flds = tuple(_parse_field(raw, defaults, i) for i, raw in enumerate(raw_fields))
        return RegisterMap(
            name=name,
            fields=flds,
            unit_id=data.get("unit_id", 1),
            max_read_gap=data.get("max_read_gap", 32),
            description=data.get("description", ""),
        )
    except RegisterMapError as exc:
        msg = f"{source}: {exc}"
        raise RegisterMapError(msg) from None


def _parse_sunspec_map(data: dict[str, Any]) -> RegisterMap:
    """A map generated from a declared SunSpec layout (see ``README.md``)."""
    # Imported here: adapters.modbus.sunspec builds on this module.
    from adapters.modbus import sunspec  # noqa: PLC0415

    where = "map"
    unknown = set(data) - _SUNSPEC_MAP_KEYS
    if unknown:
        known = sorted(_SUNSPEC_MAP_KEYS)
        raise _fail(where, f"unknown key(s) {sorted(unknown)} next to 'sunspec' (known: {known})")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(where, f"'name' must be a non-empty string, got {name!r}")
    spec = data["sunspec"]
    if not isinstance(spec, dict) or set(spec) - _SUNSPEC_KEYS or "models" not in spec:
        raise _fail(where, f"'sunspec' is {{'base_address': 40000, 'models': [1, 103, ...]}}, "
                           f"got {spec!r}")  # fmt: skip
    models: list[int | tuple[int, dict[str, int]]] = []
    for entry in spec["models"]:
        if isinstance(entry, int) and not isinstance(entry, bool):
            models.append(entry)
        elif (
            isinstance(entry, dict)
            and set(entry) <= {"id", "repeats"}
            and isinstance(entry.get("id"), int)
            and isinstance(entry.get("repeats", {}), dict)
        ):
            models.append((entry["id"], dict(entry.get("repeats", {}))))
        else:
            raise _fail(where, f"a SunSpec model is an id or {{'id': 160, 'repeats': "
                               f"{{'module': 2}}}}, got {entry!r}")  # fmt: skip
    unit_id = data.get("unit_id", 1)
    if isinstance(unit_id, bool) or not isinstance(unit_id, int):
        raise _fail(where, f"unit_id must be an integer, got {unit_id!r}")
    try:
        device = sunspec.declared_device(models, spec.get("base_address", 40000))
    except AdapterError as exc:
        raise _fail(where, str(exc)) from None
    return device.register_map(name, unit_id=unit_id, description=data.get("description", ""))


def load_register_map(name_or_path: str | os.PathLike[str]) -> RegisterMap:
    """Read a register map: a built-in one by name, or any JSON file by path.

    Parameters
    ----------
    name_or_path : str or path
        A built-in name (``"sunspec_inverter"``, ``"sdm630"``, ``"battery"``; see
        :func:`available_register_maps`) or the path of a JSON file.

    Returns
    -------
    RegisterMap
        The validated map.

    Raises
    ------
    RegisterMapError
        Unknown name, unreadable file, invalid JSON or an invalid map; the message names the
        file and the field.
    """
    text_name = os.fspath(name_or_path)
    is_path = (
        isinstance(name_or_path, os.PathLike) or text_name.endswith(".json") or os.sep in text_name
    )
    if is_path:
        source = text_name
        try:
            text = Path(text_name).read_text(encoding="utf-8")
        except OSError as exc:
            msg = f"cannot read register map {source}: {exc.strerror or exc}"
            raise RegisterMapError(msg) from exc
    else:
        resource = _MAP_DIR / f"{text_name}.json"
        if not resource.is_file():
            known = ", ".join(available_register_maps())
            msg = f"no built-in register map {text_name!r} (known: {known}), and not a path"
            raise RegisterMapError(msg)
        source = f"{text_name}.json"
        text = resource.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise RegisterMapError(msg) from None
    return parse_register_map(data, source)


__all__ = [
    "MAX_READ_REGISTERS",
    "MAX_WRITE_REGISTERS",
    "MEASUREMENT_TARGETS",
    "TARGETS",
    "ReadBlock",
    "RegisterField",
    "RegisterMap",
    "Target",
    "TargetSpec",
    "available_register_maps",
    "decode_field",
    "encode_field",
    "load_register_map",
    "parse_register_map",
    "plan_reads",
]
