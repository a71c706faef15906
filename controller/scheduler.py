"""Real-time scheduling of the cycle: its events, in one thread, by an injectable clock.

**Events.** With ``site.gate_closure_s = 0`` there is one event per interval boundary ``b``:
``tick`` (read, settle the interval that ended, clear the one starting at ``b``:
:meth:`Cycle.tick <controller.cycle.Cycle.tick>`). With ``g = gate_closure_s > 0`` there are
two: ``clear`` at ``b - g``, the gate closure of the interval ``T`` starting at ``b``
(:meth:`Cycle.clear_at_gate <controller.cycle.Cycle.clear_at_gate>`: read, clear ``T``,
store its result, write its setpoints, so they are in place when ``T`` begins), and
``boundary`` at ``b`` (read the meters at ``T``'s start, settle ``T-1``: ``Cycle.tick`` with
``clear_next=False``). Since ``g < interval``, events alternate ``clear``, ``boundary``,
``clear``, ... (:func:`events_after`). Every event carries its own time and boundary, so a
late event never acts on another boundary, and no outcome depends on the wall clock beyond
which event fires when.

**One thread, one event at a time** (:func:`run_events`, :class:`CycleThread`): events never
overlap; a step is never interrupted by a stop request (a stop is honoured between events).
An event that came due while the previous step ran runs as soon as it ends (a clearing
longer than the gate closure delays the boundary's reading, never drops it); one is skipped
only when a later event of its kind is due too (a step ran for a whole interval) or the
loop woke more than :func:`misfire_s` after it (suspended machine, clock jump)
(:func:`skip_reason`). A skipped ``tick``/``boundary`` is recorded as ``missed`` at the next
one; a skipped ``clear`` leaves its interval to :meth:`Cycle.close_missed
<controller.cycle.Cycle.close_missed>` at its boundary.

**Exactly once, across restarts.** Each ``tick``/``boundary`` claims its boundary in the
``ticks`` table first (never run twice; boundaries skipped while the controller was down or
late are recorded as ``missed``); each ``clear`` claims its interval
(``Store.claim_interval``: never cleared twice). At a ``boundary`` (``g > 0``), the
interval starting there is claimed and recorded as not cleared (grid only) if its gate
closure passed without a clearing, so it can never be cleared late.

**Grace window.** A controller (re)started shortly after an event that has not run runs it at
once (:func:`catch_up_events`), if no more than :func:`grace_s` has passed since it:
``min(30 s, interval / 4)`` (e.g. 30 s for 15-minute intervals, 1 s for 4-second
development intervals): a boundary that has not run (:func:`catch_up_boundary`), a gate
closure whose interval is not claimed (:func:`catch_up_gate`), in time order. Later, the
boundary is left to the next ``missed`` record and the interval to ``close_missed``.

**One controller per site**: an exclusive lock file next to the database (``fcntl.flock``)
refuses a second instance (:func:`single_instance`).

APScheduler is not used: a loop over :func:`events_after` with an injected clock
(``now``, ``wait``) is all the scheduling the cycle needs, lets tests drive the real loop
with a simulated clock, and stops between events.
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from controller.cycle import Cycle, IntervalReport, TickReport
from controller.errors import AlreadyRunning, LostSite
from market.domain import Interval, utc_label

log = logging.getLogger("peergrid.scheduler")

Report = TickReport | IntervalReport
"""What an event reports: a tick's (``tick``, ``boundary``) or a clearing's (``clear``)."""

GRACE_MAX_S: Final = 30.0
"""The longest grace window [s] (module docstring)."""


def grace_s(interval_s: int) -> float:
    """How long after a boundary a starting controller still runs it [s].

    Parameters
    ----------
    interval_s : int
        The interval [s].

    Returns
    -------
    float
        ``min(30 s, interval_s / 4)`` [s].
    """
    return min(GRACE_MAX_S, interval_s / 4)


def catch_up_boundary(
    now: datetime, interval_s: int, last_tick: int | None, *, window_s: float | None = None
) -> datetime | None:
    """The boundary a controller starting at ``now`` runs at once, if any (pure).

    Parameters
    ----------
    now : datetime
        The time of the start-up (UTC).
    interval_s : int
        The interval [s].
    last_tick : int or None
        The latest boundary recorded in the ticks table [Unix s] (``None``: none).
    window_s : float or None
        How late the boundary may be [s]; ``None``: :func:`grace_s`.

    Returns
    -------
    datetime or None
        The latest boundary at or before ``now`` when at most ``window_s`` has passed
        since it and it has not run (``last_tick`` is older); otherwise ``None`` (wait for
        the next boundary).
    """
    boundary = Interval.containing(now, interval_s).start
    late = (now - boundary).total_seconds()
    if late > (grace_s(interval_s) if window_s is None else window_s):
        return None
    if last_tick is not None and last_tick >= int(boundary.timestamp()):
        return None
    return boundary


@contextmanager
def single_instance(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` for the block, or raise :class:`AlreadyRunning`.

    The lock file (created with its folder if missing) holds the holder's process id; the
    lock is released when the block ends or the process dies.

    Parameters
    ----------
    lock_path : Path
        The lock file.

    Raises
    ------
    AlreadyRunning
        Another process holds the lock.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            msg = f"another PeerGrid controller is running for this site (lock {lock_path})"
            raise AlreadyRunning(msg) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def record_missed(cycle: Cycle, now: datetime) -> list[int]:
    """Record boundaries between the last tick and ``now`` that never ran; return them.

    Parameters
    ----------
    cycle : Cycle
        The site's cycle (its store holds the ticks; ``site.interval_s`` [s]).
    now : datetime
        The current time (UTC); the boundary of the interval containing it is not counted.

    Returns
    -------
    list of int
        The boundaries recorded as ``missed`` now [Unix s]; none before the first tick.
    """
    length = cycle.site.interval_s
    last = cycle.store.last_tick()
    current = Interval.containing(now, length).interval_id
    if last is None:
        return []
    return cycle.store.record_ticks(
        range(last + length, current, length),
        "missed",
        "controller not running at this boundary",
    )


def misfire_s(interval_s: int) -> int:
    """How late an event may still run [s]: ``max(interval_s // 3, 1)``.

    Parameters
    ----------
    interval_s : int
        The interval [s].

    Returns
    -------
    int
        The longest delay [s] after which an event is still run; later ones are skipped.
    """
    return max(interval_s // 3, 1)


def catch_up_gate(
    now: datetime, interval_s: int, gate_closure_s: int, *, window_s: float | None = None
) -> Interval | None:
    """The interval whose gate closure a controller starting at ``now`` still runs (pure).

    Parameters
    ----------
    now : datetime
        The time of the start-up (UTC).
    interval_s : int
        The interval [s].
    gate_closure_s : int
        The site's gate closure [s] (0: no separate clearing event, ``None`` is returned).
    window_s : float or None
        How late the gate closure may be [s]; ``None``: :func:`grace_s`.

    Returns
    -------
    Interval or None
        The interval of the latest gate closure at or before ``now``, when at most
        ``window_s`` has passed since it; otherwise ``None``. Whether it still needs
        clearing is the store's to say (its claim).
    """
    if gate_closure_s <= 0:
        return None
    upcoming = Interval.containing(now + timedelta(seconds=gate_closure_s), interval_s)
    gate = upcoming.start - timedelta(seconds=gate_closure_s)
    if (now - gate).total_seconds() > (grace_s(interval_s) if window_s is None else window_s):
        return None
    return upcoming


class EventKind(enum.StrEnum):
    """What a scheduler event does (module docstring)."""

    TICK = "tick"
    """``gate_closure_s = 0``: read, settle, clear the interval starting at the boundary."""
    CLEAR = "clear"
    """``gate_closure_s > 0``: clear the interval starting at the boundary, at its gate closure."""
    BOUNDARY = "boundary"
    """``gate_closure_s > 0``: read the meters at the boundary, settle the ended intervals."""


@dataclass(frozen=True, slots=True)
class Event:
    """One scheduler event: when it fires, what it does, and the boundary it belongs to.

    ``at`` is ``boundary - gate_closure_s`` for ``clear``, else ``boundary`` (UTC).
    """

    at: datetime
    kind: EventKind
    boundary: datetime

    def label(self) -> str:
        """``clear 12:00`` (the boundary: the start of the interval cleared, or read at)."""
        return f"{self.kind.value} {utc_label(self.boundary)}"


def events_after(after: datetime, interval_s: int, gate_closure_s: int) -> Iterator[Event]:
    """The scheduler's events strictly after ``after``, in time order, without end (pure).

    Parameters
    ----------
    after : datetime
        The time (UTC) the events come after.
    interval_s : int
        The interval [s].
    gate_closure_s : int
        The gate closure [s], ``0 <= gate_closure_s < interval_s``.

    Yields
    ------
    Event
        ``tick`` at every boundary (``gate_closure_s = 0``); else ``clear`` at each
        boundary's gate closure and ``boundary`` at the boundary.
    """
    step = timedelta(seconds=interval_s)
    gate = timedelta(seconds=gate_closure_s)
    boundary = Interval.containing(after, interval_s).start
    while True:
        if gate_closure_s <= 0:
            candidates = [Event(boundary, EventKind.TICK, boundary)]
        else:
            candidates = [
                Event(boundary - gate, EventKind.CLEAR, boundary),
                Event(boundary, EventKind.BOUNDARY, boundary),
            ]
        for event in candidates:
            if event.at > after:
                yield event
        boundary += step


def run_tick(cycle: Cycle, boundary: datetime, *, clear_next: bool = True) -> TickReport | None:
    """Run one tick at ``boundary`` unless it already ran; record its outcome.

    Boundaries missed since the last tick are recorded first (:func:`record_missed`). The
    boundary is claimed (``running``) before the tick, so it can never run twice, and set to
    ``ran`` (with any settlement errors) or ``failed`` (with the error) after it. The cycle
    itself turns clearing and settlement failures into recorded outcomes; an exception that
    reaches here is logged and recorded, not raised, but for
    :class:`~controller.errors.LostSite` (a fleet's worker no longer holds the site): it
    propagates at once, and the tick stays ``running`` until the site's holder closes it as
    ``crashed``.

    Parameters
    ----------
    cycle : Cycle
        The site's cycle.
    boundary : datetime
        The interval boundary to run (UTC).
    clear_next : bool
        Also clear the interval starting at ``boundary`` (``False``: it is cleared at its
        gate closure, a ``clear`` event).

    Returns
    -------
    TickReport or None
        The tick's report; ``None`` if the boundary already ran or the tick failed.
    """
    boundary_id = int(boundary.timestamp())
    record_missed(cycle, boundary)
    if not cycle.store.record_tick(boundary_id, "running"):
        log.warning("boundary %s already ran; skipping", utc_label(boundary))
        return None
    try:
        report = cycle.tick(boundary, clear_next=clear_next)
    except LostSite:
        raise  # a worker that lost the site stops here; the tick stays running, closed later
    except Exception as exc:  # boundary: a failed tick is recorded, the controller goes on
        cycle.store.update_tick(boundary_id, "failed", f"{type(exc).__name__}: {exc}")
        log.exception("tick at %s failed", utc_label(boundary))
        return None
    problems = [s.error for s in report.settlements if s.error]
    cycle.store.update_tick(boundary_id, "ran", "; ".join(problems))
    return report


def missed_gate_reason(cycle: Cycle, interval: Interval) -> str:
    """Why ``interval`` was not cleared: its gate closure passed without a clearing."""
    return (
        f"its gate closure ({utc_label(cycle.gate_closure(interval))}) passed without a "
        "clearing (no controller was running, or it was late); nothing was cleared or acted on"
    )


def run_event(cycle: Cycle, event: Event) -> list[Report]:
    """Run one scheduler event (module docstring); what it reports.

    Parameters
    ----------
    cycle : Cycle
        The site's cycle.
    event : Event
        The event.

    Returns
    -------
    list of TickReport or IntervalReport
        The tick's or the clearing's report; empty if the boundary already ran, the
        interval was already claimed, or the step failed (logged, and recorded where the
        store can hold it).
    """
    interval = Interval.containing(event.boundary, cycle.site.interval_s)
    if event.kind is EventKind.CLEAR:
        try:
            cleared = cycle.clear_at_gate(interval)
        except LostSite:
            raise  # a worker that lost the site stops here (controller.fleet)
        except Exception:  # boundary: a failed clearing leaves its claim, closed later
            log.exception("clearing %s at its gate closure failed", interval.label())
            return []
        return [] if cleared is None else [cleared]
    if event.kind is EventKind.BOUNDARY and cycle.close_missed(
        interval, missed_gate_reason(cycle, interval)
    ):
        log.warning("%s was not cleared: %s", interval.label(), missed_gate_reason(cycle, interval))
    report = run_tick(cycle, event.boundary, clear_next=event.kind is EventKind.TICK)
    return [] if report is None else [report]


def catch_up_events(cycle: Cycle, now: datetime, *, window_s: float | None = None) -> list[Event]:
    """The events a controller starting at ``now`` runs at once, in time order.

    Parameters
    ----------
    cycle : Cycle
        The site's cycle (its store holds the ticks and the claimed intervals).
    now : datetime
        The time of the start-up (UTC).
    window_s : float or None
        How late an event may be [s]; ``None``: :func:`grace_s` (``peergrid worker``'s steps
        use :func:`misfire_s`, :mod:`controller.fleet`).

    Returns
    -------
    list of Event
        The latest boundary's ``tick``/``boundary`` if it has not run and is at most
        :func:`grace_s` old (:func:`catch_up_boundary`), and with ``gate_closure_s > 0`` the
        latest gate closure's ``clear`` if its interval has no result and it is at most
        :func:`grace_s` old (:func:`catch_up_gate`).
    """
    length, gate = cycle.site.interval_s, cycle.gate_closure_s
    events: list[Event] = []
    late = catch_up_boundary(now, length, cycle.store.last_tick(), window_s=window_s)
    if late is not None:
        kind = EventKind.BOUNDARY if gate > 0 else EventKind.TICK
        events.append(Event(late, kind, late))
    interval = catch_up_gate(now, length, gate, window_s=window_s)
    if interval is not None and cycle.store.result(interval.interval_id) is None:
        events.append(Event(cycle.gate_closure(interval), EventKind.CLEAR, interval.start))
    return sorted(events, key=lambda e: e.at)


def _deliver(on_report: Callable[[Report], None], reports: list[Report]) -> None:
    for report in reports:
        try:
            on_report(report)
        except Exception:  # boundary: a listener's failure must never stop the cycle
            log.exception("reporting a step's result failed (the step itself is stored)")


def _run_guarded(
    cycle: Cycle,
    event: Event,
    guard: AbstractContextManager[object],
    on_report: Callable[[Report], None],
) -> None:
    """Run ``event`` holding ``guard`` and deliver its reports; a failure is logged, not raised.

    :func:`run_event` records a step's own failures; what reaches here failed under it (the
    store, the lock), and the loop goes on to the next event, which tries again.
    """
    try:
        with guard:
            reports = run_event(cycle, event)
        _deliver(on_report, reports)
    except Exception:  # boundary: the store failed under the step; the next event tries
        log.exception("event %s failed", event.label())


def run_events(
    cycle: Cycle,
    on_report: Callable[[Report], None],
    *,
    now: Callable[[], datetime],
    wait: Callable[[float], bool],
    lock: AbstractContextManager[object] | None = None,
) -> None:
    """Run the cycle's events until ``wait`` reports a stop (module docstring).

    Pending settlement intents are resolved first (:meth:`Cycle.resume_pending`), then the
    events within the grace window run (:func:`catch_up_events`), then every event from
    :func:`events_after` at its time. A stop request is seen between events only: the
    current step always finishes.

    Parameters
    ----------
    cycle : Cycle
        The site's cycle (``site.interval_s``, ``site.gate_closure_s`` [s]).
    on_report : Callable
        Called with each report, after the step stored it (its failure is logged).
    now : Callable
        The clock (UTC).
    wait : Callable
        ``wait(seconds)`` sleeps up to ``seconds`` [s] and returns True if a stop was
        requested (``threading.Event.wait``); ``wait(0)`` only asks.
    lock : AbstractContextManager or None
        Held around each step and the resolution of pending settlements.
    """
    length = cycle.site.interval_s
    guard = lock if lock is not None else nullcontext()
    with guard:
        resumed_all = cycle.resume_pending()
    for resumed in resumed_all:
        log.info("resumed settlement of %s: %s", resumed.interval.label(), resumed.error or "ok")
    cursor = now()
    for event in catch_up_events(cycle, cursor):
        if wait(0):
            return
        log.info("started within the grace window of %s: running it now", event.label())
        _run_guarded(cycle, event, guard, on_report)
    gate = cycle.gate_closure_s
    first = next(events_after(cursor, length, gate))
    log.info(
        "first event %s at %s (interval %d s, gate closure %d s)",
        first.label(),
        utc_label(first.at),
        length,
        gate,
    )
    free_since = now()  # when the loop last became free to run an event
    cleared_through = cursor - timedelta(seconds=length)
    while not wait(0):
        # the gate closure in force may change at each clearing (a governed value, read when
        # an interval is cleared, applies to the intervals after it): the events are planned
        # afresh after each one
        following = cycle.gate_closure_s
        if following != gate:
            log.info("gate closure now %d s (was %d s)", following, gate)
            gate = following
        stream = events_after(cursor, length, gate)
        event = next(stream)
        delay = (event.at - now()).total_seconds()
        while delay > 0:
            if wait(delay):
                return
            delay = (event.at - now()).total_seconds()
        cursor = event.at
        if event.kind is EventKind.CLEAR and event.boundary <= cleared_through:
            continue  # a shorter gate closure came in force after this interval was cleared
        why = skip_reason(event, stream, now(), free_since, length)
        if why:
            log.warning("event %s skipped: %s", event.label(), why)
            continue
        log.info("event %s: running", event.label())
        if event.kind is EventKind.CLEAR:
            cleared_through = event.boundary
        _run_guarded(cycle, event, guard, on_report)
        log.info("event %s: done", event.label())
        free_since = now()


def skip_reason(
    event: Event, later: Iterator[Event], now: datetime, free_since: datetime, interval_s: int
) -> str:
    """Why a due ``event`` is not run, or ``""`` to run it (pure but for consuming ``later``).

    * **Coalesced**: a later event of the same kind is already due (the previous step ran
      for a whole interval): only the latest one runs.
    * **Misfired**: the loop was free but woke more than :func:`misfire_s` after the event
      (the machine was suspended, or the clock jumped). Lateness caused by the previous step
      (an event that came due while it ran) does not count: counted from when the loop
      became free, such an event runs at once (e.g. the boundary after a clearing that took
      longer than the gate closure).

    Parameters
    ----------
    event : Event
        The event that is due.
    later : Iterator of Event
        The events after it (:func:`events_after`).
    now : datetime
        The time (UTC).
    free_since : datetime
        When the previous step ended (or the loop started), UTC.
    interval_s : int
        The interval [s].

    Returns
    -------
    str
        The reason to skip, or ``""``.
    """
    for after in later:
        if after.at > now:
            break
        if after.kind is event.kind:
            return f"a later one ({utc_label(after.at)}) is already due"
    late = (now - max(event.at, free_since)).total_seconds()
    if late > misfire_s(interval_s):
        return f"{late:.1f} s late (more than {misfire_s(interval_s)} s)"
    return ""


def utc_now() -> datetime:
    """The wall clock (UTC)."""
    return datetime.now(UTC)


class CycleThread:
    """:func:`run_events` in a background thread, stoppable between events.

    Parameters
    ----------
    cycle : Cycle
        The site's cycle.
    on_report : Callable
        Called (in the cycle's thread) with each step's report.
    now : Callable
        The clock (UTC).
    lock : AbstractContextManager or None
        Held around each step (and the start-up's resolution of pending settlements), e.g.
        a lock the API's chain reads share when the chain is not thread-safe.
    on_failure : Callable or None
        Called (in the cycle's thread) with the error if the loop itself stops on one (a
        step's own failures are recorded and the loop goes on); e.g. to stop the server.
    """

    def __init__(
        self,
        cycle: Cycle,
        on_report: Callable[[Report], None],
        *,
        now: Callable[[], datetime] = utc_now,
        lock: AbstractContextManager[object] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.cycle = cycle
        self.on_report = on_report
        self.now = now
        self.lock = lock
        self.on_failure = on_failure
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peergrid-cycle", daemon=True)

    def _run(self) -> None:
        try:
            run_events(
                self.cycle, self.on_report, now=self.now, wait=self._stop.wait, lock=self.lock
            )
        except BaseException as exc:  # boundary: the thread's end is reported, never silent
            self.failure = exc
            log.exception("the cycle stopped on an error")
            if self.on_failure is not None:
                self.on_failure(exc)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to stop after the current step (returns at once)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` [s] (``None``: for ever) for the thread; True if it ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        """Whether the thread runs."""
        return self._thread.is_alive()


def run_forever(
    cycle: Cycle,
    on_report: Callable[[Report], None],
    now: Callable[[], datetime] = utc_now,
) -> None:
    """Run the cycle's events until interrupted (Ctrl-C; ``peergrid run``).

    The events run in a :class:`CycleThread`; a Ctrl-C lets the current step finish, then
    returns (a second Ctrl-C abandons it: the process ends as after a crash, which a
    restart recovers). An error that stopped the loop itself is raised again here.

    Parameters
    ----------
    cycle : Cycle
        The site's cycle.
    on_report : Callable
        Called with each step's report.
    now : Callable
        The clock (UTC).
    """
    thread = CycleThread(cycle, on_report, now=now)
    thread.start()
    try:
        while not thread.join(0.5):
            pass
    except KeyboardInterrupt:
        log.info("stopping: the current step finishes first (Ctrl-C again abandons it)")
        thread.request_stop()
        thread.join()
    if thread.failure is not None:
        raise thread.failure
    log.info("stopped")
