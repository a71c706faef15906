"""Crash hooks, the grace window, the development interval, stale ticks and old records.

Pure functions are tested with given times (no wall clock); the crash hook kills a real
child process; stale ticks and records use the real SQLite store (and the database PeerGrid
0.1.0 wrote, ``tests/data/store_v0_1_0.sqlite``).
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import crash
from controller.audit import (
    ABANDONED,
    ChainSettlement,
    accepted_as_recorded,
    compare_with_chain,
    record_core,
    verify_records,
)
from controller.config import read_site
from controller.errors import ConfigError
from controller.runner import dev_interval
from controller.scheduler import GRACE_MAX_S, catch_up_boundary, grace_s
from controller.store import Store
from market.canonical import content_hash

DATA = Path(__file__).parents[1] / "data"
DEMO_SITE = Path(__file__).parents[2] / "controller" / "sites" / "demo.toml"
DAY_DIVISORS = [n for n in range(2, 86401) if 86400 % n == 0]


# -- crash hooks ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "armed"),
    [
        (None, None),
        ("", None),
        ("after_send", ("after_send", 1)),
        ("after_send:3", ("after_send", 3)),
        ("after_send:0", None),
        ("after_send:x", None),
        ("after_send:-1", None),
    ],
)
def test_the_variable_arms_a_point_and_a_count(
    value: str | None, armed: tuple[str, int] | None
) -> None:
    assert crash.armed(value) == armed


def test_every_named_point_is_documented() -> None:
    doc = crash.__doc__ or ""
    for point in crash.POINTS:
        assert f"``{point}``" in doc


def _run_points(env_value: str | None, *names: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != crash.ENV}
    if env_value is not None:
        env[crash.ENV] = env_value
    script = (
        "from controller.crash import crash_point\n"
        "import sys\n"
        f"for name in {list(names)!r}:\n"
        "    crash_point(name)\n"
        "    print('passed', name, flush=True)\n"
    )
    return subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_an_armed_point_kills_the_process_with_sigkill_at_its_nth_pass() -> None:
    done = _run_points("after_send:2", "after_read", "after_send", "after_read", "after_send")
    assert done.returncode == -signal.SIGKILL
    passed = done.stdout.splitlines()  # died at the second after_send
    assert passed == ["passed after_read", "passed after_send", "passed after_read"]


def test_an_unarmed_or_other_point_does_nothing() -> None:
    assert _run_points(None, "after_send").returncode == 0
    assert _run_points("after_record", "after_send", "after_read").returncode == 0


# -- grace window (pure) -------------------------------------------------------------------
def test_grace_is_a_quarter_interval_up_to_30_s() -> None:
    assert grace_s(900) == GRACE_MAX_S == 30.0
    assert grace_s(60) == 15.0
    assert grace_s(4) == 1.0


BOUNDARY = datetime(2026, 6, 21, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("late_s", "last_tick", "runs"),
    [
        (0.0, None, True),  # exactly at the boundary
        (3.0, None, True),  # restarted a few seconds after it
        (30.0, None, True),  # the edge of the window
        (30.001, None, False),  # too late: wait for the next boundary
        (3.0, int(BOUNDARY.timestamp()) - 900, True),  # the last tick was the one before
        (3.0, int(BOUNDARY.timestamp()), False),  # this boundary already ran (or crashed)
    ],
)
def test_catch_up_at_given_times(late_s: float, last_tick: int | None, runs: bool) -> None:
    now = BOUNDARY + timedelta(seconds=late_s)
    assert catch_up_boundary(now, 900, last_tick) == (BOUNDARY if runs else None)


@given(
    interval_s=st.sampled_from(DAY_DIVISORS),
    boundary_n=st.integers(min_value=0, max_value=10**6),
    late=st.floats(min_value=0, max_value=1, exclude_max=True),
    ran=st.booleans(),
)
def test_catch_up_runs_only_an_unrun_boundary_within_grace(
    interval_s: int, boundary_n: int, late: float, ran: bool
) -> None:
    boundary = datetime.fromtimestamp(1_700_006_400 + boundary_n * interval_s, UTC)
    late_s = min(int(late * interval_s * 1000), interval_s * 1000 - 1) / 1000  # [0, interval)
    now = boundary + timedelta(seconds=late_s)
    last = int(boundary.timestamp()) if ran else int(boundary.timestamp()) - interval_s
    got = catch_up_boundary(now, interval_s, last)
    if not ran and late_s <= grace_s(interval_s):
        assert got == boundary
    else:
        assert got is None


# -- development interval -----------------------------------------------------------------
def test_the_dev_interval_replaces_the_site_interval_and_clips_gate_closure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    site = read_site(DEMO_SITE)
    import dataclasses

    site = dataclasses.replace(site, gate_closure_s=300)
    dev = dev_interval(site, 4)
    assert (dev.interval_s, dev.gate_closure_s) == (4, 3)
    assert dev_interval(site, 600).gate_closure_s == 300
    assert "DEVELOPMENT SETTING" in caplog.text


@pytest.mark.parametrize("bad", [0, 1, 7, 86401])
def test_the_dev_interval_must_divide_a_day_and_be_at_least_2_s(bad: int) -> None:
    with pytest.raises(ConfigError, match="--dev-interval-s"):
        dev_interval(read_site(DEMO_SITE), bad)


def test_a_site_file_cannot_set_a_short_interval(tmp_path: Path) -> None:
    text = DEMO_SITE.read_text("utf-8")
    short = tmp_path / "short.toml"
    short.write_text(text.replace("interval_s = 900", "interval_s = 4"), "utf-8")
    with pytest.raises(ConfigError, match="interval_s"):
        read_site(short)
    keyed = tmp_path / "keyed.toml"
    keyed.write_text(text.replace("interval_s = 900", "dev_interval_s = 4"), "utf-8")
    with pytest.raises(ConfigError, match="dev_interval_s"):
        read_site(keyed)


# -- stale ticks ---------------------------------------------------------------------------
def test_stale_ticks_are_closed_as_crashed_and_nothing_else_changes(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{(tmp_path / 's.sqlite').as_posix()}")
    try:
        store.record_tick(100, "ran")
        store.record_tick(200, "running")
        store.record_tick(300, "missed", "controller not running at this boundary")
        store.record_tick(400, "running")
        assert store.close_stale_ticks("crashed: test") == [200, 400]
        rows = {r["boundary"]: (r["outcome"], r["detail"]) for r in store.tick_rows()}
        assert rows == {
            100: ("ran", ""),
            200: ("crashed", "crashed: test"),
            300: ("missed", "controller not running at this boundary"),
            400: ("crashed", "crashed: test"),
        }
        assert store.close_stale_ticks("again") == []
    finally:
        store.close()


# -- records of PeerGrid 0.1.0 and the record's core ----------------------------------------
@pytest.fixture
def old_store(tmp_path: Path) -> Store:
    shutil.copy(DATA / "store_v0_1_0.sqlite", tmp_path / "old.sqlite")
    return Store(f"sqlite:///{(tmp_path / 'old.sqlite').as_posix()}")


def test_records_of_an_old_database_still_verify(old_store: Store) -> None:
    rows = old_store.audit_records()
    assert len(rows) == 3
    assert all(r["record_hash"] == content_hash(r["record"]) for r in rows)  # hashed whole
    assert verify_records(rows)["problems"] == []
    # and its pending intent (one failed, one intent) is found by start-up reconciliation
    assert old_store.settled_without_record() == []
    old_store.close()


def test_the_record_hash_covers_the_core_not_the_receipt(old_store: Store) -> None:
    row = old_store.audit_records()[0]
    record = row["record"]
    digest = old_store.save_audit(row["interval_id"], record)
    assert digest == content_hash(record_core(record))
    old_store.mark_settled(
        row["interval_id"], tx_hash="0x" + "11" * 32, block_number=9, gas_used=1, status="x"
    )
    [again] = [r for r in old_store.audit_records() if r["interval_id"] == row["interval_id"]]
    assert again["record"]["chain"]["tx_hash"] == "0x" + "11" * 32
    assert again["record_hash"] == digest
    assert verify_records([again])["problems"] == []
    tampered = copy.deepcopy(again)
    tampered["record"]["site"] = "another site"
    assert any("record hash" in p for p in verify_records([tampered])["problems"])
    old_store.close()


def test_the_intent_and_its_record_are_one_transaction(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{(tmp_path / 's.sqlite').as_posix()}")
    try:
        batch = {"amounts": [["a", -1], ["b", 1]], "batch_id": "cd" * 32}
        assert store.record_intent(7, "cd" * 32, batch, {"interval": 7, "chain": None})
        assert [r["interval_id"] for r in store.audit_records()] == [7]
        # a second intent for the interval writes nothing, not even a record
        assert not store.record_intent(7, "ef" * 32, batch, {"interval": 7, "x": 1})
        assert [r["record"] for r in store.audit_records()] == [{"interval": 7, "chain": None}]
        store.mark_failed(7, "node away")
        assert store.audit_records()[0]["record"]["error"] == "node away"
    finally:
        store.close()


# -- two ways against the chain (pure) ------------------------------------------------------
def _record(interval: int, batch_id: str, tx: str | None = None) -> dict[str, object]:
    return {
        "record": {
            "interval": interval,
            "settlement": {"batch_id": batch_id, "trades_root": "t", "readings_root": "r"},
            "chain": None if tx is None else {"tx_hash": tx},
        }
    }


def _on_chain(interval: int, batch_id: str) -> ChainSettlement:
    return ChainSettlement(
        interval_id=interval,
        batch_id=batch_id,
        tx_hash="0xaa",
        block_number=5,
        trades_root="t",
        readings_root="r",
    )


def test_compare_with_chain_both_ways() -> None:
    records = [_record(900, "a1", "0x1"), _record(1800, "b2"), _record(2700, "c3", "0x3")]
    chain = [_on_chain(900, "a1"), _on_chain(1800, "XX"), _on_chain(3600, "d4")]
    rows = [{"interval_id": 4500, "state": "settled", "tx_hash": "0x5"}]
    problems = compare_with_chain(records, chain, rows)
    assert len(problems) == 4, problems
    assert "(id 1800): the record's batch id b2 is not the chain's XX" in problems[0]
    assert "(id 3600): settled on-chain (tx 0xaa, block 5) but has no audit record" in problems[1]
    assert "(id 2700): its record names tx 0x3, but the chain has no settlement" in problems[2]
    assert "(id 4500): the store marks it settled (tx 0x5)" in problems[3]
    # a pending record (no receipt, not on-chain) is no mismatch
    assert compare_with_chain([_record(1800, "b2")], []) == []
    # another root on-chain
    other = ChainSettlement(
        interval_id=900, batch_id="a1", tx_hash="", block_number=1, trades_root="z"
    )
    assert compare_with_chain([_record(900, "a1")], [other]) == [
        "interval 1970-01-01T00:15Z (id 900): the chain holds another trades root"
    ]


def test_an_abandoned_interval_is_accepted_as_recorded_and_nothing_else_is() -> None:
    """An interval a dead controller abandoned mid-clearing had no clearing to reproduce."""
    abandoned = {
        "interval": 1_782_000_000,
        "result": {"status": "solver_error", "reason": f"{ABANDONED} the controller stopped"},
    }
    assert "accepted as recorded: abandoned" in accepted_as_recorded(abandoned)
    other = {
        "interval": 1_782_000_000,
        "result": {"status": "solver_error", "reason": "HiGHS reported an error"},
    }
    assert accepted_as_recorded(other) == ""  # a real solver error is re-cleared and compared
    cleared = {"interval": 1_782_000_000, "result": {"status": "cleared", "reason": "abandoned:"}}
    assert accepted_as_recorded(cleared) == ""
