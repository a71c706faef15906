"""Real-time scheduling rules: aligned ticks, never twice, missed boundaries recorded,
one controller per site; and ``peergrid run --once`` against real simulators."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.modbus.simulators import LoadMeterSim, PVInverterSim
from controller.cli import main
from controller.config import parse_site
from controller.errors import AlreadyRunning, NotOnBoundary
from controller.scheduler import record_missed, run_tick, single_instance
from controller.store import Store
from controller.wiring import build_runtime
from market.domain import Interval

SITE = """
[site]
grid = "cigre-lv"
database = "sqlite:///{db}"
base_load_scale = 0.35

[[participants]]
id = "alice"
bus = "Bus R11"
  [[participants.orders]]
  kind = "sell_surplus"
  price = 70_000

[[participants]]
id = "bob"
bus = "Bus R15"
  [[participants.orders]]
  kind = "buy_demand"
  price = 320_000

[[devices]]
id = "alice-pv"
participant = "alice"
kind = "pv"
port = {pv_port}
rated_w = 8000

[[devices]]
id = "bob-meter"
participant = "bob"
kind = "meter"
port = {meter_port}
"""


def test_second_instance_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "site.lock"
    with single_instance(lock), pytest.raises(AlreadyRunning), single_instance(lock):
        pass
    with single_instance(lock):  # released after the first block
        pass


def test_ticks_never_run_twice_and_gaps_are_recorded(tmp_path: Path) -> None:
    site = parse_site(tomllib.loads(SITE.format(db=tmp_path / "s.sqlite", pv_port=1, meter_port=2)))
    runtime = build_runtime(site, devices=False, chain=False)
    cycle, store = runtime.cycle, runtime.store
    t0 = datetime(2026, 6, 21, 12, tzinfo=UTC)
    first = run_tick(cycle, t0)
    assert first is not None
    assert run_tick(cycle, t0) is None
    later = t0 + timedelta(hours=1)
    assert record_missed(cycle, later) == [
        int((t0 + timedelta(minutes=m)).timestamp()) for m in (15, 30, 45)
    ]
    outcomes = [(r["boundary"], r["outcome"]) for r in store.tick_rows()]
    assert outcomes[0] == (int(t0.timestamp()), "ran")
    assert [o for _, o in outcomes[1:]] == ["missed"] * 3
    with pytest.raises(NotOnBoundary, match="boundary"):
        cycle.tick(t0 + timedelta(minutes=7))
    assert issubclass(NotOnBoundary, ValueError)  # callers that caught ValueError still do
    runtime.close()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_run_once_against_real_simulators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    with (
        PVInverterSim(8000, lambda _t: 5000.0, start_at=now) as pv,
        LoadMeterSim(lambda _t: 3000.0, start_at=now) as meter,
    ):
        path = tmp_path / "site.toml"
        path.write_text(
            SITE.format(db=tmp_path / "s.sqlite", pv_port=pv.port, meter_port=meter.port),
            encoding="utf-8",
        )
        assert main(["run", "--site", str(path), "--once"]) == 0
        out = capsys.readouterr().out
        assert "2 readings ok" in out
        assert "cleared" in out
        # the same boundary again (within the same interval) is refused, not rerun
        before = Interval.containing(datetime.now(UTC)).interval_id
        assert main(["run", "--site", str(path), "--once"]) == 0
        if Interval.containing(datetime.now(UTC)).interval_id == before:
            assert "already ran" in capsys.readouterr().out
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    rows = store.interval_rows()
    assert 1 <= len(rows) <= 2  # two only if the run straddled a boundary
    assert rows[0]["status"] == "cleared"
    store.close()
