"""``peergrid chain deploy|status|balances|settle-pending|verify-trade|rotate-operator`` on anvil.

The commands are registered on a bare parser here (``controller.cli_chain.register``), as
``peergrid``'s own parser does. Every command starts anvil from the same state file and stops
it, so the chain outlives each command as it does for a user. Keys come from keystores
(operator and admin apart) or environment variables, never from the command line; the site
names every participant, GRID and COMMUNITY by address.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.chain import (
    ChainClient,
    SettlementStatus,
    Signer,
    TransactionReverted,
    new_account,
    open_keystore,
    write_keystore,
)
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
PASSWORD = "correct horse battery staple"
FAST_SCRYPT = 2**10
SITE = """
[site]
name = "cli test"
grid = "cigre-lv"
interval_s = 900
database = "sqlite:///{db}"

[chain]
backend = "anvil"
operator_keystore = "{operator_keystore}"
admin_keystore = "{admin_keystore}"
grid_account = "{grid}"
community_account = "{community}"

[[participants]]
id = "alice"
bus = "Bus R11"
account = "{alice}"

[[participants]]
id = "bob"
bus = "Bus R15"
account = "{bob}"
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
def accounts() -> dict[str, Signer]:
    """Fresh random keys: the operator's, the admin's, and the site's account owners'."""
    return {n: new_account() for n in ("operator", "admin", "alice", "bob", "grid", "community")}


@pytest.fixture
def site_and_chain(tmp_path: Path, accounts: dict[str, Signer], monkeypatch):
    monkeypatch.setenv("PEERGRID_KEYSTORE_PASSWORD", PASSWORD)
    for name in ("PEERGRID_OPERATOR_KEY", "PEERGRID_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    keystores = {}
    for role in ("operator", "admin"):
        keystores[role] = tmp_path / f"{role}.json"
        write_keystore(keystores[role], accounts[role], PASSWORD, scrypt_n=FAST_SCRYPT)
    db = tmp_path / "store.sqlite"
    site = tmp_path / "site.toml"
    site.write_text(
        SITE.format(
            db=db.as_posix(),
            operator_keystore=keystores["operator"].as_posix(),
            admin_keystore=keystores["admin"].as_posix(),
            **{n: accounts[n].address for n in ("alice", "bob", "grid", "community")},
        )
    )
    state = tmp_path / "anvil.json"
    return site, state, f"sqlite:///{db.as_posix()}"


def test_deploy_status_balances_settle_pending_and_verify(
    site_and_chain, accounts, capsys, tmp_path
):
    site, state, url = site_and_chain
    common = ["--site", str(site), "--state", str(state)]
    out = tmp_path / "deployment.json"

    code, deployed = run(capsys, "deploy", *common, "--out", str(out), "--json")
    assert code == 0
    assert deployed["backend"] == "anvil"
    assert deployed["reward_token"].startswith("0x")
    assert deployed["operator"] == accounts["operator"].address
    assert deployed["admin"] == accounts["admin"].address
    assert json.loads(out.read_text())["settlement"] == deployed["settlement"]

    # Participants fund their escrow (on the same chain, from its state file).
    alice, bob = accounts["alice"], accounts["bob"]
    with AnvilNode(state_path=state) as node:
        client = ChainClient(rpc_web3(node.url), accounts["operator"], admin=accounts["admin"])
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
    assert status["operator"] == {
        "address": accounts["operator"].address,
        "is_operator": True,
        "next_nonce": 0,  # deploy was signed by the admin
    }
    assert status["admin"] == {"address": accounts["admin"].address, "is_admin": True}
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
    code, text = run(capsys, "status", "--state", str(state))
    assert code == 2
    assert "give --token and --settlement" in text
    code, text = run(
        capsys, "balances", "--state", str(state), "--token", "0x1", "--settlement", "0x2"
    )
    assert code == 2
    assert "whose balances" in text
    # a command that signs needs a key, and says where it looked
    code, text = run(capsys, "deploy", "--state", str(state))
    assert code == 2
    assert "no operator key" in text
    assert "PEERGRID_OPERATOR_KEY" in text
    monkeypatch.setenv("PEERGRID_OPERATOR_KEY", "0x1234")
    code, text = run(capsys, "deploy", "--state", str(state))
    assert code == 2
    assert "does not hold a private key" in text
    assert "0x1234" not in text


def test_keys_are_never_command_line_arguments(capsys) -> None:
    key = "0x" + "11" * 32
    for flag in ("--operator-key", "--admin-key"):
        with pytest.raises(SystemExit) as exc:
            run(capsys, "status", flag, key)
        assert exc.value.code == 2
        assert key not in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one source per role
        run(capsys, "deploy", "--operator-keystore", "a.json", "--operator-key-env", "X")


def test_wrong_password_and_bad_keystore_exit_2_without_key_material(
    site_and_chain, accounts, capsys, monkeypatch, tmp_path
) -> None:
    site, state, _ = site_and_chain
    key = accounts["operator"].key.hex().removeprefix("0x")
    monkeypatch.setenv("PEERGRID_KEYSTORE_PASSWORD", "not the password")
    code, text = run(capsys, "deploy", "--site", str(site), "--state", str(state))
    assert code == 2
    assert "wrong password" in text
    assert "operator.json" in text
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 3, "crypto": {"kdf": "scrypt"}}')
    code, text = run(capsys, "deploy", "--state", str(state), "--operator-keystore", str(broken))
    assert code == 2
    assert "not a Web3 Secret Storage keystore" in text
    assert key.lower() not in text.lower()
    assert "not the password" not in text
    assert not state.exists()  # keys are opened before anvil is started


def test_an_unreachable_node_exits_1(capsys) -> None:
    code, text = run(
        capsys, "status", "--backend", "rpc", "--rpc-url", "http://127.0.0.1:9",
        "--token", "0x" + "22" * 20, "--settlement", "0x" + "33" * 20,
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
    args = parser.parse_args(["chain", "status", "--site", str(site), "--backend", "rpc"])
    resolved = cli_chain.resolve(args, cli_chain._site(args))
    assert resolved.backend == "rpc"
    assert resolved.rpc_url == "http://env:8545"
    assert resolved.confirmations == 3
    assert resolved.operator.keystore.endswith("operator.json")  # the site's
    assert resolved.admin.keystore.endswith("admin.json")
    assert resolved.operator.password_env == "PEERGRID_KEYSTORE_PASSWORD"
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
            "--operator-key-env",
            "MY_OPERATOR_KEY",
            "--password-env",
            "MY_PASSWORD",
        ]
    )
    resolved = cli_chain.resolve(args, cli_chain._site(args))
    assert resolved.backend == "anvil"  # the site's
    assert (resolved.rpc_url, resolved.confirmations) == ("http://flag:1", 0)
    assert (resolved.operator.keystore, resolved.operator.key_env) == ("", "MY_OPERATOR_KEY")
    assert resolved.admin.password_env == "MY_PASSWORD"
    # without a site: the environment's keystore, else its key variable; admin = operator
    monkeypatch.setenv("PEERGRID_OPERATOR_KEYSTORE", "/keys/op.json")
    monkeypatch.delenv("PEERGRID_ADMIN_KEY", raising=False)
    args = parser.parse_args(["chain", "status"])
    resolved = cli_chain.resolve(args, None)
    assert resolved.operator.keystore == "/keys/op.json"
    assert (resolved.admin.keystore, resolved.admin.role) == ("/keys/op.json", "admin")
    monkeypatch.delenv("PEERGRID_OPERATOR_KEYSTORE")
    monkeypatch.setenv("PEERGRID_ADMIN_KEY", "0x" + "22" * 32)
    resolved = cli_chain.resolve(args, None)
    assert (resolved.operator.keystore, resolved.operator.key_env) == ("", "PEERGRID_OPERATOR_KEY")
    assert resolved.admin.key_env == "PEERGRID_ADMIN_KEY"


def test_rotate_operator_moves_the_role_and_the_old_key_can_no_longer_settle(
    site_and_chain, accounts, capsys, tmp_path
) -> None:
    site, state, _ = site_and_chain
    common = ["--site", str(site), "--state", str(state)]
    code, deployed = run(capsys, "deploy", *common, "--json")
    assert code == 0
    with_addresses = [*common, "--token", deployed["token"], "--settlement", deployed["settlement"]]
    successor = new_account()
    new_keystore = tmp_path / "operator-2.json"
    write_keystore(new_keystore, successor, PASSWORD, scrypt_n=FAST_SCRYPT)

    # one key as admin and operator cannot rotate itself out (it would stay admin)
    one_key = ["--admin-keystore", str(tmp_path / "operator.json")]
    code, text = run(
        capsys, "rotate-operator", *with_addresses, *one_key, "--new-operator", successor.address
    )
    assert code == 2
    assert "separate admin key" in text

    code, rotated = run(
        capsys, "rotate-operator", *with_addresses, "--new-operator", successor.address, "--json"
    )
    assert code == 0
    assert rotated["old_operator"] == accounts["operator"].address
    assert rotated["new_operator"] == successor.address
    assert rotated["admin"] == accounts["admin"].address
    assert (rotated["old_is_operator"], rotated["new_is_operator"]) == (False, True)
    # asked again (the site still names the old keystore): nothing left to do
    code, again = run(
        capsys, "rotate-operator", *with_addresses, "--new-operator", successor.address, "--json"
    )
    assert code == 0
    assert (again["grant_tx"], again["revoke_tx"]) == (None, None)

    # The old key can no longer settle (the contract reverts); the new one can.
    alice, bob = accounts["alice"], accounts["bob"]
    old_key = open_keystore(tmp_path / "operator.json", PASSWORD)
    new_key = open_keystore(new_keystore, PASSWORD)
    with AnvilNode(state_path=state) as node:
        w3 = rpc_web3(node.url)
        admin = ChainClient(w3, old_key, admin=accounts["admin"])
        admin.attach(deployed["token"], deployed["settlement"])
        for who in (alice, bob):
            admin.fund_eth(who.address, 10**18)
            admin.mint(who.address, 1_000_000)
            admin.deposit(who, 1_000_000)
        old = ChainClient(w3, old_key)
        old.attach(deployed["token"], deployed["settlement"])
        new = ChainClient(w3, new_key)
        new.attach(deployed["token"], deployed["settlement"])
        assert not old.is_operator(old_key.address)
        assert new.is_operator(new_key.address)
        batch = SettlementBatch(
            interval=INTERVAL,
            lines=(),
            amounts=(
                (ParticipantId("alice"), TokenUnits(7)),
                (ParticipantId("bob"), TokenUnits(-7)),
            ),
            trades_root=bytes(32),
            readings_root=bytes(32),
            import_price=0,
            export_price=0,
        )
        addresses = {ParticipantId("alice"): alice.address, ParticipantId("bob"): bob.address}
        with pytest.raises(TransactionReverted, match="missing role"):
            old.submit_settlement(batch, addresses)
        receipt = new.submit_settlement(batch, addresses)
        assert receipt.status is SettlementStatus.SETTLED
        assert new.escrow_balance(alice.address) == 1_000_007
