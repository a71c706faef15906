"""Many sites on one PostgreSQL database, run by any number of ``peergrid worker`` processes.

The work is distributed by procrastinate (a PostgreSQL task engine: jobs, per-job locks,
periodic tasks, worker heartbeats), not by a home-made lease protocol:

* **Sites** live in the database (``peergrid site add|remove|list --db URL``): table
  ``peergrid_fleet.sites`` keeps each site file's text, the folder its relative paths are
  relative to, and when it was added or removed. Each site's store is the schema
  ``site_<id>`` of the same database (:func:`controller.store.split_schema`): the same
  tables and Alembic revisions as a single site's, so ``peergrid audit verify --db
  URL?schema=site_<id>`` and every other command read it as usual.
* **Dispatch**: a periodic task (every :data:`DISPATCH_EVERY_S` seconds; procrastinate
  defers it once per period whichever workers run) defers, for every site, one
  ``site_step`` job scheduled at the site's next event (a boundary or a gate closure) once
  it is at most :data:`DISPATCH_AHEAD_S` away, or at once for an event that came and was
  not dispatched (no worker was running); with the
  job lock and queueing lock ``site:<id>``: one job of a site runs at a time, and at most
  one waits. ``sites.dispatched_until`` records the last event dispatched, written after
  the job is deferred (a dispatcher dying in between leaves the event to the next dispatch;
  a second job for one event finds nothing due). Times are the database's clock, as the
  engine's scheduling is.
* **A step** brings a site up to date at the time it runs, as a controller starting then
  would (:func:`run_step`): the operator's site actions are read from the store again (a
  pause or an exclusion taken anywhere applies from the next step), ticks left
  ``running`` by a worker that died are closed as ``crashed``, pending settlements are
  resolved (the chain is asked first; by the tick itself when one runs), boundaries no one
  ran are recorded ``missed`` with the reason, and the latest event runs if it is at most
  :func:`~controller.scheduler.misfire_s` late.
* **Stalled jobs**: a worker sends a heartbeat every :data:`HEARTBEAT_S` seconds; a periodic
  task fails the jobs of workers silent for ``stall_s`` seconds (``--stall-s``), which frees
  their sites' locks: the next step runs on a live worker.

Safety does not rest on the engine alone:

1. The store's unique constraints keep every interval claimed, every boundary ticked and
   every settlement intent recorded at most once, whoever writes.
2. A step holds the site's **database lock** (a session advisory lock keyed by the site's
   schema, :func:`site_lock`) for its whole run; ``peergrid run`` on PostgreSQL takes the
   same lock, so a worker and a ``run`` never drive one site together. PostgreSQL drops the
   lock of a process that dies (its connection closes).
3. Right before each settlement transaction and each setpoint, the step checks **by the
   database's clock** that it still holds the site (:meth:`Fleet.check_hold`): its hold's
   fencing epoch is current, its job is still ``doing`` and its worker's heartbeat is
   younger than ``stall_s``. Otherwise it stops (:class:`~controller.errors.LostSite`) and
   sends nothing.
4. The Settlement contract accepts one batch per interval (the batch id), the last guard.

Each site has its own Settlement contract and operator address (its site file's), and one
worker at a time sends its transactions, so nonces never race; a worker taking a site
reconciles the operator's nonce with the node and the store first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from controller.config import SiteConfig, parse_site
from controller.controls import MarketControls
from controller.errors import ConfigError, LostSite, MissingDatabase
from controller.scheduler import EventKind, catch_up_events, events_after, misfire_s, run_event
from controller.store import (
    SiteLockHeld,
    Store,
    lock_key,
    shared_engine,
    site_lock,
    split_schema,
)
from market.domain import Interval, utc_label

log = logging.getLogger("peergrid.fleet")

FLEET_SCHEMA: Final = "peergrid_fleet"  # spelled out in the SQL below
SITE_ID = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
DISPATCH_EVERY_S: Final = 5
DISPATCH_AHEAD_S: Final = 3 * DISPATCH_EVERY_S
"""How long before its event a step is deferred [s].

Not earlier: deferring is the dispatcher's work (a row and a lock per site), and a step
deferred as soon as the site's previous step ended would be deferred in the middle of the
burst of steps that all sites run at a boundary, taking a worker's thread and CPU from them.
Three dispatch periods ahead, a step is still deferred in time if a dispatch is late."""
HEARTBEAT_S: Final = 2.0
STALL_S: Final = 30.0
"""Default: a worker silent this long [s] is dead; its jobs are failed and its sites freed."""

fleet_metadata = MetaData(schema=FLEET_SCHEMA)

sites = Table(
    "sites",
    fleet_metadata,
    Column("site_id", String(40), primary_key=True),
    Column("name", Text, nullable=False),
    Column("site_toml", Text, nullable=False),
    Column("base_dir", Text, nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("operator_source", Text, nullable=False),  # operator_source(): one per site
    Column("added_at", DateTime(timezone=True), nullable=False),
    Column("removed_at", DateTime(timezone=True), nullable=True),
    Column("dispatched_until", BigInteger, nullable=False, default=0),
)

site_holds = Table(
    "site_holds",
    fleet_metadata,
    Column("site_id", String(40), primary_key=True),
    Column("epoch", BigInteger, nullable=False),
    Column("job_id", BigInteger, nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False),
)


def site_schema(site_id: str) -> str:
    """The schema of a site's store: ``site_<id>``."""
    return f"site_{site_id}"


def check_site_id(site_id: str) -> str:
    """``site_id`` if it is a valid id (lower-case letter, then letters, digits, ``_``)."""
    if not SITE_ID.match(site_id):
        msg = (
            f"site id {site_id!r}: a lower-case letter, then lower-case letters, digits and _ "
            "(at most 40)"
        )
        raise ConfigError(msg)
    return site_id


def require_postgresql(url: str) -> str:
    """``url`` if it is a PostgreSQL URL without ``schema``; the workers' database."""
    base, schema = split_schema(url)
    if make_url(base).get_backend_name() != "postgresql":
        msg = (
            "workers and 'peergrid site' need a PostgreSQL database "
            "(postgresql+psycopg://user@host/dbname); SQLite keeps one site per file"
        )
        raise ConfigError(msg)
    if schema is not None:
        msg = "give the fleet's database without schema= (each site gets its own schema)"
        raise ConfigError(msg)
    return base


def conninfo_of(url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL (for procrastinate)."""
    from psycopg.conninfo import make_conninfo  # noqa: PLC0415

    parsed = make_url(url)
    params: dict[str, Any] = {
        k: v for k, v in parsed.query.items() if isinstance(v, str) and k != "schema"
    }
    for key, value in (
        ("host", parsed.host),
        ("port", parsed.port),
        ("user", parsed.username),
        ("password", parsed.password),
        ("dbname", parsed.database),
    ):
        if value is not None:
            params.setdefault(key, str(value))
    return make_conninfo(**params)


@dataclass(frozen=True, slots=True)
class SiteRow:
    """A site of the fleet as ``peergrid site list`` shows it."""

    site_id: str
    name: str
    added_at: datetime
    removed_at: datetime | None
    dispatched_until: int
    version: str  # the site file's SHA-256


class Fleet:
    """The fleet's tables and the engine's schema on one PostgreSQL database.

    Parameters
    ----------
    url
        The database (SQLAlchemy URL, no ``schema``).
    create
        Create the fleet's schema and procrastinate's tables if missing (under an advisory
        lock, so workers starting together do it once); ``False``: refuse a database without
        them (:class:`~controller.errors.MissingDatabase`), creating nothing.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = require_postgresql(url)
        self.engine = shared_engine(self.url)
        if create:
            self._create()
            return
        with self.engine.connect() as conn:
            found = conn.execute(text(f"SELECT to_regclass('{FLEET_SCHEMA}.sites')")).scalar()
        if found is None:
            where = self.engine.url.render_as_string(hide_password=True)
            msg = f"{where} holds no fleet ('peergrid site add' makes one)"
            raise MissingDatabase(msg)

    def _create(self) -> None:
        from procrastinate.schema import SchemaManager  # noqa: PLC0415

        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(FLEET_SCHEMA)})
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{FLEET_SCHEMA}"')
            fleet_metadata.create_all(conn)
            found = conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar()
            if found is None:  # procrastinate's own schema, as `procrastinate schema --apply`
                raw = conn.connection.dbapi_connection
                assert raw is not None  # noqa: S101 - an open connection has one
                cursor = raw.cursor()
                try:
                    cursor.execute(SchemaManager.get_schema())  # no parameters: % stays as is
                finally:
                    cursor.close()

    # -- sites ----------------------------------------------------------------------------
    def add_site(self, site_id: str, path: Path) -> SiteConfig:
        """Add the site file at ``path`` as ``site_id``; returns the site as parsed.

        Raises
        ------
        ConfigError
            A bad id, a site id in use (also by a removed site: its store is kept), or a
            site file that does not parse (:class:`~controller.config.InvalidSite`).
        """
        check_site_id(site_id)
        raw = path.read_text("utf-8")
        site = load_site_text(raw, str(path), path.resolve().parent)
        with self.engine.connect() as conn:
            taken = conn.execute(select(sites.c.site_id).where(sites.c.site_id == site_id))
            if taken.first() is not None:
                msg = f"site id {site_id!r} is taken (sites keep their id after removal)"
                raise ConfigError(msg)
        self._refuse_shared_operator(site_id, site)
        # the store now, once: workers starting together never race to make it
        Store(self.store_url(site_id), shared=True).close()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(sites).values(
                        site_id=site_id,
                        name=site.name,
                        site_toml=raw,
                        base_dir=str(path.resolve().parent),
                        file_sha256=hashlib.sha256(raw.encode()).hexdigest(),
                        operator_source=operator_source(site),
                        added_at=datetime.now(UTC),
                        removed_at=None,
                        dispatched_until=0,
                    )
                )
        except IntegrityError:
            msg = f"site id {site_id!r} is taken (sites keep their id after removal)"
            raise ConfigError(msg) from None
        return site

    def _refuse_shared_operator(self, site_id: str, site: SiteConfig) -> None:
        """Refuse a site whose operator key another active site uses (one key, one nonce).

        One worker at a time sends a site's transactions; two sites signing with one key,
        stepped on two workers at once, would race that account's nonces.
        """
        mine = operator_source(site)
        with self.engine.connect() as conn:
            other = conn.execute(
                select(sites.c.site_id)
                .where(sites.c.operator_source == mine)
                .where(sites.c.removed_at.is_(None))
            ).scalar()
        if other is not None:
            msg = (
                f"site {site_id}: its operator key ({mine}) is site {other}'s too; each site "
                "needs its own operator account (its own key variable or keystore), or two "
                "workers would race one account's nonces"
            )
            raise ConfigError(msg)

    def remove_site(self, site_id: str) -> bool:
        """Stop dispatching ``site_id`` (its store and records stay); False if not active."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(sites)
                .where(sites.c.site_id == site_id)
                .where(sites.c.removed_at.is_(None))
                .values(removed_at=datetime.now(UTC))
            )
        return bool(done.rowcount)

    def list_sites(self, *, removed: bool = False) -> list[SiteRow]:
        """The fleet's sites by id (with ``removed``, removed ones too)."""
        query = select(sites).order_by(sites.c.site_id)
        if not removed:
            query = query.where(sites.c.removed_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            SiteRow(
                site_id=r["site_id"],
                name=r["name"],
                added_at=r["added_at"],
                removed_at=r["removed_at"],
                dispatched_until=int(r["dispatched_until"]),
                version=r["file_sha256"],
            )
            for r in rows
        ]

    def _active(self, site_id: str, *columns: Any) -> Any:  # noqa: ANN401 - a Row
        """The active site's ``columns`` (a row), or :class:`ConfigError` if none is active."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(*columns)
                .where(sites.c.site_id == site_id)
                .where(sites.c.removed_at.is_(None))
            ).first()
        if row is None:
            msg = f"no active site {site_id!r} in the fleet"
            raise ConfigError(msg)
        return row

    def site_version(self, site_id: str) -> str:
        """The SHA-256 of the active site's file (it changes when the site is re-added).

        Raises
        ------
        ConfigError
            No active site has that id.
        """
        return str(self._active(site_id, sites.c.file_sha256)[0])

    def load_site(self, site_id: str) -> SiteConfig:
        """The site as stored, its store in schema ``site_<id>`` of this database.

        Raises
        ------
        ConfigError
            No active site has that id.
        """
        row = self._active(site_id, sites.c.site_toml, sites.c.base_dir)
        site = load_site_text(row.site_toml, f"fleet:{site_id}", Path(row.base_dir))
        return dataclasses.replace(site, database=self.store_url(site_id))

    def store_url(self, site_id: str) -> str:
        """The URL of a site's store: this database, schema ``site_<id>``."""
        return f"{self.url}{'&' if '?' in self.url else '?'}schema={site_schema(site_id)}"

    # -- dispatch ---------------------------------------------------------------------------
    def record_dispatch(self, site_id: str, event_at: int) -> None:
        """Record that a step for the site's event at ``event_at`` [Unix s] was deferred.

        Written after the job is deferred: a dispatcher that dies in between leaves the
        event undispatched, and the next dispatch defers it again (a second job for one event
        finds nothing due). Only ever moves forward.
        """
        with self.engine.begin() as conn:
            conn.execute(
                update(sites)
                .where(sites.c.site_id == site_id)
                .where(sites.c.dispatched_until < event_at)
                .values(dispatched_until=event_at)
            )

    def db_now(self) -> datetime:
        """The database's clock (UTC): dispatch and steps go by it, as the engine does."""
        with self.engine.connect() as conn:
            found: datetime = conn.execute(text("SELECT now()")).scalar_one()
        return found.astimezone(UTC)

    # -- holds ------------------------------------------------------------------------------
    def take_hold(self, site_id: str, job_id: int) -> int:
        """Make ``job_id`` the site's holder; returns its fencing epoch (one more each time)."""
        with self.engine.begin() as conn:
            epoch = conn.execute(
                text(
                    "INSERT INTO peergrid_fleet.site_holds (site_id, epoch, job_id, taken_at) "
                    "VALUES (:s, 1, :j, now()) ON CONFLICT (site_id) DO UPDATE SET "
                    "epoch = site_holds.epoch + 1, job_id = excluded.job_id, taken_at = now() "
                    "RETURNING epoch"
                ),
                {"s": site_id, "j": job_id},
            ).scalar_one()
        return int(epoch)

    def check_hold(
        self, site_id: str, epoch: int, stall_s: float, lock: SiteLockHeld | None = None
    ) -> None:
        """Raise :class:`LostSite` unless the hold ``epoch`` of ``site_id`` is still live.

        Live, by the database's clock: the epoch is the site's current one, its job is
        ``doing``, its worker's last heartbeat is younger than ``stall_s`` [s], and (given
        ``lock``) the step's site lock is still held by its connection (a dropped connection
        loses it, and a ``peergrid run`` could take the site).
        """
        with self.engine.connect() as conn:
            why = conn.execute(
                text(
                    "SELECT CASE "
                    "WHEN h.epoch IS DISTINCT FROM :e THEN 'another job took the site' "
                    "WHEN j.status IS DISTINCT FROM 'doing' THEN 'the job is no longer running' "
                    "WHEN w.last_heartbeat IS NULL "
                    "  OR w.last_heartbeat < now() - make_interval(secs => :stall) "
                    "  THEN 'the worker''s heartbeat is stale' "
                    "WHEN :pid > 0 AND NOT EXISTS (SELECT 1 FROM pg_locks l "
                    "  WHERE l.locktype = 'advisory' AND l.granted AND l.pid = :pid "
                    "  AND l.classid = CAST(:hi AS oid) AND l.objid = CAST(:lo AS oid) "
                    "  AND l.objsubid = 1) THEN 'the site lock''s connection lost it' "
                    "ELSE '' END "
                    "FROM peergrid_fleet.site_holds h "
                    "LEFT JOIN procrastinate_jobs j ON j.id = h.job_id "
                    "LEFT JOIN procrastinate_workers w ON w.id = j.worker_id "
                    "WHERE h.site_id = :s"
                ),
                {
                    "s": site_id,
                    "e": epoch,
                    "stall": stall_s,
                    "pid": lock.pid if lock is not None else 0,
                    "hi": lock.halves[0] if lock is not None else 0,
                    "lo": lock.halves[1] if lock is not None else 0,
                },
            ).scalar()
        if why is None:
            why = "the site has no holder"
        if why:
            msg = f"site {site_id}: lost the site (epoch {epoch}): {why}; nothing sent"
            raise LostSite(msg)


def operator_source(site: SiteConfig) -> str:
    """Where a site's operator key comes from: its keystore file, else its variable's name."""
    chain = site.chain
    if chain.operator_keystore:
        return f"keystore {Path(chain.operator_keystore).resolve()}"
    return f"environment variable {chain.operator_key_env}"


def load_site_text(raw: str, source: str, base_dir: Path) -> SiteConfig:
    """Parse a site file's text (relative paths against ``base_dir``)."""
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{source}: not TOML: {exc}"
        raise ConfigError(msg) from None
    return parse_site(data, source, base_dir=base_dir)


def latest_event_at(site: SiteConfig, now: datetime, gate_closure_s: int | None = None) -> int:
    """The latest event of ``site`` at or before ``now`` [Unix s]: a boundary or gate closure.

    ``gate_closure_s`` is the gate closure in force [s]
    (:attr:`controller.cycle.Cycle.gate_closure_s`; ``None``: the site file's).
    """
    gate = site.gate_closure_s if gate_closure_s is None else gate_closure_s
    since = now - timedelta(seconds=site.interval_s + 1)
    latest = since
    for event in events_after(since, site.interval_s, gate):
        if event.at > now:
            break
        latest = event.at
    return int(latest.timestamp())


def next_event_at(site: SiteConfig, now: datetime, gate_closure_s: int | None = None) -> int:
    """The first event of ``site`` after ``now`` [Unix s].

    ``gate_closure_s`` as in :func:`latest_event_at`.
    """
    gate = site.gate_closure_s if gate_closure_s is None else gate_closure_s
    event = next(events_after(now, site.interval_s, gate))
    return int(event.at.timestamp())


class SiteHold:
    """What a running step holds: the site's fencing epoch and lock.

    Called before each transaction and setpoint (:meth:`Fleet.check_hold`).
    """

    def __init__(
        self,
        fleet: Fleet,
        site_id: str,
        epoch: int,
        stall_s: float,
        lock: SiteLockHeld | None = None,
    ) -> None:
        self.fleet, self.site_id, self.epoch, self.stall_s = fleet, site_id, epoch, stall_s
        self.lock = lock

    def __call__(self) -> None:
        """Raise :class:`LostSite` unless the hold is live (:meth:`Fleet.check_hold`)."""
        self.fleet.check_hold(self.site_id, self.epoch, self.stall_s, self.lock)


def step_events(cycle: Any, now: datetime) -> list[Any]:  # noqa: ANN401 - Cycle, Event
    """The events a step at ``now`` runs: the latest boundary (and gate closure) if due.

    As a controller starting at ``now`` (:func:`~controller.scheduler.catch_up_events`), with
    the window :func:`~controller.scheduler.misfire_s` (a third of the interval) instead of
    the start-up grace: a step may wait behind others in the queue.
    """
    return catch_up_events(cycle, now, window_s=misfire_s(cycle.site.interval_s))


def record_late_boundary(cycle: Any, now: datetime) -> int | None:  # noqa: ANN401 - Cycle
    """Record the latest boundary missed, with how late its step came; the boundary or None.

    A step that comes after its boundary's window (:func:`step_events`: the workers were
    behind) runs nothing for it; the boundary is recorded ``missed`` at once, saying how late
    the step was, rather than by the next tick as "not running". Nothing is recorded before a
    site's first tick, for a boundary that ran, or while the boundary is still in its window.
    """
    length = cycle.site.interval_s
    boundary = Interval.containing(now, length).interval_id
    last = cycle.store.last_tick()
    late_s = now.timestamp() - boundary
    window = misfire_s(length)
    if last is None or last >= boundary or late_s <= window:
        return None
    detail = (
        f"its step came {late_s:.0f} s after the boundary, past the window of {window} s "
        "(the workers were behind)"
    )
    if cycle.store.record_ticks(range(boundary, boundary + 1), "missed", detail):
        label = utc_label(datetime.fromtimestamp(boundary, UTC))
        log.warning("boundary %s missed: %s", label, detail)
        return boundary
    return None


def run_step(runtime: Any, hold: SiteHold, now: datetime) -> list[Any]:  # noqa: ANN401
    """Bring one site up to date at ``now`` (module docstring); its reports.

    Parameters
    ----------
    runtime : Runtime
        The site's runtime (:func:`controller.wiring.build_runtime`).
    hold : SiteHold
        The step's hold; the cycle calls it before each transaction and setpoint.
    now : datetime
        The time (UTC).
    """
    from controller.runner import close_stale_ticks  # noqa: PLC0415 - runner imports a lot

    cycle = runtime.cycle
    cycle.fence = hold
    hold()
    if cycle.controls is not None:  # the operator's actions, as stored now (any process)
        c = cycle.controls
        cycle.controls = MarketControls(
            participants=c.participants, devices=c.devices, buses=c.buses, log=c.log
        )
    if runtime.settler is not None and not runtime.trial:
        client = runtime.client
        client.reconcile_nonce(runtime.store.load_next_nonce(str(client.operator.address)))
    close_stale_ticks(runtime.store)
    events = step_events(cycle, now)
    if not any(e.kind is not EventKind.CLEAR for e in events):
        record_late_boundary(cycle, now)
    if not any(e.kind is not EventKind.CLEAR for e in events):
        # a tick resolves pending intents itself (chain first): only without one, here
        for resumed in cycle.resume_pending():
            outcome = resumed.error or "ok"
            log.info("resumed settlement of %s: %s", resumed.interval.label(), outcome)
    reports: list[Any] = []
    for event in events:
        log.info("site %s: event %s", hold.site_id, event.label())
        reports += run_event(cycle, event)
    if not reports:
        log.info("site %s: nothing due at %s", hold.site_id, utc_label(now))
    return reports


__all__ = [
    "DISPATCH_AHEAD_S",
    "DISPATCH_EVERY_S",
    "FLEET_SCHEMA",
    "Fleet",
    "SiteHold",
    "SiteRow",
    "check_site_id",
    "conninfo_of",
    "latest_event_at",
    "lock_key",
    "next_event_at",
    "record_late_boundary",
    "require_postgresql",
    "run_step",
    "site_lock",
    "site_schema",
    "step_events",
]
