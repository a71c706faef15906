"""The fence of a fleet's step: nothing is sent or written once the hold is lost.

The demo's cycle (real Modbus simulators, the embedded chain) with ``Cycle.fence`` set: a
fence that raises :class:`LostSite` stops the tick before the settlement transaction, or
before the first setpoint; the scheduler does not swallow it, and the tick stays ``running``
for the site's next holder to close as crashed. Deleting either ``fence()`` call in
``controller/cycle.py`` makes a test here fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.demo import demo_runtime
from controller.errors import LostSite
from controller.scheduler import run_tick
from market.domain import Setpoint


class Recording:
    """A writer that records what reaches the device, then writes it."""

    def __init__(self, inner: Any, log: list[Setpoint]) -> None:
        self.inner, self.log = inner, log

    def write(self, setpoint: Setpoint) -> Any:
        self.log.append(setpoint)
        return self.inner.write(setpoint)


class Fence:
    """Lets ``allow`` checks pass, then raises LostSite; counts the checks."""

    def __init__(self, allow: int) -> None:
        self.allow, self.calls = allow, 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls > self.allow:
            msg = "site test: lost the site (injected)"
            raise LostSite(msg)


def test_a_lost_hold_writes_no_setpoint_and_sends_nothing(tmp_path: Path) -> None:
    with demo_runtime(tmp_path) as rt:
        rt.tick(0)
        written: list[Setpoint] = []
        rt.cycle.writers = {k: Recording(w, written) for k, w in rt.cycle.writers.items()}
        interval_id = int(rt.start.timestamp())
        # a tick records the ended interval's intent, clears and writes setpoints, then sends:
        # the first fence call is the first setpoint's
        rt.cycle.fence = Fence(allow=0)
        boundary = rt.boundary(1)
        with pytest.raises(LostSite, match="injected"):
            run_tick(rt.cycle, boundary)  # the scheduler lets it through
        assert written == []
        assert rt.store.settlement(interval_id)["state"] == "intent"  # recorded, not sent
        assert rt.client.settled_on_chain(interval_id) == (0, "")
        ticks = {r["boundary"]: r["outcome"] for r in rt.store.tick_rows()}
        assert ticks[int(boundary.timestamp())] == "running"  # for the next holder to close

        # the send: resolving the pending intent checks the hold before the transaction
        rt.cycle.fence = Fence(allow=0)
        with pytest.raises(LostSite):
            rt.cycle.resume_pending()
        assert rt.client.settled_on_chain(interval_id) == (0, "")
        rt.cycle.fence = None  # the holder: the intent was kept whole
        assert [r.error for r in rt.cycle.resume_pending()] == [""]
        assert rt.client.settled_on_chain(interval_id)[0] > 0


def test_a_live_hold_changes_nothing(tmp_path: Path) -> None:
    with demo_runtime(tmp_path) as rt:
        rt.tick(0)
        written: list[Setpoint] = []
        rt.cycle.writers = {k: Recording(w, written) for k, w in rt.cycle.writers.items()}
        fence = Fence(allow=10**6)
        rt.cycle.fence = fence
        report = rt.tick(1)
        assert report.settled is not None
        assert report.settled.error == ""
        assert report.settled.outcome is not None
        assert written  # the demo curtails or dispatches something at 07:45
        assert fence.calls == 1 + len(written)  # once per transaction and per setpoint
