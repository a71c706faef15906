"""The governance page in Debian's Chromium against a real ``peergrid serve --demo``.

The served demo's community (``controller.serve.demo_community``): ten members, the demo's
vote executed (a higher reward and a 1 % fee), one proposal open with three votes. The page
shows each proposal's tallies against its quorum and its individual votes as the API (the
chain) holds them, and every change of a governed value with the proposal that made it; a
member votes by signing the EIP-712 ballot in their wallet, the API then shows the vote; a
refusal is shown with its reason. A site without governance says so, with no error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from browserkit import (
    AUDITOR,
    OPERATOR,
    MakeWallet,
    NewPage,
    Served,
    TestWallet,
    open_page,
    serve,
)
from playwright.sync_api import Browser, Locator, expect
from test_pages import sign_in, ui

from adapters.chain import derive_account
from adapters.chain.governance import Support, sign_ballot

pytestmark = pytest.mark.slow


def governance(served: Served) -> dict[str, Any]:
    return dict(httpx.get(f"{served.site_url}/governance", timeout=30).json())


def open_proposal(gov: dict[str, Any]) -> dict[str, Any]:
    [active] = [p for p in gov["proposals"] if p["state"] == "active"]
    return dict(active)


def check_proposal(article: Locator, p: dict[str, Any]) -> None:
    """The page's proposal shows the API's tallies, quorum, words and votes."""
    expect(article.locator(".t-for strong")).to_have_text(str(p["votes_for"]))
    expect(article.locator(".t-against strong")).to_have_text(str(p["votes_against"]))
    expect(article.locator(".t-abstain strong")).to_have_text(str(p["votes_abstain"]))
    turnout = p["votes_for"] + p["votes_against"] + p["votes_abstain"]
    expect(article.locator(".t-quorum")).to_contain_text(
        f"{turnout} vote{'' if turnout == 1 else 's'} cast, {p['quorum']} needed for quorum"
    )
    expect(article.locator(".badge").first).to_have_text(p["state"])
    expect(article.locator("h3")).to_contain_text(p["description"])
    expect(article.locator("ul.changes li")).to_have_text(p["summaries"])
    shown = article.locator("tr[data-voter]").evaluate_all(
        "rs => rs.map(r => [r.dataset.voter, r.dataset.support])"
    )
    assert shown == [[v["voter"], v["support"]] for v in p["votes"]]


def test_the_page_shows_proposals_votes_and_the_history_of_the_values(
    new_page: NewPage, served: Served, wallet: MakeWallet
) -> None:
    page = new_page("desktop", wallet=wallet(OPERATOR))
    sign_in(page, served, "operator")
    page.page.get_by_role("link", name="Governance").click()
    page.page.locator("#governance").wait_for(timeout=30_000)
    gov = governance(served)
    expect(page.page.locator("#gov-members")).to_have_text(str(gov["members"]))
    assert [p["state"] for p in gov["proposals"]] == ["executed", "active"]
    for p in gov["proposals"]:
        check_proposal(page.page.locator(f"#proposal-{p['proposal_id']}"), p)
    # an operator reads, but does not vote
    expect(page.page.locator("button[data-vote]")).to_have_count(0)
    # every change of a governed value, newest first, with the proposal that made it
    history = gov["parameter_history"]
    rows = page.page.locator("#gov-history tbody tr")
    expect(rows).to_have_count(len(history))
    shown = rows.evaluate_all(
        "rs => rs.map(r => [r.dataset.name, Number(r.dataset.block), r.dataset.proposal])"
    )
    assert shown == [
        [c["name"], c["block_number"], str(c["proposal_id"] or "")] for c in reversed(history)
    ]
    [voted] = [c for c in history if c["proposal_id"] is not None]
    assert (voted["name"], voted["old_value"], voted["new_value"]) == ("community_fee_bps", 0, 100)
    row = page.page.locator(f'#gov-history tr[data-proposal="{voted["proposal_id"]}"]')
    expect(row.locator(".change")).to_contain_text("0 → 100")
    expect(row).to_contain_text(f"proposal {voted['proposal_id']}")
    fee = page.page.locator('#gov-values tr[data-name="community_fee_bps"]')
    expect(fee.locator(".value")).to_contain_text("100")
    expect(fee).to_contain_text(f"proposal {voted['proposal_id']}")
    page.screenshot("governance")
    page.assert_clean()


def test_a_member_votes_by_signing_in_the_page_and_the_api_shows_the_vote(
    new_page: NewPage, served: Served, wallet: MakeWallet
) -> None:
    signer: TestWallet = wallet("heidi")
    page = new_page("phone", wallet=signer)
    sign_in(page, served, "prosumer")
    page.page.get_by_role("link", name="Governance").click()
    page.page.locator("#governance").wait_for(timeout=30_000)
    before = open_proposal(governance(served))
    pid = before["proposal_id"]
    article = page.page.locator(f"#proposal-{pid}")
    check_proposal(article, before)
    article.get_by_role("button", name="Vote against").click()
    expect(page.page.locator("#vote-msg")).to_contain_text("is recorded", timeout=30_000)
    expect(article.locator(".you-voted")).to_have_text("You voted against.")
    expect(article.locator("button[data-vote]")).to_have_count(0)
    after = open_proposal(governance(served))
    assert after["votes_against"] == before["votes_against"] + 1
    assert (after["votes_for"], after["votes_abstain"]) == (
        before["votes_for"],
        before["votes_abstain"],
    )
    assert after["votes"][-1]["participant"] == "heidi"
    assert after["votes"][-1]["voter"] == signer.address
    assert after["votes"][-1]["support"] == "against"
    check_proposal(article, after)  # the page refreshed to the chain's tallies
    [typed] = [t for m, t in signer.signed if m == "eth_signTypedData_v4"]
    assert typed["primaryType"] == "Ballot"
    assert typed["domain"]["verifyingContract"] == governance(served)["governor"]
    assert typed["message"] == {"proposalId": str(pid), "support": "0", "voter": signer.address}
    page.screenshot("voted")
    page.assert_clean()


def test_a_refused_vote_is_shown_with_its_reason(
    new_page: NewPage, served: Served, wallet: MakeWallet
) -> None:
    page = new_page("desktop", wallet=wallet("ivan"))
    page.log.expect(r"/governance/proposals/\d+/ballots$", 409)
    sign_in(page, served, "prosumer")
    page.page.goto(ui(served, "governance"))
    page.page.locator("#governance").wait_for(timeout=30_000)
    gov = governance(served)
    pid = open_proposal(gov)["proposal_id"]
    # meanwhile ivan's ballot arrives by another way (another tab, another relayer)
    ivan = derive_account("ivan")
    signature = sign_ballot(ivan, served.chain_id, gov["governor"], pid, Support.FOR)
    ballot = {"voter": ivan.address, "support": "for", "signature": "0x" + signature.hex()}
    reply = httpx.post(f"{served.site_url}/governance/proposals/{pid}/ballots", json=ballot)
    assert reply.status_code == 201, reply.text
    page.page.locator(f"#proposal-{pid}").get_by_role("button", name="Abstain").click()
    message = page.page.locator("#vote-msg")
    expect(message).to_contain_text("not recorded", timeout=30_000)
    expect(message).to_contain_text("has voted on it already (409 already_voted)")
    # and the page now shows the vote that was counted
    article = page.page.locator(f"#proposal-{pid}")
    expect(article.locator(".you-voted")).to_have_text("You voted for.", timeout=30_000)
    assert open_proposal(governance(served))["votes_abstain"] == open_proposal(gov)["votes_abstain"]
    page.assert_clean()


# -- a site without governance ---------------------------------------------------------------

SITE = """
[site]
name = "No community"
grid = "cigre-lv"
database = "sqlite:///{db}"
operators = ["derive:{operator}"]
auditors = ["derive:{auditor}"]

[[participants]]
id = "alice"
bus = "Bus R11"
"""


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("plain")
    site = work / "site.toml"
    db = (work / "plain.sqlite").as_posix()
    site.write_text(SITE.format(db=db, operator=OPERATOR, auditor=AUDITOR), encoding="utf-8")
    with serve(work, ["--site", str(site)]) as served:
        yield served


def test_a_site_without_governance_says_so_plainly(browser: Browser, plain: Served) -> None:
    assert httpx.get(f"{plain.site_url}/governance", timeout=30).status_code == 404
    signer = TestWallet(AUDITOR, plain.chain_id)
    page = open_page(browser, plain.base_url, "desktop", "no-governance-desktop", signer)
    try:
        sign_in(page, plain, "auditor")
        page.page.get_by_role("link", name="Governance").click()
        notice = page.page.locator("#no-governance")
        expect(notice).to_be_visible(timeout=30_000)
        expect(notice).to_contain_text("No community governance on this site")
        expect(page.page.locator("#part-governance")).to_have_count(0)
        expect(page.page.locator("#refused")).to_be_hidden()
        page.screenshot("no-governance")
        page.assert_clean()
    finally:
        page.context.close()
