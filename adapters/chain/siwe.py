r"""Sign-In with Ethereum (EIP-4361): the message, parsed and formatted strictly, and its signer.

A SIWE message is plain text a wallet signs with ``personal_sign`` (EIP-191 version ``0x45``:
``"\x19Ethereum Signed Message:\n" + len(message) + message``)::

    peergrid.example wants you to sign in with your Ethereum account:
    0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

    Sign in to PeerGrid.

    URI: https://peergrid.example/v1/sites/demo
    Version: 1
    Chain ID: 1
    Nonce: 32891756
    Issued At: 2021-09-30T16:25:24Z
    Expiration Time: 2021-09-30T16:40:24Z
    Not Before: 2021-09-30T16:25:24Z
    Request ID: 1234
    Resources:
    - https://peergrid.example/terms

:func:`parse` accepts exactly the EIP-4361 ABNF (the ``siwe`` package is not used: it pins an
older web3 than PeerGrid's) and refuses anything else with :class:`~adapters.errors.SiweRefused`
(``code="malformed"``) naming the field; :func:`format_message` is its inverse, so
``format_message(parse(text)) == text`` for every text :func:`parse` accepts. Strict where the
grammar allows several spellings of one value, so that the round trip holds and nothing is
ambiguous:

* lines end with LF only (a CR anywhere is refused), and the message does not end with one;
* the ``address`` is in EIP-55 checksum form (the grammar's "where applicable": PeerGrid signs
  in externally owned accounts only; EIP-1271 contract wallets are not supported);
* the ``Chain ID`` has no leading zeros; a time's second is not 60 (a leap second);
* the domain has a host (RFC 3986 allows an empty one); the message is at most
  :data:`MAX_MESSAGE_CHARS` characters.

Times stay the text the wallet signed (``issued_at`` ...); :meth:`SiweMessage.issued_at_time`
and friends read them as aware :class:`~datetime.datetime` values. :func:`verify` parses,
recovers the signer with eth-account and requires it to be the message's address
(``code="bad_signature"`` otherwise). What the message must say (domain, URI, chain, nonce,
times) is the relying party's to check: :mod:`controller.auth`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.exceptions import BadSignature
from eth_utils.exceptions import ValidationError
from web3 import Web3

from adapters.errors import SiweRefused

MAX_MESSAGE_CHARS: Final = 16_384
"""Longest message :func:`parse` reads [characters] (many resources fit; a flood does not)."""

MAX_CHAIN_ID_DIGITS: Final = 78
"""Most digits of a ``Chain ID`` (2^256 - 1 has 78)."""

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
"""Order of the secp256k1 group; a signature's ``s`` must be at most half of it (EIP-2)."""

HEADER: Final = " wants you to sign in with your Ethereum account:"
"""What follows ``[scheme "://"] domain`` on the first line."""

# -- RFC 3986 pieces (character classes, then the productions EIP-4361 uses) -------------------
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
_USERINFO = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*"
_REG_NAME = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*"
_IP_LITERAL = r"\[[^\]\[/?#@]*\]"  # checked by _ip_literal_ok
_PORT = r"[0-9]*"
_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*"
_AUTHORITY = rf"(?:(?P<userinfo>{_USERINFO})@)?(?P<host>{_IP_LITERAL}|{_REG_NAME})(?::{_PORT})?"
_PATH_ABEMPTY = rf"(?:/{_PCHAR}*)*"
_PATH_ABSOLUTE = rf"/(?:{_PCHAR}+(?:/{_PCHAR}*)*)?"
_PATH_ROOTLESS = rf"{_PCHAR}+(?:/{_PCHAR}*)*"
_QUERY = rf"(?:{_PCHAR}|[/?])*"
_URI = (
    rf"{_SCHEME}:(?://{_AUTHORITY}{_PATH_ABEMPTY}|{_PATH_ABSOLUTE}|{_PATH_ROOTLESS}|)"
    rf"(?:\?{_QUERY})?(?:#{_QUERY})?"
)

_SCHEME_RE = re.compile(rf"{_SCHEME}\Z")
_DOMAIN_RE = re.compile(rf"{_AUTHORITY}\Z")
_URI_RE = re.compile(rf"{_URI}\Z")
_ADDRESS_RE = re.compile(r"0x[0-9A-Fa-f]{40}\Z")
_STATEMENT_RE = re.compile(rf"[{_UNRESERVED}{_SUB_DELIMS}:/?#\[\]@ ]*\Z")
_CHAIN_ID_RE = re.compile(r"(?:0|[1-9][0-9]*)\Z")
_NONCE_RE = re.compile(r"[A-Za-z0-9]{8,}\Z")
_REQUEST_ID_RE = re.compile(rf"{_PCHAR}*\Z")
_DATE_TIME_RE = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[Tt]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<frac>[0-9]+))?"
    r"(?P<offset>[Zz]|[+\-][0-9]{2}:[0-9]{2})\Z"
)
_IPV_FUTURE_RE = re.compile(rf"[vV][0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+\Z")
_MAX_OFFSET_HOUR = 23
_MAX_OFFSET_MINUTE = 59


@dataclass(frozen=True, slots=True, kw_only=True)
class SiweMessage:
    """The fields of an EIP-4361 message, as written in it (see the module docstring).

    ``None`` means the optional line is absent; ``statement=""`` is an empty statement line
    and ``resources=()`` a ``Resources:`` line with no item, both distinct from ``None``.
    Times are RFC 3339 text (``2021-09-30T16:25:24Z``); :func:`rfc3339` writes one.
    """

    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: str
    scheme: str | None = None
    statement: str | None = None
    version: str = "1"
    expiration_time: str | None = None
    not_before: str | None = None
    request_id: str | None = None
    resources: tuple[str, ...] | None = None

    def issued_at_time(self) -> datetime:
        """``Issued At`` as an aware datetime (UTC offset as written)."""
        return parse_time(self.issued_at, "Issued At")

    def expiration(self) -> datetime | None:
        """``Expiration Time`` as an aware datetime, or ``None`` if absent."""
        text = self.expiration_time
        return None if text is None else parse_time(text, "Expiration Time")

    def not_before_time(self) -> datetime | None:
        """``Not Before`` as an aware datetime, or ``None`` if absent."""
        text = self.not_before
        return None if text is None else parse_time(text, "Not Before")


def _refuse(reason: str, field: str) -> SiweRefused:
    return SiweRefused("malformed", field, reason)


def _bad_signature(reason: str) -> SiweRefused:
    return SiweRefused("bad_signature", "signature", reason)


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def rfc3339(moment: datetime) -> str:
    """``moment`` as EIP-4361 writes times: UTC, ``Z``, milliseconds only when not zero.

    Parameters
    ----------
    moment : datetime
        An aware datetime.

    Raises
    ------
    SiweRefused
        ``moment`` is naive (``code="malformed"``).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        msg = "a naive datetime; give an aware one (UTC)"
        raise _refuse(msg, "time")
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += (
            f".{utc.microsecond // 1000:03d}"
            if utc.microsecond % 1000 == 0
            else (f".{utc.microsecond:06d}")
        )
    return text + "Z"


def parse_time(text: str, field: str = "time") -> datetime:
    """An RFC 3339 ``date-time`` as an aware datetime (fractions beyond microseconds dropped).

    Parameters
    ----------
    text : str
        E.g. ``2021-09-30T16:25:24Z`` or ``2021-09-30T18:25:24.5+02:00``.
    field : str
        The field named in a refusal.

    Raises
    ------
    SiweRefused
        Not an RFC 3339 date-time, a date or time out of range, or a leap second
        (``code="malformed"``).
    """
    match = _DATE_TIME_RE.match(text)
    if match is None:
        msg = f"not an RFC 3339 date-time (e.g. 2021-09-30T16:25:24Z): {_shown(text)}"
        raise _refuse(msg, field)
    g = match.groupdict()
    offset = g["offset"]
    if offset in {"Z", "z"}:
        zone: timezone = UTC
    else:
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > _MAX_OFFSET_HOUR or minutes > _MAX_OFFSET_MINUTE:
            msg = f"UTC offset out of range: {offset}"
            raise _refuse(msg, field)
        sign = -1 if offset[0] == "-" else 1
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    if g["second"] == "60":
        msg = f"a leap second (:60) is not accepted: {_shown(text)}"
        raise _refuse(msg, field)
    micro = int((g["frac"] or "0")[:6].ljust(6, "0"))
    try:
        return datetime(
            int(g["year"]),
            int(g["month"]),
            int(g["day"]),
            int(g["hour"]),
            int(g["minute"]),
            int(g["second"]),
            micro,
            tzinfo=zone,
        )
    except ValueError:
        msg = f"date or time out of range: {_shown(text)}"
        raise _refuse(msg, field) from None


def _ip_literal_ok(host: str) -> bool:
    inner = host[1:-1]
    if _IPV_FUTURE_RE.match(inner):
        return True
    try:
        ipaddress.IPv6Address(inner)
    except ValueError:
        return False
    return "%" not in inner  # a zone id is not RFC 3986 (RFC 6874 spells it %25)


def _check_uri(text: str, field: str) -> None:
    match = _URI_RE.match(text)
    if match is None:
        msg = f"not an RFC 3986 URI: {_shown(text)}"
        raise _refuse(msg, field)
    host = match.group("host")
    if host and host.startswith("[") and not _ip_literal_ok(host):
        msg = f"not an IPv6 address or IPvFuture literal: {_shown(host)}"
        raise _refuse(msg, field)


def _check_fields(m: SiweMessage) -> None:
    """Refuse a message whose fields :func:`format_message` could not write in the grammar."""
    if m.scheme is not None and not _SCHEME_RE.match(m.scheme):
        msg = f"not an RFC 3986 scheme: {_shown(m.scheme)}"
        raise _refuse(msg, "scheme")
    domain = _DOMAIN_RE.match(m.domain)
    if domain is None:
        msg = f"not an RFC 3986 authority (host[:port]): {_shown(m.domain)}"
        raise _refuse(msg, "domain")
    host = domain.group("host")
    if not host:
        msg = f"no host: {_shown(m.domain)}"
        raise _refuse(msg, "domain")
    if host.startswith("[") and not _ip_literal_ok(host):
        msg = f"not an IPv6 address or IPvFuture literal: {_shown(host)}"
        raise _refuse(msg, "domain")
    if not _ADDRESS_RE.match(m.address):
        msg = f"not an address (0x and 40 hex digits): {_shown(m.address)}"
        raise _refuse(msg, "address")
    if Web3.to_checksum_address(m.address) != m.address:
        msg = f"not in EIP-55 checksum form (a typo, or a lower-case address): {m.address}"
        raise _refuse(msg, "address")
    if m.statement is not None and not _STATEMENT_RE.match(m.statement):
        bad = next(c for c in m.statement if not _STATEMENT_RE.match(c))
        msg = f"character {bad!r} is not allowed (RFC 3986 reserved / unreserved and space)"
        raise _refuse(msg, "statement")
    _check_uri(m.uri, "URI")
    if m.version != "1":
        msg = f"must be 1, got {_shown(m.version)}"
        raise _refuse(msg, "Version")
    if m.chain_id < 0 or len(str(m.chain_id)) > MAX_CHAIN_ID_DIGITS:
        msg = f"must be 0 to 2^256 - 1, got {m.chain_id}"
        raise _refuse(msg, "Chain ID")
    if not _NONCE_RE.match(m.nonce):
        msg = f"must be at least 8 letters or digits, got {_shown(m.nonce)}"
        raise _refuse(msg, "Nonce")
    parse_time(m.issued_at, "Issued At")
    if m.expiration_time is not None:
        parse_time(m.expiration_time, "Expiration Time")
    if m.not_before is not None:
        parse_time(m.not_before, "Not Before")
    if m.request_id is not None and not _REQUEST_ID_RE.match(m.request_id):
        msg = f"must be RFC 3986 pchar only: {_shown(m.request_id)}"
        raise _refuse(msg, "Request ID")
    for i, resource in enumerate(m.resources or ()):
        _check_uri(resource, f"Resources[{i}]")


def format_message(message: SiweMessage) -> str:
    """The EIP-4361 text of ``message`` (what the wallet signs; no final line break).

    Parameters
    ----------
    message : SiweMessage
        The fields.

    Raises
    ------
    SiweRefused
        A field the grammar cannot hold (``code="malformed"``, naming the field).
    """
    _check_fields(message)
    origin = message.domain if message.scheme is None else f"{message.scheme}://{message.domain}"
    lines = [origin + HEADER, message.address, ""]
    if message.statement is not None:
        lines.append(message.statement)
    lines += [
        "",
        f"URI: {message.uri}",
        f"Version: {message.version}",
        f"Chain ID: {message.chain_id}",
        f"Nonce: {message.nonce}",
        f"Issued At: {message.issued_at}",
    ]
    for tag, value in (
        ("Expiration Time", message.expiration_time),
        ("Not Before", message.not_before),
        ("Request ID", message.request_id),
    ):
        if value is not None:
            lines.append(f"{tag}: {value}")
    if message.resources is not None:
        lines.append("Resources:")
        lines += [f"- {r}" for r in message.resources]
    return "\n".join(lines)


class _Lines:
    """The message's lines, read in order (each refusal names the field expected)."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = lines
        self.at = 0

    def done(self) -> bool:
        return self.at >= len(self.lines)

    def peek(self) -> str | None:
        return None if self.done() else self.lines[self.at]

    def take(self, field: str) -> str:
        if self.done():
            msg = "missing (the message ends before it)"
            raise _refuse(msg, field)
        line = self.lines[self.at]
        self.at += 1
        return line

    def tagged(self, tag: str) -> str:
        line = self.take(tag)
        prefix = f"{tag}: "
        if not line.startswith(prefix):
            msg = f"line {self.at} must start with {prefix!r}, got {_shown(line)}"
            raise _refuse(msg, tag)
        return line[len(prefix) :]

    def optional(self, tag: str) -> str | None:
        line = self.peek()
        if line is None or not line.startswith(f"{tag}: "):
            return None
        return self.tagged(tag)

    def blank(self, field: str) -> None:
        line = self.take(field)
        if line:
            msg = f"line {self.at} must be empty, got {_shown(line)}"
            raise _refuse(msg, field)


def parse(text: str) -> SiweMessage:
    """Parse an EIP-4361 message strictly (module docstring); the inverse of format_message.

    Parameters
    ----------
    text : str
        The message exactly as signed.

    Returns
    -------
    SiweMessage
        Its fields.

    Raises
    ------
    SiweRefused
        ``code="malformed"``: anything outside the grammar, naming the field (``domain``,
        ``address``, ``statement``, ``URI``, ``Version``, ``Chain ID``, ``Nonce``, ``Issued
        At``, ``Expiration Time``, ``Not Before``, ``Request ID``, ``Resources``) or
        ``message`` for the text as a whole.
    """
    if not isinstance(text, str):
        msg = f"must be text, got {type(text).__name__}"
        raise _refuse(msg, "message")
    if len(text) > MAX_MESSAGE_CHARS:
        msg = f"longer than {MAX_MESSAGE_CHARS} characters ({len(text)})"
        raise _refuse(msg, "message")
    if "\r" in text:
        msg = "carriage return found: lines end with LF only"
        raise _refuse(msg, "message")
    if not text.isascii():
        bad = next(c for c in text if not c.isascii())
        msg = f"non-ASCII character {bad!r}: the grammar is ASCII"
        raise _refuse(msg, "message")
    if text.endswith("\n"):
        msg = "ends with a line break: the last field (or resource) ends the message"
        raise _refuse(msg, "message")
    lines = _Lines(text.split("\n"))
    first = lines.take("domain")
    if not first.endswith(HEADER):
        msg = f"the first line must end with {HEADER.strip()!r}, got {_shown(first)}"
        raise _refuse(msg, "domain")
    origin = first[: -len(HEADER)]
    scheme, sep, domain = origin.partition("://")
    if not sep:
        scheme, domain = "", origin
    address = lines.take("address")
    lines.blank("statement")
    statement: str | None = None
    if lines.peek() != "" or (lines.at + 1 < len(lines.lines) and lines.lines[lines.at + 1] == ""):
        statement = lines.take("statement")
    lines.blank("URI")
    uri = lines.tagged("URI")
    version = lines.tagged("Version")
    chain_text = lines.tagged("Chain ID")
    if not _CHAIN_ID_RE.match(chain_text) or len(chain_text) > MAX_CHAIN_ID_DIGITS:
        msg = f"must be a decimal number without leading zeros, got {_shown(chain_text)}"
        raise _refuse(msg, "Chain ID")
    nonce = lines.tagged("Nonce")
    issued_at = lines.tagged("Issued At")
    expiration_time = lines.optional("Expiration Time")
    not_before = lines.optional("Not Before")
    request_id = lines.optional("Request ID")
    resources: tuple[str, ...] | None = None
    if lines.peek() == "Resources:":
        lines.take("Resources")
        items: list[str] = []
        while not lines.done():
            line = lines.take("Resources")
            if not line.startswith("- "):
                msg = f"line {lines.at}: each resource line is '- ' and a URI, got {_shown(line)}"
                raise _refuse(msg, "Resources")
            items.append(line[2:])
        resources = tuple(items)
    if not lines.done():
        line = lines.take("message")
        msg = (
            f"line {lines.at} is not an EIP-4361 field in its place (Expiration Time, Not "
            f"Before, Request ID, Resources, in that order, or the end), got {_shown(line)}"
        )
        raise _refuse(msg, "message")
    message = SiweMessage(
        scheme=scheme if sep else None,
        domain=domain,
        address=address,
        statement=statement,
        uri=uri,
        version=version,
        chain_id=int(chain_text),
        nonce=nonce,
        issued_at=issued_at,
        expiration_time=expiration_time,
        not_before=not_before,
        request_id=request_id,
        resources=resources,
    )
    _check_fields(message)
    return message


def _signature_bytes(signature: str) -> bytes:
    text = signature[2:] if signature[:2] in {"0x", "0X"} else signature
    if len(text) != 130 or not re.fullmatch(r"[0-9A-Fa-f]*", text):  # 65 bytes
        msg = "must be 0x and 130 hex digits (65 bytes: r, s, v)"
        raise _refuse(msg, "signature")
    raw = bytes.fromhex(text)
    if int.from_bytes(raw[32:64], "big") > SECP256K1_N // 2:
        msg = "s is in the upper half of the curve order (EIP-2): not a canonical signature"
        raise _bad_signature(msg)
    if raw[64] not in {0, 1, 27, 28}:
        msg = f"v must be 27 or 28 (or 0 or 1), got {raw[64]}"
        raise _bad_signature(msg)
    return raw


def recover(text: str, signature: str) -> str:
    """The address that signed ``text`` with ``personal_sign`` (EIP-191), checksummed.

    Parameters
    ----------
    text : str
        The message exactly as signed.
    signature : str
        ``0x`` and 130 hex digits (r, s, v; v 27/28 or 0/1).

    Raises
    ------
    SiweRefused
        ``code="malformed"``: not 65 bytes of hex; ``"bad_signature"``: a non-canonical
        ``s``, a bad ``v``, or no key recovers.
    """
    raw = _signature_bytes(signature)
    try:
        address: str = Account.recover_message(encode_defunct(text=text), signature=raw)
    except (BadSignature, ValidationError, ValueError) as exc:
        msg = f"no public key recovers from it ({exc})"
        raise _bad_signature(msg) from None
    return address


def verify(text: str, signature: str) -> SiweMessage:
    """Parse ``text`` strictly and check that its ``address`` signed it.

    Only the message and its signature are checked; whether its domain, URI, chain, nonce
    and times are acceptable is the caller's (:class:`controller.auth.Auth`).

    Parameters
    ----------
    text : str
        The EIP-4361 message exactly as signed.
    signature : str
        The ``personal_sign`` signature, ``0x`` and 130 hex digits.

    Returns
    -------
    SiweMessage
        The parsed message.

    Raises
    ------
    SiweRefused
        ``code="malformed"`` (as :func:`parse`, or the signature is not 65 bytes of hex) or
        ``"bad_signature"`` (as :func:`recover`, or it recovers another address than the
        message's).
    """
    message = parse(text)
    signer = recover(text, signature)
    if signer != message.address:
        msg = f"signed by {signer}, not by the message's address {message.address}"
        raise _bad_signature(msg)
    return message


def sign(text: str, key: str | bytes) -> str:
    """Sign ``text`` as a wallet's ``personal_sign`` does (for tests, demos and CLI clients).

    Parameters
    ----------
    text : str
        The message (normally :func:`format_message`'s).
    key : str or bytes
        A private key (hex or 32 bytes).

    Returns
    -------
    str
        ``0x`` and 130 hex digits (v is 27 or 28).
    """
    signed = Account.sign_message(encode_defunct(text=text), private_key=key)
    return "0x" + bytes(signed.signature).hex()


__all__ = [
    "HEADER",
    "MAX_MESSAGE_CHARS",
    "SiweMessage",
    "format_message",
    "parse",
    "parse_time",
    "recover",
    "rfc3339",
    "sign",
    "verify",
]
