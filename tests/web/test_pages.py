"""The dashboard's pages in Debian's Chromium against a real ``peergrid serve --demo``
(simulators, the embedded chain, 20-second intervals), signed in with an injected test wallet.

Every page loads with no console error and no failed request, at desktop and phone width
(screenshots in the artifacts folder); the live page updates within 2 s of an interval's
result on the event stream; the map has one element per in-service bus and its colours are
the stored AC check's; a prosumer places and cancels an order by signing in the page, and the
API shows both; a prosumer cannot open another prosumer's page.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from browserkit import (
    AUDITOR,
    OPERATOR,
    BrowserPage,
    MakeWallet,
    NewPage,
    Served,
    TestWallet,
    api_token,
)
from playwright.sync_api import expect

HOME = {"operator": "operator", "auditor": "auditor", "prosumer": "prosumer/"}
V_EDGES = (0.95, 0.97, 0.99, 1.01, 1.03, 1.05)  # map.js: classes v0..v6
L_EDGES = (20, 40, 60, 80, 100)  # map.js: classes l0..l5


def v_class(vm: float) -> str:
    return f"v{sum(vm >= e for e in V_EDGES)}"


def l_class(pct: float) -> str:
    return f"l{sum(pct >= e for e in L_EDGES)}"


def sign_in(page: BrowserPage, served: Served, role: str) -> None:
    """Sign in on the site's sign-in page through the wallet; land on the role's home."""
    page.page.goto(f"{served.base_url}/ui/sites/{served.site_id}/")
    page.page.get_by_role("button", name="Sign in with wallet").click()
    page.page.wait_for_url(f"**/ui/sites/{served.site_id}/{HOME[role]}**", timeout=30_000)
    expect(page.page.locator("#who")).to_contain_text(role)


def ui(served: Served, path: str) -> str:
    return f"{served.base_url}/ui/sites/{served.site_id}/{path}"


def wait_for_cleared(served: Served, token: str, timeout_s: float = 120.0) -> int:
    """The first interval with a result (the served demo clears one every 20 s)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        while time.monotonic() < deadline:
            items = http.get(f"{served.site_url}/intervals", params={"limit": 1}).json()["items"]
            if items and items[0]["status"] == "cleared":
                return int(items[0]["interval_start_s"])
            time.sleep(0.5)
    pytest.fail("no interval cleared in time")


LOADED = {
    "operator": "#part-result dl, #part-result p.muted",
    "map": "#map[data-rendered]",
    "history": "body[data-history-loaded]",
    "auditor": "#records",
    "prosumer/bob": "body[data-prosumer-loaded]",
    "governance": "#governance",
}


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
@pytest.mark.parametrize(
    ("label", "role", "pages"),
    [
        (OPERATOR, "operator", ["operator", "map", "history", "auditor", "governance"]),
        (AUDITOR, "auditor", ["auditor", "operator", "history", "governance"]),
        ("bob", "prosumer", ["prosumer/bob", "map", "history", "governance"]),
    ],
)
def test_every_page_loads_clean(
    new_page: NewPage,
    served: Served,
    wallet: MakeWallet,
    label: str,
    role: str,
    pages: list[str],
    viewport: str,
) -> None:
    wait_for_cleared(served, api_token(served, OPERATOR))
    page = new_page(viewport, wallet=wallet(label))
    sign_in(page, served, role)
    for path in pages:
        page.page.goto(ui(served, path))
        expect(page.page.locator("#main")).to_be_visible(timeout=30_000)
        page.page.locator(LOADED[path]).first.wait_for(timeout=30_000)
        expect(page.page.locator("#refused")).to_be_hidden()
        page.screenshot(path.replace("/", "-"))
    page.assert_clean()


def _next_interval_event(served: Served, token: str, box: dict[str, Any]) -> None:
    """Read the event stream until an ``interval`` event; note when it arrived."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    with httpx.stream("GET", f"{served.site_url}/events", headers=headers, timeout=120) as reply:
        box["open"] = time.monotonic()
        kind = ""
        for line in reply.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind == "interval":
                box["at"] = time.monotonic()
                box["event"] = json.loads(line.split(":", 1)[1])
                return


def test_the_live_page_updates_within_2_s_of_an_interval_result(
    new_page: NewPage, served: Served, wallet: MakeWallet
) -> None:
    page = new_page("desktop", wallet=wallet(OPERATOR))
    sign_in(page, served, "operator")
    expect(page.page.locator("body[data-live]")).to_have_count(1, timeout=30_000)
    box: dict[str, Any] = {}
    listener = threading.Thread(
        target=_next_interval_event, args=(served, api_token(served, OPERATOR), box)
    )
    listener.start()
    listener.join(timeout=90)
    assert "event" in box, "no interval result within 90 s"
    interval = box["event"]["interval_start_s"]
    shown = page.page.locator(f'#last-result[data-interval="{interval}"]')
    shown.wait_for(timeout=10_000)
    took = time.monotonic() - box["at"]
    assert took <= 2.0, f"the page showed interval {interval} {took:.2f} s after its event"
    expect(page.page.locator("#map")).to_have_attribute("data-interval", str(interval))
    page.screenshot("updated")
    page.assert_clean()


def test_the_map_has_a_bus_per_element_and_colours_from_the_ac_check(
    new_page: NewPage, served: Served, wallet: MakeWallet
) -> None:
    token = api_token(served, OPERATOR)
    wait_for_cleared(served, token)
    page = new_page("desktop", wallet=wallet(OPERATOR))
    sign_in(page, served, "operator")
    page.page.goto(ui(served, "map"))
    svg = page.page.locator("#map[data-rendered]")
    svg.wait_for(timeout=30_000)
    expect(page.page.locator("#map")).not_to_have_attribute("data-interval", "", timeout=30_000)
    # freeze what is shown: read the interval the map paints, then its stored AC results
    interval = int(page.page.get_attribute("#map", "data-interval") or 0)
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        geo = http.get(f"{served.site_url}/grid/map").json()
        state = http.get(
            f"{served.site_url}/grid/state", params={"interval_start_s": interval}
        ).json()
    in_service = [i for i, up in enumerate(geo["buses"]["in_service"]) if up]
    circles = page.page.locator("#map-buses circle.bus")
    expect(circles).to_have_count(len(in_service))
    drawn = circles.evaluate_all(
        "cs => cs.map(c => [Number(c.dataset.i), c.getAttribute('class')])"
    )
    assert sorted(i for i, _ in drawn) == in_service
    assert state["has_ac_detail"]
    for i, classes in drawn:
        vm = state["vm_pu"][geo["buses"]["name"][i]]
        assert v_class(vm) in classes.split(), (geo["buses"]["name"][i], vm, classes)
    lines = page.page.locator("#map-branches line.branch").evaluate_all(
        "ls => ls.map(l => [Number(l.dataset.k), l.getAttribute('class')])"
    )
    assert state["loading_pct"]
    checked = 0
    for k, classes in lines:
        pct = state["loading_pct"].get(geo["branches"]["id"][k])
        if pct is not None:  # a branch the AC check reports (every line and transformer)
            assert l_class(pct) in classes.split(), (geo["branches"]["id"][k], pct, classes)
            checked += 1
    assert checked == len(state["loading_pct"])
    # hover a bus (the one farthest from any other, so nothing covers it): name, voltage, price
    xs, ys = geo["buses"]["x"], geo["buses"]["y"]

    def room(i: int) -> float:
        return min((xs[i] - xs[j]) ** 2 + (ys[i] - ys[j]) ** 2 for j in in_service if j != i)

    alone = max(in_service, key=room)
    first = geo["buses"]["name"][alone]
    page.page.locator(f'#map-buses circle[data-i="{alone}"]').hover()
    tip = page.page.locator("#map-tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(first)
    expect(tip).to_contain_text(f"{state['vm_pu'][first]:.4f} p.u.")
    # the keyboard zooms and pans the focused map
    whole = page.page.get_attribute("#map", "viewBox")
    page.page.locator("#map").focus()
    page.page.keyboard.press("+")
    zoomed_in = page.page.get_attribute("#map", "viewBox") or ""
    assert float(zoomed_in.split()[2]) < float((whole or "0 0 1 1").split()[2])
    page.page.keyboard.press("ArrowRight")
    assert page.page.get_attribute("#map", "viewBox") != zoomed_in
    page.page.keyboard.press("0")
    assert page.page.get_attribute("#map", "viewBox") == whole
    # zoom to one feeder: the view shrinks to it
    page.page.select_option("#map-feeder", index=1)
    assert page.page.get_attribute("#map", "viewBox") != whole
    # the interval's trades between buses, drawn as flows
    assert state["flows"], "the demo's intervals trade between buses"
    expect(page.page.locator("#map-flows line.flow")).to_have_count(0)
    page.page.get_by_role("checkbox", name="Trades as flows").check()
    expect(page.page.locator("#map-flows line.flow")).to_have_count(len(state["flows"]))
    page.screenshot("feeder")
    page.assert_clean()


def _orders(served: Served, token: str) -> dict[str, str]:
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        items = http.get(f"{served.site_url}/orders", params={"limit": 100}).json()["items"]
    return {o["digest"]: o["status"] for o in items}


def test_a_prosumer_places_and_cancels_an_order_by_signing_in_the_page(
    new_page: NewPage, served: Served, wallet: MakeWallet
) -> None:
    signer: TestWallet = wallet("dave")
    page = new_page("phone", wallet=signer)
    sign_in(page, served, "prosumer")
    page.page.locator("body[data-prosumer-loaded]").wait_for(timeout=30_000)
    token = api_token(served, "dave")
    before = _orders(served, token)
    page.page.select_option("#o-interval", index=3)  # a minute ahead: still open
    page.page.get_by_label("Side").select_option("sell")
    page.page.get_by_label("Energy [Wh]").fill("321")
    page.page.get_by_label("Limit price [/kWh]").fill("0.123456")
    page.page.get_by_role("button", name="Sign and place").click()
    expect(page.page.locator("#order-msg")).to_contain_text("Order placed", timeout=30_000)
    placed = {d: s for d, s in _orders(served, token).items() if d not in before}
    assert list(placed.values()) == ["accepted"], placed
    [digest] = placed
    stored = next(
        o
        for o in httpx.get(
            f"{served.site_url}/orders",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).json()["items"]
        if o["digest"] == digest
    )
    assert int(stored["message"]["energyWh"]) == 321
    assert int(stored["message"]["limitPrice"]) == 123_456
    assert int(stored["message"]["side"]) == 1  # sell
    assert [m for m, _ in signer.calls].count("eth_signTypedData_v4") == 1
    row = page.page.locator(f'#orders tr[data-digest="{digest}"]')
    row.get_by_role("button", name="Cancel").click()
    expect(page.page.locator("#order-msg")).to_contain_text("Cancelled", timeout=30_000)
    assert _orders(served, token)[digest] == "cancelled"
    # a standing order: sell the surplus at no less than 0.09/kWh for the next 2 hours
    page.page.get_by_label("Kind").select_option("0")
    page.page.get_by_label("Price [/kWh]", exact=True).fill("0.09")
    page.page.get_by_label("For the next [hours]").fill("2")
    page.page.get_by_role("button", name="Sign and set").click()
    expect(page.page.locator("#order-msg")).to_contain_text("Standing order set", timeout=30_000)
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        standing = http.get(f"{served.site_url}/standing-orders").json()["items"][0]
    assert standing["status"] == "accepted"
    assert int(standing["message"]["price"]) == 90_000
    assert standing["valid_until_s"] - standing["valid_from_s"] <= 2 * 3600
    page.screenshot("cancelled")
    page.assert_clean()


def test_a_prosumer_cannot_open_another_prosumers_page(
    new_page: NewPage, served: Served, wallet: MakeWallet
) -> None:
    page = new_page("desktop", wallet=wallet("bob"))
    requested: list[str] = []
    page.page.on("request", lambda r: requested.append(r.url))
    sign_in(page, served, "prosumer")
    page.page.goto(ui(served, "prosumer/alice"))
    refusal = page.page.locator("#refused")
    expect(refusal).to_be_visible(timeout=30_000)
    expect(refusal).to_contain_text("only their own account")
    expect(page.page.locator("#main")).to_be_hidden()
    assert not [u for u in requested if "/participants/alice" in u]
    # and the API refuses it too, whatever a page does
    reply = httpx.get(
        f"{served.site_url}/participants/alice/balances",
        headers={"Authorization": f"Bearer {api_token(served, 'bob')}"},
        timeout=30,
    )
    assert reply.status_code == 403
    page.page.goto(ui(served, "auditor"))
    expect(page.page.locator("#refused")).to_contain_text("for operators and auditors")
    page.assert_clean()
