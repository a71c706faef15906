"""``peergrid devices keys ...``: the P-256 keys meters sign their readings with (issue 17).

=============  ================================================================================
``new``        make a device key (P-256) and write it to ``--out FILE`` (PKCS#8 PEM, encrypted
               with the password of ``--password-env`` or a prompt; mode 0600; an existing
               file is never overwritten); prints only the public key (64 bytes hex, what the
               registry holds). A device key is never an account key: it cannot sign a
               transaction, and PeerGrid never logs or records it
``deploy``     deploy the site's ``DeviceKeys`` registry (the operator pays the gas); with
               ``--governance FILE`` the community's timelock may change keys by vote; prints
               the address for ``[chain] device_keys_address``
``register``   the participant registers its device's public key (``--key-file`` PEM or
               ``--public-key HEX``), signing with its own account key (``--keystore`` /
               ``--key-env``): itself, or with ``--relay`` by an EIP-712 signature the operator
               relays (the participant needs no ether; the operator cannot change what it signed)
``rotate``     the same, replacing the key in force by a new one (never one used before)
``revoke``     the participant revokes the device's key: its readings are UNVERIFIED from the
               next boundary on, until a new key is registered
``show``       a device's keys, every change with its block (``--owner ADDRESS``, or the
               ``--site``'s participant of the device)
=============  ================================================================================

The registry comes from ``--registry ADDRESS`` or the site's ``[chain] device_keys_address``;
the chain flags are ``peergrid chain``'s. What the registry refuses (a key in force already,
a key used before, not the owner) exits 1 with its reason. Exit codes as ``peergrid``.
"""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controller.cli_chain import (
    DEV_ETHER_WEI,
    EXIT_OK,
    _common,
    _print,
    _run,
    _site,
    open_client,
    resolve,
)
from controller.config import ChainBackend, SiteConfig
from controller.errors import ConfigError
from controller.keys import DEFAULT_PASSWORD_ENV, KeyRole, KeySource, keystore_password
from market.errors import InvalidQuantity
from market.signed_readings import load_public_key, new_private_key, public_key_bytes

if TYPE_CHECKING:
    from adapters.chain import ChainClient
    from adapters.chain.device_keys import DeviceKeys

RELAY_DEADLINE_S = 3_600
"""How long a relayed change's signature is valid [s from the chain's latest block]."""


def register(devices_sub: Any) -> None:  # noqa: ANN401 - argparse's private _SubParsersAction
    """Add ``keys ...`` to the subparsers of ``peergrid devices``."""
    keys = devices_sub.add_parser("keys", help="the P-256 keys devices sign readings with")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    new = keys_sub.add_parser("new", help="make a device key, write it encrypted to a file")
    new.add_argument("--out", required=True, help="the key file to write (PEM, mode 0600)")
    new.add_argument(
        "--password-env",
        default=None,
        help=f"environment variable with the file's password ({DEFAULT_PASSWORD_ENV})",
    )
    new.add_argument("--json", action="store_true", help="print JSON")
    new.set_defaults(func=cmd_new)

    deploy = keys_sub.add_parser("deploy", help="deploy the site's DeviceKeys registry")
    _common(deploy, addresses=False)
    deploy.add_argument("--governance", default=None, help="JSON from 'gov deploy --out'")
    deploy.set_defaults(func=cmd_deploy)

    for name, func, text in (
        ("register", cmd_register, "register a device's public key (its participant)"),
        ("rotate", cmd_rotate, "replace a device's key in force (its participant)"),
        ("revoke", cmd_revoke, "revoke a device's key in force (its participant)"),
    ):
        parser = keys_sub.add_parser(name, help=text)
        _common(parser, addresses=False)
        parser.add_argument("device", help="the device id, as in the site file")
        parser.add_argument("--registry", default=None, help="the DeviceKeys address")
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--keystore", default=None, help="the participant's keystore file")
        who.add_argument("--key-env", default=None, help="environment variable with its key")
        parser.add_argument(
            "--relay",
            action="store_true",
            help="sign an EIP-712 KeyChange and have the operator send it (pays the gas)",
        )
        if name != "revoke":
            key = parser.add_mutually_exclusive_group(required=True)
            key.add_argument("--key-file", default=None, help="the device's key file (PEM)")
            key.add_argument("--public-key", default=None, help="its public key, 128 hex digits")
            parser.add_argument(
                "--key-password-env",
                default=None,
                help=f"environment variable with the key file's password ({DEFAULT_PASSWORD_ENV})",
            )
        parser.set_defaults(func=func)

    show = keys_sub.add_parser("show", help="a device's keys, every change with its block")
    _common(show, addresses=False)
    show.add_argument("device", help="the device id")
    show.add_argument("--registry", default=None, help="the DeviceKeys address")
    show.add_argument("--owner", default=None, help="its participant's account address")
    show.set_defaults(func=cmd_show)


# ----------------------------------------------------------------------------- key files


def write_key_file(path: Path, key: ec.EllipticCurvePrivateKey, password: str) -> None:
    """Write ``key`` to a new file ``path``: PKCS#8 PEM, encrypted, readable by its owner only.

    Raises
    ------
    ConfigError
        ``path`` exists (a key is never overwritten), or an empty password.
    """
    if not password:
        msg = "a device key file needs a password (it is never written in the clear)"
        raise ConfigError(msg)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    except FileExistsError:
        msg = f"{path} exists: a device key is never overwritten (choose another --out)"
        raise ConfigError(msg) from None
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror}"
        raise ConfigError(msg) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def read_key_file(path: Path, password: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 key in the PEM file ``path`` (what :func:`write_key_file` wrote).

    Raises
    ------
    ConfigError
        Unreadable, a wrong password, or not a P-256 key (the key is never in the message).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read the device key file {path}: {exc.strerror}"
        raise ConfigError(msg) from None
    try:
        key = serialization.load_pem_private_key(data, password.encode() or None)
    except (ValueError, TypeError):
        msg = f"{path}: not a device key, or the wrong password"
        raise ConfigError(msg) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        msg = f"{path}: not a P-256 (secp256r1) key"
        raise ConfigError(msg)
    return key


def _public_key(args: argparse.Namespace) -> bytes:
    if args.public_key:
        try:
            raw = bytes.fromhex(args.public_key.removeprefix("0x"))
            load_public_key(raw)
        except (ValueError, InvalidQuantity) as exc:
            msg = f"--public-key: not a P-256 public key of 64 bytes: {exc}"
            raise ConfigError(msg) from None
        return raw
    env = args.key_password_env or DEFAULT_PASSWORD_ENV
    password = keystore_password(env, what=f"the device key file {args.key_file}")
    return public_key_bytes(read_key_file(Path(args.key_file), password))


# ----------------------------------------------------------------------------- commands


def cmd_new(args: argparse.Namespace) -> int:
    """``peergrid devices keys new`` (module docstring)."""

    def body() -> int:
        env = args.password_env or DEFAULT_PASSWORD_ENV
        password = keystore_password(env, what="the new device key file", confirm=True)
        key = new_private_key()
        path = Path(args.out)
        write_key_file(path, key, password)
        public = public_key_bytes(key).hex()
        _print(
            args,
            {"file": str(path), "public_key": public},
            f"device key written to {path} (encrypted, mode 0600); public key:\n{public}",
        )
        return EXIT_OK

    return _run(args, body)


def _registry(args: argparse.Namespace, site: SiteConfig | None) -> str:
    address = args.registry or (site.chain.device_keys_address if site is not None else "")
    if not address:
        msg = "which registry? give --registry ADDRESS or a --site with device_keys_address"
        raise ConfigError(msg)
    return str(address)


def _attached(client: ChainClient, address: str) -> DeviceKeys:
    from adapters.chain.device_keys import DeviceKeys  # noqa: PLC0415 - web3 on demand

    keys = DeviceKeys(client.contracts)
    keys.attach(address)
    return keys


def cmd_deploy(args: argparse.Namespace) -> int:
    """``peergrid devices keys deploy`` (module docstring)."""

    def body() -> int:
        resolved = resolve(args, _site(args))
        with open_client(resolved, attach=False, operator=True) as client:
            from adapters.chain.device_keys import DeviceKeys  # noqa: PLC0415

            governor = None
            if args.governance:
                from controller.wiring import attach_governance  # noqa: PLC0415

                governor = attach_governance(client, args.governance).timelock.address
            if resolved.backend is ChainBackend.ANVIL:
                client.fund_eth(client.operator.address, DEV_ETHER_WEI)
            keys = DeviceKeys(client.contracts)
            address = keys.deploy(governor)
            data = {"registry": address, "governor": governor}
            text = (
                f"DeviceKeys deployed at {address} "
                + (f"(governed by the timelock {governor})" if governor else "(no governor)")
                + f'; put it in the site file: [chain] device_keys_address = "{address}"'
            )
            _print(args, data, text)
        return EXIT_OK

    return _run(args, body)


def _change(args: argparse.Namespace, action_name: str) -> int:
    """Register, rotate or revoke ``args.device``'s key, signed by its participant."""

    def body() -> int:
        from adapters.chain.device_keys import KeyAction  # noqa: PLC0415

        site = _site(args)
        resolved = resolve(args, site)
        action = KeyAction[action_name.upper()]
        key = b"" if action is KeyAction.REVOKE else _public_key(args)
        source = KeySource(
            role=KeyRole.PARTICIPANT,
            keystore=args.keystore or "",
            key_env=args.key_env or "",
            password_env=args.password_env or DEFAULT_PASSWORD_ENV,
        )
        owner = source.signer()
        with open_client(resolved, attach=False, operator=args.relay) as client:
            keys = _attached(client, _registry(args, site))
            if args.relay:
                if resolved.backend is ChainBackend.ANVIL:
                    client.fund_eth(client.operator.address, DEV_ETHER_WEI)
                tx = keys.relay_for(
                    client.operator,
                    owner,
                    device_id=args.device,
                    key=key,
                    action=action,
                    deadline=keys.latest_timestamp() + RELAY_DEADLINE_S,
                )
            else:
                if resolved.backend is ChainBackend.ANVIL:
                    client.fund_eth(owner.address, DEV_ETHER_WEI)
                send = {"register": keys.register, "rotate": keys.rotate}.get(action_name)
                tx = send(owner, args.device, key) if send else keys.revoke(owner, args.device)
            found = keys.key_of(owner.address, args.device)
            data = {
                "device": args.device,
                "owner": owner.address,
                "action": action_name,
                "tx": tx.tx_hash,
                "block": tx.block_number,
                "relayed": bool(args.relay),
                "active": bool(found is not None and found.active),
            }
            text = (
                f"{args.device} of {owner.address}: key {action_name}d in block {tx.block_number}"
                + (" (relayed by the operator)" if args.relay else "")
            )
            _print(args, data, text)
        return EXIT_OK

    return _run(args, body)


def cmd_register(args: argparse.Namespace) -> int:
    """``peergrid devices keys register`` (module docstring)."""
    return _change(args, "register")


def cmd_rotate(args: argparse.Namespace) -> int:
    """``peergrid devices keys rotate`` (module docstring)."""
    return _change(args, "rotate")


def cmd_revoke(args: argparse.Namespace) -> int:
    """``peergrid devices keys revoke`` (module docstring)."""
    return _change(args, "revoke")


def cmd_show(args: argparse.Namespace) -> int:
    """``peergrid devices keys show`` (module docstring)."""

    def body() -> int:
        site = _site(args)
        owner = args.owner
        if not owner and site is not None:
            device = next((d for d in site.devices if d.id == args.device), None)
            account = site.participant(device.participant).account if device else ""
            owner = account if account and account != "derive" else None
        if not owner:
            msg = (
                "whose device? give --owner ADDRESS (or a --site naming its participant's account)"
            )
            raise ConfigError(msg)
        resolved = resolve(args, site)
        with open_client(resolved, attach=False) as client:
            keys = _attached(client, _registry(args, site))
            history = keys.history(owner, args.device)
            changes = [
                {
                    "block": c.block_number,
                    "action": c.action.name.lower(),
                    "key": c.key.hex(),
                    "active": c.active,
                }
                for c in history
            ]
            in_force = changes[-1] if changes and changes[-1]["active"] else None
            text = "\n".join(
                [
                    f"{args.device} of {owner}: "
                    + ("key in force" if in_force else "no key in force")
                ]
                + [f"  block {c['block']}: {c['action']} {c['key'] or '-'}" for c in changes]
            )
            _print(args, {"device": args.device, "owner": owner, "changes": changes}, text)
        return EXIT_OK

    return _run(args, body)


__all__ = ["read_key_file", "register", "write_key_file"]
