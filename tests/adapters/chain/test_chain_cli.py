"""``peergrid chain deploy|status|balances|settle-pending|verify-trade`` on anvil.

The commands are registered on a bare parser here (``controller.cli_chain.register``), as
``peergrid``'s own parser does. Every command starts anvil from the same state file and stops
it, so the chain outlives each command as it does for a user.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.chain import ChainClient, derive_account
from adapters.chain.backends import AnvilNode, rpc_web3
from controller import cli_chain
from controller.store import Store
from market.codec import batch_to_dict
from market.domain import (
    COMMUNITY,
    BusId,
    Interval,
    OrderId,
    ParticipantId,
    SettlementBatch,
    Trade,
    trade_to_dict,
)
from market.merkle import merkle_proof, merkle_root
from market.units import PricePerKwh, TokenUnits, Wh

pytestmark = pytest.mark.integration

INTERVAL = Interval(datetime(2026, 6, 21, 9, tzinfo=UTC))
SITE = """
[site]
name = "cli test"
grid = "cigre-lv"
interval_s = 900
database = "sqlite:///{db}"

[chain]
backend = "anvil"

[[participants]]
id = "alice"
bus = "Bus R11"

[[participants]]
id = "bob"
bus = "Bus R15"
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object]:
    parser = argparse.ArgumentParser(prog="peergrid")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_chain.register(sub)
    args = parser.parse_args(["chain", *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    data = json.loads(out) if "--json" in argv and out.strip() else out + err
    return code, data


def trades() -> list[Trade]:
    return [
        Trade(
            interval=INTERVAL,
            seller=ParticipantId("alice"),
            buyer=ParticipantId("bob"),
            seller_bus=BusId("Bus R11"),
            buyer_bus=BusId("Bus R15"),
            seller_order=OrderId(f"alice:sell:{i}"),
            buyer_order=OrderId(f"bob:buy:{i}"),
            energy_wh=Wh(400 + i),
            seller_price=PricePerKwh(150_000),
            buyer_price=PricePerKwh(150_000),
            buyer_amount=TokenUnits((400 + i) * 150),
            seller_amount=TokenUnits((400 + i) * 150),
        )
        for i in range(3)
    ]


def stored_result(ts: list[Trade]) -> dict[str, object]:
    out = []
    for t in ts:
        d = trade_to_dict(t)
        d.pop("trade_id")
        d.pop("interval")
        out.append(d)
    return {"status": "cleared", "reason": "", "orders": [], "trades": out}


@pytest.fixture
def site_and_chain(tmp_path: Path):
    db = tmp_path / "store.sqlite"
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(db=db.as_posix()))
    state = tmp_path / "anvil.json"
    return site, state, f"sqlite:///{db.as_posix()}"


def test_deploy_status_balances_settle_pending_and_verify(site_and_chain, capsys, tmp_path):
    site, state, url = site_and_chain
    common = ["--site", str(site), "--state", str(state)]
    out = tmp_path / "deployment.json"

    code, deployed = run(capsys, "deploy", *common, "--out", str(out), "--json")
    assert code == 0
    assert deployed["backend"] == "anvil"
    assert deployed["reward_token"].startswith("0x")
    assert json.loads(out.read_text())["settlement"] == deployed["settlement"]

    # Participants fund their escrow (on the same chain, from its state file).
    alice, bob = derive_account("alice"), derive_account("bob")
    with AnvilNode(state_path=state) as node:
        client = ChainClient(rpc_web3(node.url), derive_account("operator"))
        client.attach(deployed["token"], deployed["settlement"])
        for who in (alice, bob):
            client.fund_eth(who.address, 10**18)
            client.mint(who.address, 50_000_000)
            client.deposit(who, 20_000_000)

    # The controller left one interval with a settlement intent and no receipt.
    ts = trades()
    pay = sum(t.buyer_amount for t in ts)
    batch = SettlementBatch(
        interval=INTERVAL,
        lines=(),
        amounts=(
            (ParticipantId("alice"), TokenUnits(pay - 5)),
            (ParticipantId("bob"), TokenUnits(-pay)),
            (COMMUNITY, TokenUnits(5)),
        ),
        trades_root=merkle_root(trade_to_dict(t) for t in ts),
        readings_root=bytes(32),
        import_price=300_000,
        export_price=80_000,
    )
    store = Store(url)
    store.claim_interval(INTERVAL.interval_id, 900)
    store.save_result(
        INTERVAL.interval_id,
        status="cleared",
        reason="",
        book_hash="",
        n_orders=0,
        result=stored_result(ts),
        setpoints=[],
    )
    store.record_intent(INTERVAL.interval_id, batch.batch_id, batch_to_dict(batch))
    store.close()

    with_deployment = [*common, "--deployment", str(out)]
    code, status = run(capsys, "status", *with_deployment, "--json")
    assert code == 0
    assert status["settled_intervals"] == 0
    assert status["store"]["pending"] == [INTERVAL.interval_id]
    assert status["operator"]["is_operator"] is True
    assert status["reward_policy"] == {"rate_per_kwh": 1_000_000, "cap_per_interval": 100_000_000}

    code, settled = run(capsys, "settle-pending", *with_deployment, "--json")
    assert code == 0
    (entry,) = settled
    assert entry["status"] == "settled"
    assert entry["batch_id"] == batch.batch_id
    # Asked again (the store is only read, so the intent is still pending): nothing is sent.
    code, again = run(capsys, "settle-pending", *with_deployment, "--json")
    assert code == 0
    assert again[0]["status"] == "already_settled"
    assert again[0]["tx_hash"] == entry["tx_hash"]

    code, balances = run(capsys, "balances", *with_deployment, "--json")
    assert code == 0
    by_name = {row["account"]: row for row in balances}
    assert by_name["alice"]["escrow"] == 20_000_000 + pay - 5
    assert by_name["bob"]["escrow"] == 20_000_000 - pay
    assert by_name["COMMUNITY"]["escrow"] == 5
    code, text = run(capsys, "balances", *with_deployment, "--account", alice.address)
    assert code == 0
    assert "escrow" in text

    code, verified = run(
        capsys, "verify-trade", *with_deployment, "--interval", str(INTERVAL.interval_id),
        "--trade", "1", "--json",
    )  # fmt: skip
    assert code == 0
    assert verified["verified_on_chain"] is True
    assert verified["verified_locally"] is True
    assert verified["trades_root_on_chain"] == batch.trades_root.hex()

    # An auditor with the trade and its proof only (no database):
    leaf = trade_to_dict(ts[2])
    proof = merkle_proof([trade_to_dict(t) for t in ts], leaf)
    leaf_file = tmp_path / "trade.json"
    leaf_file.write_text(json.dumps(leaf))
    args = ["--interval", str(INTERVAL.interval_id), "--leaf", str(leaf_file)]
    proof_arg = ["--proof", ",".join(p.hex() for p in proof)]
    code, verified = run(capsys, "verify-trade", *with_deployment, *args, *proof_arg, "--json")
    assert code == 0
    assert verified["trade_id"] == leaf["trade_id"]
    leaf_file.write_text(json.dumps(dict(leaf, energy_wh=leaf["energy_wh"] + 1)))
    code, verified = run(capsys, "verify-trade", *with_deployment, *args, *proof_arg, "--json")
    assert code == 1
    assert verified["verified_on_chain"] is False


def test_bad_input_exits_2(site_and_chain, capsys, monkeypatch) -> None:
    _, state, _ = site_and_chain
    for name in ("PEERGRID_RPC_URL", "PEERGRID_OPERATOR_KEY", "PEERGRID_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    code, text = run(capsys, "status", "--backend", "rpc")
    assert code == 2
    assert "needs --rpc-url" in text
    code, text = run(capsys, "status", "--backend", "rpc", "--rpc-url", "http://127.0.0.1:9")
    assert code == 2
    assert "needs --operator-key" in text
    code, text = run(capsys, "status", "--state", str(state))
    assert code == 2
    assert "give --token and --settlement" in text
    code, text = run(
        capsys, "balances", "--state", str(state), "--token", "0x1", "--settlement", "0x2"
    )
    assert code == 2
    assert "whose balances" in text
    code, text = run(capsys, "deploy", "--state", str(state), "--operator-key", "0x1234")
    assert code == 2
    assert "not a private key" in text


def test_an_unreachable_node_exits_1(capsys) -> None:
    key = "0x" + "11" * 32
    code, text = run(
        capsys, "status", "--backend", "rpc", "--rpc-url", "http://127.0.0.1:9",
        "--operator-key", key, "--token", "0x" + "22" * 20, "--settlement", "0x" + "33" * 20,
    )  # fmt: skip
    assert code == 1
    assert "no EVM node answers" in text


def test_resolution_prefers_flags_then_environment_then_site(site_and_chain, monkeypatch) -> None:
    site, _, _ = site_and_chain
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_chain.register(sub)
    monkeypatch.setenv("PEERGRID_RPC_URL", "http://env:8545")
    monkeypatch.setenv("PEERGRID_CONFIRMATIONS", "3")
    monkeypatch.setenv("PEERGRID_OPERATOR_KEY", "derive:env-operator")
    args = parser.parse_args(["chain", "status", "--site", str(site), "--backend", "rpc"])
    resolved = cli_chain.resolve(args, cli_chain._site(args))
    assert resolved.backend == "rpc"
    assert resolved.rpc_url == "http://env:8545"
    assert resolved.confirmations == 3
    assert resolved.operator_key == resolved.admin_key == "derive:env-operator"
    args = parser.parse_args(
        [
            "chain",
            "status",
            "--site",
            str(site),
            "--rpc-url",
            "http://flag:1",
            "--confirmations",
            "0",
        ]
    )
    resolved = cli_chain.resolve(args, cli_chain._site(args))
    assert resolved.backend == "anvil"  # the site's
    assert (resolved.rpc_url, resolved.confirmations) == ("http://flag:1", 0)
