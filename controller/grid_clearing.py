"""Clear an order book on a feeder and prove the result with an AC power flow.

The one place that calls both the market (:class:`market.clearing.BookClearing`) and the grid
(``grid_models``); ``peergrid clear`` (:mod:`controller.clearing_job`), the interval cycle
(:mod:`controller.cycle`) and ``benchmarks/clearing.py`` clear through :func:`clear_on_grid`.

The loop (at most ``max_iterations`` solves, default 5), over one :class:`BookClearing` of the
book (its order groups made once; each solve starts with the network bounds the last needed):

1. solve the book on the linear model and round its canonical optimum to Wh
   (:meth:`BookClearing.solve`: the dispatch, no prices or trades yet);
2. run pandapower's AC power flow of that dispatch;
3. if every limit holds within tolerance (0.001 p.u., 0.5 % loading) against the *effective*
   limits (the asked band, widened only where the base case already violated it), the result
   is AC-feasible; done, unless the AC losses differ from the LP's by more than
   :data:`LOSS_TOLERANCE` of the energy the market moves (:data:`LOSS_BASIS`), then
   re-linearise (4) and solve again, keeping this result if the next one is not AC-feasible;
4. otherwise re-linearise at the cleared dispatch (:func:`grid_models.dispatch.relinearise`:
   on a radial feeder the losses are linearised halfway between the base case's and the
   cleared flows and the voltage offset becomes ``vm_ac² − v_model`` there; a meshed feeder's
   sensitivities are taken again at the dispatch's AC solution; either way each overloaded
   branch's limit shrinks by ``limit / loading``); go to 1.

The kept solve is then priced, its orders shared and matched into trades
(:meth:`BookClearing.result`), and its full AC summary (every bus and branch) attached: the
published dispatch is the one the AC power flow checked.

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
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import numpy as np
from numpy.typing import NDArray

from controller.errors import ConfigError
from grid_models.dispatch import relinearise
from grid_models.errors import PowerFlowFailed
from grid_models.grids import Grid
from grid_models.linear import LinearGrid
from grid_models.powerflow import AcState, summarise, violations
from market.clearing import BookClearing, ClearingOptions, Solved, empty_result
from market.clearing.status import ITERATION_LIMIT_TERMINATIONS
from market.domain import ClearingResult, ClearingStatus, OrderBook, Violation
from market.network import NetworkModel

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

LOSS_BASIS = "traded"
"""The traded energy :data:`LOSS_TOLERANCE` is a share of: the larger side of the market,
participants plus the grid (:attr:`market.clearing.Solved.traded_wh`). Recorded in each
interval's ``params`` as ``loss_basis``."""

LOSS_BASES = frozenset({"traded", "bought"})
"""``"bought"``, the participants' purchases alone, was the rule before issue 14: a market that
mostly sells to the grid then re-solved for a loss gap of 0.1 % of what it moved (up to two
more solves); kept so that earlier records re-clear as they were cleared."""


@dataclass(slots=True)
class SolveProfile:
    """One solve of the AC loop: what it did and where its time went (reported only).

    ``solved`` is the solve itself (its LP and outcome, with the lazy bounds' counts in
    ``solved.outcome.lazy``); times [s]: ``build_s`` the model, ``solve_s`` HiGHS's runs,
    ``rules_s`` the canonical rules and rounding to Wh
    (:func:`market.clearing.extract.quantities`, of which ``qp_s`` in the QPs), ``ac_s`` the
    AC power flow, ``check_s`` the comparison with the limits, ``relin_s`` the
    re-linearisation after it (0 on the last solve).
    """

    solved: Solved
    build_s: float
    solve_s: float
    rules_s: float
    qp_s: float
    ac_s: float = 0.0
    check_s: float = 0.0
    relin_s: float = 0.0


@dataclass(slots=True)
class LoopProfile:
    """Where one :func:`clear_on_grid` call spent its time (filled when passed to it).

    Timings only: nothing in the loop reads them. ``extract_s`` is the kept solve's prices,
    orders and trades, ``summary_s`` its full AC summary [s].
    """

    solves: list[SolveProfile] = field(default_factory=list)
    extract_s: float = 0.0
    summary_s: float = 0.0


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
    loss_basis: str = LOSS_BASIS,
    profile: LoopProfile | None = None,
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
    loss_basis : str
        The energy the loss tolerance is a share of (:data:`LOSS_BASES`; a re-clear passes
        the record's, :func:`recorded_loss_basis`).
    profile : LoopProfile, optional
        Filled with each solve's counts and timings (benchmarks; decides nothing).

    Returns
    -------
    ClearingResult
        With ``check`` (AC figures against the asked limits) and ``iterations`` set.

    Raises
    ------
    ConfigError
        If ``loss_basis`` is not a known rule (e.g. a record from a later release).
    """
    if loss_basis not in LOSS_BASES:
        msg = f"loss_basis {loss_basis!r} is not one of {sorted(LOSS_BASES)}"
        raise ConfigError(msg)
    budget_s = options.time_limit_s
    deadline = None if budget_s is None else _clock() + budget_s
    network = linear.network
    notes = " ".join(network.notes)
    line_limits, trafo_limits = linear.effective_loading_limits()
    session = BookClearing(book, options)
    hours = book.interval.hours
    last_problem = ""
    solves = 0
    passed: tuple[Solved, AcState, int] | None = None
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
        solved = session.solve(network, solve_options)
        step: SolveProfile | None = None
        if profile is not None:
            step = SolveProfile(
                solved,
                solved.build_s,
                solved.outcome.solve_s,
                solved.rules_s,
                solved.quantities.qp_s if solved.quantities is not None else 0.0,
            )
            profile.solves.append(step)
        if solved.status is ClearingStatus.TIME_LIMIT:  # only HiGHS's time_limit gives it
            why = session.result(solved).reason
            return wall_clock_stop(iteration, f"HiGHS stopped by the time left: {why}")
        if solved.quantities is None:
            if passed:
                break
            failed = session.result(solved)
            return _fallback(
                grid, linear, book, failed.status, _why(failed, options), iteration, notes
            )
        if deadline is not None and _clock() > deadline:
            return wall_clock_stop(iteration, "before the AC check of the last solve")
        load_w, sgen_w = solved.injections_w(hours)
        t0 = time.perf_counter()
        try:
            state = linear.checker.run(load_w, sgen_w)
        except PowerFlowFailed as exc:
            last_problem = str(exc)
            break  # a dispatch the AC model cannot solve: no point re-linearising at it
        t1 = time.perf_counter()
        eff_lo, eff_hi = linear.effective_limits(network)
        found = violations(
            grid, state, eff_lo, eff_hi, line_limits=line_limits, trafo_limits=trafo_limits
        )
        if step is not None:
            step.ac_s, step.check_s = t1 - t0, time.perf_counter() - t1
        if not found:
            passed = (solved, state, iteration)
            # the LP's grid exchange vs the AC slack's change: the losses the LP missed
            q = solved.quantities
            ac_grid_wh = (state.slack_p_w - linear.base.slack_p_w) * hours
            lp_grid_wh = q.grid_import_wh - q.grid_export_wh
            gap = abs(ac_grid_wh - lp_grid_wh)
            if (
                not network.losses  # a lossless model is wrong by design: nothing to correct
                or gap
                <= max(LOSS_TOLERANCE * _loss_basis_wh(solved, loss_basis), LOSS_TOLERANCE_WH)
                or gap >= last_gap  # the correction stopped helping
            ):
                break
            last_gap = gap
            last_problem = f"AC losses {gap:.0f} Wh off the linear model's, correcting"
            network = _relinearise(network, linear, load_w - sgen_w, state, found, step)
            continue
        worst = found[0]
        last_problem = (
            f"{worst.kind} at {worst.element}: {worst.value:.4f} vs limit {worst.limit:.4f}"
        )
        if passed:
            break  # the loss correction broke a limit: keep the AC-feasible result before it
        network = _relinearise(network, linear, load_w - sgen_w, state, found, step)
    if passed:
        solved, state, iteration = passed
        t0 = time.perf_counter()
        result = session.result(solved)
        t1 = time.perf_counter()
        reported = summarise(grid, state, linear.vm_min_pu, linear.vm_max_pu)
        if profile is not None:
            profile.extract_s, profile.summary_s = t1 - t0, time.perf_counter() - t1
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


def _relinearise(
    network: NetworkModel,
    linear: LinearGrid,
    market_load_w: NDArray[np.float64],
    state: AcState,
    found: tuple[Violation, ...],
    step: SolveProfile | None,
) -> NetworkModel:
    """:func:`grid_models.dispatch.relinearise`, timed into ``step`` when profiling."""
    t0 = time.perf_counter()
    moved = relinearise(network, linear, market_load_w, state, found)
    if step is not None:
        step.relin_s = time.perf_counter() - t0
    return moved


def _loss_basis_wh(solved: Solved, basis: str) -> int:
    """The energy [Wh] the loss tolerance is a share of, under the rule ``basis``."""
    if basis == "bought":  # records before issue 14: the participants' purchases only
        return solved.bought_wh
    return solved.traded_wh


def recorded_loss_basis(params: Mapping[str, Any] | None) -> str:
    """The loss-tolerance rule a record was cleared under (:data:`LOSS_BASES`).

    Parameters
    ----------
    params : mapping, optional
        An audit record's ``params``.

    Returns
    -------
    str
        Its ``loss_basis``; ``"bought"`` for records of earlier releases, which had no such
        parameter and took the participants' purchases as the traded energy.
    """
    return str((params or {}).get("loss_basis", "bought"))


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
) -> dict[str, int | float | str | None]:
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
        ``max_iterations`` [-], ``loss_basis`` (:data:`LOSS_BASIS`),
        ``simplex_iteration_limit`` and ``ipm_iteration_limit`` [iterations],
        ``time_limit_s`` (the wall-clock budget [s], None for none).
    """
    return {
        "max_iterations": max_iterations,
        "loss_basis": LOSS_BASIS,
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
        An audit record's ``params``; its ``import_price``/``export_price`` [token units
        per kWh], ``simplex_iteration_limit``, ``ipm_iteration_limit`` [iterations] and
        ``max_iterations`` [-] are used where present (records of earlier releases: the
        defaults of this one).

    Returns
    -------
    tuple of (ClearingOptions, int)
        ``options`` without a wall-clock budget and with the recorded tariffs and iteration
        limits; the AC loop's solves allowed.
    """
    params = params or {}
    deterministic = dataclasses.replace(
        options,
        # the tariffs the interval was cleared with (governed bounds may have moved them)
        import_price=int(params.get("import_price", options.import_price)),
        export_price=int(params.get("export_price", options.export_price)),
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
