"""Settling an interval on-chain, exactly once.

:meth:`Settler.submit` takes the kernel's :class:`~market.domain.SettlementBatch` and the
chain address of each participant, and

1. translates the batch into the contract's terms (:func:`on_chain_batch`, pure): addresses
   instead of participants, amounts and rewarded energy netted per address (two participants
   may share one), the batch id and roots as 32 raw bytes; rewarded energy only when the
   deployment has a reward token;
2. waits for transactions a crashed predecessor left waiting at the node;
3. asks the chain whether the interval is settled, waiting until that answer is final. If it
   is, with the same batch id, it returns the original transaction's receipt with
   ``status="already_settled"`` and sends nothing; with another batch id it raises
   :class:`~adapters.chain.errors.AlreadySettled`;
4. checks every debit against the account's escrow, registers accounts the contract does not
   know yet (their own transactions, final before the settlement is sent), packs the entries
   (:mod:`adapters.chain.encoding`) and sends ``settle``, waiting until it is final.

The contract refuses a second settlement of an interval anyway, so a restart can never pay
twice. Persisting the intent before sending is the caller's job (the controller's store).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_typing import ChecksumAddress, HexStr
from web3.logs import DISCARD

from adapters.chain.accounts import checksum_address
from adapters.chain.deployment import MAX_SETTLEMENT_ACCOUNTS, Contracts
from adapters.chain.encoding import build_entries
from adapters.chain.errors import (
    AlreadySettled,
    ChainError,
    ConfirmationTimeout,
    InsufficientEscrow,
    InvalidSettlement,
    TransactionReverted,
)
from adapters.chain.funds import Funds
from adapters.chain.gas import settle_gas_limit
from adapters.chain.node import call, encode_call, rpc
from adapters.chain.queries import ChainReader
from market.domain import ParticipantId, SettlementBatch, utc_label


class SettlementStatus(enum.StrEnum):
    """Outcome of :meth:`Settler.submit`."""

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


@dataclass(frozen=True, slots=True, kw_only=True)
class OnChainBatch:
    """A settlement batch in the settlement contract's terms (what ``settle`` is sent).

    Attributes
    ----------
    interval_id : int
        The interval: its start in Unix seconds [s], a ``uint256``.
    batch_id : bytes
        The batch's 32-byte content hash.
    transfers : tuple of (ChecksumAddress, int)
        Net signed amount per address [token base units], none zero, summing to zero.
    rewards : tuple of (ChecksumAddress, int)
        Net verified local energy per address [Wh], none zero.
    trades_root, readings_root : bytes
        32-byte Merkle roots of the interval's trades and meter readings.
    """

    interval_id: int
    batch_id: bytes
    transfers: tuple[tuple[ChecksumAddress, int], ...]
    rewards: tuple[tuple[ChecksumAddress, int], ...]
    trades_root: bytes
    readings_root: bytes

    @property
    def accounts(self) -> list[ChecksumAddress]:
        """Every address the batch names, once, transfers first."""
        return list(dict.fromkeys([a for a, _ in self.transfers] + [a for a, _ in self.rewards]))


def on_chain_batch(
    batch: SettlementBatch, accounts: Mapping[ParticipantId, str], *, with_rewards: bool
) -> OnChainBatch:
    """Translate a kernel batch into the settlement contract's terms (pure).

    Parameters
    ----------
    batch : SettlementBatch
        The interval's settlement: signed amounts per participant [token base units] and
        verified local energy per producer [Wh].
    accounts : mapping of ParticipantId to str
        Chain address of every participant the batch names.
    with_rewards : bool
        Carry the batch's rewarded energy (only a deployment with a reward token can mint);
        without, it is left out and the batch settles money only.

    Returns
    -------
    OnChainBatch
        The batch with addresses, netted per address.

    Raises
    ------
    InvalidSettlement
        If a participant has no address, the interval or a root does not fit the contract,
        the amounts do not sum to zero, or more than
        :data:`~adapters.chain.deployment.MAX_SETTLEMENT_ACCOUNTS` accounts remain after
        netting (a :class:`ValueError`).
    InvalidAccount
        If an address is invalid (a :class:`ValueError`).
    """
    transfers = [(_address(accounts, p), int(a)) for p, a in batch.amounts]
    energy = (
        [(_address(accounts, p), int(wh)) for p, wh in batch.rewards_wh] if with_rewards else []
    )
    interval_id = batch.interval.interval_id
    if interval_id < 0 or interval_id >= 2**256:
        msg = f"interval_id must fit in uint256, got {interval_id}"
        raise InvalidSettlement(msg)
    batch_id = bytes.fromhex(batch.batch_id)
    for what, value in (
        ("batch_id", batch_id),
        ("trades_root", batch.trades_root),
        ("readings_root", batch.readings_root),
    ):
        if len(value) != 32:
            msg = f"{what} must be 32 bytes, got {len(value)}"
            raise InvalidSettlement(msg)
    out = OnChainBatch(
        interval_id=interval_id,
        batch_id=batch_id,
        transfers=net_transfers(transfers),
        rewards=net_rewards(energy),
        trades_root=bytes(batch.trades_root),
        readings_root=bytes(batch.readings_root),
    )
    n_accounts = len(out.accounts)
    if n_accounts > MAX_SETTLEMENT_ACCOUNTS:
        msg = f"at most {MAX_SETTLEMENT_ACCOUNTS} accounts per settlement, got {n_accounts}"
        raise InvalidSettlement(msg)
    return out


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
    InvalidSettlement
        If an amount is not an ``int``, or the amounts do not sum to zero (a
        :class:`ValueError`).
    InvalidAccount
        If an address is invalid (a :class:`ValueError`).
    """
    net = _sum_by_account(transfers, "amount")
    total = sum(net.values())
    if total != 0:
        msg = f"transfers must sum to zero, got {total} token base units"
        raise InvalidSettlement(msg)
    return tuple((account, amount) for account, amount in net.items() if amount != 0)


def net_rewards(rewards: Sequence[tuple[str, int]]) -> tuple[tuple[ChecksumAddress, int], ...]:
    """Sum verified local energy per account; drop zeros.

    Parameters
    ----------
    rewards : sequence of (address, Wh)
        Verified local energy [Wh], >= 0 per account after summing.

    Returns
    -------
    tuple of (ChecksumAddress, int)
        One entry per account with non-zero energy, in order of first appearance.

    Raises
    ------
    InvalidSettlement
        If an energy is not an ``int`` >= 0 (a :class:`ValueError`).
    InvalidAccount
        If an address is invalid (a :class:`ValueError`).
    """
    net = _sum_by_account(rewards, "energy")
    negative = [a for a, wh in net.items() if wh < 0]
    if negative:
        msg = f"reward energy must be >= 0 Wh, got {net[negative[0]]} for {negative[0]}"
        raise InvalidSettlement(msg)
    return tuple((account, wh) for account, wh in net.items() if wh != 0)


def _address(accounts: Mapping[ParticipantId, str], participant: ParticipantId) -> str:
    try:
        return accounts[participant]
    except KeyError:
        msg = f"participant {participant!r} has no chain account"
        raise InvalidSettlement(msg) from None


def _sum_by_account(pairs: Iterable[tuple[str, int]], what: str) -> dict[ChecksumAddress, int]:
    net: dict[ChecksumAddress, int] = {}
    for address, value in pairs:
        if isinstance(value, bool) or not isinstance(value, int):
            msg = f"{what} for {address} must be an int, got {value!r}"
            raise InvalidSettlement(msg)
        account = checksum_address(address)
        net[account] = net.get(account, 0) + value
    return net


class Settler:
    """Settles intervals exactly once (see the module docstring).

    Parameters
    ----------
    contracts : Contracts
        The deployment; its operator signs the settlements.
    reader : ChainReader
        Reads escrow, indices and what the chain recorded.
    funds : Funds
        Registers accounts the contract does not know yet.

    Attributes
    ----------
    on_broadcast : callable or None
        Called with a ``settle`` transaction's hash once the node accepted it, before its
        receipt is awaited (the owner's hook, e.g. the controller's ``after_send`` crash
        point); ``None`` by default.
    """

    def __init__(self, contracts: Contracts, reader: ChainReader, funds: Funds) -> None:
        self.contracts = contracts
        self.reader = reader
        self.funds = funds
        self.on_broadcast: Callable[[str], None] | None = None

    def submit(
        self, batch: SettlementBatch, accounts: Mapping[ParticipantId, str]
    ) -> SettlementReceipt:
        """Settle one interval's batch on-chain, exactly once.

        Parameters
        ----------
        batch : SettlementBatch
            The interval's settlement (``market.settlement.settle``). Its rewarded energy is
            sent only if the deployment has a reward token; the contract then mints
            ``floor(wh * rate / 1000)`` reward units per producer (scaled down pro rata to
            the per-interval cap) and holds them until claimed.
        accounts : mapping of ParticipantId to str
            Chain address of every participant the batch names.

        Returns
        -------
        SettlementReceipt
            Where the interval was settled.

        Raises
        ------
        InvalidSettlement, InvalidAccount
            If the batch cannot be sent (:func:`on_chain_batch`); nothing is sent.
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
        with_rewards = self.contracts.reward_token is not None
        return self._send(on_chain_batch(batch, accounts, with_rewards=with_rewards))

    def _send(self, batch: OnChainBatch) -> SettlementReceipt:
        sender, operator = self.contracts.sender, self.contracts.operator
        with sender.lock_for(operator.address):
            sender.wait_for_in_flight(operator.address)
            for _attempt in range(3):
                recorded = self._final_settled_block(batch.interval_id)
                if recorded:
                    return self._already_settled(batch.interval_id, batch.batch_id, recorded)
                entries, gas = self._prepare(batch)
                settlement = self.contracts.settlement
                data = encode_call(
                    settlement,
                    "settle",
                    [
                        batch.interval_id,
                        batch.batch_id,
                        entries,
                        batch.trades_root,
                        batch.readings_root,
                    ],
                )
                try:
                    receipt, tx = sender.transact(
                        operator, settlement.address, data, gas, on_broadcast=self.on_broadcast
                    )
                except TransactionReverted:
                    # Lost a race with another sender of the same interval: report what won.
                    if self.reader.is_settled(batch.interval_id):
                        continue
                    raise
                return SettlementReceipt(
                    batch_id=batch.batch_id.hex(),
                    interval_id=batch.interval_id,
                    tx_hash=tx.tx_hash,
                    block_number=tx.block_number,
                    gas_used=tx.gas_used,
                    status=SettlementStatus.SETTLED,
                    rewards_minted=self._rewards_minted(receipt),
                    nonce=tx.nonce,
                )
        msg = (
            f"interval {utc_label(batch.interval_id)} (id {batch.interval_id}): the chain kept "
            "changing its answer; try again"
        )
        raise ChainError(msg)

    def _prepare(self, batch: OnChainBatch) -> tuple[list[int], int]:
        """Check escrow, register unknown accounts, pack the entries; return them and gas."""
        accounts = batch.accounts
        states = self.reader.account_states(accounts)
        for account, amount in batch.transfers:
            available = states[account].escrow
            if amount < 0 and available < -amount:
                raise InsufficientEscrow(account, -amount, available)
        # Indices are read where reorganisations cannot reach (the finality depth): an index
        # assigned in a block that is later dropped could be given to another account.
        confirmations = self.contracts.sender.confirmations
        final = self.reader.account_states(accounts, final=True) if confirmations else states
        if any(final[a].index == 0 for a in accounts):
            self.funds.register(accounts)
            final = self.reader.account_states(accounts, final=True)
        indices = {a: final[a].index for a in accounts}
        entries = build_entries(indices, batch.transfers, batch.rewards)
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
        sender = self.contracts.sender
        deadline = time.monotonic() + sender.timeout_s
        fn = self.contracts.settlement.functions.settled_block(interval_id)
        while True:
            block = int(call(fn))
            if block == 0 or sender.confirmations == 0:
                return block
            head = self.reader.block_number()
            if head >= block + sender.confirmations:
                final = int(call(fn, block_identifier=head - sender.confirmations))
                if final == block:
                    return block
            if time.monotonic() > deadline:
                what = f"settlement of interval {utc_label(interval_id)} (block {block})"
                raise ConfirmationTimeout(what, sender.timeout_s)
            time.sleep(sender.poll_s)

    def _already_settled(self, interval_id: int, batch_id: bytes, block: int) -> SettlementReceipt:
        recorded = self.reader.settled_batch(interval_id).batch_id
        if recorded != batch_id:
            raise AlreadySettled(interval_id, recorded.hex(), batch_id.hex())
        events = self.reader.settled_events(block, to_block=block, interval_id=interval_id)
        tx_hash, gas_used, nonce, minted = "", 0, -1, 0
        if events:
            w3 = self.contracts.w3
            tx_hash = events[0].tx_hash
            minted = events[0].rewards_minted
            original = rpc(lambda: w3.eth.get_transaction_receipt(HexStr(tx_hash)))
            gas_used = int(original["gasUsed"])
            tx = rpc(lambda: w3.eth.get_transaction(HexStr(tx_hash)))
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

    def _rewards_minted(self, receipt: Any) -> int:  # noqa: ANN401 - a web3 TxReceipt
        settled = self.contracts.settlement.events.Settled()
        events = settled.process_receipt(receipt, errors=DISCARD)
        return int(events[0]["args"]["rewards_minted"]) if events else 0


__all__ = [
    "OnChainBatch",
    "SettlementReceipt",
    "SettlementStatus",
    "Settler",
    "net_rewards",
    "net_transfers",
    "on_chain_batch",
]
