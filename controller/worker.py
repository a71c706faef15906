"""``peergrid worker --db URL``: one worker of a fleet of sites (:mod:`controller.fleet`).

Run any number of them, on any machines, against one PostgreSQL database; each is a
procrastinate worker running three tasks:

* ``peergrid.dispatch`` (periodic, every :data:`~controller.fleet.DISPATCH_EVERY_S` s):
  defers a ``peergrid.site_step`` job for every site whose next event has come;
* ``peergrid.site_step`` (lock and queueing lock ``site:<id>``): one site's step
  (:func:`controller.fleet.run_step`) under the site's database lock and hold;
* ``peergrid.recover_stalled`` (periodic): retries the jobs of workers whose heartbeat is
  older than ``stall_s`` on a live worker (or fails one whose site already has a later step
  waiting), so their sites go on elsewhere.

A worker keeps the runtime of each site it has stepped (grid, chain client, store on the
shared pool) for its next step (a site's file cannot change under its id: ``site add``
refuses a taken id, so a kept runtime never goes stale by its file). At start it
builds every site's runtime in the background (``--no-warm``: on first use only), since any
worker may be given any site's step and a build costs more than a step. Ctrl-C (SIGINT)
or SIGTERM lets the running steps finish, then exits.

Development flags (each logs a warning at start; every worker of a fleet must use the same):
``--dev-interval-s N`` runs every site with N-second intervals; ``--simulate-devices`` reads
devices simulated in-process (:mod:`controller.simdevices`) instead of over Modbus.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from procrastinate import App, Blueprint, JobContext, PsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued, UniqueViolation
from procrastinate.jobs import Status

from controller.config import SiteConfig
from controller.errors import AlreadyRunning, ConfigError, LostSite, NotAWorker
from controller.fleet import (
    DISPATCH_AHEAD_S,
    DISPATCH_EVERY_S,
    HEARTBEAT_S,
    STALL_S,
    Fleet,
    SiteHold,
    conninfo_of,
    latest_event_at,
    next_event_at,
    run_step,
    site_lock,
)
from controller.runner import dev_interval
from controller.store import shared_engine
from controller.wiring import Runtime, build_runtime

log = logging.getLogger("peergrid.worker")

tasks = Blueprint()

PERIODIC_PRIORITY = 100
"""Dispatch and recovery are fetched before waiting site steps (the engine takes the highest
priority first), so hundreds of steps due at one boundary never delay the next dispatch."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """How a worker runs (``peergrid worker`` flags)."""

    db_url: str
    concurrency: int = 1
    stall_s: float = STALL_S
    dev_interval_s: int | None = None
    simulate_devices: bool = False
    name: str = ""
    warm: bool = True


class FleetWorker:
    """The state of one worker process: the fleet, its options and its sites' runtimes."""

    def __init__(self, options: WorkerOptions, app: App) -> None:
        self.options = options
        self.app = app
        # a step holds the site's lock connection and, while clearing, the intake's: two
        # connections per concurrent step, and four for dispatch, recovery and the rest
        shared_engine(options.db_url, pool_size=2 * (options.concurrency + 1) + 4)
        self.fleet = Fleet(options.db_url)
        self._runtimes: dict[str, tuple[str, Runtime]] = {}
        self._sites: dict[str, tuple[str, SiteConfig]] = {}
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}

    # -- sites ------------------------------------------------------------------------------
    def site(self, site_id: str, version: str | None = None) -> SiteConfig:
        """The stored site (parsed once per version), with the development interval if set.

        ``version`` is the file's SHA-256 if the caller read it (:meth:`Fleet.list_sites`).
        """
        version = version or self.fleet.site_version(site_id)
        with self._lock:
            kept = self._sites.get(site_id)
        if kept is not None and kept[0] == version:
            return kept[1]
        site = self.fleet.load_site(site_id)
        if self.options.dev_interval_s is not None:
            site = dev_interval(site, self.options.dev_interval_s)
        with self._lock:
            self._sites[site_id] = (version, site)
        return site

    def runtime(self, site_id: str, site: SiteConfig) -> Runtime:
        """The site's runtime, built on first use and kept while its file is unchanged."""
        key = repr(site)
        with self._lock:
            building = self._building.setdefault(site_id, threading.Lock())
        with building:  # one build per site at a time (a step and the warm-up)
            with self._lock:
                kept = self._runtimes.get(site_id)
            if kept is not None and kept[0] == key:
                return kept[1]
            if kept is not None:
                kept[1].close()
            factory = None
            if self.options.simulate_devices:
                from controller.simdevices import simulated_devices  # noqa: PLC0415

                factory = simulated_devices
            # not the nonce: a step reconciles it holding the site (controller.fleet.run_step)
            runtime = build_runtime(
                site, shared_store=True, device_factory=factory, reconcile_nonce=False
            )
            with self._lock:
                self._runtimes[site_id] = (key, runtime)
            return runtime

    def gate_closure_s(self, site_id: str, site: SiteConfig) -> int:
        """The site's gate closure in force [s].

        :attr:`controller.cycle.Cycle.gate_closure_s` (a governed value once read) if the
        site's runtime is built (:meth:`warm`), else the site file's.
        """
        with self._lock:
            kept = self._runtimes.get(site_id)
        if kept is None or kept[0] != repr(site):
            return site.gate_closure_s
        return kept[1].cycle.gate_closure_s

    def warm(self) -> int:
        """Build every active site's runtime now (the first steps then run at full speed).

        A site that cannot be built is logged and left to its steps (which record why).
        Returns how many were built or already kept.
        """
        built = 0
        for row in self.fleet.list_sites():
            try:
                self.runtime(row.site_id, self.site(row.site_id, row.version))
            except Exception:  # boundary: one broken site must not stop the warm-up
                log.exception("warming site %s failed (its steps will say why)", row.site_id)
                continue
            built += 1
        log.info("warm: %d site runtimes ready", built)
        return built

    def close(self) -> None:
        """Close every kept runtime."""
        with self._lock:
            kept = list(self._runtimes.values())
            self._runtimes.clear()
        for _, runtime in kept:
            runtime.close()

    # -- tasks ------------------------------------------------------------------------------
    def step(self, site_id: str, job_id: int, at: int = 0) -> None:
        """One step of ``site_id`` as job ``job_id`` (:func:`controller.fleet.run_step`).

        The step goes by the database's clock (as the engine's scheduling does), and never
        before its event ``at`` [Unix s]: no host's clock moves a site's events.
        """
        site = self.site(site_id)
        try:
            with site_lock(site.database) as lock:
                epoch = self.fleet.take_hold(site_id, job_id)
                hold = SiteHold(self.fleet, site_id, epoch, self.options.stall_s, lock)
                now = max(self.fleet.db_now(), datetime.fromtimestamp(at, UTC))
                run_step(self.runtime(site_id, site), hold, now)
        except AlreadyRunning as exc:
            log.warning("site %s not stepped: %s", site_id, exc)
        except LostSite as exc:
            log.error("%s", exc)  # noqa: TRY400 - the message is the whole story

    def dispatch(self) -> int:
        """Defer each site's next step (:mod:`controller.fleet`); how many were deferred.

        A site whose latest event came undispatched gets a step at once (it catches up);
        otherwise one scheduled at its next event, if not yet dispatched and at most
        :data:`~controller.fleet.DISPATCH_AHEAD_S` away. By the database's clock.
        """
        now = self.fleet.db_now()
        deferred = 0
        for row in self.fleet.list_sites():
            try:
                site = self.site(row.site_id, row.version)
            except ConfigError as exc:
                log.error("site %s cannot be dispatched: %s", row.site_id, exc)  # noqa: TRY400
                continue
            gate = self.gate_closure_s(row.site_id, site)
            due, upcoming = latest_event_at(site, now, gate), next_event_at(site, now, gate)
            at, when = (due, None) if due > row.dispatched_until else (upcoming, upcoming)
            if at <= row.dispatched_until:
                continue  # dispatched already
            if when is not None and when - now.timestamp() > DISPATCH_AHEAD_S:
                continue  # not yet (a later dispatch defers it)
            lock = f"site:{row.site_id}"
            job = site_step.configure(
                lock=lock,
                queueing_lock=lock,
                schedule_at=None if when is None else datetime.fromtimestamp(when, UTC),
            )
            try:
                job.defer(site_id=row.site_id, at=at)
            except AlreadyEnqueued:  # a step still waits: it catches up; dispatch again later
                continue
            self.fleet.record_dispatch(row.site_id, at)
            deferred += 1
        return deferred

    async def recover(self) -> list[int]:
        """Retry (or fail) the jobs of stalled workers, freeing their sites; their ids."""
        manager = self.app.job_manager
        stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=self.options.stall_s)
        failed: list[int] = []
        for job in stalled:
            if job.id is None:
                continue
            try:  # run it again on a live worker: a step catches up if still in time
                await manager.retry_job(job)
                what = "retried"
            except UniqueViolation:  # another step of the site already waits: that one will
                await manager.finish_job_by_id_async(job.id, status=Status.FAILED, delete_job=False)
                what = "failed (a later step of its site waits)"
            log.warning(
                "job %d (%s %s) of a stalled worker %s; its site goes on elsewhere",
                job.id,
                job.task_name,
                job.task_kwargs,
                what,
            )
            failed.append(job.id)
        return failed


_WORKER: FleetWorker | None = None


def _worker() -> FleetWorker:
    if _WORKER is None:
        msg = "no fleet worker in this process (peergrid worker starts one)"
        raise NotAWorker(msg)
    return _WORKER


@tasks.task(name="peergrid.site_step", pass_context=True)
def site_step(context: JobContext, site_id: str, at: int = 0) -> None:
    """One site's step (:meth:`FleetWorker.step`) for its event at ``at`` [Unix s]."""
    job_id = context.job.id
    if job_id is None:
        msg = "a job without an id"
        raise NotAWorker(msg)
    _worker().step(site_id, job_id, at)


@tasks.periodic(cron=f"* * * * * */{DISPATCH_EVERY_S}", periodic_id="dispatch")
@tasks.task(name="peergrid.dispatch", queueing_lock="peergrid.dispatch", priority=PERIODIC_PRIORITY)
def dispatch(timestamp: int) -> None:
    """Defer the steps that are due (:meth:`FleetWorker.dispatch`)."""
    deferred = _worker().dispatch()
    if deferred:
        log.info("dispatched %d site steps (tick %d)", deferred, timestamp)


@tasks.periodic(cron=f"* * * * * */{DISPATCH_EVERY_S}", periodic_id="recover")
@tasks.task(
    name="peergrid.recover_stalled", queueing_lock="peergrid.recover", priority=PERIODIC_PRIORITY
)
async def recover_stalled(timestamp: int) -> None:
    """Fail stalled workers' jobs (:meth:`FleetWorker.recover`)."""
    del timestamp
    await _worker().recover()


def make_app(db_url: str) -> App:
    """The procrastinate app of a fleet's database, with PeerGrid's tasks."""
    app = App(connector=PsycopgConnector(conninfo=conninfo_of(db_url)))
    app.add_tasks_from(tasks, namespace="peergrid")
    return app


def run_worker(options: WorkerOptions) -> int:
    """Run a worker until SIGINT/SIGTERM (module docstring); the exit code."""
    global _WORKER  # noqa: PLW0603 - the tasks reach the process's one worker
    if options.dev_interval_s is not None:
        log.warning(
            "development interval: every site runs %d-second intervals", options.dev_interval_s
        )
    if options.simulate_devices:
        log.warning("development flag: devices are simulated in-process, not read over Modbus")
    app = make_app(options.db_url)
    _WORKER = FleetWorker(options, app)
    if options.warm:
        threading.Thread(target=_WORKER.warm, name="peergrid-warm", daemon=True).start()
    name = options.name or f"{socket.gethostname()}-{os.getpid()}"
    log.info("worker %s on %s", name, _WORKER.fleet.engine.url.render_as_string(True))
    try:
        app.run_worker(
            name=name,
            concurrency=max(options.concurrency, 1) + 1,  # a slot for dispatch and recovery
            update_heartbeat_interval=HEARTBEAT_S,
            stalled_worker_timeout=options.stall_s,
            fetch_job_polling_interval=1.0,
            install_signal_handlers=True,
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        _WORKER.close()
        _WORKER = None
    return 0
