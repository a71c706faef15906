"""One-shot clearing of an order file on a grid: ``peergrid clear`` and its Python function.

Reads the orders (CSV or JSON), loads the grid (cached for SimBench), clears with the AC
validation loop (:func:`controller.grid_clearing.clear_on_grid`) and returns a JSON-able
document:

``status``, ``reason``, ``orders`` (order_id, accepted_wh, price, amount), ``prices`` (bus ->
nodal price), ``grid`` (import_wh, export_wh), ``trades``, ``welfare``, ``community_rent``,
``ac_check`` (min/max vm_pu, max line and trafo loading, violations), ``iterations``,
``timings`` (seconds per stage; left out of the deterministic part).

Order files: CSV with a header ``order_id,participant,bus,side,energy_wh,limit_price`` or JSON
(a list of such objects, or ``{"orders": [...]}``); ``bus`` is the pandapower bus name,
``side`` buy/sell, ``energy_wh`` > 0 [Wh], ``limit_price`` >= 0 [token base units / kWh].
The interval is the SimBench time step's (15-min steps from 2016-01-01, the profiles' year)
or ``interval_start``.
"""

from __future__ import annotations

import csv
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controller.grid_clearing import clear_on_grid
from grid_models.grids import load_grid_cached
from grid_models.linear import build_linear_grid
from market.clearing import ClearingOptions, Mechanism
from market.codec import result_to_dict
from market.domain import Interval
from market.errors import InvalidOrder
from market.orderbook import ORDER_COLUMNS, parse_order_rows

SIMBENCH_YEAR_START = datetime(2016, 1, 1, tzinfo=UTC)
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


def read_order_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV or JSON order file.

    Parameters
    ----------
    path : str or Path
        A ``.json`` file (a list of order objects, or ``{"orders": [...]}``), else CSV with
        the header of the module docstring.

    Returns
    -------
    list of dict
        One dict per order row, values as read (strings for CSV).

    Raises
    ------
    InvalidOrder
        Missing file, unreadable format, or a missing header column.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = f"order file not found: {p}"
        raise InvalidOrder(msg) from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"{p}: not valid JSON: {exc}"
            raise InvalidOrder(msg) from None
        rows = data.get("orders") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            msg = f"{p}: expected a list of order objects (or {{'orders': [...]}})"
            raise InvalidOrder(msg)
        return rows
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in ORDER_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        msg = f"{p}: missing column(s) {', '.join(missing)} in the header"
        raise InvalidOrder(msg)
    return list(reader)


def clear_orders_file(
    grid: str,
    orders: str | Path,
    *,
    time_step: int | None = None,
    mechanism: Mechanism = Mechanism.NODAL,
    import_price: int = 300_000,
    export_price: int = 80_000,
    vm_min_pu: float = 0.95,
    vm_max_pu: float = 1.05,
    time_limit_s: float = 10.0,
    interval_start: datetime | None = None,
) -> dict[str, Any]:
    """Clear the orders of a file on a grid; see the module docstring for the document.

    Parameters
    ----------
    grid : str
        Grid spec: ``cigre-lv``, ``simbench:<code>`` or a pandapower JSON file.
    orders : str or Path
        The order file (:func:`read_order_rows`).
    time_step : int, optional
        SimBench 15-min time step of the base loads and of the interval [-].
    mechanism : Mechanism
        How accepted orders are priced (``nodal``, ``uniform``, ``pay-as-bid``).
    import_price, export_price : int
        The upstream grid's tariffs [token base units / kWh].
    vm_min_pu, vm_max_pu : float
        Voltage band [p.u.].
    time_limit_s : float
        Time budget of the clearing loop [s].
    interval_start : datetime, optional
        Start of the interval (tz-aware UTC); default the time step's, or 2026-01-01.

    Returns
    -------
    dict
        The JSON-able document of the module docstring.

    Raises
    ------
    InvalidOrder
        Bad order rows (the message names the row), before any grid work.
    GridModelError
        Unknown grid spec or unusable topology.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    rows = read_order_rows(orders)
    options = ClearingOptions(
        import_price=import_price,
        export_price=export_price,
        mechanism=mechanism,
        time_limit_s=time_limit_s,
    )
    if interval_start is None:
        interval_start = (
            SIMBENCH_YEAR_START + timedelta(minutes=15 * time_step)
            if time_step is not None
            else DEFAULT_START
        )
    interval = Interval.containing(interval_start, 900)
    parse_order_rows(rows, interval)  # every row-level error before the (slow) grid load
    t = time.perf_counter()
    loaded = load_grid_cached(grid, time_step)
    timings["grid_load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    linear = build_linear_grid(loaded, vm_min_pu=vm_min_pu, vm_max_pu=vm_max_pu)
    timings["network_model_s"] = time.perf_counter() - t
    book = parse_order_rows(rows, interval, linear.network.bus_index())
    t = time.perf_counter()
    result = clear_on_grid(loaded, linear, book, options)
    timings["clear_s"] = time.perf_counter() - t
    if result.solver is not None:
        timings["build_s"] = result.solver.build_s
        timings["solve_s"] = result.solver.solve_s
        timings["extract_s"] = result.solver.extract_s
    timings["total_s"] = time.perf_counter() - t0
    doc = result_to_dict(result)
    doc["grid_spec"] = grid
    doc["time_step"] = time_step
    doc["timings"] = {k: round(v, 4) for k, v in timings.items()}
    return doc
