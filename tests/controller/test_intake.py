"""Signed orders in (controller.intake): every refusal, idempotency, nonces, cancel, the book.

Real SQLite store, real EIP-712 signing (adapters.chain.typed_data) with fixed demo keys,
an injected clock (never the wall clock).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dbkit import BACKENDS, new_database_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.chain.accounts import derive_account
from adapters.chain.typed_data import MessageKind, signed_payload
from controller.bidding import PlannedKind, plan_orders
from controller.config import MAX_PRICE, OrderKind, SiteConfig
from controller.demo import demo_site
from controller.intake import (
    STATUS_OF_CODE,
    IntakeRefused,
    OrderIntake,
    check_signed_orders,
    signed_book,
    signed_buy_cost,
    signed_evidence,
)
from controller.store import Store
from controller.wiring import participant_accounts
from market.domain import Interval, ParticipantId, book_to_dict
from market.orderbook import build_order_book

CHAIN_ID = 31337
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
GATE_S = 300
T0 = datetime(2026, 6, 21, 8, 0, tzinfo=UTC)  # a boundary of the 900 s intervals
START = int(T0.timestamp()) + 3600  # an interval an hour ahead: its gate is open at T0


class Clock:
    """The injected clock."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def site() -> SiteConfig:
    return dataclasses.replace(demo_site(), gate_closure_s=GATE_S)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'intake.sqlite'}")
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


ESCROW = {"bob": 1_000_000}  # bob: 1 token of free escrow; the others are not checked


def make_intake(store: Store, site: SiteConfig, clock: Clock) -> OrderIntake:
    return OrderIntake(
        store=store,
        site=site,
        accounts=participant_accounts(site, trial=True),
        chain_id=CHAIN_ID,
        verifying_contract=CONTRACT,
        now=clock,
        escrow=ESCROW.get,
    )


@pytest.fixture
def intake(store: Store, site: SiteConfig, clock: Clock) -> OrderIntake:
    return make_intake(store, site, clock)


def address(pid: str) -> str:
    return str(derive_account(pid).address)


def order(pid: str = "alice", **fields: Any) -> dict[str, Any]:
    base = {
        "participant": address(pid),
        "intervalStart": START,
        "side": 1,
        "energyWh": 1000,
        "limitPrice": 90_000,
        "nonce": 1,
        "deadline": START,
    }
    return {**base, **fields}


def standing(pid: str = "alice", **fields: Any) -> dict[str, Any]:
    base = {
        "participant": address(pid),
        "kind": 0,  # sell_surplus
        "energyWh": 0,
        "price": 70_000,
        "dischargePrice": 0,
        "minSocPermille": 0,
        "maxSocPermille": 0,
        "validFrom": START,
        "validUntil": START + 4 * 900,
        "nonce": 2,
        "deadline": START,
    }
    return {**base, **fields}


def cancel(digest: str, pid: str = "alice", **fields: Any) -> dict[str, Any]:
    base = {"participant": address(pid), "orderDigest": digest, "nonce": 99, "deadline": START}
    return {**base, **fields}


def signed(
    kind: MessageKind, message: dict[str, Any], signer: str | None = None, chain_id: int = CHAIN_ID
) -> dict[str, Any]:
    key = derive_account(signer or _pid_of(message["participant"]))
    return signed_payload(kind, message, key, chain_id=chain_id, verifying_contract=CONTRACT)


def _pid_of(addr: str) -> str:
    for pid in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan"):
        if address(pid) == addr:
            return pid
    return "stranger"


def refused(intake: OrderIntake, payload: dict[str, Any]) -> IntakeRefused:
    with pytest.raises(IntakeRefused) as info:
        intake.submit(payload)
    return info.value


# ---------------------------------------------------------------------------- accepting
def test_an_order_is_stored_then_acknowledged(intake: OrderIntake, store: Store) -> None:
    ack = intake.submit(signed(MessageKind.ORDER, order()))
    assert (ack.kind, ack.participant, ack.status, ack.interval_id) == (
        MessageKind.ORDER,
        "alice",
        "accepted",
        START,
    )
    assert not ack.duplicate
    assert ack.received_at == T0
    row = store.signed_order(ack.digest)
    assert row is not None
    assert row["status"] == "accepted"
    assert row["signature"].startswith("0x")
    assert len(row["signature"]) == 132
    assert row["typed_data"]["primaryType"] == "Order"
    assert ack.to_dict()["nonce"] == "1"


def test_the_same_message_again_gets_the_first_ack(
    intake: OrderIntake, store: Store, clock: Clock
) -> None:
    payload = signed(MessageKind.ORDER, order())
    first = intake.submit(payload)
    clock.at = T0 + timedelta(days=1)  # past the deadline and the gate: still the first ack
    again = intake.submit(payload)
    assert again.duplicate
    assert dataclasses.replace(again, duplicate=False) == first
    assert len(store.signed_order_rows()) == 1


def test_another_message_with_a_used_nonce_is_409(intake: OrderIntake, store: Store) -> None:
    intake.submit(signed(MessageKind.ORDER, order(nonce=7)))
    err = refused(intake, signed(MessageKind.ORDER, order(nonce=7, energyWh=2000)))
    assert (err.status, err.code) == (409, "nonce_reused")
    assert "message.nonce" in err.reason
    # a standing order or a Cancel shares the participant's nonces
    err = refused(intake, signed(MessageKind.STANDING_ORDER, standing(nonce=7)))
    assert err.code == "nonce_reused"
    assert len(store.signed_order_rows()) == 1
    # another participant's nonce 7 is its own
    intake.submit(signed(MessageKind.ORDER, order("carol", nonce=7)))


def test_nonces_are_unordered(intake: OrderIntake) -> None:
    for nonce in (2**255, 5, 2, 10**30):
        assert intake.submit(signed(MessageKind.ORDER, order(nonce=str(nonce)))).nonce == nonce


def test_the_store_refuses_a_racing_nonce_and_keeps_the_first(
    intake: OrderIntake, store: Store
) -> None:
    ack = intake.submit(signed(MessageKind.ORDER, order(nonce=3)))
    row = dict(store.signed_order(ack.digest) or {})
    clash = {**row, "digest": "0x" + "ab" * 32}
    stored, new = store.add_signed_order(clash)
    assert not new
    assert stored["digest"] == ack.digest
    assert store.signed_order(clash["digest"]) is None


def test_concurrent_submissions_of_one_message_store_it_once(
    intake: OrderIntake, store: Store
) -> None:
    payload = signed(MessageKind.ORDER, order(nonce=11))
    acks: list[Any] = []
    threads = [threading.Thread(target=lambda: acks.append(intake.submit(payload))) for _ in "xyz"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(acks) == 3
    assert sorted(a.duplicate for a in acks) == [False, True, True]
    assert len(store.signed_order_rows()) == 1


# ---------------------------------------------------------------------------- refusals
def _other_key_payload() -> dict[str, Any]:
    return signed(MessageKind.ORDER, order(), signer="bob")  # bob signs alice's order


def _bad_v() -> dict[str, Any]:
    p = signed(MessageKind.ORDER, order())
    return {**p, "signature": p["signature"][:-2] + "05"}


REFUSALS: dict[str, tuple[Any, int, str]] = {
    "no signature": (lambda: {"typedData": signed(MessageKind.ORDER, order())["typedData"]}, 400,
                     "malformed"),
    "bad v": (_bad_v, 401, "bad_signature"),
    "other chain": (lambda: signed(MessageKind.ORDER, order(), chain_id=1), 403, "wrong_domain"),
    "other signer": (_other_key_payload, 403, "signer_not_participant"),
    "stranger": (lambda: signed(MessageKind.ORDER, order(participant=str(
        derive_account("stranger").address)), signer="stranger"), 403, "unknown_participant"),
    "deadline": (lambda: signed(MessageKind.ORDER, order(deadline=int(T0.timestamp()) - 1)), 422,
                 "deadline_passed"),
    "off boundary": (lambda: signed(MessageKind.ORDER, order(intervalStart=START + 60)), 422,
                     "not_on_boundary"),
    "gate closed": (lambda: signed(MessageKind.ORDER, order(intervalStart=int(T0.timestamp())
                    )), 422, "gate_closed"),
    "past interval": (lambda: signed(MessageKind.ORDER, order(intervalStart=0)), 422,
                      "gate_closed"),
    "too far ahead": (lambda: signed(MessageKind.ORDER, order(intervalStart=START + 8 * 86400)),
                      422, "too_far_ahead"),
    "no energy": (lambda: signed(MessageKind.ORDER, order(energyWh=0)), 422,
                  "energy_out_of_range"),
    "too much energy": (lambda: signed(MessageKind.ORDER, order(energyWh=10**9 + 1)), 422,
                        "energy_out_of_range"),
    "price too high": (lambda: signed(MessageKind.ORDER, order(limitPrice=MAX_PRICE + 1)), 422,
                       "price_out_of_range"),
    "escrow": (lambda: signed(MessageKind.ORDER, order("bob", side=0, energyWh=10_000,
               limitPrice=300_000)), 422, "escrow_insufficient"),
    "standing window": (lambda: signed(MessageKind.STANDING_ORDER, standing(validUntil=START)),
                        422, "bad_window"),
    "standing over": (lambda: signed(MessageKind.STANDING_ORDER, standing(
        validFrom=0, validUntil=int(T0.timestamp()) + GATE_S)), 422, "window_closed"),
    "standing energy": (lambda: signed(MessageKind.STANDING_ORDER, standing(energyWh=5)), 422,
                        "not_for_kind"),
    "standing soc": (lambda: signed(MessageKind.STANDING_ORDER, standing(maxSocPermille=900)),
                     422, "not_for_kind"),
    "fixed without energy": (lambda: signed(MessageKind.STANDING_ORDER, standing(kind=2)), 422,
                             "energy_out_of_range"),
    "battery soc": (lambda: signed(MessageKind.STANDING_ORDER, standing(
        kind=4, price=100, dischargePrice=200, minSocPermille=900, maxSocPermille=100)), 422,
        "soc_out_of_range"),
    "battery prices": (lambda: signed(MessageKind.STANDING_ORDER, standing(
        kind=4, price=200, dischargePrice=100, minSocPermille=100, maxSocPermille=900)), 422,
        "price_out_of_range"),
    "standing escrow": (lambda: signed(MessageKind.STANDING_ORDER, standing(
        "bob", kind=2, energyWh=5000, price=300_000)), 422, "escrow_insufficient"),
    "standing far ahead": (lambda: signed(MessageKind.STANDING_ORDER, standing(
        validFrom=START + 8 * 86400, validUntil=2**64 - 1)), 422, "too_far_ahead"),
    "cancel unknown": (lambda: signed(MessageKind.CANCEL, cancel("0x" + "12" * 32)), 404,
                       "unknown_order"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_refusal_has_its_status_and_code_and_stores_nothing(
    case: str, intake: OrderIntake, store: Store
) -> None:
    make, status, code = REFUSALS[case]
    err = refused(intake, make())
    assert (err.status, err.code) == (status, code), err.reason
    assert STATUS_OF_CODE[code] == status
    assert err.reason
    assert store.signed_order_rows() == []


def test_every_code_has_a_status_and_is_tested() -> None:
    tested = {code for _, _, code in REFUSALS.values()}
    cancel_codes = {"not_your_order", "not_cancellable", "already_cancelled", "gate_closed"}
    assert set(STATUS_OF_CODE) == tested | cancel_codes | {"nonce_reused"}
    assert set(STATUS_OF_CODE.values()) == {400, 401, 403, 404, 409, 422}


def test_the_gate_closes_gate_closure_s_before_the_interval(
    intake: OrderIntake, clock: Clock
) -> None:
    clock.at = datetime.fromtimestamp(START - GATE_S - 1, UTC)
    intake.submit(signed(MessageKind.ORDER, order(nonce=1)))
    clock.at = datetime.fromtimestamp(START - GATE_S, UTC) - timedelta(microseconds=1)
    intake.submit(signed(MessageKind.ORDER, order(nonce=2)))
    clock.at = datetime.fromtimestamp(START - GATE_S, UTC)
    err = refused(intake, signed(MessageKind.ORDER, order(nonce=3)))
    assert (err.status, err.code) == (422, "gate_closed")


def buy(wh: int, price: int, nonce: int, **fields: Any) -> dict[str, Any]:
    """Bob's signed buy of ``wh`` at ``price``."""
    message = order("bob", side=0, energyWh=wh, limitPrice=price, nonce=nonce, **fields)
    return signed(MessageKind.ORDER, message)


def test_escrow_counts_the_other_signed_buys_of_the_interval(intake: OrderIntake) -> None:
    # bob has 1_000_000 free: 3000 Wh at 300_000 costs 900_000, the next 400 Wh 120_000
    intake.submit(buy(3000, 300_000, 1))
    err = refused(intake, buy(400, 300_000, 2))
    assert err.code == "escrow_insufficient"
    # the same buy for another interval fits; a sale needs no escrow
    intake.submit(buy(300, 300_000, 3, intervalStart=START + 900))
    intake.submit(signed(MessageKind.ORDER, order("bob", side=1, energyWh=10_000, nonce=4)))
    # 300 Wh more fits exactly: 90_000 -> 990_000 in all
    intake.submit(buy(300, 300_000, 5))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(buys=st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 400_000)), max_size=8))
def test_accepted_buys_never_exceed_the_free_escrow(
    buys: list[tuple[int, int]], site: SiteConfig, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Property: whatever buys arrive, those accepted for an interval fit the escrow."""
    path = tmp_path_factory.mktemp("escrow") / "e.sqlite"
    store = Store(f"sqlite:///{path}")
    try:
        intake = OrderIntake(
            store=store,
            site=site,
            accounts=participant_accounts(site, trial=True),
            chain_id=CHAIN_ID,
            verifying_contract=CONTRACT,
            now=Clock(T0),
            escrow=ESCROW.get,
        )
        total = 0
        for n, (wh, price) in enumerate(buys):
            cost = -(-wh * price // 1000)
            if total + cost > ESCROW["bob"]:
                err = refused(intake, buy(wh, price, n))
                assert err.code == "escrow_insufficient"
            else:
                assert intake.submit(buy(wh, price, n)).status == "accepted"
                total += cost
        accepted = store.signed_orders_at(START)
        assert sum(signed_buy_cost(r) for r in accepted) == total <= ESCROW["bob"]
    finally:
        store.close()


# ---------------------------------------------------------------------------- tampering
ORDER_FIELDS = ["participant", "intervalStart", "side", "energyWh", "limitPrice", "nonce",
                "deadline"]  # fmt: skip


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(field=st.sampled_from(ORDER_FIELDS), value=st.integers(0, 2**64 - 1))
def test_tampering_with_any_field_is_refused_and_stores_nothing(
    field: str, value: int, intake: OrderIntake, store: Store
) -> None:
    payload = signed(MessageKind.ORDER, order())
    message = dict(payload["typedData"]["message"])
    if field == "participant":
        new: Any = address("bob") if value % 2 else address("carol")
    elif field == "side":
        new = str(1 - int(message["side"]) if value % 2 else 2 + value % 250)
    else:
        new = str(value if str(value) != message[field] else value + 1)
    tampered = {
        **payload,
        "typedData": {**payload["typedData"], "message": {**message, field: new}},
    }
    with pytest.raises(IntakeRefused) as info:
        intake.submit(tampered)
    assert info.value.status in {400, 403}
    assert store.signed_order_rows() == []


# ---------------------------------------------------------------------------- cancelling
def test_cancel_before_the_gate_takes_the_order_out(
    intake: OrderIntake, store: Store, clock: Clock
) -> None:
    ack = intake.submit(signed(MessageKind.ORDER, order()))
    assert [r["digest"] for r in store.signed_orders_at(START)] == [ack.digest]
    clock.at = datetime.fromtimestamp(START - GATE_S - 1, UTC)  # one second before the gate
    done = intake.submit(signed(MessageKind.CANCEL, cancel(ack.digest)))
    assert (done.kind, done.cancels, done.status) == (MessageKind.CANCEL, ack.digest, "accepted")
    row = store.signed_order(ack.digest) or {}
    assert (row["status"], row["cancel_digest"]) == ("cancelled", done.digest)
    assert store.signed_orders_at(START) == []
    # resubmitting the order now reports it cancelled; a second Cancel is 409
    again = intake.submit(signed(MessageKind.ORDER, order()))
    assert (again.duplicate, again.status) == (True, "cancelled")
    err = refused(intake, signed(MessageKind.CANCEL, cancel(ack.digest, nonce=100)))
    assert (err.status, err.code) == (409, "already_cancelled")


def test_cancel_after_the_gate_is_422_and_the_order_stays(
    intake: OrderIntake, store: Store, clock: Clock
) -> None:
    ack = intake.submit(signed(MessageKind.ORDER, order(deadline=START + 900)))
    clock.at = datetime.fromtimestamp(START - GATE_S, UTC)  # the gate closes now
    err = refused(intake, signed(MessageKind.CANCEL, cancel(ack.digest, deadline=START + 900)))
    assert (err.status, err.code) == (422, "gate_closed")
    assert [r["digest"] for r in store.signed_orders_at(START)] == [ack.digest]
    assert len(store.signed_order_rows()) == 1  # the Cancel was not stored


def test_only_the_owner_cancels_and_a_cancel_is_not_cancellable(intake: OrderIntake) -> None:
    ack = intake.submit(signed(MessageKind.ORDER, order()))
    err = refused(intake, signed(MessageKind.CANCEL, cancel(ack.digest, "carol")))
    assert (err.status, err.code) == (403, "not_your_order")
    done = intake.submit(signed(MessageKind.CANCEL, cancel(ack.digest)))
    err = refused(intake, signed(MessageKind.CANCEL, cancel(done.digest, nonce=5)))
    assert (err.status, err.code) == (422, "not_cancellable")


def test_a_standing_order_applies_in_its_window_and_a_cancel_stops_it_at_the_open_gate(
    intake: OrderIntake, store: Store, clock: Clock
) -> None:
    ack = intake.submit(signed(MessageKind.STANDING_ORDER, standing(deadline=START + 4 * 900)))
    assert (ack.valid_from, ack.valid_until) == (START, START + 4 * 900)
    starts = [START + k * 900 for k in range(-1, 5)]
    applies = {s: [r["digest"] for r in store.signed_orders_at(s)] for s in starts}
    assert applies == {s: [ack.digest] if START <= s < START + 3600 else [] for s in starts}
    # cancelled while START + 900's gate is closed (in START's interval): from START + 1800 on
    clock.at = datetime.fromtimestamp(START + 900 - GATE_S + 10, UTC)
    intake.submit(signed(MessageKind.CANCEL, cancel(ack.digest, deadline=START + 4 * 900)))
    kept = [s for s in starts if store.signed_orders_at(s)]
    assert kept == [START, START + 900]
    # valid "forever" (a wallet's max uint64): stored as the largest 64-bit signed integer
    forever = intake.submit(signed(MessageKind.STANDING_ORDER, standing(
        nonce=21, validUntil=str(2**64 - 1), deadline=START + 4 * 900)))  # fmt: skip
    assert forever.valid_until == 2**63 - 1
    assert forever.digest in [r["digest"] for r in store.signed_orders_at(START + 86400)]
    # a standing order accepted late starts at the first open gate
    late = intake.submit(
        signed(MessageKind.STANDING_ORDER, standing(nonce=20, deadline=START + 4 * 900))
    )
    assert late.valid_from == START + 1800


# ---------------------------------------------------------------------------- into the book
def test_signed_book_replaces_forecast_kinds_and_adds_fixed_and_one_off_orders(
    intake: OrderIntake, store: Store, site: SiteConfig
) -> None:
    surplus = intake.submit(signed(MessageKind.STANDING_ORDER, standing()))  # alice, 70_000
    fixed = intake.submit(
        signed(MessageKind.STANDING_ORDER, standing(kind=3, energyWh=500, price=1, nonce=3))
    )
    one_off = intake.submit(signed(MessageKind.ORDER, order("carol", side=0, nonce=4)))
    interval = Interval.from_id(START, 900)
    book = signed_book(store.signed_orders_at(START), site, interval)
    alice = [(tag, so.kind, so.price) for tag, so in book.standing[ParticipantId("alice")]]
    # alice's site file: sell_surplus @85_000 (replaced) and buy_demand @320_000 (kept)
    assert alice == [
        ("1", OrderKind.BUY_DEMAND, 320_000),
        (surplus.digest, OrderKind.SELL_SURPLUS, 70_000),
        (fixed.digest, OrderKind.SELL, 1),
    ]
    assert set(book.standing) == {"alice"}
    [po] = book.orders
    assert po.order.order_id == f"carol:{START}:signed:{one_off.digest}"
    assert (po.kind, po.order.bus, po.order.energy_wh) == (PlannedKind.BUY, "Bus R16", 1000)
    plan = plan_orders(interval, site.participants, site.devices, {},
                       orders_in_force=book.standing)  # fmt: skip
    ids = {p.order.order_id for p in plan.orders}
    assert f"alice:{START}:sell:{fixed.digest}" in ids


def test_the_audit_check_passes_the_evidence_and_catches_tampering(
    intake: OrderIntake, store: Store, site: SiteConfig
) -> None:
    ack = intake.submit(signed(MessageKind.ORDER, order("carol", side=0, nonce=4)))
    interval = Interval.from_id(START, 900)
    book = signed_book(store.signed_orders_at(START), site, interval)
    record = {
        "interval": START,
        "accounts": participant_accounts(site, trial=True),
        "signed_orders": signed_evidence(book.rows),
        "book": book_to_dict(build_order_book(interval, [po.order for po in book.orders])),
    }
    assert check_signed_orders(record) == []
    assert check_signed_orders({"interval": 1}) == []  # an older record: nothing to check
    # a changed message no longer verifies
    bad = [dict(e) for e in record["signed_orders"]]
    bad[0]["typed_data"] = {**bad[0]["typed_data"], "message": {
        **bad[0]["typed_data"]["message"], "energyWh": "999"}}  # fmt: skip
    assert any(
        "does not verify" in p for p in check_signed_orders({**record, "signed_orders": bad})
    )
    # a book order above what was signed, or without its signature
    orders = [dict(o) for o in record["book"]["orders"]]
    orders[0]["energy_wh"] = 5000
    problems = check_signed_orders({**record, "book": {"orders": orders}})
    assert any(ack.digest in p and "signed: buy 1000 Wh" in p for p in problems)
    assert check_signed_orders({**record, "signed_orders": []})  # the book's order is unsigned
    # another address for the participant
    other = {**record["accounts"], "carol": address("bob")}
    assert any("signed by" in p for p in check_signed_orders({**record, "accounts": other}))
    # the audited chain and contract: the signed domain must name them
    audited = (intake.chain_id, intake.verifying_contract.upper().replace("0X", "0x"))
    assert check_signed_orders(record, domain=audited) == []
    elsewhere = (intake.chain_id, "0x" + "12" * 20)
    [problem] = check_signed_orders(record, domain=elsewhere)
    assert "audited settlement is chain" in problem
    assert ack.digest in problem
    assert check_signed_orders(record, domain=(intake.chain_id + 1, audited[1]))


def test_the_escrow_tests_fail_without_the_escrow_check(
    intake: OrderIntake, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault the escrow tests exist for: with the check gone, an unaffordable buy is
    stored (so ``test_escrow_counts...`` and the property above would fail)."""
    monkeypatch.setattr(OrderIntake, "_check_escrow", lambda *_a, **_k: None)
    intake.submit(buy(10_000, 300_000, 1))  # 3_000_000 > bob's 1_000_000
    assert sum(signed_buy_cost(r) for r in store.signed_orders_at(START)) > ESCROW["bob"]


# ------------------------------------------------------------- claims close the gate (fleets)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_claimed_interval_is_closed_whatever_the_intakes_clock_says(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, site: SiteConfig, clock: Clock
) -> None:
    """A clearing elsewhere (a fleet's worker) claimed START: its book was read, or is read
    once the intake lock is free. An order for it is refused though this intake's clock (a
    minute behind, say) still has the gate open; standing orders and cancels start after it.
    """
    store = Store(new_database_url(request, backend, tmp_path))
    intake = make_intake(store, site, clock)
    try:
        kept = intake.submit(signed(MessageKind.STANDING_ORDER, standing(nonce=5)))
        assert store.claim_interval(START, 900)
        err = refused(intake, signed(MessageKind.ORDER, order(nonce=1)))
        assert (err.status, err.code) == (422, "gate_closed")
        later = intake.submit(signed(MessageKind.ORDER, order(nonce=2, intervalStart=START + 900)))
        assert later.interval_id == START + 900
        late = intake.submit(signed(MessageKind.STANDING_ORDER, standing(nonce=3)))
        assert late.valid_from == START + 900  # not START: its book is taken
        intake.submit(signed(MessageKind.CANCEL, cancel(kept.digest, nonce=4)))
        assert kept.digest in [r["digest"] for r in store.signed_orders_at(START)]
        assert kept.digest not in [r["digest"] for r in store.signed_orders_at(START + 900)]
    finally:
        store.close()


def test_the_intake_lock_is_the_databases_on_postgresql(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Two stores of one site (two processes' worth) take turns; SQLite's is per store."""
    url = new_database_url(request, "postgresql", tmp_path)
    first, second = Store(url), Store(url, shared=True)
    order_of: list[str] = []
    entered = threading.Event()

    def hold() -> None:
        with first.intake_lock():
            entered.set()
            time.sleep(0.3)
            order_of.append("first")

    thread = threading.Thread(target=hold)
    thread.start()
    assert entered.wait(10)
    with second.intake_lock():
        order_of.append("second")
    thread.join()
    first.close()
    second.close()
    assert order_of == ["first", "second"]
