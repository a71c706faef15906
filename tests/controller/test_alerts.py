"""The site's alerts (controller.alerts): each rule on a real SQLite store filled by the
store's own writers with an injected clock, the webhook against a real HTTP server on
127.0.0.1, and the whole cycle on the demo's simulators and embedded chain."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from killharness import wait_until

import controller.alerts as alerts_module
from controller.alerts import (
    Alert,
    AlertKind,
    AlertWatch,
    ChainFacts,
    Webhook,
    chain_facts,
    format_alerts,
    safe_url,
    site_alerts,
    typical_spend,
)
from controller.config import AlertsConfig, ChainBackend, ChainConfig, SiteConfig, parse_site
from controller.errors import ConfigError
from controller.store import Store
from market.domain import BusId, DeviceId, MeterReading, ParticipantId, ReadingQuality, utc_label
from market.units import W, Wh

L = 900
T0 = 1_782_028_800  # 2026-06-21T08:00Z, a boundary of 15-minute intervals

SITE: dict[str, Any] = {
    "site": {"interval_s": L},
    "participants": [{"id": "alice", "bus": "b1"}, {"id": "bob", "bus": "b2"}],
    "devices": [
        {"id": "alice-meter", "participant": "alice", "kind": "meter"},
        {"id": "bob-meter", "participant": "bob", "kind": "meter", "unit": 2},
    ],
}


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.fixture
def site() -> SiteConfig:
    return parse_site(SITE)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'alerts.sqlite'}")
    yield s
    s.close()


def clear(store: Store, interval_id: int, status: str = "cleared", reason: str = "ok") -> None:
    """An interval cleared as the cycle records it (claim, then the result)."""
    assert store.claim_interval(interval_id, L)
    store.save_result(
        interval_id,
        status=status,
        reason=reason,
        book_hash="0" * 64,
        n_orders=0,
        result={"status": status},
        setpoints=[],
    )


def settle(store: Store, interval_id: int, amounts: list[list[Any]] | None = None) -> None:
    batch = {"amounts": amounts or [["alice", -1000], ["GRID", 1000]]}
    assert store.record_intent(interval_id, f"{interval_id:064x}", batch)
    store.mark_settled(interval_id, tx_hash="0x" + "ab" * 32, block_number=1, gas_used=1)


def kinds(found: list[Alert], prefix: str = "") -> list[tuple[str, str]]:
    """(kind, subject) of the alerts whose kind starts with ``prefix``."""
    return [(a.kind.value, a.subject) for a in found if a.kind.value.startswith(prefix)]


# ------------------------------------------------------------------------------ intervals


def test_a_healthy_site_has_no_alerts(store: Store, site: SiteConfig) -> None:
    assert site_alerts(store, site, now=at(T0), chain=None) == []  # an empty store
    for k in range(4):
        clear(store, T0 + k * L)
        if k:
            settle(store, T0 + (k - 1) * L)
    assert site_alerts(store, site, now=at(T0 + 3 * L + 5), chain=None) == []


def test_missed_intervals_are_one_alert_named_after_the_first(
    store: Store, site: SiteConfig
) -> None:
    for k in (0, 1, 4):
        clear(store, T0 + k * L)
    store.record_ticks(range(T0 + 2 * L, T0 + 4 * L, L), "missed", "controller not running")
    # at 2.5 L: the interval of 2 L has not ended yet, nothing is missed
    assert site_alerts(store, site, now=at(T0 + 2 * L + 450), chain=None) == []
    found = site_alerts(store, site, now=at(T0 + 4 * L + 10), chain=None)
    assert kinds(found, "interval") == [("interval_missed", utc_label(T0 + 2 * L))]
    (missed,) = [a for a in found if a.kind is AlertKind.INTERVAL_MISSED]
    assert missed.since_s == T0 + 2 * L
    assert "2 intervals" in missed.message
    assert "controller not running" in missed.message
    assert missed.severity == "warning"


def test_abandoned_and_dead_claims_are_missed_a_current_claim_is_not(
    store: Store, site: SiteConfig
) -> None:
    clear(store, T0)
    clear(store, T0 + L, "abandoned", "abandoned: its gate closure passed; fallback: grid only")
    clear(store, T0 + 2 * L)
    assert store.claim_interval(T0 + 3 * L, L)  # died while clearing, never closed
    clear(store, T0 + 4 * L)
    assert store.claim_interval(T0 + 5 * L, L)  # being cleared now
    found = site_alerts(store, site, now=at(T0 + 5 * L + 1), chain=None)
    found = [a for a in found if a.kind is AlertKind.INTERVAL_MISSED]
    assert kinds(found) == [
        ("interval_missed", utc_label(T0 + L)),
        ("interval_missed", utc_label(T0 + 3 * L)),
    ]
    assert "gate closure passed" in found[0].message


def test_failed_clearings_and_failed_ticks(store: Store, site: SiteConfig) -> None:
    clear(store, T0)
    clear(store, T0 + L, "infeasible", "no feasible dispatch")
    clear(store, T0 + 2 * L, "no_crossing", "no bid meets an offer")  # ok: nothing to trade
    clear(store, T0 + 3 * L)
    assert store.record_tick(T0 + 3 * L, "running")
    store.update_tick(T0 + 3 * L, "failed", "StoreError: disk full")
    clear(store, T0 + 4 * L, "time_limit", "stopped at 10 s")  # the current interval
    found = site_alerts(store, site, now=at(T0 + 4 * L + 1), chain=None)
    found = [a for a in found if a.kind is AlertKind.INTERVAL_FAILED]
    assert kinds(found) == [
        ("interval_failed", utc_label(T0 + L)),
        ("interval_failed", utc_label(T0 + 3 * L)),
    ]
    assert "infeasible (no feasible dispatch)" in found[0].message
    assert "disk full" in found[1].message
    # the current interval's failure is reported as soon as it is recorded ... but it is
    # consecutive with 3 L's failed tick: one alert, two intervals
    assert "2 intervals" in found[1].message


def test_the_window_is_the_last_day(store: Store, site: SiteConfig) -> None:
    clear(store, T0)
    clear(store, T0 + 2 * L)  # T0 + L missed
    day = 86400
    clear(store, T0 + day + 2 * L)
    clear(store, T0 + day + 3 * L)

    def missed(now: int) -> list[Alert]:
        found = site_alerts(store, site, now=at(now), chain=None)
        return [a for a in found if a.kind is AlertKind.INTERVAL_MISSED]

    # T0 + L is older than a day: only what was missed within the day is reported; the
    # outage of T0 + 3 L to T0 + day + L is cut by the window: named after its last interval
    found = missed(T0 + day + 2 * L + 1)
    assert [(a.since_s, a.subject) for a in found] == [(T0 + 3 * L, utc_label(T0 + day + L))]
    assert f"{(day - L) // L} intervals" in found[0].message
    assert ", and before;" in found[0].message
    # an interval later the window has slid over its start: the same alert (same key)
    later = missed(T0 + day + 3 * L + 1)
    assert [a.key for a in later] == [found[0].key]
    assert later[0].since_s == T0 + 4 * L


@given(cleared=st.sets(st.integers(0, 23), min_size=1))
@settings(max_examples=20, deadline=None)
def test_missed_alerts_cover_exactly_the_intervals_not_cleared(cleared: set[int]) -> None:
    site = parse_site(SITE)
    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite:///{folder}/p.sqlite")
        try:
            for k in cleared:
                clear(store, T0 + k * L)
            found = site_alerts(store, site, now=at(T0 + 24 * L), chain=None)
            found = [a for a in found if a.kind is not AlertKind.SETTLEMENT_PENDING]
        finally:
            store.close()
    first = min(cleared)
    expected = {k for k in range(first, 24) if k not in cleared}
    covered: set[int] = set()
    for a in found:
        assert a.kind is AlertKind.INTERVAL_MISSED
        assert a.since_s is not None
        count = (
            int(a.message.split(" intervals")[0].split("(")[-1]) if " intervals" in a.message else 1
        )
        start = (a.since_s - T0) // L
        run = set(range(start, start + count))
        assert not run & covered
        covered |= run
    assert covered == expected


# ------------------------------------------------------------------------------ settlements


def test_a_settlement_pending_more_than_two_intervals(store: Store, site: SiteConfig) -> None:
    for k in range(5):
        clear(store, T0 + k * L)
    assert store.record_intent(T0, "a" * 64, {"amounts": []})
    # T0 ended at T0 + L; pending for exactly 2 intervals at T0 + 3 L: not yet
    assert site_alerts(store, site, now=at(T0 + 3 * L), chain=None) == []
    found = site_alerts(store, site, now=at(T0 + 3 * L + 1), chain=None)
    assert kinds(found) == [("settlement_pending", utc_label(T0))]
    assert found[0].severity == "warning"
    assert found[0].since_s == T0 + L
    # a failed send is critical; intervals with a result and no settlement row count too
    store.mark_failed(T0, "nonce too low")
    found = site_alerts(store, site, now=at(T0 + 4 * L + 1), chain=None)
    assert kinds(found) == [("settlement_pending", utc_label(T0))]
    assert found[0].severity == "critical"
    assert "2 intervals" in found[0].message  # T0 (failed) and T0 + L (no row yet)
    assert "nonce too low" in found[0].message
    # settled: cleared
    store.mark_settled(T0, tx_hash="0x" + "cd" * 32, block_number=2, gas_used=1)
    settle(store, T0 + L)
    assert site_alerts(store, site, now=at(T0 + 4 * L + 1), chain=None) == []


# ------------------------------------------------------------------------------ devices


def reading(device: str, boundary: int, quality: ReadingQuality) -> MeterReading:
    participant = device.split("-", maxsplit=1)[0]
    return MeterReading(
        device_id=DeviceId(device),
        participant=ParticipantId(participant),
        bus=BusId("b1"),
        measured_at=at(boundary),
        p_w=W(0),
        import_wh_total=Wh(0),
        export_wh_total=Wh(0),
        quality=quality,
        reason="" if quality is ReadingQuality.OK else f"{quality.value}: timed out",
    )


def snapshot(boundary: int, bob: ReadingQuality) -> dict[DeviceId, MeterReading]:
    return {
        DeviceId("alice-meter"): reading("alice-meter", boundary, ReadingQuality.OK),
        DeviceId("bob-meter"): reading("bob-meter", boundary, bob),
    }


def test_a_device_missing_for_more_than_two_intervals(store: Store, site: SiteConfig) -> None:
    store.save_readings(T0, snapshot(T0, ReadingQuality.OK))
    for k in (1, 2, 3):
        store.save_readings(T0 + k * L, snapshot(T0 + k * L, ReadingQuality.MISSING))
    # bad since T0 + L: two intervals at T0 + 3 L, not more
    assert site_alerts(store, site, now=at(T0 + 3 * L), chain=None) == []
    found = site_alerts(store, site, now=at(T0 + 3 * L + 2), chain=None)
    assert kinds(found) == [("device_stale", "bob-meter")]
    assert found[0].severity == "critical"
    assert found[0].since_s == T0 + L
    assert "MISSING: 3 readings not OK" in found[0].message
    assert "timed out" in found[0].message
    # stale only at the last reading: a warning; then OK again: cleared
    store.save_readings(T0 + 4 * L, snapshot(T0 + 4 * L, ReadingQuality.STALE))
    found = site_alerts(store, site, now=at(T0 + 4 * L + 2), chain=None)
    assert found[0].severity == "warning"
    assert found[0].message.startswith("STALE: 4 readings")
    store.save_readings(T0 + 5 * L, snapshot(T0 + 5 * L, ReadingQuality.OK))
    assert site_alerts(store, site, now=at(T0 + 5 * L + 2), chain=None) == []


def test_a_device_the_site_no_longer_has_is_not_reported(store: Store) -> None:
    site = parse_site({**SITE, "devices": SITE["devices"][:1]})
    for k in range(4):
        store.save_readings(T0 + k * L, snapshot(T0 + k * L, ReadingQuality.MISSING))
    assert site_alerts(store, site, now=at(T0 + 4 * L), chain=None) == []


# ------------------------------------------------------------------------------ the chain


def facts(**escrow: int) -> ChainFacts:
    return ChainFacts(
        operator_balance_wei=10**18, latest_block_time_s=T0 + 8 * L, escrow_units=escrow
    )


def test_escrow_below_a_days_typical_spend(store: Store, site: SiteConfig) -> None:
    for k in range(4):  # alice pays 1000 in two of four intervals: 500 per interval
        amounts = [["alice", -1000], ["GRID", 1000]] if k % 2 else [["bob", 0]]
        settle(store, T0 + k * L, amounts)
    now = at(T0 + 8 * L)
    assert typical_spend(store, site, int(now.timestamp())) == {"alice": 500.0}
    day = 500 * 96  # 96 intervals a day
    assert site_alerts(store, site, now=now, chain=facts(alice=day, bob=0)) == []
    found = site_alerts(store, site, now=now, chain=facts(alice=day - 1, bob=0))
    assert kinds(found) == [("escrow_low", "alice")]
    assert found[0].severity == "warning"
    assert "48000 token units" in found[0].message
    assert site_alerts(store, site, now=now, chain=facts(alice=499))[0].severity == "critical"
    two_days = dataclasses.replace(site, alerts=AlertsConfig(escrow_days=2.0))
    assert kinds(site_alerts(store, two_days, now=now, chain=facts(alice=day))) == [
        ("escrow_low", "alice")
    ]


def test_gas_low(store: Store, site: SiteConfig) -> None:
    low = dataclasses.replace(facts(), operator_balance_wei=site.alerts.gas_low_wei - 1)
    found = site_alerts(store, site, now=at(T0), chain=low)
    assert kinds(found) == [("gas_low", "operator")]
    assert found[0].severity == "warning"
    assert "0.050000 ether" in found[0].message
    empty = dataclasses.replace(facts(), operator_balance_wei=0)
    assert site_alerts(store, site, now=at(T0), chain=empty)[0].severity == "critical"
    enough = dataclasses.replace(facts(), operator_balance_wei=site.alerts.gas_low_wei)
    assert site_alerts(store, site, now=at(T0), chain=enough) == []


def rpc_site(site: SiteConfig, **alerts: Any) -> SiteConfig:
    return dataclasses.replace(
        site,
        chain=ChainConfig(backend=ChainBackend.RPC, rpc_url="http://127.0.0.1:1"),
        alerts=AlertsConfig(**alerts),
    )


@pytest.mark.parametrize(
    ("backend_rpc", "block_minus_now", "block_time_s", "alert"),
    [
        (True, 0, 12, False),
        (True, 2, 12, False),  # exactly the tolerance
        (True, 3, 12, True),  # the block is from our future: our clock is slow
        (True, -14, 12, False),  # one block time and 2 s behind: normal
        (True, -15, 12, True),  # older: our clock is fast, or the chain stalled
        (True, -600, 0, False),  # blocks on demand: an old block says nothing
        (True, 3, 0, True),  # ... but a block from the future does
        (False, 30, 12, False),  # embedded: blocks mined on demand on this machine
        (False, -3600, 12, False),
    ],
)
def test_clock_skew(
    store: Store,
    site: SiteConfig,
    *,
    backend_rpc: bool,
    block_minus_now: int,
    block_time_s: int,
    alert: bool,
) -> None:
    checked = rpc_site(site, block_time_s=block_time_s) if backend_rpc else site
    chain = dataclasses.replace(facts(), latest_block_time_s=T0 + block_minus_now)
    found = site_alerts(store, checked, now=at(T0), chain=chain)
    assert kinds(found) == ([("clock_skew", "clock")] if alert else [])


def test_format_and_order(store: Store, site: SiteConfig) -> None:
    assert format_alerts([]) == ["no alerts"]
    clear(store, T0)
    clear(store, T0 + 2 * L)
    low = dataclasses.replace(facts(), operator_balance_wei=0)
    found = site_alerts(store, site, now=at(T0 + 3 * L), chain=low)
    assert [a.severity for a in found] == ["critical", "warning"]  # critical first
    lines = format_alerts(found)
    assert lines[0].startswith("CRITICAL gas_low operator: the operator's gas balance 0.000000")
    assert lines[1].startswith(f"WARNING  interval_missed {utc_label(T0 + L)}: not cleared")
    data = found[1].to_dict()
    assert data["kind"] == "interval_missed"
    assert data["since"] == "2026-06-21T08:15:00Z"
    assert json.loads(json.dumps(data)) == data


# ------------------------------------------------------------------------------ config


def test_the_alerts_table(site: SiteConfig) -> None:
    assert site.alerts == AlertsConfig()
    assert site.alerts.gas_low_wei == 5 * 10**16
    given_ = parse_site(
        {
            **SITE,
            "site": {
                "interval_s": L,
                "alerts": {
                    "webhook_url": "https://hooks.example.org/T0K3N?x=1",
                    "gas_low_wei": 10**17,
                    "clock_skew_s": 1.5,
                    "escrow_days": 3.0,
                    "block_time_s": 0,
                },
            },
        }
    )
    assert given_.alerts == AlertsConfig(
        webhook_url="https://hooks.example.org/T0K3N?x=1",
        gas_low_wei=10**17,
        clock_skew_s=1.5,
        block_time_s=0,
        escrow_days=3.0,
    )
    bad = {
        "webhook_url": "ftp://hooks.example.org/S3CRET",
        "clock_skew_s": 0,
        "escrow_days": -1.0,
        "gas_low_wei": "lots",
        "webhok_url": "",
    }
    with pytest.raises(ConfigError) as caught:
        parse_site({**SITE, "site": {"alerts": bad}})
    text = str(caught.value)
    assert "site.alerts.webhook_url: must be an http:// or https:// URL" in text
    assert "S3CRET" not in text
    assert "site.alerts.clock_skew_s: must be > 0" in text
    assert "site.alerts.escrow_days: must be > 0" in text
    assert "site.alerts.gas_low_wei: must be an integer" in text
    assert "site.alerts.webhok_url: unknown key (did you mean 'webhook_url'?)" in text


# ------------------------------------------------------------------------------ the webhook

SECRET = "s3cr3t-T0KEN"


class Receiver:
    """A real HTTP server on 127.0.0.1 that records the JSON POSTed to it."""

    def __init__(self, port: int = 0, *, status: int = 204) -> None:
        self.posts: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.status = status
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.arrived.set()
                receiver.hold.wait(30)
                receiver.posts.append(json.loads(body))
                receiver.paths.append(self.path)
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{SECRET}?token={SECRET}"

    def stop(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def alert(kind: AlertKind, subject: str, message: str = "m") -> Alert:
    return Alert(kind, "warning", subject, message, None)


A = alert(AlertKind.GAS_LOW, "operator")
B = alert(AlertKind.DEVICE_STALE, "bob-meter")


def delivered(hook: Webhook) -> None:
    assert hook.wait_idle(30), "the webhook did not finish"


def test_changes_are_posted_once_and_cleared_when_resolved(receiver: Receiver) -> None:
    hook = Webhook(receiver.url(), "Site X", now=lambda: at(T0))
    try:
        hook.update([A])
        delivered(hook)
        hook.update([alert(AlertKind.GAS_LOW, "operator", "a new balance")])  # same key
        delivered(hook)
        hook.update([alert(AlertKind.GAS_LOW, "operator", "a new balance"), B])
        delivered(hook)
        hook.update([B])
        delivered(hook)
        hook.update([B])
        delivered(hook)
    finally:
        hook.close()
    assert [(len(p["raised"]), len(p["cleared"]), len(p["alerts"])) for p in receiver.posts] == [
        (1, 0, 1),
        (1, 0, 2),
        (0, 1, 1),
    ]
    first, second, third = receiver.posts
    assert first == {
        "site": "Site X",
        "at": "2026-06-21T08:00:00Z",
        "raised": [A.to_dict()],
        "cleared": [],
        "alerts": [A.to_dict()],
    }
    assert second["raised"] == [B.to_dict()]
    assert second["alerts"][0]["message"] == "a new balance"
    assert third["cleared"][0]["kind"] == "gas_low"
    assert third["cleared"][0]["message"] == "a new balance"  # the last one it saw
    assert receiver.paths[0] == f"/hooks/{SECRET}?token={SECRET}"
    assert hook.deliveries == 3
    assert hook.failures == 0


def assert_no_secret(text: str) -> None:
    assert SECRET not in text, "the webhook's secret reached the logs"


def test_a_receiver_that_is_down_is_retried_and_the_secret_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx's request lines included
    down = Receiver()
    port, url = down.port, down.url()
    down.stop()  # nothing listens on the port now
    hook = Webhook(url, "Site X")
    try:
        hook.update([A])
        delivered(hook)
        assert hook.failures == 1
        assert hook.deliveries == 0
        assert f"alert webhook http://127.0.0.1:{port} failed (ConnectError)" in caplog.text
        up = Receiver(port)
        try:
            hook.update([A, B])  # the next evaluation: both raised at once
            delivered(hook)
            hook.update([A, B])
            delivered(hook)
        finally:
            up.stop()
    finally:
        hook.close()
    assert [p["raised"] for p in up.posts] == [[A.to_dict(), B.to_dict()]]
    assert "HTTP Request: POST" in caplog.text  # httpx logged the request ...
    assert_no_secret(caplog.text)  # ... without the URL's secret


def test_the_secret_check_catches_a_leak(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The injected fault: a host shown with its path. The check above must catch it."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(alerts_module, "safe_url", lambda url: url)
    down = Receiver()
    url = down.url()
    down.stop()
    hook = Webhook(url, "Site X")
    try:
        hook.update([A])
        delivered(hook)
    finally:
        hook.close()
    with pytest.raises(AssertionError, match="secret reached the logs"):
        assert_no_secret(caplog.text)


def test_an_error_answer_is_retried(receiver: Receiver) -> None:
    receiver.status = 500
    hook = Webhook(receiver.url(), "Site X")
    try:
        hook.update([A])
        delivered(hook)
        assert hook.failures == 1
        receiver.status = 200
        hook.update([A])
        delivered(hook)
    finally:
        hook.close()
    assert [p["raised"] for p in receiver.posts] == [[A.to_dict()], [A.to_dict()]]
    assert hook.deliveries == 1


def test_update_never_waits_for_the_receiver(receiver: Receiver) -> None:
    receiver.hold.clear()  # the receiver holds every request until told
    hook = Webhook(receiver.url(), "Site X")
    try:
        hook.update([A])
        assert receiver.arrived.wait(30)
        # the POST is in flight and held; update() returned and returns again at once
        hook.update([A, B])
        assert not receiver.posts
        receiver.hold.set()
        wait_until(lambda: len(receiver.posts) == 2, 30, "both posts")
        delivered(hook)
    finally:
        hook.close()
    assert [len(p["alerts"]) for p in receiver.posts] == [1, 2]


def test_safe_url() -> None:
    assert safe_url(f"https://user:pw@hooks.example.org:8443/x/{SECRET}?t=1") == (
        "https://hooks.example.org:8443"
    )
    assert safe_url("http://10.0.0.1/hook") == "http://10.0.0.1"
    assert SECRET not in repr(Webhook(f"http://h.example/{SECRET}", "s"))


# ------------------------------------------------------------------------------ the cycle


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_the_demo_cycle_raises_and_clears_a_dead_meter(tmp_path: Path, receiver: Receiver) -> None:
    """The real cycle on the demo's simulators and embedded chain: no alert while healthy
    (no false clock, gas or escrow alert on the embedded chain), a dead meter raised after
    more than two intervals and delivered to the webhook once."""
    from controller.demo import demo_runtime
    from controller.service import free_escrow

    with demo_runtime(tmp_path) as rt:
        clock = {"now": rt.boundary(0)}
        hook = Webhook(receiver.url(), rt.site.name)
        watch = AlertWatch(rt.runtime, lambda: clock["now"], webhook=hook)
        try:
            for k in range(3):
                rt.tick(k)
                clock["now"] = rt.boundary(k) + timedelta(seconds=20)
                assert watch() == ()
            facts_now = chain_facts(rt.runtime)
            assert facts_now.operator_balance_wei > 10**18
            assert set(facts_now.escrow_units) == {p.id for p in rt.site.participants}
            # the intake's credit check (controller.service) agrees, participant by participant
            credit = free_escrow(rt.runtime, threading.RLock())
            for participant, free in facts_now.escrow_units.items():
                assert free == credit(ParticipantId(participant)) > 0
            rt.sims["bob-meter"].stop()
            for k in range(3, 7):
                rt.tick(k)
                clock["now"] = rt.boundary(k) + timedelta(seconds=20)
                watch()
            assert [(a.kind.value, a.subject) for a in watch.latest] == [
                ("device_stale", "bob-meter")
            ]
            assert watch.latest[0].since_s == int(rt.boundary(3).timestamp())
            delivered(hook)
            rt.sims["bob-meter"].start()  # repaired: cleared at its first OK reading
            for k in range(7, 11):
                rt.tick(k)
                clock["now"] = rt.boundary(k) + timedelta(seconds=20)
                if not watch():
                    break
            assert watch.latest == ()
            delivered(hook)
        finally:
            watch.close()
    assert [[r["subject"] for r in p["raised"]] for p in receiver.posts] == [["bob-meter"], []]
    assert [[r["subject"] for r in p["cleared"]] for p in receiver.posts] == [[], ["bob-meter"]]


def test_the_serve_publisher_evaluates_after_each_report(tmp_path: Path) -> None:
    """``peergrid serve``'s report callback: publish, then evaluate (no chain here)."""
    from controller.events import EventHub
    from controller.scheduler import Event, EventKind, run_event
    from controller.serve import publisher
    from controller.wiring import build_runtime

    site = parse_site(
        {**SITE, "site": {"interval_s": L, "database": f"sqlite:///{tmp_path / 'p.sqlite'}"}}
    )
    site = dataclasses.replace(
        site, participants=(dataclasses.replace(site.participants[0], bus=BusId("Bus R11")),)
    )
    site = dataclasses.replace(site, devices=())
    with build_runtime(site, devices=False, chain=False) as rt:
        clock = {"now": at(T0)}
        watch = AlertWatch(rt, lambda: clock["now"])
        publish = publisher(EventHub(), watch)
        for k in (0, 2):  # the boundary of T0 + L never ran
            boundary = at(T0 + k * L)
            (report,) = run_event(rt.cycle, Event(boundary, EventKind.TICK, boundary))
            clock["now"] = boundary + timedelta(seconds=1)
            publish(report)
            assert watch.evaluated_at == clock["now"]
    assert kinds(list(watch.latest), "interval") == [("interval_missed", utc_label(T0 + L))]


def test_a_failing_evaluation_is_reported_and_keeps_the_last_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The watch's catch-all reports what it caught (with its traceback), never hides it."""
    from controller.scheduler import Event, EventKind, run_event
    from controller.wiring import build_runtime

    site = parse_site(
        {**SITE, "site": {"interval_s": L, "database": f"sqlite:///{tmp_path / 'f.sqlite'}"}}
    )
    site = dataclasses.replace(
        site,
        participants=(dataclasses.replace(site.participants[0], bus=BusId("Bus R11")),),
        devices=(),
    )
    with build_runtime(site, devices=False, chain=False) as rt:
        run_event(rt.cycle, Event(at(T0), EventKind.TICK, at(T0)))
        clock = {"now": at(T0 + 3 * L + 1)}  # the next boundaries never ran: an alert
        watch = AlertWatch(rt, lambda: clock["now"])
        first = watch()
        assert first

        def broken(*_args: object, **_kwargs: object) -> list[Alert]:
            msg = "injected: the store went away"
            raise ConfigError(msg)

        monkeypatch.setattr(alerts_module, "site_alerts", broken)
        with caplog.at_level(logging.ERROR, logger="peergrid.alerts"):
            assert watch() == first  # the cycle's callback does not raise; the list is kept
    failed = [r for r in caplog.records if "evaluating the alerts failed" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].exc_info is not None
    assert "injected: the store went away" in caplog.text
