"""Settlement: escrow, exactly-once zero-sum settlement, roots, events, roles.

Contract-level rejections are sent as raw transactions (``client._transact``) so that the
contract, not the client's pre-checks, is what refuses them.
"""

from __future__ import annotations

import hashlib

import pytest

from adapters.chain.client import (
    MAX_SETTLEMENT_ACCOUNTS,
    ChainClient,
    SettlementStatus,
    derive_account,
    net_transfers,
    settle_gas_limit,
)
from adapters.chain.errors import (
    AlreadySettled,
    ChainError,
    ConfirmationTimeout,
    InsufficientEscrow,
    TransactionReverted,
)

TOKEN = 10**6


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def raw_settle(deployed, interval_id, accounts, amounts, *, sender=None, batch=b"\x11" * 32):
    """Send ``settle`` straight to the contract, bypassing the client's checks."""
    client = deployed.client
    data = client.settlement.encode_abi(
        "settle",
        args=[interval_id, batch, accounts, amounts, b"\x22" * 32, b"\x33" * 32],
    )
    return client._transact(
        sender or deployed.operator, client.settlement.address, data, settle_gas_limit(10)
    )


def escrows(deployed):
    return {
        name: deployed.client.escrow_balance(p.address) for name, p in deployed.participants.items()
    }


# ---------------------------------------------------------------------- escrow


def test_deposit_and_withdraw_move_tokens_in_and_out_of_escrow(deployed) -> None:
    client = deployed.client
    erin = deployed.participants["erin"]
    tokens, escrow = client.token_balance(erin.address), client.escrow_balance(erin.address)
    total = client.total_escrow()

    client.deposit(erin, 5 * TOKEN)
    assert client.token_balance(erin.address) == tokens - 5 * TOKEN
    assert client.escrow_balance(erin.address) == escrow + 5 * TOKEN
    assert client.total_escrow() == total + 5 * TOKEN

    client.withdraw(erin, 2 * TOKEN)
    assert client.token_balance(erin.address) == tokens - 3 * TOKEN
    assert client.escrow_balance(erin.address) == escrow + 3 * TOKEN
    assert client.total_escrow() == total + 3 * TOKEN
    assert client.token_balance(deployed.settlement_address) == client.total_escrow()


def test_withdraw_more_than_escrow_reverts(deployed) -> None:
    frank = deployed.participants["frank"]
    escrow = deployed.client.escrow_balance(frank.address)
    with pytest.raises(TransactionReverted, match="insufficient escrow"):
        deployed.client.withdraw(frank, escrow + 1)
    assert deployed.client.escrow_balance(frank.address) == escrow


def test_deposit_without_tokens_reverts(deployed) -> None:
    poor = derive_account("no-tokens")
    deployed.client.fund_eth(poor.address, 10**18)
    with pytest.raises(TransactionReverted, match="exceeds balance"):
        deployed.client.deposit(poor, 1)
    assert deployed.client.escrow_balance(poor.address) == 0


# ---------------------------------------------------------------------- settle


def test_settle_moves_escrow_exactly_and_conserves_the_total(deployed) -> None:
    client = deployed.client
    p = deployed.participants
    before, total = escrows(deployed), client.total_escrow()
    transfers = [
        (p["alice"].address, -3 * TOKEN),
        (p["bob"].address, 2 * TOKEN),
        (p["carol"].address, TOKEN - 1),
        (p["dave"].address, 1),
    ]
    interval = deployed.next_interval()
    receipt = client.submit_settlement(
        interval, digest("batch-1"), transfers, digest("trades"), digest("readings")
    )
    assert receipt.status is SettlementStatus.SETTLED
    assert receipt.status == "settled"
    assert receipt.batch_id == digest("batch-1").hex()
    assert receipt.interval_id == interval
    assert receipt.tx_hash.startswith("0x")
    assert 0 < receipt.gas_used <= settle_gas_limit(4)

    after = escrows(deployed)
    expected = dict(before)
    expected["alice"] -= 3 * TOKEN
    expected["bob"] += 2 * TOKEN
    expected["carol"] += TOKEN - 1
    expected["dave"] += 1
    assert after == expected
    assert client.total_escrow() == total
    assert client.is_settled(interval)
    assert client.settled_transfers(interval) == tuple(transfers)


def test_roots_and_batch_id_are_recorded_and_emitted(deployed) -> None:
    client = deployed.client
    p = deployed.participants
    interval = deployed.next_interval()
    assert not client.is_settled(interval)
    assert client.settled_batch(interval) == (bytes(32), bytes(32), bytes(32))

    receipt = client.submit_settlement(
        interval,
        digest("batch-roots"),
        [(p["alice"].address, -5), (p["bob"].address, 5)],
        digest("trades-root"),
        digest("readings-root"),
    )
    batch_id, trades_root, readings_root = client.settled_batch(interval)
    assert batch_id == digest("batch-roots")
    assert trades_root == digest("trades-root")
    assert readings_root == digest("readings-root")

    (event,) = client.settled_events(interval_id=interval)
    assert event.interval_id == interval
    assert event.batch_id == digest("batch-roots").hex()
    assert event.trades_root == digest("trades-root").hex()
    assert event.readings_root == digest("readings-root").hex()
    assert event.n_accounts == 2
    assert event.tx_hash == receipt.tx_hash
    assert event.block_number == receipt.block_number
    assert interval in {e.interval_id for e in client.settled_events()}


def test_second_settlement_of_an_interval_reverts_on_chain(deployed) -> None:
    p = deployed.participants
    interval = deployed.next_interval()
    raw_settle(deployed, interval, [p["alice"].address, p["bob"].address], [-1, 1])
    before = escrows(deployed)
    with pytest.raises(TransactionReverted, match="interval already settled"):
        raw_settle(deployed, interval, [p["alice"].address, p["bob"].address], [-1, 1])
    assert escrows(deployed) == before


def test_resubmitting_a_settled_batch_reports_it_without_sending(deployed) -> None:
    client = deployed.client
    p = deployed.participants
    interval = deployed.next_interval()
    args = (
        interval,
        digest("batch-once"),
        [(p["carol"].address, -7), (p["dave"].address, 7)],
        digest("t"),
        digest("r"),
    )
    first = client.submit_settlement(*args)
    before = escrows(deployed)
    block = deployed.w3.eth.block_number
    nonce = deployed.w3.eth.get_transaction_count(deployed.operator.address)

    # A restart with a fresh client (no cached state) must not pay twice.
    restarted = ChainClient(deployed.w3, deployed.operator)
    restarted.attach(deployed.token_address, deployed.settlement_address)
    again = restarted.submit_settlement(*args)

    assert again.status is SettlementStatus.ALREADY_SETTLED
    assert (again.tx_hash, again.block_number, again.gas_used, again.batch_id) == (
        first.tx_hash,
        first.block_number,
        first.gas_used,
        first.batch_id,
    )
    assert deployed.w3.eth.block_number == block
    assert deployed.w3.eth.get_transaction_count(deployed.operator.address) == nonce
    assert escrows(deployed) == before


def test_settled_interval_with_another_batch_id_raises_already_settled(deployed) -> None:
    client = deployed.client
    p = deployed.participants
    interval = deployed.next_interval()
    transfers = [(p["alice"].address, -1), (p["bob"].address, 1)]
    client.submit_settlement(interval, digest("first"), transfers, digest("t"), digest("r"))
    with pytest.raises(AlreadySettled) as info:
        client.submit_settlement(interval, digest("second"), transfers, digest("t"), digest("r"))
    assert info.value.interval_id == interval
    assert info.value.recorded_batch_id == digest("first").hex()
    assert info.value.attempted_batch_id == digest("second").hex()


def test_non_operator_cannot_settle(deployed) -> None:
    p = deployed.participants
    interval = deployed.next_interval()
    with pytest.raises(TransactionReverted, match="caller is not the operator"):
        raw_settle(
            deployed, interval, [p["alice"].address, p["bob"].address], [-1, 1], sender=p["bob"]
        )
    assert not deployed.client.is_settled(interval)


def test_amounts_that_do_not_sum_to_zero_revert(deployed) -> None:
    p = deployed.participants
    interval = deployed.next_interval()
    before = escrows(deployed)
    with pytest.raises(TransactionReverted, match="do not sum to zero"):
        raw_settle(deployed, interval, [p["alice"].address, p["bob"].address], [-1, 2])
    with pytest.raises(TransactionReverted, match="do not sum to zero"):
        raw_settle(deployed, interval, [p["bob"].address], [1])
    assert escrows(deployed) == before
    assert not deployed.client.is_settled(interval)
    # The client refuses such a batch before it reaches the chain.
    with pytest.raises(ValueError, match="sum to zero"):
        deployed.client.submit_settlement(
            interval, digest("b"), [(p["bob"].address, 1)], digest("t"), digest("r")
        )


def test_lengths_that_differ_revert(deployed) -> None:
    p = deployed.participants
    with pytest.raises(TransactionReverted, match="differ in length"):
        raw_settle(
            deployed,
            deployed.next_interval(),
            [p["alice"].address, p["bob"].address, p["carol"].address],
            [-1, 1],
        )


def test_negative_escrow_reverts_on_chain(deployed) -> None:
    p = deployed.participants
    interval = deployed.next_interval()
    alice_escrow = deployed.client.escrow_balance(p["alice"].address)
    before = escrows(deployed)
    with pytest.raises(TransactionReverted, match="insufficient escrow"):
        raw_settle(
            deployed,
            interval,
            [p["bob"].address, p["alice"].address],
            [alice_escrow + 1, -(alice_escrow + 1)],
        )
    assert escrows(deployed) == before
    assert not deployed.client.is_settled(interval)


def test_client_names_the_account_short_of_escrow_and_sends_nothing(deployed) -> None:
    client = deployed.client
    p = deployed.participants
    carol = p["carol"].address
    available = client.escrow_balance(carol)
    block = deployed.w3.eth.block_number
    with pytest.raises(InsufficientEscrow) as info:
        client.submit_settlement(
            deployed.next_interval(),
            digest("overdraft"),
            [(p["dave"].address, available + 10), (carol, -(available + 10))],
            digest("t"),
            digest("r"),
        )
    assert info.value.account == carol
    assert info.value.required == available + 10
    assert info.value.available == available
    assert carol in str(info.value)
    assert deployed.w3.eth.block_number == block


def test_an_interval_without_transfers_still_records_its_roots(deployed) -> None:
    interval = deployed.next_interval()
    receipt = deployed.client.submit_settlement(
        interval, digest("empty"), [], digest("no-trades"), digest("readings")
    )
    assert receipt.status is SettlementStatus.SETTLED
    assert deployed.client.settled_batch(interval).readings_root == digest("readings")
    assert deployed.client.settled_transfers(interval) == ()


def test_operator_role_is_transferable_by_the_operator_only(deployed) -> None:
    p = deployed.participants
    new_operator = derive_account("next-operator")
    deployed.client.fund_eth(new_operator.address, 10**19)

    as_bob = ChainClient(deployed.w3, p["bob"])
    as_bob.attach(deployed.token_address, deployed.settlement_address)
    with pytest.raises(TransactionReverted, match="caller is not the operator"):
        as_bob.transfer_operator(p["bob"].address)

    deployed.client.transfer_operator(new_operator.address)
    successor = ChainClient(deployed.w3, new_operator)
    successor.attach(deployed.token_address, deployed.settlement_address)
    try:
        assert successor.settlement.functions.operator().call() == new_operator.address
        transfers = [(p["alice"].address, -1), (p["bob"].address, 1)]
        receipt = successor.submit_settlement(
            deployed.next_interval(), digest("new-op"), transfers, digest("t"), digest("r")
        )
        assert receipt.status is SettlementStatus.SETTLED
        with pytest.raises(TransactionReverted, match="caller is not the operator"):
            deployed.client.submit_settlement(
                deployed.next_interval(), digest("old-op"), transfers, digest("t"), digest("r")
            )
    finally:
        successor.transfer_operator(deployed.operator.address)
    assert deployed.client.settlement.functions.operator().call() == deployed.operator.address


# ---------------------------------------------------------------------- client plumbing


def test_attach_refuses_contracts_that_are_not_ours(deployed) -> None:
    client = ChainClient(deployed.w3, deployed.operator)
    with pytest.raises(ChainError, match="does not hold the committed Settlement"):
        client.attach(deployed.token_address, deployed.token_address)
    with pytest.raises(ChainError, match="no token contract"):
        client.total_supply()


def test_nonce_cache_recovers_after_another_client_sent(deployed) -> None:
    other = ChainClient(deployed.w3, deployed.operator)
    other.attach(deployed.token_address, deployed.settlement_address)
    receiver = derive_account("nonce-receiver").address
    deployed.client.mint(receiver, 1)  # warms the cached nonce of the fixture's client
    other.mint(receiver, 1)  # makes that cached nonce stale
    deployed.client.mint(receiver, 1)  # rejected once for its nonce, re-read, resent
    assert deployed.client.token_balance(receiver) == 3
    deployed.minted += 3


def test_demo_accounts_are_deterministic() -> None:
    assert derive_account("alice").address == derive_account("alice").address
    assert derive_account("alice").address != derive_account("bob").address
    with pytest.raises(ValueError, match="non-empty"):
        derive_account("")


def test_net_transfers_nets_per_account_and_checks_inputs() -> None:
    a, b, c = (derive_account(n).address for n in ("a", "b", "c"))
    assert net_transfers([(a, -5), (b, 3), (a, 2), (c, 0), (b.lower(), 0)]) == ((a, -3), (b, 3))
    assert net_transfers([(a, 4), (a, -4)]) == ()
    with pytest.raises(ValueError, match="not an address"):
        net_transfers([("0x1234", 0)])
    with pytest.raises(ValueError, match="must be an int"):
        net_transfers([(a, 1.0)])  # type: ignore[list-item]


def test_submit_settlement_rejects_malformed_arguments(deployed) -> None:
    client = deployed.client
    with pytest.raises(ValueError, match="batch_id must be 32 bytes"):
        client.submit_settlement(1, b"short", [], digest("t"), digest("r"))
    with pytest.raises(ValueError, match="uint256"):
        client.submit_settlement(-1, digest("b"), [], digest("t"), digest("r"))


def test_largest_batch_of_fresh_accounts_fits_its_gas_limit(deployed) -> None:
    # Worst case per account: every credit writes a fresh escrow slot.
    alice = deployed.participants["alice"].address
    fresh = [derive_account(f"fresh-{i}").address for i in range(MAX_SETTLEMENT_ACCOUNTS - 1)]
    transfers = [(alice, -len(fresh)), *((address, 1) for address in fresh)]
    receipt = deployed.client.submit_settlement(
        deployed.next_interval(), digest("largest"), transfers, digest("t"), digest("r")
    )
    assert receipt.status is SettlementStatus.SETTLED
    assert receipt.gas_used < settle_gas_limit(MAX_SETTLEMENT_ACCOUNTS)
    assert deployed.client.escrow_balance(fresh[-1]) == 1

    one_more = [*fresh, derive_account("one-too-many").address]
    too_many = [(alice, -len(one_more)), *((address, 1) for address in one_more)]
    with pytest.raises(ValueError, match="at most 256 accounts"):
        deployed.client.submit_settlement(
            deployed.next_interval(), digest("too-many"), too_many, digest("t"), digest("r")
        )


def test_confirmations_wait_for_blocks_on_top_and_time_out(deployed) -> None:
    patient = ChainClient(
        deployed.w3, deployed.operator, confirmations=1, timeout_s=0.3, poll_s=0.05
    )
    patient.attach(deployed.token_address, deployed.settlement_address)
    # The embedded chain mines a block per transaction only, so no block comes on top.
    with pytest.raises(ConfirmationTimeout) as info:
        patient.mint(derive_account("confirm-receiver").address, 1)
    assert isinstance(info.value, TimeoutError)
    assert info.value.tx_hash.startswith("0x")
