"""``peergrid order ...``: a prosumer places, cancels and lists signed orders over the API.

=========================================  ======================================================
``order place``                            an order for one interval: ``--interval-start ISO``
                                           (or ``next``: the first interval still open),
                                           ``--side buy|sell``, ``--energy-wh N``,
                                           ``--limit-price N`` [token base units per kWh],
                                           ``--deadline-s S`` (void S seconds from now; default:
                                           the interval's gate closure)
``order standing``                         a standing order: ``--kind sell_surplus|buy_demand|
                                           buy|sell|battery``, ``--price N``, ``--valid-from ISO``
                                           (or ``next``), ``--valid-until ISO`` (default: no
                                           end); ``buy``/``sell``: ``--energy-wh N`` per
                                           interval; ``battery``: ``--discharge-price N``,
                                           ``--min-soc-permille N``, ``--max-soc-permille N``
``order cancel --digest 0x...``            cancel an order or standing order (its digest)
``order list [--kind order|standing|``     my signed messages, newest first (signs in: EIP-4361)
``cancel] [--limit N]``
=========================================  ======================================================

Every subcommand takes ``--api URL`` (the server, e.g. ``http://127.0.0.1:8080``), ``--site
SITE`` (its id in the paths; default: the one the server fronts) and ``--keystore FILE``
(the participant's key, Web3 Secret Storage JSON as ``peergrid keys new`` writes). The
password comes from ``--password-file F`` (its first line), else the environment variable
``--password-env`` (default ``PEERGRID_KEYSTORE_PASSWORD``), else, on a terminal, a prompt
(as ``peergrid keys``). The key is used here to sign (:mod:`controller.client`): it is never
sent, printed or logged; only the signed message and its signature go to the server.

Exit codes: 0 accepted (or listed); 1 the server refused (its status, code and reason on
one line) or cannot be reached; 2 bad input (arguments, keystore, password).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from controller.cli_types import non_negative_int, positive_int, price_per_kwh, utc_time
from controller.keys import DEFAULT_PASSWORD_ENV, KeyUnavailable, keystore_password

if TYPE_CHECKING:
    from adapters.chain import Signer
    from controller.client import Acknowledgement, PeerGridClient

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_BAD_INPUT: Final = 2

FOREVER_S: Final = 2**64 - 1
"""``validUntil`` of a standing order without an end (a wallet's max uint64)."""

MAX_PASSWORD_FILE_BYTES: Final = 4096

KINDS: Final = {"order": "Order", "standing": "StandingOrder", "cancel": "Cancel"}
"""``order list --kind``: the signed message kind it lists."""


class _Next:
    """``next``: the first interval whose gate is still open (on the server's clock)."""

    def __repr__(self) -> str:
        return "next"


NEXT: Final = _Next()


def interval_time(text: str) -> datetime | _Next:
    """An ISO 8601 time with a zone, or ``next`` (argparse type).

    Raises
    ------
    argparse.ArgumentTypeError
        Neither.
    """
    if text.strip().lower() == "next":
        return NEXT
    return utc_time(text)


def digest_hex(text: str) -> str:
    """An EIP-712 digest: ``0x`` and 64 hex digits (argparse type).

    Raises
    ------
    argparse.ArgumentTypeError
        Not one.
    """
    value = text.strip()
    body = value[2:] if value[:2].lower() == "0x" else ""
    if len(body) != 64 or any(c not in "0123456789abcdefABCDEF" for c in body):
        msg = f"not a digest (0x and 64 hex digits): {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return "0x" + body.lower()


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", required=True, help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--site", default="", help="the site's id (default: the server's)")
    parser.add_argument("--keystore", required=True, help="the participant's keystore (JSON)")
    parser.add_argument(
        "--password-file", default=None, help="file whose first line is the keystore's password"
    )
    parser.add_argument(
        "--password-env",
        default=DEFAULT_PASSWORD_ENV,
        help=f"environment variable with the password (default {DEFAULT_PASSWORD_ENV}; "
        "unset: asked on the terminal)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def _deadline(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deadline-s",
        type=positive_int,
        default=None,
        help="the message is void this many seconds from now (default: the gate closure)",
    )
    parser.add_argument(
        "--nonce", type=non_negative_int, default=None, help="message nonce (default: random)"
    )


def register(sub: Any) -> None:  # noqa: ANN401 - argparse's private _SubParsersAction
    """Add ``peergrid order place|standing|cancel|list`` to ``peergrid``'s subparsers.

    Parameters
    ----------
    sub : argparse subparsers action
        What ``ArgumentParser.add_subparsers`` returned for ``peergrid``.
    """
    order = sub.add_parser("order", help="place, cancel and list signed orders over the API")
    order_sub = order.add_subparsers(dest="order_command", required=True)

    place = order_sub.add_parser("place", help="sign and place an order for one interval")
    _common(place)
    place.add_argument(
        "--interval-start",
        type=interval_time,
        required=True,
        help="the interval's start, ISO 8601 with a zone (e.g. 2026-06-21T09:00Z), or next",
    )
    place.add_argument("--side", choices=("buy", "sell"), required=True)
    place.add_argument("--energy-wh", type=positive_int, required=True, help="energy [Wh]")
    place.add_argument(
        "--limit-price",
        type=price_per_kwh,
        required=True,
        help="limit price [token base units per kWh; 300000 = 0.30/kWh]",
    )
    _deadline(place)
    place.set_defaults(func=cmd_place)

    standing = order_sub.add_parser("standing", help="sign and place a standing order")
    _common(standing)
    standing.add_argument(
        "--kind",
        choices=("sell_surplus", "buy_demand", "buy", "sell", "battery"),
        required=True,
        help="as the site file's standing orders",
    )
    standing.add_argument(
        "--price", type=price_per_kwh, required=True, help="[token base units per kWh]"
    )
    standing.add_argument(
        "--energy-wh", type=non_negative_int, default=0, help="buy/sell: per interval [Wh]"
    )
    standing.add_argument(
        "--discharge-price", type=price_per_kwh, default=0, help="battery: [units per kWh]"
    )
    standing.add_argument(
        "--min-soc-permille", type=non_negative_int, default=0, help="battery [1/1000]"
    )
    standing.add_argument(
        "--max-soc-permille", type=non_negative_int, default=0, help="battery [1/1000]"
    )
    standing.add_argument(
        "--valid-from", type=interval_time, required=True, help="ISO 8601 with a zone, or next"
    )
    standing.add_argument(
        "--valid-until", type=utc_time, default=None, help="ISO 8601 with a zone (default: none)"
    )
    _deadline(standing)
    standing.set_defaults(func=cmd_standing)

    cancel = order_sub.add_parser("cancel", help="cancel an order or standing order")
    _common(cancel)
    cancel.add_argument("--digest", type=digest_hex, required=True, help="the order's digest")
    _deadline(cancel)
    cancel.set_defaults(func=cmd_cancel)

    listing = order_sub.add_parser("list", help="my signed messages, newest first")
    _common(listing)
    listing.add_argument("--kind", choices=tuple(KINDS), default="order")
    listing.add_argument("--limit", type=positive_int, default=20, help="at most this many")
    listing.set_defaults(func=cmd_list)


# ---------------------------------------------------------------------------- plumbing
def read_password(args: argparse.Namespace, keystore: Path) -> str:
    """The keystore's password: ``--password-file``, else the environment or a prompt.

    Raises
    ------
    KeyUnavailable
        The file cannot be read, is too long, or its first line is empty; no password.
    """
    if args.password_file is None:
        return keystore_password(args.password_env, what=f"keystore {keystore}")
    path = Path(args.password_file)
    try:
        raw = path.read_bytes()[: MAX_PASSWORD_FILE_BYTES + 1]
    except OSError as exc:
        msg = f"password file {path}: {exc.strerror or 'cannot be read'}"
        raise KeyUnavailable(msg) from None
    if len(raw) > MAX_PASSWORD_FILE_BYTES:
        msg = f"password file {path}: longer than {MAX_PASSWORD_FILE_BYTES} bytes"
        raise KeyUnavailable(msg)
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        msg = f"password file {path}: not UTF-8 text"
        raise KeyUnavailable(msg) from None
    password = lines[0] if lines else ""
    if not password:
        msg = f"password file {path}: its first line is empty"
        raise KeyUnavailable(msg)
    return password


def unlock(args: argparse.Namespace) -> Signer:
    """The account in ``--keystore`` (its password as :func:`read_password`).

    Raises
    ------
    KeyUnavailable
        No password.
    KeystoreError
        Not a keystore, or the password does not open it.
    """
    from adapters.chain import open_keystore  # noqa: PLC0415 - web3 only when a key is used

    path = Path(args.keystore)
    return open_keystore(path, read_password(args, path))


def _run(args: argparse.Namespace, body: Callable[[PeerGridClient, Signer], int]) -> int:
    """Unlock the key, connect, run ``body``; a refusal or a bad input is one line."""
    from adapters.chain import KeystoreError  # noqa: PLC0415
    from controller.client import ApiRefused, ClientError, PeerGridClient  # noqa: PLC0415

    prog = f"peergrid order {args.order_command}"
    try:
        key = unlock(args)
    except (KeystoreError, KeyUnavailable) as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return EXIT_BAD_INPUT
    try:
        with PeerGridClient(args.api, args.site) as api:
            return body(api, key)
    except ApiRefused as exc:
        sys.stderr.write(f"{prog}: refused ({exc.status} {exc.code}): {exc.reason}\n")
        return EXIT_REFUSED
    except ClientError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return EXIT_REFUSED


def _label(unix_s: int | None) -> str:
    if unix_s is None:
        return "-"
    if unix_s >= 2**63 - 1:
        return "no end"
    return datetime.fromtimestamp(unix_s, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _print_ack(args: argparse.Namespace, ack: Acknowledgement) -> int:
    if args.json:
        sys.stdout.write(json.dumps(ack.to_dict(), indent=2) + "\n")
        return EXIT_OK
    what = {
        "Order": f"for the interval at {_label(ack.interval_start_s)}",
        "StandingOrder": f"from {_label(ack.valid_from_s)} until {_label(ack.valid_until_s)}",
        "Cancel": f"cancelling {ack.cancels}",
    }.get(ack.kind, "")
    again = " (sent before: the first acknowledgement)" if ack.duplicate else ""
    sys.stdout.write(
        f"{ack.status} {ack.kind} of {ack.participant} {what}{again}\n"
        f"digest {ack.digest}  nonce {ack.nonce}\n"
    )
    return EXIT_OK


def _deadline_of(api: PeerGridClient, args: argparse.Namespace) -> int | None:
    if args.deadline_s is None:
        return None
    return api.site_info().now_s + int(args.deadline_s)


def _start_of(api: PeerGridClient, value: datetime | _Next) -> int:
    if isinstance(value, _Next):
        return api.site_info().next_open_interval()
    return int(value.timestamp())


# ---------------------------------------------------------------------------- commands
def cmd_place(args: argparse.Namespace) -> int:
    """``peergrid order place``: sign an order for one interval and post it.

    Parameters
    ----------
    args : argparse.Namespace
        See :func:`register`.

    Returns
    -------
    int
        0 accepted; 1 refused or unreachable; 2 bad input.
    """

    def body(api: PeerGridClient, key: Signer) -> int:
        ack = api.place_order(
            key,
            interval_start=_start_of(api, args.interval_start),
            side=args.side,
            energy_wh=args.energy_wh,
            limit_price=args.limit_price,
            deadline=_deadline_of(api, args),
            nonce=args.nonce,
        )
        return _print_ack(args, ack)

    return _run(args, body)


def cmd_standing(args: argparse.Namespace) -> int:
    """``peergrid order standing``: sign a standing order and post it.

    Parameters
    ----------
    args : argparse.Namespace
        See :func:`register`.

    Returns
    -------
    int
        0 accepted; 1 refused or unreachable; 2 bad input.
    """

    def body(api: PeerGridClient, key: Signer) -> int:
        until = FOREVER_S if args.valid_until is None else int(args.valid_until.timestamp())
        ack = api.place_standing_order(
            key,
            kind=args.kind,
            price=args.price,
            energy_wh=args.energy_wh,
            discharge_price=args.discharge_price,
            min_soc_permille=args.min_soc_permille,
            max_soc_permille=args.max_soc_permille,
            valid_from=_start_of(api, args.valid_from),
            valid_until=until,
            deadline=_deadline_of(api, args),
            nonce=args.nonce,
        )
        return _print_ack(args, ack)

    return _run(args, body)


def cmd_cancel(args: argparse.Namespace) -> int:
    """``peergrid order cancel --digest 0x...``: sign a cancel and post it.

    Parameters
    ----------
    args : argparse.Namespace
        See :func:`register`.

    Returns
    -------
    int
        0 accepted; 1 refused or unreachable; 2 bad input.
    """

    def body(api: PeerGridClient, key: Signer) -> int:
        ack = api.cancel(key, args.digest, deadline=_deadline_of(api, args), nonce=args.nonce)
        return _print_ack(args, ack)

    return _run(args, body)


def _describe(message: Mapping[str, Any]) -> str:
    """A signed message's terms in a few words (units as the API)."""
    if "intervalStart" in message:
        side = "buy" if int(message["side"]) == 0 else "sell"
        return f"{side} {message['energyWh']} Wh at {message['limitPrice']}/kWh"
    if "kind" in message:
        from adapters.chain.typed_data import StandingKind  # noqa: PLC0415

        kind = StandingKind(int(message["kind"])).name.lower()
        energy = f" {message['energyWh']} Wh" if int(message["energyWh"]) else ""
        return f"{kind}{energy} at {message['price']}/kWh"
    return f"cancel {str(message.get('orderDigest', ''))[:18]}.."


def cmd_list(args: argparse.Namespace) -> int:
    """``peergrid order list``: sign in and list my signed messages, newest first.

    Parameters
    ----------
    args : argparse.Namespace
        See :func:`register`.

    Returns
    -------
    int
        0 listed; 1 refused or unreachable; 2 bad input.
    """
    from adapters.chain.typed_data import MessageKind  # noqa: PLC0415

    def body(api: PeerGridClient, key: Signer) -> int:
        api.sign_in(key)
        try:
            page = api.orders(MessageKind(KINDS[args.kind]), limit=args.limit)
        finally:
            api.sign_out()
        items: list[dict[str, Any]] = page["items"]
        if args.json:
            sys.stdout.write(json.dumps(items, indent=2) + "\n")
            return EXIT_OK
        if not items:
            sys.stdout.write(f"no signed {args.kind} messages\n")
            return EXIT_OK
        for item in items:
            when = (
                _label(item["interval_start_s"])
                if item["interval_start_s"] is not None
                else _label(item["valid_from_s"])
            )
            sys.stdout.write(
                f"{item['digest']}  {item['status']:<9} {when:<20} {_describe(item['message'])}\n"
            )
        return EXIT_OK

    return _run(args, body)


__all__ = ["cmd_cancel", "cmd_list", "cmd_place", "cmd_standing", "register"]
