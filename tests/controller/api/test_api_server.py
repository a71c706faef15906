"""The HTTP API on a real uvicorn server on 127.0.0.1, the demo site's runtime (real SQLite
store, loopback Modbus simulators, the embedded chain), talked to over HTTP with httpx."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dbkit import BACKENDS, new_database_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serverkit import AUDITOR, OPERATOR, Api, serve_demo, sign_in, wait

from adapters.chain import derive_account
from adapters.chain.typed_data import MessageKind, OrderSide, signed_payload
from controller.api import routes_events, routes_participants

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARTICIPANT_ROUTES = ["orders", "trades", "readings", "balances", "escrow", "debts", "earnings"]


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    out = tmp_path_factory.mktemp("api")
    with serve_demo(out, new_database_url(request, request.param, out)) as served:
        yield served


# ------------------------------------------------------------------------------ service
def test_health_openapi_and_docs(api: Api) -> None:
    with httpx.Client(base_url=api.base, timeout=30) as http:
        health = http.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.json()["now_s"] == int(api.clock().timestamp())
        doc = http.get("/openapi.json").json()
        assert http.get("/docs").status_code == 200
    paths = doc["paths"]
    prefix = "/v1/sites/{site}"
    for route in PARTICIPANT_ROUTES:
        assert f"{prefix}/participants/{{participant}}/{route}" in paths
    for path in (
        "/intervals",
        "/intervals/current",
        "/intervals/{interval_start_s}/audit",
        "/devices",
        "/orders",
        "/standing-orders",
        "/cancels",
        "/events",
        "/market/pause",
        "/market/exclusions",
        "/auth/signin",
    ):
        assert prefix + path in paths, path
    # every JSON operation names its response model (schemathesis checks against it)
    for path, ops in paths.items():
        for method, op in ops.items():
            ok = op["responses"].get("200") or op["responses"].get("201")
            assert ok is not None, (method, path)
            content = ok.get("content", {})
            if "application/json" in content:
                assert content["application/json"]["schema"], (method, path)


def test_another_site_is_404_and_errors_are_json(api: Api) -> None:
    with httpx.Client(base_url=api.base, timeout=30) as http:
        reply = http.post("/v1/sites/elsewhere/auth/nonce")
        assert reply.status_code == 404
        assert reply.json()["code"] == "unknown_site"
        reply = http.get("/no/such/path")
        assert reply.status_code == 404
        assert set(reply.json()) == {"code", "reason"}


def test_another_method_is_405_with_the_methods_the_path_takes(api: Api) -> None:
    with api.client() as http:
        for path, allow in (
            ("/orders", "GET, POST"),
            ("/auth/nonce", "POST"),
            ("/intervals/current", "GET"),
        ):
            reply = http.delete(path)
            assert reply.status_code == 405, (path, reply.text)
            assert reply.json()["code"] == "method_not_allowed"
            assert reply.headers["Allow"] == allow, path


@pytest.mark.parametrize(
    "path",
    [
        "/intervals",
        "/intervals/current",
        "/devices",
        "/orders",
        "/market",
        "/auth/me",
        *(f"/participants/alice/{r}" for r in PARTICIPANT_ROUTES),
    ],
)
def test_reads_need_a_session(api: Api, path: str) -> None:
    with api.client() as http:
        reply = http.get(path)
        assert reply.status_code == 401, reply.text
        assert reply.json()["code"] == "unauthenticated"
        reply = http.get(path, headers={"Authorization": "Bearer not-a-token"})
        assert reply.status_code == 401, reply.text


def test_sign_in_gives_each_role(api: Api) -> None:
    for who, role, participant in [
        ("alice", "prosumer", "alice"),
        (OPERATOR, "operator", None),
        (AUDITOR, "auditor", None),
    ]:
        with api.client(who) as http:
            me = http.get("/auth/me").json()
        assert me["role"] == role
        assert me["participant"] == participant
        assert me["address"] == str(derive_account(who).address)


def test_sign_out_ends_the_session(api: Api) -> None:
    token = sign_in(api, "carol")
    with api.client() as http:
        auth = {"Authorization": f"Bearer {token}"}
        assert http.get("/auth/me", headers=auth).status_code == 200
        assert http.post("/auth/signout", headers=auth).json() == {"signed_out": True}
        assert http.get("/auth/me", headers=auth).status_code == 401


# ------------------------------------------------------------------------------ isolation
def cross_read(api: Api, route: str) -> tuple[int, int]:
    """(alice reading alice's ``route``, alice reading bob's): 200 and 403 when isolated."""
    with api.client("alice") as http:
        own = http.get(f"/participants/alice/{route}")
        other = http.get(f"/participants/bob/{route}")
    return own.status_code, other.status_code


@pytest.mark.parametrize("route", PARTICIPANT_ROUTES)
def test_a_prosumer_cannot_read_another_prosumers_data(api: Api, route: str) -> None:
    assert cross_read(api, route) == (200, 403)
    with api.client("alice") as http:
        reply = http.get(f"/participants/nobody/{route}")
        assert reply.status_code == 403  # not even whether it exists
        assert reply.json()["code"] == "forbidden"


def test_the_isolation_check_catches_a_leak(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Injected fault: the participant check is skipped; the check above sees the leak."""
    monkeypatch.setattr(routes_participants, "require_participant", lambda *a: None)
    assert cross_read(api, "earnings") == (200, 200)


@pytest.mark.parametrize("route", PARTICIPANT_ROUTES)
@pytest.mark.parametrize("who", [OPERATOR, AUDITOR])
def test_operator_and_auditor_read_every_participant(api: Api, route: str, who: str) -> None:
    with api.client(who) as http:
        reply = http.get(f"/participants/bob/{route}")
        assert reply.status_code == 200, reply.text
        assert reply.json()["participant"] == "bob"
        assert http.get(f"/participants/nobody/{route}").status_code == 404


def test_participant_data_is_the_participants(api: Api) -> None:
    lo, hi = api.intervals[0], api.intervals[-1] + 900
    period = {"start_s": lo, "end_s": hi}
    with api.client("bob") as http:
        trades = http.get("/participants/bob/trades", params=period).json()["items"]
        orders = http.get("/participants/bob/orders", params=period).json()["items"]
        earnings = http.get("/participants/bob/earnings", params=period).json()
        readings = http.get("/participants/bob/readings", params=period).json()["items"]
        escrow = http.get("/participants/bob/escrow").json()
        balances = http.get("/participants/bob/balances").json()
    assert orders
    assert all(o["order_id"].startswith("bob") for o in orders)
    assert all("bob" in {t["seller"], t["buyer"]} for t in trades)
    assert earnings["items"]
    assert earnings["net_amount_units"] == sum(i["net_amount_units"] for i in earnings["items"])
    assert readings
    assert all(r["participant"] == "bob" for r in readings)
    client = api.service.runtime.client
    address = str(derive_account("bob").address)
    assert balances["escrow_units"] == client.escrow_balance(address)
    assert balances["wallet_units"] == client.token_balance(address)
    assert escrow["escrow_units"] == balances["escrow_units"]
    with api.client("bob") as http:
        empty = http.get("/participants/bob/trades", params={"start_s": hi, "end_s": lo})
        # a long period comes a day at a time: walking next_start_s gives the same rows
        walked: list[dict[str, Any]] = []
        start: int | None = lo - 3 * 86_400
        while start is not None:
            part = http.get(
                "/participants/bob/orders", params={"start_s": start, "end_s": hi + 86_400}
            ).json()
            walked += part["items"]
            start = part["next_start_s"]
    assert empty.status_code == 200
    assert empty.json()["items"] == []
    assert walked == orders


def test_devices_and_interval_trades_are_filtered_for_prosumers(api: Api) -> None:
    interval = api.intervals[1]
    with api.client("alice") as http:
        devices = http.get("/devices").json()["items"]
        mine = http.get(f"/intervals/{interval}").json()
        audit = http.get(f"/intervals/{interval - 900}/audit")
    with api.client(AUDITOR) as http:
        every_device = http.get("/devices").json()["items"]
        whole = http.get(f"/intervals/{interval}").json()
    assert devices
    assert {d["participant"] for d in devices} == {"alice"}
    assert len(every_device) == len(api.service.site.devices)
    assert all(d["last_reading"] is not None for d in every_device)
    assert all("alice" in {t["seller"], t["buyer"]} for t in mine["trades"])
    assert len(mine["trades"]) + mine["trades_hidden"] == len(whole["trades"])
    assert whole["trades_hidden"] == 0
    assert mine["prices_per_kwh"] == whole["prices_per_kwh"]  # prices are public
    assert audit.status_code == 403


# ------------------------------------------------------------------------------ reads
def test_intervals_paginate_without_gaps_or_repeats(api: Api) -> None:
    with api.client(AUDITOR) as http:
        whole = http.get("/intervals", params={"limit": 50}).json()
        assert whole["next_cursor"] is None
        seen: list[int] = []
        cursor = None
        for _ in range(10):
            params: dict[str, Any] = {"limit": 1}
            if cursor is not None:
                params["cursor"] = cursor
            page = http.get("/intervals", params=params).json()
            seen += [i["interval_start_s"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        bad = http.get("/intervals", params={"limit": 0})
    everything = [i["interval_start_s"] for i in whole["items"]]
    assert everything == sorted(api.intervals, reverse=True)
    assert seen == everything
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_request"


def test_one_interval_and_its_audit_record(api: Api) -> None:
    settled = api.intervals[0]
    with api.client(OPERATOR) as http:
        detail = http.get(f"/intervals/{settled}").json()
        audit = http.get(f"/intervals/{settled}/audit").json()
        missing = http.get("/intervals/12345")
    assert detail["interval_start_s"] == settled
    assert detail["prices_per_kwh"]
    assert detail["ac_check"]["converged"]
    assert detail["settlement"]["state"] == "settled"
    assert detail["settlement"]["tx_hash"].startswith("0x")
    stored = api.service.runtime.store.settlement(settled)
    assert detail["settlement"]["batch_id"] == stored["batch_id"]
    assert audit["record"]["interval"] == settled
    assert len(audit["record_hash"]) == 64
    assert missing.status_code == 404
    assert missing.json()["code"] == "unknown_interval"


def test_current_interval_and_gate_closure(api: Api) -> None:
    with api.client("alice") as http:
        now = http.get("/intervals/current").json()
    length = api.service.site.interval_s
    assert now["now_s"] == int(api.clock().timestamp())
    assert now["current_interval_start_s"] == api.intervals[-1] + length
    assert now["next_interval_start_s"] == now["current_interval_start_s"] + length
    lead = api.service.site.gate_closure_s
    assert now["gate_closure_s"] == now["next_interval_start_s"] - lead
    assert now["seconds_to_gate_closure"] == now["gate_closure_s"] - now["now_s"]


# ------------------------------------------------------------------------------ orders
def order_payload(api: Api, who: str, *, nonce: int, energy_wh: int = 1_000) -> dict[str, Any]:
    account = derive_account(who)
    client = api.service.runtime.client
    now_s = int(api.clock().timestamp())
    start = now_s - now_s % api.service.site.interval_s + 2 * api.service.site.interval_s
    message = {
        "participant": str(account.address),
        "intervalStart": start,
        "side": int(OrderSide.BUY),
        "energyWh": energy_wh,
        "limitPrice": 250_000,
        "nonce": nonce,
        "deadline": now_s + 600,
    }
    return signed_payload(
        MessageKind.ORDER,
        message,
        account,
        chain_id=client.chain_id(),
        verifying_contract=str(client.settlement.address),
    )


def test_signed_order_is_acknowledged_once_and_listed_for_its_owner(api: Api) -> None:
    payload = order_payload(api, "bob", nonce=7)
    with api.client() as http:  # the signature authenticates: no session needed
        first = http.post("/orders", json=payload)
        again = http.post("/orders", json=payload)
        reused = http.post("/orders", json=order_payload(api, "bob", nonce=7, energy_wh=2_000))
        as_standing = http.post("/standing-orders", json=payload)
        forged = http.post("/orders", json={**payload, "signature": "0x" + "11" * 65})
        junk = http.post("/orders", json={"typedData": "nope", "signature": 5})
    assert first.status_code == 201, first.text
    ack = first.json()
    assert ack["kind"] == "Order"
    assert ack["participant"] == "bob"
    assert not ack["duplicate"]
    assert again.status_code == 200
    assert again.json() == {**ack, "duplicate": True}
    assert reused.status_code == 409
    assert reused.json()["code"] == "nonce_reused"
    assert as_standing.status_code == 400
    assert as_standing.json()["code"] == "wrong_kind"
    assert 400 <= forged.status_code < 500
    assert set(forged.json()) == {"code", "reason"}
    assert junk.status_code == 422
    with api.client("bob") as http:
        bobs = http.get("/orders").json()["items"]
    with api.client("alice") as http:
        alices = http.get("/orders").json()["items"]
    with api.client(OPERATOR) as http:
        everyone = http.get("/orders").json()["items"]
    assert [o["digest"] for o in bobs] == [ack["digest"]]
    assert alices == []
    assert ack["digest"] in {o["digest"] for o in everyone}


def test_signed_orders_paginate(api: Api) -> None:
    with api.client() as http:
        for nonce in range(100, 105):
            assert (
                http.post("/orders", json=order_payload(api, "dave", nonce=nonce)).status_code
                == 201
            )
    with api.client("dave") as http:
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/orders", params=params).json()
            seen += [o["digest"] for o in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        whole = [o["digest"] for o in http.get("/orders").json()["items"]]
        bad = http.get("/orders", params={"cursor": "garbage"})
        unknown = http.get("/orders", params={"cursor": "0x" + "ab" * 32})
    assert len(whole) == 5
    assert seen == whole
    assert bad.status_code == 422
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "unknown_cursor"


# ------------------------------------------------------------------------------ operator
def test_site_actions_are_the_operators(api: Api) -> None:
    start = api.intervals[-1] + 3600
    exclusion = {
        "kind": "participant",
        "target": "erin",
        "start_s": start,
        "duration_s": 3600,
        "reason": "meter replacement",
    }
    for who in ("alice", AUDITOR):
        with api.client(who) as http:
            assert http.post("/market/pause", json={"reason": "x"}).status_code == 403
            assert http.post("/market/exclusions", json=exclusion).status_code == 403
    with api.client(OPERATOR) as http:
        paused = http.post("/market/pause", json={"reason": "feeder maintenance"}).json()
        made = http.post("/market/exclusions", json=exclusion)
        unknown = http.post("/market/exclusions", json={**exclusion, "target": "zed"})
        empty = http.post("/market/exclusions", json={**exclusion, "duration_s": 0})
        resumed = http.post("/market/resume").json()
    assert paused["paused"]
    assert paused["paused_reason"] == "feeder maintenance"
    assert paused["paused_by"] == str(derive_account(OPERATOR).address)
    assert made.status_code == 201
    assert made.json()["reason"] == "meter replacement"
    assert unknown.status_code == 422
    assert empty.status_code == 422
    assert not resumed["paused"]
    with api.client(AUDITOR) as http:
        market = http.get("/market").json()
    assert [e["target"] for e in market["exclusions"]] == ["erin"]


# ------------------------------------------------------------------------------ events
def test_events_stream_receives_a_published_event(api: Api) -> None:
    hub = api.service.events
    received: list[dict[str, Any]] = []

    async def listen() -> None:
        headers = {"Authorization": f"Bearer {api.token('alice')}"}
        async with (
            httpx.AsyncClient(base_url=api.site, headers=headers, timeout=30) as http,
            http.stream("GET", "/events") as reply,
        ):
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/event-stream")
            event: dict[str, str] = {}
            async for line in reply.aiter_lines():
                if line.startswith(("event:", "data:", "id:")):
                    key, _, value = line.partition(":")
                    event[key] = value.strip()
                elif not line and "data" in event:
                    received.append(event)
                    return

    def publish_when_subscribed() -> None:
        wait(lambda: hub.subscribers >= 1, "the stream to subscribe")
        hub.publish({"type": "interval", "interval_start_s": 42, "status": "cleared"})

    publisher = threading.Thread(target=publish_when_subscribed, daemon=True)
    publisher.start()
    asyncio.run(asyncio.wait_for(listen(), 60))
    publisher.join(timeout=30)
    assert received[0]["event"] == "interval"
    data = json.loads(received[0]["data"])
    assert data["interval_start_s"] == 42
    assert received[0]["id"] == str(data["seq"])
    wait(lambda: hub.subscribers == 0, "the stream to unsubscribe")


def test_events_stream_ends_when_its_session_does(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes_events, "SESSION_CHECK_S", 0.2)
    token = sign_in(api, "dave")  # a session of its own: signed out below
    received: list[dict[str, str]] = []

    async def listen() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(base_url=api.site, headers=headers, timeout=30) as http,
            http.stream("GET", "/events") as reply,
        ):
            assert reply.status_code == 200
            event: dict[str, str] = {}
            async for line in reply.aiter_lines():  # ends when the server closes the stream
                if line.startswith(("event:", "data:")):
                    key, _, value = line.partition(":")
                    event[key] = value.strip()
                elif not line and "data" in event:
                    received.append(event)
                    event = {}

    def sign_out_when_subscribed() -> None:
        wait(lambda: api.service.events.subscribers >= 1, "the stream to subscribe")
        with httpx.Client(base_url=api.site, timeout=30) as http:
            reply = http.post("/auth/signout", headers={"Authorization": f"Bearer {token}"})
            assert reply.status_code == 200, reply.text

    signer = threading.Thread(target=sign_out_when_subscribed, daemon=True)
    signer.start()
    asyncio.run(asyncio.wait_for(listen(), 60))
    signer.join(timeout=30)
    assert [e["event"] for e in received] == ["session_ended"]
    assert json.loads(received[0]["data"])["code"] == "no_session"
    wait(lambda: api.service.events.subscribers == 0, "the stream to unsubscribe")


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/intervals?limit=-1", None),
        ("GET", "/intervals?cursor=%00", None),
        ("GET", "/intervals/99999999999999999999", None),
        ("GET", "/intervals/-5", None),
        ("GET", "/participants/bob/trades?start_s=abc", None),
        ("GET", "/participants/bob/trades?start_s=0&end_s=99999999999999", None),
        ("POST", "/orders", {"typedData": {"primaryType": "Order"}, "signature": "0x"}),
        ("POST", "/orders", {"typedData": {}, "signature": "0x", "extra": 1}),
        ("POST", "/market/exclusions", {"kind": "planet"}),
        ("POST", "/auth/signin", {"message": "hello", "signature": "0x00"}),
    ],
)
def test_bad_input_is_a_4xx_with_a_code(
    api: Api, method: str, path: str, body: dict[str, Any] | None
) -> None:
    with api.client(OPERATOR) as http:
        reply = http.request(method, path, json=body)
    assert 400 <= reply.status_code < 500, reply.text
    assert set(reply.json()) == {"code", "reason"}


# ------------------------------------------------------------------------------ fuzz
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_paths = st.sampled_from(
    [
        "/intervals",
        "/intervals/current",
        "/devices",
        "/orders",
        "/standing-orders",
        "/cancels",
        "/market",
        *(f"/participants/alice/{r}" for r in PARTICIPANT_ROUTES),
        *(f"/participants/bob/{r}" for r in PARTICIPANT_ROUTES),
    ]
)
_params = st.dictionaries(
    st.sampled_from(["limit", "cursor", "start_s", "end_s", "x"]),
    st.text(max_size=24) | st.integers(-(2**70), 2**70).map(str),
    max_size=4,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=_paths, params=_params, who=st.sampled_from(["alice", OPERATOR, None]))
def test_fuzzed_reads_never_fail_on_the_server(
    api: Api, path: str, params: dict[str, str], who: str | None
) -> None:
    with api.client(who) as http:
        reply = http.get(path, params=params)
    assert reply.status_code < 500, reply.text
    if reply.status_code >= 400:
        assert set(reply.json()) == {"code", "reason"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(
        [
            "/orders",
            "/standing-orders",
            "/cancels",
            "/auth/signin",
            "/market/exclusions",
            "/market/pause",
        ]
    ),
    body=_json_values,
)
def test_fuzzed_writes_are_refused_with_a_code(api: Api, path: str, body: object) -> None:
    with api.client(OPERATOR) as http:
        reply = http.post(path, json=body)
    assert reply.status_code < 500, reply.text
    if reply.status_code >= 400:
        assert set(reply.json()) == {"code", "reason"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from(
        ["participant", "intervalStart", "side", "energyWh", "limitPrice", "nonce", "deadline"]
    ),
    value=_json_values,
)
def test_fuzzed_typed_data_is_refused_with_a_code(api: Api, field: str, value: object) -> None:
    payload = order_payload(api, "erin", nonce=9_999)
    payload["typedData"]["message"][field] = value
    with api.client() as http:
        reply = http.post("/orders", json=payload)
    assert reply.status_code < 500, reply.text
    if reply.status_code >= 400:
        assert set(reply.json()) == {"code", "reason"}
