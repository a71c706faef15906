"""The event hub (thread-safe publish, bounded per-subscriber queues) and the site actions."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.bidding import Plan, PlannedKind, PlannedOrder
from controller.controls import ControlRefused, MarketControls, TargetKind, filter_plan
from controller.events import EventHub, EventRefused
from market.domain import Bid, BusId, DeviceId, Interval, OrderId, ParticipantId
from market.units import PricePerKwh, Wh

T0 = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)


def _collect(hub: EventHub, publish: int, *, from_thread: bool) -> tuple[list[int], int]:
    """Subscribe, publish ``publish`` events (from another thread or not), drain the queue."""

    async def run() -> tuple[list[int], int]:
        with hub.subscribe() as sub:

            def send() -> None:
                for k in range(publish):
                    hub.publish({"type": "interval", "k": k})

            if from_thread:
                t = threading.Thread(target=send)
                t.start()
                await asyncio.to_thread(t.join)
            else:
                send()
            await asyncio.sleep(0)  # let the loop run the scheduled puts
            for _ in range(publish + 2):
                await asyncio.sleep(0)
            got: list[int] = []
            while (event := await sub.get(0.01)) is not None:
                got.append(int(event["k"]))
            return got, sub.take_missed()

    return asyncio.run(run())


@settings(max_examples=30, deadline=None)
@given(size=st.integers(1, 8), publish=st.integers(0, 20), from_thread=st.booleans())
def test_a_subscriber_gets_the_newest_events_in_order_and_counts_the_rest(
    size: int, publish: int, from_thread: bool
) -> None:
    hub = EventHub(queue_size=size)
    got, missed = _collect(hub, publish, from_thread=from_thread)
    kept = min(size, publish)
    assert got == list(range(publish - kept, publish))
    assert missed == publish - kept
    assert hub.subscribers == 0


def test_publish_numbers_events_and_refuses_unknown_types() -> None:
    hub = EventHub()
    assert hub.publish({"type": "interval"}) == 1
    assert hub.publish({"type": "settlement"}) == 2
    with pytest.raises(EventRefused):
        hub.publish({"type": "gossip"})
    with pytest.raises(EventRefused):
        hub.publish({})


def test_the_order_check_catches_a_hub_that_reorders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Injected fault: a hub that drops the newest event instead of the oldest is caught."""
    from controller.events import Subscription

    def keep_oldest(self: Subscription, event: dict[str, object]) -> None:
        if self.queue.full():
            self.missed += 1
            return
        self.queue.put_nowait(event)

    monkeypatch.setattr(Subscription, "_offer", keep_oldest)
    got, _ = _collect(EventHub(queue_size=2), 5, from_thread=False)
    assert got != [3, 4]


def _controls() -> MarketControls:
    return MarketControls(
        participants=frozenset({"alice", "bob"}),
        devices=frozenset({"alice-pv"}),
        buses=frozenset({"Bus R11"}),
    )


@given(
    start_min=st.integers(-120, 120),
    length_min=st.integers(1, 120),
    interval_min=st.integers(-120, 120).map(lambda m: m - m % 15),
)
def test_an_exclusion_covers_exactly_the_intervals_it_overlaps(
    start_min: int, length_min: int, interval_min: int
) -> None:
    controls = _controls()
    start = T0 + timedelta(minutes=start_min)
    end = start + timedelta(minutes=length_min)
    ex = controls.exclude(
        TargetKind.BUS, "Bus R11", start=start, end=end, reason="works", by="0xop", at=T0
    )
    interval = Interval(T0 + timedelta(minutes=interval_min), 900)
    overlaps = start < interval.end and interval.start < end
    in_force = controls.in_force(interval)
    assert (in_force.excludes(TargetKind.BUS, "Bus R11") == ex) is overlaps
    assert in_force.excludes(TargetKind.PARTICIPANT, "alice") is None
    assert ("works" in str(in_force.to_dict())) is overlaps


def test_site_actions_refuse_unknown_targets_empty_periods_and_reasons() -> None:
    controls = _controls()
    later = T0 + timedelta(hours=1)
    with pytest.raises(ControlRefused, match="unknown participant"):
        controls.exclude(
            TargetKind.PARTICIPANT, "zed", start=T0, end=later, reason="r", by="0x", at=T0
        )
    with pytest.raises(ControlRefused, match="empty period"):
        controls.exclude(
            TargetKind.DEVICE, "alice-pv", start=later, end=T0, reason="r", by="0x", at=T0
        )
    with pytest.raises(ControlRefused, match="reason"):
        controls.pause("  ", by="0x", at=T0)
    first = controls.pause("storm", by="0xa", at=T0)
    assert controls.pause("again", by="0xb", at=later) == first
    assert controls.in_force(Interval(T0, 900)).paused == first
    assert controls.resume()
    assert not controls.resume()
    assert controls.in_force(Interval(T0, 900)).paused is None


def _plan() -> Plan:
    interval = Interval(T0, 900)

    def bid(oid: str, who: str, bus: str) -> Bid:
        return Bid(
            order_id=OrderId(oid),
            participant=ParticipantId(who),
            bus=BusId(bus),
            interval=interval,
            energy_wh=Wh(1_000),
            limit_price=PricePerKwh(300_000),
        )

    return Plan(
        orders=(
            PlannedOrder(
                order=bid("a1", "alice", "Bus R11"),
                device=DeviceId("alice-pv"),
                kind=PlannedKind.BUY,
            ),
            PlannedOrder(order=bid("b1", "bob", "Bus R15"), device=None, kind=PlannedKind.BUY),
            PlannedOrder(order=bid("c1", "carol", "Bus R16"), device=None, kind=PlannedKind.BUY),
        ),
        forecast_w={},
        skipped=(),
    )


@pytest.mark.parametrize(
    ("kind", "target", "dropped"),
    [
        (TargetKind.PARTICIPANT, "bob", {"b1"}),
        (TargetKind.BUS, "Bus R11", {"a1"}),
        (TargetKind.DEVICE, "alice-pv", {"a1"}),
    ],
)
def test_filter_plan_drops_what_is_excluded_with_the_reason(
    kind: TargetKind, target: str, dropped: set[str]
) -> None:
    controls = MarketControls(
        participants=frozenset({"alice", "bob", "carol"}),
        devices=frozenset({"alice-pv"}),
        buses=frozenset({"Bus R11", "Bus R15", "Bus R16"}),
    )
    plan = _plan()
    interval = Interval(T0, 900)
    assert filter_plan(plan, controls.in_force(interval)) == plan
    controls.exclude(
        kind, target, start=T0, end=T0 + timedelta(hours=1), reason="works", by="0xop", at=T0
    )
    kept = filter_plan(plan, controls.in_force(interval))
    assert {p.order.order_id for p in kept.orders} == {"a1", "b1", "c1"} - dropped
    assert len(kept.skipped) == len(dropped)
    assert all("works" in s for s in kept.skipped)
    # an exclusion of another period changes nothing
    assert filter_plan(plan, controls.in_force(Interval(T0 + timedelta(hours=2), 900))) == plan
    controls.pause("storm", by="0xop", at=T0)
    paused = filter_plan(plan, controls.in_force(interval))
    assert paused.orders == ()
    assert all("paused" in s and "storm" in s for s in paused.skipped)
