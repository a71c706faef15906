"""Sending transactions exactly once: local signing, gap-free nonces, replacement, finality.

:class:`TxSender` is the part of :class:`~adapters.chain.client.ChainClient` that talks to
the node about transactions. Per sending account it

* keeps the **next nonce locally**. It is read once from the node (``pending`` count) and then
  counted up per broadcast; on any doubt (a send that failed in a way that may or may not
  have reached the node) it is read again. A nonce is therefore never skipped: the node never
  holds a transaction waiting behind a hole. The owner can read and set it
  (:meth:`next_nonce`, :meth:`set_next_nonce`, :meth:`reconcile_nonce`) and is told of every
  change (``on_nonce``) to persist it.
* sends **one transaction at a time** (a lock per account, held until the transaction is
  final), so a replacement or a rebroadcast can never collide with a later nonce.
* **replaces a stuck transaction**: no receipt ``stuck_after_s`` after the last broadcast
  means the same nonce is signed again with both fee fields raised by ``fee_bump_percent``
  (nodes require >= 10 %), up to ``max_replacements`` times; whichever version is mined wins,
  and it can only be one of them.
* **waits to a finality depth**: the receipt counts once ``confirmations`` blocks are on top
  of its block and that block is still the canonical one at its height. A reorganisation
  that drops the block is noticed (the receipt disappears or its block hash changes); if the
  node forgot the transaction, the very same signed bytes are broadcast again (same nonce and
  hash, so it can be mined at most once), and the wait starts over.
* **closes nonce gaps a reorganisation left**: a reorganisation deeper than the finality
  depth can drop transactions this object already counted as final; the node then forgets
  them and its ``pending`` count falls below the local next nonce. Before a new nonce is
  signed, that count is compared with the local one: lower, and the last final transaction
  unknown to the node, means a gap, so the local nonce is re-synchronised to the node's and
  the new transaction goes out there (a warning is logged). A transaction already waiting
  behind such a gap (a reorganisation while it waited) cannot be mined by raising its fee:
  the nonces below it are filled with empty self-transfers (0 ether, 21,000 gas), after
  which it is mined as it was signed. Re-signing it at the lower nonce instead would leave
  the old version waiting at the node, to be executed as well once the gap closed (twice,
  for a call such as ``mint``).

**Why an object and not web3 middleware.** web3's middleware sees one request at a time. The
concerns above span many requests and must hold state between them: the local nonce, the lock
held from signing until finality, the signed versions of one nonce that a replacement or a
rebroadcast needs. Fee and gas rules are pure functions in :mod:`adapters.chain.gas`; node
errors are translated in :mod:`adapters.chain.node`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.types import TxParams, TxReceipt

from adapters.chain.errors import (
    ChainError,
    ConfirmationTimeout,
    InvalidArgument,
    NonceConflict,
    TransactionReverted,
)
from adapters.chain.gas import DEFAULT_PRIORITY_FEE_WEI, MAX_TX_GAS, bumped_fees, eip1559_fees
from adapters.chain.node import (
    NODE_ERRORS,
    REVERT_ERRORS,
    hex0x,
    plain_batch,
    revert_reason,
    rpc,
)

log = logging.getLogger("peergrid.chain")

CHECK_EVERY_S: Final = 0.25
"""Least time between checks of a waiting transaction's nonce and mempool presence [s]."""

_KNOWN = ("already known", "already imported", "known transaction")
_UNDERPRICED = ("underpriced", "fee too low", "replacement")


@dataclass(frozen=True, slots=True, kw_only=True)
class TxResult:
    """A mined, final transaction that succeeded.

    Attributes
    ----------
    tx_hash : str
        Transaction hash, ``0x``-prefixed hex.
    block_number : int
        Block that holds the transaction.
    gas_used : int
        Gas used [gas].
    nonce : int
        The sender's nonce it used.
    replacements : int
        How many times it was re-signed with higher fees before one version was mined.
    reorgs : int
        How many reorganisations dropped or moved it before it became final.
    gap_fillers : int
        How many empty self-transfers were sent below it to close a nonce gap.
    """

    tx_hash: str
    block_number: int
    gas_used: int
    nonce: int = -1
    replacements: int = 0
    reorgs: int = 0
    gap_fillers: int = 0


@dataclass(eq=False)
class _InFlight:
    """One nonce of one account, and every signed version of it."""

    account: LocalAccount
    sender: ChecksumAddress
    nonce: int
    fields: dict[str, Any]
    fees: dict[str, int]
    versions: list[tuple[HexBytes, bytes]] = field(default_factory=list)
    sent_at: float = 0.0
    replacements: int = 0
    reorgs: int = 0
    seen_block: tuple[int, HexBytes] | None = None
    checked_at: float = 0.0
    fillers: int = 0

    @property
    def latest(self) -> tuple[HexBytes, bytes]:
        return self.versions[-1]


class TxSender:
    """Signs, sends and awaits transactions exactly once per nonce (see the module docstring).

    Parameters
    ----------
    w3 : Web3
        Connection to the chain.
    confirmations : int
        Blocks on top of a transaction's block before it counts [blocks]; 0 returns at the
        receipt. On the embedded chain blocks are only mined by transactions: keep 0 there.
    timeout_s : float
        Longest wait for one transaction to become final [s].
    poll_s : float
        Interval between polls of the node [s].
    priority_fee_wei : int
        Tip per gas [wei]; the fee cap is twice the latest base fee plus the tip.
    stuck_after_s : float or None
        Re-sign with higher fees when no receipt came this long after the last broadcast [s];
        ``None`` never replaces.
    fee_bump_percent : int
        Raise of both fee fields per replacement [%], at least 10 (what nodes require).
    max_replacements : int
        Most replacements per transaction.
    on_nonce : callable or None
        Called with ``(sender, next_nonce)`` after every broadcast and every nonce reset, for
        the owner to persist.
    """

    def __init__(
        self,
        w3: Web3,
        *,
        confirmations: int = 0,
        timeout_s: float = 120.0,
        poll_s: float = 0.1,
        priority_fee_wei: int = DEFAULT_PRIORITY_FEE_WEI,
        stuck_after_s: float | None = None,
        fee_bump_percent: int = 25,
        max_replacements: int = 5,
        on_nonce: Callable[[str, int], None] | None = None,
    ) -> None:
        if confirmations < 0:
            msg = f"confirmations must be >= 0, got {confirmations}"
            raise InvalidArgument(msg)
        if fee_bump_percent < 10:
            msg = f"fee_bump_percent must be >= 10 (nodes refuse less), got {fee_bump_percent}"
            raise InvalidArgument(msg)
        self.w3 = w3
        self.confirmations = confirmations
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.priority_fee_wei = int(priority_fee_wei)
        self.stuck_after_s = stuck_after_s
        self.fee_bump_percent = fee_bump_percent
        self.max_replacements = max_replacements
        self.on_nonce = on_nonce
        self._nonces: dict[ChecksumAddress, int] = {}
        self._locks: dict[ChecksumAddress, threading.RLock] = {}
        self._last_final: dict[ChecksumAddress, tuple[HexBytes, ...]] = {}
        self._guard = threading.Lock()
        self._chain_id: int | None = None

    # ------------------------------------------------------------------ nonces

    def lock_for(self, sender: str) -> threading.RLock:
        """The lock that serialises everything ``sender`` sends through this object.

        Parameters
        ----------
        sender : str
            Address of the sending account.

        Returns
        -------
        threading.RLock
            The account's lock (re-entrant: :meth:`transact` takes it again inside).
        """
        address = Web3.to_checksum_address(sender)
        with self._guard:
            return self._locks.setdefault(address, threading.RLock())

    def chain_nonces(self, sender: str) -> tuple[int, int]:
        """The transaction counts of ``sender`` on the node.

        Parameters
        ----------
        sender : str
            Address of the account.

        Returns
        -------
        (int, int)
            ``latest`` (mined) and ``pending`` (mined or waiting, never below ``latest``).
        """
        address = Web3.to_checksum_address(sender)
        counts = plain_batch(
            self.w3,
            [("eth_getTransactionCount", [address, tag]) for tag in ("latest", "pending")],
            f"the nonces of {address}",
        )
        if counts is not None:  # a node: one request, as read by two
            latest, pending = (int(str(c), 16) for c in counts)
        else:
            latest = int(rpc(lambda: self.w3.eth.get_transaction_count(address, "latest")))
            pending = int(rpc(lambda: self.w3.eth.get_transaction_count(address, "pending")))
        return latest, max(latest, pending)

    def next_nonce(self, sender: str) -> int:
        """The nonce ``sender``'s next transaction will use (read from the node if unknown).

        Parameters
        ----------
        sender : str
            Address of the sending account.

        Returns
        -------
        int
            The next nonce.
        """
        address = Web3.to_checksum_address(sender)
        with self.lock_for(address):
            if address not in self._nonces:
                self._set(address, self.chain_nonces(address)[1])
            return self._nonces[address]

    def set_next_nonce(self, sender: str, nonce: int) -> int:
        """Use ``nonce`` for ``sender``'s next transaction.

        It must lie between the node's ``latest`` count (lower: already mined) and its
        ``pending`` count (higher: the transaction would wait forever behind a gap); a nonce
        below ``pending`` replaces the transaction waiting with it, which must then pay more.

        Parameters
        ----------
        sender : str
            Address of the sending account.
        nonce : int
            The nonce its next transaction is to use.

        Returns
        -------
        int
            ``nonce``.

        Raises
        ------
        InvalidArgument
            If ``nonce`` is outside that range (a :class:`ValueError`).
        """
        address = Web3.to_checksum_address(sender)
        with self.lock_for(address):
            latest, pending = self.chain_nonces(address)
            if nonce < latest:
                msg = f"nonce {nonce} of {address} is already mined (next unmined: {latest})"
                raise InvalidArgument(msg)
            if nonce > pending:
                msg = (
                    f"nonce {nonce} of {address} would leave a gap: the node's next nonce "
                    f"is {pending}"
                )
                raise InvalidArgument(msg)
            self._set(address, nonce)
            return nonce

    def reconcile_nonce(self, sender: str, persisted: int | None) -> int:
        """Adopt the node's ``pending`` count after a restart; log how ``persisted`` differs.

        A persisted next nonce above the node's means transactions were signed but never
        reached the node (or the node lost them): they are not on the chain, and continuing
        at the node's count leaves no gap. Below it means this key sent more than this
        client recorded (another process, or a crash between broadcast and persisting).

        Parameters
        ----------
        sender : str
            Address of the sending account.
        persisted : int or None
            The next nonce the owner persisted before the restart (``None``: none).

        Returns
        -------
        int
            The next nonce now in use.
        """
        address = Web3.to_checksum_address(sender)
        with self.lock_for(address):
            latest, pending = self.chain_nonces(address)
            if persisted is not None and persisted != pending:
                log.warning(
                    "%s: persisted next nonce %d, node says %d (mined %d); continuing at %d",
                    address,
                    persisted,
                    pending,
                    latest,
                    pending,
                )
            self._set(address, pending)
            return pending

    def wait_for_in_flight(self, sender: str) -> None:
        """Wait until transactions ``sender`` has waiting at the node are mined.

        Only those this object did not send itself (e.g. left by a process that crashed):
        after :meth:`transact` returns, nothing of its own is waiting.

        Parameters
        ----------
        sender : str
            Address of the sending account.

        Raises
        ------
        ConfirmationTimeout
            If they are still waiting after ``timeout_s``.
        """
        address = Web3.to_checksum_address(sender)
        with self.lock_for(address):
            deadline = time.monotonic() + self.timeout_s
            latest, pending = self.chain_nonces(address)
            while latest < pending:
                if time.monotonic() > deadline:
                    msg = f"{address} nonces {latest}..{pending - 1}"
                    raise ConfirmationTimeout(msg, self.timeout_s)
                time.sleep(self.poll_s)
                latest, pending = self.chain_nonces(address)

    def _set(self, sender: ChecksumAddress, nonce: int) -> None:
        self._nonces[sender] = nonce
        if self.on_nonce is not None:
            self.on_nonce(sender, nonce)

    # ------------------------------------------------------------------ sending

    def transact(
        self,
        account: LocalAccount,
        to: ChecksumAddress | None,
        data: HexStr,
        gas: int,
        *,
        on_broadcast: Callable[[str], None] | None = None,
    ) -> tuple[TxReceipt, TxResult]:
        """Sign locally, send (no ether along), wait until final; raise if the EVM reverted.

        Parameters
        ----------
        account : LocalAccount
            Signs the transaction and pays its gas.
        to : ChecksumAddress or None
            The contract called; ``None`` deploys ``data`` as a new contract.
        data : str
            Calldata (or creation bytecode), ``0x``-prefixed hex.
        gas : int
            Gas limit [gas], capped at :data:`~adapters.chain.gas.MAX_TX_GAS`.
        on_broadcast : callable or None
            Called with the transaction's hash (``0x`` hex) once the node accepted it, before
            the wait for its receipt (the controller's ``after_send`` crash point).

        Returns
        -------
        (TxReceipt, TxResult)
            The final receipt and its summary.

        Raises
        ------
        TransactionReverted
            The transaction was mined and reverted (the reason replayed with ``eth_call``).
        ConfirmationTimeout
            Not final within ``timeout_s``; it may still be mined later.
        NonceConflict
            Another transaction took the nonce.
        ChainError
            The node failed.
        """
        sender = Web3.to_checksum_address(account.address)
        with self.lock_for(sender):
            flight = self._broadcast_new(account, sender, to, data, min(gas, MAX_TX_GAS))
            if on_broadcast is not None:
                on_broadcast(hex0x(flight.versions[-1][0]))
            receipt = self._await_final(flight)
            self._last_final[sender] = tuple(h for h, _raw in flight.versions)
        result = TxResult(
            tx_hash=hex0x(receipt["transactionHash"]),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            nonce=flight.nonce,
            replacements=flight.replacements,
            reorgs=flight.reorgs,
            gap_fillers=flight.fillers,
        )
        if receipt["status"] != 1:
            reason = self._replay_reason(sender, to, data, gas, int(receipt["blockNumber"]))
            raise TransactionReverted(reason, result.tx_hash)
        return receipt, result

    def _broadcast_new(
        self,
        account: LocalAccount,
        sender: ChecksumAddress,
        to: ChecksumAddress | None,
        data: HexStr,
        gas: int,
    ) -> _InFlight:
        retried = False
        while True:
            nonce = self._usable_nonce(sender)
            fields: dict[str, Any] = {
                "chainId": self.chain_id(),
                "nonce": nonce,
                "gas": gas,
                "value": 0,
                "data": data,
            }
            if to is not None:
                fields["to"] = to
            flight = _InFlight(
                account=account, sender=sender, nonce=nonce, fields=fields, fees=self._fees()
            )
            try:
                self._broadcast(flight)
            except REVERT_ERRORS as exc:
                self._nonces.pop(sender, None)
                raise TransactionReverted(revert_reason(exc)) from exc
            except NODE_ERRORS as exc:
                # The nonce may or may not have been used: ask the node again.
                self._nonces.pop(sender, None)
                if not retried and "nonce" in str(exc).lower():
                    retried = True
                    continue
                msg = f"sending a transaction from {sender} (nonce {nonce}) failed: {exc}"
                raise ChainError(msg) from exc
            self._set(sender, nonce + 1)
            return flight

    def _usable_nonce(self, sender: ChecksumAddress) -> int:
        """The next nonce, re-synchronised to the node's if a reorganisation left a gap.

        The local next nonce is only ever above the node's ``pending`` count when
        transactions counted as final were dropped since (one is sent at a time, each waited
        for until final). If the node does not know the last of them either, they are gone:
        the node's count is adopted, so the new transaction does not wait behind a hole.
        """
        cached = self._nonces.get(sender)
        if cached is None:
            return self.next_nonce(sender)
        latest, pending = self.chain_nonces(sender)
        if pending >= cached:
            return cached
        last = self._last_final.get(sender, ())
        if any(self._node_knows(h) for h in last):
            return cached  # the node still holds it: it will be mined, no gap to close
        log.warning(
            "%s: the node's next nonce is %d (mined %d), ours %d, and the node no longer knows "
            "our transactions %d..%d (a reorganisation deeper than the finality depth dropped "
            "them): continuing at the node's nonce %d",
            sender,
            pending,
            latest,
            cached,
            pending,
            cached - 1,
            pending,
        )
        self._last_final.pop(sender, None)
        self._set(sender, pending)
        return pending

    def _broadcast(self, flight: _InFlight) -> None:
        """Sign ``flight`` with its current fees and send it; record the version if sent."""
        signed = flight.account.sign_transaction({**flight.fields, **flight.fees})
        raw = bytes(signed.raw_transaction)
        tx_hash = HexBytes(signed.hash)
        try:
            self.w3.eth.send_raw_transaction(raw)
        except NODE_ERRORS as exc:
            text = str(exc).lower()
            if not any(k in text for k in _KNOWN) and not self._node_knows(tx_hash):
                raise
        flight.versions.append((tx_hash, raw))
        flight.sent_at = time.monotonic()

    def _node_knows(self, tx_hash: HexBytes) -> bool:
        try:
            self.w3.eth.get_transaction(tx_hash)
        except TransactionNotFound:
            return False
        except NODE_ERRORS:
            return False
        return True

    def _await_final(self, flight: _InFlight) -> TxReceipt:
        deadline = time.monotonic() + self.timeout_s
        polls = 0
        while True:
            receipt = self._receipt_of(flight)
            if receipt is None:
                self._keep_alive(flight)
            else:
                block = int(receipt["blockNumber"])
                block_hash = HexBytes(receipt["blockHash"])
                if flight.seen_block is not None and flight.seen_block != (block, block_hash):
                    flight.reorgs += 1
                    log.warning(
                        "%s nonce %d moved from block %d to %d (reorganisation)",
                        flight.sender,
                        flight.nonce,
                        flight.seen_block[0],
                        block,
                    )
                flight.seen_block = (block, block_hash)
                if self.confirmations == 0:
                    return receipt
                head = int(rpc(lambda: self.w3.eth.block_number))
                if head >= block + self.confirmations:
                    canonical = rpc(partial(self.w3.eth.get_block, block))
                    if HexBytes(canonical["hash"]) == block_hash:
                        return receipt
            if time.monotonic() > deadline:
                raise ConfirmationTimeout(hex0x(flight.latest[0]), self.timeout_s)
            time.sleep(self.pause(polls))
            polls += 1

    def pause(self, polls: int) -> float:
        """Wait before poll number ``polls + 1`` [s]: 5 ms doubling up to ``poll_s``.

        A dev node mines within milliseconds; a public chain takes seconds. Starting short
        and backing off serves both without hammering either.

        Parameters
        ----------
        polls : int
            Polls made so far.

        Returns
        -------
        float
            The wait [s].
        """
        return float(min(self.poll_s, 0.005 * 2 ** min(polls, 16)))

    def _receipt_of(self, flight: _InFlight) -> TxReceipt | None:
        for tx_hash, _raw in reversed(flight.versions):
            try:
                return self.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                continue
            except NODE_ERRORS as exc:
                log.warning("reading the receipt of %s failed: %s", hex0x(tx_hash), exc)
                return None
        return None

    def _keep_alive(self, flight: _InFlight) -> None:
        """No receipt: notice a reorganisation, a consumed nonce, a forgotten or stuck tx."""
        if flight.seen_block is not None:
            flight.reorgs += 1
            log.warning(
                "%s nonce %d: its block %d is no longer canonical (reorganisation)",
                flight.sender,
                flight.nonce,
                flight.seen_block[0],
            )
            flight.seen_block = None
        # The checks below cost 3+ requests: at most every CHECK_EVERY_S (a hosted node
        # rate-limits; a dev node mines in milliseconds and never gets here).
        now = time.monotonic()
        if now - flight.checked_at < max(CHECK_EVERY_S, self.poll_s):
            return
        flight.checked_at = now
        latest, pending = self.chain_nonces(flight.sender)
        if latest > flight.nonce:
            # Mined, and its receipt not indexed yet; or a node mid-reorganisation (or one of
            # a load-balanced set) answered from before it; or another transaction took the
            # nonce. Only the last persists: look at both again before calling it a conflict.
            time.sleep(self.poll_s)
            if self._receipt_of(flight) is not None:
                return
            latest, _ = self.chain_nonces(flight.sender)
            if latest > flight.nonce and self._receipt_of(flight) is None:
                raise NonceConflict(flight.sender, flight.nonce)
            return
        if not any(self._node_knows(h) for h, _ in flight.versions):
            log.warning(
                "%s nonce %d: the node forgot %s; broadcasting it again",
                flight.sender,
                flight.nonce,
                hex0x(flight.latest[0]),
            )
            self._rebroadcast(flight)
            return
        if pending < flight.nonce:
            # It waits behind a gap (a reorganisation dropped nonces below it): no fee helps.
            self._fill_gap(flight, pending)
            return
        stuck = self.stuck_after_s is not None and (
            time.monotonic() - flight.sent_at > self.stuck_after_s
        )
        if stuck and flight.replacements < self.max_replacements:
            self._replace(flight)

    def _fill_gap(self, flight: _InFlight, pending: int) -> None:
        """Send empty self-transfers at nonces ``pending .. flight.nonce - 1``.

        The node holds ``flight`` but cannot mine it: nonces below it are missing (a
        reorganisation dropped transactions already counted as final). Each filler moves
        nothing (0 ether to the sender itself, 21,000 gas), so ``flight`` is then mined as it
        was signed, its hash unchanged (see the module docstring for why it is not re-signed
        at the lower nonce).
        """
        log.warning(
            "%s nonce %d waits behind a nonce gap (the node's next nonce is %d: a "
            "reorganisation dropped %d..%d); filling it with empty self-transfers",
            flight.sender,
            flight.nonce,
            pending,
            pending,
            flight.nonce - 1,
        )
        for nonce in range(pending, flight.nonce):
            fields: dict[str, Any] = {
                "chainId": self.chain_id(),
                "nonce": nonce,
                "to": flight.sender,
                "value": 0,
                "gas": 21_000,
                **self._fees(),
            }
            signed = flight.account.sign_transaction(fields)
            try:
                self.w3.eth.send_raw_transaction(bytes(signed.raw_transaction))
            except NODE_ERRORS as exc:
                # Taken meanwhile (the dropped transaction came back, or another process):
                # either way the gap is closing; the next check looks again.
                log.warning("gap filler at nonce %d of %s refused: %s", nonce, flight.sender, exc)
                continue
            flight.fillers += 1
        flight.sent_at = time.monotonic()

    def _rebroadcast(self, flight: _InFlight) -> None:
        try:
            self.w3.eth.send_raw_transaction(flight.latest[1])
        except NODE_ERRORS as exc:
            log.warning("rebroadcast of %s failed: %s", hex0x(flight.latest[0]), exc)
        flight.sent_at = time.monotonic()

    def _replace(self, flight: _InFlight) -> None:
        """Sign the same nonce with both fees raised, and send it."""
        flight.fees = bumped_fees(flight.fees, self._fees(), self.fee_bump_percent)
        flight.replacements += 1
        try:
            self._broadcast(flight)
        except NODE_ERRORS as exc:
            text = str(exc).lower()
            flight.sent_at = time.monotonic()
            if "nonce" in text:
                return  # an earlier version was mined meanwhile; the next poll finds it
            if any(k in text for k in _UNDERPRICED):
                log.warning("replacement of %s refused (%s); bumping again", flight.sender, exc)
                return
            msg = f"replacing nonce {flight.nonce} failed: {exc}"
            raise ChainError(msg) from exc
        log.warning(
            "%s nonce %d stuck for %.1f s: replaced by %s (%s)",
            flight.sender,
            flight.nonce,
            self.stuck_after_s or 0.0,
            hex0x(flight.latest[0]),
            flight.fees,
        )

    # ------------------------------------------------------------------ node helpers

    def chain_id(self) -> int:
        """The chain id of the node (read once, then remembered)."""
        if self._chain_id is None:
            self._chain_id = int(rpc(lambda: self.w3.eth.chain_id))
        return self._chain_id

    def _fees(self) -> dict[str, int]:
        latest = plain_batch(
            self.w3, [("eth_getBlockByNumber", ["latest", False])], "the latest block"
        )
        if latest is not None:  # a node: the header's field, without web3's formatting
            field = latest[0].get("baseFeePerGas") if isinstance(latest[0], dict) else None
            base_fee = None if field is None else int(str(field), 16)
        else:
            base_fee = rpc(lambda: self.w3.eth.get_block("latest")).get("baseFeePerGas")
        if base_fee is None:  # a chain without EIP-1559
            return {"gasPrice": int(rpc(lambda: self.w3.eth.gas_price))}
        return eip1559_fees(int(base_fee), self.priority_fee_wei)

    def _replay_reason(
        self,
        sender: ChecksumAddress,
        to: ChecksumAddress | None,
        data: HexStr,
        gas: int,
        block_number: int,
    ) -> str:
        """The revert reason of a mined, failed transaction, by replaying it as a call.

        The call runs on the state after the block's parent: exact on the embedded chain and
        on anvil with automine (one transaction per block), a close guess elsewhere, and
        ``""`` if the replay succeeds.
        """
        call: TxParams = {"from": sender, "data": data, "gas": gas}
        if to is not None:
            call["to"] = to
        try:
            self.w3.eth.call(call, block_identifier=max(block_number - 1, 0))
        except REVERT_ERRORS as exc:
            return revert_reason(exc)
        except NODE_ERRORS:
            return ""
        return ""


__all__ = ["TxResult", "TxSender"]
