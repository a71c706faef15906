"""argparse ``type=`` functions: numbers, ports and times checked where the command line is read.

Each function takes the flag's text and returns the value, or raises
:class:`argparse.ArgumentTypeError` whose message argparse prints after the flag's name
(``argument --vm-min: must be a finite number, got 'nan'``), with exit code 2. NaN and the
infinities are never accepted: ``float("nan")`` compares false with every bound, so a NaN
limit would silently switch a check off.

==========================  ==================================================================
function                    accepts
==========================  ==================================================================
:func:`finite_float`        any finite number
:func:`positive_seconds`    a finite number of seconds > 0 and <= :data:`MAX_SECONDS`
:func:`per_unit_voltage`    a finite voltage in :data:`VOLTAGE_RANGE_PU` [p.u.]
:func:`price_per_kwh`       a whole number 0 .. :data:`~market.units.MAX_PRICE_PER_KWH`
:func:`positive_int`        a whole number >= 1
:func:`non_negative_int`    a whole number >= 0
:func:`tcp_port`            a TCP port 1 .. 65535
:func:`tcp_port_or_zero`    a TCP port, or 0 (any free one)
:func:`modbus_unit`         a Modbus unit id 1 .. 247
:func:`baud_rate`           a serial speed 50 .. 4_000_000 [baud]
:func:`utc_time`            an ISO 8601 time with a zone (``2026-06-21T09:00Z``)
==========================  ==================================================================
"""

from __future__ import annotations

import argparse
import math
from datetime import datetime

from market.units import MAX_PRICE_PER_KWH

VOLTAGE_RANGE_PU = (0.5, 1.5)
"""Lowest and highest voltage limit a command takes [p.u.]."""

MAX_SECONDS = 86_400.0
"""Longest duration a command takes (one day) [s]."""


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"not a number: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not math.isfinite(value):
        msg = f"must be a finite number, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _whole(text: str, low: int, high: int, what: str = "") -> int:
    kind = f"{what}, " if what else ""
    msg = f"must be {kind}a whole number from {low:_} to {high:_}, got {text!r}"
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(msg) from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(msg)
    return value


def finite_float(text: str) -> float:
    """A finite number.

    Parameters
    ----------
    text : str
        The flag's text.

    Returns
    -------
    float
        The number.

    Raises
    ------
    argparse.ArgumentTypeError
        Not a number, NaN or infinite.
    """
    return _number(text)


def positive_seconds(text: str) -> float:
    """A duration > 0 and at most :data:`MAX_SECONDS`.

    Parameters
    ----------
    text : str
        The flag's text [s].

    Returns
    -------
    float
        The duration [s].

    Raises
    ------
    argparse.ArgumentTypeError
        Not a finite number in range.
    """
    value = _number(text)
    if not 0 < value <= MAX_SECONDS:
        msg = f"must be more than 0 and at most {MAX_SECONDS:g} seconds, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def per_unit_voltage(text: str) -> float:
    """A voltage limit within :data:`VOLTAGE_RANGE_PU`.

    Parameters
    ----------
    text : str
        The flag's text [p.u.].

    Returns
    -------
    float
        The voltage [p.u.].

    Raises
    ------
    argparse.ArgumentTypeError
        Not a finite number in range.
    """
    value = _number(text)
    low, high = VOLTAGE_RANGE_PU
    if not low <= value <= high:
        msg = f"must be a voltage from {low} to {high} p.u., got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def price_per_kwh(text: str) -> int:
    """A price: a whole number of token base units per kWh, 0 .. ``MAX_PRICE_PER_KWH``.

    Parameters
    ----------
    text : str
        The flag's text [token base units / kWh].

    Returns
    -------
    int
        The price [token base units / kWh].

    Raises
    ------
    argparse.ArgumentTypeError
        Not a whole number in range.
    """
    return _whole(text, 0, MAX_PRICE_PER_KWH, "a price in token base units per kWh")


def positive_int(text: str) -> int:
    """A whole number >= 1.

    Parameters
    ----------
    text : str
        The flag's text.

    Returns
    -------
    int
        The number.

    Raises
    ------
    argparse.ArgumentTypeError
        Not a whole number >= 1 (at most 10**9).
    """
    return _whole(text, 1, 10**9)


def non_negative_int(text: str) -> int:
    """A whole number >= 0.

    Parameters
    ----------
    text : str
        The flag's text.

    Returns
    -------
    int
        The number.

    Raises
    ------
    argparse.ArgumentTypeError
        Not a whole number >= 0 (at most 10**9).
    """
    return _whole(text, 0, 10**9)


def tcp_port(text: str) -> int:
    """A TCP port, 1 .. 65535.

    Parameters
    ----------
    text : str
        The flag's text.

    Returns
    -------
    int
        The port.

    Raises
    ------
    argparse.ArgumentTypeError
        Not a whole number in range.
    """
    return _whole(text, 1, 65_535, "a TCP port")


def tcp_port_or_zero(text: str) -> int:
    """A TCP port, or 0 for any free one.

    Parameters
    ----------
    text : str
        The flag's text.

    Returns
    -------
    int
        The port (0: let the system choose).

    Raises
    ------
    argparse.ArgumentTypeError
        Not a whole number in 0 .. 65535.
    """
    return _whole(text, 0, 65_535, "a TCP port (0 = any free one)")


def modbus_unit(text: str) -> int:
    """A Modbus unit (slave) id, 1 .. 247.

    Parameters
    ----------
    text : str
        The flag's text.

    Returns
    -------
    int
        The unit id.

    Raises
    ------
    argparse.ArgumentTypeError
        Not a whole number in range.
    """
    return _whole(text, 1, 247, "a Modbus unit id")


def baud_rate(text: str) -> int:
    """A serial line speed, 50 .. 4_000_000 baud.

    Parameters
    ----------
    text : str
        The flag's text [baud].

    Returns
    -------
    int
        The speed [baud].

    Raises
    ------
    argparse.ArgumentTypeError
        Not a whole number in range.
    """
    return _whole(text, 50, 4_000_000, "a serial speed in baud")


def utc_time(text: str) -> datetime:
    """An ISO 8601 time with a time zone, e.g. ``2026-06-21T09:00Z``.

    Parameters
    ----------
    text : str
        The flag's text.

    Returns
    -------
    datetime
        The time, timezone-aware.

    Raises
    ------
    argparse.ArgumentTypeError
        Not an ISO 8601 time, or without a zone.
    """
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        msg = f"not an ISO 8601 time (e.g. 2026-06-21T09:00Z): {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if moment.tzinfo is None:
        msg = f"must carry a time zone (e.g. 2026-06-21T09:00Z), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return moment
