"""PaymentToken (6 decimals, owner-only mint, EIP-2612 permit) and RewardToken (minters only)."""

from __future__ import annotations

import pytest

from adapters.chain import ChainClient, derive_account
from adapters.chain.errors import TransactionReverted
from market.units import TOKEN_DECIMALS

TOKEN = 10**6


def as_account(deployed, account) -> ChainClient:
    client = ChainClient(deployed.w3, account)
    client.attach(deployed.token_address, deployed.settlement_address)
    return client


def send(deployed, account, contract, fn, *args, gas=150_000):
    data = contract.encode_abi(fn, args=list(args))
    return deployed.client.sender.transact(account, contract.address, data, gas)[1]


# ---------------------------------------------------------------------- payment token


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
    send(deployed, bob, client.token, "transfer", carol.address, 3)
    after = client.token_balance(bob.address), client.token_balance(carol.address)
    assert after == (before[0] - 3, before[1] + 3)


def test_permit_deposit_needs_no_approval_transaction(deployed) -> None:
    client = deployed.client
    newcomer = derive_account("permit-user")
    client.fund_eth(newcomer.address, 10**18)
    client.mint(newcomer.address, 10 * TOKEN)
    deployed.minted += 10 * TOKEN
    nonce_before = deployed.w3.eth.get_transaction_count(newcomer.address)
    assert client.token.functions.allowance(newcomer.address, client.settlement.address).call() == 0

    result = client.deposit_with_permit(newcomer, 4 * TOKEN)

    assert deployed.w3.eth.get_transaction_count(newcomer.address) == nonce_before + 1
    assert result.gas_used > 0
    assert client.escrow_balance(newcomer.address) == 4 * TOKEN
    assert client.token_balance(newcomer.address) == 6 * TOKEN
    assert client.token.functions.nonces(newcomer.address).call() == 1
    # The permit was spent exactly: nothing is left approved.
    assert client.token.functions.allowance(newcomer.address, client.settlement.address).call() == 0


def test_expired_permit_deposit_reverts_without_allowance(deployed) -> None:
    client = deployed.client
    late = derive_account("permit-late")
    client.fund_eth(late.address, 10**18)
    client.mint(late.address, TOKEN)
    deployed.minted += TOKEN
    with pytest.raises(TransactionReverted, match="insufficient allowance"):
        client.deposit_with_permit(late, TOKEN, deadline=1)
    assert client.escrow_balance(late.address) == 0


def test_permit_signed_by_someone_else_does_not_approve(deployed) -> None:
    client = deployed.client
    owner, thief = derive_account("permit-owner"), deployed.participants["frank"]
    client.fund_eth(owner.address, 10**18)
    client.mint(owner.address, TOKEN)
    deployed.minted += TOKEN
    # frank signs a permit over owner's tokens: the token refuses it.
    domain = client.token.functions.eip712Domain().call()
    signed = thief.sign_typed_data(
        domain_data={
            "name": domain[1],
            "version": domain[2],
            "chainId": domain[3],
            "verifyingContract": domain[4],
        },
        message_types={
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ]
        },
        message_data={
            "owner": owner.address,
            "spender": thief.address,
            "value": TOKEN,
            "nonce": 0,
            "deadline": 2**40,
        },
    )
    with pytest.raises(TransactionReverted, match="invalid signature"):
        send(
            deployed,
            thief,
            client.token,
            "permit",
            owner.address,
            thief.address,
            TOKEN,
            2**40,
            signed.v,
            signed.r.to_bytes(32, "big"),
            signed.s.to_bytes(32, "big"),
        )


# ---------------------------------------------------------------------- reward token


def test_reward_token_only_the_settlement_contract_mints(deployed) -> None:
    reward = deployed.client.reward_token
    assert reward is not None
    fns = reward.functions
    assert fns.decimals().call() == 6
    assert fns.symbol().call() == "PGTR"
    assert fns.owner().call() == deployed.operator.address
    assert fns.is_minter(deployed.settlement_address).call()
    assert not fns.is_minter(deployed.operator.address).call()  # the owner is not a minter

    supply = fns.totalSupply().call()
    with pytest.raises(TransactionReverted, match="access is denied"):
        send(deployed, deployed.operator, reward, "mint", deployed.operator.address, 1)
    with pytest.raises(TransactionReverted, match="minter is owner address"):
        send(deployed, deployed.operator, reward, "set_minter", deployed.operator.address, True)
    bob = deployed.participants["bob"]
    with pytest.raises(TransactionReverted, match="caller is not the owner"):
        send(deployed, bob, reward, "set_minter", bob.address, True)
    assert fns.totalSupply().call() == supply


def test_reward_token_ownership_moves_without_a_minter_role() -> None:
    from adapters.chain import embedded_web3

    w3 = embedded_web3()
    owner, heir = derive_account("reward-owner"), derive_account("reward-heir")
    client = ChainClient(w3, owner)
    client.fund_eth(owner.address, 10**20)
    address = client.deploy_reward_token("Reward", "RWD")
    reward = client.reward_token
    assert reward is not None
    assert reward.address == address
    data = reward.encode_abi("transfer_ownership", args=[heir.address])
    client.sender.transact(owner, reward.address, data, 100_000)
    assert reward.functions.owner().call() == heir.address
    assert not reward.functions.is_minter(heir.address).call()
    assert not reward.functions.is_minter(owner.address).call()
