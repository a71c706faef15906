"""Crash tests: kill -9 the settling process at random points, restart, lose and repeat nothing.

``crash_driver.py`` settles a run of intervals against anvil with the controller's store as its
intent log. The test starts it, waits until it is working, kills it with SIGKILL after a random
delay, and starts it again, at least ``KILLS`` times; then lets it finish. Anvil mines a block
every 0.2 s, so a kill can land anywhere: before the intent is stored, between the intent and
the broadcast, while the transaction waits for its block, or before the receipt is recorded.

Afterwards, for every interval: settled on-chain exactly once (one ``Settled`` event, escrows
moved by exactly the sum of the batches), recorded as settled in the store with the chain's
transaction; the operator's nonces are gap-free (nothing waiting at the node, the persisted
next nonce equals the chain's) and no settlement transaction reverted (a restart never resent
one the chain already had).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from chain_helpers import deploy_stack
from crash_driver import interval_id, make_batch

from adapters.chain import derive_account
from adapters.chain.backends import AnvilNode, rpc_web3
from controller.store import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = 25
INTERVALS = 60
PACE_S = 0.03
DRIVER = Path(__file__).with_name("crash_driver.py")


class Zygote:
    """The driver in ``--zygote`` mode: forks a settling child per :meth:`run`."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - our own script
            [sys.executable, str(DRIVER), *args, "--zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path.cwd(),
        )
        assert self.readline() == "zygote"

    def readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            _, err = self.proc.communicate(timeout=10)
            pytest.fail(f"driver died: {err[-3000:]}")
        return line.strip()

    def run(self) -> int:
        """Start a child; return its pid once it is ready to settle."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        kind, pid = self.readline().split()
        assert kind == "pid"
        assert self.readline() == "ready"
        return int(pid)

    def wait(self) -> tuple[list[str], int]:
        """The child's lines up to its end, and its wait status."""
        lines = []
        while not (line := self.readline()).startswith("exit "):
            lines.append(line)
        return lines, int(line.split()[1])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.mark.timeout(600)
def test_killing_the_settling_process_loses_and_repeats_nothing(tmp_path: Path) -> None:
    rng = random.Random(20260621)
    with AnvilNode(state_path=tmp_path / "anvil.json", block_time_s=0.2) as node:
        w3 = rpc_web3(node.url)
        stack = deploy_stack(w3, participants=("alice", "bob", "carol", "dave"))
        client = stack.client
        community = derive_account("crash-community").address  # registered on first credit
        accounts = [*stack.addresses(), community]
        db = tmp_path / "intents.sqlite"
        args = [
            "--rpc",
            node.url,
            "--db",
            str(db),
            "--token",
            stack.token_address,
            "--settlement",
            stack.settlement_address,
            "--count",
            str(INTERVALS),
            "--accounts",
            ",".join(accounts),
            "--pace",
            str(PACE_S),
        ]
        escrow_before = {a: client.escrow_balance(a) for a in accounts}
        first_block = w3.eth.block_number

        driver = Zygote(args)
        killed_after: Counter[str] = Counter()
        try:
            for _ in range(KILLS):
                pid = driver.run()
                time.sleep(rng.uniform(0.0, 0.5))
                os.kill(pid, signal.SIGKILL)
                lines, status = driver.wait()
                assert "done" not in lines, "the run finished before the kill: raise INTERVALS"
                assert os.WIFSIGNALED(status)
                assert os.WTERMSIG(status) == signal.SIGKILL
                killed_after[(lines[-1] if lines else "ready").split()[0]] += 1
            driver.run()
            lines, status = driver.wait()
        finally:
            driver.close()
        assert os.WIFEXITED(status)
        assert os.WEXITSTATUS(status) == 0
        assert lines[-1] == "done"
        print(f"\ncrash test: {KILLS} kills; last line before each kill: {dict(killed_after)}")

        # --- the chain and the intent log agree: nothing lost, nothing twice
        store = Store(f"sqlite:///{db}")
        events = client.settled_events(first_block)
        per_interval = Counter(e.interval_id for e in events)
        expected_escrow = dict(escrow_before)
        expected_rewards: Counter[str] = Counter()
        for k in range(INTERVALS):
            interval = interval_id(k)
            batch = make_batch(k, accounts)
            assert per_interval[interval] == 1, f"interval {interval} settled {per_interval}"
            row = store.settlement(interval)
            assert row is not None, f"interval {interval} lost from the log"
            assert row["state"] == "settled"
            assert row["batch_id"] == batch["batch_id"]
            (event,) = [e for e in events if e.interval_id == interval]
            assert event.batch_id == batch["batch_id"]
            assert (row["tx_hash"], row["block_number"]) == (event.tx_hash, event.block_number)
            for address, amount in batch["transfers"]:
                expected_escrow[address] += amount
            for address, wh in batch["rewards"]:
                expected_rewards[address] += wh * client.reward_policy().rate // 1000
        assert len(per_interval) == INTERVALS
        assert store.pending_settlements() == []
        assert {a: client.escrow_balance(a) for a in accounts} == expected_escrow
        assert {a: client.unclaimed_rewards(a) for a in accounts if expected_rewards[a]} == {
            a: r for a, r in expected_rewards.items() if r
        }
        store.close()

        # --- no nonce gaps, nothing left waiting, no settlement sent twice
        operator = stack.operator.address
        latest, pending = client.sender.chain_nonces(operator)
        assert latest == pending
        persisted = (
            sqlite3.connect(db)
            .execute("SELECT next FROM chain_nonces WHERE address = ?", (operator,))
            .fetchone()[0]
        )
        assert persisted == latest
        nonces, reverted = [], 0
        for number in range(first_block + 1, w3.eth.block_number + 1):
            for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
                if tx["from"] == operator:
                    nonces.append(tx["nonce"])
                    reverted += w3.eth.get_transaction_receipt(tx["hash"])["status"] == 0
        assert nonces == list(range(nonces[0], latest))  # consecutive, none skipped
        assert reverted == 0
