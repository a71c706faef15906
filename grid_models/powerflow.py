"""AC power flow of a dispatch with pandapower, summarised as a :class:`~market.domain.GridCheck`.

The grid's own loads and sgens stay as they are (the inflexible base); the cleared orders are
added as extra loads (bought energy) and sgens (sold energy) at unity power factor at their
buses, at the average power of the interval. pandapower's ``runpp`` mutates the net, so every
run works on a copy.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandapower as pp
from numpy.typing import NDArray

from grid_models.errors import PowerFlowFailed
from grid_models.grids import Grid
from market.domain import GridCheck, Violation
from market.units import round_half_even

VM_TOLERANCE_PU = 0.001
"""A voltage counts as violating only beyond this margin [p.u.]."""
LOADING_TOLERANCE_PERCENT = 0.5
"""A loading counts as violating only beyond this margin [%]."""


@dataclass(frozen=True, slots=True, eq=False)
class AcState:
    """Raw AC results of one run, indexed by pandapower element index."""

    vm_pu: Mapping[int, float]
    line_loading_percent: Mapping[int, float]
    trafo_loading_percent: Mapping[int, float]
    slack_p_w: float


def run_ac(net: Any) -> None:  # noqa: ANN401 - a pandapowerNet
    """Run pandapower's Newton-Raphson power flow on ``net`` in place.

    Raises
    ------
    PowerFlowFailed
        If it does not converge.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pp.runpp(net, numba=False, init="dc", max_iteration=30)
        except pp.LoadflowNotConverged as exc:
            msg = f"AC power flow did not converge: {exc}"
            raise PowerFlowFailed(msg) from exc


def dispatch_state(
    grid: Grid,
    load_w: Mapping[int, float],
    sgen_w: Mapping[int, float],
) -> AcState:
    """AC state of ``grid`` with extra loads/sgens [W] at pandapower bus indices.

    Raises
    ------
    PowerFlowFailed
        If the power flow does not converge.
    """
    net = copy.deepcopy(grid.net)
    loads = {b: w for b, w in load_w.items() if w}
    sgens = {b: w for b, w in sgen_w.items() if w}
    if loads:
        pp.create_loads(
            net,
            buses=list(loads),
            p_mw=[w / 1e6 for w in loads.values()],
            q_mvar=0.0,
            name=[f"peergrid buy {b}" for b in loads],
        )
    if sgens:
        pp.create_sgens(
            net,
            buses=list(sgens),
            p_mw=[w / 1e6 for w in sgens.values()],
            q_mvar=0.0,
            name=[f"peergrid sell {b}" for b in sgens],
        )
    run_ac(net)
    return AcState(
        vm_pu={int(i): float(v) for i, v in net.res_bus["vm_pu"].items() if np.isfinite(v)},
        line_loading_percent={
            int(i): float(v) for i, v in net.res_line["loading_percent"].items() if np.isfinite(v)
        },
        trafo_loading_percent={
            int(i): float(v) for i, v in net.res_trafo["loading_percent"].items() if np.isfinite(v)
        },
        slack_p_w=float(net.res_ext_grid["p_mw"].sum() * 1e6),
    )


def summarise(
    grid: Grid,
    state: AcState,
    vm_min_pu: Mapping[int, float] | float,
    vm_max_pu: Mapping[int, float] | float,
) -> GridCheck:
    """Compare ``state`` with the limits and list every violation beyond tolerance.

    Line and transformer limits are each element's ``max_loading_percent`` when the grid has
    that column, else 100 %.
    """
    net = grid.net
    violations: list[Violation] = []
    for b, vm in sorted(state.vm_pu.items()):
        lo = vm_min_pu if isinstance(vm_min_pu, float) else vm_min_pu.get(b, 0.0)
        hi = vm_max_pu if isinstance(vm_max_pu, float) else vm_max_pu.get(b, 10.0)
        name = grid.bus_name(b)
        if vm < lo - VM_TOLERANCE_PU:
            violations.append(Violation(kind="vm_min", element=name, value=vm, limit=lo))
        if vm > hi + VM_TOLERANCE_PU:
            violations.append(Violation(kind="vm_max", element=name, value=vm, limit=hi))
    for kind, table, loading in (
        ("line_loading", net.line, state.line_loading_percent),
        ("trafo_loading", net.trafo, state.trafo_loading_percent),
    ):
        limits = _loading_limits(table)
        for i, value in sorted(loading.items()):
            limit = limits.get(i, 100.0)
            if value > limit + LOADING_TOLERANCE_PERCENT:
                element = str(table.at[i, "name"]) if "name" in table else f"{kind}{i}"
                violations.append(Violation(kind=kind, element=element, value=value, limit=limit))
    vms = list(state.vm_pu.values())
    return GridCheck(
        converged=True,
        min_vm_pu=min(vms) if vms else float("nan"),
        max_vm_pu=max(vms) if vms else float("nan"),
        max_line_loading_percent=max(state.line_loading_percent.values(), default=0.0),
        max_trafo_loading_percent=max(state.trafo_loading_percent.values(), default=0.0),
        slack_p_w=round_half_even(state.slack_p_w),
        violations=tuple(violations),
    )


def _loading_limits(table: Any) -> dict[int, float]:  # noqa: ANN401 - a DataFrame
    if "max_loading_percent" not in table:
        return {}
    out: dict[int, float] = {}
    for i, v in table["max_loading_percent"].items():
        out[int(i)] = float(v) if np.isfinite(v) else 100.0
    return out


def failed_check() -> GridCheck:
    """The check of a power flow that did not converge."""
    nan = float("nan")
    return GridCheck(
        converged=False,
        min_vm_pu=nan,
        max_vm_pu=nan,
        max_line_loading_percent=nan,
        max_trafo_loading_percent=nan,
        slack_p_w=0,
        violations=(Violation(kind="not_converged", element="grid", value=nan, limit=nan),),
    )


def vm_array(state: AcState, pp_index: NDArray[np.int64]) -> NDArray[np.float64]:
    """Voltages [p.u.] of ``state`` in the order of ``pp_index``."""
    return np.array([state.vm_pu[int(i)] for i in pp_index], dtype=float)
