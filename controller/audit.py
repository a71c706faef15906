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

**Self-contained, anchored records** (``format`` 2, issue 11). A record also holds every
parameter in force (``params``), the software and solver versions (``versions``), the grid
(``grid_hash``: its pandapower JSON without the base case, stored once in the ``grids``
table; ``base_case``: the interval's load and generation columns), the chain address of
each account (``accounts``) and the AC check with every bus voltage and branch loading
(``ac_check``). Its core is hashed *before anything is sent*, with the batch in it minus the
batch id (:func:`record_core`, :func:`anchor_hash`); that hash is the batch's
``record_hash``, and the batch id is the content hash of the batch's fields plus it
(:func:`market.domain.batch_id_of`). The Settlement contract stores the batch id, so the
chain commits to the whole record with no contract change. :func:`verify_anchored` adds
the checks of such records (the anchor, the chain's per-account entries, the parameters,
the store's tables, the re-clear with the recorded parameters on the recorded grid).
Records and batches of earlier releases (no ``format``, no ``record_hash``) keep their
rule: their batch ids do not change, and they are re-cleared with the site's grid.

**Read once, parse once.** A verify of thousands of intervals reads the chain through a
:class:`ChainSnapshot` (the contract's ``Settled`` and ``SettlementEntries`` events read once
from its deployment block, its stored batches in JSON-RPC batches) and re-clears through one
:class:`Reclearer` (each grid parsed once, linear models kept for repeated base cases). Both
give exactly what the per-interval reads and a fresh :func:`reclear_recorded` give
(``tests/controller/test_audit_chain.py``).
"""

from __future__ import annotations

import functools
import json
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final, Protocol

from market.canonical import content_hash
from market.codec import reading_leaves, result_from_dict
from market.domain import Interval, ReadingQuality, batch_id_of, utc_label
from market.errors import InvalidQuantity
from market.governance import apply_governed, governed_gate_closure
from market.merkle import merkle_root
from market.settlement import community_fees, unverified_penalty
from market.signed_readings import SignedReading, check_reading

UNHASHED = frozenset({"chain", "error"})
"""Record keys filled in after the record is committed; not part of its hash."""

RECORD_FORMAT: Final = 2
"""Records of this format are self-contained and anchored: the batch id commits to them."""

BATCH_ANCHOR_KEYS = frozenset({"batch_id", "record_hash"})
"""Batch keys derived from the record's hash; left out of the hashed core (no circularity)."""

VERSIONED = ("peergrid", "pandapower", "highspy", "pyomo", "numpy", "scipy")
"""The distributions whose versions a record names (besides Python)."""


def record_core(record: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an audit record its hash covers (every key but :data:`UNHASHED`).

    In an anchored record (``format`` >= 2) the batch (``settlement``) is hashed without its
    ``batch_id`` and ``record_hash``, which are derived from this very hash.

    Parameters
    ----------
    record : mapping
        An audit record.

    Returns
    -------
    dict
        The record without its chain receipt and last send error.
    """
    core = {k: v for k, v in record.items() if k not in UNHASHED}
    batch = core.get("settlement")
    if int(core.get("format") or 1) >= RECORD_FORMAT and isinstance(batch, Mapping):
        core["settlement"] = {k: v for k, v in batch.items() if k not in BATCH_ANCHOR_KEYS}
    return core


def anchor_hash(record: Mapping[str, Any]) -> str:
    """The content hash of a record's core: what its batch id commits to.

    Parameters
    ----------
    record : mapping
        An audit record (``format`` >= 2).

    Returns
    -------
    str
        64 hex digits (:func:`market.canonical.content_hash` of :func:`record_core`).
    """
    return content_hash(record_core(record))


def software_versions() -> dict[str, str]:
    """The versions of PeerGrid, its solvers and Python (a record's ``versions``).

    Read once per process (the code running does not change under it; reading the
    installed packages' metadata costs more than a small site's clearing).

    Returns
    -------
    dict of str to str
        Distribution name -> version (``"absent"`` if not installed), and ``python``.
    """
    return dict(_software_versions())


@functools.cache
def _software_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    out["python"] = platform.python_version()
    return out


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


class ChainView(Protocol):
    """Read-only access to the settlement contract (:class:`adapters.chain.ChainClient`)."""

    def settled_batch(self, interval_id: int) -> OnChainBatch:
        """The batch id and roots the contract stores for ``interval_id`` (zeros if none)."""
        ...

    def settled_entries(self, interval_id: int) -> tuple[tuple[str, int, int], ...]:
        """``(address, amount [token units], reward [Wh])`` settled for ``interval_id``."""
        ...


class SettlementLogLike(Protocol):
    """Settlements over a block range (:class:`adapters.chain.queries.SettlementLog`)."""

    @property
    def from_block(self) -> int:
        """First block searched."""

    @property
    def to_block(self) -> int:
        """Last block searched."""

    @property
    def events(self) -> Sequence[SettledEventLike]:
        """The ``Settled`` events, oldest first."""

    @property
    def entries(self) -> Mapping[int, tuple[tuple[str, int, int], ...]]:
        """Per interval id, ``(address, amount [token units], reward [Wh])``."""


class ChainLogReader(ChainView, Protocol):
    """A :class:`ChainView` that also reads the contract's logs at once (``ChainClient``)."""

    def deployment_block(self) -> int:
        """The settlement contract's first block (0 where the node cannot tell)."""
        ...

    def settlement_log(self, from_block: int = 0, to_block: int | None = None) -> SettlementLogLike:
        """Every ``Settled`` and ``SettlementEntries`` event over a block range."""
        ...

    def settled_batches(self, interval_ids: Iterable[int]) -> Mapping[int, OnChainBatch]:
        """:meth:`ChainView.settled_batch` of many intervals, in a few requests."""
        ...


class ChainSnapshot:
    """The settlement contract as one verify reads it: its logs once, its storage per interval.

    The ``Settled`` and ``SettlementEntries`` events are read once over the blocks from the
    contract's deployment block (:meth:`ChainLogReader.deployment_block`; 0, the whole chain,
    where the node keeps no past state) to the head, in a few ``eth_getLogs`` requests, and
    the registry's addresses in one call; :meth:`settled_entries` answers from them, exactly
    what a per-interval read gives (the entries logged in the block of the interval's
    ``Settled`` event). :meth:`settled_batch` answers from the contract's *storage*, not the
    logs (so the batch id and roots are compared with the state), read for every interval
    the events name in JSON-RPC batches, and one by one for any other interval asked.

    Parameters
    ----------
    client : ChainLogReader
        Read access to the settlement contract.
    """

    def __init__(self, client: ChainLogReader) -> None:
        self._client = client
        log = client.settlement_log(client.deployment_block())
        self.from_block = int(log.from_block)
        """First block whose logs were read."""
        self.to_block = int(log.to_block)
        """Last block whose logs were read (the head when read)."""
        self.events = chain_settlements(log.events)
        """Every ``Settled`` event, oldest first."""
        self._entries = {int(k): tuple(v) for k, v in log.entries.items()}
        self._stored = dict(client.settled_batches(e.interval_id for e in self.events))

    def settled_batch(self, interval_id: int) -> OnChainBatch:
        """The batch id and roots the contract stores for ``interval_id`` (its storage)."""
        stored = self._stored.get(interval_id)
        return stored if stored is not None else self._client.settled_batch(interval_id)

    def settled_entries(self, interval_id: int) -> tuple[tuple[str, int, int], ...]:
        """``(address, amount [token units], reward [Wh])`` logged for ``interval_id``."""
        return self._entries.get(interval_id, ())


class StoreView(Protocol):
    """The store's tables an auditor compares a record with (:class:`controller.store.Store`)."""

    def readings_at(self, boundary: int) -> Mapping[Any, Any]:
        """The readings table's snapshot at ``boundary`` [Unix s]."""
        ...

    def settlement(self, interval_id: int) -> dict[str, Any] | None:
        """The settlements table's row of ``interval_id``."""
        ...

    def grid_json(self, grid_hash: str) -> str | None:
        """The pandapower JSON stored under ``grid_hash``."""
        ...

    def result(self, interval_id: int) -> dict[str, Any] | None:
        """The results table's stored result (with its ``book``) of ``interval_id``."""
        ...


def diff_paths(
    ours: object, theirs: object, path: str, limit: int = 5
) -> list[tuple[str, object, object]]:
    """Where two JSON values differ: ``(path, ours, theirs)``, at most ``limit`` of them.

    Objects are compared key by key (``a.b``), lists item by item (``a[3]``); lists of
    objects with an ``order_id``, ``device_id``, ``participant`` or ``bus`` key are matched
    by that key (``orders[o-7].limit_price``).

    Parameters
    ----------
    ours, theirs : object
        JSON values.
    path : str
        The path of both values.
    limit : int
        The most differences returned.

    Returns
    -------
    list of (str, object, object)
        The differing leaves (a missing side is ``None``).
    """
    out: list[tuple[str, object, object]] = []

    def walk(a: object, b: object, where: str) -> None:
        if len(out) >= limit or a == b:
            return
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key), b.get(key), f"{where}.{key}")
            return
        if isinstance(a, list) and isinstance(b, list):
            key = _list_key(a) or _list_key(b)
            if key:
                left = {str(x.get(key)): x for x in a}
                right = {str(x.get(key)): x for x in b}
                for k in sorted(set(left) | set(right)):
                    walk(left.get(k), right.get(k), f"{where}[{k}]")
                return
            if len(a) == len(b):
                for i, (x, y) in enumerate(zip(a, b, strict=True)):
                    walk(x, y, f"{where}[{i}]")
                return
        out.append((where, a, b))

    walk(ours, theirs, path)
    return out


def _list_key(items: list[Any]) -> str:
    if not items or not all(isinstance(x, Mapping) for x in items):
        return ""
    for key in ("order_id", "device_id", "trade_id", "participant", "bus", "branch"):
        if all(key in x for x in items):
            return key
    return ""


def _show(value: object) -> str:
    text = "missing" if value is None else json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _differences(where: str, what: str, ours: object, theirs: object, path: str) -> list[str]:
    return [
        f"{where}: {p}: the record has {_show(a)}, {what} has {_show(b)}"
        for p, a, b in diff_paths(ours, theirs, path)
    ]


def verify_anchored(
    record: Mapping[str, Any],
    *,
    chain: ChainView | None = None,
    tables: StoreView | None = None,
    reclear: Callable[[Mapping[str, Any]], Mapping[str, Any] | None] | None = None,
    signing_domain: tuple[int, str] | None = None,
) -> list[str]:
    """The checks of a self-contained record (``format`` 2) beyond :func:`verify_record`'s.

    1. **anchor**: the record core's hash (:func:`anchor_hash`) is the batch's
       ``record_hash``, which the batch id (recomputed by :func:`verify_record`) commits to;
    2. **chain entries**: the contract's ``SettlementEntries`` for the interval equal the
       batch's amounts and rewarded energy per account, netted per address through the
       record's ``accounts`` (the batch id and roots are compared by :func:`verify_record`);
    3. **parameters**: the batch's tariffs are the record's ``params``;
    4. **tables**: the readings table's snapshots at the interval's two boundaries equal the
       record's readings, the results table's book and result (status, orders, prices,
       trades, grid exchange) the record's, and the settlements table's batch the record's;
    5. **re-clear**: the book cleared again with the recorded parameters on the recorded grid
       (:func:`reclear_recorded`) gives the recorded status, orders, prices, trades, grid
       exchange and AC check (every bus voltage and branch loading). A recorded TIME_LIMIT
       outcome stopped by the wall-clock budget is accepted as what happened;
    6. **signatures**: every signed order's EIP-712 signature verifies, is its participant's
       recorded address, and (with ``signing_domain``) names the audited chain and Settlement
       contract (:func:`controller.intake.check_signed_orders`).

    Parameters
    ----------
    record : mapping
        An anchored audit record.
    chain : ChainView, optional
        Read access to the settlement contract; check 2 is skipped without it.
    tables : StoreView, optional
        The store the record came from; check 4 is skipped without it.
    reclear : callable, optional
        Record -> re-cleared result (JSON form), ``None`` when it cannot re-clear; check 5
        is skipped without it.
    signing_domain : (int, str), optional
        The audited chain's id and Settlement contract's address: every signed order must
        name them in its EIP-712 domain (a signature for another chain or contract is
        refused); without it, only that a record's signed orders share one domain.

    Returns
    -------
    list of str
        One line per difference: the interval, the field (``settlement.amounts[alice]``,
        ``readings_end[pv-1].export_wh_total``, ``params.import_price``) and both values.
    """
    interval = int(record["interval"])
    where = _where(interval)
    problems: list[str] = []
    batch = record.get("settlement") or {}
    if batch:
        recorded = batch.get("record_hash", "")
        actual = anchor_hash(record)
        if recorded != actual:
            problems.append(
                f"{where}: record_hash: the record hashes to {actual}, its batch (and so the "
                f"chain's batch id) commits to {recorded or 'nothing'}: the record was changed"
            )
        params = record.get("params") or {}
        for key in ("import_price", "export_price"):
            if key in params and params[key] != batch.get(key):
                problems.append(
                    f"{where}: params.{key}: {_show(params[key])} in the record's parameters, "
                    f"{_show(batch.get(key))} in its batch (settlement.{key})"
                )
    if chain is not None and batch:
        problems += _check_entries(where, record, chain.settled_entries(interval))
    from controller.intake import check_signed_orders  # noqa: PLC0415 - not in the store's import

    problems += check_signed_orders(record, domain=signing_domain)  # every signature (issue 12)
    if tables is not None:
        problems += _check_tables(where, record, tables)
    if reclear is not None:
        problems += _check_reclear(where, record, reclear)
    return problems


def _check_entries(
    where: str, record: Mapping[str, Any], entries: Iterable[tuple[str, int, int]]
) -> list[str]:
    batch = record.get("settlement") or {}
    accounts = {str(k): str(v).lower() for k, v in (record.get("accounts") or {}).items()}
    if not accounts:
        return [f"{where}: accounts: the record names no chain addresses; entries not compared"]
    want_amount: dict[str, int] = {}
    want_reward: dict[str, int] = {}
    for account, amount in batch.get("amounts", []):
        address = accounts.get(str(account), f"<{account}: no address>")
        want_amount[address] = want_amount.get(address, 0) + int(amount)
    for account, wh in batch.get("rewards", []):
        address = accounts.get(str(account), f"<{account}: no address>")
        want_reward[address] = want_reward.get(address, 0) + int(wh)
    have_amount: dict[str, int] = {}
    have_reward: dict[str, int] = {}
    for address, amount, reward in entries:
        have_amount[str(address).lower()] = int(amount)
        have_reward[str(address).lower()] = int(reward)
    names = {v: k for k, v in accounts.items()}
    problems: list[str] = []
    for what, want, have in (
        ("amounts", want_amount, have_amount),
        ("rewards", want_reward, have_reward),
    ):
        for address in sorted(set(want) | set(have)):
            ours, theirs = want.get(address, 0), have.get(address, 0)
            if ours != theirs:
                name = names.get(address, address)
                problems.append(
                    f"{where}: settlement.{what}[{name}]: the batch has {ours}, the chain's "
                    f"entry for {address} has {theirs}"
                )
    return problems


def _check_tables(where: str, record: Mapping[str, Any], tables: StoreView) -> list[str]:
    from market.codec import reading_to_dict  # noqa: PLC0415 - kept out of the store's import

    interval = int(record["interval"])
    length = int(record["length_s"])
    problems: list[str] = []
    for key, boundary in (("readings_start", interval), ("readings_end", interval + length)):
        stored = [reading_to_dict(r) for r in tables.readings_at(boundary).values()]
        mine = record.get(key) or []
        problems += _differences(
            where, f"the readings table (boundary {boundary})", mine, stored, key
        )
    result_row = tables.result(interval)
    if result_row is not None:
        problems += _differences(
            where, "the results table", record.get("book"), result_row.get("book"), "book"
        )
        for key in ("status", "orders", "prices", "trades", "grid"):
            problems += _differences(
                where,
                "the results table",
                (record.get("result") or {}).get(key),
                result_row.get(key),
                f"result.{key}",
            )
    row = tables.settlement(interval)
    batch = record.get("settlement")
    if row is not None and batch is not None:
        problems += _differences(
            where, "the settlements table", batch, row.get("batch"), "settlement"
        )
    return problems


ABANDONED = "abandoned:"
"""How the reason of an interval abandoned mid-clearing begins (``Cycle._close_abandoned``)."""


def accepted_as_recorded(record: Mapping[str, Any]) -> str:
    """Why a record's outcome is accepted without a re-clear, or ``""``.

    A result with the status ``time_limit`` was stopped by the production wall-clock budget
    (:mod:`controller.grid_clearing`): what happened, which a re-clear (run without the
    budget) is not expected to reproduce. An interval *abandoned* by a controller that died
    while clearing it (grid only, nothing acted on; :meth:`Cycle._close_abandoned
    <controller.cycle.Cycle>`) never had a clearing to reproduce either. Both are part of the
    record's hash, so the chain still commits to them.

    Parameters
    ----------
    record : mapping
        An audit record.

    Returns
    -------
    str
        ``interval ...: accepted as recorded: wall-clock stop (<the recorded reason>)`` (or
        ``abandoned (...)``), or ``""`` for every other outcome (re-cleared and compared).
    """
    result = record.get("result") or {}
    reason = str(result.get("reason", ""))
    where = _where(int(record["interval"]))
    if result.get("status") == "time_limit":
        return f"{where}: accepted as recorded: wall-clock stop ({reason})"
    if result.get("status") == "solver_error" and reason.startswith(ABANDONED):
        return f"{where}: accepted as recorded: abandoned ({reason})"
    return ""


def _check_reclear(
    where: str,
    record: Mapping[str, Any],
    reclear: Callable[[Mapping[str, Any]], Mapping[str, Any] | None],
) -> list[str]:
    stored = dict(record.get("result") or {})
    if accepted_as_recorded(record):
        return []  # stopped by the wall-clock budget: accepted as what happened (module doc)
    again = reclear(record)
    if again is None:
        return [f"{where}: grid_hash: the recorded grid is not in the store; not re-cleared"]
    again = dict(again)
    full_check = record.get("ac_check")
    stored["ac_check"] = full_check
    problems: list[str] = []
    for key in ("status", "orders", "prices", "trades", "grid", "ac_check"):
        problems += [
            f"{where}: result.{p[len('result.') :]}: the record has {_show(a)}, "
            f"re-clearing gives {_show(b)}"
            for p, a, b in diff_paths(stored.get(key), again.get(key), f"result.{key}")
        ]
    return problems


def reclear_recorded(
    record: Mapping[str, Any], grid_json: Callable[[str], str | None]
) -> dict[str, Any] | None:
    """Clear a record's book again with its recorded parameters on its recorded grid.

    Nothing comes from a site file: the grid is the stored pandapower JSON named by
    ``grid_hash`` with the record's ``base_case``, the options are ``params`` (tariffs,
    mechanism, engine, solver settings, time budget), the band ``vm_min_pu``/``vm_max_pu``
    and the AC loop's ``max_iterations``. One record; :class:`Reclearer` re-clears many and
    keeps what they share.

    Parameters
    ----------
    record : mapping
        An anchored audit record.
    grid_json : callable
        ``grid_hash`` -> the stored pandapower JSON (:meth:`controller.store.Store.grid_json`).

    Returns
    -------
    dict or None
        The result in its stored form (:func:`market.codec.result_to_dict`), with the AC
        check's per-bus and per-branch values; ``None`` when the grid is not stored.
    """
    return Reclearer(grid_json)(record)


LINEAR_MODELS_KEPT: Final = 8
"""Linear network models a :class:`Reclearer` keeps (the most recently used)."""


class Reclearer:
    """Re-clears anchored records (:func:`reclear_recorded`), keeping what intervals share.

    A verify re-clears every record, and they share a grid. Parsing its stored pandapower
    JSON was most of a re-clear (~3 of ~3.5 s per interval, measured 2026-12-04), so each
    grid is parsed once per ``grid_hash`` and deep-copied for every new base case; the
    linear network model (:func:`grid_models.linear.build_linear_grid`, corrected at the
    interval's AC base case) is kept for the last :data:`LINEAR_MODELS_KEPT` keys of grid
    hash, base case (its content hash) and voltage band. Neither changes a result: a deep
    copy of a parsed net is the net parsed again (the base case is then set as
    :func:`grid_models.grids.join_base_case` sets it), PeerGrid never changes a grid's net
    (every what-if runs on a copy), and the model's AC checker restarts every power flow from
    the base case's solution, bit for bit, which is also how the cycle reuses one model for
    the clears of an interval.

    Parameters
    ----------
    grid_json : callable
        ``grid_hash`` -> the stored pandapower JSON (:meth:`controller.store.Store.grid_json`).
    """

    def __init__(self, grid_json: Callable[[str], str | None]) -> None:
        self._grid_json = grid_json
        self._templates: dict[str, Any] = {}  # grid_hash -> Grid without a base case set
        self._models: dict[tuple[str, str, float, float], tuple[Any, Any]] = {}
        self.parsed = 0
        """Grids parsed from their JSON so far (one per distinct ``grid_hash``)."""
        self.models_built = 0
        """Linear network models built so far."""

    def __call__(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """Re-clear one record (as :func:`reclear_recorded`).

        Parameters
        ----------
        record : mapping
            An anchored audit record.

        Returns
        -------
        dict or None
            The re-cleared result in its stored form; ``None`` when the grid is not stored.
        """
        import dataclasses  # noqa: PLC0415 - the clearing stack is heavy; only an auditor needs it

        from controller.grid_clearing import (  # noqa: PLC0415
            clear_on_grid,
            reclear_options,
            recorded_loss_basis,
        )
        from grid_models.errors import GridModelError  # noqa: PLC0415
        from market.clearing import ClearingOptions, empty_result  # noqa: PLC0415
        from market.codec import result_to_dict  # noqa: PLC0415
        from market.domain import ClearingStatus, Interval  # noqa: PLC0415
        from market.orderbook import parse_order_rows  # noqa: PLC0415

        grid_hash = str(record.get("grid_hash") or "")
        params = dict(record.get("params") or {})
        base_case = dict(record.get("base_case") or {})
        spec = str(params.get("grid"))
        template = self._template(grid_hash, spec) if grid_hash else None
        if template is None:
            return None
        vm_band = (float(params["vm_min_pu"]), float(params["vm_max_pu"]))
        key = (grid_hash, content_hash(base_case), *vm_band)
        kept = self._models.pop(key, None)
        grid = kept[0] if kept is not None else _with_base_case(template, base_case, spec)
        interval = Interval.from_id(int(record["interval"]), int(record["length_s"]))
        book = parse_order_rows(
            (record.get("book") or {}).get("orders", []), interval, set(grid.bus_names)
        )
        if not len(book):
            return result_to_dict(
                empty_result(book, ClearingStatus.NO_CROSSING, "no orders this interval")
            )
        names = {f.name for f in dataclasses.fields(ClearingOptions)}
        # no wall-clock budget, the recorded iteration limits (grid_clearing.reclear_options)
        options, _ = reclear_options(
            ClearingOptions(**{k: v for k, v in params.items() if k in names}), params
        )
        try:
            linear = kept[1] if kept is not None else self._build(grid, *vm_band)
            self._keep(key, grid, linear)
            result = clear_on_grid(
                grid,
                linear,
                book,
                options,
                max_iterations=int(params["max_iterations"]),
                loss_basis=recorded_loss_basis(params),
            )
        except GridModelError as exc:
            result = empty_result(
                book, ClearingStatus.INFEASIBLE, f"grid model failed: {exc}; fallback: grid only"
            )
        return result_to_dict(result)

    def _template(self, grid_hash: str, spec: str) -> Any:  # noqa: ANN401 - a Grid
        if grid_hash not in self._templates:
            from grid_models.grids import join_base_case  # noqa: PLC0415

            text = self._grid_json(grid_hash)
            if text is None:
                return None
            self._templates[grid_hash] = join_base_case(text, {}, spec)
            self.parsed += 1
        return self._templates[grid_hash]

    def _build(self, grid: Any, vm_min_pu: float, vm_max_pu: float) -> Any:  # noqa: ANN401
        from grid_models.linear import build_linear_grid  # noqa: PLC0415

        self.models_built += 1
        return build_linear_grid(grid, vm_min_pu=vm_min_pu, vm_max_pu=vm_max_pu)

    def _keep(self, key: tuple[str, str, float, float], grid: Any, linear: Any) -> None:  # noqa: ANN401
        self._models[key] = (grid, linear)  # most recently used last
        while len(self._models) > LINEAR_MODELS_KEPT:
            self._models.pop(next(iter(self._models)))


def _with_base_case(template: Any, injections: Mapping[str, Any], spec: str) -> Any:  # noqa: ANN401
    """A deep copy of ``template`` (a Grid) with a record's base case set.

    The same steps and checks as :func:`grid_models.grids.join_base_case` after its parse.
    """
    from grid_models.errors import InvalidGrid  # noqa: PLC0415
    from grid_models.grids import Grid  # noqa: PLC0415

    net = template.copy().net
    for key, rows in injections.items():
        table_name, _, column = str(key).partition(".")
        table = getattr(net, table_name, None)
        if table is None or column not in table:
            msg = f"{spec}: the base case names {key}, which the grid does not have"
            raise InvalidGrid(msg)
        index = [int(i) for i, _ in rows]
        if not set(index) <= set(table.index):
            msg = f"{spec}: the base case names {table_name} elements the grid does not have"
            raise InvalidGrid(msg)
        table.loc[index, column] = [float(v) for _, v in rows]
    return Grid(spec, net)


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
        batch.get("record_hash", ""),
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
    if reclear is not None and not accepted_as_recorded(record):  # a wall-clock stop: as is
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
    *,
    chain: ChainView | None = None,
    tables: StoreView | None = None,
    reclear_anchored: Callable[[Mapping[str, Any]], Mapping[str, Any] | None] | None = None,
    signing_domain: tuple[int, str] | None = None,
    governed_at: Callable[[str, int], Mapping[str, int]] | None = None,
    device_key_at: KeyAt | None = None,
) -> dict[str, Any]:
    """Verify stored audit rows and summarise.

    Records of :data:`RECORD_FORMAT` get :func:`verify_anchored` besides
    :func:`verify_record` and are re-cleared with ``reclear_anchored`` (their recorded
    parameters and grid); older records keep their rule (``reclear``: the site's).
    With ``chain``, an interval the chain has not settled (an intent not sent yet) is not
    compared with it (:func:`compare_with_chain` reports records that claim a settlement).

    Parameters
    ----------
    records : iterable of mapping
        Audit rows (``{"record": ...}``) or bare records.
    settled_batch, reclear : callable, optional
        As for :func:`verify_record`.
    chain, tables : optional
        As for :func:`verify_anchored`; ``chain`` also stands for ``settled_batch``.
    reclear_anchored : callable, optional
        Re-clears an anchored record (:func:`reclear_recorded`).
    signing_domain : (int, str), optional
        As for :func:`verify_anchored`.
    governed_at : callable, optional
        ``(registry, block) -> values by name``: the community's registry read at a block
        (issue 16); records with ``params.governance`` are checked against it
        (:func:`verify_governance`).
    device_key_at : callable, optional
        The device key registry read at a block (:data:`KeyAt`, issue 17); the signed
        readings of records settled under a signing policy are verified again against it
        (:func:`verify_signed_readings`).

    Returns
    -------
    dict
        ``records`` (count), ``verified`` (count without problems), ``problems`` (list),
        ``accepted`` (list: outcomes accepted as recorded without a re-clear,
        :func:`accepted_as_recorded`) and ``unverified`` (list: each UNVERIFIED reading
        with its interval, device and reason; with ``device_key_at``).
    """
    problems: list[str] = []
    unverified: list[str] = []
    accepted: list[str] = []
    n = verified = 0
    previous: Mapping[str, Any] | None = None
    for row in records:
        record = row.get("record", row)
        n += 1
        interval = int(record["interval"])
        on_chain = settled_batch
        if chain is not None:
            settled = chain.settled_batch(interval)
            on_chain = None if not any(settled.batch_id) else (lambda _i, b=settled: b)
        if int(record.get("format") or 1) >= RECORD_FORMAT:
            found = verify_record(record, on_chain, None)
            found += verify_anchored(
                record,
                chain=chain if on_chain is not None else None,
                tables=tables,
                reclear=reclear_anchored,
                signing_domain=signing_domain,
            )
        else:
            found = verify_record(record, on_chain, reclear)
        if governed_at is not None:
            found += verify_governance(record, governed_at)
        found += verify_gate_chain(previous, record)
        previous = record
        if device_key_at is not None:
            signed_problems, named = verify_signed_readings(record, device_key_at)
            found += signed_problems
            unverified += named
        stored_hash = row.get("record_hash")
        if (
            stored_hash is not None
            and stored_hash != content_hash(record_core(record))
            and stored_hash != content_hash(record)  # a record of an earlier release, hashed whole
        ):
            found.append(
                f"{_where(interval)}: record_hash: the audit table's stored record hash "
                f"{stored_hash} is not the record's"
            )
        problems.extend(found)
        verified += not found
        if reclear is not None or reclear_anchored is not None:
            accepted.append(accepted_as_recorded(record))
    return {
        "records": n,
        "verified": verified,
        "problems": problems,
        "accepted": [line for line in accepted if line],  # wall-clock stops, not re-cleared
        "unverified": unverified,
    }


KeyAt = Callable[[str, str, str, int], bytes | None]
"""``key_at(registry, owner, device_id, block)``: the device's public key in force at the end of
``block`` in the ``DeviceKeys`` registry (64 bytes), ``None`` for none (never registered, or
revoked) (:func:`controller.wiring.registry_key_reader`)."""


def verify_signed_readings(record: Mapping[str, Any], key_at: KeyAt) -> tuple[list[str], list[str]]:
    """Check a record's signed readings again, and name its unverified ones (issue 17).

    For a record settled under a signing policy (``params.reading_signatures``): every
    reading recorded OK from a signing device must verify now, as the controller did, with
    the key the registry held for its participant's account at the block the record names
    (``device_keys``): its signature, device id, time within ``max_reading_age_s`` of its
    boundary, and a sequence that rises from the interval's start to its end; its recorded
    power, counters and time must be the signed ones. Under ``required`` no OK reading may
    be unsigned. The settlement must agree with the readings' qualities: a participant with
    an UNVERIFIED reading is rewarded nothing, its line says why and its penalty is
    :func:`market.settlement.unverified_penalty`'s. Records of earlier releases (no policy)
    pass.

    Returns
    -------
    tuple of (list of str, list of str)
        Problems (a record that claims more than its signatures prove, or settles against
        its readings), and one line per UNVERIFIED reading with its interval, device and
        reason (not a problem: the record states it and settles it as rule 4b says) and per
        unsigned reading of a site where signing is optional (rule 4c: no reward).
    """
    params = record.get("params") or {}
    policy = str(params.get("reading_signatures", ""))
    if not policy:
        return [], []
    interval = Interval.from_id(int(record["interval"]), int(record["length_s"]))
    where = _where(interval.interval_id)
    keys = record.get("device_keys") or {}
    accounts = record.get("accounts") or {}
    max_age_ms = int(params.get("max_reading_age_s", 0)) * 1000
    problems: list[str] = []
    unverified: list[str] = []
    failed: set[str] = set()
    seqs: dict[str, list[int]] = {}
    for side, boundary, block_key in (
        ("readings_start", interval.start, "start_block"),
        ("readings_end", interval.end, "end_block"),
    ):
        for r in record.get(side) or []:
            device, quality = str(r["device_id"]), str(r["quality"])
            if quality == ReadingQuality.UNVERIFIED.value:
                failed.add(str(r["participant"]))
                unverified.append(f"{where}: {device} at {utc_label(boundary)}: {r['reason']}")
                continue
            if quality != ReadingQuality.OK.value:
                continue
            if r.get("signed") is None:
                if policy == "required":
                    problems.append(
                        f"{where}: {device} at {utc_label(boundary)}: recorded as verified "
                        "without a signature, but the site requires signatures"
                    )
                else:  # a legacy meter (rule 4c): settled by its counters, never rewarded
                    unverified.append(
                        f"{where}: {device} at {utc_label(boundary)}: unsigned (signing "
                        "optional): settled by its counters, no reward"
                    )
                continue
            found, signed = _check_signed(r, keys.get("registry"), accounts, keys.get(block_key))
            if signed is not None:
                verdict = check_reading(
                    signed,
                    device_id=device,
                    public_key=key_at(
                        str(keys["registry"]),
                        str(accounts[r["participant"]]),
                        device,
                        int(keys[block_key]),
                    ),
                    last_seq=None,
                    boundary_ms=int(boundary.timestamp()) * 1000,
                    max_age_ms=max_age_ms,
                )
                found = verdict.reason
                seqs.setdefault(device, []).append(signed.payload.seq)
            if found:
                problems.append(
                    f"{where}: {device} at {utc_label(boundary)}: recorded as verified, but {found}"
                )
    for device, pair in sorted(seqs.items()):
        if len(pair) == 2 and pair[1] <= pair[0]:
            problems.append(
                f"{where}: {device}: its sequence does not rise over the interval ({pair[0]} -> "
                f"{pair[1]})"
            )
    problems += _settled_as_read(where, record.get("settlement"), failed)
    return problems, unverified


def _check_signed(
    r: Mapping[str, Any],
    registry: object,
    accounts: Mapping[str, Any],
    block: object,
) -> tuple[str, SignedReading | None]:
    """A recorded signed reading, parsed, if it can be checked; else why not (and ``None``)."""
    try:
        signed = SignedReading.from_ocmf(r["signed"])
    except InvalidQuantity as exc:
        return f"its signed form is malformed: {exc}", None
    p = signed.payload
    recorded = (r["import_wh_total"], r["export_wh_total"], r["p_w"], r["measured_at"])
    if recorded != (
        p.import_wh_total,
        p.export_wh_total,
        p.p_w,
        p.measured_at.isoformat(),
    ):
        return "its recorded values are not the ones it signed", None
    if not registry or block is None:
        return "the record names no device key registry block", None
    if r["participant"] not in accounts:
        return f"the record names no account of {r['participant']}", None
    return "", signed


def _settled_as_read(where: str, batch: Mapping[str, Any] | None, failed: set[str]) -> list[str]:
    """Problems of a settlement that ignores its UNVERIFIED readings (rule 4b)."""
    if not batch:
        return []
    problems: list[str] = []
    rewarded = sorted({str(p) for p, _ in batch.get("rewards", [])} & failed)
    if rewarded:
        problems.append(f"{where}: rewarded despite unverified readings: {', '.join(rewarded)}")
    bps = int(batch.get("unverified_penalty_bps", 0))
    for line in batch.get("lines", []):
        p = str(line["participant"])
        if p not in failed:
            continue
        if not line.get("unverified"):
            problems.append(f"{where}: {p} is settled as verified despite unverified readings")
        want = unverified_penalty(int(line["cleared_buy_wh"]), int(batch["import_price"]), bps)
        if int(line.get("penalty_amount", 0)) != want:
            problems.append(
                f"{where}: {p}'s penalty is {line.get('penalty_amount', 0)}, want {want}"
            )
    return problems


def _cleared(record: Mapping[str, Any]) -> bool:
    """Whether ``record``'s interval was cleared (not abandoned: its inputs are the clearing's)."""
    result = record.get("result") or {}
    return not str(result.get("reason", "")).startswith(ABANDONED)


def verify_gate_chain(previous: Mapping[str, Any] | None, record: Mapping[str, Any]) -> list[str]:
    """Check that ``record``'s book closed at the gate closure the interval before announced.

    A clearing records the gate closure of its own interval (``params.gate_closure_s``) and
    the one in force for the intervals after it (``params.next_gate_closure_s``: the
    community's governed value read then, checked against the registry by
    :func:`verify_governance`, or the site file's). For two consecutive cleared intervals the
    later one's must be the earlier one's ``next``: a controller cannot move a gate closure
    that its own earlier record (and the registry) fixed. Records of earlier releases, without
    ``next_gate_closure_s``, pass.

    Returns
    -------
    list of str
        Problems, naming the interval.
    """
    if previous is None or not (_cleared(previous) and _cleared(record)):
        return []
    before = previous.get("params") or {}
    params = record.get("params") or {}
    if "next_gate_closure_s" not in before or "gate_closure_s" not in params:
        return []
    if int(record["interval"]) != int(previous["interval"]) + int(previous["length_s"]):
        return []
    want, got = int(before["next_gate_closure_s"]), int(params["gate_closure_s"])
    if got == want:
        return []
    return [
        f"{_where(int(record['interval']))}: gate closure: its book closed {got} s before its "
        f"start, but the interval before set {want} s for it"
    ]


def verify_governance(
    record: Mapping[str, Any], governed_at: Callable[[str, int], Mapping[str, int]]
) -> list[str]:
    """Check a record's governed terms against the community's registry (issue 16).

    For a record whose ``params`` hold ``governance``: the registry at the recorded block
    holds exactly the recorded values; the site's tariffs moved into those bounds, the fee
    (:func:`market.governance.apply_governed`) and the gate closure of the intervals after
    it (:func:`market.governance.governed_gate_closure`) are what was applied, what the
    clearing used (``params``) and what the settlement charged (its ``community_fee_bps``, and each
    seller's ``fee_amount`` recomputed from the recorded trades,
    :func:`market.settlement.community_fees`). Records without governance pass.

    Returns
    -------
    list of str
        Problems, each naming the interval.
    """
    params = record.get("params") or {}
    governance = params.get("governance")
    if not governance:
        return []
    where = _where(int(record["interval"]))
    problems: list[str] = []
    if "values" not in governance:  # never read: the site's terms and no fee were applied
        applied = governance.get("applied") or {}
        if applied.get("community_fee_bps", 0):
            problems.append(f"{where}: governance: a fee applied without a registry read")
        kept = applied.get("next_gate_closure_s", params.get("gate_closure_s"))
        if kept != params.get("gate_closure_s"):
            problems.append(f"{where}: governance: the gate closure moved without a registry read")
        return problems
    recorded = {name: int(v["value"]) for name, v in governance["values"].items()}
    on_chain = dict(governed_at(str(governance["registry"]), int(governance["block"])))
    if on_chain != recorded:
        problems.append(
            f"{where}: governance: the registry at block {governance['block']} holds "
            f"{on_chain}, the record {recorded}"
        )
    site = governance.get("site") or {}
    terms = apply_governed(int(site["import_price"]), int(site["export_price"]), on_chain)
    want: dict[str, int] = {
        "import_price": terms.import_price,
        "export_price": terms.export_price,
        "community_fee_bps": terms.community_fee_bps,
    }
    if "gate_closure_s" in site:  # recorded since the governed gate closure is enforced
        want["next_gate_closure_s"], _ = governed_gate_closure(
            int(site["gate_closure_s"]), int(site["interval_s"]), on_chain
        )
    if governance.get("applied") != want:
        problems.append(f"{where}: governance: applied {governance.get('applied')}, want {want}")
    used = {k: params.get(k) for k in want}
    if used != want:
        problems.append(f"{where}: governance: cleared with {used}, want {want}")
    batch = record.get("settlement")
    if batch:
        fee = int(batch.get("community_fee_bps", 0))
        if fee != terms.community_fee_bps:
            problems.append(
                f"{where}: governance: settled with a {fee} bps fee, want {terms.community_fee_bps}"
            )
        result = result_from_dict(
            record["result"], Interval.from_id(int(record["interval"]), int(record["length_s"]))
        )
        fees = community_fees(result, terms.community_fee_bps)
        charged = {ln["participant"]: int(ln.get("fee_amount", 0)) for ln in batch["lines"]}
        charged = {p: f for p, f in charged.items() if f}
        if charged != {str(p): f for p, f in fees.items()}:
            problems.append(f"{where}: governance: fees charged {charged}, want {dict(fees)}")
    return problems


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
