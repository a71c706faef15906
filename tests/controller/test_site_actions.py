"""The operator's site actions are durable and honoured by the cycle (real store, demo runtime).

* a pause, a resume and exclusions are written to the store's ``site_actions`` table before
  they take effect, and a new :class:`MarketControls` over the same database (a restart)
  replays them: the market is still paused, the exclusions still in force;
* the cycle leaves out the orders an exclusion or a pause takes out of the market, names each
  in the interval's ``skipped`` with the action's reason, and records the actions applied in
  the interval's audit inputs (``controls``), which the record's hash covers;
* fault injection: a cycle without the controls wired clears the excluded orders (so the
  check above can fail).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.controls import MarketControls, TargetKind
from controller.demo import DemoRuntime, demo_runtime
from controller.store import Store
from controller.wiring import build_runtime
from market.domain import Interval

AT = datetime(2026, 6, 21, 10, 0, tzinfo=UTC)
OPERATOR = "0x" + "ab" * 20


def controls_on(store: Store) -> MarketControls:
    return MarketControls(
        participants=frozenset({"alice", "bob"}),
        devices=frozenset({"alice-pv"}),
        buses=frozenset({"Bus R1"}),
        log=store,
    )


def test_actions_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{(tmp_path / 'actions.sqlite').as_posix()}"
    store = Store(url)
    controls = controls_on(store)
    controls.pause("feeder maintenance", by=OPERATOR, at=AT)
    controls.exclude(
        TargetKind.PARTICIPANT,
        "bob",
        start=AT,
        end=AT + timedelta(hours=2),
        reason="meter replaced",
        by=OPERATOR,
        at=AT,
    )
    store.close()

    again = controls_on(Store(url))  # a new process over the same database
    paused = again.paused
    assert paused is not None
    assert (paused.reason, paused.by, paused.at) == ("feeder maintenance", OPERATOR, AT)
    [ex] = again.exclusions()
    assert (ex.kind, ex.target, ex.start, ex.end, ex.reason) == (
        TargetKind.PARTICIPANT,
        "bob",
        AT,
        AT + timedelta(hours=2),
        "meter replaced",
    )
    assert again.resume(by=OPERATOR, at=AT + timedelta(minutes=5))
    assert not again.resume(by=OPERATOR, at=AT + timedelta(minutes=6))  # nothing to resume
    third = controls_on(Store(url))
    assert third.paused is None
    assert [a["action"] for a in Store(url).site_actions()] == ["pause", "exclude", "resume"]


def _participants_in_book(rt: DemoRuntime, k: int) -> set[str]:
    report = rt.tick(k)
    assert report.cleared is not None
    return {str(o.participant) for o in report.cleared.book.orders}


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_cycle_leaves_out_excluded_and_paused_orders_and_records_why(tmp_path: Path) -> None:
    with demo_runtime(tmp_path) as rt:
        controls = rt.cycle.controls  # build_runtime wires them, as for `run` and `serve`
        assert controls is not None
        before = _participants_in_book(rt, 0)
        target = sorted(before)[0]
        start = rt.boundary(1)
        controls.exclude(
            TargetKind.PARTICIPANT,
            target,
            start=start,
            end=start + timedelta(seconds=rt.site.interval_s),
            reason="inverter firmware update",
            by=OPERATOR,
            at=rt.boundary(0),
        )
        report = rt.tick(1)
        assert report.cleared is not None
        book = {str(o.participant) for o in report.cleared.book.orders}
        assert target not in book
        assert book, "the others still trade"
        assert any(
            "out of the market" in s and "inverter firmware update" in s
            for s in report.cleared.skipped
        )
        assert _participants_in_book(rt, 2) >= {target}  # the exclusion has ended

        controls.pause("storm warning", by=OPERATOR, at=rt.boundary(2))
        report = rt.tick(3)
        assert report.cleared is not None
        assert report.cleared.book.orders == ()
        assert any("market paused" in s for s in report.cleared.skipped)
        rt.tick(4, clear_next=False)  # intervals 1-3 end: settled and recorded

        records = {r["interval_id"]: r["record"] for r in rt.store.audit_records()}
        excluded = records[int(start.timestamp())]["controls"]
        assert [e["target"] for e in excluded["exclusions"]] == [target]
        assert excluded["paused"] is None
        paused = records[int(rt.boundary(3).timestamp())]["controls"]
        assert paused["paused"]["reason"] == "storm warning"
        none = {"paused": None, "exclusions": []}
        assert records[int(rt.boundary(0).timestamp())]["controls"] == none  # none taken yet
        assert rt.verify()["problems"] == []

        # `peergrid run` over the same database (a new runtime) replays the pause
        with build_runtime(rt.site, devices=False, chain=False) as again:
            assert again.cycle.controls is not None
            in_force = again.cycle.controls.in_force(Interval.from_id(
                int(rt.boundary(5).timestamp()), rt.site.interval_s))  # fmt: skip
            assert in_force.paused is not None
            assert in_force.paused.reason == "storm warning"


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_without_the_controls_wired_the_excluded_orders_trade(tmp_path: Path) -> None:
    with demo_runtime(tmp_path) as rt:
        rt.cycle.controls = None  # the fault: the cycle without the operator's controls
        before = _participants_in_book(rt, 0)
        target = sorted(before)[0]
        controls = MarketControls(
            participants=frozenset(p.id for p in rt.site.participants),
            devices=frozenset(),
            buses=frozenset(),
            log=rt.store,
        )
        controls.exclude(
            TargetKind.PARTICIPANT,
            target,
            start=rt.boundary(1),
            end=rt.boundary(2),
            reason="x",
            by=OPERATOR,
            at=rt.boundary(0),
        )
        assert target in _participants_in_book(rt, 1)  # rt.cycle.controls is None
