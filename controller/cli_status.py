"""``peergrid status`` and ``peergrid history``: a site's state and history in the terminal.

``peergrid status --site FILE [--json]`` prints the interval now (its phase: collecting
orders, gate closed, cleared or settled; the next gate closure and the time to it), the last
results (:data:`LAST_RESULTS` intervals: status and reason in words, price range, bought and
sold energy, grid import and export, voltages, AC check violations), each device's last
reading and its quality (OK, STALE, MISSING), the settlements not yet on-chain (state,
transaction) and the site's alerts (:func:`controller.alerts.site_alerts`, without the
chain's facts: the command reads the database only).

``peergrid history --site FILE --from ISO --to ISO [--csv]`` prints one row per interval
starting in ``[--from, --to)`` (:func:`controller.history.history_rows`): an aligned table
with the units in the headers, or CSV (:func:`controller.history.to_csv`, every column).

Both only read the site's database (its URL from the site file): they never start the cycle
nor talk to the devices or the chain. A database that does not exist is an error (exit 2),
as is a bad time. "Now" is the system clock, through the injectable ``clock`` of
:func:`register` (tests inject one).
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from controller.cli_types import utc_time
from controller.config import SiteConfig, read_site
from controller.errors import ConfigError
from market.domain import utc_label

if TYPE_CHECKING:
    from controller.store import Store

EXIT_OK: Final = 0

LAST_RESULTS: Final = 4
"""How many of the last intervals with a row ``peergrid status`` shows."""

STALE_AFTER_INTERVALS: Final = 2
"""A device whose last reading is older than this many intervals is shown STALE."""

Clock = Callable[[], datetime]
"""Returns "now" (UTC)."""

TABLE_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("interval_start", "interval (UTC)"),
    ("status", "status"),
    ("n_orders", "orders"),
    ("bought_wh", "bought [Wh]"),
    ("sold_wh", "sold [Wh]"),
    ("traded_wh", "traded [Wh]"),
    ("price_min_per_kwh", "price min [units/kWh]"),
    ("price_max_per_kwh", "price max [units/kWh]"),
    ("grid_import_wh", "grid import [Wh]"),
    ("grid_export_wh", "grid export [Wh]"),
    ("losses_wh", "losses [Wh]"),
    ("vm_min_pu", "vm min [p.u.]"),
    ("vm_max_pu", "vm max [p.u.]"),
    ("max_loading_pct", "load max [%]"),
    ("curtailed_wh", "curtailed [Wh]"),
    ("welfare_units", "welfare [units]"),
    ("settlement_state", "settlement"),
    ("tx_hash", "tx"),
)
"""The columns of ``peergrid history``'s table (the CSV has every column, with the reason)."""

_TX_SHOWN: Final = 12  # characters of a transaction hash in tables


def system_clock() -> datetime:
    """The system clock (UTC): the commands' default "now"."""
    return datetime.now(UTC)


def register(
    sub: Any,  # noqa: ANN401 - argparse's private _SubParsersAction
    *,
    clock: Clock = system_clock,
) -> None:
    """Add ``peergrid status`` and ``peergrid history`` to ``peergrid``'s subparsers.

    Parameters
    ----------
    sub
        The subparsers of ``peergrid``'s parser.
    clock : callable
        "Now" for both commands (the system clock; tests inject one).
    """
    status = sub.add_parser(
        "status", help="the interval now, last results, devices, pending settlements, alerts"
    )
    status.add_argument("--site", required=True, help="site TOML file (its database)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=functools.partial(cmd_status, clock=clock))
    history = sub.add_parser("history", help="a table (or CSV) of the intervals of a period")
    history.add_argument("--site", required=True, help="site TOML file (its database)")
    history.add_argument(
        "--from", dest="start", type=utc_time, required=True, help="first interval (UTC)"
    )
    history.add_argument(
        "--to", dest="end", type=utc_time, required=True, help="end, exclusive (UTC)"
    )
    history.add_argument("--csv", action="store_true", help="CSV with every column")
    history.set_defaults(func=cmd_history)


def _open(site: SiteConfig) -> Store:
    from controller.store import Store  # noqa: PLC0415 - SQLAlchemy only when a command runs

    return Store(site.database, create=False)


# ------------------------------------------------------------------------------ status


def device_status(store: Store, site: SiteConfig, now: datetime) -> list[dict[str, Any]]:
    """Each device of the site with its last stored reading and that reading's quality.

    Parameters
    ----------
    store : Store
        The site's store (only read).
    site : SiteConfig
        The site (its devices, in file order).
    now : datetime
        The time (UTC).

    Returns
    -------
    list of dict
        ``device``, ``participant``, ``kind``, ``quality`` (``OK``, ``STALE``, ``MISSING``,
        ``UNVERIFIED``:
        the reading's own, STALE too when its boundary is more than
        :data:`STALE_AFTER_INTERVALS` intervals old, MISSING without any), ``boundary_s``
        [Unix s], ``p_w`` [W], ``import_wh_total``, ``export_wh_total`` [Wh],
        ``soc_percent`` [%], ``reason``; the reading's fields are ``None`` without one.
    """
    from sqlalchemy import func, select  # noqa: PLC0415

    from controller.store import readings  # noqa: PLC0415

    with store.engine.connect() as conn:
        latest = select(func.max(readings.c.id)).group_by(readings.c.device_id).scalar_subquery()
        rows = {
            str(r["device_id"]): r
            for r in conn.execute(select(readings).where(readings.c.id.in_(latest))).mappings()
        }
    now_s = int(now.timestamp())
    out = []
    for d in site.devices:
        r = rows.get(str(d.id))
        entry: dict[str, Any] = {
            "device": str(d.id),
            "participant": str(d.participant),
            "kind": str(d.kind.value),
            "quality": "MISSING",
            "boundary_s": None,
            "p_w": None,
            "import_wh_total": None,
            "export_wh_total": None,
            "soc_percent": None,
            "reason": "no reading stored",
        }
        if r is not None:
            boundary = int(r["boundary"])
            quality = str(r["quality"]).upper()
            reason = str(r["reason"] or "")
            if quality == "OK" and now_s - boundary > STALE_AFTER_INTERVALS * site.interval_s:
                quality = "STALE"
                reason = f"no reading since {utc_label(boundary)}"
            entry.update(
                quality=quality,
                boundary_s=boundary,
                p_w=int(r["p_w"]),
                import_wh_total=int(r["import_wh_total"]),
                export_wh_total=int(r["export_wh_total"]),
                soc_percent=r["soc_percent"],
                reason=reason,
            )
        out.append(entry)
    return out


def pending_settlements(store: Store) -> list[dict[str, Any]]:
    """Settlements not yet on-chain (``intent`` or ``failed``), oldest first.

    Returns
    -------
    list of dict
        ``interval_start_s`` [Unix s], ``state``, ``tx_hash`` (of the last send, if any),
        ``error``.
    """
    from sqlalchemy import select  # noqa: PLC0415

    from controller.store import settlements  # noqa: PLC0415

    with store.engine.connect() as conn:
        rows = conn.execute(
            select(
                settlements.c.interval_id,
                settlements.c.state,
                settlements.c.tx_hash,
                settlements.c.error,
            )
            .where(settlements.c.state != "settled")
            .order_by(settlements.c.interval_id)
        ).all()
    return [
        {
            "interval_start_s": int(r.interval_id),
            "state": str(r.state),
            "tx_hash": r.tx_hash,
            "error": r.error or "",
        }
        for r in rows
    ]


def _last_interval_ids(store: Store, end_s: int, n: int) -> list[int]:
    """The starts of the last ``n`` intervals with a row before ``end_s`` [Unix s]."""
    from sqlalchemy import select  # noqa: PLC0415

    from controller.store import intervals  # noqa: PLC0415

    with store.engine.connect() as conn:
        rows = conn.execute(
            select(intervals.c.interval_id)
            .where(intervals.c.interval_id < end_s)
            .order_by(intervals.c.interval_id.desc())
            .limit(n)
        ).all()
    return [int(r[0]) for r in rows]


def status_doc(store: Store, site: SiteConfig, now: datetime) -> dict[str, Any]:
    """What ``peergrid status`` shows, as data (its ``--json`` form).

    Parameters
    ----------
    store : Store
        The site's store (only read).
    site : SiteConfig
        The site.
    now : datetime
        The time (UTC).

    Returns
    -------
    dict
        ``site``, ``now`` (:func:`controller.history.interval_phase`), ``last_results``
        (:func:`controller.history.history_rows` of the last :data:`LAST_RESULTS` intervals
        with a row up to the interval now, however old, newest first), ``devices``
        (:func:`device_status`), ``pending_settlements`` (:func:`pending_settlements`) and
        ``alerts`` (:meth:`controller.alerts.Alert.to_dict` of each).
    """
    from controller.alerts import site_alerts  # noqa: PLC0415 - httpx only when it runs
    from controller.history import history_rows, interval_phase  # noqa: PLC0415

    gate_s = store.gate_closure_in_force(site.gate_closure_s, site.interval_s)
    phase = interval_phase(store, interval_s=site.interval_s, gate_closure_s=gate_s, now=now)
    end = phase["interval_start_s"] + site.interval_s
    recent = []
    last = _last_interval_ids(store, end, LAST_RESULTS)
    if last:  # however long ago: a controller stopped for a week still shows its last results
        recent = history_rows(store, min(last), end)[-LAST_RESULTS:]
    alerts = site_alerts(store, site, now=now, chain=None)
    return {
        "site": site.name,
        "now": phase,
        "last_results": list(reversed(recent)),
        "devices": device_status(store, site, now),
        "pending_settlements": pending_settlements(store),
        "alerts": [a.to_dict() for a in alerts],
    }


def _kwh(value: int | None) -> str:
    return "-" if value is None else f"{value / 1000:.2f} kWh"


def _duration(seconds: int) -> str:
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{sign}{minutes}m{secs:02d}s"


def result_line(row: Mapping[str, Any]) -> str:
    """One interval's result in one line (``peergrid status``, ``peergrid run``'s style).

    Parameters
    ----------
    row : mapping
        A row of :func:`controller.history.history_rows`.

    Returns
    -------
    str
        Interval, status, prices [tokens/kWh], bought/sold and grid energy [kWh], voltages
        [p.u.], AC violations and settlement.
    """
    from controller.history import price_text  # noqa: PLC0415 - SQLAlchemy only when it runs

    if row.get("bought_wh") is None:
        return f"{row['interval_start']}  {row['status']}"
    vm = "-" if row["vm_min_pu"] is None else f"{row['vm_min_pu']:.3f}-{row['vm_max_pu']:.3f} p.u."
    violations = row.get("ac_violations")
    ac = "AC -" if violations is None else f"AC {violations} violation(s)"
    settled = row.get("settlement_state") or "not settled"
    tx = f" {row['tx_hash'][:_TX_SHOWN]}.." if row.get("tx_hash") else ""
    return (
        f"{row['interval_start']}  {row['status']}  price "
        f"{price_text(row['price_min_per_kwh'])}-{price_text(row['price_max_per_kwh'])} /kWh  "
        f"bought {_kwh(row['bought_wh'])} sold {_kwh(row['sold_wh'])}  grid in "
        f"{_kwh(row['grid_import_wh'])} out {_kwh(row['grid_export_wh'])}  vm {vm}  {ac}  "
        f"{settled}{tx}"
    )


def format_status(doc: Mapping[str, Any]) -> str:
    """The plain-text form of :func:`status_doc`'s document.

    Parameters
    ----------
    doc : mapping
        The document.

    Returns
    -------
    str
        Sections: the interval now, last results, devices, pending settlements, alerts.
    """
    from controller.alerts import Alert, AlertKind, format_alerts  # noqa: PLC0415

    now = doc["now"]
    lines = [
        f"site {doc['site']}, now {utc_label(now['now_s'])}",
        f"interval now {utc_label(now['interval_start_s'])}: {now['phase']}; next gate closure "
        f"{utc_label(now['gate_closure_s'])} (for {utc_label(now['next_interval_start_s'])}) "
        f"in {_duration(now['seconds_to_gate_closure'])}",
        "",
        "last results:",
    ]
    if not doc["last_results"]:
        lines.append("  none yet")
    for row in doc["last_results"]:
        lines.append("  " + result_line(row))
        if row.get("reason"):
            lines.append(f"      {row['reason']}")
    lines += ["", "devices:"]
    for d in doc["devices"]:
        at = "-" if d["boundary_s"] is None else utc_label(d["boundary_s"])
        power = "" if d["p_w"] is None else f" {d['p_w']} W"
        soc = "" if d["soc_percent"] is None else f" soc {d['soc_percent']:.1f}%"
        why = f" ({d['reason']})" if d["reason"] and d["quality"] != "OK" else ""
        lines.append(f"  {d['device']:<20} {d['quality']:<7} {at}{power}{soc}{why}")
    lines += ["", "pending settlements:"]
    if not doc["pending_settlements"]:
        lines.append("  none")
    for s in doc["pending_settlements"]:
        tx = s["tx_hash"] or "no transaction"
        err = f": {s['error']}" if s["error"] else ""
        lines.append(f"  {utc_label(s['interval_start_s'])} {s['state']} {tx}{err}")
    lines += ["", "alerts:"]
    alerts = [
        Alert(AlertKind(a["kind"]), a["severity"], a["subject"], a["message"], a.get("since_s"))
        for a in doc["alerts"]
    ]
    lines += ["  " + line for line in format_alerts(alerts)]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace, *, clock: Clock = system_clock) -> int:
    """``peergrid status``: print the site's state (module docstring).

    Parameters
    ----------
    args
        The parsed arguments (``--site``, ``--json``).
    clock : callable
        "Now".

    Returns
    -------
    int
        0; bad input (no database, a bad site file) raises for ``peergrid``'s exit code 2.

    Raises
    ------
    ConfigError
        The site file cannot be read.
    MissingDatabase
        The database does not exist or holds no PeerGrid tables.
    """
    site = read_site(args.site)
    store = _open(site)
    try:
        doc = status_doc(store, site, clock())
    finally:
        store.close()
    print(json.dumps(doc, indent=2) if args.json else format_status(doc))  # noqa: T201
    return EXIT_OK


# ------------------------------------------------------------------------------ history


def _shown(key: str, value: Any) -> str:  # noqa: ANN401 - a row's value
    if value is None:
        return "-"
    if key == "tx_hash":
        return str(value)[:_TX_SHOWN] + ".."
    if isinstance(value, float):
        return f"{value:.4f}" if key.endswith("_pu") else f"{value:.1f}"
    return str(value)


def format_history(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]] = TABLE_COLUMNS
) -> str:
    """An aligned table of history rows: the headers (with units), then one line per row.

    Parameters
    ----------
    rows : sequence of mapping
        Rows of :func:`controller.history.history_rows`.
    columns : sequence of (str, str)
        ``(key, header)`` of the columns, in order.

    Returns
    -------
    str
        Text columns left-aligned, numbers right-aligned; ``-`` for no value;
        ``no intervals in this period`` under the header when there are no rows.
    """
    cells = [[_shown(key, row.get(key)) for key, _ in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(key), int | float) or row.get(key) is None for row in rows)
        and key not in {"interval_start", "status", "settlement_state", "tx_hash"}
        for key, _ in columns
    ]
    widths = [
        max([len(header)] + [len(c[i]) for c in cells]) for i, (_, header) in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line([header for _, header in columns])]
    out.append("-" * len(out[0]))
    out += [line(c) for c in cells]
    if not rows:
        out.append("no intervals in this period")
    return "\n".join(out)


def cmd_history(args: argparse.Namespace) -> int:
    """``peergrid history``: print the intervals of ``[--from, --to)`` as a table or CSV.

    Parameters
    ----------
    args
        The parsed arguments (``--site``, ``--from``, ``--to``, ``--csv``).

    Returns
    -------
    int
        0; bad input raises for ``peergrid``'s exit code 2.

    Raises
    ------
    ConfigError
        The site file cannot be read, or ``--to`` is not after ``--from``.
    MissingDatabase
        The database does not exist or holds no PeerGrid tables.
    """
    from controller.history import history_rows, to_csv  # noqa: PLC0415

    start, end = args.start, args.end
    if end <= start:
        msg = f"--to ({utc_label(end)}) must be after --from ({utc_label(start)})"
        raise ConfigError(msg)
    site = read_site(args.site)
    store = _open(site)
    try:
        rows = history_rows(store, int(start.timestamp()), int(end.timestamp()))
    finally:
        store.close()
    if args.csv:
        print(to_csv(rows), end="")  # noqa: T201
    else:
        print(format_history(rows))  # noqa: T201
    return EXIT_OK


__all__ = [
    "LAST_RESULTS",
    "TABLE_COLUMNS",
    "cmd_history",
    "cmd_status",
    "device_status",
    "format_history",
    "format_status",
    "pending_settlements",
    "register",
    "result_line",
    "status_doc",
    "system_clock",
]
