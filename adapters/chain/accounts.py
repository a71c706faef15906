"""Accounts and keys: the signing accounts PeerGrid uses, and addresses in checksum form.

Every transaction is signed **locally** with a :data:`Signer` (an eth-account
:class:`~eth_account.signers.local.LocalAccount`; coincurve makes it fast), so the node never
holds a key. A signer comes from a private key (:func:`account_from_key`), from an encrypted
keystore (:mod:`adapters.chain.keystore`), from the operating system's random source
(:func:`new_account`) or, on trial chains only, from a label (:func:`derive_account`: anyone
who knows the label knows the key, so the controller refuses such accounts on a persistent
chain).
"""

from __future__ import annotations

from typing import Final

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3

from adapters.chain.errors import InvalidAccount

Signer = LocalAccount
"""A local signing account (for callers that must not import eth_account themselves)."""

DEMO_KEY_PREFIX: Final = b"peergrid-demo:"
"""Prefix of the labels hashed into demo keys by :func:`derive_account`."""

ADDRESS_CHARS: Final = 42
"""Length of a hex address with its ``0x`` prefix [characters]."""

ZERO_ADDRESS: Final = Web3.to_checksum_address("0x" + "00" * 20)
"""The zero address: "none" in the contracts (e.g. a deployment without reward token)."""


def derive_account(label: str) -> Signer:
    """A deterministic account for demos and tests: key = keccak256(b"peergrid-demo:" + label).

    **For demos and tests only.** Anyone who knows the label knows the key; never hold value
    with such an account on a public chain.

    Parameters
    ----------
    label : str
        Non-empty name of the account, e.g. ``"operator"`` or a participant id.

    Returns
    -------
    Signer
        The account.

    Raises
    ------
    InvalidAccount
        If ``label`` is empty (a :class:`ValueError`).
    """
    if not label:
        msg = "label must be a non-empty string"
        raise InvalidAccount(msg)
    account: LocalAccount = Account.from_key(Web3.keccak(DEMO_KEY_PREFIX + label.encode("utf-8")))
    return account


def new_account() -> Signer:
    """A new account with a random key from the operating system's random source.

    Returns
    -------
    Signer
        The account (its key exists only in memory until written to a keystore).
    """
    account: LocalAccount = Account.create()
    return account


def account_from_key(key: str) -> Signer:
    """The account of a hex private key.

    Parameters
    ----------
    key : str
        64 hex digits, ``0x`` optional; surrounding whitespace is ignored.

    Returns
    -------
    Signer
        The account.

    Raises
    ------
    InvalidAccount
        If ``key`` is not a valid private key (a :class:`ValueError`); the message does not
        quote it.
    """
    try:
        account: LocalAccount = Account.from_key(key.strip())
    except (ValueError, TypeError):
        msg = "not a valid private key (64 hex digits)"
        raise InvalidAccount(msg) from None  # no chained frame holds the key's text
    return account


def checksum_address(address: str) -> ChecksumAddress:
    """``address`` in EIP-55 checksum form.

    Parameters
    ----------
    address : str
        A 20-byte address in hex, ``0x``-prefixed, in any letter case.

    Returns
    -------
    ChecksumAddress
        The same address with EIP-55 letter case.

    Raises
    ------
    InvalidAccount
        If ``address`` is not a 20-byte hex address (a :class:`ValueError`); the input is
        quoted only when at most 42 characters long (never a pasted private key).
    """
    try:
        return Web3.to_checksum_address(address)
    except (ValueError, TypeError):
        # quoted only when short: a private key pasted by mistake must not be echoed
        text = str(address)
        shown = repr(text) if len(text) <= ADDRESS_CHARS else f"({len(text)} characters)"
        msg = f"not an address: {shown}; an address is 0x and 40 hex digits"
        raise InvalidAccount(msg) from None


__all__ = [
    "ADDRESS_CHARS",
    "DEMO_KEY_PREFIX",
    "ZERO_ADDRESS",
    "Signer",
    "account_from_key",
    "checksum_address",
    "derive_account",
    "new_account",
]
