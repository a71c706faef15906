"""SunSpec devices whose models are found on first contact (a site's ``map = "sunspec"``).

:class:`DiscoveredMap` runs :func:`~adapters.modbus.sunspec.discovery.discover` the first
time a device's map is needed and keeps the register map generated from the model chain
(:meth:`~adapters.modbus.sunspec.device.SunSpecDevice.register_map`).
:class:`DiscoveringReader` and :class:`DiscoveringWriter` read and write through it; one
device's reader and writer share one :class:`DiscoveredMap`, so its models are found once.

Failures are values here too, as for every reader and writer of :mod:`adapters.modbus`:

* a discovery that fails (no answer, no ``SunS`` marker, a broken model chain, a chain
  without a power point) gives a ``MISSING`` reading (``STALE`` while the last good one is
  recent) or a refused write, with the reason; the next read or write tries again;
* a reading whose identity check fails (the marker, a model id or length changed: new
  firmware, or another device at that address) drops the map, so the next read discovers
  the models again.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from adapters.modbus.client import RegisterClient
from adapters.modbus.errors import AdapterError, InvalidArgument
from adapters.modbus.reading import Backoff, DeviceReader
from adapters.modbus.regmap import RegisterMap
from adapters.modbus.sunspec.discovery import discover
from adapters.modbus.writing import DeviceWriter, WriteResult
from market.domain import (
    BusId,
    DeviceId,
    MeterReading,
    ParticipantId,
    ReadingQuality,
    Setpoint,
    require_utc,
)
from market.units import W, Wh

LOGGER = logging.getLogger(__name__)

SUNSPEC_DISCOVERY = "sunspec"
"""The map name that asks for discovery on first contact (a site file's ``map``)."""


class DiscoveredMap:
    """A SunSpec device's register map, discovered on first use and then kept.

    Safe to share between threads (a lock guards discovery).

    Parameters
    ----------
    client : RegisterClient
        The device's transport; the caller owns and closes it.
    name : str
        The generated map's name (for messages).
    """

    def __init__(self, client: RegisterClient, name: str) -> None:
        self.client = client
        self.name = name
        self._map: RegisterMap | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "not discovered" if self._map is None else self._map.description
        return f"DiscoveredMap({self.name!r}, {state})"

    @property
    def register_map(self) -> RegisterMap | None:
        """The map found so far; ``None`` before the first successful discovery."""
        return self._map

    def get(self) -> RegisterMap:
        """The device's map: the kept one, or discovered now.

        Returns
        -------
        RegisterMap
            The map generated from the device's model chain.

        Raises
        ------
        AdapterError
            Discovery failed (:class:`~adapters.modbus.errors.SunSpecError`: no marker, a
            broken chain; :class:`~adapters.modbus.errors.DeviceUnavailable` or
            :class:`~adapters.modbus.errors.DeviceError`: the device did not answer). Nothing
            is kept; the next call tries again.
        """
        with self._lock:
            if self._map is None:
                device = discover(self.client)
                self._map = device.register_map(self.name)
                LOGGER.info("%s: %s", self.name, self._map.description)
            return self._map

    def forget(self) -> None:
        """Drop the kept map; the next :meth:`get` discovers the models again."""
        with self._lock:
            self._map = None


class DiscoveringReader:
    """Reads a SunSpec device through its :class:`DiscoveredMap`; never raises for the device.

    The first :meth:`read` discovers the models; later reads go through a
    :class:`~adapters.modbus.reading.DeviceReader` on the discovered map (with its STALE
    substitution and backoff). See the module docstring for failures.

    Parameters
    ----------
    device_id : DeviceId
        The device's id in the site.
    participant : ParticipantId
        Who owns it.
    bus : BusId
        Where it connects.
    found : DiscoveredMap
        The device's map, shared with its writer.
    max_age_s : float
        How old [s] the last good reading may be to stand in for a failed read (STALE).
    backoff : Backoff, optional
        Pauses after failed reads (of the :class:`DeviceReader`).

    Raises
    ------
    InvalidArgument
        ``max_age_s < 0``.
    """

    def __init__(
        self,
        device_id: DeviceId,
        participant: ParticipantId,
        bus: BusId,
        found: DiscoveredMap,
        max_age_s: float = 0.0,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        if max_age_s < 0:
            msg = f"max_age_s must be >= 0, got {max_age_s}"
            raise InvalidArgument(msg)
        self.device_id = device_id
        self.participant = participant
        self.bus = bus
        self.found = found
        self.max_age_s = float(max_age_s)
        self.backoff = backoff
        self._reader: DeviceReader | None = None

    def __repr__(self) -> str:
        return f"DiscoveringReader({self.device_id!r}, {self.found!r})"

    def read(self, now: datetime) -> MeterReading:
        """Read the device at ``now``, discovering its models first if needed.

        Parameters
        ----------
        now : datetime
            The caller's clock (timezone-aware).

        Returns
        -------
        MeterReading
            ``OK``, ``STALE`` or ``MISSING`` (a failed discovery is ``MISSING`` with the
            reason ``"SunSpec discovery failed: ..."``, or ``STALE`` from an earlier map's
            last good reading).

        Raises
        ------
        market.errors.InvalidInterval
            ``now`` is naive.
        """
        now = require_utc(now, "now")
        try:
            register_map = self.found.get()
        except AdapterError as exc:
            return self.unavailable(now, f"SunSpec discovery failed: {exc}; tried again next read")
        reader = self._reader
        if reader is None or reader.register_map is not register_map:
            try:
                reader = DeviceReader(
                    self.device_id,
                    self.participant,
                    self.bus,
                    self.found.client,
                    register_map,
                    self.max_age_s,
                    backoff=self.backoff,
                )
            except AdapterError as exc:  # a chain without a power point
                self.found.forget()
                return self.unavailable(now, f"SunSpec device cannot be read: {exc}")
            self._reader = reader
        reading = reader.read(now)
        if reader.identity_problem:
            self.found.forget()
        return reading

    def unavailable(self, now: datetime, reason: str) -> MeterReading:
        """The reading to report when the device could not be read at ``now``.

        STALE from the last good reading while it is at most ``max_age_s`` old, else
        MISSING (see :meth:`DeviceReader.unavailable`).

        Parameters
        ----------
        now : datetime
            When the read was given up (timezone-aware).
        reason : str
            Why, for the reading's ``reason``.

        Returns
        -------
        MeterReading
            ``STALE`` or ``MISSING``.
        """
        if self._reader is not None:
            return self._reader.unavailable(now, reason)
        return MeterReading(
            device_id=self.device_id,
            participant=self.participant,
            bus=self.bus,
            measured_at=require_utc(now, "now"),
            p_w=W(0),
            import_wh_total=Wh(0),
            export_wh_total=Wh(0),
            quality=ReadingQuality.MISSING,
            reason=reason,
        )


class DiscoveringWriter:
    """Writes setpoints to a SunSpec device through its :class:`DiscoveredMap`.

    Discovers the models first if needed; then a
    :class:`~adapters.modbus.writing.DeviceWriter` on the discovered map writes, reads back
    and confirms. Never raises for device trouble.

    Parameters
    ----------
    device_id : DeviceId
        The device's id; setpoints for other ids are refused.
    found : DiscoveredMap
        The device's map, shared with its reader.
    rated_w : int, optional
        The inverter's rating [W] (the 100 % of a PV limit); read from the device when not
        given.
    revert_s : float, optional
        The device's own revert timer written with every setpoint [s]
        (:class:`~adapters.modbus.writing.DeviceWriter`).
    backoff : Backoff, optional
        How long a device whose write failed is left alone (as for reads).

    Raises
    ------
    InvalidArgument
        ``rated_w <= 0``.
    """

    def __init__(
        self,
        device_id: DeviceId,
        found: DiscoveredMap,
        *,
        rated_w: int | None = None,
        revert_s: float | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if rated_w is not None and rated_w <= 0:
            msg = f"rated_w must be > 0 W, got {rated_w}"
            raise InvalidArgument(msg)
        self.device_id = device_id
        self.found = found
        self.rated_w = rated_w
        self.revert_s = revert_s
        self.backoff = backoff if backoff is not None else Backoff()
        self._writer: DeviceWriter | None = None

    def __repr__(self) -> str:
        return f"DiscoveringWriter({self.device_id!r}, {self.found!r})"

    def write(self, setpoint: Setpoint) -> WriteResult:
        """Apply ``setpoint``, discovering the device's models first if needed.

        Parameters
        ----------
        setpoint : Setpoint
            What to apply (``PV_LIMIT`` or ``BATTERY``; ``p_w`` [W]).

        Returns
        -------
        WriteResult
            ``ok=False`` with ``"SunSpec discovery failed: ..."`` when the models could not
            be found; otherwise what the :class:`DeviceWriter` reports.
        """
        try:
            register_map = self.found.get()
        except AdapterError as exc:
            reason = f"SunSpec discovery failed: {exc}"
            LOGGER.warning("%s: setpoint not applied: %s", self.device_id, reason)
            return WriteResult(setpoint=setpoint, ok=False, reason=reason)
        except Exception as exc:  # a bug in discovery: name it, refuse this write, keep the tick
            reason = f"unexpected {type(exc).__name__}: {exc}"
            LOGGER.exception("%s: setpoint not applied: %s", self.device_id, reason)
            return WriteResult(setpoint=setpoint, ok=False, reason=reason)
        writer = self._writer
        if writer is None or writer.register_map is not register_map:
            writer = DeviceWriter(
                self.device_id,
                self.found.client,
                register_map,
                rated_w=self.rated_w,
                revert_s=self.revert_s,
                backoff=self.backoff,
            )
            self._writer = writer
        return writer.write(setpoint)


__all__ = ["SUNSPEC_DISCOVERY", "DiscoveredMap", "DiscoveringReader", "DiscoveringWriter"]
