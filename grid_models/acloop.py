"""Clear an order book on a feeder and prove the result with an AC power flow.

The loop (at most ``max_iterations`` solves):

1. clear the book on the linear model (:func:`market.clearing.clear`);
2. run pandapower's AC power flow of the cleared dispatch;
3. if every limit holds within tolerance (0.001 p.u., 0.5 % loading) against the *effective*
   limits (the asked band, widened only where the base case already violated it), done;
4. otherwise re-linearise: the voltage offset becomes ``vm_ac² − v_lindistflow`` at the
   cleared dispatch, and each overloaded branch's limit shrinks by ``limit / loading``; go to 1.

If no AC-feasible dispatch is found, the documented fallback is **grid only**: nothing is
accepted, every participant deals with the upstream grid at the tariffs (through imbalance
settlement), the status is INFEASIBLE and the reason names the last violation. The returned
result always carries the AC check of the dispatch it stands for (the base case for the
fallback) and the number of iterations.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from grid_models.errors import PowerFlowFailed
from grid_models.grids import Grid
from grid_models.linear import LinearGrid, lindistflow_v2
from grid_models.powerflow import AcState, dispatch_state, failed_check, summarise, vm_array
from market.clearing import ClearingOptions, clear, empty_result
from market.domain import ClearingResult, ClearingStatus, GridCheck, OrderBook, Side
from market.network import NetworkModel

MAX_ITERATIONS = 5


def dispatch_of(
    result: ClearingResult, linear: LinearGrid
) -> tuple[dict[int, float], dict[int, float]]:
    """Extra loads and sgens [W] per pandapower bus for the accepted orders of ``result``."""
    hours = result.interval.hours
    position = linear.network.bus_index()
    load_w: dict[int, float] = defaultdict(float)
    sgen_w: dict[int, float] = defaultdict(float)
    for o in result.orders:
        if not o.accepted_wh:
            continue
        bus = int(linear.pp_index[position[o.bus]])
        (load_w if o.side is Side.BUY else sgen_w)[bus] += o.accepted_wh / hours
    return dict(load_w), dict(sgen_w)


def check_result(grid: Grid, linear: LinearGrid, result: ClearingResult) -> GridCheck:
    """AC check of ``result``'s dispatch against the asked limits (what is reported)."""
    load_w, sgen_w = dispatch_of(result, linear)
    try:
        state = dispatch_state(grid, load_w, sgen_w)
    except PowerFlowFailed:
        return failed_check()
    return summarise(grid, state, linear.vm_min_pu, linear.vm_max_pu)


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
        Tariffs and solver settings.
    max_iterations : int
        Solves allowed before the fallback.

    Returns
    -------
    ClearingResult
        With ``check`` (AC figures against the asked limits) and ``iterations`` set.
    """
    network = linear.network
    effective_min = {
        int(b): float(v) for b, v in zip(linear.pp_index, network.vm_min_pu, strict=True)
    }
    effective_max = {
        int(b): float(v) for b, v in zip(linear.pp_index, network.vm_max_pu, strict=True)
    }
    notes = " ".join(network.notes)
    last_problem = ""
    for iteration in range(1, max_iterations + 1):
        result = clear(book, network, options)
        if not result.is_ok:
            return _fallback(grid, linear, book, result.status, result.reason, iteration, notes)
        load_w, sgen_w = dispatch_of(result, linear)
        try:
            state = dispatch_state(grid, load_w, sgen_w)
        except PowerFlowFailed as exc:
            last_problem = str(exc)
            break
        effective = summarise(grid, state, effective_min, effective_max)
        reported = summarise(grid, state, linear.vm_min_pu, linear.vm_max_pu)
        if not effective.violations:
            reason = result.reason + (f"; AC check passed after {iteration} solve(s)")
            if notes:
                reason += f"; {notes}"
            return dataclasses.replace(result, check=reported, iterations=iteration, reason=reason)
        worst = effective.violations[0]
        last_problem = (
            f"{worst.kind} at {worst.element}: {worst.value:.4f} vs limit {worst.limit:.4f}"
        )
        network = _relinearise(network, linear, result, state, effective)
    return _fallback(
        grid,
        linear,
        book,
        ClearingStatus.INFEASIBLE,
        f"no AC-feasible dispatch after {max_iterations} solve(s) ({last_problem})",
        max_iterations,
        notes,
    )


def _relinearise(
    network: NetworkModel,
    linear: LinearGrid,
    result: ClearingResult,
    state: AcState,
    check: GridCheck,
) -> NetworkModel:
    """Move the linear model's operating point to the AC state of the cleared dispatch."""
    hours = result.interval.hours
    position = network.bus_index()
    inj = network.base_p_w.astype(float).copy()
    for o in result.orders:
        sign = -1.0 if o.side is Side.BUY else 1.0
        inj[position[o.bus]] += sign * o.accepted_wh / hours
    v_lin = lindistflow_v2(network, inj, network.base_q_var)
    vm_ac = vm_array(state, linear.pp_index)
    offset = vm_ac**2 - v_lin
    s_max = network.s_max_va.astype(float).copy()
    overloaded = {
        v.element: v.limit / v.value
        for v in check.violations
        if v.kind in {"line_loading", "trafo_loading"} and v.value > 0
    }
    for k, name in enumerate(network.branch_names):
        factors = [overloaded[n] for n in name.split(" || ") if n in overloaded]
        if factors:
            s_max[k] *= min(factors) * 0.995
    return network.with_changes(v_offset_pu2=offset, s_max_va=s_max)


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
