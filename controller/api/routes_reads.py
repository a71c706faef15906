"""Reads of the site: intervals, the current interval, audit records and devices.

Every route needs a session. A prosumer sees the public figures of every interval (status,
nodal prices, grid exchange, AC check, settlement transaction) but only the trades it is a
party to, and only its own devices; audit records (every participant's orders and readings)
are for operators and auditors.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from controller.api.deps import AllReaderDep, ApiError, PrincipalDep, SiteDep, may_read
from controller.api.models import (
    MAX_UNIX_S,
    AcCheckOut,
    AuditOut,
    CurrentOut,
    DeviceList,
    DeviceOut,
    ErrorBody,
    IntervalDetail,
    IntervalPage,
    IntervalSummary,
    ReadingOut,
    SettlementOut,
    TradeOut,
)
from controller.api.queries import audit_row, interval_page, interval_row, last_readings
from controller.auth import Principal
from controller.service import Service
from market.domain import Interval

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 422)
}

router = APIRouter(prefix="/v1/sites/{site}", tags=["reads"], responses=ERRORS)

MAX_LIMIT = 500
INTERVAL_ID = Path(ge=0, le=MAX_UNIX_S, description="the interval's start [Unix s]")
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page")]
Cursor = Annotated[
    str | None,
    Query(pattern=r"^[0-9]{1,13}$", description="next_cursor of the previous page"),
]


def trade_out(trade: dict[str, Any]) -> TradeOut:
    """The API form of a stored trade (:func:`market.domain.trade_to_dict`)."""
    return TradeOut(
        trade_id=str(trade.get("trade_id", "")),
        interval_start_s=int(trade["interval"]),
        seller=str(trade["seller"]),
        buyer=str(trade["buyer"]),
        seller_bus=trade.get("seller_bus"),
        buyer_bus=trade.get("buyer_bus"),
        seller_order=trade.get("seller_order"),
        buyer_order=trade.get("buyer_order"),
        energy_wh=int(trade["energy_wh"]),
        seller_price_per_kwh=int(trade["seller_price"]),
        buyer_price_per_kwh=int(trade["buyer_price"]),
        seller_amount_units=int(trade["seller_amount"]),
        buyer_amount_units=int(trade["buyer_amount"]),
    )


def visible_trades(principal: Principal, trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trades ``principal`` may see: all, or a prosumer's own."""
    return [
        t for t in trades if may_read(principal, t["seller"]) or may_read(principal, t["buyer"])
    ]


def _ac_check(check: dict[str, Any] | None) -> AcCheckOut | None:
    if not check:
        return None
    violations = list(check.get("violations") or [])
    return AcCheckOut(
        converged=bool(check.get("converged")),
        min_vm_pu=check.get("min_vm_pu"),
        max_vm_pu=check.get("max_vm_pu"),
        max_line_loading_percent=check.get("max_line_loading_percent"),
        max_trafo_loading_percent=check.get("max_trafo_loading_percent"),
        slack_p_w=None if check.get("slack_p_w") is None else int(check["slack_p_w"]),
        n_violations=len(violations),
        violations=violations,
    )


@router.get("/intervals", response_model=IntervalPage, summary="intervals, newest first")
def list_intervals(
    service: SiteDep, principal: PrincipalDep, limit: Limit = 50, cursor: Cursor = None
) -> IntervalPage:
    """Every recorded interval with its outcome and settlement state, a page at a time."""
    del principal
    rows, nxt = interval_page(
        service.runtime.store, limit=limit, cursor=None if cursor is None else int(cursor)
    )
    items = [
        IntervalSummary(
            interval_start_s=int(r["interval_id"]),
            interval_start=Interval.from_id(
                int(r["interval_id"]), int(r["length_s"])
            ).start.isoformat(),
            length_s=int(r["length_s"]),
            status=str(r["status"]),
            reason=str(r["reason"] or ""),
            n_orders=int(r["n_orders"] or 0),
            settlement_state=r["settlement_state"],
        )
        for r in rows
    ]
    return IntervalPage(items=items, next_cursor=nxt)


@router.get("/intervals/current", response_model=CurrentOut, summary="the interval now")
def current_interval(service: SiteDep, principal: PrincipalDep) -> CurrentOut:
    """The interval now, the next one whose gate is open, and seconds to its gate closure."""
    del principal
    now = service.now()
    length = service.site.interval_s
    lead_s = service.runtime.store.gate_closure_in_force(
        service.site.gate_closure_s, service.site.interval_s
    )  # the site file's, or the community's governed one in force
    lead = timedelta(seconds=lead_s)
    current = Interval.containing(now, length)
    upcoming = current.next()
    while upcoming.start - lead <= now:
        upcoming = upcoming.next()
    gate = upcoming.start - lead
    return CurrentOut(
        now_s=int(now.timestamp()),
        interval_s=length,
        current_interval_start_s=current.interval_id,
        next_interval_start_s=upcoming.interval_id,
        gate_closure_s=int(gate.timestamp()),
        seconds_to_gate_closure=int((gate - now).total_seconds()),
        gate_closure_lead_s=lead_s,
        paused=service.controls.paused is not None,
    )


@router.get("/intervals/{interval_start_s}", response_model=IntervalDetail, summary="one interval")
def get_interval(
    service: SiteDep,
    principal: PrincipalDep,
    interval_start_s: Annotated[int, INTERVAL_ID],
) -> IntervalDetail:
    """Status, reason, nodal prices, grid exchange, trades, AC check and settlement."""
    row = interval_row(service.runtime.store, interval_start_s)
    if row is None:
        raise ApiError(404, "unknown_interval", f"no interval starting at {interval_start_s}")
    result: dict[str, Any] = row["result"] or {}
    trades = list(result.get("trades") or [])
    shown = visible_trades(principal, trades)
    grid = result.get("grid") or {}
    settlement = service.runtime.store.settlement(interval_start_s)
    return IntervalDetail(
        interval_start_s=interval_start_s,
        interval_start=Interval.from_id(interval_start_s, int(row["length_s"])).start.isoformat(),
        length_s=int(row["length_s"]),
        status=str(row["status"]),
        reason=str(row["reason"] or ""),
        mechanism=result.get("mechanism"),
        n_orders=int(row["n_orders"] or 0),
        prices_per_kwh={str(k): int(v) for k, v in (result.get("prices") or {}).items()},
        grid_import_wh=int(grid.get("import_wh", 0)),
        grid_export_wh=int(grid.get("export_wh", 0)),
        trades=[trade_out(t) for t in shown],
        trades_hidden=len(trades) - len(shown),
        ac_check=_ac_check(result.get("ac_check")),
        iterations=result.get("iterations"),
        settlement=None
        if settlement is None
        else SettlementOut(
            state=str(settlement["state"]),
            batch_id=str(settlement["batch_id"]),
            tx_hash=settlement["tx_hash"],
            block_number=settlement["block_number"],
            gas_used=settlement["gas_used"],
            error=settlement["error"],
        ),
    )


@router.get(
    "/intervals/{interval_start_s}/audit",
    response_model=AuditOut,
    summary="an interval's audit record (operator, auditor)",
)
def get_audit(
    service: SiteDep,
    principal: AllReaderDep,
    interval_start_s: Annotated[int, INTERVAL_ID],
) -> AuditOut:
    """The audit record as stored (inputs' hashes, book, result, AC check, readings, batch)."""
    del principal
    row = audit_row(service.runtime.store, interval_start_s)
    if row is None:
        raise ApiError(404, "unknown_record", f"no audit record for {interval_start_s}")
    return AuditOut(
        interval_start_s=interval_start_s,
        record_hash=str(row["record_hash"]),
        record=dict(row["record"]),
    )


@router.get("/devices", response_model=DeviceList, summary="devices with their last readings")
def list_devices(service: SiteDep, principal: PrincipalDep) -> DeviceList:
    """The devices the principal may see (a prosumer its own) and each one's last reading."""
    return DeviceList(items=devices_of(service, principal))


def devices_of(service: Service, principal: Principal) -> list[DeviceOut]:
    """The site's devices ``principal`` may see, with their last stored readings."""
    devices = [d for d in service.site.devices if may_read(principal, d.participant)]
    last = last_readings(service.runtime.store, [d.id for d in devices])
    return [
        DeviceOut(
            device_id=d.id,
            participant=d.participant,
            kind=str(d.kind),
            role=str(d.role),
            rated_w=d.rated_w,
            capacity_wh=d.capacity_wh,
            last_reading=None if d.id not in last else ReadingOut(**last[d.id]),
        )
        for d in devices
    ]
