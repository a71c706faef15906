"""PeerGrid's client for its payment token and settlement contracts on an EVM chain.

:class:`ChainClient` takes a :class:`~web3.Web3` built on any provider: the in-process
py-evm chain of :func:`embedded_web3` (demo and tests), a local anvil node, or any JSON-RPC
URL. It

* signs every transaction **locally** with an :class:`~eth_account.signers.local.LocalAccount`
  (eth-account; coincurve makes it fast), so the node never holds a key;
* sets an explicit gas limit per call from a table measured on the committed bytecode
  (``eth_estimateGas`` on py-evm takes seconds per large batch, so it is never called);
* keeps a nonce per sending account, read once from the chain and re-read after any failed
  send;
* waits for the receipt and then for ``confirmations`` further blocks, and turns a
  reverted transaction into :class:`~adapters.chain.errors.TransactionReverted` with the
  contract's reason (replayed with ``eth_call`` when the node gives no reason).

Money is an ``int`` in token base units everywhere (6 decimals, :mod:`market.units`).

Exactly once: :meth:`ChainClient.submit_settlement` first asks the chain whether the interval
is already settled and, if it is with the same batch id, returns the original receipt with
``status="already_settled"`` instead of sending; with a different batch id it raises
:class:`~adapters.chain.errors.AlreadySettled`. The contract refuses a second settlement of
an interval anyway, so a restart can never pay twice. Persisting the intent before sending is
the caller's job (the controller's audit store).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, NamedTuple, TypeVar

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_typing import ChecksumAddress, HexStr
from eth_utils.exceptions import ValidationError as EvmValidationError
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.types import EventData, TxParams, TxReceipt, Wei

from adapters.chain.artifact import Artifact, load_artifact
from adapters.chain.errors import (
    AlreadySettled,
    ChainError,
    ConfirmationTimeout,
    InsufficientEscrow,
    TransactionReverted,
)
from market.units import TokenUnits

T = TypeVar("T")

_NODE_ERRORS: Final = (Web3Exception, OSError, TesterValidationError, EvmValidationError)
"""What a node (or the embedded chain, which raises py-evm's own errors) fails with."""

DEMO_KEY_PREFIX: Final = b"peergrid-demo:"
"""Prefix of the labels hashed into demo keys by :func:`derive_account`."""

MAX_SETTLEMENT_ACCOUNTS: Final = 256
"""Most accounts in one settlement (``MAX_ACCOUNTS`` in ``Settlement.vy``)."""

# Gas limits [gas]. Measured on the committed bytecode (py-evm, cancun rules) and rounded up
# with a margin of 30 % or more; gas not used is not paid for. Settlement cost grows with the
# number of accounts: a first credit to an account writes a fresh storage slot (~22k gas).
GAS_DEPLOY_TOKEN: Final = 1_600_000  # measured 1_179_783
GAS_DEPLOY_SETTLEMENT: Final = 1_200_000  # measured 889_352
GAS_MINT: Final = 100_000  # measured 70_275 (first mint to an address), 36_075 after
GAS_APPROVE: Final = 70_000  # measured 45_949
GAS_DEPOSIT: Final = 150_000  # measured 102_493 (first deposit), 68_293 after
GAS_WITHDRAW: Final = 100_000  # measured 48_650 (38_940 when it empties the escrow)
GAS_TRANSFER_OPERATOR: Final = 60_000  # measured 28_274
GAS_SETTLE_BASE: Final = 200_000  # measured 98_777 for an empty batch
GAS_SETTLE_PER_ACCOUNT: Final = 40_000  # measured 8_300 (existing escrow) to 25_000 (fresh)

GAS_ETH_TRANSFER: Final = 21_000
DEFAULT_PRIORITY_FEE_WEI: Final = Wei(1_000_000_000)  # 1 gwei


def settle_gas_limit(n_accounts: int) -> int:
    """Gas limit [gas] for a settlement of ``n_accounts`` accounts.

    ``GAS_SETTLE_BASE + GAS_SETTLE_PER_ACCOUNT * n_accounts``: 10.44 million gas for the
    largest batch (256 accounts), a third of a 30-million-gas block.
    """
    return GAS_SETTLE_BASE + GAS_SETTLE_PER_ACCOUNT * n_accounts


class SettlementStatus(enum.StrEnum):
    """Outcome of :meth:`ChainClient.submit_settlement`."""

    SETTLED = "settled"
    """This call's transaction settled the interval."""
    ALREADY_SETTLED = "already_settled"
    """The interval was settled before, with the same batch id; nothing was sent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementReceipt:
    """Where and how an interval was settled on-chain.

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
    """

    batch_id: str
    interval_id: int
    tx_hash: str
    block_number: int
    gas_used: int
    status: SettlementStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class TxResult:
    """A mined transaction that succeeded.

    Attributes
    ----------
    tx_hash : str
        Transaction hash, ``0x``-prefixed hex.
    block_number : int
        Block that holds the transaction.
    gas_used : int
        Gas used [gas].
    """

    tx_hash: str
    block_number: int
    gas_used: int


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
    n_accounts: int
    block_number: int
    tx_hash: str


def embedded_web3() -> Web3:
    """A :class:`~web3.Web3` on a fresh in-process chain (eth-tester on py-evm).

    The chain lives in memory and is lost with the process. Its ten prefunded accounts
    (``w3.eth.accounts``) hold 1,000,000 ether each; :meth:`ChainClient.fund_eth` pays from
    the first one.
    """
    return Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))


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


def net_transfers(transfers: Sequence[tuple[str, int]]) -> tuple[tuple[ChecksumAddress, int], ...]:
    """Net signed amounts per account; drop accounts that net to zero.

    The contract applies entries in order, so an account listed twice would need escrow for
    each debit as it comes. Netting first makes the batch independent of the order.

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
    net: dict[ChecksumAddress, int] = {}
    for address, amount in transfers:
        if isinstance(amount, bool) or not isinstance(amount, int):
            msg = f"amount for {address} must be an int [token base units], got {amount!r}"
            raise ValueError(msg)  # noqa: TRY004 - a bad value at the boundary
        account = _checksum(address)
        net[account] = net.get(account, 0) + amount
    total = sum(net.values())
    if total != 0:
        msg = f"transfers must sum to zero, got {total} token base units"
        raise ValueError(msg)
    return tuple((account, amount) for account, amount in net.items() if amount != 0)


class ChainClient:
    """Deploys, funds and settles PeerGrid's contracts, signing locally as ``operator``.

    Parameters
    ----------
    w3 : Web3
        Connection to the chain (any provider).
    operator : LocalAccount
        Signs deployments, mints (it owns the token it deploys) and settlements.
    confirmations : int
        Blocks to wait for on top of a transaction's block before it counts [blocks]; 0
        returns at the receipt. On the embedded chain blocks are only mined by transactions,
        so keep 0 there.
    timeout_s : float
        Longest wait for a receipt and its confirmations [s].
    poll_s : float
        Interval between polls of the node while waiting [s].
    priority_fee_wei : int
        Tip per gas [wei]; the fee cap is twice the latest base fee plus the tip.
    """

    def __init__(
        self,
        w3: Web3,
        operator: LocalAccount,
        *,
        confirmations: int = 0,
        timeout_s: float = 120.0,
        poll_s: float = 0.1,
        priority_fee_wei: int = DEFAULT_PRIORITY_FEE_WEI,
    ) -> None:
        if confirmations < 0:
            msg = f"confirmations must be >= 0, got {confirmations}"
            raise ValueError(msg)
        self.w3 = w3
        self.operator = operator
        self.confirmations = confirmations
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.priority_fee_wei = Wei(priority_fee_wei)
        self._token_artifact = load_artifact("PaymentToken")
        self._settlement_artifact = load_artifact("Settlement")
        self._token: Contract | None = None
        self._settlement: Contract | None = None
        self._nonces: dict[ChecksumAddress, int] = {}
        self._chain_id: int | None = None
        self._lock = threading.RLock()

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

    def deploy_token(self, name: str, symbol: str) -> ChecksumAddress:
        """Deploy ``PaymentToken`` (6 decimals) owned by the operator and attach it.

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

    def deploy_settlement(self, token: str) -> ChecksumAddress:
        """Deploy ``Settlement`` for ``token`` with the operator as operator and attach it.

        Parameters
        ----------
        token : str
            Address of the payment token. The token is attached too.

        Returns
        -------
        ChecksumAddress
            Address of the new settlement contract.
        """
        token_address = _checksum(token)
        data = _constructor_data(
            self._settlement_artifact,
            ["address", "address"],
            [token_address, self.operator.address],
        )
        address = self._deploy(data, GAS_DEPLOY_SETTLEMENT)
        self._token = self._contract(token_address, self._token_artifact)
        self._settlement = self._contract(address, self._settlement_artifact)
        return address

    def attach(self, token_address: str, settlement_address: str) -> None:
        """Use contracts deployed before, after checking that their code is ours.

        Raises
        ------
        ChainError
            If an address holds no code, or code that is not the committed artifact's.
        """
        token = self._contract(_checksum(token_address), self._token_artifact)
        settlement = self._contract(_checksum(settlement_address), self._settlement_artifact)
        for contract, artifact in (
            (token, self._token_artifact),
            (settlement, self._settlement_artifact),
        ):
            code = bytes(self._rpc(partial(self.w3.eth.get_code, contract.address)))
            # Vyper appends immutables (the token address, name, ...) after the runtime code.
            if not code.startswith(HexBytes(artifact.bytecode_runtime)):
                msg = f"{contract.address} does not hold the committed {artifact.name} bytecode"
                raise ChainError(msg)
        self._token = token
        self._settlement = settlement

    # ------------------------------------------------------------------ transactions

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
        return _result(self._await(tx_hash))

    def mint(self, to: str, amount: int) -> TxResult:
        """Mint ``amount`` [token base units] to ``to``; the operator must own the token."""
        data = self.token.encode_abi("mint", args=[_checksum(to), amount])
        return _result(self._transact(self.operator, self.token.address, data, GAS_MINT))

    def deposit(self, account: LocalAccount, amount: int) -> TxResult:
        """Move ``amount`` [token base units] of ``account``'s tokens into its escrow.

        Approves the settlement contract first when the allowance is short (two
        transactions, both signed by ``account``, which needs ether for gas).

        Returns
        -------
        TxResult
            The deposit transaction.
        """
        spender = self.settlement.address
        allowance = int(self._read(self.token.functions.allowance(account.address, spender)))
        if allowance < amount:
            data = self.token.encode_abi("approve", args=[spender, amount])
            self._transact(account, self.token.address, data, GAS_APPROVE)
        data = self.settlement.encode_abi("deposit", args=[amount])
        return _result(self._transact(account, spender, data, GAS_DEPOSIT))

    def withdraw(self, account: LocalAccount, amount: int) -> TxResult:
        """Pay ``amount`` [token base units] of ``account``'s escrow back to it."""
        data = self.settlement.encode_abi("withdraw", args=[amount])
        return _result(self._transact(account, self.settlement.address, data, GAS_WITHDRAW))

    def transfer_operator(self, new_operator: str) -> TxResult:
        """Hand the settlement operator role to ``new_operator``.

        This client keeps signing as its old operator afterwards; settle through a client
        built with the new operator's key.
        """
        data = self.settlement.encode_abi("transfer_operator", args=[_checksum(new_operator)])
        return _result(
            self._transact(self.operator, self.settlement.address, data, GAS_TRANSFER_OPERATOR)
        )

    def submit_settlement(
        self,
        interval_id: int,
        batch_id: bytes,
        transfers: Sequence[tuple[str, int]],
        trades_root: bytes,
        readings_root: bytes,
    ) -> SettlementReceipt:
        """Settle one interval on-chain, exactly once.

        1. If the chain says the interval is settled: with the same ``batch_id``, return the
           original transaction's receipt with ``status="already_settled"``, sending
           nothing; with another, raise :class:`AlreadySettled`.
        2. Net ``transfers`` per account (:func:`net_transfers`) and check every debit
           against the account's escrow.
        3. Send ``settle`` and wait for it.

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
            If the contract reverts for another reason.
        ConfirmationTimeout
            If the receipt does not come in time. The transaction may still be mined:
            calling again is safe, it finds the interval settled.
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
        if len(lines) > MAX_SETTLEMENT_ACCOUNTS:
            msg = f"at most {MAX_SETTLEMENT_ACCOUNTS} accounts per settlement, got {len(lines)}"
            raise ValueError(msg)

        with self._lock:
            if self.is_settled(interval_id):
                return self._already_settled(interval_id, batch_id)
            for account, amount in lines:
                if amount < 0:
                    available = self.escrow_balance(account)
                    if available < -amount:
                        raise InsufficientEscrow(account, -amount, available)
            data = self.settlement.encode_abi(
                "settle",
                args=[
                    interval_id,
                    bytes(batch_id),
                    [account for account, _ in lines],
                    [amount for _, amount in lines],
                    bytes(trades_root),
                    bytes(readings_root),
                ],
            )
            try:
                receipt = self._transact(
                    self.operator, self.settlement.address, data, settle_gas_limit(len(lines))
                )
            except TransactionReverted:
                # Lost a race with another sender of the same interval: report what won.
                if self.is_settled(interval_id):
                    return self._already_settled(interval_id, batch_id)
                raise
        tx = _result(receipt)
        return SettlementReceipt(
            batch_id=bytes(batch_id).hex(),
            interval_id=interval_id,
            tx_hash=tx.tx_hash,
            block_number=tx.block_number,
            gas_used=tx.gas_used,
            status=SettlementStatus.SETTLED,
        )

    # ------------------------------------------------------------------ reads

    def token_balance(self, address: str) -> TokenUnits:
        """Token balance of ``address`` [token base units]."""
        return TokenUnits(self._read(self.token.functions.balanceOf(_checksum(address))))

    def total_supply(self) -> TokenUnits:
        """Tokens in existence [token base units]."""
        return TokenUnits(self._read(self.token.functions.totalSupply()))

    def escrow_balance(self, address: str) -> TokenUnits:
        """Escrow balance of ``address`` in the settlement contract [token base units]."""
        return TokenUnits(self._read(self.settlement.functions.escrow(_checksum(address))))

    def total_escrow(self) -> TokenUnits:
        """Sum of all escrow balances [token base units]."""
        return TokenUnits(self._read(self.settlement.functions.total_escrow()))

    def is_settled(self, interval_id: int) -> bool:
        """Whether the chain has settled ``interval_id`` (Unix seconds [s])."""
        return bool(self._read(self.settlement.functions.is_settled(interval_id)))

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
                n_accounts=int(log["args"]["n_accounts"]),
                block_number=int(log["blockNumber"]),
                tx_hash=_hex0x(log["transactionHash"]),
            )
            for log in logs
        ]

    def settled_transfers(self, interval_id: int) -> tuple[tuple[ChecksumAddress, int], ...]:
        """The signed amounts [token base units] settled for ``interval_id``, from its events.

        Empty if the interval is not settled (or was settled with no accounts).
        """
        block = int(self._read(self.settlement.functions.settled_block(interval_id)))
        if block == 0:
            return ()
        event = self.settlement.events.AccountSettled()
        logs: list[EventData] = self._rpc(
            lambda: list(
                event.get_logs(
                    argument_filters={"interval_id": interval_id},
                    from_block=block,
                    to_block=block,
                )
            )
        )
        return tuple(
            (Web3.to_checksum_address(log["args"]["account"]), int(log["args"]["amount"]))
            for log in logs
        )

    # ------------------------------------------------------------------ internals

    def _already_settled(self, interval_id: int, batch_id: bytes) -> SettlementReceipt:
        recorded = self.settled_batch(interval_id).batch_id
        if recorded != bytes(batch_id):
            raise AlreadySettled(interval_id, recorded.hex(), bytes(batch_id).hex())
        block = int(self._read(self.settlement.functions.settled_block(interval_id)))
        events = self.settled_events(block, to_block=block, interval_id=interval_id)
        tx_hash, gas_used = "", 0
        if events:
            tx_hash = events[0].tx_hash
            original = self._rpc(lambda: self.w3.eth.get_transaction_receipt(HexStr(tx_hash)))
            gas_used = int(original["gasUsed"])
        return SettlementReceipt(
            batch_id=recorded.hex(),
            interval_id=interval_id,
            tx_hash=tx_hash,
            block_number=block,
            gas_used=gas_used,
            status=SettlementStatus.ALREADY_SETTLED,
        )

    def _contract(self, address: ChecksumAddress, artifact: Artifact) -> Contract:
        return self.w3.eth.contract(address=address, abi=artifact.abi)

    def _deploy(self, data: HexStr, gas: int) -> ChecksumAddress:
        receipt = self._transact(self.operator, None, data, gas)
        address = receipt["contractAddress"]
        if address is None:
            msg = f"deployment {_hex0x(receipt['transactionHash'])} created no contract"
            raise ChainError(msg)
        return Web3.to_checksum_address(address)

    def _chain(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._rpc(lambda: self.w3.eth.chain_id))
        return self._chain_id

    def _fees(self) -> dict[str, int]:
        block = self._rpc(lambda: self.w3.eth.get_block("latest"))
        base_fee = block.get("baseFeePerGas")
        if base_fee is None:  # a chain without EIP-1559
            return {"gasPrice": int(self._rpc(lambda: self.w3.eth.gas_price))}
        return {
            "maxFeePerGas": 2 * int(base_fee) + self.priority_fee_wei,
            "maxPriorityFeePerGas": self.priority_fee_wei,
        }

    def _transact(
        self, account: LocalAccount, to: ChecksumAddress | None, data: HexStr, gas: int
    ) -> TxReceipt:
        """Sign locally, send, and wait; raise TransactionReverted if the EVM reverted."""
        sender = Web3.to_checksum_address(account.address)
        tx_hash = self._send(account, sender, to, data, gas)
        receipt = self._await(tx_hash)
        if receipt["status"] != 1:
            reason = self._replay_reason(sender, to, data, gas, int(receipt["blockNumber"]))
            raise TransactionReverted(reason, _hex0x(tx_hash))
        return receipt

    def _send(
        self,
        account: LocalAccount,
        sender: ChecksumAddress,
        to: ChecksumAddress | None,
        data: HexStr,
        gas: int,
    ) -> HexBytes:
        """Sign with the cached nonce and send; on a nonce error, re-read it and retry once.

        A transaction the node rejects is not on the chain, so sending it again with the
        chain's nonce cannot pay twice.
        """
        retried = False
        with self._lock:
            while True:
                if sender not in self._nonces:
                    self._nonces[sender] = int(
                        self._rpc(lambda: self.w3.eth.get_transaction_count(sender, "pending"))
                    )
                nonce = self._nonces[sender]
                tx: dict[str, Any] = {
                    "chainId": self._chain(),
                    "nonce": nonce,
                    "gas": gas,
                    "value": 0,
                    "data": data,
                    **self._fees(),
                }
                if to is not None:
                    tx["to"] = to
                signed = account.sign_transaction(tx)
                try:
                    tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                except (ContractLogicError, TransactionFailed) as exc:
                    self._nonces.pop(sender, None)
                    raise TransactionReverted(_revert_reason(exc)) from exc
                except _NODE_ERRORS as exc:
                    # The nonce may or may not have been used: ask the chain next time.
                    self._nonces.pop(sender, None)
                    if not retried and "nonce" in str(exc).lower():
                        retried = True
                        continue
                    msg = f"sending a transaction from {sender} (nonce {nonce}) failed: {exc}"
                    raise ChainError(msg) from exc
                self._nonces[sender] = nonce + 1
                return tx_hash

    def _await(self, tx_hash: HexBytes) -> TxReceipt:
        """Wait for the receipt of ``tx_hash`` and ``confirmations`` blocks on top of it."""
        deadline = time.monotonic() + self.timeout_s
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.timeout_s, poll_latency=self.poll_s
            )
        except TimeExhausted as exc:
            raise ConfirmationTimeout(_hex0x(tx_hash), self.timeout_s) from exc
        except _NODE_ERRORS as exc:
            msg = f"waiting for {_hex0x(tx_hash)} failed: {exc}"
            raise ChainError(msg) from exc
        if self.confirmations == 0:
            return receipt
        target = int(receipt["blockNumber"]) + self.confirmations
        while int(self._rpc(lambda: self.w3.eth.block_number)) < target:
            if time.monotonic() > deadline:
                raise ConfirmationTimeout(_hex0x(tx_hash), self.timeout_s)
            time.sleep(self.poll_s)
        # Read the receipt again: a reorganisation may have moved or dropped the transaction.
        return self._rpc(lambda: self.w3.eth.get_transaction_receipt(tx_hash))

    def _replay_reason(
        self,
        sender: ChecksumAddress,
        to: ChecksumAddress | None,
        data: HexStr,
        gas: int,
        block_number: int,
    ) -> str:
        """The revert reason of a mined, failed transaction, by replaying it as a call.

        The call runs on the state after the block's parent: exact on the embedded chain (one
        transaction per block), a close guess elsewhere, and ``""`` if the replay succeeds.
        """
        call: TxParams = {"from": sender, "data": data, "gas": gas}
        if to is not None:
            call["to"] = to
        try:
            self.w3.eth.call(call, block_identifier=max(block_number - 1, 0))
        except (ContractLogicError, TransactionFailed) as exc:
            return _revert_reason(exc)
        except _NODE_ERRORS:
            return ""
        return ""

    def _read(self, fn: Any) -> Any:  # noqa: ANN401 - a bound ContractFunction and its result
        try:
            return fn.call()
        except (ContractLogicError, TransactionFailed) as exc:
            raise TransactionReverted(_revert_reason(exc)) from exc
        except _NODE_ERRORS as exc:
            msg = f"reading {fn.fn_name} failed: {exc}"
            raise ChainError(msg) from exc

    def _rpc(self, request: Callable[[], T]) -> T:
        try:
            return request()
        except _NODE_ERRORS as exc:
            msg = f"chain request failed: {exc}"
            raise ChainError(msg) from exc


def _checksum(address: str) -> ChecksumAddress:
    try:
        return Web3.to_checksum_address(address)
    except ValueError as exc:
        msg = f"not an address: {address!r}"
        raise ValueError(msg) from exc


def _result(receipt: TxReceipt) -> TxResult:
    return TxResult(
        tx_hash=_hex0x(receipt["transactionHash"]),
        block_number=int(receipt["blockNumber"]),
        gas_used=int(receipt["gasUsed"]),
    )


def _hex0x(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def _constructor_data(artifact: Artifact, types: list[str], args: list[Any]) -> HexStr:
    return HexStr(artifact.bytecode + abi_encode(types, args).hex())


_REVERT_PREFIX = "execution reverted"


def _revert_reason(exc: Exception) -> str:
    """The contract's reason from a web3 or eth-tester revert exception."""
    text = getattr(exc, "message", None) or (str(exc.args[0]) if exc.args else str(exc))
    text = str(text).strip()
    if text.startswith(_REVERT_PREFIX):
        text = text[len(_REVERT_PREFIX) :].lstrip(": ").strip()
    return text


__all__ = [
    "DEMO_KEY_PREFIX",
    "MAX_SETTLEMENT_ACCOUNTS",
    "ChainClient",
    "SettledBatch",
    "SettledEvent",
    "SettlementReceipt",
    "SettlementStatus",
    "TxResult",
    "derive_account",
    "embedded_web3",
    "net_transfers",
    "settle_gas_limit",
]
