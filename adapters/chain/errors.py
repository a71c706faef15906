"""Exceptions of the chain adapter.

Every failure that reaches a caller of :mod:`adapters.chain` is a :class:`ChainError`;
web3, eth-account and eth-tester exceptions are wrapped where the adapter calls them
(``raise ... from exc``), so callers never import web3 to catch errors.

Tree::

    ChainError (AdapterError)            anything that went wrong in the chain adapter
    ├── InvalidArgument (ValueError)     refused before anything reached the node: a backend
    │   │                                name or URL, a sender setting, a nonce outside the
    │   │                                node's range, a Merkle proof element, a deposit batch
    │   ├── InvalidAccount               not a private key, an address or a demo-key label
    │   │   └── KeystoreError            a key file that cannot be read, written or opened:
    │   │       │                        not Web3 Secret Storage JSON, unreadable, no password
    │   │       ├── WrongPassword        the password does not open the keystore (MAC mismatch)
    │   │       └── KeystoreExists       refused to overwrite an existing key file
    │   │           (FileExistsError)
    │   └── InvalidSettlement            a batch the contract cannot take: a participant
    │                                    without an account, a malformed id or root, amounts
    │                                    that do not sum to zero, too many accounts, an entry
    │                                    out of the packed format's range
    ├── ArtifactNotFound                 no committed artifact for a contract name
    │   (FileNotFoundError)
    ├── CompilerUnavailable              a build step (``python -m adapters.chain.compile``)
    │   (ModuleNotFoundError)            misses a compiler input (snekmate)
    ├── NodeUnavailable (ConnectionError)  the node does not start or does not answer
    ├── TransactionReverted              a transaction or call was reverted; carries the reason
    ├── AlreadySettled                   the interval is settled on-chain, with another batch id
    ├── InsufficientEscrow               a debit exceeds the account's escrow (checked before
    │                                    sending)
    ├── NonceConflict                    a nonce this client sent with was used by another
    │                                    transaction
    └── ConfirmationTimeout              no receipt, or too few confirmations, within the time
        (TimeoutError)                   limit

The :class:`InvalidArgument` family dual-inherits :class:`ValueError`, so ``peergrid chain``
reports it as bad input (exit 2) rather than as a failure of the chain (exit 1).
"""

from __future__ import annotations

from adapters.errors import AdapterError
from market.domain import utc_label


class ChainError(AdapterError):
    """Root of the chain adapter's exceptions (an :class:`~adapters.errors.AdapterError`)."""


class InvalidArgument(ChainError, ValueError):
    """An argument or setting the adapter refuses before anything reaches the node."""


class InvalidAccount(InvalidArgument):
    """Not a private key, not a 20-byte address, or an empty demo-key label."""


class KeystoreError(InvalidAccount):
    """A key file (Web3 Secret Storage JSON) that cannot be read, written or opened.

    Messages name the file and the problem, never any key material.
    """


class WrongPassword(KeystoreError):
    """The password does not open the keystore (its MAC does not match)."""


class KeystoreExists(KeystoreError, FileExistsError):
    """A key file is already at the path to write; keystores are never overwritten."""


class InvalidSettlement(InvalidArgument):
    """A settlement batch (or one packed entry of it) the settlement contract cannot take."""


class ArtifactNotFound(ChainError, FileNotFoundError):
    """There is no committed artifact for the contract name asked for."""


class CompilerUnavailable(ChainError, ModuleNotFoundError):
    """The contract build step misses one of its inputs (the ``snekmate`` package)."""


class NodeUnavailable(ChainError, ConnectionError):
    """The chain node could not be started or does not answer."""


class TransactionReverted(ChainError):
    """The EVM reverted a transaction or a call.

    Parameters
    ----------
    reason : str
        The revert reason given by the contract (``""`` when it gave none).
    tx_hash : str or None
        Hash of the mined transaction (``0x``-prefixed hex); ``None`` when a node
        refused the transaction before mining it or for a call.
    """

    def __init__(self, reason: str, tx_hash: str | None = None) -> None:
        self.reason = reason
        self.tx_hash = tx_hash
        where = f" (tx {tx_hash})" if tx_hash else ""
        super().__init__(f"reverted: {reason or '<no reason>'}{where}")


class AlreadySettled(ChainError):
    """The interval was already settled on-chain with a *different* batch.

    Settling the same batch again is not an error: the client returns the original
    receipt with ``status="already_settled"``.

    Parameters
    ----------
    interval_id : int
        The interval (its start in Unix seconds [s]).
    recorded_batch_id : str
        The batch id stored on-chain (hex, no ``0x``).
    attempted_batch_id : str
        The batch id that was about to be sent (hex, no ``0x``).
    """

    def __init__(self, interval_id: int, recorded_batch_id: str, attempted_batch_id: str) -> None:
        self.interval_id = interval_id
        self.recorded_batch_id = recorded_batch_id
        self.attempted_batch_id = attempted_batch_id
        super().__init__(
            f"interval {utc_label(interval_id)} (id {interval_id}) is already settled with "
            f"batch {recorded_batch_id}, "
            f"not {attempted_batch_id}"
        )


class InsufficientEscrow(ChainError):
    """A debit is larger than the account's escrow balance.

    Parameters
    ----------
    account : str
        Checksummed address of the account.
    required : int
        Net debit of the account in the batch [token base units].
    available : int
        The account's escrow balance [token base units].
    """

    def __init__(self, account: str, required: int, available: int) -> None:
        self.account = account
        self.required = required
        self.available = available
        super().__init__(
            f"escrow of {account} is {available} token units, the batch debits {required}"
        )


class NonceConflict(ChainError):
    """A nonce this client signed with was mined in a transaction it did not send.

    Another process signs with the same key. The transaction of this client can never be
    mined; nothing was paid by it.

    Parameters
    ----------
    sender : str
        Checksummed address of the sending account.
    nonce : int
        The nonce.
    """

    def __init__(self, sender: str, nonce: int) -> None:
        self.sender = sender
        self.nonce = nonce
        super().__init__(
            f"nonce {nonce} of {sender} was used by a transaction this client did not send; "
            "is another process signing with the same key?"
        )


class ConfirmationTimeout(ChainError, TimeoutError):
    """A receipt or the requested confirmations did not arrive in time.

    Parameters
    ----------
    tx_hash : str
        Hash of the transaction waited for (``0x``-prefixed hex).
    timeout_s : float
        How long the client waited [s].
    """

    def __init__(self, tx_hash: str, timeout_s: float) -> None:
        self.tx_hash = tx_hash
        self.timeout_s = timeout_s
        super().__init__(f"transaction {tx_hash} not confirmed within {timeout_s} s")


__all__ = [
    "AlreadySettled",
    "ArtifactNotFound",
    "ChainError",
    "CompilerUnavailable",
    "ConfirmationTimeout",
    "InsufficientEscrow",
    "InvalidAccount",
    "InvalidArgument",
    "InvalidSettlement",
    "KeystoreError",
    "KeystoreExists",
    "NodeUnavailable",
    "NonceConflict",
    "TransactionReverted",
    "WrongPassword",
]
