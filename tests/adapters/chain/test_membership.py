"""The community's membership contract (``Membership.vy``): one member, one vote, checkpointed.

New, unaudited code (issue 16): the examples pin its rules, and a stateful property test
holds every past block's answers to a model in Python over random admissions, removals and
blocks.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from web3 import Web3
from web3.contract.contract import Contract

from adapters.chain.artifact import load_artifact
from adapters.chain.embedded import embedded_web3
from adapters.chain.node import REVERT_ERRORS


def deploy(w3: Web3, owner: str, members: list[str]) -> Contract:
    artifact = load_artifact("Membership")
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx = factory.constructor(members).transact({"from": owner})
    address = w3.eth.get_transaction_receipt(tx)["contractAddress"]
    return w3.eth.contract(address=address, abi=artifact.abi)


def reason(fn: Any, sender: str) -> str:
    with pytest.raises(REVERT_ERRORS) as info:
        fn.transact({"from": sender})
    return str(info.value)


@pytest.fixture
def chain() -> tuple[Web3, list[str]]:
    w3 = embedded_web3()
    return w3, list(w3.eth.accounts)


def test_the_initial_members_are_the_only_members(chain: tuple[Web3, list[str]]) -> None:
    w3, (owner, alice, bob, carol, *_) = chain
    membership = deploy(w3, owner, [alice, bob])
    assert membership.functions.member_count().call() == 2
    assert membership.functions.is_member(alice).call()
    assert not membership.functions.is_member(carol).call()
    assert not membership.functions.is_member(owner).call()  # owning is not membership
    assert membership.functions.owner().call() == owner


def test_only_the_owner_admits_and_removes(chain: tuple[Web3, list[str]]) -> None:
    w3, (owner, alice, bob, carol, *_) = chain
    membership = deploy(w3, owner, [alice, bob])
    fns = membership.functions
    assert "ownable: caller is not the owner" in reason(fns.admit(carol), alice)
    assert "ownable: caller is not the owner" in reason(fns.remove(bob), alice)
    assert "already a member" in reason(fns.admit(alice), owner)
    assert "not a member" in reason(fns.remove(carol), owner)
    assert "zero address" in reason(fns.admit("0x" + "00" * 20), owner)
    fns.admit(carol).transact({"from": owner})
    fns.remove(bob).transact({"from": owner})
    assert [fns.is_member(a).call() for a in (alice, bob, carol)] == [True, False, True]
    assert fns.member_count().call() == 2


def test_a_duplicate_initial_member_is_refused(chain: tuple[Web3, list[str]]) -> None:
    w3, (owner, alice, *_) = chain
    with pytest.raises(REVERT_ERRORS, match="already a member"):
        deploy(w3, owner, [alice, alice])


def test_a_snapshot_counts_the_members_of_its_block(chain: tuple[Web3, list[str]]) -> None:
    """A member admitted after a proposal's snapshot block was not a member at it."""
    w3, (owner, alice, bob, carol, *_) = chain
    membership = deploy(w3, owner, [alice, bob])
    fns = membership.functions
    snapshot = w3.eth.block_number
    fns.admit(carol).transact({"from": owner})
    fns.remove(alice).transact({"from": owner})
    after = w3.eth.block_number
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    assert fns.member_count_at(snapshot).call() == 2
    assert not fns.was_member(carol, snapshot).call()
    assert fns.was_member(alice, snapshot).call()
    assert fns.was_member(carol, after).call()
    assert not fns.was_member(alice, after).call()
    assert fns.member_count_at(0).call() == 0  # before the deployment
    with pytest.raises(REVERT_ERRORS, match="not yet mined"):
        fns.member_count_at(w3.eth.block_number + 1).call()


def test_ownership_moves_and_the_old_owner_loses_it(chain: tuple[Web3, list[str]]) -> None:
    """Hand-over: after it only the new owner (the timelock) admits."""
    w3, (owner, alice, bob, _, timelock, *_) = chain
    membership = deploy(w3, owner, [alice])
    membership.functions.transfer_ownership(timelock).transact({"from": owner})
    assert "caller is not the owner" in reason(membership.functions.admit(bob), owner)
    membership.functions.admit(bob).transact({"from": timelock})
    assert membership.functions.is_member(bob).call()
    assert "renounce_ownership" not in {e.get("name") for e in membership.abi}


_CHAIN: list[Web3] = []


def _shared_chain() -> Web3:
    if not _CHAIN:
        _CHAIN.append(embedded_web3())
    return _CHAIN[0]


class MembershipMachine(RuleBasedStateMachine):
    """Random admissions, removals and mined blocks against a model of every block's members.

    The embedded chain mines one block per transaction, so each change is its own block;
    ``mine`` adds empty blocks between them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.w3 = _shared_chain()  # a new contract per example, on one chain
        self.accounts = list(self.w3.eth.accounts)
        self.owner, self.people = self.accounts[0], self.accounts[1:6]
        self.history: dict[int, frozenset[str]] = {}  # block -> members at its end

    @initialize(first=st.sets(st.integers(0, 4), max_size=8))
    def deploy(self, first: set[int]) -> None:
        self.start = start = self.w3.eth.block_number
        members = [self.people[i] for i in sorted(first)]
        self.contract = deploy(self.w3, self.owner, members)
        self.history[start] = frozenset()  # before the deployment
        self.checked_to = start
        self._record(frozenset(members))

    def _current(self) -> frozenset[str]:
        return self.history[max(self.history)]

    def _record(self, members: frozenset[str]) -> None:
        head = self.w3.eth.block_number
        last = self._current() if self.history else frozenset()
        for block in range(max(self.history) + 1, head):
            self.history[block] = last
        self.history[head] = members

    @rule(who=st.integers(0, 4))
    def admit(self, who: int) -> None:
        person = self.people[who]
        if person in self._current():
            with pytest.raises(REVERT_ERRORS, match="already a member"):
                self.contract.functions.admit(person).transact({"from": self.owner})
            return
        self.contract.functions.admit(person).transact({"from": self.owner})
        self._record(self._current() | {person})

    @rule(who=st.integers(0, 4))
    def remove(self, who: int) -> None:
        person = self.people[who]
        if person not in self._current():
            with pytest.raises(REVERT_ERRORS, match="not a member"):
                self.contract.functions.remove(person).transact({"from": self.owner})
            return
        self.contract.functions.remove(person).transact({"from": self.owner})
        self._record(self._current() - {person})

    @rule(who=st.integers(0, 4))
    def an_outsider_cannot_admit(self, who: int) -> None:
        outsider = self.accounts[9]
        with pytest.raises(REVERT_ERRORS, match="not the owner"):
            self.contract.functions.admit(self.people[who]).transact({"from": outsider})

    @rule(blocks=st.integers(1, 3))
    def mine(self, blocks: int) -> None:
        self.w3.provider.make_request("evm_mine", [blocks])  # type: ignore[arg-type]
        self._record(self._current())

    @precondition(lambda self: hasattr(self, "contract"))
    @invariant()
    def past_blocks_answer_as_the_model(self) -> None:
        """The blocks mined since the last look, and two older ones (looked up again after
        later changes added checkpoints), answer as the model; the present too."""
        self._record(self._current())
        head = self.w3.eth.block_number
        new = range(self.checked_to, head)
        since = range(self.start, head)
        older = random.Random(head).sample(since, min(2, len(since)))  # deterministic
        self.checked_to = head
        fns = self.contract.functions
        for block in sorted({*new, *older}):
            expected = self.history[block]
            assert fns.member_count_at(block).call() == len(expected), block
            for person in self.people:
                assert fns.was_member(person, block).call() == (person in expected), block
        now = self._current()
        assert fns.member_count().call() == len(now)
        assert all(fns.is_member(p).call() == (p in now) for p in self.people)


MembershipMachine.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_membership_matches_its_model = MembershipMachine.TestCase
