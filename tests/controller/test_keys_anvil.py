"""A site on a real chain, run as a user runs it: its keys stay its own.

One anvil node plays a production chain, reached by URL (site backend ``rpc``, not a node
PeerGrid starts). The operator's keystore is made with ``peergrid keys import``, the contracts
are deployed by ``peergrid chain deploy`` with a separate admin keystore, every participant,
GRID and COMMUNITY is named by the address of a key only its owner (the test) holds, and
``peergrid -v run --once`` runs twice as real processes, across an interval boundary, so one
interval is cleared and then settled on-chain. Then:

* the operator's key (hex with and without ``0x``, either case, and its raw bytes) and the
  keystore's password appear in no file the runs left (database, WAL, lock), no log line, no
  audit record, and no error message of a run with a wrong password or a broken keystore;
* the addresses derived from the labels ``GRID``, ``COMMUNITY``, ``operator`` and every
  participant id (the demo keys anyone can compute) hold nothing and control nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.chain import ChainClient, Signer, derive_account, new_account
from adapters.chain.backends import AnvilNode, rpc_web3
from controller.store import Store
from market.domain import COMMUNITY, GRID

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]

PASSWORD = "Pw-7c1e-on-a-real-chain"
INTERVAL_S = 60
PARTICIPANTS = ("alice", "bob")

SITE = """
[site]
name = "keys on a real chain"
grid = "cigre-lv"
interval_s = {interval_s}
database = "sqlite:///{db}"

[chain]
backend = "rpc"
rpc_url = "{url}"
token_address = "{token}"
settlement_address = "{settlement}"
operator_keystore = "operator.json"
grid_account = "{grid}"
community_account = "{community}"

[[participants]]
id = "alice"
bus = "Bus R11"
account = "{alice}"
  [[participants.orders]]
  kind = "sell"
  energy_wh = 1000
  price = 100_000

[[participants]]
id = "bob"
bus = "Bus R15"
account = "{bob}"
  [[participants.orders]]
  kind = "buy"
  energy_wh = 1500
  price = 320_000
"""


@dataclass
class RunSite:
    """What the module's runs left behind."""

    folder: Path
    site: Path
    db: Path
    url: str
    deployment: dict[str, str]
    operator: Signer
    admin: Signer
    owners: dict[str, Signer]
    outputs: list[subprocess.CompletedProcess[str]]
    interval_id: int
    env: dict[str, str]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERGRID_")}
    if "PEERGRID_ANVIL" in os.environ:
        env["PEERGRID_ANVIL"] = os.environ["PEERGRID_ANVIL"]
    return env | extra


def peergrid(
    *argv: str, env: dict[str, str], cwd: Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "controller", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
        check=False,
    )


def find_secrets(blob: bytes, key: bytes, password: str) -> list[str]:
    """Which of the key (hex in any case, with or without ``0x``; raw bytes) and the
    password ``blob`` holds."""
    found = []
    if key.hex().removeprefix("0x").encode() in blob.lower():  # also finds 0x..., 0X...
        found.append("key hex")
    if key in blob:
        found.append("key bytes")
    if password.encode() in blob:
        found.append("password")
    return found


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilNode]:
    with AnvilNode() as node:
        yield node


@pytest.fixture(scope="module")
def ran(anvil: AnvilNode, tmp_path_factory: pytest.TempPathFactory) -> RunSite:
    folder = tmp_path_factory.mktemp("site")
    env = clean_env(PEERGRID_KEYSTORE_PASSWORD=PASSWORD)
    operator, admin = new_account(), new_account()
    owners = {name: new_account() for name in (*PARTICIPANTS, "grid", "community")}

    # The operator's key goes into a keystore through standard input, never argv.
    made = peergrid(
        "keys", "import", "--out", "operator.json", env=env, cwd=folder, stdin=operator.key.hex()
    )
    assert made.returncode == 0, made.stderr
    made = peergrid(
        "keys", "import", "--out", "admin.json", env=env, cwd=folder, stdin=admin.key.hex()
    )
    assert made.returncode == 0, made.stderr

    # Gas money: on a real chain the operator and the admin bring their own.
    w3 = rpc_web3(anvil.url)
    bank = ChainClient(w3, admin)
    for account in (operator, admin, *owners.values()):
        bank.fund_eth(account.address, 10**19)
    deployed = peergrid(
        "chain", "deploy", "--backend", "rpc", "--rpc-url", anvil.url,
        "--admin-keystore", "admin.json", "--operator-keystore", "operator.json", "--json",
        env=env, cwd=folder,
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stderr
    deployment = json.loads(deployed.stdout)
    assert (deployment["operator"], deployment["admin"]) == (operator.address, admin.address)

    # Each owner funds its own escrow (the admin owns the test token and mints it).
    client = ChainClient(w3, operator, admin=admin)
    client.attach(deployment["token"], deployment["settlement"])
    for account in owners.values():
        client.mint(account.address, 50_000_000)
        client.deposit(account, 20_000_000)

    db = folder / "store.sqlite"
    site = folder / "site.toml"
    site.write_text(
        SITE.format(
            interval_s=INTERVAL_S,
            db=db.as_posix(),
            url=anvil.url,
            token=deployment["token"],
            settlement=deployment["settlement"],
            **{name: account.address for name, account in owners.items()},
        ),
        encoding="utf-8",
    )
    outputs = [peergrid("-v", "run", "--site", "site.toml", "--once", env=env, cwd=folder)]
    assert outputs[0].returncode == 0, outputs[0].stderr
    store = Store(f"sqlite:///{db.as_posix()}")
    try:
        first = int(store.interval_rows()[0]["interval_id"])
    finally:
        store.close()
    time.sleep(max(0.0, first + INTERVAL_S + 1 - time.time()))  # the next boundary
    outputs.append(peergrid("-v", "run", "--site", "site.toml", "--once", env=env, cwd=folder))
    assert outputs[1].returncode == 0, outputs[1].stderr
    return RunSite(
        folder=folder,
        site=site,
        db=db,
        url=anvil.url,
        deployment=deployment,
        operator=operator,
        admin=admin,
        owners=owners,
        outputs=outputs,
        interval_id=first,
        env=env,
    )


def chain_client(ran: RunSite) -> ChainClient:
    client = ChainClient(rpc_web3(ran.url), new_account())  # reads only
    client.attach(ran.deployment["token"], ran.deployment["settlement"])
    return client


def test_the_run_settles_on_chain_signed_by_the_operator_only(ran: RunSite) -> None:
    assert "settled" in ran.outputs[1].stdout, ran.outputs[1].stdout + ran.outputs[1].stderr
    store = Store(f"sqlite:///{ran.db.as_posix()}")
    try:
        record = store.settlement(ran.interval_id)
    finally:
        store.close()
    assert record is not None
    assert record["state"] == "settled"
    client = chain_client(ran)
    assert client.is_settled(ran.interval_id)
    tx = client.w3.eth.get_transaction(record["tx_hash"])
    assert tx["from"] == ran.operator.address
    # money moved between the owners' addresses of the site file
    owners = {a.address for a in ran.owners.values()}
    moved = {address for address, amount in client.settled_transfers(ran.interval_id) if amount}
    assert moved
    assert moved <= owners


def test_no_key_or_password_in_database_logs_audit_or_errors(ran: RunSite) -> None:
    key = ran.operator.key
    logs = "".join(o.stdout + o.stderr for o in ran.outputs)
    assert "INFO" in logs  # -v logging was on and captured
    for output in ran.outputs:
        assert find_secrets((output.stdout + output.stderr).encode(), key, PASSWORD) == []
    left = [p for p in ran.folder.iterdir() if p.is_file()]
    assert any(p.name.startswith("store.sqlite") for p in left)
    for path in left:  # database, its WAL and lock files, the site file, the keystores
        assert find_secrets(path.read_bytes(), key, PASSWORD) == [], path
    store = Store(f"sqlite:///{ran.db.as_posix()}")
    try:
        records = store.audit_records()
    finally:
        store.close()
    assert records
    audit = json.dumps(records, default=str).encode()
    assert find_secrets(audit, key, PASSWORD) == []

    # A wrong password and a broken keystore: one line naming the problem, exit 2.
    wrong = ran.env | {"PEERGRID_KEYSTORE_PASSWORD": "guessed-" + PASSWORD[::-1]}
    done = peergrid("-v", "run", "--site", "site.toml", "--once", env=wrong, cwd=ran.folder)
    assert done.returncode == 2
    assert "wrong password" in done.stderr
    assert "operator.json" in done.stderr
    assert "Traceback" not in done.stderr
    said = (done.stdout + done.stderr).encode()
    assert find_secrets(said, key, PASSWORD) == []
    assert find_secrets(said, key, wrong["PEERGRID_KEYSTORE_PASSWORD"]) == []
    broken = json.loads((ran.folder / "operator.json").read_text())
    broken["crypto"]["kdfparams"]["n"] = 3  # not a power of two
    (ran.folder / "broken").mkdir(exist_ok=True)
    (ran.folder / "broken" / "operator.json").write_text(json.dumps(broken))
    broken_site = (
        ran.site.read_text()
        .replace(ran.db.as_posix(), (ran.folder / "broken" / "s.sqlite").as_posix())
        .replace('"operator.json"', f'"{(ran.folder / "broken" / "operator.json").as_posix()}"')
    )
    (ran.folder / "broken" / "site.toml").write_text(broken_site)
    done = peergrid("run", "--site", "broken/site.toml", "--once", env=ran.env, cwd=ran.folder)
    assert done.returncode == 2
    assert "not a Web3 Secret Storage keystore" in done.stderr
    assert "Traceback" not in done.stderr
    assert find_secrets((done.stdout + done.stderr).encode(), key, PASSWORD) == []


def test_derived_label_addresses_hold_nothing_and_control_nothing(ran: RunSite) -> None:
    client = chain_client(ran)
    w3 = client.w3
    reward = client.reward_token
    assert reward is not None
    labels = [GRID, COMMUNITY, "operator", "admin", *PARTICIPANTS]
    derived = {label: derive_account(label).address for label in labels}
    states = client.account_states(derived.values())
    for label, address in derived.items():
        held = {
            "ether": w3.eth.get_balance(address),
            "nonce": w3.eth.get_transaction_count(address),
            "token": client.token_balance(address),
            "escrow": client.escrow_balance(address),
            "available": client.available_credit(address),
            "reward_wallet": client.reward_balance(address),
            "unclaimed_rewards": client.unclaimed_rewards(address),
            "registry_index": states[address].index,
        }
        assert set(held.values()) == {0}, (label, held)
        assert not client.is_operator(address), label
        assert not client.is_admin(address), label
        assert not reward.functions.is_minter(address).call(), label
        assert client.token.functions.owner().call() != address
        assert reward.functions.owner().call() != address
    # ...while the site's own addresses are the ones the contract knows
    assert client.is_operator(ran.operator.address)
    assert client.is_admin(ran.admin.address)
    for account in ran.owners.values():
        assert client.escrow_balance(account.address) > 0


def test_the_search_finds_every_form_of_a_secret() -> None:
    """The greps above can fail: each form a leak could take is found."""
    account = new_account()
    bare = account.key.hex().removeprefix("0x")
    for form in (
        bare,
        bare.upper(),
        "0x" + bare,
        "0X" + bare.upper(),
        bare[:10] + bare[10:].upper(),
    ):
        assert find_secrets(f"log: {form} end".encode(), account.key, PASSWORD) == ["key hex"]
    assert find_secrets(b"\x00" + account.key + b"\x01", account.key, PASSWORD) == ["key bytes"]
    assert find_secrets(f"pw={PASSWORD}".encode(), account.key, PASSWORD) == ["password"]
    assert find_secrets(b"nothing here", account.key, PASSWORD) == []
