"""AC power flow of a dispatch with pandapower, summarised as a :class:`~market.domain.GridCheck`.

The grid's own loads and sgens stay as they are (the inflexible base); the cleared orders are
added as extra loads (bought energy) and sgens (sold energy) at unity power factor at their
buses, at the average power of the interval. pandapower's ``runpp`` mutates the net, so the
checker works on its own copy, made once: it holds one extra load and one extra sgen per
market bus and only changes their ``p_mw`` between runs, warm-starting Newton-Raphson from
the previous solution (a deep copy of a 5,000-bus net costs more than its power flow).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandapower as pp
from numpy.typing import NDArray

from grid_models.errors import PowerFlowFailed
from grid_models.grids import Grid
from market.domain import GridCheck, Violation, ViolationKind
from market.units import round_half_even

VM_TOLERANCE_PU = 0.001
"""A voltage counts as violating only beyond this margin [p.u.]."""
LOADING_TOLERANCE_PERCENT = 0.5
"""A loading counts as violating only beyond this margin [%]."""


@dataclass(frozen=True, slots=True, eq=False)
class AcState:
    """Raw AC results of one run, as arrays aligned with pandapower's element indices.

    ``v_internal`` is the complex voltage of every bus of pandapower's internal power flow
    model (its own order; open line switches add auxiliary buses there): a meshed feeder's
    sensitivities are taken at it (:mod:`grid_models.meshed`).
    """

    bus_index: NDArray[np.int64]
    vm_pu: NDArray[np.float64]
    line_index: NDArray[np.int64]
    line_loading_percent: NDArray[np.float64]
    trafo_index: NDArray[np.int64]
    trafo_loading_percent: NDArray[np.float64]
    slack_p_w: float
    v_internal: NDArray[np.complex128]

    def vm_at(self, pp_buses: NDArray[np.int64]) -> NDArray[np.float64]:
        """Voltages at the given pandapower bus indices.

        Parameters
        ----------
        pp_buses : ndarray of int
            Pandapower bus indices present in :attr:`bus_index`.

        Returns
        -------
        ndarray of float
            Voltage magnitude per bus [p.u.].
        """
        pos = np.searchsorted(self.bus_index, pp_buses)
        return self.vm_pu[pos]


RECYCLE = {"bus_pq": True, "trafo": False, "gen": False}
"""pandapower's ``recycle``: only the P/Q of loads and sgens change between runs."""


def run_ac(net: Any, *, warm: bool = False, recycle: bool = False) -> None:  # noqa: ANN401
    """Run pandapower's Newton-Raphson power flow on ``net`` in place.

    Parameters
    ----------
    net : pandapowerNet
        The network; its ``res_*`` tables are written.
    warm : bool
        Start from the previous results (falls back to a DC start if that fails).
    recycle : bool
        Keep (first run) or reuse (later runs) pandapower's internal matrices.

    Raises
    ------
    PowerFlowFailed
        If it does not converge.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pp.runpp(
                net,
                numba=False,
                init="results" if warm else "dc",
                max_iteration=30,
                recycle=RECYCLE if recycle else None,
            )
        except pp.LoadflowNotConverged as exc:
            if warm:
                run_ac(net, warm=False)
                return
            msg = f"AC power flow did not converge: {exc}"
            raise PowerFlowFailed(msg) from exc


def state_of(net: Any) -> AcState:  # noqa: ANN401
    """Read an :class:`AcState` from a solved net.

    Parameters
    ----------
    net : pandapowerNet
        A net after a converged ``runpp``.

    Returns
    -------
    AcState
        Voltages [p.u.], loadings [%] and the slack's exchange [W]; NaN rows (e.g. isolated
        buses) dropped, indices sorted.
    """

    def table(res: Any, column: str) -> tuple[NDArray[np.int64], NDArray[np.float64]]:  # noqa: ANN401
        values = res[column].to_numpy(dtype=float)
        index = res.index.to_numpy(dtype=np.int64)
        keep = np.isfinite(values)
        order = np.argsort(index[keep], kind="stable")
        return index[keep][order], values[keep][order]

    bus_index, vm = table(net.res_bus, "vm_pu")
    line_index, line_loading = table(net.res_line, "loading_percent")
    trafo_index, trafo_loading = table(net.res_trafo, "loading_percent")
    return AcState(
        bus_index=bus_index,
        vm_pu=vm,
        line_index=line_index,
        line_loading_percent=line_loading,
        trafo_index=trafo_index,
        trafo_loading_percent=trafo_loading,
        slack_p_w=float(net.res_ext_grid["p_mw"].sum() * 1e6),
        v_internal=np.array(net._ppc["internal"]["V"], dtype=complex),
    )


class AcChecker:
    """Runs AC power flows of dispatches on one copy of a grid.

    Newton-Raphson starts from the first run's solution (the base case), not from whatever ran
    last, so results are a function of the dispatch alone.

    Parameters
    ----------
    grid : Grid
        The feeder with its base case.
    pp_buses : ndarray of int
        The pandapower buses that can receive market injections (the market's buses).
    """

    def __init__(self, grid: Grid, pp_buses: NDArray[np.int64]) -> None:
        self.grid = grid
        self.net = copy.deepcopy(grid.net)
        self.pp_buses = np.asarray(pp_buses, dtype=np.int64)
        n = len(self.pp_buses)
        self._loads = np.asarray(
            pp.create_loads(
                self.net,
                buses=self.pp_buses,
                p_mw=np.zeros(n),
                q_mvar=0.0,
                name=[f"peergrid buy {b}" for b in self.pp_buses],
            ),
            dtype=np.int64,
        )
        self._sgens = np.asarray(
            pp.create_sgens(
                self.net,
                buses=self.pp_buses,
                p_mw=np.zeros(n),
                q_mvar=0.0,
                name=[f"peergrid sell {b}" for b in self.pp_buses],
            ),
            dtype=np.int64,
        )
        self._start: tuple[Any, Any, Any] | None = None

    def run(self, load_w: NDArray[np.float64], sgen_w: NDArray[np.float64]) -> AcState:
        """AC state with extra loads and sgens at the market's buses.

        After the first (base case) run, pandapower's ``recycle`` reuses the admittance
        matrices and the bus/branch tables (only P/Q change), and Newton-Raphson starts from
        the base case's solution, restored bit for bit before each run (determinism).

        Parameters
        ----------
        load_w, sgen_w : ndarray of float
            Extra consumption and generation per market bus [W], aligned with ``pp_buses``;
            unity power factor.

        Returns
        -------
        AcState
            The solved state.

        Raises
        ------
        PowerFlowFailed
            If the power flow does not converge.
        """
        self.net.load.loc[self._loads, "p_mw"] = np.asarray(load_w, dtype=float) / 1e6
        self.net.sgen.loc[self._sgens, "p_mw"] = np.asarray(sgen_w, dtype=float) / 1e6
        if self._start is None:
            run_ac(self.net, recycle=True)
            ppc = self.net._ppc
            self._start = (ppc["internal"]["bus"].copy(), ppc["bus"].copy(), ppc["internal"]["V"])
        else:
            ppc = self.net._ppc
            ppc["internal"]["bus"][:] = self._start[0]
            ppc["bus"][:] = self._start[1]
            ppc["internal"]["V"] = self._start[2].copy()
            run_ac(self.net, warm=True, recycle=True)
        return state_of(self.net)


def loading_limits(table: Any, index: NDArray[np.int64]) -> NDArray[np.float64]:  # noqa: ANN401
    """Each element's loading limit.

    Parameters
    ----------
    table : pandas.DataFrame
        ``net.line`` or ``net.trafo``.
    index : ndarray of int
        The elements, in the order wanted.

    Returns
    -------
    ndarray of float
        ``max_loading_percent`` per element [%]; 100 where the grid has none.
    """
    if "max_loading_percent" not in table:
        return np.full(len(index), 100.0)
    limits = table["max_loading_percent"].reindex(index).to_numpy(dtype=float)
    return np.where(np.isfinite(limits), limits, 100.0)


def violations(
    grid: Grid,
    state: AcState,
    vm_min_pu: NDArray[np.float64] | float,
    vm_max_pu: NDArray[np.float64] | float,
    *,
    line_limits: NDArray[np.float64] | None = None,
    trafo_limits: NDArray[np.float64] | None = None,
) -> tuple[Violation, ...]:
    """Every violation of ``state`` beyond tolerance, worst first within each kind.

    What the AC loop checks after each solve (:func:`summarise` adds the per-element
    figures, once, for the result it reports). Arguments as :func:`summarise`.

    Returns
    -------
    tuple of Violation
        Voltages below then above the band [p.u.], then line and transformer loadings
        [%] beyond :data:`VM_TOLERANCE_PU` / :data:`LOADING_TOLERANCE_PERCENT`.
    """
    net = grid.net
    found: list[Violation] = []
    vm = state.vm_pu
    lo = np.broadcast_to(np.asarray(vm_min_pu, dtype=float), vm.shape)
    hi = np.broadcast_to(np.asarray(vm_max_pu, dtype=float), vm.shape)
    for kind, mask, limit in (
        (ViolationKind.VM_MIN, vm < lo - VM_TOLERANCE_PU, lo),
        (ViolationKind.VM_MAX, vm > hi + VM_TOLERANCE_PU, hi),
    ):
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(-np.abs(vm[idx] - limit[idx]), kind="stable")]
        found.extend(
            Violation(
                kind=kind,
                element=grid.bus_name(int(state.bus_index[i])),
                value=float(vm[i]),
                limit=float(limit[i]),
                index=int(state.bus_index[i]),
            )
            for i in idx
        )
    for kind, table, index, loading, given in (
        (
            ViolationKind.LINE_LOADING,
            net.line,
            state.line_index,
            state.line_loading_percent,
            line_limits,
        ),
        (
            ViolationKind.TRAFO_LOADING,
            net.trafo,
            state.trafo_index,
            state.trafo_loading_percent,
            trafo_limits,
        ),
    ):
        if not len(index):
            continue
        limits = loading_limits(table, index) if given is None else given
        over = np.flatnonzero(loading > limits + LOADING_TOLERANCE_PERCENT)
        over = over[np.argsort(-(loading[over] - limits[over]), kind="stable")]
        found.extend(
            Violation(
                kind=kind,
                element=grid.branch_name(kind.element_type, int(index[i])),
                value=float(loading[i]),
                limit=float(limits[i]),
                index=int(index[i]),
            )
            for i in over
        )
    return tuple(found)


def summarise(
    grid: Grid,
    state: AcState,
    vm_min_pu: NDArray[np.float64] | float,
    vm_max_pu: NDArray[np.float64] | float,
    *,
    line_limits: NDArray[np.float64] | None = None,
    trafo_limits: NDArray[np.float64] | None = None,
) -> GridCheck:
    """Compare ``state`` with the limits and list every violation beyond tolerance.

    Voltage limits are scalars or arrays aligned with ``state.bus_index``. Line and
    transformer limits are each element's ``max_loading_percent`` when the grid has that
    column, else 100 %, unless ``line_limits``/``trafo_limits`` (aligned with the state's
    index arrays) are given. Violations are listed worst first within each kind
    (:func:`violations`).

    Parameters
    ----------
    grid : Grid
        The feeder (element names).
    state : AcState
        The AC state to check.
    vm_min_pu, vm_max_pu : float or ndarray of float
        Voltage band [p.u.].
    line_limits, trafo_limits : ndarray of float, optional
        Loading limits [%] aligned with ``state.line_index`` / ``state.trafo_index``.

    Returns
    -------
    GridCheck
        Extremes of voltage [p.u.] and loading [%], the slack's exchange [W], every
        bus's voltage and every line's and transformer's loading, and the violations
        beyond :data:`VM_TOLERANCE_PU` / :data:`LOADING_TOLERANCE_PERCENT`.
    """
    vm = state.vm_pu
    return GridCheck(
        converged=True,
        min_vm_pu=float(vm.min()) if len(vm) else float("nan"),
        max_vm_pu=float(vm.max()) if len(vm) else float("nan"),
        max_line_loading_percent=float(state.line_loading_percent.max(initial=0.0)),
        max_trafo_loading_percent=float(state.trafo_loading_percent.max(initial=0.0)),
        slack_p_w=round_half_even(state.slack_p_w),
        violations=violations(
            grid,
            state,
            vm_min_pu,
            vm_max_pu,
            line_limits=line_limits,
            trafo_limits=trafo_limits,
        ),
        buses=tuple(
            (int(i), grid.bus_name(int(i)), float(v))
            for i, v in zip(state.bus_index.tolist(), vm.tolist(), strict=True)
        ),
        branches=tuple(
            (f"{kind}{i}", kind, grid.branch_name(kind, i), float(pct))
            for kind, index, loading in (
                ("line", state.line_index, state.line_loading_percent),
                ("trafo", state.trafo_index, state.trafo_loading_percent),
            )
            for i, pct in zip(index.tolist(), loading.tolist(), strict=True)
        ),
    )


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
        violations=(
            Violation(kind=ViolationKind.NOT_CONVERGED, element="grid", value=nan, limit=nan),
        ),
    )
