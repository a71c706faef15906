r"""What the auction needs to know about the feeder: a radial branch model for LinDistFlow.

Declared here, produced by ``grid_models`` (dependency inversion), so the auction runs without
pandapower. Everything is numpy and sparse: one row per bus and per branch, never a dense
bus x order or line x bus matrix.

Conventions
-----------
* Buses are numbered ``0 .. n_bus-1``; ``bus_names[i]`` is the pandapower bus name.
* Branch ``k`` runs from its parent bus ``from_bus[k]`` (towards the slack) to its child
  ``to_bus[k]``; a positive active flow ``p`` means power flowing away from the slack.
* Impedances ``r_pu``/``x_pu`` are on the system base ``s_base_va`` [VA].
* ``base_p_w``/``base_q_var`` are the inflexible *net injections* at each bus [W], [var]:
  positive = generation exceeding load (export), the pandapower ``sgen`` sign.
* ``v_offset_pu2`` corrects LinDistFlow's squared voltage towards the AC power flow at the
  operating point it was linearised around: ``v_ac**2 ≈ v_lindistflow + v_offset``.

The linear network state
------------------------
The equations the clearing LP states (:mod:`market.clearing.lp`) and ``grid_models`` uses to
calibrate the model against an AC power flow are defined here, once, in numpy:

* :func:`operating_point`: the active flow :math:`P^{op}_k` the losses are linearised around
  (``p_op_w``, or the base case's flows) and the constant reactive flow :math:`Q^0_k` (the
  base reactive load below each branch) [kW], [kvar];
* :func:`loss_coefficients`: branch :math:`k`'s loss
  :math:`\ell_k = r_k (P_k^2 + (Q^0_k)^2) / S_{base}` linearised at :math:`P^{op}_k` as
  :math:`\ell_k \approx \alpha_k + \beta_k P_k` with
  :math:`\alpha_k = r_k ((Q^0_k)^2 - (P^{op}_k)^2) / S_{base}` [kW] and
  :math:`\beta_k = 2 r_k P^{op}_k / S_{base}` [-] (zero without ``losses``);
* :func:`linear_state`: branch flows and squared voltages of a given net injection, flows from
  the leaves up (each branch's loss drawn at its parent bus) and
  :math:`v_j = v_i - 2 (r_k P_k + x_k Q^0_k) / S_{base}` from the slack down.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from market.errors import InvalidNetwork

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from market.domain import BusId


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Sensitivities:
    r"""A meshed feeder's AC power flow linearised at an operating point.

    Produced by ``grid_models`` from pandapower's Jacobian at an AC solution (the base case,
    then each cleared dispatch the AC loop re-linearises at). The state is
    :math:`x = (\Delta\theta_b, V_b)` over the non-slack buses ``b`` in index order (angles
    [rad] from the operating point's, voltage magnitudes [p.u.]); sparse matrices are given as
    coordinate triplets ``(rows, cols, values)`` with columns ``0 .. n-2`` the angles and
    ``n-1 .. 2n-3`` the magnitudes:

    * ``jac_p``: :math:`\partial P_b / \partial x` for every bus (``n`` rows, the slack's
      included: its row is the grid's exchange, so the losses are linearised with it) [p.u.
      on ``s_base_va``];
    * ``jac_q``: :math:`\partial Q_b / \partial x` for the non-slack buses (``n - 1`` rows,
      in their index order): orders are active power, so reactive injections stay put;
    * ``jac_l``: :math:`\partial \lambda_k^2 / \partial x` for every branch, where
      :math:`\lambda_k` is its loading (current over rated current, at the end more loaded
      at the operating point: pandapower's ``loading_percent / 100``);
    * ``loading_op``: :math:`\lambda_k^2` at the operating point; ``loading_max``: the
      largest loading allowed [-] (``max_loading_percent / 100``, or the base case's own
      where that already exceeds it: never worsened);
    * ``vm_op_pu``: every bus's voltage magnitude at the operating point [p.u.];
    * ``market_op_kw``: the market's net injection per bus at the operating point [kW]
      (zero at the base case); ``grid_op_kw``: the market's exchange with the upstream grid
      there (the slack's change from the base case) [kW]; ``slack_base_kw``: the slack's
      base-case injection [kW];
    * ``distance``: the electrical distance between each pair of buses [p.u./p.u.],
      :math:`K_{aa} + K_{bb} - K_{ab} - K_{ba}` with :math:`K = \partial V / \partial P` (how
      far apart a transfer from ``a`` to ``b`` pushes their voltages): trades are matched by
      it (:mod:`market.matching`).
    """

    jac_p: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]
    jac_q: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]
    jac_l: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]
    loading_op: NDArray[np.float64]
    loading_max: NDArray[np.float64]
    vm_op_pu: NDArray[np.float64]
    market_op_kw: NDArray[np.float64]
    grid_op_kw: float
    slack_base_kw: float
    distance: NDArray[np.float64]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class NetworkModel:
    """Network data for the market clearing: a radial feeder's for LinDistFlow, or a meshed one's.

    Without :attr:`meshed` the branches form a tree from the slack (validated) and the clearing
    states LinDistFlow on them; with it, they may close loops and the clearing states the
    linearised AC power flow of :class:`Sensitivities` instead.

    Parameters
    ----------
    bus_names : tuple of BusId
        Name of each bus, unique.
    slack : int
        Index of the slack bus (the upstream grid connection).
    vm_slack_pu : float
        Voltage magnitude held at the slack [p.u.].
    from_bus, to_bus : ndarray of int
        Parent and child bus of each branch (parent towards the slack).
    r_pu, x_pu : ndarray of float
        Series resistance and reactance of each branch [p.u. on ``s_base_va``].
    s_max_va : ndarray of float
        Thermal limit of each branch [VA]; ``inf`` for none.
    branch_names : tuple of str
        Name of each branch (pandapower line or trafo name).
    branch_kinds : tuple of str
        ``"line"`` or ``"trafo"`` per branch.
    vm_min_pu, vm_max_pu : ndarray of float
        Voltage band per bus [p.u.].
    base_p_w, base_q_var : ndarray of float
        Inflexible net injection per bus [W], [var]; positive = export.
    v_offset_pu2 : ndarray of float
        Correction of the squared voltage per bus [p.u.^2].
    s_base_va : float
        System base [VA].
    slack_import_max_w, slack_export_max_w : float
        Limits of the upstream connection [W]; ``inf`` for none.
    notes : tuple of str
        Human-readable notes from the producer (e.g. relaxed base-case violations).
    losses : bool
        Whether the clearing accounts for (linearised) branch losses.
    p_op_w : ndarray of float, optional
        Active flow per branch at the operating point the losses are linearised around [W];
        ``None`` for the base case's flows.
    aliases : tuple of (BusId, int)
        Other names of a bus (pandapower buses fused by closed bus-bus switches) -> index.
    meshed : Sensitivities, optional
        Set for a meshed feeder: the branches need not form a tree, and the clearing states
        the network by these sensitivities instead of LinDistFlow (``r_pu``, ``x_pu``,
        ``v_offset_pu2``, ``p_op_w`` are then informative only).
    """

    bus_names: tuple[BusId, ...]
    slack: int
    vm_slack_pu: float
    from_bus: NDArray[np.int64]
    to_bus: NDArray[np.int64]
    r_pu: NDArray[np.float64]
    x_pu: NDArray[np.float64]
    s_max_va: NDArray[np.float64]
    branch_names: tuple[str, ...]
    branch_kinds: tuple[str, ...]
    vm_min_pu: NDArray[np.float64]
    vm_max_pu: NDArray[np.float64]
    base_p_w: NDArray[np.float64]
    base_q_var: NDArray[np.float64]
    v_offset_pu2: NDArray[np.float64]
    s_base_va: float = 1e6
    slack_import_max_w: float = float("inf")
    slack_export_max_w: float = float("inf")
    notes: tuple[str, ...] = ()
    losses: bool = False
    p_op_w: NDArray[np.float64] | None = None
    aliases: tuple[tuple[BusId, int], ...] = ()
    meshed: Sensitivities | None = None
    bfs_order: NDArray[np.int64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.bus_names)
        m = len(self.from_bus)
        if len(set(self.bus_names)) != n:
            msg = "bus names must be unique"
            raise InvalidNetwork(msg)
        if not 0 <= self.slack < n:
            msg = f"slack index {self.slack} out of range for {n} buses"
            raise InvalidNetwork(msg)
        if self.meshed is None and m != n - 1:
            msg = f"a radial network has n_bus - 1 = {n - 1} branches, got {m}"
            raise InvalidNetwork(msg)
        for name in ("to_bus", "r_pu", "x_pu", "s_max_va"):
            if len(getattr(self, name)) != m:
                msg = f"{name} has {len(getattr(self, name))} entries, expected {m}"
                raise InvalidNetwork(msg)
        for name in ("vm_min_pu", "vm_max_pu", "base_p_w", "base_q_var", "v_offset_pu2"):
            if len(getattr(self, name)) != n:
                msg = f"{name} has {len(getattr(self, name))} entries, expected {n}"
                raise InvalidNetwork(msg)
        if len(self.branch_names) != m or len(self.branch_kinds) != m:
            msg = "branch_names and branch_kinds need one entry per branch"
            raise InvalidNetwork(msg)
        if m and (self.from_bus.min() < 0 or self.to_bus.max() >= n):
            msg = "branch endpoint out of range"
            raise InvalidNetwork(msg)
        if self.meshed is None:
            parents = np.bincount(self.to_bus, minlength=n) if m else np.zeros(n, dtype=np.int64)
            if parents[self.slack] != 0 or np.any(np.delete(parents, self.slack) != 1):
                msg = "every bus but the slack must have exactly one parent branch (radial feeder)"
                raise InvalidNetwork(msg)
        else:
            self._check_meshed(self.meshed)
        reached = np.zeros(n, dtype=bool)
        reached[self.slack] = True
        children: list[list[int]] = [[] for _ in range(n)]
        for a, b in zip(self.from_bus.tolist(), self.to_bus.tolist(), strict=True):
            children[a].append(b)
            if self.meshed is not None:  # a mesh is reached along its branches either way
                children[b].append(a)
        order = [self.slack]
        head = 0
        while head < len(order):
            for child in children[order[head]]:
                if not reached[child]:
                    reached[child] = True
                    order.append(child)
            head += 1
        object.__setattr__(self, "bfs_order", np.array(order, dtype=np.int64))
        if not reached.all():
            cut_off = [self.bus_names[i] for i in np.flatnonzero(~reached)[:5]]
            msg = f"buses not connected to the slack (a cycle or an island): {cut_off}"
            raise InvalidNetwork(msg)
        if np.any(self.vm_min_pu > self.vm_max_pu):
            msg = "vm_min_pu above vm_max_pu at some bus"
            raise InvalidNetwork(msg)

    def _check_meshed(self, sens: Sensitivities) -> None:
        n, m = len(self.bus_names), len(self.from_bus)
        for name, (rows, cols, _), n_rows in (
            ("jac_p", sens.jac_p, n),
            ("jac_q", sens.jac_q, n - 1),
            ("jac_l", sens.jac_l, m),
        ):
            if len(rows) and (rows.max() >= n_rows or cols.max() >= 2 * (n - 1)):
                msg = f"meshed sensitivities: {name} has an entry out of range"
                raise InvalidNetwork(msg)
        for name, size in (
            ("loading_op", m),
            ("loading_max", m),
            ("vm_op_pu", n),
            ("market_op_kw", n),
        ):
            if len(getattr(sens, name)) != size:
                msg = f"meshed sensitivities: {name} needs {size} entries"
                raise InvalidNetwork(msg)
        if sens.distance.shape != (n, n):
            msg = f"meshed sensitivities: distance must be {n} x {n}"
            raise InvalidNetwork(msg)

    @property
    def is_meshed(self) -> bool:
        """Whether the clearing states this feeder by sensitivities (:attr:`meshed`)."""
        return self.meshed is not None

    @property
    def n_bus(self) -> int:
        """Number of buses."""
        return len(self.bus_names)

    @property
    def n_branch(self) -> int:
        """Number of branches."""
        return len(self.from_bus)

    def bus_index(self) -> dict[BusId, int]:
        """Map bus name (and alias) -> index."""
        index = {name: i for i, name in enumerate(self.bus_names)}
        for alias, i in self.aliases:
            index.setdefault(alias, i)
        return index

    def parents(self) -> NDArray[np.int64]:
        """Parent bus of each bus (-1 for the slack; radial feeders only)."""
        _radial_only(self, "parents")
        parent = np.full(self.n_bus, -1, dtype=np.int64)
        parent[self.to_bus] = self.from_bus
        return parent

    def depth_and_path_r(self) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Hops and cumulative resistance [p.u.] from the slack to every bus (radial only)."""
        parent = self.parents()
        branch_of = np.full(self.n_bus, -1, dtype=np.int64)
        branch_of[self.to_bus] = np.arange(self.n_branch)
        depth = np.zeros(self.n_bus, dtype=np.int64)
        path_r = np.zeros(self.n_bus)
        for node in self.bfs_order[1:].tolist():
            p = parent[node]
            depth[node] = depth[p] + 1
            path_r[node] = path_r[p] + self.r_pu[branch_of[node]]
        return depth, path_r

    def with_changes(self, **changes: object) -> NetworkModel:
        """A copy with some fields replaced, validated again.

        Parameters
        ----------
        **changes : object
            Field name -> new value (e.g. ``v_offset_pu2`` after an AC power flow).

        Returns
        -------
        NetworkModel
            The new model; the original is unchanged.
        """
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _radial_only(network: NetworkModel, what: str) -> None:
    """Refuse a meshed model where a LinDistFlow tree is needed."""
    if network.meshed is not None:
        msg = f"{what} needs a radial feeder; a meshed one is stated by its sensitivities"
        raise InvalidNetwork(msg)


def electrical_distance(
    parent: NDArray[np.int64],
    depth: NDArray[np.int64],
    path_r: NDArray[np.float64],
    a: int,
    b: int,
) -> float:
    """Resistance of the tree path between buses ``a`` and ``b``.

    Walks up from the deeper bus to the common ancestor: O(depth), no matrices.

    Parameters
    ----------
    parent : ndarray of int
        Parent bus of each bus (:meth:`NetworkModel.parents`).
    depth, path_r : ndarray
        Hops and cumulative resistance [p.u.] from the slack
        (:meth:`NetworkModel.depth_and_path_r`).
    a, b : int
        The two bus indices.

    Returns
    -------
    float
        Sum of the branch resistances between them [p.u.].
    """
    x, y = a, b
    while x != y:
        if depth[x] >= depth[y]:
            x = int(parent[x])
        else:
            y = int(parent[y])
    return float(path_r[a] + path_r[b] - 2 * path_r[x])


def subtree_sums(network: NetworkModel, per_bus: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per branch, the sum of ``per_bus`` over the buses below it (towards the leaves).

    Parameters
    ----------
    network : NetworkModel
        The radial feeder.
    per_bus : ndarray of float
        One value per bus (any unit).

    Returns
    -------
    ndarray of float
        One value per branch: the sum over the branch's child bus and everything below it.
    """
    _radial_only(network, "subtree_sums")
    parent = network.parents()
    acc = per_bus.astype(float).copy()
    for b in network.bfs_order[:0:-1].tolist():
        acc[parent[b]] += acc[b]
    branch_of = np.full(network.n_bus, -1, dtype=np.int64)
    branch_of[network.to_bus] = np.arange(network.n_branch)
    out = np.zeros(network.n_branch)
    out[branch_of[branch_of >= 0]] = acc[np.flatnonzero(branch_of >= 0)]
    return out


def operating_point(network: NetworkModel) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Active flow at the operating point and the base reactive flow of each branch.

    Parameters
    ----------
    network : NetworkModel
        The feeder; ``p_op_w`` if set, else the lossless flows of its base injections.

    Returns
    -------
    p_op_kw : ndarray of float
        Active flow per branch the losses are linearised around [kW], parent to child.
    q0_kvar : ndarray of float
        Reactive flow per branch, the base reactive load below it [kvar] (orders carry no
        reactive power, so it is a constant of the clearing).
    """
    q0 = subtree_sums(network, -network.base_q_var / 1000.0)
    if network.p_op_w is not None:
        return network.p_op_w / 1000.0, q0
    return subtree_sums(network, -network.base_p_w / 1000.0), q0


def loss_coefficients(
    network: NetworkModel,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Coefficients of the linearised branch losses ``loss_k ≈ alpha_k + beta_k P_k``.

    Parameters
    ----------
    network : NetworkModel
        The feeder; all zeros when ``network.losses`` is false.

    Returns
    -------
    alpha_kw : ndarray of float
        ``r_k ((Q0_k)² - (P_op_k)²) / S_base`` per branch [kW].
    beta : ndarray of float
        ``2 r_k P_op_k / S_base`` per branch [-].
    q0_kvar : ndarray of float
        Base reactive flow per branch [kvar] (see :func:`operating_point`).
    """
    p_op, q0 = operating_point(network)
    if not network.losses:
        return np.zeros(network.n_branch), np.zeros(network.n_branch), q0
    s_kva = network.s_base_va / 1000.0
    beta = 2.0 * network.r_pu * p_op / s_kva
    alpha = network.r_pu * (q0**2 - p_op**2) / s_kva
    return alpha, beta, q0


def linear_state(
    network: NetworkModel, injection_w: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Branch flows and squared voltages that the clearing LP's rows imply for an injection.

    Flows from the leaves up, each branch's linearised loss (:func:`loss_coefficients`) drawn
    at its parent bus, then the voltage drops ``v_j = v_i - 2 (r_k P_k + x_k Q0_k) / S_base``
    from the slack down. Used to set the AC offset so that the linear model agrees with an AC
    power flow at a given dispatch.

    Parameters
    ----------
    network : NetworkModel
        The feeder.
    injection_w : ndarray of float
        Net injection per bus [W] (positive = export).

    Returns
    -------
    flow_kw : ndarray of float
        Active flow per branch, parent to child [kW].
    v_pu2 : ndarray of float
        Squared voltage per bus [p.u.²], without ``v_offset_pu2``.
    """
    _radial_only(network, "linear_state")
    alpha, beta, q0 = loss_coefficients(network)
    parent = network.parents()
    branch_of = np.full(network.n_bus, -1, dtype=np.int64)
    branch_of[network.to_bus] = np.arange(network.n_branch)
    load = -np.asarray(injection_w, dtype=float) / 1000.0
    flow = np.zeros(network.n_branch)
    for b in network.bfs_order[:0:-1].tolist():
        k = branch_of[b]
        flow[k] = load[b]
        load[parent[b]] += flow[k] + alpha[k] + beta[k] * flow[k]
    s_kva = network.s_base_va / 1000.0
    v = np.zeros(network.n_bus)
    v[network.slack] = network.vm_slack_pu**2
    for b in network.bfs_order[1:].tolist():
        k = branch_of[b]
        v[b] = v[parent[b]] - 2.0 * (network.r_pu[k] * flow[k] + network.x_pu[k] * q0[k]) / s_kva
    return flow, v
