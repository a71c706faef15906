# pragma version ~=0.4.3
"""
@title PeerGrid community governor: members propose, vote and queue
@custom:contract-name Governor
@license Apache-2.0
@notice An energy community's votes on its own rules (issue 16). A member
        proposes up to `MAX_ACTIONS` calls (a governed parameter's setter,
        an admission to the membership, ...). The proposal's snapshot is
        the block before it: only accounts that were members at the end of
        that block vote on it, each once, for, against or abstain, until
        `voting_period` seconds after the proposal. It passes when
            for + against + abstain >= ceil(quorum_bps x members / 10,000)
        counting the members at the snapshot (and at least one vote), and
            for > against.
        Anyone then queues it in the community's timelock (snekmate's
        `timelock_controller`, whose only proposer and executor this
        contract is) and, once the timelock's delay has run out, executes
        it. The voting period and the quorum are changed only by the
        timelock (so by a vote); the delay is the timelock's own.
        A vote can be cast by the member's own transaction or relayed with
        the member's EIP-712 signature (`cast_vote_by_sig`); a member's vote
        counts once either way, so a signature cannot be replayed.
@dev New, unaudited code: snekmate 0.1.2 has a timelock but no governor.
     Proposal ids are sequential from 1. Each action is its own timelock
     operation (salt keccak256(id, index)), scheduled and executed in one
     transaction each, so a proposal executes all its actions or none;
     single operations because the timelock's batch functions take arrays
     of 255 payloads and cost ~1.7 million gas in memory alone.
"""


from snekmate.utils import ecdsa
from snekmate.utils import eip712_domain_separator
initializes: eip712_domain_separator

exports: eip712_domain_separator.eip712Domain


interface IMembership:
    def is_member(account: address) -> bool: view
    def was_member(account: address, block_number: uint256) -> bool: view
    def member_count_at(block_number: uint256) -> uint256: view


interface ITimelock:
    def schedule(
        target: address, amount: uint256, payload: Bytes[MAX_PAYLOAD], predecessor: bytes32, salt: bytes32, delay: uint256
    ): nonpayable
    def execute(target: address, amount: uint256, payload: Bytes[MAX_PAYLOAD], predecessor: bytes32, salt: bytes32): payable
    def hash_operation(
        target: address, amount: uint256, payload: Bytes[MAX_PAYLOAD], predecessor: bytes32, salt: bytes32
    ) -> bytes32: view
    def get_minimum_delay() -> uint256: view


# Calls in one proposal, and the size of one call (the timelock's bound).
MAX_ACTIONS: constant(uint256) = 8
MAX_PAYLOAD: constant(uint256) = 1024
MAX_DESCRIPTION: constant(uint256) = 2048

# Vote choices (OpenZeppelin's Governor numbering).
VOTE_AGAINST: constant(uint8) = 0
VOTE_FOR: constant(uint8) = 1
VOTE_ABSTAIN: constant(uint8) = 2

# Proposal states, as `state` answers them.
ACTIVE: constant(uint8) = 1
CANCELED: constant(uint8) = 2
DEFEATED: constant(uint8) = 3
SUCCEEDED: constant(uint8) = 4
QUEUED: constant(uint8) = 5
EXECUTED: constant(uint8) = 6

# Limits of the governed settings.
BPS: constant(uint256) = 10_000
MIN_VOTING_PERIOD: constant(uint256) = 60
MAX_VOTING_PERIOD: constant(uint256) = 60 * 86_400

_BALLOT_TYPEHASH: constant(bytes32) = keccak256("Ballot(uint256 proposalId,uint8 support,address voter)")
_EIP712_NAME: constant(String[50]) = "PeerGrid Governor"
_EIP712_VERSION: constant(String[20]) = "1"


struct Proposal:
    proposer: address
    snapshot: uint256
    vote_end: uint256
    quorum: uint256
    against_votes: uint256
    for_votes: uint256
    abstain_votes: uint256
    eta: uint256
    queued: bool
    executed: bool
    canceled: bool
    description_hash: bytes32


membership: public(immutable(IMembership))
timelock: public(immutable(ITimelock))

# Governed (by the timelock): seconds a vote stays open, and the quorum in
# basis points of the members at the snapshot.
voting_period: public(uint256)
quorum_bps: public(uint256)

proposal_count: public(uint256)
proposals: public(HashMap[uint256, Proposal])
_targets: HashMap[uint256, DynArray[address, MAX_ACTIONS]]
_payloads: HashMap[uint256, DynArray[Bytes[MAX_PAYLOAD], MAX_ACTIONS]]
# 0 = not voted, else choice + 1
_ballots: HashMap[uint256, HashMap[address, uint8]]


event ProposalCreated:
    proposal_id: indexed(uint256)
    proposer: indexed(address)
    targets: DynArray[address, MAX_ACTIONS]
    payloads: DynArray[Bytes[MAX_PAYLOAD], MAX_ACTIONS]
    description: String[MAX_DESCRIPTION]
    snapshot: uint256
    vote_end: uint256
    quorum: uint256


event VoteCast:
    voter: indexed(address)
    proposal_id: indexed(uint256)
    support: uint8


event ProposalQueued:
    proposal_id: indexed(uint256)
    eta: uint256


event ProposalExecuted:
    proposal_id: indexed(uint256)


event ProposalCanceled:
    proposal_id: indexed(uint256)


event VotingPeriodChanged:
    old_value: uint256
    new_value: uint256


event QuorumChanged:
    old_value: uint256
    new_value: uint256


@deploy
@payable
def __init__(membership_: IMembership, timelock_: ITimelock, voting_period_: uint256, quorum_bps_: uint256):
    """
    @param membership_ The community's `Membership` contract.
    @param timelock_ The community's timelock; it must make this contract
           its proposer and executor (the hand-over).
    @param voting_period_ Seconds a vote stays open.
    @param quorum_bps_ Quorum in basis points of the members at a snapshot.
    """
    eip712_domain_separator.__init__(_EIP712_NAME, _EIP712_VERSION)
    membership = membership_
    timelock = timelock_
    self._set_voting_period(voting_period_)
    self._set_quorum(quorum_bps_)


@external
def propose(
    targets: DynArray[address, MAX_ACTIONS],
    payloads: DynArray[Bytes[MAX_PAYLOAD], MAX_ACTIONS],
    description: String[MAX_DESCRIPTION],
) -> uint256:
    """
    @dev Propose calls by the timelock (members only). The vote opens now.
    @param targets The contracts called, in order.
    @param payloads The ABI-encoded calls, one per target.
    @param description What the proposal does and why, for the members.
    @return The proposal's id.
    """
    assert staticcall membership.is_member(msg.sender), "governor: not a member"
    assert len(targets) > 0, "governor: no actions"
    assert len(targets) == len(payloads), "governor: length mismatch"
    snapshot: uint256 = block.number - 1
    members: uint256 = staticcall membership.member_count_at(snapshot)
    quorum: uint256 = max((self.quorum_bps * members + BPS - 1) // BPS, 1)
    proposal_id: uint256 = self.proposal_count + 1
    self.proposal_count = proposal_id
    vote_end: uint256 = block.timestamp + self.voting_period
    self.proposals[proposal_id] = Proposal(
        proposer=msg.sender,
        snapshot=snapshot,
        vote_end=vote_end,
        quorum=quorum,
        against_votes=0,
        for_votes=0,
        abstain_votes=0,
        eta=0,
        queued=False,
        executed=False,
        canceled=False,
        description_hash=keccak256(description),
    )
    self._targets[proposal_id] = targets
    self._payloads[proposal_id] = payloads
    log ProposalCreated(
        proposal_id=proposal_id,
        proposer=msg.sender,
        targets=targets,
        payloads=payloads,
        description=description,
        snapshot=snapshot,
        vote_end=vote_end,
        quorum=quorum,
    )
    return proposal_id


@external
def cast_vote(proposal_id: uint256, support: uint8):
    """
    @dev Vote on an active proposal (members at its snapshot, once each).
    @param support 0 against, 1 for, 2 abstain.
    """
    self._vote(proposal_id, msg.sender, support)


@external
def cast_vote_by_sig(proposal_id: uint256, support: uint8, voter: address, signature: Bytes[65]):
    """
    @dev Relay `voter`'s vote, signed as the EIP-712 `Ballot(uint256
         proposalId,uint8 support,address voter)` of this contract's domain.
    @param signature The 65-byte signature (r, s, v).
    """
    struct_hash: bytes32 = keccak256(abi_encode(_BALLOT_TYPEHASH, proposal_id, support, voter))
    digest: bytes32 = eip712_domain_separator._hash_typed_data_v4(struct_hash)
    signer: address = ecdsa._recover_sig(digest, signature)
    assert signer == voter and voter != empty(address), "governor: invalid signature"
    self._vote(proposal_id, voter, support)


@external
def queue(proposal_id: uint256):
    """
    @dev Schedule a succeeded proposal in the timelock (anyone).
    """
    assert self._state(proposal_id) == SUCCEEDED, "governor: proposal not succeeded"
    delay: uint256 = staticcall timelock.get_minimum_delay()
    self.proposals[proposal_id].queued = True
    self.proposals[proposal_id].eta = block.timestamp + delay
    targets: DynArray[address, MAX_ACTIONS] = self._targets[proposal_id]
    payloads: DynArray[Bytes[MAX_PAYLOAD], MAX_ACTIONS] = self._payloads[proposal_id]
    for i: uint256 in range(len(targets), bound=MAX_ACTIONS):
        extcall timelock.schedule(targets[i], 0, payloads[i], empty(bytes32), self._salt(proposal_id, i), delay)
    log ProposalQueued(proposal_id=proposal_id, eta=block.timestamp + delay)


@external
def execute(proposal_id: uint256):
    """
    @dev Execute a queued proposal once the timelock's delay has run out
         (anyone; the timelock refuses it earlier).
    """
    assert self._state(proposal_id) == QUEUED, "governor: proposal not queued"
    self.proposals[proposal_id].executed = True
    targets: DynArray[address, MAX_ACTIONS] = self._targets[proposal_id]
    payloads: DynArray[Bytes[MAX_PAYLOAD], MAX_ACTIONS] = self._payloads[proposal_id]
    for i: uint256 in range(len(targets), bound=MAX_ACTIONS):
        extcall timelock.execute(targets[i], 0, payloads[i], empty(bytes32), self._salt(proposal_id, i))
    log ProposalExecuted(proposal_id=proposal_id)


@external
def cancel(proposal_id: uint256):
    """
    @dev Withdraw a proposal (its proposer only, while the vote is open).
    """
    assert self._state(proposal_id) == ACTIVE, "governor: proposal not active"
    assert msg.sender == self.proposals[proposal_id].proposer, "governor: not the proposer"
    self.proposals[proposal_id].canceled = True
    log ProposalCanceled(proposal_id=proposal_id)


@external
def set_voting_period(new_value: uint256):
    """
    @dev Change the voting period [s] (timelock only: an executed vote).
    """
    assert msg.sender == timelock.address, "governor: caller is not the timelock"
    self._set_voting_period(new_value)


@external
def set_quorum_bps(new_value: uint256):
    """
    @dev Change the quorum [basis points] (timelock only: an executed vote).
    """
    assert msg.sender == timelock.address, "governor: caller is not the timelock"
    self._set_quorum(new_value)


@external
@view
def state(proposal_id: uint256) -> uint8:
    """
    @dev 1 active, 2 canceled, 3 defeated, 4 succeeded, 5 queued,
         6 executed; reverts for an unknown id.
    """
    return self._state(proposal_id)


@external
@view
def actions(proposal_id: uint256) -> (DynArray[address, MAX_ACTIONS], DynArray[Bytes[MAX_PAYLOAD], MAX_ACTIONS]):
    """
    @dev The calls a proposal makes: targets and payloads.
    """
    return (self._targets[proposal_id], self._payloads[proposal_id])


@external
@view
def ballot(proposal_id: uint256, voter: address) -> uint8:
    """
    @dev 0 if `voter` has not voted on the proposal, else its choice + 1.
    """
    return self._ballots[proposal_id][voter]


@external
@view
def operation_ids(proposal_id: uint256) -> DynArray[bytes32, MAX_ACTIONS]:
    """
    @dev The proposal's operations in the timelock, one per action.
    """
    targets: DynArray[address, MAX_ACTIONS] = self._targets[proposal_id]
    payloads: DynArray[Bytes[MAX_PAYLOAD], MAX_ACTIONS] = self._payloads[proposal_id]
    ids: DynArray[bytes32, MAX_ACTIONS] = []
    for i: uint256 in range(len(targets), bound=MAX_ACTIONS):
        ids.append(
            staticcall timelock.hash_operation(targets[i], 0, payloads[i], empty(bytes32), self._salt(proposal_id, i))
        )
    return ids


@internal
def _vote(proposal_id: uint256, voter: address, support: uint8):
    assert self._state(proposal_id) == ACTIVE, "governor: vote not open"
    assert support <= VOTE_ABSTAIN, "governor: invalid choice"
    snapshot: uint256 = self.proposals[proposal_id].snapshot
    assert staticcall membership.was_member(voter, snapshot), "governor: not a member at the snapshot"
    assert self._ballots[proposal_id][voter] == 0, "governor: already voted"
    self._ballots[proposal_id][voter] = support + 1
    if support == VOTE_AGAINST:
        self.proposals[proposal_id].against_votes += 1
    elif support == VOTE_FOR:
        self.proposals[proposal_id].for_votes += 1
    else:
        self.proposals[proposal_id].abstain_votes += 1
    log VoteCast(voter=voter, proposal_id=proposal_id, support=support)


@internal
@view
def _state(proposal_id: uint256) -> uint8:
    assert proposal_id > 0 and proposal_id <= self.proposal_count, "governor: unknown proposal"
    p: Proposal = self.proposals[proposal_id]
    if p.executed:
        return EXECUTED
    if p.canceled:
        return CANCELED
    if p.queued:
        return QUEUED
    if block.timestamp < p.vote_end:
        return ACTIVE
    if p.for_votes + p.against_votes + p.abstain_votes >= p.quorum and p.for_votes > p.against_votes:
        return SUCCEEDED
    return DEFEATED


@internal
@pure
def _salt(proposal_id: uint256, index: uint256) -> bytes32:
    return keccak256(abi_encode(proposal_id, index))


@internal
def _set_voting_period(new_value: uint256):
    assert new_value >= MIN_VOTING_PERIOD and new_value <= MAX_VOTING_PERIOD, "governor: voting period out of range"
    log VotingPeriodChanged(old_value=self.voting_period, new_value=new_value)
    self.voting_period = new_value


@internal
def _set_quorum(new_value: uint256):
    assert new_value > 0 and new_value <= BPS, "governor: quorum out of range"
    log QuorumChanged(old_value=self.quorum_bps, new_value=new_value)
    self.quorum_bps = new_value
