"""The feeder map's geometry: coordinates from the grid, a generated tree without them."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandapower as pp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grid_models import layout
from grid_models.grids import Grid, load_grid, load_grid_cached
from grid_models.layout import FeederMap, feeder_map, feeder_map_json
from grid_models.powerflow import AcChecker, summarise


# ------------------------------------------------------------------------------ checks
def geo_points(grid: Grid) -> dict[int, tuple[float, float]]:
    """The source ``(x, y)`` of each bus that has a GeoJSON point."""
    out = {}
    for idx, geo in zip(grid.net.bus.index, grid.net.bus["geo"], strict=True):
        try:
            x, y = json.loads(geo)["coordinates"][:2]
        except (TypeError, ValueError):  # none, or not JSON
            continue
        if math.isfinite(x) and math.isfinite(y):
            out[int(idx)] = (float(x), float(y))
    return out


def assert_in_drawing(fmap: FeederMap) -> None:
    """Every coordinate finite and inside ``[0, width] x [0, height]``; longer side 1000."""
    assert math.isfinite(fmap.width)
    assert math.isfinite(fmap.height)
    assert max(fmap.width, fmap.height) == layout.EXTENT
    for bus in fmap.buses:
        assert math.isfinite(bus.x), bus
        assert math.isfinite(bus.y), bus
        assert 0.0 <= bus.x <= fmap.width, bus
        assert 0.0 <= bus.y <= fmap.height, bus


def assert_follows_geo(fmap: FeederMap, grid: Grid) -> None:
    """Drawing = source scaled by one factor on both axes, ``y`` flipped (SVG: y downwards)."""
    points = geo_points(grid)
    drawn = {b.index: (b.x, b.y) for b in fmap.buses}
    idx = sorted(points)
    gx = np.array([points[i][0] for i in idx])
    gy = np.array([points[i][1] for i in idx])
    dx = np.array([drawn[i][0] for i in idx])
    dy = np.array([drawn[i][1] for i in idx])
    scale = (dx.max() - dx.min()) / (gx.max() - gx.min())
    assert scale > 0
    np.testing.assert_allclose(dx - dx.min(), (gx - gx.min()) * scale, atol=1e-6)
    np.testing.assert_allclose(dy - dy.min(), (gy.max() - gy) * scale, atol=1e-6)


def assert_distinct(fmap: FeederMap) -> None:
    """No two buses on one point."""
    points = [(round(b.x, 6), round(b.y, 6)) for b in fmap.buses]
    assert len(set(points)) == len(points)


# ------------------------------------------------------------------------------ grids
def radial_net() -> Any:  # a pandapowerNet
    """MV slack - two transformers - two radial LV feeders (one trafo unnamed); no geo."""
    net = pp.create_empty_network()
    mv = pp.create_bus(net, vn_kv=20.0, name="MV")
    pp.create_ext_grid(net, mv)
    lv = [pp.create_bus(net, vn_kv=0.4, name=f"LV{k}") for k in range(7)]
    pp.create_transformer(net, mv, lv[0], std_type="0.4 MVA 20/0.4 kV", name="T1")
    for a, b in ((0, 1), (1, 2), (2, 3), (1, 4), (4, 5), (2, 6)):
        pp.create_line(net, lv[a], lv[b], length_km=0.05, std_type="NAYY 4x150 SE")
    other = [pp.create_bus(net, vn_kv=0.4, name=f"B{k}") for k in range(3)]
    pp.create_transformer(net, mv, other[0], std_type="0.4 MVA 20/0.4 kV")
    pp.create_line(net, other[0], other[1], length_km=0.05, std_type="NAYY 4x150 SE")
    pp.create_line(net, other[1], other[2], length_km=0.05, std_type="NAYY 4x150 SE")
    pp.create_load(net, lv[3], p_mw=0.01)
    return net


def json_grid(tmp_path: Path, net: Any) -> Grid:  # a pandapowerNet
    """``net`` written as pandapower JSON without coordinates, and read back as a grid."""
    net.bus["geo"] = None
    net.line["geo"] = None
    path = tmp_path / "no-coordinates.json"
    pp.to_json(net, str(path))
    grid = load_grid(str(path))
    assert grid.net.bus["geo"].isna().all()
    return grid


@pytest.fixture(scope="module")
def cigre() -> Grid:
    return load_grid("cigre-lv")


# ------------------------------------------------------------------------------ CIGRE LV
def test_cigre_lv_is_drawn_from_its_coordinates(cigre: Grid) -> None:
    fmap = feeder_map(cigre)
    assert not fmap.generated
    assert [(b.index, b.name, b.vn_kv, b.slack, b.in_service) for b in fmap.buses] == [
        (i.index, i.name, i.vn_kv, i.slack, i.in_service) for i in cigre.buses()
    ]
    assert_in_drawing(fmap)
    assert_follows_geo(fmap, cigre)
    # Bus R1 (y = 2 in the source) is closer to the station than Bus R2 (y = 3): the feeder
    # hangs downwards in the source, so upwards in the SVG
    by_name = {b.name: b for b in fmap.buses}
    points = geo_points(cigre)
    r1, r2 = cigre.bus_index("Bus R1"), cigre.bus_index("Bus R2")
    assert points[r1][1] < points[r2][1]
    assert by_name["Bus R1"].y > by_name["Bus R2"].y
    assert fmap.height == layout.EXTENT  # the source is taller than wide
    assert fmap.width < fmap.height


def test_a_missing_y_flip_is_caught(cigre: Grid, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above fail when the drawing keeps the source's y (the injected fault)."""
    to_drawing = layout._to_drawing

    def unflipped(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        xs, ys, width, height = to_drawing(xy)
        return xs, height - ys, width, height

    monkeypatch.setattr(layout, "_to_drawing", unflipped)
    fmap = feeder_map(cigre)
    assert_in_drawing(fmap)  # still inside the drawing ...
    with pytest.raises(AssertionError):
        assert_follows_geo(fmap, cigre)  # ... but upside down


def test_the_drawing_check_catches_a_nan(cigre: Grid) -> None:
    fmap = feeder_map(cigre)
    bad = dataclasses.replace(fmap.buses[3], y=float("nan"))
    broken = FeederMap(
        buses=(*fmap.buses[:3], bad, *fmap.buses[4:]),
        branches=fmap.branches,
        width=fmap.width,
        height=fmap.height,
        generated=fmap.generated,
        feeders=fmap.feeders,
    )
    with pytest.raises(AssertionError):
        assert_in_drawing(broken)


def test_cigre_lv_feeders_are_named_by_their_transformers(cigre: Grid) -> None:
    fmap = feeder_map(cigre)
    assert fmap.feeders == ("Trafo C0-C1", "Trafo I0-I1", "Trafo R0-R1")
    feeder = {b.name: b.feeder for b in fmap.buses}
    assert feeder["Bus 0"] == feeder["Bus R0"] == feeder["Bus C0"] == ""
    assert feeder["Bus R1"] == feeder["Bus R18"] == "Trafo R0-R1"
    assert feeder["Bus I1"] == feeder["Bus I2"] == "Trafo I0-I1"
    assert feeder["Bus C1"] == feeder["Bus C20"] == "Trafo C0-C1"


def ac_branches(grid: Grid) -> dict[str, tuple[str, str]]:
    """The AC check's branches of ``grid`` (base case): id -> (kind, name)."""
    checker = AcChecker(grid, np.asarray([int(grid.net.bus.index[-1])], dtype=np.int64))
    state = checker.run(np.zeros(1), np.zeros(1))
    check = summarise(grid, state, 0.9, 1.1)
    return {branch: (kind, name) for branch, kind, name, _ in check.branches}


def test_branch_ids_are_the_ac_checks(cigre: Grid) -> None:
    fmap = feeder_map(cigre)
    checked = ac_branches(cigre)
    assert {b.id: (b.kind, b.name) for b in fmap.branches} == checked
    assert len(fmap.branches) == len(cigre.net.line) + len(cigre.net.trafo)
    trafo = next(b for b in fmap.branches if b.id == "trafo0")
    assert (trafo.from_bus, trafo.to_bus) == (1, 2)  # hv_bus, lv_bus
    assert all(b.in_service for b in fmap.branches)


def test_buses_without_a_point_sit_on_a_neighbour(cigre: Grid) -> None:
    grid = cigre.copy()
    net = grid.net
    r5 = grid.bus_index("Bus R5")
    net.bus.loc[r5, "geo"] = None
    net.bus.loc[grid.bus_index("Bus R6"), "geo"] = "not json"
    net.bus.loc[grid.bus_index("Bus R7"), "geo"] = '{"type":"Point","coordinates":[NaN, 1.0]}'
    lonely = pp.create_bus(net, vn_kv=0.4, name="lonely")  # no branch, no point
    grid = Grid(grid.spec, net)
    fmap = feeder_map(grid)
    assert not fmap.generated
    assert_in_drawing(fmap)
    assert_follows_geo(fmap, grid)  # the buses with a point are where they were
    by_name = {b.name: b for b in fmap.buses}
    # each takes the point of the nearest bus that has one: R4 - R5 - R6 - R7 - R8, R6 - R16
    for name, neighbour in (("Bus R5", "Bus R4"), ("Bus R6", "Bus R16"), ("Bus R7", "Bus R8")):
        assert (by_name[name].x, by_name[name].y) == (by_name[neighbour].x, by_name[neighbour].y)
    assert by_name["lonely"].index == lonely
    assert cigre.net.bus.loc[r5, "geo"] is not None  # the grid handed in is untouched


def test_open_switches_and_out_of_service_elements(cigre: Grid) -> None:
    grid = cigre.copy()
    net = grid.net
    line = int(net.line.index[net.line["name"] == "Line R3-R4"][0])
    pp.create_switch(
        net, bus=int(net.line.at[line, "from_bus"]), element=line, et="l", closed=False
    )
    net.trafo.loc[1, "in_service"] = False
    net.bus.loc[grid.bus_index("Bus C20"), "in_service"] = False
    fmap = feeder_map(Grid(grid.spec, net))
    off = {b.id for b in fmap.branches if not b.in_service}
    c20 = grid.bus_index("Bus C20")
    at_c20 = {
        f"line{i}" for i in net.line.index[(net.line.to_bus == c20) | (net.line.from_bus == c20)]
    }
    assert off == {f"line{line}", "trafo1", *at_c20}
    assert not next(b for b in fmap.buses if b.name == "Bus C20").in_service
    # the AC check of the same grid stores no branch the map does not have
    assert set(ac_branches(Grid(grid.spec, net))) <= {b.id for b in fmap.branches}


# ------------------------------------------------------------------------------ generated
def test_a_json_grid_without_coordinates_gets_a_tree(tmp_path: Path) -> None:
    grid = json_grid(tmp_path, radial_net())
    fmap = feeder_map(grid)
    assert fmap.generated
    assert_in_drawing(fmap)
    assert_distinct(fmap)
    by_index = {b.index: b for b in fmap.buses}
    slack = next(b for b in fmap.buses if b.slack)
    assert slack.name == "MV"
    assert slack.y == min(b.y for b in fmap.buses)  # the slack on top
    for branch in fmap.branches:  # radial: each branch leads downwards from the slack
        assert by_index[branch.from_bus].y < by_index[branch.to_bus].y, branch
    assert fmap.feeders == ("T1", "trafo1")
    feeder = {b.name: b.feeder for b in fmap.buses}
    assert feeder == {"MV": "", **{f"LV{k}": "T1" for k in range(7)}} | {
        f"B{k}": "trafo1" for k in range(3)
    }
    assert {b.id for b in fmap.branches} == set(ac_branches(grid))


def test_the_generated_layout_is_deterministic(tmp_path: Path) -> None:
    first = feeder_map(json_grid(tmp_path, radial_net()))
    again = feeder_map(json_grid(tmp_path, radial_net()))
    assert first == again
    assert feeder_map_json(first) == feeder_map_json(again)


def test_a_meshed_grid_without_coordinates_is_drawn_as_its_tree(tmp_path: Path) -> None:
    net = radial_net()
    pp.create_line(net, 3, 6, length_km=0.05, std_type="NAYY 4x150 SE")  # LV2 - LV5: a loop
    grid = json_grid(tmp_path, net)
    fmap = feeder_map(grid)
    assert fmap.generated
    assert_in_drawing(fmap)
    assert_distinct(fmap)


def test_a_grid_without_a_geo_column_is_generated() -> None:
    net = radial_net()
    net.bus = net.bus.drop(columns="geo")
    fmap = feeder_map(Grid("no-geo", net))
    assert fmap.generated
    assert_distinct(fmap)


@st.composite
def trees(draw: st.DrawFn) -> list[int]:
    """Parent of each bus 1..n-1 (bus 0 is the slack): a random radial feeder."""
    n = draw(st.integers(min_value=1, max_value=40))
    return [draw(st.integers(min_value=0, max_value=k - 1)) for k in range(1, n)]


EMPTY = pp.create_empty_network()
"""An empty net to copy (creating one loads the standard types: 0.2 s)."""


@settings(max_examples=40, deadline=None)
@given(parents=trees())
def test_any_radial_feeder_gets_distinct_points(parents: list[int]) -> None:
    net = copy.deepcopy(EMPTY)
    buses = pp.create_buses(net, len(parents) + 1, vn_kv=0.4)
    pp.create_ext_grid(net, int(buses[0]))
    if parents:
        pp.create_lines_from_parameters(
            net,
            [int(buses[p]) for p in parents],
            [int(b) for b in buses[1:]],
            length_km=0.05,
            r_ohm_per_km=0.206,
            x_ohm_per_km=0.08,
            c_nf_per_km=0.0,
            max_i_ka=0.27,
        )
    fmap = feeder_map(Grid("tree", net))
    assert fmap.generated
    assert_in_drawing(fmap)
    assert_distinct(fmap)
    ys = {b.index: b.y for b in fmap.buses}
    assert all(ys[int(buses[p])] < ys[int(b)] for p, b in zip(parents, buses[1:], strict=True))
    assert feeder_map(Grid("tree", net)) == fmap


# ------------------------------------------------------------------------------ SimBench
def test_simbench_subnets_name_the_feeders() -> None:
    net = radial_net()
    net.bus["subnet"] = ["MV1.101_LV1.101_Feeder1", *["LV1.101"] * 7, *["LV1.102"] * 3]
    fmap = feeder_map(Grid("subnets", net))
    assert fmap.feeders == ("LV1.101", "LV1.102", "MV1.101")
    assert fmap.buses[0].feeder == "MV1.101"


def test_json_columns_point_at_bus_positions(cigre: Grid) -> None:
    fmap = feeder_map(cigre)
    doc = feeder_map_json(fmap)
    json.dumps(doc, allow_nan=False)
    buses, branches = doc["buses"], doc["branches"]
    assert {len(column) for column in buses.values()} == {len(fmap.buses)}
    assert {len(column) for column in branches.values()} == {len(fmap.branches)}
    assert buses["name"] == [b.name for b in fmap.buses]
    assert buses["y"][2] == round(fmap.buses[2].y, 1)
    assert doc["feeders"] == list(fmap.feeders)
    name_of = {b.index: b.name for b in fmap.buses}
    for k, branch in enumerate(fmap.branches):
        assert buses["name"][branches["from"][k]] == name_of[branch.from_bus]
        assert buses["name"][branches["to"][k]] == name_of[branch.to_bus]
    assert branches["id"] == [b.id for b in fmap.branches]


@pytest.mark.slow
def test_simbench_mvlv_semiurb() -> None:
    grid = load_grid_cached("simbench:1-MVLV-semiurb-all-0-sw")
    fmap = feeder_map(grid)
    assert len(fmap.buses) == 9099
    assert not fmap.generated
    assert_in_drawing(fmap)
    assert_follows_geo(fmap, grid)
    assert "LV1.201" in fmap.feeders
    assert "MV2.101" in fmap.feeders
    assert sum(f.startswith("LV") for f in fmap.feeders) >= 100
    lv = [b for b in fmap.buses if b.feeder == "LV1.201"]
    assert len(lv) > 10
    assert all(b.vn_kv == 0.4 for b in lv)
    box = (max(b.x for b in lv) - min(b.x for b in lv)) * (
        max(b.y for b in lv) - min(b.y for b in lv)
    )
    assert 0 < box < 0.01 * fmap.width * fmap.height
    assert {b.id for b in fmap.branches} == set(ac_branches(grid))
    assert sum(not b.in_service for b in fmap.branches) == 8  # the MV loops' open switches
