"""The dashboard's API routes and pages against a real server (the demo site, 3 intervals
cleared, 2 settled on the embedded chain): map, grid state, history (JSON and CSV), status,
audit records, verify (and a tampered record caught), anchors, exports, the pages' headers,
and the nonce that carries the message a browser wallet signs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serverkit import Api, serve_demo
from sqlalchemy import update

from adapters.chain import derive_account, siwe
from controller.api.web.pages import CSP, STATIC
from controller.store import audit


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serve_demo(tmp_path_factory.mktemp("dash")) as served:
        yield served


def _record(api: Api, interval: int) -> dict:
    with api.client("demo-operator") as http:
        reply = http.get(f"/intervals/{interval}/audit")
    assert reply.status_code == 200, reply.text
    return reply.json()["record"]


def test_map_has_every_bus_and_the_ac_checks_branch_ids(api: Api) -> None:
    net = api.service.runtime.grid.net  # type: ignore[union-attr]
    with api.client("demo-operator") as http:
        geo = http.get("/grid/map").json()
    assert len(geo["buses"]["name"]) == len(net.bus)
    assert sum(geo["buses"]["in_service"]) == int(net.bus["in_service"].sum())
    xs, ys = geo["buses"]["x"], geo["buses"]["y"]
    assert all(0 <= x <= geo["width"] for x in xs)
    assert all(0 <= y <= geo["height"] for y in ys)
    checked = {b["branch"] for b in _record(api, api.intervals[0])["ac_check"]["branches"]}
    assert checked <= set(geo["branches"]["id"])  # every branch the AC check reports is drawn
    n = len(xs)
    assert all(
        0 <= f < n and 0 <= t < n
        for f, t in zip(geo["branches"]["from"], geo["branches"]["to"], strict=True)
    )
    # markers: all participants for the operator, only its own for a prosumer
    assert len(geo["participants"]) == len(api.service.site.participants)
    with api.client("bob") as http:
        mine = http.get("/grid/map").json()["participants"]
    assert [m["participant"] for m in mine] == ["bob"]
    assert mine[0]["at"] == geo["buses"]["name"].index(mine[0]["bus"])


def test_grid_state_is_the_stored_ac_check_and_a_prosumer_sees_only_its_flows(api: Api) -> None:
    interval = api.intervals[0]
    record = _record(api, interval)
    with api.client("demo-operator") as http:
        state = http.get("/grid/state", params={"interval_start_s": interval}).json()
    assert state["has_ac_detail"]
    assert state["vm_pu"] == {b["name"]: b["vm_pu"] for b in record["ac_check"]["buses"]}
    assert min(state["vm_pu"].values()) == pytest.approx(state["vm_min_pu"])
    assert state["loading_pct"] == {
        b["branch"]: b["loading_pct"] for b in record["ac_check"]["branches"]
    }
    assert state["prices_per_kwh"] == record["result"]["prices"]
    trades = record["result"]["trades"]
    moved = sum(t["energy_wh"] for t in trades if t["seller_bus"] != t["buyer_bus"])
    assert sum(f["energy_wh"] for f in state["flows"]) == moved
    with api.client("bob") as http:
        own = http.get("/grid/state", params={"interval_start_s": interval}).json()
    bobs = sum(
        t["energy_wh"]
        for t in trades
        if "bob" in (t["seller"], t["buyer"]) and t["seller_bus"] != t["buyer_bus"]
    )
    assert sum(f["energy_wh"] for f in own["flows"]) == bobs < moved
    with api.client("demo-operator") as http:
        latest = http.get("/grid/state").json()
        assert latest["interval_start_s"] == max(api.intervals)
        assert http.get("/grid/state", params={"interval_start_s": 12}).status_code == 404


def test_history_json_and_csv_agree(api: Api) -> None:
    lo, hi = api.intervals[0], api.intervals[-1] + 900
    with api.client("bob") as http:
        body = http.get("/history", params={"start_s": lo, "end_s": hi}).json()
        text = http.get("/history", params={"start_s": lo, "end_s": hi, "format": "csv"})
    assert [r["interval_start_s"] for r in body["rows"]] == api.intervals
    assert text.headers["content-type"].startswith("text/csv")
    assert "attachment" in text.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(text.text)))
    assert table[0] == [h for _k, h in body["columns"]]
    assert len(table) == 1 + len(body["rows"])
    keys = [k for k, _h in body["columns"]]
    for line, row in zip(table[1:], body["rows"], strict=True):
        for key, value in zip(keys, line, strict=True):
            if isinstance(row[key], int) and not isinstance(row[key], bool):
                assert int(value) == row[key], key
    with api.client("bob") as http:
        first = http.get("/history", params={"start_s": 0, "end_s": 40 * 86_400}).json()
        assert first["end_s"] == first["next_start_s"] == 31 * 86_400  # the rest: ask again
        rest = http.get("/history", params={"start_s": first["next_start_s"], "end_s": 40 * 86_400})
        assert rest.json()["next_start_s"] is None
        assert body["next_start_s"] is None
        assert http.get("/participants/alice/history").status_code == 403
        mine = http.get("/participants/bob/history", params={"start_s": lo, "end_s": hi})
    assert mine.status_code == 200
    assert mine.json()["rows"], "bob bought in the demo's intervals"


def test_status_alerts_and_records_follow_the_roles(api: Api) -> None:
    with api.client("demo-operator") as http:
        status = http.get("/status").json()
        records = http.get("/audit/records").json()
        assert http.get("/alerts").status_code == 200
    assert status["now"]["phase"] in ("collecting orders", "gate closed", "cleared", "settled")
    assert {d["device_id"] for d in status["devices"]} == {d.id for d in api.service.site.devices}
    assert isinstance(status["alerts"], list)
    assert [r["interval_start_s"] for r in records["items"]] == sorted(api.intervals, reverse=True)
    settled = [r for r in records["items"] if r["settlement_state"] == "settled"]
    assert settled
    assert all(r["tx_hash"] and r["block_number"] for r in settled)
    with api.client("bob") as http:
        mine = http.get("/status").json()
        assert mine["alerts"] == []
        assert {d["participant"] for d in mine["devices"]} == {"bob"}
        assert http.get("/audit/records").status_code == 403
        assert http.get("/alerts").status_code == 403
        assert http.post(f"/intervals/{api.intervals[0]}/verify").status_code == 403
        assert http.get("/audit/export").status_code == 403


def test_anchor_matches_the_chain(api: Api) -> None:
    with api.client("demo-auditor") as http:
        records = http.get("/audit/records").json()["items"]
        settled = next(r for r in records if r["settlement_state"] == "settled")
        anchor = http.get(f"/intervals/{settled['interval_start_s']}/anchor").json()
        assert http.get("/intervals/12/anchor").status_code == 404
    assert anchor["matches"] is True
    assert anchor["tx_hash"] == settled["tx_hash"]
    assert anchor["chain"]["batch_id"] == settled["batch_id"].removeprefix("0x").lower()


def test_export_csv(api: Api) -> None:
    lo, hi = api.intervals[0], api.intervals[-1] + 900
    with api.client("demo-auditor") as http:
        reply = http.get("/audit/export", params={"table": "trades", "start_s": lo, "end_s": hi})
        assert http.get("/audit/export", params={"table": "nope"}).status_code == 422
        empty = http.get("/audit/export", params={"table": "trades", "start_s": 9, "end_s": 3})
        assert empty.status_code == 200
        assert empty.text.startswith("interval_start,") or empty.text.count("\r\n") == 1
    assert reply.status_code == 200, reply.text
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert rows
    assert {"interval_id", "energy_wh"} <= set(rows[0])


def test_verify_one_interval_and_catch_a_tampered_record(api: Api) -> None:
    interval = api.intervals[0]
    with api.client("demo-auditor") as http:
        good = http.post(f"/intervals/{interval}/verify").json()
        listed = http.get("/audit/records").json()["items"]
    assert good["verified"] is True, good["problems"]
    assert good["chain_checked"] is True
    assert next(r for r in listed if r["interval_start_s"] == interval)["verification"] == good
    store = api.service.runtime.store
    original = _record(api, interval)
    tampered = json.loads(json.dumps(original))
    tampered["result"]["prices"] = {k: v + 1 for k, v in tampered["result"]["prices"].items()}
    with store.engine.begin() as conn:
        conn.execute(update(audit).where(audit.c.interval_id == interval).values(record=tampered))
    try:
        with api.client("demo-auditor") as http:
            bad = http.post(f"/intervals/{interval}/verify").json()
    finally:
        with store.engine.begin() as conn:
            conn.execute(
                update(audit).where(audit.c.interval_id == interval).values(record=original)
            )
    assert bad["verified"] is False
    assert bad["problems"], "a changed price must be found"


def test_pages_are_html_with_a_strict_policy_and_static_files_are_shipped(api: Api) -> None:
    site = api.service.site_id
    with httpx.Client(base_url=api.base, timeout=30) as http:
        root = http.get("/", follow_redirects=False)
        assert root.status_code == 307
        assert root.headers["location"] == f"/ui/sites/{site}/"
        for page in ("", "operator", "map", "history", "auditor", "prosumer/bob"):
            reply = http.get(f"/ui/sites/{site}/{page}")
            assert reply.status_code == 200, page
            assert reply.headers["content-security-policy"] == CSP
            assert '<script src="/static/peergrid.js"></script>' in reply.text
            assert "'unsafe-inline'" not in reply.headers["content-security-policy"]
        assert http.get(f"/ui/sites/{site}/nope").status_code == 404
        assert http.get(f"/ui/sites/{site}/prosumer/mallory").status_code == 404
        assert http.get("/ui/sites/other/operator").status_code == 404
        # fragments need the session, like the API
        assert http.get(f"/ui/sites/{site}/parts/now").status_code == 401
        for name in ("peergrid.js", "map.js", "vendor/htmx.min.js", "vendor/uPlot.iife.min.js"):
            served = http.get(f"/static/{name}")
            assert served.status_code == 200
            assert served.content == (STATIC / name).read_bytes()
    with api.client("demo-operator") as http:
        part = httpx.get(
            f"{api.base}/ui/sites/{site}/parts/result",
            headers={"Authorization": f"Bearer {api.token('demo-operator')}"},
        )
    assert part.status_code == 200
    assert f'data-interval="{max(api.intervals)}"' in part.text


def test_nonce_with_an_address_carries_the_message_to_sign(api: Api) -> None:
    account = derive_account("bob")
    with httpx.Client(base_url=api.site, timeout=30) as http:
        nonce = http.post("/auth/nonce", json={"address": account.address.lower()}).json()
        text = nonce["message"]
        assert account.address in text  # EIP-55, whatever case the wallet gave
        assert f"Nonce: {nonce['nonce']}" in text
        signed = http.post(
            "/auth/signin", json={"message": text, "signature": siwe.sign(text, account.key)}
        )
        assert signed.status_code == 200, signed.text
        assert signed.json()["principal"]["participant"] == "bob"
        assert http.post("/auth/nonce", json={"address": "0x12"}).status_code == 422
        assert "message" not in http.post("/auth/nonce").json() or (
            http.post("/auth/nonce").json()["message"] is None
        )


def test_vendored_scripts_match_their_manifest() -> None:
    import hashlib

    manifest = json.loads((STATIC / "vendor" / "VENDOR.json").read_text())
    assert {m["package"] for m in manifest} == {"htmx.org", "uplot", "swagger-ui-dist"}
    for entry in manifest:
        data = (STATIC / "vendor" / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]
    assert any(m["package"] == "htmx.org" and m["version"].startswith("2.") for m in manifest)
    assert Path(STATIC / "vendor" / "htmx.LICENSE").exists()
