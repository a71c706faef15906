"""Who is calling the API: sign-in with Ethereum (EIP-4361), roles and sessions.

Roles (:class:`Role`):

* ``prosumer``: a participant of the site, identified by its resolved account address
  (:func:`controller.wiring.participant_accounts`; GRID and COMMUNITY are not prosumers);
  sees its own orders, trades, readings, balances and earnings;
* ``operator``: an address of ``[site] operators``; everything, plus site actions;
* ``auditor``: an address of ``[site] auditors``; reads everything, changes nothing.

An address has at most one role (:class:`Auth` refuses a site where one has two).
``derive:<label>`` entries are demo keys (:func:`adapters.chain.accounts.derive_account`),
resolved on a trial chain only (the site file refuses them on ``anvil`` / ``rpc``).

Signing in, for every role::

    GET  nonce   -> Auth.new_nonce()                  a single-use nonce (32 hex digits)
    the wallet signs (personal_sign) an EIP-4361 message with this server's domain, URI and
    chain id, and the nonce
    POST message + signature -> Auth.sign_in()        a Session: bearer token, expiry
    every call: Authorization: Bearer <token> -> Auth.principal(token)
    sign out -> Auth.sign_out(token)

:meth:`Auth.sign_in` checks, in this order (each refusal an :class:`AuthRefused` with its
HTTP ``status`` and ``code``):

========================== ====== =====================================================
check                      status code
========================== ====== =====================================================
the message parses         401    ``malformed`` (and a signature that is not 65 bytes)
domain (and scheme)        401    ``wrong_domain``
URI                        401    ``wrong_uri``
Chain ID                   401    ``wrong_chain``
Issued At <= now + skew    401    ``issued_in_future`` (skew :data:`CLOCK_SKEW`)
Expiration Time > now      401    ``expired``
Not Before <= now          401    ``not_yet_valid``
signature recovers address 401    ``bad_signature``
the address has a role     403    ``unknown_address``
nonce issued here          401    ``unknown_nonce``
nonce unused               401    ``nonce_used``
nonce not expired          401    ``nonce_expired`` (lifetime :data:`NONCE_TTL`)
========================== ====== =====================================================

The nonce is checked last and used in the same transaction that stores the session
(:meth:`controller.store.Store.open_session`): of two sign-ins with one nonce, even at once,
exactly one succeeds, and a refused sign-in does not use it up.

Sessions: the token is :func:`secrets.token_urlsafe` (256 bits); the store keeps only its
SHA-256. A session lasts :data:`SESSION_TTL` (15 minutes), never beyond the message's
``Expiration Time``; :meth:`Auth.principal` refuses an unknown token (``no_session``), an
expired one (``session_expired``, and deletes it) and one whose address lost its role since
(``unknown_address``, 403). The clock is injected (``now``); nothing here reads the time
itself.

Transport: the API takes the token in the ``Authorization: Bearer`` header, never a cookie,
so a browser does not send it on its own and cross-site request forgery has nothing to ride
on; an API that sets a cookie must add CSRF protection first.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

from adapters.chain.accounts import derive_account
from adapters.chain.siwe import SiweMessage, format_message, recover, rfc3339
from adapters.chain.siwe import parse as parse_siwe
from adapters.errors import SiweRefused
from controller.config import DERIVE_PREFIX, ChainBackend, SiteConfig
from controller.errors import AuthRefused, ConfigError
from controller.store import NonceOutcome, Store
from market.domain import COMMUNITY, GRID, ParticipantId

SESSION_TTL: Final = timedelta(minutes=15)
"""How long a session lasts after sign-in (at most: never past the message's expiry)."""

NONCE_TTL: Final = timedelta(minutes=5)
"""How long an issued nonce may be used to sign in."""

CLOCK_SKEW: Final = timedelta(seconds=60)
"""How far in the future a message's ``Issued At`` may be (the wallet's clock may run ahead)."""

STATEMENT: Final = "Sign in to PeerGrid."
"""The statement of the messages :meth:`Auth.message_for` writes."""

UNAUTHORIZED: Final = 401
FORBIDDEN: Final = 403

Clock = Callable[[], datetime]
"""A clock: returns the current time as an aware datetime."""


def utc_now() -> datetime:
    """The system clock in UTC (the default :data:`Clock`; tests inject their own)."""
    return datetime.now(UTC)


class Role(StrEnum):
    """What a signed-in address may do (module docstring)."""

    PROSUMER = "prosumer"
    OPERATOR = "operator"
    AUDITOR = "auditor"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a session belongs to: a checksummed address, its role and, for a prosumer, its id."""

    address: str
    role: Role
    participant: ParticipantId | None


@dataclass(frozen=True, slots=True)
class Session:
    """A session just opened: the bearer token (shown once, never stored), who, until when."""

    token: str
    principal: Principal
    expires_at: datetime


def token_hash(token: str) -> str:
    """SHA-256 of a session token, 64 hex digits (what the store keeps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def role_addresses(site: SiteConfig, *, trial: bool) -> dict[str, Role]:
    """The operators' and auditors' addresses (``derive:<label>`` resolved) and their roles.

    Parameters
    ----------
    site : SiteConfig
        ``site.operators`` and ``site.auditors``.
    trial : bool
        Whether demo keys (``derive:<label>``) may be resolved (a trial chain).

    Returns
    -------
    dict
        Checksummed address -> :attr:`Role.OPERATOR` or :attr:`Role.AUDITOR`.

    Raises
    ------
    ConfigError
        A ``derive:`` entry on a chain that is not a trial chain, or one address in both lists.
    """
    out: dict[str, Role] = {}
    for role, entries in ((Role.OPERATOR, site.operators), (Role.AUDITOR, site.auditors)):
        for entry in entries:
            address = entry
            if entry.startswith(DERIVE_PREFIX):
                if not trial:
                    msg = (
                        f"site.{role}s: {entry} is a demo key, refused on backend "
                        f"'{site.chain.backend}'; give the 0x address"
                    )
                    raise ConfigError(msg)
                address = str(derive_account(entry.removeprefix(DERIVE_PREFIX)).address)
            if out.get(address, role) is not role:
                msg = f"{entry} ({address}) is both operator and auditor; give it one role"
                raise ConfigError(msg)
            out[address] = role
    return out


class Auth:
    """Sign-in (EIP-4361), roles and sessions of one site (module docstring).

    Parameters
    ----------
    store : Store
        Keeps the nonces and sessions (revision ``0006``).
    site : SiteConfig
        The participants, operators and auditors.
    accounts : Mapping
        Participant id -> address (:func:`controller.wiring.participant_accounts`); GRID and
        COMMUNITY are ignored.
    domain : str
        The RFC 3986 authority messages must name (``peergrid.example``,
        ``127.0.0.1:8080``).
    uri : str
        The URI messages must name exactly (e.g. ``https://peergrid.example/v1/sites/demo``);
        a message that gives a scheme must give this URI's.
    chain_id : int
        The EIP-155 chain id messages must name (the site's chain).
    now : Clock
        The clock (an aware datetime each call).
    trial : bool or None
        Whether ``derive:<label>`` operators and auditors are resolved; ``None``: when the
        site's backend is ``embedded``.
    session_ttl : timedelta
        How long a session lasts.

    Raises
    ------
    ConfigError
        An address with two roles (operator and auditor, or either and a participant's), or
        a demo key off a trial chain.
    """

    def __init__(
        self,
        store: Store,
        site: SiteConfig,
        accounts: Mapping[ParticipantId, str],
        *,
        domain: str,
        uri: str,
        chain_id: int,
        now: Clock = utc_now,
        trial: bool | None = None,
        session_ttl: timedelta = SESSION_TTL,
    ) -> None:
        self.store = store
        self.domain = domain
        self.uri = uri
        self.scheme = urlsplit(uri).scheme
        self.chain_id = chain_id
        self.now = now
        self.session_ttl = session_ttl
        if trial is None:
            trial = site.chain.backend is ChainBackend.EMBEDDED
        self.roles = role_addresses(site, trial=trial)
        self.participants: dict[str, ParticipantId] = {}
        known = {p.id for p in site.participants}
        for pid, address in accounts.items():
            if pid in {GRID, COMMUNITY} or pid not in known:
                continue
            if address in self.roles:
                msg = f"{address} is participant {pid!r}'s account and {self.roles[address]}"
                raise ConfigError(msg)
            self.participants[address] = pid

    # -- roles ---------------------------------------------------------------------------------
    def principal_of(self, address: str) -> Principal | None:
        """The role an address has on this site (``None``: none).

        Parameters
        ----------
        address : str
            Checksummed address.
        """
        pid = self.participants.get(address)
        if pid is not None:
            return Principal(address, Role.PROSUMER, pid)
        role = self.roles.get(address)
        return None if role is None else Principal(address, role, None)

    # -- sign-in ------------------------------------------------------------------------------
    def _clock(self) -> datetime:
        moment = self.now()
        if moment.tzinfo is None or moment.utcoffset() is None:
            msg = "the clock gave a naive datetime; it must be aware (UTC)"
            raise ConfigError(msg)
        return moment.astimezone(UTC)

    def new_nonce(self) -> str:
        """Issue a single-use sign-in nonce (32 hex digits), valid for :data:`NONCE_TTL`.

        Expired nonces and sessions are deleted in the same transaction.
        """
        nonce = secrets.token_hex(16)
        issued = self._clock()
        self.store.add_auth_nonce(nonce, issued, issued + NONCE_TTL)
        return nonce

    def message_for(self, address: str, nonce: str, *, statement: str = STATEMENT) -> str:
        """The EIP-4361 message this server accepts from ``address`` with ``nonce``, to sign.

        For clients that cannot write one (curl, scripts): the API may hand it out with the
        nonce. Issued now, expiring with the nonce (:data:`NONCE_TTL`).

        Parameters
        ----------
        address : str
            The signer's EIP-55 checksummed address.
        nonce : str
            A nonce from :meth:`new_nonce`.
        statement : str
            The human-readable line the wallet shows.

        Raises
        ------
        AuthRefused
            401 ``malformed``: the address (or statement) cannot be written in the message.
        """
        now = self._clock()
        fields = SiweMessage(
            domain=self.domain,
            address=address,
            statement=statement,
            uri=self.uri,
            chain_id=self.chain_id,
            nonce=nonce,
            issued_at=rfc3339(now),
            expiration_time=rfc3339(now + NONCE_TTL),
        )
        try:
            return format_message(fields)
        except SiweRefused as exc:
            raise AuthRefused(UNAUTHORIZED, "malformed", str(exc)) from None

    def _check_message(self, message: SiweMessage, now: datetime) -> None:
        if message.domain != self.domain or (
            message.scheme is not None and message.scheme != self.scheme
        ):
            origin = (
                message.domain
                if message.scheme is None
                else (f"{message.scheme}://{message.domain}")
            )
            msg = f"the message is for {origin}, this server is {self.scheme}://{self.domain}"
            raise AuthRefused(UNAUTHORIZED, "wrong_domain", msg)
        if message.uri != self.uri:
            msg = f"the message's URI is {message.uri}, this server's is {self.uri}"
            raise AuthRefused(UNAUTHORIZED, "wrong_uri", msg)
        if message.chain_id != self.chain_id:
            msg = f"the message is for chain {message.chain_id}, this site's is {self.chain_id}"
            raise AuthRefused(UNAUTHORIZED, "wrong_chain", msg)
        issued = message.issued_at_time()
        if issued > now + CLOCK_SKEW:
            msg = f"Issued At {message.issued_at} is in the future (now {now.isoformat()})"
            raise AuthRefused(UNAUTHORIZED, "issued_in_future", msg)
        expiry = message.expiration()
        if expiry is not None and expiry <= now:
            msg = f"the message expired at {message.expiration_time} (now {now.isoformat()})"
            raise AuthRefused(UNAUTHORIZED, "expired", msg)
        start = message.not_before_time()
        if start is not None and start > now:
            msg = f"the message is valid from {message.not_before} (now {now.isoformat()})"
            raise AuthRefused(UNAUTHORIZED, "not_yet_valid", msg)

    def sign_in(self, message: str, signature: str) -> Session:
        """Open a session for a signed EIP-4361 message (checks: module docstring).

        Parameters
        ----------
        message : str
            The message exactly as the wallet signed it.
        signature : str
            Its ``personal_sign`` signature, ``0x`` and 130 hex digits.

        Returns
        -------
        Session
            The bearer token (returned only here), who signed in, and the session's end.

        Raises
        ------
        AuthRefused
            With ``status`` 401 or 403 and ``code`` as in the module docstring.
        """
        now = self._clock()
        try:
            parsed = parse_siwe(message)
        except SiweRefused as exc:
            raise AuthRefused(UNAUTHORIZED, "malformed", str(exc)) from None
        self._check_message(parsed, now)
        try:
            signer = recover(message, signature)
        except SiweRefused as exc:
            raise AuthRefused(UNAUTHORIZED, exc.code, str(exc)) from None
        if signer != parsed.address:
            msg = f"signature: signed by {signer}, not by the message's address {parsed.address}"
            raise AuthRefused(UNAUTHORIZED, "bad_signature", msg)
        principal = self.principal_of(signer)
        if principal is None:
            msg = f"{signer} is not a participant, operator or auditor of this site"
            raise AuthRefused(FORBIDDEN, "unknown_address", msg)
        expires_at = now + self.session_ttl
        expiry = parsed.expiration()
        if expiry is not None:
            expires_at = min(expires_at, expiry.astimezone(UTC))
        token = secrets.token_urlsafe(32)
        outcome = self.store.open_session(
            parsed.nonce,
            now,
            token_hash=token_hash(token),
            address=principal.address,
            role=str(principal.role),
            participant=principal.participant,
            expires_at=expires_at,
        )
        if outcome is not NonceOutcome.OPENED:
            why = {
                NonceOutcome.UNKNOWN: "was not issued by this server",
                NonceOutcome.USED: "was already used to sign in",
                NonceOutcome.EXPIRED: f"expired (nonces last {NONCE_TTL})",
            }[outcome]
            code = {
                NonceOutcome.UNKNOWN: "unknown_nonce",
                NonceOutcome.USED: "nonce_used",
                NonceOutcome.EXPIRED: "nonce_expired",
            }[outcome]
            raise AuthRefused(UNAUTHORIZED, code, f"nonce {parsed.nonce} {why}")
        return Session(token, principal, expires_at)

    # -- sessions -----------------------------------------------------------------------------
    def principal(self, token: str) -> Principal:
        """Who holds a session token (the ``Authorization: Bearer`` value).

        Parameters
        ----------
        token : str
            The token :meth:`sign_in` returned.

        Raises
        ------
        AuthRefused
            401 ``no_session`` (unknown or signed out), 401 ``session_expired`` (the row is
            deleted), 403 ``unknown_address`` (the address has lost its role since).
        """
        digest = token_hash(token)
        row = self.store.session(digest)
        if row is None:
            msg = "no session for this token (never signed in, or signed out): sign in again"
            raise AuthRefused(UNAUTHORIZED, "no_session", msg)
        if row["expires_at"] <= self._clock():
            self.store.delete_session(digest)
            msg = f"the session ended at {row['expires_at'].isoformat()}: sign in again"
            raise AuthRefused(UNAUTHORIZED, "session_expired", msg)
        principal = self.principal_of(str(row["address"]))
        if principal is None or principal.role != row["role"]:
            msg = f"{row['address']} no longer has the role {row['role']} on this site"
            raise AuthRefused(FORBIDDEN, "unknown_address", msg)
        return principal

    def sign_out(self, token: str) -> bool:
        """End a session; ``False`` if there was none (already signed out or expired)."""
        return self.store.delete_session(token_hash(token))


__all__ = [
    "CLOCK_SKEW",
    "NONCE_TTL",
    "SESSION_TTL",
    "Auth",
    "AuthRefused",
    "Clock",
    "Principal",
    "Role",
    "Session",
    "role_addresses",
    "token_hash",
    "utc_now",
]
