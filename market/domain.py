"""Core types of PeerGrid's market kernel (frozen dataclasses, standard library only).

Units and signs (DESIGN.md section 3):

* energy ``*_wh: int`` [Wh], power ``*_w: int`` [W], voltage ``vm_pu`` [p.u.],
  loading ``*_percent`` [%];
* money in integer token base units (6 decimals), prices in base units per kWh;
* a :class:`MeterReading`'s ``p_w`` is positive when the participant *imports* from the
  microgrid (consumes) and negative when it exports (produces);
* timestamps are timezone-aware UTC; intervals are half-open ``[start, end)`` aligned to
  their length. Naive datetimes are rejected here, at the boundary.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NewType

from market.canonical import content_hash
from market.errors import InvalidInterval, InvalidOrder, SettlementError
from market.units import PricePerKwh, TokenUnits, W, Wh

if TYPE_CHECKING:
    from market.signed_readings import SignedReading

ParticipantId = NewType("ParticipantId", str)
BusId = NewType("BusId", str)
"""The pandapower bus *name*; unique within one grid."""
OrderId = NewType("OrderId", str)
DeviceId = NewType("DeviceId", str)

GRID = ParticipantId("GRID")
"""The upstream grid: buyer and seller of last resort, counterparty of every grid trade."""
COMMUNITY = ParticipantId("COMMUNITY")
"""The community account: receives rounding remainders and congestion rent."""


def require_utc(moment: datetime, what: str = "timestamp") -> datetime:
    """Return ``moment`` converted to UTC; reject naive datetimes.

    Parameters
    ----------
    moment : datetime
        A timezone-aware time.
    what : str
        What the time is, for the error message.

    Returns
    -------
    datetime
        The same instant in UTC.

    Raises
    ------
    InvalidInterval
        If ``moment`` has no timezone.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        msg = f"{what} must be timezone-aware (UTC), got naive {moment.isoformat()}"
        raise InvalidInterval(msg)
    return moment.astimezone(UTC)


def utc_label(moment: datetime | int) -> str:
    """A time as people read it in messages and logs: ISO 8601 in UTC with ``Z``.

    Parameters
    ----------
    moment : datetime or int
        A timezone-aware time, or Unix seconds (an interval id, a boundary) [s].

    Returns
    -------
    str
        ``2026-06-21T09:00Z`` (seconds shown only when not zero: ``2026-06-21T09:07:30Z``);
        Unix seconds outside the calendar come back as ``<n> (Unix s)``, a naive datetime
        as its ISO form (unknown zone).
    """
    if isinstance(moment, datetime):
        if moment.tzinfo is None or moment.utcoffset() is None:
            return moment.isoformat()
        moment = moment.astimezone(UTC)
    else:
        try:
            moment = datetime.fromtimestamp(int(moment), UTC)
        except (OverflowError, OSError, ValueError):
            return f"{moment} (Unix s)"
    if moment.second or moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + "Z"
    return moment.strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    """A market interval ``[start, start + length_s)``, aligned to its length.

    Parameters
    ----------
    start : datetime
        Timezone-aware start; stored in UTC.
    length_s : int
        Length [s], > 0; ``start`` must be a multiple of it since the Unix epoch.
    """

    start: datetime
    length_s: int = 900

    def __post_init__(self) -> None:
        start = require_utc(self.start, "interval start")
        object.__setattr__(self, "start", start)
        if self.length_s <= 0:
            msg = f"interval length must be > 0 s, got {self.length_s}"
            raise InvalidInterval(msg)
        if int(start.timestamp()) % self.length_s or start.microsecond:
            msg = f"interval start {start.isoformat()} is not aligned to {self.length_s} s"
            raise InvalidInterval(msg)

    @classmethod
    def containing(cls, moment: datetime, length_s: int = 900) -> Interval:
        """Return the interval of ``length_s`` [s] that contains ``moment``.

        Parameters
        ----------
        moment : datetime
            A timezone-aware time.
        length_s : int
            Interval length [s].

        Returns
        -------
        Interval
            The aligned interval with ``start <= moment < end``.
        """
        moment = require_utc(moment)
        epoch = int(moment.timestamp())
        return cls(datetime.fromtimestamp(epoch - epoch % length_s, UTC), length_s)

    @classmethod
    def from_id(cls, interval_id: int, length_s: int = 900) -> Interval:
        """The interval whose start is ``interval_id`` Unix seconds.

        Parameters
        ----------
        interval_id : int
            The start [Unix s], aligned to ``length_s``.
        length_s : int
            Interval length [s].

        Returns
        -------
        Interval
            The interval.
        """
        return cls(datetime.fromtimestamp(interval_id, UTC), length_s)

    @property
    def end(self) -> datetime:
        """Exclusive end of the interval (UTC)."""
        return self.start + timedelta(seconds=self.length_s)

    @property
    def hours(self) -> float:
        """Length [h]."""
        return self.length_s / 3600

    @property
    def interval_id(self) -> int:
        """Integer key of the interval: its start as Unix seconds (used on-chain)."""
        return int(self.start.timestamp())

    def next(self) -> Interval:
        """The interval that follows this one."""
        return Interval(self.end, self.length_s)

    def contains(self, moment: datetime) -> bool:
        """Whether ``moment`` lies in ``[start, end)``.

        Parameters
        ----------
        moment : datetime
            A timezone-aware time.

        Returns
        -------
        bool
            True inside the half-open interval.
        """
        moment = require_utc(moment)
        return self.start <= moment < self.end

    def label(self) -> str:
        """Short ISO label, e.g. ``2026-06-21T12:00Z``."""
        return self.start.strftime("%Y-%m-%dT%H:%MZ")


class Side(enum.StrEnum):
    """Side of an order."""

    BUY = "buy"
    SELL = "sell"


def _check_order_fields(order: Bid | Offer) -> None:
    oid = order.order_id
    if not oid or not isinstance(oid, str):
        msg = f"order id must be a non-empty string, got {oid!r}"
        raise InvalidOrder(msg)
    if not order.participant:
        msg = f"order {oid}: participant is empty"
        raise InvalidOrder(msg)
    if order.participant in {GRID, COMMUNITY}:
        msg = f"order {oid}: participant name {order.participant!r} is reserved"
        raise InvalidOrder(msg)
    if not order.bus:
        msg = f"order {oid}: bus is empty"
        raise InvalidOrder(msg)
    if isinstance(order.energy_wh, bool) or not isinstance(order.energy_wh, int):
        msg = f"order {oid}: energy_wh must be an integer [Wh], got {order.energy_wh!r}"
        raise InvalidOrder(msg)
    if order.energy_wh <= 0:
        msg = f"order {oid}: energy_wh must be > 0, got {order.energy_wh}"
        raise InvalidOrder(msg)
    if isinstance(order.limit_price, bool) or not isinstance(order.limit_price, int):
        msg = (
            f"order {oid}: limit_price must be an integer [token units/kWh], "
            f"got {order.limit_price!r}"
        )
        raise InvalidOrder(msg)
    if order.limit_price < 0:
        msg = f"order {oid}: limit_price must be >= 0, got {order.limit_price}"
        raise InvalidOrder(msg)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bid:
    """An order to buy up to ``energy_wh`` [Wh] in ``interval`` at no more than ``limit_price``.

    ``limit_price`` is in token base units per kWh. A multi-step demand curve is several bids.
    """

    order_id: OrderId
    participant: ParticipantId
    bus: BusId
    interval: Interval
    energy_wh: Wh
    limit_price: PricePerKwh

    side = Side.BUY

    def __post_init__(self) -> None:
        _check_order_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Offer:
    """An order to sell up to ``energy_wh`` [Wh] in ``interval`` at no less than ``limit_price``.

    ``limit_price`` is in token base units per kWh. A multi-step supply curve is several offers.
    """

    order_id: OrderId
    participant: ParticipantId
    bus: BusId
    interval: Interval
    energy_wh: Wh
    limit_price: PricePerKwh

    side = Side.SELL

    def __post_init__(self) -> None:
        _check_order_fields(self)


Order = Bid | Offer


def order_sort_key(order: Order) -> tuple[str, str, int, str]:
    """Canonical order of orders: bus, side, price, id. Input order never matters.

    Parameters
    ----------
    order : Bid or Offer
        An order.

    Returns
    -------
    tuple
        ``(bus, side, limit price [token units / kWh], order id)``, the sort key.
    """
    return (order.bus, order.side.value, order.limit_price, order.order_id)


@dataclass(frozen=True, slots=True)
class OrderBook:
    """The frozen orders of one interval, in canonical order.

    Build it with :func:`market.orderbook.build_order_book`, which validates.
    """

    interval: Interval
    bids: tuple[Bid, ...] = ()
    offers: tuple[Offer, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "bids", tuple(sorted(self.bids, key=order_sort_key)))
        object.__setattr__(self, "offers", tuple(sorted(self.offers, key=order_sort_key)))
        seen: set[str] = set()
        for order in self.orders:
            if order.order_id in seen:
                msg = f"duplicate order id {order.order_id!r}"
                raise InvalidOrder(msg)
            seen.add(order.order_id)
            if order.interval != self.interval:
                msg = (
                    f"order {order.order_id} is for {order.interval.label()}, "
                    f"the book for {self.interval.label()}"
                )
                raise InvalidOrder(msg)

    @property
    def orders(self) -> tuple[Order, ...]:
        """All orders, bids first, each group in canonical order."""
        return (*self.bids, *self.offers)

    def __len__(self) -> int:
        return len(self.bids) + len(self.offers)

    def digest(self) -> str:
        """Hex SHA-256 of the canonical JSON of :func:`book_to_dict` (an audit input hash)."""
        return content_hash(book_to_dict(self))


def book_to_dict(book: OrderBook) -> dict[str, Any]:
    """JSON form of an order book: interval id [Unix s], length [s] and orders in book order.

    Parameters
    ----------
    book : OrderBook
        The book.

    Returns
    -------
    dict
        ``{"interval", "length_s", "orders"}``; each order as :func:`order_to_dict` gives it.
    """
    return {
        "interval": book.interval.interval_id,
        "length_s": book.interval.length_s,
        "orders": [order_to_dict(o) for o in book.orders],
    }


def order_to_dict(order: Order) -> dict[str, Any]:
    """JSON form of an order (energy [Wh], limit price [token units / kWh]).

    Parameters
    ----------
    order : Bid or Offer
        The order.

    Returns
    -------
    dict
        ``order_id``, ``participant``, ``bus``, ``side`` (``buy``/``sell``), ``energy_wh``
        and ``limit_price``.
    """
    return {
        "order_id": order.order_id,
        "participant": order.participant,
        "bus": order.bus,
        "side": order.side.value,
        "energy_wh": order.energy_wh,
        "limit_price": order.limit_price,
    }


class Mechanism(enum.StrEnum):
    """How accepted orders are priced; the values are the CLI's and the JSON's strings."""

    NODAL = "nodal"
    """Pay-as-clear at each order's bus price (the default)."""
    UNIFORM = "uniform"
    """One price for every accepted order."""
    PAY_AS_BID = "pay-as-bid"
    """Every order at its own limit."""


class ClearingStatus(enum.StrEnum):
    """Outcome of one clearing (linopy's ``Status``, in our words)."""

    CLEARED = "cleared"
    NO_CROSSING = "no_crossing"
    BLOCKED = "blocked"  # the book crosses, but network limits or losses block every trade
    INFEASIBLE = "infeasible"
    TIME_LIMIT = "time_limit"
    SOLVER_ERROR = "solver_error"

    @property
    def is_ok(self) -> bool:
        """Whether primal values and prices are meaningful."""
        return self in {ClearingStatus.CLEARED, ClearingStatus.NO_CROSSING, ClearingStatus.BLOCKED}


@dataclass(frozen=True, slots=True, kw_only=True)
class SolverReport:
    """What the solver said, for the audit trail."""

    name: str
    version: str
    termination: str
    build_s: float
    solve_s: float
    extract_s: float


class ViolationKind(enum.StrEnum):
    """Which limit an AC power flow violated."""

    VM_MIN = "vm_min"  # a bus voltage below its minimum [p.u.]
    VM_MAX = "vm_max"  # a bus voltage above its maximum [p.u.]
    LINE_LOADING = "line_loading"  # a line loaded beyond its limit [%]
    TRAFO_LOADING = "trafo_loading"  # a transformer loaded beyond its limit [%]
    NOT_CONVERGED = "not_converged"  # the power flow found no solution

    @property
    def element_type(self) -> str:
        """The pandapower table of the violated element: ``bus``, ``line``, ``trafo``, ``grid``.

        ``grid`` (the whole grid) for :attr:`NOT_CONVERGED`.
        """
        return _ELEMENT_TYPE[self]

    @property
    def is_loading(self) -> bool:
        """Whether the violation is a branch (line or transformer) overload."""
        return self in {ViolationKind.LINE_LOADING, ViolationKind.TRAFO_LOADING}


_ELEMENT_TYPE = {
    ViolationKind.VM_MIN: "bus",
    ViolationKind.VM_MAX: "bus",
    ViolationKind.LINE_LOADING: "line",
    ViolationKind.TRAFO_LOADING: "trafo",
    ViolationKind.NOT_CONVERGED: "grid",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One limit violated in an AC power flow (pandapower names and units).

    ``element`` is the bus, line or transformer name (``grid`` when the power flow did not
    converge) and ``index`` its pandapower index (-1 if none); ``value`` and ``limit`` are in
    p.u. for voltages and percent for loadings (NaN when the power flow did not converge).
    """

    kind: ViolationKind
    element: str
    value: float
    limit: float
    index: int = -1


@dataclass(frozen=True, slots=True, kw_only=True)
class GridCheck:
    """Summary of an AC power flow of a dispatch, produced by ``grid_models``.

    Voltages [p.u.], loadings [%]. ``violations`` is empty when every limit holds.
    ``buses`` holds every bus's voltage as ``(pandapower index, name, vm_pu)`` and
    ``branches`` every line's and transformer's loading as ``(branch id, kind, name,
    loading_percent)`` with ``kind`` ``"line"`` or ``"trafo"`` and the id ``"line<index>"``
    / ``"trafo<index>"`` (both empty when the check did not keep them).
    """

    converged: bool
    min_vm_pu: float
    max_vm_pu: float
    max_line_loading_percent: float
    max_trafo_loading_percent: float
    slack_p_w: int
    violations: tuple[Violation, ...] = ()
    buses: tuple[tuple[int, str, float], ...] = ()
    branches: tuple[tuple[str, str, str, float], ...] = ()

    @property
    def ok(self) -> bool:
        """Converged and no limit violated."""
        return self.converged and not self.violations


@dataclass(frozen=True, slots=True, kw_only=True)
class Trade:
    """Energy ``energy_wh`` [Wh] delivered from ``seller`` to ``buyer`` in ``interval``.

    Either side may be :data:`GRID`. ``buyer_price`` and ``seller_price`` are in token base
    units per kWh (they differ by the congestion rent between the two buses). The buyer pays
    ``buyer_amount`` and the seller receives ``seller_amount`` (exact integer rules of
    :mod:`market.units`); the difference goes to the community.
    """

    interval: Interval
    seller: ParticipantId
    buyer: ParticipantId
    seller_bus: BusId
    buyer_bus: BusId
    seller_order: OrderId | None
    buyer_order: OrderId | None
    energy_wh: Wh
    seller_price: PricePerKwh
    buyer_price: PricePerKwh
    buyer_amount: TokenUnits
    seller_amount: TokenUnits

    @property
    def trade_id(self) -> str:
        """Content hash of the trade (hex SHA-256)."""
        return content_hash(trade_to_dict(self, with_id=False))


def trade_to_dict(trade: Trade, *, with_id: bool = True) -> dict[str, Any]:
    """JSON form of a trade: the leaf of the trades Merkle tree.

    Parameters
    ----------
    trade : Trade
        The trade.
    with_id : bool
        Add ``trade_id``, the content hash of the form without it.

    Returns
    -------
    dict
        The interval id [Unix s], both parties, buses and orders (``null`` for the grid),
        ``energy_wh`` [Wh], both prices [token units / kWh] and both amounts [token units].
    """
    out: dict[str, Any] = {
        "interval": trade.interval.interval_id,
        "seller": trade.seller,
        "buyer": trade.buyer,
        "seller_bus": trade.seller_bus,
        "buyer_bus": trade.buyer_bus,
        "seller_order": trade.seller_order,
        "buyer_order": trade.buyer_order,
        "energy_wh": trade.energy_wh,
        "seller_price": trade.seller_price,
        "buyer_price": trade.buyer_price,
        "buyer_amount": trade.buyer_amount,
        "seller_amount": trade.seller_amount,
    }
    if with_id:
        out["trade_id"] = content_hash(out)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderResult:
    """How one order cleared: accepted energy [Wh], its settlement price, and amount.

    ``amount`` is what the participant pays (buy, positive) or receives (sell, positive).
    """

    order_id: OrderId
    participant: ParticipantId
    bus: BusId
    side: Side
    accepted_wh: Wh
    price: PricePerKwh
    amount: TokenUnits


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearingResult:
    """The outcome of clearing one interval.

    ``prices`` are the nodal prices [token units / kWh] (duals of each bus's energy balance),
    ``grid_import_wh``/``grid_export_wh`` the market's exchange with the upstream grid, and
    ``welfare`` the objective [token units]. ``check`` is the AC power flow of the final
    dispatch. ``reason`` says in words why the status is what it is.
    """

    interval: Interval
    status: ClearingStatus
    reason: str
    orders: tuple[OrderResult, ...]
    prices: tuple[tuple[BusId, PricePerKwh], ...]
    grid_import_wh: Wh
    grid_export_wh: Wh
    trades: tuple[Trade, ...]
    welfare: TokenUnits
    community_rent: TokenUnits
    solver: SolverReport | None
    check: GridCheck | None = None
    iterations: int = 1
    mechanism: Mechanism = Mechanism.NODAL

    @property
    def is_ok(self) -> bool:
        """Whether the result can be acted on and settled."""
        return self.status.is_ok

    @property
    def accepted_wh(self) -> dict[OrderId, Wh]:
        """Accepted energy [Wh] per order id."""
        return {o.order_id: o.accepted_wh for o in self.orders}

    @property
    def price_by_bus(self) -> dict[BusId, PricePerKwh]:
        """Nodal prices as a dict."""
        return dict(self.prices)

    @property
    def cleared_wh(self) -> Wh:
        """Energy [Wh] bought by participants (local plus grid)."""
        return Wh(sum(o.accepted_wh for o in self.orders if o.side is Side.BUY))

    def with_check(self, check: GridCheck, iterations: int) -> ClearingResult:
        """A copy carrying the AC check of its dispatch.

        Parameters
        ----------
        check : GridCheck
            The AC power flow of the final dispatch.
        iterations : int
            How many clearings the AC loop needed.

        Returns
        -------
        ClearingResult
            This result with ``check`` and ``iterations`` replaced.
        """
        return _replace(self, check=check, iterations=iterations)


def _replace(obj: ClearingResult, **changes: Any) -> ClearingResult:  # noqa: ANN401
    import dataclasses  # noqa: PLC0415 - keep the module namespace small

    return dataclasses.replace(obj, **changes)


class ReadingQuality(enum.StrEnum):
    """Quality of a meter reading.

    ``UNVERIFIED``: the device answered, but its signed reading failed the checks of
    :func:`market.signed_readings.check_reading` (signature, key, sequence, time), or it is
    unsigned where the site requires signatures; ``reason`` says which. Its counters are
    kept for the record but vouch for nothing (:mod:`market.settlement`, rule 4b).
    """

    OK = "ok"
    STALE = "stale"
    MISSING = "missing"
    UNVERIFIED = "unverified"


class MeterRole(enum.StrEnum):
    """What a metering device measures for its participant (a site file's device ``role``).

    Settlement (:mod:`market.metering`) uses a participant's ``connection_point`` meters
    where it has any (they see its net exchange with the microgrid, behind-the-meter
    devices included); otherwise it sums its ``generation``, ``load`` and ``storage``
    devices.
    """

    CONNECTION_POINT = "connection_point"
    """A net meter where the participant connects to the microgrid."""
    GENERATION = "generation"
    """A producing device behind the connection point (a PV inverter)."""
    LOAD = "load"
    """A consuming device or sub-meter behind the connection point."""
    STORAGE = "storage"
    """A battery behind the connection point."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterReading:
    """One sample of a participant's device at its microgrid bus.

    ``p_w`` [W] is signed: **positive = import from the microgrid (consumption), negative =
    export (production)** — the OpenEMS GRID convention. ``import_wh_total`` and
    ``export_wh_total`` [Wh] are the device's cumulative counters. A failed read is a value:
    ``quality=MISSING`` with ``reason`` set and the numbers at 0; a too-old one is ``STALE``.
    ``soc_percent`` is set for batteries only. ``signed`` is the reading as the device signed
    it (:mod:`market.signed_readings`; its values are this reading's), ``None`` for an
    unsigned device.
    """

    device_id: DeviceId
    participant: ParticipantId
    bus: BusId
    measured_at: datetime
    p_w: W
    import_wh_total: Wh
    export_wh_total: Wh
    quality: ReadingQuality = ReadingQuality.OK
    reason: str = ""
    soc_percent: float | None = None
    signed: SignedReading | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "measured_at", require_utc(self.measured_at, "measured_at"))


class SetpointKind(enum.StrEnum):
    """What a setpoint controls."""

    PV_LIMIT = "pv_limit"  # maximum export of an inverter [W], >= 0
    BATTERY = "battery"  # battery power [W]: positive = discharge (export), negative = charge


@dataclass(frozen=True, slots=True, kw_only=True)
class Setpoint:
    """A power setpoint [W] written to a device for one interval.

    For ``PV_LIMIT``, ``p_w`` is the maximum active power the inverter may export (>= 0);
    for ``BATTERY``, positive discharges (exports), negative charges. ``reason`` says why a
    PV inverter is held below its forecast production (which limit, how much); empty when it
    is not curtailed. ``forecast_w`` is that forecast production [W] when curtailed (0 when
    not), so the curtailed energy is ``(forecast_w - p_w) x length``.
    """

    device_id: DeviceId
    interval: Interval
    kind: SetpointKind
    p_w: W
    reason: str = ""
    forecast_w: W = W(0)  # noqa: RUF009 (a NewType: an int at run time)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tariffs:
    """The upstream grid's prices for a participant's imbalance [token units / kWh].

    ``import_price`` is paid for energy taken beyond what was cleared (bought from
    :data:`GRID`), ``export_price`` received for energy taken short of it (sold to the grid).
    Both are integers >= 0.
    """

    import_price: PricePerKwh
    export_price: PricePerKwh

    def __post_init__(self) -> None:
        for name in ("import_price", "export_price"):
            price = getattr(self, name)
            if isinstance(price, bool) or not isinstance(price, int) or price < 0:
                msg = f"tariff {name} must be an integer >= 0 [token units/kWh], got {price!r}"
                raise SettlementError(msg)


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementLine:
    """One participant's settlement for one interval. Amounts [token units], + = credit."""

    participant: ParticipantId
    cleared_buy_wh: Wh
    cleared_sell_wh: Wh
    metered_import_wh: Wh
    metered_export_wh: Wh
    imbalance_wh: Wh
    trade_amount: TokenUnits
    imbalance_amount: TokenUnits
    metered: bool
    reason: str = ""
    fee_amount: TokenUnits = TokenUnits(0)  # noqa: RUF009 - a NewType: the int 0
    """The community fee on its local sales [token units], paid to COMMUNITY (>= 0)."""
    unverified: str = ""
    """Why its energy is not verified by signed readings (``""``: it is, or the site has no
    signing policy); an unverified participant earns no reward."""
    penalty_amount: TokenUnits = TokenUnits(0)  # noqa: RUF009 - a NewType: the int 0
    """The penalty for readings that failed verification [token units], to COMMUNITY (>= 0)."""

    @property
    def net_amount(self) -> TokenUnits:
        """Signed total [token units]: positive = the participant is paid."""
        return TokenUnits(
            self.trade_amount + self.imbalance_amount - self.fee_amount - self.penalty_amount
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DebtChange:
    """What one batch did to one account's carried debt balance [token units].

    Balances are signed: positive = the account owes :data:`COMMUNITY` (a debit it could not
    pay), negative = COMMUNITY owes the account (a credit withheld because COMMUNITY could
    not front a shortfall). The batch moved the account's amount by ``after - before`` and
    COMMUNITY's by ``before - after`` (:func:`market.settlement.apply_debts`).
    """

    account: ParticipantId
    before: TokenUnits
    after: TokenUnits


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementBatch:
    """Everything one settlement transaction carries, for one interval.

    ``amounts`` are (account, signed token units) sorted by account, summing to zero.
    ``trades_root`` and ``readings_root`` are 32-byte Merkle roots (:mod:`market.merkle`).
    ``debts`` are the accounts whose carried debt balance the batch collected, paid or
    created, sorted by account (empty for most batches; :func:`market.settlement.apply_debts`).
    """

    interval: Interval
    lines: tuple[SettlementLine, ...]
    amounts: tuple[tuple[ParticipantId, TokenUnits], ...]
    trades_root: bytes
    readings_root: bytes
    import_price: int
    export_price: int
    rewards_wh: tuple[tuple[ParticipantId, Wh], ...] = ()
    debts: tuple[DebtChange, ...] = ()
    community_fee_bps: int = 0
    """The community fee in force [basis points of a local trade's buyer amount]; the
    lines' ``fee_amount`` and the amounts already hold it, so it is not hashed again."""
    reading_signatures: str = ""
    """The site's signing policy when it was settled (``required``/``optional``; ``""``:
    before signed readings, every OK reading counts as verified)."""
    unverified_penalty_bps: int = 0
    """The penalty for unverified readings in force [basis points of the cleared purchase
    valued at the import tariff] (rule 4b)."""
    record_hash: str = ""
    """The content hash of the interval's audit record core (64 hex digits), folded into the
    batch id so the chain commits to the whole record; ``""`` for batches of earlier releases."""

    def __post_init__(self) -> None:
        total = sum(a for _, a in self.amounts)
        if total != 0:
            msg = f"settlement batch for {self.interval.label()} sums to {total}, not 0"
            raise SettlementError(msg)
        if any(d.account == COMMUNITY for d in self.debts):
            msg = f"settlement batch for {self.interval.label()}: COMMUNITY carries no debt"
            raise SettlementError(msg)

    @property
    def batch_id(self) -> str:
        """Hex SHA-256 of the batch's content: the on-chain idempotency key."""
        return batch_id_of(
            self.interval.interval_id,
            self.interval.length_s,
            [[p, a] for p, a in self.amounts],
            self.trades_root.hex(),
            self.readings_root.hex(),
            [[p, wh] for p, wh in self.rewards_wh],
            [[d.account, d.before, d.after] for d in self.debts],
            self.record_hash,
        )

    @property
    def debits(self) -> TokenUnits:
        """Total paid by debited accounts [token units] (equals total credits)."""
        return TokenUnits(-sum(a for _, a in self.amounts if a < 0))


def batch_id_of(
    interval_id: int,
    length_s: int,
    amounts: list[list[Any]],
    trades_root_hex: str,
    readings_root_hex: str,
    rewards_wh: list[list[Any]],
    debts: list[list[Any]] | None = None,
    record_hash: str = "",
) -> str:
    """The batch id from a batch's parts (what an auditor recomputes from a record).

    The content hash (:mod:`market.canonical`) of ``{"interval", "length_s", "amounts",
    "trades_root", "readings_root"}``, plus ``"rewards_wh"`` when it is not empty (so batches
    without rewards kept the ids they had before rewards existed), and ``"debts"`` when it is
    not empty (likewise: batches without debts keep the ids they had before debts existed),
    and ``"record_hash"`` when it is not empty (the audit record's anchor, issue 11: the
    content hash of the record's core, which holds this batch without its id).

    Parameters
    ----------
    interval_id : int
        The interval's start [Unix s].
    length_s : int
        The interval's length [s].
    amounts : list of [str, int]
        ``[account, signed token units]`` pairs, sorted by account.
    trades_root_hex, readings_root_hex : str
        The Merkle roots as 64 lowercase hex digits.
    rewards_wh : list of [str, int]
        ``[producer, verified local delivery [Wh]]`` pairs.
    debts : list of [str, int, int], optional
        ``[account, balance before, balance after]`` [token units] (:class:`DebtChange`).
    record_hash : str
        The audit record core's content hash (64 hex digits); ``""``: none (older batches).

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    content: dict[str, Any] = {
        "interval": interval_id,
        "length_s": length_s,
        "amounts": amounts,
        "trades_root": trades_root_hex,
        "readings_root": readings_root_hex,
    }
    if rewards_wh:
        content["rewards_wh"] = rewards_wh
    if debts:
        content["debts"] = debts
    if record_hash:
        content["record_hash"] = record_hash
    return content_hash(content)


__all__ = [
    "COMMUNITY",
    "GRID",
    "Bid",
    "BusId",
    "ClearingResult",
    "ClearingStatus",
    "DebtChange",
    "DeviceId",
    "GridCheck",
    "Interval",
    "Mechanism",
    "MeterReading",
    "MeterRole",
    "Offer",
    "Order",
    "OrderBook",
    "OrderId",
    "OrderResult",
    "ParticipantId",
    "ReadingQuality",
    "Setpoint",
    "SetpointKind",
    "SettlementBatch",
    "SettlementLine",
    "Side",
    "SolverReport",
    "Tariffs",
    "Trade",
    "Violation",
    "ViolationKind",
    "batch_id_of",
    "book_to_dict",
    "order_sort_key",
    "order_to_dict",
    "require_utc",
    "trade_to_dict",
    "utc_label",
]
