"""Encrypted key files: Web3 Secret Storage (version 3) JSON, as eth-account reads and writes it.

A keystore holds one private key encrypted with a password (scrypt or PBKDF2 stretches the
password, AES-128-CTR encrypts the key, a MAC detects a wrong password) and, in clear, the
account's address, so the address of a keystore is known without its password
(:func:`keystore_address`). :func:`open_keystore` decrypts one into a signing account,
:func:`write_keystore` writes a new one (mode ``0600``, never over an existing file).

Errors are :class:`~adapters.chain.errors.KeystoreError` (a :class:`ValueError`):
:class:`~adapters.chain.errors.WrongPassword` when the password does not open the file,
:class:`~adapters.chain.errors.KeystoreExists` when a file is in the way. Their messages
name the file and the problem and never hold key material: eth-account's own exceptions are
not chained (``from None``), so no traceback carries them either.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress

from adapters.chain.accounts import Signer, checksum_address
from adapters.chain.errors import InvalidAccount, KeystoreError, KeystoreExists, WrongPassword

KEYSTORE_MODE: Final = 0o600
"""File mode of a written keystore: read and write by its owner only."""

MAX_KEYSTORE_BYTES: Final = 64 * 1024
"""Largest file read as a keystore [bytes] (a real one is about 500 bytes)."""

MAX_SCRYPT_N: Final = 2**20
"""Largest scrypt cost ``n`` accepted (geth's "standard" is 2**18); a larger one would tie up
gigabytes of memory for one password check."""

MAX_PBKDF2_ROUNDS: Final = 10**7
"""Largest PBKDF2 iteration count accepted."""

_HEX = re.compile(r"(0x)?[0-9a-fA-F]*")


def _malformed(path: Path, what: str) -> KeystoreError:
    return KeystoreError(f"keystore {path}: not a Web3 Secret Storage keystore ({what})")


def _hex_field(path: Path, table: Mapping[str, Any], key: str, where: str) -> None:
    value = table.get(key)
    if not isinstance(value, str) or not value or _HEX.fullmatch(value) is None:
        raise _malformed(path, f"{where}{key} must be hex")


def _check_kdf(path: Path, crypto: Mapping[str, Any]) -> None:
    kdf = crypto.get("kdf")
    params = crypto.get("kdfparams")
    if not isinstance(params, Mapping):
        raise _malformed(path, "no crypto.kdfparams")
    _hex_field(path, params, "salt", "crypto.kdfparams.")
    ints = {k: v for k, v in params.items() if k not in {"salt", "prf"}}
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in ints.values()):
        raise _malformed(path, "crypto.kdfparams must be positive integers and a salt")
    if kdf == "scrypt":
        n = params.get("n", 0)
        if not {"n", "r", "p", "dklen"} <= params.keys() or n & (n - 1) or n > MAX_SCRYPT_N:
            what = f"scrypt needs n (a power of two <= {MAX_SCRYPT_N}), r, p and dklen"
            raise _malformed(path, what)
    elif kdf == "pbkdf2":
        if not {"c", "dklen"} <= params.keys() or params["c"] > MAX_PBKDF2_ROUNDS:
            raise _malformed(path, f"pbkdf2 needs c (<= {MAX_PBKDF2_ROUNDS}) and dklen")
    else:
        raise _malformed(path, "crypto.kdf must be scrypt or pbkdf2")


def _read(path: Path) -> dict[str, Any]:
    """The keystore document at ``path``, checked for shape (not decrypted)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_KEYSTORE_BYTES + 1)
    except IsADirectoryError:
        msg = f"keystore {path}: is a folder, not a file"
        raise KeystoreError(msg) from None
    except OSError as exc:
        msg = f"keystore {path}: cannot read it ({exc.strerror or type(exc).__name__})"
        raise KeystoreError(msg) from None
    if len(raw) > MAX_KEYSTORE_BYTES:
        raise _malformed(path, f"larger than {MAX_KEYSTORE_BYTES} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _malformed(path, "not UTF-8 text") from None
    except ValueError:
        raise _malformed(path, "not JSON") from None
    if not isinstance(doc, dict):
        raise _malformed(path, "not a JSON object")
    if doc.get("version") != 3:
        raise _malformed(path, "version must be 3")
    crypto = doc.get("crypto", doc.get("Crypto"))
    if not isinstance(crypto, Mapping):
        raise _malformed(path, "no crypto object")
    if crypto.get("cipher") != "aes-128-ctr":
        raise _malformed(path, "crypto.cipher must be aes-128-ctr")
    cipherparams = crypto.get("cipherparams")
    if not isinstance(cipherparams, Mapping):
        raise _malformed(path, "no crypto.cipherparams")
    _hex_field(path, cipherparams, "iv", "crypto.cipherparams.")
    _hex_field(path, crypto, "ciphertext", "crypto.")
    _hex_field(path, crypto, "mac", "crypto.")
    _check_kdf(path, crypto)
    return doc


def _recorded_address(path: Path, doc: Mapping[str, Any]) -> ChecksumAddress | None:
    raw = doc.get("address")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise _malformed(path, "address must be a string")
    text = raw if raw.startswith("0x") else "0x" + raw
    try:
        return checksum_address(text)
    except InvalidAccount:
        raise _malformed(path, "address is not a 20-byte hex address") from None


def keystore_address(path: str | os.PathLike[str]) -> ChecksumAddress:
    """The address a keystore records, read without its password.

    Parameters
    ----------
    path : path
        The keystore file.

    Returns
    -------
    ChecksumAddress
        The account's address (EIP-55).

    Raises
    ------
    KeystoreError
        The file cannot be read, is not a version-3 keystore, or records no address.
    """
    where = Path(path)
    address = _recorded_address(where, _read(where))
    if address is None:
        raise _malformed(where, "it records no address; open it with its password")
    return address


def open_keystore(path: str | os.PathLike[str], password: str) -> Signer:
    """Decrypt a keystore into its signing account.

    Parameters
    ----------
    path : path
        The keystore file.
    password : str
        Its password.

    Returns
    -------
    Signer
        The account. Where the file records an address, it is checked to be this key's.

    Raises
    ------
    WrongPassword
        The password does not open the file (or the file was altered).
    KeystoreError
        The file cannot be read, is not a version-3 keystore, or records an address that is
        not its key's.
    """
    where = Path(path)
    doc = _read(where)
    recorded = _recorded_address(where, doc)
    try:
        key = Account.decrypt(doc, password)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            msg = f"keystore {where}: wrong password (or the file was altered)"
            raise WrongPassword(msg) from None
        raise _malformed(where, "its crypto parameters do not decrypt") from None
    except (TypeError, KeyError, AttributeError):
        raise _malformed(where, "its crypto parameters do not decrypt") from None
    account: LocalAccount = Account.from_key(key)
    if recorded is not None and account.address != recorded:
        msg = f"keystore {where}: records address {recorded} but holds the key of another"
        raise KeystoreError(msg)
    return account


def write_keystore(
    path: str | os.PathLike[str],
    account: Signer,
    password: str,
    *,
    scrypt_n: int | None = None,
) -> ChecksumAddress:
    """Encrypt ``account``'s key with ``password`` into a new keystore file.

    The file is created with mode ``0600`` (:data:`KEYSTORE_MODE`) and written in full
    (flushed to disk) before this returns; an existing file is never replaced.

    Parameters
    ----------
    path : path
        The file to create; its folder must exist.
    account : Signer
        The account whose key is stored.
    password : str
        Non-empty password.
    scrypt_n : int or None
        scrypt's cost (a power of two); ``None`` takes eth-account's default (2**18, about a
        second per encryption or decryption). Tests use smaller values.

    Returns
    -------
    ChecksumAddress
        The account's address (also recorded in the file).

    Raises
    ------
    KeystoreExists
        Something is already at ``path``.
    KeystoreError
        An empty password, or the file cannot be created (no such folder, no permission).
    """
    where = Path(path)
    if not password:
        msg = f"keystore {where}: an empty password protects nothing"
        raise KeystoreError(msg)
    document = json.dumps(Account.encrypt(account.key, password, iterations=scrypt_n))
    try:
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEYSTORE_MODE)
    except FileExistsError:
        msg = f"keystore {where}: a file is already there (keystores are never overwritten)"
        raise KeystoreExists(msg) from None
    except OSError as exc:
        msg = f"keystore {where}: cannot create it ({exc.strerror or type(exc).__name__})"
        raise KeystoreError(msg) from None
    try:
        os.fchmod(fd, KEYSTORE_MODE)  # whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(document + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        where.unlink(missing_ok=True)
        msg = f"keystore {where}: cannot write it ({exc.strerror or type(exc).__name__})"
        raise KeystoreError(msg) from None
    return checksum_address(account.address)


__all__ = [
    "KEYSTORE_MODE",
    "MAX_KEYSTORE_BYTES",
    "MAX_PBKDF2_ROUNDS",
    "MAX_SCRYPT_N",
    "keystore_address",
    "open_keystore",
    "write_keystore",
]
