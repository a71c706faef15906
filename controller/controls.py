"""The operator's site actions: pause the market, take a participant, device or bus out of it.

An operator (HTTP API, :mod:`controller.api`) can

* **pause** the market: from then on no interval is cleared with the prosumers' orders (the
  site runs grid only) until it is **resumed**;
* take a **participant**, a **device** or a **bus** out of the market for a period
  ``[start, end)`` (UTC) with a reason.

Every action names who took it (the operator's address), when and why; the actions in force
for an interval (:meth:`MarketControls.in_force`) are what the cycle honours and what goes
into that interval's audit record (its ``controls`` key), so an auditor sees why an order
was left out.

**The cycle honours them** (:class:`controller.cycle.Cycle`, its ``controls``): after planning
the orders of interval ``T`` (and capping them by credit) it applies
``plan = filter_plan(plan, controls.in_force(T))``: a paused market drops every order, an
exclusion every order of its participant, its bus or its device (the orders a device's
forecast produced), each listed in the plan's ``skipped`` with the action's reason; and it
puts the actions it applied (``in_force(T).to_dict()``) into the interval's audit inputs
under ``controls``.

**Durable**: with a log (:class:`ActionLog`, the store's ``site_actions`` table) every action
is written there before it takes effect or is acknowledged, and a new
:class:`MarketControls` replays the log, so a restart or a crash keeps the market paused and
the exclusions in force. The state in memory is guarded by a lock (the API's threads write,
the cycle's thread reads).
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from controller.bidding import Plan
from controller.errors import ControllerError
from market.domain import Interval, require_utc, utc_label


class ControlRefused(ControllerError, ValueError):
    """A site action that cannot be taken (unknown target, empty period, empty reason)."""


class TargetKind(enum.StrEnum):
    """What an exclusion takes out of the market."""

    PARTICIPANT = "participant"
    DEVICE = "device"
    BUS = "bus"


@dataclass(frozen=True, slots=True, kw_only=True)
class Pause:
    """The market paused by ``by`` (an operator's address) at ``at`` (UTC), and why."""

    reason: str
    by: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``at`` as ISO 8601)."""
        return {"reason": self.reason, "by": self.by, "at": self.at.isoformat()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Exclusion:
    """A participant, device or bus out of the market for ``[start, end)`` (UTC).

    ``exclusion_id`` numbers the exclusions of this process from 1; ``by`` is the
    operator's address and ``at`` when it was taken (UTC).
    """

    exclusion_id: int
    kind: TargetKind
    target: str
    start: datetime
    end: datetime
    reason: str
    by: str
    at: datetime

    def covers(self, interval: Interval) -> bool:
        """Whether the exclusion overlaps ``interval`` (half-open periods).

        Parameters
        ----------
        interval : Interval
            The market interval.
        """
        return self.start < interval.end and interval.start < self.end

    def to_dict(self) -> dict[str, Any]:
        """JSON form (times as ISO 8601)."""
        return {
            "exclusion_id": self.exclusion_id,
            "kind": self.kind.value,
            "target": self.target,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "reason": self.reason,
            "by": self.by,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class InForce:
    """The site actions in force for one interval (what the cycle honours)."""

    paused: Pause | None
    exclusions: tuple[Exclusion, ...]

    def excludes(self, kind: TargetKind, target: str) -> Exclusion | None:
        """The exclusion taking ``target`` of ``kind`` out, if any.

        Parameters
        ----------
        kind : TargetKind
            Participant, device or bus.
        target : str
            Its id (a bus by its name).
        """
        for ex in self.exclusions:
            if ex.kind is kind and ex.target == target:
                return ex
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, for the interval's audit record (``controls``)."""
        return {
            "paused": None if self.paused is None else self.paused.to_dict(),
            "exclusions": [ex.to_dict() for ex in self.exclusions],
        }


class ActionLog(Protocol):
    """Where site actions are kept (:class:`controller.store.Store`)."""

    def add_site_action(self, action: dict[str, Any]) -> int:
        """Append one action; durable on return."""
        ...

    def site_actions(self) -> list[dict[str, Any]]:
        """Every action in the order taken."""
        ...


@dataclass(eq=False)
class MarketControls:
    """The operator's actions on one site (see the module docstring); thread-safe.

    Parameters
    ----------
    participants, devices, buses : frozenset of str
        The ids an exclusion may name (the site's participants and devices, the grid's bus
        names).
    log : ActionLog or None
        Where actions are written before they take effect, and replayed from on creation
        (``None``: in memory only, for unit tests).
    """

    participants: frozenset[str]
    devices: frozenset[str]
    buses: frozenset[str]
    log: ActionLog | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _paused: Pause | None = field(default=None, repr=False)
    _exclusions: list[Exclusion] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        for row in self.log.site_actions() if self.log is not None else []:
            self._apply(row)

    def _apply(self, row: dict[str, Any]) -> None:
        """Apply one logged action to the state in memory (the caller holds the lock)."""
        if row["action"] == "pause":
            if self._paused is None:
                self._paused = Pause(reason=row["reason"], by=row["by"], at=row["at"])
        elif row["action"] == "resume":
            self._paused = None
        else:
            self._exclusions.append(
                Exclusion(
                    exclusion_id=len(self._exclusions) + 1,
                    kind=TargetKind(row["target_kind"]),
                    target=row["target"],
                    start=row["start"],
                    end=row["end"],
                    reason=row["reason"],
                    by=row["by"],
                    at=row["at"],
                )
            )

    def _take(self, row: dict[str, Any]) -> None:
        """Log ``row`` (durable first), then apply it; the caller holds the lock."""
        if self.log is not None:
            self.log.add_site_action(row)
        self._apply(row)

    def pause(self, reason: str, *, by: str, at: datetime) -> Pause:
        """Pause the market (pausing a paused market keeps the first pause).

        Parameters
        ----------
        reason : str
            Why (not empty; goes into the audit records).
        by : str
            The operator's address.
        at : datetime
            When (UTC).

        Returns
        -------
        Pause
            The pause in force.

        Raises
        ------
        ControlRefused
            An empty reason.
        """
        reason = _reason(reason)
        at = require_utc(at, "at")
        with self._lock:
            current = self._paused
            if current is None:
                self._take({"action": "pause", "reason": reason, "by": by, "at": at})
                current = Pause(reason=reason, by=by, at=at)
            return current

    def resume(self, *, by: str = "", at: datetime | None = None) -> bool:
        """Resume the market; ``False`` if it was not paused (nothing is logged then).

        Parameters
        ----------
        by : str
            The operator's address.
        at : datetime or None
            When (UTC); required with a log.
        """
        with self._lock:
            if self._paused is None:
                return False
            when = require_utc(at, "at") if at is not None else self._paused.at
            self._take({"action": "resume", "reason": "", "by": by, "at": when})
            return True

    @property
    def paused(self) -> Pause | None:
        """The pause in force (``None``: the market runs)."""
        with self._lock:
            return self._paused

    def exclude(
        self,
        kind: TargetKind,
        target: str,
        *,
        start: datetime,
        end: datetime,
        reason: str,
        by: str,
        at: datetime,
    ) -> Exclusion:
        """Take ``target`` out of the market for ``[start, end)``.

        Parameters
        ----------
        kind : TargetKind
            Participant, device or bus.
        target : str
            Its id (a bus by its pandapower name).
        start, end : datetime
            The period (UTC, ``start < end``).
        reason : str
            Why (not empty; goes into the audit records).
        by : str
            The operator's address.
        at : datetime
            When the action was taken (UTC).

        Returns
        -------
        Exclusion
            The exclusion, numbered.

        Raises
        ------
        ControlRefused
            An unknown target, an empty period or an empty reason.
        """
        known = {
            TargetKind.PARTICIPANT: self.participants,
            TargetKind.DEVICE: self.devices,
            TargetKind.BUS: self.buses,
        }[kind]
        if target not in known:
            msg = f"unknown {kind.value} {target!r}"
            raise ControlRefused(msg)
        start, end = require_utc(start, "start"), require_utc(end, "end")
        if not start < end:
            msg = f"empty period: start {utc_label(start)} is not before end {utc_label(end)}"
            raise ControlRefused(msg)
        reason = _reason(reason)
        at = require_utc(at, "at")
        with self._lock:
            self._take(
                {
                    "action": "exclude",
                    "target_kind": kind.value,
                    "target": target,
                    "start": start,
                    "end": end,
                    "reason": reason,
                    "by": by,
                    "at": at,
                }
            )
            return self._exclusions[-1]

    def exclusions(self) -> tuple[Exclusion, ...]:
        """Every exclusion taken, in order."""
        with self._lock:
            return tuple(self._exclusions)

    def in_force(self, interval: Interval) -> InForce:
        """The actions the cycle honours for ``interval`` (see the module docstring).

        Parameters
        ----------
        interval : Interval
            The interval being cleared.
        """
        with self._lock:
            return InForce(
                paused=self._paused,
                exclusions=tuple(ex for ex in self._exclusions if ex.covers(interval)),
            )


def filter_plan(plan: Plan, in_force: InForce) -> Plan:
    """The plan without the orders the site actions in force take out of the market.

    Parameters
    ----------
    plan : Plan
        The interval's planned orders.
    in_force : InForce
        The actions in force for the interval (:meth:`MarketControls.in_force`).

    Returns
    -------
    Plan
        The orders kept; each dropped one is named in ``skipped`` with the pause's or the
        exclusion's reason.
    """
    if in_force.paused is None and not in_force.exclusions:
        return plan
    kept = []
    skipped = list(plan.skipped)
    for planned in plan.orders:
        order = planned.order
        why = None
        if in_force.paused is not None:
            why = f"market paused by {in_force.paused.by}: {in_force.paused.reason}"
        else:
            for kind, target in (
                (TargetKind.PARTICIPANT, str(order.participant)),
                (TargetKind.BUS, str(order.bus)),
                (TargetKind.DEVICE, "" if planned.device is None else str(planned.device)),
            ):
                ex = in_force.excludes(kind, target)
                if ex is not None:
                    why = f"{kind.value} {target} out of the market by {ex.by}: {ex.reason}"
                    break
        if why is None:
            kept.append(planned)
        else:
            skipped.append(f"{order.order_id}: {why}; order not placed")
    return Plan(orders=tuple(kept), forecast_w=plan.forecast_w, skipped=tuple(skipped))


def _reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        msg = "a reason is required (it goes into the audit record)"
        raise ControlRefused(msg)
    return text
