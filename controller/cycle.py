"""The interval cycle: read -> decide -> write, then settle and audit (OpenEMS ``CycleWorker``).

One *tick* runs at each interval boundary ``t`` (the end of interval ``T-1`` and the start of
``T``):

1. **read**: every device is read once into a snapshot (a dead device is a MISSING reading,
   never an exception) and the snapshot is stored;
2. **settle on paper**: every interval that has ended and has a recorded outcome but no
   settlement yet (normally ``T-1``; older ones after a missed boundary or a crash) is settled
   from its two boundary snapshots (:func:`market.settlement.settle`); a missing snapshot makes
   its participants unmetered (settled as cleared, flagged). Each batch is committed to the
   database as an *intent* now, before anything else can fail, together with the interval's
   audit record (one transaction: no interval is ever sent without its record);
3. **decide**: interval ``T`` is claimed (never cleared twice), its orders are built from
   standing orders and the forecast, cleared on the feeder with the AC check loop, and
   setpoints are derived. Any failure here becomes a recorded *grid only* outcome with its
   reason, never an exception out of the tick;
4. **write**: the result is committed, then setpoints go to the devices, all in one phase
   (each write read back; a refused write is recorded); then every pending settlement intent
   (this tick's, and any that failed before) is sent to the chain (exactly once: the client
   asks the chain first, the contract refuses a second settlement);
5. **audit**: the record of each interval (inputs' hashes, result, AC check, readings,
   batch, Merkle roots) was stored with its intent in step 2; its chain part (transaction,
   block, gas) is filled in with the receipt, in the transaction that marks it settled. A
   settlement whose arithmetic failed gets a record naming the error here.

**Crash points** (:mod:`controller.crash`): ``after_read``, ``after_intent``,
``after_clear``, ``after_save_result``, ``after_setpoints``, ``after_send``,
``after_confirm``, ``after_record`` and ``startup_reconcile`` let a kill test stop the
process at each step (only when ``PEERGRID_CRASH_AT`` names one).

**Re-checking recent settlements.** A reorganisation deeper than the site's finality depth
(``confirmations``) can drop a settlement already recorded as final. At every tick (before
anything is settled on paper) and at start-up (:meth:`Cycle.resume_pending`), each settlement
recorded in the last :attr:`Cycle.recheck_blocks` blocks is compared with the chain (the
contract's ``settled_block`` and batch id for the interval). One the chain no longer has at
its recorded block with its batch id goes back to ``intent``, its reason recorded and its
audit record's chain part cleared in the same database transaction (a warning is logged),
and is sent again with the other intents: the contract refuses a second settlement of an
interval, and the chain adapter reports one that merely moved to another block as
``already_settled`` with its new receipt.

An interval claimed by a controller that died before recording its result is closed as
``abandoned`` (nothing was acted on) at the next tick. Each interval therefore ends with
exactly one recorded outcome and its reason, and each recorded outcome is settled once.

Clearing uses the site's pricing ``mechanism`` and ``engine`` (:attr:`Cycle.options`); an
auditor's re-clearing (:meth:`Cycle.reclear`) prices with the mechanism the record names.

**Gate closure.** The order book of ``T`` is frozen at ``T.start - gate_closure_s``
(:meth:`Cycle.gate_closure`, reported as :attr:`IntervalReport.gate_closure`), the site
file's value or, with community governance, the governed one that was in force when the
interval before ``T`` was cleared (:attr:`Cycle.gate_closure_s`; each record states both its
own and the next one's, ``params.gate_closure_s`` and ``params.next_gate_closure_s``): an order that
arrives later is not part of ``T``'s book. Today every order is built by the cycle itself from
the participants' standing orders (fixed in the site file, so known before any gate closure)
and the latest readings; the signed orders of the HTTP API are the ones the rule will be
enforced on. With ``gate_closure_s = 0`` the tick at ``T.start`` clears ``T`` (steps 1-5
above, in that order). With ``gate_closure_s > 0`` the scheduler (:mod:`controller.scheduler`)
clears ``T`` at its gate closure, before ``T`` starts, with :meth:`Cycle.clear_at_gate` (a
fresh read of the devices, then steps 3 and 4's result and setpoints, so setpoints are in
place when ``T`` begins), and the tick at ``T.start`` only reads, settles and audits
(``clear_next=False``); an interval whose gate closure passed while no controller ran is
recorded as not cleared, grid only (:meth:`Cycle.close_missed`), and settled as such.

**Metering.** Settlement meters each participant by the roles of its devices
(:class:`~market.domain.MeterRole`, :mod:`market.metering`): its connection-point meters where
it has any, else the sum of its generation, load and storage devices.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol, runtime_checkable

from adapters.errors import AdapterError
from adapters.modbus.polling import poll_all
from controller.audit import ABANDONED, RECORD_FORMAT, anchor_hash, software_versions
from controller.bidding import (
    Forecaster,
    Plan,
    cap_by_credit,
    clear_with_export_steps,
    describe_network,
    plan_orders,
    setpoints_for,
)
from controller.config import SiteConfig
from controller.controls import MarketControls, filter_plan
from controller.crash import crash_point
from controller.errors import NotOnBoundary
from controller.grid_clearing import (
    LOSS_BASIS,
    MAX_ITERATIONS,
    clear_on_grid,
    reclear_options,
    recorded_loss_basis,
)
from controller.intake import signed_book, signed_evidence
from controller.store import Store
from grid_models.errors import GridModelError
from grid_models.grids import Grid, split_base_case
from grid_models.linear import LinearGrid, build_linear_grid
from market.canonical import content_hash
from market.clearing import ClearingOptions, empty_result
from market.codec import (
    batch_from_dict,
    batch_to_dict,
    book_to_dict,
    reading_to_dict,
    result_from_dict,
    result_to_dict,
    setpoint_to_dict,
    timings_of,
)
from market.domain import (
    COMMUNITY,
    ClearingResult,
    ClearingStatus,
    DeviceId,
    Interval,
    MeterReading,
    MeterRole,
    OrderBook,
    ParticipantId,
    ReadingQuality,
    Setpoint,
    SettlementBatch,
    Tariffs,
    require_utc,
    utc_label,
)
from market.errors import MarketError
from market.governance import GovernedValues, Terms, apply_governed, governed_gate_closure
from market.metering import Meter
from market.orderbook import build_order_book, parse_order_rows
from market.settlement import apply_debts, settle
from market.signed_readings import check_reading
from market.units import PricePerKwh

log = logging.getLogger("peergrid.cycle")


class Reader(Protocol):
    """Reads one device; never raises for device trouble (MISSING instead)."""

    def read(self, now: datetime) -> MeterReading:
        """Read the device at ``now``.

        Parameters
        ----------
        now : datetime
            The boundary the reading belongs to (UTC); older readings are STALE.
        """
        ...


class WriteOutcome(Protocol):
    """What a device write reports."""

    @property
    def ok(self) -> bool:
        """Whether the value was written and read back."""
        ...

    @property
    def reason(self) -> str:
        """Why not, when not ok."""
        ...


class Writer(Protocol):
    """Writes setpoints to one device (allow-listed, range-checked, read back)."""

    def write(self, setpoint: Setpoint) -> WriteOutcome:
        """Write ``setpoint``.

        Parameters
        ----------
        setpoint : Setpoint
            The device's setpoint for the interval (``p_w`` [W]).
        """
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceKeysAt:
    """The device keys in force at one block of the registry (issue 17).

    ``keys`` maps each signing device to its public key (64 bytes ``X || Y``), ``None`` for
    a device with no key in force (never registered, or revoked).
    """

    registry: str
    block: int
    keys: Mapping[DeviceId, bytes | None]


class DeviceKeySource(Protocol):
    """Reads the device keys in force now (:func:`controller.wiring.device_key_source`)."""

    @property
    def registry(self) -> str:
        """The registry's address."""
        ...

    def __call__(self) -> DeviceKeysAt:
        """The keys at the registry's latest block.

        Raises
        ------
        AdapterError
            The registry cannot be read (the readings are then UNVERIFIED, with the reason).
        """
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainOutcome:
    """A settlement as the chain saw it (``rewards_minted`` [reward units], from its event)."""

    tx_hash: str
    block_number: int
    gas_used: int
    status: str
    rewards_minted: int = 0


class Settler(Protocol):
    """Sends a settlement batch to the chain, exactly once per interval."""

    def submit(self, batch: SettlementBatch) -> ChainOutcome:
        """Settle ``batch``; if the chain already has the interval, report it, send nothing.

        Parameters
        ----------
        batch : SettlementBatch
            The interval's settlement (amounts [token units]).
        """
        ...


RECHECK_BLOCKS: Final = 64
"""Default window of the settlement re-check [blocks]: 64 blocks is two Ethereum epochs,
the depth at which proof-of-stake finalises, and at one block per interval on a dev node
64 intervals."""


@runtime_checkable
class SettlementView(Protocol):
    """What the chain says about settled intervals (the re-check of recent settlements)."""

    def block_number(self) -> int:
        """The chain's latest block number."""
        ...

    def settled_on_chain(self, interval_id: int) -> tuple[int, str]:
        """The block that settled ``interval_id`` and its batch id; ``(0, "")`` if none.

        Parameters
        ----------
        interval_id : int
            The interval [Unix s].
        """
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class IntervalReport:
    """What happened when interval ``T`` was cleared.

    ``gate_closure`` is when ``T``'s order book was frozen (UTC; see the module docstring),
    ``wall_s`` the clearing's duration [s].
    """

    interval: Interval
    gate_closure: datetime
    book: OrderBook
    result: ClearingResult
    setpoints: tuple[Setpoint, ...]
    write_failures: tuple[str, ...]
    skipped: tuple[str, ...]
    wall_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementReport:
    """What happened when interval ``T-1`` was settled."""

    interval: Interval
    batch: SettlementBatch | None
    outcome: ChainOutcome | None
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TickReport:
    """One boundary's work."""

    boundary: datetime
    readings_ok: int
    readings_missing: tuple[str, ...]
    cleared: IntervalReport | None
    settlements: tuple[SettlementReport, ...] = ()

    @property
    def settled(self) -> SettlementReport | None:
        """The settlement of the interval that ended at this boundary, if any."""
        ended = int(self.boundary.timestamp())
        for report in self.settlements:
            if report.interval.next().interval_id == ended:
                return report
        return None


@dataclass(eq=False)
class Cycle:
    """The controller's interval cycle for one site (see the module docstring).

    ``base_grid_for(interval)`` returns the feeder with its inflexible base case for that
    interval (e.g. a SimBench time step, or the grid's loads scaled by a profile).
    ``options`` are the clearing's tariffs [token units / kWh], wall-clock budget [s] (a stop
    it causes is recorded as TIME_LIMIT; :meth:`reclear` runs without it), HiGHS's iteration
    limits, pricing mechanism and engine, all from the site.

    ``recheck_blocks`` is the window of the re-check of recent settlements [blocks]
    (:meth:`recheck_settled`; 0 turns it off). The chain is read through the settler when
    it is a :class:`SettlementView`, else through the chain client it wraps (its
    ``client``); with neither, nothing is re-checked.

    ``controls`` are the operator's site actions (:mod:`controller.controls`: pause,
    exclusions); the orders they take out of an interval's market are named in its
    ``skipped`` and the actions applied go into its record (``controls``).

    ``fence`` is called right before each settlement transaction is sent and each setpoint
    is written; it raises (:class:`~controller.errors.LostSite`) when this process no longer
    holds the site (``peergrid worker``: :mod:`controller.fleet`), and nothing is sent or
    written then.

    ``governed()`` reads the community's governed values (:class:`~market.governance.
    GovernedValues`, issue 16) when an interval is cleared: the site's tariffs are moved
    into the governed bounds and the governed community fee is charged when the interval
    is settled (:meth:`terms_for`), and a governed gate closure applies to the intervals
    after it (:attr:`gate_closure_s`); the record's ``params.governance`` names the
    registry, block, values and the proposals that set them. ``None``: a site without
    governance.

    ``lift_expired_pause()`` is called at each boundary before the settlements are sent: it
    lifts the community guardian's emergency pause once its governed hours have run out
    (``True`` if it did), so settlements held back by the pause go out at the first boundary
    after it expired. ``None``: no guardian.

    ``linear_grid(grid, vm_min_pu, vm_max_pu)`` builds the market's network model of a base
    case (default :func:`~grid_models.linear.build_linear_grid`, built afresh each clearing)
    and ``split_grid`` splits a base case for its audit record (default
    :func:`~grid_models.grids.split_base_case`); :mod:`controller.wiring` passes cached ones,
    which sites sharing a base case share.
    """

    site: SiteConfig
    store: Store
    base_grid_for: Callable[[Interval], Grid]
    readers: Mapping[DeviceId, Reader]
    writers: Mapping[DeviceId, Writer]
    settler: Settler | None
    forecaster: Forecaster | None = None
    recheck_blocks: int = RECHECK_BLOCKS
    controls: MarketControls | None = None
    fence: Callable[[], None] | None = None
    linear_grid: Callable[[Grid, float, float], LinearGrid] | None = None
    split_grid: Callable[[Grid], tuple[str, dict[str, Any]]] = split_base_case
    governed: Callable[[], GovernedValues] | None = None
    lift_expired_pause: Callable[[], bool] | None = None
    device_keys: DeviceKeySource | None = None
    options: ClearingOptions = field(init=False)
    _applied: dict[int, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _terms: dict[int, tuple[Terms, dict[str, Any] | None]] = field(
        default_factory=dict, init=False, repr=False
    )
    _last_governed: GovernedValues | None = field(default=None, init=False, repr=False)
    _gates: dict[int, tuple[int, int]] = field(default_factory=dict, init=False, repr=False)
    _last_keys: DeviceKeysAt | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.options = ClearingOptions(
            import_price=self.site.import_price,
            export_price=self.site.export_price,
            time_limit_s=self.site.solver_time_limit_s,
            mechanism=self.site.mechanism,
            engine=self.site.engine,
        )

    @property
    def gate_closure_s(self) -> int:
        """The gate closure of the intervals not yet cleared [s].

        The site file's ``gate_closure_s``, or the community's governed one once a clearing
        has read it: a value executed by a vote is read when the next interval is cleared and
        applies to the intervals after it (:meth:`controller.store.Store.gate_closure_in_force`,
        the value the latest clearing recorded as ``next_gate_closure_s``). The scheduler, the
        order intake and the status pages all go by it.
        """
        return self.store.gate_closure_in_force(self.site.gate_closure_s, self.site.interval_s)

    def gate_closure(self, interval: Interval) -> datetime:
        """When ``interval``'s order book is frozen: ``start - gate_closure_s`` (UTC).

        The gate closure in force when ``interval`` was cleared (by this controller), else
        the one in force now (:attr:`gate_closure_s`).

        Parameters
        ----------
        interval : Interval
            The interval whose orders are traded.

        Returns
        -------
        datetime
            The gate closure; orders arriving after it are not part of the interval's book.
        """
        in_force = self._gates.get(interval.interval_id)
        lead = self.gate_closure_s if in_force is None else in_force[0]
        return interval.start - timedelta(seconds=lead)

    def meters(self) -> dict[ParticipantId, list[Meter]]:
        """Every participant's metering devices and their roles (the settlement roster).

        Returns
        -------
        dict of ParticipantId to list of Meter
            Per participant (all of them, a participant without devices with an empty
            list), its devices in site-file order with their ``role``.
        """
        return {
            p.id: [Meter(d.id, MeterRole(d.role)) for d in self.site.devices_of(p.id)]
            for p in self.site.participants
        }

    # -------------------------------------------------------------------------- phases
    def read_all(self, now: datetime) -> dict[DeviceId, MeterReading]:
        """Read every device once, concurrently (the process image).

        Parameters
        ----------
        now : datetime
            The boundary the readings belong to (UTC).

        Returns
        -------
        dict of DeviceId to MeterReading
            One reading per device; a dead device gives a MISSING reading.
        """
        return poll_all(self.readers, now)

    def verify_readings(
        self, snapshot: Mapping[DeviceId, MeterReading], boundary: datetime
    ) -> tuple[dict[DeviceId, MeterReading], DeviceKeysAt | None]:
        """The boundary's snapshot with every signed reading checked (issue 17).

        A device with a ``signed_block`` whose OK reading fails
        :func:`market.signed_readings.check_reading` (its key in the registry now, the last
        sequence number accepted from it, ``max_reading_age_s`` around ``boundary``)
        becomes ``UNVERIFIED`` with the reason. If the registry cannot be read, the keys of its
        last read apply (the record names that read's block): a node's outage is nobody's
        failure to prove; before any read, or with no registry configured, every signed
        reading is UNVERIFIED with the reason. An unsigned device stays as read under
        ``reading_signatures = "optional"`` and is UNVERIFIED under ``"required"``. Readings
        that are not OK (MISSING, STALE) are left as they are.

        Returns
        -------
        tuple of (dict, DeviceKeysAt or None)
            The snapshot, and the keys it was verified against (``None``: none were read).
        """
        signing = {d.id for d in self.site.devices if d.signed_block is not None}
        required = self.site.reading_signatures == "required"
        if not signing and not required:
            return dict(snapshot), None
        keys: DeviceKeysAt | None = None
        why = "no device key registry is configured ([chain] device_keys_address)"
        if signing and self.device_keys is not None:
            try:
                keys = self._last_keys = self.device_keys()
            except AdapterError as exc:
                why = f"the device key registry cannot be read: {type(exc).__name__}: {exc}"
                keys = self._last_keys
                log.warning(
                    "keys for the readings of %s not read: %s; %s",
                    utc_label(boundary),
                    why,
                    "none read before" if keys is None else f"the keys of block {keys.block} apply",
                )
        boundary_id = int(boundary.timestamp())
        last = self.store.last_seqs(boundary_id) if keys is not None else {}
        out: dict[DeviceId, MeterReading] = {}
        for device, as_read in snapshot.items():
            reason = ""
            reading = as_read
            if device not in signing and reading.signed is not None:
                # a signature the site does not expect is not checked, so it vouches for nothing
                reading = dataclasses.replace(reading, signed=None)
            if reading.quality is not ReadingQuality.OK:
                pass
            elif device not in signing:
                reason = "not signed: the site requires signed readings" if required else ""
            elif reading.signed is None:
                reason = "no signed reading"
            elif keys is None:
                reason = why
            else:
                verdict = check_reading(
                    reading.signed,
                    device_id=device,
                    public_key=keys.keys.get(device),
                    last_seq=last.get(device),
                    boundary_ms=boundary_id * 1000,
                    max_age_ms=self.site.max_reading_age_s * 1000,
                )
                reason = verdict.reason
            out[device] = reading
            if reason:
                log.warning("%s at %s unverified: %s", device, utc_label(boundary), reason)
                out[device] = dataclasses.replace(
                    reading, quality=ReadingQuality.UNVERIFIED, reason=reason
                )
        return out, keys

    def tick(self, boundary: datetime, *, clear_next: bool = True) -> TickReport:
        """Run the cycle at ``boundary`` (settle the interval that ended, clear the next).

        Parameters
        ----------
        boundary : datetime
            An interval boundary (UTC, a multiple of ``site.interval_s`` [s] from the epoch).
        clear_next : bool
            Clear the interval that starts at ``boundary`` (``False``: read, settle and
            audit only).

        Returns
        -------
        TickReport
            Readings, the clearing (if any) and every settlement sent or failed.

        Raises
        ------
        NotOnBoundary
            ``boundary`` is not an interval boundary.
        """
        boundary = require_utc(boundary, "boundary")
        length = self.site.interval_s
        current = Interval.containing(boundary, length)
        if current.start != boundary:
            msg = f"tick at {utc_label(boundary)} is not on a {length} s interval boundary"
            raise NotOnBoundary(msg)

        # 1. read, and verify the signed readings
        snapshot, keys = self.verify_readings(self.read_all(boundary), boundary)
        self.store.save_readings(
            current.interval_id, snapshot, key_block=None if keys is None else keys.block
        )
        crash_point("after_read")
        missing = tuple(
            f"{d}: {r.reason or r.quality.value}"
            for d, r in snapshot.items()
            if r.quality is not ReadingQuality.OK
        )

        # 2. settle on paper every ended interval; intents are durable before anything else
        self._close_abandoned(current)
        self.recheck_settled()  # a settlement a deep reorganisation dropped is an intent again
        errors = self._settle_ended(boundary)

        # 3. decide (never raises: a failure is a recorded grid-only outcome), and
        # 4. write: result first (the ledger before any side effect), then setpoints, then money
        cleared = self._clear_and_write(current, snapshot) if clear_next else None
        self._lift_expired_pause(boundary)
        settlements = errors + self._send_pending()

        # 5. audit: every batch's record was committed with its intent (step 2) and its chain
        # part with the receipt; only a settlement that could not be computed is recorded here
        for report in errors:
            self.store.save_audit(
                report.interval.interval_id, self._record(report.interval, None, report.error)
            )
        return TickReport(
            boundary=boundary,
            readings_ok=len(snapshot) - len(missing),
            readings_missing=missing,
            cleared=cleared,
            settlements=tuple(settlements),
        )

    def clear_at_gate(self, interval: Interval) -> IntervalReport | None:
        """Clear ``interval`` at its gate closure: read, decide, write (module docstring).

        The devices are read once more (the readings belong to :meth:`gate_closure`, the
        event's own time, and are used for bidding only: settlement meters the boundary
        snapshots), then ``interval`` is claimed, cleared, its result stored and its
        setpoints written, as the tick at its start does with ``gate_closure_s = 0``.

        Parameters
        ----------
        interval : Interval
            The interval to clear (its gate closure has come).

        Returns
        -------
        IntervalReport or None
            The clearing; ``None`` if ``interval`` was already claimed (never cleared twice).
        """
        snapshot = self.read_all(self.gate_closure(interval))
        return self._clear_and_write(interval, snapshot)

    def close_missed(self, interval: Interval, why: str) -> bool:
        """Record ``interval`` as not cleared (grid only) unless it was already claimed.

        For an interval whose gate closure passed while no controller ran: it is claimed, so
        it can never be cleared late, and given the outcome ``abandoned`` with ``why``
        (nothing was acted on), which is settled like any other outcome.

        Parameters
        ----------
        interval : Interval
            The interval.
        why : str
            The reason recorded (after ``"abandoned:"``).

        Returns
        -------
        bool
            True if recorded now; False if the interval was claimed before (cleared, being
            cleared, or recorded).
        """
        if not self.store.claim_interval(interval.interval_id, interval.length_s):
            return False
        self._save_abandoned(interval, why)
        return True

    def _clear_and_write(
        self, interval: Interval, snapshot: Mapping[DeviceId, MeterReading]
    ) -> IntervalReport | None:
        """Steps 3 and 4 of a tick for ``interval``: clear, store the result, write setpoints."""
        cleared = self._clear_safely(interval, snapshot)
        if cleared is None:
            return None
        crash_point("after_clear")
        self._save_interval(cleared)
        crash_point("after_save_result")
        failures = self._write_setpoints(cleared.setpoints)
        crash_point("after_setpoints")
        if failures:
            cleared = _replace_failures(cleared, failures)
            self._save_interval(cleared)
        return cleared

    # -------------------------------------------------------------------------- clearing
    def _clear_safely(
        self, interval: Interval, snapshot: Mapping[DeviceId, MeterReading]
    ) -> IntervalReport | None:
        """Clear ``interval``; any failure becomes a recorded grid-only outcome."""
        started = time.perf_counter()
        if not self.store.claim_interval(interval.interval_id, interval.length_s):
            log.warning("interval %s already cleared; not clearing it twice", interval.label())
            return None
        try:
            return self._clear(interval, snapshot, started)
        except Exception as exc:  # the cycle must go on: record why, act on nothing
            log.exception("clearing %s failed", interval.label())
            book = OrderBook(interval)
            result = empty_result(
                book,
                ClearingStatus.SOLVER_ERROR,
                f"clearing failed ({type(exc).__name__}: {exc}); fallback: grid only",
            )
            plan = Plan(orders=(), forecast_w={}, skipped=())
            return IntervalReport(
                interval=interval,
                gate_closure=self.gate_closure(interval),
                book=book,
                result=result,
                setpoints=setpoints_for(interval, plan, {}, self.site.devices, acted=False),
                write_failures=(),
                skipped=(),
                wall_s=time.perf_counter() - started,
            )

    def _clear(
        self, interval: Interval, snapshot: Mapping[DeviceId, MeterReading], started: float
    ) -> IntervalReport:
        # signed orders (controller.intake) for T: one-off orders beside the standing ones,
        # read under the intake's lock after T was claimed: no order acknowledged for T is
        # missed, none acknowledged after this read (controller.intake, "Concurrency")
        with self.store.intake_lock():
            rows = self.store.signed_orders_at(interval.interval_id)
        signed = signed_book(rows, self.site, interval)
        gate_now = self.gate_closure_s
        terms, governance = self.terms_for(interval)
        following = self.site.gate_closure_s
        if governance is not None:
            following = int(governance["applied"].get("next_gate_closure_s", gate_now))
        recent = interval.interval_id - 86_400
        self._terms = {k: v for k, v in self._terms.items() if k >= recent}
        self._terms[interval.interval_id] = (terms, governance)
        self._gates = {k: v for k, v in self._gates.items() if k >= recent}
        self._gates[interval.interval_id] = (gate_now, following)
        options = dataclasses.replace(
            self.options, import_price=terms.import_price, export_price=terms.export_price
        )
        plan = plan_orders(
            interval,
            self.site.participants,
            self.site.devices,
            snapshot,
            self.forecaster,
            import_price=terms.import_price,
            orders_in_force=signed.standing,
        )
        if signed.orders:
            plan = dataclasses.replace(plan, orders=plan.orders + signed.orders)
        credit = self._free_credit()
        if credit:
            plan = cap_by_credit(plan, credit)
        if self.controls is not None:  # the operator's pause and exclusions
            in_force = self.controls.in_force(interval)
            self._applied = {
                k: v for k, v in self._applied.items() if k >= interval.interval_id - 86_400
            }
            self._applied[interval.interval_id] = in_force.to_dict()
            plan = filter_plan(plan, in_force)
        grid = self.base_grid_for(interval)
        linear = self._linear_grid(grid)
        known = linear.network.bus_index()

        def clear(planned: Plan) -> tuple[OrderBook, ClearingResult]:
            placed = [po.order for po in planned.orders if po.order.bus in known]
            book = build_order_book(interval, placed)
            return book, self._clear_book(grid, book, linear, options=options)

        # unsold floor-priced PV surplus is cleared again at the export tariff (bidding.py)
        final = clear_with_export_steps(plan, clear, terms.export_price)
        plan, book, result = final.plan, final.book, final.result
        skipped = list(plan.skipped)
        for po in plan.orders:
            if po.order.bus not in known:
                skipped.append(
                    f"{po.order.order_id}: bus {po.order.bus!r} is not connected to the grid "
                    "this interval; order not placed"
                )
        setpoints = setpoints_for(
            interval,
            plan,
            result.accepted_wh,
            self.site.devices,
            acted=result.is_ok,
            prices=result.price_by_bus,
            export_price=terms.export_price,
            network=describe_network(result, self.site.vm_min_pu, self.site.vm_max_pu),
        )
        return IntervalReport(
            interval=interval,
            gate_closure=self.gate_closure(interval),
            book=book,
            result=result,
            setpoints=setpoints,
            write_failures=(),
            skipped=tuple(skipped),
            wall_s=time.perf_counter() - started,
        )

    def terms_for(self, interval: Interval) -> tuple[Terms, dict[str, Any] | None]:
        """The tariffs and community fee ``interval`` is cleared and settled with.

        Without governance, the site's tariffs and no fee. With it, the registry is read
        now (a value executed by a vote after this read applies from the next interval)
        and :func:`market.governance.apply_governed` moves the site's tariffs into the
        governed bounds. If the registry cannot be read, the values of the last read
        apply (the site's tariffs and no fee before any read); the record says so.

        Returns
        -------
        tuple of (Terms, dict or None)
            The terms, and the record's ``governance`` (registry, block, values with the
            block and proposal that set each, the site's tariffs, what was applied, notes;
            ``None`` without governance).
        """
        site_terms = Terms(
            import_price=self.site.import_price,
            export_price=self.site.export_price,
            community_fee_bps=0,
        )
        if self.governed is None:
            return site_terms, None
        read_error = ""
        try:
            self._last_governed = self.governed()
        except AdapterError as exc:
            read_error = f"{type(exc).__name__}: {exc}"
            log.warning("governed values of %s not read: %s", interval.label(), read_error)
        values = self._last_governed
        if values is None:
            note = "registry unreadable and never read: site tariffs, no fee, gate closure kept"
            terms = dataclasses.replace(site_terms, notes=(note,))
            applied = {**_applied(terms), "next_gate_closure_s": self.gate_closure_s}
            return terms, {"read_error": read_error, "applied": applied}
        terms = apply_governed(self.site.import_price, self.site.export_price, values.values)
        gate, gate_note = governed_gate_closure(
            self.site.gate_closure_s, self.site.interval_s, values.values
        )
        record: dict[str, Any] = {
            **values.to_dict(),
            "site": {
                "import_price": self.site.import_price,
                "export_price": self.site.export_price,
                "gate_closure_s": self.site.gate_closure_s,
                "interval_s": self.site.interval_s,
            },
            "applied": {**_applied(terms), "next_gate_closure_s": gate},
            "notes": [*terms.notes, *([gate_note] if gate_note else [])],
        }
        if read_error:
            record["read_error"] = f"{read_error}; the values of block {values.block} apply"
        return terms, record

    def _free_credit(self) -> dict[ParticipantId, int]:
        """Each participant's escrow not spoken for by pending settlements [token units].

        Empty when the settler cannot report escrow (then no credit check is made). Pending
        intents (settled on paper, not yet on-chain) are subtracted, so the same tokens never
        back two intervals, and so is a carried debt (the next batch collects it first).
        """
        balances = self._escrows([p.id for p in self.site.participants])
        if balances is None:
            return {}
        owed: dict[str, int] = {}
        for pending in self.store.pending_settlements():
            for account, amount in pending.batch.get("amounts", []):
                if amount < 0:
                    owed[account] = owed.get(account, 0) - amount
        debts = self.store.outstanding_debts()
        credit: dict[ParticipantId, int] = {}
        for p in self.site.participants:
            balance = balances.get(p.id)
            if balance is not None:
                credit[p.id] = int(balance) - owed.get(p.id, 0) - max(0, debts.get(p.id, 0))
        return credit

    def _escrows(self, accounts: Sequence[str]) -> dict[str, int] | None:
        """What each of ``accounts`` can still be charged [token units]; None without escrow.

        From the settler's ``escrows`` (one chain call for all) when it has one, else its
        ``escrow`` per account; accounts without an address are left out.
        """
        escrows = getattr(self.settler, "escrows", None)
        if escrows is not None:
            return dict(escrows(accounts))
        escrow_of = getattr(self.settler, "escrow", None)
        if escrow_of is None:
            return None
        found = {a: escrow_of(a) for a in accounts}
        return {a: int(b) for a, b in found.items() if b is not None}

    def reclear(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Clear an audit record's stored order book again (an auditor's determinism check).

        The book is cleared on the base case of the record's interval with the site's
        options, as :meth:`tick` clears it, except the pricing mechanism: the one the
        record's result names (a site may have changed its mechanism since).

        Parameters
        ----------
        record : Mapping
            An audit record (``interval`` [Unix s], ``length_s`` [s], ``book``, and
            ``result.mechanism``; without it the site's mechanism).

        Returns
        -------
        dict
            The clearing result in its stored form (:func:`result_to_dict`).
        """
        interval = Interval.from_id(int(record["interval"]), int(record["length_s"]))
        grid = self.base_grid_for(interval)
        book = parse_order_rows(
            (record.get("book") or {}).get("orders", []), interval, set(grid.bus_names)
        )
        mechanism = (record.get("result") or {}).get("mechanism") or self.options.mechanism
        # no wall-clock budget, the recorded iteration limits: the same result on any machine
        options, max_iterations = reclear_options(
            dataclasses.replace(self.options, mechanism=mechanism), record.get("params")
        )
        return result_to_dict(
            self._clear_book(
                grid,
                book,
                options=options,
                max_iterations=max_iterations,
                loss_basis=recorded_loss_basis(record.get("params")),
            )
        )

    def _clear_book(
        self,
        grid: Grid,
        book: OrderBook,
        linear: LinearGrid | None = None,
        *,
        options: ClearingOptions | None = None,
        max_iterations: int = MAX_ITERATIONS,
        loss_basis: str = LOSS_BASIS,
    ) -> ClearingResult:
        if not len(book):
            return empty_result(book, ClearingStatus.NO_CROSSING, "no orders this interval")
        try:
            if linear is None:
                linear = self._linear_grid(grid)
            return clear_on_grid(
                grid,
                linear,
                book,
                options or self.options,
                max_iterations=max_iterations,
                loss_basis=loss_basis,
            )
        except GridModelError as exc:
            return empty_result(
                book, ClearingStatus.INFEASIBLE, f"grid model failed: {exc}; fallback: grid only"
            )

    def _linear_grid(self, grid: Grid) -> LinearGrid:
        """The network model of the base case ``grid`` in the site's voltage band."""
        vm_min, vm_max = self.site.vm_min_pu, self.site.vm_max_pu
        if self.linear_grid is not None:
            return self.linear_grid(grid, vm_min, vm_max)
        return build_linear_grid(grid, vm_min_pu=vm_min, vm_max_pu=vm_max)

    def _write_setpoints(self, setpoints: tuple[Setpoint, ...]) -> tuple[str, ...]:
        failures: list[str] = []
        for sp in setpoints:
            writer = self.writers.get(sp.device_id)
            if writer is None:
                continue
            if self.fence is not None:
                self.fence()
            outcome = writer.write(sp)
            if not outcome.ok:
                failures.append(f"{sp.device_id}: {outcome.reason}")
                log.warning(
                    "setpoint of %s for %s (%s %d W) refused: %s",
                    sp.device_id,
                    sp.interval.label(),
                    sp.kind.value,
                    sp.p_w,
                    outcome.reason,
                )
        return tuple(failures)

    def _save_interval(self, report: IntervalReport) -> None:
        result = report.result
        self.store.save_result(
            report.interval.interval_id,
            status=result.status.value,
            reason=result.reason,
            book_hash=report.book.digest(),
            n_orders=len(report.book),
            result={
                **result_to_dict(result),
                "timings": timings_of(result),
                "book": book_to_dict(report.book),
                "skipped": list(report.skipped),
                "write_failures": list(report.write_failures),
                "curtailed": {s.device_id: s.reason for s in report.setpoints if s.reason},
                "inputs": self._inputs(report.interval),
            },
            setpoints=[
                {
                    **setpoint_to_dict(s),
                    **({"reason": s.reason, "forecast_w": s.forecast_w} if s.reason else {}),
                }
                for s in report.setpoints
            ],
        )

    # -------------------------------------------------------------------------- settlement
    def _close_abandoned(self, current: Interval) -> None:
        """Record an outcome for intervals claimed by a controller that died mid-clearing."""
        for interval_id, length_s in self.store.abandoned_intervals(current.interval_id):
            self._save_abandoned(
                Interval.from_id(interval_id, length_s),
                "the controller stopped while clearing; nothing was acted on",
            )

    def _save_abandoned(self, interval: Interval, why: str) -> None:
        """Store the grid-only outcome ``abandoned`` of a claimed ``interval``, with ``why``."""
        book = OrderBook(interval)
        result = empty_result(
            book, ClearingStatus.SOLVER_ERROR, f"{ABANDONED} {why}; fallback: grid only"
        )
        self.store.save_result(
            interval.interval_id,
            status="abandoned",
            reason=result.reason,
            book_hash=book.digest(),
            n_orders=0,
            result={**result_to_dict(result), "book": book_to_dict(book)},
            setpoints=[],
        )

    def _settle_ended(self, boundary: datetime) -> list[SettlementReport]:
        """Settle on paper every ended interval without a settlement; persist the intents."""
        errors: list[SettlementReport] = []
        meters = self.meters()
        for interval_id, length_s, stored in self.store.unsettled_results(
            int(boundary.timestamp())
        ):
            interval = Interval.from_id(interval_id, length_s)
            result = result_from_dict(stored, interval)
            # the terms it was cleared with (the site's tariffs for results stored without)
            params = (stored.get("inputs") or {}).get("params") or {}
            tariffs = Tariffs(
                import_price=PricePerKwh(int(params.get("import_price", self.site.import_price))),
                export_price=PricePerKwh(int(params.get("export_price", self.site.export_price))),
            )
            try:
                batch = settle(
                    result,
                    self.store.readings_at(interval.interval_id),
                    self.store.readings_at(interval.next().interval_id),
                    tariffs,
                    meters=meters,
                    community_fee_bps=int(params.get("community_fee_bps", 0)),
                    reading_signatures=str(params.get("reading_signatures", "")),
                    unverified_penalty_bps=int(params.get("unverified_penalty_bps", 0)),
                )
            except MarketError as exc:
                log.exception("settling %s failed", interval.label())
                errors.append(
                    SettlementReport(
                        interval=interval,
                        batch=None,
                        outcome=None,
                        error=f"settlement arithmetic failed: {exc}",
                    )
                )
                continue
            batch = self._with_debts(batch)  # decided now: the batch id must not change later
            # the record's hash (its core holds the batch without id) is folded into the id
            record = self._record(interval, batch)
            batch = dataclasses.replace(batch, record_hash=anchor_hash(record))
            record["settlement"] = batch_to_dict(batch)
            if self.store.record_intent(interval_id, batch.batch_id, batch_to_dict(batch), record):
                crash_point("after_intent")
        return errors

    def _with_debts(self, batch: SettlementBatch) -> SettlementBatch:
        """Cap ``batch``'s debits at what each account can pay; carry the rest as debts.

        One participant who cannot pay would otherwise make the contract revert the whole
        interval for everyone, tick after tick. :func:`market.settlement.apply_debts` settles
        carried balances first, caps each debit at the account's available funds (the
        contract's ``available`` less the debits of intents not yet on-chain, at least 0) and
        lets COMMUNITY front the shortfall (see :mod:`market.settlement`, rules 6-9). Without
        a settler that reports escrow, the batch is left as it is.
        """
        outstanding = {ParticipantId(a): b for a, b in self.store.outstanding_debts().items()}
        named = sorted({a for a, _ in batch.amounts} | set(outstanding) | {COMMUNITY})
        balances = self._escrows(named)
        if balances is None:
            return batch
        pending: dict[str, int] = {}
        for intent in self.store.pending_settlements():
            for account, amount in intent.batch.get("amounts", []):
                if amount < 0:
                    pending[account] = pending.get(account, 0) - amount
        available: dict[ParticipantId, int] = {}
        for account in named:
            balance = balances.get(account)
            if balance is not None:
                available[ParticipantId(account)] = max(0, int(balance) - pending.get(account, 0))
        capped = apply_debts(batch, available, outstanding)
        for debt in capped.debts:
            log.log(
                logging.WARNING if debt.after else logging.INFO,
                "settlement of %s: %s's carried balance %d -> %d token units (+ = owes COMMUNITY)",
                batch.interval.label(),
                debt.account,
                debt.before,
                debt.after,
            )
        return capped

    def _lift_expired_pause(self, boundary: datetime) -> None:
        """Lift the guardian's expired pause; a failure is only logged.

        Sending then fails and is retried, as for any settlement the chain refuses.
        """
        if self.lift_expired_pause is None:
            return
        try:
            if self.lift_expired_pause():
                log.warning("the emergency pause expired and was lifted at %s", utc_label(boundary))
        except AdapterError as exc:
            log.warning("could not lift an expired pause at %s: %s", utc_label(boundary), exc)

    def _send_pending(self, *, startup: bool = False) -> list[SettlementReport]:
        """Send every settlement intent not yet on-chain (this tick's and earlier failures).

        Settlements without an audit record (an older release's database) get theirs first
        (:meth:`backfill_records`), so no settlement is recorded on-chain without its record.
        """
        self.backfill_records()
        reports: list[SettlementReport] = []
        for pending in self.store.pending_settlements():
            if startup:
                crash_point("startup_reconcile")
            interval = Interval.from_id(pending.interval_id, self.site.interval_s)
            batch = batch_from_dict(pending.batch, interval)
            reports.append(self._submit(interval, batch))
        return reports

    def _submit(self, interval: Interval, batch: SettlementBatch) -> SettlementReport:
        if self.settler is None:
            return SettlementReport(
                interval=interval, batch=batch, outcome=None, error="no chain configured"
            )
        if self.fence is not None:
            self.fence()  # LostSite propagates: the intent stays for the site's holder
        try:
            outcome = self.settler.submit(batch)
        except Exception as exc:  # any chain failure: keep the intent, report, retry next tick
            error = f"{type(exc).__name__}: {exc}"
            self.store.mark_failed(interval.interval_id, error)
            log.warning("settlement of %s failed (will retry): %s", interval.label(), error)
            return SettlementReport(interval=interval, batch=batch, outcome=None, error=error)
        crash_point("after_confirm")
        self.store.mark_settled(
            interval.interval_id,
            tx_hash=outcome.tx_hash,
            block_number=outcome.block_number,
            gas_used=outcome.gas_used,
            status=outcome.status,
        )
        crash_point("after_record")
        return SettlementReport(interval=interval, batch=batch, outcome=outcome)

    def resume_pending(self) -> list[SettlementReport]:
        """Start-up reconciliation: fill in missing records, then resolve pending intents.

        Settlements without an audit record (left by releases that wrote the record after
        sending, when killed in between) get their record now, built from the stored
        result, readings and batch, with the receipt when there is one. Then every intent
        not yet on-chain is resolved (the chain is asked first, so none is paid twice).

        Returns
        -------
        list of SettlementReport
            One per intent resolved (sent, found already settled, or failed again).
        """
        self.recheck_settled()
        return self._send_pending(startup=True)

    def settlement_view(self) -> SettlementView | None:
        """The chain's view of settled intervals: the settler's, or its client's; or None."""
        for candidate in (self.settler, getattr(self.settler, "client", None)):
            if isinstance(candidate, SettlementView):
                return candidate
        return None

    def recheck_settled(self) -> list[int]:
        """Re-check settlements recorded in the last ``recheck_blocks`` blocks against the chain.

        A settlement the chain no longer has at its recorded block with its batch id (a
        reorganisation deeper than ``confirmations`` dropped or moved it, or the interval
        holds another batch) goes back to ``intent`` with the reason, and its audit record's
        chain part is cleared, in one database transaction
        (:meth:`Store.reopen_settlement`); the next send resolves it. Costs one block
        number and two calls per settlement in the window, in one JSON-RPC batch when the view
        reads many at once (``settled_on_chain_many``). A chain that cannot be read is
        logged and tried again at the next tick.

        Returns
        -------
        list of int
            The intervals put back to ``intent`` [Unix s].
        """
        view = self.settlement_view()
        if view is None or self.recheck_blocks <= 0:
            return []
        reopened: list[int] = []
        try:
            head = view.block_number()
            rows = self.store.settled_since(max(0, head - self.recheck_blocks))
            many = getattr(view, "settled_on_chain_many", None)  # one request for all, if it can
            found = many([int(r["interval_id"]) for r in rows]) if many is not None and rows else {}
            for row in rows:
                interval_id = int(row["interval_id"])
                recorded = int(row["block_number"])
                block, batch_id = found.get(interval_id) or view.settled_on_chain(interval_id)
                if block == recorded and batch_id == row["batch_id"]:
                    continue
                if block == 0:
                    reason = (
                        f"reorganisation: the chain no longer has this settlement (recorded "
                        f"in block {recorded}, tx {row['tx_hash']}); sending it again"
                    )
                elif batch_id != row["batch_id"]:
                    reason = (
                        f"the chain has batch {batch_id} settled for this interval in block "
                        f"{block}, not the recorded {row['batch_id']} (block {recorded})"
                    )
                else:
                    reason = (
                        f"reorganisation: the settlement moved from block {recorded} to "
                        f"block {block}; reading its receipt again"
                    )
                if self.store.reopen_settlement(interval_id, reason):
                    label = Interval.from_id(interval_id, self.site.interval_s).label()
                    log.warning("settlement of %s re-opened: %s", label, reason)
                    reopened.append(interval_id)
        except Exception as exc:  # boundary: a chain read must not stop the tick; next tick
            log.warning(  # named, with its traceback: a bug here is reported, never silent
                "re-checking recent settlements failed (again next tick): %s: %s",
                type(exc).__name__,
                exc,
                exc_info=True,
            )
        return reopened

    def backfill_records(self) -> list[int]:
        """Write the audit record of every settlement that has none (see resume_pending).

        Returns
        -------
        list of int
            The intervals whose record was written [Unix s].
        """
        done: list[int] = []
        for row in self.store.settled_without_record():
            interval_id = int(row["interval_id"])
            interval = Interval.from_id(interval_id, self.site.interval_s)
            record = self._record(interval, batch_from_dict(row["batch"], interval), "")
            record["format"] = 1  # written after the fact: its batch id cannot commit to it
            if row["state"] == "settled":
                record["chain"] = {
                    "tx_hash": row["tx_hash"],
                    "block_number": row["block_number"],
                    "gas_used": row["gas_used"],
                    "status": "settled",
                }
            elif row["error"]:
                record["error"] = row["error"]
            self.store.save_audit(interval_id, record)
            log.warning("audit record of %s was missing; written now", interval.label())
            done.append(interval_id)
        return done

    # -------------------------------------------------------------------------- audit
    def _record(
        self, interval: Interval, batch: SettlementBatch | None, error: str = ""
    ) -> dict[str, Any]:
        """The audit record of ``interval`` (its core, :func:`controller.audit.record_core`).

        Built before anything is sent: ``chain`` is ``None`` until the settlement's receipt
        is recorded (:meth:`Store.mark_settled` fills it in) and ``error`` holds the last
        failure, if any; neither is part of the record's hash.
        """
        stored = self.store.result(interval.interval_id) or {}
        start = self.store.readings_at(interval.interval_id)
        end = self.store.readings_at(interval.next().interval_id)
        result_core = {k: v for k, v in stored.items() if k not in {"timings", "book", "inputs"}}
        inputs = stored.get("inputs") or self._inputs(interval)
        ac_check = result_core.get("ac_check")
        if isinstance(ac_check, dict):  # per-bus/branch values once, at the record's top
            result_core["ac_check"] = {
                k: v for k, v in ac_check.items() if k not in {"buses", "branches"}
            }
        return {
            "format": RECORD_FORMAT,
            **inputs,
            "ac_check": ac_check,
            "interval": interval.interval_id,
            "interval_start": interval.start.isoformat(),
            "length_s": interval.length_s,
            "site": self.site.name,
            "grid": self.site.grid,
            "book_hash": content_hash(stored.get("book", {})),
            "book": stored.get("book"),
            "result_hash": content_hash(result_core),
            "result": result_core,
            "readings_start": [reading_to_dict(r) for r in start.values()],
            "readings_end": [reading_to_dict(r) for r in end.values()],
            **self._key_blocks(interval),
            "settlement": None if batch is None else batch_to_dict(batch),
            "chain": None,
            "error": error,
        }

    def _key_blocks(self, interval: Interval) -> dict[str, Any]:
        """The record's ``device_keys`` (issue 17).

        The registry and the block each snapshot's signed readings were verified against;
        nothing for a site whose devices do not sign.
        """
        if not any(d.signed_block is not None for d in self.site.devices):
            return {}
        start = self.store.key_blocks_at(interval.interval_id)
        end = self.store.key_blocks_at(interval.next().interval_id)
        registry = self.device_keys.registry if self.device_keys is not None else ""
        return {
            "device_keys": {
                "registry": registry,
                "start_block": start[-1] if start else None,
                "end_block": end[-1] if end else None,
            }
        }

    def _inputs(self, interval: Interval) -> dict[str, Any]:
        """What an auditor needs, besides the book, to clear ``interval`` again.

        ``params`` (every clearing and settlement parameter in force), ``versions``
        (:func:`controller.audit.software_versions`), ``grid_hash`` (the grid without its
        base case, stored once in the ``grids`` table) with ``base_case`` (the interval's
        load and generation columns, :func:`grid_models.grids.split_base_case`), and
        ``accounts`` (participant -> chain address, to compare the chain's entries).
        """
        terms, governance = self._terms.get(interval.interval_id, (None, None))
        gates = self._gates.get(interval.interval_id)
        if gates is None:  # not cleared by this controller (abandoned): the gate in force now
            gate = self.gate_closure_s
            gates = (gate, gate)
        gate_in_force, gate_next = gates
        in_force = self.options
        if terms is not None:
            in_force = dataclasses.replace(
                in_force, import_price=terms.import_price, export_price=terms.export_price
            )
        options = {f.name: _plain(getattr(in_force, f.name)) for f in dataclasses.fields(in_force)}
        governed: dict[str, Any] = {}
        if governance is not None and terms is not None:
            governed = {"community_fee_bps": terms.community_fee_bps, "governance": governance}
        params = {
            **options,
            **governed,
            "vm_min_pu": self.site.vm_min_pu,
            "vm_max_pu": self.site.vm_max_pu,
            "base_load_scale": self.site.base_load_scale,
            "base_sgen_scale": self.site.base_sgen_scale,
            "max_iterations": MAX_ITERATIONS,
            "loss_basis": LOSS_BASIS,
            # the gate closure this interval's book closed at, and the one of the intervals
            # after it (the governed value read now, or the site file's)
            "gate_closure_s": gate_in_force,
            "next_gate_closure_s": gate_next,
            # signed readings (issue 17): settlement rules 4b and 4c
            "reading_signatures": self.site.reading_signatures,
            "unverified_penalty_bps": self.site.unverified_penalty_bps,
            "max_reading_age_s": self.site.max_reading_age_s,
            "interval_s": self.site.interval_s,
            "grid": self.site.grid,
        }
        grid_hash: str | None = None
        base_case: dict[str, Any] | None = None
        try:
            text, base_case = self.split_grid(self.base_grid_for(interval))
            grid_hash = self.store.save_grid(text, self.site.grid)
        except Exception as exc:  # boundary, like the clearing's: the record says so
            # (grid_hash None) and the failure is named with its traceback, never hidden.
            log.warning(
                "grid of %s not recorded: %s: %s",
                interval.label(),
                type(exc).__name__,
                exc,
                exc_info=True,
            )
        accounts = getattr(self.settler, "accounts", None) or {}
        rows = self.store.signed_orders_at(interval.interval_id)
        return {
            "params": params,
            "versions": software_versions(),
            "grid_hash": grid_hash,
            "base_case": base_case,
            "accounts": {str(k): str(v) for k, v in sorted(dict(accounts).items())},
            # the signed orders in force, as signed (controller.intake.check_signed_orders)
            "signed_orders": signed_evidence(signed_book(rows, self.site, interval).rows),
            # the operator's actions applied when it was cleared (controller.controls)
            "controls": self._applied.get(interval.interval_id),
        }


def _applied(terms: Terms) -> dict[str, int]:
    return {
        "import_price": terms.import_price,
        "export_price": terms.export_price,
        "community_fee_bps": terms.community_fee_bps,
    }


def _plain(value: object) -> object:
    """A parameter's JSON form (enums as their value)."""
    return value.value if isinstance(value, enum.Enum) else value


def _replace_failures(report: IntervalReport, failures: tuple[str, ...]) -> IntervalReport:
    return dataclasses.replace(report, write_failures=failures)
