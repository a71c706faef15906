"""Rebuild kernel objects from their stored JSON (restart and audit paths)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from market.domain import (
    BusId,
    ClearingResult,
    ClearingStatus,
    Interval,
    OrderId,
    OrderResult,
    ParticipantId,
    SettlementBatch,
    SettlementLine,
    Side,
    Trade,
)
from market.units import PricePerKwh, TokenUnits, Wh


def result_from_dict(data: Mapping[str, Any], interval: Interval) -> ClearingResult:
    """The :class:`ClearingResult` stored by the cycle (enough to settle and audit it)."""
    orders = tuple(
        OrderResult(
            order_id=OrderId(o["order_id"]),
            participant=ParticipantId(o["participant"]),
            bus=BusId(o["bus"]),
            side=Side(o["side"]),
            accepted_wh=Wh(o["accepted_wh"]),
            price=PricePerKwh(o["price"]),
            amount=TokenUnits(o["amount"]),
        )
        for o in data.get("orders", [])
    )
    trades = tuple(
        Trade(
            interval=interval,
            seller=ParticipantId(t["seller"]),
            buyer=ParticipantId(t["buyer"]),
            seller_bus=BusId(t["seller_bus"]),
            buyer_bus=BusId(t["buyer_bus"]),
            seller_order=None if t["seller_order"] is None else OrderId(t["seller_order"]),
            buyer_order=None if t["buyer_order"] is None else OrderId(t["buyer_order"]),
            energy_wh=Wh(t["energy_wh"]),
            seller_price=PricePerKwh(t["seller_price"]),
            buyer_price=PricePerKwh(t["buyer_price"]),
            buyer_amount=TokenUnits(t["buyer_amount"]),
            seller_amount=TokenUnits(t["seller_amount"]),
        )
        for t in data.get("trades", [])
    )
    grid = data.get("grid", {})
    return ClearingResult(
        interval=interval,
        status=ClearingStatus(data["status"]),
        reason=str(data.get("reason", "")),
        orders=orders,
        prices=tuple((BusId(b), PricePerKwh(p)) for b, p in sorted(data.get("prices", {}).items())),
        grid_import_wh=Wh(grid.get("import_wh", 0)),
        grid_export_wh=Wh(grid.get("export_wh", 0)),
        trades=trades,
        welfare=TokenUnits(data.get("welfare", 0)),
        community_rent=TokenUnits(data.get("community_rent", 0)),
        solver=None,
        iterations=int(data.get("iterations", 1)),
        mechanism=str(data.get("mechanism", "nodal")),
    )


def batch_from_dict(data: Mapping[str, Any], interval: Interval) -> SettlementBatch:
    """The :class:`SettlementBatch` stored as a settlement intent."""
    batch = SettlementBatch(
        interval=interval,
        lines=tuple(
            SettlementLine(
                participant=ParticipantId(ln["participant"]),
                cleared_buy_wh=Wh(ln["cleared_buy_wh"]),
                cleared_sell_wh=Wh(ln["cleared_sell_wh"]),
                metered_import_wh=Wh(ln["metered_import_wh"]),
                metered_export_wh=Wh(ln["metered_export_wh"]),
                imbalance_wh=Wh(ln["imbalance_wh"]),
                trade_amount=TokenUnits(ln["trade_amount"]),
                imbalance_amount=TokenUnits(ln["imbalance_amount"]),
                metered=bool(ln["metered"]),
                reason=str(ln.get("reason", "")),
            )
            for ln in data.get("lines", [])
        ),
        amounts=tuple((ParticipantId(a), TokenUnits(v)) for a, v in data["amounts"]),
        trades_root=bytes.fromhex(data["trades_root"]),
        readings_root=bytes.fromhex(data["readings_root"]),
        import_price=int(data["import_price"]),
        export_price=int(data["export_price"]),
        rewards_wh=tuple((ParticipantId(p), Wh(wh)) for p, wh in data.get("rewards", [])),
    )
    if batch.batch_id != data["batch_id"]:
        msg = f"stored batch {data['batch_id']} does not match its content ({batch.batch_id})"
        raise ValueError(msg)
    return batch
