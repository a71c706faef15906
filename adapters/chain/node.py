"""Talking to a node: one request, one contract call, and what either fails with.

Every read of the chain adapter goes through :func:`rpc` (a JSON-RPC request) or
:func:`call` (an ``eth_call`` of a contract function), which turn the errors of web3, of the
transport and of the embedded chain into :class:`~adapters.chain.errors.ChainError` and
:class:`~adapters.chain.errors.TransactionReverted`. Transactions go through
:class:`~adapters.chain.sender.TxSender`, which uses the same error tuples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, Web3Exception
from web3.types import BlockIdentifier

from adapters.chain.embedded import EMBEDDED_NODE_ERRORS, EMBEDDED_REVERTS
from adapters.chain.errors import ChainError, TransactionReverted

T = TypeVar("T")

NODE_ERRORS: Final = (Web3Exception, OSError, *EMBEDDED_NODE_ERRORS)
"""What a node (or the embedded chain, which raises py-evm's own errors) fails with."""

REVERT_ERRORS: Final = (ContractLogicError, *EMBEDDED_REVERTS)
"""What a reverted call or transaction raises (a node's, or the embedded chain's).

Catch these before :data:`NODE_ERRORS`: :class:`~web3.exceptions.ContractLogicError` is a
:class:`~web3.exceptions.Web3Exception`.
"""

_REVERT_PREFIX: Final = "execution reverted"


def rpc(request: Callable[[], T]) -> T:
    """Run one request to the node.

    Parameters
    ----------
    request : callable
        Makes the request, e.g. ``lambda: w3.eth.block_number``.

    Returns
    -------
    object
        What ``request`` returns.

    Raises
    ------
    ChainError
        If the node (or the transport to it) fails.
    """
    try:
        return request()
    except NODE_ERRORS as exc:
        msg = f"chain request failed: {exc}"
        raise ChainError(msg) from exc


def call(fn: ContractFunction, *, block_identifier: BlockIdentifier = "latest") -> Any:  # noqa: ANN401 - what the ABI says
    """Call a contract function (``eth_call``) and return its decoded result.

    Parameters
    ----------
    fn : ContractFunction
        The bound function, e.g. ``settlement.functions.escrow(address)``.
    block_identifier : int or str
        The block whose state is read (default ``"latest"``).

    Returns
    -------
    object
        The decoded return value.

    Raises
    ------
    TransactionReverted
        If the call reverts; carries the contract's reason.
    ChainError
        If the node fails.
    """
    try:
        return fn.call(block_identifier=block_identifier)
    except REVERT_ERRORS as exc:
        raise TransactionReverted(revert_reason(exc)) from exc
    except NODE_ERRORS as exc:
        msg = f"reading {fn.fn_name} failed: {exc}"
        raise ChainError(msg) from exc


def revert_reason(exc: Exception) -> str:
    """The contract's reason from a web3 or eth-tester revert exception.

    Parameters
    ----------
    exc : Exception
        The exception a reverted call or transaction raised.

    Returns
    -------
    str
        The reason without the node's ``execution reverted:`` prefix (``""`` if none).
    """
    text = getattr(exc, "message", None) or (str(exc.args[0]) if exc.args else str(exc))
    text = str(text).strip()
    if text.startswith(_REVERT_PREFIX):
        text = text[len(_REVERT_PREFIX) :].lstrip(": ").strip()
    return text


def hex0x(value: bytes) -> str:
    """``0x``-prefixed hex of ``value``.

    Parameters
    ----------
    value : bytes
        A hash as web3 returns it (``HexBytes``), or plain bytes.
    """
    return "0x" + bytes(value).hex()


__all__ = ["NODE_ERRORS", "REVERT_ERRORS", "call", "hex0x", "revert_reason", "rpc"]
