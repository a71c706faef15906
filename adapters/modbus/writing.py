"""Writing setpoints: a :class:`market.domain.Setpoint` out through the map's allow-list.

:class:`DeviceWriter` turns a setpoint into register writes, then reads the fields back and
confirms them. It does not raise for device trouble or a refused value: the outcome is a
:class:`WriteResult` (``ok=False`` with a ``reason``). Reading devices is
:mod:`adapters.modbus.reading`.

Fail safe. With ``revert_s``, every setpoint carries the device's own revert timer, written
just before the setpoint (SunSpec 123 ``WMaxLimPct_RvrtTms``; 704 ``WMaxLimPctRvrtTms`` with
``WMaxLimPctRvrt = 100 %`` and ``WMaxLimPctEnaRvrt = 1``, and ``WSetRvrtTms`` with ``WSetRvrt
= 0 W`` and ``WSetEnaRvrt = 1``; 124 ``InOutWRte_RvrtTms``; the vendor battery map's
``WatchdogTimeout``): each write restarts it, so while the controller writes every interval the
setpoint holds, and if the controller dies the device returns by itself to its default (no PV
limit, an idle battery) after ``revert_s`` seconds. A map without such a field is written as
before, and the result's ``reason`` says the device would hold the setpoint.

Dead devices. A write that fails on the device (no answer, an exception response, a read-back
that differs) pauses the writer as reads pause a reader
(:class:`~adapters.modbus.reading.Backoff`: ``initial_s * factor**(n-1)`` seconds, at most
``max_s``, after ``n`` failures in a row), on the clock of the setpoints: the start of their
interval. So the other setpoints of the same tick are refused at once (``skipped``, with the
reason) instead of each waiting for its own timeout: a dead device costs one timeout per tick.
A refused value (outside the allow-list or the bounds) is no device failure and pauses nothing.

Sign conventions, stated once:

* BATTERY ``Setpoint.p_w`` [W]: positive = discharge, negative = charge.
* PV_LIMIT ``Setpoint.p_w`` [W]: the most the inverter may produce, ``>= 0``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from adapters.modbus.client import RegisterClient
from adapters.modbus.errors import AdapterError, CodecError, InvalidArgument, WriteRefused
from adapters.modbus.fields import encode_field
from adapters.modbus.image import RegisterImage, plan_reads
from adapters.modbus.reading import Backoff
from adapters.modbus.regmap import TARGETS, RegisterField, RegisterMap, Target
from market.domain import DeviceId, Setpoint, SetpointKind
from market.units import W, round_half_even

LOGGER = logging.getLogger(__name__)


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
    revert_s : int or None
        The revert time [s] written with the setpoint (the device drops the setpoint by itself
        after that long without a new write); ``None`` when none was written.
    skipped : bool
        Not attempted: the writer is paused after failed writes (see the module docstring).
    """

    setpoint: Setpoint
    ok: bool
    reason: str = ""
    readback_w: W | None = None
    written: tuple[tuple[str, float], ...] = ()
    readback: tuple[tuple[str, float | None], ...] = ()
    revert_s: int | None = None
    skipped: bool = False


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

    With ``revert_s``, the device's revert timer and its reversion values are written before
    the setpoint, every time (see the module docstring); a revert time above the timer
    field's ``max`` is written as that maximum, said in ``reason``. After a device failure,
    writes are skipped for the :class:`~adapters.modbus.reading.Backoff` pause, on the clock
    of the setpoints' interval starts.

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
    revert_s : float, optional
        The device's revert time [s], written (rounded up to whole seconds) with every
        setpoint; about two market intervals. ``None`` writes no revert timer.
    backoff : Backoff, optional
        Pauses after failed writes (the readers' default policy when not given).

    Raises
    ------
    InvalidArgument
        ``rated_w <= 0`` or ``revert_s <= 0``.
    """

    def __init__(
        self,
        device_id: DeviceId,
        client: RegisterClient,
        register_map: RegisterMap,
        *,
        rated_w: int | None = None,
        revert_s: float | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if rated_w is not None and rated_w <= 0:
            msg = f"rated_w must be > 0 W, got {rated_w}"
            raise InvalidArgument(msg)
        if revert_s is not None and not (math.isfinite(revert_s) and revert_s > 0):
            msg = f"revert_s must be > 0 s, got {revert_s}"
            raise InvalidArgument(msg)
        self.device_id = device_id
        self.client = client
        self.register_map = register_map
        self.rated_w = rated_w
        self.revert_s = revert_s
        self.backoff = backoff or Backoff()
        self._longest_pause = timedelta(seconds=self.backoff.max_s)
        self.failures = 0
        """Failed writes in a row."""
        self.paused_until: datetime | None = None
        """No write is attempted for setpoints of intervals starting before this (UTC)."""
        self.last_error = ""
        """Reason of the last failed write."""

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
            ``ok=True`` only when the device holds exactly what was written; ``skipped``
            when the writer is paused after failed writes.
        """
        now = setpoint.interval.start
        paused = self.paused_until
        # A pause longer than any backoff means the setpoints went back in time: ignore it.
        if paused is not None and timedelta(0) < paused - now <= self._longest_pause:
            n = self.failures
            reason = (
                f"skipped: writes paused after {n} failure{'s' if n != 1 else ''} until "
                f"{paused.isoformat()} (last error: {self.last_error})"
            )
            LOGGER.info("%s: setpoint %s %d W %s", self.device_id, setpoint.kind.value,
                        setpoint.p_w, reason)  # fmt: skip
            return WriteResult(setpoint=setpoint, ok=False, reason=reason, skipped=True)
        log: list[tuple[str, float]] = []
        try:
            result = self._apply(setpoint, log)
        except (WriteRefused, CodecError) as exc:  # nothing wrong with the device
            reason = f"refused: {exc}"
        except AdapterError as exc:
            reason = self._failed(now, f"device error: {exc}")
        except Exception as exc:  # a bug (the client lets it escape): the cycle's boundary
            LOGGER.exception(
                "%s: bug (%s) while writing setpoint %s %d W for %s",
                self.device_id,
                type(exc).__name__,
                setpoint.kind.value,
                setpoint.p_w,
                setpoint.interval.label(),
            )
            reason = self._failed(now, f"unexpected {type(exc).__name__}: {exc}")
        else:
            self.failures = 0
            self.paused_until = None
            return result
        LOGGER.warning("%s: setpoint %s %d W not applied: %s", self.device_id,
                       setpoint.kind.value, setpoint.p_w, reason)  # fmt: skip
        return WriteResult(setpoint=setpoint, ok=False, reason=reason, written=tuple(log))

    def _failed(self, now: datetime, error: str) -> str:
        """Count a device failure and pause; return the reason to report."""
        self.failures += 1
        delay = self.backoff.delay_s(self.failures)
        self.paused_until = now + timedelta(seconds=delay)
        self.last_error = error
        return f"{error}; writes paused for {delay:g} s"

    # -- the two kinds ------------------------------------------------------------------

    def _apply(self, setpoint: Setpoint, log: list[tuple[str, float]]) -> WriteResult:
        if setpoint.device_id != self.device_id:
            msg = f"setpoint for {setpoint.device_id!r} sent to {self.device_id!r}"
            raise WriteRefused(msg)
        if setpoint.kind is SetpointKind.PV_LIMIT:
            return self._pv_limit(setpoint, log)
        if setpoint.kind is SetpointKind.BATTERY:
            return self._battery(setpoint, log)
        msg = f"setpoint kind {setpoint.kind!r} is not supported"
        raise WriteRefused(msg)

    def _pv_limit(self, setpoint: Setpoint, log: list[tuple[str, float]]) -> WriteResult:
        pct_field = self._writable(Target.W_MAX_LIM_PCT)
        ena_field = self.register_map.for_target(Target.W_MAX_LIM_ENA)
        if ena_field is not None:
            ena_field = self._writable(Target.W_MAX_LIM_ENA)
        if setpoint.p_w < 0:
            msg = f"a PV limit must be >= 0 W, got {setpoint.p_w} W"
            raise WriteRefused(msg)
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
        revert, revert_s, revert_note = self._revert_plan(
            Target.W_MAX_LIM_RVRT_S,
            ((Target.W_MAX_LIM_RVRT_PCT, 100.0), (Target.W_MAX_LIM_RVRT_ENA, 1.0)),
        )
        # The revert timer first: the device never holds a limit that would not revert.
        plan = [*revert, (pct_field, pct)]
        if ena_field is not None:
            plan.append((ena_field, 1.0))
        targets = [f for f, _ in plan]
        image = self._read(targets)  # current values and the scale factors
        written = {f.name: self._write(f, value, image, log) for f, value in plan}
        back = self._read(targets)
        readback = self._confirm(targets, written, back)
        pct_back = back.canonical(pct_field)
        return WriteResult(
            setpoint=setpoint,
            ok=True,
            reason="; ".join(n for n in (note, revert_note) if n),
            readback_w=None if pct_back is None else W(round_half_even(pct_back * w_max / 100)),
            written=tuple(log),
            readback=readback,
            revert_s=revert_s,
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
        raise WriteRefused(msg)

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
        revert, revert_s, revert_note = self._revert_plan(
            Target.BATTERY_SETPOINT_RVRT_S,
            ((Target.BATTERY_SETPOINT_RVRT_W, 0.0), (Target.BATTERY_SETPOINT_RVRT_ENA, 1.0)),
        )
        # Mode first, then the revert timer, the value, then the enable: the device never
        # acts on a half-made command, nor on one that would not revert.
        plan: list[tuple[RegisterField, float]] = [
            (g, 1.0) for g in gates if g.target is Target.BATTERY_SETPOINT_MODE
        ]
        plan += [*revert, (fld, setpoint.p_w)]
        plan += [(g, 1.0) for g in gates if g.target is Target.BATTERY_SETPOINT_ENA]
        targets = [f for f, _ in plan]
        image = self._read(targets)
        written = {f.name: self._write(f, value, image, log) for f, value in plan}
        back = self._read(targets)
        readback = self._confirm(targets, written, back)
        value = back.canonical(fld)
        return WriteResult(
            setpoint=setpoint,
            ok=True,
            reason=revert_note,
            readback_w=None if value is None else W(round_half_even(value)),
            written=tuple(log),
            readback=readback,
            revert_s=revert_s,
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
            raise WriteRefused(msg)
        w_max = self._read([w_fld]).canonical(w_fld)
        if w_max is None or w_max <= 0:
            msg = f"{w_fld.name} reads {w_max!r}: cannot turn {setpoint.p_w} W into a rate"
            raise WriteRefused(msg)
        pct = 100.0 * setpoint.p_w / w_max
        if abs(pct) > 100:
            msg = f"{setpoint.p_w} W is beyond {w_fld.name} = {w_max:g} W"
            raise WriteRefused(msg)
        self._check_range(discharge, pct)
        self._check_range(charge, -pct)
        self._check_range(mode, 3)
        revert, revert_s, revert_note = self._revert_plan(Target.STORAGE_RVRT_S, ())
        plan = [*revert, (charge, -pct), (discharge, pct), (mode, 3.0)]
        targets = [f for f, _ in plan]
        image = self._read(targets)
        written = {f.name: self._write(f, value, image, log) for f, value in plan}
        back = self._read(targets)
        readback = self._confirm(targets, written, back)
        pct_back = back.canonical(discharge)
        return WriteResult(
            setpoint=setpoint,
            ok=True,
            reason=revert_note,
            readback_w=None if pct_back is None else W(round_half_even(pct_back * w_max / 100)),
            written=tuple(log),
            readback=readback,
            revert_s=revert_s,
        )

    def _revert_plan(
        self, timer: Target, values: Sequence[tuple[Target, float]]
    ) -> tuple[list[tuple[RegisterField, float]], int | None, str]:
        """The fields that arm the device's revert timer, their values, and a note.

        ``values`` are the reversion values (written where the map has them), then the
        timer gets ``ceil(revert_s)`` seconds (at most its field's ``max``, said in the note).

        Returns
        -------
        list of (RegisterField, float)
            Fields and canonical values, in write order (empty without ``revert_s`` or a
            timer field).
        int or None
            The revert time [s] to write.
        str
            A note for the result's reason (``""`` if nothing to say).
        """
        if self.revert_s is None:
            return [], None, ""
        if self.register_map.for_target(timer) is None:
            note = (
                f"no revert timer ({timer.value}) in {self.register_map.name!r}: the device "
                "holds this setpoint if the controller stops"
            )
            return [], None, note
        plan: list[tuple[RegisterField, float]] = []
        for target, value in values:
            if self.register_map.for_target(target) is not None:
                fld = self._writable(target)
                self._check_range(fld, value)
                plan.append((fld, value))
        timer_field = self._writable(timer)
        seconds = max(1, math.ceil(self.revert_s))
        note = ""
        if timer_field.max is not None and seconds > timer_field.max:
            note = (
                f"revert time {seconds} s is beyond {timer_field.name} max "
                f"{timer_field.max:g} s: written as {timer_field.max:g} s"
            )
            seconds = math.floor(timer_field.max)
        self._check_range(timer_field, seconds)
        plan.append((timer_field, float(seconds)))
        return plan, seconds, note

    def _check_rating(self, fld: RegisterField, p_w: float) -> None:
        """Refuse a battery power beyond the device's charge/discharge rating.

        Without static bounds (``min``/``max``) in the map, the rating must be readable:
        a write nobody bounded is not sent.
        """
        target = Target.W_DISCHARGE_MAX if p_w > 0 else Target.W_CHARGE_MAX
        rating_fld = self.register_map.for_target(target)
        rating = None
        if rating_fld is not None and p_w != 0:
            rating = self._read([rating_fld]).canonical(rating_fld)
        if rating is not None and abs(p_w) > rating:
            what = "discharge" if p_w > 0 else "charge"
            assert rating_fld is not None  # noqa: S101 - rating came from it
            msg = f"{abs(p_w)} W {what} is beyond {rating_fld.name} = {rating:g} W"
            raise WriteRefused(msg)
        if rating is None and p_w != 0 and (fld.min is None or fld.max is None):
            msg = (
                f"{fld.name!r} has no bounds in {self.register_map.name!r} and the device "
                f"reports no {target.value}: refusing an unbounded write"
            )
            raise WriteRefused(msg)

    # -- helpers --------------------------------------------------------------------------

    def _writable(self, target: Target) -> RegisterField:
        fld = self.register_map.for_target(target)
        if fld is None:
            msg = f"register map {self.register_map.name!r} has no field for {target.value}"
            raise WriteRefused(msg)
        if not fld.writable:
            msg = (
                f"field {fld.name!r} ({target.value}) is not in the allow-list (not writable) "
                f"of {self.register_map.name!r}"
            )
            raise WriteRefused(msg)
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
            raise WriteRefused(msg)

    def _w_max(self) -> float:
        if self.rated_w is not None:
            return float(self.rated_w)
        fld = self.register_map.for_target(Target.W_MAX)
        if fld is None:
            msg = f"WMax unknown: give rated_w or a w_max field in {self.register_map.name!r}"
            raise WriteRefused(msg)
        value = self._read([fld]).canonical(fld)
        if value is None or value <= 0:
            msg = f"WMax unknown: {fld.name} reads {value!r}; give rated_w"
            raise WriteRefused(msg)
        return value

    def _read(self, flds: Sequence[RegisterField]) -> RegisterImage:
        image = RegisterImage(self.register_map)
        wanted = self.register_map.with_scale_factors(flds)
        image.fetch(self.client, plan_reads(wanted, self.register_map.max_read_gap))
        return image

    def _write(
        self,
        fld: RegisterField,
        value: float,
        image: RegisterImage,
        log: list[tuple[str, float]],
    ) -> list[int]:
        if not fld.writable:  # the allow-list, checked where the bytes leave
            msg = f"field {fld.name!r} is not writable"
            raise WriteRefused(msg)
        physical = fld.from_canonical(value)
        regs = encode_field(fld, physical, image.scale_factor(fld))
        self.client.write_registers(fld.address, regs)
        log.append((fld.name, physical))
        return regs

    def _confirm(
        self,
        flds: Sequence[RegisterField],
        written: dict[str, list[int]],
        back: RegisterImage,
    ) -> tuple[tuple[str, float | None], ...]:
        readback: list[tuple[str, float | None]] = []
        for fld in flds:
            value = back.value(fld)
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


__all__ = ["DeviceWriter", "WriteResult"]
