r"""Unique dispatch and unique nodal prices for a book, whatever solved its LP.

An LP optimum need not be unique: with two groups at the same limit price, or an order priced
exactly at a tariff, a whole *face* of dispatches is optimal (primal degeneracy), and where no
order is marginal at a bus (supply exactly meets demand, a flow pinned at its limit) a whole
face of duals is optimal, so any price in a range clears the book (dual degeneracy). Which
vertex a solver returns then depends on its path: the lazy-bounds solve, the full LP and the
pyomo model returned different, equally optimal prices (and dispatches) for the same book.

:func:`canonical_outcome` replaces whatever optimum the solver returned by the one chosen by
two strictly convex rules, each a HiGHS QP over the *full* LP's optimal face (so the lazy
bounds, the engine and the solver's vertex no longer matter):

1. **Prices** (the dual optimal face). With :math:`x^0` any primal optimum (the solver's),
   the dual optimal face is dual feasibility plus complementary slackness with :math:`x^0`
   (maximisation; :math:`d = c - A^\top y` the reduced costs, :math:`y` the row duals):
   a column strictly between its bounds has :math:`d_j = 0`, one at its lower bound
   :math:`d_j \le 0`, at its upper bound :math:`d_j \ge 0` (a fixed column: free); a ranged
   row strictly inside has :math:`y_i = 0`, at its upper end :math:`y_i \ge 0`, at its lower
   end :math:`y_i \le 0` (equality rows: free). Over that face, the bus prices
   :math:`\pi_b = -y_b` (balance rows) are chosen closest in least squares to the reference
   price :math:`\bar\pi` (:func:`reference_price`: the midpoint of the import and export
   tariffs, rounded half to even)::

       min_y  ½ Σ_b (−y_b − π̄)²   over the dual optimal face

   The objective is strictly convex in the balance duals, so the prices are unique (the other
   rows' duals are not published). They are then rounded half to even
   (:func:`market.clearing.pricing.nodal_prices`).
2. **Dispatch** (the primal optimal face). With :math:`y^*` the dual just chosen, the primal
   optimal face is primal feasibility plus complementary slackness with :math:`y^*`: a column
   with :math:`d^*_j \ne 0` stays at the bound its sign names, a ranged row with
   :math:`y^*_i \ne 0` at the end its sign names. Over that face, first the most energy
   accepted by orders, :math:`V^* = \max \sum_g a_g` (an LP: volume maximisation, so a bid at
   exactly the import tariff, such as inflexible demand, is served), then at that volume::

       min_x  ½ Σ_g (E_g − a_g)² / E_g + ½ (g_imp² + g_exp²) / E_grid

   (:math:`E_g` the group's offered energy [kWh], :math:`E_{grid}` the whole book's offered
   energy [kWh]): tied orders are curtailed pro rata to their size, and the grid trades no
   more than needed. Strictly convex in the accepted energies and the grid exchange, which
   fix the flows and voltages of a radial feeder.

When the solver's optimal basis is primal non-degenerate, its duals are the only optimal
duals and rule 1 would return them; when it is dual non-degenerate, its dispatch is the only
optimal dispatch and rule 2 would return it (any optimal dual defines the same primal optimal
face): each rule is skipped where its face is a point
(:func:`market.clearing.solve.unique_optimum`; most books skip both, congested ones usually
one; the pyomo path, which reports no basis, always runs both).

The price QP runs first in thousands of token base units, other scales if HiGHS fails
(:data:`PRICE_SCALES`), so that its absolute tolerances (1e-7) stay far below a base unit.
A non-zero reduced cost or dual means more than :data:`ACTIVE_DUAL` base units / kWh; a
column is at a bound within :data:`ACTIVE_PRIMAL` kWh. Should the price QP fail, the solver's
own optimum is kept; should only the dispatch rule fail, the canonical prices stand with the
solver's dispatch; either way the result's reason says so (random search: none in 1,175
feasible random radial feeders and books; on meshed feeders, whose LP mixes kWh with
per-unit angle and voltage columns, the dispatch rule's face can come out infeasible in books
where nothing trades, while the dispatch is unique anyway).
"""

from __future__ import annotations

import dataclasses
import time

import highspy
import numpy as np
from numpy.typing import NDArray

from market.clearing.lp import LpData
from market.clearing.options import ClearingOptions
from market.clearing.pricing import CURRENCY_PER_UNIT, reference_price
from market.clearing.solve import SolveOutcome

ACTIVE_PRIMAL = 1e-7
"""A column or row within this of a bound is at it [kWh]."""

ACTIVE_DUAL = 1e-4
"""A reduced cost or row dual beyond this is non-zero [token base units / kWh]."""

FEASIBLE = 1e-7
"""Largest violation of a QP's bounds and rows accepted when HiGHS doubts its own optimum."""

VOLUME_SLACK = 1e-9
"""How far below the most volume the pro-rata QP may go (HiGHS's LP is this exact) [kWh]."""

QP_ITERATIONS_PER_SIZE = 20
"""HiGHS's ``qp_iteration_limit`` is this many per column and row, plus 1,000 (an iteration
count, never a clock, decides when a QP gives up)."""

PRICE_SCALES = (1e-3, 1e-6, 1e-2, 1.0)
"""The price QP's variables are duals scaled by these (``w = u * scale``: thousands of base
units first), tried in turn until HiGHS solves one: its active-set QP calls some feasible faces
infeasible (or runs out of iterations) at one scale and not at another."""

INF = highspy.kHighsInf


@dataclasses.dataclass(frozen=True, slots=True)
class Canonical:
    """The canonical optimum, or why the solver's was kept.

    Parameters
    ----------
    outcome : SolveOutcome
        The outcome with the canonical dispatch and balance duals (the input when ``note``).
    note : str
        Empty, or why the solver's own optimum was kept.
    qp_s : float
        Time spent in both QPs [s] (reported, never decides anything).
    """

    outcome: SolveOutcome
    note: str
    qp_s: float


def _transpose(lp: LpData) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.float64]]:
    """``A`` in row-wise form = ``Aᵀ`` column-wise: (start, index, value) over the rows."""
    col_of = np.repeat(np.arange(lp.num_col, dtype=np.int64), np.diff(lp.a_start))
    order = np.lexsort((col_of, lp.a_index))
    rows = lp.a_index[order]
    start = np.searchsorted(rows, np.arange(lp.num_row + 1)).astype(np.int32)
    return start, col_of[order].astype(np.int32), lp.a_value[order]


def _activity(lp: LpData, x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row activities ``A x``."""
    col_of = np.repeat(np.arange(lp.num_col), np.diff(lp.a_start))
    act = np.bincount(lp.a_index, weights=lp.a_value * x[col_of], minlength=lp.num_row)
    return act.astype(np.float64)


def _solve_qp(
    num_col: int,
    num_row: int,
    cost: NDArray[np.float64],
    bounds: tuple[NDArray[np.float64], NDArray[np.float64]],
    rows: tuple[NDArray[np.float64], NDArray[np.float64]],
    matrix: tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.float64]],
    hessian_diag: NDArray[np.float64],
    regularization: float = 1e-7,
) -> tuple[bool, str, NDArray[np.float64]]:
    """Minimise ``½ xᵀ diag(h) x + cᵀ x`` over bounds and ranged rows (column-wise matrix).

    One thread, no output, no time limit; ``regularization`` is HiGHS's
    ``qp_regularization_value`` (its default 1e-7 suits the price QP; the dispatch QP uses 0:
    with 1e-7 the active-set solver rejected its own optimum on some faces, while 0 made it
    call some price QPs unbounded).

    Returns
    -------
    ok : bool
        Whether HiGHS reports an optimum.
    status : str
        HiGHS's model status in words.
    x : ndarray of float
        The solution (meaningful only when ``ok``).
    """
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("qp_regularization_value", regularization)
    h.setOptionValue("qp_iteration_limit", QP_ITERATIONS_PER_SIZE * (num_col + num_row) + 1000)
    model = highspy.HighsModel()
    lp = model.lp_
    lp.num_col_ = num_col
    lp.num_row_ = num_row
    lp.sense_ = highspy.ObjSense.kMinimize
    lp.col_cost_ = cost
    lp.col_lower_, lp.col_upper_ = bounds
    lp.row_lower_, lp.row_upper_ = rows
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_col_ = num_col
    lp.a_matrix_.num_row_ = num_row
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = matrix
    nz = np.flatnonzero(hessian_diag)
    if len(nz):  # else an LP (HiGHS then runs its simplex)
        hess = model.hessian_
        hess.dim_ = num_col
        hess.format_ = highspy.HessianFormat.kTriangular
        counts = np.zeros(num_col + 1, dtype=np.int64)
        counts[nz + 1] = 1
        hess.start_ = np.cumsum(counts).astype(np.int32)
        hess.index_ = nz.astype(np.int32)
        hess.value_ = hessian_diag[nz]
    h.passModel(model)
    h.run()
    status = h.getModelStatus()
    x = np.asarray(h.getSolution().col_value, dtype=float)
    ok = status == highspy.HighsModelStatus.kOptimal
    if status == highspy.HighsModelStatus.kSolveError and len(x) == num_col:
        # HiGHS 1.15's active-set QP sometimes reports optimality and then rejects it for a
        # primal infeasibility of ~1e-5 that the returned point does not have (seen on 1 in
        # ~400 random feeders): the point is taken when our own check finds it feasible.
        ok = _violation(x, bounds, rows, matrix) <= FEASIBLE
    return ok, h.modelStatusToString(status), x


def _violation(
    x: NDArray[np.float64],
    bounds: tuple[NDArray[np.float64], NDArray[np.float64]],
    rows: tuple[NDArray[np.float64], NDArray[np.float64]],
    matrix: tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.float64]],
) -> float:
    """Largest bound or row violation of ``x`` (column-wise matrix), in the rows' units."""
    start, index, value = matrix
    col_of = np.repeat(np.arange(len(x)), np.diff(start))
    act = np.bincount(index, weights=value * x[col_of], minlength=len(rows[0]))
    parts = [bounds[0] - x, x - bounds[1], rows[0] - act, act - rows[1]]
    return float(max((float(np.max(p, initial=0.0)) for p in parts), default=0.0))


def canonical_prices(
    lp: LpData, x0: NDArray[np.float64], reference: int
) -> tuple[bool, str, NDArray[np.float64]]:
    """The row duals on the dual optimal face closest to ``reference`` (rule 1).

    Parameters
    ----------
    lp : LpData
        The full LP.
    x0 : ndarray of float
        Any optimal solution of it, every column [kWh, kW, p.u.²].
    reference : int
        The reference price [token base units / kWh].

    Returns
    -------
    ok : bool
        Whether the QP found its optimum.
    status : str
        HiGHS's status in words.
    u : ndarray of float
        Every row's dual [token base units per unit of the row] (``-u`` on a balance row is
        the bus's price).
    """
    lo, up = lp.col_lower, lp.col_upper
    at_lo = np.abs(x0 - lo) <= ACTIVE_PRIMAL
    at_up = np.abs(x0 - up) <= ACTIVE_PRIMAL
    fixed = lo == up
    c = lp.col_cost / CURRENCY_PER_UNIT
    # rows of the QP = columns of the LP: (Aᵀu)_j against c_j
    q_lo = np.where(at_lo & ~at_up, c, -INF)
    q_up = np.where(at_up & ~at_lo, c, INF)
    inside = ~at_lo & ~at_up
    q_lo[inside] = c[inside]
    q_up[inside] = c[inside]
    q_lo[fixed] = -INF
    q_up[fixed] = INF
    # columns of the QP = rows of the LP: the sign of u_i
    act = _activity(lp, x0)
    equality = lp.row_lower == lp.row_upper
    r_lo_hit = np.abs(act - lp.row_lower) <= ACTIVE_PRIMAL
    r_up_hit = np.abs(act - lp.row_upper) <= ACTIVE_PRIMAL
    u_lo = np.where(r_up_hit, 0.0, -INF)
    u_up = np.where(r_lo_hit, 0.0, INF)
    u_lo[~r_lo_hit & ~r_up_hit] = 0.0
    u_up[~r_lo_hit & ~r_up_hit] = 0.0
    u_lo[equality] = -INF
    u_up[equality] = INF
    n_bus = lp.network.n_bus
    hess = np.zeros(lp.num_row)
    hess[:n_bus] = 1.0
    cost = np.zeros(lp.num_row)
    cost[:n_bus] = float(reference)  # ½(−u − π̄)² = ½u² + π̄u + const; scaled below
    matrix = _transpose(lp)
    ok, status, w, s = False, "", np.zeros(lp.num_row), 1.0
    for s in PRICE_SCALES:  # the first that HiGHS solves (the same on every machine)
        ok, status, w = _solve_qp(
            lp.num_row, lp.num_col, cost * s, (u_lo, u_up), (q_lo * s, q_up * s), matrix, hess
        )
        if ok:
            break
    return ok, status, w / s


def _with_row(
    lp: LpData, cols: NDArray[np.int64]
) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.float64]]:
    """``lp``'s matrix (column-wise) with one more row: the sum of the columns ``cols``."""
    col_of = np.repeat(np.arange(lp.num_col, dtype=np.int64), np.diff(lp.a_start))
    c = np.concatenate([col_of, cols])
    r = np.concatenate([lp.a_index.astype(np.int64), np.full(len(cols), lp.num_row)])
    v = np.concatenate([lp.a_value, np.ones(len(cols))])
    order = np.lexsort((r, c))
    start = np.searchsorted(c[order], np.arange(lp.num_col + 1)).astype(np.int32)
    return start, r[order].astype(np.int32), v[order]


def canonical_dispatch(lp: LpData, u: NDArray[np.float64]) -> tuple[bool, str, NDArray[np.float64]]:
    """The primal optimum on the face complementary to ``u`` chosen by rule 2.

    First the most energy accepted by orders (an LP over the face), then, at that volume, the
    accepted energies closest to full acceptance weighted by size, the grid closest to zero
    (a QP).

    Parameters
    ----------
    lp : LpData
        The full LP.
    u : ndarray of float
        An optimal dual (:func:`canonical_prices`) [token base units per unit of each row].

    Returns
    -------
    ok : bool
        Whether both found their optimum.
    status : str
        HiGHS's status in words (of the one that failed).
    x : ndarray of float
        Every column [kWh, kW, p.u.²].
    """
    col_of = np.repeat(np.arange(lp.num_col), np.diff(lp.a_start))
    aty = np.bincount(col_of, weights=lp.a_value * u[lp.a_index], minlength=lp.num_col)
    d = lp.col_cost / CURRENCY_PER_UNIT - aty
    lo, up = lp.col_lower.copy(), lp.col_upper.copy()
    pos, neg = d > ACTIVE_DUAL, d < -ACTIVE_DUAL
    lo[pos] = up[pos]  # maximisation: d > 0 only at the upper bound
    up[neg] = lo[neg]
    r_lo, r_up = lp.row_lower.copy(), lp.row_upper.copy()
    r_lo[u > ACTIVE_DUAL] = r_up[u > ACTIVE_DUAL]
    r_up[u < -ACTIVE_DUAL] = r_lo[u < -ACTIVE_DUAL]
    ng = lp.n_groups
    orders = np.arange(ng, dtype=np.int64)
    # (a) the most energy accepted by orders
    volume = np.zeros(lp.num_col)
    volume[:ng] = -1.0
    matrix = (lp.a_start, lp.a_index, lp.a_value)
    ok, status, x = _solve_qp(
        lp.num_col, lp.num_row, volume, (lo, up), (r_lo, r_up), matrix, np.zeros(lp.num_col)
    )
    if not ok or ng == 0:
        return ok, status, x
    most = float(x[:ng].sum())
    # (b) at that volume: ½ Σ (E_g − a_g)² / E_g + ½ (g_imp² + g_exp²) / E_grid
    sizes = np.maximum(lp.col_upper[:ng], 1e-6)  # E_g [kWh], never 0 for a valid book
    hess = np.zeros(lp.num_col)
    hess[:ng] = 1.0 / sizes
    hess[ng : ng + 2] = 1.0 / max(float(sizes.sum()), 1e-3)
    cost = np.zeros(lp.num_col)
    cost[:ng] = -1.0
    rows = (np.append(r_lo, most - VOLUME_SLACK), np.append(r_up, INF))
    return _solve_qp(
        lp.num_col, lp.num_row + 1, cost, (lo, up), rows, _with_row(lp, orders), hess, 0.0
    )


def canonical_outcome(lp: LpData, outcome: SolveOutcome, options: ClearingOptions) -> Canonical:
    """``outcome`` with the canonical dispatch and prices of the module docstring.

    Parameters
    ----------
    lp : LpData
        The full LP of the book (its network bounds all in place).
    outcome : SolveOutcome
        An ok solution of it (or of the same LP in pyomo, or of its lazy relaxation), with
        every column's value in ``col_value``.
    options : ClearingOptions
        The tariffs (:func:`market.clearing.pricing.reference_price`).

    Returns
    -------
    Canonical
        The unique optimum, or ``outcome`` itself with a note when a QP failed.
    """
    if outcome.unique:  # the only optimum: the rules would return it
        return Canonical(outcome, "", 0.0)
    started = time.perf_counter()
    if outcome.unique_prices and len(outcome.row_dual) == lp.num_row:
        u = outcome.row_dual / CURRENCY_PER_UNIT  # the only optimal duals: rule 1 returns them
    else:
        reference = reference_price(options.import_price, options.export_price)
        ok, status, u = canonical_prices(lp, outcome.col_value, reference)
        if not ok:
            note = f"prices are the solver's duals (the unique-price QP ended {status})"
            return Canonical(outcome, note, time.perf_counter() - started)
    note = ""
    if outcome.unique_dispatch:
        x = outcome.col_value  # the only optimal dispatch: rule 2 returns it
    else:
        ok, status, x = canonical_dispatch(lp, u)
        if not ok:  # the prices stand (rule 1 does not depend on rule 2)
            note = f"the dispatch is the solver's (the unique-dispatch program ended {status})"
            x = outcome.col_value
    ng = lp.n_groups
    canonical = dataclasses.replace(
        outcome,
        accepted_kwh=x[:ng].copy(),
        grid_import_kwh=float(x[ng]),
        grid_export_kwh=float(x[ng + 1]),
        balance_duals=u[: lp.network.n_bus] * CURRENCY_PER_UNIT,
        col_value=x,
    )
    return Canonical(canonical, note, time.perf_counter() - started)
