"""Signed orders in: verify, check, persist, acknowledge (issue 12, the HTTP front door).

A prosumer places an order, a standing order or a cancellation as EIP-712 typed data signed
by its registered address (:mod:`adapters.chain.typed_data`). :meth:`OrderIntake.submit`
takes the posted body ``{"typedData": ..., "signature": "0x..."}`` and either returns an
:class:`Ack` or raises :class:`IntakeRefused` with an HTTP status, a short ``code`` and a
reason naming the field. Nothing refused is stored, so nothing refused reaches a book.

**Rules, in the order they are checked** (status, ``code``):

1. the typed data and signature (:func:`adapters.chain.typed_data.verify`): malformed JSON,
   types, values or enum codes (400 ``malformed``); another name, version, chain or
   Settlement contract (403 ``wrong_domain``); a signature that is not one (401
   ``bad_signature``); signed by someone other than ``message.participant``, which is also
   what any change to a signed message looks like (403 ``signer_not_participant``);
2. **idempotency**: a message whose EIP-712 digest is stored already gets its first
   acknowledgement back (``duplicate=True``, its current ``status``), whatever the clock
   says now: a client may retry after a timeout;
3. ``message.participant`` is the registered address of a participant of the site (403
   ``unknown_participant``);
4. ``deadline`` [Unix s] not passed: ``now <= deadline`` (422 ``deadline_passed``);
5. the participant's ``nonce`` is unused (409 ``nonce_reused``); nonces are unordered;
6. by kind:

   * ``Order``: ``intervalStart`` on a boundary of the site's intervals (422
     ``not_on_boundary``); its gate still open, ``now < intervalStart - gate_closure_s``
     (the gate closure in force: the community's governed one once a clearing read it,
     :attr:`controller.cycle.Cycle.gate_closure_s`; 422 ``gate_closed``; the rule of
     :meth:`controller.cycle.Cycle.gate_closure`); at
     most :data:`MAX_HORIZON_S` ahead (422 ``too_far_ahead``); ``1 <= energyWh <=
     max_order_wh`` (422 ``energy_out_of_range``); ``limitPrice <= max_price`` (422
     ``price_out_of_range``); a buy's worst-case cost ``ceil(energyWh * limitPrice /
     1000)`` plus that of the participant's other signed buys for the interval fits its
     free escrow (422 ``escrow_insufficient``);
   * ``StandingOrder``: the site file's rules for its ``kind`` (``energyWh`` 1 to
     ``max_order_wh`` for ``buy``/``sell`` and 0 otherwise; ``dischargePrice >= price``
     for ``battery`` and 0 otherwise; ``minSocPermille < maxSocPermille <= 1000`` for
     ``battery`` and both 0 otherwise: 422 ``energy_out_of_range``,
     ``price_out_of_range``, ``soc_out_of_range``, ``not_for_kind``); ``validFrom <
     validUntil`` (422 ``bad_window``); at least one interval starts in the window with
     its gate still open (422 ``window_closed``), the first of them at most
     :data:`MAX_HORIZON_S` ahead (422 ``too_far_ahead``); a fixed ``buy``'s cost per interval fits
     the free escrow like an order's (422 ``escrow_insufficient``);
   * ``Cancel``: ``orderDigest`` names a stored order (404 ``unknown_order``) of the same
     participant (403 ``not_your_order``) that is an order or standing order (422
     ``not_cancellable``), not cancelled already (409 ``already_cancelled``), and has an
     interval whose gate is still open (422 ``gate_closed``).

Then the message is stored (table ``signed_orders``, one transaction) **before** the
acknowledgement is returned; a second message reusing a nonce, racing the first, is refused
by the table's unique key (409).

**Into the book.** :meth:`controller.cycle.Cycle` clears interval ``T`` with the accepted,
not cancelled signed ``Order`` messages for ``T`` as fixed bids and offers (order id
``<participant>:<T>:signed:<digest>``) and with the signed standing orders in force at ``T``
(:func:`signed_book`). A signed standing order of a forecast kind (``sell_surplus``,
``buy_demand``, ``battery``) **replaces** the participant's site-file standing orders of
that kind (the latest accepted one wins): two of them would offer or bid the same energy
twice. Fixed ``buy``/``sell`` standing orders are added beside the others. Standing orders
apply to every interval ``T`` with ``validFrom <= T < validUntil`` whose gate was open when
they were accepted; a cancelled one stops at the first interval whose gate was open when the
Cancel arrived. All bids still pass the cycle's credit cap (:func:`controller.bidding.
cap_by_credit`), so no order can make a settlement fail.

**Audit.** The interval's audit record carries each signed order in force (typed data,
signature, digest; :func:`signed_evidence`); :func:`check_signed_orders` re-verifies them
for ``peergrid audit verify``.

**Concurrency.** Checks and the write run under the store's intake lock
(:meth:`controller.store.Store.intake_lock`: a lock of the process on SQLite, the database's
own on PostgreSQL, so a ``serve --front`` and the workers of a fleet share it), so two buys
can never both pass the escrow check on the same tokens. The clearing of an interval claims
it (:meth:`~controller.store.Store.claim_interval`) before it reads the interval's signed
orders under the same lock, and the intake, under the lock, treats every claimed interval
as closed whatever its clock says: an order acknowledged is in its interval's book, and one
that arrives after the book was read is refused (``gate_closed``), even between processes
whose clocks differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from adapters.chain.typed_data import (
    MessageKind,
    OrderSide,
    StandingKind,
    Verified,
    verify,
)
from adapters.errors import TypedDataRefused
from controller.bidding import PlannedKind, PlannedOrder
from controller.config import MAX_ENERGY_WH, MAX_PRICE, OrderKind, SiteConfig, StandingOrder
from controller.errors import ControllerError
from market.domain import Bid, Interval, Offer, OrderId, ParticipantId, utc_label
from market.units import PricePerKwh, Wh, buyer_payment

MAX_HORIZON_S: Final = 7 * 24 * 3600
"""How far ahead an order's interval may start [s] (a week): bounds what is stored."""

FOREVER: Final = 2**63 - 1
"""The stored end of a standing order valid "forever" (``validUntil`` up to 2**64 - 1, e.g. a
wallet's max uint64, is kept as this: the largest signed 64-bit integer a database stores)."""

PERMILLE_MAX: Final = 1000
"""A battery's full charge in ``minSocPermille``/``maxSocPermille`` [1/1000]."""

STATUS_OF_CODE: Final[Mapping[str, int]] = {
    "malformed": 400,
    "bad_signature": 401,
    "wrong_domain": 403,
    "signer_not_participant": 403,
    "unknown_participant": 403,
    "not_your_order": 403,
    "unknown_order": 404,
    "nonce_reused": 409,
    "already_cancelled": 409,
    "deadline_passed": 422,
    "not_on_boundary": 422,
    "gate_closed": 422,
    "too_far_ahead": 422,
    "energy_out_of_range": 422,
    "price_out_of_range": 422,
    "soc_out_of_range": 422,
    "not_for_kind": 422,
    "bad_window": 422,
    "window_closed": 422,
    "escrow_insufficient": 422,
    "not_cancellable": 422,
}
"""The HTTP status of every refusal code."""

ACCEPTED: Final = "accepted"
CANCELLED: Final = "cancelled"

_KIND_OF_CODE: Final[Mapping[StandingKind, OrderKind]] = {
    code: OrderKind(code.name.lower()) for code in StandingKind
}
_FORECAST_KINDS: Final = frozenset(
    {OrderKind.SELL_SURPLUS, OrderKind.BUY_DEMAND, OrderKind.BATTERY}
)


class IntakeRefused(ControllerError):
    """A signed message that is not accepted; nothing was stored.

    Parameters
    ----------
    status : int
        The HTTP status (400, 401, 403, 404, 409 or 422; :data:`STATUS_OF_CODE`).
    code : str
        Short snake_case reason (``gate_closed``, ``nonce_reused`` ...).
    reason : str
        What is wrong, naming the field.
    """

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(f"{status} {code}: {reason}")
        self.status = status
        self.code = code
        self.reason = reason


def _refuse(reason: str, code: str) -> IntakeRefused:
    """The refusal ``code`` (its status from :data:`STATUS_OF_CODE`) with its reason."""
    return IntakeRefused(STATUS_OF_CODE[code], code, reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The acknowledgement of a stored signed message.

    ``digest`` is the EIP-712 digest (the message's id, ``0x`` + 64 hex); ``status``
    ``accepted`` or ``cancelled`` (as it stands when acknowledged: a resubmitted order
    cancelled since says so); ``received_at`` when it was first stored (UTC);
    ``interval_id`` an order's interval [Unix s]; ``valid_from``/``valid_until`` a standing
    order's window as applied [Unix s] (``valid_from`` the first interval it applies to);
    ``cancels`` the digest a Cancel cancelled; ``duplicate`` whether this message had been
    stored before (the same acknowledgement again).
    """

    digest: str
    kind: MessageKind
    participant: ParticipantId
    nonce: int
    status: str
    received_at: datetime
    interval_id: int | None = None
    valid_from: int | None = None
    valid_until: int | None = None
    cancels: str | None = None
    duplicate: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``nonce`` as a decimal string, ``received_at`` ISO 8601)."""
        return {
            "digest": self.digest,
            "kind": self.kind.value,
            "participant": str(self.participant),
            "nonce": str(self.nonce),
            "status": self.status,
            "received_at": self.received_at.isoformat(),
            "interval_id": self.interval_id,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
            "cancels": self.cancels,
            "duplicate": self.duplicate,
        }


class OrderLedger(Protocol):
    """The store's ``signed_orders`` methods the intake uses (:class:`controller.store.Store`)."""

    def signed_order(self, digest: str) -> dict[str, Any] | None:
        """The row of a digest."""
        ...

    def signed_order_with_nonce(self, participant: str, nonce: int) -> dict[str, Any] | None:
        """The row that used a participant's nonce."""
        ...

    def add_signed_order(
        self, row: Mapping[str, Any], *, cancels: str | None = None, cancelled_from: int = 0
    ) -> tuple[dict[str, Any], bool]:
        """Store a row (and cancel its target); the stored row and whether it is new."""
        ...

    def signed_orders_at(
        self, interval_id: int, participant: str | None = None
    ) -> list[dict[str, Any]]:
        """The rows in force at an interval (of one participant, or all)."""
        ...

    def intake_lock(self) -> AbstractContextManager[object]:
        """The lock the intake's checks and write, and a clearing's read of the book, take."""
        ...

    def last_claimed(self) -> int | None:
        """The latest interval claimed for clearing [Unix s] (``None``: none)."""
        ...

    def gate_closure_in_force(self, site_gate_closure_s: int, interval_s: int) -> int:
        """The gate closure of the intervals not yet cleared [s].

        A governed value once a clearing read it, else the site file's.
        """
        ...


def ack_of(row: Mapping[str, Any], *, duplicate: bool = False) -> Ack:
    """The acknowledgement of a stored ``signed_orders`` row.

    Parameters
    ----------
    row : Mapping
        The row (:meth:`controller.store.Store.signed_order`).
    duplicate : bool
        Whether it is acknowledged again.
    """
    kind = MessageKind(row["kind"])
    return Ack(
        digest=str(row["digest"]),
        kind=kind,
        participant=ParticipantId(str(row["participant"])),
        nonce=int(row["nonce"]),
        status=str(row["status"]),
        received_at=row["received_at"],
        interval_id=row.get("interval_id"),
        valid_from=row.get("valid_from"),
        valid_until=row.get("valid_until"),
        cancels=row.get("cancel_digest") if kind is MessageKind.CANCEL else None,
        duplicate=duplicate,
    )


@dataclass(eq=False)
class OrderIntake:
    """Accepts signed orders for one site (see the module docstring for every rule).

    Parameters
    ----------
    store : OrderLedger
        The site's store (:class:`controller.store.Store`).
    site : SiteConfig
        The site: its participants, ``interval_s`` and ``gate_closure_s`` [s].
    accounts : Mapping of ParticipantId to str
        Each participant's registered address
        (:func:`controller.wiring.participant_accounts`); ``GRID`` and ``COMMUNITY`` are
        ignored (they place no orders).
    chain_id : int
        The site's chain id (the EIP-712 domain's ``chainId``).
    verifying_contract : str
        The site's Settlement contract (the domain's ``verifyingContract``).
    now : Callable returning datetime
        The clock (UTC); injected, so tests never read the wall clock.
    escrow : Callable or None
        A participant's free escrow [token units] (its deposit less what pending settlements
        and carried debts already claim, as :meth:`controller.cycle.Cycle._free_credit`
        computes it), ``None`` when unknown; without it (or when it says ``None``) no
        escrow check is made.
    max_order_wh : int
        Most energy one order may trade [Wh] (default the site file's limit, 10^9).
    max_price : int
        Highest limit price [token units / kWh] (default the site file's limit, 10^9).
    """

    store: OrderLedger
    site: SiteConfig
    accounts: Mapping[ParticipantId, str]
    chain_id: int
    verifying_contract: str
    now: Callable[[], datetime]
    escrow: Callable[[ParticipantId], int | None] | None = None
    max_order_wh: int = MAX_ENERGY_WH
    max_price: int = MAX_PRICE
    _by_address: dict[str, ParticipantId] = field(init=False, repr=False)
    _closed_through: int = field(init=False, repr=False, default=-1)
    _gate_s: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        known = {p.id for p in self.site.participants}
        self._by_address = {
            str(address).lower(): pid for pid, address in self.accounts.items() if pid in known
        }

    # ------------------------------------------------------------------ the front door
    def submit(self, payload: Mapping[str, Any]) -> Ack:
        """Verify, check, store and acknowledge one signed message.

        Parameters
        ----------
        payload : Mapping
            ``{"typedData": <eth_signTypedData_v4 JSON>, "signature": "0x..."}``.

        Returns
        -------
        Ack
            The acknowledgement (``duplicate=True`` for a message stored before).

        Raises
        ------
        IntakeRefused
            With the HTTP ``status``, ``code`` and reason (module docstring); nothing was
            stored.
        """
        try:
            verified = verify(
                payload, chain_id=self.chain_id, verifying_contract=self.verifying_contract
            )
        except TypedDataRefused as exc:
            raise _refuse(exc.reason, exc.code) from None
        with self.store.intake_lock():
            claimed = self.store.last_claimed()
            self._closed_through = -1 if claimed is None else claimed
            self._gate_s = self.store.gate_closure_in_force(
                self.site.gate_closure_s, self.site.interval_s
            )
            return self._accept(verified)

    def _accept(self, v: Verified) -> Ack:
        first = self.store.signed_order(v.digest)
        if first is not None:
            return ack_of(first, duplicate=True)
        message = v.message
        address = str(message["participant"])
        pid = self._by_address.get(address.lower())
        if pid is None:
            msg = f"message.participant: {address} is not the address of a participant here"
            raise _refuse(msg, "unknown_participant")
        now = self._now()
        deadline = int(message["deadline"])
        if now.timestamp() > deadline:
            msg = f"message.deadline: {_label(deadline)} has passed (now {now.isoformat()})"
            raise _refuse(msg, "deadline_passed")
        nonce = int(message["nonce"])
        used = self.store.signed_order_with_nonce(pid, nonce)
        if used is not None:
            msg = f"message.nonce: {nonce} of {pid} is used by {used['digest']}; use another"
            raise _refuse(msg, "nonce_reused")
        row: dict[str, Any] = {
            "digest": v.digest,
            "participant": str(pid),
            "signer": v.signer,
            "nonce": nonce,
            "kind": v.kind.value,
            "interval_id": None,
            "valid_from": None,
            "valid_until": None,
            "status": ACCEPTED,
            "message": _json_message(message),
            "signature": v.signature,
            "typed_data": v.typed_data,
            "received_at": now,
            "cancel_digest": None,
            "cancelled_from": None,
        }
        cancels: str | None = None
        cancelled_from = 0
        if v.kind is MessageKind.ORDER:
            row["interval_id"] = self._check_order(pid, message, now)
        elif v.kind is MessageKind.STANDING_ORDER:
            row["valid_from"], row["valid_until"] = self._check_standing(pid, message, now)
        else:
            cancels, cancelled_from = self._check_cancel(pid, message, now)
            row["cancel_digest"] = cancels
        stored, new = self.store.add_signed_order(
            row, cancels=cancels, cancelled_from=cancelled_from
        )
        if new:
            return ack_of(stored)
        if stored.get("digest") == v.digest:  # raced by the same message
            return ack_of(stored, duplicate=True)
        if cancels is not None and stored.get("digest") == cancels:
            msg = f"message.orderDigest: {cancels} was cancelled meanwhile"
            raise _refuse(msg, "already_cancelled")
        msg = f"message.nonce: {nonce} of {pid} is used by {stored.get('digest')}; use another"
        raise _refuse(msg, "nonce_reused")

    def _now(self) -> datetime:
        now = self.now()
        if now.tzinfo is None:
            msg = "the intake's clock gave a naive datetime; it must be UTC-aware"
            raise ControllerError(msg)
        return now.astimezone(UTC)

    # ------------------------------------------------------------------ the rules by kind
    def _gate_open(self, start: int, now: datetime) -> bool:
        """Whether the gate of the interval starting at ``start`` [Unix s] is still open.

        Open by the clock and not yet claimed for clearing (module docstring).
        """
        return now.timestamp() < start - self._gate_s and start > self._closed_through

    def _first_open(self, now: datetime) -> int:
        """The start [Unix s] of the first interval whose gate is still open at ``now``."""
        length = self.site.interval_s
        floor_s = int(now.timestamp() // 1)
        by_clock = length * ((floor_s + self._gate_s) // length + 1)
        after_claims = length * (self._closed_through // length + 1)
        return max(by_clock, after_claims)

    def _check_energy(self, where: str, energy: int) -> None:
        if not 1 <= energy <= self.max_order_wh:
            msg = f"{where}: {energy} Wh is outside 1-{self.max_order_wh} Wh"
            raise _refuse(msg, "energy_out_of_range")

    def _check_price(self, where: str, price: int) -> None:
        if price > self.max_price:
            msg = f"{where}: {price} per kWh is above the limit {self.max_price}"
            raise _refuse(msg, "price_out_of_range")

    def _check_order(self, pid: ParticipantId, m: Mapping[str, Any], now: datetime) -> int:
        start = int(m["intervalStart"])
        length = self.site.interval_s
        if start % length:
            msg = (
                f"message.intervalStart: {start} ({_label(start)}) is not on a boundary of "
                f"the site's {length} s intervals"
            )
            raise _refuse(msg, "not_on_boundary")
        if not self._gate_open(start, now):
            gate = start - self._gate_s
            msg = (
                f"message.intervalStart: the gate of {_label(start)} closed at {_label(gate)} "
                f"(now {now.isoformat()})"
            )
            raise _refuse(msg, "gate_closed")
        if start - now.timestamp() > MAX_HORIZON_S:
            msg = f"message.intervalStart: {_label(start)} is more than {MAX_HORIZON_S} s ahead"
            raise _refuse(msg, "too_far_ahead")
        energy, price = int(m["energyWh"]), int(m["limitPrice"])
        self._check_energy("message.energyWh", energy)
        self._check_price("message.limitPrice", price)
        if OrderSide(int(m["side"])) is OrderSide.BUY:
            self._check_escrow(pid, start, buyer_payment(energy, price), "message.limitPrice")
        return start

    def _check_standing(
        self, pid: ParticipantId, m: Mapping[str, Any], now: datetime
    ) -> tuple[int, int]:
        kind = _KIND_OF_CODE[StandingKind(int(m["kind"]))]
        energy, price = int(m["energyWh"]), int(m["price"])
        discharge = int(m["dischargePrice"])
        low, high = int(m["minSocPermille"]), int(m["maxSocPermille"])
        self._check_price("message.price", price)
        if kind in {OrderKind.BUY, OrderKind.SELL}:
            self._check_energy("message.energyWh", energy)
        elif energy:
            msg = f"message.energyWh: a {kind} order takes 0, not {energy}"
            raise _refuse(msg, "not_for_kind")
        if kind is OrderKind.BATTERY:
            self._check_price("message.dischargePrice", discharge)
            if discharge < price:
                msg = f"message.dischargePrice: {discharge} must be >= price ({price})"
                raise _refuse(msg, "price_out_of_range")
            if not low < high <= PERMILLE_MAX:
                msg = (
                    f"message.minSocPermille/maxSocPermille: need min < max <= {PERMILLE_MAX}, "
                    f"got {low} and {high}"
                )
                raise _refuse(msg, "soc_out_of_range")
        else:
            for name, value in (
                ("dischargePrice", discharge),
                ("minSocPermille", low),
                ("maxSocPermille", high),
            ):
                if value:
                    msg = f"message.{name}: only battery orders take it (0), got {value}"
                    raise _refuse(msg, "not_for_kind")
        valid_from, valid_until = int(m["validFrom"]), int(m["validUntil"])
        if valid_from >= valid_until:
            msg = f"message.validFrom: {valid_from} must be before validUntil ({valid_until})"
            raise _refuse(msg, "bad_window")
        length = self.site.interval_s
        first = max(-(-valid_from // length) * length, self._first_open(now))
        if first >= valid_until:
            msg = (
                f"message.validUntil: no interval whose gate is still open starts before "
                f"{_label(valid_until)} (the first open one starts {_label(first)})"
            )
            raise _refuse(msg, "window_closed")
        if first - now.timestamp() > MAX_HORIZON_S:
            msg = f"message.validFrom: {_label(first)} is more than {MAX_HORIZON_S} s ahead"
            raise _refuse(msg, "too_far_ahead")
        if kind is OrderKind.BUY:
            self._check_escrow(pid, first, buyer_payment(energy, price), "message.price")
        return first, min(valid_until, FOREVER)

    def _check_cancel(
        self, pid: ParticipantId, m: Mapping[str, Any], now: datetime
    ) -> tuple[str, int]:
        target_digest = str(m["orderDigest"])
        target = self.store.signed_order(target_digest)
        if target is None:
            msg = f"message.orderDigest: no order {target_digest}"
            raise _refuse(msg, "unknown_order")
        if target["participant"] != pid:
            msg = f"message.orderDigest: {target_digest} is not an order of {pid}"
            raise _refuse(msg, "not_your_order")
        if target["kind"] == MessageKind.CANCEL.value:
            msg = f"message.orderDigest: {target_digest} is a Cancel"
            raise _refuse(msg, "not_cancellable")
        if target["status"] == CANCELLED:
            msg = f"message.orderDigest: {target_digest} is cancelled already"
            raise _refuse(msg, "already_cancelled")
        if target["kind"] == MessageKind.ORDER.value:
            start = int(target["interval_id"])
            if not self._gate_open(start, now):
                gate = start - self._gate_s
                msg = (
                    f"message.orderDigest: the gate of its interval {_label(start)} closed at "
                    f"{_label(gate)}; it stays in that interval's book"
                )
                raise _refuse(msg, "gate_closed")
            return target_digest, start
        first = max(int(target["valid_from"]), self._first_open(now))
        if first >= int(target["valid_until"]):
            msg = (
                f"message.orderDigest: every interval of {target_digest} (until "
                f"{_label(int(target['valid_until']))}) is past its gate closure"
            )
            raise _refuse(msg, "gate_closed")
        return target_digest, first

    def _check_escrow(self, pid: ParticipantId, start: int, cost: int, where: str) -> None:
        """Refuse a buy that could cost more than the participant's free escrow [token units].

        ``cost`` counts together with the participant's other signed buys at ``start``.
        """
        if self.escrow is None or cost == 0:
            return
        free = self.escrow(pid)
        if free is None:
            return
        # only this participant's rows: reading the whole interval's book made each order
        # cost O(orders already placed) (benchmarks/api.py)
        committed = sum(
            signed_buy_cost(r)
            for r in self.store.signed_orders_at(start, participant=str(pid))
            if r["participant"] == pid
        )
        if committed + cost > free:
            msg = (
                f"{where}: the buy can cost up to {cost} token units; with {committed} of "
                f"{pid}'s other signed buys for {_label(start)} that is more than its free "
                f"escrow {free}"
            )
            raise _refuse(msg, "escrow_insufficient")


def signed_buy_cost(row: Mapping[str, Any]) -> int:
    """The worst-case cost of a stored signed buy in one interval [token units] (0 if none).

    An ``Order`` to buy costs ``ceil(energyWh * limitPrice / 1000)``; a fixed ``buy``
    standing order ``ceil(energyWh * price / 1000)`` per interval; everything else 0 here
    (forecast-derived bids are capped by the cycle's credit check).
    """
    m = row["message"]
    if row["kind"] == MessageKind.ORDER.value and int(m["side"]) == OrderSide.BUY:
        return buyer_payment(int(m["energyWh"]), int(m["limitPrice"]))
    if row["kind"] == MessageKind.STANDING_ORDER.value and int(m["kind"]) == StandingKind.BUY:
        return buyer_payment(int(m["energyWh"]), int(m["price"]))
    return 0


# ---------------------------------------------------------------------- into the book
@dataclass(frozen=True, slots=True, kw_only=True)
class SignedBook:
    """What the signed orders in force add to an interval's plan.

    ``standing``: per participant with signed standing orders in force, its standing orders
    with id tags (site-file ones ``str(n)``, signed ones their digest), the
    ``orders_in_force`` of :func:`controller.bidding.plan_orders`; ``orders``: the signed
    one-off orders as planned fixed bids and offers; ``rows``: the stored rows used (for the
    audit record).
    """

    standing: Mapping[ParticipantId, Sequence[tuple[str, StandingOrder]]]
    orders: tuple[PlannedOrder, ...]
    rows: tuple[Mapping[str, Any], ...]


def standing_order_of(message: Mapping[str, Any]) -> StandingOrder:
    """The standing order a signed ``StandingOrder`` message stands for.

    Parameters
    ----------
    message : Mapping
        The message (``kind`` code, ``energyWh``, ``price``, ``dischargePrice``,
        ``minSocPermille``, ``maxSocPermille``).

    Returns
    -------
    StandingOrder
        With the SoC bounds in percent (permille / 10).
    """
    kind = _KIND_OF_CODE[StandingKind(int(message["kind"]))]
    battery = kind is OrderKind.BATTERY
    return StandingOrder(
        kind=kind,
        price=int(message["price"]),
        energy_wh=int(message["energyWh"]),
        discharge_price=int(message["dischargePrice"]),
        min_soc_percent=int(message["minSocPermille"]) / 10 if battery else 10.0,
        max_soc_percent=int(message["maxSocPermille"]) / 10 if battery else 95.0,
    )


def signed_book(
    rows: Iterable[Mapping[str, Any]], site: SiteConfig, interval: Interval
) -> SignedBook:
    """The signed orders in force at ``interval`` as plan inputs (see the module docstring).

    Parameters
    ----------
    rows : Iterable of Mapping
        :meth:`controller.store.Store.signed_orders_at` of the interval, oldest first.
    site : SiteConfig
        The site (participants' buses and site-file standing orders).
    interval : Interval
        The interval being cleared.

    Returns
    -------
    SignedBook
        Standing orders per participant, one-off orders, and the rows used (rows of
        participants no longer in the site are left out).
    """
    by_id = {p.id: p for p in site.participants}
    used: list[Mapping[str, Any]] = []
    orders: list[PlannedOrder] = []
    signed_standing: dict[ParticipantId, list[tuple[str, StandingOrder]]] = {}
    for row in rows:
        p = by_id.get(ParticipantId(str(row["participant"])))
        if p is None or row["kind"] == MessageKind.CANCEL.value:
            continue
        used.append(row)
        m = row["message"]
        digest = str(row["digest"])
        if row["kind"] == MessageKind.STANDING_ORDER.value:
            signed_standing.setdefault(p.id, []).append((digest, standing_order_of(m)))
            continue
        buy = int(m["side"]) == OrderSide.BUY
        cls: type[Bid] | type[Offer] = Bid if buy else Offer
        order = cls(
            order_id=OrderId(f"{p.id}:{interval.interval_id}:signed:{digest}"),
            participant=p.id,
            bus=p.bus,
            interval=interval,
            energy_wh=Wh(int(m["energyWh"])),
            limit_price=PricePerKwh(int(m["limitPrice"])),
        )
        kind = PlannedKind.BUY if buy else PlannedKind.SELL
        orders.append(PlannedOrder(order=order, device=None, kind=kind))
    standing: dict[ParticipantId, list[tuple[str, StandingOrder]]] = {}
    for pid, signed in signed_standing.items():
        latest: dict[OrderKind, tuple[str, StandingOrder]] = {}
        fixed: list[tuple[str, StandingOrder]] = []
        for tag, so in signed:  # oldest first: a later one of a forecast kind wins
            if so.kind in _FORECAST_KINDS:
                latest[so.kind] = (tag, so)
            else:
                fixed.append((tag, so))
        kept = [(str(n), so) for n, so in enumerate(by_id[pid].orders) if so.kind not in latest]
        standing[pid] = kept + sorted(latest.values(), key=lambda t: t[1].kind) + fixed
    return SignedBook(standing=standing, orders=tuple(orders), rows=tuple(used))


# ---------------------------------------------------------------------- the audit record
def signed_evidence(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The audit record's ``signed_orders``: what each signed order in force was, as signed.

    Parameters
    ----------
    rows : Iterable of Mapping
        The rows used (:attr:`SignedBook.rows`).

    Returns
    -------
    list of dict
        ``digest``, ``kind``, ``participant``, ``signature`` and ``typed_data`` (the
        ``eth_signTypedData_v4`` JSON), sorted by digest (no wall-clock field: the record is
        the same whenever it is built).
    """
    out = [
        {
            "digest": str(r["digest"]),
            "kind": str(r["kind"]),
            "participant": str(r["participant"]),
            "signature": str(r["signature"]),
            "typed_data": r["typed_data"],
        }
        for r in rows
    ]
    return sorted(out, key=lambda e: e["digest"])


def check_signed_orders(
    record: Mapping[str, Any], *, domain: tuple[int, str] | None = None
) -> list[str]:
    """Re-verify every signed order an audit record carries (for ``peergrid audit verify``).

    For each entry of ``record["signed_orders"]``: the signature verifies over its typed data
    on the domain it names (:func:`adapters.chain.typed_data.verify`), the digest is the one
    recorded, the signer is the address the record's ``accounts`` give the participant, and
    every entry has the same domain; every book order ``<p>:<T>:signed:<digest>`` has its
    entry, with the signed side, energy and limit price. With ``domain``, every entry's
    domain names that chain and contract (the audited Settlement). Records without
    ``signed_orders`` (older ones) pass.

    Parameters
    ----------
    record : Mapping
        An audit record.
    domain : (int, str) or None
        The audited chain id and Settlement contract address; ``None`` checks only that
        the entries share one domain.

    Returns
    -------
    list of str
        One line per problem (``interval 2026-06-21T08:30Z (id 1782030600):
        signed_orders[<digest>]: ...``).
    """
    entries = record.get("signed_orders") or []
    interval = record.get("interval")
    where = f"interval {utc_label(int(interval))} (id {interval})" if interval else "a record"
    accounts = {str(k): str(v).lower() for k, v in (record.get("accounts") or {}).items()}
    problems: list[str] = []
    domains: set[tuple[Any, ...]] = set()
    messages: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        tag = f"{where}: signed_orders[{entry.get('digest')}]"
        data = entry.get("typed_data") or {}
        dom = data.get("domain") if isinstance(data, Mapping) else None
        if not isinstance(dom, Mapping):
            problems.append(f"{tag}: no typed data with a domain")
            continue
        try:
            chain_id = int(dom.get("chainId", -1))
            v = verify(
                {"typedData": data, "signature": entry.get("signature")},
                chain_id=chain_id,
                verifying_contract=str(dom.get("verifyingContract", "")),
            )
        except (TypedDataRefused, TypeError, ValueError) as exc:
            problems.append(f"{tag}: the signature does not verify ({exc})")
            continue
        named = (chain_id, str(dom.get("verifyingContract", "")).lower())
        domains.add(named)
        if domain is not None and named != (int(domain[0]), domain[1].lower()):
            problems.append(
                f"{tag}: signed for chain {named[0]} and contract {named[1]}, the audited "
                f"settlement is chain {domain[0]} contract {domain[1].lower()}"
            )
        if v.digest != entry.get("digest"):
            problems.append(f"{tag}: the typed data's digest is {v.digest}")
        want = accounts.get(str(entry.get("participant")))
        if want is not None and v.signer.lower() != want:
            problems.append(
                f"{tag}: signed by {v.signer}, the record's address of "
                f"{entry.get('participant')} is {want}"
            )
        messages[v.digest] = v.message
    if len(domains) > 1:
        problems.append(f"{where}: signed_orders: signed on {len(domains)} different domains")
    for order in (record.get("book") or {}).get("orders", []) or []:
        order_id = str(order.get("order_id", ""))
        parts = order_id.split(":")
        if len(parts) != 4 or parts[2] != "signed":  # <p>:<T>:signed:<digest>
            continue
        m = messages.get(parts[3])
        if m is None:
            problems.append(f"{where}: book order {order_id} has no verified signed order")
            continue
        side = "buy" if int(m["side"]) == OrderSide.BUY else "sell"
        booked_wh = int(order.get("energy_wh", -1))
        # the cycle's credit cap may cut a bid (never raise it): 1 Wh up to the signed energy
        if (
            str(order.get("side", "")) != side
            or int(order.get("limit_price", -1)) != int(m["limitPrice"])
            or not 1 <= booked_wh <= int(m["energyWh"])
        ):
            problems.append(
                f"{where}: book order {order_id} is {order.get('side')} {booked_wh} Wh at "
                f"{order.get('limit_price')} per kWh; signed: {side} {m['energyWh']} Wh at "
                f"{m['limitPrice']} per kWh"
            )
    return problems


def _json_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A verified message as stored: ints that JSON keeps exactly (a uint256 may not)."""
    return {k: (str(v) if k == "nonce" else v) for k, v in message.items()}


def _label(unix_s: int) -> str:
    """``unix_s`` as ISO 8601 UTC (a uint64 far beyond the calendar as the number itself)."""
    try:
        return datetime.fromtimestamp(unix_s, UTC).isoformat()
    except (OverflowError, ValueError, OSError):
        return f"{unix_s} (Unix s)"


__all__ = [
    "MAX_HORIZON_S",
    "STATUS_OF_CODE",
    "Ack",
    "IntakeRefused",
    "OrderIntake",
    "OrderLedger",
    "SignedBook",
    "ack_of",
    "check_signed_orders",
    "signed_book",
    "signed_buy_cost",
    "signed_evidence",
    "standing_order_of",
]
