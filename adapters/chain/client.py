"""PeerGrid's client for its payment token, reward token and settlement contracts.

:class:`ChainClient` takes a :class:`~web3.Web3` from any backend
(:func:`~adapters.chain.backends.connect`: the embedded py-evm chain, an anvil node PeerGrid
starts, or any JSON-RPC URL). It

* signs every transaction **locally** with an :class:`~eth_account.signers.local.LocalAccount`
  (eth-account; coincurve makes it fast), so the node never holds a key;
* sends through :class:`~adapters.chain.sender.TxSender`: gap-free local nonces the owner can
  read, set and persist, a stuck transaction replaced with a fee bump at the same nonce,
  receipts awaited to a finality depth with reorganisations noticed;
* sets explicit gas limits from a table measured on the committed bytecode (``eth_estimateGas``
  on py-evm takes seconds per large batch);
* turns a reverted transaction into :class:`~adapters.chain.errors.TransactionReverted` with the
  contract's reason.

Money is an ``int`` in token base units everywhere (6 decimals, :mod:`market.units`); energy is
an ``int`` in Wh.

Exactly once: :meth:`ChainClient.submit_settlement` first waits for transactions a crashed
predecessor left at the node, then asks the chain whether the interval is settled (waiting
until that answer is final) and, if it is with the same batch id, returns the original receipt
with ``status="already_settled"`` instead of sending; with a different batch id it raises
:class:`~adapters.chain.errors.AlreadySettled`. The contract refuses a second settlement of an
interval anyway, so a restart can never pay twice. Persisting the intent before sending is the
caller's job (the controller's store).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed
from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TransactionNotFound
from web3.logs import DISCARD
from web3.types import BlockIdentifier, EventData, TxParams, Wei

from adapters.chain.artifact import Artifact, load_artifact
from adapters.chain.backends import embedded_web3
from adapters.chain.encoding import LANE_MAX, build_entries, unpack_entry
from adapters.chain.errors import (
    AlreadySettled,
    ChainError,
    ConfirmationTimeout,
    InsufficientEscrow,
    TransactionReverted,
)
from adapters.chain.sender import (
    DEFAULT_PRIORITY_FEE_WEI,
    MAX_TX_GAS,
    NODE_ERRORS,
    TxResult,
    TxSender,
    hex0x,
    revert_reason,
)
from market.units import TokenUnits

DEMO_KEY_PREFIX: Final = b"peergrid-demo:"
"""Prefix of the labels hashed into demo keys by :func:`derive_account`."""

MAX_SETTLEMENT_ACCOUNTS: Final = 1024
"""Most accounts in one settlement (``MAX_ENTRIES`` in ``Settlement.vy``)."""

MAX_BATCH: Final = 256
"""Most accounts per ``register_many`` / ``deposit_for`` call (``MAX_BATCH``)."""

OPERATOR_ROLE: Final = Web3.keccak(text="OPERATOR_ROLE")
DEFAULT_ADMIN_ROLE: Final = bytes(32)

# Gas limits [gas], measured on the committed bytecode (py-evm, cancun rules; see
# tests/adapters/chain/test_chain_gas.py) and rounded up with a margin; gas not used is not paid.
GAS_DEPLOY_TOKEN: Final = 1_600_000  # measured 1_179_603
GAS_DEPLOY_REWARD_TOKEN: Final = 1_700_000  # measured 1_267_460
GAS_DEPLOY_SETTLEMENT: Final = 3_500_000  # measured 2_661_414
GAS_MINT: Final = 100_000  # measured 70_287 (first mint to an address), 36_087 after
GAS_APPROVE: Final = 70_000  # measured 45_949
GAS_DEPOSIT: Final = 220_000  # measured 173_428 (first deposit, registers), 56_300 after
GAS_DEPOSIT_FOR_BASE: Final = 100_000
GAS_DEPOSIT_FOR_PER_ACCOUNT: Final = 100_000  # measured 66_867 per fresh account
GAS_REGISTER_BASE: Final = 60_000
GAS_REGISTER_PER_ACCOUNT: Final = 75_000  # measured 46_966 per fresh account
GAS_REQUEST_WITHDRAWAL: Final = 100_000  # measured 73_994 (first request), 56_894 after
GAS_WITHDRAW: Final = 100_000  # measured 53_315
GAS_CLAIM: Final = 120_000  # measured 58_253 (first claim to a wallet)
GAS_ADMIN: Final = 100_000  # role grants, pause, policy: measured 24_773-50_920
GAS_SETTLE_BASE: Final = 320_000  # measured 133_037 empty, +~85_000 for a first reward mint
GAS_SETTLE_PER_ENTRY: Final = 9_000  # measured 3_919 per entry at 100-500, ~7_200 unpaired
GAS_SETTLE_PER_FRESH_ENTRY: Final = 27_000  # measured 12_504 per fresh pair member, ~24_000 alone
GAS_ETH_TRANSFER: Final = 21_000


def settle_gas_limit(n_entries: int, n_fresh: int = 0) -> int:
    """Gas limit [gas] for a settlement of ``n_entries`` accounts, ``n_fresh`` of them new.

    An account whose escrow and rewards are both zero may sit in a never-written storage
    slot, which costs ~20,000 gas more to write. Capped at 2**24, the per-transaction limit
    since Osaka (EIP-7825).
    """
    n_fresh = min(n_fresh, n_entries)
    gas = (
        GAS_SETTLE_BASE
        + GAS_SETTLE_PER_ENTRY * (n_entries - n_fresh)
        + GAS_SETTLE_PER_FRESH_ENTRY * n_fresh
    )
    return min(gas, MAX_TX_GAS)


class SettlementStatus(enum.StrEnum):
    """Outcome of :meth:`ChainClient.submit_settlement`."""

    SETTLED = "settled"
    """This call's transaction settled the interval."""
    ALREADY_SETTLED = "already_settled"
    """The interval was settled before, with the same batch id; nothing was sent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementReceipt:
    """Where and how an interval was settled on-chain (final to the client's depth).

    Attributes
    ----------
    batch_id : str
        The batch id recorded on-chain, as 64 hex digits without ``0x`` (the form of
        ``market``'s content hashes).
    interval_id : int
        The interval: its start in Unix seconds [s].
    tx_hash : str
        Hash of the settling transaction, ``0x``-prefixed hex (``""`` if the node no longer
        serves the logs of an old settlement).
    block_number : int
        Block that holds the settling transaction.
    gas_used : int
        Gas used by the settling transaction [gas] (0 if unknown, as for ``tx_hash``).
    status : SettlementStatus
        ``"settled"`` by this call, or ``"already_settled"`` before it.
    rewards_minted : int
        Reward tokens minted for the interval [reward base units].
    nonce : int
        The operator's nonce of the settling transaction (-1 if unknown).
    """

    batch_id: str
    interval_id: int
    tx_hash: str
    block_number: int
    gas_used: int
    status: SettlementStatus
    rewards_minted: int = 0
    nonce: int = -1


class SettledBatch(NamedTuple):
    """What the settlement contract recorded for an interval: three raw 32-byte values."""

    batch_id: bytes
    trades_root: bytes
    readings_root: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SettledEvent:
    """A decoded ``Settled`` event, for auditors.

    Hashes are hex: ``batch_id`` and the roots without ``0x`` (64 digits), ``tx_hash`` with.
    """

    interval_id: int
    batch_id: str
    trades_root: str
    readings_root: str
    n_entries: int
    rewards_minted: int
    block_number: int
    tx_hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountState:
    """An account as the settlement contract sees it. Amounts in base units.

    Attributes
    ----------
    index : int
        Registry index (0 = not registered).
    escrow : int
        Escrow balance [token base units].
    available : int
        What the escrow can pay: escrow minus the pending withdrawal request. The credit
        check at gate closure caps a buyer's accepted energy by this.
    pending_withdrawal : int
        Amount of the pending withdrawal request [token base units].
    unclaimed_rewards : int
        Rewards held for the account [reward base units].
    """

    index: int
    escrow: TokenUnits
    available: TokenUnits
    pending_withdrawal: TokenUnits
    unclaimed_rewards: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RewardPolicy:
    """The reward token's issuance rule: ``floor(wh * rate / 1000)``, at most ``cap`` each interval.

    Attributes
    ----------
    rate : int
        Reward base units per kWh of verified local energy.
    cap : int
        Most reward base units minted in one interval; more is scaled down pro rata.
    """

    rate: int
    cap: int

    def reward_for(self, wh: int) -> int:
        """Reward [reward base units] for ``wh`` [Wh] at the full rate (before the cap)."""
        return wh * self.rate // 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    """Addresses of a PeerGrid deployment (checksummed); ``reward_token`` empty if none."""

    token: str
    settlement: str
    reward_token: str = ""


Signer = LocalAccount
"""A local signing account (for callers that must not import eth_account themselves)."""


def derive_account(label: str) -> LocalAccount:
    """A deterministic account for demos and tests: key = keccak256(b"peergrid-demo:" + label).

    **For demos and tests only.** Anyone who knows the label knows the key; never hold value
    with such an account on a public chain.

    Parameters
    ----------
    label : str
        Non-empty name of the account, e.g. ``"operator"`` or a participant id.

    Raises
    ------
    ValueError
        If ``label`` is empty.
    """
    if not label:
        msg = "label must be a non-empty string"
        raise ValueError(msg)
    account: LocalAccount = Account.from_key(Web3.keccak(DEMO_KEY_PREFIX + label.encode("utf-8")))
    return account


def account_from_key(key: str) -> LocalAccount:
    """The account of a hex private key (``0x`` optional).

    Raises
    ------
    ValueError
        If ``key`` is not a valid private key.
    """
    try:
        account: LocalAccount = Account.from_key(key.strip())
    except (ValueError, TypeError) as exc:
        msg = "not a valid private key (64 hex digits)"
        raise ValueError(msg) from exc
    return account


def net_transfers(transfers: Sequence[tuple[str, int]]) -> tuple[tuple[ChecksumAddress, int], ...]:
    """Net signed amounts per account; drop accounts that net to zero.

    Parameters
    ----------
    transfers : sequence of (address, amount)
        Signed amounts [token base units]: > 0 credit, < 0 debit.

    Returns
    -------
    tuple of (ChecksumAddress, int)
        One entry per account with a non-zero net amount, in order of first appearance.

    Raises
    ------
    ValueError
        If an address is invalid, an amount is not an ``int``, or the amounts do not sum
        to zero.
    """
    net = _sum_by_account(transfers, "amount")
    total = sum(net.values())
    if total != 0:
        msg = f"transfers must sum to zero, got {total} token base units"
        raise ValueError(msg)
    return tuple((account, amount) for account, amount in net.items() if amount != 0)


def net_rewards(rewards: Sequence[tuple[str, int]]) -> tuple[tuple[ChecksumAddress, int], ...]:
    """Sum verified local energy [Wh] per account; drop zeros.

    Raises
    ------
    ValueError
        If an address is invalid or an energy is not an ``int`` >= 0.
    """
    net = _sum_by_account(rewards, "energy")
    negative = [a for a, wh in net.items() if wh < 0]
    if negative:
        msg = f"reward energy must be >= 0 Wh, got {net[negative[0]]} for {negative[0]}"
        raise ValueError(msg)
    return tuple((account, wh) for account, wh in net.items() if wh != 0)


def _sum_by_account(pairs: Iterable[tuple[str, int]], what: str) -> dict[ChecksumAddress, int]:
    net: dict[ChecksumAddress, int] = {}
    for address, value in pairs:
        if isinstance(value, bool) or not isinstance(value, int):
            msg = f"{what} for {address} must be an int, got {value!r}"
            raise ValueError(msg)  # noqa: TRY004 - a bad value at the boundary
        account = _checksum(address)
        net[account] = net.get(account, 0) + value
    return net


class ChainClient:
    """Deploys, funds and settles PeerGrid's contracts, signing locally.

    Parameters
    ----------
    w3 : Web3
        Connection to the chain (any provider; see :func:`~adapters.chain.backends.connect`).
    operator : LocalAccount
        Signs settlements (needs ``OPERATOR_ROLE``) and registrations.
    admin : LocalAccount or None
        Signs deployments, mints of the payment token it deploys, role changes, pauses and
        policy changes; default ``operator`` (one key for demos and dev chains).
    confirmations : int
        Finality depth [blocks]: blocks on top of a transaction's block before it counts;
        0 returns at the receipt. On the embedded chain blocks are only mined by
        transactions, so keep 0 there.
    timeout_s : float
        Longest wait for one transaction to become final [s].
    poll_s : float
        Interval between polls of the node while waiting [s].
    priority_fee_wei : int
        Tip per gas [wei]; the fee cap is twice the latest base fee plus the tip.
    stuck_after_s : float or None
        Replace a transaction with a fee bump (same nonce) when it has no receipt this long
        after its last broadcast [s]; ``None`` never replaces.
    fee_bump_percent : int
        Fee raise per replacement [%], >= 10.
    max_replacements : int
        Most replacements per transaction.
    on_nonce : callable or None
        ``on_nonce(address, next_nonce)`` after every broadcast or nonce reset, for the
        controller to persist (see :meth:`next_nonce`, :meth:`reconcile_nonce`).
    """

    def __init__(
        self,
        w3: Web3,
        operator: LocalAccount,
        *,
        admin: LocalAccount | None = None,
        confirmations: int = 0,
        timeout_s: float = 120.0,
        poll_s: float = 0.1,
        priority_fee_wei: int = DEFAULT_PRIORITY_FEE_WEI,
        stuck_after_s: float | None = 60.0,
        fee_bump_percent: int = 25,
        max_replacements: int = 5,
        on_nonce: Callable[[str, int], None] | None = None,
    ) -> None:
        self.w3 = w3
        self.operator = operator
        self.admin = admin if admin is not None else operator
        self.sender = TxSender(
            w3,
            confirmations=confirmations,
            timeout_s=timeout_s,
            poll_s=poll_s,
            priority_fee_wei=priority_fee_wei,
            stuck_after_s=stuck_after_s,
            fee_bump_percent=fee_bump_percent,
            max_replacements=max_replacements,
            on_nonce=on_nonce,
        )
        self._token_artifact = load_artifact("PaymentToken")
        self._reward_artifact = load_artifact("RewardToken")
        self._settlement_artifact = load_artifact("Settlement")
        self._token: Contract | None = None
        self._reward_token: Contract | None = None
        self._settlement: Contract | None = None

    @property
    def confirmations(self) -> int:
        """The finality depth [blocks]."""
        return self.sender.confirmations

    @property
    def timeout_s(self) -> float:
        """Longest wait for one transaction [s]."""
        return self.sender.timeout_s

    # ------------------------------------------------------------------ contracts

    @property
    def token(self) -> Contract:
        """The attached payment token contract."""
        if self._token is None:
            msg = "no token contract: call deploy_token() or attach() first"
            raise ChainError(msg)
        return self._token

    @property
    def settlement(self) -> Contract:
        """The attached settlement contract."""
        if self._settlement is None:
            msg = "no settlement contract: call deploy_settlement() or attach() first"
            raise ChainError(msg)
        return self._settlement

    @property
    def reward_token(self) -> Contract | None:
        """The attached reward token contract, or ``None`` if the deployment has none."""
        return self._reward_token

    def deployment(self) -> Deployment:
        """Addresses of the attached contracts."""
        reward = self._reward_token.address if self._reward_token is not None else ""
        return Deployment(
            token=self.token.address, settlement=self.settlement.address, reward_token=reward
        )

    def deploy_token(self, name: str, symbol: str) -> ChecksumAddress:
        """Deploy ``PaymentToken`` (6 decimals, EIP-2612) owned by the admin and attach it.

        Parameters
        ----------
        name : str
            Token name, at most 25 characters.
        symbol : str
            Token symbol, at most 5 characters.

        Returns
        -------
        ChecksumAddress
            Address of the new token.
        """
        data = _constructor_data(self._token_artifact, ["string", "string"], [name, symbol])
        address = self._deploy(data, GAS_DEPLOY_TOKEN)
        self._token = self._contract(address, self._token_artifact)
        return address

    def deploy_reward_token(self, name: str, symbol: str) -> ChecksumAddress:
        """Deploy ``RewardToken`` (6 decimals) owned by the admin, which is not a minter.

        :meth:`deploy_settlement` with ``reward_token=`` makes the settlement contract its
        minter.
        """
        data = _constructor_data(self._reward_artifact, ["string", "string"], [name, symbol])
        address = self._deploy(data, GAS_DEPLOY_REWARD_TOKEN)
        self._reward_token = self._contract(address, self._reward_artifact)
        return address

    def deploy_settlement(
        self,
        token: str,
        *,
        reward_token: str | None = None,
        withdrawal_delay_s: int = 0,
        reward_rate: int = 0,
        reward_cap: int = 0,
    ) -> ChecksumAddress:
        """Deploy ``Settlement`` for ``token`` and attach it (and the tokens).

        The admin becomes the contract's admin, the operator its first operator. With a
        ``reward_token`` owned by the admin, the settlement contract is made its minter.

        Parameters
        ----------
        token : str
            Address of the payment token (6 decimals).
        reward_token : str or None
            Address of the reward token; ``None`` for a deployment without rewards.
        withdrawal_delay_s : int
            Notice a withdrawal takes [s].
        reward_rate : int
            Reward base units per kWh of verified local energy.
        reward_cap : int
            Most reward base units minted per interval.

        Returns
        -------
        ChecksumAddress
            Address of the new settlement contract.
        """
        token_address = _checksum(token)
        reward_address = _checksum(reward_token) if reward_token else _ZERO_ADDRESS
        data = _constructor_data(
            self._settlement_artifact,
            ["address", "address", "address", "uint256", "uint256", "uint256"],
            [
                token_address,
                reward_address,
                self.operator.address,
                withdrawal_delay_s,
                reward_rate,
                reward_cap,
            ],
        )
        address = self._deploy(data, GAS_DEPLOY_SETTLEMENT)
        self._token = self._contract(token_address, self._token_artifact)
        self._settlement = self._contract(address, self._settlement_artifact)
        self._reward_token = None
        if reward_token:
            reward = self._contract(reward_address, self._reward_artifact)
            self._reward_token = reward
            if self._read(reward.functions.owner()) == self.admin.address:
                data = reward.encode_abi("set_minter", args=[address, True])
                self._transact(self.admin, reward.address, data, GAS_ADMIN)
        return address

    def deploy_all(
        self,
        *,
        token_name: str = "PeerGrid Dollar",  # noqa: S107 - a token's name, not a secret
        token_symbol: str = "PGD",  # noqa: S107
        token: str | None = None,
        reward_name: str | None = "PeerGrid Energy Reward",
        reward_symbol: str = "PGR",
        withdrawal_delay_s: int = 0,
        reward_rate: int = 0,
        reward_cap: int = 0,
    ) -> Deployment:
        """Deploy what a site needs and attach it.

        The payment token (unless ``token`` names an existing one, e.g. a stablecoin), the
        reward token (unless ``reward_name`` is ``None``) and the settlement contract.
        """
        token_address = token or self.deploy_token(token_name, token_symbol)
        reward = self.deploy_reward_token(reward_name, reward_symbol) if reward_name else None
        self.deploy_settlement(
            token_address,
            reward_token=reward,
            withdrawal_delay_s=withdrawal_delay_s,
            reward_rate=reward_rate,
            reward_cap=reward_cap,
        )
        return self.deployment()

    def attach(self, token_address: str, settlement_address: str) -> None:
        """Use contracts deployed before, after checking that their code is ours.

        The reward token is the one the settlement contract names (if any). The payment
        token may be any 6-decimal ERC-20 (a production stablecoin); only the settlement
        contract's and the reward token's code are checked.

        Raises
        ------
        ChainError
            If an address holds no code, or code that is not the committed artifact's.
        """
        settlement = self._contract(_checksum(settlement_address), self._settlement_artifact)
        self._check_code(settlement, self._settlement_artifact)
        token = self._contract(_checksum(token_address), self._token_artifact)
        recorded = self._read(settlement.functions.token())
        if recorded != token.address:
            msg = f"settlement {settlement.address} holds token {recorded}, not {token.address}"
            raise ChainError(msg)
        reward_address = self._read(settlement.functions.reward_token())
        reward = None
        if reward_address != _ZERO_ADDRESS:
            reward = self._contract(reward_address, self._reward_artifact)
            self._check_code(reward, self._reward_artifact)
        self._token = token
        self._settlement = settlement
        self._reward_token = reward

    def _check_code(self, contract: Contract, artifact: Artifact) -> None:
        code = bytes(self._rpc(lambda: self.w3.eth.get_code(contract.address)))
        # Vyper appends immutables (the token address, name, ...) after the runtime code.
        if not code.startswith(HexBytes(artifact.bytecode_runtime)):
            msg = f"{contract.address} does not hold the committed {artifact.name} bytecode"
            raise ChainError(msg)

    # ------------------------------------------------------------------ roles and policy

    def grant_operator(self, address: str) -> TxResult:
        """Give ``address`` the operator role (signed by the admin)."""
        return self._role("grantRole", OPERATOR_ROLE, address)

    def revoke_operator(self, address: str) -> TxResult:
        """Take the operator role from ``address`` (signed by the admin)."""
        return self._role("revokeRole", OPERATOR_ROLE, address)

    def grant_admin(self, address: str) -> TxResult:
        """Give ``address`` the admin role (signed by the admin)."""
        return self._role("grantRole", DEFAULT_ADMIN_ROLE, address)

    def revoke_admin(self, address: str) -> TxResult:
        """Take the admin role from ``address`` (signed by the admin)."""
        return self._role("revokeRole", DEFAULT_ADMIN_ROLE, address)

    def _role(self, fn: str, role: bytes, address: str) -> TxResult:
        data = self.settlement.encode_abi(fn, args=[role, _checksum(address)])
        return self._transact(self.admin, self.settlement.address, data, GAS_ADMIN)[1]

    def is_operator(self, address: str) -> bool:
        """Whether ``address`` holds the operator role."""
        return bool(
            self._read(self.settlement.functions.hasRole(OPERATOR_ROLE, _checksum(address)))
        )

    def is_admin(self, address: str) -> bool:
        """Whether ``address`` holds the admin role."""
        return bool(
            self._read(self.settlement.functions.hasRole(DEFAULT_ADMIN_ROLE, _checksum(address)))
        )

    def pause(self) -> TxResult:
        """Stop settlements and deposits (admin). Withdrawals and claims stay open."""
        data = self.settlement.encode_abi("pause", args=[])
        return self._transact(self.admin, self.settlement.address, data, GAS_ADMIN)[1]

    def unpause(self) -> TxResult:
        """Lift the pause (admin)."""
        data = self.settlement.encode_abi("unpause", args=[])
        return self._transact(self.admin, self.settlement.address, data, GAS_ADMIN)[1]

    def is_paused(self) -> bool:
        """Whether the settlement contract is paused."""
        return bool(self._read(self.settlement.functions.paused()))

    def set_reward_policy(self, rate: int, cap: int) -> TxResult:
        """Set the reward rate [reward base units/kWh] and per-interval cap (admin)."""
        data = self.settlement.encode_abi("set_reward_policy", args=[rate, cap])
        return self._transact(self.admin, self.settlement.address, data, GAS_ADMIN)[1]

    def reward_policy(self) -> RewardPolicy:
        """The reward rate and cap in force."""
        fns = self.settlement.functions
        return RewardPolicy(
            rate=int(self._read(fns.reward_rate())), cap=int(self._read(fns.reward_cap()))
        )

    def set_withdrawal_delay(self, delay_s: int) -> TxResult:
        """Set the notice a withdrawal takes [s] (admin)."""
        data = self.settlement.encode_abi("set_withdrawal_delay", args=[delay_s])
        return self._transact(self.admin, self.settlement.address, data, GAS_ADMIN)[1]

    def withdrawal_delay(self) -> int:
        """The notice a withdrawal takes [s]."""
        return int(self._read(self.settlement.functions.withdrawal_delay()))

    # ------------------------------------------------------------------ money

    def fund_eth(self, to: str, wei: int) -> TxResult:
        """Send ``wei`` [wei] of ether to ``to`` from the node's first unlocked account.

        Works on the embedded chain and dev nodes (anvil), whose nodes hold prefunded,
        unlocked accounts; a production node has none.

        Raises
        ------
        ChainError
            If the node has no unlocked account.
        """
        accounts = self._rpc(lambda: self.w3.eth.accounts)
        if not accounts:
            msg = "the node has no unlocked, prefunded account to pay from"
            raise ChainError(msg)
        tx: TxParams = {
            "from": accounts[0],
            "to": _checksum(to),
            "value": Wei(wei),
            "gas": GAS_ETH_TRANSFER,
        }
        tx_hash = self._rpc(lambda: self.w3.eth.send_transaction(tx))
        deadline = time.monotonic() + self.sender.timeout_s
        polls = 0
        while True:
            try:
                receipt = self.w3.eth.get_transaction_receipt(tx_hash)
                break
            except TransactionNotFound:
                if time.monotonic() > deadline:
                    raise ConfirmationTimeout(hex0x(tx_hash), self.sender.timeout_s) from None
                time.sleep(self.sender.pause(polls))
                polls += 1
            except NODE_ERRORS as exc:
                msg = f"waiting for {hex0x(tx_hash)} failed: {exc}"
                raise ChainError(msg) from exc
        return TxResult(
            tx_hash=hex0x(receipt["transactionHash"]),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
        )

    def mint(self, to: str, amount: int) -> TxResult:
        """Mint ``amount`` [token base units] to ``to``; the admin must own the payment token."""
        data = self.token.encode_abi("mint", args=[_checksum(to), amount])
        return self._transact(self.admin, self.token.address, data, GAS_MINT)[1]

    def register(self, addresses: Iterable[str]) -> dict[ChecksumAddress, int]:
        """Give every address an index in the settlement contract (operator pays; idempotent).

        Returns
        -------
        dict
            Index of each address, read at the finality depth.
        """
        wanted = list(dict.fromkeys(_checksum(a) for a in addresses))
        states = self.account_states(wanted, final=True)
        missing = [a for a in wanted if states[a].index == 0]
        for start in range(0, len(missing), MAX_BATCH):
            chunk = missing[start : start + MAX_BATCH]
            data = self.settlement.encode_abi("register_many", args=[chunk])
            gas = GAS_REGISTER_BASE + GAS_REGISTER_PER_ACCOUNT * len(chunk)
            self._transact(self.operator, self.settlement.address, data, gas)
        if missing:
            states = self.account_states(wanted, final=True)
        return {a: states[a].index for a in wanted}

    def deposit(self, account: LocalAccount, amount: int) -> TxResult:
        """Move ``amount`` [token base units] of ``account``'s tokens into its escrow.

        Approves the settlement contract first when the allowance is short (two
        transactions, both signed by ``account``, which needs ether for gas); see
        :meth:`deposit_with_permit` for one.
        """
        spender = self.settlement.address
        allowance = int(self._read(self.token.functions.allowance(account.address, spender)))
        if allowance < amount:
            data = self.token.encode_abi("approve", args=[spender, amount])
            self._transact(account, self.token.address, data, GAS_APPROVE)
        data = self.settlement.encode_abi("deposit", args=[amount])
        return self._transact(account, spender, data, GAS_DEPOSIT)[1]

    def deposit_with_permit(
        self, account: LocalAccount, amount: int, *, deadline: int | None = None
    ) -> TxResult:
        """Deposit in one transaction, approving with an EIP-2612 permit signed off-chain.

        Parameters
        ----------
        account : LocalAccount
            The depositor; signs the permit and the transaction.
        amount : int
            The amount [token base units].
        deadline : int or None
            Last Unix time the permit is valid [s]; default one hour after the latest block.
        """
        token = self.token
        if deadline is None:
            latest = self._rpc(lambda: self.w3.eth.get_block("latest"))
            deadline = int(latest["timestamp"]) + 3600
        domain = self._read(token.functions.eip712Domain())
        nonce = int(self._read(token.functions.nonces(account.address)))
        signed = account.sign_typed_data(
            domain_data={
                "name": domain[1],
                "version": domain[2],
                "chainId": int(domain[3]),
                "verifyingContract": domain[4],
            },
            message_types={
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ]
            },
            message_data={
                "owner": account.address,
                "spender": self.settlement.address,
                "value": amount,
                "nonce": nonce,
                "deadline": deadline,
            },
        )
        data = self.settlement.encode_abi(
            "deposit_with_permit",
            args=[
                amount,
                deadline,
                signed.v,
                signed.r.to_bytes(32, "big"),
                signed.s.to_bytes(32, "big"),
            ],
        )
        return self._transact(account, self.settlement.address, data, GAS_DEPOSIT + 60_000)[1]

    def deposit_for(self, payer: LocalAccount, amounts: Sequence[tuple[str, int]]) -> TxResult:
        """Fund several escrows from ``payer``'s tokens (e.g. a utility for its customers).

        Approves first when the allowance is short. At most :data:`MAX_BATCH` accounts.
        """
        if len(amounts) > MAX_BATCH:
            msg = f"at most {MAX_BATCH} accounts per deposit_for, got {len(amounts)}"
            raise ValueError(msg)
        total = sum(a for _, a in amounts)
        spender = self.settlement.address
        allowance = int(self._read(self.token.functions.allowance(payer.address, spender)))
        if allowance < total:
            data = self.token.encode_abi("approve", args=[spender, total])
            self._transact(payer, self.token.address, data, GAS_APPROVE)
        data = self.settlement.encode_abi(
            "deposit_for", args=[[_checksum(a) for a, _ in amounts], [a for _, a in amounts]]
        )
        gas = GAS_DEPOSIT_FOR_BASE + GAS_DEPOSIT_FOR_PER_ACCOUNT * len(amounts)
        return self._transact(payer, spender, data, gas)[1]

    def request_withdrawal(self, account: LocalAccount, amount: int) -> TxResult:
        """Ask to withdraw ``amount`` [token base units] of ``account``'s escrow (0 cancels).

        It can be withdrawn (:meth:`withdraw`) once the withdrawal delay has passed.
        """
        data = self.settlement.encode_abi("request_withdrawal", args=[amount])
        return self._transact(account, self.settlement.address, data, GAS_REQUEST_WITHDRAWAL)[1]

    def withdraw(self, account: LocalAccount) -> TxResult:
        """Pay ``account``'s matured withdrawal request to its wallet."""
        data = self.settlement.encode_abi("withdraw", args=[])
        return self._transact(account, self.settlement.address, data, GAS_WITHDRAW)[1]

    def claim_rewards(self, account: LocalAccount) -> TxResult:
        """Pay ``account``'s unclaimed rewards to its wallet."""
        data = self.settlement.encode_abi("claim_rewards", args=[])
        return self._transact(account, self.settlement.address, data, GAS_CLAIM)[1]

    # ------------------------------------------------------------------ settlement

    def submit_settlement(
        self,
        interval_id: int,
        batch_id: bytes,
        transfers: Sequence[tuple[str, int]],
        trades_root: bytes,
        readings_root: bytes,
        *,
        rewards: Sequence[tuple[str, int]] = (),
    ) -> SettlementReceipt:
        """Settle one interval on-chain, exactly once.

        1. Wait for transactions a crashed predecessor left waiting at the node.
        2. If the chain says the interval is settled (final to ``confirmations``): with the
           same ``batch_id``, return the original transaction's receipt with
           ``status="already_settled"``, sending nothing; with another, raise
           :class:`AlreadySettled`.
        3. Net ``transfers`` and ``rewards`` per account, check every debit against the
           account's escrow, register accounts the contract does not know yet (their own
           transactions, final before the settlement is sent).
        4. Send ``settle`` and wait until it is final.

        Parameters
        ----------
        interval_id : int
            The interval: its start in Unix seconds [s] (``Interval.interval_id``).
        batch_id : bytes
            The batch's 32-byte content hash (``bytes.fromhex(batch.batch_id)``).
        transfers : sequence of (address, amount)
            Signed amounts [token base units]: > 0 credit, < 0 debit; must sum to zero.
        trades_root : bytes
            32-byte Merkle root of the interval's trades.
        readings_root : bytes
            32-byte Merkle root of the interval's meter readings.
        rewards : sequence of (address, Wh)
            Verified energy each producer delivered inside the microgrid in the interval
            [Wh]. The contract mints ``floor(wh * rate / 1000)`` reward units per producer
            (scaled down pro rata to the per-interval cap) and holds them until claimed.

        Returns
        -------
        SettlementReceipt
            Where the interval was settled.

        Raises
        ------
        ValueError
            If an argument is malformed, the amounts do not sum to zero, or the batch has
            more than :data:`MAX_SETTLEMENT_ACCOUNTS` accounts after netting.
        AlreadySettled
            If the interval is settled with a different batch id.
        InsufficientEscrow
            If an account's net debit exceeds its escrow (nothing is sent).
        TransactionReverted
            If the contract reverts for another reason (e.g. paused, not an operator).
        ConfirmationTimeout
            If the transaction is not final in time. It may still be mined: calling again
            is safe, it finds the interval settled.
        ChainError
            If the node fails.
        """
        if interval_id < 0 or interval_id >= 2**256:
            msg = f"interval_id must fit in uint256, got {interval_id}"
            raise ValueError(msg)
        for what, value in (
            ("batch_id", batch_id),
            ("trades_root", trades_root),
            ("readings_root", readings_root),
        ):
            if len(value) != 32:
                msg = f"{what} must be 32 bytes, got {len(value)}"
                raise ValueError(msg)
        lines = net_transfers(transfers)
        energy = net_rewards(rewards)
        accounts = list(dict.fromkeys([a for a, _ in lines] + [a for a, _ in energy]))
        if len(accounts) > MAX_SETTLEMENT_ACCOUNTS:
            msg = f"at most {MAX_SETTLEMENT_ACCOUNTS} accounts per settlement, got {len(accounts)}"
            raise ValueError(msg)
        if energy and self._reward_token is None:
            msg = "rewards given, but the settlement contract has no reward token"
            raise ValueError(msg)

        operator = self.operator.address
        with self.sender.lock_for(operator):
            self.sender.wait_for_in_flight(operator)
            for _attempt in range(3):
                recorded = self._final_settled_block(interval_id)
                if recorded:
                    return self._already_settled(interval_id, bytes(batch_id), recorded)
                entries, gas = self._prepare(lines, energy, accounts)
                data = self.settlement.encode_abi(
                    "settle",
                    args=[
                        interval_id,
                        bytes(batch_id),
                        entries,
                        bytes(trades_root),
                        bytes(readings_root),
                    ],
                )
                try:
                    receipt, tx = self._transact(self.operator, self.settlement.address, data, gas)
                except TransactionReverted:
                    # Lost a race with another sender of the same interval: report what won.
                    if self.is_settled(interval_id):
                        continue
                    raise
                minted = self._decode_settled(receipt)
                return SettlementReceipt(
                    batch_id=bytes(batch_id).hex(),
                    interval_id=interval_id,
                    tx_hash=tx.tx_hash,
                    block_number=tx.block_number,
                    gas_used=tx.gas_used,
                    status=SettlementStatus.SETTLED,
                    rewards_minted=minted,
                    nonce=tx.nonce,
                )
        msg = f"interval {interval_id}: the chain kept changing its answer; try again"
        raise ChainError(msg)

    def _prepare(
        self,
        lines: Sequence[tuple[ChecksumAddress, int]],
        energy: Sequence[tuple[ChecksumAddress, int]],
        accounts: Sequence[ChecksumAddress],
    ) -> tuple[list[int], int]:
        """Check escrow, register unknown accounts, pack the entries; return them and gas."""
        states = self.account_states(accounts)
        for account, amount in lines:
            available = states[account].escrow
            if amount < 0 and available < -amount:
                raise InsufficientEscrow(account, -amount, available)
        # Indices are read where reorganisations cannot reach (the finality depth): an index
        # assigned in a block that is later dropped could be given to another account.
        final = self.account_states(accounts, final=True) if self.confirmations else states
        if any(final[a].index == 0 for a in accounts):
            self.register(accounts)
            final = self.account_states(accounts, final=True)
        indices = {a: final[a].index for a in accounts}
        entries = build_entries(indices, lines, energy)
        fresh = sum(1 for a in accounts if not states[a].escrow and not states[a].unclaimed_rewards)
        return entries, settle_gas_limit(len(entries), fresh)

    def _final_settled_block(self, interval_id: int) -> int:
        """The block that settled ``interval_id``, once final; 0 if it is not settled.

        A settlement newer than the finality depth is waited for; one that a reorganisation
        drops meanwhile counts as not settled.

        Raises
        ------
        ConfirmationTimeout
            If the settlement is not final within ``timeout_s``.
        """
        deadline = time.monotonic() + self.sender.timeout_s
        fn = self.settlement.functions.settled_block(interval_id)
        while True:
            block = int(self._read(fn))
            if block == 0 or self.confirmations == 0:
                return block
            head = int(self._rpc(lambda: self.w3.eth.block_number))
            if head >= block + self.confirmations:
                final = int(self._read(fn, block_identifier=head - self.confirmations))
                if final == block:
                    return block
            if time.monotonic() > deadline:
                what = f"settlement of interval {interval_id} (block {block})"
                raise ConfirmationTimeout(what, self.sender.timeout_s)
            time.sleep(self.sender.poll_s)

    def _already_settled(self, interval_id: int, batch_id: bytes, block: int) -> SettlementReceipt:
        recorded = self.settled_batch(interval_id).batch_id
        if recorded != batch_id:
            raise AlreadySettled(interval_id, recorded.hex(), batch_id.hex())
        events = self.settled_events(block, to_block=block, interval_id=interval_id)
        tx_hash, gas_used, nonce, minted = "", 0, -1, 0
        if events:
            tx_hash = events[0].tx_hash
            minted = events[0].rewards_minted
            original = self._rpc(lambda: self.w3.eth.get_transaction_receipt(HexStr(tx_hash)))
            gas_used = int(original["gasUsed"])
            tx = self._rpc(lambda: self.w3.eth.get_transaction(HexStr(tx_hash)))
            nonce = int(tx["nonce"])
        return SettlementReceipt(
            batch_id=recorded.hex(),
            interval_id=interval_id,
            tx_hash=tx_hash,
            block_number=block,
            gas_used=gas_used,
            status=SettlementStatus.ALREADY_SETTLED,
            rewards_minted=minted,
            nonce=nonce,
        )

    def _decode_settled(self, receipt: Any) -> int:  # noqa: ANN401 - a web3 TxReceipt
        events = self.settlement.events.Settled().process_receipt(receipt, errors=DISCARD)
        return int(events[0]["args"]["rewards_minted"]) if events else 0

    # ------------------------------------------------------------------ reads

    def token_balance(self, address: str) -> TokenUnits:
        """Payment-token wallet balance of ``address`` [token base units]."""
        return TokenUnits(self._read(self.token.functions.balanceOf(_checksum(address))))

    def total_supply(self) -> TokenUnits:
        """Payment tokens in existence [token base units]."""
        return TokenUnits(self._read(self.token.functions.totalSupply()))

    def escrow_balance(self, address: str) -> TokenUnits:
        """Escrow balance of ``address`` in the settlement contract [token base units]."""
        return TokenUnits(self._read(self.settlement.functions.escrow(_checksum(address))))

    def available_credit(self, address: str) -> TokenUnits:
        """What ``address``'s escrow can pay: escrow minus its pending withdrawal [units]."""
        return TokenUnits(self._read(self.settlement.functions.available(_checksum(address))))

    def account_states(
        self, addresses: Iterable[str], *, final: bool = False
    ) -> dict[ChecksumAddress, AccountState]:
        """Index, escrow, credit, pending withdrawal and rewards of many accounts at once.

        Parameters
        ----------
        addresses : iterable of str
            The accounts.
        final : bool
            Read at the finality depth (``confirmations`` blocks below the head) instead
            of the latest block.
        """
        wanted = list(dict.fromkeys(_checksum(a) for a in addresses))
        block: BlockIdentifier = "latest"
        if final and self.confirmations:
            head = int(self._rpc(lambda: self.w3.eth.block_number))
            block = max(head - self.confirmations, 0)
        out: dict[ChecksumAddress, AccountState] = {}
        for start in range(0, len(wanted), MAX_SETTLEMENT_ACCOUNTS):
            chunk = wanted[start : start + MAX_SETTLEMENT_ACCOUNTS]
            fn = self.settlement.functions.account_states(chunk)
            rows = self._read(fn, block_identifier=block)
            for address, row in zip(chunk, rows, strict=True):
                out[address] = AccountState(
                    index=int(row[0]),
                    escrow=TokenUnits(int(row[1])),
                    available=TokenUnits(int(row[2])),
                    pending_withdrawal=TokenUnits(int(row[3])),
                    unclaimed_rewards=int(row[4]),
                )
        return out

    def total_escrow(self) -> TokenUnits:
        """Sum of all escrow balances [token base units]."""
        return TokenUnits(self._read(self.settlement.functions.total_escrow()))

    def unclaimed_rewards(self, address: str) -> int:
        """Rewards the settlement contract holds for ``address`` [reward base units]."""
        return int(self._read(self.settlement.functions.unclaimed_rewards(_checksum(address))))

    def total_rewards(self) -> int:
        """Sum of all unclaimed rewards [reward base units]."""
        return int(self._read(self.settlement.functions.total_rewards()))

    def reward_balance(self, address: str) -> int:
        """Reward-token wallet balance of ``address`` [reward base units] (0 without rewards)."""
        if self._reward_token is None:
            return 0
        return int(self._read(self._reward_token.functions.balanceOf(_checksum(address))))

    def reward_supply(self) -> int:
        """Reward tokens in existence [reward base units] (0 without rewards)."""
        if self._reward_token is None:
            return 0
        return int(self._read(self._reward_token.functions.totalSupply()))

    def chain_id(self) -> int:
        """The chain id of the node."""
        return self.sender.chain_id()

    def block_number(self) -> int:
        """The node's latest block number."""
        return int(self._rpc(lambda: self.w3.eth.block_number))

    def is_settled(self, interval_id: int) -> bool:
        """Whether the chain (latest block) has settled ``interval_id`` (Unix seconds [s])."""
        return bool(self._read(self.settlement.functions.is_settled(interval_id)))

    def settled_block(self, interval_id: int) -> int:
        """The block that settled ``interval_id`` (0 if unsettled)."""
        return int(self._read(self.settlement.functions.settled_block(interval_id)))

    def settled_batch(self, interval_id: int) -> SettledBatch:
        """The batch id and Merkle roots recorded for ``interval_id`` (zeros if unsettled)."""
        functions = self.settlement.functions
        return SettledBatch(
            batch_id=bytes(self._read(functions.batch_ids(interval_id))),
            trades_root=bytes(self._read(functions.trades_roots(interval_id))),
            readings_root=bytes(self._read(functions.readings_roots(interval_id))),
        )

    def settled_events(
        self,
        from_block: int = 0,
        *,
        to_block: int | None = None,
        interval_id: int | None = None,
    ) -> list[SettledEvent]:
        """Decoded ``Settled`` events since ``from_block``, oldest first (for auditors).

        Parameters
        ----------
        from_block : int
            First block to search.
        to_block : int or None
            Last block to search; ``None`` for the latest.
        interval_id : int or None
            Only this interval's event (there is at most one).
        """
        filters = None if interval_id is None else {"interval_id": interval_id}
        event = self.settlement.events.Settled()
        logs: list[EventData] = self._rpc(
            lambda: list(
                event.get_logs(
                    argument_filters=filters,
                    from_block=from_block,
                    to_block="latest" if to_block is None else to_block,
                )
            )
        )
        return [
            SettledEvent(
                interval_id=int(log["args"]["interval_id"]),
                batch_id=bytes(log["args"]["batch_id"]).hex(),
                trades_root=bytes(log["args"]["trades_root"]).hex(),
                readings_root=bytes(log["args"]["readings_root"]).hex(),
                n_entries=int(log["args"]["n_entries"]),
                rewards_minted=int(log["args"]["rewards_minted"]),
                block_number=int(log["blockNumber"]),
                tx_hash=hex0x(log["transactionHash"]),
            )
            for log in logs
        ]

    def settled_entries(self, interval_id: int) -> tuple[tuple[ChecksumAddress, int, int], ...]:
        """``(address, amount, reward_wh)`` per account settled for ``interval_id``.

        Decoded from the ``SettlementEntries`` event; empty if the interval is unsettled.
        Amounts in token base units (> 0 credit), energies in Wh.
        """
        block = self.settled_block(interval_id)
        if block == 0:
            return ()
        event = self.settlement.events.SettlementEntries()
        logs: list[EventData] = self._rpc(
            lambda: list(
                event.get_logs(
                    argument_filters={"interval_id": interval_id},
                    from_block=block,
                    to_block=block,
                )
            )
        )
        if not logs:
            return ()
        entries = [unpack_entry(int(w)) for w in logs[0]["args"]["entries"]]
        if not entries:
            return ()
        indices = [e.index for e in entries]
        addresses = self._read(self.settlement.functions.accounts_at(indices))
        return tuple(
            (Web3.to_checksum_address(a), e.amount, e.reward_wh)
            for a, e in zip(addresses, entries, strict=True)
        )

    def settled_transfers(self, interval_id: int) -> tuple[tuple[ChecksumAddress, int], ...]:
        """The signed amounts [token base units] settled for ``interval_id``, by account index.

        Empty if the interval is not settled (or was settled with no payments).
        """
        return tuple((a, amount) for a, amount, _ in self.settled_entries(interval_id) if amount)

    def settled_rewards(self, interval_id: int) -> tuple[tuple[ChecksumAddress, int], ...]:
        """The verified local energy [Wh] rewarded per producer for ``interval_id``."""
        return tuple((a, wh) for a, _, wh in self.settled_entries(interval_id) if wh)

    def verify_trade(self, interval_id: int, leaf: bytes, proof: Sequence[bytes]) -> bool:
        """Ask the contract whether ``leaf`` is a trade of settled interval ``interval_id``.

        Parameters
        ----------
        interval_id : int
            The interval.
        leaf : bytes
            The trade's canonical JSON bytes (``market.merkle``: sorted keys, no spaces),
            hashed on-chain as sha256(0x00 || leaf). Not the hash: an inner node can never
            pass as a leaf.
        proof : sequence of bytes
            32-byte sibling hashes from the leaf to the root (``market.merkle.merkle_proof``).
        """
        return bool(
            self._read(
                self.settlement.functions.verify_trade(interval_id, bytes(leaf), _proof(proof))
            )
        )

    def verify_reading(self, interval_id: int, leaf: bytes, proof: Sequence[bytes]) -> bool:
        """As :meth:`verify_trade`, for a meter reading against the readings root."""
        return bool(
            self._read(
                self.settlement.functions.verify_reading(interval_id, bytes(leaf), _proof(proof))
            )
        )

    # ------------------------------------------------------------------ nonces

    def next_nonce(self, sender: str | None = None) -> int:
        """The nonce the next transaction of ``sender`` (default: the operator) will use."""
        return self.sender.next_nonce(sender or self.operator.address)

    def set_next_nonce(self, nonce: int, sender: str | None = None) -> int:
        """Use ``nonce`` next for ``sender`` (default: the operator).

        See :meth:`~adapters.chain.sender.TxSender.set_next_nonce` for the range allowed.
        """
        return self.sender.set_next_nonce(sender or self.operator.address, nonce)

    def reconcile_nonce(self, persisted: int | None, sender: str | None = None) -> int:
        """After a restart: continue at the node's next nonce; returns the nonce in use.

        ``sender`` defaults to the operator; a ``persisted`` nonce that differs is logged
        (:meth:`~adapters.chain.sender.TxSender.reconcile_nonce`).
        """
        return self.sender.reconcile_nonce(sender or self.operator.address, persisted)

    # ------------------------------------------------------------------ internals

    def _contract(self, address: ChecksumAddress, artifact: Artifact) -> Contract:
        return self.w3.eth.contract(address=address, abi=artifact.abi)

    def _deploy(self, data: HexStr, gas: int) -> ChecksumAddress:
        receipt, tx = self._transact(self.admin, None, data, gas)
        address = receipt["contractAddress"]
        if address is None:
            msg = f"deployment {tx.tx_hash} created no contract"
            raise ChainError(msg)
        return Web3.to_checksum_address(address)

    def _transact(
        self, account: LocalAccount, to: ChecksumAddress | None, data: HexStr, gas: int
    ) -> tuple[Any, TxResult]:
        return self.sender.transact(account, to, data, gas)

    def _read(self, fn: Any, *, block_identifier: BlockIdentifier = "latest") -> Any:  # noqa: ANN401
        try:
            return fn.call(block_identifier=block_identifier)
        except (ContractLogicError, TransactionFailed) as exc:
            raise TransactionReverted(revert_reason(exc)) from exc
        except NODE_ERRORS as exc:
            msg = f"reading {fn.fn_name} failed: {exc}"
            raise ChainError(msg) from exc

    def _rpc(self, request: Callable[[], Any]) -> Any:  # noqa: ANN401
        return self.sender.rpc(request)


_ZERO_ADDRESS: Final = Web3.to_checksum_address("0x" + "00" * 20)


def checksum_address(address: str) -> ChecksumAddress:
    """``address`` in EIP-55 checksum form.

    Raises
    ------
    ValueError
        If ``address`` is not a 20-byte hex address.
    """
    try:
        return Web3.to_checksum_address(address)
    except ValueError as exc:
        msg = f"not an address: {address!r}"
        raise ValueError(msg) from exc


_checksum = checksum_address


def _proof(proof: Sequence[bytes]) -> list[bytes]:
    out = [bytes(p) for p in proof]
    if any(len(p) != 32 for p in out):
        msg = "every proof element must be 32 bytes"
        raise ValueError(msg)
    return out


def _constructor_data(artifact: Artifact, types: list[str], args: list[Any]) -> HexStr:
    return HexStr(artifact.bytecode + abi_encode(types, args).hex())


__all__ = [
    "DEFAULT_ADMIN_ROLE",
    "DEMO_KEY_PREFIX",
    "LANE_MAX",
    "MAX_BATCH",
    "MAX_SETTLEMENT_ACCOUNTS",
    "OPERATOR_ROLE",
    "AccountState",
    "ChainClient",
    "Deployment",
    "RewardPolicy",
    "SettledBatch",
    "SettledEvent",
    "SettlementReceipt",
    "SettlementStatus",
    "TxResult",
    "account_from_key",
    "checksum_address",
    "derive_account",
    "embedded_web3",
    "net_rewards",
    "net_transfers",
    "settle_gas_limit",
]
