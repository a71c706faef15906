"""The radial NetworkModel's checks, its tree helpers, and the seller -> buyer matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
from market_factories import INTERVAL, radial_network

from market.domain import GRID, OrderId, ParticipantId
from market.errors import InvalidNetwork, UnbalancedEnergy
from market.matching import Leg, match
from market.network import electrical_distance

# S - A - B - C, plus D under A; r = 1, 2, 4, 8 p.u.
FEEDER = radial_network(
    ["S", "A", "B", "C", "D"],
    [("S", "A"), ("A", "B"), ("B", "C"), ("A", "D")],
    r_pu=[1.0, 2.0, 4.0, 8.0],
)


def test_tree_helpers() -> None:
    assert FEEDER.n_bus == 5
    assert FEEDER.n_branch == 4
    assert FEEDER.parents().tolist() == [-1, 0, 1, 2, 1]
    depth, path_r = FEEDER.depth_and_path_r()
    assert depth.tolist() == [0, 1, 2, 3, 2]
    assert path_r.tolist() == [0.0, 1.0, 3.0, 7.0, 9.0]
    parent = FEEDER.parents()
    assert electrical_distance(parent, depth, path_r, 3, 4) == 6.0 + 8.0  # C-B-A-D
    assert electrical_distance(parent, depth, path_r, 3, 0) == 7.0
    assert electrical_distance(parent, depth, path_r, 2, 2) == 0.0


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"bus_names": ("S", "S", "B", "C", "D")}, "unique"),
        ({"slack": 5}, "slack index 5 out of range"),
        ({"from_bus": np.array([0, 1, 2], dtype=np.int64)}, "n_bus - 1 = 4 branches, got 3"),
        ({"r_pu": np.ones(3)}, "r_pu has 3 entries, expected 4"),
        ({"vm_max_pu": np.ones(4)}, "vm_max_pu has 4 entries, expected 5"),
        ({"branch_kinds": ("line",)}, "branch_names and branch_kinds"),
        ({"to_bus": np.array([1, 2, 3, 7], dtype=np.int64)}, "out of range"),
        ({"to_bus": np.array([1, 2, 3, 3], dtype=np.int64)}, "exactly one parent"),
        ({"to_bus": np.array([1, 2, 3, 0], dtype=np.int64)}, "exactly one parent"),
        ({"vm_min_pu": np.full(5, 1.6)}, "vm_min_pu above vm_max_pu"),
    ],
)
def test_bad_networks_are_refused(changes: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidNetwork, match=match):
        FEEDER.with_changes(**changes)


def test_island_cycle_is_refused() -> None:
    """A and B are each other's parent: one parent per non-slack bus and n - 1 branches, but no
    path to the slack. Constructing it must fail (calling ``depth_and_path_r`` on it never
    returns, so this test only constructs)."""
    with pytest.raises(InvalidNetwork):
        radial_network(["S", "A", "B"], [("B", "A"), ("A", "B")])


def leg(who: str, bus: int, wh: int, price: int = 100_000) -> Leg:
    order = None if who == GRID else OrderId(f"{who}-order")
    return Leg(ParticipantId(who), bus, order, wh, price)


def test_matching_pairs_electrically_closest_first() -> None:
    """Sellers at A (1) and C (3), buyers at B (2) and D (4); tree S-A, A-B, B-C, A-D.

    Distances: A-B 2, A-D 8, C-B 4, C-D 14. Matching runs from the leaves up: C's 900 Wh meet
    B's demand at B (their meeting point), B's last 100 Wh and D's 500 Wh are met by A. The
    energy-weighted path resistance is 900*4 + 100*2 + 500*8 = 7,800, below the 9,800 of the
    pair-greedy split (A-B 600, C-B 400, C-D 500): bottom-up matching minimises it on a tree.
    """
    sellers = [leg("a", 1, 600), leg("c", 3, 900)]
    buyers = [leg("b", 2, 1000), leg("d", 4, 500)]
    trades = match(INTERVAL, FEEDER, sellers, buyers)
    flows = {(t.seller, t.buyer): t.energy_wh for t in trades}
    assert flows == {("c", "b"): 900, ("a", "b"): 100, ("a", "d"): 500}
    assert all(x.remaining_wh == 0 for x in [*sellers, *buyers])
    parent = FEEDER.parents()
    depth, path_r = FEEDER.depth_and_path_r()
    index = FEEDER.bus_index()
    weighted = sum(
        t.energy_wh
        * electrical_distance(parent, depth, path_r, index[t.seller_bus], index[t.buyer_bus])
        for t in trades
    )
    assert weighted == 7_800


def test_grid_is_matched_after_every_local_pair() -> None:
    """The grid at the slack is closer to the buyer at A than the seller at C, yet C's energy
    goes to A first and the grid only supplies what is left."""
    sellers = [leg(GRID, 0, 300), leg("c", 3, 700)]
    buyers = [leg("a", 1, 1000)]
    trades = match(INTERVAL, FEEDER, sellers, buyers)
    assert [(t.seller, t.energy_wh) for t in trades] == [("c", 700), (GRID, 300)]
    grid_trade = trades[1]
    assert grid_trade.seller_order is None
    assert grid_trade.seller_bus == "S"


def test_matching_refuses_unbalanced_sides() -> None:
    with pytest.raises(UnbalancedEnergy, match="cannot match 10 Wh sold against 11 Wh bought"):
        match(INTERVAL, FEEDER, [leg("a", 1, 10)], [leg("b", 2, 11)])


def test_unlimited_branches_are_infinite() -> None:
    assert all(math.isinf(s) for s in FEEDER.s_max_va)
