"""Governance against a model: random proposals, votes, queueing, executions and clock moves.

A hypothesis state machine drives the governor on the embedded chain and a plain-Python model
of the same community side by side, and after every step holds the chain to the model:

* each proposal's tallies equal the votes cast by accounts that were members at its
  snapshot (a vote from anyone else, a second vote, or one outside the voting period must
  revert);
* each proposal's state is the model's (quorum of the snapshot's members, for > against);
* a parameter and the member list change only when a proposal executes, and an execution
  before the proposal's delay has run out must revert;
* an execution whose action fails (admitting a member twice) reverts as a whole and leaves
  the proposal queued.

Every transaction on the embedded chain is mined in its own block, one second after the
block before (the machine first moves the clock ahead of the wall clock), so the model knows
the timestamp each transaction executes at: the latest block's plus one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from web3 import Web3

from adapters.chain import ChainClient, derive_account
from adapters.chain.embedded import embedded_web3
from adapters.chain.errors import TransactionReverted
from adapters.chain.governance import Action, Governance, ProposalState, Support, sign_ballot

VOTING_PERIOD_S = 3_600
DELAY_S = 300
QUORUM_BPS = 5_000
INITIAL = ("m0", "m1", "m2", "m3")
OUTSIDERS = ("o0", "o1")
ACCOUNTS = tuple(derive_account(label) for label in (*INITIAL, *OUTSIDERS))


@dataclass
class ModelProposal:
    proposer: str
    snapshot_members: frozenset[str]
    quorum: int
    vote_end: int
    kind: str
    arg: int | str
    ballots: dict[str, Support] = field(default_factory=dict)
    queued: bool = False
    eta: int = 0
    executed: bool = False
    canceled: bool = False

    def tally(self, support: Support) -> int:
        return sum(1 for s in self.ballots.values() if s is support)

    def state(self, now: int) -> ProposalState:
        if self.executed:
            return ProposalState.EXECUTED
        if self.canceled:
            return ProposalState.CANCELED
        if self.queued:
            return ProposalState.QUEUED
        if now < self.vote_end:
            return ProposalState.ACTIVE
        votes_for, votes_against = self.tally(Support.FOR), self.tally(Support.AGAINST)
        if len(self.ballots) >= self.quorum and votes_for > votes_against:
            return ProposalState.SUCCEEDED
        return ProposalState.DEFEATED


class _Chain:
    """One deployed community per test run, reset to its first state by ``evm_revert``."""

    w3: Web3
    gov: Governance
    snapshot_id: str

    @classmethod
    def get(cls) -> _Chain:
        if not hasattr(cls, "gov"):
            w3 = embedded_web3()
            now = w3.eth.get_block("latest")["timestamp"]
            w3.provider.make_request("testing_timeTravel", [now + 30 * 86_400])  # type: ignore[arg-type]
            operator = derive_account("operator")
            client = ChainClient(w3, operator)
            client.fund_eth(operator.address, 10**21)
            client.deploy_all()
            for account in ACCOUNTS:
                client.fund_eth(account.address, 10**19)
            gov = Governance(client.contracts)
            gov.deploy(
                members=[a.address for a in ACCOUNTS[: len(INITIAL)]],
                parameters={"community_fee_bps": 0},
                delay_s=DELAY_S,
                voting_period_s=VOTING_PERIOD_S,
                quorum_bps=QUORUM_BPS,
                pause_hours=1,
            )
            gov.hand_over()
            cls.w3, cls.gov = w3, gov
        cls.snapshot_id = cls.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
        return cls()

    def reset(self) -> None:
        self.w3.provider.make_request("evm_revert", [self.snapshot_id])  # type: ignore[arg-type]


class GovernanceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.chain = _Chain.get()
        self.gov = self.chain.gov
        self.w3 = self.chain.w3
        self.members = {a.address for a in ACCOUNTS[: len(INITIAL)]}
        self.fee = 0
        self.proposals: list[ModelProposal] = []

    def teardown(self) -> None:
        self.chain.reset()

    @initialize()
    def start(self) -> None:
        assert self.gov.member_count() == len(INITIAL)

    # -- helpers ------------------------------------------------------------------------------

    def next_timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"]) + 1

    def attempt(self, send: object, *, expect_ok: bool) -> None:
        """Run ``send``; it must succeed exactly when the model says so."""
        before = self.w3.eth.block_number
        if expect_ok:
            send()  # type: ignore[operator]  # a revert fails the test with its reason
        else:
            with pytest.raises(TransactionReverted):
                send()  # type: ignore[operator]
        assert self.w3.eth.block_number == before + 1, "one transaction, one block"

    def pick(
        self, index: int, prefer: ProposalState = ProposalState.ACTIVE
    ) -> tuple[int, ModelProposal]:
        """Half the time the newest proposal in state ``prefer`` (so that votes gather and
        passed proposals move on), else any proposal."""
        now = self.next_timestamp()
        preferred = [i for i, p in enumerate(self.proposals) if p.state(now) is prefer]
        i = preferred[-1] if index < 32 and preferred else index % len(self.proposals)
        return i + 1, self.proposals[i]

    def action(self, kind: str, arg: int | str) -> Action:
        if kind == "fee":
            return self.gov.set_parameter("community_fee_bps", int(arg))
        if kind == "admit":
            return self.gov.admit(str(arg))
        return self.gov.remove(str(arg))

    # -- rules --------------------------------------------------------------------------------

    @precondition(lambda self: len(self.proposals) < 5)
    @rule(
        who=st.sampled_from(ACCOUNTS),
        kind=st.sampled_from(["fee", "fee", "admit", "remove"]),
        fee=st.integers(0, 10_000),
        subject=st.sampled_from(ACCOUNTS),
    )
    def propose(self, who: object, kind: str, fee: int, subject: object) -> None:
        arg: int | str = fee if kind == "fee" else subject.address  # type: ignore[attr-defined]
        action = self.action(kind, arg)
        now = self.next_timestamp()
        is_member = who.address in self.members  # type: ignore[attr-defined]
        self.attempt(
            lambda: self.gov.propose(who, [action], f"{kind} {arg}"),  # type: ignore[arg-type]
            expect_ok=is_member,
        )
        if is_member:
            n = len(self.members)
            self.proposals.append(
                ModelProposal(
                    proposer=who.address,  # type: ignore[attr-defined]
                    snapshot_members=frozenset(self.members),
                    quorum=max(-(-QUORUM_BPS * n // 10_000), 1),
                    vote_end=now + VOTING_PERIOD_S,
                    kind=kind,
                    arg=arg,
                )
            )

    @precondition(lambda self: self.proposals)
    @rule(
        index=st.integers(0, 63),
        first=st.integers(0, len(ACCOUNTS) - 1),
        count=st.integers(1, len(ACCOUNTS)),
        supports=st.lists(st.sampled_from(Support), min_size=len(ACCOUNTS), max_size=len(ACCOUNTS)),
        by_signature=st.lists(st.booleans(), min_size=len(ACCOUNTS), max_size=len(ACCOUNTS)),
    )
    def vote(
        self,
        index: int,
        first: int,
        count: int,
        supports: list[Support],
        by_signature: list[bool],
    ) -> None:
        """``count`` accounts in a row (members, outsiders, some who voted already) vote on
        one proposal, each directly or by a relayed signature."""
        pid, p = self.pick(index)
        for k in range(count):
            who = ACCOUNTS[(first + k) % len(ACCOUNTS)]
            self.cast(pid, p, who, supports[k], by_signature=by_signature[k])

    def cast(
        self, pid: int, p: ModelProposal, who: object, support: Support, *, by_signature: bool
    ) -> None:
        address = who.address  # type: ignore[attr-defined]
        ok = (
            p.state(self.next_timestamp()) is ProposalState.ACTIVE
            and address in p.snapshot_members
            and address not in p.ballots
        )
        if by_signature:
            chain_id = self.w3.eth.chain_id
            signature = sign_ballot(who, chain_id, self.gov.governor.address, pid, support)  # type: ignore[arg-type]
            relayer = ACCOUNTS[-1]

            def send() -> object:
                return self.gov.vote_by_sig(relayer, pid, support, address, signature)
        else:

            def send() -> object:
                return self.gov.vote(who, pid, support)  # type: ignore[arg-type]

        self.attempt(send, expect_ok=ok)
        if ok:
            p.ballots[address] = support

    @precondition(lambda self: self.proposals)
    @rule(queue_index=st.integers(0, 63), execute_index=st.integers(0, 63))
    def move_on(self, queue_index: int, execute_index: int) -> None:
        """Anyone queues one proposal, then executes one (one rule, so that hypothesis's
        swarm testing, which leaves some rules out of an example, rarely leaves out both)."""
        self.queue(queue_index)
        self.execute(execute_index)

    def queue(self, index: int) -> None:
        pid, p = self.pick(index, ProposalState.SUCCEEDED)
        now = self.next_timestamp()
        ok = p.state(now) is ProposalState.SUCCEEDED
        self.attempt(lambda: self.gov.queue(ACCOUNTS[-1], pid), expect_ok=ok)
        if ok:
            p.queued, p.eta = True, now + DELAY_S

    def execute(self, index: int) -> None:
        pid, p = self.pick(index, ProposalState.QUEUED)
        now = self.next_timestamp()
        ready = p.state(now) is ProposalState.QUEUED and now >= p.eta
        valid = p.kind == "fee" or (p.kind == "admit") != (p.arg in self.members)
        ok = ready and valid
        self.attempt(lambda: self.gov.execute(ACCOUNTS[-1], pid), expect_ok=ok)
        if ok:
            p.executed = True
            if p.kind == "fee":
                self.fee = int(p.arg)
            elif p.kind == "admit":
                self.members.add(str(p.arg))
            else:
                self.members.discard(str(p.arg))

    @precondition(lambda self: self.proposals)
    @rule(index=st.integers(0, 63), who=st.sampled_from(ACCOUNTS))
    def cancel(self, index: int, who: object) -> None:
        pid, p = self.pick(index)
        address = who.address  # type: ignore[attr-defined]
        ok = p.state(self.next_timestamp()) is ProposalState.ACTIVE and address == p.proposer
        self.attempt(lambda: self.gov.cancel(who, pid), expect_ok=ok)  # type: ignore[arg-type]
        if ok:
            p.canceled = True

    @rule(seconds=st.sampled_from([1, DELAY_S - 1, DELAY_S, VOTING_PERIOD_S - 2, VOTING_PERIOD_S]))
    def advance(self, seconds: int) -> None:
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        self.w3.provider.make_request("testing_timeTravel", [now + seconds])  # type: ignore[arg-type]

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def tallies_and_states_match(self) -> None:
        if not self.proposals:
            return
        assert self.gov.proposal_count() == len(self.proposals)
        latest = int(self.w3.eth.get_block("latest")["timestamp"])
        for pid, p in enumerate(self.proposals, start=1):
            chain = self.gov.proposal(pid)
            assert (chain.votes_for, chain.votes_against, chain.votes_abstain) == (
                p.tally(Support.FOR),
                p.tally(Support.AGAINST),
                p.tally(Support.ABSTAIN),
            ), f"proposal {pid}"
            assert chain.quorum == p.quorum
            # a call may read the state at the latest block's time or the next one's; where
            # the two differ (a vote closing in that second) either answer is right
            expected = {p.state(latest), p.state(latest + 1)}
            assert chain.state in expected, f"proposal {pid}: {chain.state} not in {expected}"

    @invariant()
    def parameters_and_members_change_only_by_execution(self) -> None:
        assert self.gov.parameter("community_fee_bps") == self.fee
        for account in ACCOUNTS:
            assert self.gov.is_member(account.address) == (account.address in self.members)


GovernanceMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.slow
class TestGovernanceStateful(GovernanceMachine.TestCase):  # type: ignore[name-defined,misc]
    pass
