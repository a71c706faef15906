"""Network-constrained double auction: ``clear(book, network, options) -> ClearingResult``.

Staged as build -> solve -> extract (PyPSA's ``optimize``): :func:`build_lp` (or the pyomo
reference :func:`~market.clearing.model.build_model`) never solves, :mod:`market.clearing.solve`
holds the only HiGHS calls, and :func:`extract` reads primal values and duals only when the
status is ok. Infeasibility and time limits are statuses, not exceptions.

Modules (each imports only those above it)::

    groups    orders aggregated by (bus, side, limit price): the LP's variables
    pricing   every price rule: nodal prices, mechanisms, limits, tariffs (Mechanism)
    options   ClearingOptions, Engine, HighsSolver
    lp        the LP as sparse arrays (the fast path)
    model     the same LP as a pyomo model (the reference; its docstring has the maths)
    status    solver outcome -> ClearingStatus, the one table
    solve     the only HiGHS calls (highspy, and pyomo's highs interface)
    extract   solution -> ClearingResult (integers, prices, trades)

highspy and pyomo are imported nowhere else in PeerGrid.
"""

from __future__ import annotations

import dataclasses
import time

from market.clearing.extract import extract
from market.clearing.lp import LpData, build_lp
from market.clearing.model import BuiltModel, build_model
from market.clearing.options import ClearingOptions, Engine, HighsSolver
from market.clearing.solve import solve, solve_lp, solver_version
from market.domain import ClearingResult, ClearingStatus, Mechanism, OrderBook, SolverReport
from market.network import NetworkModel
from market.units import TokenUnits, Wh

__all__ = ["ClearingOptions", "Engine", "HighsSolver", "Mechanism", "clear", "empty_result"]


def empty_result(
    book: OrderBook, status: ClearingStatus, reason: str, solver: SolverReport | None = None
) -> ClearingResult:
    """A result that accepts nothing (no crossing, or the fallback after a failure).

    Parameters
    ----------
    book : OrderBook
        The interval's orders (only its interval is used).
    status : ClearingStatus
        Why nothing is accepted.
    reason : str
        The same, in words.
    solver : SolverReport, optional
        The failed solve's report, if there was one.

    Returns
    -------
    ClearingResult
        No orders, prices or trades; zero grid exchange, welfare and rent.
    """
    return ClearingResult(
        interval=book.interval,
        status=status,
        reason=reason,
        orders=(),
        prices=(),
        grid_import_wh=Wh(0),
        grid_export_wh=Wh(0),
        trades=(),
        welfare=TokenUnits(0),
        community_rent=TokenUnits(0),
        solver=solver,
    )


def clear(book: OrderBook, network: NetworkModel, options: ClearingOptions) -> ClearingResult:
    """Clear ``book`` on ``network`` and return prices, accepted energy and trades.

    Parameters
    ----------
    book : OrderBook
        Validated orders of one interval.
    network : NetworkModel
        The feeder's linear model (from ``grid_models``).
    options : ClearingOptions
        Tariffs, time limit and pricing mechanism.

    Returns
    -------
    ClearingResult
        ``status`` CLEARED or NO_CROSSING with prices and trades, or INFEASIBLE /
        TIME_LIMIT / SOLVER_ERROR accepting nothing, with the reason in words.
    """
    started = time.perf_counter()
    built: BuiltModel | LpData
    if options.engine is Engine.PYOMO:
        built = build_model(book, network, options)
        build_s = time.perf_counter() - started
        outcome = solve(built, options)
    else:
        built = build_lp(book, network, options)
        build_s = time.perf_counter() - started
        outcome = solve_lp(built, options)
    if not outcome.status.is_ok:
        report = SolverReport(
            name="highs",
            version=solver_version(),
            termination=outcome.termination,
            build_s=build_s,
            solve_s=outcome.solve_s,
            extract_s=0.0,
        )
        reasons = {
            ClearingStatus.INFEASIBLE: "the network limits cannot hold even with no trade",
            ClearingStatus.TIME_LIMIT: f"no optimum within {options.time_limit_s} s",
            ClearingStatus.SOLVER_ERROR: "the solver failed",
        }
        reason = f"{reasons.get(outcome.status, 'solver')} ({outcome.termination})"
        return empty_result(book, outcome.status, reason, report)
    t0 = time.perf_counter()
    result = extract(built, outcome, options, book.interval, (build_s, outcome.solve_s))
    if isinstance(built, LpData) and built.notes:
        result = dataclasses.replace(result, reason=result.reason + "; " + "; ".join(built.notes))
    extract_s = time.perf_counter() - t0
    if result.solver is not None:
        result = dataclasses.replace(
            result, solver=dataclasses.replace(result.solver, extract_s=extract_s)
        )
    return result
