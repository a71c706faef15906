"""Network models and split base cases kept for the sites that share a base case.

A fleet worker keeps, per thread, the network model of each base case its sites share
(:func:`controller.wiring.shared_linear_grid`), and the base case's split for the audit
record (:func:`controller.wiring.shared_split`). A kept model must clear every book exactly as
a model built afresh does, whatever it cleared before: its AC checker writes to its own
pandapower net on each check.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from controller.grid_clearing import clear_on_grid
from controller.wiring import shared_linear_grid, shared_split
from grid_models.grids import Grid, load_grid, split_base_case
from grid_models.linear import build_linear_grid
from market.clearing import ClearingOptions
from market.codec import result_to_dict
from market.domain import Bid, ClearingStatus, Interval, Offer
from market.orderbook import build_order_book

IV = Interval(datetime(2026, 6, 21, 12, tzinfo=UTC))


def _order(side: type[Bid] | type[Offer], oid: str, bus: str, wh: int, price: int) -> Bid | Offer:
    return side(
        order_id=oid, participant=oid, bus=bus, interval=IV, energy_wh=wh, limit_price=price
    )


def _book(pv_wh: int, load_wh: int) -> object:
    return build_order_book(
        IV,
        [
            _order(Offer, "pv", "Bus R18", pv_wh, 90_000),
            _order(Offer, "pv2", "Bus C17", pv_wh // 2, 100_000),
            _order(Bid, "load", "Bus R15", load_wh, 320_000),
            _order(Bid, "load2", "Bus I2", load_wh // 3, 310_000),
        ],
    )


@pytest.fixture(scope="module")
def bases() -> tuple[Grid, Grid]:
    grid = load_grid("cigre-lv")
    return grid.scaled(load_scale=0.35), grid.scaled(load_scale=0.55, sgen_scale=0.5)


def _clear(grid: Grid, linear: object, book: object) -> dict[str, object]:
    result = clear_on_grid(grid, linear, book, ClearingOptions())  # type: ignore[arg-type]
    assert result.status is ClearingStatus.CLEARED, result.reason
    return result_to_dict(result)


def test_a_kept_model_clears_as_a_new_one_whatever_it_cleared_before(
    bases: tuple[Grid, Grid],
) -> None:
    light, heavy = bases
    books = [_book(40_000, 6_000), _book(2_000, 30_000), _book(60_000, 1_000)]
    fresh = {
        (g, k): _clear(base, build_linear_grid(base), book)
        for g, base in enumerate(bases)
        for k, book in enumerate(books)
    }
    # the results differ by book and base case: an equality below is not one of constants
    assert len({str(r) for r in fresh.values()}) == len(fresh)
    for _ in range(2):  # interleaved, twice: each clearing leaves its state in the model
        for g, base in enumerate((light, heavy)):
            for k, book in enumerate(books):
                kept = shared_linear_grid(base, 0.95, 1.05)
                assert _clear(base, kept, book) == fresh[g, k]


def test_models_are_kept_per_base_case_band_and_thread(bases: tuple[Grid, Grid]) -> None:
    light, heavy = bases
    model = shared_linear_grid(light, 0.95, 1.05)
    assert shared_linear_grid(light, 0.95, 1.05) is model
    assert shared_linear_grid(heavy, 0.95, 1.05) is not model
    assert shared_linear_grid(light, 0.9, 1.1) is not model
    assert shared_linear_grid(light, 0.9, 1.1).vm_min_pu == 0.9
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(shared_linear_grid(light, 0.95, 1.05)))
    thread.start()
    thread.join()
    assert len(other) == 1
    assert other[0] is not model  # its AC checker is another thread's to write


def test_a_kept_split_equals_a_new_one_and_its_copies_are_the_callers(
    bases: tuple[Grid, Grid],
) -> None:
    light, heavy = bases
    text, injections = shared_split(light)
    assert (text, injections) == split_base_case(light)
    assert shared_split(heavy) == split_base_case(heavy)
    assert shared_split(heavy)[1] != injections
    injections["load.p_mw"][0][1] = 123.0  # a caller's changes
    injections.pop(next(iter(injections)))
    assert shared_split(light) == split_base_case(light)
