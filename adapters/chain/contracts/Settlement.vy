# pragma version ~=0.4.3
"""
@title PeerGrid interval settlement with escrow
@custom:contract-name Settlement
@license Apache-2.0
@notice Participants deposit the payment token into escrow. Once per market
        interval the operator settles the interval in one transaction: a list
        of accounts and signed amounts in token base units (positive = credit
        to the account's escrow, negative = debit) that must sum to exactly
        zero. The contract records the interval's batch id and the Merkle
        roots of its trades and meter readings, emits one `Settled` event and
        one `AccountSettled` event per account for auditors, and refuses a
        second settlement of the same interval. An interval without payments
        settles with empty arrays and still records its roots. Participants
        withdraw their escrow themselves (pull payments).

        Trust: the operator decides the amounts; the contract only guarantees
        that they balance, that no escrow goes negative and that an interval
        is paid once. The recorded roots let anyone check afterwards that the
        amounts follow from the interval's trades and meter readings.

        Invariant: the sum of all escrow balances equals `total_escrow`, and
        `total_escrow` never exceeds the token balance of this contract.
        `settle` moves escrow between accounts and never changes the total.

        The operator role is hand-written (one address, transferable by the
        operator) rather than snekmate's `ownable`, so that the deployer and
        the operator can differ from the start and the ABI says "operator".
"""


from ethereum.ercs import IERC20


# @dev Most accounts in one settlement. A batch of 256 accounts costs about
# 8 million gas, a quarter of a 30-million-gas block.
MAX_ACCOUNTS: constant(uint256) = 256


# @dev The payment token held in escrow.
token: public(immutable(IERC20))

# @dev The only account allowed to settle.
operator: public(address)

# @dev Escrow balance of each account [token base units].
escrow: public(HashMap[address, uint256])

# @dev Sum of all escrow balances [token base units].
total_escrow: public(uint256)

# @dev Block in which each interval was settled; 0 = not settled.
settled_block: public(HashMap[uint256, uint256])

# @dev Batch id (off-chain content hash) recorded for each settled interval.
batch_ids: public(HashMap[uint256, bytes32])

# @dev Merkle root of the interval's trades.
trades_roots: public(HashMap[uint256, bytes32])

# @dev Merkle root of the interval's meter readings.
readings_roots: public(HashMap[uint256, bytes32])


event Deposited:
    account: indexed(address)
    amount: uint256

event Withdrawn:
    account: indexed(address)
    amount: uint256

event Settled:
    interval_id: indexed(uint256)
    batch_id: indexed(bytes32)
    trades_root: bytes32
    readings_root: bytes32
    n_accounts: uint256

# @dev One per account of a settlement: amount > 0 credited, amount < 0 debited.
event AccountSettled:
    interval_id: indexed(uint256)
    account: indexed(address)
    amount: int256

event OperatorTransferred:
    previous_operator: indexed(address)
    new_operator: indexed(address)


@deploy
def __init__(token_: IERC20, operator_: address):
    """
    @param token_ The payment token.
    @param operator_ The account allowed to settle.
    """
    assert token_.address != empty(address), "settlement: token is the zero address"
    assert operator_ != empty(address), "settlement: operator is the zero address"
    token = token_
    self.operator = operator_
    log OperatorTransferred(previous_operator=empty(address), new_operator=operator_)


@external
@nonreentrant
def deposit(amount: uint256):
    """
    @dev Moves `amount` tokens from the caller into its escrow.
    @notice The caller must have approved this contract for `amount`.
    @param amount The amount [token base units].
    """
    assert amount > 0, "settlement: zero amount"
    self.escrow[msg.sender] += amount
    self.total_escrow += amount
    log Deposited(account=msg.sender, amount=amount)
    assert extcall token.transferFrom(msg.sender, self, amount, default_return_value=True), (
        "settlement: token transfer failed"
    )


@external
@nonreentrant
def withdraw(amount: uint256):
    """
    @dev Pays `amount` of the caller's escrow back to the caller.
    @param amount The amount [token base units].
    """
    assert amount > 0, "settlement: zero amount"
    balance: uint256 = self.escrow[msg.sender]
    assert balance >= amount, "settlement: insufficient escrow"
    self.escrow[msg.sender] = unsafe_sub(balance, amount)
    self.total_escrow -= amount
    log Withdrawn(account=msg.sender, amount=amount)
    assert extcall token.transfer(msg.sender, amount, default_return_value=True), (
        "settlement: token transfer failed"
    )


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
def settle(
    interval_id: uint256,
    batch_id: bytes32,
    accounts: DynArray[address, MAX_ACCOUNTS],
    amounts: DynArray[int256, MAX_ACCOUNTS],
    trades_root: bytes32,
    readings_root: bytes32,
):
    """
    @dev Settles one interval, exactly once: escrow[accounts[i]] += amounts[i].
    @notice Only the operator. Reverts if the interval is already settled, if
            the two arrays differ in length, if an account is the zero
            address, if sum(amounts) != 0, or if an escrow balance would go
            below zero. Entries apply in order, so an account listed twice
            must be able to pay each debit when it comes; net per account
            off-chain.
    @param interval_id The interval (its start in Unix seconds).
    @param batch_id The off-chain batch id (content hash), for auditors.
    @param accounts The accounts settled.
    @param amounts Signed amounts [token base units]; > 0 credit, < 0 debit.
    @param trades_root Merkle root of the interval's trades.
    @param readings_root Merkle root of the interval's meter readings.
    """
    assert msg.sender == self.operator, "settlement: caller is not the operator"
    assert self.settled_block[interval_id] == 0, "settlement: interval already settled"
    n: uint256 = len(accounts)
    assert n == len(amounts), "settlement: accounts and amounts differ in length"

    # Check the sum before touching storage, so that a batch that does not
    # balance fails with that reason rather than with the first overdraft.
    total: int256 = 0
    for amount: int256 in amounts:
        total += amount
    assert total == 0, "settlement: amounts do not sum to zero"

    for i: uint256 in range(n, bound=MAX_ACCOUNTS):
        account: address = accounts[i]
        amount: int256 = amounts[i]
        assert account != empty(address), "settlement: account is the zero address"
        if amount < 0:
            debit: uint256 = convert(-amount, uint256)
            balance: uint256 = self.escrow[account]
            assert balance >= debit, "settlement: insufficient escrow"
            self.escrow[account] = unsafe_sub(balance, debit)
        else:
            self.escrow[account] += convert(amount, uint256)
        log AccountSettled(interval_id=interval_id, account=account, amount=amount)

    self.settled_block[interval_id] = block.number
    self.batch_ids[interval_id] = batch_id
    self.trades_roots[interval_id] = trades_root
    self.readings_roots[interval_id] = readings_root
    log Settled(
        interval_id=interval_id,
        batch_id=batch_id,
        trades_root=trades_root,
        readings_root=readings_root,
        n_accounts=n,
    )


@external
def transfer_operator(new_operator: address):
    """
    @dev Hands the operator role to `new_operator`.
    @notice Only the operator. `new_operator` cannot be the zero address.
    @param new_operator The next operator.
    """
    assert msg.sender == self.operator, "settlement: caller is not the operator"
    assert new_operator != empty(address), "settlement: operator is the zero address"
    log OperatorTransferred(previous_operator=self.operator, new_operator=new_operator)
    self.operator = new_operator
