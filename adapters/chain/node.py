"""Talking to a node: one request, one contract call, and what either fails with.

Every read of the chain adapter goes through :func:`rpc` (a JSON-RPC request) or
:func:`call` (an ``eth_call`` of a contract function), which turn the errors of web3, of the
transport and of the embedded chain into :class:`~adapters.chain.errors.ChainError` and
:class:`~adapters.chain.errors.TransactionReverted`. Transactions go through
:class:`~adapters.chain.sender.TxSender`, which uses the same error tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final, TypeVar, cast

from eth_abi.exceptions import DecodingError, EncodingError
from eth_typing import ABIFunction, HexStr
from eth_utils.abi import (
    function_abi_to_4byte_selector,
    get_abi_input_types,
    get_abi_output_types,
)
from web3 import Web3
from web3._utils.abi import map_abi_data
from web3._utils.normalizers import BASE_RETURN_NORMALIZERS
from web3.contract.contract import Contract, ContractFunction
from web3.exceptions import ContractLogicError, Web3Exception
from web3.types import BlockIdentifier, RPCEndpoint

from adapters.chain.embedded import EMBEDDED_NODE_ERRORS, EMBEDDED_REVERTS
from adapters.chain.errors import ChainError, InvalidArgument, TransactionReverted

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
    if takes_plain_requests(fn.w3):
        answer = _plain_call(fn, block_identifier)
        if answer is not _WEB3:
            return answer
    try:
        return fn.call(block_identifier=block_identifier)
    except REVERT_ERRORS as exc:
        raise TransactionReverted(revert_reason(exc)) from exc
    except NODE_ERRORS as exc:
        msg = f"reading {fn.fn_name} failed: {exc}"
        raise ChainError(msg) from exc


_WEB3: Final = object()
"""What :func:`_plain_call` returns when web3's own call must answer instead."""


def takes_plain_requests(w3: Web3) -> bool:
    """Whether ``w3`` talks to a JSON-RPC node (plain requests and batches).

    The embedded chain's provider answers only through web3's pipeline.
    """
    return hasattr(w3.provider, "make_batch_request")


def _plain_call(fn: ContractFunction, block_identifier: BlockIdentifier) -> Any:  # noqa: ANN401 - what the ABI says
    """``eth_call`` of ``fn`` with eth-abi and one plain request to the node.

    The same call as ``fn.call`` without web3's request pipeline, which spends three times
    the CPU of the request itself formatting it and its answer (a fleet worker makes several
    calls per site and interval). Only the ordinary case: keyword arguments, arguments eth-abi
    cannot encode as given, block hashes, an error answer (a revert, whose reason web3
    decodes) or an answer that does not decode all return :data:`_WEB3`, and web3 makes
    the call again as before. Results are as web3 returns them: addresses checksummed, one
    output unwrapped.
    """
    if fn.kwargs or not isinstance(block_identifier, int | str) or fn.address is None:
        return _WEB3
    block = hex(block_identifier) if isinstance(block_identifier, int) else block_identifier
    codec = fn.w3.codec
    try:
        data = fn.selector + codec.encode(get_abi_input_types(fn.abi), fn.args).hex()
    except (EncodingError, TypeError, ValueError):
        return _WEB3
    try:
        answer = fn.w3.provider.make_request(
            RPCEndpoint("eth_call"), [{"to": fn.address, "data": data}, block]
        )
    except NODE_ERRORS as exc:
        msg = f"reading {fn.fn_name} failed: {exc}"
        raise ChainError(msg) from exc
    result = answer.get("result") if "error" not in answer else None
    if not isinstance(result, str) or len(result) < 4:  # "0x" and at least one byte
        return _WEB3
    output_types = get_abi_output_types(fn.abi)
    try:
        decoded = codec.decode(output_types, bytes.fromhex(result[2:]))
    except (DecodingError, ValueError):
        return _WEB3
    decoded = map_abi_data(BASE_RETURN_NORMALIZERS, output_types, decoded)
    return decoded[0] if len(decoded) == 1 else decoded


def encode_call(contract: Contract, name: str, args: Sequence[Any]) -> HexStr:
    """The call data of ``contract``'s function ``name`` with ``args``, encoded by eth-abi.

    As ``contract.encode_abi(name, args=args)`` for arguments eth-abi takes as given
    (integers, bytes, checksummed addresses and lists of them), without web3's argument
    normalisation, which costs a fleet's settlement step several milliseconds per call.

    Raises
    ------
    InvalidArgument
        If the contract has no single function ``name``.
    """
    entries = [e for e in contract.abi if e.get("type") == "function" and e.get("name") == name]
    if len(entries) != 1:
        msg = f"the contract has {len(entries)} functions named {name!r}, not one"
        raise InvalidArgument(msg)
    abi = cast("ABIFunction", entries[0])
    encoded = contract.w3.codec.encode(get_abi_input_types(abi), list(args))
    return HexStr("0x" + (function_abi_to_4byte_selector(abi) + encoded).hex())


def plain_batch(
    w3: Web3, requests: Sequence[tuple[str, Sequence[Any]]], what: str
) -> list[Any] | None:
    """The results of plain JSON-RPC requests sent as one batch, in the order asked.

    For reads a step makes often (nonces, many getters): one request to the node, and no
    formatting by web3's pipeline (results are as the node sends them: hex strings).

    Parameters
    ----------
    w3 : Web3
        The connection.
    requests : sequence of (str, sequence)
        Method and parameters of each request.
    what : str
        What is read, for the error message.

    Returns
    -------
    list or None
        The results; ``None`` if the provider has no batches (the embedded chain): the
        caller reads through web3 instead.

    Raises
    ------
    ChainError
        If the node fails, or answers any request with an error or not at all.
    """
    if not takes_plain_requests(w3):
        return None
    provider: Any = w3.provider
    batch = [(RPCEndpoint(method), list(params)) for method, params in requests]
    answers = rpc(partial(provider.make_batch_request, batch))
    if not isinstance(answers, list) or len(answers) != len(batch):
        msg = f"reading {what}: the node answered {len(batch)} requests with {answers!r:.200}"
        raise ChainError(msg)
    results = []
    for answer in sorted(answers, key=lambda a: int(a.get("id", 0))):
        if "error" in answer or "result" not in answer:
            msg = f"reading {what} failed: {answer!r:.200}"
            raise ChainError(msg)
        results.append(answer["result"])
    return results


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


def advance_dev_clock(w3: Web3, seconds: int) -> int:
    """Move a development chain's clock on by ``seconds`` and mine a block there.

    For demos and tests of anything that waits (a vote, a timelock, a withdrawal notice):
    anvil's ``evm_increaseTime`` then ``evm_mine``; the embedded chain's
    ``testing_timeTravel``, which mines the block itself. A production node refuses both
    (:class:`ChainError`).

    Returns
    -------
    int
        The new latest block's timestamp [unix s].
    """
    if seconds < 0:
        msg = f"the clock only moves on, not by {seconds} s"
        raise InvalidArgument(msg)
    if takes_plain_requests(w3):
        for method, params in (("evm_increaseTime", [seconds]), ("evm_mine", [])):
            answer = w3.provider.make_request(RPCEndpoint(method), params)
            if answer.get("error"):
                msg = f"{method} refused: {answer['error']} (not a development node?)"
                raise ChainError(msg)
    else:
        latest = int(rpc(lambda: w3.eth.get_block("latest"))["timestamp"])
        w3.provider.make_request(RPCEndpoint("testing_timeTravel"), [latest + seconds])
    return int(rpc(lambda: w3.eth.get_block("latest"))["timestamp"])


__all__ = [
    "NODE_ERRORS",
    "REVERT_ERRORS",
    "advance_dev_clock",
    "call",
    "encode_call",
    "hex0x",
    "plain_batch",
    "revert_reason",
    "rpc",
    "takes_plain_requests",
]
