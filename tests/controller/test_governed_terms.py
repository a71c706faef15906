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
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from adapters.chain.errors import ChainError
from adapters.chain.governance import Support, registry_reader
from adapters.chain.node import advance_dev_clock
from controller.audit import verify_governance
from controller.demo import DemoRuntime, demo_runtime
from controller.demo_vote import (
    DELAY_S,
    PAUSE_HOURS,
    VOTING_PERIOD_S,
    Community,
    set_up_community,
)

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
