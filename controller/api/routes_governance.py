"""The community's votes: ``/v1/sites/{site}/governance`` (read: anyone; ballots: members).

* ``GET .../governance`` -- the members, the governed values (the ``Parameters`` registry's,
  the governor's voting period and quorum, the timelock's delay, the settlement contract's
  reward rate, cap and withdrawal delay), whether the site is handed over, the EIP-712 domain
  and types of a ballot, every proposal with its description, state, tallies, calls in words
  and individual votes (the governor's ``VoteCast`` logs), the registry's values in force
  with the block and proposal that set each, and every change of them (``ParameterChanged``
  logs: block, time, old and new value, proposal).
* ``GET .../governance/proposals/{id}`` -- one proposal.
* ``POST .../governance/proposals/{id}/ballots`` -- a member's vote, signed in their wallet
  as the EIP-712 ``Ballot(uint256 proposalId,uint8 support,address voter)`` of the governor's
  domain; the server relays it on-chain (its operator pays the gas, so a member needs no
  ether) and answers with the transaction and the new tallies.

No session is needed: the signature is the member's say, and the governor counts each
member's vote once, however it arrives. Before anything is sent the server checks what the
chain would refuse, so a refusal costs no gas and says why: a signature that is not the
voter's (422 ``bad_signature``), a voter who was not a member at the proposal's snapshot
(403 ``not_a_member``), a second vote (409 ``already_voted``), a vote that is not open
(409 ``vote_closed``), an unknown proposal (404). A site without governance answers 404
``no_governance``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from adapters.chain.errors import ChainError, InvalidArgument
from adapters.chain.governance import (
    BALLOT_TYPES,
    CastVote,
    Governance,
    Proposal,
    ProposalState,
    Support,
    ballot_domain,
    ballot_signer,
)
from controller.api.deps import ApiError, SiteDep
from controller.api.models import ErrorBody
from market.governance import REGISTRY

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 403, 404, 409, 422, 502)
}

router = APIRouter(prefix="/v1/sites/{site}/governance", tags=["governance"], responses=ERRORS)

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
SIGNATURE = r"^0x[0-9a-fA-F]{130}$"
ProposalId = Annotated[int, Path(ge=1, description="the proposal's id (from 1)")]


SupportName = Literal["for", "against", "abstain"]


class VoteOut(BaseModel):
    """One member's vote, as the governor logged it (own transaction or relayed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    voter: str
    participant: str | None = Field(description="the site's participant at that address, if any")
    support: SupportName
    block_number: int
    tx_hash: str


class ProposalOut(BaseModel):
    """A proposal: state, tallies, times [Unix s], its calls in words and the votes cast."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    proposal_id: int
    proposer: str
    proposer_participant: str | None = Field(
        description="the site's participant at the proposer's address, if any"
    )
    description: str = Field(description="the proposer's text")
    state: Literal["active", "canceled", "defeated", "succeeded", "queued", "executed"]
    snapshot_block: int = Field(description="members at the end of this block vote")
    vote_end_s: int = Field(description="votes are taken before this time [Unix s]")
    quorum: int = Field(description="votes (for + against + abstain) it needs")
    votes_for: int
    votes_against: int
    votes_abstain: int
    executable_from_s: int = Field(description="once queued: executable from [Unix s]; else 0")
    changes: list[str] = Field(description="the calls it makes, in words")
    summaries: list[str] = Field(
        description="the same calls as the proposal's builders word them, with units"
    )
    votes: list[VoteOut] = Field(description="every vote cast on it, oldest first")


class ValueInForceOut(BaseModel):
    """A registry value in force now, with the block and the proposal that set it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    value: int = Field(description="in the parameter's unit")
    unit: str
    since_block: int = Field(description="the block that set it")
    proposal_id: int | None = Field(
        description="the executed proposal that set it; None: not a vote"
    )


class ParameterChangeOut(BaseModel):
    """One change of a registry value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    unit: str
    block_number: int
    time_s: int = Field(description="the block's time [Unix s]")
    old_value: int | None = Field(description="before, in the parameter's unit; None: unset")
    new_value: int = Field(description="after, in the parameter's unit")
    proposal_id: int | None = Field(
        description="the executed proposal that made it; None: the deployment (not a vote)"
    )
    tx_hash: str


class GovernanceOut(BaseModel):
    """The community's contracts, governed values and proposals."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    governor: str
    timelock: str
    membership: str
    parameters_registry: str
    members: int
    handed_over: bool = Field(description="only an executed vote changes the rules")
    parameters: dict[str, int | None] = Field(
        description="the registry's values (None: never set), units in parameter_units"
    )
    parameter_units: dict[str, str]
    voting_period_s: int
    quorum_bps: int
    delay_s: int = Field(description="the timelock's delay between a passed vote and execution")
    reward_rate_per_kwh: int = Field(description="reward base units per verified kWh")
    reward_cap: int = Field(description="most reward base units minted per interval")
    withdrawal_delay_s: int
    ballot_domain: dict[str, Any] = Field(description="EIP-712 domain of a ballot")
    ballot_types: dict[str, list[dict[str, str]]] = Field(description="EIP-712 types")
    proposals: list[ProposalOut]
    values_in_force: list[ValueInForceOut] = Field(
        description="the registry's values now, with the block and proposal that set each"
    )
    parameter_history: list[ParameterChangeOut] = Field(
        description="every change of the registry's values, oldest first"
    )


class BallotIn(BaseModel):
    """A member's signed vote."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    voter: str = Field(pattern=ADDRESS, description="the member's address")
    support: SupportName
    signature: str = Field(pattern=SIGNATURE, description="65-byte EIP-712 signature, 0x hex")


class BallotOut(BaseModel):
    """The relayed vote and the proposal after it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tx_hash: str
    block_number: int
    proposal: ProposalOut


def _governance(service: SiteDep) -> Governance:
    gov = service.governance
    if gov is None:
        raise ApiError(404, "no_governance", "this site has no community governance")
    return gov


def _proposal(gov: Governance, proposal_id: int) -> Proposal:
    if not 1 <= proposal_id <= gov.proposal_count():
        raise ApiError(404, "unknown_proposal", f"no proposal {proposal_id}")
    return gov.proposal(proposal_id)


def _names(service: SiteDep) -> dict[str, str]:
    """Lower-case address -> the site's participant at it."""
    return {address.lower(): pid for pid, address in service.runtime.accounts.items()}


def _vote_out(vote: CastVote, names: dict[str, str]) -> VoteOut:
    return VoteOut(
        voter=vote.voter,
        participant=names.get(vote.voter.lower()),
        support=vote.support.name.lower(),  # type: ignore[arg-type]
        block_number=vote.block_number,
        tx_hash=vote.tx_hash,
    )


def _out(
    gov: Governance,
    p: Proposal,
    *,
    description: str,
    votes: list[VoteOut],
    names: dict[str, str],
) -> ProposalOut:
    return ProposalOut(
        proposal_id=p.proposal_id,
        proposer=p.proposer,
        proposer_participant=names.get(p.proposer.lower()),
        description=description,
        state=p.state.name.lower(),  # type: ignore[arg-type]
        snapshot_block=p.snapshot,
        vote_end_s=p.vote_end,
        quorum=p.quorum,
        votes_for=p.votes_for,
        votes_against=p.votes_against,
        votes_abstain=p.votes_abstain,
        executable_from_s=p.eta,
        changes=[gov.describe(t, d) for t, d in zip(p.targets, p.payloads, strict=True)],
        summaries=[gov.summarize(t, d) for t, d in zip(p.targets, p.payloads, strict=True)],
        votes=votes,
    )


def _one(gov: Governance, p: Proposal, names: dict[str, str]) -> ProposalOut:
    """Proposal ``p`` with its description and votes, read for it alone."""
    votes = [_vote_out(v, names) for v in gov.cast_votes(p.proposal_id)]
    description = gov.descriptions().get(p.proposal_id, "")
    return _out(gov, p, description=description, votes=votes, names=names)


@router.get("", response_model=GovernanceOut, summary="members, governed values, proposals")
def get_governance(service: SiteDep) -> GovernanceOut:
    """The community's governance as the chain holds it now."""
    gov = _governance(service)
    with service.chain_lock:
        settlement = gov.contracts.settlement.functions
        fns = gov.governor.functions
        chain_id = int(gov.w3.eth.chain_id)
        names = _names(service)
        descriptions = gov.descriptions()
        votes: dict[int, list[VoteOut]] = {}
        for vote in gov.cast_votes():
            votes.setdefault(vote.proposal_id, []).append(_vote_out(vote, names))
        proposals = [
            _out(
                gov,
                gov.proposal(i),
                description=descriptions.get(i, ""),
                votes=votes.get(i, []),
                names=names,
            )
            for i in range(1, gov.proposal_count() + 1)
        ]
        governed = gov.governed_values()
        units = {name: spec.unit for name, spec in REGISTRY.items()}
        return GovernanceOut(
            governor=gov.governor.address,
            timelock=gov.timelock.address,
            membership=gov.membership.address,
            parameters_registry=gov.parameters.address,
            members=gov.member_count(),
            handed_over=gov.handed_over(),
            parameters={name: gov.parameter(name) for name in REGISTRY},
            parameter_units=units,
            voting_period_s=int(fns.voting_period().call()),
            quorum_bps=int(fns.quorum_bps().call()),
            delay_s=int(gov.timelock.functions.get_minimum_delay().call()),
            reward_rate_per_kwh=int(settlement.reward_rate().call()),
            reward_cap=int(settlement.reward_cap().call()),
            withdrawal_delay_s=int(settlement.withdrawal_delay().call()),
            ballot_domain=ballot_domain(chain_id, gov.governor.address),
            ballot_types={k: [dict(f) for f in v] for k, v in BALLOT_TYPES.items()},
            proposals=proposals,
            values_in_force=[
                ValueInForceOut(
                    name=name,
                    value=value,
                    unit=units[name],
                    since_block=governed.since_block[name],
                    proposal_id=governed.proposals[name],
                )
                for name, value in governed.values.items()
            ],
            parameter_history=[
                ParameterChangeOut(
                    name=c.name,
                    unit=units[c.name],
                    block_number=c.block_number,
                    time_s=c.timestamp_s,
                    old_value=c.old_value,
                    new_value=c.new_value,
                    proposal_id=c.proposal_id,
                    tx_hash=c.tx_hash,
                )
                for c in gov.parameter_history()
            ],
        )


@router.get("/proposals/{proposal_id}", response_model=ProposalOut, summary="one proposal")
def get_proposal(service: SiteDep, proposal_id: ProposalId) -> ProposalOut:
    """A proposal's state, tallies and calls."""
    gov = _governance(service)
    with service.chain_lock:
        return _one(gov, _proposal(gov, proposal_id), _names(service))


@router.post(
    "/proposals/{proposal_id}/ballots",
    response_model=BallotOut,
    status_code=201,
    summary="relay a member's signed vote",
)
def post_ballot(service: SiteDep, proposal_id: ProposalId, ballot: BallotIn) -> BallotOut:
    """Check a member's EIP-712 ballot and relay it on-chain (the server pays the gas)."""
    gov = _governance(service)
    support = Support[ballot.support.upper()]
    with service.chain_lock:
        p = _proposal(gov, proposal_id)
        chain_id = int(gov.w3.eth.chain_id)
        signature = bytes.fromhex(ballot.signature[2:])
        try:
            signer = ballot_signer(
                chain_id, gov.governor.address, proposal_id, support, ballot.voter, signature
            )
        except InvalidArgument as exc:
            raise ApiError(422, "bad_signature", str(exc)) from None
        if signer.lower() != ballot.voter.lower():
            raise ApiError(
                422,
                "bad_signature",
                f"the ballot is signed by {signer}, not by the voter {ballot.voter}",
            )
        if p.state is not ProposalState.ACTIVE:
            raise ApiError(409, "vote_closed", f"proposal {proposal_id} is {p.state.name.lower()}")
        if not gov.membership.functions.was_member(ballot.voter, p.snapshot).call():
            raise ApiError(
                403,
                "not_a_member",
                f"{ballot.voter} was not a member at the proposal's snapshot block {p.snapshot}",
            )
        if gov.ballot(proposal_id, ballot.voter) is not None:
            raise ApiError(409, "already_voted", f"{ballot.voter} has voted on it already")
        try:
            tx = gov.vote_by_sig(
                service.runtime.client.operator, proposal_id, support, ballot.voter, signature
            )
        except ChainError as exc:  # the chain moved on between the checks and the send
            raise ApiError(502, "relay_failed", f"the vote was not recorded: {exc}") from None
        return BallotOut(
            tx_hash=tx.tx_hash,
            block_number=tx.block_number,
            proposal=_one(gov, gov.proposal(proposal_id), _names(service)),
        )
