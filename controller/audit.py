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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from market.canonical import content_hash
from market.codec import reading_leaves
from market.domain import batch_id_of, utc_label
from market.merkle import merkle_root


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
        problems.extend(found)
        verified += not found
    return {"records": n, "verified": verified, "problems": problems}
