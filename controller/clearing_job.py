"""One-shot clearing of an order file on a grid: ``peergrid clear`` and its Python function.

Reads the orders (CSV or JSON), loads the grid (cached for SimBench), clears with the AC
validation loop (:func:`controller.grid_clearing.clear_on_grid`) and returns a JSON-able
document:

``status``, ``reason``, ``orders`` (order_id, accepted_wh, price, amount), ``prices`` (bus ->
nodal price), ``grid`` (import_wh, export_wh), ``trades``, ``welfare``, ``community_rent``,
``ac_check`` (min/max vm_pu, max line and trafo loading, violations), ``iterations``,
``engine`` (``highspy`` or ``pyomo``: how the LP reached HiGHS), ``limits`` (the AC loop's
``max_iterations`` and ``loss_basis``, HiGHS's ``simplex_iteration_limit`` and
``ipm_iteration_limit``, and ``time_limit_s``, the wall-clock budget or null), ``timings``
(seconds per stage; left out of the deterministic part).

Without ``--time-limit`` nothing reads a clock: iteration counts decide, and the document
(but ``timings``) is the same on any machine. With it, a budget that runs out gives the
status ``time_limit`` (:mod:`controller.grid_clearing`).

Order files: CSV with a header ``order_id,participant,bus,side,energy_wh,limit_price`` or JSON
(a list of such objects, or ``{"orders": [...]}``), UTF-8 with or without a byte order mark
(spreadsheets write one), spaces after commas allowed; ``bus`` is the pandapower bus name
(``peergrid grid buses --grid SPEC`` lists them), ``side`` buy/sell, ``energy_wh`` a whole
number 1 .. 10**9 [Wh], ``limit_price`` a whole number 0 .. 10**9 [token base units / kWh]
(:func:`market.orderbook.parse_order_rows`). Unknown columns are refused, naming the closest
known one. The interval is the SimBench time step's (15-min steps from 2016-01-01, the
profiles' year) or ``interval_start``.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controller.cli_types import VOLTAGE_RANGE_PU
from controller.errors import ConfigError
from controller.userfiles import read_text
from market.codec import result_to_dict
from market.domain import Interval, Mechanism
from market.errors import InvalidOrder
from market.orderbook import ORDER_COLUMNS, parse_order_rows
from market.units import MAX_PRICE_PER_KWH

SIMBENCH_YEAR_START = datetime(2016, 1, 1, tzinfo=UTC)
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
MAX_TIME_STEP = 366 * 96 - 1
"""Last 15-min step of SimBench's profile year (2016, a leap year) [-]."""
MAX_TIME_LIMIT_S = 3600.0
"""Longest wall-clock budget of one clearing [s]."""
ENGINES = ("highspy", "pyomo")
"""The values of :class:`market.clearing.Engine` (not imported here: it loads the solvers)."""


def read_order_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV or JSON order file.

    Parameters
    ----------
    path : str or Path
        A ``.json`` file (a list of order objects, or ``{"orders": [...]}``), else CSV with
        the header of the module docstring. UTF-8, with or without a byte order mark;
        spaces after the commas of a CSV file are ignored.

    Returns
    -------
    list of dict
        One dict per order row, values as read (strings for CSV).

    Raises
    ------
    ConfigError
        A file that cannot be read as UTF-8 text (:func:`controller.userfiles.read_text`).
    InvalidOrder
        Not CSV or JSON as described, a missing, repeated or unknown column (with the
        closest known name), a row with more or fewer fields than the header.
    """
    p = Path(path)
    text = read_text(p, "order file")
    if p.suffix.lower() == ".json":
        return _json_rows(p, text)
    return _csv_rows(p, text)


def _unknown_columns(where: str, names: Iterable[str]) -> None:
    unknown = [n for n in names if n not in ORDER_COLUMNS]
    if not unknown:
        return
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, ORDER_COLUMNS, n=1, cutoff=0.6)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    msg = (
        f"{where}: unknown column(s) {', '.join(parts)}; the columns are {', '.join(ORDER_COLUMNS)}"
    )
    raise InvalidOrder(msg)


MAX_JSON_DEPTH = 16
"""Deepest nesting of arrays and objects in a JSON order file (a valid one has 3) [-]."""

_JSON_TOKENS = re.compile(r'\\.|["\[\]{}]')
"""What the depth count looks at: an escape pair (skipped), a quote, a bracket."""


def _nests_too_deep(text: str) -> bool:
    """Whether arrays and objects in the JSON ``text`` nest deeper than :data:`MAX_JSON_DEPTH`.

    ``json.loads`` recurses in C once per level; a process whose recursion limit a library
    raised (py-evm sets 100 000) would crash on a deep enough document instead of raising
    ``RecursionError``, so the depth is checked first, in one linear pass (brackets inside
    strings do not count).
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    in_string = False
    for match in _JSON_TOKENS.finditer(text):
        found = match.group()
        if found == '"':
            in_string = not in_string
        elif in_string or found.startswith("\\"):
            continue
        elif found in ("[", "{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        else:
            depth -= 1
    return False


def _json_rows(p: Path, text: str) -> list[dict[str, Any]]:
    if _nests_too_deep(text):
        msg = f"{p}: JSON nested more than {MAX_JSON_DEPTH} levels deep; not an order file"
        raise InvalidOrder(msg)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"{p}: not valid JSON: {exc}"
        raise InvalidOrder(msg) from None
    if isinstance(data, dict):
        if set(data) != {"orders"}:
            msg = f'{p}: expected {{"orders": [...]}} and no other key, got keys {sorted(data)}'
            raise InvalidOrder(msg)
        data = data["orders"]
    if not isinstance(data, list):
        msg = f'{p}: expected a list of order objects (or {{"orders": [...]}})'
        raise InvalidOrder(msg)
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            msg = f"{p}: row {number}: expected an order object, got {type(row).__name__}"
            raise InvalidOrder(msg)
        _unknown_columns(f"{p}: row {number}", row)
    return data


def _csv_rows(p: Path, text: str) -> list[dict[str, Any]]:
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    try:
        header = [name.strip() for name in next(reader, [])]
        lines = [(reader.line_num, fields) for fields in reader if fields]
    except csv.Error as exc:
        msg = f"{p}: line {reader.line_num}: not valid CSV: {exc}"
        raise InvalidOrder(msg) from None
    if not header:
        msg = f"{p}: empty; expected the header {','.join(ORDER_COLUMNS)}"
        raise InvalidOrder(msg)
    repeated = sorted({n for n in header if header.count(n) > 1})
    if repeated:
        msg = f"{p}: column(s) {', '.join(repeated)} appear more than once in the header"
        raise InvalidOrder(msg)
    _unknown_columns(f"{p}: header", header)
    missing = [c for c in ORDER_COLUMNS if c not in header]
    if missing:
        msg = f"{p}: missing column(s) {', '.join(missing)} in the header"
        raise InvalidOrder(msg)
    rows = []
    for number, (line, fields) in enumerate(lines, start=1):
        if len(fields) != len(header):
            msg = (
                f"{p}: row {number} (line {line}) has {len(fields)} field(s), the header "
                f"{len(header)}"
            )
            raise InvalidOrder(msg)
        rows.append(dict(zip(header, fields, strict=True)))
    return rows


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
    time_limit_s: float | None = None,
    interval_start: datetime | None = None,
    engine: str = "highspy",
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
    time_limit_s : float, optional
        Wall-clock budget of the clearing (the AC loop and HiGHS) [s] (``--time-limit``);
        a stop it causes is the status ``time_limit``, which a re-run need not reproduce.
        Default none: iteration counts alone decide, the same result on any machine.
    interval_start : datetime, optional
        Start of the interval (tz-aware UTC); default the time step's, or 2026-01-01.
    engine : {"highspy", "pyomo"}
        How the LP reaches HiGHS: the sparse fast path or the pyomo reference model
        (:class:`market.clearing.Engine`); both give the same clearing.

    Returns
    -------
    dict
        The JSON-able document of the module docstring.

    Raises
    ------
    ConfigError
        An option out of range (a voltage limit outside :data:`VOLTAGE_RANGE_PU` or NaN, the
        lower not below the upper, a price outside 0 .. 10**9 or an export price above the
        import price, a wall-clock budget not in
        (0, :data:`MAX_TIME_LIMIT_S`], a time step outside 0 .. :data:`MAX_TIME_STEP`, an
        engine other than ``highspy`` or ``pyomo``), or an order file that cannot be read;
        before any grid work.
    InvalidOrder
        Bad order rows (the message names the row and column), before any grid work; an
        order at an unknown bus after the grid is loaded (with the closest bus names).
    GridModelError
        Unknown grid spec or unusable topology.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    _check_options(vm_min_pu, vm_max_pu, import_price, export_price, time_limit_s, time_step)
    if engine not in ENGINES:
        msg = f"engine must be one of {', '.join(ENGINES)}, got {engine!r}"
        raise ConfigError(msg)
    rows = read_order_rows(orders)
    if interval_start is None:
        interval_start = (
            SIMBENCH_YEAR_START + timedelta(minutes=15 * time_step)
            if time_step is not None
            else DEFAULT_START
        )
    interval = Interval.containing(interval_start, 900)
    parse_order_rows(rows, interval)  # every row-level error before the (slow) grid load
    # pandapower and the solver (~2 s to import) only once the input is known to be good
    from controller.grid_clearing import clear_on_grid, clearing_limits  # noqa: PLC0415
    from grid_models.grids import load_grid_cached  # noqa: PLC0415
    from grid_models.linear import build_linear_grid  # noqa: PLC0415
    from market.clearing import ClearingOptions, Engine  # noqa: PLC0415

    options = ClearingOptions(
        import_price=import_price,
        export_price=export_price,
        mechanism=mechanism,
        time_limit_s=time_limit_s,
        engine=Engine(engine),
    )
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
    doc["engine"] = engine
    doc["limits"] = clearing_limits(options)
    doc["time_step"] = time_step
    doc["timings"] = {k: round(v, 4) for k, v in timings.items()}
    return doc


def _check_options(
    vm_min_pu: float,
    vm_max_pu: float,
    import_price: int,
    export_price: int,
    time_limit_s: float | None,
    time_step: int | None,
) -> None:
    """Refuse options out of range with a :class:`ConfigError` naming the option."""
    low, high = VOLTAGE_RANGE_PU
    for name, vm in (("vm_min_pu", vm_min_pu), ("vm_max_pu", vm_max_pu)):
        if not (math.isfinite(vm) and low <= vm <= high):
            msg = f"{name} must be a voltage from {low} to {high} p.u., got {vm}"
            raise ConfigError(msg)
    if not vm_min_pu < vm_max_pu:
        msg = f"vm_min_pu ({vm_min_pu}) must be below vm_max_pu ({vm_max_pu})"
        raise ConfigError(msg)
    for name, price in (("import_price", import_price), ("export_price", export_price)):
        if isinstance(price, bool) or not isinstance(price, int):
            msg = f"{name} must be a whole number of token base units per kWh, got {price!r}"
            raise ConfigError(msg)
        if not 0 <= price <= MAX_PRICE_PER_KWH:
            msg = f"{name} must be from 0 to {MAX_PRICE_PER_KWH:_} per kWh, got {price}"
            raise ConfigError(msg)
    if export_price > import_price:
        msg = f"export_price ({export_price}) must not exceed import_price ({import_price})"
        raise ConfigError(msg)
    if time_limit_s is not None and not (
        math.isfinite(time_limit_s) and 0 < time_limit_s <= MAX_TIME_LIMIT_S
    ):
        msg = (
            f"time_limit_s must be more than 0 and at most {MAX_TIME_LIMIT_S:g} s, "
            f"got {time_limit_s}"
        )
        raise ConfigError(msg)
    if time_step is not None and not 0 <= time_step <= MAX_TIME_STEP:
        msg = (
            f"time step {time_step} out of range 0..{MAX_TIME_STEP} (15-min steps of "
            "SimBench's profile year)"
        )
        raise ConfigError(msg)
