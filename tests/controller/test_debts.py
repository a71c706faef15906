"""No batch blocked by one participant: debits capped at available escrow, debts carried.

The integration tests run the demo site's whole cycle (loopback Modbus simulators, SQLite)
on the embedded py-evm chain and on a real anvil node. ``frank`` (a consumer) withdraws all
but 0.001 token of his escrow before the first interval, so his metered consumption costs far
more than he has. Without the cap the contract reverts the whole interval, for everyone, tick
after tick (shown on the chain directly); with it the interval settles, the others are paid,
his shortfall is a debt that COMMUNITY fronted, shown by ``peergrid debts`` and the run
summary, and collected once he deposits again.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

import controller
from adapters.chain import derive_account
from adapters.chain.encoding import build_entries
from adapters.chain.node import REVERT_ERRORS, revert_reason
from adapters.chain.settlement import on_chain_batch
from controller import cycle as cycle_module
from controller.cli import main
from controller.demo import DemoRuntime, demo_runtime, format_table, row_of
from controller.runner import summary
from controller.store import BASELINE_REVISION, MIGRATIONS, Store, head_revision
from market.domain import COMMUNITY, GRID, ParticipantId, SettlementBatch
from market.units import format_tokens

DEMO_SITE = Path(controller.__file__).parent / "sites" / "demo.toml"
FIXTURE = Path(__file__).parents[1] / "data" / "store_v0_1_0.sqlite"
FRANK = ParticipantId("frank")
LEFT = 1_000  # frank's escrow after his withdrawal [token units]: 0.001 token


def url(path: Path) -> str:
    return f"sqlite:///{path.as_posix()}"


# -- the store and the migration ---------------------------------------------------------------


def intent(interval_id: int, debts: list[list[Any]]) -> dict[str, Any]:
    """A stored batch form with just what the store reads."""
    return {"batch_id": f"{interval_id:064x}", "amounts": [], "debts": debts}


def test_debts_are_recorded_with_the_intent_and_the_latest_row_is_outstanding(
    tmp_path: Path,
) -> None:
    store = Store(url(tmp_path / "db.sqlite"))
    assert store.record_intent(900, f"{900:064x}", intent(900, [["alice", 0, 700]]))
    assert store.outstanding_debts() == {"alice": 700}
    assert store.record_intent(1800, f"{1800:064x}", intent(1800, [["alice", 700, 0]]))
    assert store.record_intent(2700, f"{2700:064x}", intent(2700, [["GRID", 0, -5], ["bob", 0, 3]]))
    assert store.outstanding_debts() == {"GRID": -5, "bob": 3}  # alice paid in full
    assert [(r["interval_id"], r["balance_after"]) for r in store.debt_rows("alice")] == [
        (900, 700),
        (1800, 0),
    ]
    # a second intent for an interval writes nothing, its debts neither (one transaction)
    assert not store.record_intent(2700, f"{9:064x}", intent(2700, [["carol", 0, 1]]))
    assert "carol" not in store.outstanding_debts()
    store.close()


def test_a_database_at_0002_is_upgraded_to_0003_without_losing_a_row(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    shutil.copyfile(FIXTURE, path)
    engine = create_engine(url(path))
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.stamp(config, BASELINE_REVISION)
        command.upgrade(config, "0002")
    engine.dispose()
    tables = ("intervals", "readings", "settlements", "audit", "ticks", "chain_nonces")

    def rows() -> dict[str, list[Any]]:
        with closing(sqlite3.connect(path)) as conn:
            return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}  # noqa: S608

    before = rows()
    store = Store(url(path))
    assert store.revision == head_revision()
    assert store.outstanding_debts() == {}
    store.close()
    after = rows()
    # 0008 added three columns to readings, last and NULL for the rows already there
    width = len(before["readings"][0])
    assert all(all(v is None for v in r[width:]) for r in after["readings"])
    after["readings"] = [r[:width] for r in after["readings"]]
    assert after == before
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM debts").fetchone() == (0,)


# -- the command line ----------------------------------------------------------------------------


def test_peergrid_debts_shows_the_operator_and_a_participant_their_balances(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = url(tmp_path / "db.sqlite")
    store = Store(db)
    store.record_intent(
        1_782_027_000, "a" * 64, intent(0, [["GRID", 0, -250_000], ["frank", 0, 1_500_000]])
    )
    store.record_intent(1_782_027_900, "b" * 64, intent(0, [["frank", 1_500_000, 400_000]]))
    store.close()

    assert main(["debts", "--site", str(DEMO_SITE), "--db", db]) == 0
    out = capsys.readouterr().out
    assert "frank" in out
    assert "owes COMMUNITY 0.400000" in out
    assert "is owed 0.250000 by COMMUNITY" in out

    assert main(["debts", "--site", str(DEMO_SITE), "--db", db, "--participant", "frank"]) == 0
    out = capsys.readouterr().out
    assert "interval 2026-06-21T07:30Z (id 1782027000): 0.000000 -> 1.500000" in out
    assert "interval 2026-06-21T07:45Z (id 1782027900): 1.500000 -> 0.400000" in out

    assert main(["debts", "--site", str(DEMO_SITE), "--db", db, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["balances"] == [
        {"account": "GRID", "balance": -250_000, "meaning": "is owed 0.250000 by COMMUNITY"},
        {"account": "frank", "balance": 400_000, "meaning": "owes COMMUNITY 0.400000"},
    ]
    assert (doc["total_owed"], doc["total_withheld"]) == (400_000, 250_000)

    assert main(["debts", "--site", str(DEMO_SITE), "--db", db, "--participant", "mallory"]) == 2
    assert "not a participant" in capsys.readouterr().err
    missing = url(tmp_path / "none.sqlite")
    assert main(["debts", "--site", str(DEMO_SITE), "--db", missing]) == 2
    assert not (tmp_path / "none.sqlite").exists()


# -- the whole cycle on a chain ---------------------------------------------------------------


@pytest.fixture(params=["embedded", "anvil"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DemoRuntime]:
    """The demo on the parametrised chain, frank left with 0.001 token of escrow."""
    with demo_runtime(tmp_path, chain=request.param) as rt:
        frank = derive_account(FRANK)
        escrow = int(rt.client.escrow_balance(frank.address))
        rt.client.request_withdrawal(frank, escrow - LEFT)
        rt.client.withdraw(frank)
        assert rt.client.escrow_balance(frank.address) == LEFT
        yield rt


def escrows(rt: DemoRuntime) -> dict[str, int]:
    return {b["account"]: int(b["escrow"]) for b in rt.balances()}


def uncapped(batch: SettlementBatch) -> dict[str, int]:
    """The amounts the batch had before debts were applied (``final - (after - before)``)."""
    amounts = {str(p): int(a) for p, a in batch.amounts}
    for d in batch.debts:
        amounts[d.account] = amounts.get(d.account, 0) - (d.after - d.before)
        amounts[COMMUNITY] = amounts.get(COMMUNITY, 0) - (d.before - d.after)
    return {p: a for p, a in amounts.items() if a}


def assert_paid_as_batch(
    before: dict[str, int], after: dict[str, int], batch: SettlementBatch
) -> None:
    amounts = {str(p): int(a) for p, a in batch.amounts}
    for account, escrow in before.items():
        assert after[account] - escrow == amounts.get(account, 0), account


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_participant_who_cannot_pay_does_not_block_the_interval(
    runtime: DemoRuntime, capsys: pytest.CaptureFixture[str]
) -> None:
    rt = runtime
    rt.tick(0)
    before = escrows(rt)
    report = rt.tick(1)

    settled = report.settled
    assert settled is not None
    assert settled.outcome is not None, settled.error  # the interval settled, for everyone
    batch = settled.batch
    assert batch is not None
    frank_line = next(ln for ln in batch.lines if ln.participant == FRANK)
    owed = -frank_line.net_amount
    assert owed > LEFT  # his consumption cost more than he had
    (debt,) = batch.debts
    assert (debt.account, debt.before, debt.after) == (FRANK, 0, owed - LEFT)
    after = escrows(rt)
    assert after[FRANK] == 0  # he paid all he had, not more
    assert_paid_as_batch(before, after, batch)  # every other account moved as the batch says
    plain = uncapped(batch)
    for line in batch.lines:  # the others were paid (or charged) in full
        if line.participant != FRANK:
            assert dict(batch.amounts).get(line.participant, 0) == line.net_amount
    assert dict(batch.amounts)[GRID] == plain[GRID]  # the grid is paid for his energy
    assert dict(batch.amounts).get(COMMUNITY, 0) == plain.get(COMMUNITY, 0) - debt.after
    assert sum(a for _, a in batch.amounts) == 0

    # recorded and shown: store, run summary, CLI
    assert rt.store.outstanding_debts() == {FRANK: owed - LEFT}
    assert "carried balances (+ = owes COMMUNITY): frank 0.000000 -> " in summary(report)
    db = rt.site.database
    assert main(["debts", "--site", str(DEMO_SITE), "--db", db, "--participant", "frank"]) == 0
    assert f"owes COMMUNITY {format_tokens(owed - LEFT)}" in capsys.readouterr().out
    row = row_of(report, {}, store=rt.store)
    assert row is not None
    assert row["debts"] == [[FRANK, 0, owed - LEFT]]
    table = format_table(
        {
            "intervals": [row],
            "debts": rt.store.outstanding_debts(),
            "balances": [],
            "conservation": rt.conservation(),
            "audit": {"records": 0, "verified": 0, "problems": []},
            "wall_s": 0,
            "out_dir": "-",
        }
    )
    assert f"frank 0.000000 -> {format_tokens(owed - LEFT)}" in table
    assert f"outstanding: frank {format_tokens(owed - LEFT)}" in table

    # frank deposits again: the next batch collects his debt first, to the unit
    frank = derive_account(FRANK)
    rt.client.deposit(frank, 15_000_000)
    before = escrows(rt)
    report = rt.tick(2, clear_next=False)
    settled = report.settled
    assert settled is not None
    assert settled.outcome is not None, settled.error
    batch = settled.batch
    assert batch is not None
    (collected,) = [d for d in batch.debts if d.account == FRANK]
    assert (collected.before, collected.after) == (owed - LEFT, 0)
    frank_line = next(ln for ln in batch.lines if ln.participant == FRANK)
    assert dict(batch.amounts)[FRANK] == frank_line.net_amount - (owed - LEFT)
    assert_paid_as_batch(before, escrows(rt), batch)
    assert rt.store.outstanding_debts() == {}

    assert rt.conservation()["holds"]
    audit = rt.verify()  # the batch ids (debts included) match the chain's
    assert audit["problems"] == []
    assert audit["verified"] == 2


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_without_the_cap_the_contract_reverts_the_interval_for_everyone(
    runtime: DemoRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault the cap removes: the uncapped batch is refused on-chain, tick after tick."""
    rt = runtime
    monkeypatch.setattr(cycle_module, "apply_debts", lambda batch, _available, _owed: batch)
    rt.tick(0)
    before = escrows(rt)
    report = rt.tick(1)
    settled = report.settled
    assert settled is not None
    assert settled.outcome is None
    assert "escrow" in settled.error
    batch = settled.batch
    assert batch is not None
    assert not batch.debts
    assert escrows(rt) == before  # nobody was paid

    # on the chain itself, not only the client's pre-check: settle() reverts
    translated = on_chain_batch(batch, rt.cycle.settler.accounts, with_rewards=True)
    states = rt.client.account_states(translated.accounts)
    entries = build_entries(
        {a: s.index for a, s in states.items()}, translated.transfers, translated.rewards
    )
    call = rt.client.settlement.functions.settle(
        translated.interval_id,
        translated.batch_id,
        entries,
        translated.trades_root,
        translated.readings_root,
    )
    with pytest.raises(REVERT_ERRORS) as info:
        call.call({"from": rt.client.operator.address})
    assert revert_reason(info.value) == "settlement: insufficient escrow"

    report = rt.tick(2, clear_next=False)  # the next tick: still blocked, and so is the next
    assert all(s.outcome is None for s in report.settlements)
    assert len(report.settlements) == 2
    assert escrows(rt) == before


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_when_community_cannot_front_the_shortfall_the_creditors_wait_and_are_paid_later(
    tmp_path: Path,
) -> None:
    """Rule 9 on the embedded chain: COMMUNITY has no escrow either.

    The interval still settles; what frank cannot pay is withheld from the accounts the batch
    credits (pro rata), recorded as COMMUNITY owing them, and paid by the next batch once
    COMMUNITY has funds again.
    """
    with demo_runtime(tmp_path / "rt") as rt:
        for label, keep in ((FRANK, LEFT), (COMMUNITY, 0)):
            account = derive_account(label)
            escrow = int(rt.client.escrow_balance(account.address))
            rt.client.request_withdrawal(account, escrow - keep)
            rt.client.withdraw(account)
        rt.tick(0)
        before = escrows(rt)
        report = rt.tick(1)
        settled = report.settled
        assert settled is not None
        assert settled.outcome is not None, settled.error
        batch = settled.batch
        assert batch is not None
        changes = {d.account: d.after for d in batch.debts}
        frank_owes = changes.pop(FRANK)
        assert frank_owes > 0
        assert changes, "some credits were withheld"
        assert all(after < 0 for after in changes.values())
        withheld = -sum(changes.values())
        assert dict(batch.amounts).get(COMMUNITY, 0) == 0  # it paid all it had: nothing
        assert withheld == frank_owes - uncapped(batch).get(COMMUNITY, 0)
        for line in batch.lines:  # a withheld participant got its credit less the withheld part
            if line.participant != FRANK:
                expected = line.net_amount + changes.get(line.participant, 0)
                assert dict(batch.amounts).get(line.participant, 0) == expected
        assert_paid_as_batch(before, escrows(rt), batch)
        outstanding = rt.store.outstanding_debts()
        assert outstanding == {FRANK: frank_owes, **changes}

        # COMMUNITY is funded again: the next batch pays what it owes, and fronts frank again
        rt.client.deposit(derive_account(COMMUNITY), 50_000_000)
        report = rt.tick(2, clear_next=False)
        settled = report.settled
        assert settled is not None
        assert settled.outcome is not None, settled.error
        batch = settled.batch
        assert batch is not None
        paid = {d.account: (d.before, d.after) for d in batch.debts}
        for account, after in changes.items():
            assert paid[account] == (after, 0), account
        assert paid[FRANK][0] == frank_owes
        assert paid[FRANK][1] > frank_owes  # still nothing in escrow: his new debit is carried
        assert rt.store.outstanding_debts() == {FRANK: paid[FRANK][1]}
        assert rt.conservation()["holds"]
        assert rt.verify()["problems"] == []
