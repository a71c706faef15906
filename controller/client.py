"""A small Python client of the PeerGrid HTTP API (:mod:`controller.api`), for prosumers.

Keys stay on the client: orders, standing orders and cancels are EIP-712 typed data signed
here (:func:`adapters.chain.typed_data.signed_payload`), sign-in is an EIP-4361 message
signed here (:func:`adapters.chain.siwe.sign`); only signatures go over the wire.

::

    from adapters.chain import open_keystore
    from controller.client import PeerGridClient

    key = open_keystore("alice.json", password)
    with PeerGridClient("http://127.0.0.1:8080", "peergrid-demo-community-cigre-lv") as api:
        ack = api.place_order(key, interval_start=1782027000, side="buy", energy_wh=500,
                              limit_price=310_000)
        api.sign_in(key)                  # reads need a session; placing does not
        page = api.orders()               # my signed orders, newest first
        api.cancel(key, ack.digest)

What it signs comes from the server (``GET /v1/sites/{site}``, :meth:`PeerGridClient.
site_info`): the EIP-712 domain (chain id, the site's Settlement contract), the EIP-4361
domain and URI, the interval length, the gate closure lead and the server's clock. Times the
client writes (``Issued At``, a default ``deadline``) are in the **server's** clock, so a
client whose clock is off does not get refused for it; the nonce is the sign-in's freshness.

Units as the API: ``energy_wh`` [Wh], prices [token base units per kWh], times [Unix s].

Errors: a refusal by the server (its body ``{"code", "reason"}``, a 4xx status) raises
:class:`ApiRefused` (``status``, ``code``, ``reason``); a server that cannot be reached, or
that answers something that is not the API, raises :class:`ClientError`. Both are
:class:`~controller.errors.ControllerError`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import httpx

from adapters.chain import siwe
from adapters.chain.accounts import Signer
from adapters.chain.typed_data import MessageKind, OrderSide, StandingKind, signed_payload
from adapters.errors import TypedDataRefused
from controller.errors import ControllerError

DEFAULT_TIMEOUT_S: Final = 30.0
"""How long a request may take [s]."""

SIGNIN_TTL: Final = timedelta(minutes=5)
"""``Expiration Time`` of the sign-in messages written here, after ``Issued At``."""

PATHS: Final[Mapping[MessageKind, str]] = {
    MessageKind.ORDER: "orders",
    MessageKind.STANDING_ORDER: "standing-orders",
    MessageKind.CANCEL: "cancels",
}
"""Where each kind of signed message is posted (and listed), under the site."""

NONCE_BITS: Final = 64
"""Random bits of the nonces written here (nonces are unordered: any unused value)."""

_E = TypeVar("_E", OrderSide, StandingKind)


class ClientError(ControllerError):
    """The API could not be reached, or answered something that is not the API."""


class ApiRefused(ClientError):
    """The server refused a request: its HTTP ``status``, ``code`` and ``reason``.

    Parameters
    ----------
    status : int
        The HTTP status (4xx).
    code : str
        The server's short snake_case code (e.g. ``gate_closed``, ``nonce_reused``).
    reason : str
        The server's reason, naming the field or item.
    """

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(f"refused ({status} {code}): {reason}")
        self.status = status
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class SiteInfo:
    """What :meth:`PeerGridClient.site_info` reads: the site and what signed messages name.

    ``now_s`` is the server's clock when it answered [Unix s]; times [s].
    """

    site_id: str
    name: str
    interval_s: int
    gate_closure_s: int
    now_s: int
    chain_id: int
    verifying_contract: str
    signin_domain: str
    signin_uri: str
    signin_statement: str
    participants: tuple[str, ...]

    def next_open_interval(self, now_s: int | None = None) -> int:
        """The first interval start whose gate is still open at ``now_s`` [Unix s].

        Parameters
        ----------
        now_s : int or None
            The time [Unix s]; ``None``: the server's clock when it answered.
        """
        now = self.now_s if now_s is None else now_s
        start = now - now % self.interval_s + self.interval_s
        while not now < start - self.gate_closure_s:
            start += self.interval_s
        return start


@dataclass(frozen=True)
class Acknowledgement:
    """The server's acknowledgement of a signed message (it was persisted first).

    ``interval_start_s`` (an order's), ``valid_from_s``/``valid_until_s`` (a standing
    order's window as applied) [Unix s]; ``cancels``: the digest a cancel cancelled;
    ``duplicate``: the same message was acknowledged before (the first acknowledgement).
    """

    digest: str
    kind: str
    participant: str
    nonce: int
    status: str
    received_at: str
    interval_start_s: int | None
    valid_from_s: int | None
    valid_until_s: int | None
    cancels: str | None
    duplicate: bool

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Acknowledgement:
        """From the API's ``AckOut`` body.

        Raises
        ------
        ClientError
            A field is missing.
        """
        try:
            return cls(
                digest=str(body["digest"]),
                kind=str(body["kind"]),
                participant=str(body["participant"]),
                nonce=int(body["nonce"]),
                status=str(body["status"]),
                received_at=str(body["received_at"]),
                interval_start_s=body.get("interval_start_s"),
                valid_from_s=body.get("valid_from_s"),
                valid_until_s=body.get("valid_until_s"),
                cancels=body.get("cancels"),
                duplicate=bool(body["duplicate"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"the server's acknowledgement lacks or garbles {exc}"
            raise ClientError(msg) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "digest": self.digest,
            "kind": self.kind,
            "participant": self.participant,
            "nonce": str(self.nonce),
            "status": self.status,
            "received_at": self.received_at,
            "interval_start_s": self.interval_start_s,
            "valid_from_s": self.valid_from_s,
            "valid_until_s": self.valid_until_s,
            "cancels": self.cancels,
            "duplicate": self.duplicate,
        }


def unix_s(moment: int | datetime) -> int:
    """A time as Unix seconds: an int as is, an aware datetime converted.

    Raises
    ------
    ClientError
        A naive datetime (its zone would be a guess).
    """
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            msg = f"{moment.isoformat()} has no time zone (write it in UTC, e.g. ...Z)"
            raise ClientError(msg)
        return int(moment.timestamp())
    return int(moment)


def _enum(cls: type[_E], value: _E | str, what: str) -> _E:
    """``value`` as a member of ``cls``: a member, or its name in any letter case."""
    if not isinstance(value, str):
        return value
    try:
        return cls[value.upper()]
    except KeyError:
        names = ", ".join(m.name.lower() for m in cls)
        msg = f"{what} {value!r} is not one of {names}"
        raise ClientError(msg) from None


def new_nonce() -> int:
    """A random message nonce (:data:`NONCE_BITS` bits)."""
    return secrets.randbits(NONCE_BITS)


class PeerGridClient:
    """The API of one site at ``api_url`` (see the module docstring).

    Parameters
    ----------
    api_url : str
        The server, e.g. ``http://127.0.0.1:8080`` (without ``/v1/...``).
    site : str
        The site's id in the paths; ``""``: the one the server's ``/health`` names.
    timeout_s : float
        Per request [s].

    Raises
    ------
    ClientError
        ``site`` is ``""`` and the server cannot be reached.
    """

    def __init__(
        self,
        api_url: str,
        site: str = "",
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._http = httpx.Client(base_url=self.api_url, timeout=timeout_s)
        self.token: str | None = None
        self._info: SiteInfo | None = None
        self.site = site
        if not site:
            try:
                self.site = str(self._request("GET", "/health")["site_id"])
            except (ClientError, KeyError):
                self._http.close()
                raise

    # ------------------------------------------------------------------ plumbing
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (a session stays open on the server: :meth:`sign_out`)."""
        self._http.close()

    @property
    def prefix(self) -> str:
        """``/v1/sites/{site}``."""
        return f"/v1/sites/{self.site}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        auth: bool = False,
    ) -> dict[str, Any]:
        """One request; the JSON object answered, or the server's refusal raised."""
        headers = {}
        if auth:
            if self.token is None:
                msg = "this read needs a session: sign_in(key) first"
                raise ClientError(msg)
            headers["Authorization"] = f"Bearer {self.token}"
        clean = None if params is None else {k: v for k, v in params.items() if v is not None}
        try:
            reply = self._http.request(method, path, json=json, params=clean, headers=headers)
        except httpx.HTTPError as exc:
            msg = f"{method} {self.api_url}{path}: {type(exc).__name__}: {exc}"
            raise ClientError(msg) from None
        try:
            body = reply.json()
        except ValueError:
            body = None
        if reply.is_success and isinstance(body, dict):
            return body
        if isinstance(body, dict) and "code" in body and "reason" in body:
            raise ApiRefused(reply.status_code, str(body["code"]), str(body["reason"]))
        msg = (
            f"{method} {self.api_url}{path}: HTTP {reply.status_code} "
            f"without the API's JSON ({reply.text[:200]!r})"
        )
        raise ClientError(msg)

    # ------------------------------------------------------------------ site
    def site_info(self) -> SiteInfo:
        """The site and what signed messages name, with the server's clock, read afresh.

        Raises
        ------
        ApiRefused
            ``unknown_site``: the server fronts another site.
        ClientError
            The server cannot be reached.
        """
        body = self._request("GET", self.prefix)
        try:
            info = SiteInfo(
                site_id=str(body["site_id"]),
                name=str(body["name"]),
                interval_s=int(body["interval_s"]),
                gate_closure_s=int(body["gate_closure_s"]),
                now_s=int(body["now_s"]),
                chain_id=int(body["chain_id"]),
                verifying_contract=str(body["verifying_contract"]),
                signin_domain=str(body["signin_domain"]),
                signin_uri=str(body["signin_uri"]),
                signin_statement=str(body["signin_statement"]),
                participants=tuple(str(p) for p in body["participants"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"the server's site description lacks or garbles {exc}"
            raise ClientError(msg) from None
        self._info = info
        return info

    def _site(self) -> SiteInfo:
        return self._info if self._info is not None else self.site_info()

    # ------------------------------------------------------------------ sign-in
    def signin_message(self, address: str) -> str:
        """The EIP-4361 message for ``address`` with a fresh nonce, in the server's time.

        Parameters
        ----------
        address : str
            The signer's EIP-55 address.
        """
        info = self.site_info()  # afresh: the clock
        nonce = str(self._request("POST", f"{self.prefix}/auth/nonce")["nonce"])
        issued = datetime.fromtimestamp(info.now_s, tz=UTC)
        return siwe.format_message(
            siwe.SiweMessage(
                domain=info.signin_domain,
                address=address,
                statement=info.signin_statement,
                uri=info.signin_uri,
                chain_id=info.chain_id,
                nonce=nonce,
                issued_at=siwe.rfc3339(issued),
                expiration_time=siwe.rfc3339(issued + SIGNIN_TTL),
            )
        )

    def sign_in(self, key: Signer) -> dict[str, Any]:
        """Sign in (EIP-4361) as ``key``'s address; later reads send the bearer token.

        Parameters
        ----------
        key : Signer
            The account (e.g. :func:`adapters.chain.open_keystore`); it never leaves here.

        Returns
        -------
        dict
            The principal: ``address``, ``role``, ``participant``.

        Raises
        ------
        ApiRefused
            E.g. 403 ``unknown_address`` (no role on this site).
        """
        message = self.signin_message(str(key.address))
        body = self._request(
            "POST",
            f"{self.prefix}/auth/signin",
            json={"message": message, "signature": siwe.sign(message, bytes(key.key))},
        )
        self.token = str(body["token"])
        principal: dict[str, Any] = body["principal"]
        return principal

    def sign_out(self) -> None:
        """End the session (nothing to do without one)."""
        if self.token is not None:
            self._request("POST", f"{self.prefix}/auth/signout", auth=True)
            self.token = None

    # ------------------------------------------------------------------ signed messages
    def post_signed(
        self, kind: MessageKind, message: Mapping[str, Any], key: Signer
    ) -> Acknowledgement:
        """Sign ``message`` of ``kind`` with ``key`` (EIP-712, this site's domain) and post it.

        Raises
        ------
        ApiRefused
            The intake's refusal (its status and code: module :mod:`controller.intake`).
        ClientError
            ``message`` does not fit the type (before anything is sent).
        """
        info = self._site()
        try:
            payload = signed_payload(
                kind,
                message,
                key,
                chain_id=info.chain_id,
                verifying_contract=info.verifying_contract,
            )
        except TypedDataRefused as exc:
            raise ClientError(str(exc)) from None
        return Acknowledgement.from_json(
            self._request("POST", f"{self.prefix}/{PATHS[kind]}", json=payload)
        )

    def place_order(
        self,
        key: Signer,
        *,
        interval_start: int | datetime,
        side: OrderSide | str,
        energy_wh: int,
        limit_price: int,
        deadline: int | datetime | None = None,
        nonce: int | None = None,
    ) -> Acknowledgement:
        """Place a signed order for one interval.

        Parameters
        ----------
        key : Signer
            The participant's account (it signs; its address is the message's participant).
        interval_start : int or datetime
            The interval's start [Unix s, or an aware datetime].
        side : OrderSide or {"buy", "sell"}
            Buy or sell.
        energy_wh : int
            Energy [Wh].
        limit_price : int
            Highest price paid (buy) or lowest taken (sell) [token base units per kWh].
        deadline : int or datetime or None
            The message is void after it [Unix s]; ``None``: the interval's gate closure.
        nonce : int or None
            Any value the participant has not used; ``None``: random.

        Returns
        -------
        Acknowledgement
            ``digest`` names the order (to cancel it).
        """
        start = unix_s(interval_start)
        chosen = _enum(OrderSide, side, "side")
        message = {
            "participant": str(key.address),
            "intervalStart": start,
            "side": int(chosen),
            "energyWh": energy_wh,
            "limitPrice": limit_price,
            "nonce": new_nonce() if nonce is None else nonce,
            "deadline": self._deadline(deadline, start),
        }
        return self.post_signed(MessageKind.ORDER, message, key)

    def place_standing_order(
        self,
        key: Signer,
        *,
        kind: StandingKind | str,
        price: int,
        valid_from: int | datetime,
        valid_until: int | datetime,
        energy_wh: int = 0,
        discharge_price: int = 0,
        min_soc_permille: int = 0,
        max_soc_permille: int = 0,
        deadline: int | datetime | None = None,
        nonce: int | None = None,
    ) -> Acknowledgement:
        """Place a signed standing order (every interval ``valid_from <= T < valid_until``).

        Parameters
        ----------
        key : Signer
            The participant's account.
        kind : StandingKind or str
            ``sell_surplus``, ``buy_demand``, ``buy``, ``sell`` or ``battery`` (the site
            file's kinds).
        price : int
            Limit price [token base units per kWh] (a battery's charge price).
        valid_from, valid_until : int or datetime
            The window [Unix s, or aware datetimes].
        energy_wh : int
            ``buy``/``sell``: energy per interval [Wh]; 0 for the other kinds.
        discharge_price : int
            ``battery``: the lowest discharge price [token base units per kWh]; else 0.
        min_soc_permille, max_soc_permille : int
            ``battery``: the state-of-charge band [1/1000 of capacity]; else 0.
        deadline : int or datetime or None
            The message is void after it [Unix s]; ``None``: the gate closure of the
            interval at ``valid_from`` or, if that has passed, of the first one still open.
        nonce : int or None
            Any value not used; ``None``: random.
        """
        chosen = _enum(StandingKind, kind, "kind")
        start = unix_s(valid_from)
        message = {
            "participant": str(key.address),
            "kind": int(chosen),
            "energyWh": energy_wh,
            "price": price,
            "dischargePrice": discharge_price,
            "minSocPermille": min_soc_permille,
            "maxSocPermille": max_soc_permille,
            "validFrom": start,
            "validUntil": unix_s(valid_until),
            "nonce": new_nonce() if nonce is None else nonce,
            "deadline": self._deadline(deadline, start),
        }
        return self.post_signed(MessageKind.STANDING_ORDER, message, key)

    def cancel(
        self,
        key: Signer,
        digest: str,
        *,
        deadline: int | datetime | None = None,
        nonce: int | None = None,
    ) -> Acknowledgement:
        """Cancel an order or standing order by its digest (until its gate closure).

        Parameters
        ----------
        key : Signer
            The participant's account (the order's).
        digest : str
            The order's EIP-712 digest (its acknowledgement's ``digest``).
        deadline : int or datetime or None
            [Unix s]; ``None``: a gate closure from now.
        nonce : int or None
            Any value not used; ``None``: random.
        """
        message = {
            "participant": str(key.address),
            "orderDigest": digest,
            "nonce": new_nonce() if nonce is None else nonce,
            "deadline": self._deadline(deadline, None),
        }
        return self.post_signed(MessageKind.CANCEL, message, key)

    def _deadline(self, deadline: int | datetime | None, start: int | None) -> int:
        """An explicit deadline, or the default (see the callers) [Unix s]."""
        if deadline is not None:
            return unix_s(deadline)
        info = self.site_info()  # afresh: the clock
        gate = None if start is None else start - info.gate_closure_s
        if gate is not None and gate > info.now_s:
            return gate
        return info.next_open_interval() - info.gate_closure_s

    # ------------------------------------------------------------------ reads (signed in)
    def me(self) -> dict[str, Any]:
        """Who the session is: ``address``, ``role``, ``participant``."""
        return self._request("GET", f"{self.prefix}/auth/me", auth=True)

    def orders(
        self, kind: MessageKind = MessageKind.ORDER, *, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """A page of stored signed messages of ``kind``, newest first (a prosumer's own).

        Returns
        -------
        dict
            ``items`` (digest, kind, status, message, ...) and ``next_cursor``.
        """
        return self._request(
            "GET",
            f"{self.prefix}/{PATHS[kind]}",
            params={"limit": limit, "cursor": cursor},
            auth=True,
        )

    def current(self) -> dict[str, Any]:
        """The interval now, the next open one and the seconds to its gate closure."""
        return self._request("GET", f"{self.prefix}/intervals/current", auth=True)

    def interval(self, start_s: int) -> dict[str, Any]:
        """One interval's outcome (a prosumer sees its own trades) [Unix s]."""
        return self._request("GET", f"{self.prefix}/intervals/{start_s}", auth=True)

    def _participant(self, route: str, participant: str, **params: int | None) -> dict[str, Any]:
        path = f"{self.prefix}/participants/{participant}/{route}"
        return self._request("GET", path, params=params, auth=True)

    def trades(
        self, participant: str, *, start_s: int | None = None, end_s: int | None = None
    ) -> dict[str, Any]:
        """A participant's trades in ``[start_s, end_s)`` [Unix s] (default: the last day)."""
        return self._participant("trades", participant, start_s=start_s, end_s=end_s)

    def cleared_orders(
        self, participant: str, *, start_s: int | None = None, end_s: int | None = None
    ) -> dict[str, Any]:
        """A participant's orders as they cleared in ``[start_s, end_s)`` [Unix s]."""
        return self._participant("orders", participant, start_s=start_s, end_s=end_s)

    def balances(self, participant: str) -> dict[str, Any]:
        """A participant's wallet, escrow and unclaimed rewards [token base units]."""
        return self._participant("balances", participant)

    def earnings(
        self, participant: str, *, start_s: int | None = None, end_s: int | None = None
    ) -> dict[str, Any]:
        """A participant's settlement lines and totals in ``[start_s, end_s)`` [Unix s]."""
        return self._participant("earnings", participant, start_s=start_s, end_s=end_s)


__all__ = [
    "Acknowledgement",
    "ApiRefused",
    "ClientError",
    "PeerGridClient",
    "SiteInfo",
    "new_nonce",
    "unix_s",
]
