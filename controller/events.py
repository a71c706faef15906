"""Events of the running site for the API's server-sent events stream.

The cycle's thread publishes (:meth:`EventHub.publish`, thread-safe, never blocks); each
subscriber (one per open ``GET /v1/sites/{site}/events`` stream, on the server's event loop)
gets every event published after it subscribed, in order, through a bounded queue of its
own. A subscriber that does not keep up loses the *oldest* events first and is told how many
it missed (:attr:`Subscription.missed`; the stream sends a ``lagged`` event), so a slow
client never holds up the cycle or grows memory without bound.

Events are JSON objects with a ``type``: ``interval`` (an interval's clearing result,
:func:`interval_event`) or ``settlement`` (its settlement, :func:`settlement_event`), and a
``seq`` number the hub gives them (1, 2, ...). They carry only what every signed-in role may
see: prices, grid exchange, totals and the transaction, never one participant's orders or
amounts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

from controller.cycle import IntervalReport, SettlementReport
from controller.errors import ControllerError

EVENT_TYPES: Final = frozenset({"interval", "settlement"})
"""The types an event may have."""

QUEUE_SIZE: Final = 256
"""Events a subscriber may have waiting before the oldest are dropped."""


class EventRefused(ControllerError, ValueError):
    """An event that cannot be published (no ``type``, or an unknown one)."""


@dataclass(eq=False)
class Subscription:
    """One subscriber's queue (see :meth:`EventHub.subscribe`); use it as a context manager.

    ``missed`` counts the events dropped because the queue was full since the last
    :meth:`get` that reported them.
    """

    hub: EventHub
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]]
    missed: int = 0

    def _offer(self, event: dict[str, Any]) -> None:
        """Put ``event`` in the queue (on the subscriber's loop), dropping the oldest if full."""
        while self.queue.full():
            self.queue.get_nowait()
            self.missed += 1
        self.queue.put_nowait(event)

    async def get(self, timeout_s: float | None = None) -> dict[str, Any] | None:
        """The next event, or ``None`` if none came within ``timeout_s`` [s].

        Parameters
        ----------
        timeout_s : float or None
            How long to wait [s]; ``None`` waits for ever.
        """
        try:
            return await asyncio.wait_for(self.queue.get(), timeout_s)
        except TimeoutError:
            return None

    def take_missed(self) -> int:
        """How many events were dropped since the last call (and reset the count)."""
        missed, self.missed = self.missed, 0
        return missed

    def close(self) -> None:
        """Stop receiving events."""
        self.hub._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(eq=False)
class EventHub:
    """Fan-out of the site's events to the open streams (see the module docstring).

    Parameters
    ----------
    queue_size : int
        Each subscriber's queue length [events].
    """

    queue_size: int = QUEUE_SIZE
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _subscribers: list[Subscription] = field(default_factory=list, repr=False)
    _seq: int = 0

    def publish(self, event: Mapping[str, Any]) -> int:
        """Send ``event`` to every subscriber; callable from any thread, never blocks.

        Parameters
        ----------
        event : Mapping
            A JSON object with ``type`` in :data:`EVENT_TYPES`.

        Returns
        -------
        int
            The event's ``seq``.

        Raises
        ------
        EventRefused
            No ``type`` or an unknown one.
        """
        kind = event.get("type")
        if kind not in EVENT_TYPES:
            msg = f"event type {kind!r} is not one of {sorted(EVENT_TYPES)}"
            raise EventRefused(msg)
        with self._lock:
            self._seq += 1
            out = {**event, "seq": self._seq}
            subscribers = list(self._subscribers)
        for sub in subscribers:
            try:
                sub.loop.call_soon_threadsafe(sub._offer, dict(out))
            except RuntimeError:  # the subscriber's loop is closed: it is gone
                self._remove(sub)
        return int(out["seq"])

    def subscribe(self) -> Subscription:
        """A new subscription on the running event loop (call it from a coroutine).

        Returns
        -------
        Subscription
            Receives every event published from now on; close it when done.
        """
        sub = Subscription(
            hub=self, loop=asyncio.get_running_loop(), queue=asyncio.Queue(self.queue_size)
        )
        with self._lock:
            self._subscribers.append(sub)
        return sub

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        with self._lock:
            return len(self._subscribers)

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)


def interval_event(report: IntervalReport) -> dict[str, Any]:
    """The ``interval`` event of a cleared interval (public figures only).

    Parameters
    ----------
    report : IntervalReport
        The cycle's report of the clearing.

    Returns
    -------
    dict
        ``interval_start_s`` [Unix s], ``length_s`` [s], ``status``, ``reason``,
        ``prices_per_kwh`` (bus -> token units per kWh), ``grid_import_wh`` /
        ``grid_export_wh`` [Wh], ``n_orders``, ``n_trades`` and ``traded_wh`` [Wh].
    """
    result = report.result
    return {
        "type": "interval",
        "interval_start_s": report.interval.interval_id,
        "length_s": report.interval.length_s,
        "status": result.status.value,
        "reason": result.reason,
        "prices_per_kwh": {str(bus): int(price) for bus, price in result.prices},
        "grid_import_wh": int(result.grid_import_wh),
        "grid_export_wh": int(result.grid_export_wh),
        "n_orders": len(report.book),
        "n_trades": len(result.trades),
        "traded_wh": sum(int(t.energy_wh) for t in result.trades),
    }


def settlement_event(report: SettlementReport) -> dict[str, Any]:
    """The ``settlement`` event of an interval's settlement (no per-account amounts).

    Parameters
    ----------
    report : SettlementReport
        The cycle's report of the settlement.

    Returns
    -------
    dict
        ``interval_start_s`` [Unix s], ``state`` (``settled``, ``already_settled`` or
        ``failed``), ``batch_id``, ``tx_hash``, ``block_number``, ``gas_used`` [gas] and
        ``error``.
    """
    outcome = report.outcome
    return {
        "type": "settlement",
        "interval_start_s": report.interval.interval_id,
        "state": "failed" if outcome is None else outcome.status,
        "batch_id": None if report.batch is None else report.batch.batch_id,
        "tx_hash": None if outcome is None else outcome.tx_hash,
        "block_number": None if outcome is None else outcome.block_number,
        "gas_used": None if outcome is None else outcome.gas_used,
        "error": report.error,
    }
