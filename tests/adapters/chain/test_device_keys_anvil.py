"""The device key registry on a real node (anvil), one that keeps no old states.

An auditor's node is often a full node: states older than a few blocks are gone, so a key
cannot be read "as of" an old block. ``key_at`` reads the registry's own history and answers
anyway. Two changes of one slot mined in one block are both kept, and the block's answer is
the last of them.
"""

from __future__ import annotations

import pytest
from test_device_keys import p256_key

from adapters.chain import ChainClient, derive_account
from adapters.chain.backends import AnvilNode, rpc_web3
from adapters.chain.device_keys import (
    DeviceKey,
    DeviceKeys,
    KeyAction,
    device_key_id,
    sign_key_change,
)
from adapters.chain.errors import ChainError

pytestmark = pytest.mark.integration


def test_key_at_answers_on_a_pruned_node_and_keeps_two_changes_of_one_block() -> None:
    with AnvilNode(prune_history=4) as node:
        w3 = rpc_web3(node.url)
        operator, alice, carol = (derive_account(n) for n in ("operator", "alice", "carol"))
        client = ChainClient(w3, operator)
        client.fund_eth(operator.address, 10**21)
        client.fund_eth(alice.address, 10**19)
        client.fund_eth(carol.address, 10**19)
        keys = DeviceKeys(client.contracts)
        keys.deploy(None)
        k1, k2, k3, k4 = (p256_key(s) for s in (21, 22, 23, 24))

        registered = keys.register(alice, "meter-1", k1).block_number
        # alice signs, the operator relays and pays: a rotation
        signature = sign_key_change(
            alice,
            keys.chain_id(),
            keys.address,
            device_id="meter-1",
            key=k2,
            action=KeyAction.ROTATE,
            nonce=keys.nonce(alice.address),
            deadline=2**40,
        )
        rotated = keys.relay(
            operator,
            owner=alice.address,
            device_id="meter-1",
            key=k2,
            action=KeyAction.ROTATE,
            deadline=2**40,
            signature=signature,
        ).block_number
        revoked = keys.revoke(alice, "meter-1").block_number

        # carol's register and rotate mined in one block (raw transactions, automine off)
        w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
        fns, device = keys.contract.functions, device_key_id("meter-2")
        nonce = w3.eth.get_transaction_count(carol.address)
        for i, tx in enumerate((fns.register(device, k3), fns.rotate(device, k4))):
            params = tx.build_transaction(
                {
                    "from": carol.address,
                    "nonce": nonce + i,
                    "gas": 300_000,
                    "maxFeePerGas": 10**11,
                    "maxPriorityFeePerGas": 10**9,
                    "chainId": w3.eth.chain_id,
                }
            )
            w3.eth.send_raw_transaction(carol.sign_transaction(params).raw_transaction)
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
        both = w3.eth.block_number
        w3.provider.make_request("anvil_mine", [hex(20)])  # type: ignore[arg-type]

        # the old states are gone ...
        with pytest.raises(ChainError):
            keys.key_of(alice.address, "meter-1", block=registered)
        # ... the history answers for every block
        expected = {
            registered - 1: None,
            registered: DeviceKey(key=k1, active=True),
            rotated - 1: DeviceKey(key=k1, active=True),
            rotated: DeviceKey(key=k2, active=True),
            revoked: DeviceKey(key=k2, active=False),
        }
        for block, key in expected.items():
            assert keys.key_at(alice.address, "meter-1", block) == key, block
        assert keys.key_at(carol.address, "meter-2", both) == DeviceKey(key=k4, active=True)
        assert keys.key_at(carol.address, "meter-2", both - 1) is None
        assert [(c.block_number, c.action) for c in keys.history(carol.address, "meter-2")] == [
            (both, KeyAction.REGISTER),
            (both, KeyAction.ROTATE),
        ]
        assert keys.nonce(alice.address) == 1
