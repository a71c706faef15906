"""On a real anvil node: backends, state file, stuck transactions, reorganisations, nonces.

Each test that bends the node (mining off, reorganisations) starts its own :class:`AnvilNode`
(~0.1 s). Mining is driven by the test where timing matters, so nothing here sleeps for a
block time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chain_helpers import TOKEN, deploy_stack, make_batch

from adapters.chain import ChainClient, SettlementStatus, derive_account
from adapters.chain.backends import AnvilNode, _http_session, connect, find_anvil, rpc_web3
from adapters.chain.errors import (
    ConfirmationTimeout,
    InvalidArgument,
    NodeUnavailable,
    NonceConflict,
)
from controller.store import Store

pytestmark = pytest.mark.integration


def rpc(w3, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(method, list(params))
    assert "error" not in response, response
    return response["result"]


class Background:
    """Run ``fn`` in a thread; ``result()`` re-raises what it raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as exc:
            self.error = exc

    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self, timeout: float = 30.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "background call did not finish"
        if self.error is not None:
            raise self.error
        return self.value


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[AnvilNode]:
    with AnvilNode(state_path=tmp_path / "state.json") as started:
        yield started


# ---------------------------------------------------------------------- backends


def test_connect_anvil_keeps_the_chain_in_its_state_file(tmp_path: Path) -> None:
    state = tmp_path / "chain" / "state.json"
    with connect("anvil", state_path=state) as conn:
        assert conn.backend == "anvil"
        assert conn.url.startswith("http://127.0.0.1:")
        stack = deploy_stack(conn.w3, participants=("alice", "bob"))
        alice, bob = stack.participants["alice"].address, stack.participants["bob"].address
        batch7 = make_batch(7, [(alice, -3), (bob, 3)])
        first = stack.client.submit_settlement(*batch7)
        pid = conn.node.pid if conn.node else None
    assert state.is_file()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the node is gone

    w3, close = connect("anvil", state_path=state)
    try:
        client = ChainClient(w3, derive_account("operator"))
        client.attach(stack.token_address, stack.settlement_address)
        assert client.escrow_balance(bob) == 400 * TOKEN + 3
        again = client.submit_settlement(*batch7)
        assert again.status is SettlementStatus.ALREADY_SETTLED
        assert (again.tx_hash, again.block_number, again.gas_used) == (
            first.tx_hash,
            first.block_number,
            first.gas_used,
        )
    finally:
        close()
        close()  # twice is fine


def test_a_reloaded_chain_never_stamps_a_block_earlier_than_its_last(tmp_path: Path) -> None:
    """anvil stamps blocks after a reload with the wall clock even when the file's last block
    is later (its clock was moved on): PeerGrid sets the node's clock after that block, so a
    timelock or a withdrawal notice never sees time undone (without it the block mined after
    the reload was 600 s earlier than the one before)."""
    state = tmp_path / "state.json"
    with AnvilNode(state_path=state) as first:
        w3 = rpc_web3(first.url)
        w3.provider.make_request("evm_increaseTime", [600])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        before = w3.eth.get_block("latest")["timestamp"]
    with AnvilNode(state_path=state) as second:
        w3 = rpc_web3(second.url)
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        after = w3.eth.get_block("latest")["timestamp"]
    assert after > before


def test_connect_rpc_and_embedded(node: AnvilNode) -> None:
    with connect("rpc", rpc_url=node.url) as conn:
        assert conn.w3.eth.chain_id == 31337
        assert conn.node is None
    with connect("embedded") as conn:
        assert conn.w3.eth.chain_id == 131277322940537  # eth-tester's
    with pytest.raises(InvalidArgument, match="needs rpc_url"):
        connect("rpc")
    with pytest.raises(InvalidArgument, match="backend must be one of"):
        connect("ganache")
    with pytest.raises(ValueError, match="http"):  # an InvalidArgument is a ValueError
        connect("rpc", rpc_url="ftp://example.org")
    with pytest.raises(NodeUnavailable, match="no EVM node answers"):
        connect("rpc", rpc_url="http://127.0.0.1:9", timeout_s=1)


def test_a_pruned_node_keeps_recent_states_in_memory_only() -> None:
    """``prune_history``: as a full node, old states gone, nothing written to disk."""
    with AnvilNode(prune_history=4) as pruned, AnvilNode() as archive:
        for node in (pruned, archive):
            w3 = rpc_web3(node.url)
            rpc(w3, "anvil_mine", hex(20))
            rich = w3.eth.accounts[0]
            assert w3.eth.get_balance(rich, block_identifier=19) > 0  # a recent state
            old = w3.provider.make_request("eth_getBalance", [rich, hex(1)])
            if node is pruned:
                assert "error" in old, old  # a state it no longer keeps
            else:
                assert int(old["result"], 16) > 0
        # the archive node has its cache folder, the pruned one none (read from the node
        # objects: other test processes start anvil nodes in the same temporary folder)
        assert archive._cache is not None
        assert archive._cache.is_dir()
        assert pruned._cache is None


def test_find_anvil_prefers_the_native_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    found = find_anvil()
    assert found.is_file()
    assert found.read_bytes()[:2] != b"#!"  # not the node wrapper
    monkeypatch.setenv("PEERGRID_ANVIL", "/nonexistent/anvil")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.chdir("/")
    with pytest.raises(NodeUnavailable, match="anvil not found"):
        find_anvil()
    with pytest.raises(NodeUnavailable):
        AnvilNode().start()


def test_a_node_that_cannot_start_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "anvil"
    bad.write_text("#!/bin/sh\necho 'bad flag' >&2\nexit 3\n")
    bad.chmod(0o755)
    with pytest.raises(NodeUnavailable, match="exited with code 3: bad flag"):
        AnvilNode(binary=bad).start()


def test_node_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """kill -9 of the controller leaves no orphan anvil, and the node saves its state."""
    state = tmp_path / "state.json"
    script = (
        "import sys, time\n"
        "from adapters.chain.backends import AnvilNode\n"
        f"node = AnvilNode(state_path={str(state)!r}).start()\n"
        "print(node.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=Path.cwd(), text=True
    )
    try:
        assert child.stdout is not None
        pid = int(child.stdout.readline())
        os.kill(pid, 0)
        child.send_signal(signal.SIGKILL)
        child.wait(10)

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_until(gone, timeout=15)
        assert state.is_file()  # SIGTERM from the kernel: anvil wrote its state
    finally:
        if child.poll() is None:
            child.kill()


# ---------------------------------------------------------------------- stuck transactions


def test_a_stuck_transaction_is_replaced_at_the_same_nonce(node: AnvilNode) -> None:
    w3 = rpc_web3(node.url)
    stack = deploy_stack(w3, participants=("alice",))
    operator = stack.operator
    client = ChainClient(w3, operator, stuck_after_s=0.3, poll_s=0.05, timeout_s=30)
    client.attach(stack.token_address, stack.settlement_address)
    nonce = w3.eth.get_transaction_count(operator.address)
    rpc(w3, "evm_setAutomine", False)

    def pool_hashes() -> list[str]:
        pool = rpc(w3, "txpool_content")["pending"]
        txs = pool.get(operator.address, {}) or pool.get(operator.address.lower(), {})
        return [tx["hash"] for tx in txs.values()]

    call = Background(lambda: client.mint(derive_account("receiver").address, 5))
    wait_until(lambda: len(pool_hashes()) == 1)
    first = pool_hashes()[0]
    wait_until(lambda: pool_hashes() != [first])  # the client re-signed with higher fees
    rpc(w3, "evm_mine")
    result = call.result()
    rpc(w3, "evm_setAutomine", True)

    assert result.nonce == nonce
    assert result.replacements >= 1
    assert result.tx_hash != first
    assert w3.eth.get_transaction_count(operator.address) == nonce + 1
    assert w3.eth.get_transaction_count(operator.address, "pending") == nonce + 1
    mined = w3.eth.get_transaction(result.tx_hash)
    original_fee = 2 * w3.eth.get_block(mined["blockNumber"] - 1)["baseFeePerGas"] + 10**9
    assert mined["maxPriorityFeePerGas"] > 10**9
    assert mined["maxFeePerGas"] > original_fee * 1.1
    assert client.token_balance(derive_account("receiver").address) == 5


def test_a_nonce_taken_by_another_transaction_is_reported(node: AnvilNode) -> None:
    w3 = rpc_web3(node.url)
    stack = deploy_stack(w3, participants=("alice",))
    operator = stack.operator
    client = ChainClient(w3, operator, poll_s=0.05, timeout_s=30)
    client.attach(stack.token_address, stack.settlement_address)
    nonce = w3.eth.get_transaction_count(operator.address)
    rpc(w3, "evm_setAutomine", False)
    call = Background(lambda: client.mint(derive_account("receiver").address, 5))
    wait_until(lambda: w3.eth.get_transaction_count(operator.address, "pending") == nonce + 1)
    # Another process with the same key replaces it (a plain transfer, higher fees).
    block = w3.eth.get_block("latest")
    other = operator.sign_transaction(
        {
            "chainId": 31337,
            "nonce": nonce,
            "to": operator.address,
            "value": 0,
            "gas": 21_000,
            "maxFeePerGas": 4 * block["baseFeePerGas"] + 10 * 10**9,
            "maxPriorityFeePerGas": 10 * 10**9,
        }
    )
    w3.eth.send_raw_transaction(other.raw_transaction)
    rpc(w3, "evm_mine")
    rpc(w3, "evm_setAutomine", True)
    with pytest.raises(NonceConflict) as info:
        call.result()
    assert info.value.nonce == nonce
    assert client.token_balance(derive_account("receiver").address) == 0
    # the client recovers: it asks the node for the next nonce and goes on
    assert client.mint(derive_account("receiver").address, 5).nonce == nonce + 1


def test_a_nonce_read_from_before_a_reorganisation_is_not_a_conflict(
    node: AnvilNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node mid-reorganisation (or one of a load-balanced set lagging behind) answers one
    nonce read from a block that counted the transaction: the client looks again instead of
    calling it another process's transaction (CI saw this once during an ``anvil_reorg``)."""
    w3 = rpc_web3(node.url)
    stack = deploy_stack(w3, participants=("alice",))
    client = ChainClient(w3, stack.operator, poll_s=0.05, timeout_s=30)
    client.attach(stack.token_address, stack.settlement_address)
    nonce = w3.eth.get_transaction_count(stack.operator.address)
    real = client.sender.chain_nonces
    sent = threading.Event()
    stale_reads: list[tuple[int, int]] = []

    def one_stale_read(sender: str) -> tuple[int, int]:
        latest, pending = real(sender)
        if sent.is_set() and not stale_reads:  # the first check while it waits for a block
            stale_reads.append((latest + 1, pending))
            return stale_reads[0]
        return latest, pending

    monkeypatch.setattr(client.sender, "chain_nonces", one_stale_read)
    rpc(w3, "evm_setAutomine", False)
    call = Background(lambda: client.mint(derive_account("receiver").address, 5))
    wait_until(lambda: w3.eth.get_transaction_count(stack.operator.address, "pending") > nonce)
    sent.set()
    wait_until(lambda: bool(stale_reads))
    assert stale_reads == [(nonce + 1, nonce + 1)]
    time.sleep(0.2)
    assert not call.done()  # still waiting for its block, not failed
    rpc(w3, "evm_mine")
    rpc(w3, "evm_setAutomine", True)
    assert call.result().nonce == nonce
    assert client.token_balance(derive_account("receiver").address) == 5


# ---------------------------------------------------------------------- finality and reorgs


def test_a_reorganisation_inside_the_finality_depth_is_noticed(
    node: AnvilNode, caplog: pytest.LogCaptureFixture
) -> None:
    """The settling block is dropped before it is final: the client sends the same signed
    transaction again, it lands in a new block, and the store and the chain agree."""
    w3 = rpc_web3(node.url)
    stack = deploy_stack(w3, participants=("alice", "bob"))
    alice, bob = stack.participants["alice"].address, stack.participants["bob"].address
    client = ChainClient(w3, stack.operator, confirmations=3, poll_s=0.05, timeout_s=60)
    client.attach(stack.token_address, stack.settlement_address)
    store = Store(f"sqlite:///{node.state_path.parent / 'store.sqlite'}")  # type: ignore[union-attr]
    interval = 1_782_000_000
    batch = make_batch(interval, [(alice, -11), (bob, 11)])
    store.record_intent(interval, batch[0].batch_id, {"amounts": [[alice, -11], [bob, 11]]})
    escrow = client.escrow_balance(bob)
    rpc(w3, "anvil_mine", 3)  # the deposits (which registered alice and bob) are final

    call = Background(lambda: client.submit_settlement(*batch))
    wait_until(lambda: client.is_settled(interval))
    dropped = client.settled_events(interval_id=interval)[0]
    rpc(w3, "anvil_mine", 1)  # one block on top: still inside the depth of 3
    assert not call.done()
    head = w3.eth.block_number
    rpc(w3, "anvil_reorg", head - dropped.block_number + 1, [])  # drop the settling block
    assert not client.is_settled(interval) or client.settled_block(interval) != dropped.block_number

    def mine_until_done() -> bool:
        rpc(w3, "anvil_mine", 1)
        return call.done()

    wait_until(mine_until_done)
    receipt = call.result()
    store.mark_settled(
        interval,
        tx_hash=receipt.tx_hash,
        block_number=receipt.block_number,
        gas_used=receipt.gas_used,
    )

    assert receipt.status is SettlementStatus.SETTLED
    assert "no longer canonical (reorganisation)" in caplog.text
    assert "broadcasting it again" in caplog.text
    assert receipt.tx_hash == dropped.tx_hash  # the very same signed transaction
    assert receipt.block_number > dropped.block_number
    (event,) = client.settled_events(interval_id=interval)
    assert (event.tx_hash, event.block_number) == (receipt.tx_hash, receipt.block_number)
    row = store.settlement(interval)
    assert row is not None
    assert (row["state"], row["tx_hash"], row["block_number"]) == (
        "settled",
        event.tx_hash,
        event.block_number,
    )
    assert client.escrow_balance(bob) == escrow + 11  # paid once
    latest, pending = client.sender.chain_nonces(stack.operator.address)
    assert latest == pending == receipt.nonce + 1  # no gap, nothing left waiting
    store.close()


def test_a_restart_after_a_dropped_settlement_settles_it_again(node: AnvilNode) -> None:
    w3 = rpc_web3(node.url)
    stack = deploy_stack(w3, participants=("alice", "bob"))
    alice, bob = stack.participants["alice"].address, stack.participants["bob"].address
    hasty = stack.client  # confirmations=0: returns at the receipt
    escrow = hasty.escrow_balance(bob)
    batch5 = make_batch(5, [(alice, -2), (bob, 2)])
    first = hasty.submit_settlement(*batch5)
    rpc(w3, "anvil_reorg", w3.eth.block_number - first.block_number + 1, [])
    assert not hasty.is_settled(5)

    careful = ChainClient(w3, stack.operator, confirmations=2, poll_s=0.05, timeout_s=30)
    careful.attach(stack.token_address, stack.settlement_address)
    careful.reconcile_nonce(first.nonce + 1)  # what the crashed process had persisted
    miner = threading.Event()

    def mine() -> None:
        while not miner.is_set():
            rpc(w3, "anvil_mine", 1)
            time.sleep(0.05)

    mining = threading.Thread(target=mine, daemon=True)
    mining.start()
    try:
        again = careful.submit_settlement(*batch5)
        assert again.status is SettlementStatus.SETTLED
        assert again.nonce == first.nonce  # the dropped nonce is reused: no gap
        # asked again: the answer is final and nothing is sent
        third = careful.submit_settlement(*batch5)
        assert third.status is SettlementStatus.ALREADY_SETTLED
        assert third.tx_hash == again.tx_hash
    finally:
        miner.set()
        mining.join()
    assert careful.escrow_balance(bob) == escrow + 2


def test_confirmations_on_interval_mining(tmp_path: Path) -> None:
    with connect("anvil", block_time_s=0.2) as conn:
        stack = deploy_stack(conn.w3, participants=("alice",))
        client = ChainClient(conn.w3, stack.operator, confirmations=2, poll_s=0.05)
        client.attach(stack.token_address, stack.settlement_address)
        started = time.monotonic()
        result = client.mint(stack.operator.address, 1)
        assert time.monotonic() - started >= 0.3  # two blocks on top at 0.2 s each
        assert conn.w3.eth.block_number >= result.block_number + 2
        quick = ChainClient(conn.w3, stack.operator, confirmations=50, timeout_s=0.5)
        quick.attach(stack.token_address, stack.settlement_address)
        with pytest.raises(ConfirmationTimeout):
            quick.mint(stack.operator.address, 1)


# ---------------------------------------------------------------------- nonces


def test_nonce_api_reads_sets_and_reconciles(node: AnvilNode) -> None:
    w3 = rpc_web3(node.url)
    stack = deploy_stack(w3, participants=("alice",))
    seen: list[tuple[str, int]] = []
    client = ChainClient(w3, stack.operator, on_nonce=lambda a, n: seen.append((a, n)))
    client.attach(stack.token_address, stack.settlement_address)
    chain = w3.eth.get_transaction_count(stack.operator.address)
    assert client.next_nonce() == chain
    client.mint(stack.operator.address, 1)
    assert client.next_nonce() == chain + 1
    assert seen[-1] == (stack.operator.address, chain + 1)

    with pytest.raises(InvalidArgument, match="already mined"):
        client.set_next_nonce(chain)
    with pytest.raises(InvalidArgument, match="would leave a gap"):
        client.set_next_nonce(chain + 5)
    assert client.set_next_nonce(chain + 1) == chain + 1
    assert client.reconcile_nonce(chain + 9) == chain + 1  # a persisted nonce ahead: ignored
    assert client.reconcile_nonce(None) == chain + 1
    assert client.next_nonce(stack.participants["alice"].address) == w3.eth.get_transaction_count(
        stack.participants["alice"].address
    )


def test_a_restarted_client_waits_for_what_its_predecessor_left_in_flight(
    node: AnvilNode,
) -> None:
    w3 = rpc_web3(node.url)
    stack = deploy_stack(w3, participants=("alice", "bob"))
    alice, bob = stack.participants["alice"].address, stack.participants["bob"].address
    rpc(w3, "evm_setAutomine", False)
    # The predecessor signed and sent the settlement, then died before the receipt.
    predecessor = ChainClient(w3, stack.operator)
    predecessor.attach(stack.token_address, stack.settlement_address)
    batch9, accounts = make_batch(9, [(alice, -4), (bob, 4)])
    data = predecessor.settlement.encode_abi(
        "settle",
        args=[
            9,
            bytes.fromhex(batch9.batch_id),
            [
                (predecessor.account_states([alice])[alice].index << 160) | (1 << 79) | 4,
                (predecessor.account_states([bob])[bob].index << 160) | 4,
            ],
            batch9.trades_root,
            batch9.readings_root,
        ],
    )
    nonce = w3.eth.get_transaction_count(stack.operator.address)
    block = w3.eth.get_block("latest")
    signed = stack.operator.sign_transaction(
        {
            "chainId": 31337,
            "nonce": nonce,
            "to": predecessor.settlement.address,
            "data": data,
            "value": 0,
            "gas": 500_000,
            "maxFeePerGas": 2 * block["baseFeePerGas"] + 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    w3.eth.send_raw_transaction(signed.raw_transaction)

    successor = ChainClient(w3, stack.operator, poll_s=0.05, timeout_s=30)
    successor.attach(stack.token_address, stack.settlement_address)
    call = Background(lambda: successor.submit_settlement(batch9, accounts))
    time.sleep(0.3)
    assert not call.done()  # waiting for the predecessor's transaction, not sending
    rpc(w3, "evm_mine")
    receipt = call.result()
    rpc(w3, "evm_setAutomine", True)
    assert receipt.status is SettlementStatus.ALREADY_SETTLED
    assert receipt.tx_hash == "0x" + bytes(signed.hash).hex()
    assert w3.eth.get_transaction_count(stack.operator.address) == nonce + 1


def test_a_node_connection_reads_the_proxy_environment_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The environment is read when a URL is first connected to, not before every request."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "10.9.9.2")
    proxied = _http_session("http://10.9.9.1:8545")
    direct = _http_session("http://10.9.9.2:8545")
    assert proxied.trust_env is False
    assert proxied.proxies.get("http") == "http://proxy.invalid:3128"
    assert "http" not in direct.proxies  # NO_PROXY honoured
    monkeypatch.delenv("HTTP_PROXY")
    assert _http_session("http://10.9.9.1:8545") is proxied  # one per URL and process
    manager = rpc_web3("http://10.9.9.1:8545").provider._request_session_manager
    assert manager._explicit_session is proxied  # what web3 sends every request with
