# pragma version ~=0.4.3
"""
@title PeerGrid governed market parameters
@custom:contract-name Parameters
@license Apache-2.0
@notice The registry of a community's governed market parameters that the
        `Settlement` contract does not hold itself: the community fee, the
        bounds of the operator's tariffs and the gate closure (issue 16).
        Each parameter is an unsigned integer in a named unit under a
        32-byte key, `keccak256` of its name (`market.governance` lists the
        names, units and limits). The owner, after hand-over the
        community's timelock, sets values, so a value changes only by an
        executed vote. Every change is checkpointed by block: `value_at`
        answers for any past block, so a record's values can be checked
        against the registry at the block it names, on any node.
        Ownership comes from snekmate 0.1.2's `ownable`; `renounce_ownership`
        is not exported.
@dev New, unaudited code. Lookups are binary searches, at most 11 steps.
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


# Changes of one parameter over the contract's life.
MAX_CHANGES: constant(uint256) = 1024
# Parameters set at deployment.
MAX_INITIAL: constant(uint256) = 32
# Binary-search steps: 2**11 > MAX_CHANGES.
SEARCH_STEPS: constant(uint256) = 11


_history: HashMap[bytes32, DynArray[Checkpoint, MAX_CHANGES]]


event ParameterChanged:
    key: indexed(bytes32)
    old_value: uint256
    new_value: uint256
    was_set: bool


@deploy
@payable
def __init__(keys: DynArray[bytes32, MAX_INITIAL], values: DynArray[uint256, MAX_INITIAL]):
    """
    @dev The deployer owns the registry until it hands ownership to the
         community's timelock.
    @param keys The parameters set at deployment (the site file's values).
    @param values Their values, in the same order.
    """
    ownable.__init__()
    assert len(keys) == len(values), "parameters: length mismatch"
    for i: uint256 in range(MAX_INITIAL):
        if i >= len(keys):
            break
        self._set(keys[i], values[i])


@external
def set_value(key: bytes32, new_value: uint256):
    """
    @dev Set parameter `key` (owner only: after hand-over, an executed vote).
    @param key `keccak256` of the parameter's name.
    @param new_value The new value, in the parameter's unit.
    """
    ownable._check_owner()
    self._set(key, new_value)


@external
@view
def is_set(key: bytes32) -> bool:
    """
    @dev Whether `key` has ever been set.
    """
    return len(self._history[key]) > 0


@external
@view
def get(key: bytes32) -> uint256:
    """
    @dev The value of `key` now (0 if never set: see `is_set`).
    """
    n: uint256 = len(self._history[key])
    if n == 0:
        return 0
    return self._history[key][n - 1].value


@external
@view
def current(key: bytes32) -> (bool, uint256, uint256):
    """
    @dev The value of `key` now (in a call at a block: at that block).
    @return Whether it is set, its value, and the block it was set in.
    """
    n: uint256 = len(self._history[key])
    if n == 0:
        return (False, 0, 0)
    last: Checkpoint = self._history[key][n - 1]
    return (True, last.value, last.block)


@external
@view
def value_at(key: bytes32, block_number: uint256) -> (bool, uint256, uint256):
    """
    @dev The value of `key` at the end of block `block_number`.
    @param block_number A past block (the current one can still change).
    @return Whether it was set then, its value, and the block it was set in.
    """
    assert block_number < block.number, "parameters: block not yet mined"
    low: uint256 = 0
    high: uint256 = len(self._history[key])
    for _: uint256 in range(SEARCH_STEPS):
        if low >= high:
            break
        mid: uint256 = (low + high) // 2
        if self._history[key][mid].block > block_number:
            high = mid
        else:
            low = mid + 1
    if low == 0:
        return (False, 0, 0)
    found: Checkpoint = self._history[key][low - 1]
    return (True, found.value, found.block)


@external
@view
def changes(key: bytes32) -> uint256:
    """
    @dev How many blocks changed `key` (its history's length).
    """
    return len(self._history[key])


@internal
def _set(key: bytes32, new_value: uint256):
    n: uint256 = len(self._history[key])
    old_value: uint256 = 0
    if n > 0:
        old_value = self._history[key][n - 1].value
    if n > 0 and self._history[key][n - 1].block == block.number:
        self._history[key][n - 1].value = new_value
    else:
        self._history[key].append(Checkpoint(block=block.number, value=new_value))
    log ParameterChanged(key=key, old_value=old_value, new_value=new_value, was_set=n > 0)
