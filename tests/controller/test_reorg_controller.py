"""Reorganisations seen by the controller's own code, checked in the database it wrote.

The adapter's reorg tests (``tests/adapters/chain/test_chain_anvil.py``) drive the chain
client and write the store themselves. Here the controller does everything: the site runs on
an anvil node through :func:`controller.wiring.build_runtime` (``rpc`` backend, its operator
key from the environment, as ``peergrid run`` builds it), its ticks are
:func:`controller.scheduler.run_tick` (the scheduler's own function) at simulated boundaries,
with the devices as Modbus simulators on 127.0.0.1. The test only bends the chain (mines,
``anvil_reorg``) and then reads the database (``sqlite3``, read-only) and the chain:

* a reorganisation inside the site's finality depth (``confirmations = 3``) drops the block
  that settled an interval while the tick waits for it to become final: the controller
  notices, broadcasts the same transaction again, and records the block it finally landed
  in; the database, the audit record and the chain agree, the interval is paid once and the
  operator's nonces have no gap (:func:`killharness.check_exactly_once`);
* a reorganisation deeper than the finality depth (``confirmations = 0``), after the
  controller recorded the settlement as final: right after it, the database says settled
  and the chain does not, and the checker and ``peergrid audit verify`` (which compares the
  chain's ``Settled`` events with the records both ways) both report it. The controller
  re-checks recent settlements (:meth:`controller.cycle.Cycle.recheck_settled`) at the next
  tick, or at start-up after a restart: the lost one goes back to ``intent`` and is sent
  again, and its operator nonce is re-synchronised to the node's (the dropped transaction
  left the cached nonce one ahead; :class:`adapters.chain.sender.TxSender`), so the interval
  is paid once, with no nonce gap and no filler transaction. The same run with the re-check
  turned off shows the checker reporting the interval as lost.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from killharness import (
    KillSite,
    Simulators,
    audit_verify,
    check_exactly_once,
    make_site,
    read_only,
    wait_until,
)

from adapters.chain.backends import AnvilNode
from controller.config import read_site
from controller.cycle import Cycle
from controller.scheduler import run_tick
from controller.wiring import Runtime, build_runtime

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]

T0 = datetime(2026, 6, 21, 10, 0, tzinfo=UTC)
INTERVAL_S = 900


def rpc(w3: Any, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(method, list(params))
    assert "error" not in response, response
    return response["result"]


class Background:
    """Run ``fn`` in a thread; ``result()`` re-raises what it raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as exc:  # handed to the test thread by result()
            self.error = exc

    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self, timeout: float = 60.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "background call did not finish"
        if self.error is not None:
            raise self.error
        return self.value


def mining(w3: Any, call: Background) -> Callable[[], bool]:
    """A condition for :func:`wait_until` that mines a block each time it is asked."""

    def mine() -> bool:
        rpc(w3, "anvil_mine", 1)
        return call.done()

    return mine


@dataclass
class Controller:
    """The site, its simulators and the runtime ``peergrid run`` would build."""

    site: KillSite
    sims: Simulators
    runtime: Runtime

    def tick(self, k: int) -> Any:
        boundary = T0 + timedelta(seconds=INTERVAL_S * k)
        self.sims.advance(boundary)
        return run_tick(self.runtime.cycle, boundary)

    def restart(self) -> None:
        """Close the runtime and build it again, as a restarted ``peergrid run`` does."""
        self.runtime.close()
        self.runtime = build_runtime(read_site(self.site.site, runnable=True))
        self.runtime.cycle.resume_pending()


@contextmanager
def controller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, confirmations: int
) -> Iterator[Controller]:
    """A site on its own anvil node, wired as ``peergrid run`` wires it."""
    with AnvilNode() as node, Simulators(start_at=T0) as sims:
        site = make_site(
            tmp_path, node.url, sims, confirmations=confirmations, deploy_with_cli=False
        )
        monkeypatch.setenv("PEERGRID_OPERATOR_KEY", site.env["PEERGRID_OPERATOR_KEY"])
        c = Controller(site, sims, build_runtime(read_site(site.site, runnable=True)))
        try:
            yield c
        finally:
            c.runtime.close()


def settlement_row(db: Path, interval: int) -> dict[str, Any]:
    with read_only(db) as conn:
        row = conn.execute("select * from settlements where interval_id = ?", (interval,))
        found = row.fetchone()
    assert found is not None
    return dict(found)


def audit_record(db: Path, interval: int) -> dict[str, Any]:
    with read_only(db) as conn:
        found = conn.execute(
            "select record from audit where interval_id = ?", (interval,)
        ).fetchone()
    assert found is not None
    record = found[0]
    return json.loads(record) if isinstance(record, str) else record


def test_a_reorg_inside_the_finality_depth_is_resent_and_recorded_by_the_controller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with controller(tmp_path, monkeypatch, confirmations=3) as c:
        chain = c.site.client()
        w3 = chain.w3
        rpc(w3, "anvil_mine", 3)  # the deposits are final
        assert c.tick(0) is not None  # clears interval 0
        interval = int(T0.timestamp())
        tick = Background(lambda: c.tick(1))  # settles interval 0, waits for 3 blocks
        wait_until(lambda: chain.is_settled(interval), 120, "the settlement to be mined")
        (dropped,) = chain.settled_events(interval_id=interval)
        rpc(w3, "anvil_mine", 1)  # one block on top: still inside the depth of 3
        assert not tick.done()
        head = w3.eth.block_number
        rpc(w3, "anvil_reorg", head - dropped.block_number + 1, [])  # drop the settling block
        assert (
            not chain.is_settled(interval) or chain.settled_block(interval) != dropped.block_number
        )

        wait_until(mining(w3, tick), 120, "the tick to see its settlement final", poll=0.05)
        report = tick.result()
        assert report is not None
        assert "no longer canonical (reorganisation)" in caplog.text

        # the chain: settled once, by the same signed transaction, in a later block
        (event,) = chain.settled_events(interval_id=interval)
        assert event.tx_hash == dropped.tx_hash
        assert event.block_number > dropped.block_number
        # the database as the controller wrote it
        row = settlement_row(c.site.db, interval)
        assert (row["state"], row["tx_hash"], row["block_number"]) == (
            "settled",
            event.tx_hash,
            event.block_number,
        )
        record = audit_record(c.site.db, interval)
        assert record["chain"]["tx_hash"] == event.tx_hash
        assert record["chain"]["block_number"] == event.block_number
        assert record["settlement"]["batch_id"] == event.batch_id
        # and everything else: once, no nonce gap, nothing waiting
        verdict = check_exactly_once(c.site.db, chain, c.site.operator.address, INTERVAL_S)
        assert verdict.ok, verdict.problems
        assert verdict.counts["settled_chain"] == verdict.counts["settled_db"] == 1

        # the next tick goes on from there
        rpc(w3, "anvil_mine", 3)
        later = Background(lambda: c.tick(2))
        wait_until(mining(w3, later), 120, "the next tick", poll=0.05)
        assert later.result() is not None
        verdict = check_exactly_once(c.site.db, chain, c.site.operator.address, INTERVAL_S)
        assert verdict.ok, verdict.problems
        assert verdict.counts["settled_chain"] == 2


def deep_reorg(c: Controller) -> int:
    """Settle interval 0 (recorded as final at once), then drop its block; its id."""
    chain = c.site.client()
    assert c.tick(0) is not None
    assert c.tick(1) is not None
    interval = int(T0.timestamp())
    (event,) = chain.settled_events(interval_id=interval)
    row = settlement_row(c.site.db, interval)
    assert (row["state"], row["tx_hash"]) == ("settled", event.tx_hash)
    w3 = chain.w3
    rpc(w3, "anvil_reorg", w3.eth.block_number - event.block_number + 1, [])
    assert not chain.is_settled(interval)
    return interval


def test_a_reorg_deeper_than_the_finality_depth_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded as final (``confirmations = 0``), then dropped: the checks say so."""
    with controller(tmp_path, monkeypatch, confirmations=0) as c:
        interval = deep_reorg(c)
        verdict = check_exactly_once(
            c.site.db, c.site.client(), c.site.operator.address, INTERVAL_S
        )
        assert f"interval {interval}: database says settled, no Settled event on-chain" in (
            verdict.problems
        )
        code, doc, err = audit_verify(c.site, reclear=False)
        assert code == 1, err
        assert any(
            f"(id {interval})" in p and "the chain has no settlement" in p for p in doc["problems"]
        ), doc["problems"]


@pytest.mark.parametrize("recheck", [True, False], ids=["recheck", "no-recheck"])
@pytest.mark.parametrize("restart", [False, True], ids=["next-tick", "restart"])
def test_a_deep_reorg_is_recovered_by_the_recheck_of_recent_settlements(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    restart: bool,
    recheck: bool,
) -> None:
    """The dropped interval is settled again, once; without the re-check it stays lost."""
    caplog.set_level(logging.WARNING)
    if not recheck:
        monkeypatch.setattr(Cycle, "recheck_settled", lambda _self: [])
    with controller(tmp_path, monkeypatch, confirmations=0) as c:
        interval = deep_reorg(c)
        if restart:
            c.restart()  # nonce reconciled; recent settlements re-checked; intents sent
        assert c.tick(2) is not None  # settles interval 1 (and, re-opened, interval 0)
        chain = c.site.client()
        verdict = check_exactly_once(c.site.db, chain, c.site.operator.address, INTERVAL_S)
        if not recheck:
            # the fault the re-check repairs, as the checker sees it
            assert f"interval {interval}: database says settled, no Settled event on-chain" in (
                verdict.problems
            )
            assert not chain.is_settled(interval)
            return
        assert verdict.ok, verdict.problems
        assert verdict.counts["settled_chain"] == verdict.counts["settled_db"] == 2
        # every operator transaction settled an interval: no nonce gap was filled
        assert verdict.counts["operator_txs"] == 2
        assert "re-opened: reorganisation: the chain no longer has this settlement" in (caplog.text)
        if not restart:  # the restart reconciles the nonce itself
            assert "continuing at the node's nonce" in caplog.text
        assert "filling it with empty self-transfers" not in caplog.text
        # the database as the controller wrote it, and its audit record
        (event,) = chain.settled_events(interval_id=interval)
        row = settlement_row(c.site.db, interval)
        assert (row["state"], row["tx_hash"], row["block_number"], row["batch_id"]) == (
            "settled",
            event.tx_hash,
            event.block_number,
            event.batch_id,
        )
        record = audit_record(c.site.db, interval)
        assert record["chain"]["tx_hash"] == event.tx_hash
        assert record["chain"]["block_number"] == event.block_number
        assert record["settlement"]["batch_id"] == event.batch_id
        assert record["error"] == ""
        code, doc, err = audit_verify(c.site, reclear=False)
        assert code == 0, (err, doc)
