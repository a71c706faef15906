"""The embedded backend: an in-process py-evm chain through eth-tester.

The only module of PeerGrid that imports ``eth_tester``. It makes the chain
(:func:`embedded_web3`) and names the exceptions that chain raises where a node would
answer with a JSON-RPC error, so that :mod:`adapters.chain.node` can treat both alike
without importing eth-tester itself:

* :data:`EMBEDDED_REVERTS` -- a call or a transaction the EVM reverted (a node's
  ``execution reverted``, web3's :class:`~web3.exceptions.ContractLogicError`);
* :data:`EMBEDDED_NODE_ERRORS` -- a request the chain refused (a bad nonce, too little gas,
  a malformed transaction): eth-tester's and py-evm's ``ValidationError``.
"""

from __future__ import annotations

from typing import Final

from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_utils.exceptions import ValidationError as EvmValidationError
from web3 import EthereumTesterProvider, Web3

EMBEDDED_REVERTS: Final = (TransactionFailed,)
"""What the embedded chain raises for a reverted call or transaction."""

EMBEDDED_NODE_ERRORS: Final = (TesterValidationError, EvmValidationError)
"""What the embedded chain raises for a request it refuses (py-evm's own errors)."""


def embedded_web3() -> Web3:
    """A :class:`~web3.Web3` on a fresh in-process chain (eth-tester on py-evm).

    The chain lives in memory and is lost with the process. Its ten prefunded accounts
    (``w3.eth.accounts``) hold 1,000,000 ether each;
    :meth:`~adapters.chain.funds.Funds.fund_eth` pays from the first one.

    Returns
    -------
    Web3
        A connection to the new chain.
    """
    return Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))


__all__ = ["EMBEDDED_NODE_ERRORS", "EMBEDDED_REVERTS", "embedded_web3"]
