"""Where the controller's signing keys come from: keystores, environment variables, prompts.

On a persistent chain (``anvil``, ``rpc``) the controller signs only as the operator, and
``peergrid chain``'s admin commands (``deploy``, ``rotate-operator``) as the admin. Each of
these keys comes from a :class:`KeySource`, one of:

* a **keystore** (Web3 Secret Storage JSON, :mod:`adapters.chain.keystore`), opened with the
  password in the environment variable ``password_env`` (default
  ``PEERGRID_KEYSTORE_PASSWORD``) or, when standard input is a terminal, typed at a prompt
  (:func:`keystore_password`); its address is read without the password;
* an **environment variable** holding the hex private key.

A key never comes from a command-line argument (every user of the machine sees the process
list), and never from a label (:func:`adapters.chain.accounts.derive_account` keys are for
trial chains only, see :mod:`controller.wiring`). Nothing here logs, stores or quotes a key or
a password; an error names the keystore file or the variable and what is wrong with it.

Errors::

    ConfigError (ControllerError, ValueError)
     └── KeyUnavailable      no key configured, an unset variable, no password and no terminal
                             to ask on, a keystore that does not open, a variable that holds
                             no private key; the command line exits 2
"""

from __future__ import annotations

import enum
import getpass
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from controller.config import ChainConfig
from controller.errors import ConfigError

if TYPE_CHECKING:
    from adapters.chain import Signer

# adapters.chain (web3, ~1 s to import) is imported where a key is read, not here: the
# command line registers ``peergrid keys`` and ``peergrid chain`` without importing web3.

DEFAULT_PASSWORD_ENV: Final = "PEERGRID_KEYSTORE_PASSWORD"  # noqa: S105 - a variable's name
"""The environment variable read for a keystore's password unless another is named."""

DEFAULT_OPERATOR_KEY_ENV: Final = "PEERGRID_OPERATOR_KEY"
"""The environment variable read for the operator's hex key when nothing else is named."""

DEFAULT_ADMIN_KEY_ENV: Final = "PEERGRID_ADMIN_KEY"
"""The environment variable read for the admin's hex key when nothing else is named."""

MAX_KEY_INPUT: Final = 4096
"""Most characters read from standard input for one private key."""


class KeyUnavailable(ConfigError):
    """A signing key that cannot be had (the message says which and why, never the key)."""


class KeyRole(enum.StrEnum):
    """Whose key a :class:`KeySource` gives."""

    OPERATOR = "operator"
    """Settles and registers (the settlement contract's ``OPERATOR_ROLE``)."""
    ADMIN = "admin"
    """Deploys, grants and revokes roles, pauses, sets policy (``DEFAULT_ADMIN_ROLE``)."""
    MEMBER = "member"
    """A community member: proposes and votes (``peergrid gov``)."""
    PARTICIPANT = "participant"
    """A participant: registers, rotates and revokes its devices' keys
    (``peergrid devices keys``)."""


def _stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def keystore_password(env_name: str, *, what: str, confirm: bool = False) -> str:
    """The password of a keystore: from the environment, else asked on the terminal.

    Parameters
    ----------
    env_name : str
        The environment variable holding the password (an empty value counts as unset).
    what : str
        What the password opens, for the prompt and messages (e.g. ``"keystore op.json"``).
    confirm : bool
        Ask twice and compare (for a new keystore).

    Returns
    -------
    str
        The password (non-empty).

    Raises
    ------
    KeyUnavailable
        The variable is unset and standard input is not a terminal, the typed password is
        empty, or the two typed passwords differ.
    """
    value = os.environ.get(env_name, "") if env_name else ""
    if value:
        return value
    if not _stdin_is_terminal():
        msg = (
            f"{what}: no password; set the environment variable {env_name or '(none named)'} "
            "or run on a terminal to be asked"
        )
        raise KeyUnavailable(msg)
    typed = _prompt(f"Password for {what}: ", what=what)
    if not typed:
        msg = f"{what}: an empty password"
        raise KeyUnavailable(msg)
    if confirm and _prompt("Repeat the password: ", what=what) != typed:
        msg = f"{what}: the two passwords differ"
        raise KeyUnavailable(msg)
    return typed


def _prompt(prompt: str, *, what: str) -> str:
    """Ask on the terminal without echo; Ctrl-C or Ctrl-D is a refusal, not a traceback."""
    try:
        return getpass.getpass(prompt)
    except (EOFError, KeyboardInterrupt):
        msg = f"{what}: nothing typed (cancelled)"
        raise KeyUnavailable(msg) from None


def read_private_key(*, what: str) -> Signer:
    """A private key typed at a prompt (terminal) or read from standard input (a pipe).

    Parameters
    ----------
    what : str
        Whose key it is, for the prompt and messages.

    Returns
    -------
    Signer
        The account of the key.

    Raises
    ------
    KeyUnavailable
        Nothing was given, or it is not a private key (64 hex digits; the message does not
        quote it).
    """
    from adapters.chain import InvalidAccount, account_from_key  # noqa: PLC0415

    if _stdin_is_terminal():
        text = _prompt(f"Private key of {what} (64 hex digits, not shown): ", what=what)
    elif sys.stdin is None:
        text = ""
    else:
        text = sys.stdin.read(MAX_KEY_INPUT)
    if not text.strip():
        msg = f"{what}: no private key given on standard input"
        raise KeyUnavailable(msg)
    try:
        return account_from_key(text)
    except InvalidAccount:
        msg = f"{what}: standard input does not hold a private key (64 hex digits)"
        raise KeyUnavailable(msg) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySource:
    """Where one signing key comes from: a keystore file, or else an environment variable.

    Parameters
    ----------
    role : KeyRole
        Whose key (named in messages).
    keystore : str
        Path of a Web3 Secret Storage file; ``""`` for none. Takes precedence over
        ``key_env``.
    key_env : str
        Name of the environment variable holding the hex key (read when no keystore is
        named).
    password_env : str
        Name of the environment variable holding the keystore's password (else a prompt on
        a terminal).
    """

    role: KeyRole
    keystore: str = ""
    key_env: str = ""
    password_env: str = DEFAULT_PASSWORD_ENV

    def describe(self) -> str:
        """Where the key comes from, for messages (``keystore PATH`` or ``$NAME``)."""
        if self.keystore:
            return f"keystore {self.keystore}"
        return f"environment variable {self.key_env}" if self.key_env else "nowhere"

    def configured(self) -> bool:
        """Whether a keystore is named or the key's environment variable is set (non-empty)."""
        return bool(self.keystore) or bool(self.key_env and os.environ.get(self.key_env))

    def address(self) -> str:
        """The account's address, without the keystore's password.

        Returns
        -------
        str
            The checksummed address.

        Raises
        ------
        KeyUnavailable
            As :meth:`signer`, except that no password is asked for.
        """
        from adapters.chain import KeystoreError, keystore_address  # noqa: PLC0415

        if self.keystore:
            try:
                return str(keystore_address(self.keystore))
            except KeystoreError as exc:
                msg = f"{self.role} key: {exc}"
                raise KeyUnavailable(msg) from None
        return str(self._from_env().address)

    def signer(self) -> Signer:
        """The signing account: the keystore opened with its password, or the variable's key.

        Returns
        -------
        Signer
            The account.

        Raises
        ------
        KeyUnavailable
            No keystore and the variable unset or empty; no password (see
            :func:`keystore_password`); a keystore that cannot be read or does not open with
            the password; a variable that holds no private key.
        """
        from adapters.chain import KeystoreError, open_keystore  # noqa: PLC0415

        if self.keystore:
            what = f"{self.role} keystore {self.keystore}"
            password = keystore_password(self.password_env, what=what)
            try:
                return open_keystore(self.keystore, password)
            except KeystoreError as exc:
                msg = f"{self.role} key: {exc}"
                raise KeyUnavailable(msg) from None
        return self._from_env()

    def _from_env(self) -> Signer:
        from adapters.chain import InvalidAccount, account_from_key  # noqa: PLC0415

        if not self.key_env:
            msg = f"no {self.role} key: name a keystore or an environment variable holding it"
            raise KeyUnavailable(msg)
        value = os.environ.get(self.key_env, "")
        if not value:
            msg = (
                f"no {self.role} key: name a keystore, or set the environment variable "
                f"{self.key_env} to the key"
            )
            raise KeyUnavailable(msg)
        try:
            return account_from_key(value)
        except InvalidAccount:
            msg = (
                f"{self.role} key: the environment variable {self.key_env} does not hold a "
                "private key (64 hex digits)"
            )
            raise KeyUnavailable(msg) from None


def site_operator_key(chain: ChainConfig) -> KeySource:
    """The operator's key source of a site's ``[chain]`` table.

    Parameters
    ----------
    chain : ChainConfig
        ``operator_keystore`` (a path, already resolved against the site file's folder) if
        set, else ``operator_key_env``; ``keystore_password_env`` for the password.

    Returns
    -------
    KeySource
        Where the operator's key comes from.
    """
    return KeySource(
        role=KeyRole.OPERATOR,
        keystore=chain.operator_keystore,
        key_env=chain.operator_key_env,
        password_env=chain.keystore_password_env,
    )


def site_admin_key(chain: ChainConfig) -> KeySource | None:
    """The admin's key source of a site's ``[chain]`` table, if it names one.

    Parameters
    ----------
    chain : ChainConfig
        ``admin_keystore`` if set, else ``admin_key_env``; ``keystore_password_env`` for the
        password.

    Returns
    -------
    KeySource or None
        Where the admin's key comes from; ``None`` when the site names neither.
    """
    if not (chain.admin_keystore or chain.admin_key_env):
        return None
    return KeySource(
        role=KeyRole.ADMIN,
        keystore=chain.admin_keystore,
        key_env=chain.admin_key_env,
        password_env=chain.keystore_password_env,
    )


__all__ = [
    "DEFAULT_ADMIN_KEY_ENV",
    "DEFAULT_OPERATOR_KEY_ENV",
    "DEFAULT_PASSWORD_ENV",
    "KeyRole",
    "KeySource",
    "KeyUnavailable",
    "keystore_password",
    "read_private_key",
    "site_admin_key",
    "site_operator_key",
]
