"""The feeder map's geometry: where each bus and branch of a grid is drawn.

:func:`feeder_map` turns a :class:`~grid_models.grids.Grid` into drawing coordinates for an SVG
(``x`` to the right, ``y`` *downwards*), scaled so the drawing's longer side is
:data:`EXTENT` with a :data:`MARGIN` around the buses; :func:`feeder_map_json` is the compact,
columnar form the browser reads.

Where the coordinates come from
    The buses' GeoJSON points (pandapower 3.x ``net.bus["geo"]``, e.g.
    ``{"type":"Point", "coordinates":[11.8, 53.4]}``), as SimBench and CIGRE grids carry them;
    the source's aspect ratio is kept (longitude and latitude are drawn as plain ``x`` and
    ``y``). A bus without a point sits on its nearest located neighbour (fewest branches
    away); a bus with no located bus in reach is put in a row under the drawing. A grid
    with fewer than two distinct points gets a *generated* layout instead: a tree drawn from
    the slack bus (breadth-first tree of the graph, so meshes are drawn as a tree plus the
    extra branches), depth downwards, leaves side by side, each parent centred over its
    children, one axis stretched if needed to keep it between 2:1 and 1:2. It is
    deterministic: neighbours are visited in pandapower index order.
    (pandapower's ``create_generic_coordinates`` needs igraph or graphviz, neither of which
    PeerGrid installs, and writes into the net.)

Feeder labels
    A SimBench bus's ``subnet`` names its feeder: the part of the subnet name for the bus's
    voltage level (``"MV2.101_LV1.201_Feeder5"`` at 20 kV is ``"MV2.101"``, ``"LV1.201"`` at
    0.4 kV is ``"LV1.201"``). Other grids: the buses joined by lines and closed bus-bus
    switches to a transformer's low-voltage side, away from the slack, carry that
    transformer's name (``trafo<index>`` when unnamed); every other bus has ``""``.

Branch ids are the AC check's (:func:`grid_models.powerflow.summarise`): ``line<index>`` and
``trafo<index>``. Three-winding transformers and impedances are not branches of the check, so
they are not branches of the map either (they do join buses for the layout).

Nothing here changes ``grid.net``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components

from grid_models.grids import Grid

EXTENT = 1000.0
"""Length of the drawing's longer side [drawing units]."""
MARGIN = 20.0
"""Space between the outermost buses and the drawing's edge [drawing units]."""


@dataclass(frozen=True, slots=True)
class MapBus:
    """One bus of the map."""

    index: int
    """Pandapower index [-]."""
    name: str
    """The bus's name as :class:`~grid_models.grids.Grid` names it (else ``bus<index>``)."""
    x: float
    """Horizontal position, growing to the right [drawing units]."""
    y: float
    """Vertical position, growing downwards [drawing units]."""
    vn_kv: float
    """Nominal voltage [kV]."""
    in_service: bool
    """Whether the bus is in service."""
    slack: bool
    """Whether an in-service ext_grid (the slack) sits here."""
    feeder: str
    """The feeder (SimBench subnet, or transformer) the bus belongs to; ``""`` if none."""


@dataclass(frozen=True, slots=True)
class MapBranch:
    """One line or two-winding transformer of the map."""

    id: str
    """The AC check's id of the branch: ``line<index>`` or ``trafo<index>``."""
    kind: str
    """``"line"`` or ``"trafo"``."""
    name: str
    """Pandapower name, else ``<kind><index>`` (as the AC check names it)."""
    from_bus: int
    """Pandapower index of the line's ``from_bus`` or the transformer's ``hv_bus`` [-]."""
    to_bus: int
    """Pandapower index of the line's ``to_bus`` or the transformer's ``lv_bus`` [-]."""
    in_service: bool
    """In service, not cut by an open switch, and both its buses in service."""


@dataclass(frozen=True, slots=True)
class FeederMap:
    """A grid's drawing: buses, branches and the drawing's extent."""

    buses: tuple[MapBus, ...]
    """Every bus, in pandapower index order."""
    branches: tuple[MapBranch, ...]
    """Every line (index order), then every two-winding transformer (index order)."""
    width: float
    """The drawing's width: every ``x`` is in ``[0, width]`` [drawing units]."""
    height: float
    """The drawing's height: every ``y`` is in ``[0, height]`` [drawing units]."""
    generated: bool
    """Whether the layout was generated (the grid has no usable coordinates)."""
    feeders: tuple[str, ...]
    """The distinct feeder labels of the buses, sorted, without ``""``."""


def feeder_map(grid: Grid) -> FeederMap:
    """The geometry of ``grid``'s feeder map.

    Parameters
    ----------
    grid : Grid
        The feeder; its ``net`` is read, never changed.

    Returns
    -------
    FeederMap
        Buses with drawing coordinates [drawing units] and feeder labels, lines and
        transformers by the AC check's ids, the drawing's extent, and whether the layout was
        generated.
    """
    net = grid.net
    bus = net.bus
    index = bus.index.to_numpy(dtype=np.int64)
    order = np.argsort(index, kind="stable")
    index = index[order]
    n = len(index)
    names = [
        _bus_name(raw, int(i)) for raw, i in zip(bus["name"].to_numpy()[order], index, strict=True)
    ]
    vn_kv = bus["vn_kv"].to_numpy(dtype=float)[order]
    bus_on = bus["in_service"].to_numpy(dtype=bool)[order]

    ext = net.ext_grid
    slack_buses = ext["bus"].to_numpy(dtype=np.int64)[ext["in_service"].to_numpy(dtype=bool)]
    slack = np.isin(index, slack_buses)

    cut = _cut_by_open_switches(net)
    branches: list[MapBranch] = []
    for kind, table, from_col, to_col in (
        ("line", net.line, "from_bus", "to_bus"),
        ("trafo", net.trafo, "hv_bus", "lv_bus"),
    ):
        if not len(table):
            continue
        rows = np.argsort(table.index.to_numpy(dtype=np.int64), kind="stable")
        ids = table.index.to_numpy(dtype=np.int64)[rows]
        f = table[from_col].to_numpy(dtype=np.int64)[rows]
        t = table[to_col].to_numpy(dtype=np.int64)[rows]
        on = (
            table["in_service"].to_numpy(dtype=bool)[rows]
            & ~np.isin(ids, cut[kind])
            & bus_on[_positions(index, f)]
            & bus_on[_positions(index, t)]
        )
        raw_names = table["name"].to_numpy()[rows] if "name" in table else np.full(len(ids), None)
        branches.extend(
            MapBranch(
                id=f"{kind}{i}",
                kind=kind,
                name=str(raw) if isinstance(raw, str) and raw.strip() else f"{kind}{i}",
                from_bus=int(a),
                to_bus=int(b),
                in_service=bool(o),
            )
            for i, a, b, o, raw in zip(ids.tolist(), f, t, on, raw_names, strict=True)
        )

    graph_from, graph_to = _all_edges(net, index)
    xy = _points(bus["geo"].to_numpy()[order] if "geo" in bus else np.full(n, None, dtype=object))
    located = np.isfinite(xy[:, 0])
    generated = len(np.unique(xy[located], axis=0)) < 2 if n > 1 else not located.any()
    if generated:
        xy = _tree_layout(n, graph_from, graph_to, _roots(n, slack, vn_kv))
    else:
        xy = _fill_missing(xy, graph_from, graph_to)
    xs, ys, width, height = _to_drawing(xy)

    feeder = _feeders(net, index, vn_kv, order)
    buses = tuple(
        MapBus(
            index=i,
            name=name,
            x=x,
            y=y,
            vn_kv=v,
            in_service=on,
            slack=s,
            feeder=label,
        )
        for i, name, x, y, v, on, s, label in zip(
            index.tolist(),
            names,
            xs.tolist(),
            ys.tolist(),
            vn_kv.tolist(),
            bus_on.tolist(),
            slack.tolist(),
            feeder,
            strict=True,
        )
    )
    return FeederMap(
        buses=buses,
        branches=tuple(branches),
        width=width,
        height=height,
        generated=bool(generated),
        feeders=tuple(sorted(set(feeder) - {""})),
    )


def feeder_map_json(fmap: FeederMap) -> dict[str, Any]:
    """The map in columns, for the browser.

    Parameters
    ----------
    fmap : FeederMap
        The map.

    Returns
    -------
    dict
        ``width``, ``height`` [drawing units], ``generated``, ``feeders``; ``buses`` as
        columns ``name``, ``x``, ``y`` (rounded to 0.1 drawing units), ``vn_kv`` [kV],
        ``in_service``, ``slack``, ``feeder``; ``branches`` as columns ``id``, ``kind``,
        ``name``, ``from``, ``to`` (positions in the bus columns, not pandapower indices),
        ``in_service``.
    """
    position = {b.index: k for k, b in enumerate(fmap.buses)}
    buses = fmap.buses
    branches = fmap.branches
    return {
        "width": fmap.width,
        "height": fmap.height,
        "generated": fmap.generated,
        "feeders": list(fmap.feeders),
        "buses": {
            "name": [b.name for b in buses],
            "x": [round(b.x, 1) for b in buses],
            "y": [round(b.y, 1) for b in buses],
            "vn_kv": [b.vn_kv for b in buses],
            "in_service": [b.in_service for b in buses],
            "slack": [b.slack for b in buses],
            "feeder": [b.feeder for b in buses],
        },
        "branches": {
            "id": [r.id for r in branches],
            "kind": [r.kind for r in branches],
            "name": [r.name for r in branches],
            "from": [position[r.from_bus] for r in branches],
            "to": [position[r.to_bus] for r in branches],
            "in_service": [r.in_service for r in branches],
        },
    }


# ----------------------------------------------------------------------------------- helpers
def _bus_name(raw: object, index: int) -> str:
    """The name :class:`Grid` gives a bus (``name``, else ``bus<index>``)."""
    return str(raw) if isinstance(raw, str) and raw.strip() else f"bus{index}"


def _positions(index: NDArray[np.int64], buses: NDArray[np.int64]) -> NDArray[np.int64]:
    """Positions of pandapower bus indices in the sorted ``index`` (unknown ones -> 0)."""
    pos = np.searchsorted(index, buses)
    pos = np.minimum(pos, max(len(index) - 1, 0))
    return np.where(index[pos] == buses, pos, 0) if len(index) else pos


def _cut_by_open_switches(net: Any) -> dict[str, NDArray[np.int64]]:  # noqa: ANN401
    """Lines and transformers an open switch disconnects: ``{"line": [...], "trafo": [...]}``."""
    sw = net.switch
    if not len(sw):
        empty = np.empty(0, dtype=np.int64)
        return {"line": empty, "trafo": empty}
    open_ = ~sw["closed"].to_numpy(dtype=bool)
    et = sw["et"].to_numpy()
    element = sw["element"].to_numpy(dtype=np.int64)
    return {"line": element[open_ & (et == "l")], "trafo": element[open_ & (et == "t")]}


def _all_edges(
    net: Any,  # noqa: ANN401
    index: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every connection between buses, whatever its state, as bus positions (for the layout).

    Lines, transformers (both kinds), impedances and bus-bus switches; open switches and
    out-of-service elements included, so a bus behind an open switch is still drawn next to
    its neighbours.
    """
    pairs: list[tuple[Any, str, str]] = [
        (net.line, "from_bus", "to_bus"),
        (net.trafo, "hv_bus", "lv_bus"),
        (net.trafo3w, "hv_bus", "mv_bus"),
        (net.trafo3w, "hv_bus", "lv_bus"),
        (net.impedance, "from_bus", "to_bus"),
    ]
    sources: list[NDArray[np.int64]] = []
    targets: list[NDArray[np.int64]] = []
    for table, a, b in pairs:
        if len(table):
            sources.append(table[a].to_numpy(dtype=np.int64))
            targets.append(table[b].to_numpy(dtype=np.int64))
    sw = net.switch
    if len(sw):
        bus_bus = sw["et"].to_numpy() == "b"
        sources.append(sw["bus"].to_numpy(dtype=np.int64)[bus_bus])
        targets.append(sw["element"].to_numpy(dtype=np.int64)[bus_bus])
    if not sources:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    f = np.concatenate(sources)
    t = np.concatenate(targets)
    known = np.isin(f, index) & np.isin(t, index)
    return _positions(index, f[known]), _positions(index, t[known])


def _adjacency(n: int, f: NDArray[np.int64], t: NDArray[np.int64]) -> Any:  # noqa: ANN401
    """Symmetric CSR adjacency of ``n`` buses: duplicate edges merged, neighbours sorted."""
    data = np.ones(2 * len(f), dtype=np.int8)
    rows = np.concatenate([f, t])
    cols = np.concatenate([t, f])
    adjacency = coo_matrix((data, (rows, cols)), shape=(n, n)).tocsr()
    adjacency.sum_duplicates()
    adjacency.sort_indices()
    return adjacency


_NUMBER = r"\s*(-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*"
_PLAIN_POINT = re.compile(
    rf'\{{\s*"type"\s*:\s*"Point"\s*,\s*"coordinates"\s*:\s*\[{_NUMBER},{_NUMBER}\]\s*\}}\s*\Z'
)
"""A GeoJSON point as pandapower writes it, ``{"type":"Point", "coordinates":[x, y]}``."""


def _points(geo: NDArray[Any]) -> NDArray[np.float64]:
    """``(x, y)`` per GeoJSON point (text or mapping); NaN where there is none or it is bad."""
    out = np.full((len(geo), 2), np.nan)
    seen: dict[str, tuple[float, float]] = {}
    nan = (np.nan, np.nan)
    for k, value in enumerate(geo):
        if isinstance(value, str):
            point = seen.get(value)
            if point is None:
                plain = _PLAIN_POINT.match(value)
                if plain is not None:  # pandapower's own form: no JSON parser needed
                    point = float(plain[1]), float(plain[2])
                else:
                    try:
                        point = _coordinates(json.loads(value))
                    except ValueError:  # not JSON: no point
                        point = nan
                seen[value] = point
        elif isinstance(value, Mapping):
            point = _coordinates(value)
        else:
            continue
        out[k] = point
    out[~np.isfinite(out).all(axis=1)] = np.nan
    return out


def _coordinates(doc: object) -> tuple[float, float]:
    """The first ``[x, y]`` of a GeoJSON geometry; NaN when it has none."""
    coords = doc.get("coordinates") if isinstance(doc, Mapping) else None
    while isinstance(coords, list) and coords and isinstance(coords[0], list):
        coords = coords[0]  # a LineString or Polygon: its first point
    if (
        isinstance(coords, list)
        and len(coords) >= 2  # x and y (a third, z, is ignored)
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in coords[:2])
    ):
        return float(coords[0]), float(coords[1])
    return np.nan, np.nan


def _fill_missing(
    xy: NDArray[np.float64], f: NDArray[np.int64], t: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Put each bus without a point on its nearest located neighbour; stranded ones in a row.

    Breadth-first from all located buses at once, so a bus takes the point of a located bus
    fewest branches away; ties go the same way every time (buses visited in index order).
    """
    out = xy.copy()
    missing = ~np.isfinite(out[:, 0])
    if not missing.any():
        return out
    n = len(out)
    adjacency = _adjacency(n, f, t)
    indptr, indices = adjacency.indptr, adjacency.indices
    frontier = np.flatnonzero(~missing).tolist()
    done = ~missing
    while frontier:
        nxt: list[int] = []
        for u in frontier:
            for v in indices[indptr[u] : indptr[u + 1]].tolist():
                if not done[v]:
                    done[v] = True
                    out[v] = out[u]
                    nxt.append(v)
        frontier = sorted(nxt)
    stranded = np.flatnonzero(~done)
    if len(stranded):
        located = out[done]
        lo, hi = located.min(axis=0), located.max(axis=0)
        span = float(max(hi[0] - lo[0], hi[1] - lo[1])) or 1.0
        step = span / max(len(stranded), 1)
        out[stranded, 0] = lo[0] + step * np.arange(len(stranded))
        out[stranded, 1] = lo[1] - 0.1 * span  # under the drawing (y is flipped later)
    return out


def _roots(n: int, slack: NDArray[np.bool_], vn_kv: NDArray[np.float64]) -> list[int]:
    """Where the tree layout starts: the slack buses, then the highest-voltage bus."""
    roots = np.flatnonzero(slack).tolist()
    if n:
        roots.append(int(np.argmax(vn_kv)))
    return roots


def _tree_layout(
    n: int, f: NDArray[np.int64], t: NDArray[np.int64], roots: list[int]
) -> NDArray[np.float64]:
    """A tree drawing of the graph: breadth-first tree from the roots, depth downwards.

    Each connected component is laid out from the first of ``roots`` in it, else from its
    lowest-index bus; the components stand side by side in the order of those start buses.
    Neighbours are visited in index order; leaves take consecutive slots in depth-first
    order and a parent sits midway over its first and last child. One axis is stretched
    when the tree is more than twice as wide as deep or the other way round. Returns source
    coordinates with ``y = -depth`` (the drawing flips ``y``, so the roots end up on top),
    times that stretch.
    """
    if not n:
        return np.empty((0, 2))
    _, component = connected_components(_adjacency(n, f, t), directed=False)
    start: dict[int, int] = {}
    for r in [*roots, *range(n)]:
        start.setdefault(int(component[r]), r)
    # one breadth-first search from a virtual bus ``n`` joined to each component's start
    starts = np.asarray(sorted(start.values()), dtype=np.int64)
    virtual = np.full(len(starts), n, dtype=np.int64)
    adjacency = _adjacency(n + 1, np.concatenate([f, virtual]), np.concatenate([t, starts]))
    bfs, parent = breadth_first_order(adjacency, n, directed=False)
    depth = np.zeros(n + 1, dtype=np.int64)
    children: list[list[int]] = [[] for _ in range(n + 1)]
    for v in bfs[1:].tolist():  # parents come before their children
        p = int(parent[v])
        depth[v] = depth[p] + 1
        children[p].append(v)  # in index order: the search visits neighbours so
    x = np.zeros(n + 1)
    slot = 0.0
    stack: list[tuple[int, bool]] = [(n, False)]
    while stack:
        u, expanded = stack.pop()
        kids = children[u]
        if not kids:
            x[u] = slot
            slot += 1.0
        elif expanded:
            x[u] = (x[kids[0]] + x[kids[-1]]) / 2.0
        else:
            stack.append((u, True))
            stack.extend((k, False) for k in reversed(kids))
    xy = np.column_stack([x[:n], -depth[:n].astype(float)])
    wide, deep = float(np.ptp(xy[:, 0])), float(np.ptp(xy[:, 1]))
    if wide > 0.0 and deep > 0.0:  # keep the drawing between 2:1 and 1:2 (readable)
        if deep < wide / 2.0:
            xy[:, 1] *= wide / 2.0 / deep
        elif deep > 2.0 * wide:
            xy[:, 0] *= deep / 2.0 / wide
    return xy


def _to_drawing(
    xy: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], float, float]:
    """Scale source coordinates to the drawing: longer side :data:`EXTENT`, ``y`` flipped.

    Returns
    -------
    tuple
        ``x``, ``y`` per bus, width and height [drawing units].
    """
    if not len(xy):
        return np.empty(0), np.empty(0), EXTENT, EXTENT
    lo = xy.min(axis=0)
    hi = xy.max(axis=0)
    span = hi - lo
    longest = float(span.max())
    if longest <= 0.0 or not np.isfinite(longest):
        half = EXTENT / 2.0
        return np.full(len(xy), half), np.full(len(xy), half), EXTENT, EXTENT
    scale = (EXTENT - 2.0 * MARGIN) / longest
    width = EXTENT if span[0] >= span[1] else float(span[0] * scale + 2.0 * MARGIN)
    height = EXTENT if span[1] > span[0] else float(span[1] * scale + 2.0 * MARGIN)
    xs = np.clip(MARGIN + (xy[:, 0] - lo[0]) * scale, 0.0, width)
    ys = np.clip(MARGIN + (hi[1] - xy[:, 1]) * scale, 0.0, height)
    return xs, ys, width, height


def _level_prefix(vn_kv: float) -> str:
    """The SimBench subnet prefix of a voltage level: LV, MV, HV or EHV."""
    if vn_kv <= 1.0:
        return "LV"
    if vn_kv <= 36.0:  # the top of the MV range [kV]
        return "MV"
    if vn_kv <= 150.0:  # the top of the HV range [kV]
        return "HV"
    return "EHV"


def _subnet_label(subnet: str, vn_kv: float) -> str:
    """The part of a SimBench subnet name for the bus's voltage level (else its first part)."""
    parts = [p for p in subnet.split("_") if p]
    prefix = _level_prefix(vn_kv)
    return next((p for p in parts if p.startswith(prefix)), parts[0] if parts else "")


def _feeders(
    net: Any,  # noqa: ANN401
    index: NDArray[np.int64],
    vn_kv: NDArray[np.float64],
    order: NDArray[np.int64],
) -> list[str]:
    """Each bus's feeder label (see the module docstring), in ``index`` order."""
    n = len(index)
    labels = [""] * n
    trafo = net.trafo
    if len(trafo):
        # components of the grid without its transformers, joined by lines and closed
        # bus-bus switches (open switches and out-of-service lines still join them: a
        # feeder's buses stay one feeder when a line is switched off)
        f_parts = [net.line["from_bus"].to_numpy(dtype=np.int64)]
        t_parts = [net.line["to_bus"].to_numpy(dtype=np.int64)]
        sw = net.switch
        if len(sw):
            bus_bus = (sw["et"].to_numpy() == "b") & sw["closed"].to_numpy(dtype=bool)
            f_parts.append(sw["bus"].to_numpy(dtype=np.int64)[bus_bus])
            t_parts.append(sw["element"].to_numpy(dtype=np.int64)[bus_bus])
        f = np.concatenate(f_parts)
        t = np.concatenate(t_parts)
        known = np.isin(f, index) & np.isin(t, index)
        adjacency = _adjacency(n, _positions(index, f[known]), _positions(index, t[known]))
        _, component = connected_components(adjacency, directed=False)
        slack_buses = net.ext_grid["bus"].to_numpy(dtype=np.int64)
        slack_components = set(
            component[_positions(index, slack_buses[np.isin(slack_buses, index)])].tolist()
        )
        named: dict[int, str] = {}
        names = trafo["name"].to_numpy() if "name" in trafo else [None] * len(trafo)
        for i, lv, raw in zip(
            trafo.index.tolist(), trafo["lv_bus"].to_numpy(dtype=np.int64), names, strict=True
        ):
            pos = int(np.searchsorted(index, lv))
            if pos >= n or index[pos] != lv:
                continue
            comp = int(component[pos])
            if comp in slack_components:
                continue
            named.setdefault(
                comp, str(raw) if isinstance(raw, str) and raw.strip() else f"trafo{i}"
            )
        labels = [named.get(int(c), "") for c in component]
    if "subnet" in net.bus:
        subnets = net.bus["subnet"].to_numpy()[order]
        cache: dict[tuple[str, str], str] = {}
        for k, (subnet, v) in enumerate(zip(subnets, vn_kv.tolist(), strict=True)):
            if isinstance(subnet, str) and subnet.strip():
                key = (subnet, _level_prefix(v))
                label = cache.get(key)
                if label is None:
                    label = cache[key] = _subnet_label(subnet.strip(), v)
                labels[k] = label
    return labels
