"""Known-answer tests of signed orders against ethers v6 (a stock wallet library, from npm).

One node process (``ethers_typed_data.cjs``, ethers from ``.tools/node_modules``, installed by
``scripts/test``) signs a fixed set of messages of every kind with ``Wallet.signTypedData``
and verifies PeerGrid's signatures with ``verifyTypedData``. PeerGrid must:

* verify what ethers signed, given exactly the ``eth_signTypedData_v4`` JSON ethers hands a
  wallet such as MetaMask (``TypedDataEncoder.getPayload``: chainId as a hex quantity,
  addresses lower case, uints as decimal strings), with the same digest;
* produce the same signature bytes (both sign deterministically, RFC 6979) and digest;
* have its own signatures recovered by ethers to the same address;
* emit with :func:`typed_data` the same JSON ethers sends, up to letter case and the form
  of ``chainId``.

Node and ethers are required, never skipped: a missing one fails with how to install it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from adapters.chain import typed_data as td
from adapters.chain.typed_data import MessageKind

ROOT = Path(__file__).resolve().parents[3]
NODE_MODULES = ROOT / ".tools" / "node_modules"
SCRIPT = Path(__file__).with_name("ethers_typed_data.cjs")

# fixed, well-known development keys (anvil's and hardhat's first accounts): never hold value
KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
)
ADDRESSES = tuple(Account.from_key(k).address for k in KEYS)
CHAIN_ID = 31337
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
WHERE = {"chain_id": CHAIN_ID, "verifying_contract": CONTRACT}

# The known answer: this Order, signed by KEYS[0] on chain 31337 for CONTRACT, has this
# digest and (deterministic) signature in ethers 6.17 and in PeerGrid alike.
KNOWN_ORDER = {
    "participant": ADDRESSES[0],
    "intervalStart": 1_780_000_000,
    "side": 1,
    "energyWh": 1_500,
    "limitPrice": 120_000,
    "nonce": 7,
    "deadline": 1_780_000_600,
}
KNOWN_DIGEST = "0x842092c9b5e94919fed861de3b5f652ce97105d6708262a7b4893f91647e8955"
KNOWN_SIGNATURE = (
    "0x7608225fc5ed1cb71b5c382e774434fcde77df611051cd523d945b417e83dff1"
    "15b240a5444a8518d0f9e7f1b4dd4b9b3b2a2fcd7ebedafc0374effa73177cbe1c"
)

Case = tuple[MessageKind, dict[str, Any], int]


def random_case(rng: random.Random, kind: MessageKind) -> Case:
    who = rng.randrange(len(KEYS))
    message: dict[str, Any] = {}
    for field in td.TYPES[kind]:
        name, type_ = field["name"], field["type"]
        if name == "participant":
            message[name] = ADDRESSES[who]
        elif (kind, name) in td.ENUMS:
            message[name] = rng.choice([int(c) for c in td.ENUMS[(kind, name)]])
        elif type_ == "bytes32":
            message[name] = "0x" + rng.randbytes(32).hex()
        else:
            top = 2 ** int(type_.removeprefix("uint")) - 1
            message[name] = rng.choice(
                [0, 1, top, rng.randint(0, top), rng.randint(0, min(top, 10**6))]
            )
    return kind, message, who


def cases() -> list[Case]:
    rng = random.Random(20261204)  # fixed: the same cases every run
    out: list[Case] = [(MessageKind.ORDER, dict(KNOWN_ORDER), 0)]
    out += [random_case(rng, kind) for kind in MessageKind for _ in range(12)]
    return out


def ethers_input(kind: MessageKind, message: dict[str, Any]) -> dict[str, Any]:
    """What a dapp hands ethers: domain, types without EIP712Domain, JSON message."""
    return {
        "domain": td.domain(CHAIN_ID, CONTRACT),
        "types": {kind.value: td.TYPES[kind]},
        "message": td.typed_data(kind, message, **WHERE)["message"],
    }


def run_ethers(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node, "node is not on PATH (it comes with npm, which scripts/test needs for anvil)"
    assert (NODE_MODULES / "ethers" / "package.json").is_file(), (
        f"ethers is not installed in {NODE_MODULES}: run ./scripts/test (it installs it from npm)"
    )
    proc = subprocess.run(  # noqa: S603 - our own script, no shell
        [node, str(SCRIPT)],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        timeout=300,  # generous: one node start and a few dozen signatures
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    assert len(results) == len(jobs)
    return results


@pytest.fixture(scope="module")
def ethers() -> dict[str, Any]:
    """ethers' answers: signatures of every case, and its recovery of PeerGrid's signatures."""
    all_cases = cases()
    signs = [
        {"op": "sign", "key": KEYS[who], **ethers_input(kind, message)}
        for kind, message, who in all_cases
    ]
    verifies = [
        {
            "op": "verify",
            "signature": td.sign(kind, message, KEYS[who], **WHERE),
            **ethers_input(kind, message),
        }
        for kind, message, who in all_cases
    ]
    results = run_ethers(signs + verifies)
    n = len(all_cases)
    return {"cases": all_cases, "signed": results[:n], "recovered": results[n:]}


def test_the_cases_cover_every_kind_and_code(ethers: dict[str, Any]) -> None:
    kinds = {kind for kind, _, _ in ethers["cases"]}
    assert kinds == set(MessageKind)
    codes = {m["kind"] for k, m, _ in ethers["cases"] if k is MessageKind.STANDING_ORDER}
    assert len(codes) >= 3


def test_what_ethers_signs_verifies_in_peergrid(ethers: dict[str, Any]) -> None:
    for (kind, message, who), out in zip(ethers["cases"], ethers["signed"], strict=True):
        assert out["address"] == ADDRESSES[who]
        payload = {"typedData": out["payload"], "signature": out["signature"]}
        ok = td.verify(payload, **WHERE)
        assert ok.kind is kind
        assert ok.signer == ADDRESSES[who]
        assert ok.digest == out["digest"]
        # both sign deterministically (RFC 6979): the very same signature
        assert td.sign(kind, message, KEYS[who], **WHERE) == out["signature"]


def test_what_peergrid_signs_ethers_recovers(ethers: dict[str, Any]) -> None:
    for (kind, message, who), out in zip(ethers["cases"], ethers["recovered"], strict=True):
        assert out["address"] == ADDRESSES[who]
        assert out["digest"] == td.digest(kind, message, **WHERE)


def test_typed_data_is_the_json_ethers_hands_a_wallet(ethers: dict[str, Any]) -> None:
    for (kind, message, _), out in zip(ethers["cases"], ethers["signed"], strict=True):
        ours = td.typed_data(kind, message, **WHERE)
        ours["domain"]["chainId"] = hex(ours["domain"]["chainId"])  # ethers: a hex quantity
        ours["domain"]["verifyingContract"] = ours["domain"]["verifyingContract"].lower()
        ours["message"]["participant"] = ours["message"]["participant"].lower()
        assert ours == out["payload"]


def test_the_known_answer(ethers: dict[str, Any]) -> None:
    out = ethers["signed"][0]
    assert (out["digest"], out["signature"]) == (KNOWN_DIGEST, KNOWN_SIGNATURE)
    assert td.digest("Order", KNOWN_ORDER, **WHERE) == KNOWN_DIGEST
    assert td.sign("Order", KNOWN_ORDER, KEYS[0], **WHERE) == KNOWN_SIGNATURE


def test_an_ethers_payload_changed_after_signing_is_refused(ethers: dict[str, Any]) -> None:
    out = ethers["signed"][0]
    payload = {"typedData": json.loads(json.dumps(out["payload"])), "signature": out["signature"]}
    payload["typedData"]["message"]["energyWh"] = "1501"
    with pytest.raises(td.TypedDataRefused) as info:
        td.verify(payload, **WHERE)
    assert info.value.code == "signer_not_participant"
    payload["typedData"]["message"]["energyWh"] = "1500"
    payload["typedData"]["domain"]["chainId"] = "0x1"
    with pytest.raises(td.TypedDataRefused) as info:
        td.verify(payload, **WHERE)
    assert (info.value.code, info.value.reason.split(" ")[0]) == ("wrong_domain", "domain.chainId")
