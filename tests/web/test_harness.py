"""The browser harness itself: Debian's Chromium, the served demo, the clean-page check (and
that it catches what it must), screenshots, and the injected wallet signing for real: an
EIP-4361 sign-in and an EIP-712 order through the real API, from a page."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import playwright
import pytest
from browserkit import (
    AUDITOR,
    CHROMIUM,
    OPERATOR,
    SIGN_IN_JS,
    UNAUTHORIZED,
    UNSUPPORTED_METHOD,
    USER_REJECTED,
    BrowserMissing,
    MakeWallet,
    NewPage,
    PageNotClean,
    Served,
    api_token,
    chromium_path,
)
from eth_account import Account
from eth_account.messages import encode_defunct
from playwright.sync_api import Browser

from adapters.chain import siwe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SIGN_IN_PAGE = """
<!doctype html><html lang="en"><head><meta charset="utf-8"><title>sign in</title></head>
<body><button id="signin">Sign in with your wallet</button><output id="who"></output>
<script>
const signIn = %s;
document.getElementById('signin').addEventListener('click', async () => {
  const who = document.getElementById('who');
  try {
    const r = await signIn([%s]);
    who.textContent = r.me ? `${r.me.role} ${r.me.participant ?? '-'}` : `refused ${r.status}`;
  } catch (e) {
    who.textContent = `wallet error ${e.code}: ${e.message}`;
  }
});
</script></body></html>
"""


def sign_in_page(served: Served) -> str:
    """A page with a sign-in button (the SIGN_IN_JS flow), for ``page.set_content``."""
    return SIGN_IN_PAGE % (SIGN_IN_JS, json.dumps(f"/v1/sites/{served.site_id}"))


# ----------------------------------------------------------------------------- the browser


def test_the_browser_is_debian_s_chromium(browser: Browser) -> None:
    assert chromium_path() == os.environ.get("PEERGRID_CHROMIUM", CHROMIUM)  # /usr/bin/chromium
    out = subprocess.run(  # noqa: S603 - a fixed command
        [chromium_path(), "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "Chromium" in out
    assert browser.version.split(".")[0] in out


def test_a_missing_chromium_fails_naming_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEERGRID_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(BrowserMissing, match=r"apt-get install -y chromium"):
        chromium_path()
    assert issubclass(BrowserMissing, AssertionError)  # a failure, never a skip


def test_playwright_brings_no_browser_of_its_own() -> None:
    """``pip install playwright`` ships no Chromium: ``executable_path`` is the only one."""
    root = Path(playwright.__file__).parent
    shipped = [p for p in root.rglob("chrome*") if p.is_file() and p.stat().st_size > 10_000_000]
    assert shipped == []


# ----------------------------------------------------------------------------- the server


def test_the_served_demo_answers(served: Served) -> None:
    assert httpx.get(f"{served.base_url}/health", timeout=30).json()["status"] == "ok"
    assert served.site["site_id"] == served.site_id
    assert {"alice", "bob"} <= set(served.site["participants"])
    assert served.site["interval_s"] > 0
    assert served.process.poll() is None


# ----------------------------------------------------------------------------- clean pages


def test_a_plain_page_of_the_served_origin_is_clean(new_page: NewPage, served: Served) -> None:
    for viewport in ("desktop", "phone"):
        page = new_page(viewport)
        page.page.goto(f"{served.base_url}/health")
        page.assert_clean()
        shot = page.screenshot()
        assert shot.name == f"test_a_plain_page_of_the_served_origin_is_clean-{viewport}.png"
        assert shot.stat().st_size > 0


def test_screenshots_go_to_the_artifacts_folder(
    new_page: NewPage, served: Served, artifacts: Path
) -> None:
    page = new_page("phone")
    page.page.goto(f"{served.base_url}/health")
    assert page.screenshot("health") == artifacts / (
        "test_screenshots_go_to_the_artifacts_folder-phone-health.png"
    )
    assert (artifacts / f"{page.name}-health.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_check_catches_a_console_error_and_an_uncaught_exception(
    new_page: NewPage, served: Served
) -> None:
    page = new_page()
    page.page.goto(f"{served.base_url}/health")
    page.assert_clean()
    page.page.evaluate("console.error('injected failure')")
    with pytest.raises(PageNotClean, match=r"console error: injected failure"):
        page.assert_clean()
    page.page.evaluate("setTimeout(() => { throw new Error('thrown later'); }, 0)")
    page.page.wait_for_function("true")  # one more turn of the page's event loop
    page.page.wait_for_timeout(50)
    with pytest.raises(PageNotClean, match=r"page error: .*thrown later"):
        page.assert_clean()


def test_the_check_catches_a_404_unless_the_test_expects_it(
    new_page: NewPage, served: Served
) -> None:
    missing = f"{served.base_url}/no-such-page"
    page = new_page()
    page.page.goto(f"{served.base_url}/health")
    status = page.page.evaluate("async (u) => (await fetch(u)).status", missing)
    assert status == 404
    with pytest.raises(PageNotClean, match=r"response: 404 GET .*/no-such-page"):
        page.assert_clean()

    expecting = new_page()
    expecting.log.expect(r"/no-such-page$", 404)
    expecting.page.goto(f"{served.base_url}/health")
    expecting.page.set_content(f'<img src="{missing}" alt="a missing picture">')
    expecting.page.wait_for_load_state("load")
    expecting.assert_clean()


def test_the_check_catches_a_request_off_this_machine(new_page: NewPage, served: Served) -> None:
    """A CDN is refused as on a machine without network, and named as leaving the machine."""
    page = new_page()
    page.page.goto(f"{served.base_url}/health")
    page.page.set_content('<script src="https://cdn.example.org/lib.js"></script><p>offline?</p>')
    with pytest.raises(PageNotClean) as caught:
        page.assert_clean()
    text = str(caught.value)
    assert "request off this machine: https://cdn.example.org/lib.js" in text
    assert "ERR_NAME_NOT_RESOLVED" in text  # and it did fail: no network here


def test_the_api_docs_page_works_offline(new_page: NewPage, served: Served) -> None:
    page = new_page()
    page.page.goto(f"{served.base_url}/docs", wait_until="load")
    # Swagger UI (shipped in the package) renders the operations of /openapi.json
    page.page.get_by_text("/v1/sites/{site}/intervals", exact=True).first.wait_for(timeout=30_000)
    page.assert_clean()


# ----------------------------------------------------------------------------- the wallet


@pytest.mark.parametrize(
    ("label", "viewport", "role"),
    [
        (OPERATOR, "desktop", "operator"),
        (AUDITOR, "desktop", "auditor"),
        ("alice", "phone", "prosumer"),
    ],
)
def test_a_page_signs_in_through_the_wallet_and_the_real_api(
    new_page: NewPage,
    served: Served,
    wallet: MakeWallet,
    label: str,
    viewport: str,
    role: str,
) -> None:
    signer = wallet(label)
    page = new_page(viewport, wallet=signer)
    page.page.goto(f"{served.base_url}/health")  # the served origin: the API needs no CORS
    page.page.set_content(sign_in_page(served))
    page.page.get_by_role("button", name="Sign in with your wallet").click()
    who = page.page.locator("#who")
    who.filter(has_text=role).wait_for(timeout=30_000)
    participant = label if role == "prosumer" else "-"
    assert who.text_content() == f"{role} {participant}"
    page.assert_clean()
    methods = [m for m, _ in signer.calls]
    assert methods == ["eth_requestAccounts", "eth_chainId", "personal_sign"]
    [(_, message)] = signer.signed
    assert siwe.format_message(siwe.parse(message)) == message  # as the server formats it
    assert siwe.parse(message).address == signer.address


def test_the_session_a_page_opened_is_the_api_s(
    new_page: NewPage, served: Served, wallet: MakeWallet
) -> None:
    page = new_page(wallet=wallet("bob"))
    page.page.goto(f"{served.base_url}/health")
    got = page.page.evaluate(SIGN_IN_JS, [f"/v1/sites/{served.site_id}"])
    assert got["status"] == 200, got
    me = httpx.get(
        f"{served.site_url}/auth/me",
        headers={"Authorization": f"Bearer {got['token']}"},
        timeout=30,
    )
    assert me.json() == got["me"]
    assert me.json()["participant"] == "bob"
    page.assert_clean()


def test_a_user_who_rejects_the_wallet_is_not_signed_in(
    new_page: NewPage, served: Served, wallet: MakeWallet
) -> None:
    signer = wallet("alice")
    signer.rejecting = True
    page = new_page(wallet=signer)
    page.page.goto(f"{served.base_url}/health")
    page.page.set_content(sign_in_page(served))
    page.page.get_by_role("button").click()
    who = page.page.locator("#who")
    who.filter(has_text="wallet error").wait_for(timeout=30_000)
    assert who.text_content() == (
        f"wallet error {USER_REJECTED}: User rejected the request (eth_requestAccounts)."
    )
    assert signer.signed == []
    page.assert_clean()


def test_the_wallet_refuses_other_methods_and_other_addresses(
    new_page: NewPage, served: Served, wallet: MakeWallet
) -> None:
    signer = wallet("alice", connected=True)
    page = new_page(wallet=signer)
    page.page.goto(f"{served.base_url}/health")
    ask = "async (a) => { try { return await window.ethereum.request(a); } catch (e) { return e.code; } }"  # noqa: E501
    assert page.page.evaluate(ask, {"method": "eth_accounts"}) == [signer.address]
    assert page.page.evaluate(ask, {"method": "eth_chainId"}) == hex(served.chain_id)
    assert page.page.evaluate(ask, {"method": "eth_sendTransaction", "params": [{}]}) == (
        UNSUPPORTED_METHOD
    )
    bob = wallet("bob").address
    assert page.page.evaluate(ask, {"method": "personal_sign", "params": ["0x68", bob]}) == (
        UNAUTHORIZED
    )
    assert page.page.evaluate("window.ethereum.isMetaMask") is False
    assert signer.signed == []


def test_the_wallet_signs_hex_messages_announces_itself_and_emits_events(
    new_page: NewPage, served: Served, wallet: MakeWallet
) -> None:
    signer = wallet("frank", connected=True)
    page = new_page(wallet=signer)
    page.page.goto(f"{served.base_url}/health")
    hello = "0x" + b"hello PeerGrid".hex()
    signature = page.page.evaluate(
        "([m, a]) => window.ethereum.request({ method: 'personal_sign', params: [m, a] })",
        [hello, signer.address.lower()],
    )
    recovered = Account.recover_message(encode_defunct(text="hello PeerGrid"), signature=signature)
    assert recovered == signer.address
    announced = page.page.evaluate(
        """() => new Promise((resolve) => {
             window.addEventListener('eip6963:announceProvider',
               (e) => resolve([e.detail.info.rdns, e.detail.provider === window.ethereum]));
             window.dispatchEvent(new Event('eip6963:requestProvider'));
           })"""
    )
    assert announced == ["org.peergrid.testwallet", True]
    page.page.evaluate(
        "window.__seen = []; window.ethereum.on('accountsChanged', (a) => window.__seen.push(a))"
    )
    signer.emit(page.page, "accountsChanged", [])
    assert page.page.evaluate("window.__seen") == [[]]
    page.assert_clean()


ORDER_JS = """
async ([sitePath, energyWh, nonce]) => {
  const site = await (await fetch(sitePath)).json();
  const [participant] = await window.ethereum.request({ method: 'eth_requestAccounts' });
  const start = site.now_s - (site.now_s % site.interval_s) + 3 * site.interval_s;
  const typedData = {
    // the server takes EIP712Domain and the primary type only (not the site's three types)
    types: { EIP712Domain: site.eip712_types.EIP712Domain, Order: site.eip712_types.Order },
    primaryType: 'Order', domain: site.eip712_domain,
    message: { participant, intervalStart: start, side: 0, energyWh, limitPrice: 250000,
               nonce: String(nonce), deadline: site.now_s + 600 },
  };
  const signature = await window.ethereum.request(
    { method: 'eth_signTypedData_v4', params: [participant, JSON.stringify(typedData)] });
  const reply = await fetch(sitePath + '/orders', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ typedData, signature }) });
  return { status: reply.status, body: await reply.json() };
}
"""


def test_a_page_places_an_order_the_wallet_signed_and_the_api_lists_it(
    new_page: NewPage, served: Served, wallet: MakeWallet
) -> None:
    signer = wallet("carol")
    page = new_page(wallet=signer)
    page.page.goto(f"{served.base_url}/health")
    path = f"/v1/sites/{served.site_id}"
    placed = page.page.evaluate(ORDER_JS, [path, 1_500, 9_001])
    assert placed["status"] == 201, placed
    assert placed["body"]["participant"] == "carol"
    [(method, typed)] = signer.signed
    assert method == "eth_signTypedData_v4"
    assert typed["message"]["participant"] == signer.address
    token = api_token(served, "carol")
    listed = httpx.get(
        f"{served.site_url}/orders", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).json()["items"]
    assert placed["body"]["digest"] in {o["digest"] for o in listed}
    page.assert_clean()


def test_the_server_refuses_an_order_signed_by_another_key(
    new_page: NewPage, served: Served, wallet: MakeWallet
) -> None:
    """The signature is what the server checks: dave's wallet cannot place erin's order."""
    signer = wallet("dave")
    page = new_page(wallet=signer)
    page.log.expect(r"/orders$")  # the refusal is this test's point
    page.page.goto(f"{served.base_url}/health")
    forged = ORDER_JS.replace(
        "message: { participant,", f"message: {{ participant: '{wallet('erin').address}',"
    )
    refused = page.page.evaluate(forged, [f"/v1/sites/{served.site_id}", 1_000, 9_002])
    assert 400 <= refused["status"] < 500, refused
    assert refused["body"]["code"] in {"bad_signature", "signer_not_participant"}
    page.assert_clean()


def test_a_request_cut_off_by_leaving_the_page_is_not_a_failure_but_an_abort_is(
    new_page: NewPage, served: Served
) -> None:
    page = new_page()
    page.page.goto(f"{served.base_url}/ui/sites/{served.site_id}/")  # a page of the site
    stream = f"/v1/sites/{served.site_id}/events"
    auth = {"Authorization": f"Bearer {api_token(served, 'bob')}"}
    # an open event stream the page itself aborts, with no navigation: a failed request
    page.page.evaluate(
        """async ([url, headers]) => {
            const c = new AbortController();
            const reply = await fetch(url, {headers, signal: c.signal});
            c.abort();
            await reply.text().catch(() => null);
        }""",
        [stream, auth],
    )
    page.page.wait_for_timeout(500)
    with pytest.raises(PageNotClean, match="ERR_ABORTED"):
        page.assert_clean()
    page.log.failed_requests.clear()
    # an open event stream when the page is left: cut off by the browser, not a failure
    page.page.evaluate(
        "([url, headers]) => { fetch(url, {headers}).catch(() => null); }", [stream, auth]
    )
    page.page.wait_for_timeout(500)
    page.page.goto(f"{served.base_url}/ui/sites/{served.site_id}/")
    page.page.wait_for_timeout(500)
    page.assert_clean()
