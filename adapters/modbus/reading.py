"""Reading devices: registers in, a :class:`market.domain.MeterReading` out, failures as values.

:class:`DeviceReader` turns a device's registers into a :class:`market.domain.MeterReading`
through its :class:`~adapters.modbus.regmap.RegisterMap`. It does not raise for device
trouble (OpenEMS's fault flag, in our words): it returns ``quality=MISSING`` (or ``STALE``)
with a ``reason``. Errors of the caller (a naive ``now``, a map without a ``p_w`` field)
still raise. :func:`fetch_fields` reads fields for inspection. Writing setpoints is
:mod:`adapters.modbus.writing`.

Sign convention: ``MeterReading.p_w`` [W]: **positive = import from the microgrid
(consumption), negative = export (production)**, the OpenEMS GRID convention. Maps flip
vendor signs with ``invert``.

Dead devices. Every failed read (the client has already retried) pauses the device for
``Backoff.initial_s * factor**(n-1)`` seconds, capped at ``max_s``, after its ``n``-th failure
in a row, on the caller's clock ``now``. While paused, :meth:`DeviceReader.read` does not
touch the transport and answers at once with the reason ``"paused after n failures ..."``.
The first successful read clears the count.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from adapters.modbus import codec
from adapters.modbus.client import RegisterClient
from adapters.modbus.codec import Value
from adapters.modbus.errors import AdapterError, CodecError, InvalidArgument, RegisterMapError
from adapters.modbus.image import RegisterImage, plan_reads
from adapters.modbus.regmap import MEASUREMENT_TARGETS, RegisterMap, Target
from adapters.modbus.signed_block import BLOCK_REGISTERS, from_registers, read_block
from market.domain import (
    BusId,
    DeviceId,
    MeterReading,
    ParticipantId,
    ReadingQuality,
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

    Raises
    ------
    InvalidArgument
        ``initial_s < 0``, ``factor < 1`` or ``max_s < initial_s``.
    """

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.factor < 1 or self.max_s < self.initial_s:
            msg = f"need 0 <= initial_s <= max_s and factor >= 1, got {self}"
            raise InvalidArgument(msg)

    def delay_s(self, failures: int) -> float:
        """Pause [s] after ``failures`` failures in a row (0 for none).

        Parameters
        ----------
        failures : int
            Failed reads in a row.

        Returns
        -------
        float
            The pause [s].
        """
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
    first read and again after every failure; :attr:`identity_problem` holds the last failed
    check (``""`` once the identity is confirmed).

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
    signed_block : int or None
        Input register address of the device's signed-reading block
        (:mod:`adapters.modbus.signed_block`), ``None`` for an unsigned device. The block is
        read in one request after the map's fields, and the reading's power, counters and
        time are the signed ones (``MeterReading.signed``; the controller verifies them); a
        block that holds no signed reading makes the reading ``UNVERIFIED``, with the reason.

    Raises
    ------
    RegisterMapError
        The map has no ``p_w`` field.
    InvalidArgument
        ``max_age_s < 0``, or a signed block that does not fit the register space.
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
        signed_block: int | None = None,
    ) -> None:
        if signed_block is not None and not 0 <= signed_block <= 0x10000 - BLOCK_REGISTERS:
            msg = f"signed_block {signed_block} does not leave {BLOCK_REGISTERS} registers"
            raise InvalidArgument(msg)
        self.signed_block = signed_block
        if register_map.for_target(Target.P_W) is None:
            msg = f"register map {register_map.name!r} has no field for p_w: cannot read a meter"
            raise RegisterMapError(msg)
        if max_age_s < 0:
            msg = f"max_age_s must be >= 0, got {max_age_s}"
            raise InvalidArgument(msg)
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
        self.identity_problem = ""
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
        image = RegisterImage(self.register_map)
        block: list[int] | None = None
        try:
            image.fetch(self.client, self._plan if self._verified else self._identity_plan)
            if self.signed_block is not None:
                block = read_block(self.client, self.signed_block)
        except AdapterError as exc:
            return self._device_failed(now, str(exc))
        except Exception as exc:  # a bug: the boundary that keeps the cycle going
            # The client raises only AdapterError for device trouble and lets anything else
            # (a bug in the framing, the codec or a library) escape, so that the fuzz tests
            # see it; here it becomes MISSING, named, and logged with its traceback.
            where = getattr(self.client, "endpoint", type(self.client).__name__)
            LOGGER.exception(
                "%s: bug (%s) while reading %s", self.device_id, type(exc).__name__, where
            )
            return self._device_failed(now, f"unexpected {type(exc).__name__}: {exc}")
        self._failures = 0
        self._paused_until = None
        try:
            reading = self._decode(image, now)
        except (CodecError, ValueError) as exc:
            self._verified = not self._identity
            self._last_error = f"cannot decode: {exc}"
            return self._substitute(now, self._last_error)
        if block is None or reading.quality is not ReadingQuality.OK:
            return reading
        return self._signed(reading, block)

    def _signed(self, reading: MeterReading, block: list[int]) -> MeterReading:
        """``reading`` with the signed block's power, counters and time, and its signature."""
        try:
            signed = from_registers(block)
        except CodecError as exc:
            return dataclasses.replace(
                reading, quality=ReadingQuality.UNVERIFIED, reason=f"signed block: {exc}"
            )
        p = signed.payload
        return dataclasses.replace(
            reading,
            measured_at=p.measured_at,
            p_w=W(p.p_w),
            import_wh_total=Wh(p.import_wh_total),
            export_wh_total=Wh(p.export_wh_total),
            signed=signed,
        )

    def unavailable(self, now: datetime, reason: str) -> MeterReading:
        """The reading to report when the device could not be read at ``now``.

        The last good reading as ``STALE`` if it is at most ``max_age_s`` old, else
        ``MISSING``; ``reason`` says why. For callers that give up on a read (a
        :class:`~adapters.modbus.polling.Poller` past its deadline); safe from any thread.

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

    def _check_identity(self, image: RegisterImage) -> str | None:
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

    def _decode(self, image: RegisterImage, now: datetime) -> MeterReading:
        if not self._verified:
            problem = self._check_identity(image)
            if problem is not None:
                self._last_error = problem
                self.identity_problem = problem
                return self._substitute(now, problem)
            self._verified = True
            self.identity_problem = ""
        values: dict[Target, float | None] = {}
        for fld in self._measured:
            assert fld.target is not None  # noqa: S101 - _measured only holds targeted fields
            values[fld.target] = image.canonical(fld)
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
    image = RegisterImage(register_map)
    image.fetch(
        client, plan_reads(register_map.with_scale_factors(wanted), register_map.max_read_gap)
    )
    out: dict[str, Value | None] = {}
    for fld in wanted:
        try:
            out[fld.name] = image.value(fld)
        except CodecError:
            out[fld.name] = None
    return out


__all__ = ["Backoff", "DeviceHealth", "DeviceReader", "fetch_fields"]
