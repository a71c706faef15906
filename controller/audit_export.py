"""Exports of the audit records for a utility: tables (CSV or Parquet) and monthly statements.

:func:`export_tables` turns the store's intervals, settlements, readings and audit records for
the intervals starting in ``[start, end)`` into ten tables; :func:`write_tables` writes them
(``<table>.csv`` or ``<table>.parquet``) and :func:`read_table` reads one back with the
documented types. :func:`monthly_statements` sums one month per participant and, given read
access to the chain, reconciles each participant's settled amounts and rewarded energy with
the settlement contract's entries.

pandas (and pyarrow, for Parquet) are imported inside the functions: importing this module
costs the controller's start-up nothing.

Schema
======

Column names carry their unit; the types are pinned in :data:`COLUMNS` (``time``: UTC
timestamp, written to CSV as ``YYYY-MM-DDTHH:MM:SSZ``; ``int``: nullable 64-bit integer, empty
in CSV when missing; ``float``, written in its shortest exact form; ``str``, never missing, any
text but NUL; ``bool``, nullable, ``True``/``False``). CSV files follow RFC 4180 (UTF-8, CRLF
rows, a header row); a CSV and a Parquet file of the same table read back
(:func:`read_table`) to identical frames. Units:

* ``*_wh`` [Wh], ``*_w`` [W], ``vm_pu`` [p.u.], ``*_pct`` [%];
* ``*_units`` [token base units, 1 token = 10**6 units], signed where named ``amount``:
  positive = credit to the account, negative = debit;
* ``*price_per_kwh`` [token base units per kWh];
* ``interval_start`` is the interval's start (UTC); ``interval_id`` the same in Unix seconds.

Every table starts with ``interval_start`` and ``interval_id``, and its rows are sorted by the
columns that identify them.

``intervals``
    One row per cleared interval: ``length_s``, ``status``, ``reason``, ``mechanism``,
    ``n_orders``, ``iterations``, ``welfare_units``, ``community_rent_units``,
    ``cleared_buy_wh``/``cleared_sell_wh`` (participants' accepted orders),
    ``grid_import_wh``/``grid_export_wh``, the AC summary (``ac_converged``,
    ``min_vm_pu``, ``max_vm_pu``, ``max_line_loading_pct``, ``max_trafo_loading_pct``,
    ``ac_violations``), the tariffs (``import_price_per_kwh``, ``export_price_per_kwh``),
    ``book_hash``, ``result_hash``, ``record_hash``, ``grid_hash``, ``params_json`` and
    ``versions_json`` (canonical JSON, ``""`` when the record has none), ``settlement_state``
    (``intent``, ``settled``, ``failed``, or ``""``), ``batch_id``, ``tx_hash``,
    ``block_number``.
``orders``
    One row per order of the book: ``order_id``, ``participant``, ``bus``, ``side``,
    ``energy_wh`` and ``limit_price_per_kwh`` (as bid), ``accepted_wh``, ``price_per_kwh``
    (the price it cleared at, missing when it was not in the result), ``amount_units`` (what
    the order pays or receives, unsigned), ``signature`` (``""`` when unsigned).
``trades``
    One row per trade: ``trade_id``, ``buyer``, ``seller`` (either may be GRID or COMMUNITY),
    ``buyer_order``, ``seller_order``, ``buyer_bus``, ``seller_bus``, ``energy_wh``,
    ``buyer_price_per_kwh``, ``seller_price_per_kwh``, ``buyer_amount_units``,
    ``seller_amount_units`` (unsigned).
``prices``
    One row per bus and interval: ``bus``, ``price_per_kwh`` (the nodal price).
``grid_exchange``
    One row per interval: ``import_wh``/``export_wh`` (cleared with the upstream grid),
    ``net_import_wh``, ``imbalance_import_wh``/``imbalance_export_wh`` (participants' metered
    deviations settled with GRID at the tariffs), ``import_price_per_kwh``,
    ``export_price_per_kwh``, ``grid_amount_units`` (GRID's signed amount in the batch),
    ``slack_p_w`` (the AC check's slack power).
``readings``
    The readings table's device snapshots at the boundaries of the exported intervals:
    ``boundary`` (time) and ``boundary_id`` [Unix s] instead of the interval columns,
    ``device_id``, ``participant``, ``bus``, ``measured_at`` (time), ``p_w``,
    ``import_wh_total``, ``export_wh_total`` (counters), ``quality``, ``reason``,
    ``soc_pct``.
``settlements``
    One row per account and interval of a stored batch: ``account``, ``amount_units`` (the
    signed amount the batch moves, after debts: these sum to zero per interval and are what
    the chain records), the participant's line (``metered``, ``cleared_buy_wh``,
    ``cleared_sell_wh``, ``metered_import_wh``, ``metered_export_wh``, ``imbalance_wh``,
    ``trade_amount_units``, ``imbalance_amount_units``, ``net_amount_units``, ``reason``;
    missing for GRID and COMMUNITY), ``reward_wh`` (verified local energy rewarded),
    ``debt_before_units``/``debt_after_units`` (the carried balance, + = owes COMMUNITY;
    missing when the batch did not change it), ``state``, ``batch_id``, ``tx_hash``,
    ``block_number``.
``ac_buses``
    One row per bus of the recorded AC check: ``bus`` (pandapower index), ``name``,
    ``vm_pu``. Empty for records without per-bus values.
``ac_branches``
    One row per line or transformer: ``branch``, ``kind`` (``line``/``trafo``), ``name``,
    ``loading_pct``. Empty for records without per-branch values.
``curtailment``
    One row per PV setpoint held below the forecast: ``device_id``, ``participant``,
    ``kind``, ``limit_w`` (the export limit written), ``forecast_w`` (the forecast production
    it was held below), ``curtailed_wh`` (``(forecast_w - limit_w) x length_s / 3600`` rounded
    half to even), ``reason`` (which limit, how much). Records written before ``forecast_w``
    was stored (2026-12-04) give it from the reason's text ("curtailed to L W of P W
    forecast").

Monthly statement
=================

:func:`monthly_statements` gives one row per participant with a settlement line in the month
(columns :data:`STATEMENT_COLUMNS`): ``bought_local_wh``/``sold_local_wh`` (trades with other
participants, own battery included), ``bought_grid_wh``/``sold_grid_wh`` (trades with GRID
plus the metered imbalance bought or sold at the tariffs), the amounts paid and received for
each (``paid_local_units``, ``received_local_units``, ``paid_grid_units``,
``received_grid_units``, unsigned), ``net_amount_units`` (what its lines billed, signed),
``settled_amount_units`` (what its batches moved, signed), ``reward_wh``, ``debt_start_units``
and ``debt_end_units`` (carried balance before and after the month, + = owes COMMUNITY, from
the ``debts`` table), ``unmetered_intervals``, ``unsettled_intervals`` (batches not yet
settled), and the reconciliation with the chain: ``chain_checked``, ``chain_address``,
``chain_amount_units`` and ``chain_reward_wh`` (the sums of the contract's entries for the
address over the month's intervals), ``chain_difference_units`` and
``chain_difference_wh`` (chain minus statement; 0 when they agree).
By construction ``settled = net + debt_end - debt_start`` for each participant.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import func, select

from controller.errors import ConfigError
from controller.store import audit, debts, intervals, readings, settlements
from market.canonical import canonical_json
from market.units import round_half_even

if TYPE_CHECKING:
    import pandas as pd

    from controller.store import Store

GRID = "GRID"
COMMUNITY = "COMMUNITY"

COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "intervals": (
        ("interval_start", "time"),
        ("interval_id", "int"),
        ("length_s", "int"),
        ("status", "str"),
        ("reason", "str"),
        ("mechanism", "str"),
        ("n_orders", "int"),
        ("iterations", "int"),
        ("welfare_units", "int"),
        ("community_rent_units", "int"),
        ("cleared_buy_wh", "int"),
        ("cleared_sell_wh", "int"),
        ("grid_import_wh", "int"),
        ("grid_export_wh", "int"),
        ("ac_converged", "bool"),
        ("min_vm_pu", "float"),
        ("max_vm_pu", "float"),
        ("max_line_loading_pct", "float"),
        ("max_trafo_loading_pct", "float"),
        ("ac_violations", "int"),
        ("import_price_per_kwh", "int"),
        ("export_price_per_kwh", "int"),
        ("book_hash", "str"),
        ("result_hash", "str"),
        ("record_hash", "str"),
        ("grid_hash", "str"),
        ("params_json", "str"),
        ("versions_json", "str"),
        ("settlement_state", "str"),
        ("batch_id", "str"),
        ("tx_hash", "str"),
        ("block_number", "int"),
    ),
    "orders": (
        ("interval_start", "time"),
        ("interval_id", "int"),
        ("order_id", "str"),
        ("participant", "str"),
        ("bus", "str"),
        ("side", "str"),
        ("energy_wh", "int"),
        ("limit_price_per_kwh", "int"),
        ("accepted_wh", "int"),
        ("price_per_kwh", "int"),
        ("amount_units", "int"),
        ("signature", "str"),
    ),
    "trades": (
        ("interval_start", "time"),
        ("interval_id", "int"),
        ("trade_id", "str"),
        ("buyer", "str"),
        ("seller", "str"),
        ("buyer_order", "str"),
        ("seller_order", "str"),
        ("buyer_bus", "str"),
        ("seller_bus", "str"),
        ("energy_wh", "int"),
        ("buyer_price_per_kwh", "int"),
        ("seller_price_per_kwh", "int"),
        ("buyer_amount_units", "int"),
        ("seller_amount_units", "int"),
    ),
    "prices": (
        ("interval_start", "time"),
        ("interval_id", "int"),
        ("bus", "str"),
        ("price_per_kwh", "int"),
    ),
    "grid_exchange": (
        ("interval_start", "time"),
        ("interval_id", "int"),
        ("import_wh", "int"),
        ("export_wh", "int"),
        ("net_import_wh", "int"),
        ("imbalance_import_wh", "int"),
        ("imbalance_export_wh", "int"),
        ("import_price_per_kwh", "int"),
        ("export_price_per_kwh", "int"),
        ("grid_amount_units", "int"),
        ("slack_p_w", "int"),
    ),
    "readings": (
        ("boundary", "time"),
        ("boundary_id", "int"),
        ("device_id", "str"),
        ("participant", "str"),
        ("bus", "str"),
        ("measured_at", "time"),
        ("p_w", "int"),
        ("import_wh_total", "int"),
        ("export_wh_total", "int"),
        ("quality", "str"),
        ("reason", "str"),
        ("soc_pct", "float"),
    ),
    "settlements": (
        ("interval_start", "time"),
        ("interval_id", "int"),
        ("account", "str"),
        ("amount_units", "int"),
        ("metered", "bool"),
        ("cleared_buy_wh", "int"),
        ("cleared_sell_wh", "int"),
        ("metered_import_wh", "int"),
        ("metered_export_wh", "int"),
        ("imbalance_wh", "int"),
        ("trade_amount_units", "int"),
        ("imbalance_amount_units", "int"),
        ("net_amount_units", "int"),
        ("reason", "str"),
        ("reward_wh", "int"),
        ("debt_before_units", "int"),
        ("debt_after_units", "int"),
        ("state", "str"),
        ("batch_id", "str"),
        ("tx_hash", "str"),
        ("block_number", "int"),
    ),
    "ac_buses": (
        ("interval_start", "time"),
        ("interval_id", "int"),
        ("bus", "int"),
        ("name", "str"),
        ("vm_pu", "float"),
    ),
    "ac_branches": (
        ("interval_start", "time"),
        ("interval_id", "int"),
        ("branch", "str"),
        ("kind", "str"),
        ("name", "str"),
        ("loading_pct", "float"),
    ),
    "curtailment": (
        ("interval_start", "time"),
        ("interval_id", "int"),
        ("device_id", "str"),
        ("participant", "str"),
        ("kind", "str"),
        ("limit_w", "int"),
        ("forecast_w", "int"),
        ("curtailed_wh", "int"),
        ("reason", "str"),
    ),
}
"""Every export table's columns and their types, in order (a stable, documented contract)."""

TABLES: tuple[str, ...] = tuple(COLUMNS)
"""The export tables, in the order they are written."""

_KEYS: dict[str, tuple[str, ...]] = {
    "intervals": ("interval_id",),
    "orders": ("interval_id", "order_id"),
    "trades": ("interval_id", "trade_id"),
    "prices": ("interval_id", "bus"),
    "grid_exchange": ("interval_id",),
    "readings": ("boundary_id", "device_id"),
    "settlements": ("interval_id", "account"),
    "ac_buses": ("interval_id", "bus"),
    "ac_branches": ("interval_id", "branch"),
    "curtailment": ("interval_id", "device_id"),
}

STATEMENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("month", "str"),
    ("participant", "str"),
    ("intervals", "int"),
    ("bought_local_wh", "int"),
    ("sold_local_wh", "int"),
    ("bought_grid_wh", "int"),
    ("sold_grid_wh", "int"),
    ("paid_local_units", "int"),
    ("received_local_units", "int"),
    ("paid_grid_units", "int"),
    ("received_grid_units", "int"),
    ("net_amount_units", "int"),
    ("settled_amount_units", "int"),
    ("reward_wh", "int"),
    ("debt_start_units", "int"),
    ("debt_end_units", "int"),
    ("unmetered_intervals", "int"),
    ("unsettled_intervals", "int"),
    ("chain_checked", "bool"),
    ("chain_address", "str"),
    ("chain_amount_units", "int"),
    ("chain_reward_wh", "int"),
    ("chain_difference_units", "int"),
    ("chain_difference_wh", "int"),
)
"""The monthly statement's columns and types (see the module docstring)."""

FORMATS = ("csv", "parquet")


class ExportError(ConfigError):
    """A bad export request (dates, month, format) or an export file that does not match."""


class ChainEntries(Protocol):
    """Read access to the settlement contract's entries (:class:`adapters.chain.ChainClient`)."""

    def settled_entries(self, interval_id: int) -> tuple[tuple[str, int, int], ...]:
        """``(address, amount [token units], reward [Wh])`` settled for ``interval_id``."""
        ...


# -- helpers -----------------------------------------------------------------------------------
def _utc(moment: datetime, what: str) -> int:
    if moment.tzinfo is None:
        msg = f"{what} {moment.isoformat()} has no time zone: give it in UTC"
        raise ExportError(msg)
    return int(moment.timestamp())


def month_range(month: str) -> tuple[datetime, datetime]:
    """The first instant of ``month`` (``YYYY-MM``) and of the month after it (UTC).

    Parameters
    ----------
    month : str
        ``YYYY-MM``.

    Raises
    ------
    ExportError
        ``month`` is not ``YYYY-MM``.
    """
    try:
        first = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        msg = f"month {month!r} is not YYYY-MM (e.g. 2026-06)"
        raise ExportError(msg) from None
    following = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else (first.replace(month=first.month + 1))
    )
    return first, following


def _frame(
    name: str, rows: list[dict[str, Any]], columns: tuple[tuple[str, str], ...]
) -> pd.DataFrame:
    """A DataFrame with exactly ``columns``, typed, sorted by the table's key."""
    import pandas as pd  # noqa: PLC0415

    frame = pd.DataFrame(
        {c: pd.Series([row.get(c) for row in rows], dtype=object) for c, _ in columns}
    )
    frame = _typed(frame, columns)
    keys = _KEYS.get(name)
    if keys and len(frame):
        frame = frame.sort_values(list(keys), kind="stable").reset_index(drop=True)
    return frame


def _missing(value: object) -> bool:
    """``None``, pandas' NA or NaT, a float NaN, or an empty CSV cell."""
    import pandas as pd  # noqa: PLC0415

    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or value == ""
        or (isinstance(value, float) and math.isnan(value))
    )


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as dicts, missing cells as ``None``."""
    return [
        {str(k): None if _missing(v) else v for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def _true(value: object) -> bool:
    """A nullable boolean cell is true (missing is not)."""
    return not _missing(value) and bool(value)


def _typed(frame: pd.DataFrame, columns: tuple[tuple[str, str], ...]) -> pd.DataFrame:
    """``frame``'s ``columns`` converted to the export types (see the module docstring)."""
    import pandas as pd  # noqa: PLC0415

    out: dict[str, Any] = {}
    for column, kind in columns:
        values = list(frame[column])
        if kind == "time":
            out[column] = pd.to_datetime(
                pd.Series([None if _missing(v) else v for v in values], dtype=object),
                utc=True,
                format="ISO8601",
            ).astype("datetime64[ns, UTC]")
        elif kind == "int":
            out[column] = pd.array([None if _missing(v) else int(v) for v in values], "Int64")
        elif kind == "float":
            out[column] = pd.array(
                [math.nan if _missing(v) else float(v) for v in values], "float64"
            )
        elif kind == "bool":
            out[column] = pd.array(
                [None if _missing(v) else v in {True, "True", "true"} for v in values],
                "boolean",
            )
        else:
            out[column] = pd.array(["" if _missing(v) else str(v) for v in values], "string")
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))


def _iso(unix_s: int) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat()


def _canonical(value: object) -> str:
    """Canonical JSON text of a record's part (``""``: none)."""
    if value in (None, {}, []):
        return ""
    return canonical_json(value).decode("utf-8")


# -- reading the store ------------------------------------------------------------------------
def _rows(store: Store, lo: int, hi: int) -> tuple[list[Any], dict[int, Any], dict[int, Any]]:
    """Interval rows, audit rows and settlement rows for interval ids in ``[lo, hi)``."""
    with store.engine.connect() as conn:
        interval_rows = [
            dict(r)
            for r in conn.execute(
                select(intervals)
                .where(intervals.c.interval_id >= lo, intervals.c.interval_id < hi)
                .order_by(intervals.c.interval_id)
            ).mappings()
        ]
        records = {
            int(r["interval_id"]): dict(r)
            for r in conn.execute(
                select(audit).where(audit.c.interval_id >= lo, audit.c.interval_id < hi)
            ).mappings()
        }
        batches = {
            int(r["interval_id"]): dict(r)
            for r in conn.execute(
                select(settlements).where(
                    settlements.c.interval_id >= lo, settlements.c.interval_id < hi
                )
            ).mappings()
        }
    return interval_rows, records, batches


def export_tables(store: Store, start: datetime, end: datetime) -> dict[str, pd.DataFrame]:
    """Every export table for the intervals starting in ``[start, end)``.

    Parameters
    ----------
    store : Store
        The controller's database (only read).
    start, end : datetime
        The window (time-zone aware; compared in UTC).

    Returns
    -------
    dict of str to pandas.DataFrame
        :data:`TABLES` -> a frame with exactly the columns of :data:`COLUMNS` (empty tables
        keep their columns).

    Raises
    ------
    ExportError
        ``start`` or ``end`` has no time zone, or ``end`` is not after ``start``.
    """
    lo, hi = _utc(start, "--from"), _utc(end, "--to")
    if hi <= lo:
        msg = f"--to {end.isoformat()} is not after --from {start.isoformat()}"
        raise ExportError(msg)
    interval_rows, records, batches = _rows(store, lo, hi)
    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    boundaries: set[int] = set()
    for row in interval_rows:
        interval_id = int(row["interval_id"])
        boundaries |= {interval_id, interval_id + int(row["length_s"])}
        audit_row = records.get(interval_id)
        settlement_row = batches.get(interval_id)
        _add_interval(tables, row, audit_row, settlement_row)
    tables["readings"] = _readings(store, boundaries)
    return {name: _frame(name, rows, COLUMNS[name]) for name, rows in tables.items()}


def _add_interval(
    tables: dict[str, list[dict[str, Any]]],
    row: Mapping[str, Any],
    audit_row: Mapping[str, Any] | None,
    settlement_row: Mapping[str, Any] | None,
) -> None:
    interval_id = int(row["interval_id"])
    head = {"interval_start": _iso(interval_id), "interval_id": interval_id}
    result: Mapping[str, Any] = row["result"] or {}
    record: Mapping[str, Any] = (audit_row or {}).get("record") or {}
    inputs: Mapping[str, Any] = result.get("inputs") or {}
    batch: Mapping[str, Any] = (settlement_row or {}).get("batch") or record.get("settlement") or {}
    check: Mapping[str, Any] = record.get("ac_check") or result.get("ac_check") or {}
    params = record.get("params") or inputs.get("params") or {}
    tariffs = {
        "import_price_per_kwh": batch.get("import_price", params.get("import_price")),
        "export_price_per_kwh": batch.get("export_price", params.get("export_price")),
    }
    chain = {
        "tx_hash": (settlement_row or {}).get("tx_hash") or "",
        "block_number": (settlement_row or {}).get("block_number"),
    }
    orders = result.get("orders") or []
    grid = result.get("grid") or {}
    tables["intervals"].append(
        {
            **head,
            "length_s": row["length_s"],
            "status": row["status"],
            "reason": row["reason"],
            "mechanism": result.get("mechanism", ""),
            "n_orders": row["n_orders"],
            "iterations": result.get("iterations"),
            "welfare_units": result.get("welfare"),
            "community_rent_units": result.get("community_rent"),
            "cleared_buy_wh": sum(int(o["accepted_wh"]) for o in orders if o["side"] == "buy"),
            "cleared_sell_wh": sum(int(o["accepted_wh"]) for o in orders if o["side"] == "sell"),
            "grid_import_wh": grid.get("import_wh"),
            "grid_export_wh": grid.get("export_wh"),
            "ac_converged": check.get("converged"),
            "min_vm_pu": check.get("min_vm_pu"),
            "max_vm_pu": check.get("max_vm_pu"),
            "max_line_loading_pct": check.get("max_line_loading_percent"),
            "max_trafo_loading_pct": check.get("max_trafo_loading_percent"),
            "ac_violations": len(check.get("violations") or []) if check else None,
            **tariffs,
            "book_hash": row["book_hash"],
            "result_hash": record.get("result_hash", ""),
            "record_hash": (audit_row or {}).get("record_hash", ""),
            "grid_hash": record.get("grid_hash") or inputs.get("grid_hash") or "",
            "params_json": _canonical(params),
            "versions_json": _canonical(record.get("versions") or inputs.get("versions")),
            "settlement_state": (settlement_row or {}).get("state", ""),
            "batch_id": (settlement_row or {}).get("batch_id", ""),
            **chain,
        }
    )
    accepted = {str(o["order_id"]): o for o in orders}
    book = (result.get("book") or record.get("book") or {}).get("orders") or []
    for order in book:
        cleared = accepted.get(str(order["order_id"]), {})
        tables["orders"].append(
            {
                **head,
                "order_id": order["order_id"],
                "participant": order["participant"],
                "bus": order["bus"],
                "side": order["side"],
                "energy_wh": order["energy_wh"],
                "limit_price_per_kwh": order["limit_price"],
                "accepted_wh": cleared.get("accepted_wh", 0),
                "price_per_kwh": cleared.get("price"),
                "amount_units": cleared.get("amount", 0),
                "signature": order.get("signature", ""),
            }
        )
    for trade in result.get("trades") or []:
        tables["trades"].append(
            {
                **head,
                **{k: trade[k] for k in ("trade_id", "buyer", "seller", "energy_wh")},
                **{k: trade[k] for k in ("buyer_order", "seller_order", "buyer_bus", "seller_bus")},
                "buyer_price_per_kwh": trade["buyer_price"],
                "seller_price_per_kwh": trade["seller_price"],
                "buyer_amount_units": trade["buyer_amount"],
                "seller_amount_units": trade["seller_amount"],
            }
        )
    for bus, price in (result.get("prices") or {}).items():
        tables["prices"].append({**head, "bus": bus, "price_per_kwh": price})
    lines = {str(line["participant"]): line for line in batch.get("lines") or []}
    amounts = {str(a): int(v) for a, v in batch.get("amounts") or []}
    if result:
        imbalance = [int(line["imbalance_wh"]) for line in lines.values()]
        tables["grid_exchange"].append(
            {
                **head,
                "import_wh": grid.get("import_wh"),
                "export_wh": grid.get("export_wh"),
                "net_import_wh": int(grid.get("import_wh") or 0) - int(grid.get("export_wh") or 0),
                "imbalance_import_wh": sum(w for w in imbalance if w > 0),
                "imbalance_export_wh": -sum(w for w in imbalance if w < 0),
                **tariffs,
                "grid_amount_units": amounts.get(GRID) if batch else None,
                "slack_p_w": check.get("slack_p_w"),
            }
        )
    rewards = {str(a): int(wh) for a, wh in batch.get("rewards") or []}
    debt = {str(a): (int(b), int(c)) for a, b, c in batch.get("debts") or []}
    for account in sorted(set(lines) | set(amounts) | set(rewards) | set(debt)):
        line = lines.get(account, {})
        before, after = debt.get(account, (None, None))
        tables["settlements"].append(
            {
                **head,
                "account": account,
                "amount_units": amounts.get(account, 0),
                "metered": line.get("metered"),
                **{
                    k: line.get(k)
                    for k in (
                        "cleared_buy_wh",
                        "cleared_sell_wh",
                        "metered_import_wh",
                        "metered_export_wh",
                        "imbalance_wh",
                    )
                },
                "trade_amount_units": line.get("trade_amount"),
                "imbalance_amount_units": line.get("imbalance_amount"),
                "net_amount_units": line.get("net_amount"),
                "reason": line.get("reason", ""),
                "reward_wh": rewards.get(account, 0),
                "debt_before_units": before,
                "debt_after_units": after,
                "state": (settlement_row or {}).get("state", ""),
                "batch_id": batch.get("batch_id", ""),
                **chain,
            }
        )
    for bus in check.get("buses") or []:
        tables["ac_buses"].append(
            {**head, "bus": bus["bus"], "name": bus["name"], "vm_pu": bus["vm_pu"]}
        )
    for branch in check.get("branches") or []:
        tables["ac_branches"].append(
            {
                **head,
                **{k: branch[k] for k in ("branch", "kind", "name")},
                "loading_pct": branch["loading_pct"],
            }
        )
    owners = {
        str(r["device_id"]): str(r["participant"])
        for r in [*(record.get("readings_start") or []), *(record.get("readings_end") or [])]
    }
    for setpoint in row["setpoints"] or []:
        if setpoint.get("reason"):
            forecast_w = setpoint.get("forecast_w", forecast_in_reason(setpoint["reason"]))
            limit_w = int(setpoint["p_w"])
            tables["curtailment"].append(
                {
                    **head,
                    "device_id": setpoint["device_id"],
                    "participant": owners.get(str(setpoint["device_id"]), ""),
                    "kind": setpoint["kind"],
                    "limit_w": limit_w,
                    "forecast_w": forecast_w,
                    "curtailed_wh": curtailed_wh(forecast_w, limit_w, int(row["length_s"])),
                    "reason": setpoint["reason"],
                }
            )


_CURTAILED = re.compile(r"curtailed to (-?\d+) W of (-?\d+) W forecast")


def forecast_in_reason(reason: str) -> int:
    """The forecast production a curtailment reason names [W] (records before ``forecast_w``).

    Parameters
    ----------
    reason : str
        ``curtailed to L W of P W forecast: ...``.

    Returns
    -------
    int
        ``P``; 0 if the reason names no powers.
    """
    match = _CURTAILED.search(reason)
    return 0 if match is None else int(match.group(2))


def curtailed_wh(forecast_w: int, limit_w: int, length_s: int) -> int:
    """Energy a PV setpoint held back over an interval [Wh].

    Parameters
    ----------
    forecast_w, limit_w : int
        The forecast production and the export limit written [W].
    length_s : int
        The interval's length [s].

    Returns
    -------
    int
        ``max(forecast_w - limit_w, 0) x length_s / 3600`` rounded half to even.
    """
    return round_half_even(max(forecast_w - limit_w, 0) * length_s / 3600)


def _readings(store: Store, boundaries: set[int]) -> list[dict[str, Any]]:
    if not boundaries:
        return []
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(readings).where(readings.c.boundary.in_(sorted(boundaries)))
        ).mappings()
        return [
            {
                "boundary": _iso(int(r["boundary"])),
                "boundary_id": int(r["boundary"]),
                "device_id": r["device_id"],
                "participant": r["participant"],
                "bus": r["bus"],
                "measured_at": _aware(r["measured_at"]).isoformat(),
                "p_w": r["p_w"],
                "import_wh_total": r["import_wh_total"],
                "export_wh_total": r["export_wh_total"],
                "quality": r["quality"],
                "reason": r["reason"] or "",
                "soc_pct": r["soc_percent"],
            }
            for r in rows
        ]


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes for timezone-aware columns: they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- files ----------------------------------------------------------------------------------
def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: Path, fmt: str) -> list[Path]:
    """Write each table to ``out_dir/<name>.<fmt>``; returns the files written.

    CSV (RFC 4180): UTF-8, CRLF rows, a header row, times as ``YYYY-MM-DDTHH:MM:SSZ``,
    missing values empty, floats in their shortest exact form. Parquet: pyarrow, with the
    pandas types kept.

    Parameters
    ----------
    tables : mapping of str to DataFrame
        From :func:`export_tables`.
    out_dir : Path
        Created if missing.
    fmt : {"csv", "parquet"}
        The file format.

    Raises
    ------
    ExportError
        An unknown format, or ``out_dir`` cannot be made.
    """
    if fmt not in FORMATS:
        msg = f"format {fmt!r}: expected one of {', '.join(FORMATS)}"
        raise ExportError(msg)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot make the export folder {out_dir}: {exc}"
        raise ExportError(msg) from exc
    written = []
    for name, frame in tables.items():
        path = out_dir / f"{name}.{fmt}"
        if fmt == "parquet":
            frame.to_parquet(path, engine="pyarrow", index=False)
        else:
            path.write_text(csv_text(frame, COLUMNS.get(name, STATEMENT_COLUMNS)), "utf-8")
        written.append(path)
    return written


def csv_text(frame: pd.DataFrame, columns: tuple[tuple[str, str], ...]) -> str:
    """``frame`` as the CSV text :func:`write_tables` writes (``columns``: its types).

    Parameters
    ----------
    frame : DataFrame
        A table or the monthly statements.
    columns : tuple of (str, str)
        Its columns and types (:data:`COLUMNS`, :data:`STATEMENT_COLUMNS`).
    """
    # CRLF rows (RFC 4180): a field holding a lone CR or LF is then quoted, so it reads back
    text: str = _to_csv(frame, columns).to_csv(index=False, lineterminator="\r\n")
    return text


def _to_csv(frame: pd.DataFrame, columns: tuple[tuple[str, str], ...]) -> pd.DataFrame:
    """Every cell as the text written to CSV (exact floats, ISO times, empty for missing)."""
    import pandas as pd  # noqa: PLC0415

    out = {}
    kinds = dict(columns)
    for column in frame.columns:
        kind = kinds.get(str(column), "str")
        values = frame[column]
        if kind == "time":
            out[column] = [
                "" if pd.isna(v) else v.strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")
                for v in values
            ]
        elif kind == "float":
            out[column] = ["" if pd.isna(v) else repr(float(v)) for v in values]
        else:
            out[column] = ["" if v is pd.NA or v is None else str(v) for v in values]
    return pd.DataFrame(out, columns=list(frame.columns))


def read_table(path: Path, columns: tuple[tuple[str, str], ...] | None = None) -> pd.DataFrame:
    """Read a table :func:`write_tables` wrote (``.csv`` or ``.parquet``), with its types.

    Parameters
    ----------
    path : Path
        ``<table>.csv`` or ``<table>.parquet``.
    columns : tuple of (str, str), optional
        The columns and types; by default those of the table the file is named after.

    Raises
    ------
    ExportError
        The file's columns are not the table's.
    """
    import pandas as pd  # noqa: PLC0415

    schema = columns or COLUMNS.get(path.stem, STATEMENT_COLUMNS)
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path, engine="pyarrow")
    else:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    want = [c for c, _ in schema]
    if list(frame.columns) != want:
        msg = f"{path}: columns {list(frame.columns)}, expected {want}"
        raise ExportError(msg)
    return _typed(frame, schema)


# -- monthly statements ---------------------------------------------------------------------
def monthly_statements(
    store: Store,
    month: str,
    *,
    chain: ChainEntries | None = None,
    accounts: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One statement row per participant for ``month`` (UTC), reconciled with the chain.

    Parameters
    ----------
    store : Store
        The controller's database (only read).
    month : str
        ``YYYY-MM``.
    chain : ChainEntries, optional
        Read access to the settlement contract; without it ``chain_checked`` is False and the
        chain columns are missing.
    accounts : mapping of str to str, optional
        Participant -> chain address; by default each record's ``accounts``.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`STATEMENT_COLUMNS`, one row per participant, sorted by participant.

    Raises
    ------
    ExportError
        ``month`` is not ``YYYY-MM``.
    """
    first, following = month_range(month)
    tables = export_tables(store, first, following)
    trades = tables["trades"]
    lines = tables["settlements"]
    participants = sorted(
        set(lines.loc[lines["net_amount_units"].notna(), "account"]) - {GRID, COMMUNITY}
    )
    sums: dict[str, dict[str, int]] = {p: defaultdict(int) for p in participants}
    for trade in _records(trades):
        buyer, seller = str(trade["buyer"]), str(trade["seller"])
        if buyer in sums:
            where = "grid" if seller == GRID else "local"
            sums[buyer][f"bought_{where}_wh"] += int(trade["energy_wh"])
            sums[buyer][f"paid_{where}_units"] += int(trade["buyer_amount_units"])
        if seller in sums:
            where = "grid" if buyer == GRID else "local"
            sums[seller][f"sold_{where}_wh"] += int(trade["energy_wh"])
            sums[seller][f"received_{where}_units"] += int(trade["seller_amount_units"])
    unsettled: dict[str, set[int]] = defaultdict(set)
    for line in _records(lines):
        account = str(line["account"])
        if account not in sums:
            continue
        total = sums[account]
        total["settled_amount_units"] += int(line["amount_units"])
        total["reward_wh"] += int(line["reward_wh"])
        if str(line["state"]) != "settled":
            unsettled[account].add(int(line["interval_id"]))
        if line["net_amount_units"] is None:  # GRID, COMMUNITY: no line
            continue
        total["intervals"] += 1
        total["net_amount_units"] += int(line["net_amount_units"])
        total["unmetered_intervals"] += 0 if _true(line["metered"]) else 1
        wh, amount = int(line["imbalance_wh"]), int(line["imbalance_amount_units"])
        if wh > 0:  # took more than cleared: bought from GRID at the import tariff
            total["bought_grid_wh"] += wh
            total["paid_grid_units"] += -amount
        elif wh < 0:  # took less: sold to GRID at the export tariff
            total["sold_grid_wh"] += -wh
            total["received_grid_units"] += amount
    debt_start = _balances(store, int(first.timestamp()))
    debt_end = _balances(store, int(following.timestamp()))
    addresses = dict(accounts) if accounts is not None else _recorded_accounts(store, first)
    on_chain = _chain_sums(chain, lines, addresses) if chain is not None else None
    rows = []
    for p in participants:
        total = sums[p]
        row: dict[str, Any] = {
            "month": month,
            "participant": p,
            **{c: total.get(c, 0) for c, kind in STATEMENT_COLUMNS[2:18] if kind == "int"},
            "debt_start_units": debt_start.get(p, 0),
            "debt_end_units": debt_end.get(p, 0),
            "unsettled_intervals": len(unsettled[p]),
            "chain_checked": on_chain is not None,
            "chain_address": addresses.get(p, ""),
        }
        if on_chain is not None:
            address = addresses.get(p, "").lower()
            # accounts sharing one address are netted on the chain: compare their sum
            sharing = [a for a, at in addresses.items() if address and at.lower() == address]
            both = [sums[a] for a in sharing or [p] if a in sums]
            have_units, have_wh = on_chain.get(address, (0, 0)) if address else (0, 0)
            row |= {
                "chain_amount_units": have_units,
                "chain_reward_wh": have_wh,
                "chain_difference_units": have_units - sum(t["settled_amount_units"] for t in both),
                "chain_difference_wh": have_wh - sum(t["reward_wh"] for t in both),
            }
        rows.append(row)
    return _frame("statements", rows, STATEMENT_COLUMNS)


def _balances(store: Store, before: int) -> dict[str, int]:
    """Every account's carried balance [token units] after the batches of intervals < ``before``."""
    with store.engine.connect() as conn:
        latest = (
            select(debts.c.account, func.max(debts.c.seq).label("seq"))
            .where(debts.c.interval_id < before)
            .group_by(debts.c.account)
            .subquery()
        )
        rows = conn.execute(
            select(debts.c.account, debts.c.balance_after).join(
                latest, (debts.c.account == latest.c.account) & (debts.c.seq == latest.c.seq)
            )
        )
        return {str(a): int(b) for a, b in rows}


def _recorded_accounts(store: Store, since: datetime) -> dict[str, str]:
    """Participant -> chain address from the records' (or results') ``accounts``, latest wins."""
    out: dict[str, str] = {}
    with store.engine.connect() as conn:
        for (record,) in conn.execute(
            select(audit.c.record)
            .where(audit.c.interval_id >= int(since.timestamp()))
            .order_by(audit.c.interval_id)
        ):
            out |= {str(k): str(v) for k, v in (record.get("accounts") or {}).items()}
    return out


def _chain_sums(
    chain: ChainEntries, lines: pd.DataFrame, addresses: Mapping[str, str]
) -> dict[str, tuple[int, int]]:
    """Address (lower case) -> (amount [token units], reward [Wh]) summed over the entries."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    del addresses  # every address the chain names is summed; the caller picks its own
    for interval_id in sorted({int(i) for i in lines["interval_id"]}):
        for address, amount, reward_wh in chain.settled_entries(interval_id):
            total = totals[str(address).lower()]
            total[0] += int(amount)
            total[1] += int(reward_wh)
    return {a: (t[0], t[1]) for a, t in totals.items()}


def statement_differences(statements: pd.DataFrame) -> list[str]:
    """One line per participant whose statement and on-chain sums differ.

    Parameters
    ----------
    statements : DataFrame
        From :func:`monthly_statements`.
    """
    out = []
    for row in _records(statements):
        if not _true(row["chain_checked"]):
            continue
        if int(row["chain_difference_units"]) or int(row["chain_difference_wh"]):
            settled = int(row["settled_amount_units"])
            out.append(
                f"{row['month']} {row['participant']}: settled {settled} units "
                f"and {int(row['reward_wh'])} Wh rewarded in the database; the chain's entries for "
                f"{row['chain_address'] or '(no address)'} sum to {int(row['chain_amount_units'])} "
                f"units and {int(row['chain_reward_wh'])} Wh"
                + (
                    f" ({int(row['unsettled_intervals'])} interval(s) not settled yet)"
                    if int(row["unsettled_intervals"])
                    else ""
                )
            )
    return out


def to_json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as plain JSON values (missing -> ``None``, times as ISO text)."""
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso"))
    return rows


__all__ = [
    "COLUMNS",
    "STATEMENT_COLUMNS",
    "TABLES",
    "ChainEntries",
    "ExportError",
    "csv_text",
    "export_tables",
    "month_range",
    "monthly_statements",
    "read_table",
    "statement_differences",
    "to_json_rows",
    "write_tables",
]
