"""How ``peergrid audit verify`` reads the chain and re-clears, fast, without checking less.

* :meth:`adapters.chain.queries.ChainReader.settlement_log` (every ``Settled`` and
  ``SettlementEntries`` event over a block range, in a few requests) gives exactly what the
  per-interval reads give, also when read in one-block chunks;
* :meth:`~adapters.chain.queries.ChainReader.settled_batches` (the contract's storage in
  JSON-RPC batches) gives what :meth:`~adapters.chain.queries.ChainReader.settled_batch`
  gives, on anvil (batches) and on the embedded chain (call by call), and refuses an answer it
  cannot read;
* :meth:`~adapters.chain.queries.ChainReader.deployment_block` finds the block that deployed
  the contract where the node keeps past state, and 0 (the whole chain) where it does not;
* :class:`controller.audit.Reclearer` (grid parsed once, linear models kept) re-clears every
  record exactly as a fresh :func:`controller.audit.reclear_recorded` does, in any order.

The chain tests run the demo on the embedded chain, and on anvil where ``PEERGRID_ANVIL`` is
set (with its real JSON-RPC batches).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.chain import ChainClient, connect, new_account
from adapters.chain.backends import AnvilNode
from adapters.chain.errors import ChainError
from adapters.chain.queries import settlement_token
from controller.audit import ChainSnapshot, Reclearer, reclear_recorded
from controller.demo import DemoRuntime, demo_runtime
from market.canonical import content_hash

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TICKS = 4
"""Boundaries ticked: three intervals cleared and settled (07:30-08:15 UTC, 21 June)."""

Records = tuple[list[dict[str, Any]], Callable[[str], str | None]]
"""The demo's audit records and the stored grid JSON by hash."""

ANVIL = pytest.mark.skipif(not os.environ.get("PEERGRID_ANVIL"), reason="PEERGRID_ANVIL not set")


def _run(rt: DemoRuntime) -> DemoRuntime:
    for k in range(TICKS - 1):
        rt.tick(k)
    rt.tick(TICKS - 1, clear_next=False)
    return rt


@pytest.fixture(scope="module", params=["embedded", pytest.param("anvil", marks=ANVIL)])
def demo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoRuntime]:
    with demo_runtime(tmp_path_factory.mktemp(request.param), chain=request.param) as rt:
        yield _run(rt)


def _settled_ids(rt: DemoRuntime) -> list[int]:
    return [e.interval_id for e in rt.client.settled_events()]


def test_the_settlement_log_equals_the_per_interval_reads(demo: DemoRuntime) -> None:
    client = demo.client
    ids = _settled_ids(demo)
    assert len(ids) == TICKS - 1
    head = client.block_number()
    for chunk in (10_000, 1):  # one request per event, and one per block
        log = client.reader.settlement_log(0, chunk_blocks=chunk)
        assert (log.from_block, log.to_block) == (0, head)
        assert list(log.events) == client.settled_events()
        assert {i: log.entries.get(i, ()) for i in ids} == {
            i: client.settled_entries(i) for i in ids
        }
        assert any(log.entries.values())  # the demo's intervals moved money
    # a range that ends before the first settlement holds none
    first = min(e.block_number for e in client.settled_events())
    early = client.settlement_log(0, first - 1)
    assert early.events == ()
    assert early.entries == {}


def test_settled_batches_equal_the_storage_reads(demo: DemoRuntime) -> None:
    client = demo.client
    ids = [*_settled_ids(demo), 900]  # 900: never settled, zeros
    got = client.settled_batches(ids)
    assert got == {i: client.settled_batch(i) for i in ids}
    assert got[900].batch_id == bytes(32)
    assert client.reader.settled_batches(ids, per_request=3) == got  # one interval a batch


def test_settled_states_equal_the_per_interval_reads(demo: DemoRuntime) -> None:
    """What the controller's re-check of recent settlements reads, in batches."""
    client = demo.client
    ids = [*_settled_ids(demo), 900]
    got = client.settled_on_chain_many(ids)
    assert got == {i: client.settled_on_chain(i) for i in ids}
    assert got[900] == (0, "")
    assert all(block > 0 and len(batch) == 64 for block, batch in (got[i] for i in ids[:-1]))
    assert len({block for block, _ in got.values()}) > 1  # not one answer for all
    assert client.reader.settled_states(ids, per_request=2) == client.reader.settled_states(ids)


def test_the_snapshot_answers_as_the_client(demo: DemoRuntime) -> None:
    snapshot = ChainSnapshot(demo.client)
    ids = _settled_ids(demo)
    assert [e.interval_id for e in snapshot.events] == ids
    assert snapshot.from_block <= min(e.block_number for e in snapshot.events)
    for i in [*ids, 900]:
        assert snapshot.settled_batch(i) == demo.client.settled_batch(i)
        assert snapshot.settled_entries(i) == demo.client.settled_entries(i)


@ANVIL
def test_a_batch_answer_that_cannot_be_read_is_refused(
    demo: DemoRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = demo.client.w3.provider
    if not hasattr(provider, "make_batch_request"):
        pytest.skip("the embedded chain reads call by call")
    real = provider.make_batch_request

    def one_error(requests: list[tuple[str, object]]) -> object:
        answers = real(requests)
        answers[-1] = {"jsonrpc": "2.0", "id": answers[-1]["id"], "error": {"code": -32000}}
        return answers

    monkeypatch.setattr(provider, "make_batch_request", one_error)
    with pytest.raises(ChainError, match="reading a settled batch failed"):
        demo.client.settled_batches(_settled_ids(demo))


@ANVIL
def test_the_deployment_block_where_the_node_can_tell_and_0_where_not(tmp_path: Path) -> None:
    with demo_runtime(tmp_path / "run", chain="anvil") as rt:
        _run(rt)
        client = rt.client
        found = client.deployment_block()
        assert found > 0
        address = client.settlement.address
        assert len(client.w3.eth.get_code(address, found)) > 0
        assert len(client.w3.eth.get_code(address, found - 1)) == 0
        assert found <= min(e.block_number for e in client.settled_events())
        settlement = str(address)
        state = tmp_path / "run" / "anvil-state.json"
    # a node started from the state file keeps no past state: the whole chain is searched
    copy = tmp_path / "copy.json"
    shutil.copy2(state, copy)
    with AnvilNode(state_path=copy) as node:
        conn = connect("rpc", rpc_url=node.url)
        try:
            reader = ChainClient(conn.w3, new_account())
            reader.attach(settlement_token(conn.w3, settlement), settlement)
            assert reader.deployment_block() == 0
            assert len(ChainSnapshot(reader).events) == TICKS - 1
        finally:
            conn.close()


# ------------------------------------------------------------------------------- re-clears
@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Records:
    with demo_runtime(tmp_path_factory.mktemp("reclear")) as rt:
        _run(rt)
        rows = [r["record"] for r in rt.store.audit_records()]
        grids = {str(r["grid_hash"]): rt.store.grid_json(str(r["grid_hash"])) for r in rows}
    return rows, grids.get


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=st.lists(st.integers(0, TICKS - 2), min_size=1, max_size=6))
def test_a_shared_reclearer_gives_what_a_fresh_one_gives(
    records: Records, order: list[int]
) -> None:
    """Any sequence of records (repeats: the kept grid and linear model are reused)."""
    rows, grid_json = records
    fresh = {i: content_hash(reclear_recorded(rows[i], grid_json)) for i in set(order)}
    shared = Reclearer(grid_json)
    for i in order:
        assert content_hash(shared(rows[i])) == fresh[i]
    assert shared.parsed == 1
    assert shared.models_built == len(set(order))  # each interval's model built once


def test_a_reclearer_with_a_stale_model_would_be_caught(
    records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keeping one model for every base case (a wrong cache key) changes the re-clears."""
    rows, grid_json = records
    fresh = [content_hash(reclear_recorded(r, grid_json)) for r in rows]
    stale = Reclearer(grid_json)
    monkeypatch.setattr("controller.audit.content_hash", lambda value: "one key for all")
    assert [content_hash(stale(r)) for r in rows] != fresh  # this module's own content_hash
