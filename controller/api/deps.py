"""The API's dependencies: the service, the site in the path, the signed-in principal, roles.

Errors the routes raise are :class:`ApiError` (a :class:`~controller.errors.ControllerError`
with an HTTP ``status``, a ``code`` and a ``reason``); :mod:`controller.api.app` turns it,
:class:`~controller.auth.AuthRefused` and :class:`~controller.intake.IntakeRefused` into the
JSON body ``{"code", "reason"}`` with that status.

Roles (:class:`~controller.auth.Role`): a *prosumer* reads only its own participant's data
(:func:`require_participant`: another participant's is 403), an *operator* reads everything
and takes site actions (:func:`require_operator`), an *auditor* reads everything and
changes nothing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from controller.auth import Principal, Role
from controller.errors import ControllerError
from controller.service import Service


class ApiError(ControllerError):
    """An API refusal: HTTP ``status`` (4xx), short ``code``, ``reason`` for people.

    Parameters
    ----------
    status : int
        The HTTP status.
    code : str
        Short snake_case code.
    reason : str
        What was wrong.
    """

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


def get_service(request: Request) -> Service:
    """The service the application was created with."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]

SITE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"


def site_of(
    service: ServiceDep,
    site: Annotated[str, Path(pattern=SITE_PATTERN, description="the site's id")],
) -> Service:
    """The service, if ``site`` is its site (else 404 ``unknown_site``)."""
    if site != service.site_id:
        raise ApiError(404, "unknown_site", f"no site {site!r} here (this is {service.site_id!r})")
    return service


SiteDep = Annotated[Service, Depends(site_of)]

bearer = HTTPBearer(auto_error=False, description="a session token from POST .../auth/signin")


def token_of(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The bearer token of the request (401 ``unauthenticated`` without one)."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise ApiError(401, "unauthenticated", "send Authorization: Bearer <token> (sign in first)")
    return credentials.credentials


TokenDep = Annotated[str, Depends(token_of)]


def principal_of(service: SiteDep, token: TokenDep) -> Principal:
    """The signed-in principal (401 for a token that is unknown or expired)."""
    return service.auth.principal(token)


PrincipalDep = Annotated[Principal, Depends(principal_of)]


def require_operator(principal: PrincipalDep) -> Principal:
    """The principal, if it is an operator (else 403 ``forbidden``)."""
    if principal.role is not Role.OPERATOR:
        raise ApiError(403, "forbidden", f"only an operator may do this, not a {principal.role}")
    return principal


OperatorDep = Annotated[Principal, Depends(require_operator)]


def require_reader_of_all(principal: PrincipalDep) -> Principal:
    """The principal, if it may read every participant's data (operator or auditor)."""
    if principal.role is Role.PROSUMER:
        raise ApiError(403, "forbidden", "only an operator or an auditor may read this")
    return principal


AllReaderDep = Annotated[Principal, Depends(require_reader_of_all)]


def may_read(principal: Principal, participant: str) -> bool:
    """Whether ``principal`` may read ``participant``'s data.

    Parameters
    ----------
    principal : Principal
        The signed-in principal.
    participant : str
        A participant id.
    """
    return principal.role is not Role.PROSUMER or principal.participant == participant


def require_participant(service: Service, principal: Principal, participant: str) -> None:
    """Refuse a read of ``participant``'s data: 404 unknown, 403 another prosumer's.

    Parameters
    ----------
    service : Service
        The service (its site's participants).
    principal : Principal
        The signed-in principal.
    participant : str
        The participant id in the path.

    Raises
    ------
    ApiError
        404 ``unknown_participant`` or 403 ``forbidden``.
    """
    if not may_read(principal, participant):
        raise ApiError(403, "forbidden", "a prosumer may read only its own data")
    if participant not in {p.id for p in service.site.participants}:
        raise ApiError(404, "unknown_participant", f"no participant {participant!r}")
