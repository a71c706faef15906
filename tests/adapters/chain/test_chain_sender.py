"""TxSender: nonce bookkeeping, fee bumps, refusals (embedded chain), nonce gaps (anvil).

Replacement of stuck transactions, reorganisations and nonce conflicts need a node that can
hold a transaction back: ``test_chain_anvil.py``. The nonce gaps a reorganisation deeper
than the finality depth leaves are here, each on its own anvil node.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.chain import ChainClient, derive_account, embedded_web3
from adapters.chain.backends import AnvilNode, rpc_web3
from adapters.chain.errors import ConfirmationTimeout, InvalidArgument, TransactionReverted
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


# ---------------------------------------------------------------------- nonce gaps (anvil)


def rpc(w3: Any, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(method, list(params))
    assert "error" not in response, response
    return response["result"]


@pytest.fixture
def dropped(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[ChainClient, int]]:
    """A client whose last transaction (a mint of 5, final) a reorganisation dropped.

    Yields the client (no fee bumps within the test's time: ``stuck_after_s`` 60 s) and the
    dropped transaction's nonce; the client's next nonce is one above the node's.
    """
    caplog.set_level(logging.WARNING)
    with AnvilNode() as node:
        w3 = rpc_web3(node.url)
        operator = derive_account("operator")
        client = ChainClient(w3, operator, poll_s=0.05, timeout_s=30)
        client.fund_eth(operator.address, 10**21)
        client.deploy_token("T", "T")
        first = client.mint(derive_account("receiver").address, 5)
        rpc(w3, "anvil_reorg", w3.eth.block_number - first.block_number + 1, [])
        assert w3.eth.get_transaction_count(operator.address, "pending") == first.nonce
        assert client.next_nonce() == first.nonce + 1
        yield client, first.nonce


def operator_txs(client: ChainClient) -> list[tuple[int, str, int]]:
    """(nonce, to, value [wei]) of every transaction the operator has in a block."""
    w3, me = client.w3, client.operator.address
    found = []
    for number in range(w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["from"] == me:
                found.append((int(tx["nonce"]), str(tx.get("to")), int(tx["value"])))
    return sorted(found)


@pytest.mark.integration
def test_after_a_deep_reorg_the_next_transaction_goes_out_at_the_nodes_nonce(
    dropped: tuple[ChainClient, int], caplog: pytest.LogCaptureFixture
) -> None:
    client, nonce = dropped
    receiver = derive_account("receiver").address
    again = client.mint(receiver, 7)
    assert again.nonce == nonce  # re-synchronised: no gap, nothing to fill or bump
    assert (again.replacements, again.gap_fillers) == (0, 0)
    assert "continuing at the node's nonce" in caplog.text
    assert client.token_balance(receiver) == 7  # the dropped mint of 5 is gone
    w3, me = client.w3, client.operator.address
    assert w3.eth.get_transaction_count(me) == w3.eth.get_transaction_count(me, "pending")
    assert client.next_nonce() == nonce + 1 == w3.eth.get_transaction_count(me)
    assert [n for n, _to, _v in operator_txs(client)] == list(range(nonce + 1))


@pytest.mark.integration
def test_a_transaction_already_behind_the_gap_is_mined_once_the_gap_is_filled(
    dropped: tuple[ChainClient, int],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reorganisation came after the check before signing: the gap is filled below it."""
    from adapters.chain.sender import TxSender

    monkeypatch.setattr(TxSender, "_usable_nonce", lambda self, sender: self.next_nonce(sender))
    client, nonce = dropped
    receiver = derive_account("receiver").address
    behind = client.mint(receiver, 7)
    assert behind.nonce == nonce + 1  # mined as signed, the same hash
    assert (behind.replacements, behind.gap_fillers) == (0, 1)
    assert "filling it with empty self-transfers" in caplog.text
    assert client.token_balance(receiver) == 7
    txs = operator_txs(client)
    assert [n for n, _to, _v in txs] == list(range(nonce + 2))
    assert txs[nonce] == (nonce, client.operator.address, 0)  # the filler moved nothing


@pytest.mark.integration
def test_without_closing_the_gap_the_transaction_is_only_bumped_until_the_timeout(
    dropped: tuple[ChainClient, int],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fault both fixes remove: fee bumps cannot mine a transaction behind a gap.

    Both fixes are turned off (the gap is met with a replacement, as before them).
    """
    from adapters.chain.sender import TxSender

    monkeypatch.setattr(TxSender, "_usable_nonce", lambda self, sender: self.next_nonce(sender))
    monkeypatch.setattr(TxSender, "_fill_gap", lambda self, flight, pending: self._replace(flight))
    client, nonce = dropped
    client.sender.stuck_after_s = 0.2
    client.sender.timeout_s = 3.0
    with pytest.raises(ConfirmationTimeout):
        client.mint(derive_account("receiver").address, 7)
    assert "stuck for" in caplog.text  # re-signed with higher fees, to no avail
    w3, me = client.w3, client.operator.address
    assert w3.eth.get_transaction_count(me) == nonce  # nothing mined since the reorg
