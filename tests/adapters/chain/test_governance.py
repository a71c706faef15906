"""Community governance on the embedded chain: membership, votes, the timelock, the hand-over.

The contracts are new, unaudited code (issue 16). These examples pin the rules members rely
on; ``test_governance_stateful.py`` runs random proposals, votes and executions against a
model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from adapters.chain import ChainClient, derive_account
from adapters.chain.deployment import DEFAULT_ADMIN_ROLE, OPERATOR_ROLE
from adapters.chain.embedded import embedded_web3
from adapters.chain.errors import ChainError, InvalidArgument, TransactionReverted
from adapters.chain.governance import (
    Governance,
    ProposalState,
    Support,
    ballot_signer,
    ballot_typed_data,
    parameter_key,
    sign_ballot,
)

DELAY_S = 3_600
VOTING_PERIOD_S = 86_400
QUORUM_BPS = 5_000
PAUSE_HOURS = 24
NAMES = ("alice", "bob", "carol", "dave", "erin")


@dataclass
class Community:
    w3: Web3
    client: ChainClient
    gov: Governance
    operator: LocalAccount
    members: list[LocalAccount]
    outsider: LocalAccount

    def advance(self, seconds: int) -> None:
        """Move the chain's clock on by ``seconds`` and mine a block there."""
        now = self.w3.eth.get_block("latest")["timestamp"]
        self.w3.provider.make_request("testing_timeTravel", [now + seconds])  # type: ignore[arg-type]
        self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def passed(self, actions: list[Any], voters: int = 3) -> int:
        """Propose ``actions``, have ``voters`` members vote for, and let the vote close."""
        pid, _ = self.gov.propose(self.members[0], actions, "test proposal")
        for member in self.members[:voters]:
            self.gov.vote(member, pid, Support.FOR)
        self.advance(VOTING_PERIOD_S)
        return pid

    def enacted(self, actions: list[Any]) -> int:
        """Pass, queue and execute ``actions``."""
        pid = self.passed(actions)
        self.gov.queue(self.outsider, pid)
        self.advance(DELAY_S)
        self.gov.execute(self.outsider, pid)
        return pid


def make_community(*, hand_over: bool = True) -> Community:
    w3 = embedded_web3()
    operator = derive_account("operator")
    client = ChainClient(w3, operator)
    client.fund_eth(operator.address, 10**21)
    client.deploy_all(reward_rate=1_000_000, reward_cap=50_000_000)
    members = [derive_account(n) for n in NAMES]
    outsider = derive_account("outsider")
    for account in [*members, outsider]:
        client.fund_eth(account.address, 10**19)
    gov = Governance(client.contracts)
    gov.deploy(
        members=[m.address for m in members],
        parameters={"community_fee_bps": 0, "gate_closure_s": 60},
        delay_s=DELAY_S,
        voting_period_s=VOTING_PERIOD_S,
        quorum_bps=QUORUM_BPS,
        pause_hours=PAUSE_HOURS,
    )
    if hand_over:
        gov.hand_over()
    return Community(w3, client, gov, operator, members, outsider)


@pytest.fixture
def community() -> Community:
    return make_community()


def reverts(fn: Callable[[], object]) -> str:
    with pytest.raises(TransactionReverted) as info:
        fn()
    return info.value.reason


def test_non_members_cannot_propose_or_vote(community: Community) -> None:
    gov, outsider = community.gov, community.outsider
    action = gov.set_parameter("community_fee_bps", 100)
    assert "not a member" in reverts(lambda: gov.propose(outsider, [action], "outsider"))
    pid, _ = gov.propose(community.members[0], [action], "fee 1 %")
    assert "not a member at the snapshot" in reverts(lambda: gov.vote(outsider, pid, Support.FOR))
    assert gov.proposal(pid).votes_for == 0


def test_nobody_votes_twice_directly_or_by_signature(community: Community) -> None:
    gov, (alice, bob, *_) = community.gov, community.members
    pid, _ = gov.propose(alice, [gov.set_parameter("community_fee_bps", 100)], "fee")
    gov.vote(alice, pid, Support.FOR)
    assert "already voted" in reverts(lambda: gov.vote(alice, pid, Support.AGAINST))
    chain_id = community.w3.eth.chain_id
    signature = sign_ballot(bob, chain_id, gov.governor.address, pid, Support.AGAINST)
    gov.vote_by_sig(community.outsider, pid, Support.AGAINST, bob.address, signature)
    # the same signature relayed again, and bob's own vote after it, are refused
    assert "already voted" in reverts(
        lambda: gov.vote_by_sig(community.outsider, pid, Support.AGAINST, bob.address, signature)
    )
    assert "already voted" in reverts(lambda: gov.vote(bob, pid, Support.FOR))
    p = gov.proposal(pid)
    assert (p.votes_for, p.votes_against, p.votes_abstain) == (1, 1, 0)
    assert gov.ballot(pid, bob.address) is Support.AGAINST
    assert gov.ballot(pid, community.members[2].address) is None


def test_a_signature_counts_only_for_its_signer_and_choice(community: Community) -> None:
    gov, (alice, bob, carol, *_) = community.gov, community.members
    pid, _ = gov.propose(alice, [gov.set_parameter("community_fee_bps", 100)], "fee")
    chain_id = community.w3.eth.chain_id
    signature = sign_ballot(bob, chain_id, gov.governor.address, pid, Support.FOR)
    relayer = community.outsider
    # bob's signature does not vote for carol, nor against for bob
    assert "invalid signature" in reverts(
        lambda: gov.vote_by_sig(relayer, pid, Support.FOR, carol.address, signature)
    )
    assert "invalid signature" in reverts(
        lambda: gov.vote_by_sig(relayer, pid, Support.AGAINST, bob.address, signature)
    )
    # a signature for another chain id is another digest
    foreign = sign_ballot(bob, chain_id + 1, gov.governor.address, pid, Support.FOR)
    assert "invalid signature" in reverts(
        lambda: gov.vote_by_sig(relayer, pid, Support.FOR, bob.address, foreign)
    )
    gov.vote_by_sig(relayer, pid, Support.FOR, bob.address, signature)
    assert gov.proposal(pid).votes_for == 1
    data = ballot_typed_data(chain_id, gov.governor.address, pid, Support.FOR, bob.address)
    assert data["domain"]["name"] == "PeerGrid Governor"


def test_a_member_admitted_after_the_snapshot_cannot_vote_on_it(community: Community) -> None:
    gov, members = community.gov, community.members
    newcomer = community.outsider
    admission = community.passed([gov.admit(newcomer.address)])
    gov.queue(members[0], admission)
    # a proposal made while the admission waits in the timelock: its snapshot predates it
    pid, _ = gov.propose(members[1], [gov.set_parameter("gate_closure_s", 120)], "gate")
    community.advance(DELAY_S)
    gov.execute(members[0], admission)
    assert gov.is_member(newcomer.address)
    assert "not a member at the snapshot" in reverts(lambda: gov.vote(newcomer, pid, Support.FOR))
    # ... while a proposal made after the admission counts the newcomer
    later, _ = gov.propose(newcomer, [gov.set_parameter("gate_closure_s", 180)], "gate")
    gov.vote(newcomer, later, Support.FOR)
    assert gov.proposal(later).votes_for == 1
    assert gov.proposal(later).quorum == 3  # ceil(50 % of 6)
    assert gov.proposal(pid).quorum == 3  # ceil(50 % of 5)


def test_a_proposal_executes_only_after_its_delay(community: Community) -> None:
    gov, (alice, *_) = community.gov, community.members
    pid = community.passed([gov.set_parameter("community_fee_bps", 150)])
    assert gov.proposal(pid).state is ProposalState.SUCCEEDED
    assert "not queued" in reverts(lambda: gov.execute(alice, pid))
    gov.queue(alice, pid)
    queued = gov.proposal(pid)
    assert queued.state is ProposalState.QUEUED
    assert queued.eta == community.w3.eth.get_block("latest")["timestamp"] + DELAY_S
    community.advance(DELAY_S - 10)
    assert "not ready" in reverts(lambda: gov.execute(alice, pid))
    assert gov.parameter("community_fee_bps") == 0
    community.advance(10)
    gov.execute(community.outsider, pid)  # anyone executes
    assert gov.proposal(pid).state is ProposalState.EXECUTED
    assert gov.parameter("community_fee_bps") == 150
    assert "not queued" in reverts(lambda: gov.execute(alice, pid))


def test_quorum_and_majority_decide(community: Community) -> None:
    gov, (alice, bob, carol, dave, _) = community.gov, community.members
    fee = gov.set_parameter("community_fee_bps", 10)
    # 2 of 5 votes: below ceil(50 % x 5) = 3
    short, _ = gov.propose(alice, [fee], "too few")
    gov.vote(alice, short, Support.FOR)
    gov.vote(bob, short, Support.FOR)
    # 4 votes, 2 for, 2 against: a tie is not a majority
    tie, _ = gov.propose(alice, [fee], "tie")
    for member, choice in zip(
        (alice, bob, carol, dave),
        (Support.FOR, Support.FOR, Support.AGAINST, Support.AGAINST),
        strict=True,
    ):
        gov.vote(member, tie, choice)
    # abstentions count toward the quorum only
    abstained, _ = gov.propose(alice, [fee], "abstentions")
    gov.vote(alice, abstained, Support.FOR)
    gov.vote(bob, abstained, Support.ABSTAIN)
    gov.vote(carol, abstained, Support.ABSTAIN)
    assert gov.proposal(short).state is ProposalState.ACTIVE
    community.advance(VOTING_PERIOD_S)
    assert gov.proposal(short).state is ProposalState.DEFEATED
    assert gov.proposal(tie).state is ProposalState.DEFEATED
    assert gov.proposal(abstained).state is ProposalState.SUCCEEDED
    assert "not succeeded" in reverts(lambda: gov.queue(alice, short))
    assert "vote not open" in reverts(lambda: gov.vote(carol, short, Support.FOR))


def test_voting_period_quorum_and_delay_are_governed(community: Community) -> None:
    gov = community.gov
    assert "caller is not the timelock" in reverts(
        lambda: community.client.contracts.sender.transact(
            community.operator,
            gov.governor.address,
            gov.governor.encode_abi("set_quorum_bps", args=[10_000]),
            100_000,
        )
    )
    community.enacted([gov.voting_period(3_600), gov.quorum(10_000), gov.delay(60)])
    fns = gov.governor.functions
    assert fns.voting_period().call() == 3_600
    assert fns.quorum_bps().call() == 10_000
    assert gov.timelock.functions.get_minimum_delay().call() == 60
    pid, _ = gov.propose(community.members[0], [gov.set_parameter("gate_closure_s", 0)], "all")
    assert gov.proposal(pid).quorum == 5  # every member now
    with pytest.raises(InvalidArgument, match="quorum"):
        gov.quorum(0)


def test_the_proposer_alone_withdraws_an_open_proposal(community: Community) -> None:
    gov, (alice, bob, *_) = community.gov, community.members
    pid, _ = gov.propose(alice, [gov.set_parameter("gate_closure_s", 0)], "oops")
    assert "not the proposer" in reverts(lambda: gov.cancel(bob, pid))
    gov.cancel(alice, pid)
    assert gov.proposal(pid).state is ProposalState.CANCELED
    assert "vote not open" in reverts(lambda: gov.vote(bob, pid, Support.FOR))


def test_after_hand_over_the_deployer_changes_nothing_directly(community: Community) -> None:
    """The admin's direct admin, minter, membership and registry calls all revert."""
    contracts, gov = community.client.contracts, community.gov
    admin = contracts.admin
    assert gov.handed_over()
    settlement, reward = contracts.settlement, contracts.reward_token
    assert reward is not None
    attempts = {
        "set_reward_policy": (settlement, "set_reward_policy", [10**9, 10**12]),
        "set_withdrawal_delay": (settlement, "set_withdrawal_delay", [0]),
        "grant admin": (settlement, "grantRole", [DEFAULT_ADMIN_ROLE, admin.address]),
        "grant operator": (settlement, "grantRole", [OPERATOR_ROLE, admin.address]),
        "pause": (settlement, "pause", []),
        "set_minter": (reward, "set_minter", [admin.address, True]),
        "mint": (reward, "mint", [admin.address, 10**12]),
        "reward ownership": (reward, "transfer_ownership", [admin.address]),
        "admit": (gov.membership, "admit", [admin.address]),
        "set_value": (gov.parameters, "set_value", [parameter_key("community_fee_bps"), 1]),
        "timelock role": (gov.timelock, "grantRole", [DEFAULT_ADMIN_ROLE, admin.address]),
        "timelock schedule": (
            gov.timelock,
            "schedule",
            [settlement.address, 0, b"", bytes(32), bytes(32), DELAY_S],
        ),
        "guardian pauser": (gov.guardian, "set_pauser", [admin.address]),
    }
    reasons = {}
    for label, (contract, fn, args) in attempts.items():
        data = contract.encode_abi(fn, args=args)
        reasons[label] = reverts(
            lambda c=contract, d=data: contracts.sender.transact(admin, c.address, d, 200_000)
        )
    refusals = ("missing role", "caller is not the owner", "access is denied", "not the timelock")
    assert all(any(r in reason for r in refusals) for reason in reasons.values()), reasons
    assert settlement.functions.reward_rate().call() == 1_000_000
    assert not gov.is_member(admin.address)
    # the operator still settles: its role is untouched
    assert settlement.functions.hasRole(OPERATOR_ROLE, community.operator.address).call()
    # handing over again sends nothing
    assert gov.hand_over() == []


def test_the_reward_policy_changes_only_by_vote(community: Community) -> None:
    gov, settlement = community.gov, community.client.contracts.settlement
    community.enacted([gov.reward_policy(2_000_000, 80_000_000), gov.withdrawal_delay(7_200)])
    assert settlement.functions.reward_rate().call() == 2_000_000
    assert settlement.functions.reward_cap().call() == 80_000_000
    assert settlement.functions.withdrawal_delay().call() == 7_200


def test_an_expired_pause_lifts(community: Community) -> None:
    gov, operator, outsider = community.gov, community.operator, community.outsider
    settlement = community.client.contracts.settlement
    assert "not the pauser" in reverts(lambda: gov.pause(outsider))
    gov.pause(operator)
    assert settlement.functions.paused().call()
    assert "already paused" in reverts(lambda: gov.pause(operator))
    assert "has not expired" in reverts(lambda: gov.lift_pause(outsider))
    community.advance(PAUSE_HOURS * 3_600 - 60)
    assert not gov.guardian.functions.expired().call()
    community.advance(60)
    assert gov.guardian.functions.expired().call()
    gov.lift_pause(outsider)  # anyone lifts it
    assert not settlement.functions.paused().call()
    assert "not paused by the guardian" in reverts(lambda: gov.lift_pause(outsider))
    # the pauser may end a pause early, an outsider may not
    gov.pause(operator)
    data = gov.guardian.encode_abi("unpause", args=[])
    sender = community.client.contracts.sender
    assert "may not unpause" in reverts(
        lambda: sender.transact(outsider, gov.guardian.address, data, 100_000)
    )
    sender.transact(operator, gov.guardian.address, data, 100_000)
    assert not settlement.functions.paused().call()


def test_the_pause_length_and_the_pauser_are_governed(community: Community) -> None:
    gov, operator, (alice, *_) = community.gov, community.operator, community.members
    community.enacted([gov.pause_hours(2), gov.pauser(alice.address)])
    assert "not the pauser" in reverts(lambda: gov.pause(operator))
    gov.pause(alice)
    until = gov.guardian.functions.paused_until().call()
    assert until == community.w3.eth.get_block("latest")["timestamp"] + 2 * 3_600


def test_bad_arguments_are_refused_before_any_gas_is_spent(community: Community) -> None:
    gov, alice = community.gov, community.members[0]
    with pytest.raises(InvalidArgument, match="not a governed parameter"):
        gov.set_parameter("voltage_min_pu", 1)
    with pytest.raises(InvalidArgument, match="outside"):
        gov.set_parameter("community_fee_bps", 10_001)
    with pytest.raises(InvalidArgument, match="1 to 8"):
        gov.propose(alice, [], "nothing")
    with pytest.raises(InvalidArgument, match="1 to 8"):
        gov.propose(alice, [gov.set_parameter("gate_closure_s", 1)] * 9, "too much")
    community.enacted([gov.set_parameter("import_tariff_max", 300_000)])
    with pytest.raises(InvalidArgument, match="import tariff bounds"):
        gov.propose(alice, [gov.set_parameter("import_tariff_min", 300_001)], "crossed")
    fresh = Governance(community.client.contracts)
    with pytest.raises(InvalidArgument, match="duplicate"):
        fresh.deploy(
            members=[alice.address, alice.address.lower()],
            parameters={},
            delay_s=0,
            voting_period_s=60,
            quorum_bps=1,
            pause_hours=1,
        )


def test_the_registry_remembers_every_block(community: Community) -> None:
    gov = community.gov
    before = community.w3.eth.block_number
    pid = community.enacted([gov.set_parameter("community_fee_bps", 25)])
    executed_in = gov.proposal(pid)
    assert executed_in.state is ProposalState.EXECUTED
    changed = community.w3.eth.block_number
    community.advance(1)
    old = gov.parameters_at(before)["community_fee_bps"]
    new = gov.parameters_at(changed)["community_fee_bps"]
    assert (old.value, new.value, new.since_block) == (0, 25, changed)
    assert "import_tariff_min" not in gov.parameters_at(changed)


def test_attach_checks_the_code(community: Community) -> None:
    deployment = community.gov.deployment()
    other = Governance(community.client.contracts)
    other.attach(deployment)
    assert other.member_count() == len(NAMES)
    swapped = type(deployment)(
        membership=deployment.parameters,
        timelock=deployment.timelock,
        governor=deployment.governor,
        parameters=deployment.membership,
        guardian=deployment.guardian,
    )
    with pytest.raises(ChainError, match="Membership bytecode"):
        Governance(community.client.contracts).attach(swapped)


def test_the_signer_of_a_ballot_is_recovered_or_the_signature_refused() -> None:
    voter = derive_account("ballot-voter")
    governor = "0x" + "11" * 20
    good = sign_ballot(voter, 31337, governor, 7, Support.FOR)
    assert ballot_signer(31337, governor, 7, Support.FOR, voter.address, good) == voter.address
    # another ballot's fields recover another address: the governor refuses it as not the voter's
    assert ballot_signer(31337, governor, 7, Support.AGAINST, voter.address, good) != voter.address
    for bad in (good[:64], b"", bytes(65), good + b"\x00"):  # lengths, an all-zero signature
        with pytest.raises(InvalidArgument, match="not a valid signature"):
            ballot_signer(31337, governor, 7, Support.FOR, voter.address, bad)
