"""Settlement: escrow, exactly-once zero-sum settlement, rewards, roots, events, roles, pause.

Contract-level rejections are sent as raw transactions (``raw_settle``) so that the contract,
not the client's pre-checks, is what refuses them.
"""

from __future__ import annotations

import pytest
from chain_helpers import REWARD_CAP, REWARD_RATE, deploy_stack, digest, make_batch

from adapters.chain import ChainClient, SettlementStatus, derive_account, embedded_web3
from adapters.chain.encoding import Entry, pack_entry
from adapters.chain.errors import (
    AlreadySettled,
    ChainError,
    ConfirmationTimeout,
    InsufficientEscrow,
    InvalidAccount,
    InvalidSettlement,
    TransactionReverted,
)
from adapters.chain.gas import settle_gas_limit
from adapters.chain.settlement import net_rewards, net_transfers, on_chain_batch
from market.domain import ParticipantId

TOKEN = 10**6


def index(deployed, name: str) -> int:
    return deployed.client.settlement.functions.index_of(deployed.participants[name].address).call()


def raw_settle(deployed, interval_id, entries, *, sender=None, batch=b"\x11" * 32):
    """Send ``settle`` straight to the contract, bypassing the client's checks.

    ``entries`` are (name or index, amount, wh) triples, packed in the given order.
    """
    client = deployed.client
    words = []
    for who, amount, wh in entries:
        i = who if isinstance(who, int) else index(deployed, who)
        words.append(pack_entry(Entry(index=i, amount=amount, reward_wh=wh)))
    data = client.settlement.encode_abi(
        "settle", args=[interval_id, batch, words, b"\x22" * 32, b"\x33" * 32]
    )
    return client.sender.transact(
        sender or deployed.operator, client.settlement.address, data, settle_gas_limit(10)
    )[1]


def escrows(deployed):
    return {
        name: deployed.client.escrow_balance(p.address) for name, p in deployed.participants.items()
    }


def as_client(deployed, account) -> ChainClient:
    client = ChainClient(deployed.w3, account)
    client.attach(deployed.token_address, deployed.settlement_address)
    return client


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

    client.request_withdrawal(erin, 2 * TOKEN)
    assert client.available_credit(erin.address) == escrow + 3 * TOKEN
    assert client.escrow_balance(erin.address) == escrow + 5 * TOKEN
    client.withdraw(erin)
    assert client.token_balance(erin.address) == tokens - 3 * TOKEN
    assert client.escrow_balance(erin.address) == escrow + 3 * TOKEN
    assert client.available_credit(erin.address) == escrow + 3 * TOKEN
    assert client.total_escrow() == total + 3 * TOKEN
    assert client.token_balance(deployed.settlement_address) == client.total_escrow()
    with pytest.raises(TransactionReverted, match="no withdrawal requested"):
        client.withdraw(erin)


def test_withdraw_more_than_escrow_reverts(deployed) -> None:
    frank = deployed.participants["frank"]
    escrow = deployed.client.escrow_balance(frank.address)
    with pytest.raises(TransactionReverted, match="insufficient escrow"):
        deployed.client.request_withdrawal(frank, escrow + 1)
    assert deployed.client.escrow_balance(frank.address) == escrow


def test_a_withdrawal_request_cannot_outlive_a_debit(deployed) -> None:
    client = deployed.client
    carol = deployed.participants["carol"]
    escrow = client.escrow_balance(carol.address)
    client.request_withdrawal(carol, escrow)  # everything
    assert client.available_credit(carol.address) == 0
    raw_settle(deployed, deployed.next_interval(), [("bob", 1, 0), ("carol", -1, 0)])
    with pytest.raises(TransactionReverted, match="insufficient escrow"):
        client.withdraw(carol)
    client.request_withdrawal(carol, 0)  # cancel
    assert client.available_credit(carol.address) == escrow - 1


def test_deposit_without_tokens_reverts(deployed) -> None:
    poor = derive_account("no-tokens")
    deployed.client.fund_eth(poor.address, 10**18)
    with pytest.raises(TransactionReverted, match="exceeds balance"):
        deployed.client.deposit(poor, 1)
    assert deployed.client.escrow_balance(poor.address) == 0


def test_deposit_for_funds_several_escrows_from_one_wallet(deployed) -> None:
    client = deployed.client
    dave = deployed.participants["dave"]
    newcomers = [derive_account(f"funded-{i}").address for i in range(3)]
    wallet, total = client.token_balance(dave.address), client.total_escrow()
    client.deposit_for(dave, [(a, (i + 1) * TOKEN) for i, a in enumerate(newcomers)])
    assert [client.escrow_balance(a) for a in newcomers] == [TOKEN, 2 * TOKEN, 3 * TOKEN]
    assert client.token_balance(dave.address) == wallet - 6 * TOKEN
    assert client.total_escrow() == total + 6 * TOKEN
    states = client.account_states(newcomers)
    assert all(s.index > 0 for s in states.values())
    assert len({s.index for s in states.values()}) == 3


def test_withdrawal_delay_holds_the_money_until_it_matures() -> None:
    delayed = deploy_stack(embedded_web3(), participants=("alice", "bob"), withdrawal_delay_s=3600)
    client = delayed.client
    alice = delayed.participants["alice"]
    assert client.withdrawal_delay() == 3600
    client.request_withdrawal(alice, TOKEN)
    with pytest.raises(TransactionReverted, match="withdrawal not ready"):
        client.withdraw(alice)
    delayed.w3.provider.ethereum_tester.time_travel(  # type: ignore[attr-defined]
        delayed.w3.eth.get_block("latest")["timestamp"] + 3601
    )
    client.withdraw(alice)
    assert client.escrow_balance(alice.address) == 399 * TOKEN
    client.set_withdrawal_delay(0)
    assert client.withdrawal_delay() == 0


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
    batch, accounts = make_batch(interval, transfers)
    receipt = client.submit_settlement(batch, accounts)
    assert receipt.status is SettlementStatus.SETTLED
    assert receipt.status == "settled"
    assert receipt.batch_id == batch.batch_id
    assert receipt.interval_id == interval
    assert receipt.tx_hash.startswith("0x")
    assert receipt.nonce >= 0
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
    assert sorted(client.settled_transfers(interval)) == sorted(transfers)


def test_roots_and_batch_id_are_recorded_and_emitted(deployed) -> None:
    client = deployed.client
    p = deployed.participants
    interval = deployed.next_interval()
    assert not client.is_settled(interval)
    assert client.settled_batch(interval) == (bytes(32), bytes(32), bytes(32))

    batch, accounts = make_batch(
        interval,
        [(p["alice"].address, -5), (p["bob"].address, 5)],
        trades_root=digest("trades-root"),
        readings_root=digest("readings-root"),
    )
    receipt = client.submit_settlement(batch, accounts)
    batch_id, trades_root, readings_root = client.settled_batch(interval)
    assert batch_id == bytes.fromhex(batch.batch_id)
    assert trades_root == digest("trades-root")
    assert readings_root == digest("readings-root")

    (event,) = client.settled_events(interval_id=interval)
    assert event.interval_id == interval
    assert event.batch_id == batch.batch_id
    assert event.trades_root == digest("trades-root").hex()
    assert event.readings_root == digest("readings-root").hex()
    assert event.n_entries == 2
    assert event.rewards_minted == 0
    assert event.tx_hash == receipt.tx_hash
    assert event.block_number == receipt.block_number
    assert interval in {e.interval_id for e in client.settled_events()}
    assert client.settled_block(interval) == receipt.block_number


def test_second_settlement_of_an_interval_reverts_on_chain(deployed) -> None:
    interval = deployed.next_interval()
    raw_settle(deployed, interval, [("alice", -1, 0), ("bob", 1, 0)])
    before = escrows(deployed)
    with pytest.raises(TransactionReverted, match="interval already settled"):
        raw_settle(deployed, interval, [("alice", -1, 0), ("bob", 1, 0)])
    assert escrows(deployed) == before


def test_resubmitting_a_settled_batch_reports_it_without_sending(deployed) -> None:
    client = deployed.client
    p = deployed.participants
    interval = deployed.next_interval()
    batch, accounts = make_batch(
        interval,
        [(p["carol"].address, -7), (p["dave"].address, 7)],
        rewards=[(p["dave"].address, 500)],
    )
    first = client.submit_settlement(batch, accounts)
    before = escrows(deployed)
    block = deployed.w3.eth.block_number
    nonce = deployed.w3.eth.get_transaction_count(deployed.operator.address)

    # A restart with a fresh client (no cached state) must not pay twice.
    restarted = as_client(deployed, deployed.operator)
    again = restarted.submit_settlement(batch, accounts)

    assert again.status is SettlementStatus.ALREADY_SETTLED
    assert (
        again.tx_hash,
        again.block_number,
        again.gas_used,
        again.batch_id,
        again.nonce,
        again.rewards_minted,
    ) == (
        first.tx_hash,
        first.block_number,
        first.gas_used,
        first.batch_id,
        first.nonce,
        first.rewards_minted,
    )
    assert first.rewards_minted == 500 * REWARD_RATE // 1000
    assert deployed.w3.eth.block_number == block
    assert deployed.w3.eth.get_transaction_count(deployed.operator.address) == nonce
    assert escrows(deployed) == before


def test_settled_interval_with_another_batch_id_raises_already_settled(deployed) -> None:
    client = deployed.client
    p = deployed.participants
    interval = deployed.next_interval()
    transfers = [(p["alice"].address, -1), (p["bob"].address, 1)]
    first = make_batch(interval, transfers, label="first")
    second = make_batch(interval, transfers, label="second")
    client.submit_settlement(*first)
    with pytest.raises(AlreadySettled) as info:
        client.submit_settlement(*second)
    assert info.value.interval_id == interval
    assert info.value.recorded_batch_id == first[0].batch_id
    assert info.value.attempted_batch_id == second[0].batch_id


def test_amounts_that_do_not_sum_to_zero_revert(deployed) -> None:
    interval = deployed.next_interval()
    before = escrows(deployed)
    with pytest.raises(TransactionReverted, match="do not sum to zero"):
        raw_settle(deployed, interval, [("alice", -1, 0), ("bob", 2, 0)])
    with pytest.raises(TransactionReverted, match="do not sum to zero"):
        raw_settle(deployed, interval, [("bob", 1, 0)])
    assert escrows(deployed) == before
    assert not deployed.client.is_settled(interval)
    # The client refuses such amounts before they reach the chain.
    with pytest.raises(InvalidSettlement, match="sum to zero"):
        net_transfers([(deployed.participants["bob"].address, 1)])


def test_entries_out_of_order_twice_empty_or_unknown_revert(deployed) -> None:
    interval = deployed.next_interval()
    a, b = sorted([index(deployed, "alice"), index(deployed, "bob")])
    with pytest.raises(TransactionReverted, match="increasing account order"):
        raw_settle(deployed, interval, [(b, 1, 0), (a, -1, 0)])
    with pytest.raises(TransactionReverted, match="increasing account order"):
        raw_settle(deployed, interval, [(a, 1, 0), (a, -1, 0)])
    count = deployed.client.settlement.functions.account_count().call()
    with pytest.raises(TransactionReverted, match="unknown account"):
        raw_settle(deployed, interval, [(a, -1, 0), (count + 1, 1, 0)])
    # an entry with neither money nor energy, packed by hand (pack_entry refuses it)
    data = deployed.client.settlement.encode_abi(
        "settle", args=[interval, b"\x01" * 32, [a << 160], b"\x00" * 32, b"\x00" * 32]
    )
    with pytest.raises(TransactionReverted, match="empty entry"):
        deployed.client.sender.transact(
            deployed.operator, deployed.client.settlement.address, data, 400_000
        )
    assert not deployed.client.is_settled(interval)


def test_negative_escrow_reverts_on_chain(deployed) -> None:
    p = deployed.participants
    interval = deployed.next_interval()
    alice_escrow = deployed.client.escrow_balance(p["alice"].address)
    before = escrows(deployed)
    entries = sorted(
        [("bob", alice_escrow + 1, 0), ("alice", -(alice_escrow + 1), 0)],
        key=lambda e: index(deployed, e[0]),
    )
    with pytest.raises(TransactionReverted, match="insufficient escrow"):
        raw_settle(deployed, interval, entries)
    assert escrows(deployed) == before
    assert not deployed.client.is_settled(interval)


def test_client_names_the_account_short_of_escrow_and_sends_nothing(deployed) -> None:
    client = deployed.client
    p = deployed.participants
    carol = p["carol"].address
    available = client.escrow_balance(carol)
    block = deployed.w3.eth.block_number
    batch = make_batch(
        deployed.next_interval(), [(p["dave"].address, available + 10), (carol, -(available + 10))]
    )
    with pytest.raises(InsufficientEscrow) as info:
        client.submit_settlement(*batch)
    assert info.value.account == carol
    assert info.value.required == available + 10
    assert info.value.available == available
    assert carol in str(info.value)
    assert deployed.w3.eth.block_number == block


def test_an_interval_without_transfers_still_records_its_roots(deployed) -> None:
    interval = deployed.next_interval()
    receipt = deployed.client.submit_settlement(
        *make_batch(interval, trades_root=digest("no-trades"), readings_root=digest("readings"))
    )
    assert receipt.status is SettlementStatus.SETTLED
    assert deployed.client.settled_batch(interval).readings_root == digest("readings")
    assert deployed.client.settled_transfers(interval) == ()


def test_unregistered_accounts_are_registered_before_settling(deployed) -> None:
    client = deployed.client
    alice = deployed.participants["alice"].address
    seller = derive_account("fresh-seller").address
    assert client.account_states([seller])[seller].index == 0
    receipt = client.submit_settlement(
        *make_batch(deployed.next_interval(), [(alice, -9), (seller, 9)], rewards=[(seller, 2_000)])
    )
    state = client.account_states([seller])[seller]
    assert state.index > 0
    assert state.escrow == 9
    assert state.unclaimed_rewards == 2 * REWARD_RATE
    assert receipt.rewards_minted == 2 * REWARD_RATE


def test_largest_batch_of_fresh_accounts_fits_its_gas_limit(deployed) -> None:
    # Worst case per account: every credit writes a fresh storage slot.
    alice = deployed.participants["alice"].address
    fresh = [derive_account(f"fresh-{i}").address for i in range(255)]
    transfers = [(alice, -len(fresh)), *((address, 1) for address in fresh)]
    receipt = deployed.client.submit_settlement(*make_batch(deployed.next_interval(), transfers))
    assert receipt.status is SettlementStatus.SETTLED
    assert receipt.gas_used < settle_gas_limit(256, 255)
    assert deployed.client.escrow_balance(fresh[-1]) == 1

    too_many = [(alice, -1025), *((derive_account(f"x{i}").address, 1) for i in range(1025))]
    with pytest.raises(InvalidSettlement, match="at most 1024 accounts"):
        deployed.client.submit_settlement(*make_batch(deployed.next_interval(), too_many))


# ---------------------------------------------------------------------- rewards


def test_rewards_are_minted_at_the_rate_in_the_settlement_transaction(deployed) -> None:
    client = deployed.client
    p = deployed.participants
    bob, carol = p["bob"].address, p["carol"].address
    supply = client.reward_supply()
    held = client.total_rewards()
    before = client.unclaimed_rewards(bob), client.unclaimed_rewards(carol)
    receipt = client.submit_settlement(
        *make_batch(
            deployed.next_interval(),
            [(p["alice"].address, -100), (bob, 100)],
            rewards=[(bob, 1_500), (carol, 333), (bob.lower(), 500)],  # one account: summed
        )
    )
    assert receipt.rewards_minted == 2_000 * REWARD_RATE // 1000 + 333 * REWARD_RATE // 1000
    assert client.reward_supply() == supply + receipt.rewards_minted
    assert client.total_rewards() == held + receipt.rewards_minted
    assert client.unclaimed_rewards(bob) == before[0] + 2 * REWARD_RATE
    assert client.unclaimed_rewards(carol) == before[1] + 333 * REWARD_RATE // 1000
    assert client.reward_balance(deployed.settlement_address) == client.total_rewards()

    wallet = client.reward_balance(bob)
    client.claim_rewards(p["bob"])
    assert client.reward_balance(bob) == wallet + before[0] + 2 * REWARD_RATE
    assert client.unclaimed_rewards(bob) == 0
    with pytest.raises(TransactionReverted, match="no rewards"):
        client.claim_rewards(p["bob"])


def test_rewards_above_the_cap_are_scaled_down_pro_rata(deployed) -> None:
    client = deployed.client
    p = deployed.participants
    dave, erin = p["dave"].address, p["erin"].address
    # 60 kWh + 40 kWh at 1 PGR/kWh = 100 PGR, cap 50 PGR: each gets half, floored.
    before = client.unclaimed_rewards(dave), client.unclaimed_rewards(erin)
    receipt = client.submit_settlement(
        *make_batch(deployed.next_interval(), rewards=[(dave, 60_000), (erin, 40_000)])
    )
    assert receipt.rewards_minted == REWARD_CAP
    assert client.unclaimed_rewards(dave) == before[0] + 30 * REWARD_RATE
    assert client.unclaimed_rewards(erin) == before[1] + 20 * REWARD_RATE
    assert client.settled_rewards(client.settled_events()[-1].interval_id) in (
        ((dave, 60_000), (erin, 40_000)),
        ((erin, 40_000), (dave, 60_000)),
    )


def test_reward_policy_is_admin_only(deployed) -> None:
    client = deployed.client
    assert client.reward_policy().rate == REWARD_RATE
    assert client.reward_policy().cap == REWARD_CAP
    assert client.reward_policy().reward_for(1_500) == 1_500_000
    with pytest.raises(TransactionReverted, match="missing role"):
        as_client(deployed, deployed.participants["bob"]).set_reward_policy(10**9, 10**12)
    client.set_reward_policy(2 * REWARD_RATE, REWARD_CAP)
    try:
        assert client.reward_policy().rate == 2 * REWARD_RATE
    finally:
        client.set_reward_policy(REWARD_RATE, REWARD_CAP)


def test_a_deployment_without_reward_token_settles_money_only() -> None:
    w3 = embedded_web3()
    operator = derive_account("operator")
    client = ChainClient(w3, operator)
    client.fund_eth(operator.address, 10**20)
    token = client.deploy_token("T", "T")
    client.deploy_settlement(token)
    assert client.reward_token is None
    assert client.reward_balance(operator.address) == 0
    receipt = client.submit_settlement(*make_batch(900, rewards=[(operator.address, 1)]))
    assert receipt.status is SettlementStatus.SETTLED
    assert receipt.rewards_minted == 0
    assert client.settled_rewards(900) == ()
    assert client.settled_batch(900).batch_id.hex() == receipt.batch_id
    with pytest.raises(TransactionReverted, match="no reward token"):
        client.set_reward_policy(1, 1)


def test_settlement_refuses_a_token_without_6_decimals() -> None:
    w3 = embedded_web3()
    operator = derive_account("operator")
    client = ChainClient(w3, operator)
    client.fund_eth(operator.address, 10**20)
    client.deploy_token("T", "T")
    # the settlement contract itself is no ERC-20: decimals() is missing, the deploy reverts
    settlement = client.deploy_settlement(client.token.address)
    with pytest.raises(TransactionReverted):
        client.deploy_settlement(settlement)


# ---------------------------------------------------------------------- roles and pause


def test_non_operator_cannot_settle(deployed) -> None:
    interval = deployed.next_interval()
    with pytest.raises(TransactionReverted, match="account is missing role"):
        raw_settle(
            deployed,
            interval,
            [("alice", -1, 0), ("bob", 1, 0)],
            sender=deployed.participants["bob"],
        )
    assert not deployed.client.is_settled(interval)


def test_admin_grants_and_revokes_the_operator_role(deployed) -> None:
    p = deployed.participants
    client = deployed.client
    new_operator = derive_account("next-operator")
    client.fund_eth(new_operator.address, 10**19)
    assert client.is_admin(deployed.operator.address)
    assert client.is_operator(deployed.operator.address)
    assert not client.is_operator(new_operator.address)

    with pytest.raises(TransactionReverted, match="missing role"):
        as_client(deployed, p["bob"]).grant_operator(p["bob"].address)

    client.grant_operator(new_operator.address)
    successor = as_client(deployed, new_operator)
    transfers = [(p["alice"].address, -1), (p["bob"].address, 1)]
    receipt = successor.submit_settlement(*make_batch(deployed.next_interval(), transfers))
    assert receipt.status is SettlementStatus.SETTLED

    client.revoke_operator(new_operator.address)
    assert not client.is_operator(new_operator.address)
    with pytest.raises(TransactionReverted, match="missing role"):
        successor.submit_settlement(*make_batch(deployed.next_interval(), transfers))


def test_separate_admin_and_operator_keys() -> None:
    w3 = embedded_web3()
    admin, operator = derive_account("the-admin"), derive_account("the-operator")
    client = ChainClient(w3, operator, admin=admin)
    client.fund_eth(admin.address, 10**20)
    client.fund_eth(operator.address, 10**20)
    client.deploy_all(reward_rate=1, reward_cap=1)
    assert client.is_admin(admin.address)
    assert not client.is_admin(operator.address)
    assert client.is_operator(operator.address)
    assert not client.is_operator(admin.address)
    assert client.token.functions.owner().call() == admin.address
    client.grant_admin(operator.address)
    assert client.is_admin(operator.address)
    client.revoke_admin(operator.address)
    assert not client.is_admin(operator.address)


def test_pause_stops_settlements_and_deposits_but_not_withdrawals(deployed) -> None:
    client = deployed.client
    p = deployed.participants
    with pytest.raises(TransactionReverted, match="missing role"):
        as_client(deployed, p["bob"]).pause()
    client.pause()
    try:
        assert client.is_paused()
        interval = deployed.next_interval()
        batch = make_batch(interval, [(p["alice"].address, -1), (p["bob"].address, 1)])
        with pytest.raises(TransactionReverted, match="contract is paused"):
            client.submit_settlement(*batch)
        with pytest.raises(TransactionReverted, match="contract is paused"):
            client.deposit(p["frank"], 1)
        escrow = client.escrow_balance(p["frank"].address)
        client.request_withdrawal(p["frank"], 1)
        client.withdraw(p["frank"])
        assert client.escrow_balance(p["frank"].address) == escrow - 1
        with pytest.raises(TransactionReverted, match="contract is paused"):
            client.pause()
    finally:
        client.unpause()
    assert not client.is_paused()
    with pytest.raises(TransactionReverted, match="contract is not paused"):
        client.unpause()


# ---------------------------------------------------------------------- client plumbing


def test_attach_refuses_contracts_that_are_not_ours(deployed) -> None:
    client = ChainClient(deployed.w3, deployed.operator)
    with pytest.raises(ChainError, match="does not hold the committed Settlement"):
        client.attach(deployed.token_address, deployed.token_address)
    with pytest.raises(ChainError, match="holds token"):
        client.attach(deployed.reward_address, deployed.settlement_address)
    with pytest.raises(ChainError, match="no token contract"):
        client.total_supply()
    client.attach(deployed.token_address, deployed.settlement_address)
    assert client.deployment().reward_token == deployed.reward_address


def test_nonce_cache_recovers_after_another_client_sent(deployed) -> None:
    other = as_client(deployed, deployed.operator)
    receiver = derive_account("nonce-receiver").address
    deployed.client.mint(receiver, 1)  # warms the cached nonce of the fixture's client
    other.mint(receiver, 1)  # makes that cached nonce stale
    deployed.client.mint(receiver, 1)  # rejected once for its nonce, re-read, resent
    assert deployed.client.token_balance(receiver) == 3
    deployed.minted += 3


def test_demo_accounts_are_deterministic() -> None:
    assert derive_account("alice").address == derive_account("alice").address
    assert derive_account("alice").address != derive_account("bob").address
    with pytest.raises(InvalidAccount, match="non-empty"):
        derive_account("")


def test_net_transfers_nets_per_account_and_checks_inputs() -> None:
    a, b, c = (derive_account(n).address for n in ("a", "b", "c"))
    assert net_transfers([(a, -5), (b, 3), (a, 2), (c, 0), (b.lower(), 0)]) == ((a, -3), (b, 3))
    assert net_transfers([(a, 4), (a, -4)]) == ()
    with pytest.raises(InvalidAccount, match="not an address"):
        net_transfers([("0x1234", 0)])
    with pytest.raises(InvalidSettlement, match="must be an int"):
        net_transfers([(a, 1.0)])  # type: ignore[list-item]
    with pytest.raises(InvalidSettlement, match="sum to zero"):
        net_transfers([(a, 1)])
    assert net_rewards([(a, 5), (b, 0), (a.lower(), 1)]) == ((a, 6),)
    with pytest.raises(InvalidSettlement, match=">= 0 Wh"):
        net_rewards([(a, -1)])


def test_a_batch_is_translated_into_the_contracts_terms() -> None:
    a, b, c = (derive_account(n).address for n in ("a", "b", "c"))
    batch, accounts = make_batch(
        1_782_000_000, [(a, -5), (b, 3), (b.lower(), 2), (c, 0)], rewards=[(b, 7), (c, 1)]
    )
    call = on_chain_batch(batch, accounts, with_rewards=True)
    assert call.interval_id == 1_782_000_000
    assert call.batch_id == bytes.fromhex(batch.batch_id)
    assert (call.trades_root, call.readings_root) == (batch.trades_root, batch.readings_root)
    assert call.transfers == ((a, -5), (b, 5))  # two participants, one account: netted
    assert call.rewards == ((b, 7), (c, 1))
    assert call.accounts == [a, b, c]
    assert on_chain_batch(batch, accounts, with_rewards=False).rewards == ()
    with pytest.raises(InvalidSettlement, match="no chain account"):
        on_chain_batch(batch, {ParticipantId(a): a}, with_rewards=True)


def test_submit_settlement_rejects_malformed_batches(deployed) -> None:
    client = deployed.client
    with pytest.raises(InvalidSettlement, match="trades_root must be 32 bytes"):
        client.submit_settlement(*make_batch(1, trades_root=b"short"))
    with pytest.raises(InvalidSettlement, match="uint256"):
        client.submit_settlement(*make_batch(-1))
    with pytest.raises(ValueError, match="readings_root"):  # an InvalidArgument is a ValueError
        client.submit_settlement(*make_batch(1, readings_root=bytes(31)))


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
    deployed.minted += 1
