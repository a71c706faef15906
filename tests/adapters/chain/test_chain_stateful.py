"""Stateful property test of the contracts on anvil (hypothesis ``RuleBasedStateMachine``).

Everything a participant, the operator, the admin or an outsider can do runs in random order
against an independent Python model of the balances:

* payment token: ``mint`` (only its owner, the admin), ``transfer`` (between any wallets, and
  to the settlement contract, where it is held but is nobody's escrow), ``approve``;
  reward token: ``transfer``, and ``mint`` (nobody outside the settlement contract may);
* escrow: ``deposit``, ``deposit_with_permit`` (EIP-2612 permits that are valid, expired,
  signed for the wrong nonce or by the wrong key; a failed permit falls back to the allowance),
  ``deposit_for`` (several accounts, registering new ones), ``request_withdrawal`` and
  ``withdraw`` before and after the withdrawal delay, with the chain's clock advanced;
* settlements (by the operator and by others, of fresh and of already settled intervals,
  balanced or not, affordable or not) minting rewards at the current ``set_reward_policy`` rate
  and cap, ``claim_rewards``, ``set_withdrawal_delay``, pauses and role changes.

After every step, for every one of the seven wallets (four participants, admin, operator,
mallory):

* its payment-token and reward-token balance, its allowance to the settlement contract, and
  its index, escrow, pending withdrawal, withdrawal time and unclaimed rewards equal the
  model's (which never goes below zero, so nobody does);
* total supply is conserved: payment supply == what the model minted == all wallets + the
  contract's balance, and that balance == ``total_escrow`` (== the escrows' sum) + what was
  sent to the contract directly; reward supply == what the model says settlements minted ==
  all reward wallets + the contract's reward balance, and that balance == ``total_rewards``
  (== the unclaimed rewards' sum) + what was sent back to it;
* the pause flag, the roles, the reward policy and the withdrawal delay are the model's.

Time is the model's too: anvil mines each block one second after the last
(``anvil_setBlockTimestampInterval``) and ``advance_time`` sets the next block's timestamp, so a
run never depends on the wall clock and replays exactly.

The machine can fail: :func:`test_the_machine_reports_a_model_that_forgets` runs it with a
model that forgets a wallet outside the four participants (the three wallets the old check,
``zip(..., strict=False)``, dropped) or the withdrawal delay, and expects it to report that.

Speed: CI runs at least ``RUNS`` x ``STEPS`` (256 x 50). The contracts are deployed once;
every run starts from an ``evm_snapshot`` of that state (``evm_revert`` takes ~1 ms on anvil)
instead of redeploying; transactions are signed locally and sent raw over one keep-alive HTTP
session (anvil mines each at once); the invariants are one JSON-RPC batch of ``eth_call`` s
per step. ``PEERGRID_STATEFUL_RUNS`` overrides the number of runs for local experiments.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
import requests
from chain_helpers import REWARD_RATE
from eth_abi.abi import decode
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, Phase, settings
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
WALLET = 1_000 * TOKEN  # each participant's wallet at the start [token base units]
ESCROW = 100 * TOKEN  # and its escrow, deposited out of it
CAP = 20 * TOKEN  # the reward cap at deployment: two producers' rewards often exceed it
MAX = 2**256 - 1  # an unlimited allowance (never spent down)
NAMES = ("p0", "p1", "p2", "p3")  # registered participants, who settle
ACTORS = ("admin", "operator", "mallory", "p0")  # who sends privileged calls
HOLDERS = (*NAMES, "admin", "operator", "mallory")  # every wallet
SETTLEMENT = "settlement"  # a transfer's receiver: the contract itself
DELAY = 60  # the withdrawal delay at deployment [s]
GAS = 600_000
# Amounts [token base units] from few choice bytes: hypothesis ends a run early once its
# choices pass 80 % of its 8 KiB buffer, and every step must fit ~130 bytes to run all 50.
AMOUNTS = st.integers(1, 3_000).map(lambda k: k * TOKEN // 10)
SHARES = st.integers(0, 120)  # percent of a balance; above 100: more than there is
SETTLE = "settle(uint256,bytes32,uint256[],bytes32,bytes32)"
SETTLE_TYPES = ["uint256", "bytes32", "uint256[]", "bytes32", "bytes32"]
PERMIT_TYPES = {
    "Permit": [
        {"name": "owner", "type": "address"},
        {"name": "spender", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]
}
PERMITS = ("valid", "last second", "expired", "wrong nonce", "wrong signer")
COVERED = (
    "mint ok",
    "mint refused",
    "transfer ok",
    "transfer refused",
    "tokens sent to the contract",
    *(f"permit {kind} ok" for kind in PERMITS),
    "permit valid refused",
    "deposit_for ok",
    "deposit_for registered an account",
    "withdraw before the delay",
    "withdraw after the delay",
    "claim ok",
    "settle ok",
    "settle rewards scaled to the cap",
    "set_reward_policy ok",
    "set_withdrawal_delay ok",
)
"""Outcomes a full run of the test must have seen at least once."""


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
    timestamp: int  # of the snapshot's latest block [s]
    domain: dict[str, Any]  # the payment token's EIP-712 domain
    fees: dict[str, int] = field(default_factory=dict)
    stats: list[int] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)  # outcomes, for the coverage check
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
        client.deploy_all(reward_rate=REWARD_RATE, reward_cap=CAP, withdrawal_delay_s=DELAY)
        client.register([accounts[n].address for n in NAMES])
        for name in NAMES:
            account = accounts[name]
            client.mint(account.address, WALLET)
            data = client.token.encode_abi("approve", args=[client.settlement.address, MAX])
            client.sender.transact(account, client.token.address, data, 100_000)
            client.deposit(account, ESCROW)
        states = client.account_states([accounts[n].address for n in NAMES])
        # one second per block from here on: the model knows every block's timestamp
        w3.provider.make_request("anvil_setBlockTimestampInterval", [1])  # type: ignore[arg-type]
        block = w3.eth.get_block("latest")
        domain = client.token.functions.eip712Domain().call()
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
            timestamp=int(block["timestamp"]),
            domain={
                "name": domain[1],
                "version": domain[2],
                "chainId": int(domain[3]),
                "verifyingContract": domain[4],
            },
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
        self.now = c.timestamp  # the latest block's timestamp [s]
        self.next_block_at: int | None = None  # set by advance_time
        self.supply = WALLET * len(NAMES)
        self.wallet = {h: WALLET - ESCROW if h in NAMES else 0 for h in HOLDERS}
        self.allowance = {h: MAX if h in NAMES else 0 for h in HOLDERS}
        self.permit_nonce = dict.fromkeys(HOLDERS, 0)
        self.sent_to_contract = 0  # payment tokens transferred straight to the contract
        self.index = {h: c.indices.get(h, 0) for h in HOLDERS}
        self.escrow = {h: ESCROW if h in NAMES else 0 for h in HOLDERS}
        self.pending = dict.fromkeys(HOLDERS, 0)
        self.ready_at = dict.fromkeys(HOLDERS, 0)
        self.unclaimed = dict.fromkeys(HOLDERS, 0)
        self.reward_supply = 0
        self.reward_wallet = dict.fromkeys(HOLDERS, 0)
        self.rewards_sent_to_contract = 0
        self.reward_rate, self.reward_cap = REWARD_RATE, CAP
        self.delay = DELAY
        self.operators = {"operator"}
        self.paused = False
        self.settled: set[int] = set()
        self.steps = 0

    # ------------------------------------------------------------------ plumbing

    def send(self, who: str, to: str, data: str) -> bool:
        """Send a transaction; True if it succeeded, False if it reverted.

        Its block's timestamp is :attr:`now` afterwards: one second after the last block, or
        what :meth:`advance_time` set.
        """
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
        self.now = self.next_block_at if self.next_block_at is not None else self.now + 1
        self.next_block_at = None
        self.steps += 1
        return bool(int(receipt["status"], 16) == 1)

    def address(self, name: str) -> str:
        return self.chain.settlement if name == SETTLEMENT else self.chain.accounts[name].address

    def register(self, who: str) -> None:
        if not self.index[who]:
            self.index[who] = max(self.index.values()) + 1

    def spend_allowance(self, who: str, amount: int) -> None:
        if self.allowance[who] != MAX:
            self.allowance[who] -= amount

    def credit_wallet(self, who: str, amount: int) -> None:
        """Payment tokens arrive in ``who``'s wallet (the one place the model adds them)."""
        self.wallet[who] += amount

    def matures_at(self, requested_at: int) -> int:
        """When a withdrawal requested in a block at ``requested_at`` [s] can be withdrawn [s]."""
        return requested_at + self.delay

    def rewards_of(self, energy: dict[str, int]) -> dict[str, int]:
        """Each producer's reward for an interval [reward base units].

        ``wh * rate // 1000`` each; when their sum exceeds the cap, each scaled by
        ``cap / sum``, floored.
        """
        raw = {n: wh * self.reward_rate // 1000 for n, wh in energy.items()}
        total = sum(raw.values())
        if total > self.reward_cap:
            return {n: r * self.reward_cap // total for n, r in raw.items()}
        return raw

    # ------------------------------------------------------------------ tokens

    @rule(
        sender=st.sampled_from(ACTORS),
        to=st.sampled_from(HOLDERS),
        amount=AMOUNTS,
        reward=st.booleans(),
    )
    def mint(self, sender: str, to: str, amount: int, reward: bool) -> None:
        """Only the admin (the payment token's owner) mints; nobody here mints rewards."""
        token = self.chain.reward if reward else self.chain.token
        data = calldata("mint(address,uint256)", ["address", "uint256"], [self.address(to), amount])
        ok = self.send(sender, token, data)
        assert ok == (sender == "admin" and not reward)
        self.chain.seen[f"mint {'ok' if ok else 'refused'}"] += 1
        if ok:
            self.supply += amount
            self.credit_wallet(to, amount)

    @rule(
        sender=st.sampled_from(HOLDERS),
        to=st.sampled_from((*HOLDERS, SETTLEMENT)),
        share=SHARES,
        reward=st.booleans(),
    )
    def transfer(self, sender: str, to: str, share: int, reward: bool) -> None:
        balances = self.reward_wallet if reward else self.wallet
        amount = balances[sender] * share // 100 + (share > 100)
        data = calldata(
            "transfer(address,uint256)", ["address", "uint256"], [self.address(to), amount]
        )
        ok = self.send(sender, self.chain.reward if reward else self.chain.token, data)
        assert ok == (amount <= balances[sender])
        self.chain.seen[f"transfer {'ok' if ok else 'refused'}"] += 1
        if not ok:
            return
        balances[sender] -= amount
        if reward:
            if to == SETTLEMENT:
                self.rewards_sent_to_contract += amount
            else:
                self.reward_wallet[to] += amount
        elif to == SETTLEMENT:
            self.chain.seen["tokens sent to the contract"] += 1
            self.sent_to_contract += amount
        else:
            self.credit_wallet(to, amount)

    @rule(who=st.sampled_from(HOLDERS), amount=st.one_of(st.just(0), AMOUNTS, st.just(MAX)))
    def approve(self, who: str, amount: int) -> None:
        data = calldata(
            "approve(address,uint256)", ["address", "uint256"], [self.chain.settlement, amount]
        )
        assert self.send(who, self.chain.token, data)
        self.allowance[who] = amount

    # ------------------------------------------------------------------ escrow

    @rule(who=st.sampled_from(HOLDERS), amount=AMOUNTS.map(lambda a: 2 * a))
    def deposit(self, who: str, amount: int) -> None:
        ok = self.send(
            who, self.chain.settlement, calldata("deposit(uint256)", ["uint256"], [amount])
        )
        expected = not self.paused and amount <= min(self.wallet[who], self.allowance[who])
        assert ok == expected
        if ok:
            self.register(who)
            self.spend_allowance(who, amount)
            self.wallet[who] -= amount
            self.escrow[who] += amount

    @rule(who=st.sampled_from(HOLDERS), amount=AMOUNTS, kind=st.sampled_from(PERMITS))
    def deposit_with_permit(self, who: str, amount: int, kind: str) -> None:
        """A deposit with a permit; a permit that fails leaves the allowance to decide."""
        block_at = self.now + 1 if self.next_block_at is None else self.next_block_at
        deadline = {"last second": block_at, "expired": block_at - 1}.get(kind, block_at + 3600)
        nonce = self.permit_nonce[who] + (kind == "wrong nonce")
        signer = self.chain.accounts["mallory" if who != "mallory" else "p0"]
        if kind != "wrong signer":
            signer = self.chain.accounts[who]
        signed = signer.sign_typed_data(
            domain_data=self.chain.domain,
            message_types=PERMIT_TYPES,
            message_data={
                "owner": self.address(who),
                "spender": self.chain.settlement,
                "value": amount,
                "nonce": nonce,
                "deadline": deadline,
            },
        )
        data = calldata(
            "deposit_with_permit(uint256,uint256,uint8,bytes32,bytes32)",
            ["uint256", "uint256", "uint8", "bytes32", "bytes32"],
            [
                amount,
                deadline,
                signed.v,
                signed.r.to_bytes(32, "big"),
                signed.s.to_bytes(32, "big"),
            ],
        )
        ok = self.send(who, self.chain.settlement, data)
        permitted = kind in {"valid", "last second"}
        allowance = amount if permitted else self.allowance[who]
        assert ok == (not self.paused and amount <= min(self.wallet[who], allowance))
        self.chain.seen[f"permit {kind} {'ok' if ok else 'refused'}"] += 1
        if ok:
            if permitted:
                self.permit_nonce[who] += 1
            self.allowance[who] = allowance
            self.register(who)
            self.spend_allowance(who, amount)
            self.wallet[who] -= amount
            self.escrow[who] += amount

    @rule(
        payer=st.sampled_from(HOLDERS),
        credits=st.lists(st.tuples(st.sampled_from(HOLDERS), AMOUNTS), max_size=3),
    )
    def deposit_for(self, payer: str, credits: list[tuple[str, int]]) -> None:
        data = calldata(
            "deposit_for(address[],uint256[])",
            ["address[]", "uint256[]"],
            [[self.address(a) for a, _ in credits], [amount for _, amount in credits]],
        )
        ok = self.send(payer, self.chain.settlement, data)
        total = sum(amount for _, amount in credits)
        assert ok == (not self.paused and total <= min(self.wallet[payer], self.allowance[payer]))
        self.chain.seen[f"deposit_for {'ok' if ok else 'refused'}"] += 1
        if ok:
            if any(not self.index[a] for a, _ in credits):
                self.chain.seen["deposit_for registered an account"] += 1
            for account, amount in credits:
                self.register(account)
                self.escrow[account] += amount
            self.spend_allowance(payer, total)
            self.wallet[payer] -= total

    @rule(who=st.sampled_from(HOLDERS), share=SHARES)
    def request_withdrawal(self, who: str, share: int) -> None:
        amount = self.escrow[who] * share // 100  # above 100 %: more than the escrow
        data = calldata("request_withdrawal(uint256)", ["uint256"], [amount])
        ok = self.send(who, self.chain.settlement, data)
        assert ok == (amount <= self.escrow[who])
        if ok:
            self.pending[who] = amount
            self.ready_at[who] = self.matures_at(self.now)

    @rule(who=st.sampled_from(HOLDERS), share=SHARES)
    def withdraw_at_once(self, who: str, share: int) -> None:
        """Ask for a withdrawal and take it in the same moment (refused while a delay runs).

        Reached by chance only, "withdraw before the delay" went missing from one run of
        322 in CI (2026-12-04); this rule makes it a step of its own.
        """
        self.request_withdrawal(who, share)
        self.withdraw(who)

    @rule(who=st.sampled_from(HOLDERS))
    def withdraw(self, who: str) -> None:
        ok = self.send(who, self.chain.settlement, calldata("withdraw()", [], []))
        amount = self.pending[who]
        assert ok == (0 < amount <= self.escrow[who] and self.now >= self.ready_at[who])
        if 0 < amount <= self.escrow[who]:
            self.chain.seen["withdraw after the delay" if ok else "withdraw before the delay"] += 1
        if ok:
            self.escrow[who] -= amount
            self.credit_wallet(who, amount)
            self.pending[who] = 0

    @rule(seconds=st.sampled_from([1, 30, DELAY - 1, DELAY, DELAY + 1, 600, 3_600, 86_400]))
    def advance_time(self, seconds: int) -> None:
        """The next block is mined ``seconds`` after the latest one."""
        self.next_block_at = self.now + seconds
        self.chain.rpc("evm_setNextBlockTimestamp", self.next_block_at)
        self.steps += 1

    @rule(who=st.sampled_from(HOLDERS))
    def claim_rewards(self, who: str) -> None:
        ok = self.send(who, self.chain.settlement, calldata("claim_rewards()", [], []))
        assert ok == (self.unclaimed[who] > 0)
        self.chain.seen[f"claim {'ok' if ok else 'refused'}"] += 1
        if ok:
            self.reward_wallet[who] += self.unclaimed[who]
            self.unclaimed[who] = 0

    # ------------------------------------------------------------------ settlement

    @rule(
        sender=st.sampled_from(("operator", "operator", *ACTORS)),  # the operator more often
        interval=st.integers(0, 30),
        payments=st.lists(
            st.tuples(
                st.sampled_from(NAMES), st.sampled_from(NAMES), AMOUNTS.map(lambda a: a // 4)
            ),
            max_size=5,
        ),
        energy=st.dictionaries(
            st.sampled_from(NAMES), st.integers(1, 300).map(lambda k: 100 * k), max_size=3
        ),
        imbalance=st.sampled_from([0, 0, 0, 0, 0, 1, -1]),
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
        self.chain.seen[f"settle {'ok' if ok else 'refused'}"] += 1
        if ok:
            raw = sum(wh * self.reward_rate // 1000 for wh in energy.values())
            if raw > self.reward_cap:
                self.chain.seen["settle rewards scaled to the cap"] += 1
            self.settled.add(interval)
            for n in NAMES:
                self.escrow[n] += net[n]
            for n, reward in self.rewards_of(energy).items():
                self.unclaimed[n] += reward
                self.reward_supply += reward

    @precondition(lambda self: self.settled)
    @rule(sender=st.sampled_from(ACTORS), data=st.data())
    def settle_again(self, sender: str, data: st.DataObject) -> None:
        """An interval settled before, by anyone, with an empty batch: always refused."""
        interval = data.draw(st.sampled_from(sorted(self.settled)))
        args = [interval, b"\x09" * 32, [], b"\x00" * 32, b"\x00" * 32]
        assert not self.send(sender, self.chain.settlement, calldata(SETTLE, SETTLE_TYPES, args))

    # ------------------------------------------------------------------ administration

    @rule(
        sender=st.sampled_from(ACTORS),
        rate=st.sampled_from([0, 1, REWARD_RATE, 3 * REWARD_RATE]),
        cap=st.sampled_from([0, 1, 10**6, CAP, 10**12]),
    )
    def set_reward_policy(self, sender: str, rate: int, cap: int) -> None:
        data = calldata("set_reward_policy(uint256,uint256)", ["uint256", "uint256"], [rate, cap])
        ok = self.send(sender, self.chain.settlement, data)
        assert ok == (sender == "admin")
        self.chain.seen[f"set_reward_policy {'ok' if ok else 'refused'}"] += 1
        if ok:
            self.reward_rate, self.reward_cap = rate, cap

    @rule(sender=st.sampled_from(ACTORS), delay=st.sampled_from([0, DELAY, 3_600]))
    def set_withdrawal_delay(self, sender: str, delay: int) -> None:
        data = calldata("set_withdrawal_delay(uint256)", ["uint256"], [delay])
        ok = self.send(sender, self.chain.settlement, data)
        assert ok == (sender == "admin")
        self.chain.seen[f"set_withdrawal_delay {'ok' if ok else 'refused'}"] += 1
        if ok:
            self.delay = delay  # requests made before keep their time

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

    # ------------------------------------------------------------------ invariants

    @invariant()
    def ledger_matches_the_model(self) -> None:
        c = self.chain
        results = iter(c.batch(self.queries))

        def uints(n: int) -> list[int]:
            return [decode(["uint256"], next(results))[0] for _ in range(n)]

        supply, held, total_escrow, r_supply, r_held, total_rewards = uints(6)
        paused, rate, cap, delay = uints(4)
        (states,) = decode(["(uint256,uint256,uint256,uint256,uint256)[]"], next(results))
        wallets, reward_wallets, allowances, ready_at = (uints(len(HOLDERS)) for _ in range(4))
        roles = uints(len(ACTORS))

        # conservation: what was minted is in a wallet or in the contract
        assert supply == self.supply == sum(wallets) + held
        assert held == total_escrow + self.sent_to_contract
        assert total_escrow == sum(s[1] for s in states) == sum(self.escrow.values())
        assert r_supply == self.reward_supply == sum(reward_wallets) + r_held
        assert r_held == total_rewards + self.rewards_sent_to_contract
        assert total_rewards == sum(s[4] for s in states) == sum(self.unclaimed.values())
        # every wallet, escrow and unclaimed reward is the model's
        for name, state, wallet, reward_wallet, allowance, ready in zip(
            HOLDERS, states, wallets, reward_wallets, allowances, ready_at, strict=True
        ):
            index, escrow, available, pending, unclaimed = state
            assert index == self.index[name], name
            assert escrow == self.escrow[name] >= 0, name
            assert pending == self.pending[name] >= 0, name
            assert available == max(0, escrow - pending), name
            assert unclaimed == self.unclaimed[name] >= 0, name
            assert wallet == self.wallet[name] >= 0, name
            assert reward_wallet == self.reward_wallet[name] >= 0, name
            assert allowance == self.allowance[name] >= 0, name
            assert ready == self.ready_at[name], name
        assert bool(paused) == self.paused
        assert (rate, cap, delay) == (self.reward_rate, self.reward_cap, self.delay)
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
        holders = [self.address(h) for h in HOLDERS]

        def each(to: str, signature: str, types: list[str], args: list[list[Any]]) -> list[Any]:
            return [(to, calldata(signature, types, a)) for a in args]

        queries = [
            (c.token, calldata("totalSupply()", [], [])),
            (c.token, calldata(balance, ["address"], [c.settlement])),
            (c.settlement, calldata("total_escrow()", [], [])),
            (c.reward, calldata("totalSupply()", [], [])),
            (c.reward, calldata(balance, ["address"], [c.settlement])),
            (c.settlement, calldata("total_rewards()", [], [])),
            (c.settlement, calldata("paused()", [], [])),
            (c.settlement, calldata("reward_rate()", [], [])),
            (c.settlement, calldata("reward_cap()", [], [])),
            (c.settlement, calldata("withdrawal_delay()", [], [])),
            (c.settlement, calldata("account_states(address[])", ["address[]"], [holders])),
        ]
        queries += each(c.token, balance, ["address"], [[a] for a in holders])
        queries += each(c.reward, balance, ["address"], [[a] for a in holders])
        queries += each(
            c.token,
            "allowance(address,address)",
            ["address", "address"],
            [[a, c.settlement] for a in holders],
        )
        queries += each(
            c.settlement, "withdrawal_ready_at(address)", ["address"], [[a] for a in holders]
        )
        queries += each(
            c.settlement,
            "hasRole(bytes32,address)",
            ["bytes32", "address"],
            [[OPERATOR_ROLE, self.address(a)] for a in ACTORS],
        )
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
    chain.seen.clear()
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
    print(", ".join(f"{k}: {v}" for k, v in sorted(chain.seen.items())))
    assert full >= RUNS
    if RUNS >= 256:  # what the runs must have reached (a smaller local run may miss some)
        assert not [c for c in COVERED if not chain.seen[c]]


class ForgetsOutsidersWallets(Contracts):
    """A model that keeps only the participants' wallets (the old check's blind spot)."""

    def credit_wallet(self, who: str, amount: int) -> None:
        if who in NAMES:
            super().credit_wallet(who, amount)


class ForgetsTheWithdrawalDelay(Contracts):
    """A model in which a withdrawal request matures at once."""

    def matures_at(self, requested_at: int) -> int:
        return requested_at


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "model",
    [ForgetsOutsidersWallets, ForgetsTheWithdrawalDelay],
    ids=["a wallet outside the participants", "the withdrawal delay"],
)
def test_the_machine_reports_a_model_that_forgets(chain: Chain, model: type[Contracts]) -> None:
    """The invariants and expectations are strict enough to catch a model wrong in one place."""
    model.chain = chain
    chain.stats.clear()
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            model,
            settings=settings(
                max_examples=100,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                report_multiple_bugs=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    print(f"{model.__name__}: reported after {len(chain.stats)} run(s)")
