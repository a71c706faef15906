"""The demo's community vote: the members raise the reward for verified local energy.

Issue 16 (community governance), as the demo shows it. Before the first interval the demo
deploys the community's contracts (:mod:`adapters.chain.governance`) with the ten prosumers as
its members and hands the site's contracts over: from then on the settlement contract's
admin is the community's timelock, and nobody (not the operator, not the deployer) changes
the reward rate outside a vote. Halfway through, :func:`hold_vote` runs one vote on the
chain, as members would over a few days:

1. the first member proposes a reward of :data:`NEW_REWARD_RATE` per verified kWh instead of
   the site's rate;
2. members vote: some with their own transaction, some by signing an EIP-712 ballot that the
   operator relays (they need no ether), some against, one abstains, one does not vote;
3. the chain's clock moves on by the voting period (``advance_dev_clock``: a dev chain),
   anyone queues the passed proposal, the clock moves on by the delay, anyone executes it.

The intervals settled after it mint rewards at the new rate: the settlement contract reads
its rate at each settlement, so the controller needs no restart and no change, and the
report shows the reward per verified kWh before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from adapters.chain import ChainClient, derive_account
from adapters.chain.errors import TransactionReverted
from adapters.chain.governance import Governance, Support, sign_ballot
from adapters.chain.node import advance_dev_clock
from controller.config import SiteConfig

VOTING_PERIOD_S: Final = 86_400
DELAY_S: Final = 86_400
QUORUM_BPS: Final = 5_000
PAUSE_HOURS: Final = 48
NEW_REWARD_RATE: Final = 1_500_000
"""Reward base units per verified kWh the members vote for (1.5 reward tokens)."""
NEW_FEE_BPS: Final = 100
"""The community fee the members vote for [basis points of local sales]: 1 %."""

# The ten demo members' choices, in site order: (choice, by relayed signature); None = no vote.
BALLOTS: Final = (
    (Support.FOR, False),
    (Support.FOR, True),
    (Support.FOR, False),
    (Support.FOR, True),
    (Support.FOR, True),
    (Support.FOR, False),
    (Support.AGAINST, False),
    (Support.AGAINST, True),
    (Support.ABSTAIN, False),
    None,
)


@dataclass(eq=False)
class Community:
    """A demo site's community: its governance and its members' demo keys."""

    client: ChainClient
    gov: Governance
    members: dict[str, Any]


def set_up_community(client: ChainClient, site: SiteConfig, accounts: dict[str, str]) -> Community:
    """Deploy the community's contracts with the site's participants as members; hand over.

    Parameters
    ----------
    client : ChainClient
        The demo's client (its admin deploys and hands over).
    site : SiteConfig
        The demo site: its participants are the members, its gate closure the registry's.
    accounts : dict
        Participant id -> address on the chain (the demo's derived accounts).
    """
    members: dict[str, Any] = {}
    for p in site.participants:
        account = derive_account(p.id)
        if account.address == accounts[p.id]:  # a demo key: the demo can sign its votes
            members[p.id] = account
    gov = Governance(client.contracts)
    gov.deploy(
        members=[accounts[p.id] for p in site.participants],
        parameters={"community_fee_bps": 0, "gate_closure_s": site.gate_closure_s},
        delay_s=DELAY_S,
        voting_period_s=VOTING_PERIOD_S,
        quorum_bps=QUORUM_BPS,
        pause_hours=PAUSE_HOURS,
    )
    gov.hand_over()
    return Community(client=client, gov=gov, members=members)


def hold_vote(community: Community) -> dict[str, Any]:
    """Run the reward vote from proposal to execution (module docstring).

    Returns
    -------
    dict
        ``proposal`` (id), ``description``, ``rate_before``/``rate_after`` [reward units
        per kWh], the tallies and quorum, ``relayed`` (votes cast by signature), the
        blocks of the proposal and the execution, ``state`` (``"executed"``), and
        ``admin_refused``: the revert reason of the deployer's own ``set_reward_policy``
        after the hand-over (``""`` if it went through, which would be a failure).
    """
    client, gov = community.client, community.gov
    settlement = client.contracts.settlement
    rate_before = int(settlement.functions.reward_rate().call())
    cap = int(settlement.functions.reward_cap().call())
    voters = list(community.members.values())
    description = (
        f"Raise the reward for verified local energy from {rate_before / 1e6:g} to "
        f"{NEW_REWARD_RATE / 1e6:g} reward tokens per kWh, paid for by a "
        f"{NEW_FEE_BPS / 100:g} % community fee on local sales"
    )
    actions = [
        gov.reward_policy(NEW_REWARD_RATE, cap),
        gov.set_parameter("community_fee_bps", NEW_FEE_BPS),
    ]
    pid, proposed = gov.propose(voters[0], actions, description)
    chain_id = client.chain_id()
    relayed = 0
    for voter, ballot in zip(voters, BALLOTS, strict=False):
        if ballot is None:
            continue
        support, by_signature = ballot
        if by_signature:
            signature = sign_ballot(voter, chain_id, gov.governor.address, pid, support)
            gov.vote_by_sig(client.operator, pid, support, voter.address, signature)
            relayed += 1
        else:
            gov.vote(voter, pid, support)
    advance_dev_clock(client.w3, VOTING_PERIOD_S)
    gov.queue(client.operator, pid)
    advance_dev_clock(client.w3, DELAY_S)
    executed = gov.execute(client.operator, pid)
    p = gov.proposal(pid)
    try:  # the deployer, who was the admin, tries to set the rate itself
        client.set_reward_policy(rate_before, cap)
        refused = ""
    except TransactionReverted as exc:
        refused = exc.reason
    return {
        "proposal": pid,
        "description": description,
        "rate_before": rate_before,
        "rate_after": int(settlement.functions.reward_rate().call()),
        "for": p.votes_for,
        "against": p.votes_against,
        "abstain": p.votes_abstain,
        "quorum": p.quorum,
        "members": gov.member_count(),
        "relayed": relayed,
        "proposed_block": proposed.block_number,
        "executed_block": executed.block_number,
        "state": p.state.name.lower(),
        "governor": gov.governor.address,
        "timelock": gov.timelock.address,
        "admin_refused": refused,
        "fee_bps": NEW_FEE_BPS,
    }


__all__ = ["Community", "hold_vote", "set_up_community"]
