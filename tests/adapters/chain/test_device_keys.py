"""The device key registry (``DeviceKeys.vy``, issue 17) on the embedded chain.

Who may change a slot (its owner, the owner's relayed signature, the governor; never the
deployer or the operator), the slot's rules, the P-256 check, the relayed path's refusals and
the history ``key_at`` answers from. ``test_device_keys_stateful.py`` runs random changes by
random accounts against a model; ``test_device_keys_anvil.py`` runs on a real node.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import vyper
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from hypothesis import given, settings
from hypothesis import strategies as st
from web3 import Web3

from adapters.chain import ChainClient, derive_account
from adapters.chain.compile import CONTRACTS_DIR, EVM_VERSION
from adapters.chain.device_keys import (
    P256_B,
    P256_P,
    DeviceKey,
    DeviceKeys,
    KeyAction,
    device_key_id,
    is_p256_public_key,
    key_change_signer,
    key_change_typed_data,
    sign_key_change,
)
from adapters.chain.embedded import embedded_web3
from adapters.chain.errors import ChainError, InvalidArgument, TransactionReverted
from adapters.chain.governance import Action, Governance, Support
from adapters.chain.node import call, hex0x

FAR_DEADLINE = 2**40  # Unix s, year 36812


def p256_private(seed: int) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key made from ``seed`` (deterministic)."""
    return ec.derive_private_key(seed, ec.SECP256R1())


def public_bytes(private: ec.EllipticCurvePrivateKey) -> bytes:
    """The registry's form of a public key: X || Y, 64 bytes (no 0x04 prefix)."""
    point = private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert point[0] == 4
    return point[1:]


def p256_key(seed: int) -> bytes:
    """The public key of :func:`p256_private` ``(seed)``."""
    return public_bytes(p256_private(seed))


def verifies(key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` (DER) of ``message`` verifies under ``key`` (X || Y)."""
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + key)
    try:
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def reverts(fn: Callable[[], object]) -> str:
    with pytest.raises(TransactionReverted) as info:
        fn()
    return info.value.reason


@dataclass
class Registry:
    w3: Web3
    client: ChainClient
    keys: DeviceKeys
    operator: LocalAccount  # deployed the registry (the site's admin and operator)
    governor: LocalAccount  # a plain account standing in for the community's timelock
    alice: LocalAccount
    bob: LocalAccount
    devices: Iterator[int]
    seeds: Iterator[int]

    def device(self) -> str:
        """A device id no other test uses (tests share the module's chain)."""
        return f"meter-{next(self.devices)}"

    def new_key(self) -> bytes:
        return p256_key(next(self.seeds))

    def send(self, account: LocalAccount, fn: str, args: list[Any]) -> None:
        """Send a raw call to the registry (what the adapter would refuse before sending)."""
        data = self.keys.contract.encode_abi(fn, args=args)
        self.client.contracts.sender.transact(account, self.keys.contract.address, data, 400_000)

    def execute(self, account: LocalAccount, action: Action) -> None:
        """Make ``action``'s call from ``account`` (as the timelock would)."""
        data = HexStr(hex0x(action.payload))
        self.client.contracts.sender.transact(
            account, Web3.to_checksum_address(action.target), data, 400_000
        )

    def block(self) -> int:
        return int(self.w3.eth.block_number)


def make_registry(w3: Web3) -> Registry:
    operator = derive_account("operator")
    client = ChainClient(w3, operator)
    client.fund_eth(operator.address, 10**21)
    governor, alice, bob = (derive_account(n) for n in ("governor", "alice", "bob"))
    for account in (governor, alice, bob):
        client.fund_eth(account.address, 10**19)
    keys = DeviceKeys(client.contracts)
    keys.deploy(governor.address)
    return Registry(
        w3=w3,
        client=client,
        keys=keys,
        operator=operator,
        governor=governor,
        alice=alice,
        bob=bob,
        devices=itertools.count(1),
        seeds=itertools.count(1_000),
    )


@pytest.fixture(scope="module")
def reg() -> Registry:
    return make_registry(embedded_web3())


def logged(reg: Registry, block: int) -> list[dict[str, Any]]:
    """The registry's ``KeyChanged`` logs of ``block``, as plain dicts."""
    event = reg.keys.contract.events.KeyChanged()
    return [dict(log["args"]) for log in event.get_logs(from_block=block, to_block=block)]


# -- the owner --------------------------------------------------------------------------------


def test_an_owner_registers_rotates_and_revokes(reg: Registry) -> None:
    keys, alice, device = reg.keys, reg.alice, reg.device()
    k1, k2, k3 = reg.new_key(), reg.new_key(), reg.new_key()
    assert keys.key_of(alice.address, device) is None
    registered = keys.register(alice, device, k1)
    now = keys.key_of(alice.address, device)
    assert now is not None
    assert (now.key, now.active, now.block_number) == (k1, True, registered.block_number)
    keys.rotate(alice, device, k2)
    revoked = keys.revoke(alice, device)
    now = keys.key_of(alice.address, device)
    assert now is not None
    assert (now.key, now.active, now.action) == (k2, False, KeyAction.REVOKE)  # the key revoked
    keys.register(alice, device, k3)  # a new key after a revocation
    assert [(c.action, c.key) for c in keys.history(alice.address, device)] == [
        (KeyAction.REGISTER, k1),
        (KeyAction.ROTATE, k2),
        (KeyAction.REVOKE, k2),
        (KeyAction.REGISTER, k3),
    ]
    [event] = logged(reg, revoked.block_number)
    assert event == {
        "owner": alice.address,
        "device": device_key_id(device),
        "key": k2,
        "action": KeyAction.REVOKE,
        "by": alice.address,
    }
    # the raw contract view agrees with the adapter
    raw = reg.keys.contract.functions.key_of(alice.address, device_key_id(device)).call()
    assert (bytes(raw[0]), raw[1]) == (k3, True)


def test_a_registered_key_verifies_what_its_meter_signs(reg: Registry) -> None:
    """End to end: the 64 bytes in the registry are the meter's real public key."""
    private = p256_private(next(reg.seeds))
    device = reg.device()
    reg.keys.register(reg.alice, device, public_bytes(private))
    reading = b'{"device_id":"m","import_wh_total":1234}'
    signature = private.sign(reading, ec.ECDSA(hashes.SHA256()))
    found = reg.keys.key_of(reg.alice.address, device)
    assert found is not None
    assert found.active
    assert verifies(found.key, reading, signature)
    assert not verifies(found.key, reading + b" ", signature)


def test_the_slot_rules(reg: Registry) -> None:
    keys, alice, device = reg.keys, reg.alice, reg.device()
    k1, k2 = reg.new_key(), reg.new_key()
    assert "no key in force" in reverts(lambda: keys.rotate(alice, device, k1))
    assert "no key in force" in reverts(lambda: keys.revoke(alice, device))
    keys.register(alice, device, k1)
    assert "a key is in force" in reverts(lambda: keys.register(alice, device, k2))
    assert "key used before" in reverts(lambda: keys.rotate(alice, device, k1))  # the same key
    keys.rotate(alice, device, k2)
    assert "key used before" in reverts(lambda: keys.rotate(alice, device, k1))  # an old key
    keys.revoke(alice, device)
    assert "no key in force" in reverts(lambda: keys.revoke(alice, device))
    # a revoked key stays revoked: it cannot come back to the slot
    assert "key used before" in reverts(lambda: keys.register(alice, device, k2))
    assert len(keys.history(alice.address, device)) == 3
    # ... but it may serve in another slot (another device, or another owner's)
    keys.register(alice, reg.device(), k2)
    keys.register(reg.bob, device, k2)


# -- nobody else --------------------------------------------------------------------------------


def test_nobody_else_changes_a_participants_key(reg: Registry) -> None:
    keys, alice, bob, device = reg.keys, reg.alice, reg.bob, reg.device()
    k1, k2 = reg.new_key(), reg.new_key()
    keys.register(alice, device, k1)
    # bob's own transactions reach only bob's slot of the same device id
    keys.register(bob, device, k2)
    assert "no key in force" in reverts(lambda: keys.revoke(reg.operator, device))
    mine = keys.key_of(alice.address, device)
    assert mine is not None
    assert (mine.key, mine.active) == (k1, True)
    # the operator, who deployed the registry, and anyone but the governor cannot govern
    revoke_alice = keys.govern(alice.address, device, b"", KeyAction.REVOKE)
    for who in (reg.operator, bob, alice):
        assert "not the governor" in reverts(lambda who=who: reg.execute(who, revoke_alice))
    # nor relay a change alice did not sign
    nonce = keys.nonce(alice.address)
    chain_id = keys.chain_id()
    forged = sign_key_change(
        bob,
        chain_id,
        keys.address,
        device_id=device,
        key=b"",
        action=KeyAction.REVOKE,
        nonce=nonce,
        deadline=FAR_DEADLINE,
    )
    assert "invalid signature" in reverts(
        lambda: keys.relay(
            reg.operator,
            owner=alice.address,
            device_id=device,
            key=b"",
            action=KeyAction.REVOKE,
            deadline=FAR_DEADLINE,
            signature=forged,
        )
    )
    assert keys.history(alice.address, device)[-1].active
    # and the contract has no owner, admin or role to hand to anyone
    names = {e["name"] for e in keys.contract.abi if e["type"] == "function"}
    assert names == {
        "register",
        "rotate",
        "revoke",
        "change_by_sig",
        "govern",
        "key_of",
        "key_at",
        "change_count",
        "change_at",
        "on_curve",
        "governor",
        "nonces",
        "eip712Domain",
    }


def test_the_governor_changes_any_slot(reg: Registry) -> None:
    keys, alice, device = reg.keys, reg.alice, reg.device()
    k1, k2, k3 = reg.new_key(), reg.new_key(), reg.new_key()
    assert keys.governor() == reg.governor.address
    # register for a participant who lost their wallet's ether, rotate, revoke a stolen key
    reg.execute(reg.governor, keys.govern(alice.address, device, k1, KeyAction.REGISTER))
    reg.execute(reg.governor, keys.govern(alice.address, device, k2, KeyAction.ROTATE))
    reg.execute(reg.governor, keys.govern(alice.address, device, b"", KeyAction.REVOKE))
    [event] = logged(reg, reg.block())
    assert (event["owner"], event["by"], event["action"]) == (
        alice.address,
        reg.governor.address,
        KeyAction.REVOKE,
    )
    # the governor is held to the slot's rules like everyone
    again = keys.govern(alice.address, device, b"", KeyAction.REVOKE)
    assert "no key in force" in reverts(lambda: reg.execute(reg.governor, again))
    reused = keys.govern(alice.address, device, k1, KeyAction.REGISTER)
    assert "key used before" in reverts(lambda: reg.execute(reg.governor, reused))
    keys.register(alice, device, k3)  # the owner goes on after the vote
    assert [c.action for c in keys.history(alice.address, device)] == [
        KeyAction.REGISTER,
        KeyAction.ROTATE,
        KeyAction.REVOKE,
        KeyAction.REGISTER,
    ]
    summary = keys.govern(alice.address, device, b"", KeyAction.REVOKE).summary
    assert summary == f"revoke the key of device {device!r} of {alice.address}"


def test_a_registry_without_governance_has_no_governor(reg: Registry) -> None:
    keys = DeviceKeys(reg.client.contracts)
    keys.deploy(None)
    assert keys.governor() is None
    device = reg.device()
    keys.register(reg.alice, device, reg.new_key())
    revoke = keys.govern(reg.alice.address, device, b"", KeyAction.REVOKE)
    for who in (reg.operator, reg.governor):
        assert "not the governor" in reverts(lambda who=who: reg.execute(who, revoke))


# -- relayed signatures ---------------------------------------------------------------------


def test_a_relayed_change_is_refused_replayed_expired_misassigned_or_tampered(
    reg: Registry,
) -> None:
    keys, alice, bob, device = reg.keys, reg.alice, reg.bob, reg.device()
    chain_id, registry = keys.chain_id(), keys.address
    k1, k2 = reg.new_key(), reg.new_key()
    nonce = keys.nonce(alice.address)
    fields: dict[str, Any] = {
        "device_id": device,
        "key": k1,
        "action": KeyAction.REGISTER,
        "deadline": FAR_DEADLINE,
    }
    signature = sign_key_change(alice, chain_id, registry, nonce=nonce, **fields)

    def relay(**changed: Any) -> Any:
        args = {"owner": alice.address, **fields, "signature": signature, **changed}
        return keys.relay(bob, **args)

    # tampered: each signed field changed on the way
    other_key = {"key": k2}
    for tampered in (
        other_key,
        {"device_id": reg.device()},
        {"action": KeyAction.ROTATE},
        {"deadline": FAR_DEADLINE + 1},
        {"owner": bob.address},  # bob's slot, alice's signature
    ):
        assert "invalid signature" in reverts(lambda t=tampered: relay(**t)), tampered
    # signed by someone else for alice's slot
    bobs = sign_key_change(bob, chain_id, registry, nonce=nonce, **fields)
    assert "invalid signature" in reverts(lambda: relay(signature=bobs))
    # signed for another chain or another registry
    foreign = sign_key_change(alice, chain_id + 1, registry, nonce=nonce, **fields)
    assert "invalid signature" in reverts(lambda: relay(signature=foreign))
    elsewhere = sign_key_change(alice, chain_id, reg.operator.address, nonce=nonce, **fields)
    assert "invalid signature" in reverts(lambda: relay(signature=elsewhere))
    assert keys.nonce(alice.address) == nonce  # nothing used the nonce
    # the good one: relayed and paid by bob, the change is alice's
    done = relay()
    assert keys.nonce(alice.address) == nonce + 1
    now = keys.key_of(alice.address, device)
    assert now is not None
    assert (now.key, now.active) == (k1, True)
    [event] = logged(reg, done.block_number)
    assert (event["owner"], event["by"]) == (alice.address, bob.address)
    # replayed: the nonce moved on, so the same signature no longer matches
    assert "invalid signature" in reverts(relay)
    # expired: one second before the next block's time at the latest
    latest = int(reg.w3.eth.get_block("latest")["timestamp"])
    late = {**fields, "key": b"", "action": KeyAction.REVOKE, "deadline": latest - 1}
    stale = sign_key_change(alice, chain_id, registry, nonce=nonce + 1, **late)
    assert "signature expired" in reverts(
        lambda: keys.relay(bob, owner=alice.address, signature=stale, **late)
    )
    # a revocation by signature, within its deadline
    fresh = {**late, "deadline": latest + 3_600}
    revoke = sign_key_change(alice, chain_id, registry, nonce=nonce + 1, **fresh)
    keys.relay(bob, owner=alice.address, signature=revoke, **fresh)
    assert keys.nonce(alice.address) == nonce + 2
    assert not keys.history(alice.address, device)[-1].active


def test_the_signer_is_recovered_off_chain_as_the_registry_does(reg: Registry) -> None:
    keys, alice = reg.keys, reg.alice
    chain_id, registry = keys.chain_id(), keys.address
    key = reg.new_key()
    args: dict[str, Any] = {
        "device_id": "m-1",
        "key": key,
        "action": KeyAction.REGISTER,
        "nonce": 7,
        "deadline": 1_800_000_000,
    }
    signature = sign_key_change(alice, chain_id, registry, **args)
    assert (
        key_change_signer(chain_id, registry, owner=alice.address, signature=signature, **args)
        == alice.address
    )
    other = {**args, "nonce": 8}
    assert (
        key_change_signer(chain_id, registry, owner=alice.address, signature=signature, **other)
        != alice.address
    )
    for bad in (b"\x01" * 10, b"", bytes(65), signature + b"\x00"):  # lengths, all zero
        with pytest.raises(InvalidArgument, match="not a valid signature"):
            key_change_signer(chain_id, registry, owner=alice.address, signature=bad, **args)
    data = key_change_typed_data(chain_id, registry, owner=alice.address, **args)
    assert data["domain"]["name"] == "PeerGrid DeviceKeys"
    assert data["message"]["device"] == "0x" + device_key_id("m-1").hex()
    assert data["message"]["key"] == "0x" + key.hex()


# -- the key itself ---------------------------------------------------------------------------


def _point_with_small_x() -> tuple[int, int]:
    """A point on P-256 whose x is small, so x + p still fits in 256 bits."""
    for x in itertools.count(0):
        rhs = (x**3 - 3 * x + P256_B) % P256_P
        y = pow(rhs, (P256_P + 1) // 4, P256_P)  # p = 3 (mod 4)
        if y * y % P256_P == rhs:
            return x, y
    raise AssertionError


def test_a_key_off_the_curve_is_refused_here_and_by_the_contract(reg: Registry) -> None:
    good = reg.new_key()
    x, y = _point_with_small_x()
    word = 32
    bad = {
        "y + 1": good[:32] + (int.from_bytes(good[32:], "big") ^ 1).to_bytes(32, "big"),
        "all zero": bytes(64),
        "63 bytes": good[:63],
        "empty": b"",
        "0x04 prefix, 65 bytes": b"\x04" + good[:63],
        "x + p": (x + P256_P).to_bytes(word, "big") + y.to_bytes(word, "big"),
    }
    assert is_p256_public_key(x.to_bytes(word, "big") + y.to_bytes(word, "big"))
    device = reg.device()
    for label, key in bad.items():
        assert not is_p256_public_key(key), label
        with pytest.raises(InvalidArgument, match="not a P-256 public key"):
            reg.keys.register(reg.alice, device, key)
        if len(key) <= 64:  # the contract takes at most 64 bytes
            reason = reverts(
                lambda k=key: reg.send(reg.alice, "register", [device_key_id(device), k])
            )
            assert "not a P-256 public key" in reason, label
    assert reg.keys.key_of(reg.alice.address, device) is None


@settings(max_examples=60, deadline=None)
@given(
    data=st.one_of(
        st.binary(min_size=0, max_size=64),
        st.integers(1, 2**64).map(p256_key),
        st.integers(1, 2**64).map(lambda s: p256_key(s)[:32] + bytes(32)),
    )
)
def test_the_contracts_curve_check_is_pythons(data: bytes) -> None:
    assert _on_curve(data) == is_p256_public_key(data)


_REG_FOR_PROPERTY: list[Registry] = []


def _on_curve(key: bytes) -> bool:
    if not _REG_FOR_PROPERTY:
        _REG_FOR_PROPERTY.append(make_registry(embedded_web3()))
    return bool(_REG_FOR_PROPERTY[0].keys.contract.functions.on_curve(key).call())


# -- history ----------------------------------------------------------------------------------


def test_key_at_answers_with_the_key_in_force_at_each_past_block(reg: Registry) -> None:
    keys, alice, device = reg.keys, reg.alice, reg.device()
    k1, k2, k3 = reg.new_key(), reg.new_key(), reg.new_key()
    before = reg.block()
    b1 = keys.register(alice, device, k1).block_number
    reg.client.fund_eth(reg.bob.address, 1)  # blocks in between
    b2 = keys.rotate(alice, device, k2).block_number
    reg.client.fund_eth(reg.bob.address, 1)
    b3 = keys.revoke(alice, device).block_number
    reg.client.fund_eth(reg.bob.address, 1)
    b4 = keys.register(alice, device, k3).block_number
    reg.client.fund_eth(reg.bob.address, 1)
    expected: dict[int, DeviceKey | None] = {before: None, b1 - 1: None}
    for block in range(b1, b2):
        expected[block] = DeviceKey(key=k1, active=True)
    for block in range(b2, b3):
        expected[block] = DeviceKey(key=k2, active=True)
    for block in range(b3, b4):
        expected[block] = DeviceKey(key=k2, active=False)  # revoked from its block on
    for block in range(b4, reg.block()):
        expected[block] = DeviceKey(key=k3, active=True)
    for block, key in expected.items():
        assert keys.key_at(alice.address, device, block) == key, block
    # a call executes in the latest block, which the registry does not answer for (as
    # Parameters.value_at); key_of reads it
    for block in (reg.block(), reg.block() + 1):
        assert "block not yet mined" in reverts(
            lambda b=block: keys.key_at(alice.address, device, b)
        )
    latest = keys.key_of(alice.address, device, block=reg.block())
    assert latest is not None
    assert (latest.key, latest.active, latest.block_number) == (k3, True, b4)
    assert [c.block_number for c in keys.history(alice.address, device)] == [b1, b2, b3, b4]
    change_at = keys.contract.functions.change_at(alice.address, device_key_id(device), 4)
    assert "no such change" in reverts(lambda: call(change_at))


def test_a_full_history_keeps_a_place_to_revoke_the_key_in_force() -> None:
    """With MAX_CHANGES = 4 (a copy of the contract compiled for the test): three changes
    put keys in force, the fourth place is the revocation's, and nothing comes after it."""
    source = (CONTRACTS_DIR / "DeviceKeys.vy").read_text(encoding="utf-8")
    bound = "MAX_CHANGES: constant(uint256) = 1024"
    assert bound in source
    small = _compile(source.replace(bound, "MAX_CHANGES: constant(uint256) = 4"))
    w3 = embedded_web3()
    owner, governor = w3.eth.accounts[:2]
    factory = w3.eth.contract(abi=small["abi"], bytecode=small["bytecode"])
    tx = factory.constructor(governor).transact({"from": owner})
    contract = w3.eth.contract(
        address=w3.eth.get_transaction_receipt(tx)["contractAddress"], abi=small["abi"]
    )
    fns, device = contract.functions, device_key_id("m")
    keys = [p256_key(s) for s in range(1, 6)]
    fns.register(device, keys[0]).transact({"from": owner})
    fns.rotate(device, keys[1]).transact({"from": owner})
    fns.rotate(device, keys[2]).transact({"from": owner})
    with pytest.raises(Exception, match="history full"):
        fns.rotate(device, keys[3]).transact({"from": owner})
    fns.revoke(device).transact({"from": owner})
    with pytest.raises(Exception, match="history full"):
        fns.register(device, keys[4]).transact({"from": owner})
    assert fns.change_count(owner, device).call() == 4
    assert fns.key_of(owner, device).call()[1] is False


def _compile(source: str) -> dict[str, Any]:
    from vyper.compiler.input_bundle import FilesystemInputBundle
    from vyper.compiler.settings import OptimizationLevel, Settings

    from adapters.chain.compile import _snekmate_search_path

    return vyper.compile_code(
        source,
        input_bundle=FilesystemInputBundle([_snekmate_search_path(), CONTRACTS_DIR]),
        settings=Settings(optimize=OptimizationLevel.GAS, evm_version=EVM_VERSION),
        output_formats=["abi", "bytecode"],
    )


# -- attach -----------------------------------------------------------------------------------


def test_attach_checks_the_code_and_the_governor(reg: Registry) -> None:
    attached = DeviceKeys(reg.client.contracts)
    with pytest.raises(ChainError, match="deploy"):
        attached.key_of(reg.alice.address, "m")
    with pytest.raises(ChainError, match="committed DeviceKeys bytecode"):
        attached.attach(reg.alice.address)  # no code at all
    with pytest.raises(ChainError, match="is governed by"):
        attached.attach(reg.keys.address, governor=reg.operator.address)
    attached.attach(reg.keys.address, governor=reg.governor.address)
    device = reg.device()
    reg.keys.register(reg.bob, device, reg.new_key())
    assert attached.history(reg.bob.address, device) == reg.keys.history(reg.bob.address, device)


def test_arguments_are_checked_before_anything_is_sent(reg: Registry) -> None:
    keys, before = reg.keys, reg.block()
    with pytest.raises(InvalidArgument, match="device id"):
        keys.register(reg.alice, "", reg.new_key())
    with pytest.raises(InvalidArgument, match="names no key"):
        keys.govern(reg.alice.address, "m", reg.new_key(), KeyAction.REVOKE)
    with pytest.raises(InvalidArgument, match="not a P-256 public key"):
        keys.govern(reg.alice.address, "m", b"", KeyAction.ROTATE)
    with pytest.raises(InvalidArgument, match="65 bytes"):
        keys.relay(
            reg.bob,
            owner=reg.alice.address,
            device_id="m",
            key=b"",
            action=KeyAction.REVOKE,
            deadline=FAR_DEADLINE,
            signature=b"\x00" * 64,
        )
    with pytest.raises(InvalidArgument, match="KeyAction"):
        keys.govern(reg.alice.address, "m", b"", 3)  # type: ignore[arg-type]
    assert reg.block() == before


# -- through the community's vote -----------------------------------------------------------


def test_members_revoke_a_stolen_meters_key_by_vote() -> None:
    """The registry governed by a real community: proposal, votes, timelock, execution."""
    w3 = embedded_web3()
    operator = derive_account("operator")
    client = ChainClient(w3, operator)
    client.fund_eth(operator.address, 10**21)
    client.deploy_all()
    members = [derive_account(n) for n in ("alice", "bob", "carol")]
    for m in members:
        client.fund_eth(m.address, 10**19)
    gov = Governance(client.contracts)
    gov.deploy(
        members=[m.address for m in members],
        parameters={"community_fee_bps": 0},
        delay_s=60,
        voting_period_s=60,
        quorum_bps=5_000,
        pause_hours=1,
    )
    gov.hand_over()
    keys = DeviceKeys(client.contracts)
    keys.deploy(gov.timelock.address)
    alice = members[0]
    stolen, replacement = p256_key(11), p256_key(12)
    keys.register(alice, "meter-7", stolen)

    def advance(seconds: int) -> None:
        now = w3.eth.get_block("latest")["timestamp"]
        w3.provider.make_request("testing_timeTravel", [now + seconds])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    actions = [
        keys.govern(alice.address, "meter-7", b"", KeyAction.REVOKE),
        keys.govern(alice.address, "meter-7", replacement, KeyAction.REGISTER),
    ]
    pid, _ = gov.propose(
        members[1], actions, "meter-7 was stolen: revoke its key, register the new meter's"
    )
    for m in members[1:]:
        gov.vote(m, pid, Support.FOR)
    advance(60)
    gov.queue(operator, pid)
    advance(60)
    executed = gov.execute(operator, pid)
    history = keys.history(alice.address, "meter-7")
    assert [(c.action, c.key) for c in history] == [
        (KeyAction.REGISTER, stolen),
        (KeyAction.REVOKE, stolen),
        (KeyAction.REGISTER, replacement),
    ]
    client.fund_eth(members[0].address, 1)  # a block after the execution's
    assert keys.key_at(alice.address, "meter-7", executed.block_number) == DeviceKey(
        key=replacement, active=True
    )
    assert {e["by"] for e in logged_in(keys, executed.block_number)} == {gov.timelock.address}
    # the deployer (the site's admin) and the operator act on no one's key, even now
    direct = keys.govern(alice.address, "meter-7", b"", KeyAction.REVOKE)
    for who in (operator, client.contracts.admin):
        data = HexStr(hex0x(direct.payload))
        with pytest.raises(TransactionReverted, match="not the governor"):
            client.contracts.sender.transact(who, keys.contract.address, data, 400_000)


def logged_in(keys: DeviceKeys, block: int) -> list[dict[str, Any]]:
    event = keys.contract.events.KeyChanged()
    return [dict(log["args"]) for log in event.get_logs(from_block=block, to_block=block)]
