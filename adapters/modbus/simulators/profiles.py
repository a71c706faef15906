"""Profiles: power as a function of time, for PV, loads and prosumers (pure).

:func:`constant_profile`, :func:`clear_sky_profile`, and :func:`series_profile` for a time
series (a SimBench PV or load profile scaled to watts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime

from adapters.modbus.errors import InvalidArgument
from market.domain import require_utc

Profile = Callable[[datetime], float]
"""Power [W] as a function of time: PV available power, or load consumption."""


def constant_profile(p_w: float) -> Profile:
    """A profile that is ``p_w`` [W] at all times.

    Parameters
    ----------
    p_w : float
        The power [W].

    Returns
    -------
    Profile
        ``t -> p_w``.
    """
    return lambda _t: p_w


def clear_sky_profile(
    peak_w: float, *, sunrise_h: float = 6.0, sunset_h: float = 20.0, utc_offset_h: float = 0.0
) -> Profile:
    """A clear-sky PV profile: ``peak_w * sin(pi * (h - sunrise) / (sunset - sunrise))``.

    Parameters
    ----------
    peak_w : float
        Power at solar noon [W].
    sunrise_h, sunset_h : float
        Local clock hours [h] of sunrise and sunset.
    utc_offset_h : float
        Local time minus UTC [h].

    Returns
    -------
    Profile
        Available power [W], 0 at night.

    Raises
    ------
    InvalidArgument
        Sunrise not before sunset.
    """
    if not sunrise_h < sunset_h:
        msg = f"need sunrise_h < sunset_h, got {sunrise_h}, {sunset_h}"
        raise InvalidArgument(msg)

    def profile(t: datetime) -> float:
        t = require_utc(t)
        hour = (t.hour + t.minute / 60 + t.second / 3600 + utc_offset_h) % 24
        if not sunrise_h < hour < sunset_h:
            return 0.0
        return peak_w * math.sin(math.pi * (hour - sunrise_h) / (sunset_h - sunrise_h))

    return profile


def series_profile(start: datetime, step_s: float, values_w: Sequence[float]) -> Profile:
    """A profile from a time series (e.g. a SimBench PV or load profile, scaled to watts).

    The series is piecewise linear between samples ``start + i * step_s``, held constant
    before the first and after the last, and repeats every ``len(values_w) * step_s``
    seconds (a yearly profile serves any year).

    Parameters
    ----------
    start : datetime
        Time of the first sample (timezone-aware).
    step_s : float
        Spacing of the samples [s], > 0.
    values_w : sequence of float
        Power [W] at each sample.

    Returns
    -------
    Profile
        Power [W] over time.

    Raises
    ------
    InvalidArgument
        ``step_s <= 0`` or no values.
    market.errors.InvalidInterval
        ``start`` is naive.
    """
    start = require_utc(start, "start")
    values = [float(v) for v in values_w]
    if step_s <= 0 or not values:
        msg = f"need step_s > 0 and at least one value, got {step_s}, {len(values)} values"
        raise InvalidArgument(msg)
    period = len(values) * step_s

    def profile(t: datetime) -> float:
        x = ((require_utc(t) - start).total_seconds() % period) / step_s
        i = int(x)
        nxt = values[(i + 1) % len(values)]
        return values[i] + (nxt - values[i]) * (x - i)

    return profile


__all__ = ["Profile", "clear_sky_profile", "constant_profile", "series_profile"]
