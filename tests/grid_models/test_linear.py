"""The LinDistFlow network model against pandapower's own AC power flow."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandapower as pp
import pytest

from grid_models.errors import UnknownBus, UnknownGrid
from grid_models.grids import Grid, load_grid
from grid_models.linear import build_linear_grid
from grid_models.powerflow import run_ac
from market.network import linear_state


@pytest.fixture(scope="module")
def cigre() -> Grid:
    return load_grid("cigre-lv").scaled(load_scale=0.35)


def test_cigre_lv_is_one_radial_tree(cigre: Grid) -> None:
    linear = build_linear_grid(cigre)
    net = linear.network
    # the three MV buses behind closed circuit breakers are fused into Bus 0, as in pandapower
    assert net.n_bus == 41
    assert net.n_branch == 40
    assert net.bus_names[net.slack] == "Bus 0"
    assert set(net.branch_kinds) == {"line", "trafo"}
    index = net.bus_index()
    assert index["Bus R0"] == index["Bus I0"] == index["Bus C0"] == net.slack


def test_linear_voltages_track_ac_under_injections(cigre: Grid) -> None:
    """Inject 20 kW of PV at the far end of feeder R and 15 kW of load on feeder C.

    The offset-corrected LinDistFlow voltages must stay within 0.003 p.u. of pandapower's
    Newton-Raphson result at every bus (LinDistFlow ignores losses, so not exact).
    """
    linear = build_linear_grid(cigre)
    network = linear.network
    pos = network.bus_index()
    inj = network.base_p_w.copy()
    inj[pos["Bus R18"]] += 20_000
    inj[pos["Bus C14"]] -= 15_000
    v_lin = linear_state(network, inj)[1] + network.v_offset_pu2

    net = copy.deepcopy(cigre.net)
    pp.create_sgen(net, cigre.bus_index("Bus R18"), p_mw=0.020)
    pp.create_load(net, cigre.bus_index("Bus C14"), p_mw=0.015)
    run_ac(net)
    vm_ac = net.res_bus.vm_pu.loc[linear.pp_index].to_numpy()
    assert np.max(np.abs(np.sqrt(v_lin) - vm_ac)) < 0.003


def test_base_case_offset_is_exact(cigre: Grid) -> None:
    linear = build_linear_grid(cigre)
    network = linear.network
    v = linear_state(network, network.base_p_w)[1] + network.v_offset_pu2
    net = copy.deepcopy(cigre.net)
    run_ac(net)
    assert np.allclose(np.sqrt(v), net.res_bus.vm_pu.loc[linear.pp_index].to_numpy(), atol=1e-9)


def test_line_limit_matches_pandapower_loading(cigre: Grid) -> None:
    """Our VA limit and pandapower's loading_percent agree on the first R-feeder line."""
    linear = build_linear_grid(cigre, vm_min_pu=1.0)
    network = linear.network
    k = network.branch_names.index("Line R1-R2")
    net = copy.deepcopy(cigre.net)
    run_ac(net)
    line = net.line.index[net.line.name == "Line R1-R2"][0]
    s_va = math.hypot(net.res_line.p_from_mw[line], net.res_line.q_from_mvar[line]) * 1e6
    vm = net.res_bus.vm_pu[net.line.from_bus[line]]
    # loading = I / I_max and I = S / (sqrt(3) V): S / s_max(at 1 p.u.) / vm == loading
    ours = s_va / network.s_max_va[k] / vm * 100
    assert ours == pytest.approx(net.res_line.loading_percent[line], rel=0.01)


def test_nominal_load_base_case_violation_is_relaxed_and_noted() -> None:
    grid = load_grid("cigre-lv")  # nominal loads: 0.912 p.u. before any trade
    linear = build_linear_grid(grid)
    network = linear.network
    assert any("below 0.95" in n for n in network.notes)
    assert network.vm_min_pu.min() < 0.92
    assert linear.base.vm_at(np.array([grid.bus_index("Bus R18")]))[0] < 0.95


def test_parallel_lines_are_merged() -> None:
    net = pp.create_empty_network()
    b0 = pp.create_bus(net, vn_kv=0.4, name="a")
    b1 = pp.create_bus(net, vn_kv=0.4, name="b")
    pp.create_ext_grid(net, b0)
    pp.create_line(net, b0, b1, length_km=0.1, std_type="NAYY 4x50 SE")
    pp.create_line(net, b0, b1, length_km=0.1, std_type="NAYY 4x50 SE")
    pp.create_load(net, b1, p_mw=0.01)
    linear = build_linear_grid(Grid("parallel", net))
    single = pp.available_std_types(net, "line").loc["NAYY 4x50 SE"]
    z_base = 0.4**2 / 1.0
    assert linear.network.n_branch == 1
    assert linear.network.r_pu[0] == pytest.approx(single.r_ohm_per_km * 0.1 / 2 / z_base)


def test_pandapower_json_round_trip(tmp_path, cigre: Grid) -> None:
    path = tmp_path / "feeder.json"
    pp.to_json(cigre.net, str(path))
    again = load_grid(str(path))
    assert again.bus_names == cigre.bus_names


def test_unknown_specs_and_buses(tmp_path) -> None:
    with pytest.raises(UnknownGrid, match="unknown grid"):
        load_grid("ieee-9000")
    with pytest.raises(UnknownGrid, match="not found"):
        load_grid(str(tmp_path / "missing.json"))
    with pytest.raises(UnknownBus, match="Bus Z9"):
        load_grid("cigre-lv").bus_index("Bus Z9")


@pytest.mark.slow
def test_simbench_rural_grid_at_a_time_step() -> None:
    grid = load_grid("simbench:1-LV-rural1--0-sw")
    assert grid.profiles is not None
    noon = grid.at_time_step(48)
    linear = build_linear_grid(noon)
    assert linear.network.n_bus == len(grid.net.bus)
    network = linear.network
    v = linear_state(network, network.base_p_w)[1] + network.v_offset_pu2
    assert np.allclose(np.sqrt(v), linear.base.vm_at(linear.pp_index))
