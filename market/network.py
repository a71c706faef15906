"""What the auction needs to know about the feeder: a radial branch model for LinDistFlow.

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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from market.errors import InvalidNetwork

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from market.domain import BusId


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class NetworkModel:
    """Radial network data for a LinDistFlow market clearing.

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
        if m != n - 1:
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
        parents = np.bincount(self.to_bus, minlength=n) if m else np.zeros(n, dtype=np.int64)
        if parents[self.slack] != 0 or np.any(np.delete(parents, self.slack) != 1):
            msg = "every bus but the slack must have exactly one parent branch (radial feeder)"
            raise InvalidNetwork(msg)
        reached = np.zeros(n, dtype=bool)
        reached[self.slack] = True
        children: list[list[int]] = [[] for _ in range(n)]
        for a, b in zip(self.from_bus.tolist(), self.to_bus.tolist(), strict=True):
            children[a].append(b)
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
        """Parent bus of each bus (-1 for the slack)."""
        parent = np.full(self.n_bus, -1, dtype=np.int64)
        parent[self.to_bus] = self.from_bus
        return parent

    def depth_and_path_r(self) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Hops and cumulative resistance [p.u.] from the slack to every bus."""
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
        """A copy with some fields replaced (used by the AC re-linearisation loop)."""
        import dataclasses  # noqa: PLC0415

        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def electrical_distance(
    parent: NDArray[np.int64],
    depth: NDArray[np.int64],
    path_r: NDArray[np.float64],
    a: int,
    b: int,
) -> float:
    """Resistance [p.u.] of the tree path between buses ``a`` and ``b``.

    ``parent``, ``depth`` and ``path_r`` come from :meth:`NetworkModel.parents` and
    :meth:`NetworkModel.depth_and_path_r`. Walks up from the deeper bus to the common
    ancestor: O(depth), no matrices.
    """
    x, y = a, b
    while x != y:
        if depth[x] >= depth[y]:
            x = int(parent[x])
        else:
            y = int(parent[y])
    return float(path_r[a] + path_r[b] - 2 * path_r[x])
