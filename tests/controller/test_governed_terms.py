"""Governed terms in the cycle: a vote moves the tariffs and sets the fee from the next interval.

Real everything: the demo's simulators, embedded chain and store, the community's contracts
deployed and handed over (``controller.demo_vote.set_up_community``), a proposal voted,
queued and executed on the chain. The cycle reads the registry when it clears an interval;
the interval cleared after the execution uses the governed tariff bounds and fee, its record
names the registry block and the proposal, and ``audit verify`` re-checks all of it against
the registry. Tampered records are caught; an unreadable registry is recorded, not hidden.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from test_intake_cycle import Clock, _intake, _order

from adapters.chain.accounts import derive_account
from adapters.chain.errors import ChainError
from adapters.chain.governance import Support, registry_reader
from adapters.chain.node import advance_dev_clock
from adapters.chain.typed_data import MessageKind, signed_payload
from controller.audit import verify_gate_chain, verify_governance
from controller.demo import DemoRuntime, demo_runtime
from controller.demo_vote import (
    DELAY_S,
    PAUSE_HOURS,
    VOTING_PERIOD_S,
    Community,
    set_up_community,
)
from controller.intake import IntakeRefused
from controller.scheduler import Event, EventKind, events_after, run_event
from market.domain import Interval

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def enact(community: Community, actions: list[Any]) -> int:
    """Propose, vote (six members for), queue and execute ``actions``; the proposal's id."""
    gov, members = community.gov, list(community.members.values())
    pid, _ = gov.propose(members[0], actions, "test")
    for member in members[:6]:
        gov.vote(member, pid, Support.FOR)
    advance_dev_clock(community.client.w3, VOTING_PERIOD_S)
    gov.queue(community.client.operator, pid)
    advance_dev_clock(community.client.w3, DELAY_S)
    gov.execute(community.client.operator, pid)
    return pid


def records_of(rt: DemoRuntime) -> dict[int, dict[str, Any]]:
    return {int(r["interval_id"]): r["record"] for r in rt.store.audit_records()}


def test_a_voted_change_applies_from_the_next_interval_and_is_audited(tmp_path: Path) -> None:
    with demo_runtime(tmp_path) as rt:
        community = set_up_community(rt.client, rt.site, rt.accounts)
        rt.cycle.governed = community.gov.governed_values
        rt.governed_at = registry_reader(rt.client.contracts)
        gov, site = community.gov, rt.site
        rt.tick(0)  # interval 0: the site's terms
        pid = enact(
            community,
            [
                gov.set_parameter("import_tariff_max", site.import_price - 50_000),
                gov.set_parameter("export_tariff_min", site.export_price + 10_000),
                gov.set_parameter("community_fee_bps", 200),
            ],
        )
        report = rt.tick(1)  # interval 1: cleared after the execution
        assert report.cleared is not None
        rt.tick(2)
        rt.tick(3, clear_next=False)
        records = records_of(rt)
        first, second = (records[int(rt.boundary(k).timestamp())] for k in (0, 1))

        assert first["params"]["import_price"] == site.import_price
        assert first["params"]["community_fee_bps"] == 0
        assert "community_fee_bps" not in first["settlement"]

        params = second["params"]
        governance = params["governance"]
        assert params["import_price"] == site.import_price - 50_000  # lowered to the maximum
        assert params["export_price"] == site.export_price + 10_000  # raised to the minimum
        assert params["community_fee_bps"] == 200
        assert governance["values"]["community_fee_bps"]["proposal"] == pid
        assert governance["values"]["gate_closure_s"]["proposal"] is None  # set at deployment
        assert governance["registry"] == gov.parameters.address
        assert any("lowered to the governed maximum" in n for n in governance["notes"])
        fees = {ln["participant"]: ln["fee_amount"] for ln in second["settlement"]["lines"]
                if ln.get("fee_amount")}  # fmt: skip
        assert fees, "sellers paid the fee"
        assert second["settlement"]["community_fee_bps"] == 200
        # settlement used the recorded (governed) tariffs for imbalance
        assert second["settlement"]["import_price"] == site.import_price - 50_000

        verified = rt.verify()
        assert verified["problems"] == []
        assert verified["verified"] == verified["records"] == 3

        # tampered records are caught, each with its reason
        def problems(edit: Any) -> list[str]:
            record = copy.deepcopy(second)
            edit(record)
            return verify_governance(record, registry_reader(rt.client.contracts))

        def lower_value(r: dict[str, Any]) -> None:
            r["params"]["governance"]["values"]["community_fee_bps"]["value"] = 0

        def cheaper_fee(r: dict[str, Any]) -> None:
            seller = next(ln for ln in r["settlement"]["lines"] if ln.get("fee_amount"))
            seller["fee_amount"] -= 1

        def site_tariff(r: dict[str, Any]) -> None:
            r["params"]["import_price"] = site.import_price

        def other_block(r: dict[str, Any]) -> None:
            r["params"]["governance"]["block"] = first["params"]["governance"]["block"]

        assert problems(lambda r: None) == []
        assert "the registry at block" in " ".join(problems(lower_value))
        assert "fees charged" in " ".join(problems(cheaper_fee))
        assert "cleared with" in " ".join(problems(site_tariff))
        assert "the registry at block" in " ".join(problems(other_block))


def node_down() -> Any:
    msg = "connection refused"
    raise ChainError(msg)


def test_an_unreadable_registry_is_recorded_and_the_last_values_apply(tmp_path: Path) -> None:
    with demo_runtime(tmp_path) as rt:
        community = set_up_community(rt.client, rt.site, rt.accounts)
        rt.governed_at = registry_reader(rt.client.contracts)
        rt.cycle.governed = node_down  # before any read: the site's terms, no fee
        rt.tick(0)
        rt.cycle.governed = community.gov.governed_values
        rt.tick(1)
        rt.cycle.governed = node_down  # after a read: that read's values
        rt.tick(2)
        rt.tick(3, clear_next=False)
        records = records_of(rt)
        never, read, stale = (records[int(rt.boundary(k).timestamp())]["params"] for k in (0, 1, 2))
        assert "connection refused" in never["governance"]["read_error"]
        assert never["governance"]["applied"]["community_fee_bps"] == 0
        assert never["import_price"] == rt.site.import_price
        assert "read_error" not in read["governance"]
        assert "connection refused" in stale["governance"]["read_error"]
        assert "the values of block" in stale["governance"]["read_error"]
        assert stale["governance"]["block"] == read["governance"]["block"]
        assert stale["governance"]["values"] == read["governance"]["values"]
        assert rt.verify()["problems"] == []


@pytest.mark.parametrize("wired", [True, False])
def test_an_expired_pause_is_lifted_at_the_next_boundary(tmp_path: Path, wired: bool) -> None:
    """The operator's emergency pause holds settlements back for the governed hours; at the
    first boundary after it expired the cycle lifts it and sends them. Without the lift
    wired (the fault) they stay held back."""
    with demo_runtime(tmp_path) as rt:
        community = set_up_community(rt.client, rt.site, rt.accounts)
        gov = community.gov
        if wired:
            rt.cycle.lift_expired_pause = partial(gov.lift_if_expired, rt.client.operator)
        rt.tick(0)
        gov.pause(rt.client.operator)
        held = rt.tick(1)  # interval 0 settles on paper; the chain refuses it while paused
        assert [s.outcome for s in held.settlements] == [None]
        assert "paused" in str(held.settlements[0].error)
        advance_dev_clock(rt.client.w3, PAUSE_HOURS * 3600)
        after = rt.tick(2)
        sent = {s.interval.interval_id: s.outcome is not None for s in after.settlements}
        expected = {int(rt.boundary(k).timestamp()): wired for k in (0, 1)}
        assert sent == expected
        assert rt.client.is_paused() is not wired


def test_a_voted_gate_closure_moves_the_gates_of_the_intervals_after_the_next(
    tmp_path: Path,
) -> None:
    """The governed gate closure is read when interval 1 is cleared and applies from 2 on:
    the scheduler clears 2 at it, the intake refuses orders for 2 after it (the site file's
    gate, 0 s, would still be open), the records state it and ``audit verify`` re-checks it."""
    with demo_runtime(tmp_path) as rt:
        community = set_up_community(rt.client, rt.site, rt.accounts)
        rt.cycle.governed = community.gov.governed_values
        rt.governed_at = registry_reader(rt.client.contracts)
        length = rt.site.interval_s
        lead = length // 3
        assert rt.site.gate_closure_s == 0
        rt.tick(0)
        pid = enact(community, [community.gov.set_parameter("gate_closure_s", lead)])
        assert rt.cycle.gate_closure_s == 0  # executed, but no clearing has read it yet
        rt.tick(1)  # interval 1 is cleared (at its old gate) and reads the new value
        assert rt.cycle.gate_closure_s == lead
        one, two = (Interval(start=rt.boundary(k), length_s=length) for k in (1, 2))
        assert rt.cycle.gate_closure(one) == one.start  # as it was when 1 was cleared
        gate = two.start - timedelta(seconds=lead)
        assert rt.cycle.gate_closure(two) == gate

        # the scheduler now plans a clearing at the governed gate closure
        planned = list(islice(events_after(rt.boundary(1), length, rt.cycle.gate_closure_s), 2))
        assert planned == [
            Event(gate, EventKind.CLEAR, two.start),
            Event(two.start, EventKind.BOUNDARY, two.start),
        ]

        # the intake closes interval 2's book at the governed gate
        clock = Clock(gate - timedelta(seconds=1))
        intake, where = _intake(rt, clock)
        bob = derive_account("bob")

        def post(nonce: int) -> Any:
            order = _order("bob", two.interval_id, nonce)
            return intake.submit(signed_payload(MessageKind.ORDER, order, bob, **where))

        placed = post(1)
        clock.at = gate + timedelta(seconds=1)  # before interval 2 starts, after its gate
        with pytest.raises(IntakeRefused) as info:
            post(2)
        assert info.value.code == "gate_closed"

        cleared = run_event(rt.cycle, planned[0])  # the clearing at the governed gate
        assert [r.interval for r in cleared] == [two]  # type: ignore[union-attr]
        assert any(placed.digest in o.order_id for o in cleared[0].book.orders)  # type: ignore[union-attr]
        rt.tick(2, clear_next=False)  # the boundary: reads and settles 1 only
        rt.cycle.clear_at_gate(Interval(start=rt.boundary(3), length_s=length))
        rt.tick(3, clear_next=False)

        records = records_of(rt)
        first, second = (records[int(rt.boundary(k).timestamp())] for k in (1, 2))
        assert first["params"]["gate_closure_s"] == 0
        assert first["params"]["next_gate_closure_s"] == lead
        assert first["params"]["governance"]["values"]["gate_closure_s"]["proposal"] == pid
        assert second["params"]["gate_closure_s"] == lead
        verified = rt.verify()
        assert verified["problems"] == []
        assert verified["verified"] == verified["records"] == 3

        # a record whose book closed at another gate than the one announced is caught, and
        # an announcement the registry did not make too
        moved = copy.deepcopy(second)
        moved["params"]["gate_closure_s"] = 0
        assert "gate closure: its book closed 0 s" in " ".join(verify_gate_chain(first, moved))
        assert verify_gate_chain(first, second) == []
        announced = copy.deepcopy(first)
        announced["params"]["next_gate_closure_s"] = 0
        announced["params"]["governance"]["applied"]["next_gate_closure_s"] = 0
        found = " ".join(verify_governance(announced, registry_reader(rt.client.contracts)))
        assert "applied" in found
        assert "next_gate_closure_s" in found


def test_a_governed_gate_closure_the_intervals_cannot_honour_is_not_applied(
    tmp_path: Path,
) -> None:
    with demo_runtime(tmp_path) as rt:
        community = set_up_community(rt.client, rt.site, rt.accounts)
        rt.cycle.governed = community.gov.governed_values
        rt.governed_at = registry_reader(rt.client.contracts)
        length = rt.site.interval_s
        rt.tick(0)
        enact(community, [community.gov.set_parameter("gate_closure_s", length)])
        rt.tick(1)
        assert rt.cycle.gate_closure_s == rt.site.gate_closure_s
        rt.tick(2)
        rt.tick(3, clear_next=False)
        record = records_of(rt)[int(rt.boundary(1).timestamp())]
        assert record["params"]["next_gate_closure_s"] == rt.site.gate_closure_s
        notes = " ".join(record["params"]["governance"]["notes"])
        assert f"governed gate_closure_s {length} s is not below the site's interval_s" in notes
        assert rt.verify()["problems"] == []
