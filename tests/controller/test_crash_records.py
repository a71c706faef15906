"""No settled interval without its record: kills at every named crash point of the cycle.

The cycle runs on the demo's real Modbus simulators, SQLite and the embedded chain. A kill is
simulated in-process by making the crash hook (:mod:`controller.crash`) raise an exception
no handler of the cycle catches (a ``BaseException``), at one named point; then the process
"restarts" as ``peergrid run`` does (stale ticks closed, start-up reconciliation) and runs
on. One test kills a real process with the real hook (``PEERGRID_CRASH_AT``, ``SIGKILL``)
between the intent and the send and reads what it left in the database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, update

from controller import crash
from controller.audit import (
    ChainSettlement,
    chain_settlements,
    compare_with_chain,
    record_core,
    verify_records,
)
from controller.demo import DemoRuntime, demo_runtime
from controller.store import Store, audit
from market.canonical import content_hash

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TICK_POINTS = tuple(p for p in crash.POINTS if p != "startup_reconcile")


class Killed(BaseException):
    """The simulated ``kill -9``: nothing in the cycle catches a ``BaseException``."""


def arm(monkeypatch: pytest.MonkeyPatch, point: str) -> list[str]:
    """Make ``point`` kill (raise :class:`Killed`) the first time it is reached."""
    reached: list[str] = []

    def hook(name: str) -> None:
        if name == point and not reached:
            reached.append(name)
            raise Killed(name)

    for module in ("controller.cycle", "controller.wiring"):
        monkeypatch.setattr(f"{module}.crash_point", hook)
    return reached


def disarm(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("controller.cycle", "controller.wiring"):
        monkeypatch.setattr(f"{module}.crash_point", crash.crash_point)


def on_chain(rt: DemoRuntime) -> list[ChainSettlement]:
    return chain_settlements(rt.client.settled_events())


def check_exactly_once_with_records(rt: DemoRuntime, intervals: set[int]) -> None:
    """The chain and the database, read independently, agree (module docstring)."""
    events = on_chain(rt)
    ids = [e.interval_id for e in events]
    assert len(ids) == len(set(ids)), "an interval settled twice"
    rows = rt.store.audit_records()
    settlements = rt.store.settlement_rows()
    problems = compare_with_chain(rows, events, settlements)
    assert problems == [], "\n".join(problems)
    # every interval has one outcome (none left claimed), every outcome is settled on-chain
    statuses = {int(r["interval_id"]): r["status"] for r in rt.store.interval_rows()}
    assert set(statuses) == intervals
    assert "claimed" not in statuses.values()
    assert set(ids) == intervals
    assert all(s["state"] == "settled" for s in settlements)
    by_tx = {e.interval_id: e.tx_hash for e in events}
    for row in rows:
        record = row["record"]
        assert record["chain"]["tx_hash"] == by_tx[record["interval"]]
        assert row["record_hash"] == content_hash(record_core(record))
    assert verify_records(rows, settled_batch=rt.client.settled_batch)["problems"] == []
    assert rt.conservation()["holds"]


def restart(rt: DemoRuntime) -> None:
    """What ``peergrid run`` does at start-up: close stale ticks, reconcile settlements."""
    rt.store.close_stale_ticks("crashed (test)")
    rt.cycle.resume_pending()


def kill_and_restart_at_every_point(rt: DemoRuntime, monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """Tick on, killing one tick at each point (and one start-up), a normal tick between.

    After every normal tick the chain's settled intervals and the records are compared both
    ways. Returns the intervals that must have an outcome: every one cleared, except those
    of ticks killed before they claimed their interval (only their tick is recorded).
    """
    expected: set[int] = set()
    k = 0
    rt.tick(k)
    expected.add(int(rt.boundary(k).timestamp()))
    kills = [(point, None) for point in TICK_POINTS] + [("after_clear", "startup_reconcile")]
    for point, at_startup in kills:
        k += 1
        reached = arm(monkeypatch, point)
        with pytest.raises(Killed):
            rt.tick(k)
        assert reached == [point]
        if point not in {"after_read", "after_intent"}:
            expected.add(int(rt.boundary(k).timestamp()))
        if at_startup is not None:
            reached = arm(monkeypatch, at_startup)
            with pytest.raises(Killed):
                restart(rt)
            assert reached == [at_startup]
        disarm(monkeypatch)
        restart(rt)
        k += 1
        rt.tick(k)
        expected.add(int(rt.boundary(k).timestamp()))
        problems = compare_with_chain(
            rt.store.audit_records(), on_chain(rt), rt.store.settlement_rows()
        )
        if problems:
            return expected  # the caller's check names them
    rt.tick(k + 1, clear_next=False)
    return expected


def test_a_kill_at_each_point_leaves_every_settled_interval_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with demo_runtime(tmp_path) as rt:
        expected = kill_and_restart_at_every_point(rt, monkeypatch)
        assert len(expected) == 2 * (len(TICK_POINTS) + 1) + 1 - 2
        check_exactly_once_with_records(rt, expected)


def test_the_check_catches_a_record_written_after_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's fault (no record with the intent, none filled in later) fails the check."""
    real_intent = Store.record_intent

    def intent_without_record(
        self: Store,
        interval_id: int,
        batch_id: str,
        batch: Mapping[str, Any],
        record: Mapping[str, Any] | None = None,
    ) -> bool:
        del record
        return real_intent(self, interval_id, batch_id, batch)

    monkeypatch.setattr(Store, "record_intent", intent_without_record)
    monkeypatch.setattr("controller.cycle.Cycle.backfill_records", lambda self: [])
    with demo_runtime(tmp_path) as rt:
        expected = kill_and_restart_at_every_point(rt, monkeypatch)
        with pytest.raises(AssertionError, match="has no audit record"):
            check_exactly_once_with_records(rt, expected)


def test_the_record_is_committed_with_the_intent_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with demo_runtime(tmp_path) as rt:
        rt.tick(0)
        arm(monkeypatch, "after_send")
        block = rt.client.block_number()
        with pytest.raises(Killed):
            rt.tick(1)
        assert rt.client.block_number() == block + 1  # sent and mined; not recorded
        interval_id = int(rt.boundary(0).timestamp())
        assert rt.store.settlement(interval_id)["state"] == "intent"
        [row] = rt.store.audit_records()
        assert row["record"]["chain"] is None
        assert (
            row["record"]["settlement"]["batch_id"] == rt.store.settlement(interval_id)["batch_id"]
        )
        hash_before = row["record_hash"]
        # the chain already has it: verify names the receipt that is not recorded yet? No:
        # the record exists with the chain's batch id, so the two-way check is clean
        assert compare_with_chain([row], on_chain(rt)) == []
        disarm(monkeypatch)
        [resumed] = rt.cycle.resume_pending()
        assert resumed.outcome is not None
        assert resumed.outcome.status == "already_settled"
        [row] = rt.store.audit_records()
        assert row["record"]["chain"]["tx_hash"] == resumed.outcome.tx_hash
        assert row["record_hash"] == hash_before  # the core does not depend on the tx


def test_verify_finds_a_settled_interval_without_record_and_another_batch_id(
    tmp_path: Path,
) -> None:
    with demo_runtime(tmp_path) as rt:
        rt.tick(0)
        rt.tick(1)
        rt.tick(2, clear_next=False)
        events = on_chain(rt)
        first, second = sorted(e.interval_id for e in events)
        assert compare_with_chain(rt.store.audit_records(), events) == []

        with rt.store.engine.begin() as conn:
            conn.execute(delete(audit).where(audit.c.interval_id == first))
        problems = compare_with_chain(rt.store.audit_records(), events)
        assert len(problems) == 1
        assert f"(id {first}): settled on-chain" in problems[0]
        assert "has no audit record" in problems[0]

        [row] = rt.store.audit_records()
        record = row["record"]
        record["settlement"]["batch_id"] = "ab" * 32
        with rt.store.engine.begin() as conn:
            conn.execute(update(audit).where(audit.c.interval_id == second).values(record=record))
        problems = compare_with_chain(rt.store.audit_records(), events)
        assert any(f"(id {first})" in p and "no audit record" in p for p in problems)
        assert any(
            f"(id {second})" in p and f"batch id {'ab' * 32} is not the chain's" in p
            for p in problems
        ), problems

        # a record that claims a settlement the chain does not have
        claims = [{"record": {**record, "interval": second + 900}}]
        assert any(
            "but the chain has no settlement of it" in p for p in compare_with_chain(claims, events)
        )
        # start-up reconciliation writes the missing record again (from the stored data)
        assert rt.cycle.backfill_records() == [first]
        [back] = [r for r in rt.store.audit_records() if r["interval_id"] == first]
        assert back["record"]["chain"]["tx_hash"] == next(
            e.tx_hash for e in events if e.interval_id == first
        )
        assert verify_records([back], settled_batch=rt.client.settled_batch)["problems"] == []


DRIVER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from controller.demo import demo_runtime

    with demo_runtime(Path(sys.argv[1])) as rt:
        rt.tick(0)
        os.environ["PEERGRID_CRASH_AT"] = "after_intent"
        rt.tick(1)
    print("survived")
    """
)


def test_a_real_sigkill_between_intent_and_send_leaves_the_record(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != crash.ENV}
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", DRIVER, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr[-2000:])
    assert "survived" not in done.stdout
    store = Store(f"sqlite:///{(tmp_path / 'peergrid-demo.sqlite').as_posix()}", create=False)
    try:
        [settlement] = store.settlement_rows()
        assert settlement["state"] == "intent"
        assert settlement["tx_hash"] is None
        [row] = store.audit_records()
        assert row["interval_id"] == settlement["interval_id"]
        assert row["record"]["settlement"]["batch_id"] == settlement["batch_id"]
        assert row["record"]["chain"] is None
        summary = verify_records([row])
        assert summary["problems"] == [], summary
    finally:
        store.close()
