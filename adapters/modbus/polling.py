"""One poll cycle over many devices: all read concurrently, none able to stall the cycle.

OpenEMS's cycle reads every device into a process image before the controllers run;
:class:`Poller` is that read phase, in threads. Each device is read by its own
:class:`~adapters.modbus.reading.DeviceReader` (which already turns failures into
``MISSING``/``STALE`` readings and pauses a dead device with a growing backoff), on a shared
thread pool, so a slow or dead device costs one worker for its timeout and the others go on.

With ``deadline_s`` the cycle also has a hard end: a device whose read has not finished by
then is reported (``STALE`` or ``MISSING``, reason "no answer within the cycle deadline"),
its read finishes in the background, and it is not read again while that read still runs.

Examples
--------
>>> from datetime import UTC, datetime
>>> from adapters.modbus.fake import FakeRegisterClient
>>> from adapters.modbus.mapfiles import load_register_map
>>> from adapters.modbus.reading import DeviceReader
>>> meter = DeviceReader("m1", "alice", "b1", FakeRegisterClient(), load_register_map("sdm630"))
>>> with Poller({"m1": meter}) as poller:
...     readings = poller.poll(datetime(2026, 6, 21, 12, tzinfo=UTC))
>>> readings["m1"].quality.value
'ok'
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from adapters.modbus.errors import InvalidArgument
from market.domain import (
    BusId,
    DeviceId,
    MeterReading,
    ParticipantId,
    ReadingQuality,
    require_utc,
)
from market.units import W, Wh

LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_WORKERS = 64
"""Most threads a poller uses (fewer for fewer devices)."""


class PolledReader(Protocol):
    """A device reader as the poller needs it: :meth:`read`.

    A :class:`~adapters.modbus.reading.DeviceReader` also offers ``unavailable(now,
    reason)`` (STALE from its last good values, or MISSING), which the poller uses for a
    read it gave up on; for other readers it reports MISSING under the reader's
    ``device_id``, ``participant`` and ``bus`` attributes (the dictionary key and ``""`` if
    absent).
    """

    def read(self, now: datetime) -> MeterReading:
        """Read the device; never raises for device trouble.

        Parameters
        ----------
        now : datetime
            The cycle's time (timezone-aware).

        Returns
        -------
        MeterReading
            ``OK``, ``STALE`` or ``MISSING``.
        """
        ...


def _given_up(
    device_id: DeviceId, reader: PolledReader, now: datetime, reason: str
) -> MeterReading:
    """STALE from the reader's last good values if it can say so, else MISSING."""
    unavailable = getattr(reader, "unavailable", None)
    if callable(unavailable):
        reading = unavailable(now, reason)
        if isinstance(reading, MeterReading):
            return reading
    return MeterReading(
        device_id=getattr(reader, "device_id", device_id),
        participant=getattr(reader, "participant", ParticipantId("")),
        bus=getattr(reader, "bus", BusId("")),
        measured_at=now,
        p_w=W(0),
        import_wh_total=Wh(0),
        export_wh_total=Wh(0),
        quality=ReadingQuality.MISSING,
        reason=reason,
    )


class Poller:
    """Reads many devices concurrently, one cycle at a time.

    Parameters
    ----------
    readers : Mapping[DeviceId, PolledReader]
        The devices, by id; the result of :meth:`poll` has the same keys, in the same order.
    max_workers : int, optional
        Threads; default ``min(64, number of devices)``. Devices on one RTU line share its
        lock, so more threads than lines does not speed them up.
    deadline_s : float, optional
        Longest cycle [s]; ``None`` waits for every read (each is bounded by its client's
        timeouts and retries).

    Raises
    ------
    InvalidArgument
        ``max_workers < 1`` or ``deadline_s <= 0``.

    Notes
    -----
    Use one poller per set of readers and call :meth:`poll` from one thread at a time;
    :meth:`close` (or ``with``) stops its threads.
    """

    def __init__(
        self,
        readers: Mapping[DeviceId, PolledReader],
        *,
        max_workers: int | None = None,
        deadline_s: float | None = None,
    ) -> None:
        if max_workers is not None and max_workers < 1:
            msg = f"max_workers must be >= 1, got {max_workers}"
            raise InvalidArgument(msg)
        if deadline_s is not None and deadline_s <= 0:
            msg = f"deadline_s must be > 0, got {deadline_s}"
            raise InvalidArgument(msg)
        self.readers = dict(readers)
        workers = max_workers or max(1, min(DEFAULT_MAX_WORKERS, len(self.readers)))
        self.deadline_s = deadline_s
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="modbus-poll"
        )
        self._running: dict[DeviceId, concurrent.futures.Future[MeterReading]] = {}
        self._lock = threading.Lock()
        self.last_cycle_s: float | None = None
        """Duration [s] of the last :meth:`poll`."""

    def __repr__(self) -> str:
        return f"Poller({len(self.readers)} devices)"

    def poll(self, now: datetime) -> dict[DeviceId, MeterReading]:
        """Read every device once; never raises for device trouble.

        Parameters
        ----------
        now : datetime
            The cycle's time (timezone-aware), passed to every reader.

        Returns
        -------
        dict of DeviceId to MeterReading
            One reading per device (``OK``, ``STALE`` or ``MISSING`` with a reason).

        Raises
        ------
        market.errors.InvalidInterval
            ``now`` is naive.
        RuntimeError
            The poller is closed.
        """
        now = require_utc(now, "now")
        started = time.perf_counter()
        results: dict[DeviceId, MeterReading] = {}
        with self._lock:
            futures: dict[DeviceId, concurrent.futures.Future[MeterReading]] = {}
            for device_id, reader in self.readers.items():
                previous = self._running.get(device_id)
                if previous is not None and not previous.done():
                    reason = "previous read still running (it missed a cycle deadline)"
                    results[device_id] = _given_up(device_id, reader, now, reason)
                    continue
                futures[device_id] = self._pool.submit(reader.read, now)
                self._running[device_id] = futures[device_id]
            timeout = self.deadline_s
            concurrent.futures.wait(futures.values(), timeout=timeout)
            for device_id, future in futures.items():
                reader = self.readers[device_id]
                if not future.done():
                    reason = f"no answer within the cycle deadline ({self.deadline_s:g} s)"
                    results[device_id] = _given_up(device_id, reader, now, reason)
                    continue
                exc = future.exception()
                if exc is not None:  # a reader that raised: a bug, reported, never fatal
                    LOGGER.error("%s: reader raised %r", device_id, exc, exc_info=exc)
                    reason = f"reader failed: {type(exc).__name__}: {exc}"
                    results[device_id] = _given_up(device_id, reader, now, reason)
                else:
                    results[device_id] = future.result()
        self.last_cycle_s = time.perf_counter() - started
        return {device_id: results[device_id] for device_id in self.readers}

    def close(self, *, wait: bool = True) -> None:
        """Stop the threads.

        Parameters
        ----------
        wait : bool
            Wait for reads still running (each is bounded by its client's timeouts);
            ``False`` lets them finish in the background.
        """
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def poll_all(
    readers: Mapping[DeviceId, PolledReader],
    now: datetime,
    *,
    max_workers: int | None = None,
    deadline_s: float | None = None,
) -> dict[DeviceId, MeterReading]:
    """Read every device once, concurrently (a one-shot :class:`Poller`).

    The controller's read phase, as a drop-in for ``{d: r.read(now) for d, r in
    readers.items()}``. A poller kept across cycles saves starting threads each time.

    Parameters
    ----------
    readers : Mapping[DeviceId, PolledReader]
        The devices, by id.
    now : datetime
        The cycle's time (timezone-aware), passed to every reader.
    max_workers : int, optional
        Threads; default ``min(64, number of devices)``.
    deadline_s : float, optional
        Longest cycle [s]; ``None`` waits for every read.

    Returns
    -------
    dict of DeviceId to MeterReading
        One reading per device, in the order of ``readers``.
    """
    poller = Poller(readers, max_workers=max_workers, deadline_s=deadline_s)
    try:
        return poller.poll(now)
    finally:
        poller.close(wait=deadline_s is None)


__all__ = ["DEFAULT_MAX_WORKERS", "PolledReader", "Poller", "poll_all"]
