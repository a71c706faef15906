"""Turn a pandapower feeder into the market's :class:`~market.network.NetworkModel`.

What is modelled, and how:

* **Topology.** In-service lines and two-winding transformers; buses joined by closed bus-bus
  switches are fused into one (as pandapower does; the others' names become aliases);
  line/trafo switches (an open one takes the element out). A radial feeder (from the single
  ``ext_grid`` bus) gets LinDistFlow, parallel branches between the same two buses merged
  (parallel impedance, summed limit); a meshed one (a branch closes a loop) is stated by its
  AC power flow linearised at the base case instead (:mod:`grid_models.meshed`). Buses not
  reached from the slack are left out (orders there are refused as unknown).
* **Impedances** on a 1 MVA system base: lines ``r_ohm_per_km * length_km / parallel / Z_base``
  with ``Z_base = vn_kv² / 1 MVA``; transformers from ``vk_percent``/``vkr_percent`` rescaled
  from ``sn_mva`` to the system base (magnetising branch and tap ignored: the AC offset below
  absorbs them).
* **Thermal limits.** Lines ``√3 · vn_kv · max_i_ka · df · parallel · max_loading_percent/100``
  scaled by the lowest allowed voltage (loading is a current limit, so at 0.95 p.u. the same
  current carries 5 % less power); transformers ``sn_mva · parallel · max_loading_percent/100``.
* **Base injections.** The grid's own loads, sgens, gens and storages (with ``scaling``) are the
  inflexible net injection at each bus.
* **AC correction.** An AC power flow of the base case gives the operating point: the
  per-bus offset ``vm_ac² − v_model`` (``v_model`` from :func:`market.network.linear_state`,
  the LP's own equations with losses) makes the linear model exact there.
* **Pre-existing violations.** Where the base case itself is outside ``[vm_min, vm_max]``, that
  bus's band is widened to the base-case value, so clearing may improve it but never worsen
  it, and a note says so (the AC check still reports the violation against the real limits).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from grid_models.errors import UnsupportedTopology
from grid_models.grids import Grid
from grid_models.meshed import MAX_MESHED_BUSES, MeshedAc, read_meshed_ac, sensitivities_at
from grid_models.powerflow import AcChecker, AcState, loading_limits
from market.domain import BusId
from market.network import NetworkModel, linear_state

S_BASE_VA = 1e6


@dataclass(frozen=True, slots=True, eq=False)
class LinearGrid:
    """A :class:`NetworkModel` and how its buses map back to pandapower.

    ``pp_index[i]`` is the pandapower bus index of model bus ``i``; ``vm_min_pu``/``vm_max_pu``
    are the limits asked for (the model's own may be widened at pre-existing violations);
    ``base`` is the AC state of the base case, ``checker`` the AC power flow runner of this
    grid, and ``bus_model[i]`` the model bus of ``base.bus_index[i]`` (-1 outside the model);
    ``meshed_ac`` what re-linearising a meshed feeder needs (None for a radial one).
    """

    network: NetworkModel
    pp_index: NDArray[np.int64]
    vm_min_pu: float
    vm_max_pu: float
    base: AcState
    checker: AcChecker
    bus_model: NDArray[np.int64]
    branch_of_element: dict[tuple[str, int], int]
    meshed_ac: MeshedAc | None = None

    def effective_limits(
        self, network: NetworkModel | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The model's voltage band per pandapower bus of the AC state (fused buses share it).

        Parameters
        ----------
        network : NetworkModel, optional
            A re-linearised model of this grid; default :attr:`network`.

        Returns
        -------
        vm_min_pu, vm_max_pu : ndarray of float
            Lower and upper limit [p.u.] per bus of ``base.bus_index``; the asked band for
            buses outside the model.
        """
        net = network or self.network
        lo = np.full(len(self.bus_model), self.vm_min_pu)
        hi = np.full(len(self.bus_model), self.vm_max_pu)
        inside = self.bus_model >= 0
        lo[inside] = net.vm_min_pu[self.bus_model[inside]]
        hi[inside] = net.vm_max_pu[self.bus_model[inside]]
        return lo, hi

    def effective_loading_limits(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Line and trafo loading limits [%] aligned with the base state's index arrays.

        The element's own limit, or its base-case loading where the base case (before any
        trade) already exceeds it: the market may not worsen such an overload, and is not
        blamed for it.
        """
        net = self.checker.grid.net
        lines = loading_limits(net.line, self.base.line_index)
        trafos = loading_limits(net.trafo, self.base.trafo_index)
        return (
            np.maximum(lines, self.base.line_loading_percent),
            np.maximum(trafos, self.base.trafo_loading_percent),
        )


@dataclass(slots=True)
class _Branch:
    a: int
    b: int
    r_pu: float
    x_pu: float
    s_max_va: float
    name: str
    kind: str
    elements: tuple[tuple[str, int], ...] = ()


def _open_switch_elements(net: Any, et: str) -> set[int]:  # noqa: ANN401
    sw = net.switch
    if not len(sw):
        return set()
    mask = (sw["et"] == et) & (~sw["closed"].astype(bool))
    return {int(e) for e in sw.loc[mask, "element"]}


def _branches(grid: Grid, vm_min_pu: float) -> list[_Branch]:
    net = grid.net
    out: list[_Branch] = []
    open_lines = _open_switch_elements(net, "l")
    open_trafos = _open_switch_elements(net, "t")
    for i, row in net.line.iterrows():
        if not bool(row["in_service"]) or int(i) in open_lines:
            continue
        vn_kv = float(net.bus.at[row["from_bus"], "vn_kv"])
        z_base = vn_kv**2 / (S_BASE_VA / 1e6)
        parallel = float(row.get("parallel", 1) or 1)
        length = float(row["length_km"])
        max_loading = _finite(row.get("max_loading_percent", 100.0), 100.0)
        s_max = (
            math.sqrt(3)
            * vn_kv
            * float(row["max_i_ka"])
            * float(row.get("df", 1.0) or 1.0)
            * parallel
            * max_loading
            / 100.0
            * 1e6
            * vm_min_pu
        )
        out.append(
            _Branch(
                int(row["from_bus"]),
                int(row["to_bus"]),
                float(row["r_ohm_per_km"]) * length / parallel / z_base,
                float(row["x_ohm_per_km"]) * length / parallel / z_base,
                s_max if s_max > 0 else math.inf,
                grid.branch_name("line", int(i)),
                "line",
                (("line", int(i)),),
            )
        )
    for i, row in net.trafo.iterrows():
        if not bool(row["in_service"]) or int(i) in open_trafos:
            continue
        parallel = float(row.get("parallel", 1) or 1)
        sn_va = float(row["sn_mva"]) * 1e6
        z = float(row["vk_percent"]) / 100.0
        r = float(row["vkr_percent"]) / 100.0
        x = math.sqrt(max(z * z - r * r, 0.0))
        scale = S_BASE_VA / sn_va / parallel
        max_loading = _finite(row.get("max_loading_percent", 100.0), 100.0)
        out.append(
            _Branch(
                int(row["hv_bus"]),
                int(row["lv_bus"]),
                r * scale,
                x * scale,
                # loading is a current limit: at the lowest voltage the same current carries
                # proportionally less power, as for lines
                sn_va * parallel * max_loading / 100.0 * vm_min_pu,
                grid.branch_name("trafo", int(i)),
                "trafo",
                (("trafo", int(i)),),
            )
        )
    for element in ("trafo3w", "impedance", "dcline"):
        table = getattr(net, element, None)
        if table is not None and len(table) and bool(table["in_service"].any()):
            msg = f"{grid.spec}: in-service {element} elements are not supported yet"
            raise UnsupportedTopology(msg)
    return out


def _fused_buses(net: Any, in_service: set[int], slack: int) -> dict[int, int]:  # noqa: ANN401
    """Representative bus of every in-service bus after fusing closed bus-bus switches.

    pandapower fuses such buses in its power flow; so does the market (union-find). The slack
    represents its own group, otherwise the smallest index does.
    """
    parent = {b: b for b in in_service}

    def find(b: int) -> int:
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        return b

    sw = net.switch
    if len(sw):
        closed = sw[(sw["et"] == "b") & sw["closed"].astype(bool)]
        for a, b in zip(closed["bus"].astype(int), closed["element"].astype(int), strict=True):
            if a in parent and b in parent:
                ra, rb = find(a), find(b)
                if ra != rb:
                    keep, drop = sorted((ra, rb), key=lambda x: (x != slack, x))
                    parent[drop] = keep
    return {b: find(b) for b in in_service}


def _finite(value: Any, default: float) -> float:  # noqa: ANN401
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


def _merge_parallel(branches: list[_Branch]) -> list[_Branch]:
    by_pair: dict[tuple[int, int], list[_Branch]] = defaultdict(list)
    for br in branches:
        by_pair[(min(br.a, br.b), max(br.a, br.b))].append(br)
    merged: list[_Branch] = []
    for group in by_pair.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        if any(b.r_pu == 0 and b.x_pu == 0 for b in group):
            zero = next(b for b in group if b.r_pu == 0 and b.x_pu == 0)
            merged.append(
                _Branch(
                    zero.a,
                    zero.b,
                    0.0,
                    0.0,
                    math.inf,
                    zero.name,
                    zero.kind,
                    tuple(e for b in group for e in b.elements),
                )
            )
            continue
        y = sum(1 / complex(b.r_pu, b.x_pu) for b in group)
        z = 1 / y
        merged.append(
            _Branch(
                group[0].a,
                group[0].b,
                z.real,
                z.imag,
                sum(b.s_max_va for b in group),
                " || ".join(b.name for b in group),
                group[0].kind,
                tuple(e for b in group for e in b.elements),
            )
        )
    return merged


def _bus_injections(net: Any) -> tuple[dict[int, float], dict[int, float]]:  # noqa: ANN401
    p: dict[int, float] = defaultdict(float)
    q: dict[int, float] = defaultdict(float)
    for element, sign in (("load", -1.0), ("sgen", 1.0), ("gen", 1.0), ("storage", -1.0)):
        table = getattr(net, element, None)
        if table is None or not len(table):
            continue
        active = table[table["in_service"].astype(bool)]
        scaling = active["scaling"].astype(float) if "scaling" in active else 1.0
        for bus, pw in (
            (active["p_mw"].astype(float) * scaling * 1e6).groupby(active["bus"]).sum().items()
        ):
            p[int(bus)] += sign * float(pw)
        if "q_mvar" in active and element != "gen":
            qs = (active["q_mvar"].astype(float) * scaling * 1e6).groupby(active["bus"]).sum()
            for bus, qv in qs.items():
                q[int(bus)] += sign * float(qv)
    return p, q


def build_linear_grid(
    grid: Grid,
    *,
    vm_min_pu: float = 0.95,
    vm_max_pu: float = 1.05,
) -> LinearGrid:
    """Build the market's network model of ``grid``, corrected at its AC base case.

    Parameters
    ----------
    grid : Grid
        The feeder with its base loads and generation set (e.g. a SimBench time step).
    vm_min_pu, vm_max_pu : float
        Voltage band [p.u.] (default 0.95-1.05).

    A meshed feeder (a branch closes a loop) is stated by its AC power flow linearised at the
    base case instead (:mod:`grid_models.meshed`; :func:`_build_meshed`).

    Raises
    ------
    UnsupportedTopology
        Several ext_grids, three-winding transformers.
    PowerFlowFailed
        If the base case's AC power flow does not converge.
    """
    net = grid.net
    ext = net.ext_grid[net.ext_grid["in_service"].astype(bool)]
    if len(ext) != 1:
        msg = f"{grid.spec}: exactly one in-service ext_grid is needed, found {len(ext)}"
        raise UnsupportedTopology(msg)
    vm_slack = float(ext["vm_pu"].iloc[0])
    in_service = {int(i) for i in net.bus.index[net.bus["in_service"].astype(bool)]}
    rep = _fused_buses(net, in_service, int(ext["bus"].iloc[0]))
    slack_pp = rep[int(ext["bus"].iloc[0])]
    fused: list[_Branch] = []
    for br in _branches(grid, vm_min_pu):
        if br.a not in in_service or br.b not in in_service:
            continue
        a, b = rep[br.a], rep[br.b]
        if a != b:  # a branch inside a fused busbar carries nothing
            fused.append(
                _Branch(a, b, br.r_pu, br.x_pu, br.s_max_va, br.name, br.kind, br.elements)
            )
    branches = _merge_parallel(fused)
    adjacency: dict[int, list[_Branch]] = defaultdict(list)
    for br in branches:
        adjacency[br.a].append(br)
        adjacency[br.b].append(br)

    order = [slack_pp]
    seen = {slack_pp}
    tree: list[tuple[int, int, _Branch]] = []
    in_tree: set[int] = set()
    loops: list[_Branch] = []
    head = 0
    while head < len(order):
        bus = order[head]
        head += 1
        for br in sorted(adjacency[bus], key=lambda b: (b.a, b.b, b.name)):
            other = br.b if br.a == bus else br.a
            if other in seen:
                if id(br) not in in_tree and br not in loops:
                    loops.append(br)  # closes a loop: the feeder is meshed
                continue
            seen.add(other)
            order.append(other)
            tree.append((bus, other, br))
            in_tree.add(id(br))
    if loops:
        return _build_meshed(grid, rep, fused, seen, slack_pp, vm_slack, vm_min_pu, vm_max_pu)

    pp_index = np.array(sorted(seen), dtype=np.int64)
    position = {int(b): i for i, b in enumerate(pp_index)}
    names = tuple(grid.bus_name(int(b)) for b in pp_index)
    aliases = tuple(
        (grid.bus_name(b), position[r]) for b, r in sorted(rep.items()) if b != r and r in position
    )
    base_p, base_q = _model_injections(net, rep, position)
    n = len(pp_index)

    network = NetworkModel(
        bus_names=tuple(BusId(x) for x in names),
        slack=position[slack_pp],
        vm_slack_pu=vm_slack,
        from_bus=np.array([position[a] for a, _, _ in tree], dtype=np.int64),
        to_bus=np.array([position[b] for _, b, _ in tree], dtype=np.int64),
        r_pu=np.array([br.r_pu for _, _, br in tree], dtype=float),
        x_pu=np.array([br.x_pu for _, _, br in tree], dtype=float),
        s_max_va=np.array([br.s_max_va for _, _, br in tree], dtype=float),
        branch_names=tuple(br.name for _, _, br in tree),
        branch_kinds=tuple(br.kind for _, _, br in tree),
        vm_min_pu=np.full(n, vm_min_pu),
        vm_max_pu=np.full(n, vm_max_pu),
        base_p_w=base_p,
        base_q_var=base_q,
        v_offset_pu2=np.zeros(n),
        s_base_va=S_BASE_VA,
        losses=True,
        aliases=aliases,
    )
    checker = AcChecker(grid, pp_index)
    zeros = np.zeros(len(pp_index))
    base = checker.run(zeros, zeros)
    vm_base = base.vm_at(pp_index)
    _, v_model = linear_state(network, base_p)
    offset = vm_base**2 - v_model
    lo = np.minimum(network.vm_min_pu, vm_base)
    hi = np.maximum(network.vm_max_pu, vm_base)
    notes = _voltage_notes(names, vm_base, vm_min_pu, vm_max_pu)
    network = network.with_changes(
        v_offset_pu2=offset, vm_min_pu=lo, vm_max_pu=hi, notes=tuple(notes)
    )
    return LinearGrid(
        network=network,
        pp_index=pp_index,
        vm_min_pu=vm_min_pu,
        vm_max_pu=vm_max_pu,
        base=base,
        checker=checker,
        bus_model=_bus_model(base, rep, position),
        branch_of_element={e: k for k, (_, _, br) in enumerate(tree) for e in br.elements},
    )


def _model_injections(
    net: Any,  # noqa: ANN401 - a pandapowerNet
    rep: dict[int, int],
    position: dict[int, int],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The grid's own net injections [W], [var] summed per model bus (fused buses together)."""
    p_inj, q_inj = _bus_injections(net)
    base_p = np.zeros(len(position))
    base_q = np.zeros(len(position))
    for b, value in p_inj.items():
        if rep.get(b) in position:
            base_p[position[rep[b]]] += value
    for b, value in q_inj.items():
        if rep.get(b) in position:
            base_q[position[rep[b]]] += value
    return base_p, base_q


def _bus_model(base: AcState, rep: dict[int, int], position: dict[int, int]) -> NDArray[np.int64]:
    """The model bus of each bus of the AC state (-1 outside the model)."""
    return np.array([position.get(rep.get(int(b), -1), -1) for b in base.bus_index], dtype=np.int64)


def _voltage_notes(
    names: tuple[str, ...], vm_base: NDArray[np.float64], vm_min_pu: float, vm_max_pu: float
) -> list[str]:
    """Notes on base-case voltages outside the band (their limit becomes the base value)."""
    notes = []
    low = np.flatnonzero(vm_base < vm_min_pu)
    high = np.flatnonzero(vm_base > vm_max_pu)
    if len(low):
        notes.append(
            f"base case below {vm_min_pu} p.u. at {len(low)} bus(es) (min "
            f"{vm_base.min():.4f} p.u. at {names[int(np.argmin(vm_base))]}) before any trade; "
            "their lower limit is the base-case value: clearing never worsens it"
        )
    if len(high):
        notes.append(
            f"base case above {vm_max_pu} p.u. at {len(high)} bus(es) (max "
            f"{vm_base.max():.4f} p.u. at {names[int(np.argmax(vm_base))]}) before any trade; "
            "their upper limit is the base-case value: clearing never worsens it"
        )
    return notes


def _build_meshed(
    grid: Grid,
    rep: dict[int, int],
    fused: list[_Branch],
    seen: set[int],
    slack_pp: int,
    vm_slack: float,
    vm_min_pu: float,
    vm_max_pu: float,
) -> LinearGrid:
    """The model of a meshed feeder: every branch and the AC power flow linearised at the base.

    :mod:`grid_models.meshed` gives the sensitivities; parallel branches stay apart (each has
    its own loading).
    """
    net = grid.net
    gens = net.gen[net.gen["in_service"].astype(bool)] if len(net.gen) else net.gen
    if len(gens):
        msg = (
            f"{grid.spec}: the feeder is meshed and has {len(gens)} voltage-controlled gen(s) "
            "(e.g. at bus "
            f"{grid.bus_name(int(gens['bus'].iloc[0]))}); the meshed model holds every "
            "non-slack bus's reactive injection fixed: model them as sgens"
        )
        raise UnsupportedTopology(msg)
    if len(seen) > MAX_MESHED_BUSES:
        msg = (
            f"{grid.spec}: the feeder is meshed with {len(seen)} buses; the meshed model is built "
            f"for at most {MAX_MESHED_BUSES} (MV networks)"
        )
        raise UnsupportedTopology(msg)
    pp_index = np.array(sorted(seen), dtype=np.int64)
    position = {int(b): i for i, b in enumerate(pp_index)}
    names = tuple(grid.bus_name(int(b)) for b in pp_index)
    aliases = tuple(
        (grid.bus_name(b), position[r]) for b, r in sorted(rep.items()) if b != r and r in position
    )
    branches = sorted(
        (br for br in fused if br.a in position and br.b in position),
        key=lambda br: (br.kind, br.elements),
    )
    elements = [br.elements[0] for br in branches]
    n = len(pp_index)
    base_p, base_q = _model_injections(net, rep, position)
    checker = AcChecker(grid, pp_index)
    zeros = np.zeros(n)
    base = checker.run(zeros, zeros)
    slack = position[slack_pp]
    mesh = read_meshed_ac(checker.net, pp_index, slack, elements, grid.spec)
    vm_base = base.vm_at(pp_index)
    loading_base = mesh.loading(base.v_internal)
    asked: dict[tuple[str, int], float] = {}
    for kind in ("line", "trafo"):
        index = np.array([i for k, i in elements if k == kind], dtype=np.int64)
        limits = loading_limits(getattr(net, kind), index) / 100.0
        asked.update(zip(((kind, int(i)) for i in index), limits.tolist(), strict=True))
    loading_asked = np.array([asked[e] for e in elements])
    loading_max = np.maximum(loading_asked, loading_base)
    notes = _voltage_notes(names, vm_base, vm_min_pu, vm_max_pu)
    over = np.flatnonzero(loading_base > loading_asked)
    if len(over):
        worst = int(over[np.argmax(loading_base[over] / loading_asked[over])])
        notes.append(
            f"base case overloads {len(over)} branch(es) before any trade (e.g. "
            f"{branches[worst].name}); their limit is the base-case loading: never worsened"
        )
    notes.append(
        f"meshed feeder ({len(branches) - (n - 1)} loop(s)): cleared on its AC power flow "
        "linearised at the operating point"
    )
    sens = sensitivities_at(
        mesh,
        base.v_internal,
        loading_max=loading_max,
        market_op_kw=zeros,
        grid_op_kw=0.0,
        slack_base_kw=base.slack_p_w / 1000.0,
    )
    network = NetworkModel(
        bus_names=tuple(BusId(x) for x in names),
        slack=slack,
        vm_slack_pu=vm_slack,
        from_bus=np.array([position[br.a] for br in branches], dtype=np.int64),
        to_bus=np.array([position[br.b] for br in branches], dtype=np.int64),
        r_pu=np.array([br.r_pu for br in branches], dtype=float),
        x_pu=np.array([br.x_pu for br in branches], dtype=float),
        s_max_va=np.array([br.s_max_va for br in branches], dtype=float),
        branch_names=tuple(br.name for br in branches),
        branch_kinds=tuple(br.kind for br in branches),
        vm_min_pu=np.minimum(np.full(n, vm_min_pu), vm_base),
        vm_max_pu=np.maximum(np.full(n, vm_max_pu), vm_base),
        base_p_w=base_p,
        base_q_var=base_q,
        v_offset_pu2=zeros,
        s_base_va=mesh.s_base_mva * 1e6,
        losses=True,
        aliases=aliases,
        notes=tuple(notes),
        meshed=sens,
    )
    return LinearGrid(
        network=network,
        pp_index=pp_index,
        vm_min_pu=vm_min_pu,
        vm_max_pu=vm_max_pu,
        base=base,
        checker=checker,
        bus_model=_bus_model(base, rep, position),
        branch_of_element={e: k for k, br in enumerate(branches) for e in br.elements},
        meshed_ac=mesh,
    )
