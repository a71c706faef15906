"""The dashboard's reads: the feeder map, history, status, alerts, audit records, verify.

Under ``/v1/sites/{site}``; every route needs a session.

========================================== ========= ====================================
path                                       roles     what
========================================== ========= ====================================
``GET grid/map``                           signed in buses, branches, feeders (drawing
                                                     coordinates), participant markers
``GET grid/state`` (interval_start_s)      signed in an interval's voltages, loadings,
                                                     nodal prices and trades as flows
``GET status``                             signed in the interval now and its phase, the
                                                     last results, devices, settlements;
                                                     alerts for operators and auditors
``GET alerts``                             op, aud   the alerts now
``GET history`` (start_s, end_s, format)   signed in one row per interval (JSON or CSV)
``GET participants/{p}/history``           own, op, a participant's energy, money and
                                           aud       savings against the grid tariffs
``GET audit/records`` (limit, cursor)      op, aud   records, anchors, verification state
``POST intervals/{start_s}/verify``        op, aud   verify one record in full
``GET audit/export`` (start_s, end_s,      op, aud   an export table as CSV
table)
========================================== ========= ====================================

History and export periods are ``[start_s, end_s)`` [Unix s] by interval start; without
them the last day up to the service's clock. One reply covers at most :data:`MAX_HISTORY_S`
(31 days) of it: a longer period's reply gives ``next_start_s`` (CSV: the
``X-PeerGrid-Next-Start-S`` header), the ``start_s`` of the next request.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from controller.api.dashboard import Dashboard, DashboardError
from controller.api.deps import AllReaderDep, ApiError, PrincipalDep, SiteDep, require_participant
from controller.api.models import MAX_UNIX_S, ErrorBody
from controller.api.queries import audit_page
from controller.api.routes_participants import ParticipantPath, period
from controller.api.routes_reads import INTERVAL_ID, MAX_LIMIT, Cursor, devices_of
from controller.service import Service
from market.domain import utc_label

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 422)
}

router = APIRouter(prefix="/v1/sites/{site}", tags=["dashboard"], responses=ERRORS)

MAX_HISTORY_S = 31 * 86_400
"""The longest part of a period one reply covers [s]; the rest is asked for with
``next_start_s`` (CSV: the :data:`NEXT_HEADER` header)."""
NEXT_HEADER = "X-PeerGrid-Next-Start-S"

StartS = Annotated[int | None, Query(ge=0, le=MAX_UNIX_S, description="[Unix s], inclusive")]
EndS = Annotated[int | None, Query(ge=0, le=MAX_UNIX_S, description="[Unix s], exclusive")]
Format = Annotated[Literal["json", "csv"], Query(description="json (default) or csv")]
CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}, "application/json": {}}, "description": "the rows"}
}


def get_dashboard(request: Request) -> Dashboard:
    """The application's dashboard read model."""
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


DashboardDep = Annotated[Dashboard, Depends(get_dashboard)]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MapOut(_Out):
    """The feeder map: columnar buses and branches in drawing coordinates."""

    width: float
    height: float
    generated: bool = Field(description="the layout was generated (the grid has no coordinates)")
    feeders: list[str]
    buses: dict[str, list[Any]] = Field(
        description="name, x, y, vn_kv, in_service, slack, feeder: one list per column"
    )
    branches: dict[str, list[Any]] = Field(
        description="id, kind, name, from, to (bus positions), in_service"
    )
    participants: list[dict[str, Any]] = Field(
        description="participant, bus, at (bus position): the ones the caller may see"
    )


class GridStateOut(_Out):
    """An interval on the map."""

    interval_start_s: int
    interval_start: str
    status: str
    reason: str
    vm_pu: dict[str, float] = Field(description="bus name -> voltage [p.u.]")
    loading_pct: dict[str, float] = Field(description="branch id -> loading [%]")
    prices_per_kwh: dict[str, int] = Field(description="bus name -> nodal price")
    flows: list[dict[str, Any]] = Field(description="seller_bus, buyer_bus, energy_wh")
    ac_converged: bool
    violations: list[str]
    vm_min_pu: float | None
    vm_max_pu: float | None
    has_ac_detail: bool


class HistoryOut(_Out):
    """One row per interval of the period."""

    start_s: int
    end_s: int = Field(description="the end of the part of the period answered [Unix s]")
    next_start_s: int | None = Field(
        description="more of the period follows: ask again with this start_s (null: done)"
    )
    columns: list[list[str]] = Field(description="(key, header with unit) in table order")
    rows: list[dict[str, Any]]


class StatusOut(_Out):
    """The site now."""

    site_id: str
    name: str
    now: dict[str, Any] = Field(description="the interval now, its phase, the gate closure")
    latest: list[dict[str, Any]] = Field(description="the last intervals (history rows)")
    devices: list[dict[str, Any]]
    settlements: list[dict[str, Any]] = Field(description="recent settlements, newest first")
    alerts: list[dict[str, Any]] = Field(description="operators and auditors only")


class AlertsOut(_Out):
    """The alerts now."""

    alerts: list[dict[str, Any]]


class RecordOut(_Out):
    """An interval's audit record, its anchor on-chain and its verification state."""

    interval_start_s: int
    interval_start: str
    record_hash: str
    batch_id: str | None
    trades_root: str | None
    readings_root: str | None
    settlement_state: str | None
    tx_hash: str | None
    block_number: int | None
    verification: dict[str, Any] | None = Field(
        description="the last full verification on this server (None: not verified yet)"
    )


class RecordPage(_Out):
    """Audit records, newest first."""

    items: list[RecordOut]
    next_cursor: str | None


class VerifyOut(_Out):
    """The outcome of verifying one record in full."""

    interval_start_s: int
    verified: bool
    problems: list[str]
    accepted: list[str]
    chain_checked: bool
    checked_at_s: int


def _period(
    service: Service, start_s: int | None, end_s: int | None
) -> tuple[int, int, int | None]:
    """The part of ``[start_s, end_s)`` answered now, and where the rest starts (or None)."""
    lo, hi = period(service, start_s, end_s)
    if hi - lo > MAX_HISTORY_S:
        return lo, lo + MAX_HISTORY_S, lo + MAX_HISTORY_S
    return lo, hi, None


def _csv(text: str, name: str, nxt: int | None) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{name}.csv"'}
    if nxt is not None:
        headers[NEXT_HEADER] = str(nxt)
    return Response(content=text, media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/grid/map", response_model=MapOut, summary="the feeder map's geometry")
def grid_map(service: SiteDep, principal: PrincipalDep, dashboard: DashboardDep) -> MapOut:
    """Buses and branches in drawing coordinates (SVG: y down), feeders, participant markers."""
    del service
    try:
        return MapOut(**dashboard.map_for(principal))
    except DashboardError as exc:
        raise ApiError(404, "no_grid", str(exc)) from None


@router.get("/grid/state", response_model=GridStateOut, summary="an interval on the map")
def grid_state(
    service: SiteDep,
    principal: PrincipalDep,
    dashboard: DashboardDep,
    interval_start_s: Annotated[
        int | None, Query(ge=0, le=MAX_UNIX_S, description="[Unix s]; default the latest")
    ] = None,
) -> GridStateOut:
    """Voltages and loadings of the interval's AC check, nodal prices, trades as flows."""
    del service
    state = dashboard.grid_state(interval_start_s, principal)
    if state is None:
        raise ApiError(404, "unknown_interval", "no cleared interval to show")
    return GridStateOut(**state)


@router.get("/history", response_model=HistoryOut, summary="one row per interval", responses=CSV)
def history(
    service: SiteDep,
    principal: PrincipalDep,
    start_s: StartS = None,
    end_s: EndS = None,
    format: Format = "json",
) -> HistoryOut | Response:
    """Prices against the tariffs, energy, grid exchange, voltages, curtailment, settlement."""
    from controller.history import HISTORY_COLUMNS, history_rows, to_csv  # noqa: PLC0415

    del principal
    lo, hi, nxt = _period(service, start_s, end_s)
    rows = history_rows(service.runtime.store, lo, hi)
    if format == "csv":
        return _csv(to_csv(rows), f"{service.site_id}-history-{lo}-{hi}", nxt)
    columns = [[k, h] for k, h in HISTORY_COLUMNS]
    return HistoryOut(start_s=lo, end_s=hi, next_start_s=nxt, columns=columns, rows=rows)


@router.get(
    "/participants/{participant}/history",
    response_model=HistoryOut,
    summary="a participant's energy, money and savings per interval",
    responses=CSV,
)
def participant_history(
    service: SiteDep,
    principal: PrincipalDep,
    participant: ParticipantPath,
    start_s: StartS = None,
    end_s: EndS = None,
    format: Format = "json",
) -> HistoryOut | Response:
    """Bought and sold energy, paid and received, the same at the grid tariffs, savings."""
    from controller import history as hist  # noqa: PLC0415

    require_participant(service, principal, participant)
    lo, hi, nxt = _period(service, start_s, end_s)
    rows = hist.participant_history(service.runtime.store, participant, lo, hi)
    columns = hist.PARTICIPANT_COLUMNS
    if format == "csv":
        return _csv(hist.to_csv(rows, columns), f"{participant}-{lo}-{hi}", nxt)
    listed = [[k, h] for k, h in columns]
    return HistoryOut(start_s=lo, end_s=hi, next_start_s=nxt, columns=listed, rows=rows)


@router.get("/status", response_model=StatusOut, summary="the site now")
def status(service: SiteDep, principal: PrincipalDep, dashboard: DashboardDep) -> StatusOut:
    """The interval now and its phase, the last results, devices, settlements, alerts."""
    now = dashboard.phase()
    latest = dashboard.recent(back=7)[:6]
    settlements = [
        {
            "interval_start_s": r["interval_start_s"],
            "interval_start": utc_label(int(r["interval_start_s"])),
            "state": r.get("settlement_state"),
            "tx_hash": r.get("tx_hash"),
        }
        for r in latest
        if r.get("settlement_state") is not None
    ]
    alerts = dashboard.alerts() if principal.role != "prosumer" else []
    return StatusOut(
        site_id=service.site_id,
        name=service.site.name,
        now=now,
        latest=latest,
        devices=[d.model_dump() for d in devices_of(service, principal)],
        settlements=settlements,
        alerts=alerts,
    )


@router.get("/alerts", response_model=AlertsOut, summary="the alerts now (operator, auditor)")
def alerts(service: SiteDep, principal: AllReaderDep, dashboard: DashboardDep) -> AlertsOut:
    """Missed or failed intervals, late settlements, silent devices, low escrow and gas, clock."""
    del service, principal
    return AlertsOut(alerts=dashboard.alerts())


def _hex(value: Any) -> str | None:  # noqa: ANN401
    return None if value in (None, "") else str(value)


@router.get("/audit/records", response_model=RecordPage, summary="audit records and their anchors")
def audit_records(
    service: SiteDep,
    principal: AllReaderDep,
    dashboard: DashboardDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page")] = 50,
    cursor: Cursor = None,
) -> RecordPage:
    """Each record's hash, batch id and roots, its settlement transaction and verification."""
    del principal
    rows, nxt = audit_page(
        service.runtime.store, limit=limit, cursor=None if cursor is None else int(cursor)
    )
    items = []
    for r in rows:
        batch = (r["record"] or {}).get("settlement") or {}
        interval_id = int(r["interval_id"])
        items.append(
            RecordOut(
                interval_start_s=interval_id,
                interval_start=utc_label(interval_id),
                record_hash=str(r["record_hash"]),
                batch_id=_hex(batch.get("batch_id")),
                trades_root=_hex(batch.get("trades_root")),
                readings_root=_hex(batch.get("readings_root")),
                settlement_state=r["state"],
                tx_hash=_hex(r["tx_hash"]),
                block_number=r["block_number"],
                verification=dashboard.last_verification(interval_id),
            )
        )
    return RecordPage(items=items, next_cursor=nxt)


@router.post(
    "/intervals/{interval_start_s}/verify",
    response_model=VerifyOut,
    summary="verify one interval's record in full (operator, auditor)",
)
def verify_interval(
    service: SiteDep,
    principal: AllReaderDep,
    dashboard: DashboardDep,
    interval_start_s: Annotated[int, INTERVAL_ID],
) -> VerifyOut:
    """Hashes, Merkle roots, batch id, the chain's record of it, signed orders, a re-clear."""
    del service, principal
    outcome = dashboard.verify(interval_start_s)
    if outcome is None:
        raise ApiError(404, "unknown_record", f"no audit record for {interval_start_s}")
    return VerifyOut(**outcome)


@router.get(
    "/audit/export",
    summary="an export table as CSV (operator, auditor)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "the table"}},
)
def audit_export(
    service: SiteDep,
    principal: AllReaderDep,
    table: Annotated[
        Literal[
            "intervals",
            "orders",
            "trades",
            "prices",
            "grid_exchange",
            "readings",
            "settlements",
            "ac_buses",
            "ac_branches",
            "curtailment",
        ],
        Query(description="which table of `peergrid audit export`"),
    ] = "intervals",
    start_s: StartS = None,
    end_s: EndS = None,
) -> Response:
    """The same tables as ``peergrid audit export``, for the period, as CSV."""
    from controller.audit_export import COLUMNS, csv_text, export_tables  # noqa: PLC0415

    del principal
    lo, hi, nxt = _period(service, start_s, end_s)
    name = f"{service.site_id}-{table}-{lo}-{hi}"
    if hi <= lo:  # an empty period: the table's header only
        return _csv(",".join(c for c, _kind in COLUMNS[table]) + "\r\n", name, None)
    tables = export_tables(
        service.runtime.store, datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)
    )
    return _csv(csv_text(tables[table], COLUMNS[table]), name, nxt)


class AnchorOut(_Out):
    """An interval's anchor: the record's batch id and roots beside what the chain stores."""

    interval_start_s: int
    tx_hash: str | None
    block_number: int | None
    settlement_state: str | None
    record: dict[str, str | None] = Field(description="batch_id, trades_root, readings_root")
    chain: dict[str, str] | None = Field(description="the same, read from the contract now")
    matches: bool = Field(description="the chain holds exactly the record's batch")


def _bytes_hex(value: bytes) -> str:
    return value.hex()


@router.get(
    "/intervals/{interval_start_s}/anchor",
    response_model=AnchorOut,
    summary="an interval's anchor on-chain, against its record",
)
def interval_anchor(
    service: SiteDep,
    principal: PrincipalDep,
    interval_start_s: Annotated[int, INTERVAL_ID],
) -> AnchorOut:
    """The settlement transaction and the batch id and roots the contract stores for it."""
    del principal
    store = service.runtime.store
    settlement = store.settlement(interval_start_s)
    if settlement is None:
        raise ApiError(404, "unknown_settlement", f"no settlement for {interval_start_s}")
    batch = settlement["batch"] or {}
    ours = {
        "batch_id": _hex(batch.get("batch_id") or settlement["batch_id"]),
        "trades_root": _hex(batch.get("trades_root")),
        "readings_root": _hex(batch.get("readings_root")),
    }
    chain = None
    if service.runtime.settler is not None:
        with service.chain_lock:
            stored = service.runtime.client.settled_batch(interval_start_s)
        chain = {
            "batch_id": _bytes_hex(stored.batch_id),
            "trades_root": _bytes_hex(stored.trades_root),
            "readings_root": _bytes_hex(stored.readings_root),
        }
    matches = chain is not None and all(
        (ours[k] or "").removeprefix("0x").lower() == chain[k] for k in ours
    )
    return AnchorOut(
        interval_start_s=interval_start_s,
        tx_hash=_hex(settlement["tx_hash"]),
        block_number=settlement["block_number"],
        settlement_state=str(settlement["state"]),
        record=ours,
        chain=chain,
        matches=matches,
    )
