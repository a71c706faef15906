"""Stateful property test of the contracts on anvil (hypothesis ``RuleBasedStateMachine``).

Deposits, withdrawal requests and withdrawals, reward claims, settlements (by the operator and
by others, of fresh and of already settled intervals, balanced or not, affordable or not),
pauses and role changes run in random order against a Python model. After every step:

* payment-token supply == wallets + the settlement contract's balance, and that balance ==
  ``total_escrow`` == the sum of the escrows (nothing created or lost);
* reward-token supply == wallets + the contract's balance == ``total_rewards`` + claimed;
* every escrow, pending withdrawal and unclaimed reward equals the model's (which never goes
  below zero, so nobody does);
* only an operator's settlement lands, and no interval settles twice;
* the pause flag and the roles are the model's.

Speed: CI runs at least ``RUNS`` x ``STEPS`` (256 x 50). The contracts are deployed once;
every run starts from an ``evm_snapshot`` of that state (``evm_revert`` takes ~1 ms on anvil)
instead of redeploying; transactions are signed locally and sent raw over one keep-alive HTTP
session (anvil mines each at once); the invariants are 23 ``eth_call`` s in one JSON-RPC batch
per step. Measured on the CI machine: ~7.7 ms per step, ~100 s for the whole test. The same
on py-evm would take ~10 ms per transaction plus ~5 ms per read, unbatched (~110 ms per step,
~25 min). ``PEERGRID_STATEFUL_RUNS`` overrides the number of runs for local experiments.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
import requests
from chain_helpers import REWARD_CAP, REWARD_RATE
from eth_abi.abi import decode
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from web3 import Web3

from adapters.chain import ChainClient, derive_account
from adapters.chain.backends import AnvilNode, rpc_web3
from adapters.chain.deployment import OPERATOR_ROLE
from adapters.chain.encoding import Entry, pack_entry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = int(os.environ.get("PEERGRID_STATEFUL_RUNS", "256"))
STEPS = 50
TOKEN = 10**6
WALLET = 1_000 * TOKEN
NAMES = ("p0", "p1", "p2", "p3")
ACTORS = ("admin", "operator", "mallory", "p0")  # who sends privileged calls
HOLDERS = (*NAMES, "admin", "operator", "mallory")  # every payment-token wallet
GAS = 600_000
# Amounts [token base units] from few choice bytes: hypothesis ends a run early once its
# choices pass 80 % of its 8 KiB buffer, and every step must fit ~130 bytes to run all 50.
AMOUNTS = st.integers(1, 3_000).map(lambda k: k * TOKEN // 10)
SETTLE = "settle(uint256,bytes32,uint256[],bytes32,bytes32)"
SETTLE_TYPES = ["uint256", "bytes32", "uint256[]", "bytes32", "bytes32"]


def calldata(signature: str, types: list[str], args: list[Any]) -> str:
    """ABI calldata, built without web3's (slow, per-call) ABI machinery."""
    return "0x" + (Web3.keccak(text=signature)[:4] + abi_encode(types, args)).hex()


@dataclass
class Chain:
    """What every run shares: the node, the contracts, the accounts and the base snapshot.

    JSON-RPC goes straight over one keep-alive HTTP session: web3's contract layer costs
    ~5 ms per call in ABI handling, more than anvil takes to run it.
    """

    url: str
    token: str
    reward: str
    settlement: str
    accounts: dict[str, LocalAccount]
    indices: dict[str, int]
    snapshot: str
    chain_id: int
    fees: dict[str, int] = field(default_factory=dict)
    stats: list[int] = field(default_factory=list)
    session: requests.Session = field(default_factory=requests.Session)

    def rpc(self, method: str, *params: Any) -> Any:
        response = self.session.post(
            self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        ).json()
        assert "error" not in response, response
        return response["result"]

    def batch(self, calls: list[tuple[str, str]]) -> list[bytes]:
        """``eth_call`` of every (to, data) in one HTTP request; the raw results."""
        payload = [
            {"jsonrpc": "2.0", "id": i, "method": "eth_call", "params": [{"to": to, "data": d}]}
            for i, (to, d) in enumerate(calls)
        ]
        answers = sorted(self.session.post(self.url, json=payload).json(), key=lambda r: r["id"])
        return [bytes.fromhex(a["result"][2:]) for a in answers]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with AnvilNode(state_path=tmp_path_factory.mktemp("stateful") / "state.json") as node:
        w3 = rpc_web3(node.url)
        admin, operator = derive_account("admin"), derive_account("operator")
        client = ChainClient(w3, operator, admin=admin)
        accounts = {"admin": admin, "operator": operator, "mallory": derive_account("mallory")}
        accounts |= {name: derive_account(name) for name in NAMES}
        for account in accounts.values():
            client.fund_eth(account.address, 10**21)
        client.deploy_all(reward_rate=REWARD_RATE, reward_cap=REWARD_CAP)
        for name in NAMES:
            account = accounts[name]
            client.mint(account.address, WALLET)
            data = client.token.encode_abi("approve", args=[client.settlement.address, 2**256 - 1])
            client.sender.transact(account, client.token.address, data, 100_000)
        client.register([accounts[n].address for n in NAMES])
        states = client.account_states([accounts[n].address for n in NAMES])
        block = w3.eth.get_block("latest")
        assert client.reward_token is not None
        yield Chain(
            url=node.url,
            token=client.token.address,
            reward=client.reward_token.address,
            settlement=client.settlement.address,
            accounts=accounts,
            indices={n: states[accounts[n].address].index for n in NAMES},
            snapshot=w3.provider.make_request("evm_snapshot", [])["result"],
            chain_id=w3.eth.chain_id,
            fees={
                "maxFeePerGas": 4 * int(block["baseFeePerGas"]) + 10**9,
                "maxPriorityFeePerGas": 10**9,
            },
        )


class Contracts(RuleBasedStateMachine):
    """The model: what the contracts must hold after every step."""

    chain: ClassVar[Chain]

    def __init__(self) -> None:
        super().__init__()
        c = self.chain
        assert c.rpc("evm_revert", c.snapshot) is True
        c.snapshot = c.rpc("evm_snapshot")
        self.nonces = {
            name: int(c.rpc("eth_getTransactionCount", a.address, "latest"), 16)
            for name, a in c.accounts.items()
        }
        self.wallet = dict.fromkeys(NAMES, WALLET)
        self.escrow = dict.fromkeys(NAMES, 0)
        self.pending = dict.fromkeys(NAMES, 0)
        self.unclaimed = dict.fromkeys(NAMES, 0)
        self.claimed = dict.fromkeys(NAMES, 0)
        self.operators = {"operator"}
        self.paused = False
        self.settled: set[int] = set()
        self.steps = 0

    # ------------------------------------------------------------------ plumbing

    def send(self, who: str, to: str, data: str) -> bool:
        """Send a transaction; True if it succeeded, False if it reverted."""
        c = self.chain
        tx = {
            "chainId": c.chain_id,
            "nonce": self.nonces[who],
            "to": to,
            "data": data,
            "value": 0,
            "gas": GAS,
            **c.fees,
        }
        self.nonces[who] += 1
        raw = c.accounts[who].sign_transaction(tx).raw_transaction
        tx_hash = c.rpc("eth_sendRawTransaction", "0x" + bytes(raw).hex())
        receipt = None
        for _ in range(5000):
            receipt = c.rpc("eth_getTransactionReceipt", tx_hash)
            if receipt is not None:
                break
            time.sleep(0.001)
        assert receipt is not None, f"no receipt for {tx_hash}"
        self.steps += 1
        return bool(int(receipt["status"], 16) == 1)

    def address(self, name: str) -> str:
        return self.chain.accounts[name].address

    # ------------------------------------------------------------------ rules

    @rule(who=st.sampled_from(NAMES), amount=AMOUNTS.map(lambda a: 2 * a))
    def deposit(self, who: str, amount: int) -> None:
        ok = self.send(
            who, self.chain.settlement, calldata("deposit(uint256)", ["uint256"], [amount])
        )
        expected = not self.paused and amount <= self.wallet[who]
        assert ok == expected
        if ok:
            self.wallet[who] -= amount
            self.escrow[who] += amount

    @rule(who=st.sampled_from(NAMES), share=st.integers(0, 120))
    def request_withdrawal(self, who: str, share: int) -> None:
        amount = self.escrow[who] * share // 100  # above 100 %: more than the escrow
        data = calldata("request_withdrawal(uint256)", ["uint256"], [amount])
        ok = self.send(who, self.chain.settlement, data)
        assert ok == (amount <= self.escrow[who])
        if ok:
            self.pending[who] = amount

    @rule(who=st.sampled_from(NAMES))
    def withdraw(self, who: str) -> None:
        ok = self.send(who, self.chain.settlement, calldata("withdraw()", [], []))
        amount = self.pending[who]
        assert ok == (0 < amount <= self.escrow[who])
        if ok:
            self.escrow[who] -= amount
            self.wallet[who] += amount
            self.pending[who] = 0

    @rule(who=st.sampled_from(NAMES))
    def claim_rewards(self, who: str) -> None:
        ok = self.send(who, self.chain.settlement, calldata("claim_rewards()", [], []))
        assert ok == (self.unclaimed[who] > 0)
        if ok:
            self.claimed[who] += self.unclaimed[who]
            self.unclaimed[who] = 0

    @rule(
        sender=st.sampled_from(ACTORS),
        interval=st.integers(0, 30),
        payments=st.lists(
            st.tuples(st.sampled_from(NAMES), st.sampled_from(NAMES), AMOUNTS),
            max_size=5,
        ),
        energy=st.dictionaries(
            st.sampled_from(NAMES), st.integers(1, 300).map(lambda k: 100 * k), max_size=3
        ),
        imbalance=st.sampled_from([0, 0, 0, 0, 1, -1]),
    )
    def settle(
        self,
        sender: str,
        interval: int,
        payments: list[tuple[str, str, int]],
        energy: dict[str, int],
        imbalance: int,
    ) -> None:
        net = dict.fromkeys(NAMES, 0)
        for payer, payee, amount in payments:
            net[payer] -= amount
            net[payee] += amount
        if imbalance:  # break the zero sum on purpose
            net[NAMES[0]] += imbalance
        entries = [
            pack_entry(
                Entry(index=self.chain.indices[n], amount=net[n], reward_wh=energy.get(n, 0))
            )
            for n in sorted(NAMES, key=self.chain.indices.__getitem__)
            if net[n] or energy.get(n, 0)
        ]
        data = calldata(
            SETTLE, SETTLE_TYPES, [interval, b"\x01" * 32, entries, b"\x02" * 32, b"\x03" * 32]
        )
        ok = self.send(sender, self.chain.settlement, data)
        expected = (
            sender in self.operators
            and not self.paused
            and interval not in self.settled
            and imbalance == 0
            and all(self.escrow[n] + net[n] >= 0 for n in NAMES)
        )
        assert ok == expected, (sender, interval, net, self.escrow)
        if ok:
            self.settled.add(interval)
            for n in NAMES:
                self.escrow[n] += net[n]
            raw = {n: wh * REWARD_RATE // 1000 for n, wh in energy.items()}
            total = sum(raw.values())
            for n, reward in raw.items():
                self.unclaimed[n] += reward * REWARD_CAP // total if total > REWARD_CAP else reward

    @rule(sender=st.sampled_from(ACTORS), pause=st.booleans())
    def pause_or_unpause(self, sender: str, pause: bool) -> None:
        data = calldata("pause()" if pause else "unpause()", [], [])
        ok = self.send(sender, self.chain.settlement, data)
        assert ok == (sender == "admin" and self.paused != pause)
        if ok:
            self.paused = pause

    @rule(sender=st.sampled_from(ACTORS), whom=st.sampled_from(ACTORS), grant=st.booleans())
    def change_operator(self, sender: str, whom: str, grant: bool) -> None:
        fn = "grantRole(bytes32,address)" if grant else "revokeRole(bytes32,address)"
        data = calldata(fn, ["bytes32", "address"], [OPERATOR_ROLE, self.address(whom)])
        ok = self.send(sender, self.chain.settlement, data)
        assert ok == (sender == "admin")
        if ok:
            (self.operators.add if grant else self.operators.discard)(whom)

    @precondition(lambda self: self.settled)
    @rule(sender=st.sampled_from(ACTORS), data=st.data())
    def settle_again(self, sender: str, data: st.DataObject) -> None:
        """An interval settled before, by anyone, with an empty batch: always refused."""
        interval = data.draw(st.sampled_from(sorted(self.settled)))
        args = [interval, b"\x09" * 32, [], b"\x00" * 32, b"\x00" * 32]
        assert not self.send(sender, self.chain.settlement, calldata(SETTLE, SETTLE_TYPES, args))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def ledger_matches_the_model(self) -> None:
        c = self.chain
        results = c.batch(self.queries)
        supply, held, total_escrow, r_supply, r_held, total_rewards, paused = (
            decode(["uint256"], r)[0] for r in results[:7]
        )
        (states,) = decode(["(uint256,uint256,uint256,uint256,uint256)[]"], results[7])
        rest = [decode(["uint256"], r)[0] for r in results[8:]]
        wallets = rest[: len(HOLDERS)]
        reward_wallets = rest[len(HOLDERS) : len(HOLDERS) + len(NAMES)]
        roles = rest[len(HOLDERS) + len(NAMES) :]

        assert supply == sum(wallets) + held  # supply == wallets + escrow
        assert held == total_escrow == sum(s[1] for s in states)
        assert r_supply == sum(reward_wallets) + r_held
        assert r_held == total_rewards == sum(s[4] for s in states)
        for name, state, wallet, reward_wallet in zip(
            NAMES, states, wallets, reward_wallets, strict=False
        ):
            assert state[1] == self.escrow[name] >= 0
            assert state[3] == self.pending[name] >= 0
            assert state[4] == self.unclaimed[name] >= 0
            assert wallet == self.wallet[name]
            assert reward_wallet == self.claimed[name]
        assert bool(paused) == self.paused
        operators = {a for a, r in zip(ACTORS, roles, strict=True) if r}
        assert operators == self.operators

    @property
    def queries(self) -> list[tuple[str, str]]:
        """The invariant's ``eth_call`` s: the same every step of every run, so built once."""
        c = self.chain
        cached = getattr(c, "_queries", None)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        balance = "balanceOf(address)"
        queries = [
            (c.token, calldata("totalSupply()", [], [])),
            (c.token, calldata(balance, ["address"], [c.settlement])),
            (c.settlement, calldata("total_escrow()", [], [])),
            (c.reward, calldata("totalSupply()", [], [])),
            (c.reward, calldata(balance, ["address"], [c.settlement])),
            (c.settlement, calldata("total_rewards()", [], [])),
            (c.settlement, calldata("paused()", [], [])),
            (
                c.settlement,
                calldata(
                    "account_states(address[])",
                    ["address[]"],
                    [[self.address(n) for n in NAMES]],
                ),
            ),
        ]
        queries += [(c.token, calldata(balance, ["address"], [self.address(h)])) for h in HOLDERS]
        queries += [(c.reward, calldata(balance, ["address"], [self.address(n)])) for n in NAMES]
        queries += [
            (
                c.settlement,
                calldata(
                    "hasRole(bytes32,address)",
                    ["bytes32", "address"],
                    [OPERATOR_ROLE, self.address(a)],
                ),
            )
            for a in ACTORS
        ]
        c._queries = queries  # type: ignore[attr-defined]
        return queries

    def teardown(self) -> None:
        self.chain.stats.append(self.steps)


@pytest.mark.timeout(900)
def test_contracts_keep_their_invariants_under_random_operations(chain: Chain) -> None:
    """At least ``RUNS`` runs of ``STEPS`` steps each.

    Hypothesis also tries shorter runs while it explores (a run stops where its choice tree
    has an unexplored branch), so the machine runs until ``RUNS`` full-length runs are done.
    """
    Contracts.chain = chain
    chain.stats.clear()
    started = time.monotonic()
    for _round in range(5):
        full = sum(1 for steps in chain.stats if steps >= STEPS)
        if full >= RUNS:
            break
        run_state_machine_as_test(
            Contracts,
            settings=settings(
                max_examples=max(10, (RUNS - full) * 5 // 4),
                stateful_step_count=STEPS,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    elapsed = time.monotonic() - started
    full = sum(1 for steps in chain.stats if steps >= STEPS)
    print(f"stateful: {len(chain.stats)} runs, {full} of {STEPS} steps, {elapsed:.1f} s")
    assert full >= RUNS
