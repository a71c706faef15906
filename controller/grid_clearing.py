"""Clear an order book on a feeder and prove the result with an AC power flow.

The one place that calls both the market (:func:`market.clearing.clear`) and the grid
(``grid_models``); ``peergrid clear`` (:mod:`controller.clearing_job`), the interval cycle
(:mod:`controller.cycle`) and ``benchmarks/clearing.py`` clear through :func:`clear_on_grid`.

The loop (at most ``max_iterations`` solves, default 5):

1. clear the book on the linear model (:func:`market.clearing.clear`);
2. run pandapower's AC power flow of the cleared dispatch;
3. if every limit holds within tolerance (0.001 p.u., 0.5 % loading) against the *effective*
   limits (the asked band, widened only where the base case already violated it), the result
   is AC-feasible; done, unless the AC losses differ from the LP's by more than
   :data:`LOSS_TOLERANCE` of the traded energy, then re-linearise (4) and solve again, keeping
   this result if the next one is not AC-feasible;
4. otherwise re-linearise at the cleared dispatch (:func:`grid_models.dispatch.relinearise`:
   the losses are linearised halfway between the base case's and the cleared flows, the
   voltage offset becomes ``vm_ac² − v_model`` at the cleared dispatch, and each overloaded
   branch's limit shrinks by ``limit / loading``); go to 1.

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

from grid_models.dispatch import dispatch_of, relinearise
from grid_models.errors import PowerFlowFailed
from grid_models.grids import Grid
from grid_models.linear import LinearGrid
from grid_models.powerflow import summarise
from market.clearing import ClearingOptions, clear, empty_result
from market.domain import ClearingResult, ClearingStatus, GridCheck, OrderBook

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
        The interval's orders (energy [Wh], limit prices [token base units / kWh]).
    options : ClearingOptions
        Tariffs [token base units / kWh], mechanism, solver settings and the time budget
        ``time_limit_s`` [s] of the whole loop.
    max_iterations : int
        Solves allowed before the fallback [-].

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
    return empty_result(book, status, reason).with_check(base_check, iterations)
