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

The AC validation loop re-linearises at each cleared dispatch's AC solution
(:func:`sensitivities_at` with that solution's voltages): the same tolerances as on radial
feeders, and each overloaded branch's limit tightened by ``limit / loading`` as there.
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

from grid_models.errors import UnsupportedTopology
from market.network import Sensitivities


@dataclass(frozen=True, slots=True, eq=False)
class MeshedAc:
    """What re-linearising a meshed feeder needs, read once from pandapower's internal model.

    ``ppci_bus[i]`` is model bus ``i``'s row in pandapower's internal power flow model;
    ``ybus``, ``yf``, ``yt`` its admittance matrices (topology does not change between
    dispatches); per model branch ``k``: ``branch_row[k]`` its internal branch row and
    ``scale_f[k]``, ``scale_t[k]`` the loading per p.u. current at its from and to end [-]
    (kA per p.u. at the end's bus over the rated kA); ``s_base_mva`` the internal base.
    """

    ppci_bus: NDArray[np.int64]
    ybus: Any
    yf: Any
    yt: Any
    branch_table: NDArray[np.float64]
    branch_row: NDArray[np.int64]
    scale_f: NDArray[np.float64]
    scale_t: NDArray[np.float64]
    s_base_mva: float
    slack: int

    def loading(self, v: NDArray[np.complex128]) -> NDArray[np.float64]:
        """Each branch's loading [-] (the larger end's) at model-bus voltages ``v`` [p.u.]."""
        full = self._full(v)
        i_f = np.abs(self.yf @ full)[self.branch_row] * self.scale_f
        i_t = np.abs(self.yt @ full)[self.branch_row] * self.scale_t
        return np.asarray(np.maximum(i_f, i_t), dtype=np.float64)

    def _full(self, v: NDArray[np.complex128]) -> NDArray[np.complex128]:
        full = np.zeros(self.ybus.shape[0], dtype=complex)
        full[self.ppci_bus] = v
        return full


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
    if len(set(ppci_bus.tolist())) != len(ppci_bus) or len(ppci_bus) != n_internal:
        msg = (
            f"{spec}: pandapower's power flow model has {n_internal} buses, the market's "
            f"{len(ppci_bus)}: a meshed feeder needs every in-service bus connected"
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
    vm_pu: NDArray[np.float64],
    va_rad: NDArray[np.float64],
    *,
    loading_max: NDArray[np.float64],
    market_op_kw: NDArray[np.float64],
    grid_op_kw: float,
    slack_base_kw: float,
) -> Sensitivities:
    """The sensitivities of the module docstring at model-bus voltages ``vm_pu∠va_rad``.

    Parameters
    ----------
    mesh : MeshedAc
        The feeder's internal model (:func:`read_meshed_ac`).
    vm_pu, va_rad : ndarray of float
        Voltage magnitude [p.u.] and angle [rad] per model bus at the operating point.
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
    """
    n = len(vm_pu)
    v_model = vm_pu * np.exp(1j * va_rad)
    full = mesh._full(v_model)
    ds_dvm, ds_dva = dSbus_dV(mesh.ybus, full)
    order = mesh.ppci_bus
    non_slack = np.array([b for b in range(n) if b != mesh.slack], dtype=np.int64)
    cols = order[non_slack]
    ds_x = sp.hstack([sp.csr_matrix(ds_dva)[:, cols], sp.csr_matrix(ds_dvm)[:, cols]], format="csr")
    ds_rows = ds_x[order]
    jac_p = ds_rows.real
    jac_q = ds_rows.imag[non_slack]
    # loading² of each branch at its more loaded end
    branch = mesh.branch_table
    di_f_dva, di_f_dvm, di_t_dva, di_t_dvm, i_f, i_t = dIbr_dV(branch, mesh.yf, mesh.yt, full)
    da_f_dva, da_f_dvm, da_t_dva, da_t_dvm = dAbr_dV(
        di_f_dva, di_f_dvm, di_t_dva, di_t_dvm, i_f, i_t
    )
    rows = mesh.branch_row
    load_f = np.abs(i_f[rows]) * mesh.scale_f
    load_t = np.abs(i_t[rows]) * mesh.scale_t
    use_to = load_t > load_f
    scale2 = np.where(use_to, mesh.scale_t, mesh.scale_f) ** 2
    da_f = sp.hstack(
        [sp.csr_matrix(da_f_dva)[:, cols], sp.csr_matrix(da_f_dvm)[:, cols]], format="csr"
    )[rows]
    da_t = sp.hstack(
        [sp.csr_matrix(da_t_dva)[:, cols], sp.csr_matrix(da_t_dvm)[:, cols]], format="csr"
    )[rows]
    pick_f = sp.diags(np.where(use_to, 0.0, 1.0) * scale2)
    pick_t = sp.diags(np.where(use_to, 1.0, 0.0) * scale2)
    jac_l = pick_f @ da_f + pick_t @ da_t
    loading_op = np.maximum(load_f, load_t) ** 2
    # electrical distance: K = dVm/dP with the reactive injections fixed
    jac = sp.vstack([jac_p[non_slack], jac_q], format="csc")
    rhs = np.zeros((2 * (n - 1), n - 1))
    rhs[np.arange(n - 1), np.arange(n - 1)] = 1.0
    dx = sp.linalg.splu(jac).solve(rhs)
    k_small = dx[n - 1 :, :]  # dVm (non-slack) / dP (non-slack)
    k = np.zeros((n, n))
    k[np.ix_(non_slack, non_slack)] = k_small
    diag = np.diag(k)
    distance = np.abs(diag[:, None] + diag[None, :] - k - k.T)
    return Sensitivities(
        jac_p=_triplet(jac_p),
        jac_q=_triplet(jac_q),
        jac_l=_triplet(jac_l),
        loading_op=loading_op,
        loading_max=loading_max,
        vm_op_pu=np.asarray(vm_pu, dtype=float),
        market_op_kw=np.asarray(market_op_kw, dtype=float),
        grid_op_kw=float(grid_op_kw),
        slack_base_kw=float(slack_base_kw),
        distance=distance,
    )
