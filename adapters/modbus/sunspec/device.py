"""A SunSpec device's model chain, and the register map generated from it (pure).

A SunSpec device, at a base address (40000, 0 or 50000, tried in that order)::

    base + 0    "SunS" (0x5375 0x6E53)
    base + 2    model ID, L, then L registers          e.g. 1 (common), L = 66
    ...         model ID, L, then L registers          e.g. 103 (three-phase inverter), L = 50
    ...         0xFFFF, 0                              end model

A :class:`SunSpecDevice` is such a chain, either declared (:func:`declared_device`, for map
files and simulators) or found on a device
(:func:`adapters.modbus.sunspec.discovery.discover`). :meth:`SunSpecDevice.register_map`
turns it into a :class:`~adapters.modbus.regmap.RegisterMap` whose canonical targets come
from one table (:data:`TARGET_SOURCES`), so :class:`~adapters.modbus.reading.DeviceReader`
and :class:`~adapters.modbus.writing.DeviceWriter` read and control a SunSpec device like
any other.

Examples
--------
>>> device = declared_device([1, 103, 120, 123])
>>> [(m.model_id, m.address, m.length) for m in device.models]
[(1, 40002, 66), (103, 40070, 50), (120, 40122, 26), (123, 40150, 24)]
>>> device.register_map("inv").field("103.W").address
40084
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from adapters.modbus.codec import RegisterKind
from adapters.modbus.errors import SunSpecError
from adapters.modbus.protocol import ADDRESS_SPACE
from adapters.modbus.regmap import TARGETS, RegisterField, RegisterMap, Target
from adapters.modbus.sunspec.models import (
    POINT_KINDS,
    DecodedPoint,
    ModelLayout,
    decode_model,
    layout_model,
    model_definition,
)

BASE_ADDRESSES = (40000, 0, 50000)
"""Where a SunSpec device may start, in the order they are tried."""
MARKER = "SunS"
"""The two registers at the base address: 0x5375 0x6E53."""
MARKER_REGISTERS = (0x5375, 0x6E53)
""":data:`MARKER` as registers."""
END_MODEL_ID = 0xFFFF
"""ID of the end model that closes the chain."""


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

    def register_map(
        self, name: str = "sunspec", *, unit_id: int = 1, description: str = ""
    ) -> RegisterMap:
        """A register map of every point, with the canonical targets of :data:`TARGET_SOURCES`.

        Field names are ``"<model id>.<path>"`` (``"103.W"``, ``"160.module[0].DCW"``); a
        second instance of a model is ``"<id>#2.<path>"``. ``SunS``, each model's ID and L and
        the end model are identity fields (``expect``). Only targeted control points are
        writable (the allow-list), with the bounds of the table.

        Parameters
        ----------
        name : str
            The map's name.
        unit_id : int
            The map's default unit id.
        description : str
            Free text; a list of the models by default.

        Returns
        -------
        RegisterMap
            The generated map.

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
    if address + 2 > ADDRESS_SPACE:
        msg = f"models {list(models)} at {base_address} end beyond register 65535"
        raise SunSpecError(msg)
    return SunSpecDevice(base_address, tuple(placed))


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

_MAX_RVRT_S = 172800
"""Longest revert time [s] PeerGrid writes to a 32-bit SunSpec timer: two of the longest
market interval (a day)."""

_MAX_RVRT16_S = 65534
"""Longest revert time [s] in a 16-bit SunSpec timer (65535 means "not implemented")."""

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
    # Active power limit (PV curtailment), with its revert timer: the device drops the limit
    # by itself when the controller stops refreshing it.
    (
        (704, (Source(Target.W_MAX_LIM_PCT, "WMaxLimPct", writable=True, min=0, max=100),
               Source(Target.W_MAX_LIM_ENA, "WMaxLimPctEna", writable=True, min=0, max=1),
               Source(Target.W_MAX_LIM_RVRT_PCT, "WMaxLimPctRvrt", writable=True, min=0,
                      max=100),
               Source(Target.W_MAX_LIM_RVRT_ENA, "WMaxLimPctEnaRvrt", writable=True, min=0,
                      max=1),
               Source(Target.W_MAX_LIM_RVRT_S, "WMaxLimPctRvrtTms", writable=True, min=0,
                      max=_MAX_RVRT_S))),
        (123, (Source(Target.W_MAX_LIM_PCT, "WMaxLimPct", writable=True, min=0, max=100),
               Source(Target.W_MAX_LIM_ENA, "WMaxLim_Ena", writable=True, min=0, max=1),
               Source(Target.W_MAX_LIM_RVRT_S, "WMaxLimPct_RvrtTms", writable=True, min=0,
                      max=_MAX_RVRT16_S))),
    ),
    # Storage power: a signed watt setpoint (704 WSet, positive = discharge) or the two rates
    # of 124 (InWRte/OutWRte, percent of WChaMax, with StorCtl_Mod).
    (
        (704, (Source(Target.BATTERY_SETPOINT_W, "WSet", writable=True),
               Source(Target.BATTERY_SETPOINT_ENA, "WSetEna", writable=True, min=0, max=1),
               Source(Target.BATTERY_SETPOINT_MODE, "WSetMod", writable=True, min=1, max=1),
               Source(Target.BATTERY_SETPOINT_RVRT_W, "WSetRvrt", writable=True, min=0, max=0),
               Source(Target.BATTERY_SETPOINT_RVRT_ENA, "WSetEnaRvrt", writable=True, min=0,
                      max=1),
               Source(Target.BATTERY_SETPOINT_RVRT_S, "WSetRvrtTms", writable=True, min=0,
                      max=_MAX_RVRT_S))),
        (124, (Source(Target.STORAGE_CHARGE_PCT, "InWRte", writable=True, min=-100, max=100),
               Source(Target.STORAGE_DISCHARGE_PCT, "OutWRte", writable=True, min=-100, max=100),
               Source(Target.STORAGE_CONTROL_MODE, "StorCtl_Mod", writable=True, min=0, max=3),
               Source(Target.STORAGE_W_MAX, "WChaMax"),
               Source(Target.STORAGE_RVRT_S, "InOutWRte_RvrtTms", writable=True, min=0,
                      max=_MAX_RVRT16_S))),
    ),
    # A battery's usable energy capacity.
    ((802, (Source(Target.CAPACITY_WH, "WHRtg"),)), (120, (Source(Target.CAPACITY_WH, "WHRtg"),))),
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
            kind = POINT_KINDS.get(p.point.type)
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
    "MARKER_REGISTERS",
    "TARGET_SOURCES",
    "ModelInstance",
    "Source",
    "SunSpecDevice",
    "declared_device",
]
