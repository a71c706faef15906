"""``peergrid demo``'s community vote: the members raise the reward, the chain mints at it.

Real everything (simulators, the embedded chain and anvil, the store). The demo deploys the
community's contracts, hands the site's over, and halfway through holds one vote; the
intervals settled after it must mint at the voted rate, and the operator's own attempt to set
the rate must be refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.chain.backends import AnvilNode
from controller.cli import main
from controller.demo import format_summary, run_demo
from controller.demo_vote import NEW_REWARD_RATE
from controller.store import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.mark.parametrize("chain", ["embedded", "anvil"])
def test_the_members_vote_and_the_new_reward_rate_applies(tmp_path: Path, chain: str) -> None:
    report = run_demo(intervals=4, out_dir=tmp_path, chain=chain, front_door=False)
    vote = report["community_vote"]
    assert vote is not None
    assert vote["state"] == "executed"
    assert vote["rate_after"] == NEW_REWARD_RATE != vote["rate_before"]
    assert (vote["for"], vote["against"], vote["abstain"], vote["members"]) == (6, 2, 1, 10)
    assert vote["relayed"] == 4
    assert "missing role" in vote["admin_refused"]
    # settled before the vote: the site's rate; after it: the voted one (the cap is far off)
    assert vote["reward_per_kwh_before"] == pytest.approx(vote["rate_before"], rel=1e-3)
    assert vote["reward_per_kwh_after"] == pytest.approx(NEW_REWARD_RATE, rel=1e-3)
    assert [r["after_vote"] for r in report["intervals"]] == [False, True, True, True]
    assert report["all_settled"]
    assert report["audit"]["verified"] == report["audit"]["records"] == 4
    assert "community vote #1" in format_summary(report)
    # the fee applies to intervals cleared after the vote (2 and 3), the reward rate to
    # settlements after it (intervals 1-3)
    assert vote["fee_intervals"] == 2
    assert vote["fee_units"] > 0


def test_audit_verify_reads_the_registry_each_record_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An auditor with the database and a node: ``peergrid audit verify --rpc --settlement``
    checks every record's governed terms against the registry the record names."""
    report = run_demo(intervals=4, out_dir=tmp_path, chain="anvil", front_door=False)
    db = f"sqlite:///{(tmp_path / 'peergrid-demo.sqlite').as_posix()}"
    settlement = report["contracts"]["settlement"]
    with AnvilNode(state_path=tmp_path / "anvil-state.json") as node:
        argv = ["audit", "verify", "--db", db, "--rpc", node.url, "--settlement", settlement]
        assert main([*argv, "--no-reclear", "--json"]) == 0
        verified = json.loads(capsys.readouterr().out)
        assert verified["problems"] == []
        # a record whose fee was lowered after the fact is caught
        store = Store(db)
        row = store.audit_records()[-1]
        record = row["record"]
        record["params"]["governance"]["values"]["community_fee_bps"]["value"] = 0
        store.save_audit(int(row["interval_id"]), record)
        store.close()
        assert main([*argv, "--no-reclear", "--json"]) == 1
        problems = json.loads(capsys.readouterr().out)["problems"]
        assert any("governance: the registry at block" in p for p in problems)
