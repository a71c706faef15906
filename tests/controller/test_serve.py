"""``peergrid serve``: the process (demo site, real simulators, embedded chain, uvicorn), its
stop on a signal, one instance per database, and what the cycle publishes to the API's
event hub."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from killharness import clean_env, wait_until
from test_serve_kill import _landed_mid_step

from controller.cli import main
from controller.config import parse_site
from controller.cycle import IntervalReport, TickReport
from controller.errors import ConfigError, ControllerError
from controller.events import EventHub
from controller.scheduler import CycleThread, Event, EventKind, run_event
from controller.serve import (
    EXIT_BIND_FAILED,
    EXIT_CYCLE_FAILED,
    _Stopper,
    bind,
    public_origin,
    publisher,
    run_service,
)
from controller.wiring import Runtime, build_runtime

REPO = Path(__file__).resolve().parents[2]

SITE = """
[site]
grid = "cigre-lv"
database = "sqlite:///{db}"
base_load_scale = 0.35
gate_closure_s = 300

[[participants]]
id = "alice"
bus = "Bus R11"
  [[participants.orders]]
  kind = "sell_surplus"
  price = 70_000

[[devices]]
id = "alice-pv"
participant = "alice"
kind = "pv"
port = 1
rated_w = 8000
"""
T0 = datetime(2026, 6, 21, 12, tzinfo=UTC)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    site = parse_site(tomllib.loads(SITE.format(db=tmp_path / "s.sqlite")))
    rt = build_runtime(site, devices=False, chain=False)
    yield rt
    rt.close()


# ----------------------------------------------------------------------------- in-process


def test_the_cycle_publishes_results_and_settlements_after_storing_them(
    runtime: Runtime,
) -> None:
    hub = EventHub()
    publish = publisher(hub)

    async def scenario() -> list[dict[str, object]]:
        with hub.subscribe() as sub:

            def cycle_thread() -> None:  # published from another thread, as the cycle does
                for event in (
                    Event(T0 - timedelta(seconds=300), EventKind.CLEAR, T0),
                    Event(T0, EventKind.BOUNDARY, T0),
                    Event(
                        T0 + timedelta(seconds=600), EventKind.CLEAR, T0 + timedelta(seconds=900)
                    ),
                    Event(
                        T0 + timedelta(seconds=900), EventKind.BOUNDARY, T0 + timedelta(seconds=900)
                    ),
                ):
                    for report in run_event(runtime.cycle, event):
                        if isinstance(report, IntervalReport):  # stored before it is published
                            assert runtime.store.result(report.interval.interval_id) is not None
                        publish(report)

            worker = threading.Thread(target=cycle_thread)
            worker.start()
            await asyncio.to_thread(worker.join)
            got = []
            while (event := await sub.get(timeout_s=5)) is not None:
                got.append(event)
                if len(got) == 3:
                    break
            return got

    events = asyncio.run(scenario())
    assert [e["type"] for e in events] == ["interval", "interval", "settlement"]
    assert events[0]["interval_start_s"] == int(T0.timestamp())
    assert events[2]["interval_start_s"] == int(T0.timestamp())
    assert events[2]["state"] == "failed"  # no chain in this test: the intent is reported
    assert [e["seq"] for e in events] == [1, 2, 3]


def test_a_tick_report_publishes_its_clearing_then_its_settlements(tmp_path: Path) -> None:
    site = parse_site(
        tomllib.loads(SITE.format(db=tmp_path / "z.sqlite").replace("gate_closure_s = 300", ""))
    )
    with build_runtime(site, devices=False, chain=False) as rt:
        sent: list[dict[str, object]] = []

        class Hub(EventHub):
            def publish(self, event: object) -> int:  # type: ignore[override]
                assert isinstance(event, dict)
                sent.append(event)
                return len(sent)

        publish = publisher(Hub())
        for k in range(2):
            (report,) = run_event(
                rt.cycle,
                Event(
                    T0 + timedelta(seconds=900 * k), EventKind.TICK, T0 + timedelta(seconds=900 * k)
                ),
            )
            assert isinstance(report, TickReport)
            publish(report)
    assert [e["type"] for e in sent] == ["interval", "interval", "settlement"]


def test_a_busy_port_is_refused_before_anything_runs(runtime: Runtime) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            bind("127.0.0.1", port)
        code = run_service(runtime.cycle.site, runtime, host="127.0.0.1", port=port)
    assert code == EXIT_BIND_FAILED
    assert runtime.store.tick_rows() == []


def test_one_signal_stops_after_the_step_two_abandon_it(runtime: Runtime) -> None:
    thread = CycleThread(runtime.cycle, lambda _r: None)
    stopped: list[bool] = []
    stopper = _Stopper(thread, server_stop=lambda: stopped.append(True))
    stopper(signal.SIGTERM, None)
    assert stopped == [True]
    assert not stopper.abandon
    assert thread._stop.is_set()
    stopper(signal.SIGINT, None)
    assert stopper.abandon


def test_the_mid_step_detector_can_say_no() -> None:
    inside = "event clear 12:00: running\nShutting down\nevent clear 12:00: done\nstopped"
    after = "event clear 12:00: running\nevent clear 12:00: done\nShutting down\nstopped"
    assert _landed_mid_step(inside)
    assert not _landed_mid_step(after)
    assert not _landed_mid_step("Shutting down")


def test_serve_needs_a_site_or_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve"])
    assert exited.value.code == 2
    assert "--site" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://grid.example.org", ("grid.example.org", "https://grid.example.org")),
        ("https://grid.example.org/", ("grid.example.org", "https://grid.example.org")),
        ("http://10.0.0.5:8443", ("10.0.0.5:8443", "http://10.0.0.5:8443")),
        ("http://[::1]:8080", ("[::1]:8080", "http://[::1]:8080")),
    ],
)
def test_the_public_url_names_the_sign_in_domain_and_uri(url: str, origin: tuple[str, str]) -> None:
    assert public_origin(url) == origin


@pytest.mark.parametrize(
    "url",
    [
        "grid.example.org",
        "ftp://grid.example.org",
        "https://",
        "https://h/v1",
        "https://u@h",
        "https://h?x=1",
        "https://h#f",
    ],
)
def test_a_public_url_with_more_or_less_than_an_origin_is_refused(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="--public-url"):
        public_origin(url)
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(db=tmp_path / "p.sqlite"), encoding="utf-8")
    assert main(["serve", "--site", str(site), "--public-url", url]) == 2
    assert "--public-url" in capsys.readouterr().err
    assert not (tmp_path / "p.sqlite").exists()  # refused before anything started


# ----------------------------------------------------------------------------- the process


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_serve_demo_runs_answers_refuses_a_second_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "out"
    log = tmp_path / "serve.log"

    def start(log_path: Path) -> subprocess.Popen[bytes]:
        with log_path.open("wb") as sink:
            return subprocess.Popen(  # noqa: S603 - our own command line
                [sys.executable, "-m", "controller", "-v", "serve", "--demo", "--port", "0",
                 "--dev-interval-s", "6", "--out", str(out)],
                stdout=sink, stderr=subprocess.STDOUT, env=clean_env(), cwd=tmp_path,
            )  # fmt: skip

    def text(path: Path) -> str:
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    proc = start(log)
    try:
        wait_until(
            lambda: "serving http://" in text(log) or proc.poll() is not None, 240, "serving"
        )
        assert proc.poll() is None, text(log)[-3000:]
        url = text(log).split("serving ", 1)[1].split()[0]
        health = httpx.get(f"{url}/health", timeout=30)
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        doc = httpx.get(f"{url}/openapi.json", timeout=30).json()
        assert any(p.startswith("/v1/sites/") for p in doc["paths"])
        assert httpx.get(f"{url}/docs", timeout=30).status_code == 200
        # the cycle runs in real time: a tick is read, cleared and then settled
        wait_until(lambda: "settled " in text(log), 240, "a settled interval in the log")
        # a second demo service on the same folder is refused (the database's lock)
        second_log = tmp_path / "second.log"
        second = start(second_log)
        assert second.wait(240) == 1, text(second_log)[-3000:]
        assert "another PeerGrid controller is running" in text(second_log)
        assert proc.poll() is None  # and the first one is untouched
        # Ctrl-C: the server stops, the current step finishes, exit 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(180) == 0, text(log)[-3000:]
        assert "peergrid.serve: stopped" in text(log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_a_cycle_that_stops_on_an_error_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No API without its cycle: the loop's own failure ends ``run_service`` with code 3."""
    site = parse_site(tomllib.loads(SITE.format(db=tmp_path / "c.sqlite")))
    with build_runtime(site, devices=False) as rt:

        def broken(self: object) -> list[object]:
            raise ControllerError("the store is gone")

        monkeypatch.setattr(type(rt.cycle), "resume_pending", broken)
        code = run_service(site, rt, host="127.0.0.1", port=0, stop_timeout_s=60)
    assert code == EXIT_CYCLE_FAILED
