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
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from market.clearing.extract import Quantities, extract, quantities
from market.clearing.groups import OrderGroup, group_orders
from market.clearing.lp import LpData, build_lp
from market.clearing.model import BuiltModel, build_model
from market.clearing.options import ClearingOptions, Engine, HighsSolver
from market.clearing.solve import SolveOutcome, solve, solve_lp, solver_version
from market.domain import (
    ClearingResult,
    ClearingStatus,
    Mechanism,
    OrderBook,
    Side,
    SolverReport,
)
from market.network import NetworkModel
from market.units import TokenUnits, Wh

__all__ = [
    "BookClearing",
    "ClearingOptions",
    "Engine",
    "HighsSolver",
    "Mechanism",
    "Solved",
    "clear",
    "empty_result",
]


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


@dataclass(frozen=True, slots=True, eq=False)
class Solved:
    """One solve of a book on one linear model: its canonical dispatch in Wh, or a failure.

    Parameters
    ----------
    built : BuiltModel or LpData
        The model that was solved.
    outcome : SolveOutcome
        The solver's outcome (its status, the lazy bounds' counts).
    quantities : Quantities or None
        The canonical optimum in Wh (:func:`market.clearing.extract.quantities`); None
        when the status is not ok.
    build_s : float
        Time building the model [s] (reported only).
    rules_s : float
        Time in the canonical rules and the rounding to Wh [s] (reported only).
    """

    built: BuiltModel | LpData
    outcome: SolveOutcome
    quantities: Quantities | None
    build_s: float
    rules_s: float = 0.0

    @property
    def status(self) -> ClearingStatus:
        """The solver's status."""
        return self.outcome.status

    def injections_w(self, hours: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The accepted orders as extra load and generation per model bus [W].

        Parameters
        ----------
        hours : float
            The interval's length [h] (energy / hours = average power).

        Returns
        -------
        load_w, sgen_w : ndarray of float
            Accepted buys and sells per bus of the model solved on [W] (zeros if not ok).
        """
        n = self.built.network.n_bus
        load_w, sgen_w = np.zeros(n), np.zeros(n)
        if self.quantities is None:
            return load_w, sgen_w
        groups = self.built.groups
        wh = np.array(self.quantities.accepted_wh, dtype=float)
        buses = np.array([g.bus for g in groups], dtype=np.int64)
        buy = np.array([g.side is Side.BUY for g in groups], dtype=bool)
        if len(groups):
            load_w = np.bincount(buses[buy], weights=wh[buy], minlength=n) / hours
            sgen_w = np.bincount(buses[~buy], weights=wh[~buy], minlength=n) / hours
        return load_w, sgen_w

    @property
    def bought_wh(self) -> int:
        """Energy the participants' accepted bids buy [Wh] (0 if not ok)."""
        q = self.quantities
        if q is None:
            return 0
        groups = self.built.groups
        return sum(wh for g, wh in zip(groups, q.accepted_wh, strict=True) if g.side is Side.BUY)

    @property
    def traded_wh(self) -> int:
        """Energy the market moves [Wh]: its larger side, participants plus the grid.

        The sell side (offers accepted plus grid import) or the buy side (bids accepted plus
        grid export), whichever is larger (they differ by the market's losses).
        """
        q = self.quantities
        if q is None:
            return 0
        bought = self.bought_wh
        sold = sum(q.accepted_wh) - bought
        return max(bought + q.grid_export_wh, sold + q.grid_import_wh)


class BookClearing:
    """One book cleared on one or more linear models of the same feeder (the AC loop).

    The order groups are made once; each solve starts with the network bounds the last one
    needed (:func:`market.clearing.solve.solve_lp`'s ``start``), so the AC loop's later
    solves, whose models differ only in losses, voltage offsets and tightened limits, mostly
    skip the lazy rounds the first one took. :meth:`solve` gives the dispatch in Wh
    (what the AC check needs); :meth:`result` prices and matches the one that is kept.

    Parameters
    ----------
    book : OrderBook
        Validated orders of one interval.
    options : ClearingOptions
        Tariffs, engine, mechanism and solver settings.
    """

    def __init__(self, book: OrderBook, options: ClearingOptions) -> None:
        self.book = book
        self.options = options
        self._groups: tuple[OrderGroup, ...] | None = None
        self._names: tuple[object, ...] | None = None
        self._kept: NDArray[np.bool_] | None = None

    def _groups_on(self, network: NetworkModel) -> tuple[OrderGroup, ...]:
        if self._groups is None or self._names != network.bus_names:
            self._groups = group_orders(self.book, network)
            self._names = network.bus_names
            self._kept = None
        return self._groups

    def solve(self, network: NetworkModel, options: ClearingOptions | None = None) -> Solved:
        """Build and solve the book on ``network``; the canonical dispatch when ok.

        Parameters
        ----------
        network : NetworkModel
            The feeder's linear model (the first, or one re-linearised by the AC loop).
        options : ClearingOptions, optional
            Instead of the session's (the AC loop passes the wall-clock budget left).

        Returns
        -------
        Solved
            The model, the solver's outcome and, when ok, the canonical quantities.
        """
        options = options or self.options
        started = time.perf_counter()
        groups = self._groups_on(network)
        built: BuiltModel | LpData
        if options.engine is Engine.PYOMO:
            built = build_model(self.book, network, options, groups)
            build_s = time.perf_counter() - started
            outcome = solve(built, options)
        else:
            built = build_lp(self.book, network, options, groups)
            build_s = time.perf_counter() - started
            outcome = solve_lp(built, options, self._kept)
            if outcome.lazy is not None:
                self._kept = outcome.lazy.kept
        if not outcome.status.is_ok:
            return Solved(built, outcome, None, build_s)
        t0 = time.perf_counter()
        rounded = quantities(built, outcome, options)
        return Solved(built, outcome, rounded, build_s, time.perf_counter() - t0)

    def result(self, solved: Solved) -> ClearingResult:
        """Prices, orders, trades and money of a solve (or the failure, accepting nothing).

        Parameters
        ----------
        solved : Solved
            One of this session's solves.

        Returns
        -------
        ClearingResult
            As :func:`clear` describes.
        """
        outcome = solved.outcome
        if solved.quantities is None:
            report = SolverReport(
                name="highs",
                version=solver_version(),
                termination=outcome.termination,
                build_s=solved.build_s,
                solve_s=outcome.solve_s,
                extract_s=0.0,
            )
            reasons = {
                ClearingStatus.INFEASIBLE: "the network limits cannot hold even with no trade",
                ClearingStatus.TIME_LIMIT: f"no optimum within {self.options.time_limit_s} s",
                ClearingStatus.SOLVER_ERROR: "the solver failed",
            }
            reason = f"{reasons.get(outcome.status, 'solver')} ({outcome.termination})"
            return empty_result(self.book, outcome.status, reason, report)
        built = solved.built
        t0 = time.perf_counter()
        result = extract(
            built,
            solved.quantities,
            self.options,
            self.book.interval,
            (solved.build_s, outcome.solve_s),
        )
        if isinstance(built, LpData) and built.notes:
            result = dataclasses.replace(
                result, reason=result.reason + "; " + "; ".join(built.notes)
            )
        extract_s = time.perf_counter() - t0
        if result.solver is not None:
            result = dataclasses.replace(
                result, solver=dataclasses.replace(result.solver, extract_s=extract_s)
            )
        return result


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
    session = BookClearing(book, options)
    return session.result(session.solve(network))
