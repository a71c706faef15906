"""The community's votes: ``/v1/sites/{site}/governance`` (read: anyone; ballots: members).

* ``GET .../governance`` -- the members, the governed values (the ``Parameters`` registry's,
  the governor's voting period and quorum, the timelock's delay, the settlement contract's
  reward rate, cap and withdrawal delay), whether the site is handed over, the EIP-712 domain
  and types of a ballot, and every proposal with its state, tallies and calls in words.
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


class ProposalOut(BaseModel):
    """A proposal: state, tallies, times [Unix s] and its calls in words."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    proposal_id: int
    proposer: str
    state: Literal["active", "canceled", "defeated", "succeeded", "queued", "executed"]
    snapshot_block: int = Field(description="members at the end of this block vote")
    vote_end_s: int = Field(description="votes are taken before this time [Unix s]")
    quorum: int = Field(description="votes (for + against + abstain) it needs")
    votes_for: int
    votes_against: int
    votes_abstain: int
    executable_from_s: int = Field(description="once queued: executable from [Unix s]; else 0")
    changes: list[str] = Field(description="the calls it makes, in words")


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


class BallotIn(BaseModel):
    """A member's signed vote."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    voter: str = Field(pattern=ADDRESS, description="the member's address")
    support: Literal["for", "against", "abstain"]
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


def _out(gov: Governance, p: Proposal) -> ProposalOut:
    return ProposalOut(
        proposal_id=p.proposal_id,
        proposer=p.proposer,
        state=p.state.name.lower(),  # type: ignore[arg-type]
        snapshot_block=p.snapshot,
        vote_end_s=p.vote_end,
        quorum=p.quorum,
        votes_for=p.votes_for,
        votes_against=p.votes_against,
        votes_abstain=p.votes_abstain,
        executable_from_s=p.eta,
        changes=[gov.describe(t, d) for t, d in zip(p.targets, p.payloads, strict=True)],
    )


@router.get("", response_model=GovernanceOut, summary="members, governed values, proposals")
def get_governance(service: SiteDep) -> GovernanceOut:
    """The community's governance as the chain holds it now."""
    gov = _governance(service)
    with service.chain_lock:
        settlement = gov.contracts.settlement.functions
        fns = gov.governor.functions
        chain_id = int(gov.w3.eth.chain_id)
        proposals = [_out(gov, gov.proposal(i)) for i in range(1, gov.proposal_count() + 1)]
        return GovernanceOut(
            governor=gov.governor.address,
            timelock=gov.timelock.address,
            membership=gov.membership.address,
            parameters_registry=gov.parameters.address,
            members=gov.member_count(),
            handed_over=gov.handed_over(),
            parameters={name: gov.parameter(name) for name in REGISTRY},
            parameter_units={name: spec.unit for name, spec in REGISTRY.items()},
            voting_period_s=int(fns.voting_period().call()),
            quorum_bps=int(fns.quorum_bps().call()),
            delay_s=int(gov.timelock.functions.get_minimum_delay().call()),
            reward_rate_per_kwh=int(settlement.reward_rate().call()),
            reward_cap=int(settlement.reward_cap().call()),
            withdrawal_delay_s=int(settlement.withdrawal_delay().call()),
            ballot_domain=ballot_domain(chain_id, gov.governor.address),
            ballot_types={k: [dict(f) for f in v] for k, v in BALLOT_TYPES.items()},
            proposals=proposals,
        )


@router.get("/proposals/{proposal_id}", response_model=ProposalOut, summary="one proposal")
def get_proposal(service: SiteDep, proposal_id: ProposalId) -> ProposalOut:
    """A proposal's state, tallies and calls."""
    gov = _governance(service)
    with service.chain_lock:
        return _out(gov, _proposal(gov, proposal_id))


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
            proposal=_out(gov, gov.proposal(proposal_id)),
        )
