"""Audit: re-check interval records against the chain and against a re-run of the clearing.

Each record (written by :class:`controller.cycle.Cycle`) holds the order book, the clearing
result, the AC check, the boundary readings, the settlement batch and the chain receipt. An
auditor verifies, per interval:

1. the batch id recomputes from the batch's content (amounts and roots);
2. the trades root recomputes from the result's trades, and the readings root from the
   boundary readings (:func:`market.codec.reading_leaves`, :mod:`market.merkle`);
3. the batch's amounts sum to zero, to the unit;
4. the chain records the same batch id and roots for the interval;
5. optionally, clearing the stored order book again gives byte-identical trades and prices.

**The record's core.** A record is committed with its settlement intent, before anything is
sent; the chain's receipt (``chain``: transaction hash, block, gas) and the last send error
(``error``) are filled in later. Its stored hash covers the core only
(:func:`record_core`: every key but those two), so it never depends on the transaction.
Records of earlier releases were hashed whole; both forms verify.

**Two ways against the chain** (:func:`compare_with_chain`): every interval the settlement
contract's ``Settled`` events name has a record with the same batch id, and every record (or
settlement row) that claims an on-chain settlement has its ``Settled`` event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from market.canonical import content_hash
from market.codec import reading_leaves
from market.domain import batch_id_of, utc_label
from market.merkle import merkle_root

UNHASHED = frozenset({"chain", "error"})
"""Record keys filled in after the record is committed; not part of its hash."""


def record_core(record: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an audit record its hash covers (every key but :data:`UNHASHED`).

    Parameters
    ----------
    record : mapping
        An audit record.

    Returns
    -------
    dict
        The record without its chain receipt and last send error.
    """
    return {k: v for k, v in record.items() if k not in UNHASHED}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainSettlement:
    """One interval as the settlement contract's ``Settled`` event names it.

    ``interval_id`` [Unix s], ``batch_id`` and the roots (64 hex digits, no ``0x``; roots
    ``""``: not compared), ``tx_hash`` (``0x`` hex) and ``block_number``.
    """

    interval_id: int
    batch_id: str
    tx_hash: str
    block_number: int
    trades_root: str = ""
    readings_root: str = ""


class SettledEventLike(Protocol):
    """The fields of a decoded ``Settled`` event (:class:`adapters.chain.queries.SettledEvent`)."""

    @property
    def interval_id(self) -> int:
        """The interval's start [Unix s]."""

    @property
    def batch_id(self) -> str:
        """64 hex digits, no ``0x``."""

    @property
    def tx_hash(self) -> str:
        """The settling transaction (``0x`` hex)."""

    @property
    def block_number(self) -> int:
        """The block it was mined in."""

    @property
    def trades_root(self) -> str:
        """64 hex digits, no ``0x``."""

    @property
    def readings_root(self) -> str:
        """64 hex digits, no ``0x``."""


def chain_settlements(events: Iterable[SettledEventLike]) -> list[ChainSettlement]:
    """The contract's ``Settled`` events as :class:`ChainSettlement` rows, in their order.

    Parameters
    ----------
    events : iterable of SettledEventLike
        Decoded events (``ChainClient.settled_events()``).

    Returns
    -------
    list of ChainSettlement
        One per event.
    """
    return [
        ChainSettlement(
            interval_id=e.interval_id,
            batch_id=e.batch_id,
            tx_hash=e.tx_hash,
            block_number=e.block_number,
            trades_root=e.trades_root,
            readings_root=e.readings_root,
        )
        for e in events
    ]


class OnChainBatch(Protocol):
    """What the settlement contract recorded for an interval."""

    @property
    def batch_id(self) -> bytes:
        """The 32-byte batch id."""
        ...

    @property
    def trades_root(self) -> bytes:
        """The trades root."""
        ...

    @property
    def readings_root(self) -> bytes:
        """The readings root."""
        ...


def verify_record(
    record: Mapping[str, Any],
    settled_batch: Callable[[int], OnChainBatch] | None = None,
    reclear: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
) -> list[str]:
    """Problems found in one interval record (empty = verified).

    Parameters
    ----------
    record : mapping
        One audit record as the cycle stored it (``interval`` [Unix s], ``length_s`` [s],
        ``result``, ``readings_start``/``readings_end``, ``settlement``).
    settled_batch : callable, optional
        What the chain recorded for an interval id; checks 4 are skipped without it.
    reclear : callable, optional
        Clears a record's order book again and returns the result's JSON form; check 5 is
        skipped without it.

    Returns
    -------
    list of str
        One line per problem, each starting with the interval's start in UTC and its id
        (``interval 2026-06-21T08:30Z (id 1782030600): ...``).
    """
    problems: list[str] = []
    interval = int(record["interval"])
    where = f"interval {utc_label(interval)} (id {interval})"
    batch = record.get("settlement")
    if batch is None:
        return [f"{where}: no settlement batch"]
    recomputed_id = batch_id_of(
        interval,
        record["length_s"],
        batch["amounts"],
        batch["trades_root"],
        batch["readings_root"],
        batch.get("rewards", []),
        batch.get("debts", []),
    )
    if recomputed_id != batch["batch_id"]:
        problems.append(f"{where}: batch id does not match the batch's content")
    if sum(a for _, a in batch["amounts"]) != 0:
        problems.append(f"{where}: amounts do not sum to zero")
    trades = record.get("result", {}).get("trades", [])
    if merkle_root(trades).hex() != batch["trades_root"]:
        problems.append(f"{where}: trades root does not match the trades")
    leaves = reading_leaves(record.get("readings_start") or [], record.get("readings_end") or [])
    if merkle_root(leaves).hex() != batch["readings_root"]:
        problems.append(f"{where}: readings root does not match the readings")
    if settled_batch is not None:
        on_chain = settled_batch(interval)
        if on_chain.batch_id.hex() != batch["batch_id"]:
            problems.append(f"{where}: the chain holds another batch id")
        if on_chain.trades_root.hex() != batch["trades_root"]:
            problems.append(f"{where}: the chain holds another trades root")
        if on_chain.readings_root.hex() != batch["readings_root"]:
            problems.append(f"{where}: the chain holds another readings root")
    if reclear is not None:
        again = reclear(record)
        stored = record.get("result", {})
        for key in ("trades", "prices", "orders"):
            if content_hash(again.get(key)) != content_hash(stored.get(key)):
                problems.append(f"{where}: re-clearing the book gives other {key}")
    return problems


def verify_records(
    records: Iterable[Mapping[str, Any]],
    settled_batch: Callable[[int], OnChainBatch] | None = None,
    reclear: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Verify stored audit rows and summarise.

    Parameters
    ----------
    records : iterable of mapping
        Audit rows (``{"record": ...}``) or bare records.
    settled_batch, reclear : callable, optional
        As for :func:`verify_record`.

    Returns
    -------
    dict
        ``records`` (count), ``verified`` (count without problems) and ``problems`` (list).
    """
    problems: list[str] = []
    n = verified = 0
    for row in records:
        record = row.get("record", row)
        n += 1
        found = verify_record(record, settled_batch, reclear)
        stored_hash = row.get("record_hash")
        if stored_hash is not None and stored_hash not in {
            content_hash(record_core(record)),
            content_hash(record),  # a record of an earlier release, hashed whole
        }:
            found.append(f"{_where(int(record['interval']))}: record hash does not match")
        problems.extend(found)
        verified += not found
    return {"records": n, "verified": verified, "problems": problems}


def compare_with_chain(
    records: Iterable[Mapping[str, Any]],
    chain: Iterable[ChainSettlement],
    settlement_rows: Iterable[Mapping[str, Any]] = (),
) -> list[str]:
    """Compare the chain's settled intervals with the stored records, both ways.

    Parameters
    ----------
    records : iterable of mapping
        Audit rows (``{"record": ...}``) or bare records.
    chain : iterable of ChainSettlement
        Every interval the settlement contract settled (its ``Settled`` events).
    settlement_rows : iterable of mapping
        The store's settlement rows (``interval_id``, ``state``, ``batch_id``, ``tx_hash``);
        a row ``settled`` claims an on-chain settlement as a record with ``chain`` does.

    Returns
    -------
    list of str
        One line per mismatch: an interval settled on-chain without a record, or with a
        record of another batch id; a record or settlement row that claims a settlement
        the chain does not have.
    """
    by_interval: dict[int, Mapping[str, Any]] = {}
    for row in records:
        record = row.get("record", row)
        by_interval[int(record["interval"])] = record
    on_chain = {c.interval_id: c for c in chain}
    problems: list[str] = []
    for interval_id in sorted(on_chain):
        settled = on_chain[interval_id]
        where = _where(interval_id)
        record = by_interval.get(interval_id)
        tx = f"tx {settled.tx_hash or '?'}, block {settled.block_number}"
        if record is None:
            problems.append(f"{where}: settled on-chain ({tx}) but has no audit record")
            continue
        batch = record.get("settlement") or {}
        if batch.get("batch_id") != settled.batch_id:
            problems.append(
                f"{where}: the record's batch id {batch.get('batch_id') or 'none'} is not "
                f"the chain's {settled.batch_id} ({tx})"
            )
            continue
        for root in ("trades_root", "readings_root"):
            theirs = getattr(settled, root)
            if theirs and batch.get(root) != theirs:
                problems.append(f"{where}: the chain holds another {root.replace('_', ' ')}")
    claims: dict[int, str] = {}
    for interval_id, record in by_interval.items():
        receipt = record.get("chain")
        if receipt:
            claims[interval_id] = f"its record names tx {receipt.get('tx_hash') or '?'}"
    for row in settlement_rows:
        if row.get("state") == "settled":
            claims.setdefault(
                int(row["interval_id"]),
                f"the store marks it settled (tx {row.get('tx_hash') or '?'})",
            )
    problems += [
        f"{_where(interval_id)}: {claim}, but the chain has no settlement of it"
        for interval_id, claim in sorted(claims.items())
        if interval_id not in on_chain
    ]
    return problems


def _where(interval_id: int) -> str:
    return f"interval {utc_label(interval_id)} (id {interval_id})"
