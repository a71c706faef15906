"""The whole cycle on real loopback Modbus simulators and the embedded EVM chain.

The tests on ``demo_runtime`` run on both stores: SQLite and PostgreSQL (``database_url``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.demo import demo_runtime, run_demo
from market.domain import GRID, ClearingStatus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_demo_settles_every_interval_and_conserves_tokens(tmp_path: Path) -> None:
    report = run_demo(intervals=3, out_dir=tmp_path)
    assert report["all_settled"]
    assert len(report["intervals"]) == 3
    for row in report["intervals"]:
        assert row["status"] in {"cleared", "no_crossing", "blocked"}
        assert row["settlement_tx"].startswith("0x")
        assert row["gas_used"] > 0
        assert row["vm_min_pu"] >= 0.95 - 0.001
    assert report["conservation"]["holds"]
    audit = report["audit"]
    assert (audit["records"], audit["verified"], audit["problems"], audit["accepted"]) == (
        3,
        3,
        [],
        [],
    )
    # every tick read every device, and verified all but the one reading the demo forges
    # (judy-pv's, at the boundary before the last: named in the two records it bounds)
    assert [t["readings_ok"] for t in report["ticks"]] == [15, 15, 14, 15]
    assert len(audit["unverified"]) == 2
    assert all(
        "judy-pv at 2026-06-21T08:00Z: signature not valid" in u for u in audit["unverified"]
    )
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["conservation"] == report["conservation"]
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 3


def test_dead_meter_never_stops_the_cycle(tmp_path: Path, database_url: str) -> None:
    with demo_runtime(tmp_path, database=database_url) as rt:
        rt.tick(0)
        rt.sims["bob-meter"].stop()
        report = rt.tick(1)
        assert any(m.startswith("bob-meter") for m in report.readings_missing)
        assert report.readings_ok == 14
        assert report.settled is not None
        assert report.settled.outcome is not None  # interval 0 still settled on-chain
        bob = next(ln for ln in report.settled.batch.lines if ln.participant == "bob")
        assert not bob.metered
        assert bob.imbalance_wh == 0
        assert "unmetered" in bob.reason
        assert report.cleared is not None
        assert report.cleared.result.status is ClearingStatus.CLEARED
        # bob's demand has no forecast without a reading? the demo forecasts from profiles,
        # so he still bids; the cycle went on either way.
        final = rt.tick(2, clear_next=False)
        assert final.settled is not None
        assert final.settled.outcome is not None
        assert rt.conservation()["holds"]


def test_crash_after_send_never_pays_twice(tmp_path: Path, database_url: str) -> None:
    """The transaction went out but the process died before recording the receipt.

    On restart the intent is still pending; resuming asks the chain, which already has the
    interval: nothing is sent again and balances do not move.
    """
    with demo_runtime(tmp_path, database=database_url) as rt:
        rt.tick(0)
        real_mark = rt.store.mark_settled
        rt.store.mark_settled = lambda *a, **k: None  # the crash: receipt never recorded
        report = rt.tick(1, clear_next=False)
        rt.store.mark_settled = real_mark
        assert report.settled is not None
        assert report.settled.outcome is not None
        interval_id = report.settled.interval.interval_id
        assert rt.store.settlement(interval_id)["state"] == "intent"
        before = rt.balances()
        block = rt.client.w3.eth.block_number

        resumed = rt.cycle.resume_pending()
        assert [r.interval.interval_id for r in resumed] == [interval_id]
        assert resumed[0].outcome is not None
        assert resumed[0].outcome.status == "already_settled"
        assert rt.client.w3.eth.block_number == block  # no transaction sent
        assert rt.balances() == before
        assert rt.store.settlement(interval_id)["state"] == "settled"
        assert rt.cycle.resume_pending() == []


def test_an_interval_is_never_cleared_twice(tmp_path: Path, database_url: str) -> None:
    with demo_runtime(tmp_path, database=database_url) as rt:
        first = rt.tick(0)
        assert first.cleared is not None
        again = rt.cycle.tick(rt.boundary(0))
        assert again.cleared is None


def test_grid_trades_carry_the_tariffs(tmp_path: Path, database_url: str) -> None:
    with demo_runtime(tmp_path, database=database_url) as rt:
        report = rt.tick(0)
        assert report.cleared is not None
        grid_trades = [t for t in report.cleared.result.trades if GRID in {t.buyer, t.seller}]
        assert grid_trades  # 07:30: the community imports
        for t in grid_trades:
            if t.seller == GRID:
                assert t.seller_price == rt.site.import_price
            if t.buyer == GRID:
                assert t.buyer_price == rt.site.export_price


class FlakySettler:
    """Fails the first ``failures`` submissions, then passes them to the real settler."""

    def __init__(self, real, failures: int) -> None:
        self.real = real
        self.failures = failures

    def submit(self, batch):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("node unreachable")
        return self.real.submit(batch)


def settled_intervals(rt) -> dict[int, str]:
    return {
        row["interval_id"]: (rt.store.settlement(row["interval_id"]) or {}).get("state", "none")
        for row in rt.store.interval_rows()
    }


def test_a_failing_clear_is_a_recorded_outcome_and_settlement_goes_on(
    tmp_path: Path, database_url: str
) -> None:
    with demo_runtime(tmp_path, database=database_url) as rt:
        rt.tick(0)
        real = rt.cycle.base_grid_for

        def broken(interval):
            raise RuntimeError("grid data unavailable")

        rt.cycle.base_grid_for = broken
        report = rt.tick(1)
        rt.cycle.base_grid_for = real
        assert report.cleared is not None
        assert report.cleared.result.status is ClearingStatus.SOLVER_ERROR
        assert "grid data unavailable" in report.cleared.result.reason
        # nothing acted on: every inverter free, battery idle
        assert all(
            sp.p_w == next(d.rated_w for d in rt.site.devices if d.id == sp.device_id)
            for sp in report.cleared.setpoints
            if sp.kind.value == "pv_limit"
        )
        assert report.settled is not None
        assert report.settled.outcome is not None  # interval 0 settled regardless
        rt.tick(2, clear_next=False)
        assert set(settled_intervals(rt).values()) == {"settled"}
        assert rt.conservation()["holds"]


def test_a_missed_boundary_still_settles_every_interval(tmp_path: Path, database_url: str) -> None:
    with demo_runtime(tmp_path, database=database_url) as rt:
        rt.tick(0)
        rt.tick(1)
        for sim in rt.sims.values():  # time passes, nobody reads at boundary 2
            sim.advance(rt.boundary(2))
        rt.tick(3)
        rt.tick(4, clear_next=False)
        states = settled_intervals(rt)
        assert len(states) == 3  # intervals 0, 1 and 3: nobody cleared 2 (its boundary was missed)
        assert set(states.values()) == {"settled"}
        # the interval that ended at the missed boundary is settled as cleared, flagged
        interval_1 = int(rt.boundary(1).timestamp())
        batch = rt.store.settlement(interval_1)["batch"]
        assert all(not line["metered"] for line in batch["lines"])
        assert all("no reading" in line["reason"] for line in batch["lines"])
        assert rt.conservation()["holds"]


def test_a_failed_settlement_is_retried_at_the_next_tick(tmp_path: Path, database_url: str) -> None:
    with demo_runtime(tmp_path, database=database_url) as rt:
        rt.cycle.settler = FlakySettler(rt.cycle.settler, failures=1)
        rt.tick(0)
        first = rt.tick(1)
        assert first.settled is not None
        assert first.settled.outcome is None
        assert "node unreachable" in first.settled.error
        second = rt.tick(2, clear_next=False)
        assert {s.interval.interval_id for s in second.settlements if s.outcome} == {
            int(rt.boundary(0).timestamp()),
            int(rt.boundary(1).timestamp()),
        }
        assert set(settled_intervals(rt).values()) == {"settled"}


def test_an_abandoned_claim_is_closed_and_settled(tmp_path: Path, database_url: str) -> None:
    with demo_runtime(tmp_path, database=database_url) as rt:
        rt.tick(0)
        crashed = int(rt.boundary(1).timestamp())
        assert rt.store.claim_interval(crashed, rt.site.interval_s)  # died before a result
        for sim in rt.sims.values():
            sim.advance(rt.boundary(1))
        rt.cycle.tick(rt.boundary(1), clear_next=False)
        rt.tick(2)
        rt.tick(3, clear_next=False)
        rows = {r["interval_id"]: r for r in rt.store.interval_rows()}
        assert rows[crashed]["status"] == "abandoned"
        assert set(settled_intervals(rt).values()) == {"settled"}


def test_demo_settles_on_anvil_too(tmp_path: Path) -> None:
    """The same cycle through a real node: anvil from npm, started and stopped by PeerGrid."""
    report = run_demo(intervals=3, out_dir=tmp_path, chain="anvil")
    assert report["chain"] == "anvil"
    assert report["all_settled"]
    assert report["conservation"]["holds"]
    assert report["audit"]["problems"] == []
    assert report["rewards"]  # producers earned reward tokens for verified local energy
    assert (tmp_path / "anvil-state.json").exists()
