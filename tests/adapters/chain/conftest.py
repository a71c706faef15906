"""Fixtures for the chain adapter.

``deployed``: one embedded chain with the payment token, the reward token and the settlement
contract per test module. Deploying is cheap (~0.1 s) but funding many participants is not, so
the chain is module scoped. Tests on it must not depend on each other: they use fresh interval
ids (``next_interval``) and compare balances before and after, never absolute values left by
another test.

``anvil``: a real anvil node (``$PEERGRID_ANVIL``, installed by ``scripts/test``), one per
test module; tests that need their own node start an :class:`AnvilNode` themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chain_helpers import Deployed, deploy_stack

from adapters.chain.backends import AnvilNode, rpc_web3
from adapters.chain.embedded import embedded_web3


@pytest.fixture(scope="module")
def deployed() -> Deployed:
    return deploy_stack(embedded_web3())


@pytest.fixture(scope="module")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    """A running anvil node (automine), stopped after the module."""
    state = tmp_path_factory.mktemp("anvil") / "state.json"
    with AnvilNode(state_path=state) as node:
        yield node


@pytest.fixture(scope="module")
def anvil_deployed(anvil: AnvilNode) -> Deployed:
    """The stack deployed on the module's anvil node."""
    return deploy_stack(rpc_web3(anvil.url))
