"""A fleet step that comes after its boundary's window records the boundary missed, saying why.

Both backends (``database_url``): the store is the one a worker's site uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from controller.fleet import record_late_boundary
from controller.store import Store

B = 1_796_428_020  # a boundary of 60-second intervals [Unix s]


@pytest.fixture
def cycle(database_url: str) -> Iterator[SimpleNamespace]:
    store = Store(database_url)
    try:
        yield SimpleNamespace(site=SimpleNamespace(interval_s=60), store=store)
    finally:
        store.close()


def _at(seconds_after_b: float) -> datetime:
    return datetime.fromtimestamp(B, UTC) + timedelta(seconds=seconds_after_b)


def test_a_late_step_records_its_boundary_missed_with_how_late(cycle: SimpleNamespace) -> None:
    store = cycle.store
    assert record_late_boundary(cycle, _at(45)) is None  # no tick yet: a new site
    store.record_tick(B - 60, "ran")
    assert record_late_boundary(cycle, _at(20)) is None  # in its window (a third: 20 s)
    assert store.last_tick() == B - 60
    assert record_late_boundary(cycle, _at(27)) == B
    row = next(r for r in store.tick_rows() if r["boundary"] == B)
    assert row["outcome"] == "missed"
    assert "came 27 s after the boundary, past the window of 20 s" in row["detail"]
    assert record_late_boundary(cycle, _at(40)) is None  # recorded once


def test_a_boundary_that_ran_is_never_recorded_missed(cycle: SimpleNamespace) -> None:
    cycle.store.record_tick(B - 60, "ran")
    cycle.store.record_tick(B, "ran")
    assert record_late_boundary(cycle, _at(50)) is None
    assert [r["outcome"] for r in cycle.store.tick_rows()] == ["ran", "ran"]
