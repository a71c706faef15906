"""``peergrid keys ...``: encrypted keystores for the operator's and the admin's keys.

==============================  ===============================================================
``new --out PATH``              a new random key, written encrypted to ``PATH``
``import --out PATH``           an existing key, read from standard input (a pipe) or typed
                                at a prompt (not shown), written encrypted to ``PATH``
``address PATH``                the address a keystore records (no password needed)
==============================  ===============================================================

Keystores are Web3 Secret Storage JSON (version 3, scrypt; what geth, Foundry's ``cast
wallet`` and eth-account read and write), created with mode ``0600`` and never over an
existing file. The password comes from the environment variable ``--password-env`` (default
``PEERGRID_KEYSTORE_PASSWORD``) or, on a terminal, is typed twice. A key is never a
command-line argument and is never printed: ``new`` prints only the address, so back up the
keystore and its password (README, "Keys, backups and rotation").

Exit codes as ``peergrid``: 0 ok; 2 bad input (a file already there, a folder that does not
exist, no password, not a key, not a keystore), with one line naming the problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.keys import (
    DEFAULT_PASSWORD_ENV,
    KeyUnavailable,
    keystore_password,
    read_private_key,
)

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def register(sub: Any) -> None:  # noqa: ANN401 - argparse's private _SubParsersAction
    """Add ``peergrid keys new|import|address`` to the subparsers ``sub`` of ``peergrid``.

    Parameters
    ----------
    sub : argparse subparsers action
        What ``ArgumentParser.add_subparsers`` returned for ``peergrid``.
    """
    keys = sub.add_parser("keys", help="encrypted keystores: new, import, address")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    for name, text, func in (
        ("new", "write a new random key to an encrypted keystore", cmd_new),
        ("import", "encrypt a key read from standard input into a keystore", cmd_import),
    ):
        parser = keys_sub.add_parser(name, help=text)
        parser.add_argument("--out", required=True, help="keystore file to create (0600)")
        parser.add_argument(
            "--password-env",
            default=DEFAULT_PASSWORD_ENV,
            help=f"environment variable with the password (default {DEFAULT_PASSWORD_ENV}; "
            "unset: asked on the terminal)",
        )
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(func=func)
    address = keys_sub.add_parser("address", help="the address of a keystore (no password)")
    address.add_argument("path", help="keystore file")
    address.add_argument("--json", action="store_true", help="print JSON")
    address.set_defaults(func=cmd_address)


def _run(args: argparse.Namespace, body: Callable[[], dict[str, str]], text: str) -> int:
    """Run ``body``; print its result (``text`` formatted with it), or one line and exit 2."""
    from adapters.chain import KeystoreError  # noqa: PLC0415

    try:
        data = body()
    except (KeystoreError, KeyUnavailable) as exc:
        sys.stderr.write(f"peergrid keys: error: {exc}\n")
        return EXIT_BAD_INPUT
    sys.stdout.write((json.dumps(data, indent=2) if args.json else text.format(**data)) + "\n")
    return EXIT_OK


def _check_out(out: str) -> Path:
    """Refuse an output path before asking for anything (the write refuses it again)."""
    path = Path(out)
    if path.exists() or path.is_symlink():
        msg = f"keystore {path}: a file is already there (keystores are never overwritten)"
        raise KeyUnavailable(msg)
    if not path.parent.is_dir():
        msg = f"keystore {path}: the folder {path.parent} does not exist"
        raise KeyUnavailable(msg)
    return path


def cmd_new(args: argparse.Namespace) -> int:
    """``peergrid keys new --out PATH``: a new random key in a new keystore.

    Parameters
    ----------
    args : argparse.Namespace
        ``out``, ``password_env``, ``json``.

    Returns
    -------
    int
        0, or 2 for bad input (module docstring).
    """

    def body() -> dict[str, str]:
        from adapters.chain import new_account, write_keystore  # noqa: PLC0415

        path = _check_out(args.out)
        password = keystore_password(args.password_env, what=f"new keystore {path}", confirm=True)
        address = write_keystore(path, new_account(), password)
        return {"address": str(address), "path": str(path)}

    return _run(args, body, "{address}  (new key, encrypted in {path})")


def cmd_import(args: argparse.Namespace) -> int:
    """``peergrid keys import --out PATH``: a key from standard input in a new keystore.

    Parameters
    ----------
    args : argparse.Namespace
        ``out``, ``password_env``, ``json``.

    Returns
    -------
    int
        0, or 2 for bad input (module docstring).
    """

    def body() -> dict[str, str]:
        from adapters.chain import write_keystore  # noqa: PLC0415

        path = _check_out(args.out)
        account = read_private_key(what=f"the key to store in {path}")
        password = keystore_password(args.password_env, what=f"new keystore {path}", confirm=True)
        address = write_keystore(path, account, password)
        return {"address": str(address), "path": str(path)}

    return _run(args, body, "{address}  (imported, encrypted in {path})")


def cmd_address(args: argparse.Namespace) -> int:
    """``peergrid keys address PATH``: the address a keystore records, without its password.

    Parameters
    ----------
    args : argparse.Namespace
        ``path``, ``json``.

    Returns
    -------
    int
        0, or 2 for a file that is not a keystore (module docstring).
    """

    def body() -> dict[str, str]:
        from adapters.chain import keystore_address  # noqa: PLC0415

        return {"address": str(keystore_address(args.path)), "path": str(args.path)}

    return _run(args, body, "{address}")


__all__ = ["cmd_address", "cmd_import", "cmd_new", "register"]
