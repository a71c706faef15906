"""``peergrid devices keys new|deploy|register|rotate|revoke|show`` on anvil (issue 17).

A device key is made into an encrypted file (mode 0600, never overwritten, never printed);
the site's registry is deployed; alice registers her meter's key with her own transaction,
rotates it through the operator's relay (she signs, the operator pays), and revokes it; bob
cannot touch alice's key, and the operator alone cannot register one for alice. Every
command starts anvil from the same state file and stops it, as for a user.
"""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest
from test_chain_cli import site_and_chain  # noqa: F401 - the fixture

from adapters.chain import Signer, new_account
from controller import cli_chain, cli_devices
from controller.cli_device_keys import read_key_file
from controller.errors import ConfigError
from market.signed_readings import public_key_bytes

pytestmark = pytest.mark.integration

PASSWORD = "device-key-password"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object]:
    parser = argparse.ArgumentParser(prog="peergrid")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_chain.register(sub)
    cli_devices.register(sub)
    args = parser.parse_args(list(argv))
    code = args.func(args)
    out, err = capsys.readouterr()
    data = json.loads(out) if "--json" in argv and out.strip() and code == 0 else out + err
    return code, data


@pytest.fixture
def accounts() -> dict[str, Signer]:
    return {n: new_account() for n in ("operator", "admin", "alice", "bob", "grid", "community")}


def test_a_key_file_is_encrypted_private_and_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICE_KEY_PASSWORD", PASSWORD)
    path = tmp_path / "meter.pem"
    code, made = run(
        capsys, "devices", "keys", "new", "--out", str(path), "--password-env",
        "DEVICE_KEY_PASSWORD", "--json",
    )  # fmt: skip
    assert code == 0, made
    assert isinstance(made, dict)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "ENCRYPTED PRIVATE KEY" in text
    key = read_key_file(path, PASSWORD)
    assert public_key_bytes(key).hex() == made["public_key"]
    with pytest.raises(ConfigError, match="wrong password"):
        read_key_file(path, "not it")
    code, out = run(
        capsys, "devices", "keys", "new", "--out", str(path), "--password-env",
        "DEVICE_KEY_PASSWORD",
    )  # fmt: skip
    assert code == 2
    assert "never overwritten" in str(out)
    assert read_key_file(path, PASSWORD).private_numbers() == key.private_numbers()


def test_a_participant_registers_rotates_and_revokes_its_devices_key(
    site_and_chain,  # noqa: F811 - the fixture
    accounts: dict[str, Signer],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site, state, _ = site_and_chain
    chain = ["--site", str(site), "--state", str(state)]
    assert run(capsys, "chain", "deploy", *chain, "--out", str(tmp_path / "d.json"))[0] == 0
    code, deployed = run(capsys, "devices", "keys", "deploy", *chain, "--json")
    assert code == 0, deployed
    assert isinstance(deployed, dict)
    registry = ["--registry", deployed["registry"]]
    assert deployed["governor"] is None
    for name in ("alice", "bob"):
        monkeypatch.setenv(f"{name.upper()}_KEY", accounts[name].key.hex())
    monkeypatch.setenv("DEVICE_KEY_PASSWORD", PASSWORD)
    files = {}
    for n in ("first", "second"):
        files[n] = tmp_path / f"{n}.pem"
        made = run(
            capsys, "devices", "keys", "new", "--out", str(files[n]), "--password-env",
            "DEVICE_KEY_PASSWORD", "--json",
        )[1]  # fmt: skip
        assert isinstance(made, dict)
        files[n + "_public"] = made["public_key"]
    alice = [*chain, *registry, "--key-env", "ALICE_KEY"]
    key_flags = ["--key-password-env", "DEVICE_KEY_PASSWORD"]

    code, out = run(
        capsys, "devices", "keys", "register", "alice-meter", *alice, "--key-file",
        str(files["first"]), *key_flags, "--json",
    )  # fmt: skip
    assert code == 0, out
    assert isinstance(out, dict)
    assert (out["owner"], out["active"], out["relayed"]) == (accounts["alice"].address, True, False)
    # a second registration over a key in force is refused, with the registry's reason
    code, out = run(
        capsys, "devices", "keys", "register", "alice-meter", *alice, "--public-key",
        str(files["second_public"]),
    )  # fmt: skip
    assert code == 1
    assert "in force" in str(out)

    # rotate through the operator's relay: alice signs, the operator (keystore) pays
    code, out = run(
        capsys, "devices", "keys", "rotate", "alice-meter", *alice, "--public-key",
        str(files["second_public"]), "--relay", "--json",
    )  # fmt: skip
    assert code == 0, out
    assert isinstance(out, dict)
    assert out["relayed"] is True

    # bob cannot touch alice's key: his own slot for the device has none
    code, out = run(
        capsys, "devices", "keys", "revoke", "alice-meter", *chain, *registry, "--key-env",
        "BOB_KEY",
    )  # fmt: skip
    assert code == 1

    code, shown = run(
        capsys, "devices", "keys", "show", "alice-meter", *chain, *registry, "--owner",
        accounts["alice"].address, "--json",
    )  # fmt: skip
    assert code == 0, shown
    assert isinstance(shown, dict)
    assert [c["action"] for c in shown["changes"]] == ["register", "rotate"]
    assert shown["changes"][-1]["key"] == files["second_public"]

    assert run(capsys, "devices", "keys", "revoke", "alice-meter", *alice)[0] == 0
    code, shown = run(
        capsys, "devices", "keys", "show", "alice-meter", *chain, *registry, "--owner",
        accounts["alice"].address,
    )  # fmt: skip
    assert code == 0
    assert "alice-meter of" in str(shown)
    assert "no key in force" in str(shown)
    # a key once used never returns to the slot
    code, out = run(
        capsys, "devices", "keys", "register", "alice-meter", *alice, "--public-key",
        str(files["first_public"]),
    )  # fmt: skip
    assert code == 1
    assert "used before" in str(out)
    # no key ever appears in what the commands print
    private = read_key_file(files["first"], PASSWORD).private_numbers().private_value
    assert f"{private:x}" not in str(shown)
