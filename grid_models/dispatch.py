"""A cleared dispatch on the grid: its injections, its AC check, and the re-linearised model.

What the AC validation loop (``controller.grid_clearing``) needs from the grid side, without
the market's clearing:

* :func:`dispatch_of`: the accepted orders of a result as extra load and generation per model
  bus [W] (energy over the interval's hours), order by order: the tests' independent path
  from a published result to the power flow (the AC loop adds the order groups' Wh per bus,
  :meth:`market.clearing.Solved.injections_w`);
* :func:`check_result`: pandapower's AC power flow of that dispatch against the asked limits
  (likewise for the tests);
* :func:`relinearise`: the linear model moved towards the AC state of a cleared dispatch (a
  meshed feeder's sensitivities are taken again at that AC solution). The
  losses are linearised halfway between the base case's and the cleared flows (that tangent
  has the secant's slope, so the LP's incremental losses are exact at the cleared dispatch),
  the voltage offset becomes ``vm_ac² − v_model`` there, and each overloaded branch's limit
  shrinks by ``limit / loading`` (x 0.995).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from grid_models.errors import PowerFlowFailed
from grid_models.grids import Grid
from grid_models.linear import LinearGrid
from grid_models.meshed import sensitivities_at
from grid_models.powerflow import AcState, failed_check, summarise
from market.domain import ClearingResult, GridCheck, Side, Violation
from market.network import NetworkModel, linear_state


def dispatch_of(
    result: ClearingResult, network: NetworkModel
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Extra load and generation per model bus for the accepted orders of ``result``.

    Parameters
    ----------
    result : ClearingResult
        A cleared result (its orders' buses may be aliases).
    network : NetworkModel
        The model the result was cleared on.

    Returns
    -------
    load_w, sgen_w : ndarray of float
        Accepted bids and offers per model bus as average power over the interval [W].
    """
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
    """AC check of ``result``'s dispatch against the asked limits (what is reported).

    Parameters
    ----------
    grid : Grid
        The feeder ``linear`` was built from.
    linear : LinearGrid
        Its linear model (the AC runner and the asked voltage band).
    result : ClearingResult
        The result whose accepted orders are dispatched.

    Returns
    -------
    GridCheck
        The AC figures and violations, or a failed check if the power flow diverges.
    """
    load_w, sgen_w = dispatch_of(result, linear.network)
    try:
        state = linear.checker.run(load_w, sgen_w)
    except PowerFlowFailed:
        return failed_check()
    return summarise(grid, state, linear.vm_min_pu, linear.vm_max_pu)


def relinearise(
    network: NetworkModel,
    linear: LinearGrid,
    market_load_w: NDArray[np.float64],
    state: AcState,
    found: Sequence[Violation],
) -> NetworkModel:
    """Move the linear model's operating point towards the AC state of a cleared dispatch.

    Parameters
    ----------
    network : NetworkModel
        The model the dispatch was cleared on.
    linear : LinearGrid
        The grid's linear model (bus and branch maps to pandapower).
    market_load_w : ndarray of float
        The dispatch's net market load per model bus [W] (buys - sells).
    state : AcState
        pandapower's AC state of the dispatch.
    found : sequence of Violation
        Its violations of the effective limits (the overloads to tighten;
        :func:`grid_models.powerflow.violations`).

    Returns
    -------
    NetworkModel
        With ``p_op_w``, ``v_offset_pu2`` and the overloaded branches' ``s_max_va`` updated;
        a meshed feeder's with its sensitivities taken again at ``state`` (and the overloaded
        branches' largest loading tightened the same way).
    """
    if network.meshed is not None and linear.meshed_ac is not None:
        sens = network.meshed
        moved_mesh = sensitivities_at(
            linear.meshed_ac,
            state.v_internal,
            loading_max=_tightened(sens.loading_max, linear, found),
            market_op_kw=-np.asarray(market_load_w, dtype=float) / 1000.0,
            grid_op_kw=(state.slack_p_w - linear.base.slack_p_w) / 1000.0,
            slack_base_kw=sens.slack_base_kw,
        )
        return network.with_changes(meshed=moved_mesh)
    injection = network.base_p_w - market_load_w
    flows_kw, _ = linear_state(network, injection)
    base_kw, _ = linear_state(network, network.base_p_w)
    # losses are linearised halfway between the base case's and the cleared flows: that
    # tangent has the secant's slope, so the LP's incremental losses (cleared minus base) are
    # exact at the cleared dispatch; a tangent at either end misses r dP^2 / S per branch
    moved = network.with_changes(p_op_w=(flows_kw + base_kw) / 2 * 1000.0)
    _, v_model = linear_state(moved, injection)
    offset = state.vm_at(linear.pp_index) ** 2 - v_model
    s_max = _tightened(network.s_max_va.astype(float), linear, found)
    return moved.with_changes(v_offset_pu2=offset, s_max_va=s_max)


def _tightened(
    limits: NDArray[np.float64], linear: LinearGrid, found: Sequence[Violation]
) -> NDArray[np.float64]:
    """``limits`` per model branch with each overloaded one shrunk by ``limit / loading``.

    x 0.995 (a margin inside the AC check's 0.5 % tolerance); any unit (the radial model's
    apparent power [VA], the meshed model's loading [-]).
    """
    out = limits.copy()
    for v in found:
        if v.kind.is_loading and v.value > 0:
            k = linear.branch_of_element.get((v.kind.element_type, v.index))
            if k is not None:
                out[k] = min(out[k], limits[k] * v.limit / v.value * 0.995)
    return out
