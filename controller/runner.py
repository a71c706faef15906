"""``peergrid run --site FILE``: the real-time controller of one site.

Builds the site's runtime (grid, Modbus devices, chain, database) with
:func:`controller.wiring.build_runtime`, then ticks at every interval boundary through
:mod:`controller.scheduler` until interrupted (``--once``: the current boundary only); before
the first scheduled tick it resolves settlement intents left by a previous run (asking the
chain first).

One instance per site, wherever it is started from: the lock is the database's own. For a
SQLite database it is ``<database file>.lock`` beside the file (an exclusive ``flock`` held
while the controller runs, released when the process ends, however it ends), so a second
``peergrid run`` for the same database, from any folder, exits with code 1. Other databases
(PostgreSQL) are locked per host in the temporary folder, keyed by the URL, until the
per-site locks of the scale issue take that role in the database itself. The database
itself belongs to one site (:mod:`controller.site_identity`): ``run`` binds it on first use
and refuses another site's.

Chain backends: ``embedded`` deploys fresh contracts on an in-process chain at start and funds
every escrow from the site file (its state is lost at exit, and GRID, COMMUNITY and ``derive``
accounts use demo keys: for trials only). ``anvil`` and ``rpc`` connect to a persistent
chain: ``anvil`` (started by PeerGrid with ``state_path``) or any ``rpc`` URL; the contracts
are attached from the site file (deploy them with ``peergrid chain deploy``), the operator key
comes from the site's keystore or environment variable (:mod:`controller.keys`), GRID,
COMMUNITY and participants are the site file's addresses, and the operator's nonce is kept
in the database so a restart neither reuses nor skips one.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from controller.config import SiteConfig
from controller.cycle import TickReport
from controller.errors import AlreadyRunning
from controller.scheduler import run_forever, run_tick, single_instance
from controller.store import sqlite_file
from controller.wiring import build_runtime
from market.domain import Interval

log = logging.getLogger("peergrid.run")


def lock_path(database: str) -> Path:
    """The single-instance lock of a database (module docstring).

    Parameters
    ----------
    database : str
        The site's database URL; a relative SQLite path is relative to the current folder,
        as SQLite opens it.

    Returns
    -------
    Path
        ``<database file>.lock`` (absolute) for a SQLite file; for another database a file in
        the temporary folder named after the SHA-256 of the URL.
    """
    path = sqlite_file(database)
    if path is not None:
        path = path.resolve()
        return path.with_name(path.name + ".lock")
    digest = hashlib.sha256(database.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"peergrid-{digest}.lock"


def _summary(report: TickReport) -> str:
    parts = [f"{report.boundary:%Y-%m-%dT%H:%MZ}: {report.readings_ok} readings ok"]
    if report.readings_missing:
        parts.append(f"missing {len(report.readings_missing)}")
    if report.cleared is not None:
        r = report.cleared.result
        parts.append(f"cleared {r.interval.label()} {r.status.value} ({r.reason})")
    for s in report.settlements:
        parts.append(
            f"settled {s.interval.label()} tx {s.outcome.tx_hash}"
            if s.outcome
            else f"settlement of {s.interval.label()} pending: {s.error}"
        )
    return "; ".join(parts)


def run_site(site: SiteConfig, *, once: bool = False) -> int:
    """Run ``site`` in real time, or one boundary with ``once``.

    Parameters
    ----------
    site : SiteConfig
        The site.
    once : bool
        Run the tick of the current boundary (unless it already ran), print its summary and
        return; otherwise tick at every boundary until interrupted.

    Returns
    -------
    int
        Exit code: 0, or 1 when another controller holds the site's lock.

    Raises
    ------
    ConfigError
        The site cannot be wired (see :func:`controller.wiring.build_runtime`).
    SiteMismatch
        The site's database belongs to another site (it is left unchanged).
    """
    try:
        with build_runtime(site, guard=single_instance(lock_path(site.database))) as runtime:
            if once:
                boundary = Interval.containing(datetime.now(UTC), site.interval_s).start
                report = run_tick(runtime.cycle, boundary)
                print(_summary(report) if report else "this boundary already ran")  # noqa: T201
                return 0
            run_forever(runtime.cycle, lambda r: print(_summary(r), flush=True))  # noqa: T201
            return 0
    except AlreadyRunning as exc:
        log.error("%s", exc)  # noqa: TRY400 - the message is the whole story
        return 1
