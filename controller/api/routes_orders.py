"""Signed orders, standing orders and cancellations (EIP-712 typed data).

``POST /v1/sites/{site}/orders`` (and ``/standing-orders``, ``/cancels``) takes the body
``{"typedData": <the eth_signTypedData_v4 JSON the wallet signed>, "signature": "0x..."}``
whose ``primaryType`` is ``Order`` (``StandingOrder``, ``Cancel``). The signature is the
authentication: no session is needed. :class:`~controller.intake.OrderIntake` verifies it,
checks the business rules and persists the message **before** the acknowledgement is sent:

* ``201`` the first acknowledgement; ``200`` the same signed message again (idempotent by
  its EIP-712 digest, ``duplicate: true``);
* a refusal has the intake's status (400 malformed, 401/403 signature or signer, 404 an
  unknown order to cancel, 409 a reused nonce, 422 out of range, gate closed, deadline
  passed, escrow insufficient) and the body ``{"code", "reason"}``.

``GET`` of the same paths lists the stored messages newest first: a prosumer its own,
operators and auditors everyone's.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from controller.api.deps import ApiError, PrincipalDep, SiteDep
from controller.api.models import AckOut, ErrorBody, SignedOrderOut, SignedOrderPage, SignedPayload
from controller.api.queries import signed_page
from controller.api.routes_reads import MAX_LIMIT
from controller.auth import Principal, Role
from controller.intake import Ack
from controller.service import Service

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409, 422)
}

router = APIRouter(prefix="/v1/sites/{site}", tags=["orders"], responses=ERRORS)

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page")]
Cursor = Annotated[
    str | None,
    Query(pattern=r"^0x[0-9a-f]{64}$", description="next_cursor of the previous page"),
]


def ack_out(ack: Ack) -> AckOut:
    """The API form of an intake acknowledgement."""
    return AckOut(
        digest=ack.digest,
        kind=str(ack.kind.value),
        participant=str(ack.participant),
        nonce=str(ack.nonce),
        status=ack.status,
        received_at=ack.received_at.isoformat(),
        interval_start_s=ack.interval_id,
        valid_from_s=ack.valid_from,
        valid_until_s=ack.valid_until,
        cancels=ack.cancels,
        duplicate=ack.duplicate,
    )


def _integral(value: object) -> object:
    """An integral JSON number written with a fraction (``2842.0``) as the integer it is.

    JSON Schema (and JavaScript) count ``2842.0`` as the integer 2842, and EIP-712 encodes
    the same number either way, so the digest and the signature do not change.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


def submit(service: Service, body: SignedPayload, kind: str, response: Response) -> AckOut:
    """Hand a signed message of ``kind`` to the intake; 201 first time, 200 a repeat."""
    primary = body.typed_data.get("primaryType")
    if primary != kind:
        raise ApiError(
            400, "wrong_kind", f"typedData.primaryType must be {kind!r} here, got {primary!r}"
        )
    typed = dict(body.typed_data)
    if isinstance(typed.get("message"), dict):  # JSON's 2842.0 is the integer 2842
        typed["message"] = {k: _integral(v) for k, v in typed["message"].items()}
    ack = service.intake.submit({"typedData": typed, "signature": body.signature})
    out = ack_out(ack)
    response.status_code = 200 if out.duplicate else 201
    return out


def listing(
    service: Service, principal: Principal, kind: str, limit: int, cursor: str | None
) -> SignedOrderPage:
    """A page of stored messages of ``kind`` the principal may see."""
    own = str(principal.participant) if principal.role is Role.PROSUMER else None
    if principal.role is Role.PROSUMER and principal.participant is None:
        raise ApiError(403, "forbidden", "this prosumer has no participant")
    found = signed_page(
        service.runtime.store, kind=kind, participant=own, limit=limit, cursor=cursor
    )
    if found is None:
        raise ApiError(404, "unknown_cursor", "cursor is not a next_cursor of this list")
    rows, nxt = found
    return SignedOrderPage(items=[SignedOrderOut(**r) for r in rows], next_cursor=nxt)


CREATED: dict[int | str, dict[str, Any]] = {
    200: {"model": AckOut, "description": "the same message again: the first acknowledgement"},
    201: {"model": AckOut, "description": "accepted and persisted"},
}


@router.post(
    "/orders", response_model=AckOut, status_code=201, responses=CREATED, summary="place an order"
)
def post_order(service: SiteDep, body: SignedPayload, response: Response) -> AckOut:
    """Place a signed ``Order`` for one interval (until its gate closure)."""
    return submit(service, body, "Order", response)


@router.get("/orders", response_model=SignedOrderPage, summary="signed orders")
def get_orders(
    service: SiteDep, principal: PrincipalDep, limit: Limit = 50, cursor: Cursor = None
) -> SignedOrderPage:
    """Signed orders, newest first (a prosumer's own)."""
    return listing(service, principal, "Order", limit, cursor)


@router.post(
    "/standing-orders",
    response_model=AckOut,
    status_code=201,
    responses=CREATED,
    summary="place a standing order",
)
def post_standing_order(service: SiteDep, body: SignedPayload, response: Response) -> AckOut:
    """Place a signed ``StandingOrder`` (applies to every interval of its validity window)."""
    return submit(service, body, "StandingOrder", response)


@router.get("/standing-orders", response_model=SignedOrderPage, summary="signed standing orders")
def get_standing_orders(
    service: SiteDep, principal: PrincipalDep, limit: Limit = 50, cursor: Cursor = None
) -> SignedOrderPage:
    """Signed standing orders, newest first (a prosumer's own)."""
    return listing(service, principal, "StandingOrder", limit, cursor)


@router.post(
    "/cancels",
    response_model=AckOut,
    status_code=201,
    responses=CREATED,
    summary="cancel an order or standing order",
)
def post_cancel(service: SiteDep, body: SignedPayload, response: Response) -> AckOut:
    """Cancel a signed order by its digest (until its interval's gate closure)."""
    return submit(service, body, "Cancel", response)


@router.get("/cancels", response_model=SignedOrderPage, summary="signed cancellations")
def get_cancels(
    service: SiteDep, principal: PrincipalDep, limit: Limit = 50, cursor: Cursor = None
) -> SignedOrderPage:
    """Signed cancellations, newest first (a prosumer's own)."""
    return listing(service, principal, "Cancel", limit, cursor)
