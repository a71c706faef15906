"""Exactly-once, proven on the real controller: ``kill -9`` of ``peergrid run`` on anvil.

One anvil node (started here), one site (``peergrid chain deploy`` as a user runs it; SQLite;
three Modbus simulators on 127.0.0.1 whose clocks follow the wall clock) and the controller
as a process, ``peergrid -v run --site site.toml --dev-interval-s 4``:

1. **every named point**: one run per point of :data:`controller.crash.POINTS`, armed with
   ``PEERGRID_CRASH_AT=<point>``: the process kills itself with ``SIGKILL`` when it gets
   there (a fresh ``python -m controller`` process each time); the next run starts on what
   it left. Right after each death the database and the chain must show that point
   (``_evidence``: e.g. ``after_send`` leaves an interval settled on-chain whose row is still
   an intent; ``after_clear`` a claimed interval without a result);
2. **random moments**: at least :data:`RANDOM_KILLS` runs killed by the test with
   ``SIGKILL`` after a random delay (from the start of the process: during start-up, while
   reconciling, inside a tick or between ticks). These processes are forked from a zygote
   that imported the controller once (:class:`killharness.Zygote`) and run the same
   ``controller.cli.main``, so a kill does not mostly land in Python's 10 s of imports;
3. **recovery**: a last run, not armed, until every ended interval is settled, stopped with
   Ctrl-C (SIGINT) just after a tick.

Then :func:`killharness.check_exactly_once` reads the chain (``Settled`` events, the
operator's transactions from the blocks, receipts, the node's nonces) and the database
(``sqlite3``, read-only) independently and lists every problem; ``peergrid audit verify`` runs
as a process. The table of runs (point or moment x kills x outcome) is printed (``pytest
-s``). The checker can fail: ``test_the_checker_reports_a_damaged_database`` damages a copy
of the database five ways, ``test_the_checker_reports_a_stray_operator_transaction`` sends a
reverting operator transaction on the campaign's chain (then reverts the chain to its
snapshot), and ``test_audit_verify_reports_a_missing_record`` runs ``peergrid audit verify``
on a copy that lost one record.

Wall time on a 2-core machine: 2.9 min when it is quiet, 5.9 min when it is shared with other
test runs (load 7-9); the imports of the 13 fresh processes (9 points, recovery, deploy, two
verifies) dominate. Every wait polls a condition with a generous timeout; no step assumes the
machine's speed.

Knobs (environment): ``PEERGRID_KILLTEST_INTERVAL_S`` (default 4 [s]),
``PEERGRID_KILLTEST_RANDOM_KILLS`` (default 10), ``PEERGRID_KILLTEST_SEED`` (default fixed).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from killharness import (
    ControllerProcess,
    KillSite,
    RunRow,
    Simulators,
    Verdict,
    Zygote,
    audit_verify,
    check_exactly_once,
    format_table,
    make_site,
    read_only,
    snapshot,
    wait_until,
)

from adapters.chain.backends import AnvilNode
from controller.crash import POINTS

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

INTERVAL_S = int(os.environ.get("PEERGRID_KILLTEST_INTERVAL_S", "4"))
RANDOM_KILLS = int(os.environ.get("PEERGRID_KILLTEST_RANDOM_KILLS", "10"))
SEED = int(os.environ.get("PEERGRID_KILLTEST_SEED", "20261204"))
START_S = 180.0
"""Longest a fresh controller process may take to start on a loaded machine [s]."""

ORDER = (
    "after_read",
    "after_clear",
    "after_save_result",
    "after_setpoints",
    "after_intent",
    "startup_reconcile",  # after_intent left an intent pending: the restart reconciles it
    "after_send",
    "after_confirm",
    "after_record",
)
"""The named points in the order the campaign arms them (each leaves work for the next)."""

SIGKILL = -signal.SIGKILL


@dataclass
class Campaign:
    site: KillSite
    rows: list[RunRow]
    verdict: Verdict
    verify_rc: int
    verify_doc: dict
    verify_err: str
    folder: Path


def _chain_settled(site: KillSite) -> int:
    return len(site.client().settled_events(0))


def _delta(before: dict, after: dict, chain_before: int, chain_after: int) -> str:
    """What a run changed, in words."""
    parts = []
    for outcome in sorted(set(before["ticks"]) | set(after["ticks"])):
        d = after["ticks"].get(outcome, 0) - before["ticks"].get(outcome, 0)
        if d:
            parts.append(f"tick {outcome} {d:+d}")
    for key in ("intervals", "settled", "audit"):
        d = after[key] - before[key]
        if d:
            parts.append(f"{key} {d:+d}")
    if chain_after != chain_before:
        parts.append(f"on-chain {chain_after - chain_before:+d}")
    parts.append(f"pending {after['pending']}")
    return ", ".join(parts)


def _phase(run: ControllerProcess) -> str:
    """Where the process was when it died, from its log (the scheduler logs each event's
    ``: running`` and ``: done`` at INFO)."""
    text = run.output()
    if ": running" not in text:
        return "start-up"
    started = text.count(": running")
    finished = text.count(": done")
    ticks = f"after {finished} tick(s)"
    return f"inside a tick, {ticks}" if started > finished else f"between ticks, {ticks}"


def _evidence(site: KillSite, point: str) -> tuple[bool, str]:
    """Whether the database and the chain show a death at ``point``, and what they show.

    Read right after the process died: the newest tick and interval, the settlements not
    yet recorded as settled, and the chain's settled intervals. ``after_save_result`` and
    ``after_setpoints`` look the same from here (the difference is in the devices).
    """
    with read_only(site.db) as conn:
        tick = conn.execute(
            "select boundary, outcome from ticks order by boundary desc limit 1"
        ).fetchone()
        newest = conn.execute(
            "select interval_id, status from intervals order by interval_id desc limit 1"
        ).fetchone()
        pending = {
            int(r[0])
            for r in conn.execute("select interval_id from settlements where state != 'settled'")
        }
        settled = {
            int(r[0])
            for r in conn.execute("select interval_id from settlements where state = 'settled'")
        }
    on_chain = {e.interval_id for e in site.client().settled_events(0)}
    running = tick is not None and tick[1] == "running"
    boundary = tick[0] if tick is not None else None
    ours = newest is not None and newest[0] == boundary
    sent = sorted(pending & on_chain)
    unsent = sorted(pending - on_chain)
    status = newest[1] if ours else None
    saved = (running and ours and status != "claimed", f"interval {boundary} '{status}' saved")
    sent_not_recorded = (bool(sent), f"{sent} on-chain, database 'intent'")
    rules = {
        "after_read": (running and not ours, f"tick {boundary} running, its interval not claimed"),
        "after_clear": (running and status == "claimed", f"interval {boundary} claimed, no result"),
        "after_save_result": saved,
        "after_setpoints": saved,
        "after_intent": (bool(unsent), f"intent {unsent} not sent"),
        "startup_reconcile": (
            bool(pending) and not running,
            f"pending {sorted(pending)} at start-up",
        ),
        "after_send": sent_not_recorded,
        "after_confirm": sent_not_recorded,
        "after_record": (
            bool(settled) and not sent,
            "every on-chain settlement recorded",
        ),
    }
    return rules.get(point, (False, f"no evidence rule for {point}"))


STARTED: list[ControllerProcess] = []
"""Every controller the module started (killed at the end if one still runs)."""


def _run(
    site: KillSite,
    log: Path,
    *,
    crash_at: str | None = None,
    zygote: Zygote | None = None,
) -> ControllerProcess:
    run = ControllerProcess(
        site=site, interval_s=INTERVAL_S, log=log, crash_at=crash_at, zygote=zygote
    )
    STARTED.append(run)
    return run.start()


def _ticks_ran(db: Path) -> int:
    return snapshot(db)["ticks"].get("ran", 0)


def _settled_up_to_date(db: Path) -> bool:
    """Nothing pending, nothing claimed behind the last tick, the last tick ran."""
    if not db.exists():
        return False
    with read_only(db) as conn:
        pending = conn.execute(
            "select count(*) from settlements where state != 'settled'"
        ).fetchone()[0]
        last = conn.execute("select max(boundary) from ticks").fetchone()[0]
        claimed = conn.execute(
            "select count(*) from intervals where status = 'claimed' and interval_id < ?",
            (last or 0,),
        ).fetchone()[0]
        last_outcome = conn.execute(
            "select outcome from ticks where boundary = ?", (last or 0,)
        ).fetchone()
    return pending == 0 and claimed == 0 and last_outcome is not None and last_outcome[0] == "ran"


def _settle_and_stop(site: KillSite, log: Path) -> tuple[ControllerProcess, str]:
    """The recovery run: until a tick ran and all is settled; Ctrl-C right after a tick."""
    base = _ticks_ran(site.db)
    run = _run(site, log)
    wait_until(
        lambda: _ticks_ran(site.db) > base and _settled_up_to_date(site.db),
        START_S + 20 * INTERVAL_S,
        "the recovery run to settle every ended interval",
        poll=0.2,
    )
    seen = run.output().count("readings ok")
    wait_until(lambda: run.output().count("readings ok") > seen, 10 * INTERVAL_S + 60, "a tick")
    code = run.interrupt()
    return run, f"Ctrl-C after a tick, exit {code}"


@contextmanager
def _no_leftovers() -> Iterator[None]:
    """Kill (SIGKILL, by pid) any controller this module started that still runs."""
    try:
        yield
    finally:
        for run in STARTED:
            if run.returncode is None and run.pid and run.zygote is None:
                run.kill()


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    assert set(ORDER) == set(POINTS), f"arm every named point: {sorted(set(POINTS) ^ set(ORDER))}"
    folder = tmp_path_factory.mktemp("killsite")
    logs = folder / "logs"
    logs.mkdir()
    rng = random.Random(SEED)
    rows: list[RunRow] = []
    clock = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings[name] = round(now - clock, 1)
        clock = now

    with AnvilNode() as node, Simulators() as sims, _no_leftovers():
        site = make_site(folder, node.url, sims)
        lap("set-up")

        def record(kind: str, what: str, run: ControllerProcess, before: dict, c0: int) -> None:
            after = snapshot(site.db)
            outcome = _delta(before, after, c0, _chain_settled(site))
            if kind == "point":
                shown, evidence = _evidence(site, what)
                outcome = f"{'' if shown else 'NO EVIDENCE: '}{evidence}; {outcome}"
                if run.killed_by_test:
                    outcome = f"POINT NOT REACHED (killed by the test); {outcome}"
            elif kind == "random":
                outcome = f"{_phase(run)}: {outcome}"
            rows.append(RunRow(kind, what, run.returncode, run.alive_s, outcome))

        # 1. one fresh process per named point, armed to SIGKILL itself there
        for n, point in enumerate(ORDER):
            before, c0 = snapshot(site.db), _chain_settled(site)
            run = _run(site, logs / f"point-{n}-{point}.log", crash_at=point)
            if run.wait(START_S + 8 * INTERVAL_S) is None:
                run.kill()
            record("point", point, run, before, c0)
        lap("named points")

        # 2. random moments, forked from a zygote
        zygote = Zygote()
        try:
            for k in range(RANDOM_KILLS):
                before, c0 = snapshot(site.db), _chain_settled(site)
                delay = rng.uniform(0.05, 4.0 + 2.5 * INTERVAL_S)
                run = _run(site, logs / f"random-{k}.log", zygote=zygote)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and run.wait(0.05) is None:
                    pass
                run.kill()
                record("random", f"{delay:5.2f} s after start", run, before, c0)
        finally:
            for left in STARTED:  # a forked child still running (the loop failed)
                if left.zygote is zygote and left.returncode is None:
                    left.kill()
            zygote.close()
        lap("random kills")

        # 3. recovery: not armed, until everything ended is settled
        before, c0 = snapshot(site.db), _chain_settled(site)
        run, how = _settle_and_stop(site, logs / "final.log")
        after = snapshot(site.db)
        rows.append(
            RunRow(
                "final", "not armed", run.returncode, run.alive_s,
                f"{how}; {_delta(before, after, c0, _chain_settled(site))}",
            )
        )  # fmt: skip
        lap("recovery")

        verdict = check_exactly_once(site.db, site.client(), site.operator.address, INTERVAL_S)
        lap("checker")
        verify_rc, verify_doc, verify_err = audit_verify(site)
        lap("audit verify")
        print()
        print(f"kill campaign: {INTERVAL_S}-s intervals, seed {SEED}, logs in {logs}")
        print(format_table(rows))
        print(f"checker: {verdict.counts}")
        print(f"wall time [s]: {timings}")
        print(
            "checker problems: "
            + ("none" if verdict.ok else "\n  " + "\n  ".join(verdict.problems))
        )
        print(
            f"audit verify: exit {verify_rc}, "
            f"{ {k: verify_doc.get(k) for k in ('records', 'verified', 'problems')} }"
        )
        yield Campaign(site, rows, verdict, verify_rc, verify_doc, verify_err, folder)


def test_every_named_point_killed_the_real_controller(campaign: Campaign) -> None:
    points = [r for r in campaign.rows if r.kind == "point"]
    assert [r.what for r in points] == list(ORDER)
    for row in points:
        assert row.returncode == SIGKILL, row
        assert "NOT REACHED" not in row.outcome, row
        assert "NO EVIDENCE" not in row.outcome, row


def test_at_least_ten_random_kills(campaign: Campaign) -> None:
    kills = [r for r in campaign.rows if r.kind == "random" and r.returncode == SIGKILL]
    assert len(kills) >= min(RANDOM_KILLS, 10)


def test_every_interval_settled_exactly_once_with_its_record(campaign: Campaign) -> None:
    verdict = campaign.verdict
    assert verdict.ok, "\n".join(verdict.problems)
    counts = verdict.counts
    assert counts["settled_chain"] == counts["settled_db"] >= 3  # the campaign did settle
    assert counts["audit_records"] >= counts["settled_chain"]
    assert counts["operator_txs"] >= counts["settled_chain"]
    final = campaign.rows[-1]
    assert final.kind == "final"
    assert final.returncode == 0, final


def test_audit_verify_is_clean(campaign: Campaign) -> None:
    assert campaign.verify_rc == 0, campaign.verify_err
    assert campaign.verify_doc["chain_checked"] is True
    assert campaign.verify_doc["problems"] == []
    assert campaign.verify_doc["records"] >= campaign.verdict.counts["settled_chain"]


# ------------------------------------------------------------------------ the checker can fail


def _copy_db(src: Path, dst: Path) -> Path:
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.backup(target)
    return dst


def _settled_interval(db: Path) -> int:
    with read_only(db) as conn:
        row = conn.execute(
            "select interval_id from settlements where state = 'settled' order by interval_id"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _damage_audit(conn: sqlite3.Connection, i: int) -> None:
    conn.execute("delete from audit where interval_id = ?", (i,))


def _damage_state(conn: sqlite3.Connection, i: int) -> None:
    conn.execute("update settlements set state = 'intent' where interval_id = ?", (i,))


def _damage_tx(conn: sqlite3.Connection, i: int) -> None:
    conn.execute("update settlements set tx_hash = ? where interval_id = ?", ("0x" + "ab" * 32, i))


def _damage_tick(conn: sqlite3.Connection, i: int) -> None:
    conn.execute("update ticks set outcome = 'running' where boundary = ?", (i,))


def _damage_lost(conn: sqlite3.Connection, i: int) -> None:
    conn.execute("delete from settlements where interval_id = ?", (i,))


DAMAGES: dict[str, tuple[Callable[[sqlite3.Connection, int], None], str]] = {
    "audit record deleted": (_damage_audit, "settled without an audit record"),
    "settled row back to intent": (_damage_state, "database says 'intent'"),
    "wrong transaction recorded": (_damage_tx, "database has tx 0x" + "ab" * 32),
    "tick left running": (_damage_tick, "still 'running'"),
    "settlement row lost": (_damage_lost, "unknown to the database"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_the_checker_reports_a_damaged_database(
    campaign: Campaign, tmp_path: Path, damage: str
) -> None:
    """Damage a copy of the campaign's database one way; the checker names it."""
    db = _copy_db(campaign.site.db, tmp_path / "damaged.sqlite")
    interval = _settled_interval(db)
    apply, expected = DAMAGES[damage]
    with sqlite3.connect(db) as conn:
        apply(conn, interval)
    verdict = check_exactly_once(
        db, campaign.site.client(), campaign.site.operator.address, INTERVAL_S
    )
    assert not verdict.ok
    assert any(str(interval) in p and expected in p for p in verdict.problems), verdict.problems


def test_audit_verify_reports_a_missing_record(campaign: Campaign, tmp_path: Path) -> None:
    """``peergrid audit verify`` on a copy whose one settled interval lost its record fails."""
    db = _copy_db(campaign.site.db, tmp_path / "no-record.sqlite")
    interval = _settled_interval(db)
    with sqlite3.connect(db) as conn:
        _damage_audit(conn, interval)
    code, doc, err = audit_verify(campaign.site, db, reclear=False)
    assert code == 1, err
    assert any(str(interval) in str(p) for p in doc.get("problems", [])), doc


def test_the_checker_reports_a_stray_operator_transaction(campaign: Campaign) -> None:
    """On the campaign's chain (snapshot, then revert): a reverted operator transaction."""
    site = campaign.site
    w3 = site.client().w3
    snapshot_id = w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        operator = site.operator.address
        base_fee = w3.eth.get_block("latest")["baseFeePerGas"]
        signed = site.operator.sign_transaction(
            {
                "to": site.settlement,
                "value": 0,
                "data": "0x",  # the settlement contract has no fallback: this reverts
                "gas": 100_000,
                "nonce": w3.eth.get_transaction_count(operator),
                "chainId": w3.eth.chain_id,
                "maxFeePerGas": 2 * base_fee + 10**9,
                "maxPriorityFeePerGas": 10**9,
            }
        )
        sent = w3.eth.send_raw_transaction(signed.raw_transaction)
        assert w3.eth.wait_for_transaction_receipt(sent, timeout=60)["status"] == 0
        verdict = check_exactly_once(site.db, site.client(), operator, INTERVAL_S)
        assert any("reverted" in p for p in verdict.problems), verdict.problems
        assert any("persisted next nonce" in p for p in verdict.problems), verdict.problems
    finally:
        assert w3.provider.make_request("evm_revert", [snapshot_id])["result"] is True
    assert check_exactly_once(site.db, site.client(), site.operator.address, INTERVAL_S).ok
