"""The FastAPI application of one site: :func:`create_app`.

Routes (every path but ``/health``, ``/openapi.json`` and ``/docs`` is under
``/v1/sites/{site}``; another site is 404):

================================================ ========= =================================
path                                             roles     what
================================================ ========= =================================
``GET /health``                                  anyone    up, the clock
``GET`` (the site itself)                        anyone    what signed messages name
``GET`` (the site itself)                        anyone    EIP-712 domain, sign-in URI
``POST auth/nonce``, ``auth/signin``             anyone    sign in (EIP-4361)
``POST auth/signout``, ``GET auth/me``           signed in the session
``GET intervals`` (limit, cursor)                signed in intervals, newest first
``GET intervals/current``                        signed in interval now, gate closure
``GET intervals/{start_s}``                      signed in one interval (a prosumer's
                                                           own trades only)
``GET intervals/{start_s}/audit``                op, aud   the audit record
``GET devices``                                  signed in devices, last readings (own)
``GET participants/{p}/orders|trades|readings|`` own, op,  one participant's data over a
``balances|escrow|debts|earnings``               aud       period (start_s, end_s)
``POST orders|standing-orders|cancels``          signature EIP-712 signed messages
``GET orders|standing-orders|cancels``           signed in stored messages (own)
``GET market``                                   signed in paused? exclusions
``POST market/pause|resume|exclusions``          operator  site actions
``GET events``                                   signed in server-sent events
================================================ ========= =================================

Errors are JSON ``{"code", "reason"}`` with a 4xx status: :class:`~controller.api.deps.
ApiError`, :class:`~controller.errors.AuthRefused` and :class:`~controller.intake.
IntakeRefused` carry their own; a request that does not fit the OpenAPI document is 422
``invalid_request`` naming the field; an unknown path 404 ``not_found``.
"""

from __future__ import annotations

from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from adapters.chain.typed_data import DOMAIN_TYPE, ENUMS, TYPES, MessageKind, domain
from controller.api import (
    routes_auth,
    routes_dashboard,
    routes_events,
    routes_governance,
    routes_operator,
    routes_orders,
    routes_participants,
    routes_reads,
    routes_site,
    web,
)
from controller.api.dashboard import Dashboard
from controller.api.deps import ApiError
from controller.api.models import ErrorBody, ExclusionIn, Health
from controller.errors import AuthRefused
from controller.intake import IntakeRefused
from controller.service import Service

API_VERSION = "1"


def _error(status: int, code: str, reason: str) -> JSONResponse:
    return JSONResponse(
        status_code=status, content=ErrorBody(code=code, reason=reason).model_dump()
    )


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    refusal = cast("ApiError", exc)  # registered for ApiError only
    return _error(refusal.status, refusal.code, refusal.reason)


async def _refused(_request: Request, exc: Exception) -> JSONResponse:
    refusal = cast("AuthRefused | IntakeRefused", exc)  # registered for these only
    status = int(refusal.status)
    if not 400 <= status < 500:  # a refusal is the client's problem by definition
        status = 400
    return _error(status, str(refusal.code), str(refusal.reason))


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    errors = cast("RequestValidationError", exc).errors()  # registered for it only
    problems = [f"{_where(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors]
    return _error(422, "invalid_request", "; ".join(problems) or "invalid request")


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


async def _http(request: Request, exc: Exception) -> JSONResponse:
    http = cast("HTTPException", exc)  # registered for it only
    codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated"}
    reply = _error(http.status_code, codes.get(http.status_code, "http_error"), str(http.detail))
    reply.headers.update(http.headers or {})
    if http.status_code == 405:  # Allow: every method some route takes on this path
        # asked of each route with the method swapped in (Starlette's public ``matches``):
        # routers included by FastAPI are routes of their own that hide their routes' methods
        allowed = {
            method
            for method in _METHODS
            for route in request.app.routes
            if route.matches({**request.scope, "method": method})[0] is Match.FULL
        }
        reply.headers["Allow"] = ", ".join(sorted(allowed))
    return reply


def create_app(service: Service) -> FastAPI:
    """The API of ``service``'s site (see the module docstring for the routes).

    Parameters
    ----------
    service : Service
        What the routes read and write (:func:`controller.service.build_service`).

    Returns
    -------
    FastAPI
        The application; ``/openapi.json`` is its OpenAPI document, ``/docs`` the
        interactive docs.
    """
    app = FastAPI(
        docs_url=None,  # served by controller.api.web from the package (FastAPI's uses a CDN)
        redoc_url=None,
        title="PeerGrid",
        version=API_VERSION,
        summary="Peer-to-peer energy trading on a microgrid: orders, results, settlements.",
        description=(
            "Integers carry their unit in their name: _wh [Wh], _w [W], _units [token base "
            "units, 6 decimals], _per_kwh [token base units per kWh], _s [s or Unix s]. "
            "Sign in with EIP-4361 (auth/nonce, auth/signin) and send "
            "Authorization: Bearer <token>; orders are EIP-712 typed data signed by the "
            "participant's address."
        ),
        responses={422: {"model": ErrorBody}},
    )
    app.state.service = service
    # the map's geometry (~1 MB of JSON on a 9,099-bus grid) and the scripts shrink ~7x;
    # Starlette never compresses text/event-stream, so events still flow at once
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.state.dashboard = Dashboard(service)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(AuthRefused, _refused)
    app.add_exception_handler(IntakeRefused, _refused)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)

    @app.get("/health", response_model=Health, tags=["service"], summary="the service is up")
    def health() -> Health:
        """Up, with the service's clock."""
        return Health(
            status="ok",
            site_id=service.site_id,
            started_at=service.started_at.isoformat(),
            now_s=int(service.now().timestamp()),
        )

    for module in (
        routes_site,
        routes_auth,
        routes_reads,
        routes_participants,
        routes_orders,
        routes_operator,
        routes_events,
        routes_dashboard,
        routes_governance,
    ):
        app.include_router(module.router)
    web.mount(app)
    _name_the_site(app, service)
    return app


def _name_the_site(app: FastAPI, service: Service) -> None:
    """Make the OpenAPI document this site's exact contract (built once, on first request).

    One service fronts one site: ``{site}`` has one valid value and ``{participant}`` the
    site's participant ids as enums (any other is still answered, 403 or 404); each signed
    message's body is the exact ``eth_signTypedData_v4`` JSON of its type on this site's
    domain (:func:`typed_data_schema`); an exclusion's target is one of the site's
    participants, devices or buses.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        values = {
            "site": [service.site_id],
            "participant": [str(p.id) for p in service.site.participants],
        }
        bodies = {
            f"/v1/sites/{{site}}/{path}": typed_data_schema(
                kind, service.intake.chain_id, service.intake.verifying_contract
            )
            for path, kind in (
                ("orders", MessageKind.ORDER),
                ("standing-orders", MessageKind.STANDING_ORDER),
                ("cancels", MessageKind.CANCEL),
            )
        }
        bodies["/v1/sites/{site}/market/exclusions"] = exclusion_schema(service)
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                for parameter in operation.get("parameters", []):
                    enum = values.get(parameter.get("name"))
                    if parameter.get("in") == "path" and enum:
                        parameter["schema"] = {**parameter.get("schema", {}), "enum": enum}
                if method == "post" and path in bodies:
                    content = operation["requestBody"]["content"]["application/json"]
                    content["schema"] = bodies[path]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_DIGITS = {8: 2, 16: 4, 64: 19, 256: 77}
"""Decimal digits a ``uint<bits>`` string may have in the document (all below ``2**bits``)."""


def _field_schema(kind: MessageKind, name: str, type_: str) -> dict[str, Any]:
    if type_ == "address":
        return {
            "type": "string",
            # JSON Schema cannot check an EIP-55 checksum: the document promises the two
            # cases always accepted; mixed case is accepted too when its checksum is right
            "pattern": "^0x([0-9a-f]{40}|[0-9A-F]{40})$",
            "description": "an address, all lower or all upper case (EIP-55 mixed case is "
            "accepted too when its checksum is right)",
        }
    if type_ == "bytes32":
        return {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}
    bits = int(type_.removeprefix("uint"))
    codes = ENUMS.get((kind, name))
    if codes is not None:
        values = [int(c) for c in codes]
        return {"anyOf": [{"type": "integer", "enum": values}, {"enum": [str(v) for v in values]}]}
    return {
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": min(2**bits - 1, 2**53 - 1)},
            {
                "type": "string",
                "pattern": f"^([0-9]{{1,{_DIGITS[bits]}}}|0x[0-9a-fA-F]{{1,{bits // 4}}})$",
            },
        ],
        "description": f"{type_}: a JSON integer, or a decimal string",
    }


def typed_data_schema(kind: MessageKind, chain_id: int, verifying_contract: str) -> dict[str, Any]:
    """The request body of a signed ``kind``: its exact ``eth_signTypedData_v4`` JSON.

    Parameters
    ----------
    kind : MessageKind
        ``Order``, ``StandingOrder`` or ``Cancel``.
    chain_id : int
        The site's chain id (the domain's ``chainId``).
    verifying_contract : str
        The site's Settlement contract (the domain's ``verifyingContract``).

    Returns
    -------
    dict
        A JSON Schema of ``{"typedData": {...}, "signature": "0x..."}``.
    """
    fields = TYPES[kind]
    message = {
        "type": "object",
        "additionalProperties": False,
        "required": [f["name"] for f in fields],
        "properties": {f["name"]: _field_schema(kind, f["name"], f["type"]) for f in fields},
    }
    return {
        "title": f"Signed{kind.value}",
        "type": "object",
        "additionalProperties": False,
        "required": ["typedData", "signature"],
        "properties": {
            "typedData": {
                "type": "object",
                "additionalProperties": False,
                "required": ["types", "primaryType", "domain", "message"],
                "properties": {
                    "types": {
                        "const": {"EIP712Domain": list(DOMAIN_TYPE), kind.value: list(fields)}
                    },
                    "primaryType": {"const": kind.value},
                    "domain": {"const": domain(chain_id, verifying_contract)},
                    "message": message,
                },
                "description": "what the wallet signed (eth_signTypedData_v4)",
            },
            "signature": {"type": "string", "pattern": "^0x[0-9a-fA-F]{130}$"},
        },
    }


def exclusion_schema(service: Service) -> dict[str, Any]:
    """The body of ``POST market/exclusions`` with the site's targets of each kind."""
    base = ExclusionIn.model_json_schema()
    targets = {
        "participant": service.controls.participants,
        "device": service.controls.devices,
        "bus": service.controls.buses,
    }
    return {
        "title": "ExclusionIn",
        "oneOf": [
            {
                **base,
                "properties": {
                    **base["properties"],
                    "kind": {"const": kind},
                    "target": {"type": "string", "enum": sorted(known)},
                },
            }
            for kind, known in targets.items()
        ],
    }
