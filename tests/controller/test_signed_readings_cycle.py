"""Signed readings end to end on the embedded chain (issue 17).

The demo's simulators sign every reading with their own P-256 keys, registered in the
``DeviceKeys`` registry by their participants' signatures (the operator relays). At one
boundary judy's PV inverter misbehaves: a forged reading (counters changed after signing),
a replayed one (an old sequence), one signed with another device's key, one from the right
device at the wrong time, or one after judy revoked its key. Each is UNVERIFIED with its
reason, judy earns nothing for the intervals it bounds, her sale there counts as not
delivered, and ``audit verify`` names the interval and the device. A record that claims more
than its signatures prove is caught.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.chain import derive_account
from adapters.chain.device_keys import DeviceKeys, KeyAction, sign_key_change
from adapters.chain.errors import ChainError
from adapters.modbus.simulators.base import SignedTamper
from controller.audit import verify_signed_readings
from controller.demo import KEY_DEADLINE, DemoRuntime, demo_runtime
from controller.history import participant_history
from controller.wiring import registry_key_reader
from market.domain import ReadingQuality, utc_label

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

PV = "judy-pv"


def revoke(rt: DemoRuntime) -> None:
    """Judy revokes her PV's key: she signs, the operator relays."""
    source = rt.cycle.device_keys
    assert source is not None
    keys = DeviceKeys(rt.client.contracts)
    keys.attach(source.registry)
    judy = derive_account("judy")
    signature = sign_key_change(
        judy,
        keys.chain_id(),
        keys.address,
        device_id=PV,
        key=b"",
        action=KeyAction.REVOKE,
        nonce=keys.nonce(judy.address),
        deadline=KEY_DEADLINE,
    )
    keys.relay(
        rt.client.operator,
        owner=judy.address,
        device_id=PV,
        key=b"",
        action=KeyAction.REVOKE,
        deadline=KEY_DEADLINE,
        signature=signature,
    )


def tamper(kind: SignedTamper) -> Callable[[DemoRuntime], None]:
    def apply(rt: DemoRuntime) -> None:
        rt.sims[PV].signed_tamper = kind

    return apply


CASES = {
    "forged": (tamper(SignedTamper.FORGED), "signature not valid under judy-pv's key"),
    "replayed": (tamper(SignedTamper.REPLAYED), "does not follow the last accepted"),
    "another device's key": (
        tamper(SignedTamper.FOREIGN_KEY),
        "signature not valid under judy-pv's key",
    ),
    "wrong time": (tamper(SignedTamper.LATE), "s from its boundary, more than 120 s"),
    "revoked key": (revoke, "judy-pv has no registered key in force"),
}


def rewards_of(rt: DemoRuntime, interval_id: int) -> dict[str, int]:
    (record,) = [r["record"] for r in rt.store.audit_records() if r["interval_id"] == interval_id]
    return {str(p): int(wh) for p, wh in record["settlement"]["rewards"]}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_reading_is_unverified_earns_nothing_and_is_named(tmp_path: Path, case: str) -> None:
    act, reason = CASES[case]
    with demo_runtime(tmp_path) as rt:
        for k in range(14, 18):  # midday: judy's PV exports and sells to her neighbours
            rt.tick(k)
        # nothing misbehaved yet: every reading verified, judy rewarded
        first = int(rt.boundary(14).timestamp())
        assert rewards_of(rt, first).get("judy", 0) > 0
        act(rt)
        bad_at = rt.boundary(18)
        report = rt.tick(18)
        rt.sims[PV].signed_tamper = SignedTamper.NONE
        rt.tick(19)
        rt.tick(20, clear_next=False)
        reading = rt.store.readings_at(int(bad_at.timestamp()))[PV]  # type: ignore[index]
        assert reading.quality is ReadingQuality.UNVERIFIED
        assert reason in reading.reason
        assert any(PV in m for m in report.readings_missing)
        # the two intervals it bounds: no reward for judy, her export not delivered
        for k in (17, 18):
            interval_id = int(rt.boundary(k).timestamp())
            assert "judy" not in rewards_of(rt, interval_id)
            (record,) = [
                r["record"] for r in rt.store.audit_records() if r["interval_id"] == interval_id
            ]
            (line,) = [ln for ln in record["settlement"]["lines"] if ln["participant"] == "judy"]
            assert PV in line["unverified"]
            assert line["metered_export_wh"] == 0
        # the others keep their rewards
        assert rewards_of(rt, int(rt.boundary(17).timestamp()))
        # judy's history says which intervals were not verified, and why
        lo, hi = int(rt.boundary(14).timestamp()), int(rt.boundary(20).timestamp())
        marked = {
            r["interval_start_s"]: r["unverified"]
            for r in participant_history(rt.store, "judy", lo, hi)
        }
        bad = (17, 18, 19) if case == "revoked key" else (17, 18)  # revoked: it stays so
        assert [t for t, why in marked.items() if why] == [
            int(rt.boundary(k).timestamp()) for k in bad
        ]
        assert all(PV in why for why in marked.values() if why)
        verified = rt.verify()
        assert verified["problems"] == []
        named = [u for u in verified["unverified"] if PV in u]
        at_bad = [u for u in named if f"{PV} at {utc_label(bad_at)}" in u]
        assert len(at_bad) == 2  # the end of 17 and the start of 18: one reading, two records
        assert all(reason in u for u in at_bad)
        assert len(named) == (5 if case == "revoked key" else 2)
        if case == "revoked key":  # a revoked key stays revoked: the next readings too
            after = rt.store.readings_at(int(rt.boundary(19).timestamp()))[PV]  # type: ignore[index]
            assert after.quality is ReadingQuality.UNVERIFIED


def test_a_record_claiming_more_than_its_signatures_prove_is_caught(tmp_path: Path) -> None:
    with demo_runtime(tmp_path) as rt:
        rt.tick(16)
        rt.sims[PV].signed_tamper = SignedTamper.FORGED
        rt.tick(17)
        rt.sims[PV].signed_tamper = SignedTamper.NONE
        rt.tick(18, clear_next=False)
        records = {int(r["interval_id"]): r["record"] for r in rt.store.audit_records()}
        good, bad = (records[int(rt.boundary(k).timestamp())] for k in (16, 17))
        key_at = registry_key_reader(rt.client)
        assert verify_signed_readings(good, key_at)[0] == []

        def problems(record: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> str:
            edited = copy.deepcopy(record)
            edit(edited)
            return " ".join(verify_signed_readings(edited, key_at)[0])

        def passed_as_ok(r: dict[str, Any]) -> None:  # the forged reading recorded as OK
            (pv,) = [x for x in r["readings_start"] if x["device_id"] == PV]
            pv["quality"], pv["reason"] = "ok", ""

        def more_export(r: dict[str, Any]) -> None:  # a verified reading's counter raised
            (pv,) = [x for x in r["readings_start"] if x["device_id"] == PV]
            pv["export_wh_total"] += 500

        def rewarded(r: dict[str, Any]) -> None:
            r["settlement"]["rewards"].append(["judy", 100])

        def no_penalty(r: dict[str, Any]) -> None:
            (line,) = [ln for ln in r["settlement"]["lines"] if ln["participant"] == "judy"]
            line["penalty_amount"] = 0
            line["cleared_buy_wh"] = 1000

        def other_block(r: dict[str, Any]) -> None:  # before judy registered her key
            r["device_keys"]["start_block"] = 1

        assert "recorded as verified, but signature not valid" in problems(bad, passed_as_ok)
        assert "not the ones it signed" in problems(good, more_export)
        assert "rewarded despite unverified readings: judy" in problems(bad, rewarded)
        assert "judy's penalty is 0" in problems(bad, no_penalty)
        assert "has no registered key in force" in problems(good, other_block)


def test_an_unsigned_meter_where_signing_is_optional_settles_unrewarded_and_is_named(
    tmp_path: Path,
) -> None:
    with demo_runtime(tmp_path) as rt:
        legacy = tuple(
            dataclasses.replace(d, signed_block=None) if d.id == PV else d for d in rt.site.devices
        )
        rt.cycle.site = dataclasses.replace(rt.site, reading_signatures="optional", devices=legacy)
        for k in range(15, 18):
            rt.tick(k, clear_next=k < 17)
        interval_id = int(rt.boundary(16).timestamp())
        reading = rt.store.readings_at(interval_id)[PV]  # type: ignore[index]
        assert reading.quality is ReadingQuality.OK
        assert reading.signed is None  # a signature the site does not expect is not kept
        (record,) = [
            r["record"] for r in rt.store.audit_records() if r["interval_id"] == interval_id
        ]
        (line,) = [ln for ln in record["settlement"]["lines"] if ln["participant"] == "judy"]
        assert line["unverified"] == f"{PV}: unsigned readings (signing optional)"
        assert line["metered_export_wh"] > 0  # settled by its counters
        assert "judy" not in rewards_of(rt, interval_id)
        assert rewards_of(rt, interval_id)  # the signed producers keep theirs
        verified = rt.verify()
        assert verified["problems"] == []
        assert any(
            f"{PV} at {utc_label(rt.boundary(16))}: unsigned (signing optional)" in u
            for u in verified["unverified"]
        )


def test_an_unreadable_registry_keeps_the_last_keys_and_before_any_read_verifies_nothing(
    tmp_path: Path,
) -> None:
    with demo_runtime(tmp_path) as rt:
        source = rt.cycle.device_keys
        assert source is not None

        class Down:
            registry = source.registry

            def __call__(self) -> Any:
                msg = "connection refused"
                raise ChainError(msg)

        rt.cycle.device_keys = Down()  # before any read: nothing can be verified
        rt.tick(15)
        first = rt.store.readings_at(int(rt.boundary(15).timestamp()))
        assert {r.quality for r in first.values()} == {ReadingQuality.UNVERIFIED}
        assert all(
            "cannot be read: ChainError: connection refused" in r.reason for r in first.values()
        )
        rt.cycle.device_keys = source
        rt.tick(16)
        read_at = rt.store.key_blocks_at(int(rt.boundary(16).timestamp()))
        rt.cycle.device_keys = Down()  # after a read: its keys apply, and the record says so
        rt.tick(17)
        rt.tick(18, clear_next=False)
        later = rt.store.readings_at(int(rt.boundary(17).timestamp()))
        assert {r.quality for r in later.values()} == {ReadingQuality.OK}
        assert rt.store.key_blocks_at(int(rt.boundary(17).timestamp())) == read_at
        verified = rt.verify()
        assert verified["problems"] == []
