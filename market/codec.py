"""JSON forms of the kernel's types: what the database stores, the audit hashes, the CLI prints.

Each form is defined once: here, or in :mod:`market.domain` for the forms whose hash is a
type's id (orders, books, trades), re-exported here.

* :class:`~market.domain.Bid`/:class:`~market.domain.Offer`, :class:`~market.domain.OrderBook`:
  :func:`order_to_dict`, :func:`book_to_dict` (read back by
  :func:`market.orderbook.parse_order_rows`);
* :class:`~market.domain.ClearingResult`: :func:`result_to_dict` and :func:`result_from_dict`,
  its trades :func:`trade_to_dict`, its AC check :func:`check_to_dict`, the solver's stage
  times (not deterministic, kept apart) :func:`timings_of`;
* :class:`~market.domain.MeterReading`: :func:`reading_to_dict`;
* :class:`~market.domain.Setpoint`: :func:`setpoint_to_dict`;
* :class:`~market.domain.SettlementBatch`: :func:`batch_to_dict` and :func:`batch_from_dict`.

The readings Merkle tree's leaf for one device is :func:`reading_leaf` of its two boundary
readings; :func:`reading_leaves` pairs two snapshots. Settlement
(:func:`market.settlement.settle`) builds the tree from the snapshots it settles with, the
audit from the readings its record stored: both through these two functions, so they cannot
disagree.

Every form holds only what canonical JSON (:mod:`market.canonical`) can encode: money and
energy as integers, times as ISO 8601 strings, roots as hex. A float that is not a number
(the voltages of a power flow that did not converge) is written as ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from market.domain import (
    BusId,
    ClearingResult,
    ClearingStatus,
    DebtChange,
    GridCheck,
    Interval,
    Mechanism,
    MeterReading,
    OrderId,
    OrderResult,
    ParticipantId,
    Setpoint,
    SettlementBatch,
    SettlementLine,
    Side,
    Trade,
    book_to_dict,
    order_to_dict,
    trade_to_dict,
)
from market.errors import BatchMismatch, SettlementError
from market.units import PricePerKwh, TokenUnits, Wh


def _number(value: float) -> float | None:
    """``value``, or ``None`` when it is NaN or infinite (JSON has no such numbers)."""
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------ clearing
def check_to_dict(check: GridCheck | None) -> dict[str, Any] | None:
    """JSON form of an AC check (pandapower names and units).

    Parameters
    ----------
    check : GridCheck or None
        The AC power flow summary of a dispatch.

    Returns
    -------
    dict or None
        ``converged``, ``min_vm_pu``/``max_vm_pu`` [p.u.], ``max_line_loading_percent``/
        ``max_trafo_loading_percent`` [%], ``slack_p_w`` [W] and ``violations`` (``kind``,
        ``element``, ``value``, ``limit``); ``null`` for a number the power flow did not give
        (it did not converge); when the check kept them, ``buses`` (``bus`` pandapower index,
        ``name``, ``vm_pu`` [p.u.]) and ``branches`` (``branch`` id, ``kind`` line|trafo,
        ``name``, ``loading_pct`` [%]). ``None`` when there is no check.
    """
    if check is None:
        return None
    return {
        "converged": check.converged,
        "min_vm_pu": _number(check.min_vm_pu),
        "max_vm_pu": _number(check.max_vm_pu),
        "max_line_loading_percent": _number(check.max_line_loading_percent),
        "max_trafo_loading_percent": _number(check.max_trafo_loading_percent),
        "slack_p_w": check.slack_p_w,
        "violations": [
            {
                "kind": v.kind.value,
                "element": v.element,
                "value": _number(v.value),
                "limit": _number(v.limit),
            }
            for v in check.violations
        ],
        **(
            {
                "buses": [
                    {"bus": i, "name": name, "vm_pu": _number(vm)} for i, name, vm in check.buses
                ],
                "branches": [
                    {"branch": b, "kind": kind, "name": name, "loading_pct": _number(pct)}
                    for b, kind, name, pct in check.branches
                ],
            }
            if check.buses or check.branches
            else {}
        ),
    }


def result_to_dict(result: ClearingResult) -> dict[str, Any]:
    """JSON form of a clearing result (deterministic: no timings).

    Parameters
    ----------
    result : ClearingResult
        The outcome of clearing one interval.

    Returns
    -------
    dict
        ``interval`` [Unix s], ``interval_start`` (ISO 8601), ``length_s`` [s], ``status``,
        ``reason``, ``mechanism``, ``orders`` (``accepted_wh`` [Wh], ``price`` [token units /
        kWh], ``amount`` [token units]), ``prices`` (bus -> nodal price), ``grid``
        (``import_wh``, ``export_wh`` [Wh]), ``trades`` (:func:`trade_to_dict`), ``welfare``
        and ``community_rent`` [token units], ``ac_check`` (:func:`check_to_dict`),
        ``iterations`` and ``solver`` (name, version, termination).
    """
    solver = result.solver
    return {
        "interval": result.interval.interval_id,
        "interval_start": result.interval.start.isoformat(),
        "length_s": result.interval.length_s,
        "status": result.status.value,
        "reason": result.reason,
        "mechanism": result.mechanism,
        "orders": [
            {
                "order_id": o.order_id,
                "participant": o.participant,
                "bus": o.bus,
                "side": o.side.value,
                "accepted_wh": o.accepted_wh,
                "price": o.price,
                "amount": o.amount,
            }
            for o in result.orders
        ],
        "prices": dict(result.prices),
        "grid": {"import_wh": result.grid_import_wh, "export_wh": result.grid_export_wh},
        "trades": [trade_to_dict(t) for t in result.trades],
        "welfare": result.welfare,
        "community_rent": result.community_rent,
        "ac_check": check_to_dict(result.check),
        "iterations": result.iterations,
        "solver": None
        if solver is None
        else {
            "name": solver.name,
            "version": solver.version,
            "termination": solver.termination,
        },
    }


def timings_of(result: ClearingResult) -> dict[str, float]:
    """The solver's stage times, kept apart from the deterministic :func:`result_to_dict`.

    Parameters
    ----------
    result : ClearingResult
        A clearing result.

    Returns
    -------
    dict of str to float
        ``build_s``, ``solve_s``, ``extract_s`` [s]; empty when no solver ran.
    """
    s = result.solver
    if s is None:
        return {}
    return {"build_s": s.build_s, "solve_s": s.solve_s, "extract_s": s.extract_s}


def result_from_dict(data: Mapping[str, Any], interval: Interval) -> ClearingResult:
    """Rebuild the clearing result :func:`result_to_dict` stored, enough to settle and audit it.

    Orders, prices, grid exchange, trades, welfare, rent, iterations and mechanism come back;
    the solver report and the AC check do not (settlement does not need them).

    Parameters
    ----------
    data : mapping
        The stored JSON form.
    interval : Interval
        The interval it is for (the form holds only its id).

    Returns
    -------
    ClearingResult
        The result, with ``solver=None`` and ``check=None``.
    """
    orders = tuple(
        OrderResult(
            order_id=OrderId(o["order_id"]),
            participant=ParticipantId(o["participant"]),
            bus=BusId(o["bus"]),
            side=Side(o["side"]),
            accepted_wh=Wh(o["accepted_wh"]),
            price=PricePerKwh(o["price"]),
            amount=TokenUnits(o["amount"]),
        )
        for o in data.get("orders", [])
    )
    trades = tuple(
        Trade(
            interval=interval,
            seller=ParticipantId(t["seller"]),
            buyer=ParticipantId(t["buyer"]),
            seller_bus=BusId(t["seller_bus"]),
            buyer_bus=BusId(t["buyer_bus"]),
            seller_order=None if t["seller_order"] is None else OrderId(t["seller_order"]),
            buyer_order=None if t["buyer_order"] is None else OrderId(t["buyer_order"]),
            energy_wh=Wh(t["energy_wh"]),
            seller_price=PricePerKwh(t["seller_price"]),
            buyer_price=PricePerKwh(t["buyer_price"]),
            buyer_amount=TokenUnits(t["buyer_amount"]),
            seller_amount=TokenUnits(t["seller_amount"]),
        )
        for t in data.get("trades", [])
    )
    grid = data.get("grid", {})
    return ClearingResult(
        interval=interval,
        status=ClearingStatus(data["status"]),
        reason=str(data.get("reason", "")),
        orders=orders,
        prices=tuple((BusId(b), PricePerKwh(p)) for b, p in sorted(data.get("prices", {}).items())),
        grid_import_wh=Wh(grid.get("import_wh", 0)),
        grid_export_wh=Wh(grid.get("export_wh", 0)),
        trades=trades,
        welfare=TokenUnits(data.get("welfare", 0)),
        community_rent=TokenUnits(data.get("community_rent", 0)),
        solver=None,
        iterations=int(data.get("iterations", 1)),
        mechanism=Mechanism(data.get("mechanism", Mechanism.NODAL)),
    )


# ------------------------------------------------------------------------------ devices
def reading_to_dict(reading: MeterReading) -> dict[str, Any]:
    """JSON form of a meter reading.

    Parameters
    ----------
    reading : MeterReading
        One sample of a device.

    Returns
    -------
    dict
        ``device_id``, ``participant``, ``bus``, ``measured_at`` (ISO 8601, UTC), ``p_w`` [W]
        (+ = import/consumption), ``import_wh_total``/``export_wh_total`` [Wh] (counters),
        ``quality``, ``reason`` and ``soc_percent`` [%] (``None`` unless a battery read a
        number); for a signed reading also ``signed``, the reading as the device signed it
        (:meth:`market.signed_readings.SignedReading.to_ocmf`: OCMF field names, the signed
        message ``PL`` and the signature ``SD``), so the Merkle leaf commits to the signature
        and anyone holding it can verify it again.
    """
    out = {
        "device_id": reading.device_id,
        "participant": reading.participant,
        "bus": reading.bus,
        "measured_at": reading.measured_at.isoformat(),
        "p_w": reading.p_w,
        "import_wh_total": reading.import_wh_total,
        "export_wh_total": reading.export_wh_total,
        "quality": reading.quality.value,
        "reason": reading.reason,
        "soc_percent": None if reading.soc_percent is None else _number(reading.soc_percent),
    }
    if reading.signed is not None:
        out["signed"] = reading.signed.to_ocmf()
    return out


def reading_leaf(start: Mapping[str, Any], end: Mapping[str, Any]) -> dict[str, Any]:
    """The readings-tree item of one device: its readings at both ends of the interval.

    Parameters
    ----------
    start, end : mapping
        The device's readings (:func:`reading_to_dict`) at the interval's start and end.

    Returns
    -------
    dict
        ``{"device_id", "participant", "start", "end"}``, the first two from ``start``.

    Raises
    ------
    SettlementError
        If the two readings are of different devices.
    """
    if start["device_id"] != end["device_id"]:
        msg = f"readings of two devices paired: {start['device_id']!r}, {end['device_id']!r}"
        raise SettlementError(msg)
    return {
        "device_id": start["device_id"],
        "participant": start["participant"],
        "start": dict(start),
        "end": dict(end),
    }


def reading_leaves(
    start: Iterable[Mapping[str, Any]], end: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The readings tree's items: one :func:`reading_leaf` per device read at both ends.

    A device missing from either snapshot has no leaf (its participant is settled as
    unmetered, :mod:`market.metering`). A device read as MISSING or STALE has one: the root
    commits to what the controller saw.

    Parameters
    ----------
    start, end : iterable of mapping
        The two boundary snapshots as :func:`reading_to_dict` forms.

    Returns
    -------
    list of dict
        The leaves, by device id.
    """
    first = {r["device_id"]: r for r in start}
    last = {r["device_id"]: r for r in end}
    return [reading_leaf(first[d], last[d]) for d in sorted(first) if d in last]


def setpoint_to_dict(setpoint: Setpoint) -> dict[str, Any]:
    """JSON form of a setpoint.

    Parameters
    ----------
    setpoint : Setpoint
        A device setpoint.

    Returns
    -------
    dict
        ``device_id``, ``kind`` and ``p_w`` [W] (the interval is the record's).
    """
    return {"device_id": setpoint.device_id, "kind": setpoint.kind.value, "p_w": setpoint.p_w}


# ------------------------------------------------------------------------------ settlement
def batch_to_dict(batch: SettlementBatch) -> dict[str, Any]:
    """JSON form of a settlement batch (the stored intent and the audit's copy).

    Parameters
    ----------
    batch : SettlementBatch
        The batch.

    Returns
    -------
    dict
        ``batch_id``, ``interval`` [Unix s], ``amounts`` (``[account, token units]``, + =
        credit), ``trades_root``/``readings_root`` (hex), ``import_price``/``export_price``
        [token units / kWh], ``rewards`` (``[producer, Wh]``), ``lines`` (one per
        participant, energies [Wh] and amounts [token units]) and, only when the batch
        changed a carried debt, ``debts`` (``[account, balance before, balance after]``
        [token units], :class:`~market.domain.DebtChange`), only when a community fee was in
        force, ``community_fee_bps`` (and each seller line's ``fee_amount`` [token units]),
        only under a signing policy (issue 17), ``reading_signatures`` and
        ``unverified_penalty_bps`` (and a line's ``unverified`` reason and ``penalty_amount``
        [token units] where not verified),
        and, only when the batch is anchored to its audit record, ``record_hash`` (64 hex
        digits).
    """
    out: dict[str, Any] = {
        "batch_id": batch.batch_id,
        "interval": batch.interval.interval_id,
        "amounts": [[a, v] for a, v in batch.amounts],
        "trades_root": batch.trades_root.hex(),
        "readings_root": batch.readings_root.hex(),
        "import_price": batch.import_price,
        "export_price": batch.export_price,
        "rewards": [[p, wh] for p, wh in batch.rewards_wh],
        "lines": [
            {
                "participant": ln.participant,
                "cleared_buy_wh": ln.cleared_buy_wh,
                "cleared_sell_wh": ln.cleared_sell_wh,
                "metered_import_wh": ln.metered_import_wh,
                "metered_export_wh": ln.metered_export_wh,
                "imbalance_wh": ln.imbalance_wh,
                "trade_amount": ln.trade_amount,
                "imbalance_amount": ln.imbalance_amount,
                "net_amount": ln.net_amount,
                "metered": ln.metered,
                "reason": ln.reason,
                **({"fee_amount": ln.fee_amount} if ln.fee_amount else {}),
                **({"unverified": ln.unverified} if ln.unverified else {}),
                **({"penalty_amount": ln.penalty_amount} if ln.penalty_amount else {}),
            }
            for ln in batch.lines
        ],
    }
    if batch.community_fee_bps:
        out["community_fee_bps"] = batch.community_fee_bps
    if batch.reading_signatures:
        out["reading_signatures"] = batch.reading_signatures
        out["unverified_penalty_bps"] = batch.unverified_penalty_bps
    if batch.debts:
        out["debts"] = [[d.account, d.before, d.after] for d in batch.debts]
    if batch.record_hash:
        out["record_hash"] = batch.record_hash
    return out


def batch_from_dict(data: Mapping[str, Any], interval: Interval) -> SettlementBatch:
    """Rebuild a stored settlement batch and check it against its recorded id.

    Parameters
    ----------
    data : mapping
        The :func:`batch_to_dict` form.
    interval : Interval
        The interval it settles (the form holds only its id).

    Returns
    -------
    SettlementBatch
        The batch, whose ``batch_id`` equals the stored one.

    Raises
    ------
    BatchMismatch
        If the content does not hash to the stored ``batch_id`` (a ``ValueError``).
    SettlementError
        If the amounts do not sum to zero.
    """
    batch = SettlementBatch(
        interval=interval,
        lines=tuple(
            SettlementLine(
                participant=ParticipantId(ln["participant"]),
                cleared_buy_wh=Wh(ln["cleared_buy_wh"]),
                cleared_sell_wh=Wh(ln["cleared_sell_wh"]),
                metered_import_wh=Wh(ln["metered_import_wh"]),
                metered_export_wh=Wh(ln["metered_export_wh"]),
                imbalance_wh=Wh(ln["imbalance_wh"]),
                trade_amount=TokenUnits(ln["trade_amount"]),
                imbalance_amount=TokenUnits(ln["imbalance_amount"]),
                metered=bool(ln["metered"]),
                reason=str(ln.get("reason", "")),
                fee_amount=TokenUnits(int(ln.get("fee_amount", 0))),
                unverified=str(ln.get("unverified", "")),
                penalty_amount=TokenUnits(int(ln.get("penalty_amount", 0))),
            )
            for ln in data.get("lines", [])
        ),
        amounts=tuple((ParticipantId(a), TokenUnits(v)) for a, v in data["amounts"]),
        trades_root=bytes.fromhex(data["trades_root"]),
        readings_root=bytes.fromhex(data["readings_root"]),
        import_price=int(data["import_price"]),
        export_price=int(data["export_price"]),
        rewards_wh=tuple((ParticipantId(p), Wh(wh)) for p, wh in data.get("rewards", [])),
        debts=tuple(
            DebtChange(account=ParticipantId(a), before=TokenUnits(before), after=TokenUnits(after))
            for a, before, after in data.get("debts", [])
        ),
        community_fee_bps=int(data.get("community_fee_bps", 0)),
        reading_signatures=str(data.get("reading_signatures", "")),
        unverified_penalty_bps=int(data.get("unverified_penalty_bps", 0)),
        record_hash=str(data.get("record_hash", "")),
    )
    if batch.batch_id != data["batch_id"]:
        msg = f"stored batch {data['batch_id']} does not match its content ({batch.batch_id})"
        raise BatchMismatch(msg)
    return batch


__all__ = [
    "batch_from_dict",
    "batch_to_dict",
    "book_to_dict",
    "check_to_dict",
    "order_to_dict",
    "reading_leaf",
    "reading_leaves",
    "reading_to_dict",
    "result_from_dict",
    "result_to_dict",
    "setpoint_to_dict",
    "timings_of",
    "trade_to_dict",
]
