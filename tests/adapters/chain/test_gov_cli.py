"""``peergrid gov deploy|hand-over|propose|vote|queue|execute|status`` on anvil.

The site's contracts are deployed with ``peergrid chain deploy``; every command then starts
anvil from the same state file and stops it, as for a user. Members sign with keys in
environment variables, never on the command line. The clock is moved on between commands
with anvil's ``evm_increaseTime``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from test_chain_cli import site_and_chain  # noqa: F401 - the fixture

from adapters.chain import Signer, new_account
from adapters.chain.backends import AnvilNode, rpc_web3
from adapters.chain.errors import ChainError
from controller import cli_chain, cli_gov
from controller.config import SiteConfig, read_site
from controller.wiring import build_runtime

pytestmark = pytest.mark.integration


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object]:
    parser = argparse.ArgumentParser(prog="peergrid")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_chain.register(sub)
    cli_gov.register(sub)
    args = parser.parse_args(list(argv))
    code = args.func(args)
    out, err = capsys.readouterr()
    data = json.loads(out) if "--json" in argv and out.strip() and code == 0 else out + err
    return code, data


def advance(state: Path, seconds: int) -> None:
    with AnvilNode(state_path=state) as node:
        w3 = rpc_web3(node.url)
        w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


@pytest.fixture
def accounts() -> dict[str, Signer]:
    """Fresh random keys: the operator's, the admin's, and the site's account owners'."""
    return {n: new_account() for n in ("operator", "admin", "alice", "bob", "grid", "community")}


def test_members_change_a_parameter_by_vote(
    site_and_chain,  # noqa: F811 - the fixture
    accounts: dict[str, Signer],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site, state, _ = site_and_chain
    chain = ["--site", str(site), "--state", str(state)]
    deployment = tmp_path / "deployment.json"
    assert run(capsys, "chain", "deploy", *chain, "--out", str(deployment))[0] == 0
    common = [*chain, "--deployment", str(deployment)]
    governance = tmp_path / "governance.json"
    code, deployed = run(
        capsys,
        "gov",
        "deploy",
        *common,
        "--voting-period",
        "600",
        "--delay",
        "300",
        "--quorum-bps",
        "5000",
        "--set",
        "community_fee_bps=0",
        "--hand-over",
        "--out",
        str(governance),
        "--json",
    )
    assert code == 0, deployed
    assert deployed["members"] == 2  # the site's participants
    assert deployed["handed_over"] is True
    gov = [*common, "--governance", str(governance)]
    for name in ("alice", "bob", "grid"):
        monkeypatch.setenv(f"{name.upper()}_KEY", accounts[name].key.hex())

    code, message = run(
        capsys, "gov", "propose", *gov, "--key-env", "ALICE_KEY", "--set", "voltage_min=1",
        "--description", "not governed",
    )  # fmt: skip
    assert code == 2
    assert "not a governed parameter" in str(message)
    code, proposed = run(
        capsys, "gov", "propose", *gov, "--key-env", "ALICE_KEY",
        "--set", "community_fee_bps=120", "--description", "a 1.2 % community fee", "--json",
    )  # fmt: skip
    assert code == 0, proposed
    assert proposed["proposal"] == 1
    assert proposed["quorum"] == 1
    pid = "1"

    code, message = run(capsys, "gov", "vote", *gov, "--key-env", "GRID_KEY", pid, "for")
    assert code == 1
    assert "not a member at the snapshot" in str(message)
    for who in ("ALICE_KEY", "BOB_KEY"):
        assert run(capsys, "gov", "vote", *gov, "--key-env", who, pid, "for")[0] == 0
    code, message = run(capsys, "gov", "queue", *gov, pid)
    assert code == 1
    assert "not succeeded" in str(message)

    advance(state, 600)
    code, message = run(capsys, "gov", "queue", *gov, pid)  # signed by the operator
    assert code == 0, message
    code, message = run(capsys, "gov", "execute", *gov, pid)
    assert code == 1
    assert "not ready" in str(message)
    code, status = run(capsys, "gov", "status", *gov, "--json")
    assert status["parameters"]["community_fee_bps"] == 0  # type: ignore[index]

    advance(state, 300)
    assert run(capsys, "gov", "execute", *gov, "--key-env", "GRID_KEY", pid)[0] == 0
    code, status = run(capsys, "gov", "status", *gov, "--json")
    assert code == 0
    assert status["parameters"]["community_fee_bps"] == 120  # type: ignore[index]
    (proposal,) = status["proposals"]  # type: ignore[index]
    assert proposal["state"] == "executed"
    assert (proposal["for"], proposal["against"], proposal["abstain"]) == (2, 0, 0)
    assert proposal["changes"] == ["community_fee_bps = 120"]
    code, text = run(capsys, "gov", "status", *gov)
    assert "#1 executed: 2 for, 0 against" in str(text)

    # the operator's emergency pause lasts the governed hours; then anyone lifts it
    code, message = run(capsys, "gov", "pause", *gov, "--key-env", "GRID_KEY")
    assert code == 1
    assert "not the pauser" in str(message)
    assert run(capsys, "gov", "pause", *gov)[0] == 0  # the operator's key
    code, message = run(capsys, "gov", "lift", *gov, "--key-env", "GRID_KEY")
    assert code == 1
    assert "has not expired" in str(message)
    advance(state, 48 * 3600)
    code, lifted = run(capsys, "gov", "lift", *gov, "--key-env", "GRID_KEY", "--json")
    assert code == 0
    assert lifted["paused"] is False  # type: ignore[index]


def test_a_site_file_names_its_governance_and_the_cycle_reads_it(
    site_and_chain,  # noqa: F811 - the fixture
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    site, state, _ = site_and_chain
    chain = ["--site", str(site), "--state", str(state)]
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert run(capsys, "chain", "deploy", *chain, "--out", str(first))[0] == 0
    assert run(capsys, "chain", "deploy", *chain, "--out", str(second))[0] == 0
    governance = tmp_path / "governance.json"
    code, text = run(
        capsys, "gov", "deploy", *chain, "--deployment", str(first),
        "--set", "community_fee_bps=25", "--hand-over", "--out", str(governance),
    )  # fmt: skip
    assert code == 0, text
    original = site.read_text()

    def site_on(deployment: Path) -> SiteConfig:
        d = json.loads(deployment.read_text())
        site.write_text(
            original.replace(
                "[chain]\n",
                "[chain]\n"
                f'token_address = "{d["token"]}"\nsettlement_address = "{d["settlement"]}"\n'
                f'state_path = "{state.as_posix()}"\ngovernance_file = "{governance.as_posix()}"\n',
            )
        )
        return read_site(site)

    with build_runtime(site_on(first), devices=False) as rt:
        assert rt.governance is not None
        assert rt.cycle.governed is not None
        read = rt.cycle.governed()
        assert read.values["community_fee_bps"] == 25
        assert read.proposals["community_fee_bps"] is None  # set at deployment
    # the same governance file beside another settlement contract is refused
    other_site = site_on(second)
    other_store = f"sqlite:///{(tmp_path / 'other.sqlite').as_posix()}"
    with pytest.raises(ChainError, match="govern settlement"):
        build_runtime(other_site, devices=False, store_url=other_store)
