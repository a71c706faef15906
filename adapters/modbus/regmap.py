"""The register map schema: fields, targets, and a map validated as a whole (pure).

A register map lists a device model's fields (address, table, type, word order, scale, sign,
unit) and maps the ones PeerGrid uses onto canonical *targets*: the fields of
:class:`market.domain.MeterReading` and the control points a
:class:`~adapters.modbus.writing.DeviceWriter` may write. The built-in maps are JSON files in
``adapters/modbus/registermaps/`` (the format is in the ``README.md`` there), read by
:mod:`adapters.modbus.mapfiles`; vendor register numbers live in those files and nowhere
else, as in OpenEMS's ``defineModbusProtocol`` or pvlib's ``VARIABLE_MAP``.

From registers to a canonical value (:func:`adapters.modbus.fields.decode_field`, then
:meth:`RegisterField.to_canonical`)::

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
``w_max``                    W         the power that ``w_max_lim_pct`` is a percentage of (a
                                       battery's: its largest charge or discharge power)
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
``capacity_wh``              Wh        a battery's usable energy capacity (SunSpec 802/120 WHRtg)
``w_max_lim_rvrt_s``         s         revert timer of the power limit: with no new write for this
                                       long the device drops the limit (SunSpec 123
                                       WMaxLimPct_RvrtTms, 704 WMaxLimPctRvrtTms)
``w_max_lim_rvrt_pct``       %         the limit the device reverts to (SunSpec 704 WMaxLimPctRvrt)
``w_max_lim_rvrt_ena``       (enum)    the limit's enable after reversion (704 WMaxLimPctEnaRvrt)
``battery_setpoint_rvrt_s``  s         revert timer (watchdog) of the battery setpoint (SunSpec 704
                                       WSetRvrtTms, a vendor watchdog register)
``battery_setpoint_rvrt_w``  W         the battery power the device reverts to (704 WSetRvrt);
                                       ``battery_setpoint_rvrt_ena`` (enum) is the setpoint's
                                       enable after reversion (704 WSetEnaRvrt)
``storage_rvrt_s``           s         revert timer of the storage rates (SunSpec 124
                                       InOutWRte_RvrtTms)
===========================  ========  =============================================================

A map is either a list of fields, or (``"sunspec"`` in the JSON) a SunSpec layout whose fields
are generated from pysunspec2's model definitions by :mod:`adapters.modbus.sunspec`.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from adapters.modbus import codec
from adapters.modbus.codec import RegisterKind, Table, WordOrder
from adapters.modbus.errors import CodecError, RegisterMapError
from adapters.modbus.protocol import ADDRESS_SPACE


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
    CAPACITY_WH = "capacity_wh"
    W_MAX_LIM_RVRT_S = "w_max_lim_rvrt_s"
    W_MAX_LIM_RVRT_PCT = "w_max_lim_rvrt_pct"
    W_MAX_LIM_RVRT_ENA = "w_max_lim_rvrt_ena"
    BATTERY_SETPOINT_RVRT_S = "battery_setpoint_rvrt_s"
    BATTERY_SETPOINT_RVRT_W = "battery_setpoint_rvrt_w"
    BATTERY_SETPOINT_RVRT_ENA = "battery_setpoint_rvrt_ena"
    STORAGE_RVRT_S = "storage_rvrt_s"


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
_SECONDS = {"s": 1.0, "Secs": 1.0, "min": 60.0}
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
    Target.CAPACITY_WH: TargetSpec("Wh", _ENERGY),
    Target.W_MAX_LIM_RVRT_S: TargetSpec("s", _SECONDS),
    Target.W_MAX_LIM_RVRT_PCT: TargetSpec("%", {"%": 1.0}),
    Target.W_MAX_LIM_RVRT_ENA: TargetSpec("", {"": 1.0}),
    Target.BATTERY_SETPOINT_RVRT_S: TargetSpec("s", _SECONDS),
    Target.BATTERY_SETPOINT_RVRT_W: TargetSpec("W", _POWER, signed=True),
    Target.BATTERY_SETPOINT_RVRT_ENA: TargetSpec("", {"": 1.0}),
    Target.STORAGE_RVRT_S: TargetSpec("s", _SECONDS),
}
"""One row per :class:`Target`: its canonical unit, accepted units and sign."""

MEASUREMENT_TARGETS = frozenset(
    {Target.P_W, Target.IMPORT_WH_TOTAL, Target.EXPORT_WH_TOTAL, Target.SOC_PERCENT}
)
"""Targets a :class:`~adapters.modbus.reading.DeviceReader` reads into a MeterReading."""


def map_error(where: str, problem: str) -> RegisterMapError:
    """A :class:`RegisterMapError` saying ``where: problem``.

    Parameters
    ----------
    where : str
        The map or field (``field 'W'``, ``register map 'sdm630'``).
    problem : str
        What is wrong with it.

    Returns
    -------
    RegisterMapError
        The error, to raise.
    """
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
            raise map_error(where, "name must be a non-empty string")
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
                raise map_error(where, f"unknown {attr} {raw!r} (known: {known})") from None
        if self.target is not None:
            try:
                object.__setattr__(self, "target", Target(self.target))
            except ValueError:
                known = ", ".join(t.value for t in Target)
                raise map_error(where, f"unknown target {self.target!r} (known: {known})") from None
        if isinstance(self.address, bool) or not isinstance(self.address, int):
            raise map_error(where, f"address must be an integer, got {self.address!r}")
        if self.kind is RegisterKind.STRING:
            if isinstance(self.length, bool) or not isinstance(self.length, int):
                raise map_error(where, "a string needs 'length' [registers], an integer > 0")
            if self.length <= 0:
                raise map_error(where, f"length must be > 0 registers, got {self.length}")
        elif self.length is not None and self.length != self.count:
            raise map_error(where, f"length {self.length} contradicts {self.kind.value}")
        if self.address < 0 or self.address + self.count > ADDRESS_SPACE:
            raise map_error(where, f"address {self.address} (+{self.count}) is outside 0..65535")
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float):
            raise map_error(where, f"scale must be a number, got {self.scale!r}")
        if not math.isfinite(self.scale) or self.scale == 0:
            raise map_error(where, f"scale must be finite and non-zero, got {self.scale!r}")
        numeric = self.kind is not RegisterKind.STRING
        if not numeric and (self.scale != 1 or self.scale_factor_field or self.target):
            raise map_error(where, "a string field takes no scale, scale factor or target")
        if self.writable and self.table is not Table.HOLDING:
            raise map_error(where, "only holding registers are writable")
        for bound in (self.min, self.max):
            if bound is not None and (
                isinstance(bound, bool) or not isinstance(bound, int | float)
            ):
                raise map_error(where, f"min/max must be numbers, got {bound!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise map_error(where, f"min {self.min} > max {self.max}")
        if self.target is not None:
            spec = TARGETS[self.target]
            if self.unit not in spec.units:
                accepted = ", ".join(repr(u) for u in spec.units)
                raise map_error(
                    where, f"unit {self.unit!r} cannot feed {self.target.value} (use {accepted})"
                )
            if self.invert and not spec.signed:
                raise map_error(where, f"invert makes no sense for {self.target.value}")
        elif self.invert:
            raise map_error(where, "invert needs a target")
        if self.expect is not None:
            try:
                codec.encode(self.expect, self.kind, self.word_order, length=self.length)
            except CodecError as exc:
                raise map_error(where, f"expect {self.expect!r}: {exc}") from None

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
        """Convert a decoded value (``unit``, device sign) to the target's unit and sign.

        Parameters
        ----------
        physical : float
            The value in the field's ``unit`` and sign.

        Returns
        -------
        float
            ``physical * unit_factor``, negated with ``invert``.
        """
        value = physical * self.unit_factor
        return -value if self.invert else value

    def from_canonical(self, value: float) -> float:
        """Convert a value in the target's unit and sign to the field's ``unit`` and sign.

        Parameters
        ----------
        value : float
            The value in the target's canonical unit and sign.

        Returns
        -------
        float
            ``value / unit_factor``, negated with ``invert``.
        """
        physical = value / self.unit_factor
        return -physical if self.invert else physical

    def expected_registers(self) -> list[int] | None:
        """The raw registers an identity check expects, or ``None`` without ``expect``."""
        if self.expect is None:
            return None
        return codec.encode(self.expect, self.kind, self.word_order, length=self.length)


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
            raise map_error(where, f"unit_id must be an integer, got {self.unit_id!r}")
        if not 0 <= self.unit_id <= 255:
            raise map_error(where, f"unit_id must be 0..255, got {self.unit_id}")
        if not isinstance(self.max_read_gap, int) or self.max_read_gap < 0:
            raise map_error(
                where, f"max_read_gap must be an integer >= 0, got {self.max_read_gap!r}"
            )
        if not self.fields:
            raise map_error(where, "has no fields")
        by_name: dict[str, RegisterField] = {}
        by_target: dict[Target, RegisterField] = {}
        for f in self.fields:
            if f.name in by_name:
                raise map_error(where, f"field {f.name!r} is defined twice")
            by_name[f.name] = f
            if f.target is not None:
                if f.target in by_target:
                    other = by_target[f.target].name
                    raise map_error(
                        where,
                        f"field {f.name!r}: target {f.target.value} is already fed by {other!r}",
                    )
                by_target[f.target] = f
        for f in self.fields:
            if f.scale_factor_field is None:
                continue
            sf = by_name.get(f.scale_factor_field)
            if sf is None:
                raise map_error(
                    where, f"field {f.name!r}: scale factor field {f.scale_factor_field!r} "
                    "does not exist"
                )  # fmt: skip
            if sf.kind not in {RegisterKind.SUNSSF, RegisterKind.INT16}:
                raise map_error(
                    where,
                    f"field {f.name!r}: scale factor field {sf.name!r} must be sunssf or int16, "
                    f"not {sf.kind.value}",
                )
        for table in Table:
            ordered = sorted((f for f in self.fields if f.table is table), key=lambda f: f.address)
            for before, after in itertools.pairwise(ordered):
                if after.address < before.end:
                    raise map_error(
                        where,
                        f"field {after.name!r} ({table.value} {after.address}) overlaps "
                        f"{before.name!r} ({before.address}..{before.end - 1})",
                    )
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_by_target", by_target)

    def field(self, name: str) -> RegisterField:
        """The field called ``name``.

        Parameters
        ----------
        name : str
            The field's name.

        Returns
        -------
        RegisterField
            The field.

        Raises
        ------
        RegisterMapError
            No such field.
        """
        try:
            return self._by_name[name]
        except KeyError:
            where = f"register map {self.name!r}"
            raise map_error(where, f"no field {name!r}") from None

    def for_target(self, target: Target | str) -> RegisterField | None:
        """The field feeding ``target``, or ``None`` if the device has none.

        Parameters
        ----------
        target : Target or str
            The canonical quantity.

        Returns
        -------
        RegisterField or None
            Its field.
        """
        return self._by_target.get(Target(target))

    def scale_factor_of(self, fld: RegisterField) -> RegisterField | None:
        """The scale factor field of ``fld``, or ``None``.

        Parameters
        ----------
        fld : RegisterField
            A field of this map.

        Returns
        -------
        RegisterField or None
            The field named by ``fld.scale_factor_field``.
        """
        if fld.scale_factor_field is None:
            return None
        return self._by_name[fld.scale_factor_field]

    def with_scale_factors(self, flds: Iterable[RegisterField]) -> tuple[RegisterField, ...]:
        """``flds`` plus the scale factor fields they need, without duplicates, in order.

        Parameters
        ----------
        flds : iterable of RegisterField
            Fields of this map.

        Returns
        -------
        tuple of RegisterField
            Each field followed by its scale factor field (once).
        """
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


__all__ = [
    "MEASUREMENT_TARGETS",
    "TARGETS",
    "RegisterField",
    "RegisterMap",
    "Target",
    "TargetSpec",
    "map_error",
]
