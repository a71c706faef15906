"""``peergrid order ...`` and :class:`controller.client.PeerGridClient` against a real server.

The server is the API suite's: uvicorn on 127.0.0.1 on the demo site's runtime (loopback
Modbus simulators, the embedded chain, a real SQLite store), its clock injected (fixture
``tests/controller/api/serverkit.py``'s ``serve_demo``, imported, not copied). Keys are in
real Web3 Secret Storage files written by eth-account in ``tmp_path``; the CLI runs in
process (``controller.cli.main``) and talks HTTP to the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from eth_account import Account

from adapters.chain import derive_account, typed_data
from adapters.chain.typed_data import MessageKind
from controller import client as client_module
from controller.cli import main
from controller.client import ApiRefused, ClientError, PeerGridClient
from tests.controller.api.serverkit import Api, serve_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API suite's server (``serverkit.serve_demo``), one for this module."""
    with serve_demo(tmp_path_factory.mktemp("cli-order")) as served:
        yield served


PASSWORD = "correct horse battery staple"  # a test keystore's password


def keystore(tmp_path: Path, label: str) -> tuple[Path, Path]:
    """A keystore of the demo key of ``label`` (scrypt, small n) and its password file."""
    account = derive_account(label)
    doc = Account.encrypt(account.key, PASSWORD, kdf="scrypt", iterations=2**12)
    path = tmp_path / f"{label}.json"
    path.write_text(json.dumps(doc), "utf-8")
    secret = tmp_path / f"{label}.password"
    secret.write_text(PASSWORD + "\n", "utf-8")
    return path, secret


def run(
    capsys: pytest.CaptureFixture[str], api: Api, tmp_path: Path, who: str, *argv: str
) -> tuple[int, str, str]:
    """``peergrid order <argv>`` as ``who``: exit code, stdout, stderr."""
    path, secret = keystore(tmp_path, who)
    command, *rest = argv
    code = main(
        [
            "order",
            command,
            "--api",
            api.base,
            "--keystore",
            str(path),
            "--password-file",
            str(secret),
            *rest,
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def next_open(api: Api) -> int:
    """The first interval whose gate is open on the server's clock [Unix s]."""
    with PeerGridClient(api.base) as http:
        return http.site_info().next_open_interval()


# ------------------------------------------------------------------------------ the CLI
def test_place_list_cancel_through_the_cli(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        api,
        tmp_path,
        "alice",
        "place",
        "--interval-start",
        "next",
        "--side",
        "buy",
        "--energy-wh",
        "400",
        "--limit-price",
        "310000",
        "--json",
    )
    assert code == 0, err
    ack = json.loads(out)
    assert ack["kind"] == "Order"
    assert ack["participant"] == "alice"
    assert ack["status"] == "accepted"
    assert ack["interval_start_s"] == next_open(api)
    digest = ack["digest"]

    code, out, err = run(capsys, api, tmp_path, "alice", "list")
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith(digest))
    assert "accepted" in line
    assert "buy 400 Wh at 310000/kWh" in line

    code, out, err = run(capsys, api, tmp_path, "alice", "cancel", "--digest", digest)
    assert code == 0, err
    assert f"cancelling {digest}" in out

    code, out, err = run(capsys, api, tmp_path, "alice", "list", "--json")
    assert code == 0, err
    mine = {item["digest"]: item for item in json.loads(out)}
    assert mine[digest]["status"] == "cancelled"
    code, out, err = run(capsys, api, tmp_path, "alice", "list", "--kind", "cancel", "--json")
    assert code == 0, err
    assert [c["cancel_digest"] for c in json.loads(out)][:1] == [digest]

    # bob signs in and sees none of alice's orders
    code, out, err = run(capsys, api, tmp_path, "bob", "list", "--json")
    assert code == 0, err
    assert digest not in {item["digest"] for item in json.loads(out)}


def test_a_refusal_is_one_line_with_its_status_and_code(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = api.intervals[-1]  # already cleared: its gate closed long ago
    iso = datetime.fromtimestamp(closed, tz=UTC).isoformat()
    args = ["--side", "buy", "--energy-wh", "100", "--limit-price", "300000"]
    code, out, err = run(capsys, api, tmp_path, "alice", "place", "--interval-start", iso, *args)
    assert code == 1
    assert out == ""
    assert err.startswith("peergrid order place: refused (422 gate_closed): ")
    assert err.count("\n") == 1

    # a nonce reused by another message: 409 nonce_reused
    start = ["--interval-start", "next", "--nonce", "777"]
    code, _, err = run(capsys, api, tmp_path, "carol", "place", *start, *args)
    assert code == 0, err
    other = ["--side", "buy", "--energy-wh", "101", "--limit-price", "300000"]
    code, _, err = run(capsys, api, tmp_path, "carol", "place", *start, *other)
    assert code == 1
    assert "refused (409 nonce_reused)" in err


def test_every_standing_order_kind_through_the_cli(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kinds = {
        "sell_surplus": ["--price", "85000"],
        "buy_demand": ["--price", "320000"],
        "buy": ["--price", "300000", "--energy-wh", "200"],
        "sell": ["--price", "90000", "--energy-wh", "200"],
        "battery": [
            "--price",
            "100000",
            "--discharge-price",
            "250000",
            "--min-soc-permille",
            "200",
            "--max-soc-permille",
            "900",
        ],
    }
    for kind, terms in kinds.items():
        code, out, err = run(
            capsys,
            api,
            tmp_path,
            "heidi",
            "standing",
            "--kind",
            kind,
            "--valid-from",
            "next",
            *terms,
            "--json",
        )
        assert code == 0, (kind, err)
        ack = json.loads(out)
        assert ack["kind"] == "StandingOrder"
        assert ack["valid_from_s"] == next_open(api)
    code, out, err = run(capsys, api, tmp_path, "heidi", "list", "--kind", "standing")
    assert code == 0, err
    for kind in kinds:
        assert kind in out, kind
    # a rule of the kind is the server's: a battery band upside down is refused
    code, _, err = run(
        capsys,
        api,
        tmp_path,
        "heidi",
        "standing",
        "--kind",
        "battery",
        "--valid-from",
        "next",
        "--price",
        "100000",
        "--discharge-price",
        "250000",
        "--min-soc-permille",
        "900",
        "--max-soc-permille",
        "200",
    )
    assert code == 1
    assert "soc_out_of_range" in err


def test_bad_keystore_input_is_exit_2_and_no_key_is_printed(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = keystore(tmp_path, "alice")
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not the password\n", "utf-8")
    code = main(
        [
            "order",
            "list",
            "--api",
            api.base,
            "--keystore",
            str(path),
            "--password-file",
            str(wrong),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 2
    assert "wrong password" in err
    key_hex = bytes(derive_account("alice").key).hex()
    assert key_hex not in out + err
    empty = tmp_path / "empty.password"
    empty.write_text("\n", "utf-8")
    code = main(
        ["order", "list", "--api", api.base, "--keystore", str(path), "--password-file", str(empty)]
    )
    assert code == 2
    assert "first line is empty" in capsys.readouterr().err


def test_an_unreachable_server_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from adapters.chain.backends import free_port

    path, secret = keystore(tmp_path, "alice")
    code = main(
        [
            "order",
            "list",
            "--api",
            f"http://127.0.0.1:{free_port()}",
            "--keystore",
            str(path),
            "--password-file",
            str(secret),
        ]
    )
    assert code == 1
    assert "ConnectError" in capsys.readouterr().err


def test_the_cli_test_catches_a_client_that_signs_for_another_chain(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness can fail: a client signing with a wrong chain id is refused, exit 1."""
    real = typed_data.signed_payload

    def wrong_chain(*args: object, **kwargs: object) -> dict[str, object]:
        kwargs["chain_id"] = int(str(kwargs["chain_id"])) + 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(client_module, "signed_payload", wrong_chain)
    args = ["--side", "sell", "--energy-wh", "100", "--limit-price", "90000"]
    code, _, err = run(capsys, api, tmp_path, "erin", "place", "--interval-start", "next", *args)
    assert code == 1
    assert "wrong_domain" in err


# ------------------------------------------------------------------------------ the client
def test_client_places_reads_and_raises_the_servers_refusals(api: Api) -> None:
    grace = derive_account("grace")
    with PeerGridClient(api.base, api.service.site_id) as http:
        info = http.site_info()
        assert info.chain_id == api.service.runtime.client.chain_id()
        assert info.verifying_contract == api.service.runtime.client.settlement.address
        assert info.now_s == int(api.clock().timestamp())
        start = info.next_open_interval()
        ack = http.place_order(
            grace, interval_start=start, side="sell", energy_wh=300, limit_price=90_000
        )
        assert (ack.kind, ack.participant, ack.status) == ("Order", "grace", "accepted")
        assert not ack.duplicate
        with pytest.raises(ClientError, match="sign_in"):
            http.orders()
        principal = http.sign_in(grace)
        assert principal == {"address": grace.address, "role": "prosumer", "participant": "grace"}
        assert http.me()["participant"] == "grace"
        digests = [o["digest"] for o in http.orders(MessageKind.ORDER)["items"]]
        assert ack.digest in digests
        first = api.intervals[0]
        end = api.intervals[-1] + api.service.site.interval_s
        assert http.trades("grace", start_s=first, end_s=end)["participant"] == "grace"
        assert http.balances("grace")["address"] == grace.address
        assert http.earnings("grace", start_s=first, end_s=end)["participant"] == "grace"
        assert http.cleared_orders("grace", start_s=first, end_s=end)["participant"] == "grace"
        assert http.current()["next_interval_start_s"] == start
        with pytest.raises(ApiRefused) as refused:
            http.balances("bob")
        assert (refused.value.status, refused.value.code) == (403, "forbidden")
        assert "403 forbidden" in str(refused.value)
        http.sign_out()
        assert http.token is None
        with pytest.raises(ApiRefused) as unknown:
            PeerGridClient(api.base, "elsewhere").site_info()
        assert unknown.value.code == "unknown_site"


def test_the_site_route_names_what_wallets_sign(api: Api) -> None:
    import httpx

    reply = httpx.get(api.site, timeout=30)  # anonymous
    assert reply.status_code == 200, reply.text
    body = reply.json()
    client = api.service.runtime.client
    assert body["eip712_domain"] == {
        "name": "PeerGrid",
        "version": "1",
        "chainId": client.chain_id(),
        "verifyingContract": client.settlement.address,
    }
    assert set(body["eip712_types"]) == {"EIP712Domain", "Order", "StandingOrder", "Cancel"}
    assert body["signin_uri"] == api.service.auth.uri
    assert body["signin_domain"] == api.service.auth.domain
    assert body["gate_closure_s"] == api.service.site.gate_closure_s
    assert "alice" in body["participants"]
