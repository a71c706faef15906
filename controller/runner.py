"""``peergrid run --site FILE``: the real-time controller of one site.

Builds the site's runtime (grid, Modbus devices, chain, database) with
:func:`controller.wiring.build_runtime`, then ticks at every interval boundary through
:mod:`controller.scheduler` until interrupted (``--once``: the current boundary only); before
the first scheduled tick it resolves settlement intents left by a previous run (asking the
chain first).

One instance per site, wherever it is started from: the lock is the database's own. For a
SQLite database it is ``<database file>.lock`` beside the file (an exclusive ``flock`` held
while the controller runs, released when the process ends, however it ends), so a second
``peergrid run`` for the same database, from any folder, exits with code 1. On PostgreSQL
it is the database's own lock of the site (:func:`site_guard`): the advisory lock of the
site's schema that every ``peergrid worker`` takes for a step of the site, held on a
connection PostgreSQL drops when the process dies. The database
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

**Start-up.** With the lock held (no other controller of the site is alive), ticks a dead
controller left ``running`` are closed as ``crashed`` (:meth:`Store.close_stale_ticks`), then
pending settlements are reconciled (:meth:`Cycle.resume_pending`; audit records missing from
an older release's database are written first). A controller started within the grace window
after a boundary runs that boundary at once (:func:`controller.scheduler.catch_up_boundary`).

**Events.** With the site's ``gate_closure_s = 0`` each boundary runs one tick (read,
settle, clear); with ``gate_closure_s > 0`` each interval is cleared at its gate closure and
each boundary reads and settles (:mod:`controller.scheduler`). Ctrl-C lets the current step
finish, then exits (a second Ctrl-C abandons it, as a crash would). ``--once`` runs the
current boundary's whole tick (read, settle, clear) whatever the gate closure.

**Alerts.** After each step the site's alerts are evaluated (:mod:`controller.alerts`): a
raised one is logged as a warning, a cleared one as info, and the changes go to the site's
``[site.alerts] webhook_url`` in the background (never delaying the next step).

**Development interval.** ``--dev-interval-s N`` (:func:`dev_interval`) runs the site with
N-second intervals (2 <= N, N divides a day), for kill tests and trials only: the site file
cannot set an interval below 60 s, and the flag logs a warning on every start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import tempfile
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

from controller.alerts import WEBHOOK_TIMEOUT_S, watch_site
from controller.cli_debts import format_changes
from controller.config import SiteConfig
from controller.cycle import IntervalReport
from controller.errors import AlreadyRunning, ConfigError
from controller.history import price_text, result_figures
from controller.scheduler import Report, run_forever, run_tick, single_instance
from controller.store import Store, site_lock, sqlite_file
from controller.wiring import build_runtime
from market.codec import result_to_dict
from market.domain import ClearingResult, Interval, utc_label

log = logging.getLogger("peergrid.run")


def site_guard(database: str) -> AbstractContextManager[object]:
    """The single-instance lock of a site's database (module docstring).

    A SQLite file: an exclusive ``flock`` on ``<file>.lock``. PostgreSQL: the database's
    own lock of the site (:func:`controller.store.site_lock`, a session advisory lock keyed
    by the site's schema), the lock ``peergrid worker`` takes for each step, so a ``run``
    or ``serve`` and a fleet's workers never drive one site together.

    Parameters
    ----------
    database : str
        The site's database URL.
    """
    if sqlite_file(database) is None and database.startswith("postgresql"):
        return site_lock(database)
    return single_instance(lock_path(database))


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


STALE_TICK_REASON = "crashed: the controller stopped during this tick (closed at restart)"
"""The detail recorded on a tick a dead controller left ``running``."""


def close_stale_ticks(store: Store) -> list[int]:
    """Close the ticks a dead controller left ``running`` (call it holding the site's lock).

    Parameters
    ----------
    store : Store
        The site's store.

    Returns
    -------
    list of int
        The boundaries closed as crashed [Unix s].
    """
    closed = store.close_stale_ticks(STALE_TICK_REASON)
    for boundary_id in closed:
        log.warning("tick at %s was left running; closed as crashed", utc_label(boundary_id))
    return closed


def dev_interval(site: SiteConfig, interval_s: int) -> SiteConfig:
    """``site`` with a development interval (``peergrid run --dev-interval-s``).

    The site file's own rule (``interval_s >= 60``) is bypassed by this flag only; gate
    closure is clipped to below the new interval. A warning is logged: this is a development
    setting, never a site's.

    Parameters
    ----------
    site : SiteConfig
        The site as its file describes it.
    interval_s : int
        The interval [s]: at least 2, and a divisor of 86400 (a day).

    Returns
    -------
    SiteConfig
        A copy with ``interval_s`` and ``gate_closure_s`` [s] replaced.

    Raises
    ------
    ConfigError
        ``interval_s`` is below 2 s or does not divide a day.
    """
    if interval_s < 2 or 86400 % interval_s:
        msg = f"--dev-interval-s must be >= 2 and divide 86400 (a day), got {interval_s}"
        raise ConfigError(msg)
    gate = min(site.gate_closure_s, interval_s - 1)
    log.warning(
        "DEVELOPMENT SETTING: running %s with %d s intervals (its file says %d s; gate closure "
        "%d s); never use --dev-interval-s for a real site",
        site.name,
        interval_s,
        site.interval_s,
        gate,
    )
    return dataclasses.replace(site, interval_s=interval_s, gate_closure_s=gate)


def result_summary(result: ClearingResult) -> str:
    """A clearing result in a few words: status, prices, energy and voltages.

    Parameters
    ----------
    result : ClearingResult
        The result.

    Returns
    -------
    str
        ``cleared: price 0.300-0.314 /kWh, bought 5.04 sold 2.42 kWh, grid in 2.70 out 0.00
        kWh, vm 0.969-1.000 p.u. (reason)`` (prices in tokens per kWh, energy in kWh, the
        figures of :func:`controller.history.result_figures`); without prices, only the
        status and the reason.
    """
    f = result_figures(result_to_dict(result))
    parts = [result.status.value]
    if f["price_min_per_kwh"] is not None:
        parts.append(
            f"price {price_text(f['price_min_per_kwh'])}-{price_text(f['price_max_per_kwh'])} /kWh"
        )
    if f["bought_wh"] or f["sold_wh"] or f["grid_import_wh"] or f["grid_export_wh"]:
        parts.append(
            f"bought {f['bought_wh'] / 1000:.2f} sold {f['sold_wh'] / 1000:.2f} kWh, grid in "
            f"{f['grid_import_wh'] / 1000:.2f} out {f['grid_export_wh'] / 1000:.2f} kWh"
        )
    if f["vm_min_pu"] is not None:
        parts.append(f"vm {f['vm_min_pu']:.3f}-{f['vm_max_pu']:.3f} p.u.")
    head = parts[0] + (": " + ", ".join(parts[1:]) if len(parts) > 1 else "")
    return f"{head} ({result.reason})"


def summary(report: Report) -> str:
    """One line on a step's report (``peergrid run`` prints it).

    Parameters
    ----------
    report : TickReport or IntervalReport
        A tick's report, or a clearing's at its gate closure.

    Returns
    -------
    str
        Readings, clearing (status, prices, bought/sold and grid energy, voltages and the
        reason: :func:`result_summary`) and settlements (times as
        :func:`~market.domain.utc_label`).
    """
    if isinstance(report, IntervalReport):
        r = report.result
        return (
            f"{utc_label(report.gate_closure)}: gate closure of {utc_label(r.interval.start)}: "
            f"cleared {result_summary(r)}"
        )
    # utc_label: minutes, or seconds when a (development) interval needs them
    parts = [f"{utc_label(report.boundary)}: {report.readings_ok} readings ok"]
    if report.readings_missing:
        parts.append(f"missing {len(report.readings_missing)}")
    if report.cleared is not None:
        r = report.cleared.result
        parts.append(f"cleared {utc_label(r.interval.start)} {result_summary(r)}")
    for s in report.settlements:
        label = utc_label(s.interval.start)
        parts.append(
            f"settled {label} tx {s.outcome.tx_hash}"
            if s.outcome
            else f"settlement of {label} pending: {s.error}"
        )
        if s.batch is not None and s.batch.debts:
            parts.append(f"carried balances (+ = owes COMMUNITY): {format_changes(s.batch.debts)}")
    return "; ".join(parts)


def run_site(site: SiteConfig, *, once: bool = False, dev_interval_s: int | None = None) -> int:
    """Run ``site`` in real time, or one boundary with ``once``.

    Parameters
    ----------
    site : SiteConfig
        The site.
    once : bool
        Run the tick of the current boundary (unless it already ran), print its summary and
        return; otherwise tick at every boundary until interrupted.
    dev_interval_s : int or None
        A development interval [s] replacing the site's (:func:`dev_interval`).

    Returns
    -------
    int
        Exit code: 0, or 1 when another controller holds the site's lock.

    Raises
    ------
    ConfigError
        The site cannot be wired (see :func:`controller.wiring.build_runtime`), or
        ``dev_interval_s`` is not a valid interval.
    SiteMismatch
        The site's database belongs to another site (it is left unchanged).
    """
    if dev_interval_s is not None:
        site = dev_interval(site, dev_interval_s)
    try:
        with build_runtime(site, guard=site_guard(site.database)) as runtime:
            close_stale_ticks(runtime.store)
            watch = watch_site(runtime)  # alerts after each step (controller.alerts)
            try:
                if once:
                    boundary = Interval.containing(datetime.now(UTC), site.interval_s).start
                    report = run_tick(runtime.cycle, boundary)
                    print(summary(report) if report else "this boundary already ran")  # noqa: T201
                    watch()
                    return 0

                def on_report(report: Report) -> None:
                    print(summary(report), flush=True)  # noqa: T201
                    watch()

                run_forever(runtime.cycle, on_report)
                return 0
            finally:
                watch.close(wait_s=WEBHOOK_TIMEOUT_S)
    except AlreadyRunning as exc:
        log.error("%s", exc)  # noqa: TRY400 - the message is the whole story
        return 1
