"""Units of :mod:`controller.client` and :mod:`controller.cli_order` (no PeerGrid server).

The client against the real API is in ``test_cli_order.py``; here the pure parts (interval
arithmetic, parsing) with hypothesis, and a plain HTTP server on 127.0.0.1 that is *not*
the API (what the client says when the URL points elsewhere).
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.chain.typed_data import OrderSide, StandingKind
from controller.cli_order import NEXT, digest_hex, interval_time, read_password
from controller.client import (
    Acknowledgement,
    ApiRefused,
    ClientError,
    PeerGridClient,
    SiteInfo,
    _enum,
    unix_s,
)
from controller.keys import KeyUnavailable


def info(now_s: int, interval_s: int, gate_s: int) -> SiteInfo:
    return SiteInfo(
        site_id="s",
        name="s",
        interval_s=interval_s,
        gate_closure_s=gate_s,
        now_s=now_s,
        chain_id=1,
        verifying_contract="0x" + "11" * 20,
        signin_domain="127.0.0.1:1",
        signin_uri="http://127.0.0.1:1",
        signin_statement="Sign in to PeerGrid.",
        participants=("alice",),
    )


@given(
    now_s=st.integers(min_value=0, max_value=4_102_444_800),
    interval_s=st.sampled_from([60, 300, 900, 3600]),
    data=st.data(),
)
def test_next_open_interval_is_the_first_boundary_with_an_open_gate(
    now_s: int, interval_s: int, data: st.DataObject
) -> None:
    gate_s = data.draw(st.integers(min_value=0, max_value=interval_s - 1))
    start = info(now_s, interval_s, gate_s).next_open_interval()
    assert start % interval_s == 0
    assert now_s < start - gate_s  # open (the intake's rule)
    earlier = start - interval_s
    assert earlier <= now_s or not now_s < earlier - gate_s  # the one before is not
    assert start - now_s <= 2 * interval_s


def test_unix_s_takes_aware_times_and_refuses_naive_ones() -> None:
    moment = datetime(2026, 6, 21, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    assert unix_s(moment) == int(datetime(2026, 6, 21, 7, 0, tzinfo=UTC).timestamp())
    assert unix_s(1_782_027_000) == 1_782_027_000
    with pytest.raises(ClientError, match="no time zone"):
        unix_s(datetime(2026, 6, 21, 9, 0))  # noqa: DTZ001 - the naive time refused


def test_sides_and_kinds_by_name() -> None:
    assert _enum(OrderSide, "BUY", "side") is OrderSide.BUY
    assert _enum(StandingKind, "sell_surplus", "kind") is StandingKind.SELL_SURPLUS
    assert _enum(OrderSide, OrderSide.SELL, "side") is OrderSide.SELL
    with pytest.raises(ClientError, match="side 'hold' is not one of buy, sell"):
        _enum(OrderSide, "hold", "side")


def test_an_acknowledgement_round_trips_and_a_garbled_one_is_a_client_error() -> None:
    body = {
        "digest": "0x" + "ab" * 32,
        "kind": "Order",
        "participant": "alice",
        "nonce": "18446744073709551615",
        "status": "accepted",
        "received_at": "2026-06-21T07:00:00+00:00",
        "interval_start_s": 1_782_027_000,
        "valid_from_s": None,
        "valid_until_s": None,
        "cancels": None,
        "duplicate": False,
    }
    ack = Acknowledgement.from_json(body)
    assert ack.nonce == 2**64 - 1
    assert ack.to_dict() == body
    with pytest.raises(ClientError, match="digest"):
        Acknowledgement.from_json({k: v for k, v in body.items() if k != "digest"})


@given(st.text(max_size=80))
def test_digest_hex_takes_exactly_32_bytes_of_hex(text: str) -> None:
    try:
        value = digest_hex(text)
    except argparse.ArgumentTypeError:
        return
    assert len(value) == 66
    assert value.startswith("0x")
    int(value, 16)


def test_digest_and_interval_arguments() -> None:
    assert digest_hex("0X" + "AB" * 32) == "0x" + "ab" * 32
    with pytest.raises(argparse.ArgumentTypeError):
        digest_hex("0x" + "ab" * 31)
    assert interval_time("next") is NEXT
    assert interval_time("2026-06-21T09:00Z") == datetime(2026, 6, 21, 9, 0, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError):
        interval_time("2026-06-21T09:00")  # no zone


def test_the_password_file_gives_its_first_line(tmp_path: Path) -> None:
    def args(path: Path | None) -> argparse.Namespace:
        return argparse.Namespace(
            password_file=None if path is None else str(path), password_env=""
        )

    secret = tmp_path / "pw"
    secret.write_text("s3cret \nsecond line\n", "utf-8")
    assert read_password(args(secret), tmp_path / "k.json") == "s3cret "
    secret.write_bytes(b"\xff\xfe")
    with pytest.raises(KeyUnavailable, match="not UTF-8"):
        read_password(args(secret), tmp_path / "k.json")
    with pytest.raises(KeyUnavailable, match=r"cannot be read|No such file"):
        read_password(args(tmp_path / "missing"), tmp_path / "k.json")
    secret.write_text("x" * 5000, "utf-8")
    with pytest.raises(KeyUnavailable, match="longer than"):
        read_password(args(secret), tmp_path / "k.json")


class _NotTheApi(BaseHTTPRequestHandler):
    """Answers every request with an HTML 502, as a proxy in front of a dead server does."""

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        body = b"<html>502 Bad Gateway</html>"
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def not_the_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotTheApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def test_a_server_that_is_not_the_api_is_a_client_error_not_a_refusal(not_the_api: str) -> None:
    with pytest.raises(ClientError) as raised:
        PeerGridClient(not_the_api)  # asks /health for the site id
    assert not isinstance(raised.value, ApiRefused)
    assert "HTTP 502 without the API's JSON" in str(raised.value)
    with PeerGridClient(not_the_api, "demo") as client, pytest.raises(ClientError, match="502"):
        client.site_info()
