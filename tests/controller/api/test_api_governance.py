"""``/v1/sites/{site}/governance``: the community's state, and members' ballots relayed.

The demo site's API on a real uvicorn server (``serverkit``), its embedded chain with the
community's contracts deployed and handed over (``controller.demo_vote``). A member signs an
EIP-712 ballot with their wallet key and posts it; the server relays it on-chain. Every
refusal is checked before gas is spent and names its reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from serverkit import Api, serve_demo

from adapters.chain import derive_account
from adapters.chain.errors import TransactionReverted
from adapters.chain.governance import Support, sign_ballot
from controller.demo_vote import (
    BALLOTS,
    NEW_FEE_BPS,
    Community,
    hold_vote,
    set_up_community,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serve_demo(tmp_path_factory.mktemp("governance")) as api:
        service = api.service
        with service.chain_lock:
            community = set_up_community(
                service.runtime.client, service.site, dict(service.runtime.accounts)
            )
        service.governance = community.gov
        yield api


def ballot(api: Api, voter: str, pid: int, support: Support, signer: str | None = None) -> dict:
    account = derive_account(signer or voter)
    gov = api.service.governance
    assert gov is not None
    chain_id = api.service.runtime.client.chain_id()
    signature = sign_ballot(account, chain_id, gov.governor.address, pid, support)
    return {
        "voter": derive_account(voter).address,
        "support": support.name.lower(),
        "signature": "0x" + signature.hex(),
    }


def test_the_governance_page_shows_members_values_and_ballot_domain(api: Api) -> None:
    with httpx.Client(base_url=api.site, timeout=30) as http:
        body = http.get("/governance").json()
    assert body["members"] == len(api.service.site.participants)
    assert body["handed_over"] is True
    assert body["parameters"]["community_fee_bps"] == 0
    assert body["parameter_units"]["gate_closure_s"].startswith("s ")
    assert body["ballot_domain"]["verifyingContract"] == body["governor"]
    assert [f["name"] for f in body["ballot_types"]["Ballot"]] == [
        "proposalId",
        "support",
        "voter",
    ]


def test_a_member_votes_through_the_api_and_refusals_cost_nothing(api: Api) -> None:
    service = api.service
    gov = service.governance
    assert gov is not None
    alice = derive_account("alice")
    with service.chain_lock:
        pid, _ = gov.propose(alice, [gov.set_parameter("community_fee_bps", 50)], "0.5 % fee")
    block = service.runtime.client.block_number()
    with httpx.Client(base_url=api.site, timeout=30) as http:
        url = f"/governance/proposals/{pid}/ballots"
        # signed by someone else than the voter
        reply = http.post(url, json=ballot(api, "bob", pid, Support.FOR, signer="carol"))
        assert (reply.status_code, reply.json()["code"]) == (422, "bad_signature")
        # an outsider's own, correct signature
        reply = http.post(url, json=ballot(api, "mallory", pid, Support.FOR))
        assert (reply.status_code, reply.json()["code"]) == (403, "not_a_member")
        # the same ballot's choice changed after signing
        tampered = {**ballot(api, "bob", pid, Support.AGAINST), "support": "for"}
        assert http.post(url, json=tampered).status_code == 422
        assert service.runtime.client.block_number() == block  # nothing was sent
        reply = http.post(url, json=ballot(api, "bob", pid, Support.FOR))
        assert reply.status_code == 201, reply.text
        voted = reply.json()
        assert voted["proposal"]["votes_for"] == 1
        assert voted["proposal"]["changes"] == ["community_fee_bps = 50"]
        assert voted["proposal"]["description"] == "0.5 % fee"
        assert [(v["participant"], v["support"]) for v in voted["proposal"]["votes"]] == [
            ("bob", "for")
        ]
        reply = http.post(url, json=ballot(api, "bob", pid, Support.FOR))
        assert (reply.status_code, reply.json()["code"]) == (409, "already_voted")
        reply = http.post(
            f"/governance/proposals/{pid + 1}/ballots", json=ballot(api, "bob", 1, Support.FOR)
        )
        assert reply.status_code == 404
        reply = http.post(
            url, json={**ballot(api, "carol", pid, Support.FOR), "signature": "0x" + "00" * 65}
        )
        assert (reply.status_code, reply.json()["code"]) == (422, "bad_signature")
        one = http.get(f"/governance/proposals/{pid}").json()
    assert (one["votes_for"], one["state"]) == (1, "active")
    assert gov.ballot(pid, derive_account("bob").address) is Support.FOR


def test_a_relay_the_chain_refuses_is_a_502_with_its_reason(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chain can move on between the checks and the send (another relayer was first)."""
    service = api.service
    gov = service.governance
    assert gov is not None
    with service.chain_lock:
        pid, _ = gov.propose(derive_account("alice"), [gov.set_parameter("gate_closure_s", 0)], "x")

    def refused(*_args: object, **_kwargs: object) -> None:
        raise TransactionReverted("governor: already voted", "0x" + "11" * 32)

    monkeypatch.setattr(gov, "vote_by_sig", refused)
    with httpx.Client(base_url=api.site, timeout=30) as http:
        reply = http.post(
            f"/governance/proposals/{pid}/ballots", json=ballot(api, "dave", pid, Support.FOR)
        )
    assert reply.status_code == 502
    assert reply.json()["code"] == "relay_failed"
    assert "already voted" in reply.json()["reason"]


def test_proposals_carry_their_votes_and_the_values_their_history(api: Api) -> None:
    """The demo's vote (proposal to execution): who voted how, and what it changed, when."""
    service = api.service
    gov = service.governance
    assert gov is not None
    members = {p.id: derive_account(p.id) for p in service.site.participants}
    with service.chain_lock:
        vote = hold_vote(Community(client=service.runtime.client, gov=gov, members=members))
    pid = vote["proposal"]
    with httpx.Client(base_url=api.site, timeout=30) as http:
        body = http.get("/governance").json()
        one = http.get(f"/governance/proposals/{pid}").json()
    [shown] = [p for p in body["proposals"] if p["proposal_id"] == pid]
    assert shown == one
    assert shown["state"] == "executed"
    assert shown["description"] == vote["description"]
    assert shown["summaries"] == [
        f"reward rate = {vote['rate_after']} per kWh, cap = 50000000 per interval",
        f"community_fee_bps = {NEW_FEE_BPS} bps of the buyer amount",
    ]
    assert shown["proposer_participant"] == service.site.participants[0].id
    expected = [
        (p.id, ballot[0].name.lower())
        for p, ballot in zip(service.site.participants, BALLOTS, strict=True)
        if ballot is not None
    ]
    assert [(v["participant"], v["support"]) for v in shown["votes"]] == expected
    tally = {
        s: sum(v["support"] == s for v in shown["votes"]) for s in ("for", "against", "abstain")
    }
    assert tally == {
        "for": shown["votes_for"],
        "against": shown["votes_against"],
        "abstain": shown["votes_abstain"],
    }
    in_force = {v["name"]: v for v in body["values_in_force"]}
    assert in_force["community_fee_bps"]["value"] == NEW_FEE_BPS
    assert in_force["community_fee_bps"]["proposal_id"] == pid
    assert in_force["gate_closure_s"]["proposal_id"] is None  # the deployment's
    fee = [c for c in body["parameter_history"] if c["name"] == "community_fee_bps"]
    assert [(c["old_value"], c["new_value"], c["proposal_id"]) for c in fee] == [
        (None, 0, None),
        (0, NEW_FEE_BPS, pid),
    ]
    assert fee[-1]["block_number"] == vote["executed_block"]
    assert fee[-1]["block_number"] == in_force["community_fee_bps"]["since_block"]
    assert fee[0]["time_s"] < fee[-1]["time_s"]  # the vote took the chain's clock two days on


def test_without_governance_the_page_says_so_and_the_fragment_is_a_404(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = {"Authorization": f"Bearer {api.token('bob')}"}
    with httpx.Client(base_url=api.base, timeout=30) as http:
        page = http.get(f"/ui/sites/{api.service.site_id}/governance")
        assert page.status_code == 200
        assert "/static/governance.js" in page.text
        part = http.get(f"/ui/sites/{api.service.site_id}/parts/governance", headers=token)
        assert part.status_code == 200
        assert 'id="governance"' in part.text
        monkeypatch.setattr(api.service, "governance", None)
        page = http.get(f"/ui/sites/{api.service.site_id}/governance")
        assert page.status_code == 200
        assert "No community governance on this site" in page.text
        assert "/static/governance.js" not in page.text  # nothing asks for what is not there
        part = http.get(f"/ui/sites/{api.service.site_id}/parts/governance", headers=token)
        assert (part.status_code, part.json()["code"]) == (404, "no_governance")
