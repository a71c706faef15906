# pragma version ~=0.4.3
"""
@title PeerGrid community membership: one member, one vote, checkpointed
@custom:contract-name Membership
@license Apache-2.0
@notice The members of an energy community, for its votes (issue 16,
        community governance). Membership is not a token: it cannot be
        transferred, bought or delegated, and it counts one vote whatever an
        account holds. The initial members are set at deployment (the site's
        participants); later members are admitted and removed by the owner,
        which after hand-over is the community's timelock, so only by a vote.
        Every change is checkpointed by block, so a proposal counts the
        members at its snapshot block: `was_member(account, block)` and
        `member_count_at(block)` answer for any past block.
        Ownership comes from snekmate 0.1.2's `ownable` (`transfer_ownership`
        hands it to the timelock; `renounce_ownership` is not exported, so
        membership can never be frozen by accident).
@dev New, unaudited code (snekmate has no governor or membership module).
     Lookups are binary searches over the checkpoints, at most 17 steps.
"""


from snekmate.auth import ownable
initializes: ownable

exports: (
    ownable.owner,
    ownable.transfer_ownership,
)


struct Checkpoint:
    block: uint256
    value: uint256


# Members a deployment can start with (a site's participants).
MAX_INITIAL: constant(uint256) = 1024
# Admissions and removals of one account over the contract's life.
MAX_ACCOUNT_CHECKPOINTS: constant(uint256) = 1024
# Blocks in which the number of members changed, over the contract's life.
MAX_COUNT_CHECKPOINTS: constant(uint256) = 65536
# Binary-search steps: enough for 2**17 > MAX_COUNT_CHECKPOINTS checkpoints.
SEARCH_STEPS: constant(uint256) = 17


_history: HashMap[address, DynArray[Checkpoint, MAX_ACCOUNT_CHECKPOINTS]]
_counts: DynArray[Checkpoint, MAX_COUNT_CHECKPOINTS]


event MemberAdmitted:
    member: indexed(address)
    members: uint256


event MemberRemoved:
    member: indexed(address)
    members: uint256


@deploy
@payable
def __init__(initial_members: DynArray[address, MAX_INITIAL]):
    """
    @dev The deployer owns the contract until it hands ownership to the
         community's timelock.
    @param initial_members The first members (no duplicates, no zero address).
    """
    ownable.__init__()
    for member: address in initial_members:
        self._admit(member)


@external
def admit(member: address):
    """
    @dev Admit `member` (owner only: after hand-over, an executed vote).
    @param member The account admitted; must not be a member.
    """
    ownable._check_owner()
    self._admit(member)


@external
def remove(member: address):
    """
    @dev Remove `member` (owner only: after hand-over, an executed vote).
    @param member The account removed; must be a member.
    """
    ownable._check_owner()
    assert self._current(member) == 1, "membership: not a member"
    self._write_member(member, 0)
    members: uint256 = self._count_now() - 1
    self._write_count(members)
    log MemberRemoved(member=member, members=members)


@external
@view
def is_member(account: address) -> bool:
    """
    @dev Whether `account` is a member now.
    """
    return self._current(account) == 1


@external
@view
def member_count() -> uint256:
    """
    @dev The number of members now.
    """
    return self._count_now()


@external
@view
def was_member(account: address, block_number: uint256) -> bool:
    """
    @dev Whether `account` was a member at the end of block `block_number`.
    @param block_number A past block (the current one can still change).
    """
    assert block_number < block.number, "membership: block not yet mined"
    return self._member_at(account, block_number) == 1


@external
@view
def member_count_at(block_number: uint256) -> uint256:
    """
    @dev The number of members at the end of block `block_number`.
    @param block_number A past block (the current one can still change).
    """
    assert block_number < block.number, "membership: block not yet mined"
    return self._count_at(block_number)


@internal
def _admit(member: address):
    assert member != empty(address), "membership: zero address"
    assert self._current(member) == 0, "membership: already a member"
    self._write_member(member, 1)
    members: uint256 = self._count_now() + 1
    self._write_count(members)
    log MemberAdmitted(member=member, members=members)


@internal
def _write_member(member: address, state: uint256):
    n: uint256 = len(self._history[member])
    if n > 0 and self._history[member][n - 1].block == block.number:
        self._history[member][n - 1].value = state
    else:
        self._history[member].append(Checkpoint(block=block.number, value=state))


@internal
def _write_count(members: uint256):
    n: uint256 = len(self._counts)
    if n > 0 and self._counts[n - 1].block == block.number:
        self._counts[n - 1].value = members
    else:
        self._counts.append(Checkpoint(block=block.number, value=members))


@internal
@view
def _current(member: address) -> uint256:
    n: uint256 = len(self._history[member])
    if n == 0:
        return 0
    return self._history[member][n - 1].value


@internal
@view
def _count_now() -> uint256:
    n: uint256 = len(self._counts)
    if n == 0:
        return 0
    return self._counts[n - 1].value


@internal
@view
def _member_at(member: address, block_number: uint256) -> uint256:
    # the number of checkpoints at or before `block_number` (checkpoints are in block order)
    low: uint256 = 0
    high: uint256 = len(self._history[member])
    for _: uint256 in range(SEARCH_STEPS):
        if low >= high:
            break
        mid: uint256 = (low + high) // 2
        if self._history[member][mid].block > block_number:
            high = mid
        else:
            low = mid + 1
    if low == 0:
        return 0
    return self._history[member][low - 1].value


@internal
@view
def _count_at(block_number: uint256) -> uint256:
    low: uint256 = 0
    high: uint256 = len(self._counts)
    for _: uint256 in range(SEARCH_STEPS):
        if low >= high:
            break
        mid: uint256 = (low + high) // 2
        if self._counts[mid].block > block_number:
            high = mid
        else:
            low = mid + 1
    if low == 0:
        return 0
    return self._counts[low - 1].value
