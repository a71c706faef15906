"""SunSpec devices: model definitions as data, discovery, decoding, generated register maps.

The model tables are not typed here: they are the JSON model definitions that pysunspec2
ships (``sunspec2/models/json/model_<id>.json``, 113 models), read as data. This module
places their points at register addresses, decodes them, and turns a device's model chain
into a :class:`~adapters.modbus.registermaps.RegisterMap` whose canonical targets come from one
table (:data:`TARGET_SOURCES`), so :class:`~adapters.modbus.devices.DeviceReader` and
:class:`~adapters.modbus.devices.DeviceWriter` read and control a SunSpec device like any
other.

A SunSpec device, at a base address (40000, 0 or 50000, tried in that order)::

    base + 0    "SunS" (0x5375 0x6E53)
    base + 2    model ID, L, then L registers          e.g. 1 (common), L = 66
    ...         model ID, L, then L registers          e.g. 103 (three-phase inverter), L = 50
    ...         0xFFFF, 0                              end model

Inside a model, a group's points come first, then its sub-groups; a sub-group repeats
``count`` times, where ``count`` is absent (once), a number of a count point (``NPt``), or
0 ("as many as fit in L", e.g. the modules of model 160). Point paths name the instance:
``W``, ``module[0].DCW``, ``Crv[1].Pt[2].V``, ``PFWInj.PF``.

Values: ``raw * 10**sf`` with ``sf`` the scale-factor point the definition names (searched
from the point's group outwards) or a literal exponent; SunSpec's "not implemented" raw
values decode to ``None`` (:mod:`adapters.modbus.codec`), and a value whose scale factor is
not implemented is ``None`` too.

Examples
--------
>>> device = declared_device([1, 103, 120, 123])
>>> [(m.model_id, m.address, m.length) for m in device.models]
[(1, 40002, 66), (103, 40070, 50), (120, 40122, 26), (123, 40150, 24)]
>>> device.register_map("inv").field("103.W").address
40084
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from adapters.modbus import codec
from adapters.modbus.client import RegisterClient
from adapters.modbus.codec import RegisterKind, Table, Value
from adapters.modbus.errors import DeviceError, SunSpecError
from adapters.modbus.registermaps import (
    MAX_READ_REGISTERS,
    TARGETS,
    RegisterField,
    RegisterMap,
    Target,
)

LOGGER = logging.getLogger(__name__)
ILLEGAL_DATA_ADDRESS = 2
_NOTHING_THERE = frozenset({1, ILLEGAL_DATA_ADDRESS})  # illegal function / data address

BASE_ADDRESSES = (40000, 0, 50000)
"""Where a SunSpec device may start, in the order they are tried."""
MARKER = "SunS"
"""The two registers at the base address: 0x5375 0x6E53."""
MARKER_REGISTERS = (0x5375, 0x6E53)
END_MODEL_ID = 0xFFFF
"""ID of the end model that closes the chain."""
MODELS = (1, 101, 102, 103, 111, 112, 113, 120, 121, 123, 124, 160,
          201, 202, 203, 204, 701, 702, 704, 802)  # fmt: skip
"""Models PeerGrid maps onto canonical targets or tests end to end; any model pysunspec2
defines is discovered and decoded."""

_KINDS: Mapping[str, RegisterKind] = {
    "int16": RegisterKind.INT16,
    "uint16": RegisterKind.UINT16,
    "count": RegisterKind.UINT16,
    "acc16": RegisterKind.ACC16,
    "enum16": RegisterKind.ENUM16,
    "bitfield16": RegisterKind.BITFIELD16,
    "sunssf": RegisterKind.SUNSSF,
    "int32": RegisterKind.INT32,
    "uint32": RegisterKind.UINT32,
    "acc32": RegisterKind.ACC32,
    "enum32": RegisterKind.ENUM32,
    "bitfield32": RegisterKind.BITFIELD32,
    "int64": RegisterKind.INT64,
    "uint64": RegisterKind.UINT64,
    "acc64": RegisterKind.ACC64,
    "float32": RegisterKind.FLOAT32,
    "float64": RegisterKind.FLOAT64,
    "string": RegisterKind.STRING,
}
"""SunSpec point type -> register kind. ``pad`` is skipped; ``ipaddr``, ``ipv6addr`` and
``eui48`` decode to text here and are left out of register maps."""
_ADDRESS_TYPES = frozenset({"ipaddr", "ipv6addr", "eui48"})
_SIZES = {"ipaddr": 2, "ipv6addr": 8, "eui48": 4, "pad": 1}

# ---------------------------------------------------------------------------- definitions


@dataclass(frozen=True, slots=True)
class PointDef:
    """One point of a model definition (pysunspec2's JSON, as read).

    Parameters
    ----------
    name : str
        Point name (``W``, ``WMaxLimPct``).
    type : str
        SunSpec type (``int16``, ``acc32``, ``sunssf``, ``string`` ...).
    size : int
        Registers.
    sf : str, int or None
        Name of its scale-factor point, or a literal exponent.
    units : str
        Unit as the definition writes it (``W``, ``Pct``, ``% WMax``).
    writable : bool
        ``access: RW`` in the definition (PeerGrid writes only what a map allows).
    label : str
        Human name.
    symbols : Mapping[int, str]
        Enumeration values (or bit positions of a bitfield) -> names.
    value : int or None
        A fixed value (the model ID).
    """

    name: str
    type: str
    size: int
    sf: str | int | None = None
    units: str = ""
    writable: bool = False
    label: str = ""
    symbols: Mapping[int, str] = field(default_factory=dict)
    value: int | None = None


@dataclass(frozen=True, slots=True)
class GroupDef:
    """A group of a model definition: its points, then its sub-groups.

    ``count`` is ``None`` (one instance), ``0`` (as many as fit in the model length) or the
    name of the count point that says how many.
    """

    name: str
    points: tuple[PointDef, ...]
    groups: tuple[GroupDef, ...] = ()
    count: int | str | None = None


@dataclass(frozen=True, slots=True)
class ModelDef:
    """A SunSpec model definition."""

    model_id: int
    name: str
    label: str
    group: GroupDef


def _parse_point(raw: Mapping[str, Any], where: str) -> PointDef:
    try:
        name = str(raw["name"])
        ptype = str(raw["type"])
        size = int(raw.get("size", _SIZES.get(ptype, 0)))
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"{where}: point without a valid name, type or size: {raw!r}"
        raise SunSpecError(msg) from exc
    if ptype not in _KINDS and ptype not in _SIZES:
        msg = f"{where}: point {name!r} has unknown type {ptype!r}"
        raise SunSpecError(msg)
    if size <= 0:
        msg = f"{where}: point {name!r} has size {size}"
        raise SunSpecError(msg)
    kind = _KINDS.get(ptype)
    if kind is not None and kind is not RegisterKind.STRING and codec.register_count(kind) != size:
        msg = f"{where}: point {name!r} of type {ptype} has size {size}"
        raise SunSpecError(msg)
    sf = raw.get("sf")
    symbols = {int(s["value"]): str(s["name"]) for s in raw.get("symbols", ())}
    value = raw.get("value")
    return PointDef(
        name=name,
        type=ptype,
        size=size,
        sf=sf if isinstance(sf, int | str) else None,
        units=str(raw.get("units", "")).strip(),
        writable=raw.get("access") == "RW",
        label=str(raw.get("label", "") or ""),
        symbols=symbols,
        value=value if isinstance(value, int) else None,
    )


def _parse_group(raw: Mapping[str, Any], where: str) -> GroupDef:
    name = str(raw.get("name", "?"))
    inner = f"{where}.{name}"
    count = raw.get("count")
    if count is not None and not isinstance(count, int | str):
        msg = f"{inner}: count must be a number or a point name, got {count!r}"
        raise SunSpecError(msg)
    return GroupDef(
        name=name,
        points=tuple(_parse_point(p, inner) for p in raw.get("points", ())),
        groups=tuple(_parse_group(g, inner) for g in raw.get("groups", ())),
        count=count,
    )


def parse_model_definition(data: Mapping[str, Any]) -> ModelDef:
    """Build a :class:`ModelDef` from a pysunspec2 JSON model definition (pure).

    Raises
    ------
    SunSpecError
        A definition this module cannot place (unknown point type, size mismatch).
    """
    try:
        model_id = int(data["id"])
        group = data["group"]
    except (KeyError, TypeError, ValueError) as exc:
        msg = "a model definition needs 'id' and 'group'"
        raise SunSpecError(msg) from exc
    where = f"model {model_id}"
    top = _parse_group(group, where)
    names = [p.name for p in top.points[:2]]
    if names != ["ID", "L"]:
        msg = f"{where}: the first points must be ID and L, got {names}"
        raise SunSpecError(msg)
    return ModelDef(
        model_id=model_id, name=top.name, label=str(group.get("label", "") or ""), group=top
    )


def _definitions_dir() -> Any:  # noqa: ANN401 - an importlib Traversable
    return resources.files("sunspec2") / "models" / "json"


@functools.cache
def available_models() -> tuple[int, ...]:
    """IDs of every model definition pysunspec2 ships."""
    ids = []
    for entry in _definitions_dir().iterdir():
        stem = entry.name.removesuffix(".json")
        if stem.startswith("model_") and stem[6:].isdigit():
            ids.append(int(stem[6:]))
    return tuple(sorted(ids))


@functools.cache
def model_definition(model_id: int) -> ModelDef:
    """The definition of model ``model_id``, read from pysunspec2's JSON.

    Raises
    ------
    SunSpecError
        pysunspec2 has no such model.
    """
    resource = _definitions_dir() / f"model_{model_id}.json"
    if not resource.is_file():
        msg = f"SunSpec model {model_id} is not defined (pysunspec2 has {len(available_models())})"
        raise SunSpecError(msg)
    return parse_model_definition(json.loads(resource.read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------- layout


@dataclass(frozen=True, slots=True)
class PlacedPoint:
    """A point of a model at its place.

    Parameters
    ----------
    path : str
        Instance path in the model (``W``, ``module[0].DCW``).
    point : PointDef
        Its definition.
    offset : int
        Registers from the model's ID register.
    sf : str, int or None
        Path of its scale-factor point, or a literal exponent.
    """

    path: str
    point: PointDef
    offset: int
    sf: str | int | None


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """Where each point of one model instance sits.

    Parameters
    ----------
    definition : ModelDef
        The model.
    length : int
        L: registers after ID and L.
    points : tuple of PlacedPoint
        Every point, in address order.
    counts : Mapping[str, int]
        Paths of count points and the repeats they announce (to publish them).
    """

    definition: ModelDef
    length: int
    points: tuple[PlacedPoint, ...]
    counts: Mapping[str, int] = field(default_factory=dict)

    def point(self, path: str) -> PlacedPoint:
        """The point at ``path``.

        Raises
        ------
        SunSpecError
            No such point.
        """
        for p in self.points:
            if p.path == path:
                return p
        msg = f"model {self.definition.model_id} has no point {path!r}"
        raise SunSpecError(msg)


def _static_size(group: GroupDef, where: str) -> int:
    size = sum(p.size for p in group.points)
    for sub in group.groups:
        if sub.count is not None:
            msg = f"{where}: group {group.name!r} repeats with nested counted groups"
            raise SunSpecError(msg)
        size += _static_size(sub, where)
    return size


def layout_model(
    definition: ModelDef,
    *,
    registers: Sequence[int] | None = None,
    repeats: Mapping[str, int] | None = None,
) -> ModelLayout:
    """Place a model's points.

    Parameters
    ----------
    definition : ModelDef
        The model.
    registers : sequence of int, optional
        The model's registers from its ID on, as read from a device: counts come from the
        count points, "fill" groups from L (``registers[1]``).
    repeats : Mapping[str, int], optional
        Without registers: instances of each repeating group, by group name (default 1).

    Returns
    -------
    ModelLayout
        The placed points.

    Raises
    ------
    SunSpecError
        Registers that do not fit the definition (too few for L, counts beyond L).
    """
    where = f"model {definition.model_id}"
    chosen = dict(repeats or {})
    limit: int | None = None
    if registers is not None:
        if len(registers) < 2:
            msg = f"{where}: need at least the ID and L registers"
            raise SunSpecError(msg)
        limit = 2 + registers[1]
        if len(registers) < limit:
            msg = f"{where}: L = {registers[1]} but only {len(registers) - 2} registers given"
            raise SunSpecError(msg)
    placed: list[PlacedPoint] = []
    counts: dict[str, int] = {}

    def read_count(offset: int) -> int:
        assert registers is not None  # noqa: S101 - only called with registers
        assert limit is not None  # noqa: S101 - set with registers
        if offset >= limit:
            msg = f"{where}: its count point at offset {offset} is beyond L = {limit - 2}"
            raise SunSpecError(msg)
        value = registers[offset]
        return 0 if value == 0xFFFF else value  # "not implemented": no instances

    def place(group: GroupDef, prefix: str, chain: tuple[dict[str, PlacedPoint], ...],
              offset: int) -> int:  # fmt: skip
        scope: dict[str, PlacedPoint] = {}
        chain = (scope, *chain)
        mine: list[tuple[str, PointDef, int]] = []
        for p in group.points:
            path = prefix + p.name
            mine.append((path, p, offset))
            scope[p.name] = PlacedPoint(path, p, offset, None)
            offset += p.size
        if limit is not None and offset > limit:
            msg = f"{where}: L = {limit - 2} is too short for its points"
            raise SunSpecError(msg)
        for path, p, off in mine:
            sf: str | int | None = p.sf
            if isinstance(sf, str):
                found = next((s[sf] for s in chain if sf in s), None)
                if found is None:
                    msg = f"{where}: point {path!r} names scale factor {sf!r}, not in scope"
                    raise SunSpecError(msg)
                sf = found.path
            placed.append(PlacedPoint(path, p, off, sf))
        for sub in group.groups:
            if sub.count is None:
                offset = place(sub, f"{prefix}{sub.name}.", chain, offset)
                continue
            if isinstance(sub.count, str):
                counter = next((s[sub.count] for s in chain if sub.count in s), None)
                if counter is None:
                    msg = f"{where}: group {sub.name!r} counted by {sub.count!r}, not in scope"
                    raise SunSpecError(msg)
                if registers is not None:
                    n = read_count(counter.offset)
                else:
                    n = chosen.get(sub.name, 1)
                    counts[counter.path] = n
            elif sub.count == 0 and limit is not None:
                n = max(0, limit - offset) // max(1, _static_size(sub, where))
            elif sub.count == 0:
                n = chosen.get(sub.name, 1)
            else:
                n = sub.count
            if limit is not None and offset + n * max(1, sum(p.size for p in sub.points)) > limit:
                msg = f"{where}: {n} x group {sub.name!r} do not fit in L = {limit - 2}"
                raise SunSpecError(msg)
            for i in range(n):
                offset = place(sub, f"{prefix}{sub.name}[{i}].", chain, offset)
        return offset

    end = place(definition.group, "", (), 0)
    if limit is not None and end > limit:
        msg = f"{where}: L = {limit - 2} but the points need {end - 2} registers"
        raise SunSpecError(msg)
    return ModelLayout(
        definition=definition,
        length=(limit if limit is not None else end) - 2,
        points=tuple(sorted(placed, key=lambda p: p.offset)),
        counts=counts,
    )


# ---------------------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class DecodedPoint:
    """A point's value as read.

    Parameters
    ----------
    path : str
        Instance path in the model.
    value : int, float, str or None
        Scaled value (``raw * 10**sf``) in ``units``; ``None`` = not implemented.
    units : str
        The definition's unit.
    symbol : str or None
        For an enumeration, the name of the value.
    flags : tuple of str
        For a bitfield, the names of the bits set.
    """

    path: str
    value: Value | None
    units: str = ""
    symbol: str | None = None
    flags: tuple[str, ...] = ()


def _format_address(ptype: str, regs: Sequence[int]) -> str | None:
    blob = b"".join(r.to_bytes(2, "big") for r in regs)
    if ptype == "eui48":
        blob = blob[2:]
        return None if blob == b"\xff" * 6 else ":".join(f"{b:02X}" for b in blob)
    if not any(blob):
        return None
    if ptype == "ipaddr":
        return ".".join(str(b) for b in blob)
    return ":".join(blob[i : i + 2].hex() for i in range(0, len(blob), 2))


def decode_model(layout: ModelLayout, registers: Sequence[int]) -> tuple[DecodedPoint, ...]:
    """Decode every point of a model (pure).

    Parameters
    ----------
    layout : ModelLayout
        Where the points are.
    registers : sequence of int
        The model's registers from its ID on (at least ``2 + L``).

    Returns
    -------
    tuple of DecodedPoint
        In address order; pad points left out.

    Raises
    ------
    SunSpecError
        Too few registers.
    """
    if len(registers) < layout.length + 2:
        msg = (
            f"model {layout.definition.model_id}: {len(registers)} registers for "
            f"L = {layout.length}"
        )
        raise SunSpecError(msg)

    def raw(p: PlacedPoint) -> Value | None:
        regs = registers[p.offset : p.offset + p.point.size]
        kind = _KINDS.get(p.point.type)
        if kind is None:
            return _format_address(p.point.type, regs)
        return codec.decode(regs, kind)

    by_path = {p.path: p for p in layout.points}
    out: list[DecodedPoint] = []
    for p in layout.points:
        if p.point.type == "pad":
            continue
        value = raw(p)
        if isinstance(value, int | float) and not isinstance(value, bool) and p.sf is not None:
            exponent = p.sf if isinstance(p.sf, int) else raw(by_path[p.sf])
            sf = exponent if isinstance(exponent, int) else None
            try:
                value = codec.apply_scale_factor(value, sf)
            except ValueError:  # a scale factor outside -10..10: not a usable value
                value = None
        symbol = None
        flags: tuple[str, ...] = ()
        if isinstance(value, int) and p.point.symbols:
            if p.point.type.startswith("bitfield"):
                flags = tuple(n for bit, n in sorted(p.point.symbols.items()) if value >> bit & 1)
            else:
                symbol = p.point.symbols.get(value)
        out.append(DecodedPoint(p.path, value, p.point.units, symbol, flags))
    return tuple(out)


# ---------------------------------------------------------------------------- devices


@dataclass(frozen=True, slots=True)
class ModelInstance:
    """One model in a device's chain.

    Parameters
    ----------
    model_id : int
        Its ID.
    address : int
        Address of its ID register.
    length : int
        L: registers after ID and L.
    layout : ModelLayout or None
        Where its points are; ``None`` for a model pysunspec2 does not define.
    registers : tuple of int
        Its registers as read at discovery (ID and L included); empty for declared layouts.
    """

    model_id: int
    address: int
    length: int
    layout: ModelLayout | None
    registers: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        """The definition's group name (``inverter_three_phase``), or ``"unknown"``."""
        return "unknown" if self.layout is None else self.layout.definition.name

    @property
    def label(self) -> str:
        """The definition's label, or ``""``."""
        return "" if self.layout is None else self.layout.definition.label

    def decode(self) -> tuple[DecodedPoint, ...]:
        """Decode the registers read at discovery (nothing for an unknown model)."""
        if self.layout is None or not self.registers:
            return ()
        return decode_model(self.layout, self.registers)


@dataclass(frozen=True, slots=True)
class SunSpecDevice:
    """A device's SunSpec model chain.

    Parameters
    ----------
    base_address : int
        Where ``SunS`` is.
    models : tuple of ModelInstance
        The models, in chain order (the end model not included).
    """

    base_address: int
    models: tuple[ModelInstance, ...]

    @property
    def end_address(self) -> int:
        """Address of the end model."""
        if not self.models:
            return self.base_address + 2
        last = self.models[-1]
        return last.address + 2 + last.length

    @property
    def model_ids(self) -> tuple[int, ...]:
        """IDs in chain order."""
        return tuple(m.model_id for m in self.models)

    def find(self, model_id: int) -> ModelInstance | None:
        """The first instance of ``model_id``, or ``None``."""
        return next((m for m in self.models if m.model_id == model_id), None)

    def register_map(
        self, name: str = "sunspec", *, unit_id: int = 1, description: str = ""
    ) -> RegisterMap:
        """A register map of every point, with the canonical targets of :data:`TARGET_SOURCES`.

        Field names are ``"<model id>.<path>"`` (``"103.W"``, ``"160.module[0].DCW"``); a
        second instance of a model is ``"<id>#2.<path>"``. ``SunS``, each model's ID and L and
        the end model are identity fields (``expect``). Only targeted control points are
        writable (the allow-list), with the bounds of the table.

        Raises
        ------
        RegisterMapError
            A chain that does not make a valid map (no models at all).
        """
        return _register_map(self, name, unit_id=unit_id, description=description)


def _prefixes(models: Iterable[ModelInstance]) -> list[str]:
    seen: dict[int, int] = {}
    out = []
    for m in models:
        seen[m.model_id] = seen.get(m.model_id, 0) + 1
        n = seen[m.model_id]
        out.append(str(m.model_id) if n == 1 else f"{m.model_id}#{n}")
    return out


def declared_device(
    models: Sequence[int | tuple[int, Mapping[str, int]]],
    base_address: int = 40000,
) -> SunSpecDevice:
    """A SunSpec layout from a list of model IDs (for maps and simulators; pure).

    Parameters
    ----------
    models : sequence of int or (int, Mapping[str, int])
        Model IDs in chain order; a tuple gives the repeats of its repeating groups by group
        name (``(160, {"module": 2})``); default 1.
    base_address : int
        Where ``SunS`` goes (40000, 0 or 50000).

    Raises
    ------
    SunSpecError
        An unknown model, or a chain beyond address 65535.
    """
    if base_address not in BASE_ADDRESSES:
        msg = f"a SunSpec base address is one of {BASE_ADDRESSES}, got {base_address}"
        raise SunSpecError(msg)
    placed = []
    address = base_address + 2
    for entry in models:
        model_id, repeats = (entry, {}) if isinstance(entry, int) else entry
        layout = layout_model(model_definition(model_id), repeats=repeats)
        placed.append(ModelInstance(model_id, address, layout.length, layout))
        address += 2 + layout.length
    if address + 2 > 0x10000:
        msg = f"models {list(models)} at {base_address} end beyond register 65535"
        raise SunSpecError(msg)
    return SunSpecDevice(base_address, tuple(placed))


def fetch_registers(client: RegisterClient, address: int, count: int) -> list[int]:
    """Read ``count`` holding registers from ``address`` in requests of at most 125."""
    out: list[int] = []
    while count > 0:
        n = min(count, MAX_READ_REGISTERS)
        out.extend(client.read_registers(Table.HOLDING.value, address, n))
        address += n
        count -= n
    return out


def discover(
    client: RegisterClient,
    *,
    base_addresses: Sequence[int] = BASE_ADDRESSES,
    max_models: int = 64,
) -> SunSpecDevice:
    """Find a device's SunSpec chain: the ``SunS`` marker, then every model to the end model.

    Each model is read whole (so repeating groups are laid out from their counts) and kept
    in :attr:`ModelInstance.registers`.

    Parameters
    ----------
    client : RegisterClient
        The device's transport.
    base_addresses : sequence of int
        Where to look for ``SunS``, in order.
    max_models : int
        Give up after this many models (a chain without an end model).

    Returns
    -------
    SunSpecDevice
        The chain.

    Raises
    ------
    SunSpecError
        No marker at any base address, a model header that makes no sense, a chain that
        runs past 65535 or ``max_models``, or a known model whose registers do not fit its
        definition.
    DeviceUnavailable, DeviceError
        The device did not answer, or answered with an exception (an "illegal function" or
        "illegal data address" answer at a base address counts as "no marker there", and
        "illegal data address" after the last model as the end of the chain).
    """
    base = None
    for candidate in base_addresses:
        try:
            marker = client.read_registers(Table.HOLDING.value, candidate, 2)
        except DeviceError as exc:
            if exc.code in _NOTHING_THERE:
                continue
            raise
        if tuple(marker) == MARKER_REGISTERS:
            base = candidate
            break
    if base is None:
        tried = ", ".join(str(b) for b in base_addresses)
        msg = f"no SunSpec marker 'SunS' at {tried}: not a SunSpec device, or wrong unit id"
        raise SunSpecError(msg)
    models: list[ModelInstance] = []
    address = base + 2
    while True:
        if address + 2 > 0x10000:
            msg = f"SunSpec chain at {base} runs past register 65535 without an end model"
            raise SunSpecError(msg)
        try:
            model_id, length = client.read_registers(Table.HOLDING.value, address, 2)
        except DeviceError as exc:
            if not models or exc.code != ILLEGAL_DATA_ADDRESS:
                raise
            # Some devices stop after their last model without the end model: the chain
            # ends where the registers do.
            LOGGER.warning("SunSpec chain at %s ends at %s without an end model", base, address)
            break
        if model_id == END_MODEL_ID:
            break
        if len(models) >= max_models:
            msg = f"SunSpec chain at {base}: more than {max_models} models, no end model"
            raise SunSpecError(msg)
        if model_id == 0 or address + 2 + length > 0x10000:
            msg = f"SunSpec chain at {base}: model {model_id} with L = {length} at {address}"
            raise SunSpecError(msg)
        regs = [model_id, length, *fetch_registers(client, address + 2, length)]
        try:
            definition = model_definition(model_id)
        except SunSpecError:
            layout = None  # a vendor model: skipped over by its L
        else:
            layout = layout_model(definition, registers=regs)
        models.append(ModelInstance(model_id, address, length, layout, tuple(regs)))
        address += 2 + length
    return SunSpecDevice(base, tuple(models))


# ---------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class Source:
    """A point that feeds a canonical target.

    Parameters
    ----------
    target : Target
        What it feeds.
    point : str
        Point path in the model.
    invert : bool
        Flip to the target's sign (inverter and DER power: positive = production).
    writable : bool
        Put it in the allow-list.
    min, max : float, optional
        Write bounds, in the target's unit.
    """

    target: Target
    point: str
    invert: bool = False
    writable: bool = False
    min: float | None = None
    max: float | None = None


def _measure(models: Iterable[int], *sources: Source) -> tuple[tuple[int, tuple[Source, ...]], ...]:
    return tuple((m, sources) for m in models)


_INVERTER_P = Source(Target.P_W, "W", invert=True)
_INVERTER_WH = Source(Target.EXPORT_WH_TOTAL, "WH")
_METER = (
    Source(Target.P_W, "W"),
    Source(Target.IMPORT_WH_TOTAL, "TotWhImp"),
    Source(Target.EXPORT_WH_TOTAL, "TotWhExp"),
)

TARGET_SOURCES: tuple[tuple[tuple[int, tuple[Source, ...]], ...], ...] = (
    # Power and energy counters. Inverter and DER power is positive for production:
    # inverted to the GRID convention. Meter power (201-204, 211-214) is positive for import.
    (
        (701, (Source(Target.P_W, "W", invert=True), Source(Target.EXPORT_WH_TOTAL, "TotWhInj"),
               Source(Target.IMPORT_WH_TOTAL, "TotWhAbs"))),
        *_measure((103, 102, 101, 113, 112, 111), _INVERTER_P, _INVERTER_WH),
        *_measure((203, 204, 202, 201, 213, 214, 212, 211), *_METER),
    ),
    # State of charge.
    ((802, (Source(Target.SOC_PERCENT, "SoC"),)), (124, (Source(Target.SOC_PERCENT, "ChaState"),))),
    # The 100 % of the active power limit.
    (
        (121, (Source(Target.W_MAX, "WMax"),)),
        (120, (Source(Target.W_MAX, "WRtg"),)),
        (702, (Source(Target.W_MAX, "WMaxRtg"),)),
    ),
    # Active power limit (PV curtailment).
    (
        (704, (Source(Target.W_MAX_LIM_PCT, "WMaxLimPct", writable=True, min=0, max=100),
               Source(Target.W_MAX_LIM_ENA, "WMaxLimPctEna", writable=True, min=0, max=1))),
        (123, (Source(Target.W_MAX_LIM_PCT, "WMaxLimPct", writable=True, min=0, max=100),
               Source(Target.W_MAX_LIM_ENA, "WMaxLim_Ena", writable=True, min=0, max=1))),
    ),
    # Storage power: a signed watt setpoint (704 WSet, positive = discharge) or the two rates
    # of 124 (InWRte/OutWRte, percent of WChaMax, with StorCtl_Mod).
    (
        (704, (Source(Target.BATTERY_SETPOINT_W, "WSet", writable=True),
               Source(Target.BATTERY_SETPOINT_ENA, "WSetEna", writable=True, min=0, max=1),
               Source(Target.BATTERY_SETPOINT_MODE, "WSetMod", writable=True, min=1, max=1))),
        (124, (Source(Target.STORAGE_CHARGE_PCT, "InWRte", writable=True, min=-100, max=100),
               Source(Target.STORAGE_DISCHARGE_PCT, "OutWRte", writable=True, min=-100, max=100),
               Source(Target.STORAGE_CONTROL_MODE, "StorCtl_Mod", writable=True, min=0, max=3),
               Source(Target.STORAGE_W_MAX, "WChaMax"))),
    ),
    # Battery power ratings, the dynamic bounds of a watt setpoint.
    (
        (802, (Source(Target.W_CHARGE_MAX, "WChaRteMax"),
               Source(Target.W_DISCHARGE_MAX, "WDisChaRteMax"))),
        (702, (Source(Target.W_CHARGE_MAX, "WChaRteMax"),
               Source(Target.W_DISCHARGE_MAX, "WDisChaRteMax"))),
    ),
)  # fmt: skip
"""Which model points feed which canonical target. Each row is one feature; its first
alternative whose model the device has supplies all of the feature's targets (so a limit and
its enable always come from the same model)."""


def _choose_sources(device: SunSpecDevice) -> dict[tuple[int, str], Source]:
    """(index of the model in the chain, point path) -> Source."""
    chosen: dict[tuple[int, str], Source] = {}
    for feature in TARGET_SOURCES:
        for model_id, sources in feature:
            index = next((i for i, m in enumerate(device.models) if m.model_id == model_id), None)
            if index is None or device.models[index].layout is None:
                continue
            layout = device.models[index].layout
            assert layout is not None  # noqa: S101 - checked above
            paths = {p.path for p in layout.points}
            for s in sources:
                if s.point in paths:
                    chosen[index, s.point] = s
            break
    return chosen


def _register_map(device: SunSpecDevice, name: str, *, unit_id: int, description: str
                  ) -> RegisterMap:  # fmt: skip
    chosen = _choose_sources(device)
    fields: list[RegisterField] = [
        RegisterField(
            name=MARKER, address=device.base_address, kind=RegisterKind.STRING, length=2,
            expect=MARKER, description="SunSpec marker 0x53756E53",
        )
    ]  # fmt: skip
    for index, (model, prefix) in enumerate(zip(device.models, _prefixes(device.models),
                                                 strict=True)):  # fmt: skip
        if model.layout is None:
            for path, value in (("ID", model.model_id), ("L", model.length)):
                fields.append(RegisterField(
                    name=f"{prefix}.{path}", address=model.address + (path == "L"),
                    kind=RegisterKind.UINT16, expect=value,
                ))  # fmt: skip
            continue
        for p in model.layout.points:
            kind = _KINDS.get(p.point.type)
            if kind is None:
                continue
            source = chosen.get((index, p.path))
            expect: int | None = None
            if p.path == "ID":
                expect = model.model_id
            elif p.path == "L":
                expect = model.length
            scale = 1.0
            sf_field = None
            if isinstance(p.sf, int):
                scale = 10.0**p.sf
            elif isinstance(p.sf, str):
                sf_field = f"{prefix}.{p.sf}"
            unit = p.point.units if source is None else TARGETS[source.target].unit
            fields.append(RegisterField(
                name=f"{prefix}.{p.path}",
                address=model.address + p.offset,
                kind=kind,
                length=p.point.size if kind is RegisterKind.STRING else None,
                scale=scale,
                scale_factor_field=sf_field,
                invert=source.invert if source else False,
                unit=unit,
                target=source.target if source else None,
                writable=source.writable if source else False,
                min=source.min if source else None,
                max=source.max if source else None,
                expect=expect,
                description=f"model {model.model_id} {model.layout.definition.name}: "
                            f"{p.point.label or p.point.name}",
            ))  # fmt: skip
    end = device.end_address
    fields.append(RegisterField(name="End.ID", address=end, kind=RegisterKind.UINT16,
                                expect=END_MODEL_ID, description="end model"))  # fmt: skip
    fields.append(RegisterField(name="End.L", address=end + 1, kind=RegisterKind.UINT16, expect=0))
    ids = ", ".join(str(m) for m in device.model_ids)
    return RegisterMap(
        name=name,
        fields=tuple(fields),
        unit_id=unit_id,
        max_read_gap=32,
        description=description or f"SunSpec at {device.base_address}: models {ids}",
    )


__all__ = [
    "BASE_ADDRESSES",
    "END_MODEL_ID",
    "MARKER",
    "MODELS",
    "TARGET_SOURCES",
    "DecodedPoint",
    "GroupDef",
    "ModelDef",
    "ModelInstance",
    "ModelLayout",
    "PlacedPoint",
    "PointDef",
    "Source",
    "SunSpecDevice",
    "available_models",
    "declared_device",
    "decode_model",
    "discover",
    "fetch_registers",
    "layout_model",
    "model_definition",
    "parse_model_definition",
]
