"""Builders shared by the market tests: orders, hand-written radial networks, payments.

Not a test module (no ``test_`` prefix). The market tests import it by name: pytest's default
``prepend`` import mode puts ``tests/market`` on ``sys.path`` because the folder has no
``__init__.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from fractions import Fraction

import numpy as np

from market.domain import (
    Bid,
    BusId,
    DeviceId,
    Interval,
    MeterReading,
    Offer,
    OrderId,
    ParticipantId,
    ReadingQuality,
)
from market.network import NetworkModel
from market.units import PricePerKwh, W, Wh

INTERVAL = Interval(datetime(2026, 6, 21, 12, 0, tzinfo=UTC), 900)
"""A 15-minute interval (0.25 h) used wherever the length does not matter."""


def bid(
    order_id: str,
    bus: str,
    energy_wh: int,
    limit_price: int,
    participant: str | None = None,
    interval: Interval = INTERVAL,
) -> Bid:
    """A bid; the participant defaults to ``p-<order_id>``."""
    return Bid(
        order_id=OrderId(order_id),
        participant=ParticipantId(participant or f"p-{order_id}"),
        bus=BusId(bus),
        interval=interval,
        energy_wh=Wh(energy_wh),
        limit_price=PricePerKwh(limit_price),
    )


def offer(
    order_id: str,
    bus: str,
    energy_wh: int,
    limit_price: int,
    participant: str | None = None,
    interval: Interval = INTERVAL,
) -> Offer:
    """An offer; the participant defaults to ``p-<order_id>``."""
    return Offer(
        order_id=OrderId(order_id),
        participant=ParticipantId(participant or f"p-{order_id}"),
        bus=BusId(bus),
        interval=interval,
        energy_wh=Wh(energy_wh),
        limit_price=PricePerKwh(limit_price),
    )


def radial_network(
    buses: Sequence[str],
    branches: Sequence[tuple[str, str]] = (),
    *,
    r_pu: Sequence[float] | float = 0.001,
    x_pu: Sequence[float] | float = 0.001,
    s_max_va: Sequence[float] | float = float("inf"),
    vm_min_pu: Sequence[float] | float = 0.5,
    vm_max_pu: Sequence[float] | float = 1.5,
    base_p_w: Sequence[float] | float = 0.0,
    vm_slack_pu: float = 1.0,
    s_base_va: float = 1e6,
    slack_import_max_w: float = float("inf"),
    slack_export_max_w: float = float("inf"),
) -> NetworkModel:
    """A radial network whose slack is ``buses[0]``; branches are (parent, child) names.

    Scalars are broadcast to every branch / bus. The defaults are a network that never binds:
    tiny impedances, no thermal limit, a 0.5-1.5 p.u. voltage band and no base injection.
    """
    index = {name: i for i, name in enumerate(buses)}
    n, m = len(buses), len(branches)

    def per(value: Sequence[float] | float, size: int) -> np.ndarray:
        if isinstance(value, int | float):
            return np.full(size, float(value))
        return np.array(value, dtype=float)

    return NetworkModel(
        bus_names=tuple(BusId(b) for b in buses),
        slack=0,
        vm_slack_pu=vm_slack_pu,
        from_bus=np.array([index[a] for a, _ in branches], dtype=np.int64),
        to_bus=np.array([index[b] for _, b in branches], dtype=np.int64),
        r_pu=per(r_pu, m),
        x_pu=per(x_pu, m),
        s_max_va=per(s_max_va, m),
        branch_names=tuple(f"{a}-{b}" for a, b in branches),
        branch_kinds=("line",) * m,
        vm_min_pu=per(vm_min_pu, n),
        vm_max_pu=per(vm_max_pu, n),
        base_p_w=per(base_p_w, n),
        base_q_var=np.zeros(n),
        v_offset_pu2=np.zeros(n),
        s_base_va=s_base_va,
        slack_import_max_w=slack_import_max_w,
        slack_export_max_w=slack_export_max_w,
    )


def exact_amount(energy_wh: int, price: int) -> Fraction:
    """``energy_wh * price / 1000`` as an exact fraction [token units]."""
    return Fraction(energy_wh * price, 1000)


def meter_reading(
    device: str,
    participant: str,
    at: datetime,
    import_wh_total: int,
    export_wh_total: int,
    quality: ReadingQuality = ReadingQuality.OK,
) -> MeterReading:
    """A counter reading of ``device`` at ``at``; a non-OK one carries zeros and a reason."""
    ok = quality is ReadingQuality.OK
    return MeterReading(
        device_id=DeviceId(device),
        participant=ParticipantId(participant),
        bus=BusId("S"),
        measured_at=at,
        p_w=W(0),
        import_wh_total=Wh(import_wh_total if ok else 0),
        export_wh_total=Wh(export_wh_total if ok else 0),
        quality=quality,
        reason="" if ok else "no answer",
    )


Snapshot = dict[DeviceId, MeterReading]


def snapshots(
    *meters: tuple[str, int, int, bool], interval: Interval = INTERVAL
) -> tuple[Snapshot, Snapshot]:
    """Start and end snapshots of ``(participant, import Wh, export Wh, complete)`` meters.

    One device ``<participant>-meter`` each, counters starting at 1000/2000 Wh; an incomplete
    meter is MISSING at the end.
    """
    start: Snapshot = {}
    end: Snapshot = {}
    for participant, imp, exp, complete in meters:
        device = DeviceId(f"{participant}-meter")
        start[device] = meter_reading(device, participant, interval.start, 1000, 2000)
        end[device] = meter_reading(
            device,
            participant,
            interval.end,
            1000 + imp,
            2000 + exp,
            ReadingQuality.OK if complete else ReadingQuality.MISSING,
        )
    return start, end
