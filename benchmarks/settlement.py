"""Settlement benchmark: gas per participant and latency, against plain ERC-20 in the same run.

For each backend (anvil, py-evm) and each participant count N, N accounts hold escrow in the
settlement contract (funded with ``deposit_for``); one interval then settles all N in one
transaction: half are debited, half credited, every amount non-zero (the netted batch a real
interval produces). Measured, after one warm-up interval, as the median of ``--repeat``
intervals:

* ``gas`` and ``gas/participant`` of the settlement transaction;
* the same with rewards (``+rewards``): the credited half are producers with verified local
  energy, minted in the same transaction;
* ``latency``: wall time of :meth:`ChainClient.submit_settlement` (the chain asked first,
  escrow checked, indices read, signed locally, sent, receipt awaited; anvil automines);

and the baselines, measured in the same run on the same chain and the same PaymentToken:

* ``ERC-20 transfer``: one ``transfer`` between two accounts that already hold tokens;
* ``ERC-20 batch``: the interval paid with plain tokens instead of escrow, N/2 payers each
  ``transferFrom`` to one of N/2 payees, all in one transaction (a small Vyper batcher
  compiled here), per participant.

    python benchmarks/settlement.py [--participants 10 100 500] [--backends anvil py-evm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import vyper
from eth_account import Account
from web3 import Web3

from adapters.chain import ChainClient, derive_account, embedded_web3
from adapters.chain.backends import AnvilNode, rpc_web3
from market.domain import Interval, ParticipantId, SettlementBatch
from market.units import TokenUnits, Wh

TOKEN = 10**6
TARGET_GAS_PER_PARTICIPANT = 7_000

BATCHER = """
# pragma version ~=0.4.3
from ethereum.ercs import IERC20

@external
def pay(token: IERC20, payers: DynArray[address, 1024], payees: DynArray[address, 1024],
        amounts: DynArray[uint256, 1024]):
    for i: uint256 in range(len(payers), bound=1024):
        assert extcall token.transferFrom(payers[i], payees[i], amounts[i])
"""


@dataclass
class Row:
    backend: str
    participants: int
    gas: int
    gas_rewards: int
    latency_s: float
    transfer_gas: int
    batch_gas: int

    @property
    def per_participant(self) -> float:
        return self.gas / self.participants

    @property
    def per_participant_rewards(self) -> float:
        return self.gas_rewards / self.participants

    @property
    def batch_per_participant(self) -> float:
        return self.batch_gas / self.participants


@contextmanager
def chain(backend: str) -> Iterator[Web3]:
    if backend == "py-evm":
        yield embedded_web3()
        return
    with AnvilNode() as node:
        yield rpc_web3(node.url)


def deploy_batcher(client: ChainClient) -> str:
    out = vyper.compile_code(BATCHER, output_formats=["bytecode"])
    receipt, _ = client.sender.transact(client.admin, None, out["bytecode"], 500_000)
    return str(receipt["contractAddress"])


def run_backend(backend: str, sizes: list[int], repeat: int) -> list[Row]:
    rows = []
    with chain(backend) as w3:
        operator = derive_account("operator")
        client = ChainClient(w3, operator)
        client.fund_eth(operator.address, 1_000 * 10**18)
        client.deploy_all(reward_rate=TOKEN, reward_cap=10**15)
        client.mint(operator.address, 10**15)
        batcher = deploy_batcher(client)
        interval = 1_782_000_000
        for n in sizes:
            # N escrow holders (addresses only: the operator signs everything that settles)
            holders = [Account.create().address for _ in range(n)]
            for start in range(0, n, 200):
                chunk = holders[start : start + 200]
                client.deposit_for(operator, [(a, 1_000 * TOKEN) for a in chunk])

            def batch(k: int, holders: list[str] = holders) -> list[tuple[str, int]]:
                half = len(holders) // 2
                out = []
                for i in range(half):
                    amount = TOKEN + 7 * i + k
                    out += [(holders[i], -amount), (holders[half + i], amount)]
                return out

            def settle(k: int, rewards: bool, holders: list[str] = holders) -> tuple[int, float]:
                nonlocal interval
                interval += 900
                energy = [(a, 1_000 + i) for i, a in enumerate(holders[len(holders) // 2 :])]
                settlement = SettlementBatch(
                    interval=Interval.from_id(interval),
                    lines=(),
                    amounts=tuple((ParticipantId(a), TokenUnits(v)) for a, v in batch(k)),
                    trades_root=os.urandom(32),
                    readings_root=os.urandom(32),
                    import_price=0,
                    export_price=0,
                    rewards_wh=tuple((ParticipantId(a), Wh(wh)) for a, wh in energy)
                    if rewards
                    else (),
                )
                accounts = {ParticipantId(a): a for a in holders}
                started = time.perf_counter()
                receipt = client.submit_settlement(settlement, accounts)
                return receipt.gas_used, time.perf_counter() - started

            settle(0, rewards=True)  # warm-up: first reward lanes and mint balance
            plain = [settle(k, rewards=False) for k in range(1, repeat + 1)]
            with_rewards = [settle(k, rewards=True) for k in range(1, repeat + 1)]

            # Baselines on the same token: one transfer, and the interval paid with tokens.
            payers = [derive_account(f"bench-payer-{n}-{i}") for i in range(max(1, n // 2))]
            payees = [Account.create().address for _ in payers]
            for payer in payers:
                client.fund_eth(payer.address, 10**18)
                client.mint(payer.address, 1_000 * TOKEN)
                data = client.token.encode_abi("approve", args=[batcher, 2**256 - 1])
                client.sender.transact(payer, client.token.address, data, 80_000)
            for payee in payees:
                client.mint(payee, TOKEN)  # existing balances, as in escrow
            data = client.token.encode_abi("transfer", args=[payees[0], 3])
            _, transfer = client.sender.transact(payers[0], client.token.address, data, 80_000)
            pay = Web3().eth.contract(
                abi=[
                    {
                        "type": "function",
                        "name": "pay",
                        "stateMutability": "nonpayable",
                        "inputs": [
                            {"name": "token", "type": "address"},
                            {"name": "payers", "type": "address[]"},
                            {"name": "payees", "type": "address[]"},
                            {"name": "amounts", "type": "uint256[]"},
                        ],
                        "outputs": [],
                    }
                ]
            )
            data = pay.encode_abi(
                "pay",
                args=[
                    client.token.address,
                    [p.address for p in payers],
                    payees,
                    [TOKEN + i for i in range(len(payers))],
                ],
            )
            _, batch_tx = client.sender.transact(
                operator, Web3.to_checksum_address(batcher), data, 16_000_000
            )
            rows.append(
                Row(
                    backend=backend,
                    participants=n,
                    gas=int(statistics.median(g for g, _ in plain)),
                    gas_rewards=int(statistics.median(g for g, _ in with_rewards)),
                    latency_s=statistics.median(t for _, t in plain),
                    transfer_gas=transfer.gas_used,
                    batch_gas=batch_tx.gas_used,
                )
            )
            print(f"  {backend} N={n}: done", flush=True)
    return rows


def table(rows: list[Row]) -> str:
    header = (
        "| backend | N | settle gas | gas/participant | +rewards gas/participant "
        "| ERC-20 transfer | vs transfer | ERC-20 batch gas/participant | vs batch "
        "| latency [ms] |"
    )
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r.backend} | {r.participants} | {r.gas:,} | {r.per_participant:,.0f} "
            f"| {r.per_participant_rewards:,.0f} | {r.transfer_gas:,} "
            f"| {r.per_participant / r.transfer_gas:.3f} | {r.batch_per_participant:,.0f} "
            f"| {r.per_participant / r.batch_per_participant:.3f} | {r.latency_s * 1000:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--backends", nargs="+", default=["anvil", "py-evm"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows: list[Row] = []
    for backend in args.backends:
        rows += run_backend(backend, args.participants, args.repeat)
    print()
    print(table(rows))
    at_100 = [r for r in rows if r.participants == 100]
    for r in at_100:
        verdict = "meets" if r.per_participant_rewards <= TARGET_GAS_PER_PARTICIPANT else "MISSES"
        print(
            f"{r.backend}: {r.per_participant:,.0f} gas/participant at N=100 "
            f"({r.per_participant_rewards:,.0f} with rewards) {verdict} the "
            f"{TARGET_GAS_PER_PARTICIPANT:,} target"
        )


if __name__ == "__main__":
    main()
