"""Sign-in (EIP-4361, Sign-In with Ethereum): nonce, sign-in, sign-out.

1. ``POST /v1/sites/{site}/auth/nonce`` gives a single-use nonce;
2. the wallet signs an EIP-4361 message naming this server's domain and URI, the chain id
   and the nonce (EIP-191 ``personal_sign``);
3. ``POST .../auth/signin`` with the message and signature gives a bearer token (short-lived,
   only its hash is stored), sent as ``Authorization: Bearer <token>``; no cookies are used,
   so no CSRF token is needed;
4. ``POST .../auth/signout`` ends the session.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from adapters.chain import checksum_address
from controller.api.deps import PrincipalDep, SiteDep, TokenDep
from controller.api.models import (
    ErrorBody,
    NonceIn,
    NonceOut,
    PrincipalOut,
    SessionOut,
    SignedOut,
    SignInIn,
)
from controller.auth import Principal

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 422)
}

router = APIRouter(prefix="/v1/sites/{site}/auth", tags=["auth"], responses=ERRORS)


def principal_out(principal: Principal) -> PrincipalOut:
    """The API form of a principal."""
    return PrincipalOut(
        address=str(principal.address),
        role=str(principal.role),
        participant=None if principal.participant is None else str(principal.participant),
    )


@router.post("/nonce", response_model=NonceOut, summary="a single-use sign-in nonce")
def new_nonce(service: SiteDep, body: NonceIn | None = None) -> NonceOut:
    """A fresh nonce for the EIP-4361 message (single use, expires soon).

    With an ``address`` the reply also carries the message this server accepts from it
    (issued now, expiring with the nonce): what a browser wallet page asks the wallet to
    sign, since it cannot write the EIP-55 form of the address itself.
    """
    nonce = service.auth.new_nonce()
    if body is None or body.address is None:
        return NonceOut(nonce=nonce)
    address = checksum_address(body.address)
    return NonceOut(nonce=nonce, message=service.auth.message_for(address, nonce))


@router.post("/signin", response_model=SessionOut, summary="sign in with a signed EIP-4361 message")
def sign_in(service: SiteDep, body: SignInIn) -> SessionOut:
    """Check the message and its signature; a session token for its address's role."""
    session = service.auth.sign_in(body.message, body.signature)
    return SessionOut(
        token=session.token,
        token_type="bearer",  # noqa: S106 - the token's type, not a secret
        expires_at=session.expires_at.isoformat(),
        principal=principal_out(session.principal),
    )


@router.post("/signout", response_model=SignedOut, summary="end the session")
def sign_out(service: SiteDep, token: TokenDep, principal: PrincipalDep) -> SignedOut:
    """Delete the session of the bearer token."""
    del principal  # a valid session is required
    service.auth.sign_out(token)
    return SignedOut(signed_out=True)


@router.get("/me", response_model=PrincipalOut, summary="who the session is")
def me(principal: PrincipalDep) -> PrincipalOut:
    """The signed-in principal: address, role and (a prosumer's) participant."""
    return principal_out(principal)
