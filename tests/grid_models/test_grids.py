"""Grid specs and bus names: unknown ones are answered with the closest, buses are listed."""

from __future__ import annotations

from pathlib import Path

import pandapower as pp
import pytest

from grid_models.errors import InvalidGrid, UnknownBus, UnknownGrid
from grid_models.grids import (
    BusInfo,
    Grid,
    closest_bus_names,
    load_grid,
    load_grid_cached,
    unknown_bus_message,
)


def small_net() -> object:
    """MV (slack) - trafo - LV0 - LV1, and an unnamed, out-of-service bus."""
    net = pp.create_empty_network()
    mv = pp.create_bus(net, vn_kv=20.0, name="MV")
    lv0 = pp.create_bus(net, vn_kv=0.4, name="LV0")
    lv1 = pp.create_bus(net, vn_kv=0.4, name="LV1")
    pp.create_bus(net, vn_kv=0.4, in_service=False)
    pp.create_ext_grid(net, mv)
    pp.create_transformer(net, mv, lv0, std_type="0.4 MVA 20/0.4 kV")
    pp.create_line(net, lv0, lv1, length_km=0.1, std_type="NAYY 4x150 SE")
    return net


def test_buses_lists_name_index_voltage_and_slack() -> None:
    grid = Grid("small", small_net())
    assert grid.buses() == (
        BusInfo(name="MV", index=0, vn_kv=20.0, slack=True, in_service=True),
        BusInfo(name="LV0", index=1, vn_kv=0.4, slack=False, in_service=True),
        BusInfo(name="LV1", index=2, vn_kv=0.4, slack=False, in_service=True),
        BusInfo(name="bus3", index=3, vn_kv=0.4, slack=False, in_service=False),
    )
    assert grid.bus_names == ("MV", "LV0", "LV1")


def test_an_unknown_bus_is_answered_with_the_closest_names() -> None:
    grid = Grid("small", small_net())
    with pytest.raises(UnknownBus) as caught:
        grid.bus_index("LV2")
    assert str(caught.value) == (
        "unknown bus 'LV2' in grid small (closest: 'LV0', 'LV1'; "
        "'peergrid grid buses --grid small' lists them all)"
    )
    with pytest.raises(UnknownBus, match=r"unknown bus 'Q' in grid small \('peergrid grid"):
        grid.bus_index("Q")


def test_closest_names_are_ordered_by_likeness_then_alphabet() -> None:
    names = ["Bus R1", "Bus R11", "Bus R10", "Bus R18", "Bus C19", "Bus I2"]
    assert closest_bus_names("Bus R19", names) == ["Bus R1", "Bus C19", "Bus R10"]
    assert closest_bus_names("Bus R19", names, n=1) == ["Bus R1"]
    assert closest_bus_names("Transformer", names) == []
    assert "closest" not in unknown_bus_message("zzz", names, "cigre-lv")


def test_duplicate_bus_names_are_an_invalid_grid() -> None:
    net = small_net()
    net.bus.loc[2, "name"] = "LV0"
    with pytest.raises(InvalidGrid, match="bus name 'LV0' is used by buses 1 and 2"):
        Grid("twice", net)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("cigre_lv", "did you mean 'cigre-lv'"),
        ("atlantis", r"unknown grid 'atlantis': use one of cigre-lv"),
        ("simbench:../etc", "unknown SimBench code"),
    ],
)
def test_unknown_specs_are_named(spec: str, match: str) -> None:
    with pytest.raises(UnknownGrid, match=match):
        load_grid_cached(spec)


def test_bad_grid_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(UnknownGrid, match="is a directory, not a pandapower JSON file"):
        load_grid(str(tmp_path / "folder.json"))
    with pytest.raises(UnknownGrid, match="grid file not found"):
        load_grid(str(tmp_path / "nope.json"))
    (tmp_path / "binary.json").write_bytes(bytes(range(256)))
    with pytest.raises(UnknownGrid, match="is a binary file"):
        load_grid(str(tmp_path / "binary.json"))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UnknownGrid, match="is not a pandapower JSON network") as caught:
        load_grid(str(tmp_path / "list.json"))
    assert "\n" not in str(caught.value)


def test_time_steps_of_a_grid_without_profiles_are_refused() -> None:
    with pytest.raises(InvalidGrid, match="has no profiles"):
        load_grid_cached("cigre-lv", 4)
    with pytest.raises(InvalidGrid, match="time step -1 out of range"):
        load_grid_cached("cigre-lv", -1)
