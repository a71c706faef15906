"""Clear an order book on a feeder and prove the result with an AC power flow.

The loop (at most ``max_iterations`` solves, default 5):

1. clear the book on the linear model (:func:`market.clearing.clear`);
2. run pandapower's AC power flow of the cleared dispatch;
3. if every limit holds within tolerance (0.001 p.u., 0.5 % loading) against the *effective*
   limits (the asked band, widened only where the base case already violated it), the result
   is AC-feasible; done, unless the AC losses differ from the LP's by more than
   :data:`LOSS_TOLERANCE` of the traded energy, then re-linearise (4) and solve again, keeping
   this result if the next one is not AC-feasible;
4. otherwise re-linearise at the cleared dispatch: the losses are linearised halfway between
   the base case's and the cleared flows (exact incremental losses there), the voltage offset
   becomes ``vm_ac² − v_model`` at the cleared dispatch, and each overloaded branch's limit
   shrinks by ``limit / loading``; go to 1.

The cyclic garbage collector is paused for the call (:func:`_without_cyclic_gc`).

A time budget (``options.time_limit_s``, checked between steps, outside the solver, on top of
the solver's own limit) bounds the whole loop. If no AC-feasible dispatch is found within the
iterations or the budget, the documented fallback is **grid only**: nothing is accepted, every
participant deals with the upstream grid at the tariffs (through imbalance settlement), the
status is INFEASIBLE (or TIME_LIMIT) and the reason names the last violation. The result always
carries the AC check of the dispatch it stands for (the base case for the fallback) and the
number of solves.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np
from numpy.typing import NDArray

from grid_models.errors import PowerFlowFailed
from grid_models.grids import Grid
from grid_models.linear import LinearGrid
from grid_models.powerflow import AcState, failed_check, summarise
from market.clearing import ClearingOptions, clear, empty_result
from market.clearing.lp import linear_state
from market.domain import ClearingResult, ClearingStatus, GridCheck, OrderBook, Side
from market.network import NetworkModel

MAX_ITERATIONS = 5
LOSS_TOLERANCE = 1e-3
"""Re-solve once the AC check passes if the market's AC losses differ from the LP's by more than
this share of the traded energy (the first solve's losses are linearised at the base case's
flows and miss the quadratic term: measured up to 0.3 % of the traded energy, 0.7 % of welfare)."""

LOSS_TOLERANCE_WH = 10
"""... and by more than this [Wh] (a few Wh are rounding and the AC solver's tolerance)."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _without_cyclic_gc(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``func`` with Python's cyclic garbage collector paused.

    Reference counting still frees everything. Clearing allocates ~10 objects per order; with
    a pandapower net in the heap, the generation-2 collections they trigger cost 0.1-0.35 s
    at 10,000 orders.
    """

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return wrapper


def dispatch_of(
    result: ClearingResult, network: NetworkModel
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Extra load and generation [W] per model bus for the accepted orders of ``result``."""
    hours = result.interval.hours
    position = network.bus_index()
    load_w = np.zeros(network.n_bus)
    sgen_w = np.zeros(network.n_bus)
    for o in result.orders:
        if o.accepted_wh:
            target = load_w if o.side is Side.BUY else sgen_w
            target[position[o.bus]] += o.accepted_wh / hours
    return load_w, sgen_w


def check_result(grid: Grid, linear: LinearGrid, result: ClearingResult) -> GridCheck:
    """AC check of ``result``'s dispatch against the asked limits (what is reported)."""
    load_w, sgen_w = dispatch_of(result, linear.network)
    try:
        state = linear.checker.run(load_w, sgen_w)
    except PowerFlowFailed:
        return failed_check()
    return summarise(grid, state, linear.vm_min_pu, linear.vm_max_pu)


@_without_cyclic_gc
def clear_on_grid(
    grid: Grid,
    linear: LinearGrid,
    book: OrderBook,
    options: ClearingOptions,
    *,
    max_iterations: int = MAX_ITERATIONS,
) -> ClearingResult:
    """Clear ``book`` on ``grid`` with the AC validation loop of the module docstring.

    Parameters
    ----------
    grid : Grid
        The feeder with its base case set (the same one ``linear`` was built from).
    linear : LinearGrid
        Its linear model (:func:`grid_models.linear.build_linear_grid`).
    book : OrderBook
        The interval's orders.
    options : ClearingOptions
        Tariffs, mechanism, solver settings and the time budget [s].
    max_iterations : int
        Solves allowed before the fallback.

    Returns
    -------
    ClearingResult
        With ``check`` (AC figures against the asked limits) and ``iterations`` set.
    """
    started = time.perf_counter()
    network = linear.network
    notes = " ".join(network.notes)
    line_limits, trafo_limits = linear.effective_loading_limits()
    last_problem = ""
    solves = 0
    passed: tuple[ClearingResult, GridCheck, int] | None = None
    last_gap = float("inf")
    for iteration in range(1, max_iterations + 1):
        solves = iteration
        result = clear(book, network, options)
        if not result.is_ok:
            if passed:
                break
            return _fallback(grid, linear, book, result.status, result.reason, iteration, notes)
        load_w, sgen_w = dispatch_of(result, network)
        try:
            state = linear.checker.run(load_w, sgen_w)
        except PowerFlowFailed as exc:
            last_problem = str(exc)
            break  # a dispatch the AC model cannot solve: no point re-linearising at it
        eff_lo, eff_hi = linear.effective_limits(network)
        effective = summarise(
            grid, state, eff_lo, eff_hi, line_limits=line_limits, trafo_limits=trafo_limits
        )
        over_budget = time.perf_counter() - started > options.time_limit_s
        if not effective.violations:
            reported = summarise(grid, state, linear.vm_min_pu, linear.vm_max_pu)
            passed = (result, reported, iteration)
            # the LP's grid exchange vs the AC slack's change: the losses the LP missed
            ac_grid_wh = (state.slack_p_w - linear.base.slack_p_w) * book.interval.hours
            lp_grid_wh = result.grid_import_wh - result.grid_export_wh
            gap = abs(ac_grid_wh - lp_grid_wh)
            if (
                not network.losses  # a lossless model is wrong by design: nothing to correct
                or gap <= max(LOSS_TOLERANCE * result.cleared_wh, LOSS_TOLERANCE_WH)
                or gap >= last_gap  # the correction stopped helping
                or over_budget
            ):
                break
            last_gap = gap
            network = relinearise(network, linear, load_w - sgen_w, state, effective)
            continue
        worst = effective.violations[0]
        last_problem = (
            f"{worst.kind} at {worst.element}: {worst.value:.4f} vs limit {worst.limit:.4f}"
        )
        if passed:
            break  # the loss correction broke a limit: keep the AC-feasible result before it
        if over_budget:
            return _fallback(
                grid,
                linear,
                book,
                ClearingStatus.TIME_LIMIT,
                f"time budget of {options.time_limit_s} s spent after {iteration} solve(s) "
                f"({last_problem})",
                iteration,
                notes,
            )
        network = relinearise(network, linear, load_w - sgen_w, state, effective)
    if passed:
        result, reported, iteration = passed
        reason = f"{result.reason}; AC check passed after {iteration} solve(s)"
        if notes:
            reason += f"; {notes}"
        return dataclasses.replace(result, check=reported, iterations=solves, reason=reason)
    return _fallback(
        grid,
        linear,
        book,
        ClearingStatus.INFEASIBLE,
        f"no AC-feasible dispatch after {solves} solve(s) ({last_problem})",
        solves,
        notes,
    )


def relinearise(
    network: NetworkModel,
    linear: LinearGrid,
    market_load_w: NDArray[np.float64],
    state: AcState,
    check: GridCheck,
) -> NetworkModel:
    """Move the linear model's operating point towards the AC state of a cleared dispatch.

    ``market_load_w`` is the dispatch's net market load per model bus [W] (buys - sells).
    """
    injection = network.base_p_w - market_load_w
    flows_kw, _ = linear_state(network, injection)
    base_kw, _ = linear_state(network, network.base_p_w)
    # losses are linearised halfway between the base case's and the cleared flows: that
    # tangent has the secant's slope, so the LP's incremental losses (cleared minus base) are
    # exact at the cleared dispatch; a tangent at either end misses r dP^2 / S per branch
    moved = network.with_changes(p_op_w=(flows_kw + base_kw) / 2 * 1000.0)
    _, v_model = linear_state(moved, injection)
    offset = state.vm_at(linear.pp_index) ** 2 - v_model
    s_max = network.s_max_va.astype(float).copy()
    for v in check.violations:
        if v.kind in {"line_loading", "trafo_loading"} and v.value > 0:
            k = linear.branch_of_element.get((v.kind.split("_")[0], v.index))
            if k is not None:
                s_max[k] = min(s_max[k], network.s_max_va[k] * v.limit / v.value * 0.995)
    return moved.with_changes(v_offset_pu2=offset, s_max_va=s_max)


def _fallback(
    grid: Grid,
    linear: LinearGrid,
    book: OrderBook,
    status: ClearingStatus,
    why: str,
    iterations: int,
    notes: str,
) -> ClearingResult:
    """Grid-only fallback: accept nothing; the check is the base case's."""
    base_check = summarise(grid, linear.base, linear.vm_min_pu, linear.vm_max_pu)
    reason = f"{why}; fallback: grid only (no local trade)"
    if notes:
        reason += f"; {notes}"
    empty = empty_result(book, status, reason)
    return dataclasses.replace(empty, check=base_check, iterations=iterations)
