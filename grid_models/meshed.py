r"""A meshed feeder's AC power flow linearised at an operating point: the market's sensitivities.

LinDistFlow needs a tree; a meshed feeder (closed loops, as many MV networks run) is stated
instead by the first-order change of pandapower's own AC power flow around an AC solution
(:class:`market.network.Sensitivities`):

* **Injections.** pandapower's Jacobian at the solution, :math:`\partial S / \partial V_m`
  and :math:`\partial S / \partial V_a` (``pandapower.pypower.dSbus_dV``) over the non-slack
  buses' angles and magnitudes: the active rows of every bus (the slack's row is the grid's
  exchange, so the losses are linearised at the point) and the reactive rows of the
  non-slack buses.
* **Loading.** Each line's and transformer's loading as pandapower computes it (current over
  rated current: ``max_i_ka * df * parallel`` for a line; ``sn_mva * parallel / (√3 vn_kv)``
  at each side of a transformer), at the end more loaded at the point, squared and
  linearised with ``pandapower.pypower.dIbr_dV`` and ``dAbr_dV``.
* **Electrical distance.** :math:`K = \partial V_m / \partial P` from the same Jacobian
  (unit active injection at one bus taken by the slack, reactive injections fixed);
  :math:`d(a, b) = K_{aa} + K_{bb} - K_{ab} - K_{ba}`.

Buses of pandapower's internal model that are not the market's (the auxiliary bus an open
line switch adds at the line's end) take no order, so their injections do not change: they are
eliminated from the linear system exactly (Kron reduction of the Jacobian). Voltage-controlled
``gen`` buses are refused on a meshed feeder (their reactive injection is not fixed).

The AC validation loop re-linearises at each cleared dispatch's AC solution
(:func:`sensitivities_at` with that solution's internal voltages): the same tolerances as on
radial feeders, and each overloaded branch's limit tightened by ``limit / loading`` as there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from pandapower.pypower.dAbr_dV import dAbr_dV
from pandapower.pypower.dIbr_dV import dIbr_dV
from pandapower.pypower.dSbus_dV import dSbus_dV

from grid_models.errors import PowerFlowFailed, UnsupportedTopology
from market.network import Sensitivities

MAX_MESHED_BUSES = 3000
"""Largest meshed feeder the sensitivities are built for [buses]: the electrical distances are
a dense bus x bus matrix (72 MB at this size), re-computed at every re-linearisation."""

MAX_AUX_BUSES = 500
"""Most internal buses outside the market's model (open line switches' auxiliary buses)
eliminated by Kron reduction (a dense solve of this size) [buses]."""


@dataclass(frozen=True, slots=True, eq=False)
class MeshedAc:
    """What re-linearising a meshed feeder needs, read once from pandapower's internal model.

    ``ppci_bus[i]`` is model bus ``i``'s row in pandapower's internal power flow model and
    ``aux_bus`` its other buses (eliminated); ``ybus``, ``yf``, ``yt`` its admittance matrices
    (topology does not change between dispatches); per model branch ``k``:
    ``branch_row[k]`` its internal branch row and ``scale_f[k]``, ``scale_t[k]`` the loading
    per p.u. current at its from and to end [-] (kA per p.u. at the end's bus over the rated
    kA); ``s_base_mva`` the internal base.
    """

    ppci_bus: NDArray[np.int64]
    aux_bus: NDArray[np.int64]
    ybus: Any
    yf: Any
    yt: Any
    branch_table: NDArray[np.float64]
    branch_row: NDArray[np.int64]
    scale_f: NDArray[np.float64]
    scale_t: NDArray[np.float64]
    s_base_mva: float
    slack: int

    def loading(self, v_internal: NDArray[np.complex128]) -> NDArray[np.float64]:
        """Each branch's loading [-] (the larger end's) at the internal voltages [p.u.].

        Parameters
        ----------
        v_internal : ndarray of complex
            Every internal bus's voltage (:attr:`grid_models.powerflow.AcState.v_internal`).

        Returns
        -------
        ndarray of float
            pandapower's ``loading_percent / 100`` per model branch.
        """
        i_f = np.abs(self.yf @ v_internal)[self.branch_row] * self.scale_f
        i_t = np.abs(self.yt @ v_internal)[self.branch_row] * self.scale_t
        return np.asarray(np.maximum(i_f, i_t), dtype=np.float64)


def read_meshed_ac(
    net: Any,  # noqa: ANN401 - a pandapowerNet after a converged runpp
    pp_index: NDArray[np.int64],
    slack: int,
    elements: list[tuple[str, int]],
    spec: str,
) -> MeshedAc:
    """Read the internal model of a solved ``net`` for the model buses and branches.

    Parameters
    ----------
    net : pandapowerNet
        After a converged ``runpp`` (its ``_ppc["internal"]`` and lookups).
    pp_index : ndarray of int
        The pandapower bus of each model bus.
    slack : int
        The model's slack bus.
    elements : list of (str, int)
        Each model branch's pandapower element (``("line", index)`` or ``("trafo", index)``).
    spec : str
        The grid's spec (for messages).

    Returns
    -------
    MeshedAc
        The admittances and the maps from model buses and branches to the internal model.

    Raises
    ------
    UnsupportedTopology
        If pandapower's internal model has buses outside the market's model.
    """
    ppc = net._ppc
    internal = ppc["internal"]
    lookup = net._pd2ppc_lookups
    ppci_bus = np.asarray(lookup["bus"][pp_index], dtype=np.int64)
    n_internal = internal["Ybus"].shape[0]
    if len(set(ppci_bus.tolist())) != len(ppci_bus) or ppci_bus.max(initial=0) >= n_internal:
        msg = f"{spec}: the market's buses do not map one to one onto pandapower's power flow"
        raise UnsupportedTopology(msg)
    aux_bus = np.setdiff1d(np.arange(n_internal), ppci_bus)
    if len(aux_bus) > MAX_AUX_BUSES:
        msg = (
            f"{spec}: pandapower's power flow model has {len(aux_bus)} buses outside the "
            f"market's (at most {MAX_AUX_BUSES} are eliminated)"
        )
        raise UnsupportedTopology(msg)
    branch_is = np.asarray(internal["branch_is"], dtype=bool)
    internal_row = np.cumsum(branch_is) - 1
    ranges = lookup["branch"]
    base = float(internal["baseMVA"])
    rows, scale_f, scale_t = [], [], []
    vn = net.bus["vn_kv"]
    for kind, index in elements:
        table = net.line if kind == "line" else net.trafo
        start = ranges[kind][0]
        ppc_row = start + int(table.index.get_loc(index))
        if not branch_is[ppc_row]:
            msg = f"{spec}: {kind} {index} is not in pandapower's power flow model"
            raise UnsupportedTopology(msg)
        rows.append(int(internal_row[ppc_row]))
        row = table.loc[index]
        parallel = float(row.get("parallel", 1) or 1)
        if kind == "line":
            a, b = int(row["from_bus"]), int(row["to_bus"])
            rated_f = rated_t = float(row["max_i_ka"]) * float(row.get("df", 1.0) or 1.0) * parallel
        else:
            a, b = int(row["hv_bus"]), int(row["lv_bus"])
            sn = float(row["sn_mva"]) * parallel
            rated_f = sn / (math.sqrt(3) * float(row["vn_hv_kv"]))
            rated_t = sn / (math.sqrt(3) * float(row["vn_lv_kv"]))
        ka_f = base / (math.sqrt(3) * float(vn.at[a]))  # kA per p.u. current at that end
        ka_t = base / (math.sqrt(3) * float(vn.at[b]))
        scale_f.append(ka_f / rated_f if rated_f > 0 else 0.0)
        scale_t.append(ka_t / rated_t if rated_t > 0 else 0.0)
    return MeshedAc(
        ppci_bus=ppci_bus,
        aux_bus=aux_bus,
        ybus=sp.csr_matrix(internal["Ybus"]),
        yf=sp.csr_matrix(internal["Yf"]),
        yt=sp.csr_matrix(internal["Yt"]),
        branch_table=np.asarray(internal["branch"]),
        branch_row=np.asarray(rows, dtype=np.int64),
        scale_f=np.asarray(scale_f, dtype=float),
        scale_t=np.asarray(scale_t, dtype=float),
        s_base_mva=base,
        slack=slack,
    )


def _triplet(m: Any) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:  # noqa: ANN401
    coo = sp.coo_matrix(m)
    keep = coo.data != 0
    return (
        coo.row[keep].astype(np.int64),
        coo.col[keep].astype(np.int64),
        coo.data[keep].astype(np.float64),
    )


def sensitivities_at(
    mesh: MeshedAc,
    v_internal: NDArray[np.complex128],
    *,
    loading_max: NDArray[np.float64],
    market_op_kw: NDArray[np.float64],
    grid_op_kw: float,
    slack_base_kw: float,
) -> Sensitivities:
    """The sensitivities of the module docstring at the internal voltages ``v_internal``.

    Parameters
    ----------
    mesh : MeshedAc
        The feeder's internal model (:func:`read_meshed_ac`).
    v_internal : ndarray of complex
        Every internal bus's voltage at the operating point [p.u.]
        (:attr:`grid_models.powerflow.AcState.v_internal` of its AC solution).
    loading_max : ndarray of float
        Largest loading allowed per branch [-].
    market_op_kw : ndarray of float
        The market's net injection per model bus at the point [kW].
    grid_op_kw : float
        The market's grid exchange at the point [kW] (the slack's change from the base case).
    slack_base_kw : float
        The slack's base-case injection [kW].

    Returns
    -------
    Sensitivities
        For :class:`market.network.NetworkModel`'s ``meshed``.

    Raises
    ------
    PowerFlowFailed
        If the Jacobian is singular at the point (no first-order model there).
    """
    n = len(mesh.ppci_bus)
    order = mesh.ppci_bus
    non_slack = np.array([b for b in range(n) if b != mesh.slack], dtype=np.int64)
    cols_m = order[non_slack]
    cols_a = mesh.aux_bus
    ds_dvm, ds_dva = (sp.csr_matrix(m) for m in dSbus_dV(mesh.ybus, v_internal))

    def state_cols(d_va: Any, d_vm: Any, cols: NDArray[np.int64]) -> Any:  # noqa: ANN401
        return sp.hstack([sp.csr_matrix(d_va)[:, cols], sp.csr_matrix(d_vm)[:, cols]], format="csr")

    s_m = state_cols(ds_dva, ds_dvm, cols_m)  # every internal row x the model's state
    s_a = state_cols(ds_dva, ds_dvm, cols_a)  # ... x the auxiliary buses' state
    # loading² of each branch at its more loaded end
    di_f_dva, di_f_dvm, di_t_dva, di_t_dvm, i_f, i_t = dIbr_dV(
        mesh.branch_table, mesh.yf, mesh.yt, v_internal
    )
    da_f_dva, da_f_dvm, da_t_dva, da_t_dvm = dAbr_dV(
        di_f_dva, di_f_dvm, di_t_dva, di_t_dvm, i_f, i_t
    )
    rows = mesh.branch_row
    load_f = np.abs(i_f[rows]) * mesh.scale_f
    load_t = np.abs(i_t[rows]) * mesh.scale_t
    use_to = load_t > load_f
    scale2 = np.where(use_to, mesh.scale_t, mesh.scale_f) ** 2
    pick_f = sp.diags(np.where(use_to, 0.0, 1.0) * scale2)
    pick_t = sp.diags(np.where(use_to, 1.0, 0.0) * scale2)
    l_m = (
        pick_f @ state_cols(da_f_dva, da_f_dvm, cols_m)[rows]
        + pick_t @ state_cols(da_t_dva, da_t_dvm, cols_m)[rows]
    )
    l_a = (
        pick_f @ state_cols(da_f_dva, da_f_dvm, cols_a)[rows]
        + pick_t @ state_cols(da_t_dva, da_t_dvm, cols_a)[rows]
    )
    jac_p = s_m[order].real
    jac_q = s_m[cols_m].imag
    jac_l = l_m
    if len(cols_a):
        # the auxiliary buses' injections stay put: x_a = -J_aa⁻¹ J_am x_m (exact, first order)
        j_aa = sp.vstack([s_a[cols_a].real, s_a[cols_a].imag], format="csc")
        j_am = sp.vstack([s_m[cols_a].real, s_m[cols_a].imag], format="csc")
        try:
            x_a = sp.csc_matrix(sp.linalg.splu(j_aa).solve(j_am.toarray()))
        except RuntimeError as exc:  # SuperLU: "Factor is exactly singular"
            msg = f"the AC Jacobian of the auxiliary buses is singular: {exc}"
            raise PowerFlowFailed(msg) from exc
        jac_p = jac_p - s_a[order].real @ x_a
        jac_q = jac_q - s_a[cols_m].imag @ x_a
        jac_l = jac_l - l_a @ x_a
    loading_op = np.maximum(load_f, load_t) ** 2
    # electrical distance: K = dVm/dP with the reactive injections fixed
    jac = sp.vstack([sp.csr_matrix(jac_p)[non_slack], jac_q], format="csc")
    rhs = np.zeros((2 * (n - 1), n - 1))
    rhs[np.arange(n - 1), np.arange(n - 1)] = 1.0
    try:
        dx = sp.linalg.splu(jac).solve(rhs)
    except RuntimeError as exc:
        msg = f"the AC Jacobian is singular at the operating point: {exc}"
        raise PowerFlowFailed(msg) from exc
    k = np.zeros((n, n))
    k[np.ix_(non_slack, non_slack)] = dx[n - 1 :, :]  # dVm (non-slack) / dP (non-slack)
    diag = np.diag(k)
    distance = np.abs(diag[:, None] + diag[None, :] - k - k.T)
    # symmetric by definition; rounded so that the solver's last bits never order the matching
    distance = np.round((distance + distance.T) / 2, 12)
    vm = np.abs(v_internal[order])
    return Sensitivities(
        jac_p=_triplet(jac_p),
        jac_q=_triplet(jac_q),
        jac_l=_triplet(jac_l),
        loading_op=loading_op,
        loading_max=loading_max,
        vm_op_pu=np.asarray(vm, dtype=float),
        market_op_kw=np.asarray(market_op_kw, dtype=float),
        grid_op_kw=float(grid_op_kw),
        slack_base_kw=float(slack_base_kw),
        distance=distance,
    )
