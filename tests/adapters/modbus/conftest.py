"""Fixtures of the Modbus adapter tests: a leak check for anything that opens sockets."""

from __future__ import annotations

import gc
import os
import threading
import time
import warnings

import pytest


def _open_sockets() -> set[str]:
    if not os.path.isdir("/proc/self/fd"):  # pragma: no cover - not Linux: skip this part
        return set()
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed while listing
            continue
        if target.startswith("socket:"):
            found.add(f"{fd}->{target}")
    return found


@pytest.fixture
def no_leaks():
    """Fail the test if it leaves a socket open or a thread running, or GC closes a socket.

    Request it first so it is torn down last (after the simulators and clients). Sockets that
    only the garbage collector closes show up as ResourceWarnings, recorded here.
    """
    sockets_before = _open_sockets()
    threads_before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        deadline = time.monotonic() + 2.0
        while True:
            gc.collect()
            leaked_sockets = _open_sockets() - sockets_before
            leaked_threads = [t for t in threading.enumerate() if t not in threads_before]
            if not (leaked_sockets or leaked_threads) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not unclosed, f"closed only by the garbage collector: {unclosed}"
    assert not leaked_threads, f"threads left running: {leaked_threads}"
    assert not leaked_sockets, f"sockets left open: {sorted(leaked_sockets)}"
