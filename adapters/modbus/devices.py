"""Devices as PeerGrid sees them: readings in, setpoints out, failures as values.

:class:`DeviceReader` turns a device's registers into a :class:`market.domain.MeterReading`
through its :class:`~adapters.modbus.registermaps.RegisterMap`; :class:`DeviceWriter` turns a
:class:`market.domain.Setpoint` into register writes through the map's allow-list. Neither
raises for device trouble (OpenEMS's fault flag, in our words): a reader returns
``quality=MISSING`` (or ``STALE``) with a ``reason``, a writer a
``WriteResult(ok=False, reason=...)``. Errors of the caller (a naive ``now``, a map without a
``p_w`` field) still raise.

Sign conventions, stated once:

* ``MeterReading.p_w`` [W]: **positive = import from the microgrid (consumption), negative =
  export (production)**, the OpenEMS GRID convention. Maps flip vendor signs with ``invert``.
* BATTERY ``Setpoint.p_w`` [W]: positive = discharge, negative = charge.
* PV_LIMIT ``Setpoint.p_w`` [W]: the most the inverter may produce, ``>= 0``.

Dead devices. Every failed read (the client has already retried) pauses the device for
``Backoff.initial_s * factor**(n-1)`` seconds, capped at ``max_s``, after its ``n``-th failure
in a row, on the caller's clock ``now``. While paused, :meth:`DeviceReader.read` does not
touch the transport and answers at once with the reason ``"paused after n failures ..."``.
The first successful read clears the count.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from adapters.modbus import codec
from adapters.modbus.client import RegisterClient
from adapters.modbus.codec import Table, Value
from adapters.modbus.errors import AdapterError, CodecError, RegisterMapError, WriteRefused
from adapters.modbus.registermaps import (
    MEASUREMENT_TARGETS,
    TARGETS,
    ReadBlock,
    RegisterField,
    RegisterMap,
    Target,
    decode_field,
    encode_field,
    plan_reads,
)
from market.domain import (
    BusId,
    DeviceId,
    MeterReading,
    ParticipantId,
    ReadingQuality,
    Setpoint,
    SetpointKind,
    require_utc,
)
from market.units import W, Wh, round_half_even

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """How long a failed device is left alone: ``initial_s * factor**(n-1)``, at most ``max_s``.

    Parameters
    ----------
    initial_s : float
        Pause [s] after the first failure.
    factor : float
        Growth of the pause per further failure, ``>= 1``.
    max_s : float
        Longest pause [s].
    """

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.factor < 1 or self.max_s < self.initial_s:
            msg = f"need 0 <= initial_s <= max_s and factor >= 1, got {self}"
            raise ValueError(msg)

    def delay_s(self, failures: int) -> float:
        """Pause [s] after ``failures`` failures in a row (0 for none)."""
        if failures <= 0:
            return 0.0
        # Cap the exponent before computing the power: a long outage must not overflow.
        exponent = min(failures - 1, 64)
        return float(min(self.initial_s * self.factor**exponent, self.max_s))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceHealth:
    """A device's fault state, for dashboards and logs.

    Parameters
    ----------
    failures : int
        Failed reads in a row.
    paused_until : datetime or None
        No read is attempted before this time (UTC).
    last_error : str
        Reason of the last failure (``""`` if none yet).
    last_ok_at : datetime or None
        Time of the last good reading.
    """

    failures: int
    paused_until: datetime | None
    last_error: str
    last_ok_at: datetime | None


class _RegisterImage:
    """Registers fetched in one read pass, by table and address."""

    def __init__(self) -> None:
        self._regs: dict[tuple[Table, int], int] = {}

    def fetch(self, client: RegisterClient, blocks: Iterable[ReadBlock]) -> None:
        for block in blocks:
            values = client.read_registers(block.table.value, block.address, block.count)
            if len(values) != block.count:
                msg = f"asked for {block.count} registers at {block.address}, got {len(values)}"
                raise CodecError(msg)
            for offset, value in enumerate(values):
                self._regs[block.table, block.address + offset] = value

    def registers(self, fld: RegisterField) -> list[int]:
        return [self._regs[fld.table, a] for a in range(fld.address, fld.end)]


def _scale_factor(
    register_map: RegisterMap, fld: RegisterField, image: _RegisterImage
) -> int | None:
    sf_field = register_map.scale_factor_of(fld)
    if sf_field is None:
        return None
    return codec.decode_scale_factor(image.registers(sf_field)[0])


def _value(register_map: RegisterMap, fld: RegisterField, image: _RegisterImage) -> Value | None:
    return decode_field(fld, image.registers(fld), _scale_factor(register_map, fld, image))


def _canonical(
    register_map: RegisterMap, fld: RegisterField, image: _RegisterImage
) -> float | None:
    value = _value(register_map, fld, image)
    if value is None:
        return None
    if isinstance(value, str):
        msg = f"field {fld.name!r} holds text, not a number"
        raise CodecError(msg)
    return fld.to_canonical(value)


class DeviceReader:
    """Reads one device into a :class:`market.domain.MeterReading`, never raising for it.

    Outcomes of :meth:`read`:

    * ``OK``: the device answered; values decoded, scaled, sign-corrected (GRID convention)
      and rounded to integer W and Wh with :func:`market.units.round_half_even`.
    * ``STALE``: the read failed (or the device is paused) but the last good reading is at
      most ``max_age_s`` old; its values and ``measured_at`` are returned, with the failure
      as ``reason``.
    * ``MISSING``: the read failed and nothing recent stands in; numbers are 0, ``reason``
      says why (``"paused after 3 failures ..."``, ``"... timed out"``, an identity or decode
      problem).

    Energy counters the device does not implement read as 0 (SunSpec cannot tell an
    accumulator that never counted from a missing one). A missing ``p_w`` makes the reading
    MISSING. Identity fields (``expect`` in the map: ``SunS``, model ids) are checked on the
    first read and again after every failure.

    A reader keeps per-device state (failures, pause, last good reading): use one reader per
    device, from one thread at a time. Readers of different devices may run in parallel
    threads: :class:`~adapters.modbus.client.ModbusTkClient` serialises requests only per TCP
    connection or per RTU line (see :class:`~adapters.modbus.polling.Poller`).

    Parameters
    ----------
    device_id : DeviceId
        The device's id in the site.
    participant : ParticipantId
        Who owns it.
    bus : BusId
        Where it connects.
    client : RegisterClient
        Its transport (:class:`~adapters.modbus.client.ModbusTkClient` or a fake). The caller
        owns and closes it.
    register_map : RegisterMap
        Its register map; must feed ``p_w``.
    max_age_s : float
        How old [s] the last good reading may be to stand in for a failed read (as STALE);
        ``0`` makes every failure MISSING.
    backoff : Backoff
        Pauses after failures.

    Raises
    ------
    RegisterMapError
        The map has no ``p_w`` field.
    """

    def __init__(
        self,
        device_id: DeviceId,
        participant: ParticipantId,
        bus: BusId,
        client: RegisterClient,
        register_map: RegisterMap,
        max_age_s: float = 0.0,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        if register_map.for_target(Target.P_W) is None:
            msg = f"register map {register_map.name!r} has no field for p_w: cannot read a meter"
            raise RegisterMapError(msg)
        if max_age_s < 0:
            msg = f"max_age_s must be >= 0, got {max_age_s}"
            raise ValueError(msg)
        self.device_id = device_id
        self.participant = participant
        self.bus = bus
        self.client = client
        self.register_map = register_map
        self.max_age_s = float(max_age_s)
        self.backoff = backoff or Backoff()
        self._longest_pause = timedelta(seconds=self.backoff.max_s)
        self._measured = tuple(f for f in register_map.fields if f.target in MEASUREMENT_TARGETS)
        wanted = register_map.with_scale_factors(self._measured)
        gap = register_map.max_read_gap
        self._plan = plan_reads(wanted, gap)
        self._identity = register_map.identity_fields
        self._identity_plan = plan_reads((*wanted, *self._identity), gap)
        self._verified = not self._identity
        self._failures = 0
        self._paused_until: datetime | None = None
        self._last_error = ""
        self._last_ok: MeterReading | None = None

    def __repr__(self) -> str:
        return f"DeviceReader({self.device_id!r}, map={self.register_map.name!r})"

    @property
    def health(self) -> DeviceHealth:
        """Fault state: failures in a row, pause, last error, last good reading time."""
        return DeviceHealth(
            failures=self._failures,
            paused_until=self._paused_until,
            last_error=self._last_error,
            last_ok_at=None if self._last_ok is None else self._last_ok.measured_at,
        )

    @property
    def last_reading(self) -> MeterReading | None:
        """The last OK reading, or ``None``."""
        return self._last_ok

    def read(self, now: datetime) -> MeterReading:
        """Read the device now; never raises for device trouble.

        Parameters
        ----------
        now : datetime
            The caller's clock (timezone-aware); stamps the reading and drives the backoff.

        Returns
        -------
        MeterReading
            ``OK``, ``STALE`` or ``MISSING`` (see the class docstring).

        Raises
        ------
        market.errors.InvalidInterval
            ``now`` is naive.
        """
        now = require_utc(now, "now")
        paused = self._paused_until
        # A pause longer than any backoff means the caller's clock went back: ignore it.
        if paused is not None and timedelta(0) < paused - now <= self._longest_pause:
            n = self._failures
            reason = (
                f"paused after {n} failure{'s' if n != 1 else ''} "
                f"until {paused.isoformat()} (last error: {self._last_error})"
            )
            return self._substitute(now, reason)
        image = _RegisterImage()
        try:
            image.fetch(self.client, self._plan if self._verified else self._identity_plan)
        except AdapterError as exc:
            return self._device_failed(now, str(exc))
        except Exception as exc:  # a RegisterClient that does not wrap its errors
            LOGGER.exception("%s: unexpected error from %r", self.device_id, self.client)
            return self._device_failed(now, f"unexpected {type(exc).__name__}: {exc}")
        self._failures = 0
        self._paused_until = None
        try:
            return self._decode(image, now)
        except (CodecError, ValueError) as exc:
            self._verified = not self._identity
            self._last_error = f"cannot decode: {exc}"
            return self._substitute(now, self._last_error)

    def unavailable(self, now: datetime, reason: str) -> MeterReading:
        """The reading to report when the device could not be read at ``now``.

        The last good reading as ``STALE`` if it is at most ``max_age_s`` old, else
        ``MISSING``; ``reason`` says why. For callers that give up on a read (a
        :class:`~adapters.modbus.polling.Poller` past its deadline); safe from any thread.
        """
        return self._substitute(require_utc(now, "now"), reason)

    def _device_failed(self, now: datetime, error: str) -> MeterReading:
        self._failures += 1
        self._verified = not self._identity
        delay = self.backoff.delay_s(self._failures)
        self._paused_until = now + timedelta(seconds=delay)
        self._last_error = error
        LOGGER.warning(
            "%s: read failed (%d in a row), paused %.3g s: %s",
            self.device_id,
            self._failures,
            delay,
            error,
        )
        return self._substitute(now, f"{error}; paused for {delay:g} s")

    def _substitute(self, now: datetime, reason: str) -> MeterReading:
        last = self._last_ok
        if last is not None and self.max_age_s > 0:
            age = (now - last.measured_at).total_seconds()
            if 0 <= age <= self.max_age_s:
                return dataclasses.replace(
                    last,
                    quality=ReadingQuality.STALE,
                    reason=f"{reason}; last good values from {age:g} s ago",
                )
        return MeterReading(
            device_id=self.device_id,
            participant=self.participant,
            bus=self.bus,
            measured_at=now,
            p_w=W(0),
            import_wh_total=Wh(0),
            export_wh_total=Wh(0),
            quality=ReadingQuality.MISSING,
            reason=reason,
        )

    def _check_identity(self, image: _RegisterImage) -> str | None:
        for fld in self._identity:
            got = image.registers(fld)
            if got != fld.expected_registers():
                try:
                    seen: object = codec.decode(got, fld.kind, fld.word_order, sunspec_nulls=False)
                except CodecError:
                    seen = got
                return (
                    f"identity check failed: {fld.name} is {seen!r}, expected {fld.expect!r} "
                    f"(wrong device, unit id or register map {self.register_map.name!r}?)"
                )
        return None

    def _decode(self, image: _RegisterImage, now: datetime) -> MeterReading:
        if not self._verified:
            problem = self._check_identity(image)
            if problem is not None:
                self._last_error = problem
                return self._substitute(now, problem)
            self._verified = True
        values: dict[Target, float | None] = {}
        for fld in self._measured:
            assert fld.target is not None  # noqa: S101 - _measured only holds targeted fields
            values[fld.target] = _canonical(self.register_map, fld, image)
        p_w = values.get(Target.P_W)
        if p_w is None:
            name = self.register_map.for_target(Target.P_W)
            self._last_error = f"p_w not available: {name.name if name else '?'} is not implemented"
            return self._substitute(now, self._last_error)
        counters: dict[Target, int] = {}
        for target in (Target.IMPORT_WH_TOTAL, Target.EXPORT_WH_TOTAL):
            value = values.get(target)
            counters[target] = 0 if value is None else round_half_even(value)
            if counters[target] < 0:
                self._last_error = f"{target.value} is negative ({value} Wh)"
                return self._substitute(now, self._last_error)
        reading = MeterReading(
            device_id=self.device_id,
            participant=self.participant,
            bus=self.bus,
            measured_at=now,
            p_w=W(round_half_even(p_w)),
            import_wh_total=Wh(counters[Target.IMPORT_WH_TOTAL]),
            export_wh_total=Wh(counters[Target.EXPORT_WH_TOTAL]),
            soc_percent=values.get(Target.SOC_PERCENT),
        )
        self._last_ok = reading
        return reading


def fetch_fields(
    client: RegisterClient,
    register_map: RegisterMap,
    names: Iterable[str] | None = None,
) -> dict[str, Value | None]:
    """Read fields of a device and decode them, in the field's own unit and sign.

    For inspection (``peergrid devices read``); the cycle reads through
    :class:`DeviceReader`.

    Parameters
    ----------
    client : RegisterClient
        The device's transport.
    register_map : RegisterMap
        Its map.
    names : iterable of str, optional
        Fields to read; all of them by default.

    Returns
    -------
    dict of str to value
        Field name -> value (``None`` = not implemented, or registers that do not decode).

    Raises
    ------
    DeviceUnavailable, DeviceError
        The device did not answer.
    RegisterMapError
        An unknown field name.
    """
    wanted = register_map.fields if names is None else tuple(register_map.field(n) for n in names)
    image = _RegisterImage()
    image.fetch(
        client, plan_reads(register_map.with_scale_factors(wanted), register_map.max_read_gap)
    )
    out: dict[str, Value | None] = {}
    for fld in wanted:
        try:
            out[fld.name] = _value(register_map, fld, image)
        except CodecError:
            out[fld.name] = None
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteResult:
    """What became of a setpoint.

    Parameters
    ----------
    setpoint : Setpoint
        The request.
    ok : bool
        Written, read back and confirmed.
    reason : str
        Why not (or a note such as a limit above the rating); ``""`` for a plain success.
    readback_w : W or None
        The power [W] the device confirms (a PV limit converted back from percent, or the
        battery setpoint); ``None`` when nothing was read back.
    written : tuple of (str, float)
        Fields written and their values, in the field's unit.
    readback : tuple of (str, float or None)
        Fields read back and their values, in the field's unit.
    """

    setpoint: Setpoint
    ok: bool
    reason: str = ""
    readback_w: W | None = None
    written: tuple[tuple[str, float], ...] = ()
    readback: tuple[tuple[str, float | None], ...] = ()


class _Refused(Exception):
    """A setpoint this writer will not (or cannot) apply; the message is the reason."""


class DeviceWriter:
    """Writes setpoints through a register map's allow-list, then reads back and confirms.

    * ``PV_LIMIT``: ``p_w`` [W] becomes ``w_max_lim_pct = 100 * p_w / w_max`` [%] (SunSpec
      WMaxLimPct, scaled by its scale factor), then ``w_max_lim_ena = 1`` if the map has it.
      ``w_max`` is ``rated_w`` if given, else read from the map's ``w_max`` field (SunSpec
      WRtg). A limit above ``w_max`` is written as the field's maximum (100 %), said in
      ``reason``; a negative one is refused.
    * ``BATTERY``: ``p_w`` [W] (positive = discharge) goes to the ``battery_setpoint_w`` field
      (after ``battery_setpoint_mode = 1`` and before ``battery_setpoint_ena = 1`` where the
      map has them: SunSpec 704 WSetMod, WSet, WSetEna), within the field's bounds and the
      device's ``w_charge_max``/``w_discharge_max``; or, for SunSpec 124, becomes the two
      storage rates (see :meth:`_battery_rates`).

    Only fields with ``writable: true`` are ever written, and only with values inside their
    ``min``/``max``; anything else is a ``WriteResult(ok=False)`` and nothing is sent. After
    writing, the fields are read back: different registers make the result not ok.

    Parameters
    ----------
    device_id : DeviceId
        The device's id; setpoints for other ids are refused.
    client : RegisterClient
        Its transport; the caller owns and closes it.
    register_map : RegisterMap
        Its register map.
    rated_w : int, optional
        The inverter's rating [W], the 100 % of ``w_max_lim_pct``; read from the device when
        not given.
    """

    def __init__(
        self,
        device_id: DeviceId,
        client: RegisterClient,
        register_map: RegisterMap,
        *,
        rated_w: int | None = None,
    ) -> None:
        if rated_w is not None and rated_w <= 0:
            msg = f"rated_w must be > 0 W, got {rated_w}"
            raise ValueError(msg)
        self.device_id = device_id
        self.client = client
        self.register_map = register_map
        self.rated_w = rated_w

    def __repr__(self) -> str:
        return f"DeviceWriter({self.device_id!r}, map={self.register_map.name!r})"

    def write(self, setpoint: Setpoint) -> WriteResult:
        """Apply ``setpoint``; never raises for device trouble or a refused value.

        Parameters
        ----------
        setpoint : Setpoint
            What to apply (``PV_LIMIT`` or ``BATTERY``).

        Returns
        -------
        WriteResult
            ``ok=True`` only when the device holds exactly what was written.
        """
        log: list[tuple[str, float]] = []
        try:
            return self._apply(setpoint, log)
        except (_Refused, WriteRefused, CodecError) as exc:
            reason = f"refused: {exc}"
        except AdapterError as exc:
            reason = f"device error: {exc}"
        except Exception as exc:  # a RegisterClient that does not wrap its errors
            LOGGER.exception("%s: unexpected error writing %r", self.device_id, setpoint)
            reason = f"unexpected {type(exc).__name__}: {exc}"
        LOGGER.warning("%s: setpoint %s %d W not applied: %s", self.device_id,
                       setpoint.kind.value, setpoint.p_w, reason)  # fmt: skip
        return WriteResult(setpoint=setpoint, ok=False, reason=reason, written=tuple(log))

    # -- the two kinds ------------------------------------------------------------------

    def _apply(self, setpoint: Setpoint, log: list[tuple[str, float]]) -> WriteResult:
        if setpoint.device_id != self.device_id:
            msg = f"setpoint for {setpoint.device_id!r} sent to {self.device_id!r}"
            raise _Refused(msg)
        if setpoint.kind is SetpointKind.PV_LIMIT:
            return self._pv_limit(setpoint, log)
        if setpoint.kind is SetpointKind.BATTERY:
            return self._battery(setpoint, log)
        msg = f"setpoint kind {setpoint.kind!r} is not supported"
        raise _Refused(msg)

    def _pv_limit(self, setpoint: Setpoint, log: list[tuple[str, float]]) -> WriteResult:
        pct_field = self._writable(Target.W_MAX_LIM_PCT)
        ena_field = self.register_map.for_target(Target.W_MAX_LIM_ENA)
        if ena_field is not None:
            ena_field = self._writable(Target.W_MAX_LIM_ENA)
        if setpoint.p_w < 0:
            msg = f"a PV limit must be >= 0 W, got {setpoint.p_w} W"
            raise _Refused(msg)
        w_max = self._w_max()
        pct = 100.0 * setpoint.p_w / w_max
        note = ""
        if pct_field.max is not None and pct > pct_field.max:
            note = (
                f"{setpoint.p_w} W is above WMax {w_max:g} W: "
                f"written as {pct_field.max:g} % (no curtailment)"
            )
            pct = pct_field.max
        self._check_range(pct_field, pct)
        if ena_field is not None:
            self._check_range(ena_field, 1)
        targets = [pct_field] if ena_field is None else [pct_field, ena_field]
        image = self._read(targets)  # current values and the scale factors
        written = {pct_field.name: self._write(pct_field, pct, image, log)}
        if ena_field is not None:
            written[ena_field.name] = self._write(ena_field, 1, image, log)
        back = self._read(targets)
        readback = self._confirm(targets, written, back)
        pct_back = _canonical(self.register_map, pct_field, back)
        return WriteResult(
            setpoint=setpoint,
            ok=True,
            reason=note,
            readback_w=None if pct_back is None else W(round_half_even(pct_back * w_max / 100)),
            written=tuple(log),
            readback=readback,
        )

    def _battery(self, setpoint: Setpoint, log: list[tuple[str, float]]) -> WriteResult:
        if self.register_map.for_target(Target.BATTERY_SETPOINT_W) is not None:
            return self._battery_watts(setpoint, log)
        if self.register_map.for_target(Target.STORAGE_CHARGE_PCT) is not None:
            return self._battery_rates(setpoint, log)
        msg = (
            f"register map {self.register_map.name!r} has no field for battery_setpoint_w "
            "(nor the storage_* rates of SunSpec 124)"
        )
        raise _Refused(msg)

    def _battery_watts(self, setpoint: Setpoint, log: list[tuple[str, float]]) -> WriteResult:
        fld = self._writable(Target.BATTERY_SETPOINT_W)
        gates = [
            self._writable(t)
            for t in (Target.BATTERY_SETPOINT_MODE, Target.BATTERY_SETPOINT_ENA)
            if self.register_map.for_target(t) is not None
        ]
        self._check_range(fld, setpoint.p_w)
        for gate in gates:
            self._check_range(gate, 1)
        self._check_rating(fld, setpoint.p_w)
        targets = [fld, *gates]
        image = self._read(targets)
        # Mode first, then the value, then the enable: the device never acts on a half-made
        # command.
        order = [g for g in gates if g.target is Target.BATTERY_SETPOINT_MODE]
        order += [fld] + [g for g in gates if g.target is Target.BATTERY_SETPOINT_ENA]
        written = {
            f.name: self._write(f, setpoint.p_w if f is fld else 1, image, log) for f in order
        }
        back = self._read(targets)
        readback = self._confirm(targets, written, back)
        value = _canonical(self.register_map, fld, back)
        return WriteResult(
            setpoint=setpoint,
            ok=True,
            readback_w=None if value is None else W(round_half_even(value)),
            written=tuple(log),
            readback=readback,
        )

    def _battery_rates(self, setpoint: Setpoint, log: list[tuple[str, float]]) -> WriteResult:
        """SunSpec 124: both rate limits at ``100 * p / WChaMax`` % pin the power to ``p``.

        ``OutWRte = pct`` caps the discharge at ``p`` and ``InWRte = -pct`` makes the charge
        at most ``-p``, i.e. a discharge of at least ``p``; ``StorCtl_Mod = 3`` activates both.
        """
        charge = self._writable(Target.STORAGE_CHARGE_PCT)
        discharge = self._writable(Target.STORAGE_DISCHARGE_PCT)
        mode = self._writable(Target.STORAGE_CONTROL_MODE)
        w_fld = self.register_map.for_target(Target.STORAGE_W_MAX)
        if w_fld is None:
            msg = f"register map {self.register_map.name!r} has no storage_w_max (WChaMax)"
            raise _Refused(msg)
        w_max = _canonical(self.register_map, w_fld, self._read([w_fld]))
        if w_max is None or w_max <= 0:
            msg = f"{w_fld.name} reads {w_max!r}: cannot turn {setpoint.p_w} W into a rate"
            raise _Refused(msg)
        pct = 100.0 * setpoint.p_w / w_max
        if abs(pct) > 100:
            msg = f"{setpoint.p_w} W is beyond {w_fld.name} = {w_max:g} W"
            raise _Refused(msg)
        self._check_range(discharge, pct)
        self._check_range(charge, -pct)
        self._check_range(mode, 3)
        targets = [charge, discharge, mode]
        image = self._read(targets)
        written = {
            charge.name: self._write(charge, -pct, image, log),
            discharge.name: self._write(discharge, pct, image, log),
            mode.name: self._write(mode, 3, image, log),
        }
        back = self._read(targets)
        readback = self._confirm(targets, written, back)
        pct_back = _canonical(self.register_map, discharge, back)
        return WriteResult(
            setpoint=setpoint,
            ok=True,
            readback_w=None if pct_back is None else W(round_half_even(pct_back * w_max / 100)),
            written=tuple(log),
            readback=readback,
        )

    def _check_rating(self, fld: RegisterField, p_w: float) -> None:
        """Refuse a battery power beyond the device's charge/discharge rating.

        Without static bounds (``min``/``max``) in the map, the rating must be readable:
        a write nobody bounded is not sent.
        """
        target = Target.W_DISCHARGE_MAX if p_w > 0 else Target.W_CHARGE_MAX
        rating_fld = self.register_map.for_target(target)
        rating = None
        if rating_fld is not None and p_w != 0:
            rating = _canonical(self.register_map, rating_fld, self._read([rating_fld]))
        if rating is not None and abs(p_w) > rating:
            what = "discharge" if p_w > 0 else "charge"
            assert rating_fld is not None  # noqa: S101 - rating came from it
            msg = f"{abs(p_w)} W {what} is beyond {rating_fld.name} = {rating:g} W"
            raise _Refused(msg)
        if rating is None and p_w != 0 and (fld.min is None or fld.max is None):
            msg = (
                f"{fld.name!r} has no bounds in {self.register_map.name!r} and the device "
                f"reports no {target.value}: refusing an unbounded write"
            )
            raise _Refused(msg)

    # -- helpers --------------------------------------------------------------------------

    def _writable(self, target: Target) -> RegisterField:
        fld = self.register_map.for_target(target)
        if fld is None:
            msg = f"register map {self.register_map.name!r} has no field for {target.value}"
            raise _Refused(msg)
        if not fld.writable:
            msg = (
                f"field {fld.name!r} ({target.value}) is not in the allow-list (not writable) "
                f"of {self.register_map.name!r}"
            )
            raise _Refused(msg)
        return fld

    def _check_range(self, fld: RegisterField, value: float) -> None:
        low = -float("inf") if fld.min is None else fld.min
        high = float("inf") if fld.max is None else fld.max
        if not low <= value <= high:
            unit = "" if fld.target is None else f" {_unit(fld)}"
            msg = (
                f"{value:g}{unit} for {fld.name!r} is outside the allowed "
                f"{fld.min:g}..{fld.max:g}{unit}"
                if fld.min is not None and fld.max is not None
                else f"{value:g}{unit} for {fld.name!r} is outside its bounds"
            )
            raise _Refused(msg)

    def _w_max(self) -> float:
        if self.rated_w is not None:
            return float(self.rated_w)
        fld = self.register_map.for_target(Target.W_MAX)
        if fld is None:
            msg = f"WMax unknown: give rated_w or a w_max field in {self.register_map.name!r}"
            raise _Refused(msg)
        value = _canonical(self.register_map, fld, self._read([fld]))
        if value is None or value <= 0:
            msg = f"WMax unknown: {fld.name} reads {value!r}; give rated_w"
            raise _Refused(msg)
        return value

    def _read(self, flds: Sequence[RegisterField]) -> _RegisterImage:
        image = _RegisterImage()
        wanted = self.register_map.with_scale_factors(flds)
        image.fetch(self.client, plan_reads(wanted, self.register_map.max_read_gap))
        return image

    def _write(
        self,
        fld: RegisterField,
        value: float,
        image: _RegisterImage,
        log: list[tuple[str, float]],
    ) -> list[int]:
        if not fld.writable:  # the allow-list, checked where the bytes leave
            msg = f"field {fld.name!r} is not writable"
            raise WriteRefused(msg)
        physical = fld.from_canonical(value)
        regs = encode_field(fld, physical, _scale_factor(self.register_map, fld, image))
        self.client.write_registers(fld.address, regs)
        log.append((fld.name, physical))
        return regs

    def _confirm(
        self,
        flds: Sequence[RegisterField],
        written: dict[str, list[int]],
        back: _RegisterImage,
    ) -> tuple[tuple[str, float | None], ...]:
        readback: list[tuple[str, float | None]] = []
        for fld in flds:
            value = _value(self.register_map, fld, back)
            readback.append((fld.name, None if isinstance(value, str) else value))
            if back.registers(fld) != written[fld.name]:
                msg = (
                    f"read back {fld.name} = {value!r} (registers {back.registers(fld)}) after "
                    f"writing registers {written[fld.name]}"
                )
                raise AdapterError(msg)
        return tuple(readback)


def _unit(fld: RegisterField) -> str:
    return "" if fld.target is None else TARGETS[fld.target].unit


__all__ = [
    "Backoff",
    "DeviceHealth",
    "DeviceReader",
    "DeviceWriter",
    "WriteResult",
    "fetch_fields",
]
