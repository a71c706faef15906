"""SunSpec model definitions as data: placing points at registers, and decoding them (pure).

The model tables are not typed here: they are the JSON model definitions that pysunspec2
ships (``sunspec2/models/json/model_<id>.json``, 113 models), read as data
(:func:`model_definition`). This module places their points at register offsets
(:func:`layout_model`) and decodes a model's registers into values (:func:`decode_model`).
No I/O: :mod:`adapters.modbus.sunspec.discovery` reads devices.

Inside a model, a group's points come first, then its sub-groups; a sub-group repeats
``count`` times, where ``count`` is absent (once), a number of a count point (``NPt``), or
0 ("as many as fit in L", e.g. the modules of model 160). Point paths name the instance:
``W``, ``module[0].DCW``, ``Crv[1].Pt[2].V``, ``PFWInj.PF``.

Values: ``raw * 10**sf`` with ``sf`` the scale-factor point the definition names (searched
from the point's group outwards) or a literal exponent; SunSpec's "not implemented" raw
values decode to ``None`` (the table is in :mod:`adapters.modbus.codec`), and a value whose
scale factor is not implemented is ``None`` too.

Examples
--------
>>> layout = layout_model(model_definition(103))
>>> layout.length, layout.point("W").offset
(50, 14)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from adapters.modbus import codec
from adapters.modbus.codec import RegisterKind, Value
from adapters.modbus.errors import SunSpecError

MODELS = (1, 101, 102, 103, 111, 112, 113, 120, 121, 123, 124, 160,
          201, 202, 203, 204, 701, 702, 704, 802)  # fmt: skip
"""Models PeerGrid maps onto canonical targets or tests end to end; any model pysunspec2
defines is discovered and decoded."""

POINT_KINDS: Mapping[str, RegisterKind] = {
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
    if ptype not in POINT_KINDS and ptype not in _SIZES:
        msg = f"{where}: point {name!r} has unknown type {ptype!r}"
        raise SunSpecError(msg)
    if size <= 0:
        msg = f"{where}: point {name!r} has size {size}"
        raise SunSpecError(msg)
    kind = POINT_KINDS.get(ptype)
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

    Parameters
    ----------
    data : Mapping
        The parsed JSON (``{"id": 103, "group": {...}}``).

    Returns
    -------
    ModelDef
        The definition.

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

    Parameters
    ----------
    model_id : int
        The SunSpec model ID.

    Returns
    -------
    ModelDef
        The definition (cached).

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

        Parameters
        ----------
        path : str
            Instance path (``W``, ``module[0].DCW``).

        Returns
        -------
        PlacedPoint
            The point.

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
        kind = POINT_KINDS.get(p.point.type)
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


__all__ = [
    "MODELS",
    "POINT_KINDS",
    "DecodedPoint",
    "GroupDef",
    "ModelDef",
    "ModelLayout",
    "PlacedPoint",
    "PointDef",
    "available_models",
    "decode_model",
    "layout_model",
    "model_definition",
    "parse_model_definition",
]
