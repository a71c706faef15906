"""A settling process for the crash tests: settles a run of intervals, exactly once.

    python tests/adapters/chain/crash_driver.py --rpc URL --db FILE --token ADDR \\
        --settlement ADDR --first N --count K --accounts ADDR,ADDR,...

It does what the controller does, with the controller's store (:class:`controller.store.Store`):

1. on start, continue at the node's next nonce (``reconcile_nonce``) and log how the
   persisted one differed; every nonce change is persisted (``on_nonce``) in a table of the
   same SQLite file;
2. resolve settlement intents a previous run left (the client asks the chain first);
3. for each interval: persist the intent (the batch, deterministic in the interval), settle
   it through :meth:`ChainClient.submit_settlement` (as the kernel's ``SettlementBatch``, the
   addresses being the participants), record the receipt.

It prints one line per step (``ready``, ``intent N``, ``sent N``, ``settled N``, ``done``) so
the test knows where it killed it; ``--pace S`` sleeps S seconds after ``intent`` and after
``sent`` to widen those windows. Batches are small enough never to overdraw an escrow.

``--zygote`` imports everything once and then, for every ``run`` line on stdin, forks a child
that runs the above and prints ``pid N`` for it, then ``exit STATUS`` when it ended: the test
kills children with SIGKILL without paying Python's and web3's ~1.4 s start-up each time.
Each child is a settling process of its own (its own connections, database handles, nonce
cache); only the imported modules are shared.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from adapters.chain import ChainClient, derive_account
from adapters.chain.backends import rpc_web3
from controller.store import Store
from market.domain import Interval, ParticipantId, SettlementBatch
from market.units import TokenUnits, Wh

INTERVAL_S = 900
BASE = 1_782_000_000


def interval_id(k: int) -> int:
    return BASE + INTERVAL_S * k


def make_batch(k: int, accounts: list[str]) -> dict[str, Any]:
    """The batch of interval ``k``: zero-sum transfers and rewards, the same every time.

    The last account is only ever credited (it has no escrow: the community account).
    """
    rng = random.Random(k)
    transfers: dict[str, int] = {}
    for _ in range(rng.randint(1, 4)):
        payer = rng.choice(accounts[:-1])
        payee = rng.choice([a for a in accounts if a != payer])
        amount = rng.randint(1, 50_000)  # at most 0.05 token
        transfers[payer] = transfers.get(payer, 0) - amount
        transfers[payee] = transfers.get(payee, 0) + amount
    rewards = {rng.choice(accounts): rng.randint(1, 5_000)}
    body: dict[str, Any] = {
        "interval": interval_id(k),
        "transfers": sorted([a, v] for a, v in transfers.items()),
        "rewards": sorted([a, v] for a, v in rewards.items()),
        "trades_root": hashlib.sha256(b"trades-%d" % k).hexdigest(),
        "readings_root": hashlib.sha256(b"readings-%d" % k).hexdigest(),
    }
    body["batch_id"] = to_batch(body)[0].batch_id
    return body


def to_batch(body: dict[str, Any]) -> tuple[SettlementBatch, dict[ParticipantId, str]]:
    """The kernel's batch of a stored body, and its participant -> address mapping."""
    pairs = [*body["transfers"], *body["rewards"]]
    batch = SettlementBatch(
        interval=Interval.from_id(int(body["interval"]), INTERVAL_S),
        lines=(),
        amounts=tuple((ParticipantId(a), TokenUnits(int(v))) for a, v in body["transfers"]),
        trades_root=bytes.fromhex(body["trades_root"]),
        readings_root=bytes.fromhex(body["readings_root"]),
        import_price=0,
        export_price=0,
        rewards_wh=tuple((ParticipantId(a), Wh(int(v))) for a, v in body["rewards"]),
    )
    return batch, {ParticipantId(a): a for a, _ in pairs}


class NonceLog:
    """The persisted next nonce per sender (a table next to the store's)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS chain_nonces (address TEXT PRIMARY KEY, next INTEGER)"
        )

    def load(self, address: str) -> int | None:
        row = self.db.execute(
            "SELECT next FROM chain_nonces WHERE address = ?", (address,)
        ).fetchone()
        return None if row is None else int(row[0])

    def save(self, address: str, next_nonce: int) -> None:
        self.db.execute(
            "INSERT INTO chain_nonces (address, next) VALUES (?, ?) "
            "ON CONFLICT(address) DO UPDATE SET next = excluded.next",
            (address, next_nonce),
        )


def say(*words: object) -> None:
    print(*words, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rpc", required=True)
    parser.add_argument("--db", required=True, type=Path)
    parser.add_argument("--token", required=True)
    parser.add_argument("--settlement", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--accounts", required=True)
    parser.add_argument("--pace", type=float, default=0.0)
    parser.add_argument("--zygote", action="store_true")
    args = parser.parse_args(argv)
    if args.zygote:
        return zygote([a for a in (argv or sys.argv[1:]) if a != "--zygote"])

    store = Store(f"sqlite:///{args.db}")
    nonces = NonceLog(args.db)
    operator = derive_account("operator")
    client = ChainClient(
        rpc_web3(args.rpc), operator, on_nonce=nonces.save, poll_s=0.02, timeout_s=60
    )
    client.attach(args.token, args.settlement)
    client.reconcile_nonce(nonces.load(operator.address))
    accounts = args.accounts.split(",")
    say("ready")

    def settle(interval: int, batch: dict[str, Any]) -> None:
        receipt = client.submit_settlement(*to_batch(batch))
        say("sent", interval, receipt.status)
        time.sleep(args.pace)
        store.mark_settled(
            interval,
            tx_hash=receipt.tx_hash,
            block_number=receipt.block_number,
            gas_used=receipt.gas_used,
        )
        say("settled", interval)

    for pending in store.pending_settlements():
        settle(pending.interval_id, dict(pending.batch))
    for k in range(args.first, args.first + args.count):
        interval = interval_id(k)
        row = store.settlement(interval)
        if row is not None and row["state"] == "settled":
            continue
        batch = make_batch(k, accounts)
        if row is None:
            store.record_intent(interval, batch["batch_id"], batch)
            say("intent", interval)
            time.sleep(args.pace)
        settle(interval, batch)
    say("done")
    store.close()
    return 0


def zygote(argv: list[str]) -> int:
    """Fork a settling child per ``run`` line on stdin (see the module docstring)."""
    say("zygote")
    for line in sys.stdin:
        if line.strip() != "run":
            break
        pid = os.fork()
        if pid == 0:  # the child: a settling process
            code = 1
            try:
                code = main(argv)
            finally:
                sys.stdout.flush()
                os._exit(code)
        say("pid", pid)
        _, status = os.waitpid(pid, 0)
        say("exit", status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
