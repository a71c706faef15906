"""Iteration counts decide the clearing, not the wall clock (issue 11, "Reproducible").

A slow machine is simulated by a clock that jumps ahead between any two readings: without a
wall-clock budget (the deterministic path, every re-clear) the result is the same to the bit
and the loop never reads the clock; with the production budget the same clock stops the loop
with a recorded TIME_LIMIT, which ``peergrid audit verify`` accepts as what happened. HiGHS is
bounded by iteration limits (read back from the solver), and an iteration-limit stop is the
same outcome every time.
"""

from __future__ import annotations

import importlib
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import highspy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import grid_clearing
from controller.audit import accepted_as_recorded, verify_anchored, verify_record
from controller.clearing_job import clear_orders_file
from controller.grid_clearing import (
    LOSS_BASIS,
    MAX_ITERATIONS,
    WALL_CLOCK_STOP,
    clear_on_grid,
    clearing_limits,
    reclear_options,
    recorded_loss_basis,
)
from grid_models.grids import Grid, load_grid
from grid_models.linear import LinearGrid, build_linear_grid
from market.canonical import content_hash
from market.clearing import ClearingOptions
from market.clearing.options import IPM_ITERATION_LIMIT, SIMPLEX_ITERATION_LIMIT
from market.clearing.status import HIGHS_TO_STATUS, TERMINATION_TO_STATUS
from market.codec import result_to_dict
from market.domain import Bid, ClearingResult, ClearingStatus, Interval, Offer, OrderBook
from market.errors import InvalidOrder
from market.orderbook import build_order_book

solve_module = importlib.import_module("market.clearing.solve")

IV = Interval(datetime(2026, 6, 21, 12, tzinfo=UTC))


def offer(oid: str, bus: str, wh: int, price: int) -> Offer:
    return Offer(
        order_id=oid, participant=oid, bus=bus, interval=IV, energy_wh=wh, limit_price=price
    )


def bid(oid: str, bus: str, wh: int, price: int) -> Bid:
    return Bid(order_id=oid, participant=oid, bus=bus, interval=IV, energy_wh=wh, limit_price=price)


@pytest.fixture(scope="module")
def cigre() -> Grid:
    return load_grid("cigre-lv").scaled(load_scale=0.35)


@pytest.fixture(scope="module")
def linear(cigre: Grid) -> LinearGrid:
    return build_linear_grid(cigre)


@pytest.fixture(scope="module")
def book() -> OrderBook:
    """Four orders the AC loop needs 4 solves for (loss corrections): every check point runs."""
    return build_order_book(
        IV,
        [
            offer("s1", "Bus R18", 8_000, 90_000),
            offer("s2", "Bus C17", 4_000, 100_000),
            bid("b1", "Bus R15", 6_000, 320_000),
            bid("b2", "Bus I2", 5_000, 310_000),
        ],
    )


@pytest.fixture(scope="module")
def reference(cigre: Grid, linear: LinearGrid, book: OrderBook) -> ClearingResult:
    result = clear_on_grid(cigre, linear, book, ClearingOptions())
    assert result.status is ClearingStatus.CLEARED
    assert result.iterations == 4  # the check points below are all reached
    return result


def bits(result: ClearingResult) -> str:
    """The stored form's content hash: equal hashes are equal results, to the bit."""
    return content_hash(result_to_dict(result))


class SlowClock:
    """A clock that advances ``step`` seconds at every reading (a very slow machine)."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.readings = 0
        self._ticks: Iterator[int] = itertools.count()

    def __call__(self) -> float:
        self.readings += 1
        return next(self._ticks) * self.step


def slow_machine(monkeypatch: pytest.MonkeyPatch, step: float) -> SlowClock:
    """The loop's clock and Python's clocks all jump ``step`` s per reading."""
    clock = SlowClock(step)
    monkeypatch.setattr(grid_clearing, "_clock", clock)
    monkeypatch.setattr(time, "perf_counter", SlowClock(step))
    monkeypatch.setattr(time, "monotonic", SlowClock(step))
    return clock


# --------------------------------------------------------------------------- a slow machine


def test_a_very_slow_machine_cannot_change_the_deterministic_result(
    cigre: Grid,
    linear: LinearGrid,
    book: OrderBook,
    reference: ClearingResult,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as m:
        clock = slow_machine(m, step=1e6)  # 11 days between any two clock readings
        slow = clear_on_grid(cigre, linear, book, ClearingOptions())
    assert bits(slow) == bits(reference)
    assert slow.iterations == reference.iterations
    assert clock.readings == 0  # without a budget the loop never reads its clock

    # the same slow machine does change a clearing that has a budget: the comparison can fail
    with monkeypatch.context() as m:
        slow_machine(m, step=1e6)
        stopped = clear_on_grid(cigre, linear, book, ClearingOptions(time_limit_s=3600))
    assert bits(stopped) != bits(reference)


def test_a_budget_that_does_not_run_out_decides_nothing(
    cigre: Grid, linear: LinearGrid, book: OrderBook, reference: ClearingResult
) -> None:
    """Production (budget on, HiGHS given the time left) gives the re-clear's result."""
    production = clear_on_grid(cigre, linear, book, ClearingOptions(time_limit_s=3600))
    assert bits(production) == bits(reference)


@pytest.mark.parametrize(
    ("step", "solves", "why"),
    [
        (11.0, 0, "before solving"),
        (6.0, 1, "before the AC check"),
        (3.0, 2, "before the AC check"),
        (1.5, 3, "AC losses"),  # stopped before the 4th solve, a loss correction pending
    ],
)
def test_the_production_budget_stops_with_a_recorded_time_limit(
    cigre: Grid,
    linear: LinearGrid,
    book: OrderBook,
    monkeypatch: pytest.MonkeyPatch,
    step: float,
    solves: int,
    why: str,
) -> None:
    """A 10 s budget; the clock reads 0, step, 2 step, ... at the loop's check points."""
    with monkeypatch.context() as m:
        m.setattr(grid_clearing, "_clock", SlowClock(step))
        result = clear_on_grid(cigre, linear, book, ClearingOptions(time_limit_s=10))
    assert result.status is ClearingStatus.TIME_LIMIT
    assert result.reason.startswith(f"{WALL_CLOCK_STOP} of 10 s after {solves} solve(s) (")
    assert why in result.reason
    assert "fallback: grid only" in result.reason
    assert result.iterations == solves
    assert result.trades == ()  # nothing accepted
    assert result.orders == ()
    assert result.check is not None  # the base case's AC check
    stored = result_to_dict(result)
    assert stored["status"] == "time_limit"


def test_highs_stopped_by_the_time_left_is_a_wall_clock_stop(
    cigre: Grid, linear: LinearGrid, book: OrderBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HiGHS's own ``time_limit`` (the budget's time left) fired: a TIME_LIMIT, named so."""
    original = solve_module.highs_for

    def out_of_time(*args: Any, **kwargs: Any) -> highspy.Highs:
        h = original(*args, **kwargs)
        assert h.getOptionValue("time_limit")[1] <= 10  # the time left reached HiGHS
        h.setOptionValue("time_limit", 0.0)  # no time at all: HiGHS stops at once
        return h

    monkeypatch.setattr(solve_module, "highs_for", out_of_time)
    result = clear_on_grid(cigre, linear, book, ClearingOptions(time_limit_s=10))
    assert result.status is ClearingStatus.TIME_LIMIT
    assert result.reason.startswith(f"{WALL_CLOCK_STOP} of 10 s after 1 solve(s)")
    assert "HiGHS stopped by the time left" in result.reason


# --------------------------------------------------------------------------- HiGHS's limits


def capture_highs(monkeypatch: pytest.MonkeyPatch) -> list[highspy.Highs]:
    made: list[highspy.Highs] = []
    original = solve_module.highs_for

    def spy(*args: Any, **kwargs: Any) -> highspy.Highs:
        h = original(*args, **kwargs)
        made.append(h)
        return h

    monkeypatch.setattr(solve_module, "highs_for", spy)
    return made


def option(h: highspy.Highs, name: str) -> object:
    status, value = h.getOptionValue(name)
    assert status == highspy.HighsStatus.kOk
    return value


def test_iteration_limits_reach_highs_and_no_time_limit_does(
    cigre: Grid, linear: LinearGrid, book: OrderBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = capture_highs(monkeypatch)
    clear_on_grid(cigre, linear, book, ClearingOptions())
    clear_on_grid(
        cigre,
        linear,
        book,
        ClearingOptions(simplex_iteration_limit=123_456, ipm_iteration_limit=789),
    )
    defaults = made[0]
    assert option(defaults, "simplex_iteration_limit") == SIMPLEX_ITERATION_LIMIT
    assert option(defaults, "ipm_iteration_limit") == IPM_ITERATION_LIMIT
    for h in made:
        assert option(h, "time_limit") == float("inf")  # HiGHS's default: never a clock
    assert option(made[-1], "simplex_iteration_limit") == 123_456
    assert option(made[-1], "ipm_iteration_limit") == 789


def test_the_pyomo_path_gets_the_iteration_limits_too(
    cigre: Grid, linear: LinearGrid, book: OrderBook
) -> None:
    tight = ClearingOptions(engine="pyomo", solver="simplex", simplex_iteration_limit=1)
    result = clear_on_grid(cigre, linear, book, tight)
    assert result.status is ClearingStatus.SOLVER_ERROR
    assert "iteration limit (simplex 1" in result.reason


def test_an_iteration_limit_stop_is_deterministic(
    cigre: Grid, linear: LinearGrid, book: OrderBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    tight = ClearingOptions(solver="simplex", simplex_iteration_limit=1)
    first = clear_on_grid(cigre, linear, book, tight)
    assert first.status is ClearingStatus.SOLVER_ERROR  # not TIME_LIMIT: verify re-clears it
    assert "HiGHS stopped at its iteration limit (simplex 1, ipm 10000" in first.reason
    assert "the same on any machine" in first.reason
    with monkeypatch.context() as m:
        slow_machine(m, step=1e6)
        again = clear_on_grid(cigre, linear, book, tight)
    assert bits(again) == bits(first)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(limit=st.integers(min_value=1, max_value=40), solver=st.sampled_from(["simplex", "ipm"]))
def test_any_iteration_limit_gives_the_same_outcome_twice(
    cigre: Grid, linear: LinearGrid, book: OrderBook, limit: int, solver: str
) -> None:
    options = ClearingOptions(
        solver=solver, simplex_iteration_limit=limit, ipm_iteration_limit=limit
    )
    first = clear_on_grid(cigre, linear, book, options)
    again = clear_on_grid(cigre, linear, book, options)
    assert first.status is not ClearingStatus.TIME_LIMIT
    assert bits(first) == bits(again)


def test_only_a_wall_clock_stop_maps_to_time_limit() -> None:
    timed = {name for name, s in HIGHS_TO_STATUS.items() if s is ClearingStatus.TIME_LIMIT}
    assert timed == {"kTimeLimit"}
    assert HIGHS_TO_STATUS["kIterationLimit"] is ClearingStatus.SOLVER_ERROR
    pyomo_timed = {t.name for t, s in TERMINATION_TO_STATUS.items() if s.name == "TIME_LIMIT"}
    assert pyomo_timed == {"maxTimeLimit"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"time_limit_s": 0}, "wall-clock budget"),
        ({"time_limit_s": float("nan")}, "wall-clock budget"),
        ({"simplex_iteration_limit": 0}, "simplex_iteration_limit must be a whole number >= 1"),
        ({"ipm_iteration_limit": 1.5}, "ipm_iteration_limit must be a whole number"),
        ({"ipm_iteration_limit": True}, "ipm_iteration_limit must be a whole number"),
    ],
)
def test_limits_are_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidOrder, match=match):
        ClearingOptions(**kwargs)


def test_no_budget_is_the_default() -> None:
    options = ClearingOptions()
    assert options.time_limit_s is None
    assert options.deterministic
    assert "time_limit" not in options.highs_options()
    assert ClearingOptions(time_limit_s=5).highs_options()["time_limit"] == 5.0


# --------------------------------------------------------------------------- records, re-clears


def test_limits_are_recorded_and_a_reclear_uses_them_without_the_budget() -> None:
    production = ClearingOptions(
        time_limit_s=10, simplex_iteration_limit=5_000, ipm_iteration_limit=50
    )
    params = clearing_limits(production)
    assert params == {
        "max_iterations": MAX_ITERATIONS,
        "loss_basis": LOSS_BASIS,
        "simplex_iteration_limit": 5_000,
        "ipm_iteration_limit": 50,
        "time_limit_s": 10,
    }
    options, max_iterations = reclear_options(ClearingOptions(time_limit_s=7), params)
    assert options.time_limit_s is None
    assert (options.simplex_iteration_limit, options.ipm_iteration_limit) == (5_000, 50)
    assert max_iterations == MAX_ITERATIONS
    # a record of an earlier release (no limits): this release's defaults, still no budget
    options, max_iterations = reclear_options(ClearingOptions(time_limit_s=7), None)
    assert options == ClearingOptions()
    assert max_iterations == MAX_ITERATIONS
    options, max_iterations = reclear_options(ClearingOptions(), {"max_iterations": 2})
    assert max_iterations == 2
    # the loss tolerance's rule: the record's, "bought" for records before it was recorded
    assert recorded_loss_basis(params) == LOSS_BASIS == "traded"
    assert recorded_loss_basis(None) == recorded_loss_basis({"max_iterations": 2}) == "bought"


def stopped_record(result: ClearingResult) -> dict[str, Any]:
    """The parts of an audit record the re-clear check reads (the AC check at the top)."""
    stored = result_to_dict(result)
    return {
        "interval": IV.interval_id,
        "length_s": IV.length_s,
        "result": stored,
        "ac_check": stored["ac_check"],
    }


def never(record: Any) -> dict[str, Any]:
    """A re-clear that must not run."""
    pytest.fail("a recorded wall-clock stop was re-cleared")


def test_verify_accepts_a_recorded_wall_clock_stop_and_says_so(
    cigre: Grid,
    linear: LinearGrid,
    book: OrderBook,
    reference: ClearingResult,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as m:
        m.setattr(grid_clearing, "_clock", SlowClock(6.0))
        stopped = clear_on_grid(cigre, linear, book, ClearingOptions(time_limit_s=10))
    record = stopped_record(stopped)
    line = accepted_as_recorded(record)
    assert line.startswith(f"interval {IV.start:%Y-%m-%dT%H:%M}Z (id {IV.interval_id}): ")
    assert f"accepted as recorded: wall-clock stop ({WALL_CLOCK_STOP} of 10 s" in line
    assert verify_anchored(record, reclear=never) == []

    # a deterministic outcome is re-cleared and compared: a difference is found
    cleared = stopped_record(reference)
    assert accepted_as_recorded(cleared) == ""
    differs = verify_anchored(cleared, reclear=lambda _r: result_to_dict(stopped))
    assert any("result.status" in p for p in differs), differs
    assert verify_anchored(cleared, reclear=lambda _r: result_to_dict(reference)) == []


def test_the_legacy_verify_does_not_reclear_a_wall_clock_stop(
    cigre: Grid, linear: LinearGrid, book: OrderBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        m.setattr(grid_clearing, "_clock", SlowClock(11.0))
        stopped = clear_on_grid(cigre, linear, book, ClearingOptions(time_limit_s=10))
    record = stopped_record(stopped)
    record["settlement"] = None
    assert verify_record(record, reclear=never) == [
        f"interval {IV.start:%Y-%m-%dT%H:%M}Z (id {IV.interval_id}): no settlement batch"
    ]


# --------------------------------------------------------------------------- peergrid clear

HEADER = "order_id,participant,bus,side,energy_wh,limit_price\n"
ORDERS = HEADER + (
    "s1,alice,Bus R18,sell,4000,90000\n"
    "s2,bob,Bus C17,sell,3000,100000\n"
    "b1,carol,Bus R15,buy,3000,320000\n"
    "b2,dave,Bus I2,buy,2500,310000\n"
)


def test_peergrid_clear_is_deterministic_unless_a_budget_is_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(ORDERS, encoding="utf-8")

    def deterministic(doc: dict[str, Any]) -> str:
        return json.dumps({k: v for k, v in doc.items() if k != "timings"}, sort_keys=True)

    plain = clear_orders_file("cigre-lv", path)
    assert plain["limits"] == {
        "max_iterations": MAX_ITERATIONS,
        "loss_basis": LOSS_BASIS,
        "simplex_iteration_limit": SIMPLEX_ITERATION_LIMIT,
        "ipm_iteration_limit": IPM_ITERATION_LIMIT,
        "time_limit_s": None,
    }
    with monkeypatch.context() as m:
        slow_machine(m, step=1e6)
        slow = clear_orders_file("cigre-lv", path)
    assert deterministic(slow) == deterministic(plain)

    with monkeypatch.context() as m:
        m.setattr(grid_clearing, "_clock", SlowClock(11.0))
        stopped = clear_orders_file("cigre-lv", path, time_limit_s=10)
    assert stopped["status"] == "time_limit"
    assert stopped["limits"]["time_limit_s"] == 10
    assert stopped["reason"].startswith(WALL_CLOCK_STOP)


# --------------------------------------------------------------------------- end to end


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_demo_stopped_by_its_budget_verifies_as_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo's cycle clears with the site's 10 s budget on a machine slow enough to spend it.

    Every interval with orders is recorded as a wall-clock stop (grid only) and settled;
    ``peergrid audit verify`` then re-clears nothing of those, reports no difference and names
    each as accepted as recorded.
    """
    from controller.cli import main  # the CLI and the demo only here: the rest stays light
    from controller.demo import run_demo

    with monkeypatch.context() as m:
        m.setattr(grid_clearing, "_clock", SlowClock(60.0))
        report = run_demo(intervals=2, out_dir=tmp_path)
    assert report["all_settled"]
    site = (Path(__file__).parents[2] / "controller/sites/demo.toml").read_text("utf-8")
    db = f"sqlite:///{(tmp_path / 'peergrid-demo.sqlite').as_posix()}"
    (tmp_path / "site.toml").write_text(site.replace("sqlite:///peergrid-demo.sqlite", db))
    capsys.readouterr()
    assert main(["audit", "verify", "--site", str(tmp_path / "site.toml"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["problems"] == []
    assert summary["records"] == summary["verified"] == 2
    assert len(summary["accepted"]) == 2, summary
    assert all("accepted as recorded: wall-clock stop" in line for line in summary["accepted"])
