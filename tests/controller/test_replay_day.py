"""Replay: one day of the demo site re-verified by a second process, from the database and
the chain alone (issue 11, "Reproducible").

The first process (this test) runs the demo runtime for a whole day, 96 fifteen-minute
intervals from 2026-06-21T00:00Z, on an anvil node whose state file persists
(:func:`controller.demo.demo_runtime` with ``chain="anvil"``): every interval is read, cleared,
AC-checked, written, metered, settled on-chain and recorded. Then the demo's folder is copied
(database and anvil state) and *deleted*, a fresh anvil node is started from the copied state
(the chain, as an auditor reaches it: by URL), and a second process runs

    peergrid audit verify --db sqlite:///COPY --rpc URL --settlement ADDRESS --json

with no site file, in an empty folder. It must find all 96 records verified, every one
re-cleared from its recorded book, parameters and grid, and the chain's 96 settlements matching
the records both ways: 0 differences.

A second test tampers with a copy (one record's price, one row of the raw readings table, one
deleted audit record) and shows the same harness names each tampered interval.

Cost: on an idle 2-core machine the day takes about 1-2 s per interval (most of a tick is
the cycle's escrow reads over JSON-RPC) and the verify well under 1 s per interval; on the
shared machine of 2026-12-04 (load 10 on 2 cores) the whole module took over 20 minutes, hence
the generous timeouts. ``-s`` prints the times.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.chain.backends import AnvilNode
from controller.demo import demo_runtime
from market.domain import utc_label

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    # A day's run and its re-verification take ~10 min on this 2-core machine: beyond the CI
    # budget while issue 11 makes verify faster. Run it with PEERGRID_REPLAY_DAY=1.
    pytest.mark.skipif(
        os.environ.get("PEERGRID_REPLAY_DAY") != "1", reason="set PEERGRID_REPLAY_DAY=1"
    ),
]

DAY_START = datetime(2026, 6, 21, 0, 0, tzinfo=UTC)
INTERVALS = 96  # one day of 15-minute intervals
VERIFY_TIMEOUT_S = 2400.0  # generous: on a loaded 2-core machine this took > 10 min


@dataclass(frozen=True)
class DayRun:
    """What the first process leaves for the auditor: copies only (the originals are gone)."""

    folder: Path
    database: Path
    state: Path
    settlement: str
    interval_ids: tuple[int, ...]
    run_s: float


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> DayRun:
    """Run the demo site for one day on anvil; leave copies of its database and chain state."""
    demo = tmp_path_factory.mktemp("demo")
    started = time.perf_counter()
    settled: list[int] = []
    with demo_runtime(demo, DAY_START, "anvil") as rt:
        settlement = str(rt.client.settlement.address)
        for k in range(INTERVALS + 1):
            report = rt.tick(k, clear_next=k < INTERVALS)
            if report.settled is not None:
                assert report.settled.outcome is not None, report.settled.error
                settled.append(report.settled.interval.interval_id)
    # leaving the runtime stopped the node, which wrote its state file
    run_s = time.perf_counter() - started
    assert len(settled) == INTERVALS
    auditor = tmp_path_factory.mktemp("auditor")
    for name in ("peergrid-demo.sqlite", "anvil-state.json"):
        shutil.copy2(demo / name, auditor / name)
    assert not (demo / "peergrid-demo.sqlite-wal").exists()
    shutil.rmtree(demo)  # the second process can only read the copies
    return DayRun(
        folder=auditor,
        database=auditor / "peergrid-demo.sqlite",
        state=auditor / "anvil-state.json",
        settlement=settlement,
        interval_ids=tuple(settled),
        run_s=run_s,
    )


def chain_node(state: Path) -> AnvilNode:
    """A fresh anvil node on a copy of the recorded chain state (the auditor's chain)."""
    copy = state.with_name(f"chain-{time.monotonic_ns()}.json")
    shutil.copy2(state, copy)  # the node rewrites its state file when it stops
    return AnvilNode(state_path=copy)


def verify(database: Path, node: AnvilNode, settlement: str, cwd: Path, *extra: str) -> Any:
    """``peergrid audit verify --db ... --rpc ... --settlement ... --json`` in a second process.

    Returns
    -------
    tuple
        (exit code, the JSON summary, wall time [s]).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERGRID_OPERATOR")}
    argv = [
        sys.executable,
        "-m",
        "controller",
        "audit",
        "verify",
        "--db",
        f"sqlite:///{database.as_posix()}",
        "--rpc",
        node.url,
        "--settlement",
        settlement,
        "--json",
        *extra,
    ]
    started = time.perf_counter()
    proc = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        argv,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=VERIFY_TIMEOUT_S,
        check=False,
    )
    wall = time.perf_counter() - started
    assert proc.stdout.strip(), f"verify printed nothing (exit {proc.returncode}): {proc.stderr}"
    return proc.returncode, json.loads(proc.stdout), wall


@pytest.fixture
def empty_cwd(tmp_path: Path) -> Path:
    """An empty working folder: no site file, no database to stumble on."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return cwd


def test_a_day_re_verifies_from_the_database_and_the_chain_alone(
    day: DayRun, empty_cwd: Path
) -> None:
    records = _records(day.database)
    assert sorted(records) == sorted(day.interval_ids)
    for interval_id, record in records.items():
        # anchored records: the re-clear takes everything from the record and the store
        missing = {"book", "result", "settlement", "params", "grid_hash"} - set(record)
        assert not missing, f"{utc_label(interval_id)}: record lacks {sorted(missing)}"
    with chain_node(day.state) as node:
        code, summary, wall = verify(day.database, node, day.settlement, empty_cwd)
    print(
        f"\nreplay: {INTERVALS} intervals run in {day.run_s:.1f} s "
        f"({day.run_s / INTERVALS:.2f} s/interval); second-process verify {wall:.1f} s "
        f"({wall / INTERVALS:.2f} s/interval); accepted outcomes: {summary.get('accepted')}"
    )
    assert summary["problems"] == [], summary["problems"][:10]
    assert code == 0
    assert summary["records"] == INTERVALS
    assert summary["verified"] == INTERVALS
    assert summary["chain_checked"] is True
    chain = summary["chain"]
    assert chain["settled_on_chain"] == INTERVALS
    assert chain["recorded_and_settled"] == INTERVALS
    assert chain["pending"] == []
    assert chain["mismatches"] == []
    assert "re-cleared" in summary["note"]
    assert list(empty_cwd.iterdir()) == [], "verify wrote into its working folder"


def test_the_replay_harness_names_each_tampered_interval(
    day: DayRun, tmp_path: Path, empty_cwd: Path
) -> None:
    tampered = tmp_path / "tampered.sqlite"
    shutil.copy2(day.database, tampered)
    ids = sorted(day.interval_ids)
    priced, read, dropped = ids[40], ids[50], ids[-1]
    with sqlite3.connect(tampered) as db:
        # 1. a price in one stored record
        (text,) = db.execute("SELECT record FROM audit WHERE interval_id = ?", (priced,)).fetchone()
        record = json.loads(text)
        prices = record["result"]["prices"]
        bus = sorted(prices)[0]
        prices[bus] += 1
        db.execute(
            "UPDATE audit SET record = ? WHERE interval_id = ?", (json.dumps(record), priced)
        )
        # 2. one row of the raw readings table, at the end boundary of an interval
        end = read + record["length_s"]
        changed = db.execute(
            "UPDATE readings SET import_wh_total = import_wh_total + 7 WHERE id = "
            "(SELECT MIN(id) FROM readings WHERE boundary = ?)",
            (end,),
        ).rowcount
        assert changed == 1
        # 3. a record removed: the chain still holds its settlement
        db.execute("DELETE FROM audit WHERE interval_id = ?", (dropped,))
    with chain_node(day.state) as node:
        code, summary, _ = verify(tampered, node, day.settlement, empty_cwd, "--no-reclear")
    assert code == 1
    problems = summary["problems"]
    for interval_id in (priced, read, dropped):
        label = utc_label(interval_id)
        assert any(label in p for p in problems), f"{label} not named in {problems}"
    assert any("no audit record" in p for p in problems if utc_label(dropped) in p)
    # the changed reading is also the start reading of the interval after ``read``
    named = {priced, read, read + record["length_s"], dropped}
    untouched = {utc_label(i) for i in ids} - {utc_label(i) for i in named}
    assert not [p for p in problems if any(label in p for label in untouched)]


def _records(database: Path) -> dict[int, dict[str, Any]]:
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT interval_id, record FROM audit").fetchall()
    return {int(i): json.loads(text) for i, text in rows}
