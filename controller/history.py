"""The history read model: what each interval did, and what it meant for one participant.

One place defines the per-interval figures every view shows (``peergrid history``, the
``peergrid demo`` table, the dashboard's charts and CSV downloads) from the stored data only:
the ``intervals`` table (status, reason, order count and the clearing result JSON with its
book and AC check), the ``settlements`` table (state, transaction, the batch with its tariffs
and per-participant lines) and the ``ticks`` table (boundaries that never ran).

Units (:mod:`market.units`): energy [Wh], prices and tariffs [token base units per kWh],
money [token base units], voltages [p.u.], loading [%], times [Unix s] (an interval is named
by its start). Every value is an ``int`` except the voltages and the loading (``float``,
rounded to 4 and 1 decimals); a figure the stored data does not give is ``None``.

Definitions (one row of :func:`history_rows`):

* ``bought_wh`` / ``sold_wh``: energy accepted of the local market's bids / offers (the
  participants' purchases and sales, whoever the counterparty);
* ``traded_wh``: energy of the trades between participants (trades with the upstream
  ``GRID`` left out);
* ``grid_import_wh`` / ``grid_export_wh``: the market's net exchange with the upstream grid;
* ``losses_wh``: the market's incremental losses, ``sold + grid import - bought - grid
  export`` (the clearing balances both sides to the Wh, :func:`market.clearing.extract.
  balanced_quantities`); ``None`` without a result;
* ``price_min/max/mean_per_kwh``: over the buses with a nodal price (the mean rounded half to
  even); ``import_tariff_per_kwh`` / ``export_tariff_per_kwh``: the tariffs the settlement
  used (its batch), else the clearing's parameters;
* ``curtailed_wh``: PV surplus offered (``sell_surplus`` standing orders) but not accepted;
* ``vm_min_pu``, ``vm_max_pu``, ``max_loading_pct`` (lines and transformers),
  ``ac_violations`` (count), ``ac_converged``: the AC check of the clearing;
* ``welfare_units``: the clearing's welfare; ``settlement_state`` (``None``, ``intent``,
  ``settled``, ``failed``) and ``tx_hash`` of the settlement.

A boundary the controller recorded as missed, failed or crashed without an interval row
appears as a row with that ``status`` and ``None`` figures.

Reads are a few queries per call whatever the period: the intervals with their settlement,
the parts of the result JSON the figures need (extracted by the database: one
``json_extract`` per row on SQLite) for intervals not read before, and the unrun ticks. A
stored result never changes (:meth:`~controller.store.Store.save_result` writes it once), so
its figures are cached in the process (by database, interval, status, book hash and the
row's creation time): the dashboard asking for the same month again reads only the small
columns.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, func, literal, select

from controller.store import Store, intervals, settlements, ticks
from market.domain import GRID, Interval, utc_label
from market.units import TOKEN_DECIMALS, round_half_even

HISTORY_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("interval_start", "interval start (UTC)"),
    ("interval_start_s", "interval start [Unix s]"),
    ("status", "status"),
    ("n_orders", "orders"),
    ("bought_wh", "bought [Wh]"),
    ("sold_wh", "sold [Wh]"),
    ("traded_wh", "traded locally [Wh]"),
    ("price_min_per_kwh", "price min [units/kWh]"),
    ("price_mean_per_kwh", "price mean [units/kWh]"),
    ("price_max_per_kwh", "price max [units/kWh]"),
    ("import_tariff_per_kwh", "import tariff [units/kWh]"),
    ("export_tariff_per_kwh", "export tariff [units/kWh]"),
    ("grid_import_wh", "grid import [Wh]"),
    ("grid_export_wh", "grid export [Wh]"),
    ("losses_wh", "losses [Wh]"),
    ("vm_min_pu", "vm min [p.u.]"),
    ("vm_max_pu", "vm max [p.u.]"),
    ("max_loading_pct", "max loading [%]"),
    ("ac_violations", "AC violations"),
    ("curtailed_wh", "curtailed [Wh]"),
    ("welfare_units", "welfare [units]"),
    ("settlement_state", "settlement"),
    ("tx_hash", "settlement tx"),
    ("reason", "reason"),
)
"""``(key, header with unit)`` of :func:`history_rows`' columns, in table and CSV order."""

PARTICIPANT_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("interval_start", "interval start (UTC)"),
    ("interval_start_s", "interval start [Unix s]"),
    ("bought_wh", "bought [Wh]"),
    ("sold_wh", "sold [Wh]"),
    ("paid_units", "paid [units]"),
    ("received_units", "received [units]"),
    ("grid_cost_units", "at grid tariffs [units]"),
    ("savings_units", "savings [units]"),
    ("imbalance_units", "imbalance [units]"),
    ("net_units", "net [units]"),
    ("reward_wh", "rewarded [Wh]"),
    ("unverified", "not verified (why)"),
    ("settlement_state", "settlement"),
)
"""``(key, header with unit)`` of :func:`participant_history`'s columns."""

UNRUN_OUTCOMES: Final = frozenset({"missed", "failed", "crashed"})
"""Tick outcomes shown as an interval row when the interval has none."""

_SURPLUS_TAG: Final = ":sell_surplus:"  # the order id of a sell_surplus standing order


_RESULT_PATHS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("prices", ("prices",)),
    ("grid", ("grid",)),
    ("orders", ("orders",)),
    ("trades", ("trades",)),
    ("book_orders", ("book", "orders")),
    ("vm_min", ("ac_check", "min_vm_pu")),
    ("vm_max", ("ac_check", "max_vm_pu")),
    ("line_pct", ("ac_check", "max_line_loading_percent")),
    ("trafo_pct", ("ac_check", "max_trafo_loading_percent")),
    ("violations", ("ac_check", "violations")),
    ("converged", ("ac_check", "converged")),
    ("welfare", ("welfare",)),
    ("param_import", ("inputs", "params", "import_price")),
    ("param_export", ("inputs", "params", "export_price")),
)
"""The parts of the stored result JSON the figures need: ``(name, path)``."""

_BATCH_PATHS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("batch_import", ("import_price",)),
    ("batch_export", ("export_price",)),
)
_LINE_PATHS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("lines", ("lines",)),
    ("rewards", ("rewards",)),
)

_CACHE_MAX: Final = 10_000
"""Intervals whose figures (and batches) the cache keeps: about 100 days of 15-minute
intervals, a few kB each; when full it starts again."""

_IN_LIST_MAX: Final = 500
"""Up to this many uncached intervals are read by id, more by their period."""

_CacheKey = tuple[str, int, str, str]
"""``(database URL, interval id, status, book hash @ row creation time)``: a stored result
never changes, and a database made again at the same URL has rows created at other times."""


@dataclass(frozen=True, slots=True)
class _Figures:
    """What an interval's stored result says: its row figures and each participant's part."""

    row: dict[str, Any]
    tariffs: tuple[int | None, int | None]  # import, export in the clearing's parameters
    participants: dict[str, tuple[int, int, int, int]]  # bought, sold [Wh], paid, received


_FIGURES: dict[_CacheKey, _Figures] = {}
_FIGURES_LOCK = threading.Lock()


def _extract(
    column: Any,  # noqa: ANN401 - a JSON column
    paths: Sequence[tuple[str, tuple[str, ...]]],
    name: str,
    *,
    sqlite: bool,
) -> list[Any]:
    """Columns selecting ``paths`` of a JSON ``column``, extracted by the database.

    SQLite's ``json_extract`` with several paths parses the document once and returns a
    JSON array of the values (one column, ``name``); other databases get one indexed
    expression per path (PostgreSQL's ``->`` on the stored JSON).
    """
    if sqlite:
        text = ["$." + ".".join(path) for _, path in paths]
        return [func.json_extract(column, *[literal(t) for t in text]).label(name)]
    return [column[path].label(label) for label, path in paths]


def _parts(
    row: Mapping[Any, Any], paths: Sequence[tuple[str, tuple[str, ...]]], name: str
) -> dict[str, Any]:
    """The values of :func:`_extract`'s columns by name (``None`` for a missing part)."""
    if name in row:
        raw = row[name]
        values = [None] * len(paths) if raw is None else json.loads(raw)
        return {label: v for (label, _), v in zip(paths, values, strict=True)}
    return {label: row[label] for label, _ in paths}


def _sqlite(store: Store) -> bool:
    return bool(store.engine.dialect.name == "sqlite")


def _interval_records(
    store: Store, conn: Connection, start_s: int, end_s: int
) -> list[dict[str, Any]]:
    """The intervals of ``[start_s, end_s)`` with their settlement (first query), flat."""
    batch_paths = _BATCH_PATHS
    query = (
        select(
            intervals.c.interval_id,
            intervals.c.status,
            intervals.c.reason,
            intervals.c.n_orders,
            intervals.c.book_hash,
            intervals.c.created_at,
            (intervals.c.result.is_not(None)).label("has_result"),
            settlements.c.state.label("settlement_state"),
            settlements.c.tx_hash,
            settlements.c.batch_id,
            *_extract(settlements.c.batch, batch_paths, "batch_parts", sqlite=_sqlite(store)),
        )
        .select_from(
            intervals.outerjoin(settlements, settlements.c.interval_id == intervals.c.interval_id)
        )
        .where(intervals.c.interval_id >= start_s)
        .where(intervals.c.interval_id < end_s)
        .order_by(intervals.c.interval_id)
    )
    out = []
    for r in conn.execute(query).mappings():
        rec = dict(r)
        rec.update(_parts(r, batch_paths, "batch_parts"))
        out.append(rec)
    return out


def _key(store: Store, rec: Mapping[str, Any]) -> _CacheKey:
    return (
        store.url,
        int(rec["interval_id"]),
        str(rec["status"]),
        f"{rec['book_hash'] or ''}@{rec['created_at']}",  # a database made again: a new row
    )


def _figures_of(
    store: Store, conn: Connection, records: Sequence[Mapping[str, Any]]
) -> dict[int, _Figures]:
    """The figures of every record with a result: cached, or read (second query) and cached.

    Only the parts of the result JSON in :data:`_RESULT_PATHS` are read, and only for the
    intervals not already cached (a stored result never changes: :meth:`Store.save_result`
    writes it once, keyed here by database, interval, status, book hash and the row's
    creation time).
    """
    found: dict[int, _Figures] = {}
    missing: list[Mapping[str, Any]] = []
    with _FIGURES_LOCK:
        for rec in records:
            if rec["has_result"]:
                cached = _FIGURES.get(_key(store, rec))
                if cached is None:
                    missing.append(rec)
                else:
                    found[int(rec["interval_id"])] = cached
    if not missing:
        return found
    wanted = {int(rec["interval_id"]): rec for rec in missing}
    lo, hi = min(wanted), max(wanted) + 1
    query = (
        select(
            intervals.c.interval_id,
            *_extract(intervals.c.result, _RESULT_PATHS, "result_parts", sqlite=_sqlite(store)),
        )
        .where(intervals.c.interval_id >= lo)
        .where(intervals.c.interval_id < hi)
        .where(intervals.c.result.is_not(None))
    )
    if len(wanted) <= _IN_LIST_MAX:  # a few new intervals among cached ones: name them
        query = query.where(intervals.c.interval_id.in_(sorted(wanted)))
    new: dict[_CacheKey, _Figures] = {}
    for r in conn.execute(query).mappings():
        interval_id = int(r["interval_id"])
        wanted_rec = wanted.get(interval_id)
        if wanted_rec is None:
            continue
        figures = _compute(_parts(r, _RESULT_PATHS, "result_parts"))
        found[interval_id] = figures
        new[_key(store, wanted_rec)] = figures
    with _FIGURES_LOCK:
        if len(_FIGURES) + len(new) > _CACHE_MAX:
            _FIGURES.clear()
        _FIGURES.update(new)
    return found


@dataclass(frozen=True, slots=True)
class _Batch:
    """What a settlement batch says per participant: its line's money, its reward."""

    lines: dict[str, tuple[int, int, str]]  # imbalance, net amount [token units], unverified
    rewards: dict[str, int]  # verified local energy rewarded [Wh]


_BatchKey = tuple[str, int, str, str]
"""``(database URL, interval id, batch id, state)``: a batch never changes (a reopened
settlement changes state)."""

_BATCHES: dict[_BatchKey, _Batch] = {}


def _batch_key(store: Store, rec: Mapping[str, Any]) -> _BatchKey:
    return (
        store.url,
        int(rec["interval_id"]),
        str(rec["batch_id"]),
        str(rec["settlement_state"]),
    )


def _batches_of(
    store: Store, conn: Connection, records: Sequence[Mapping[str, Any]]
) -> dict[int, _Batch]:
    """The batch lines of every settled (or intended) record: cached, or read and cached."""
    found: dict[int, _Batch] = {}
    missing: dict[int, Mapping[str, Any]] = {}
    with _FIGURES_LOCK:
        for rec in records:
            if rec["settlement_state"] is not None:
                cached = _BATCHES.get(_batch_key(store, rec))
                if cached is None:
                    missing[int(rec["interval_id"])] = rec
                else:
                    found[int(rec["interval_id"])] = cached
    if not missing:
        return found
    query = (
        select(
            settlements.c.interval_id,
            *_extract(settlements.c.batch, _LINE_PATHS, "line_parts", sqlite=_sqlite(store)),
        )
        .where(settlements.c.interval_id >= min(missing))
        .where(settlements.c.interval_id <= max(missing))
    )
    if len(missing) <= _IN_LIST_MAX:
        query = query.where(settlements.c.interval_id.in_(sorted(missing)))
    new: dict[_BatchKey, _Batch] = {}
    for r in conn.execute(query).mappings():
        asked = missing.get(int(r["interval_id"]))
        if asked is None:
            continue
        parts = _parts(r, _LINE_PATHS, "line_parts")
        batch = _Batch(
            lines={
                str(ln["participant"]): (
                    int(ln["imbalance_amount"]),
                    int(ln["net_amount"]),
                    str(ln.get("unverified", "")),
                )
                for ln in parts["lines"] or []
            },
            rewards={str(p): int(wh) for p, wh in parts["rewards"] or []},
        )
        found[int(r["interval_id"])] = batch
        new[_batch_key(store, asked)] = batch
    with _FIGURES_LOCK:
        if len(_BATCHES) + len(new) > _CACHE_MAX:
            _BATCHES.clear()
        _BATCHES.update(new)
    return found


def clear_cache() -> None:
    """Forget every cached figure and batch (tests; nothing else needs it)."""
    with _FIGURES_LOCK:
        _FIGURES.clear()
        _BATCHES.clear()


def _int(value: Any) -> int | None:  # noqa: ANN401 - a JSON scalar
    return None if value is None else int(value)


def _round(value: Any, digits: int) -> float | None:  # noqa: ANN401 - a JSON scalar
    return None if value is None else round(float(value), digits)


_EMPTY_ROW: Final[dict[str, Any]] = dict.fromkeys([key for key, _ in HISTORY_COLUMNS])


def _empty_row(interval_id: int, status: str, reason: str) -> dict[str, Any]:
    row = _EMPTY_ROW.copy()
    row.update(
        interval_start=utc_label(interval_id),
        interval_start_s=interval_id,
        status=status,
        reason=reason,
        n_orders=0,
        ac_converged=None,
    )
    return row


def curtailed_wh(
    book_orders: Iterable[Mapping[str, Any]], orders: Iterable[Mapping[str, Any]]
) -> int:
    """PV surplus offered but not accepted [Wh] (the setpoints curtail it).

    Parameters
    ----------
    book_orders : iterable of mapping
        The interval's book (``order_id``, ``side``, ``energy_wh`` [Wh]).
    orders : iterable of mapping
        The result's orders (``order_id``, ``accepted_wh`` [Wh]).

    Returns
    -------
    int
        Offered minus accepted energy of the ``sell_surplus`` offers [Wh].
    """
    offered = {
        str(o["order_id"]): int(o["energy_wh"])
        for o in book_orders
        if o.get("side") == "sell" and _SURPLUS_TAG in str(o.get("order_id", ""))
    }
    if not offered:
        return 0
    accepted = sum(int(o.get("accepted_wh", 0)) for o in orders if o["order_id"] in offered)
    return sum(offered.values()) - accepted


def _compute(r: Mapping[str, Any]) -> _Figures:
    """The figures of one stored result (``r``: its :data:`_RESULT_PATHS` parts)."""
    bought = sold = 0
    per: dict[str, list[int]] = {}
    for o in r["orders"] or []:
        wh, amount = int(o.get("accepted_wh", 0)), int(o.get("amount", 0))
        mine = per.setdefault(str(o.get("participant", "")), [0, 0, 0, 0])
        if o.get("side") == "buy":
            bought += wh
            mine[0] += wh
            mine[2] += amount
        else:
            sold += wh
            mine[1] += wh
            mine[3] += amount
    grid = r["grid"] or {}
    g_in, g_out = int(grid.get("import_wh", 0)), int(grid.get("export_wh", 0))
    prices = [int(p) for p in (r["prices"] or {}).values()]
    line, trafo = r["line_pct"], r["trafo_pct"]
    loading = None if line is None and trafo is None else max(float(line or 0), float(trafo or 0))
    violations, converged = r["violations"], r["converged"]
    row = {
        "bought_wh": bought,
        "sold_wh": sold,
        "traded_wh": sum(
            int(t["energy_wh"]) for t in r["trades"] or [] if GRID not in {t["buyer"], t["seller"]}
        ),
        "price_min_per_kwh": min(prices) if prices else None,
        "price_max_per_kwh": max(prices) if prices else None,
        "price_mean_per_kwh": round_half_even(sum(prices) / len(prices)) if prices else None,
        "grid_import_wh": g_in,
        "grid_export_wh": g_out,
        "losses_wh": sold + g_in - bought - g_out,
        "vm_min_pu": _round(r["vm_min"], 4),
        "vm_max_pu": _round(r["vm_max"], 4),
        "max_loading_pct": _round(loading, 1),
        "ac_violations": None if violations is None else len(violations),
        "ac_converged": None if converged is None else bool(converged),
        "curtailed_wh": curtailed_wh(r["book_orders"] or [], r["orders"] or []),
        "welfare_units": _int(r["welfare"]),
    }
    return _Figures(
        row=row,
        tariffs=(_int(r["param_import"]), _int(r["param_export"])),
        participants={p: (a, b, c, d) for p, (a, b, c, d) in per.items()},
    )


def _at(doc: Mapping[str, Any], path: Sequence[str]) -> Any:  # noqa: ANN401 - a JSON value
    value: Any = doc
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def result_figures(result: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of :func:`history_rows` from one result document, without the store.

    For what has a result in hand and no row yet (``peergrid run``'s tick line): the same
    definitions as the stored rows.

    Parameters
    ----------
    result : mapping
        A clearing result as stored (:func:`market.codec.result_to_dict`, with ``book`` if
        curtailment is wanted).

    Returns
    -------
    dict
        ``bought_wh``, ``sold_wh``, ``traded_wh``, ``price_min_per_kwh``,
        ``price_max_per_kwh``, ``price_mean_per_kwh``, ``grid_import_wh``,
        ``grid_export_wh``, ``losses_wh``, ``vm_min_pu``, ``vm_max_pu``, ``max_loading_pct``,
        ``ac_violations``, ``ac_converged``, ``curtailed_wh`` and ``welfare_units`` (module
        docstring).
    """
    return dict(_compute({name: _at(result, path) for name, path in _RESULT_PATHS}).row)


def _tariffs(rec: Mapping[str, Any], figures: _Figures | None) -> tuple[int | None, int | None]:
    """The import and export tariffs in force: the settlement's, else the clearing's."""
    imp, exp = figures.tariffs if figures is not None else (None, None)
    if rec["batch_import"] is not None:
        imp = int(rec["batch_import"])
    if rec["batch_export"] is not None:
        exp = int(rec["batch_export"])
    return imp, exp


def history_rows(store: Store, start_s: int, end_s: int) -> list[dict[str, Any]]:
    """One row per interval starting in ``[start_s, end_s)``, oldest first.

    Parameters
    ----------
    store : Store
        The site's store (only read).
    start_s, end_s : int
        The period [Unix s], half-open, by interval start.

    Returns
    -------
    list of dict
        The keys of :data:`HISTORY_COLUMNS` (module docstring for each figure and its unit)
        and ``ac_converged``; intervals without a result (``claimed``: a crash while
        clearing) and boundaries that never ran (``missed``, ``failed``, ``crashed``) have
        ``None`` figures.
    """
    if start_s >= end_s:
        return []
    with store.engine.connect() as conn:
        records = _interval_records(store, conn, start_s, end_s)
        figures = _figures_of(store, conn, records)
        unrun = conn.execute(
            select(ticks.c.boundary, ticks.c.outcome, ticks.c.detail)
            .where(ticks.c.boundary >= start_s)
            .where(ticks.c.boundary < end_s)
            .where(ticks.c.outcome.in_(sorted(UNRUN_OUTCOMES)))
        ).all()
    rows: dict[int, dict[str, Any]] = {}
    for rec in records:
        interval_id = int(rec["interval_id"])
        row = _empty_row(interval_id, str(rec["status"]), str(rec["reason"] or ""))
        row["n_orders"] = int(rec["n_orders"] or 0)
        fig = figures.get(interval_id)
        if fig is not None:
            row.update(fig.row)
        row["import_tariff_per_kwh"], row["export_tariff_per_kwh"] = _tariffs(rec, fig)
        row["settlement_state"] = rec["settlement_state"]
        row["tx_hash"] = rec["tx_hash"]
        rows[interval_id] = row
    for boundary, outcome, detail in unrun:
        if int(boundary) not in rows:
            rows[int(boundary)] = _empty_row(int(boundary), str(outcome), str(detail or ""))
    return [rows[k] for k in sorted(rows)]


def participant_line(
    batch_lines: Iterable[Mapping[str, Any]], participant: str
) -> dict[str, Any] | None:
    """A participant's line of a settlement batch (``cleared_buy_wh``, ``net_amount``, ...).

    The same lines the API's earnings read (``batch["lines"]``, one per participant).

    Parameters
    ----------
    batch_lines : iterable of mapping
        The batch's ``lines``.
    participant : str
        The participant.

    Returns
    -------
    dict or None
        The line, or ``None`` when the batch has none for the participant.
    """
    for line in batch_lines:
        if line.get("participant") == participant:
            return dict(line)
    return None


def participant_history(
    store: Store, participant: str, start_s: int, end_s: int
) -> list[dict[str, Any]]:
    """What each interval starting in ``[start_s, end_s)`` meant for ``participant``.

    Energy and money of the local market come from the clearing result (the participant's
    accepted orders and their amounts); the imbalance and the net amount from its line of
    the settlement batch (the lines the API's earnings report), when settled or intended.

    Parameters
    ----------
    store : Store
        The site's store (only read).
    participant : str
        The participant's id.
    start_s, end_s : int
        The period [Unix s], half-open, by interval start.

    Returns
    -------
    list of dict
        Per interval with a result where the participant had an accepted order or a
        settlement line, oldest first: ``interval_start``, ``interval_start_s``,
        ``bought_wh``, ``sold_wh`` [Wh], ``paid_units``, ``received_units`` (amounts of
        its accepted bids and offers), ``grid_cost_units`` (the same energy at the grid
        tariffs: bought at the import tariff minus sold at the export tariff, rounded half
        to even), ``savings_units`` (``grid_cost - (paid - received)``), ``imbalance_units``
        and ``net_units`` (its settlement line; ``None`` before settlement), ``reward_wh``
        (verified local energy rewarded; ``None`` before settlement), ``unverified`` (why
        its energy is not verified by signed readings, ``""`` when it is: it earns no reward
        then; ``None`` before settlement) and ``settlement_state`` [token base units].
    """
    if start_s >= end_s:
        return []
    with store.engine.connect() as conn:
        records = _interval_records(store, conn, start_s, end_s)
        figures = _figures_of(store, conn, records)
        batches = _batches_of(store, conn, records)
    out: list[dict[str, Any]] = []
    for rec in records:
        interval_id = int(rec["interval_id"])
        fig = figures.get(interval_id)
        if fig is None:
            continue
        mine = fig.participants.get(participant)
        batch = batches.get(interval_id)
        line = None if batch is None else batch.lines.get(participant)
        if mine is None and line is None:
            continue
        bought, sold, paid, received = mine or (0, 0, 0, 0)
        imp, exp = _tariffs(rec, fig)
        grid_cost = (
            None
            if imp is None or exp is None
            else round_half_even((bought * imp - sold * exp) / 1000)
        )
        out.append(
            {
                "interval_start": utc_label(interval_id),
                "interval_start_s": interval_id,
                "bought_wh": bought,
                "sold_wh": sold,
                "paid_units": paid,
                "received_units": received,
                "grid_cost_units": grid_cost,
                "savings_units": None if grid_cost is None else grid_cost - (paid - received),
                "imbalance_units": None if line is None else line[0],
                "net_units": None if line is None else line[1],
                "reward_wh": None if batch is None else batch.rewards.get(participant, 0),
                "unverified": None if line is None else line[2],
                "settlement_state": rec["settlement_state"],
            }
        )
    return out


def price_text(units: int | None) -> str:
    """A price for people: token base units per kWh as tokens per kWh, 3 decimals.

    Parameters
    ----------
    units : int or None
        [token base units/kWh].

    Returns
    -------
    str
        ``"0.300"`` for 300,000 units (6-decimal token); ``"-"`` for ``None``.
    """
    if units is None:
        return "-"
    return f"{units / 10**TOKEN_DECIMALS:.3f}"


def _cell(value: Any) -> str:  # noqa: ANN401 - a row's value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_csv(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]] = HISTORY_COLUMNS
) -> str:
    """Rows as CSV: a header line of the columns' headers (with units), then one per row.

    Parameters
    ----------
    rows : sequence of mapping
        Rows of :func:`history_rows` or :func:`participant_history`.
    columns : sequence of (str, str)
        ``(key, header)`` of the columns, in order.

    Returns
    -------
    str
        RFC 4180 CSV (CR LF line ends); ``None`` is an empty cell, numbers are written
        as they are (ints in their named units).
    """
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([header for _, header in columns])
    for row in rows:
        writer.writerow([_cell(row.get(key)) for key, _ in columns])
    return buf.getvalue()


PHASES: Final = ("collecting orders", "gate closed", "cleared", "settled")
"""The phases of the interval now, in order."""


def interval_phase(
    store: Store, *, interval_s: int, gate_closure_s: int, now: datetime
) -> dict[str, Any]:
    """The interval delivering ``now``, its phase, and the next gate closure.

    The phase of the interval now: ``settled`` when its settlement is, ``cleared`` when it
    has a row (it was cleared, perhaps failing), ``gate closed`` when its gate closure has
    passed, else ``collecting orders``.

    Parameters
    ----------
    store : Store
        The site's store (only read).
    interval_s, gate_closure_s : int
        The site's interval length and gate closure lead [s].
    now : datetime
        The time (UTC).

    Returns
    -------
    dict
        ``now_s``, ``interval_start_s`` (the interval now), ``phase`` (one of
        :data:`PHASES`), ``next_interval_start_s`` (the next interval whose gate is open),
        ``gate_closure_s`` [Unix s] and ``seconds_to_gate_closure`` [s].
    """
    lead = timedelta(seconds=gate_closure_s)
    current = Interval.containing(now, interval_s)
    upcoming = current.next()
    while upcoming.start - lead <= now:
        upcoming = upcoming.next()
    gate = upcoming.start - lead
    with store.engine.connect() as conn:
        found = conn.execute(
            select(intervals.c.status, settlements.c.state)
            .select_from(
                intervals.outerjoin(
                    settlements, settlements.c.interval_id == intervals.c.interval_id
                )
            )
            .where(intervals.c.interval_id == current.interval_id)
        ).first()
    if found is not None and found[1] == "settled":
        phase = PHASES[3]
    elif found is not None and found[0] != "claimed":
        phase = PHASES[2]
    elif found is not None or (gate_closure_s > 0 and current.start - lead <= now):
        phase = PHASES[1]
    else:
        phase = PHASES[0]
    return {
        "now_s": int(now.timestamp()),
        "interval_start_s": current.interval_id,
        "phase": phase,
        "next_interval_start_s": upcoming.interval_id,
        "gate_closure_s": int(gate.timestamp()),
        "seconds_to_gate_closure": int((gate - now).total_seconds()),
    }


__all__ = [
    "HISTORY_COLUMNS",
    "PARTICIPANT_COLUMNS",
    "PHASES",
    "clear_cache",
    "curtailed_wh",
    "history_rows",
    "interval_phase",
    "participant_history",
    "participant_line",
    "price_text",
    "result_figures",
    "to_csv",
]
