"""What the dashboard reads of a community's governance: votes, descriptions, value history.

On the embedded chain, with the community of ``test_governance.py``: every vote is read back
from the governor's ``VoteCast`` logs (own transaction or relayed, the same), every change of
a registry value from the registry's ``ParameterChanged`` logs with the proposal that made it.
"""

from __future__ import annotations

import pytest
from test_governance import Community, make_community

from adapters.chain.governance import LOG_REORG_DEPTH, Governance, Support, sign_ballot


@pytest.fixture(scope="module")
def community() -> Community:
    return make_community()


def test_votes_are_read_back_however_they_arrived(community: Community) -> None:
    gov = community.gov
    alice, bob, carol, dave, _ = community.members
    pid, _ = gov.propose(alice, [gov.set_parameter("community_fee_bps", 30)], "a 0.3 % fee")
    other, _ = gov.propose(bob, [gov.set_parameter("gate_closure_s", 120)], "earlier gate")
    gov.vote(alice, pid, Support.FOR)
    chain_id = community.w3.eth.chain_id
    signature = sign_ballot(bob, chain_id, gov.governor.address, pid, Support.AGAINST)
    gov.vote_by_sig(community.operator, pid, Support.AGAINST, bob.address, signature)
    gov.vote(carol, pid, Support.ABSTAIN)
    gov.vote(dave, other, Support.FOR)
    votes = gov.cast_votes(pid)
    assert [(v.voter, v.support) for v in votes] == [
        (alice.address, Support.FOR),
        (bob.address, Support.AGAINST),
        (carol.address, Support.ABSTAIN),
    ]
    assert all(v.proposal_id == pid and v.tx_hash.startswith("0x") for v in votes)
    assert [v.block_number for v in votes] == sorted(v.block_number for v in votes)
    everyone = gov.cast_votes()
    assert [(v.proposal_id, v.voter) for v in everyone if v.proposal_id == other] == [
        (other, dave.address)
    ]
    # the tallies the governor keeps agree with the votes read back
    p = gov.proposal(pid)
    assert (p.votes_for, p.votes_against, p.votes_abstain) == (1, 1, 1)
    assert gov.descriptions()[pid] == "a 0.3 % fee"
    assert gov.descriptions()[other] == "earlier gate"


def test_logs_kept_between_reads_are_neither_lost_nor_doubled(community: Community) -> None:
    """Old blocks' logs are read once and kept (LOG_REORG_DEPTH): the answer stays whole."""
    gov = community.gov
    alice, *_, erin = community.members
    pid, _ = gov.propose(alice, [gov.set_parameter("community_fee_bps", 35)], "kept")
    gov.vote(alice, pid, Support.FOR)
    assert [v.voter for v in gov.cast_votes(pid)] == [alice.address]
    for _ in range(LOG_REORG_DEPTH + 5):  # the first vote's block is now kept, not re-read
        community.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    before = gov.cast_votes()
    gov.vote(erin, pid, Support.AGAINST)
    after = gov.cast_votes()
    assert after[: len(before)] == before
    assert [(v.voter, v.support) for v in gov.cast_votes(pid)] == [
        (alice.address, Support.FOR),
        (erin.address, Support.AGAINST),
    ]
    fresh = Governance(community.client.contracts)
    fresh.attach(gov.deployment())
    assert fresh.cast_votes() == after  # one read from block 0 says the same
    assert fresh.descriptions() == gov.descriptions()


def test_every_change_of_a_value_is_read_with_its_proposal() -> None:
    community = make_community()
    gov = community.gov
    deployed = gov.parameter_history()
    assert [(c.name, c.old_value, c.new_value, c.proposal_id) for c in deployed] == [
        ("community_fee_bps", None, 0, None),
        ("gate_closure_s", None, 60, None),
    ]
    first = community.enacted([gov.set_parameter("community_fee_bps", 25)])
    second = community.enacted(
        [gov.set_parameter("community_fee_bps", 40), gov.set_parameter("gate_closure_s", 30)]
    )
    history = gov.parameter_history()
    assert [(c.name, c.old_value, c.new_value, c.proposal_id) for c in history] == [
        ("community_fee_bps", None, 0, None),
        ("gate_closure_s", None, 60, None),
        ("community_fee_bps", 0, 25, first),
        ("community_fee_bps", 25, 40, second),
        ("gate_closure_s", 60, 30, second),
    ]
    times = [c.timestamp_s for c in history]
    assert times == sorted(times)
    last = history[-1]
    block = community.w3.eth.get_block(last.block_number)
    assert last.timestamp_s == block["timestamp"]
    # the values in force say the same as the last change of each
    values = gov.governed_values()
    assert values.values["community_fee_bps"] == 40
    assert values.proposals["gate_closure_s"] == second
    assert values.since_block["gate_closure_s"] == last.block_number
    assert gov.parameter_history(names=["gate_closure_s"]) == tuple(
        c for c in history if c.name == "gate_closure_s"
    )


def test_a_proposals_calls_are_worded_as_their_builders_word_them(community: Community) -> None:
    gov = community.gov
    actions = [
        gov.set_parameter("community_fee_bps", 100),
        gov.reward_policy(1_500_000, 50_000_000),
        gov.admit(community.outsider.address),
        gov.quorum(6_000),
        gov.delay(7_200),
        gov.pause_hours(12),
    ]
    pid, _ = gov.propose(community.members[0], actions, "several")
    p = gov.proposal(pid)
    worded = [gov.summarize(t, d) for t, d in zip(p.targets, p.payloads, strict=True)]
    assert worded == [a.summary for a in actions]
    assert worded[0] == "community_fee_bps = 100 bps of the buyer amount"
    # a call no builder makes: describe()'s words
    grant = gov.operator(community.outsider.address, grant=True)
    assert gov.summarize(grant.target, grant.payload) == gov.describe(grant.target, grant.payload)
    assert gov.summarize("0x" + "12" * 20, b"\x01\x02\x03\x04") == "call 0x01020304 on 0x" + (
        "12" * 20
    )
