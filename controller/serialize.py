"""Plain, deterministic JSON forms of the kernel's types (for the database, audit and CLI)."""

from __future__ import annotations

import json
import math
from typing import Any

from market.domain import (
    ClearingResult,
    GridCheck,
    MeterReading,
    OrderBook,
    Setpoint,
    SettlementBatch,
    order_to_dict,
    trade_to_dict,
)


def dumps(obj: Any) -> str:  # noqa: ANN401 - any JSON value
    """Canonical JSON: sorted keys, no spaces, NaN refused (written as null)."""
    return json.dumps(_clean(obj), sort_keys=True, separators=(",", ":"))


def _clean(obj: Any) -> Any:  # noqa: ANN401
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def check_to_dict(check: GridCheck | None) -> dict[str, Any] | None:
    """AC check as JSON (pandapower names and units)."""
    if check is None:
        return None
    return {
        "converged": check.converged,
        "min_vm_pu": check.min_vm_pu,
        "max_vm_pu": check.max_vm_pu,
        "max_line_loading_percent": check.max_line_loading_percent,
        "max_trafo_loading_percent": check.max_trafo_loading_percent,
        "slack_p_w": check.slack_p_w,
        "violations": [
            {"kind": v.kind, "element": v.element, "value": v.value, "limit": v.limit}
            for v in check.violations
        ],
    }


def result_to_dict(result: ClearingResult) -> dict[str, Any]:
    """Clearing result as JSON: orders, prices, grid exchange, trades, welfare, AC check."""
    solver = result.solver
    return {
        "interval": result.interval.interval_id,
        "interval_start": result.interval.start.isoformat(),
        "length_s": result.interval.length_s,
        "status": result.status.value,
        "reason": result.reason,
        "mechanism": result.mechanism,
        "orders": [
            {
                "order_id": o.order_id,
                "participant": o.participant,
                "bus": o.bus,
                "side": o.side.value,
                "accepted_wh": o.accepted_wh,
                "price": o.price,
                "amount": o.amount,
            }
            for o in result.orders
        ],
        "prices": dict(result.prices),
        "grid": {"import_wh": result.grid_import_wh, "export_wh": result.grid_export_wh},
        "trades": [trade_to_dict(t) for t in result.trades],
        "welfare": result.welfare,
        "community_rent": result.community_rent,
        "ac_check": check_to_dict(result.check),
        "iterations": result.iterations,
        "solver": None
        if solver is None
        else {
            "name": solver.name,
            "version": solver.version,
            "termination": solver.termination,
        },
    }


def timings_of(result: ClearingResult) -> dict[str, float]:
    """Build/solve/extract times [s] (kept out of the deterministic result JSON)."""
    s = result.solver
    if s is None:
        return {}
    return {"build_s": s.build_s, "solve_s": s.solve_s, "extract_s": s.extract_s}


def book_to_dict(book: OrderBook) -> dict[str, Any]:
    """Order book as JSON."""
    return {
        "interval": book.interval.interval_id,
        "length_s": book.interval.length_s,
        "orders": [order_to_dict(o) for o in book.orders],
    }


def reading_to_dict(r: MeterReading) -> dict[str, Any]:
    """Meter reading as JSON (p_w: + = import/consumption)."""
    return {
        "device_id": r.device_id,
        "participant": r.participant,
        "bus": r.bus,
        "measured_at": r.measured_at.isoformat(),
        "p_w": r.p_w,
        "import_wh_total": r.import_wh_total,
        "export_wh_total": r.export_wh_total,
        "quality": r.quality.value,
        "reason": r.reason,
        "soc_percent": r.soc_percent,
    }


def setpoint_to_dict(s: Setpoint) -> dict[str, Any]:
    """Setpoint as JSON."""
    return {"device_id": s.device_id, "kind": s.kind.value, "p_w": s.p_w}


def batch_to_dict(batch: SettlementBatch) -> dict[str, Any]:
    """Settlement batch as JSON (amounts: + = credit)."""
    return {
        "batch_id": batch.batch_id,
        "interval": batch.interval.interval_id,
        "amounts": [[a, v] for a, v in batch.amounts],
        "trades_root": batch.trades_root.hex(),
        "readings_root": batch.readings_root.hex(),
        "import_price": batch.import_price,
        "export_price": batch.export_price,
        "rewards": [[p, wh] for p, wh in batch.rewards_wh],
        "lines": [
            {
                "participant": ln.participant,
                "cleared_buy_wh": ln.cleared_buy_wh,
                "cleared_sell_wh": ln.cleared_sell_wh,
                "metered_import_wh": ln.metered_import_wh,
                "metered_export_wh": ln.metered_export_wh,
                "imbalance_wh": ln.imbalance_wh,
                "trade_amount": ln.trade_amount,
                "imbalance_amount": ln.imbalance_amount,
                "net_amount": ln.net_amount,
                "metered": ln.metered,
                "reason": ln.reason,
            }
            for ln in batch.lines
        ],
    }
