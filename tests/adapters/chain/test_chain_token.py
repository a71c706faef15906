"""PaymentToken: 6 decimals, owner-only mint, plain ERC-20 transfers."""

from __future__ import annotations

import pytest

from adapters.chain.client import ChainClient, derive_account
from adapters.chain.errors import TransactionReverted
from market.units import TOKEN_DECIMALS

TOKEN = 10**6


def test_token_metadata(deployed) -> None:
    token = deployed.client.token.functions
    assert token.decimals().call() == 6 == TOKEN_DECIMALS
    assert token.name().call() == "PeerGrid Test Token"
    assert token.symbol().call() == "PGT"
    assert token.owner().call() == deployed.operator.address


def test_owner_mints_and_supply_grows(deployed) -> None:
    client = deployed.client
    receiver = derive_account("token-receiver").address
    supply = client.total_supply()
    client.mint(receiver, 7 * TOKEN)
    assert client.token_balance(receiver) == 7 * TOKEN
    assert client.total_supply() == supply + 7 * TOKEN
    deployed.minted += 7 * TOKEN


def test_non_owner_cannot_mint(deployed) -> None:
    alice = deployed.participants["alice"]
    as_alice = ChainClient(deployed.w3, alice)
    as_alice.attach(deployed.token_address, deployed.settlement_address)
    supply = deployed.client.total_supply()
    with pytest.raises(TransactionReverted) as info:
        as_alice.mint(alice.address, 1)
    assert info.value.reason == "ownable: caller is not the owner"
    assert info.value.tx_hash is not None
    assert deployed.client.total_supply() == supply


def test_transfer_moves_tokens_between_holders(deployed) -> None:
    client = deployed.client
    bob, carol = deployed.participants["bob"], deployed.participants["carol"]
    before = client.token_balance(bob.address), client.token_balance(carol.address)
    data = client.token.encode_abi("transfer", args=[carol.address, 3])
    client._transact(bob, client.token.address, data, 80_000)
    after = client.token_balance(bob.address), client.token_balance(carol.address)
    assert after == (before[0] - 3, before[1] + 3)
