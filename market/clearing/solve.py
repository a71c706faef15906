"""The only place that calls HiGHS.

Directly through highspy (the fast path, :func:`solve_lp`) or through pyomo's ``highs``
interface (the reference path, :func:`solve`: the same maths as an algebraic model).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from importlib import metadata

import highspy
import numpy as np
import pyomo.environ as pyo
from numpy.typing import NDArray
from pyomo.contrib.solver.common.factory import SolverFactory

from market.clearing.lp import LpData
from market.clearing.model import BuiltModel
from market.clearing.options import ClearingOptions
from market.clearing.status import highs_status_of, status_of
from market.domain import ClearingStatus
from market.network import NetworkModel


@dataclass(frozen=True, slots=True, eq=False)
class LazyBounds:
    """What one :func:`solve_lp` did with the network bounds (counted, never timed).

    ``kept`` marks every column whose own bounds were in force at the end (the order and
    grid columns always; the branch flows and voltages the relaxation needed): the next
    solve of the same book on a re-linearised model starts with them (``start``).
    ``runs`` is the number of HiGHS ``run()`` calls, ``started_with`` the network bounds
    in force at the first run and ``added`` those put back after it, per round; ``full``
    that the lazy rounds gave up and the full LP decided.
    """

    kept: NDArray[np.bool_]
    runs: int
    started_with: int
    added: tuple[int, ...]
    full: bool


@dataclass(frozen=True, slots=True, eq=False)
class SolveOutcome:
    """Primal values and duals of a solved model, or only a status when it is not ok.

    ``accepted_kwh`` per order group, ``grid_import_kwh``/``grid_export_kwh`` the market's
    grid trade, ``balance_duals`` the dual of each bus's energy balance [currency / kWh],
    ``objective`` the welfare [currency]; ``col_value`` every column of the LP in
    :class:`~market.clearing.lp.LpData`'s order (for :mod:`market.clearing.unique`);
    :attr:`unique` whether the solver proved this the only optimum, primal and dual
    (both parts below; ``False`` when it could not tell), ``unique_dispatch``
    and ``unique_prices`` each part on its own (:func:`unique_optimum`), with ``row_dual``
    every row's dual [currency per unit of the row] (:func:`solve_lp` only); ``lazy`` what
    the lazy network bounds did (:func:`solve_lp` only).
    """

    status: ClearingStatus
    termination: str
    solver_version: str
    solve_s: float
    accepted_kwh: NDArray[np.float64]
    grid_import_kwh: float
    grid_export_kwh: float
    balance_duals: NDArray[np.float64]
    objective: float
    col_value: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    lazy: LazyBounds | None = None
    unique_dispatch: bool = False
    unique_prices: bool = False
    row_dual: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    @property
    def unique(self) -> bool:
        """Whether the solver proved this the only optimum, dispatch and prices."""
        return self.unique_dispatch and self.unique_prices

    @classmethod
    def failed(cls, status: ClearingStatus, termination: str, solve_s: float) -> SolveOutcome:
        """An outcome without values (the status is not ok).

        Parameters
        ----------
        status : ClearingStatus
            The (not ok) status.
        termination : str
            The solver's own name for it.
        solve_s : float
            Time spent solving [s].

        Returns
        -------
        SolveOutcome
            With empty arrays and zero quantities.
        """
        empty = np.zeros(0)
        return cls(
            status=status,
            termination=termination,
            solver_version=solver_version(),
            solve_s=solve_s,
            accepted_kwh=empty,
            grid_import_kwh=0.0,
            grid_export_kwh=0.0,
            balance_duals=empty,
            objective=0.0,
        )


def solver_version() -> str:
    """Version of highspy in this environment."""
    return f"highspy {metadata.version('highspy')}"


def solve(built: BuiltModel, options: ClearingOptions) -> SolveOutcome:
    """Solve the pyomo model with HiGHS (pyomo's ``highs`` interface); read values only if ok.

    Parameters
    ----------
    built : BuiltModel
        The reference model (:func:`market.clearing.model.build_model`).
    options : ClearingOptions
        HiGHS's iteration limits, and ``time_limit_s`` [s] only with a wall-clock budget
        (:meth:`ClearingOptions.highs_options`).

    Returns
    -------
    SolveOutcome
        Accepted energy per group [kWh], grid exchange [kWh] and balance duals
        [currency / kWh], or only the status when it is not ok.
    """
    m = built.model
    opt = SolverFactory("highs")
    started = time.perf_counter()
    results = opt.solve(
        m,
        load_solutions=False,
        raise_exception_on_nonoptimal_result=False,
        time_limit=options.time_limit_s,  # None unless a wall-clock budget is asked for
        threads=1,
        solver_options={k: v for k, v in options.highs_options().items() if k != "time_limit"},
    )
    elapsed = time.perf_counter() - started
    status = status_of(results.termination_condition)
    n_groups = len(built.groups)
    n_bus = built.network.n_bus
    if not status.is_ok:
        return SolveOutcome.failed(status, str(results.termination_condition.name), elapsed)
    results.solution_loader.load_vars()
    duals = results.solution_loader.get_duals([m.balance[b] for b in range(n_bus)])
    col_scale = built.lp.col_scale
    return SolveOutcome(
        status=status,
        termination=str(results.termination_condition.name),
        solver_version=solver_version(),
        solve_s=elapsed,
        accepted_kwh=np.array([pyo.value(m.a[g]) for g in range(n_groups)], dtype=float),
        grid_import_kwh=float(pyo.value(m.g_imp)),
        grid_export_kwh=float(pyo.value(m.g_exp)),
        balance_duals=np.array([duals[m.balance[b]] for b in range(n_bus)], dtype=float),
        objective=float(pyo.value(m.welfare)),
        col_value=np.array(
            [pyo.value(m.a[g]) for g in range(n_groups)]
            + [pyo.value(m.g_imp), pyo.value(m.g_exp)]
            + [pyo.value(m.P[k]) for k in range(built.network.n_branch)]
            + [pyo.value(m.v[b]) for b in range(n_bus)]
            + ([pyo.value(m.theta[j]) for j in range(n_bus - 1)] if hasattr(m, "theta") else []),
            dtype=float,
        )
        * (1.0 if col_scale is None else col_scale),  # in the LP's (scaled) columns
    )


UNIQUE_PRIMAL = 1e-6
"""A basic column or row is strictly between its bounds when farther than this from both
[kWh, kW, p.u.², p.u., rad]: ten times HiGHS's primal feasibility tolerance."""

UNIQUE_DUAL = 1e-6
"""A nonbasic column's reduced cost or row's dual is non-zero beyond this [currency / unit]
(1 token base unit / kWh): ten times HiGHS's dual feasibility tolerance."""


def unique_optimum(lp: LpData, h: highspy.Highs) -> tuple[bool, bool]:
    """Whether ``h``'s optimal basis proves the dispatch, and the duals, the only optimum.

    **Dual non-degeneracy** (every nonbasic column and ranged row with a reduced cost or dual
    beyond :data:`UNIQUE_DUAL`; fixed columns and equality rows need not) proves the primal
    optimum unique: the dispatch. **Primal non-degeneracy** (every basic column and row
    strictly between ``lp``'s bounds by :data:`UNIQUE_PRIMAL`) proves the optimal duals
    unique: the prices. Each rule of :mod:`market.clearing.unique` picks one point of an
    optimal face and would return the solver's where that face is a point, so it is skipped
    there. Conservative: a free nonbasic column, a basis HiGHS calls invalid or any value
    within the margins answers ``False``.

    Parameters
    ----------
    lp : LpData
        The full LP (its bounds, not a lazy relaxation's).
    h : highspy.Highs
        Solved to optimality on ``lp``'s rows, with ``lp``'s bounds or a relaxation of them.

    Returns
    -------
    dispatch, prices : bool
        ``True`` only when that part of the optimum is proved unique.
    """
    basis = h.getBasis()
    if not basis.valid:
        return False, False
    solution = h.getSolution()
    basic = int(highspy.HighsBasisStatus.kBasic)
    nonbasic = (int(highspy.HighsBasisStatus.kLower), int(highspy.HighsBasisStatus.kUpper))
    col_status = np.fromiter((int(s) for s in basis.col_status), dtype=np.int8, count=lp.num_col)
    row_status = np.fromiter((int(s) for s in basis.row_status), dtype=np.int8, count=lp.num_row)
    if not np.isin(col_status, (basic, *nonbasic)).all():
        return False, False
    if not np.isin(row_status, (basic, *nonbasic)).all():
        return False, False
    x = np.asarray(solution.col_value)
    act = np.asarray(solution.row_value)
    inside_col = (x > lp.col_lower + UNIQUE_PRIMAL) & (x < lp.col_upper - UNIQUE_PRIMAL)
    inside_row = (act > lp.row_lower + UNIQUE_PRIMAL) & (act < lp.row_upper - UNIQUE_PRIMAL)
    prices = bool(inside_col[col_status == basic].all() and inside_row[row_status == basic].all())
    free_col = lp.col_lower == lp.col_upper  # a fixed column's reduced cost is free
    free_row = lp.row_lower == lp.row_upper  # so is an equality row's dual
    d = np.abs(np.asarray(solution.col_dual))
    y = np.abs(np.asarray(solution.row_dual))
    tight_col = (col_status != basic) & ~free_col
    tight_row = (row_status != basic) & ~free_row
    dispatch = bool((d[tight_col] > UNIQUE_DUAL).all() and (y[tight_row] > UNIQUE_DUAL).all())
    return dispatch, prices


LAZY_MAX_GROUPS_PER_BUS = 4.0
"""Solve with the network bounds left out first (:func:`solve_lp`) only up to this many order
groups per bus: with more, HiGHS's presolve substitutes the then free flows and fills rows in
with every group below them (measured: 0.03 s -> 1.5 s on a 44-bus feeder with 10,000 orders)."""
LAZY_MAX_ROUNDS = 10
"""Rounds of put-back bounds before the full LP decides, once (measured on the congested
benchmark books: at most 4)."""


def highs_for(
    lp: LpData,
    options: ClearingOptions,
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
) -> highspy.Highs:
    """A fresh HiGHS instance holding ``lp`` with the given column bounds.

    Parameters
    ----------
    lp : LpData
        The LP (:func:`market.clearing.lp.build_lp`).
    options : ClearingOptions
        ``solver`` and the iteration limits (``time_limit`` only with a wall-clock
        budget: :meth:`ClearingOptions.highs_options`); one thread, no output.
    lower, upper : ndarray of float
        Column bounds to use instead of the LP's own (the lazy network bounds).

    Returns
    -------
    highspy.Highs
        Ready to ``run()``.
    """
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    for name, value in options.highs_options().items():
        h.setOptionValue(name, value)
    model = highspy.HighsLp()
    model.num_col_ = lp.num_col
    model.num_row_ = lp.num_row
    model.sense_ = highspy.ObjSense.kMaximize
    model.col_cost_ = lp.col_cost
    model.col_lower_ = lower
    model.col_upper_ = upper
    model.row_lower_ = lp.row_lower
    model.row_upper_ = lp.row_upper
    model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    model.a_matrix_.num_col_ = lp.num_col
    model.a_matrix_.num_row_ = lp.num_row
    model.a_matrix_.start_ = lp.a_start
    model.a_matrix_.index_ = lp.a_index
    model.a_matrix_.value_ = lp.a_value
    h.passModel(model)
    return h


def _deepest(network: NetworkModel, violated: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The violated buses none of whose children is violated (radial feeders; all on a mesh).

    Along a feeder the squared voltage moves monotonically with the flows between, so a band
    broken along a path is broken worst at its far end: bounding the far ends first mostly
    brings the rest of the path inside, and a round that does not puts those back next. The
    bounds kept stay few, which keeps the AC loop's later solves (that start with them)
    cheap: measured on an evening book, 447 voltage bounds instead of 3,228, the later solves
    0.11 s instead of 0.30 s.
    """
    if not violated.any() or network.meshed is not None:
        return violated
    child_violated = np.zeros(network.n_bus, dtype=bool)
    child_violated[network.from_bus[violated[network.to_bus]]] = True
    return violated & ~child_violated


def solve_lp(
    lp: LpData, options: ClearingOptions, start: NDArray[np.bool_] | None = None
) -> SolveOutcome:
    """Solve ``lp`` with highspy within ``options``' iteration limits; read values only if ok.

    Lazy network bounds: few of the thermal and voltage bounds bind, and while they are
    finite HiGHS's presolve cannot eliminate the flow and voltage columns. So (on books with
    at most :data:`LAZY_MAX_GROUPS_PER_BUS` groups per bus) the LP is first solved with the
    branch-flow and voltage bounds left out (slack voltage kept; those in ``start`` kept),
    then again, warm-started from the last basis (HiGHS's dual simplex), with the bounds the
    solution violates put back (every violated flow; of the violated voltages, in the first
    round those at the far end of each broken path, :func:`_deepest`), until none is
    violated. That optimum is feasible for the full LP and so optimal for it (same objective;
    the canonical rules of :mod:`market.clearing.unique` then choose among the optima). After
    :data:`LAZY_MAX_ROUNDS` rounds, or any status but optimal, the full LP decides, fresh.
    ``solve_s`` adds up every ``run()``; ``lazy`` says which bounds were needed (the next
    solve of the same book passes them as ``start``).

    Parameters
    ----------
    lp : LpData
        The LP (:func:`market.clearing.lp.build_lp`).
    options : ClearingOptions
        HiGHS's ``solver`` and iteration limits per run (and ``time_limit_s`` [s] per run
        only with a wall-clock budget).
    start : ndarray of bool, optional
        Columns whose bounds to keep from the first run (a previous outcome's
        ``lazy.kept`` for the same book; ignored when its length differs).

    Returns
    -------
    SolveOutcome
        Accepted energy per group [kWh], grid exchange [kWh] and balance duals
        [currency / kWh], or only the status when it is not ok.
    """
    p0 = lp.col_p0
    lazy = lp.n_groups <= LAZY_MAX_GROUPS_PER_BUS * lp.network.n_bus
    fell_back = False
    kept = np.ones(lp.num_col, dtype=bool)
    if lazy:
        kept[p0:] = False
        kept[lp.col_v0 + lp.network.slack] = True
        if start is not None and len(start) == lp.num_col:
            kept |= start
    started_with = int(kept[p0:].sum()) - 1 if lazy else lp.num_col - p0
    lower = np.where(kept, lp.col_lower, -np.inf)
    upper = np.where(kept, lp.col_upper, np.inf)
    v0 = lp.col_v0
    elapsed = 0.0
    added: list[int] = []
    h = highs_for(lp, options, lower, upper)
    runs = 0
    while True:
        started = time.perf_counter()
        h.run()
        elapsed += time.perf_counter() - started
        runs += 1
        if not lazy:
            break
        if not highs_status_of(h.getModelStatus()).is_ok or len(added) == LAZY_MAX_ROUNDS:
            # anything unexpected: the full LP decides, once, fresh
            lazy, fell_back = False, True
            kept[:] = True
            h = highs_for(lp, options, lp.col_lower, lp.col_upper)
            continue
        x = np.asarray(h.getSolution().col_value)
        bad = ~kept & ((x < lp.col_lower - 1e-9) | (x > lp.col_upper + 1e-9))
        if not added:  # the first round's many: their far ends (later rounds: every one)
            bad[v0:] = _deepest(lp.network, bad[v0:])
        violated = np.flatnonzero(bad)
        if not len(violated):
            break
        kept[violated] = True
        added.append(len(violated))
        # warm-started from the last basis (the first hot start after a presolved run
        # re-factorises the basis: 0.15-0.4 s on the MV/LV feeders, later ones 5-15 ms; a
        # fresh presolved solve per round measured 0.08-0.15 s each, slower overall in the
        # same benchmark: benchmarks/RESULTS.md, issue 14)
        h.changeColsBounds(
            len(violated),
            violated.astype(np.int32),
            lp.col_lower[violated],
            lp.col_upper[violated],
        )
    lazy_report = LazyBounds(
        kept=kept,
        runs=runs,
        started_with=started_with,
        added=tuple(added),
        full=fell_back,
    )
    model_status = h.getModelStatus()
    status = highs_status_of(model_status)
    if not status.is_ok:
        failed = SolveOutcome.failed(status, h.modelStatusToString(model_status), elapsed)
        return dataclasses.replace(failed, lazy=lazy_report)
    solution = h.getSolution()
    x = np.asarray(solution.col_value)
    duals = np.asarray(solution.row_dual)
    ng = lp.n_groups
    unique_dispatch, unique_prices = unique_optimum(lp, h)
    return SolveOutcome(
        status=status,
        termination=h.modelStatusToString(model_status),
        solver_version=solver_version(),
        solve_s=elapsed,
        accepted_kwh=x[:ng].copy(),
        grid_import_kwh=float(x[ng]),
        grid_export_kwh=float(x[ng + 1]),
        balance_duals=duals[: lp.network.n_bus].copy(),
        objective=float(h.getInfo().objective_function_value),
        col_value=x.copy(),
        lazy=lazy_report,
        unique_dispatch=unique_dispatch,
        unique_prices=unique_prices,
        row_dual=duals.copy(),
    )
