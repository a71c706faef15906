"""Sign-in with Ethereum (EIP-4361), roles and sessions (controller.auth) on a real SQLite store.

Every refusal of :meth:`Auth.sign_in` and :meth:`Auth.principal` is produced once with its
status and code; the clock is injected, so nothing here depends on the wall clock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.chain import siwe
from adapters.chain.accounts import derive_account
from adapters.chain.siwe import SiweMessage, format_message
from controller.auth import (
    CLOCK_SKEW,
    NONCE_TTL,
    SESSION_TTL,
    Auth,
    Principal,
    Role,
    role_addresses,
    token_hash,
)
from controller.config import InvalidSite, SiteConfig, parse_site, read_site
from controller.errors import AuthRefused, ConfigError
from controller.store import Store, sessions
from controller.wiring import participant_accounts
from market.domain import ParticipantId

ROOT = Path(__file__).parents[2]
DOMAIN = "127.0.0.1:8080"
URI = "http://127.0.0.1:8080/v1/sites/demo"
CHAIN_ID = 31337
T0 = datetime(2026, 12, 4, 5, 0, tzinfo=UTC)
AUDITOR_KEY = "0x" + "a1" * 32
AUDITOR = Account.from_key(AUDITOR_KEY).address
STRANGER_KEY = "0x" + "5e" * 32


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.at = now

    def __call__(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> None:
        self.at += delta


def make_site(**site: object) -> SiteConfig:
    return parse_site(
        {
            "site": {"operators": ["derive:web-operator"], "auditors": [AUDITOR], **site},
            "participants": [{"id": "alice", "bus": "b1"}, {"id": "bob", "bus": "b2"}],
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{(tmp_path / 'auth.sqlite').as_posix()}")
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(store: Store, clock: Clock) -> Auth:
    site = make_site()
    return Auth(
        store,
        site,
        participant_accounts(site, trial=True),
        domain=DOMAIN,
        uri=URI,
        chain_id=CHAIN_ID,
        now=clock,
    )


def demo_key(label: str) -> str:
    return "0x" + bytes(derive_account(label).key).hex()


KEYS = {
    Role.PROSUMER: demo_key("alice"),
    Role.OPERATOR: demo_key("web-operator"),
    Role.AUDITOR: AUDITOR_KEY,
}


def message(key: str, nonce: str, **changes: object) -> str:
    fields: dict[str, object] = {
        "domain": DOMAIN,
        "address": Account.from_key(key).address,
        "statement": "Sign in to PeerGrid.",
        "uri": URI,
        "chain_id": CHAIN_ID,
        "nonce": nonce,
        "issued_at": siwe.rfc3339(T0),
    }
    fields.update(changes)
    return format_message(SiweMessage(**fields))  # type: ignore[arg-type]


def signed(key: str, nonce: str, **changes: object) -> tuple[str, str]:
    text = message(key, nonce, **changes)
    return text, siwe.sign(text, key)


# -- happy paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_each_role_signs_in_and_out(auth: Auth, store: Store, role: Role) -> None:
    key = KEYS[role]
    address = Account.from_key(key).address
    session = auth.sign_in(*signed(key, auth.new_nonce()))
    participant = ParticipantId("alice") if role is Role.PROSUMER else None
    assert session.principal == Principal(address, role, participant)
    assert session.expires_at == T0 + SESSION_TTL
    assert auth.principal(session.token) == session.principal
    row = store.session(token_hash(session.token))
    assert row is not None
    assert session.token not in row.values()  # only its hash is stored
    assert auth.sign_out(session.token) is True
    assert auth.sign_out(session.token) is False
    with pytest.raises(AuthRefused) as caught:
        auth.principal(session.token)
    assert (caught.value.status, caught.value.code) == (401, "no_session")


def test_an_explicit_scheme_matching_the_uri_is_accepted(auth: Auth) -> None:
    session = auth.sign_in(*signed(KEYS[Role.PROSUMER], auth.new_nonce(), scheme="http"))
    assert session.principal.role is Role.PROSUMER


def test_a_session_never_outlives_the_messages_expiry(auth: Auth) -> None:
    end = T0 + timedelta(minutes=2)
    session = auth.sign_in(
        *signed(KEYS[Role.AUDITOR], auth.new_nonce(), expiration_time=siwe.rfc3339(end))
    )
    assert session.expires_at == end


def test_issued_at_within_the_skew_is_accepted(auth: Auth) -> None:
    ahead = siwe.rfc3339(T0 + CLOCK_SKEW)
    assert auth.sign_in(*signed(KEYS[Role.OPERATOR], auth.new_nonce(), issued_at=ahead))


# -- every refusal, with its status and code ----------------------------------------------------


def refused(auth: Auth, text: str, signature: str) -> tuple[int, str]:
    with pytest.raises(AuthRefused) as caught:
        auth.sign_in(text, signature)
    return caught.value.status, caught.value.code


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"domain": "evil.example"}, "wrong_domain"),
        ({"domain": "127.0.0.1:8081"}, "wrong_domain"),
        ({"scheme": "https"}, "wrong_domain"),
        ({"uri": "http://127.0.0.1:8080/v1/sites/other"}, "wrong_uri"),
        ({"chain_id": 1}, "wrong_chain"),
        ({"issued_at": siwe.rfc3339(T0 + CLOCK_SKEW + timedelta(seconds=1))}, "issued_in_future"),
        ({"expiration_time": siwe.rfc3339(T0)}, "expired"),
        ({"not_before": siwe.rfc3339(T0 + timedelta(seconds=1))}, "not_yet_valid"),
    ],
)
def test_a_message_for_another_server_chain_or_time_is_refused(
    auth: Auth, changes: dict[str, object], code: str
) -> None:
    nonce = auth.new_nonce()
    assert refused(auth, *signed(KEYS[Role.PROSUMER], nonce, **changes)) == (401, code)
    # the refusal did not use the nonce up
    assert auth.sign_in(*signed(KEYS[Role.PROSUMER], nonce))


def test_a_malformed_message_or_signature_is_refused(auth: Auth) -> None:
    text, signature = signed(KEYS[Role.PROSUMER], auth.new_nonce())
    assert refused(auth, text + "\n", signature) == (401, "malformed")
    assert refused(auth, text.replace("Version: 1", "Version: 2"), signature) == (
        401,
        "malformed",
    )
    assert refused(auth, text, signature[:-2]) == (401, "malformed")


def test_a_bad_signature_is_refused(auth: Auth) -> None:
    nonce = auth.new_nonce()
    text = message(KEYS[Role.PROSUMER], nonce)
    other = siwe.sign(text, STRANGER_KEY)  # signed by someone else
    assert refused(auth, text, other) == (401, "bad_signature")
    tampered = text.replace("Sign in to PeerGrid.", "Sign in to PeerGrid!")
    assert refused(auth, tampered, siwe.sign(text, KEYS[Role.PROSUMER])) == (401, "bad_signature")


def test_an_address_without_a_role_is_refused_with_403(auth: Auth) -> None:
    assert refused(auth, *signed(STRANGER_KEY, auth.new_nonce())) == (403, "unknown_address")
    # GRID and COMMUNITY have demo accounts on a trial chain, but they are not prosumers
    for label in ("GRID", "COMMUNITY"):
        key = demo_key(label)
        assert refused(auth, *signed(key, auth.new_nonce())) == (403, "unknown_address")


def test_a_nonce_this_server_did_not_issue_is_refused(auth: Auth) -> None:
    assert refused(auth, *signed(KEYS[Role.PROSUMER], "0123456789abcdef")) == (
        401,
        "unknown_nonce",
    )


def test_a_nonce_signs_in_once(auth: Auth) -> None:
    nonce = auth.new_nonce()
    text, signature = signed(KEYS[Role.PROSUMER], nonce)
    auth.sign_in(text, signature)
    assert refused(auth, text, signature) == (401, "nonce_used")
    # nor can another role's message reuse it
    assert refused(auth, *signed(KEYS[Role.OPERATOR], nonce)) == (401, "nonce_used")


def test_an_expired_nonce_is_refused(auth: Auth, clock: Clock) -> None:
    nonce = auth.new_nonce()
    clock.advance(NONCE_TTL)
    text, signature = signed(KEYS[Role.PROSUMER], nonce, issued_at=siwe.rfc3339(clock.at))
    assert refused(auth, text, signature) == (401, "nonce_expired")


def test_concurrent_sign_ins_with_one_nonce_open_one_session(store: Store, clock: Clock) -> None:
    """Eight threads, each with its own Auth on the same database, race for one nonce."""
    site = make_site()
    accounts = participant_accounts(site, trial=True)
    auths = [
        Auth(store, site, accounts, domain=DOMAIN, uri=URI, chain_id=CHAIN_ID, now=clock)
        for _ in range(8)
    ]
    nonce = auths[0].new_nonce()
    text, signature = signed(KEYS[Role.PROSUMER], nonce)
    outcomes: list[str] = []
    start = threading.Barrier(len(auths))

    def attempt(a: Auth) -> None:
        start.wait()
        try:
            a.sign_in(text, signature)
        except AuthRefused as exc:
            outcomes.append(exc.code)
        else:
            outcomes.append("opened")

    threads = [threading.Thread(target=attempt, args=(a,)) for a in auths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["nonce_used"] * 7 + ["opened"]
    with store.engine.connect() as conn:
        assert conn.execute(sessions.select()).fetchall().__len__() == 1


def test_the_single_use_check_catches_a_store_that_forgets_it(
    auth: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: a store that opens a session without using the nonce is caught."""
    nonce = auth.new_nonce()
    text, signature = signed(KEYS[Role.PROSUMER], nonce)
    auth.sign_in(text, signature)
    real = Store.open_session

    def forgetful(self: Store, nonce: str, now: datetime, **kw: object) -> object:
        with self.engine.begin() as conn:
            from controller.store import auth_nonces

            conn.execute(auth_nonces.update().values(used_at=None))
        return real(self, nonce, now, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "open_session", forgetful)
    auth.sign_in(text, signature)  # the replay now succeeds: the test above would fail


# -- sessions ---------------------------------------------------------------------------------


def test_a_session_expires_by_the_injected_clock(auth: Auth, store: Store, clock: Clock) -> None:
    session = auth.sign_in(*signed(KEYS[Role.OPERATOR], auth.new_nonce()))
    clock.advance(SESSION_TTL - timedelta(microseconds=1))
    assert auth.principal(session.token).role is Role.OPERATOR
    clock.advance(timedelta(microseconds=1))
    with pytest.raises(AuthRefused) as caught:
        auth.principal(session.token)
    assert (caught.value.status, caught.value.code) == (401, "session_expired")
    assert store.session(token_hash(session.token)) is None  # deleted
    with pytest.raises(AuthRefused) as caught:
        auth.principal(session.token)
    assert caught.value.code == "no_session"


def test_issuing_a_nonce_deletes_expired_nonces_and_sessions(
    auth: Auth, store: Store, clock: Clock
) -> None:
    old = auth.sign_in(*signed(KEYS[Role.AUDITOR], auth.new_nonce()))
    stale = auth.new_nonce()
    clock.advance(SESSION_TTL + timedelta(seconds=1))
    assert store.add_auth_nonce("fresh0000", clock.at, clock.at + NONCE_TTL) == 3
    assert store.session(token_hash(old.token)) is None
    assert refused(auth, *signed(KEYS[Role.AUDITOR], stale, issued_at=siwe.rfc3339(clock.at))) == (
        401,
        "unknown_nonce",
    )


def test_a_session_of_an_address_that_lost_its_role_is_refused(
    auth: Auth, store: Store, clock: Clock
) -> None:
    session = auth.sign_in(*signed(KEYS[Role.AUDITOR], auth.new_nonce()))
    site = make_site(auditors=[])
    later = Auth(
        store,
        site,
        participant_accounts(site, trial=True),
        domain=DOMAIN,
        uri=URI,
        chain_id=CHAIN_ID,
        now=clock,
    )
    with pytest.raises(AuthRefused) as caught:
        later.principal(session.token)
    assert (caught.value.status, caught.value.code) == (403, "unknown_address")


def test_an_unknown_token_is_refused(auth: Auth) -> None:
    with pytest.raises(AuthRefused) as caught:
        auth.principal("not-a-token")
    assert (caught.value.status, caught.value.code) == (401, "no_session")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    issued=st.integers(-600, 600),
    expiry=st.one_of(st.none(), st.integers(-600, 3600)),
    not_before=st.one_of(st.none(), st.integers(-600, 600)),
    elapsed=st.integers(0, 3600),
)
def test_times_decide_sign_in_and_session_end(
    auth: Auth,
    clock: Clock,
    issued: int,
    expiry: int | None,
    not_before: int | None,
    elapsed: int,
) -> None:
    """Whatever the times, a sign-in succeeds exactly when they allow it, and the session
    ends at the earlier of SESSION_TTL and the message's expiry."""
    clock.at = T0
    now = T0
    nonce = auth.new_nonce()
    s = timedelta(seconds=1)
    changes: dict[str, object] = {"issued_at": siwe.rfc3339(now + issued * s)}
    if expiry is not None:
        changes["expiration_time"] = siwe.rfc3339(now + expiry * s)
    if not_before is not None:
        changes["not_before"] = siwe.rfc3339(now + not_before * s)
    allowed = (
        issued * s <= CLOCK_SKEW
        and (expiry is None or expiry > 0)
        and (not_before is None or not_before <= 0)
    )
    text, signature = signed(KEYS[Role.PROSUMER], nonce, **changes)
    if not allowed:
        with pytest.raises(AuthRefused):
            auth.sign_in(text, signature)
        return
    session = auth.sign_in(text, signature)
    end = min(T0 + SESSION_TTL, T0 + (expiry if expiry is not None else 10**6) * s)
    assert session.expires_at == end
    clock.advance(elapsed * s)
    if clock.at < end:
        assert auth.principal(session.token).role is Role.PROSUMER
    else:
        with pytest.raises(AuthRefused):
            auth.principal(session.token)


# -- configuration -----------------------------------------------------------------------------


def test_the_demo_site_has_an_operator_and_an_auditor() -> None:
    site = read_site(ROOT / "controller/sites/demo.toml")
    roles = role_addresses(site, trial=True)
    assert sorted(roles.values()) == [Role.AUDITOR, Role.OPERATOR]
    assert {str(derive_account("demo-operator").address): Role.OPERATOR}.items() <= roles.items()
    with pytest.raises(ConfigError, match="demo key"):
        role_addresses(site, trial=False)


def test_an_address_with_two_roles_is_refused(store: Store, clock: Clock) -> None:
    site = make_site()
    alice = str(derive_account("alice").address)
    both = replace(site, operators=(alice,))
    with pytest.raises(ConfigError, match="participant 'alice'"):
        Auth(
            store,
            both,
            participant_accounts(both, trial=True),
            domain=DOMAIN,
            uri=URI,
            chain_id=CHAIN_ID,
            now=clock,
        )
    twice = replace(site, operators=(AUDITOR,))
    with pytest.raises(ConfigError, match="both operator and auditor"):
        role_addresses(twice, trial=True)


def test_a_naive_clock_is_refused(store: Store) -> None:
    site = make_site()
    naive = Auth(
        store,
        site,
        participant_accounts(site, trial=True),
        domain=DOMAIN,
        uri=URI,
        chain_id=CHAIN_ID,
        now=lambda: datetime(2026, 12, 4),  # noqa: DTZ001 - naive on purpose
    )
    with pytest.raises(ConfigError, match="naive"):
        naive.new_nonce()


def test_the_message_the_server_hands_out_signs_in(auth: Auth, clock: Clock) -> None:
    key = KEYS[Role.PROSUMER]
    address = Account.from_key(key).address
    text = auth.message_for(address, auth.new_nonce())
    parsed = siwe.parse(text)
    assert (parsed.domain, parsed.uri, parsed.chain_id) == (DOMAIN, URI, CHAIN_ID)
    assert parsed.expiration() == clock.at + NONCE_TTL
    assert auth.sign_in(text, siwe.sign(text, key)).principal.participant == "alice"
    with pytest.raises(AuthRefused) as caught:
        auth.message_for(address.lower(), "0123456789")
    assert caught.value.code == "malformed"


def site_problems(site: dict[str, object], chain: dict[str, object] | None = None) -> list[str]:
    data: dict[str, object] = {
        "site": site,
        "participants": [{"id": "alice", "bus": "b1", "account": AUDITOR}],
    }
    if chain is not None:
        data["chain"] = chain
    with pytest.raises(InvalidSite) as caught:
        parse_site(data)
    return list(caught.value.problems)


def test_the_site_file_takes_only_checksummed_role_addresses() -> None:
    lower = AUDITOR.lower()
    typo = AUDITOR[:-1] + ("A" if AUDITOR[-1] != "A" else "B")
    assert site_problems({"operators": [lower, typo, "0x12", "derive:"]}) == [
        f"site.operators[0]: must be in EIP-55 checksum form: {AUDITOR} (the same address), "
        f"got {lower}",
        f"site.operators[1]: EIP-55 checksum does not match (a typo?): {typo}",
        "site.operators[2]: must be an EIP-55 0x address (0x and 40 hex digits) or "
        "\"derive:<label>\", got '0x12'",
        "site.operators[3]: must be an EIP-55 0x address (0x and 40 hex digits) or "
        "\"derive:<label>\", got 'derive:'",
    ]


def test_the_site_file_refuses_an_address_twice_and_demo_keys_off_embedded() -> None:
    assert site_problems({"operators": ["derive:a"], "auditors": ["derive:a", "derive:alice"]}) == [
        "site.auditors[0]: derive:a is already operators[0]",
        "site.auditors[1]: derive:alice is the demo key of account 'alice'; use another label",
    ]
    problems = site_problems(
        {"operators": ["derive:a"]},
        {
            "backend": "rpc",
            "rpc_url": "http://127.0.0.1:8545",
            "grid_account": AUDITOR,
            "community_account": AUDITOR,
        },
    )
    assert problems == [
        "site.operators[0]: backend 'rpc' refuses derived (demo) keys, which anyone who knows "
        "the label can compute; give the 0x address"
    ]
