"""Keys: where the operator's key comes from, ``peergrid keys new|import|address``, and
derived (demo) accounts only on trial chains.

Prompts are exercised on a real pseudo-terminal (``pty``) with a real ``peergrid`` process;
a pipe is a real non-terminal standard input.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pty
import select
import signal
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from adapters.chain import derive_account, keystore_address, new_account, write_keystore
from controller.cli import main
from controller.config import ChainBackend, SiteConfig, parse_site
from controller.errors import ConfigError
from controller.keys import KeyRole, KeySource, KeyUnavailable, keystore_password
from controller.wiring import account_of, build_runtime, operator_account, participant_accounts
from market.domain import COMMUNITY, GRID

PASSWORD = "pw-for-tests-7f3a"
FAST = 2**10

SITE = """
[site]
grid = "cigre-lv"
database = "sqlite:///{db}"

[chain]
backend = "embedded"
{chain}

[[participants]]
id = "alice"
bus = "Bus R11"
account = "{alice}"
deposit = 5_000_000

[[participants]]
id = "bob"
bus = "Bus R15"
deposit = 3_000_000
"""


def embedded_site(tmp_path: Path, *, alice: str = "derive", chain: str = "") -> SiteConfig:
    text = SITE.format(db=(tmp_path / "s.sqlite").as_posix(), alice=alice, chain=chain)
    return parse_site(tomllib.loads(text), str(tmp_path / "site.toml"))


def on_backend(site: SiteConfig, backend: ChainBackend, **chain: str) -> SiteConfig:
    """The same site moved to another backend (the wiring's own checks, past the parser's)."""
    moved = dataclasses.replace(site.chain, backend=backend, rpc_url="http://127.0.0.1:9", **chain)
    return dataclasses.replace(site, chain=moved)


def no_secret(text: str, key: bytes, *secrets: str) -> bool:
    bare = key.hex().removeprefix("0x").lower()
    return bare not in text.lower() and not any(s in text for s in secrets)


# ----------------------------------------------------------------------------- key sources


def test_key_from_environment_variable(monkeypatch) -> None:
    account = new_account()
    monkeypatch.setenv("MY_OPERATOR_KEY", account.key.hex())
    source = KeySource(role=KeyRole.OPERATOR, key_env="MY_OPERATOR_KEY")
    assert source.configured()
    assert source.signer().address == account.address
    assert source.address() == account.address
    monkeypatch.setenv("MY_OPERATOR_KEY", account.key.hex()[:-2] + "zz")
    with pytest.raises(KeyUnavailable, match="does not hold a private key") as exc:
        source.signer()
    assert no_secret(str(exc.value), account.key)
    monkeypatch.delenv("MY_OPERATOR_KEY")
    assert not source.configured()
    with pytest.raises(KeyUnavailable, match="set the environment variable MY_OPERATOR_KEY"):
        source.signer()
    assert issubclass(KeyUnavailable, ConfigError)  # the command line exits 2


def test_key_from_keystore_with_password_from_environment(tmp_path: Path, monkeypatch) -> None:
    account = new_account()
    path = tmp_path / "op.json"
    write_keystore(path, account, PASSWORD, scrypt_n=FAST)
    source = KeySource(role=KeyRole.OPERATOR, keystore=str(path), password_env="OP_PW")
    monkeypatch.delenv("OP_PW", raising=False)
    assert source.address() == account.address  # no password needed for the address
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: nobody to ask
    with pytest.raises(KeyUnavailable, match="set the environment variable OP_PW"):
        source.signer()
    monkeypatch.setenv("OP_PW", "wrong-password")
    with pytest.raises(KeyUnavailable, match="wrong password") as exc:
        source.signer()
    assert str(path) in str(exc.value)
    assert no_secret(str(exc.value), account.key, "wrong-password", PASSWORD)
    monkeypatch.setenv("OP_PW", PASSWORD)
    assert source.signer().key == account.key
    # a keystore named wins over the variable
    monkeypatch.setenv("OTHER_KEY", new_account().key.hex())
    both = dataclasses.replace(source, key_env="OTHER_KEY")
    assert both.signer().address == account.address


def test_keystore_password_needs_a_terminal_or_a_variable(monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.delenv("SOME_PW", raising=False)
    with pytest.raises(KeyUnavailable, match="run on a terminal to be asked"):
        keystore_password("SOME_PW", what="keystore x.json")
    monkeypatch.setenv("SOME_PW", "")  # empty counts as unset
    with pytest.raises(KeyUnavailable):
        keystore_password("SOME_PW", what="keystore x.json")
    monkeypatch.setenv("SOME_PW", "pw")
    assert keystore_password("SOME_PW", what="keystore x.json") == "pw"


# ----------------------------------------------------------------------------- trial vs. real


def test_derived_accounts_only_on_a_trial_chain(tmp_path: Path) -> None:
    site = embedded_site(tmp_path)
    trial = participant_accounts(site, trial=True)
    assert trial[GRID] == derive_account(GRID).address
    assert trial[COMMUNITY] == derive_account(COMMUNITY).address
    assert trial["bob"] == derive_account("bob").address
    for backend in (ChainBackend.ANVIL, ChainBackend.RPC):
        real = on_backend(site, backend)
        with pytest.raises(ConfigError, match=r"participants\[0\] \(alice\)\.account") as exc:
            participant_accounts(real, trial=False)
        assert f"backend '{backend}'" in str(exc.value)
        assert "0x address" in str(exc.value)
    owners = {name: new_account().address for name in ("alice", "bob", "grid", "community")}
    named = embedded_site(
        tmp_path,
        alice=owners["alice"].lower(),  # any letter case; checksummed on the way out
        chain=f'grid_account = "{owners["grid"]}"\ncommunity_account = "{owners["community"]}"',
    )
    real = on_backend(named, ChainBackend.RPC)
    with pytest.raises(ConfigError, match=r"participants\[1\] \(bob\)"):
        participant_accounts(real, trial=False)
    assert account_of(real, "alice", trial=False) == owners["alice"]
    assert account_of(real, GRID, trial=False) == owners["grid"]
    assert account_of(real, COMMUNITY, trial=False) == owners["community"]
    without_grid = on_backend(named, ChainBackend.RPC, grid_account="")
    with pytest.raises(ConfigError, match=r"chain\.grid_account"):
        account_of(without_grid, GRID, trial=False)
    bad = on_backend(named, ChainBackend.RPC, community_account="0x1234")
    with pytest.raises(ConfigError, match=r"chain\.community_account: not a 0x address"):
        account_of(bad, COMMUNITY, trial=False)


def test_operator_signs_with_a_demo_key_only_on_a_trial_chain(tmp_path, monkeypatch) -> None:
    site = embedded_site(tmp_path)
    assert operator_account(site, trial=True).address == derive_account("operator").address
    account = new_account()
    path = tmp_path / "op.json"
    write_keystore(path, account, PASSWORD, scrypt_n=FAST)
    real = on_backend(site, ChainBackend.RPC, operator_keystore=str(path))
    monkeypatch.setenv("PEERGRID_KEYSTORE_PASSWORD", PASSWORD)
    assert operator_account(real, trial=False).address == account.address
    monkeypatch.delenv("PEERGRID_OPERATOR_KEY", raising=False)
    by_env = on_backend(site, ChainBackend.RPC)
    with pytest.raises(KeyUnavailable, match="PEERGRID_OPERATOR_KEY"):
        operator_account(by_env, trial=False)


@pytest.mark.integration
def test_trial_chain_funds_accounts_named_by_address(tmp_path: Path) -> None:
    """On the embedded chain a site may name owners by address: their escrow is funded there
    (through the operator's deposit_for), and the derived address of their name holds nothing."""
    alice, grid = new_account().address, new_account().address
    site = embedded_site(tmp_path, alice=alice, chain=f'grid_account = "{grid}"')
    with build_runtime(site, grid=False, devices=False) as runtime:
        client = runtime.client
        assert runtime.accounts["alice"] == alice
        assert runtime.accounts[GRID] == grid
        assert client.escrow_balance(alice) == 5_000_000
        assert client.escrow_balance(derive_account("alice").address) == 0
        assert client.escrow_balance(grid) == 1_000_000_000
        assert client.escrow_balance(derive_account(GRID).address) == 0
        assert client.escrow_balance(derive_account("bob").address) == 3_000_000
        assert client.total_escrow() == 5_000_000 + 3_000_000 + 1_000_000_000 + 100_000_000
        assert client.total_supply() == runtime.minted


# ----------------------------------------------------------------------------- peergrid keys


def test_keys_new_import_address(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PEERGRID_KEYSTORE_PASSWORD", PASSWORD)
    new = tmp_path / "new.json"
    assert main(["keys", "new", "--out", str(new), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["address"] == keystore_address(new)
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    assert main(["keys", "address", str(new)]) == 0
    assert capsys.readouterr().out.strip() == made["address"]

    account = new_account()
    imported = tmp_path / "imported.json"
    monkeypatch.setattr(sys, "stdin", io.StringIO(account.key.hex() + "\n"))
    assert main(["keys", "import", "--out", str(imported)]) == 0
    out, err = capsys.readouterr()
    assert account.address in out
    assert no_secret(out + err, account.key, PASSWORD)
    assert keystore_address(imported) == account.address

    # refusals: one line each, exit 2, the file left alone
    before = imported.read_bytes()
    monkeypatch.setattr(sys, "stdin", io.StringIO(account.key.hex()))
    assert main(["keys", "import", "--out", str(imported)]) == 2
    assert "already there" in capsys.readouterr().err
    assert imported.read_bytes() == before
    monkeypatch.setattr(sys, "stdin", io.StringIO("0x" + "ab" * 31 + "zz"))
    assert main(["keys", "import", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "does not hold a private key" in err
    assert "ab" * 31 not in err
    assert not (tmp_path / "x.json").exists()
    assert main(["keys", "address", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    monkeypatch.delenv("PEERGRID_KEYSTORE_PASSWORD")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["keys", "new", "--out", str(tmp_path / "y.json")]) == 2
    assert "no password" in capsys.readouterr().err
    assert main(["keys", "new", "--out", str(tmp_path / "nowhere" / "z.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _peergrid(*argv: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "controller", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_bad_key_input_is_one_line_without_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERGRID_")}
    account = new_account()
    good = tmp_path / "good.json"
    write_keystore(good, account, PASSWORD, scrypt_n=FAST)
    binary = tmp_path / "binary.json"
    binary.write_bytes(os.urandom(64))
    cases = [
        (("keys", "address", str(binary)), "", "not UTF-8"),
        (("keys", "address", str(tmp_path / "missing.json")), "", "cannot read"),
        (("keys", "new", "--out", str(good)), "", "already there"),
        (("keys", "import", "--out", str(tmp_path / "i.json")), "not a key\n", "private key"),
        (("keys", "new", "--out", str(tmp_path / "n.json")), "", "no password"),
    ]
    for argv, stdin, problem in cases:
        done = _peergrid(*argv, env=env, stdin=stdin)
        assert done.returncode == 2, (argv, done.stderr)
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert problem in lines[0]
        assert no_secret(done.stdout + done.stderr, account.key, PASSWORD)


def _on_a_terminal(argv: list[str], answers: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``peergrid`` on a pseudo-terminal, typing each answer after each prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execve(sys.executable, [sys.executable, "-m", "controller", *argv], env)  # noqa: S606
    seen = b""
    answered = 0  # the screen up to here has been answered (getpass drops typed-ahead input)
    pending = list(answers)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if pending and seen[answered:].rstrip().endswith(b":"):
                os.write(fd, pending.pop(0).encode() + b"\n")
                answered = len(seen)
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


@pytest.mark.integration
def test_passwords_and_keys_are_typed_at_prompts_on_a_terminal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERGRID_")}
    made = tmp_path / "typed.json"
    code, screen = _on_a_terminal(["keys", "new", "--out", str(made)], [PASSWORD, PASSWORD], env)
    assert code == 0, screen
    assert "Password for new keystore" in screen
    assert "Repeat the password" in screen
    assert PASSWORD not in screen  # not echoed
    assert keystore_address(made) in screen

    code, screen = _on_a_terminal(
        ["keys", "new", "--out", str(tmp_path / "differ.json")], [PASSWORD, "other"], env
    )
    assert code == 2
    assert "passwords differ" in screen
    assert not (tmp_path / "differ.json").exists()

    code, screen = _on_a_terminal(  # Ctrl-D at the prompt: a refusal, not a traceback
        ["keys", "new", "--out", str(tmp_path / "eof.json")], ["\x04"], env
    )
    assert code == 2
    assert "cancelled" in screen
    assert "Traceback" not in screen

    account = new_account()
    imported = tmp_path / "imported.json"
    code, screen = _on_a_terminal(
        ["keys", "import", "--out", str(imported)], [account.key.hex(), PASSWORD, PASSWORD], env
    )
    assert code == 0, screen
    assert "Private key of" in screen
    assert no_secret(screen, account.key, PASSWORD)
    assert keystore_address(imported) == account.address
