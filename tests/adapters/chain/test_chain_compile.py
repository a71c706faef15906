"""The committed artifacts are exactly what the pinned compiler makes of the sources."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from adapters.chain import compile as chain_compile
from adapters.chain.artifact import CONTRACT_NAMES, artifact_text, load_artifact
from adapters.chain.errors import ArtifactNotFound


def test_recompiling_reproduces_committed_artifacts_byte_for_byte() -> None:
    fresh = chain_compile.build_all()
    assert set(fresh) == set(CONTRACT_NAMES)
    for name, text in fresh.items():
        committed = chain_compile.artifact_path(name).read_bytes()
        assert committed == text.encode("utf-8"), f"{name}: run python -m adapters.chain.compile"


def test_check_exits_1_when_an_artifact_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale_dir = tmp_path / "artifacts"
    shutil.copytree(chain_compile.ARTIFACTS_DIR, stale_dir)
    path = stale_dir / "Settlement.json"
    data = json.loads(path.read_text())
    data["bytecode"] = data["bytecode"][:-2] + "00"
    path.write_text(chain_compile.render_artifact(data))
    (stale_dir / "RewardToken.json").unlink()
    monkeypatch.setattr(chain_compile, "ARTIFACTS_DIR", stale_dir)

    assert chain_compile.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "Settlement.json" in err
    assert "RewardToken.json" in err  # missing counts as stale
    assert "PaymentToken.json" not in err


def test_artifacts_are_deterministic_json_with_the_documented_fields() -> None:
    for name in CONTRACT_NAMES:
        text = artifact_text(name)
        data = json.loads(text)
        assert text == json.dumps(data, sort_keys=True, indent=2) + "\n"
        assert set(data) == {
            "abi",
            "bytecode",
            "bytecode_runtime",
            "compiler",
            "evm_version",
            "source_sha256",
        }
        assert data["compiler"] == "vyper 0.4.3"
        source = (chain_compile.CONTRACTS_DIR / f"{name}.vy").read_bytes()
        assert data["source_sha256"] == hashlib.sha256(source).hexdigest()
        artifact = load_artifact(name)
        assert artifact.bytecode.startswith("0x")
        assert artifact.bytecode_runtime.startswith("0x")


def test_token_abi_exposes_owner_only_minting_and_no_minter_role() -> None:
    names = {entry.get("name") for entry in load_artifact("PaymentToken").abi}
    assert {"mint", "owner", "transfer_ownership", "decimals", "transferFrom", "permit"} <= names
    assert not names & {"set_minter", "is_minter", "burn", "burn_from"}


def test_reward_token_abi_has_minters_and_permit_but_no_burn() -> None:
    names = {entry.get("name") for entry in load_artifact("RewardToken").abi}
    assert {"mint", "set_minter", "is_minter", "permit", "transfer_ownership"} <= names
    assert not names & {"burn", "burn_from", "renounce_ownership"}


def test_settlement_abi_has_roles_pause_and_proofs() -> None:
    names = {entry.get("name") for entry in load_artifact("Settlement").abi}
    assert {
        "settle",
        "deposit",
        "deposit_with_permit",
        "deposit_for",
        "request_withdrawal",
        "withdraw",
        "claim_rewards",
        "verify_trade",
        "verify_reading",
        "grantRole",
        "revokeRole",
        "hasRole",
        "OPERATOR_ROLE",
        "DEFAULT_ADMIN_ROLE",
        "pause",
        "unpause",
        "paused",
        "set_reward_policy",
        "Settled",
        "SettlementEntries",
    } <= names
    assert "transfer_operator" not in names


def test_unknown_artifact_is_rejected() -> None:
    with pytest.raises(ArtifactNotFound, match="no artifact"):
        load_artifact("Nope")


def test_module_entry_point_checks_artifacts() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "adapters.chain.compile", "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(chain_compile.PACKAGE_DIR).parents[1],
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
