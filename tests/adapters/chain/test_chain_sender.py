"""TxSender on the embedded chain: nonce bookkeeping, fee bumps, refusals (no node needed).

Replacement of stuck transactions, reorganisations and nonce conflicts need a node that can
hold a transaction back: ``test_chain_anvil.py``.
"""

from __future__ import annotations

import pytest

from adapters.chain import ChainClient, derive_account, embedded_web3
from adapters.chain.errors import InvalidArgument, TransactionReverted
from adapters.chain.gas import MAX_TX_GAS, bumped_fees, ceil_percent, eip1559_fees
from adapters.chain.node import revert_reason
from adapters.chain.sender import TxSender


def test_constructor_refuses_nonsense() -> None:
    w3 = embedded_web3()
    with pytest.raises(InvalidArgument, match="confirmations"):
        TxSender(w3, confirmations=-1)
    with pytest.raises(ValueError, match="fee_bump_percent"):  # InvalidArgument is a ValueError
        TxSender(w3, fee_bump_percent=5)


def test_fee_bump_rounds_up_and_always_raises() -> None:
    assert ceil_percent(100, 125) == 125
    assert ceil_percent(3, 110) == 4  # 3.3 -> 4
    assert ceil_percent(1, 110) == 2  # +1 at least
    assert ceil_percent(10**9, 112) == 1_120_000_000


def test_replacement_fees_rise_by_the_bump_and_never_fall_below_today() -> None:
    first = eip1559_fees(base_fee_wei=10, priority_fee_wei=2)
    assert first == {"maxFeePerGas": 22, "maxPriorityFeePerGas": 2}
    # base fee unchanged: both fields raised by 25 %, rounded up
    assert bumped_fees(first, first, 25) == {"maxFeePerGas": 28, "maxPriorityFeePerGas": 3}
    # base fee jumped to 100: the cap follows today's base part plus the raised tip
    now = eip1559_fees(base_fee_wei=100, priority_fee_wei=2)
    assert bumped_fees(first, now, 25) == {"maxFeePerGas": 203, "maxPriorityFeePerGas": 3}
    # a legacy chain: the raised price, or today's if higher
    assert bumped_fees({"gasPrice": 100}, {"gasPrice": 90}, 10) == {"gasPrice": 110}
    assert bumped_fees({"gasPrice": 100}, {"gasPrice": 500}, 10) == {"gasPrice": 500}


def test_polls_start_short_and_back_off_to_poll_s() -> None:
    sender = TxSender(embedded_web3(), poll_s=0.5)
    waits = [sender.pause(i) for i in range(10)]
    assert waits[0] == 0.005
    assert waits == sorted(waits)
    assert waits[-1] == 0.5


def test_every_nonce_change_is_reported_and_gap_free() -> None:
    w3 = embedded_web3()
    operator = derive_account("operator")
    seen: list[int] = []
    client = ChainClient(w3, operator, on_nonce=lambda _a, n: seen.append(n))
    client.fund_eth(operator.address, 10**20)
    client.deploy_token("T", "T")
    for _ in range(3):
        client.mint(operator.address, 1)
    # first read from the chain (0), then one increment per broadcast
    assert seen == [0, 1, 2, 3, 4]
    assert client.next_nonce() == w3.eth.get_transaction_count(operator.address) == 4
    # on the embedded chain nothing waits: latest == pending
    with pytest.raises(InvalidArgument, match="gap"):
        client.set_next_nonce(5)
    with pytest.raises(InvalidArgument, match="already mined"):
        client.set_next_nonce(3)
    assert client.reconcile_nonce(2) == 4


def test_a_reverted_send_does_not_consume_the_cached_nonce() -> None:
    w3 = embedded_web3()
    operator, stranger = derive_account("operator"), derive_account("stranger")
    client = ChainClient(w3, operator)
    client.fund_eth(operator.address, 10**20)
    client.fund_eth(stranger.address, 10**20)
    client.deploy_token("T", "T")
    as_stranger = ChainClient(w3, stranger)
    as_stranger.contracts._token = client.token
    with pytest.raises(TransactionReverted, match="caller is not the owner"):
        as_stranger.mint(stranger.address, 1)
    # the reverted transaction was mined (status 0) and used nonce 0
    assert w3.eth.get_transaction_count(stranger.address) == 1
    assert as_stranger.next_nonce(stranger.address) == 1


def test_gas_is_capped_at_the_osaka_transaction_limit() -> None:
    assert MAX_TX_GAS == 2**24


def test_revert_reasons_lose_the_node_prefix() -> None:
    assert revert_reason(ValueError("execution reverted: settlement: paused")) == (
        "settlement: paused"
    )
    assert revert_reason(ValueError("plain")) == "plain"
