"""Real-time scheduling of the cycle with APScheduler 3 (the only module that imports it).

* Ticks fire on interval boundaries (``IntervalTrigger`` whose start date is a boundary, so
  every run is aligned), with ``max_instances=1`` and ``coalesce=True``: never two ticks at
  once, and a backlog collapses into one run.
* Each tick claims its boundary in the ``ticks`` table first, so a boundary never runs twice,
  even across restarts; boundaries skipped while the controller was down or late are recorded
  as ``missed`` (with no clearing: their gate closure has passed).
* One controller per site: an exclusive lock file next to the database (``fcntl.flock``)
  refuses a second instance.
* **Grace window.** A controller (re)started shortly after a boundary runs that boundary at
  once (reading, settling the interval that ended, clearing the one that started) instead of
  waiting a whole interval, if the boundary has not run yet and no more than
  :func:`grace_s` has passed since it: ``min(30 s, interval / 4)`` (e.g. 30 s for 15-minute
  intervals, 1 s for 4-second development intervals). Later, the boundary is left to the
  next start-up's ``missed`` record (:func:`catch_up_boundary`).
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from controller.cycle import Cycle, TickReport
from controller.errors import AlreadyRunning
from market.domain import Interval, utc_label

log = logging.getLogger("peergrid.scheduler")

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


def catch_up_boundary(now: datetime, interval_s: int, last_tick: int | None) -> datetime | None:
    """The boundary a controller starting at ``now`` runs at once, if any (pure).

    Parameters
    ----------
    now : datetime
        The time of the start-up (UTC).
    interval_s : int
        The interval [s].
    last_tick : int or None
        The latest boundary recorded in the ticks table [Unix s] (``None``: none).

    Returns
    -------
    datetime or None
        The latest boundary at or before ``now`` when at most :func:`grace_s` has passed
        since it and it has not run (``last_tick`` is older); otherwise ``None`` (wait for
        the next boundary).
    """
    boundary = Interval.containing(now, interval_s).start
    late = (now - boundary).total_seconds()
    if late > grace_s(interval_s):
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


def run_tick(cycle: Cycle, boundary: datetime) -> TickReport | None:
    """Run one tick at ``boundary`` unless it already ran; record its outcome.

    Boundaries missed since the last tick are recorded first (:func:`record_missed`). The
    boundary is claimed (``running``) before the tick, so it can never run twice, and set to
    ``ran`` (with any settlement errors) or ``failed`` (with the error) after it. The cycle
    itself turns clearing and settlement failures into recorded outcomes; an exception that
    reaches here is logged and recorded, not raised.

    Parameters
    ----------
    cycle : Cycle
        The site's cycle.
    boundary : datetime
        The interval boundary to run (UTC).

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
        report = cycle.tick(boundary)
    except Exception as exc:
        cycle.store.update_tick(boundary_id, "failed", f"{type(exc).__name__}: {exc}")
        log.exception("tick at %s failed", utc_label(boundary))
        return None
    problems = [s.error for s in report.settlements if s.error]
    cycle.store.update_tick(boundary_id, "ran", "; ".join(problems))
    return report


def run_forever(
    cycle: Cycle,
    on_tick: Callable[[TickReport], None],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Tick at every boundary from the next one on, until interrupted (Ctrl-C).

    Pending settlement intents are resolved first (:meth:`Cycle.resume_pending`); then, if
    the start is within the grace window after a boundary that has not run, that boundary
    runs at once (:func:`catch_up_boundary`). Each job runs :func:`run_tick` at the latest
    boundary up to one second after it fires (so a job fired slightly early still runs its
    own boundary).

    Parameters
    ----------
    cycle : Cycle
        The site's cycle (``site.interval_s`` [s] sets the period).
    on_tick : Callable
        Called with each tick's :class:`TickReport` (not for boundaries that already ran or
        failed).
    now : Callable
        The clock (UTC).
    """
    length = cycle.site.interval_s
    start = Interval.containing(now(), length).end
    resumed = cycle.resume_pending()
    for report in resumed:
        log.info("resumed settlement of %s: %s", report.interval.label(), report.error or "ok")
    late = catch_up_boundary(now(), length, cycle.store.last_tick())
    if late is not None:
        log.info("started within the grace window of %s: running it now", utc_label(late))
        caught = run_tick(cycle, late)
        if caught is not None:
            on_tick(caught)

    def job() -> None:
        boundary = Interval.containing(now() + timedelta(seconds=1), length).start
        report = run_tick(cycle, boundary)
        if report is not None:
            on_tick(report)

    scheduler = BlockingScheduler(timezone=UTC)
    scheduler.add_job(
        job,
        IntervalTrigger(seconds=length, start_date=start, timezone=UTC),
        id="peergrid-tick",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(length // 3, 1),
    )
    log.info("first tick at %s, then every %d s", utc_label(start), length)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        log.info("stopped")
