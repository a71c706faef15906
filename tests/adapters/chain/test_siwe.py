"""EIP-4361 (Sign-In with Ethereum) messages: the spec's examples, strict parsing, round trips,
and signatures that a stock wallet library (ethers v6, npm) makes and checks.

The example messages are ``tests/data/eip4361/*.txt``, copied from the EIP.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st
from web3 import Web3

from adapters.chain import siwe
from adapters.chain.siwe import SiweMessage, format_message, parse
from adapters.errors import SiweRefused

DATA = Path(__file__).parents[2] / "data" / "eip4361"
ROOT = Path(__file__).parents[3]
EXAMPLES = sorted(DATA.glob("*.txt"))
EXAMPLE_ADDRESS = "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
KEY = "0x" + "4c" * 32
SIGNER = Account.from_key(KEY).address

# -- the EIP's examples ------------------------------------------------------------------------


def test_the_three_examples_of_the_eip_are_there() -> None:
    assert [p.name for p in EXAMPLES] == [
        "explicit_scheme.txt",
        "implicit_scheme.txt",
        "implicit_scheme_explicit_port.txt",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_each_example_parses_and_formats_back_byte_for_byte(path: Path) -> None:
    text = path.read_text("ascii")
    message = parse(text)
    assert format_message(message) == text
    assert message.address == EXAMPLE_ADDRESS
    assert message.statement == "I accept the ExampleOrg Terms of Service: https://example.com/tos"
    assert message.uri == "https://example.com/login"
    assert (message.version, message.chain_id, message.nonce) == ("1", 1, "32891756")
    assert message.issued_at_time() == datetime(2021, 9, 30, 16, 25, 24, tzinfo=UTC)
    assert message.expiration_time is message.not_before is message.request_id is None
    assert message.resources == (
        "ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
        "https://example.com/my-web2-claim.json",
    )


def test_the_examples_differ_in_scheme_and_port_only() -> None:
    by_name = {p.stem: parse(p.read_text("ascii")) for p in EXAMPLES}
    assert (by_name["implicit_scheme"].scheme, by_name["implicit_scheme"].domain) == (
        None,
        "example.com",
    )
    port = by_name["implicit_scheme_explicit_port"]
    assert (port.scheme, port.domain) == (None, "example.com:3388")
    explicit = by_name["explicit_scheme"]
    assert (explicit.scheme, explicit.domain) == ("https", "example.com")


def full_message(**changes: object) -> SiweMessage:
    """A message with every field (signed by :data:`SIGNER`)."""
    fields: dict[str, object] = {
        "scheme": "https",
        "domain": "peergrid.example:8443",
        "address": SIGNER,
        "statement": "Sign in to PeerGrid.",
        "uri": "https://peergrid.example:8443/v1/sites/demo",
        "chain_id": 31337,
        "nonce": "0123456789abcdef0123456789abcdef",
        "issued_at": "2026-12-04T05:00:00Z",
        "expiration_time": "2026-12-04T05:15:00.500Z",
        "not_before": "2026-12-04T06:00:00+01:00",
        "request_id": "req-1",
        "resources": ("https://peergrid.example/terms", "urn:peergrid:site:demo"),
    }
    fields.update(changes)
    return SiweMessage(**fields)  # type: ignore[arg-type]


def test_every_field_is_written_in_the_eips_order() -> None:
    text = format_message(full_message())
    assert text == (
        "https://peergrid.example:8443 wants you to sign in with your Ethereum account:\n"
        f"{SIGNER}\n\nSign in to PeerGrid.\n\n"
        "URI: https://peergrid.example:8443/v1/sites/demo\nVersion: 1\nChain ID: 31337\n"
        "Nonce: 0123456789abcdef0123456789abcdef\nIssued At: 2026-12-04T05:00:00Z\n"
        "Expiration Time: 2026-12-04T05:15:00.500Z\nNot Before: 2026-12-04T06:00:00+01:00\n"
        "Request ID: req-1\nResources:\n- https://peergrid.example/terms\n"
        "- urn:peergrid:site:demo"
    )
    back = parse(text)
    assert back == full_message()
    assert back.not_before_time() == datetime(2026, 12, 4, 5, tzinfo=UTC)
    assert back.expiration() == datetime(2026, 12, 4, 5, 15, 0, 500_000, tzinfo=UTC)


def test_statement_absent_empty_and_resources_empty_are_distinct() -> None:
    texts = {
        format_message(full_message(statement=None, resources=None)),
        format_message(full_message(statement="", resources=None)),
        format_message(full_message(statement=None, resources=())),
        format_message(full_message(statement="", resources=())),
    }
    assert len(texts) == 4
    for text in texts:
        assert format_message(parse(text)) == text
    assert parse(format_message(full_message(statement=None))).statement is None
    assert parse(format_message(full_message(statement=""))).statement == ""
    assert parse(format_message(full_message(resources=()))).resources == ()


# -- strict: each departure from the grammar is refused, naming the field ------------------------

GOOD = format_message(full_message())


def _swap(old: str, new: str) -> str:
    assert GOOD.count(old) == 1, old
    return GOOD.replace(old, new)


REFUSED = {
    "crlf": (GOOD.replace("\n", "\r\n"), "message"),
    "trailing line break": (GOOD + "\n", "message"),
    "non-ascii statement": (_swap("Sign in to", "Sign ın to"), "message"),
    "header text": (_swap("wants you to sign in", "wants you to log in"), "domain"),
    "empty scheme": (
        _swap("https://peergrid.example:8443 wants", "://peergrid.example wants"),
        "scheme",
    ),
    "bad scheme": (
        _swap("https://peergrid.example:8443 wants", "1http://peergrid.example wants"),
        "scheme",
    ),
    "domain with path": (
        _swap("peergrid.example:8443 wants", "peergrid.example/x wants"),
        "domain",
    ),
    "domain port not digits": (
        _swap("peergrid.example:8443 wants", "peergrid.example:84a wants"),
        "domain",
    ),
    "no host": (_swap("https://peergrid.example:8443 wants", "https://:8443 wants"), "domain"),
    "bad ipv6 host": (_swap("peergrid.example:8443 wants", "[::g]:8443 wants"), "domain"),
    "lower-case address": (_swap(SIGNER, SIGNER.lower()), "address"),
    "bad checksum": (_swap(SIGNER, SIGNER[:-1] + ("A" if SIGNER[-1] != "A" else "B")), "address"),
    "short address": (_swap(SIGNER, SIGNER[:-2]), "address"),
    "no blank line after address": (_swap(f"{SIGNER}\n\n", f"{SIGNER}\n"), "statement"),
    "statement with a quote": (_swap("Sign in to PeerGrid.", 'Sign "in"'), "statement"),
    "statement with a percent": (_swap("Sign in to PeerGrid.", "100% sure"), "statement"),
    "no blank line before URI": (_swap("PeerGrid.\n\nURI", "PeerGrid.\nURI"), "URI"),
    "URI with a space": (_swap("URI: https://peergrid", "URI: https://peer grid"), "URI"),
    "URI without scheme": (
        _swap("URI: https://peergrid.example:8443/v1/sites/demo", "URI: peergrid.example/v1"),
        "URI",
    ),
    "URI with bad escape": (_swap("/v1/sites/demo", "/v1/%zz"), "URI"),
    "version 2": (_swap("Version: 1", "Version: 2"), "Version"),
    "lower-case tag": (_swap("Version: 1", "version: 1"), "Version"),
    "missing Version": (_swap("Version: 1\n", ""), "Version"),
    "fields swapped": (
        _swap("Version: 1\nChain ID: 31337", "Chain ID: 31337\nVersion: 1"),
        "Version",
    ),
    "chain id leading zero": (_swap("Chain ID: 31337", "Chain ID: 031337"), "Chain ID"),
    "chain id not a number": (_swap("Chain ID: 31337", "Chain ID: 0x7a69"), "Chain ID"),
    "short nonce": (_swap("Nonce: 0123456789abcdef0123456789abcdef", "Nonce: 1234567"), "Nonce"),
    "nonce with a dash": (_swap("Nonce: 0123456789abcdef", "Nonce: 01234567-9abcdef"), "Nonce"),
    "issued at without zone": (
        _swap("Issued At: 2026-12-04T05:00:00Z", "Issued At: 2026-12-04T05:00:00"),
        "Issued At",
    ),
    "issued at with space": (
        _swap("Issued At: 2026-12-04T05:00:00Z", "Issued At: 2026-12-04 05:00:00Z"),
        "Issued At",
    ),
    "issued at month 13": (_swap("Issued At: 2026-12-04", "Issued At: 2026-13-04"), "Issued At"),
    "issued at feb 30": (_swap("Issued At: 2026-12-04", "Issued At: 2026-02-30"), "Issued At"),
    "leap second": (
        _swap("Issued At: 2026-12-04T05:00:00Z", "Issued At: 2026-12-31T23:59:60Z"),
        "Issued At",
    ),
    "offset out of range": (_swap("06:00:00+01:00", "06:00:00+24:00"), "Not Before"),
    "expiration not a time": (
        _swap("Expiration Time: 2026-12-04T05:15:00.500Z", "Expiration Time: tomorrow"),
        "Expiration Time",
    ),
    "optional fields out of order": (
        _swap(
            "Expiration Time: 2026-12-04T05:15:00.500Z\nNot Before: 2026-12-04T06:00:00+01:00",
            "Not Before: 2026-12-04T06:00:00+01:00\nExpiration Time: 2026-12-04T05:15:00.500Z",
        ),
        "message",
    ),
    "request id with space": (_swap("Request ID: req-1", "Request ID: req 1"), "Request ID"),
    "resource without dash": (_swap("- urn:peergrid", "urn:peergrid"), "Resources"),
    "resource not a URI": (_swap("- urn:peergrid:site:demo", "- not a uri"), "Resources[1]"),
    "unknown field": (_swap("Request ID: req-1", "Request ID: req-1\nSession: 1"), "message"),
    "too long": ("x" * (siwe.MAX_MESSAGE_CHARS + 1), "message"),
    "empty": ("", "domain"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_departure_from_the_grammar_is_refused_naming_the_field(case: str) -> None:
    text, field = REFUSED[case]
    with pytest.raises(SiweRefused) as caught:
        parse(text)
    assert caught.value.code == "malformed"
    assert caught.value.field == field, str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_the_refusal_cases_start_from_a_message_that_parses() -> None:
    """Each case above differs from GOOD in one place, and GOOD itself is accepted."""
    assert format_message(parse(GOOD)) == GOOD


def test_format_refuses_fields_it_cannot_write() -> None:
    for changes, field in (
        ({"statement": "two\nlines"}, "statement"),
        ({"chain_id": -1}, "Chain ID"),
        ({"version": "2"}, "Version"),
        ({"nonce": "short"}, "Nonce"),
        ({"resources": ("ok:x", "not a uri")}, "Resources[1]"),
        ({"domain": "a b"}, "domain"),
    ):
        with pytest.raises(SiweRefused) as caught:
            format_message(full_message(**changes))
        assert caught.value.field == field


def test_ipv6_and_userinfo_domains_are_in_the_grammar() -> None:
    for domain in ("[::1]:8080", "[2001:db8::7]", "user:pw@host.example", "127.0.0.1:8080"):
        text = format_message(full_message(domain=domain, scheme=None))
        assert parse(text).domain == domain


# -- round trips (hypothesis) -------------------------------------------------------------------

_UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
_SUB_DELIMS = "!$&'()*+,;="
_PCHAR = _UNRESERVED + _SUB_DELIMS + ":@"
_STATEMENT = _UNRESERVED + _SUB_DELIMS + ":/?#[]@ "

ADDRESSES = [Account.from_key(bytes([i]) * 32).address for i in range(1, 33)]
labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
hosts = st.one_of(
    st.lists(labels, min_size=1, max_size=3).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
domains = st.builds(
    lambda user, host, port: f"{user + '@' if user else ''}{host}{':' + port if port else ''}",
    st.one_of(st.just(""), labels),
    hosts,
    st.one_of(st.just(""), st.integers(0, 65535).map(str)),
)
segments = st.text(alphabet=_PCHAR, max_size=8)
uris = st.builds(
    lambda scheme, host, path, query, frag: (
        f"{scheme}://{host}{''.join('/' + s for s in path)}"
        f"{'?' + query if query is not None else ''}{'#' + frag if frag is not None else ''}"
    ),
    st.sampled_from(["https", "http", "ipfs", "a+b.c-d"]),
    hosts,
    st.lists(segments, max_size=3),
    st.one_of(st.none(), st.text(alphabet=_PCHAR + "/?", max_size=8)),
    st.one_of(st.none(), st.text(alphabet=_PCHAR + "/?", max_size=8)),
) | st.builds(lambda nid, rest: f"urn:{nid}:{rest}", labels, st.text(alphabet=_PCHAR, min_size=1))
times = st.builds(
    lambda moment, frac, zone, upper: (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        + ("t" if upper % 2 else "T")
        + f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
        + (f".{frac}" if frac else "")
        + zone
    ),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30)),  # noqa: DTZ001
    st.text(alphabet="0123456789", max_size=9),
    st.sampled_from(["Z", "z", "+00:00", "-05:30", "+14:00", "-23:59"]),
    st.integers(0, 1),
)
messages = st.builds(
    SiweMessage,
    scheme=st.one_of(st.none(), st.sampled_from(["https", "http", "web+peer", "x-1.2"])),
    domain=domains,
    address=st.sampled_from(ADDRESSES),
    statement=st.one_of(st.none(), st.text(alphabet=_STATEMENT, max_size=40)),
    uri=uris,
    chain_id=st.integers(0, 2**256 - 1),
    nonce=st.text(alphabet=_UNRESERVED[:62], min_size=8, max_size=40),
    issued_at=times,
    expiration_time=st.one_of(st.none(), times),
    not_before=st.one_of(st.none(), times),
    request_id=st.one_of(st.none(), st.text(alphabet=_PCHAR, max_size=20)),
    resources=st.one_of(st.none(), st.lists(uris, max_size=4).map(tuple)),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_format_then_parse_is_the_identity(message: SiweMessage) -> None:
    text = format_message(message)
    assert parse(text) == message
    assert format_message(parse(text)) == text


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_deleting_or_duplicating_a_line_is_refused_or_still_round_trips(
    message: SiweMessage, data: st.DataObject
) -> None:
    """Whatever parse accepts formats back to exactly the text it read."""
    lines = format_message(message).split("\n")
    i = data.draw(st.integers(0, len(lines) - 1))
    variant = lines[:i] + lines[i + 1 :] if data.draw(st.booleans()) else lines[: i + 1] + lines[i:]
    text = "\n".join(variant)
    try:
        parsed = parse(text)
    except SiweRefused as exc:
        code = exc.code
    else:
        code = "accepted"
        assert format_message(parsed) == text
    assert code in {"malformed", "accepted"}


def test_time_helpers() -> None:
    assert siwe.rfc3339(datetime(2026, 12, 4, 6, 0, tzinfo=timezone(timedelta(hours=1)))) == (
        "2026-12-04T05:00:00Z"
    )
    assert siwe.rfc3339(datetime(2026, 12, 4, 5, 0, 0, 250_000, tzinfo=UTC)).endswith(":00.250Z")
    assert siwe.rfc3339(datetime(2026, 12, 4, 5, 0, 0, 7, tzinfo=UTC)).endswith(":00.000007Z")
    with pytest.raises(SiweRefused):
        siwe.rfc3339(datetime(2026, 12, 4))  # noqa: DTZ001 - naive on purpose
    assert siwe.parse_time("2026-12-04T05:00:00.1234567891z") == datetime(
        2026, 12, 4, 5, 0, 0, 123_456, tzinfo=UTC
    )


# -- signatures ---------------------------------------------------------------------------------


def test_a_signed_message_verifies_and_any_change_is_refused() -> None:
    text = format_message(full_message())
    signature = siwe.sign(text, KEY)
    assert siwe.verify(text, signature) == full_message()
    assert siwe.recover(text, signature) == SIGNER
    tampered = text.replace("Chain ID: 31337", "Chain ID: 31338")
    with pytest.raises(SiweRefused) as caught:
        siwe.verify(tampered, signature)
    assert caught.value.code == "bad_signature"


def test_v_as_0_or_1_is_accepted_and_malformed_signatures_are_refused() -> None:
    text = format_message(full_message())
    signature = siwe.sign(text, KEY)
    raw = bytearray.fromhex(signature[2:])
    raw[64] -= 27
    assert siwe.recover(text, "0x" + raw.hex()) == SIGNER
    n = siwe.SECP256K1_N
    high_s = bytearray.fromhex(signature[2:])
    high_s[32:64] = (n - int.from_bytes(high_s[32:64])).to_bytes(32)
    high_s[64] ^= 1  # 27 <-> 28: the same key, the malleated twin
    for bad, code in (
        (signature[:-2], "malformed"),
        (signature + "00", "malformed"),
        ("0x" + "zz" * 65, "malformed"),
        ("0x" + bytes(high_s).hex(), "bad_signature"),
        (signature[:-2] + "1d", "bad_signature"),  # v = 29
        ("0x" + "00" * 64 + "1b", "bad_signature"),  # r = s = 0
    ):
        with pytest.raises(SiweRefused) as caught:
            siwe.recover(text, bad)
        assert caught.value.code == code, bad


def test_signed_by_another_key_is_refused() -> None:
    text = format_message(full_message())
    other = siwe.sign(text, "0x" + "11" * 32)
    with pytest.raises(SiweRefused, match="not by the message's address") as caught:
        siwe.verify(text, other)
    assert caught.value.code == "bad_signature"


# -- interoperability: ethers v6 (what browser wallets libraries use) ---------------------------

ETHERS_JS = """
const { Wallet, verifyMessage } = require("ethers");
const jobs = JSON.parse(require("fs").readFileSync(0, "utf8"));
(async () => {
  const out = [];
  for (const job of jobs) {
    if (job.op === "sign") out.push(await new Wallet(job.key).signMessage(job.message));
    else out.push(verifyMessage(job.message, job.signature));
  }
  process.stdout.write(JSON.stringify(out));
})();
"""


def _ethers(jobs: list[dict[str, str]]) -> list[str]:
    node = shutil.which("node")
    modules = ROOT / ".tools" / "node_modules"
    if node is None or not (modules / "ethers").is_dir():
        pytest.skip("node and ethers (.tools/node_modules, installed by scripts/test) needed")
    done = subprocess.run(  # noqa: S603 - our own script, no shell
        [node, "-e", ETHERS_JS],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "NODE_PATH": str(modules)},
    )
    result: list[str] = json.loads(done.stdout)
    return result


def test_ethers_signs_what_peergrid_verifies_and_the_reverse() -> None:
    text = format_message(full_message())
    ours = siwe.sign(text, KEY)
    theirs, recovered = _ethers(
        [
            {"op": "sign", "key": KEY, "message": text},
            {"op": "verify", "message": text, "signature": ours},
        ]
    )
    assert theirs == ours  # RFC 6979: the same key and message give the same signature
    assert siwe.verify(text, theirs).address == SIGNER
    assert recovered == SIGNER


def test_the_message_is_signed_as_its_utf8_bytes_with_the_eip191_prefix() -> None:
    """A fault injected into the encoding (no prefix) is caught: signatures stop matching."""
    text = format_message(full_message())
    good = siwe.sign(text, KEY)
    bare = Account.unsafe_sign_hash(Web3.keccak(text.encode("utf-8")), KEY)  # no EIP-191 prefix
    wrong = "0x" + bytes(bare.signature).hex()
    assert wrong != good
    with pytest.raises(SiweRefused):
        siwe.verify(text, wrong)


def test_a_message_object_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        full_message().nonce = "x"  # type: ignore[misc]
