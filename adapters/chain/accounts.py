"""Accounts and keys: the signing accounts PeerGrid uses, and addresses in checksum form.

Every transaction is signed **locally** with a :data:`Signer` (an eth-account
:class:`~eth_account.signers.local.LocalAccount`; coincurve makes it fast), so the node never
holds a key. A signer comes from a private key (:func:`account_from_key`) or, for demos and
tests only, from a label (:func:`derive_account`).
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
        If ``key`` is not a valid private key (a :class:`ValueError`).
    """
    try:
        account: LocalAccount = Account.from_key(key.strip())
    except (ValueError, TypeError) as exc:
        msg = "not a valid private key (64 hex digits)"
        raise InvalidAccount(msg) from exc
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
        If ``address`` is not a 20-byte hex address (a :class:`ValueError`).
    """
    try:
        return Web3.to_checksum_address(address)
    except ValueError as exc:
        msg = f"not an address: {address!r}"
        raise InvalidAccount(msg) from exc


__all__ = [
    "DEMO_KEY_PREFIX",
    "ZERO_ADDRESS",
    "Signer",
    "account_from_key",
    "checksum_address",
    "derive_account",
]
