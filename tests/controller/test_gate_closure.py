"""Gate-closure scheduling, driven by an injected clock on the real cycle and store.

The scheduler's loop (:func:`controller.scheduler.run_events`) runs on a simulated clock
(:class:`SimClock`: ``wait`` moves time forward instead of sleeping), on a real
:class:`~controller.cycle.Cycle` and SQLite store (no devices, no chain), and
:func:`schedule_problems` checks what it did: with ``gate_closure_s = g > 0`` each interval
``T`` is cleared at ``T.start - g`` (so its result and setpoints are stored before ``T``
starts) and each boundary only reads and settles; with ``g = 0`` one tick per boundary does
both, as before. Restarts (within and after the grace window), a crash after the claim, a
stop request during a step and late (misfired) events keep "cleared at most once, every
interval one outcome". The checker can fail: ``test_the_checker_catches_clearing_at_start``.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import scheduler
from controller.config import parse_site
from controller.cycle import IntervalReport, TickReport
from controller.scheduler import (
    Event,
    EventKind,
    Report,
    catch_up_gate,
    events_after,
    grace_s,
    misfire_s,
    run_event,
    run_events,
)
from controller.wiring import Runtime, build_runtime
from market.domain import Interval
from market.governance import GovernedValues

SITE = """
[site]
grid = "cigre-lv"
database = "sqlite:///{db}"
base_load_scale = 0.35
gate_closure_s = {gate}

[[participants]]
id = "alice"
bus = "Bus R11"
  [[participants.orders]]
  kind = "sell_surplus"
  price = 70_000

[[devices]]
id = "alice-pv"
participant = "alice"
kind = "pv"
port = 1
rated_w = 8000
"""

L = 900  # the site's interval [s]
T0 = datetime(2026, 6, 21, 12, tzinfo=UTC)  # a boundary


@pytest.fixture
def runtime_for(tmp_path: Path) -> Iterator[Callable[[int], Runtime]]:
    """A runtime (real store and cycle, no devices, no chain) with a given gate closure."""
    opened: list[Runtime] = []

    def make(gate: int) -> Runtime:
        text = SITE.format(db=tmp_path / f"g{gate}.sqlite", gate=gate)
        runtime = build_runtime(parse_site(tomllib.loads(text)), devices=False, chain=False)
        opened.append(runtime)
        return runtime

    yield make
    for runtime in opened:
        runtime.close()


@dataclass
class SimClock:
    """A simulated clock: ``wait`` moves time on (no sleeping); a stop at ``until``."""

    t: datetime
    until: datetime
    stop_requested: bool = False
    waits: list[float] = field(default_factory=list)
    jumps: dict[int, float] = field(default_factory=dict)
    """Extra seconds the n-th sleeping wait oversleeps (a suspended machine)."""

    def now(self) -> datetime:
        return self.t

    def wait(self, seconds: float) -> bool:
        if self.stop_requested or self.t >= self.until:
            return True
        if seconds > 0:
            seconds += self.jumps.get(len(self.waits), 0.0)
            self.waits.append(seconds)
        self.t = min(self.t + timedelta(seconds=seconds), self.until)
        return self.stop_requested


@dataclass(frozen=True)
class Seen:
    """A report and the simulated time it arrived."""

    at: datetime
    report: Report


def drive(
    runtime: Runtime, clock: SimClock, step_s: Callable[[int], float] = lambda _n: 0.0
) -> list[Seen]:
    """Run the real loop on ``clock`` until it stops; step ``n`` takes ``step_s(n)`` [s]."""
    seen: list[Seen] = []

    def on_report(report: Report) -> None:
        seen.append(Seen(clock.t, report))
        clock.t += timedelta(seconds=step_s(len(seen) - 1))

    run_events(runtime.cycle, on_report, now=clock.now, wait=clock.wait)
    return seen


def schedule_problems(
    seen: list[Seen], runtime: Runtime, first: datetime, last: datetime
) -> list[str]:
    """Every way the run broke the gate-closure schedule for boundaries ``first..last``."""
    gate = runtime.cycle.site.gate_closure_s
    length = runtime.cycle.site.interval_s
    problems: list[str] = []
    clears: dict[datetime, list[datetime]] = {}
    ticks: dict[datetime, TickReport] = {}
    for s in seen:
        cleared = s.report if isinstance(s.report, IntervalReport) else s.report.cleared
        if cleared is not None:
            clears.setdefault(cleared.interval.start, []).append(s.at)
        if isinstance(s.report, TickReport):
            ticks[s.report.boundary] = s.report
            if s.at != s.report.boundary:
                problems.append(f"boundary {s.report.boundary}: ran at {s.at}")
    boundary = first
    while boundary <= last:
        interval = Interval.containing(boundary, length)
        at = clears.get(boundary, [])
        if len(at) != 1:
            problems.append(f"interval {boundary}: cleared {len(at)} times")
        elif at[0] != boundary - timedelta(seconds=gate):
            problems.append(f"interval {boundary}: cleared at {at[0]}, not its gate closure")
        if boundary not in ticks:
            problems.append(f"boundary {boundary}: no tick")
        elif gate > 0 and ticks[boundary].cleared is not None:
            problems.append(f"boundary {boundary}: the tick cleared (gate closure {gate} s)")
        if runtime.store.result(interval.interval_id) is None:
            problems.append(f"interval {boundary}: no stored result")
        boundary += timedelta(seconds=length)
    return problems


# ----------------------------------------------------------------------------- pure rules


@given(
    after_s=st.integers(0, 10**9),
    length=st.sampled_from([2, 4, 10, 60, 900, 3600]),
    data=st.data(),
)
def test_events_come_in_time_order_at_their_times(
    after_s: int, length: int, data: st.DataObject
) -> None:
    gate = data.draw(st.integers(0, length - 1))
    after = datetime.fromtimestamp(after_s, UTC) + timedelta(
        microseconds=data.draw(st.integers(0, 999_999))
    )
    stream = events_after(after, length, gate)
    events = [next(stream) for _ in range(6)]
    assert all(e.at > after for e in events)
    assert all(a.at < b.at for a, b in itertools.pairwise(events))
    for e in events:
        assert int(e.boundary.timestamp()) % length == 0
        shift = gate if e.kind is EventKind.CLEAR else 0
        assert e.at == e.boundary - timedelta(seconds=shift)
    if gate == 0:
        assert {e.kind for e in events} == {EventKind.TICK}
    else:
        kinds = [e.kind for e in events]
        assert set(kinds) == {EventKind.CLEAR, EventKind.BOUNDARY}
        assert all(a != b for a, b in itertools.pairwise(kinds))  # they alternate
    # nothing is skipped: every event of the boundaries around `after` that is later is there
    base = Interval.containing(after, length).start
    everything = sorted(
        (
            e
            for k in range(-1, 4)
            for e in (
                [
                    Event(
                        base + timedelta(seconds=k * length),
                        EventKind.TICK,
                        base + timedelta(seconds=k * length),
                    )
                ]
                if gate == 0
                else [
                    Event(
                        base + timedelta(seconds=k * length - gate),
                        EventKind.CLEAR,
                        base + timedelta(seconds=k * length),
                    ),
                    Event(
                        base + timedelta(seconds=k * length),
                        EventKind.BOUNDARY,
                        base + timedelta(seconds=k * length),
                    ),
                ]
            )
            if e.at > after
        ),
        key=lambda e: e.at,
    )
    assert events[:3] == everything[:3]


@given(now_s=st.integers(0, 10**9), length=st.sampled_from([4, 60, 900]), data=st.data())
def test_a_gate_closure_is_caught_up_within_the_grace_window_only(
    now_s: int, length: int, data: st.DataObject
) -> None:
    gate = data.draw(st.integers(0, length - 1))
    now = datetime.fromtimestamp(now_s, UTC)
    got = catch_up_gate(now, length, gate)
    if gate == 0:
        assert got is None
        return
    gates = [
        b - timedelta(seconds=gate)
        for b in (
            Interval.containing(now, length).start + timedelta(seconds=k * length)
            for k in (-1, 0, 1)
        )
        if b - timedelta(seconds=gate) <= now
    ]
    last_gate = max(gates)
    expected = (now - last_gate).total_seconds() <= grace_s(length)
    assert (got is not None) == expected
    if got is not None:
        assert got.start - timedelta(seconds=gate) == last_gate


# ----------------------------------------------------------------------------- the loop


def test_with_a_gate_closure_each_interval_is_cleared_before_it_starts(
    runtime_for: Callable[[int], Runtime],
) -> None:
    runtime = runtime_for(300)
    clock = SimClock(T0 - timedelta(seconds=400), T0 + timedelta(seconds=3 * L + 1))
    seen = drive(runtime, clock)
    assert schedule_problems(seen, runtime, T0, T0 + timedelta(seconds=3 * L)) == []
    # the order of the events: clear T (at T - 300 s), then T's boundary, and so on
    kinds = [("clear" if isinstance(s.report, IntervalReport) else "boundary", s.at) for s in seen]
    assert kinds[:4] == [
        ("clear", T0 - timedelta(seconds=300)),
        ("boundary", T0),
        ("clear", T0 + timedelta(seconds=L - 300)),
        ("boundary", T0 + timedelta(seconds=L)),
    ]
    # the boundary settles the interval that ended (no chain here: an intent, reported)
    tick = next(
        s.report
        for s in seen
        if isinstance(s.report, TickReport) and s.at == T0 + timedelta(seconds=L)
    )
    assert isinstance(tick, TickReport)
    assert [s.interval.start for s in tick.settlements] == [T0]
    # every tick ran, none missed
    assert {r["outcome"] for r in runtime.store.tick_rows()} == {"ran"}
    # the stored result of T carries its gate closure in the audit inputs
    stored = runtime.store.result(int(T0.timestamp()))
    assert stored is not None
    assert stored["inputs"]["params"]["gate_closure_s"] == 300


def test_without_a_gate_closure_one_tick_does_both_as_before(
    runtime_for: Callable[[int], Runtime],
) -> None:
    runtime = runtime_for(0)
    clock = SimClock(T0 - timedelta(seconds=10), T0 + timedelta(seconds=3 * L + 1))
    seen = drive(runtime, clock)
    assert schedule_problems(seen, runtime, T0, T0 + timedelta(seconds=3 * L)) == []
    assert all(isinstance(s.report, TickReport) for s in seen)
    assert all(isinstance(s.report, TickReport) and s.report.cleared is not None for s in seen)
    assert [s.at for s in seen] == [T0 + timedelta(seconds=k * L) for k in range(4)]


def test_the_checker_catches_clearing_at_start(
    runtime_for: Callable[[int], Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler that still cleared at T's start (the old behaviour) is caught."""
    real = scheduler.events_after

    def at_start(after: datetime, length: int, gate: int) -> Iterator[Event]:
        for e in real(after, length, 0):
            yield Event(e.at, EventKind.TICK, e.boundary)

    monkeypatch.setattr(scheduler, "events_after", at_start)
    runtime = runtime_for(300)
    clock = SimClock(T0 - timedelta(seconds=400), T0 + timedelta(seconds=L + 1))
    problems = schedule_problems(drive(runtime, clock), runtime, T0, T0 + timedelta(seconds=L))
    assert any("not its gate closure" in p for p in problems), problems
    assert any("the tick cleared" in p for p in problems), problems


def test_a_restart_within_the_grace_window_clears_at_once(
    runtime_for: Callable[[int], Runtime],
) -> None:
    runtime = runtime_for(300)
    gate = T0 - timedelta(seconds=300)
    start = gate + timedelta(seconds=grace_s(L) - 1)  # just inside the window
    clock = SimClock(start, T0 + timedelta(seconds=1))
    seen = drive(runtime, clock)
    assert isinstance(seen[0].report, IntervalReport)
    assert seen[0].at == start  # at once, not at the next gate closure
    assert seen[0].report.interval.start == T0
    assert runtime.store.result(int(T0.timestamp())) is not None
    # the same gate closure again (another restart): claimed, never cleared twice
    assert run_event(runtime.cycle, Event(gate, EventKind.CLEAR, T0)) == []


def test_a_gate_closure_missed_while_down_is_recorded_and_never_cleared_late(
    runtime_for: Callable[[int], Runtime],
) -> None:
    runtime = runtime_for(300)
    start = T0 - timedelta(seconds=300 - int(grace_s(L)) - 5)  # after the window, before T
    clock = SimClock(start, T0 + timedelta(seconds=L - 300 + 1))
    seen = drive(runtime, clock)
    assert not any(
        isinstance(s.report, IntervalReport) and s.report.interval.start == T0 for s in seen
    )
    rows = {r["interval_id"]: r for r in runtime.store.interval_rows()}
    row = rows[int(T0.timestamp())]
    assert row["status"] == "abandoned"
    assert "gate closure" in row["reason"]
    assert "passed without a clearing" in row["reason"]
    # recorded once: a late clearing (another process, a replayed event) is refused
    assert run_event(runtime.cycle, Event(T0 - timedelta(seconds=300), EventKind.CLEAR, T0)) == []
    # the next interval was cleared at its own gate closure
    assert isinstance(seen[-1].report, IntervalReport)
    assert seen[-1].at == T0 + timedelta(seconds=L - 300)


def test_a_crash_after_the_claim_leaves_one_abandoned_outcome(
    runtime_for: Callable[[int], Runtime],
) -> None:
    """A controller that died while clearing T at its gate closure (T claimed, no result)."""
    runtime = runtime_for(300)
    assert runtime.store.claim_interval(int(T0.timestamp()), L)
    start = T0 - timedelta(seconds=300 - 1)  # restarted within the grace window
    clock = SimClock(start, T0 + timedelta(seconds=L + 1))
    seen = drive(runtime, clock)
    assert not any(
        isinstance(s.report, IntervalReport) and s.report.interval.start == T0 for s in seen
    )
    row = {r["interval_id"]: r for r in runtime.store.interval_rows()}[int(T0.timestamp())]
    assert row["status"] == "abandoned"
    assert "stopped while clearing" in row["reason"]
    # ... and it is settled once, at the next boundary, like any outcome
    ticks = [s.report for s in seen if isinstance(s.report, TickReport)]
    settled = [s.interval.start for t in ticks for s in t.settlements]
    assert settled.count(T0) == 1


def test_a_step_that_fails_under_the_cycle_is_logged_and_the_next_one_runs(
    runtime_for: Callable[[int], Runtime],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The loop's boundaries report what they caught (type, message, event) and go on."""
    runtime = runtime_for(300)
    real_clear = type(runtime.cycle).clear_at_gate
    failed: list[Interval] = []

    def flaky(self: object, interval: Interval) -> IntervalReport | None:
        if not failed:  # the first clearing: the store fails under it
            failed.append(interval)
            raise OSError("disk I/O error")
        return real_clear(runtime.cycle, interval)

    monkeypatch.setattr(type(runtime.cycle), "clear_at_gate", flaky)
    clock = SimClock(T0 - timedelta(seconds=301), T0 + timedelta(seconds=L + 2))
    with caplog.at_level("ERROR", logger="peergrid"):
        seen = drive(runtime, clock)
    [first] = failed
    assert first.start == T0
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is OSError]
    assert logged, caplog.text
    assert f"clearing {T0:%Y-%m-%dT%H:%MZ}" in logged[0].getMessage()
    # the loop went on: the next interval was cleared at its gate closure
    cleared = [s.report.interval.start for s in seen if isinstance(s.report, IntervalReport)]
    assert T0 + timedelta(seconds=L) in cleared


def test_a_stop_during_a_step_lets_it_finish_and_runs_nothing_more(
    runtime_for: Callable[[int], Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtime_for(300)
    clock = SimClock(T0 - timedelta(seconds=301), T0 + timedelta(seconds=2 * L))
    real_clear = type(runtime.cycle).clear_at_gate

    def clear_then_stop(self: object, interval: Interval) -> IntervalReport | None:
        clock.stop_requested = True  # SIGTERM arrives in the middle of the step
        return real_clear(runtime.cycle, interval)

    monkeypatch.setattr(type(runtime.cycle), "clear_at_gate", clear_then_stop)
    seen = drive(runtime, clock)
    assert len(seen) == 1
    assert isinstance(seen[0].report, IntervalReport)
    assert runtime.store.result(int(T0.timestamp())) is not None  # the step finished
    assert runtime.store.tick_rows() == []  # and the boundary after it never started


def test_a_boundary_delayed_by_a_long_clearing_still_runs(
    runtime_for: Callable[[int], Runtime],
) -> None:
    """A clearing longer than the gate closure delays the boundary's reading, never drops it."""
    runtime = runtime_for(300)
    clock = SimClock(T0 - timedelta(seconds=301), T0 + timedelta(seconds=L + 1))
    over = 300 + misfire_s(L) + 60  # the clearing ends well past T's start
    seen = drive(runtime, clock, step_s=lambda n: over if n == 0 else 0.0)
    ticks = [s for s in seen if isinstance(s.report, TickReport)]
    assert ticks[0].report.boundary == T0
    assert ticks[0].at == T0 - timedelta(seconds=300) + timedelta(seconds=over)  # at once
    assert {r["outcome"] for r in runtime.store.tick_rows()} == {"ran"}


def test_a_step_longer_than_an_interval_coalesces_the_events_it_overran(
    runtime_for: Callable[[int], Runtime],
) -> None:
    runtime = runtime_for(300)
    t = T0 + timedelta(seconds=L)
    step = timedelta(seconds=L)
    clock = SimClock(t - timedelta(seconds=L + 301), t + timedelta(seconds=3 * L))
    # step 2 clears T at T - 300 s and ends at T + L + 1 s: T's boundary and T+1's boundary
    # are due, only the later runs (T's is recorded missed); T+1's gate closure runs late
    seen = drive(runtime, clock, step_s=lambda n: L + 301 if n == 2 else 0.0)
    labels = [
        (
            type(s.report).__name__,
            s.report.interval.start if isinstance(s.report, IntervalReport) else s.report.boundary,
        )
        for s in seen
    ]
    assert labels[:6] == [
        ("IntervalReport", t - step),
        ("TickReport", t - step),
        ("IntervalReport", t),
        ("IntervalReport", t + step),
        ("TickReport", t + step),
        ("IntervalReport", t + 2 * step),
    ]
    ticks = {r["boundary"]: r["outcome"] for r in runtime.store.tick_rows()}
    assert ticks[int(t.timestamp())] == "missed"
    assert ticks[int((t + step).timestamp())] == "ran"
    starts = [s.report.interval.start for s in seen if isinstance(s.report, IntervalReport)]
    assert len(starts) == len(set(starts))  # never twice


def test_events_the_loop_woke_too_late_for_are_skipped_and_recorded(
    runtime_for: Callable[[int], Runtime],
) -> None:
    """The machine slept through T's gate closure and boundary (a suspend, a clock jump)."""
    runtime = runtime_for(300)
    clock = SimClock(T0 - timedelta(seconds=L + 301), T0 + timedelta(seconds=2 * L))
    clock.jumps = {2: 300 + misfire_s(L) + 1}  # the 3rd wait oversleeps past T's events
    seen = drive(runtime, clock)
    cleared = [s.report.interval.start for s in seen if isinstance(s.report, IntervalReport)]
    assert T0 not in cleared
    assert T0 + timedelta(seconds=L) in cleared
    ticks = {r["boundary"]: r["outcome"] for r in runtime.store.tick_rows()}
    assert ticks[int(T0.timestamp())] == "missed"
    assert runtime.store.result(int(T0.timestamp())) is None  # missed, as a missed tick is


# --------------------------------------------------------------- a governed gate closure


def test_a_governed_gate_closure_change_is_scheduled_from_the_interval_after_the_read(
    runtime_for: Callable[[int], Runtime],
) -> None:
    """The registry's ``gate_closure_s`` moves 0 -> 300 -> 100 -> 0 s while the real loop runs.

    Each clearing reads it (here an in-memory registry by the simulated clock; the real one
    is read in ``test_governed_terms.py``) and it applies from the interval after: every
    interval is cleared once, at its start less the gate closure its stored inputs state,
    which is the one the interval before announced. A shorter gate closure never clears an
    interval twice, and the switch back to 0 s ticks again.
    """
    runtime = runtime_for(0)
    clock = SimClock(T0 - timedelta(seconds=10), T0 + timedelta(seconds=6 * L + 1))
    schedule = [  # (from this time on, the registry's value)
        (T0, 300),
        (T0 + timedelta(seconds=2 * L), 100),
        (T0 + timedelta(seconds=4 * L - 200), 0),
    ]

    def registry() -> GovernedValues:
        value = 0
        for since, v in schedule:
            if clock.t >= since:
                value = v
        return GovernedValues(
            registry="0x" + "11" * 20,
            block=int(clock.t.timestamp()),
            values={"gate_closure_s": value},
            since_block={"gate_closure_s": 0},
            proposals={"gate_closure_s": None},
        )

    runtime.cycle.governed = registry
    seen = drive(runtime, clock)
    cleared_at: dict[datetime, list[datetime]] = {}
    for s in seen:
        cleared = s.report if isinstance(s.report, IntervalReport) else s.report.cleared
        if cleared is not None:
            cleared_at.setdefault(cleared.interval.start, []).append(s.at)
    gates, following = {}, {}
    for k in range(7):
        start = T0 + timedelta(seconds=k * L)
        stored = runtime.store.result(int(start.timestamp()))
        assert stored is not None, f"interval {k}: no result"
        params = stored["inputs"]["params"]
        gates[k], following[k] = params["gate_closure_s"], params["next_gate_closure_s"]
        assert cleared_at.get(start) == [start - timedelta(seconds=gates[k])], f"interval {k}"
        if k:
            assert gates[k] == following[k - 1], f"interval {k}"
    # interval 0 (cleared at T0, the registry says 300) announces 300 for interval 1; 2 is
    # cleared 300 s before the change to 100 and announces 300 still, 3 reads 100; 4 is
    # cleared 100 s before its start, after the change to 0, and 5 ticks again
    assert [gates[k] for k in range(7)] == [0, 300, 300, 300, 100, 0, 0]
    assert {r["outcome"] for r in runtime.store.tick_rows()} == {"ran"}
