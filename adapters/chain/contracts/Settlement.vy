# pragma version ~=0.4.3
"""
@title PeerGrid interval settlement with escrow and producer rewards
@custom:contract-name Settlement
@license Apache-2.0
@notice Participants deposit the payment token into escrow. Once per market
        interval an operator settles the interval in one transaction: signed
        per-account amounts in token base units that must sum to exactly
        zero, plus the energy each producer delivered inside the microgrid
        [Wh], for which the reward token is minted at the configured rate,
        up to a per-interval cap. The contract records the interval's batch
        id and the Merkle roots of its trades and meter readings, emits them
        for auditors, refuses a second settlement of the same interval, and
        lets anyone check one trade or reading against the recorded roots.
        Participants take their escrow and rewards out themselves (pull).

        Roles (snekmate `access_control`): `DEFAULT_ADMIN_ROLE` grants and
        revokes `OPERATOR_ROLE`, pauses and unpauses, and sets the reward
        policy and the withdrawal delay; `OPERATOR_ROLE` settles. The
        deployer is the first admin.

        Pause (snekmate `pausable`) stops `settle` and deposits. Withdrawals
        and reward claims stay open, so an emergency stop never locks
        participants' money in.

        Trust: the operator decides the amounts; the contract guarantees that
        they balance, that no escrow goes below zero, that an interval is
        paid once and that rewards follow the rate and the cap. The recorded
        roots let anyone check afterwards that the amounts follow from the
        interval's trades and meter readings.

        Withdrawals take notice: `request_withdrawal` now, `withdraw` after
        `withdrawal_delay` seconds. Set the delay longer than the time from
        gate closure to settlement, and a credit check at gate closure
        against `available` (escrow minus the pending request) cannot be
        undone by a withdrawal before the interval is settled.

        Gas layout. Accounts get an index on registration (`register`, or
        their first deposit). One storage slot holds two accounts (indices
        2k and 2k+1), each lane 128 bits wide: escrow in the low 64 bits,
        unclaimed rewards in the high 64 bits. A settlement entry is one
        uint256 word per account, in strictly increasing index order (so
        an account appears at most once and two neighbours share one slot
        read and one slot write):

            bits 160..255  account index (1-based)
            bits  80..159  verified local energy delivered [Wh] (reward basis)
            bit        79  sign of the amount: 1 = debit, 0 = credit
            bits   0..78   amount magnitude [token base units]

        The 64-bit lanes hold 1.8e19 base units, 1.8e13 tokens of 6
        decimals; the constructor requires a 6-decimal payment token.

        Merkle trees (the controller's `market.merkle`): leaf = sha256(0x00
        || leaf bytes), node = sha256(0x01 || min(a, b) || max(a, b)). The
        verify functions take the raw leaf bytes (the canonical JSON) and
        hash them here, so an inner node can never pass as a leaf.

        Invariants: the escrow lanes sum to `total_escrow`; the reward lanes
        sum to `total_rewards`; the contract holds at least `total_escrow`
        payment tokens and `total_rewards` reward tokens.
"""


from ethereum.ercs import IERC20
from ethereum.ercs import IERC20Detailed

from snekmate.auth import access_control
initializes: access_control

from snekmate.utils import pausable
initializes: pausable

from snekmate.utils import math


exports: (
    access_control.DEFAULT_ADMIN_ROLE,
    access_control.hasRole,
    access_control.getRoleAdmin,
    access_control.grantRole,
    access_control.revokeRole,
    access_control.renounceRole,
    access_control.supportsInterface,
    pausable.paused,
)


interface IRewardToken:
    def mint(owner: address, amount: uint256): nonpayable
    def transfer(to: address, amount: uint256) -> bool: nonpayable


# @dev The role allowed to settle.
OPERATOR_ROLE: public(constant(bytes32)) = keccak256("OPERATOR_ROLE")

# @dev Decimals the payment token must have (`market.units.TOKEN_DECIMALS`).
TOKEN_DECIMALS: constant(uint8) = 6

# @dev Most entries in one settlement, accounts in one batch call.
MAX_ENTRIES: constant(uint256) = 1024
MAX_BATCH: constant(uint256) = 256

# @dev Longest Merkle proof (a tree of up to 2**64 leaves) and leaf [bytes].
MAX_PROOF: constant(uint256) = 64
MAX_LEAF: constant(uint256) = 4096

_INDEX_SHIFT: constant(uint256) = 160
_WH_SHIFT: constant(uint256) = 80
_WH_MASK: constant(uint256) = 2**80 - 1
_SIGN: constant(uint256) = 2**79
_MAGNITUDE_MASK: constant(uint256) = 2**79 - 1
_LANE_MASK: constant(uint256) = 2**64 - 1


struct AccountState:
    index: uint256
    escrow: uint256
    available: uint256
    pending_withdrawal: uint256
    unclaimed_rewards: uint256


# @dev The payment token held in escrow.
token: public(immutable(IERC20))

# @dev The reward token minted for local energy; the zero address if none.
reward_token: public(immutable(address))

# @dev Registered accounts: index (1-based) of an address, 0 = unregistered.
index_of: public(HashMap[address, uint256])
account_at: public(HashMap[uint256, address])
account_count: public(uint256)

# @dev Two accounts per slot: see the layout above.
_lanes: HashMap[uint256, uint256]

# @dev Sum of all escrow balances [token base units].
total_escrow: public(uint256)

# @dev Sum of all unclaimed rewards [reward base units].
total_rewards: public(uint256)

# @dev Reward base units minted per kWh of verified local energy.
reward_rate: public(uint256)

# @dev Most reward base units minted in one interval.
reward_cap: public(uint256)

# @dev Notice a withdrawal takes [s].
withdrawal_delay: public(uint256)

# @dev The pending withdrawal request of an account and when it matures.
pending_withdrawal: public(HashMap[address, uint256])
withdrawal_ready_at: public(HashMap[address, uint256])

# @dev Block in which each interval was settled; 0 = not settled.
settled_block: public(HashMap[uint256, uint256])

# @dev Batch id (off-chain content hash) and Merkle roots of each interval.
batch_ids: public(HashMap[uint256, bytes32])
trades_roots: public(HashMap[uint256, bytes32])
readings_roots: public(HashMap[uint256, bytes32])


event Registered:
    account: indexed(address)
    index: uint256

event Deposited:
    account: indexed(address)
    payer: indexed(address)
    amount: uint256

event WithdrawalRequested:
    account: indexed(address)
    amount: uint256
    ready_at: uint256

event Withdrawn:
    account: indexed(address)
    amount: uint256

event RewardsClaimed:
    account: indexed(address)
    amount: uint256

event Settled:
    interval_id: indexed(uint256)
    batch_id: indexed(bytes32)
    trades_root: bytes32
    readings_root: bytes32
    n_entries: uint256
    rewards_minted: uint256

# @dev The settlement's packed entries, for auditors (decode with `account_at`).
event SettlementEntries:
    interval_id: indexed(uint256)
    entries: DynArray[uint256, MAX_ENTRIES]

event RewardPolicyChanged:
    rate: uint256
    cap: uint256

event WithdrawalDelayChanged:
    delay: uint256


@deploy
def __init__(
    token_: IERC20,
    reward_token_: address,
    operator_: address,
    withdrawal_delay_: uint256,
    reward_rate_: uint256,
    reward_cap_: uint256,
):
    """
    @dev The deployer becomes the admin; `operator_` gets the operator role.
    @param token_ The payment token (6 decimals).
    @param reward_token_ The reward token, or the zero address for none.
           This contract must be made its minter.
    @param operator_ The first operator.
    @param withdrawal_delay_ Notice a withdrawal takes [s].
    @param reward_rate_ Reward base units per kWh of local energy.
    @param reward_cap_ Most reward base units minted per interval.
    """
    assert token_.address != empty(address), "settlement: token is the zero address"
    assert operator_ != empty(address), "settlement: operator is the zero address"
    assert staticcall IERC20Detailed(token_.address).decimals() == TOKEN_DECIMALS, (
        "settlement: token must have 6 decimals"
    )
    access_control.__init__()
    pausable.__init__()
    token = token_
    reward_token = reward_token_
    access_control._grant_role(OPERATOR_ROLE, operator_)
    self._set_reward_policy(reward_rate_, reward_cap_)
    self.withdrawal_delay = withdrawal_delay_
    log WithdrawalDelayChanged(delay=withdrawal_delay_)


# ---------------------------------------------------------------- admin


@external
def pause():
    """
    @dev Stops settlements and deposits. Only an admin.
    """
    access_control._check_role(access_control.DEFAULT_ADMIN_ROLE, msg.sender)
    pausable._pause()


@external
def unpause():
    """
    @dev Lifts the pause. Only an admin.
    """
    access_control._check_role(access_control.DEFAULT_ADMIN_ROLE, msg.sender)
    pausable._unpause()


@external
def set_reward_policy(rate: uint256, cap: uint256):
    """
    @dev Sets the reward rate and the per-interval cap. Only an admin.
    @param rate Reward base units per kWh of verified local energy.
    @param cap Most reward base units minted per interval.
    """
    access_control._check_role(access_control.DEFAULT_ADMIN_ROLE, msg.sender)
    self._set_reward_policy(rate, cap)


@external
def set_withdrawal_delay(delay: uint256):
    """
    @dev Sets the notice a withdrawal takes [s]. Only an admin. Requests
         made before keep the time at which they mature.
    @param delay The delay [s].
    """
    access_control._check_role(access_control.DEFAULT_ADMIN_ROLE, msg.sender)
    self.withdrawal_delay = delay
    log WithdrawalDelayChanged(delay=delay)


@internal
def _set_reward_policy(rate: uint256, cap: uint256):
    assert rate == 0 or reward_token != empty(address), "settlement: no reward token"
    assert rate <= _WH_MASK, "settlement: reward rate too large"
    self.reward_rate = rate
    self.reward_cap = cap
    log RewardPolicyChanged(rate=rate, cap=cap)


# ---------------------------------------------------------------- accounts


@external
def register(account: address) -> uint256:
    """
    @dev Gives `account` an index (idempotent). Anyone may register anyone:
         an index carries no money and no rights.
    @param account The account.
    @return uint256 Its index (1-based).
    """
    return self._register(account)


@external
def register_many(accounts: DynArray[address, MAX_BATCH]):
    """
    @dev Registers several accounts in order (idempotent).
    @param accounts The accounts.
    """
    for account: address in accounts:
        self._register(account)


@internal
def _register(account: address) -> uint256:
    index: uint256 = self.index_of[account]
    if index == 0:
        assert account != empty(address), "settlement: account is the zero address"
        index = self.account_count + 1
        self.account_count = index
        self.index_of[account] = index
        self.account_at[index] = account
        log Registered(account=account, index=index)
    return index


# ---------------------------------------------------------------- escrow


@external
@nonreentrant
def deposit(amount: uint256):
    """
    @dev Moves `amount` tokens from the caller into its escrow; registers
         the caller on its first deposit. The caller must have approved
         this contract for `amount` (or use `deposit_with_permit`).
    @param amount The amount [token base units].
    """
    pausable._require_not_paused()
    self._deposit(msg.sender, msg.sender, amount)


@external
@nonreentrant
def deposit_with_permit(amount: uint256, deadline: uint256, v: uint8, r: bytes32, s: bytes32):
    """
    @dev `deposit` with an EIP-2612 permit signed by the caller, in one
         transaction. A permit that fails (e.g. already used by someone
         who copied it from the mempool) is ignored: the transfer then
         needs the allowance it set.
    @param amount The amount [token base units].
    @param deadline Last timestamp at which the permit is valid.
    @param v The signature's v.
    @param r The signature's r.
    @param s The signature's s.
    """
    pausable._require_not_paused()
    # The outcome is not needed: without the allowance the transfer fails.
    permitted: bool = raw_call(
        token.address,
        abi_encode(
            msg.sender,
            self,
            amount,
            deadline,
            v,
            r,
            s,
            method_id=method_id("permit(address,address,uint256,uint256,uint8,bytes32,bytes32)"),
        ),
        revert_on_failure=False,
    )
    self._deposit(msg.sender, msg.sender, amount)


@external
@nonreentrant
def deposit_for(accounts: DynArray[address, MAX_BATCH], amounts: DynArray[uint256, MAX_BATCH]):
    """
    @dev Funds the escrow of several accounts from the caller's tokens
         (e.g. a utility topping up its customers), registering them.
    @param accounts The accounts credited.
    @param amounts The amount for each [token base units].
    """
    pausable._require_not_paused()
    assert len(accounts) == len(amounts), "settlement: accounts and amounts differ in length"
    for i: uint256 in range(len(accounts), bound=MAX_BATCH):
        self._deposit(accounts[i], msg.sender, amounts[i])


@internal
def _deposit(account: address, payer: address, amount: uint256):
    assert amount > 0, "settlement: zero amount"
    index: uint256 = self._register(account)
    key: uint256 = index >> 1
    lane: uint256 = (index & 1) << 7
    lanes: uint256 = self._lanes[key]
    balance: uint256 = ((lanes >> lane) & _LANE_MASK) + amount
    assert balance <= _LANE_MASK, "settlement: escrow overflow"
    self._lanes[key] = (lanes & ~(_LANE_MASK << lane)) | (balance << lane)
    self.total_escrow += amount
    log Deposited(account=account, payer=payer, amount=amount)
    assert extcall token.transferFrom(payer, self, amount, default_return_value=True), (
        "settlement: token transfer failed"
    )


@external
def request_withdrawal(amount: uint256):
    """
    @dev Asks to withdraw `amount` of the caller's escrow; it can be
         withdrawn `withdrawal_delay` seconds from now. Replaces an earlier
         request; 0 cancels it.
    @param amount The amount [token base units].
    """
    if amount > 0:
        assert self._escrow(self.index_of[msg.sender]) >= amount, "settlement: insufficient escrow"
    ready_at: uint256 = block.timestamp + self.withdrawal_delay
    self.pending_withdrawal[msg.sender] = amount
    self.withdrawal_ready_at[msg.sender] = ready_at
    log WithdrawalRequested(account=msg.sender, amount=amount, ready_at=ready_at)


@external
@nonreentrant
def withdraw():
    """
    @dev Pays the caller's matured withdrawal request out of its escrow.
    """
    amount: uint256 = self.pending_withdrawal[msg.sender]
    assert amount > 0, "settlement: no withdrawal requested"
    assert block.timestamp >= self.withdrawal_ready_at[msg.sender], (
        "settlement: withdrawal not ready"
    )
    index: uint256 = self.index_of[msg.sender]
    key: uint256 = index >> 1
    lane: uint256 = (index & 1) << 7
    lanes: uint256 = self._lanes[key]
    balance: uint256 = (lanes >> lane) & _LANE_MASK
    assert balance >= amount, "settlement: insufficient escrow"
    self._lanes[key] = (lanes & ~(_LANE_MASK << lane)) | (unsafe_sub(balance, amount) << lane)
    self.total_escrow -= amount
    self.pending_withdrawal[msg.sender] = 0
    log Withdrawn(account=msg.sender, amount=amount)
    assert extcall token.transfer(msg.sender, amount, default_return_value=True), (
        "settlement: token transfer failed"
    )


@external
@nonreentrant
def claim_rewards():
    """
    @dev Pays the caller's unclaimed rewards to its wallet.
    """
    index: uint256 = self.index_of[msg.sender]
    key: uint256 = index >> 1
    lane: uint256 = ((index & 1) << 7) + 64
    lanes: uint256 = self._lanes[key]
    amount: uint256 = (lanes >> lane) & _LANE_MASK
    assert amount > 0, "settlement: no rewards"
    self._lanes[key] = lanes & ~(_LANE_MASK << lane)
    self.total_rewards -= amount
    log RewardsClaimed(account=msg.sender, amount=amount)
    assert extcall IRewardToken(reward_token).transfer(msg.sender, amount), (
        "settlement: reward transfer failed"
    )


# ---------------------------------------------------------------- settlement


@external
@nonreentrant
def settle(
    interval_id: uint256,
    batch_id: bytes32,
    entries: DynArray[uint256, MAX_ENTRIES],
    trades_root: bytes32,
    readings_root: bytes32,
):
    """
    @dev Settles one interval, exactly once: for each entry the account's
         escrow moves by the signed amount and its rewards grow by the
         energy times `reward_rate` / 1000 (scaled down pro rata, floored,
         when the interval's total exceeds `reward_cap`); the rewards are
         minted to this contract, held for the producers until claimed.
    @notice Only an operator, not while paused. Reverts if the interval is
            already settled, if the entries are not in strictly increasing
            index order, name an unregistered account or are empty, if
            the amounts do not sum to zero, or if an escrow would go below
            zero.
    @param interval_id The interval (its start in Unix seconds).
    @param batch_id The off-chain batch id (content hash), for auditors.
    @param entries Packed entries (see the layout in the contract notice).
    @param trades_root Merkle root of the interval's trades.
    @param readings_root Merkle root of the interval's meter readings.
    """
    access_control._check_role(OPERATOR_ROLE, msg.sender)
    pausable._require_not_paused()
    assert self.settled_block[interval_id] == 0, "settlement: interval already settled"

    # Pass 1 (only with a reward rate): the interval's rewards at the full
    # rate, to scale them under the cap before anything is credited.
    rate: uint256 = self.reward_rate
    raw_total: uint256 = 0
    if rate != 0:
        for entry: uint256 in entries:
            raw_total += ((entry >> _WH_SHIFT) & _WH_MASK) * rate // 1000
    cap: uint256 = self.reward_cap
    scaled: bool = raw_total > cap

    credits: uint256 = 0
    debits: uint256 = 0
    minted: uint256 = 0
    previous: uint256 = 0
    key: uint256 = 0
    lanes: uint256 = 0
    loaded: bool = False
    for entry: uint256 in entries:
        index: uint256 = entry >> _INDEX_SHIFT
        assert index > previous, "settlement: entries not in increasing account order"
        previous = index
        magnitude: uint256 = entry & _MAGNITUDE_MASK
        wh: uint256 = (entry >> _WH_SHIFT) & _WH_MASK
        assert magnitude != 0 or wh != 0, "settlement: empty entry"

        if not loaded or (index >> 1) != key:
            if loaded:
                self._lanes[key] = lanes
            key = index >> 1
            lanes = self._lanes[key]
            loaded = True
        lane: uint256 = (index & 1) << 7

        balance: uint256 = (lanes >> lane) & _LANE_MASK
        if entry & _SIGN != 0:
            assert balance >= magnitude, "settlement: insufficient escrow"
            balance = unsafe_sub(balance, magnitude)
            debits += magnitude
        else:
            balance += magnitude
            assert balance <= _LANE_MASK, "settlement: escrow overflow"
            credits += magnitude
        lanes = (lanes & ~(_LANE_MASK << lane)) | (balance << lane)

        if rate != 0 and wh != 0:
            reward: uint256 = wh * rate // 1000
            if scaled:
                # 512-bit intermediate: reward * cap can exceed 2**256.
                reward = math._mul_div(reward, cap, raw_total, False)
            rlane: uint256 = lane + 64
            earned: uint256 = ((lanes >> rlane) & _LANE_MASK) + reward
            assert earned <= _LANE_MASK, "settlement: reward overflow"
            lanes = (lanes & ~(_LANE_MASK << rlane)) | (earned << rlane)
            minted += reward

    if loaded:
        self._lanes[key] = lanes
    assert previous <= self.account_count, "settlement: unknown account"
    assert credits == debits, "settlement: amounts do not sum to zero"

    self.settled_block[interval_id] = block.number
    self.batch_ids[interval_id] = batch_id
    self.trades_roots[interval_id] = trades_root
    self.readings_roots[interval_id] = readings_root
    log Settled(
        interval_id=interval_id,
        batch_id=batch_id,
        trades_root=trades_root,
        readings_root=readings_root,
        n_entries=len(entries),
        rewards_minted=minted,
    )
    log SettlementEntries(interval_id=interval_id, entries=entries)
    if minted != 0:
        self.total_rewards += minted
        extcall IRewardToken(reward_token).mint(self, minted)


# ---------------------------------------------------------------- views


@external
@view
def is_settled(interval_id: uint256) -> bool:
    """
    @dev Whether `interval_id` has been settled.
    @param interval_id The interval (its start in Unix seconds).
    @return bool True once `settle` succeeded for the interval.
    """
    return self.settled_block[interval_id] != 0


@external
@view
def escrow(account: address) -> uint256:
    """
    @dev The escrow balance of `account` [token base units].
    """
    return self._escrow(self.index_of[account])


@external
@view
def unclaimed_rewards(account: address) -> uint256:
    """
    @dev The rewards held for `account` [reward base units].
    """
    index: uint256 = self.index_of[account]
    if index == 0:
        return 0
    return (self._lanes[index >> 1] >> (((index & 1) << 7) + 64)) & _LANE_MASK


@external
@view
def available(account: address) -> uint256:
    """
    @dev What `account`'s escrow can pay: escrow minus its pending
         withdrawal request [token base units]. Check credit against this.
    """
    return self._available(account)


@external
@view
def account_states(accounts: DynArray[address, MAX_ENTRIES]) -> DynArray[AccountState, MAX_ENTRIES]:
    """
    @dev Index, escrow, available credit, pending withdrawal and unclaimed
         rewards of several accounts, in one call.
    @param accounts The accounts.
    @return DynArray One state per account, in order.
    """
    out: DynArray[AccountState, MAX_ENTRIES] = []
    for account: address in accounts:
        index: uint256 = self.index_of[account]
        lanes: uint256 = 0
        if index != 0:
            lanes = self._lanes[index >> 1] >> ((index & 1) << 7)
        out.append(
            AccountState(
                index=index,
                escrow=lanes & _LANE_MASK,
                available=self._available(account),
                pending_withdrawal=self.pending_withdrawal[account],
                unclaimed_rewards=(lanes >> 64) & _LANE_MASK,
            )
        )
    return out


@external
@view
def accounts_at(indices: DynArray[uint256, MAX_ENTRIES]) -> DynArray[address, MAX_ENTRIES]:
    """
    @dev The accounts registered at several indices (zero address if none).
    """
    out: DynArray[address, MAX_ENTRIES] = []
    for index: uint256 in indices:
        out.append(self.account_at[index])
    return out


@external
@view
def verify_trade(interval_id: uint256, leaf: Bytes[MAX_LEAF], proof: DynArray[bytes32, MAX_PROOF]) -> bool:
    """
    @dev Whether `leaf` is a trade of the settled interval `interval_id`.
    @param interval_id The interval.
    @param leaf The trade's canonical JSON (sorted keys, no spaces), not
           its hash: it is hashed here as sha256(0x00 || leaf).
    @param proof Sibling hashes from the leaf to the root.
    @return bool True if the proof links the leaf to the recorded root.
    """
    if self.settled_block[interval_id] == 0:
        return False
    return self._root(leaf, proof) == self.trades_roots[interval_id]


@external
@view
def verify_reading(interval_id: uint256, leaf: Bytes[MAX_LEAF], proof: DynArray[bytes32, MAX_PROOF]) -> bool:
    """
    @dev Whether `leaf` is a meter reading of the settled interval
         `interval_id` (as `verify_trade`, against the readings root).
    """
    if self.settled_block[interval_id] == 0:
        return False
    return self._root(leaf, proof) == self.readings_roots[interval_id]


@external
@pure
def merkle_root_of(leaf: Bytes[MAX_LEAF], proof: DynArray[bytes32, MAX_PROOF]) -> bytes32:
    """
    @dev The root that `proof` links `leaf` to (for off-chain cross-checks).
    """
    return self._root(leaf, proof)


@internal
@pure
def _root(leaf: Bytes[MAX_LEAF], proof: DynArray[bytes32, MAX_PROOF]) -> bytes32:
    node: bytes32 = sha256(concat(b"\x00", leaf))
    for sibling: bytes32 in proof:
        if convert(node, uint256) <= convert(sibling, uint256):
            node = sha256(concat(b"\x01", node, sibling))
        else:
            node = sha256(concat(b"\x01", sibling, node))
    return node


@internal
@view
def _escrow(index: uint256) -> uint256:
    if index == 0:
        return 0
    return (self._lanes[index >> 1] >> ((index & 1) << 7)) & _LANE_MASK


@internal
@view
def _available(account: address) -> uint256:
    balance: uint256 = self._escrow(self.index_of[account])
    pending: uint256 = self.pending_withdrawal[account]
    if pending >= balance:
        return 0
    return unsafe_sub(balance, pending)
