"""Signed orders reach the cleared book and the audit record (demo runtime, embedded chain)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.chain.accounts import derive_account
from adapters.chain.typed_data import MessageKind, signed_payload
from controller.audit import verify_records
from controller.demo import DemoRuntime, demo_runtime
from controller.intake import IntakeRefused, OrderIntake, check_signed_orders
from market.domain import ParticipantId

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class Clock:
    """The injected clock."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _intake(rt: DemoRuntime, clock: Clock) -> tuple[OrderIntake, dict[str, Any]]:
    where = {
        "chain_id": rt.client.chain_id(),
        "verifying_contract": str(rt.client.settlement.address),
    }
    credit = rt.cycle._free_credit  # the cycle's own credit rule, as the service would use it
    intake = OrderIntake(
        store=rt.store,
        site=rt.site,
        accounts={ParticipantId(k): v for k, v in rt.accounts.items()},
        now=clock,
        escrow=lambda p: credit().get(p),
        **where,
    )
    return intake, where


def _order(pid: str, start: int, nonce: int, **fields: Any) -> dict[str, Any]:
    return {
        "participant": str(derive_account(pid).address),
        "intervalStart": start,
        "side": 0,
        "energyWh": 500,
        "limitPrice": 400_000,
        "nonce": nonce,
        "deadline": start,
        **fields,
    }


def test_a_signed_order_is_cleared_settled_and_recorded_with_its_signature(
    tmp_path: Path,
) -> None:
    with demo_runtime(tmp_path) as rt:
        clock = Clock(rt.boundary(0))
        intake, where = _intake(rt, clock)
        start = int(rt.boundary(1).timestamp())

        def post(message: dict[str, Any], kind: MessageKind = MessageKind.ORDER) -> Any:
            pid = "bob" if message["participant"] == derive_account("bob").address else "carol"
            return intake.submit(signed_payload(kind, message, derive_account(pid), **where))

        placed = post(_order("bob", start, 1))
        cancelled = post(_order("bob", start, 2, energyWh=700))
        post(
            {
                "participant": str(derive_account("bob").address),
                "orderDigest": cancelled.digest,
                "nonce": 3,
                "deadline": start,
            },
            MessageKind.CANCEL,
        )
        with pytest.raises(IntakeRefused) as info:  # more than bob's escrow: never booked
            post(_order("bob", start, 4, energyWh=10**6))
        assert info.value.code == "escrow_insufficient"
        rt.tick(0)
        clock.at = rt.boundary(1)  # the gate of interval 1 has closed: too late for it
        with pytest.raises(IntakeRefused):
            post(_order("carol", start, 5))

        report = rt.tick(1)
        assert report.cleared is not None
        ids = {o.order_id for o in report.cleared.book.orders}
        signed_ids = {i for i in ids if ":signed:" in i}
        assert signed_ids == {f"bob:{start}:signed:{placed.digest}"}
        assert report.cleared.result.accepted_wh[f"bob:{start}:signed:{placed.digest}"] == 500

        rt.tick(2, clear_next=False)  # interval 1 ends: settled and recorded
        [record] = [r["record"] for r in rt.store.audit_records() if r["interval_id"] == start]
        [entry] = record["signed_orders"]
        assert entry["digest"] == placed.digest
        assert entry["signature"] == (rt.store.signed_order(placed.digest) or {})["signature"]
        assert entry["typed_data"]["message"]["energyWh"] == "500"
        assert check_signed_orders(record) == []
        # the record's hash commits to the signatures: a forged one is caught by the check
        forged = {**entry, "signature": entry["signature"][:10] + "00" + entry["signature"][12:]}
        assert check_signed_orders({**record, "signed_orders": [forged]})
        # and `peergrid audit verify`'s path (verify_records) runs the check
        assert rt.verify()["problems"] == []
        found = verify_records([{**record, "signed_orders": [forged]}])["problems"]
        assert any("signed_orders" in p and "does not verify" in p for p in found)
