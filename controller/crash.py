"""Crash hooks for kill tests: named points of the cycle where a test can ``kill -9`` it.

A test sets the environment variable ``PEERGRID_CRASH_AT`` to a point's name, or to
``name:N`` to crash the N-th time (1-based) the point is reached in this process; when the
process reaches it, it sends itself ``SIGKILL`` (no clean-up, no ``finally``, no flushing:
the real ``kill -9``). Unset (always, outside tests) a point does nothing but compare one
string. Nothing is logged, so no secret can leak through a hook.

Named points, in the order a tick reaches them:

``after_read``
    The boundary's snapshot is stored (:meth:`Cycle.tick` step 1).
``after_intent``
    The settlement intent of an ended interval and its audit record are committed (one
    database transaction, step 2), nothing sent.
``after_clear``
    The next interval's result is computed, not yet saved (step 3).
``after_save_result``
    The result (and setpoints to write) are saved (step 4).
``after_setpoints``
    The setpoints are written to the devices (step 4).
``after_send``
    The settlement transaction was broadcast to the node; its hash is not recorded in the
    database (the chain adapter's ``on_broadcast`` hook, :class:`adapters.chain.sender.TxSender`).
``after_confirm``
    The settlement is final on-chain (the settler returned); its hash is not recorded.
``after_record``
    The settlement's transaction is recorded in the database (with its audit record's chain
    part, one transaction).
``startup_reconcile``
    During start-up reconciliation (:meth:`Cycle.resume_pending`), before each pending
    intent is resolved.

A point is reached once per interval it concerns (``after_intent``, ``after_send``,
``after_confirm``, ``after_record`` and ``startup_reconcile`` once per settlement), so
``name:N`` counts those.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Final

ENV: Final = "PEERGRID_CRASH_AT"
"""The environment variable that arms a crash point (``name`` or ``name:N``)."""

POINTS: Final = (
    "after_read",
    "after_intent",
    "after_clear",
    "after_save_result",
    "after_setpoints",
    "after_send",
    "after_confirm",
    "after_record",
    "startup_reconcile",
)
"""Every named crash point (module docstring)."""

_reached: Counter[str] = Counter()


def armed(value: str | None) -> tuple[str, int] | None:
    """Parse a ``PEERGRID_CRASH_AT`` value into (point, N); ``None`` when unset or empty.

    Parameters
    ----------
    value : str or None
        ``name`` (crash the first time) or ``name:N`` (the N-th time, N >= 1); an N that is
        not a positive integer disarms the hook.

    Returns
    -------
    tuple of (str, int) or None
        The point's name and the 1-based count at which to crash.
    """
    if not value:
        return None
    name, sep, count = value.partition(":")
    if not sep:
        return name, 1
    if not count.isdigit() or int(count) < 1:
        return None
    return name, int(count)


def crash_point(name: str) -> None:
    """Kill this process with ``SIGKILL`` if ``PEERGRID_CRASH_AT`` arms ``name`` (docstring).

    Parameters
    ----------
    name : str
        One of :data:`POINTS`.
    """
    target = armed(os.environ.get(ENV))
    if target is None or target[0] != name:
        return
    _reached[name] += 1
    if _reached[name] == target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
