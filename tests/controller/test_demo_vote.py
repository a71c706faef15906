"""``peergrid demo``'s community vote: the members raise the reward, the chain mints at it.

Real everything (simulators, the embedded chain and anvil, the store). The demo deploys the
community's contracts, hands the site's over, and halfway through holds one vote; the
intervals settled after it must mint at the voted rate, and the operator's own attempt to set
the rate must be refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.demo import format_summary, run_demo
from controller.demo_vote import NEW_REWARD_RATE

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.mark.parametrize("chain", ["embedded", "anvil"])
def test_the_members_vote_and_the_new_reward_rate_applies(tmp_path: Path, chain: str) -> None:
    report = run_demo(intervals=4, out_dir=tmp_path, chain=chain, front_door=False)
    vote = report["community_vote"]
    assert vote is not None
    assert vote["state"] == "executed"
    assert vote["rate_after"] == NEW_REWARD_RATE != vote["rate_before"]
    assert (vote["for"], vote["against"], vote["abstain"], vote["members"]) == (6, 2, 1, 10)
    assert vote["relayed"] == 4
    assert "missing role" in vote["admin_refused"]
    # settled before the vote: the site's rate; after it: the voted one (the cap is far off)
    assert vote["reward_per_kwh_before"] == pytest.approx(vote["rate_before"], rel=1e-3)
    assert vote["reward_per_kwh_after"] == pytest.approx(NEW_REWARD_RATE, rel=1e-3)
    assert [r["after_vote"] for r in report["intervals"]] == [False, True, True, True]
    assert report["all_settled"]
    assert report["audit"]["verified"] == report["audit"]["records"] == 4
    assert "community vote #1" in format_summary(report)
