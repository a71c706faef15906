"""The only place that calls HiGHS (through pyomo's ``highs`` interface on highspy)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import pyomo.environ as pyo
from numpy.typing import NDArray
from pyomo.contrib.solver.common.factory import SolverFactory

from market.clearing.model import BuiltModel, ClearingOptions
from market.clearing.status import status_of
from market.domain import ClearingStatus


@dataclass(frozen=True, slots=True, eq=False)
class SolveOutcome:
    """Primal values and duals of a solved model, or only a status when it is not ok.

    ``accepted_kwh`` per order group, ``grid_import_kwh``/``grid_export_kwh`` the market's
    grid trade, ``balance_duals`` the dual of each bus's energy balance [currency / kWh],
    ``v_pu2`` the squared voltages of the linear model.
    """

    status: ClearingStatus
    termination: str
    solver_version: str
    solve_s: float
    accepted_kwh: NDArray[np.float64]
    grid_import_kwh: float
    grid_export_kwh: float
    balance_duals: NDArray[np.float64]
    v_pu2: NDArray[np.float64]
    objective: float


def solver_version() -> str:
    """Version of highspy in this environment."""
    return f"highspy {metadata.version('highspy')}"


def solve(built: BuiltModel, options: ClearingOptions) -> SolveOutcome:
    """Solve ``built`` with HiGHS within ``options.time_limit_s``; read values only if ok."""
    m = built.model
    opt = SolverFactory("highs")
    started = time.perf_counter()
    results = opt.solve(
        m,
        load_solutions=False,
        raise_exception_on_nonoptimal_result=False,
        time_limit=options.time_limit_s,
        threads=1,
    )
    elapsed = time.perf_counter() - started
    status = status_of(results.termination_condition)
    n_groups = len(built.groups)
    n_bus = built.network.n_bus
    empty = np.zeros(0)
    if not status.is_ok:
        return SolveOutcome(
            status=status,
            termination=str(results.termination_condition.name),
            solver_version=solver_version(),
            solve_s=elapsed,
            accepted_kwh=empty,
            grid_import_kwh=0.0,
            grid_export_kwh=0.0,
            balance_duals=empty,
            v_pu2=empty,
            objective=0.0,
        )
    results.solution_loader.load_vars()
    duals = results.solution_loader.get_duals([m.balance[b] for b in range(n_bus)])
    return SolveOutcome(
        status=status,
        termination=str(results.termination_condition.name),
        solver_version=solver_version(),
        solve_s=elapsed,
        accepted_kwh=np.array([pyo.value(m.a[g]) for g in range(n_groups)], dtype=float),
        grid_import_kwh=float(pyo.value(m.g_imp)),
        grid_export_kwh=float(pyo.value(m.g_exp)),
        balance_duals=np.array([duals[m.balance[b]] for b in range(n_bus)], dtype=float),
        v_pu2=np.array([pyo.value(m.v[b]) for b in range(n_bus)], dtype=float),
        objective=float(pyo.value(m.welfare)),
    )
