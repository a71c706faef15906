"""The operator's site actions (:mod:`controller.controls`) and the market's state.

* ``GET /v1/sites/{site}/market``: paused or not, and every exclusion (any signed-in role);
* ``POST .../market/pause`` ``{"reason"}`` and ``POST .../market/resume`` (operator);
* ``POST .../market/exclusions`` ``{"kind": "participant"|"device"|"bus", "target",
  "start_s", "duration_s", "reason"}`` takes a participant, device or bus out of the market
  for ``[start_s, start_s + duration_s)`` [Unix s] (operator); the reason goes into the
  audit record of every interval it covers. An unknown target is 422 ``refused``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from controller.api.deps import ApiError, OperatorDep, PrincipalDep, SiteDep
from controller.api.models import ErrorBody, ExclusionIn, ExclusionOut, MarketOut, PauseIn
from controller.controls import ControlRefused, Exclusion, TargetKind
from controller.service import Service

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 422)
}

router = APIRouter(prefix="/v1/sites/{site}/market", tags=["operator"], responses=ERRORS)


def exclusion_out(ex: Exclusion) -> ExclusionOut:
    """The API form of an exclusion."""
    return ExclusionOut(
        exclusion_id=ex.exclusion_id,
        kind=ex.kind.value,
        target=ex.target,
        start_s=int(ex.start.timestamp()),
        end_s=int(ex.end.timestamp()),
        reason=ex.reason,
        by=ex.by,
        at=ex.at.isoformat(),
    )


def market_out(service: Service) -> MarketOut:
    """The market's state now."""
    paused = service.controls.paused
    return MarketOut(
        paused=paused is not None,
        paused_reason=None if paused is None else paused.reason,
        paused_by=None if paused is None else paused.by,
        paused_at=None if paused is None else paused.at.isoformat(),
        exclusions=[exclusion_out(ex) for ex in service.controls.exclusions()],
    )


@router.get("", response_model=MarketOut, summary="the market's state")
def get_market(service: SiteDep, principal: PrincipalDep) -> MarketOut:
    """Paused or not (by whom, why) and every exclusion taken."""
    del principal
    return market_out(service)


@router.post("/pause", response_model=MarketOut, summary="pause the market (operator)")
def pause(service: SiteDep, operator: OperatorDep, body: PauseIn) -> MarketOut:
    """Pause the market: intervals are cleared grid only until it is resumed."""
    try:
        service.controls.pause(body.reason, by=str(operator.address), at=service.now())
    except ControlRefused as exc:
        raise ApiError(422, "refused", str(exc)) from None
    return market_out(service)


@router.post("/resume", response_model=MarketOut, summary="resume the market (operator)")
def resume(service: SiteDep, operator: OperatorDep) -> MarketOut:
    """Resume a paused market."""
    service.controls.resume(by=str(operator.address), at=service.now())
    return market_out(service)


@router.post(
    "/exclusions",
    response_model=ExclusionOut,
    status_code=201,
    summary="take a participant, device or bus out of the market (operator)",
)
def exclude(service: SiteDep, operator: OperatorDep, body: ExclusionIn) -> ExclusionOut:
    """Exclude the target for ``[start_s, end_s)`` with a reason (into the audit record)."""
    try:
        ex = service.controls.exclude(
            TargetKind(body.kind),
            body.target,
            start=datetime.fromtimestamp(body.start_s, UTC),
            end=datetime.fromtimestamp(body.start_s + body.duration_s, UTC),
            reason=body.reason,
            by=str(operator.address),
            at=service.now(),
        )
    except ControlRefused as exc:
        raise ApiError(422, "refused", str(exc)) from None
    return exclusion_out(ex)
