"""Contract reads on a node: :func:`adapters.chain.node.call`'s plain ``eth_call`` path.

On a JSON-RPC node, ``call`` encodes the call with eth-abi and makes one plain request,
without web3's request pipeline. These tests hold it to web3's own answer for every view
function of the three contracts, with arguments of every type they take, at the latest block
and at a numbered one; and to the same reverts as before.
"""

from __future__ import annotations

from typing import Any

import pytest
from chain_helpers import Deployed, make_batch
from web3.contract.contract import Contract, ContractFunction
from web3.exceptions import ContractLogicError

from adapters.chain.errors import InvalidArgument, TransactionReverted
from adapters.chain.node import call, encode_call, revert_reason


def _argument(kind: str, deployed: Deployed) -> Any:
    addresses = [p.address for p in deployed.participants.values()]
    values: dict[str, Any] = {
        "address": addresses[0],
        "address[]": addresses,
        "uint256": 0,
        "uint256[]": [0, 1],
        "bytes32": b"\0" * 32,
        "bytes32[]": [b"\1" * 32],
        "bytes": b"leaf",
        "bytes4": bytes.fromhex("01ffc9a7"),  # ERC-165's own interface id
    }
    if kind not in values:
        pytest.fail(f"no test argument for ABI type {kind}: add one")
    return values[kind]


def _views(contract: Contract, deployed: Deployed) -> list[ContractFunction]:
    functions = []
    for entry in contract.abi:
        if entry.get("type") != "function" or entry.get("stateMutability") not in ("view", "pure"):
            continue
        args = [_argument(i["type"], deployed) for i in entry.get("inputs", [])]
        functions.append(contract.get_function_by_name(entry["name"])(*args))
    return functions


def _contracts(deployed: Deployed) -> list[Contract]:
    contracts = deployed.client.contracts
    assert contracts.reward_token is not None
    return [contracts.token, contracts.reward_token, contracts.settlement]


def test_every_view_reads_as_web3_reads_it(anvil_deployed: Deployed) -> None:
    deployed = anvil_deployed
    alice, bob = (p.address for p in list(deployed.participants.values())[:2])
    deployed.client.submit_settlement(
        *make_batch(deployed.next_interval(), [(alice, -4), (bob, 4)])
    )
    block = deployed.w3.eth.block_number
    deployed.client.submit_settlement(
        *make_batch(deployed.next_interval(), [(alice, 2), (bob, -2)])
    )
    checked = []
    for contract in _contracts(deployed):
        for fn in _views(contract, deployed):
            for at in ("latest", block):
                expected = fn.call(block_identifier=at)
                assert call(fn, block_identifier=at) == expected, (fn.fn_name, at)
                checked.append((fn.fn_name, at))
    names = {name for name, _ in checked}
    # the fleet's and the audit's reads are among them, with their awkward outputs
    assert {"account_states", "accounts_at", "eip712Domain", "hasRole", "balanceOf"} <= names
    assert len(checked) > 40  # every view, twice


def test_the_plain_path_answers_without_web3s_call(
    anvil_deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every view that answers is read without ``ContractFunction.call`` (no silent fallback)."""
    deployed = anvil_deployed
    expected = {
        fn.fn_name: fn.call()
        for contract in _contracts(deployed)
        for fn in _views(contract, deployed)
    }

    def no_web3(*_args: object, **_kwargs: object) -> None:
        pytest.fail("web3's call was used")

    monkeypatch.setattr(ContractFunction, "call", no_web3)
    read = {
        fn.fn_name: call(fn)
        for contract in _contracts(deployed)
        for fn in _views(contract, deployed)
    }
    assert read == expected


def test_a_revert_keeps_its_reason(anvil_deployed: Deployed) -> None:
    """The node's revert goes to web3, which decodes the contract's reason as before."""
    # a transfer from the zero address (no sender), read as a call
    fn = anvil_deployed.client.contracts.token.functions.transfer(
        anvil_deployed.operator.address, 1
    )
    with pytest.raises(ContractLogicError) as web3s:
        fn.call()
    with pytest.raises(TransactionReverted) as info:
        call(fn)
    assert info.value.reason == revert_reason(web3s.value)
    assert info.value.reason.startswith("erc20: ")


def test_settle_call_data_is_web3s(deployed: Deployed) -> None:
    """``encode_call`` encodes ``settle`` as web3's ``encode_abi`` does, byte for byte."""
    settlement = deployed.client.contracts.settlement
    args = [1_782_000_000, b"\x07" * 32, [2**255 + 5, 3, 0, 2**256 - 1], b"\x01" * 32, b"\0" * 32]
    assert encode_call(settlement, "settle", args) == settlement.encode_abi("settle", args=args)
    assert encode_call(settlement, "settle", [*args[:2], [], *args[3:]]) == settlement.encode_abi(
        "settle", args=[*args[:2], [], *args[3:]]
    )
    with pytest.raises(InvalidArgument, match="no_such"):
        encode_call(settlement, "no_such", [])
