"""The device key registry against a model: random changes by random accounts.

A hypothesis state machine sends registrations, rotations, revocations, relayed signatures
and governor calls to ``DeviceKeys`` on the embedded chain, by owners, other participants, the
operator and the governor, and keeps a plain-Python model of the slots beside it. Each
transaction must go through exactly when the model says so:

* a direct change touches only the sender's own slot;
* a relayed change needs the owner's signature over the owner's current nonce, before its
  deadline (a replayed, future-nonce, expired or someone else's signature is refused);
* ``govern`` is the governor's alone (the operator, who deployed the registry, is refused);
* whoever acts: register needs no key in force, rotate and revoke need one, and a key once
  registered in a slot never returns to it.

Each change that goes through logs exactly the change the model made, by whom; after every
step each slot's length and every owner's nonce equal the model's, and the slot just changed
is compared in full: its history, its key now and ``key_at`` at the blocks around each of its
changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_device_keys import p256_key
from web3 import Web3

from adapters.chain import ChainClient, derive_account
from adapters.chain.device_keys import (
    DeviceKey,
    DeviceKeys,
    KeyAction,
    KeyChange,
    device_key_id,
    sign_key_change,
)
from adapters.chain.embedded import embedded_web3
from adapters.chain.errors import TransactionReverted
from adapters.chain.node import call, hex0x

OWNERS = tuple(derive_account(f"owner-{i}") for i in range(2))
OPERATOR = derive_account("operator")
GOVERNOR = derive_account("governor")
ANYONE = (*OWNERS, OPERATOR, GOVERNOR)
DEVICES = ("meter-a", "meter-b")
KEYS = tuple(p256_key(seed) for seed in range(1, 11))
FAR_DEADLINE = 2**40


@dataclass
class ModelSlot:
    changes: list[KeyChange] = field(default_factory=list)
    used: set[bytes] = field(default_factory=set)

    def active(self) -> bool:
        return bool(self.changes) and self.changes[-1].active

    def allows(self, action: KeyAction, key: bytes) -> bool:
        if action is KeyAction.REVOKE:
            return self.active()
        wanted = action is KeyAction.ROTATE
        return self.active() == wanted and key not in self.used

    def apply(self, block: int, action: KeyAction, key: bytes) -> None:
        if action is KeyAction.REVOKE:
            key = self.changes[-1].key
        else:
            self.used.add(key)
        self.changes.append(KeyChange(block_number=block, key=key, action=action))

    def at(self, block: int) -> DeviceKey | None:
        found = [c for c in self.changes if c.block_number <= block]
        return DeviceKey(key=found[-1].key, active=found[-1].active) if found else None


class _Chain:
    """One registry per test run, reset to its first state by ``evm_revert``."""

    w3: Web3
    keys: DeviceKeys
    client: ChainClient
    snapshot_id: str

    @classmethod
    def get(cls) -> _Chain:
        if not hasattr(cls, "keys"):
            w3 = embedded_web3()
            client = ChainClient(w3, OPERATOR)
            client.fund_eth(OPERATOR.address, 10**21)
            for account in ANYONE:
                client.fund_eth(account.address, 10**19)
            keys = DeviceKeys(client.contracts)
            keys.deploy(GOVERNOR.address)
            cls.w3, cls.keys, cls.client = w3, keys, client
        cls.snapshot_id = cls.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
        return cls()

    def reset(self) -> None:
        self.w3.provider.make_request("evm_revert", [self.snapshot_id])  # type: ignore[arg-type]


actions = st.sampled_from(KeyAction)
keys = st.sampled_from(KEYS)


class DeviceKeysMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.chain = _Chain.get()
        self.keys = self.chain.keys
        self.w3 = self.chain.w3
        self.chain_id = self.keys.chain_id()
        self.slots = {(o.address, d): ModelSlot() for o in OWNERS for d in DEVICES}
        self.nonces = {o.address: 0 for o in OWNERS}
        self.touched: set[tuple[str, str]] = set()

    def teardown(self) -> None:
        self.chain.reset()

    def attempt(self, send: object, *, expect_ok: bool) -> int:
        """Run ``send``; it must succeed exactly when the model says so. Its block."""
        before = self.w3.eth.block_number
        if expect_ok:
            block = send().block_number  # type: ignore[operator]  # a revert fails the test
        else:
            with pytest.raises(TransactionReverted):
                send()  # type: ignore[operator]
            block = -1
        assert self.w3.eth.block_number == before + 1, "one transaction, one block"
        return block

    def changed(
        self, block: int, owner: str, device: str, action: KeyAction, key: bytes, by: str
    ) -> None:
        """Apply a change that went through to the model; the block logged exactly it."""
        slot = self.slots[(owner, device)]
        slot.apply(block, action, key)
        self.touched.add((owner, device))
        event = self.keys.contract.events.KeyChanged()
        logs = [dict(log["args"]) for log in event.get_logs(from_block=block, to_block=block)]
        expected = {
            "owner": owner,
            "device": device_key_id(device),
            "key": slot.changes[-1].key,
            "action": action,
            "by": by,
        }
        assert logs == [expected]

    @staticmethod
    def key_for(action: KeyAction, key: bytes) -> bytes:
        return b"" if action is KeyAction.REVOKE else key

    # -- rules --------------------------------------------------------------------------------

    @rule(who=st.sampled_from(ANYONE), device=st.sampled_from(DEVICES), action=actions, key=keys)
    def direct(self, who: LocalAccount, device: str, action: KeyAction, key: bytes) -> None:
        """Anyone changes the slot of their own address (the operator and governor have
        slots too, unmodelled: they must never reach an owner's)."""
        key = self.key_for(action, key)
        slot = self.slots.get((who.address, device))
        send = {
            KeyAction.REGISTER: lambda: self.keys.register(who, device, key),
            KeyAction.ROTATE: lambda: self.keys.rotate(who, device, key),
            KeyAction.REVOKE: lambda: self.keys.revoke(who, device),
        }[action]
        if slot is None:  # not an owner's slot: keep it empty by only trying what fails
            if action is KeyAction.REGISTER:
                return
            self.attempt(send, expect_ok=False)
            return
        block = self.attempt(send, expect_ok=slot.allows(action, key))
        if block >= 0:
            self.changed(block, who.address, device, action, key, who.address)

    @rule(
        signer=st.sampled_from([None, None, None, *ANYONE]),  # None: the owner
        owner=st.sampled_from(OWNERS),
        device=st.sampled_from(DEVICES),
        action=actions,
        key=keys,
        nonce_shift=st.sampled_from([0, 0, 0, 0, -1, 1]),
        expired=st.sampled_from([False, False, False, True]),
    )
    def relay(
        self,
        signer: LocalAccount | None,
        owner: LocalAccount,
        device: str,
        action: KeyAction,
        key: bytes,
        nonce_shift: int,
        expired: bool,
    ) -> None:
        """The operator relays a signed change: the owner's or someone else's, for the
        current nonce, a used one (a replay) or a future one, before or after its deadline."""
        key = self.key_for(action, key)
        signer = signer or owner
        nonce = self.nonces[owner.address] + nonce_shift
        if nonce < 0:
            return
        latest = int(self.w3.eth.get_block("latest")["timestamp"])
        deadline = latest - 1 if expired else FAR_DEADLINE
        signature = sign_key_change(
            signer,
            self.chain_id,
            self.keys.address,
            device_id=device,
            key=key,
            action=action,
            nonce=nonce,
            deadline=deadline,
        )
        slot = self.slots[(owner.address, device)]
        ok = (
            signer.address == owner.address
            and nonce_shift == 0
            and not expired
            and slot.allows(action, key)
        )
        block = self.attempt(
            lambda: self.keys.relay(
                OPERATOR,
                owner=owner.address,
                device_id=device,
                key=key,
                action=action,
                deadline=deadline,
                signature=signature,
            ),
            expect_ok=ok,
        )
        if block >= 0:
            self.changed(block, owner.address, device, action, key, OPERATOR.address)
            self.nonces[owner.address] += 1

    @rule(
        who=st.sampled_from([GOVERNOR, GOVERNOR, OPERATOR, *OWNERS]),
        owner=st.sampled_from(OWNERS),
        device=st.sampled_from(DEVICES),
        action=actions,
        key=keys,
    )
    def govern(
        self, who: LocalAccount, owner: LocalAccount, device: str, action: KeyAction, key: bytes
    ) -> None:
        """An account makes the governor's call (only the governor's goes through)."""
        key = self.key_for(action, key)
        governed = self.keys.govern(owner.address, device, key, action)
        slot = self.slots[(owner.address, device)]
        ok = who.address == GOVERNOR.address and slot.allows(action, key)
        block = self.attempt(
            lambda: self.chain.client.contracts.sender.transact(
                who,
                Web3.to_checksum_address(governed.target),
                HexStr(hex0x(governed.payload)),
                400_000,
            )[1],
            expect_ok=ok,
        )
        if block >= 0:
            self.changed(block, owner.address, device, action, key, GOVERNOR.address)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def the_chain_holds_the_model(self) -> None:
        """Every slot's length and every nonce; the touched slot in full (its history, its
        key now, ``key_at`` around each of its changes). Reads are ~5-15 ms each on the
        embedded chain, so untouched slots are checked by length only: a change that went
        to the wrong slot lengthens it."""
        for (owner, device), slot in self.slots.items():
            count = self.keys.contract.functions.change_count(owner, device_key_id(device))
            assert call(count) == len(slot.changes), (owner, device)
        for owner, nonce in self.nonces.items():
            assert self.keys.nonce(owner) == nonce
        latest = int(self.w3.eth.block_number)
        for owner, device in self.touched:
            slot = self.slots[(owner, device)]
            assert self.keys.history(owner, device) == tuple(slot.changes), (owner, device)
            assert self.keys.key_of(owner, device) == (slot.changes[-1] if slot.changes else None)
            blocks = {b for c in slot.changes for b in (c.block_number - 1, c.block_number)}
            for block in sorted(b for b in blocks if b < latest):
                assert self.keys.key_at(owner, device, block) == slot.at(block), (device, block)
        self.touched.clear()


DeviceKeysMachine.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # shrinking a failure replays many examples
class TestDeviceKeysStateful(DeviceKeysMachine.TestCase):  # type: ignore[name-defined,misc]
    pass
