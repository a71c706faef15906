"""Property: random zero-sum batches never create or destroy money (embedded chain).

After any sequence of settlements, sum(wallet balances) + total escrow == minted supply,
each escrow moves by exactly its account's net amount, rewards follow the rate and the cap,
and a batch that would overdraw an escrow changes nothing. (The stateful test in
``test_chain_stateful.py`` mixes in deposits, withdrawals, pauses and role changes.)
"""

from __future__ import annotations

import pytest
from chain_helpers import REWARD_CAP, REWARD_RATE, make_batch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from adapters.chain import SettlementStatus
from adapters.chain.errors import InsufficientEscrow
from adapters.chain.settlement import net_rewards, net_transfers

TOKEN = 10**6
N_PARTICIPANTS = 6

payments = st.lists(
    st.tuples(
        st.integers(0, N_PARTICIPANTS - 1),  # payer
        st.integers(0, N_PARTICIPANTS - 1),  # payee (may be the payer: nets to zero)
        st.integers(1, 300 * TOKEN),  # amount [token base units]
    ),
    min_size=0,
    max_size=8,
)


def balances(deployed, addresses):
    client = deployed.client
    wallets = {a: client.token_balance(a) for a in addresses}
    escrow = {a: client.escrow_balance(a) for a in addresses}
    return wallets, escrow


energies = st.lists(
    st.tuples(st.integers(0, N_PARTICIPANTS - 1), st.integers(0, 40_000)), max_size=4
)


@settings(max_examples=15, deadline=None)
@given(batch=payments, overdraw=st.none() | st.integers(0, N_PARTICIPANTS - 1), energy=energies)
def test_random_zero_sum_batches_conserve_money(deployed, batch, overdraw, energy) -> None:
    client = deployed.client
    addresses = [p.address for p in deployed.participants.values()]
    assert len(addresses) == N_PARTICIPANTS
    transfers = []
    for payer, payee, amount in batch:
        transfers += [(addresses[payer], -amount), (addresses[payee], amount)]
    wallets_before, escrow_before = balances(deployed, addresses)
    if overdraw is not None:  # one more payment, larger than the payer's whole escrow
        payer, payee = addresses[overdraw], addresses[(overdraw + 1) % N_PARTICIPANTS]
        amount = escrow_before[payer] + 1
        transfers += [(payer, -amount), (payee, amount)]
    interval = deployed.next_interval()
    rewards = [(addresses[who], wh) for who, wh in energy]
    settlement = make_batch(
        interval, transfers, rewards=rewards, trades_root=b"\x01" * 32, readings_root=b"\x02" * 32
    )
    unclaimed_before = {a: client.unclaimed_rewards(a) for a in addresses}
    reward_supply = client.reward_supply()

    net = net_transfers(transfers)
    overdrawn = [a for a, amount in net if escrow_before[a] < -amount]
    event("overdrawn" if overdrawn else "settled")
    if overdrawn:
        with pytest.raises(InsufficientEscrow) as info:
            client.submit_settlement(*settlement)
        assert info.value.account == overdrawn[0]
        assert not client.is_settled(interval)
        expected_escrow = escrow_before
        expected_rewards = unclaimed_before
    else:
        receipt = client.submit_settlement(*settlement)
        assert receipt.status is SettlementStatus.SETTLED
        assert sorted(client.settled_transfers(interval)) == sorted(net)
        assert sorted(client.settled_rewards(interval)) == sorted(net_rewards(rewards))
        expected_escrow = dict(escrow_before)
        for address, amount in transfers:
            expected_escrow[address] += amount
        # the contract's rule: floor(wh * rate / 1000) each, scaled pro rata under the cap
        raw = {a: wh * REWARD_RATE // 1000 for a, wh in net_rewards(rewards)}
        total = sum(raw.values())
        scale = total > REWARD_CAP
        got = {a: (r * REWARD_CAP // total if scale else r) for a, r in raw.items()}
        assert receipt.rewards_minted == sum(got.values()) <= REWARD_CAP
        expected_rewards = {a: unclaimed_before[a] + got.get(a, 0) for a in addresses}
        assert client.reward_supply() == reward_supply + receipt.rewards_minted

    wallets_after, escrow_after = balances(deployed, addresses)
    assert wallets_after == wallets_before  # settlement never touches wallets
    assert escrow_after == expected_escrow
    assert all(value >= 0 for value in escrow_after.values())
    assert sum(escrow_after.values()) == client.total_escrow()
    assert client.token_balance(deployed.settlement_address) == client.total_escrow()
    assert sum(wallets_after.values()) + client.total_escrow() == deployed.minted
    assert client.total_supply() == deployed.minted
    assert {a: client.unclaimed_rewards(a) for a in addresses} == expected_rewards
    assert client.reward_balance(deployed.settlement_address) == client.total_rewards()
