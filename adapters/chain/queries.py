"""Reading the chain: balances, escrow, roles and policy, settled intervals and their events.

:class:`ChainReader` only calls (``eth_call``, ``eth_getLogs``); it never sends a
transaction. Money is an ``int`` in token base units (6 decimals, :mod:`market.units`),
rewards in reward base units, energy in Wh. Hashes are hex: batch ids and roots without
``0x`` (64 digits, the form of ``market``'s content hashes), transaction hashes with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.types import BlockIdentifier, EventData, RPCEndpoint

from adapters.chain.accounts import checksum_address
from adapters.chain.artifact import load_artifact
from adapters.chain.deployment import (
    DEFAULT_ADMIN_ROLE,
    MAX_SETTLEMENT_ACCOUNTS,
    OPERATOR_ROLE,
    Contracts,
)
from adapters.chain.encoding import unpack_entry
from adapters.chain.errors import ChainError, InvalidArgument
from adapters.chain.node import call, hex0x, plain_batch, rpc, takes_plain_requests
from market.units import TokenUnits


class SettledBatch(NamedTuple):
    """What the settlement contract recorded for an interval: three raw 32-byte values.

    Attributes
    ----------
    batch_id : bytes
        The batch's content hash (zeros if the interval is unsettled).
    trades_root : bytes
        Merkle root of the interval's trades.
    readings_root : bytes
        Merkle root of the interval's meter readings.
    """

    batch_id: bytes
    trades_root: bytes
    readings_root: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SettledEvent:
    """A decoded ``Settled`` event, for auditors.

    Attributes
    ----------
    interval_id : int
        The interval: its start in Unix seconds [s].
    batch_id, trades_root, readings_root : str
        64 hex digits, no ``0x``.
    n_entries : int
        Accounts settled.
    rewards_minted : int
        Reward tokens minted for the interval [reward base units].
    block_number : int
        Block of the settling transaction.
    tx_hash : str
        Hash of the settling transaction, ``0x``-prefixed hex.
    """

    interval_id: int
    batch_id: str
    trades_root: str
    readings_root: str
    n_entries: int
    rewards_minted: int
    block_number: int
    tx_hash: str


BATCH_CALLS = 600
"""``eth_call`` requests per JSON-RPC batch of :meth:`ChainReader.settled_batches`."""

STORED_BATCH_GETTERS = ("batch_ids", "trades_roots", "readings_roots")
"""The Settlement contract's getters of a settled batch, in :class:`SettledBatch`'s order."""

CALL = RPCEndpoint("eth_call")

LOG_CHUNK_BLOCKS = 10_000
"""Blocks per ``eth_getLogs`` request of :meth:`ChainReader.settlement_log` (providers cap it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementLog:
    """Every settlement the contract logged over a block range, for auditors.

    Attributes
    ----------
    from_block, to_block : int
        The blocks searched, both included.
    events : tuple of SettledEvent
        The ``Settled`` events, oldest first.
    entries : dict of int to tuple of (ChecksumAddress, int, int)
        Per interval id [Unix s], the ``SettlementEntries`` logged in its ``Settled`` event's
        block, as :meth:`ChainReader.settled_entries` gives them (an interval without
        entries is absent).
    """

    from_block: int
    to_block: int
    events: tuple[SettledEvent, ...]
    entries: dict[int, tuple[tuple[ChecksumAddress, int, int], ...]]


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
        """Reward [reward base units] for energy at the full rate (before the cap).

        Parameters
        ----------
        wh : int
            Verified local energy [Wh].
        """
        return wh * self.rate // 1000


class ChainReader:
    """Reads the attached contracts (see the module docstring).

    Parameters
    ----------
    contracts : Contracts
        The deployment to read.
    """

    def __init__(self, contracts: Contracts) -> None:
        self.contracts = contracts

    # ------------------------------------------------------------------ node

    def chain_id(self) -> int:
        """The chain id of the node."""
        return self.contracts.sender.chain_id()

    def block_number(self) -> int:
        """The node's latest block number."""
        w3 = self.contracts.w3
        return int(rpc(lambda: w3.eth.block_number))

    # ------------------------------------------------------------------ tokens and escrow

    def token_balance(self, address: str) -> TokenUnits:
        """Payment-token wallet balance of ``address`` [token base units].

        Parameters
        ----------
        address : str
            The account.
        """
        token = self.contracts.token
        return TokenUnits(call(token.functions.balanceOf(checksum_address(address))))

    def total_supply(self) -> TokenUnits:
        """Payment tokens in existence [token base units]."""
        return TokenUnits(call(self.contracts.token.functions.totalSupply()))

    def escrow_balance(self, address: str) -> TokenUnits:
        """Escrow balance of ``address`` in the settlement contract [token base units].

        Parameters
        ----------
        address : str
            The account.
        """
        settlement = self.contracts.settlement
        return TokenUnits(call(settlement.functions.escrow(checksum_address(address))))

    def available_credit(self, address: str) -> TokenUnits:
        """What ``address``'s escrow can pay: escrow minus its pending withdrawal.

        The credit check at gate closure caps a buyer's accepted energy by this.

        Parameters
        ----------
        address : str
            The account.

        Returns
        -------
        TokenUnits
            Available escrow [token base units].
        """
        settlement = self.contracts.settlement
        return TokenUnits(call(settlement.functions.available(checksum_address(address))))

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

        Returns
        -------
        dict
            The state of each account, by checksummed address, in the order given.
        """
        wanted = list(dict.fromkeys(checksum_address(a) for a in addresses))
        block: BlockIdentifier = "latest"
        confirmations = self.contracts.sender.confirmations
        if final and confirmations:
            block = max(self.block_number() - confirmations, 0)
        out: dict[ChecksumAddress, AccountState] = {}
        for start in range(0, len(wanted), MAX_SETTLEMENT_ACCOUNTS):
            chunk = wanted[start : start + MAX_SETTLEMENT_ACCOUNTS]
            fn = self.contracts.settlement.functions.account_states(chunk)
            rows = call(fn, block_identifier=block)
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
        return TokenUnits(call(self.contracts.settlement.functions.total_escrow()))

    # ------------------------------------------------------------------ rewards

    def unclaimed_rewards(self, address: str) -> int:
        """Rewards the settlement contract holds for ``address`` [reward base units].

        Parameters
        ----------
        address : str
            The account.
        """
        settlement = self.contracts.settlement
        return int(call(settlement.functions.unclaimed_rewards(checksum_address(address))))

    def total_rewards(self) -> int:
        """Sum of all unclaimed rewards [reward base units]."""
        return int(call(self.contracts.settlement.functions.total_rewards()))

    def reward_balance(self, address: str) -> int:
        """Reward-token wallet balance of ``address`` [reward base units] (0 without rewards).

        Parameters
        ----------
        address : str
            The account.
        """
        reward = self.contracts.reward_token
        if reward is None:
            return 0
        return int(call(reward.functions.balanceOf(checksum_address(address))))

    def reward_supply(self) -> int:
        """Reward tokens in existence [reward base units] (0 without rewards)."""
        reward = self.contracts.reward_token
        if reward is None:
            return 0
        return int(call(reward.functions.totalSupply()))

    def reward_policy(self) -> RewardPolicy:
        """The reward rate and cap in force."""
        fns = self.contracts.settlement.functions
        return RewardPolicy(rate=int(call(fns.reward_rate())), cap=int(call(fns.reward_cap())))

    # ------------------------------------------------------------------ roles and policy

    def is_operator(self, address: str) -> bool:
        """Whether ``address`` holds the operator role.

        Parameters
        ----------
        address : str
            The account.
        """
        fns = self.contracts.settlement.functions
        return bool(call(fns.hasRole(OPERATOR_ROLE, checksum_address(address))))

    def is_admin(self, address: str) -> bool:
        """Whether ``address`` holds the admin role.

        Parameters
        ----------
        address : str
            The account.
        """
        fns = self.contracts.settlement.functions
        return bool(call(fns.hasRole(DEFAULT_ADMIN_ROLE, checksum_address(address))))

    def is_paused(self) -> bool:
        """Whether the settlement contract is paused."""
        return bool(call(self.contracts.settlement.functions.paused()))

    def withdrawal_delay(self) -> int:
        """The notice a withdrawal takes [s]."""
        return int(call(self.contracts.settlement.functions.withdrawal_delay()))

    # ------------------------------------------------------------------ settled intervals

    def is_settled(self, interval_id: int) -> bool:
        """Whether the chain (latest block) has settled ``interval_id``.

        Parameters
        ----------
        interval_id : int
            The interval: its start in Unix seconds [s].
        """
        return bool(call(self.contracts.settlement.functions.is_settled(interval_id)))

    def settled_block(self, interval_id: int) -> int:
        """The block that settled ``interval_id`` (0 if unsettled).

        Parameters
        ----------
        interval_id : int
            The interval: its start in Unix seconds [s].
        """
        return int(call(self.contracts.settlement.functions.settled_block(interval_id)))

    def settled_batch(self, interval_id: int) -> SettledBatch:
        """The batch id and Merkle roots recorded for ``interval_id`` (zeros if unsettled).

        Parameters
        ----------
        interval_id : int
            The interval: its start in Unix seconds [s].
        """
        fns = self.contracts.settlement.functions
        return SettledBatch(
            batch_id=bytes(call(fns.batch_ids(interval_id))),
            trades_root=bytes(call(fns.trades_roots(interval_id))),
            readings_root=bytes(call(fns.readings_roots(interval_id))),
        )

    def settled_batches(
        self, interval_ids: Iterable[int], *, per_request: int = BATCH_CALLS
    ) -> dict[int, SettledBatch]:
        """:meth:`settled_batch` of many intervals, in JSON-RPC batches (for auditors).

        The three storage reads of each interval (``batch_ids``, ``trades_roots``,
        ``readings_roots``) go as plain ``eth_call`` requests, ``per_request`` to a JSON-RPC
        batch: ~0.15 s for a day's 288 reads on anvil instead of ~5 s through web3's
        contract calls. A provider without batches (the embedded chain) is read call by call.

        Parameters
        ----------
        interval_ids : iterable of int
            The intervals [Unix s].
        per_request : int
            ``eth_call`` requests per JSON-RPC batch.

        Returns
        -------
        dict of int to SettledBatch
            Per interval, what the contract stores (zeros if unsettled).

        Raises
        ------
        ChainError
            If the node fails or answers a call with an error.
        """
        ids = list(dict.fromkeys(int(i) for i in interval_ids))
        if not takes_plain_requests(self.contracts.w3):
            return {i: self.settled_batch(i) for i in ids}
        words = self._uint_getters(STORED_BATCH_GETTERS, ids, per_request, "a settled batch")
        return {
            i: SettledBatch(
                batch_id=words[3 * k], trades_root=words[3 * k + 1], readings_root=words[3 * k + 2]
            )
            for k, i in enumerate(ids)
        }

    def settled_states(
        self, interval_ids: Iterable[int], *, per_request: int = BATCH_CALLS
    ) -> dict[int, tuple[int, bytes]]:
        """The settling block and batch id of many intervals, in JSON-RPC batches.

        What a controller re-checks of its recent settlements (a reorganisation may have
        dropped or moved them): two ``eth_call`` requests per interval, ``per_request`` to a
        batch, instead of web3's contract calls one by one. A provider without batches (the
        embedded chain) is read call by call.

        Parameters
        ----------
        interval_ids : iterable of int
            The intervals [Unix s].
        per_request : int
            ``eth_call`` requests per JSON-RPC batch.

        Returns
        -------
        dict of int to (int, bytes)
            Per interval, the block that settled it and its batch id (``0`` and 32 zero
            bytes if unsettled).

        Raises
        ------
        ChainError
            If the node fails or answers a call with an error.
        """
        ids = list(dict.fromkeys(int(i) for i in interval_ids))
        if not takes_plain_requests(self.contracts.w3):
            fns = self.contracts.settlement.functions
            return {i: (self.settled_block(i), bytes(call(fns.batch_ids(i)))) for i in ids}
        words = self._uint_getters(
            ("settled_block", "batch_ids"), ids, per_request, "a settlement's block"
        )
        return {
            i: (int.from_bytes(words[2 * k], "big"), words[2 * k + 1]) for k, i in enumerate(ids)
        }

    def _uint_getters(
        self, getters: Sequence[str], ids: Sequence[int], per_request: int, what: str
    ) -> list[bytes]:
        """The 32-byte answers of the settlement contract's ``getter(uint256)`` for each id.

        Id by id, getter by getter, as plain ``eth_call`` requests in JSON-RPC batches of at
        most ``per_request`` (whole ids per batch).
        """
        to = self.contracts.settlement.address
        selectors = [Web3.keccak(text=f"{n}(uint256)")[:4].hex() for n in getters]
        requests = [
            (CALL, [{"to": to, "data": f"0x{g}{i.to_bytes(32, 'big').hex()}"}, "latest"])
            for i in ids
            for g in selectors
        ]
        words: list[bytes] = []
        step = max(len(selectors), per_request - per_request % len(selectors))
        for start in range(0, len(requests), step):
            results = plain_batch(self.contracts.w3, requests[start : start + step], what)
            if results is None:  # the callers ask for a provider with batches
                msg = f"reading {what}: the node takes no JSON-RPC batches"
                raise ChainError(msg)
            for result in results:
                if not isinstance(result, str) or len(result) != 66:  # 0x and 32 bytes
                    msg = f"reading {what} failed: the node answered {result!r:.200}"
                    raise ChainError(msg)
                words.append(bytes.fromhex(result[2:]))
        return words

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

        Returns
        -------
        list of SettledEvent
            The events found.
        """
        filters = None if interval_id is None else {"interval_id": interval_id}
        event = self.contracts.settlement.events.Settled()
        logs: list[EventData] = rpc(
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
        """What was settled per account for ``interval_id``.

        Decoded from the ``SettlementEntries`` event.

        Parameters
        ----------
        interval_id : int
            The interval: its start in Unix seconds [s].

        Returns
        -------
        tuple of (ChecksumAddress, int, int)
            ``(address, amount, reward_wh)`` per account, by registry index: the signed
            amount [token base units] (> 0 credit) and the rewarded energy [Wh]. Empty if
            the interval is unsettled.
        """
        block = self.settled_block(interval_id)
        if block == 0:
            return ()
        event = self.contracts.settlement.events.SettlementEntries()
        logs: list[EventData] = rpc(
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
        addresses = call(self.contracts.settlement.functions.accounts_at(indices))
        return tuple(
            (Web3.to_checksum_address(a), e.amount, e.reward_wh)
            for a, e in zip(addresses, entries, strict=True)
        )

    def deployment_block(self) -> int:
        """The block the settlement contract was deployed in; 0 where the node cannot tell.

        A binary search for the first block at which the contract has code
        (``eth_getCode`` at past blocks, about log2(head) requests). A node that keeps no
        past state (an anvil node started from a state file, a pruned node) answers with an
        error, and then 0: searching the logs from the genesis block misses nothing.

        Returns
        -------
        int
            The first block with the contract's code, or 0.
        """
        w3 = self.contracts.w3
        address = self.contracts.settlement.address

        def has_code(block: int) -> bool:
            return len(rpc(lambda: w3.eth.get_code(address, block))) > 0

        try:
            head = self.block_number()
            if not has_code(head) or has_code(0):
                return 0
            lo, hi = 0, head  # no code at lo, code at hi
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if has_code(mid) else (mid, hi)
        except ChainError:
            return 0  # no past state: the whole chain is searched
        return hi

    def settlement_log(
        self,
        from_block: int = 0,
        to_block: int | None = None,
        *,
        chunk_blocks: int = LOG_CHUNK_BLOCKS,
    ) -> SettlementLog:
        """Every ``Settled`` and ``SettlementEntries`` event over a block range, read at once.

        The same values as :meth:`settled_events` and, per interval, :meth:`settled_entries`,
        in ``eth_getLogs`` requests of at most ``chunk_blocks`` blocks per event plus one
        ``accounts_at`` call per :data:`MAX_SETTLEMENT_ACCOUNTS` registry indices (an index
        names one account forever), instead of three requests per interval.

        Parameters
        ----------
        from_block : int
            First block searched (e.g. :meth:`deployment_block`).
        to_block : int or None
            Last block searched; ``None`` for the node's latest, read once.
        chunk_blocks : int
            Blocks per ``eth_getLogs`` request.

        Returns
        -------
        SettlementLog
            The events and the entries per interval.
        """
        last = self.block_number() if to_block is None else to_block
        entries_event = self.contracts.settlement.events.SettlementEntries()
        events: list[SettledEvent] = []
        packed: dict[tuple[int, int], list[int]] = {}
        for start in range(from_block, last + 1, max(1, chunk_blocks)):
            end = min(last, start + max(1, chunk_blocks) - 1)
            events += self.settled_events(start, to_block=end)
            logs = rpc(partial(_logs_of, entries_event, start, end))
            for log in logs:
                key = (int(log["args"]["interval_id"]), int(log["blockNumber"]))
                packed.setdefault(key, [int(w) for w in log["args"]["entries"]])
        unpacked = {
            e.interval_id: [unpack_entry(w) for w in packed.get(key, [])]
            for e in events
            for key in [(e.interval_id, e.block_number)]
        }
        indices = sorted({x.index for rows in unpacked.values() for x in rows})
        address_of: dict[int, ChecksumAddress] = {}
        for start in range(0, len(indices), MAX_SETTLEMENT_ACCOUNTS):
            chunk = indices[start : start + MAX_SETTLEMENT_ACCOUNTS]
            found = call(self.contracts.settlement.functions.accounts_at(chunk))
            address_of.update(zip(chunk, map(Web3.to_checksum_address, found), strict=True))
        return SettlementLog(
            from_block=from_block,
            to_block=last,
            events=tuple(events),
            entries={
                interval_id: tuple((address_of[x.index], x.amount, x.reward_wh) for x in rows)
                for interval_id, rows in unpacked.items()
                if rows
            },
        )

    def settled_transfers(self, interval_id: int) -> tuple[tuple[ChecksumAddress, int], ...]:
        """The signed amounts [token base units] settled for ``interval_id``, by account index.

        Empty if the interval is not settled (or was settled with no payments).

        Parameters
        ----------
        interval_id : int
            The interval: its start in Unix seconds [s].
        """
        return tuple((a, amount) for a, amount, _ in self.settled_entries(interval_id) if amount)

    def settled_rewards(self, interval_id: int) -> tuple[tuple[ChecksumAddress, int], ...]:
        """The verified local energy [Wh] rewarded per producer for ``interval_id``.

        Parameters
        ----------
        interval_id : int
            The interval: its start in Unix seconds [s].
        """
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

        Returns
        -------
        bool
            Whether the proof leads from the leaf to the recorded trades root.

        Raises
        ------
        InvalidArgument
            If a proof element is not 32 bytes (a :class:`ValueError`).
        """
        fns = self.contracts.settlement.functions
        return bool(call(fns.verify_trade(interval_id, bytes(leaf), _proof(proof))))

    def verify_reading(self, interval_id: int, leaf: bytes, proof: Sequence[bytes]) -> bool:
        """Ask the contract whether ``leaf`` is a meter reading of settled ``interval_id``.

        Parameters
        ----------
        interval_id : int
            The interval.
        leaf : bytes
            The reading's canonical JSON bytes (see :meth:`verify_trade`).
        proof : sequence of bytes
            32-byte sibling hashes from the leaf to the readings root.

        Returns
        -------
        bool
            Whether the proof leads from the leaf to the recorded readings root.

        Raises
        ------
        InvalidArgument
            If a proof element is not 32 bytes (a :class:`ValueError`).
        """
        fns = self.contracts.settlement.functions
        return bool(call(fns.verify_reading(interval_id, bytes(leaf), _proof(proof))))


def _logs_of(event: Any, from_block: int, to_block: int) -> list[EventData]:  # noqa: ANN401 - web3's event type
    return list(event.get_logs(from_block=from_block, to_block=to_block))


def _proof(proof: Sequence[bytes]) -> list[bytes]:
    out = [bytes(p) for p in proof]
    if any(len(p) != 32 for p in out):
        msg = "every proof element must be 32 bytes"
        raise InvalidArgument(msg)
    return out


def settlement_token(w3: Web3, settlement_address: str) -> ChecksumAddress:
    """The payment token a settlement contract names (read-only; for auditors).

    Parameters
    ----------
    w3 : Web3
        A connection to the chain.
    settlement_address : str
        The settlement contract's address.

    Returns
    -------
    ChecksumAddress
        Its ``token()``.
    """
    abi = load_artifact("Settlement").abi
    contract = w3.eth.contract(address=checksum_address(settlement_address), abi=abi)
    return Web3.to_checksum_address(call(contract.functions.token()))


__all__ = [
    "AccountState",
    "ChainReader",
    "RewardPolicy",
    "SettledBatch",
    "SettledEvent",
    "SettlementLog",
    "settlement_token",
]
