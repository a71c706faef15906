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

**Iteration counts decide, not the wall clock.** The loop is bounded by ``max_iterations``
solves and each solve by HiGHS's iteration limits (``options.simplex_iteration_limit``,
``options.ipm_iteration_limit``); with ``options.time_limit_s`` None (the default, and every
re-clear: :func:`reclear_options`) nothing reads a clock, so a slow machine gets the same
result, to the bit. An iteration-limit stop is a SOLVER_ERROR, the same on any machine.

**The production wall-clock budget.** With ``options.time_limit_s`` set (the cycle sets the
site's ``solver_time_limit_s``), the budget is checked before each solve and each AC check
(:func:`_clock`, outside the solver) and HiGHS gets the time left as its ``time_limit``. A
budget that runs out stops the loop with the status TIME_LIMIT (the only way to get it), the
grid-only fallback and a reason starting :data:`WALL_CLOCK_STOP` (``stopped by the wall-clock
budget of 10 s after 2 solve(s) (...)``). While the budget lasts it decides nothing, so the
result is the deterministic one. ``peergrid audit verify`` accepts a recorded TIME_LIMIT as
what happened (a re-clear is not expected to reproduce it) and says so.

If no AC-feasible dispatch is found within the iterations, the documented fallback is **grid
only**: nothing is accepted, every participant deals with the upstream grid at the tariffs
(through imbalance settlement), the status is INFEASIBLE (SOLVER_ERROR, TIME_LIMIT) and the
reason names the last violation. The result always carries the AC check of the dispatch it
stands for (the base case for the fallback) and the number of solves.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import time
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from grid_models.dispatch import dispatch_of, relinearise
from grid_models.errors import PowerFlowFailed
from grid_models.grids import Grid
from grid_models.linear import LinearGrid
from grid_models.powerflow import summarise
from market.clearing import ClearingOptions, clear, empty_result
from market.clearing.status import ITERATION_LIMIT_TERMINATIONS
from market.domain import ClearingResult, ClearingStatus, GridCheck, OrderBook

MAX_ITERATIONS = 5
"""Solves the AC loop may take before the fallback [-] (recorded as ``max_iterations``)."""

WALL_CLOCK_STOP = "stopped by the wall-clock budget"
"""How the reason of every TIME_LIMIT outcome starts."""

_clock: Callable[[], float] = time.monotonic
"""The clock of the wall-clock budget [s]; read only when a budget is set."""

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
        Tariffs [token base units / kWh], mechanism, solver settings, HiGHS's iteration
        limits [iterations] and the wall-clock budget ``time_limit_s`` [s] of the whole loop
        (None: none, the deterministic path).
    max_iterations : int
        Solves allowed before the fallback [-].

    Returns
    -------
    ClearingResult
        With ``check`` (AC figures against the asked limits) and ``iterations`` set.
    """
    budget_s = options.time_limit_s
    deadline = None if budget_s is None else _clock() + budget_s
    network = linear.network
    notes = " ".join(network.notes)
    line_limits, trafo_limits = linear.effective_loading_limits()
    last_problem = ""
    solves = 0
    passed: tuple[ClearingResult, GridCheck, int] | None = None
    last_gap = float("inf")

    def wall_clock_stop(done: int, why: str) -> ClearingResult:
        return _fallback(
            grid,
            linear,
            book,
            ClearingStatus.TIME_LIMIT,
            f"{WALL_CLOCK_STOP} of {budget_s:g} s after {done} solve(s) ({why}); a re-clear "
            "is not expected to reproduce this outcome",
            done,
            notes,
        )

    for iteration in range(1, max_iterations + 1):
        solve_options = options
        if deadline is not None:
            left = deadline - _clock()
            if left <= 0:
                return wall_clock_stop(iteration - 1, last_problem or "before solving")
            solve_options = dataclasses.replace(options, time_limit_s=left)
        solves = iteration
        result = clear(book, network, solve_options)
        if result.status is ClearingStatus.TIME_LIMIT:  # only HiGHS's time_limit gives it
            return wall_clock_stop(iteration, f"HiGHS stopped by the time left: {result.reason}")
        if not result.is_ok:
            if passed:
                break
            return _fallback(
                grid, linear, book, result.status, _why(result, options), iteration, notes
            )
        if deadline is not None and _clock() > deadline:
            return wall_clock_stop(iteration, "before the AC check of the last solve")
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
            ):
                break
            last_gap = gap
            last_problem = f"AC losses {gap:.0f} Wh off the linear model's, correcting"
            network = relinearise(network, linear, load_w - sgen_w, state, effective)
            continue
        worst = effective.violations[0]
        last_problem = (
            f"{worst.kind} at {worst.element}: {worst.value:.4f} vs limit {worst.limit:.4f}"
        )
        if passed:
            break  # the loss correction broke a limit: keep the AC-feasible result before it
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


def _why(result: ClearingResult, options: ClearingOptions) -> str:
    """A failed solve's reason, naming HiGHS's iteration limits when they stopped it."""
    termination = result.solver.termination if result.solver is not None else ""
    if termination in ITERATION_LIMIT_TERMINATIONS:
        return (
            f"HiGHS stopped at its iteration limit (simplex {options.simplex_iteration_limit}, "
            f"ipm {options.ipm_iteration_limit}; the same on any machine): {result.reason}"
        )
    return result.reason


def clearing_limits(
    options: ClearingOptions, max_iterations: int = MAX_ITERATIONS
) -> dict[str, int | float | None]:
    """The limits a clearing ran under, as an audit record's ``params`` name them.

    Parameters
    ----------
    options : ClearingOptions
        The clearing's options.
    max_iterations : int
        The AC loop's solves allowed [-].

    Returns
    -------
    dict
        ``max_iterations`` [-], ``simplex_iteration_limit`` and ``ipm_iteration_limit``
        [iterations], ``time_limit_s`` (the wall-clock budget [s], None for none).
    """
    return {
        "max_iterations": max_iterations,
        "simplex_iteration_limit": options.simplex_iteration_limit,
        "ipm_iteration_limit": options.ipm_iteration_limit,
        "time_limit_s": options.time_limit_s,
    }


def reclear_options(
    options: ClearingOptions, params: Mapping[str, Any] | None
) -> tuple[ClearingOptions, int]:
    """The options and AC-loop limit a re-clear uses: the recorded limits, no wall clock.

    Parameters
    ----------
    options : ClearingOptions
        The options otherwise in force (tariffs, mechanism, ...).
    params : mapping, optional
        An audit record's ``params``; its ``simplex_iteration_limit``,
        ``ipm_iteration_limit`` [iterations] and ``max_iterations`` [-] are used where
        present (records of earlier releases: the defaults of this one).

    Returns
    -------
    tuple of (ClearingOptions, int)
        ``options`` without a wall-clock budget and with the recorded iteration limits;
        the AC loop's solves allowed.
    """
    params = params or {}
    deterministic = dataclasses.replace(
        options,
        time_limit_s=None,
        simplex_iteration_limit=int(
            params.get("simplex_iteration_limit", options.simplex_iteration_limit)
        ),
        ipm_iteration_limit=int(params.get("ipm_iteration_limit", options.ipm_iteration_limit)),
    )
    return deterministic, int(params.get("max_iterations", MAX_ITERATIONS))


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
