"""Deterministic daily profiles for the demo's simulated devices and its base load.

Pure functions of a UTC timestamp (the demo site is placed on UTC solar time, so noon is 12:00).
They stand in for measured profiles: PV follows a clear-sky bell curve between sunrise and
sunset scaled by a day-long cloudiness, with short deterministic cloud dips that the forecast
does not know (so metered energy differs from cleared energy and settlement has real
imbalance to handle); household load has a morning and an evening peak.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from datetime import datetime

from market.domain import require_utc

Profile = Callable[[datetime], float]
"""A profile: UTC time -> power [W] (>= 0; production or consumption, by context)."""

SUNRISE_H = 5.5
SUNSET_H = 20.5


def _hour(moment: datetime) -> float:
    m = require_utc(moment)
    return m.hour + m.minute / 60 + m.second / 3600


def _noise(key: str, moment: datetime, minutes: int) -> float:
    """A deterministic value in [0, 1) per ``key`` and ``minutes``-long time slot."""
    slot = int(require_utc(moment).timestamp()) // (60 * minutes)
    digest = hashlib.sha256(f"{key}:{slot}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def clear_sky_fraction(moment: datetime) -> float:
    """Fraction of PV rating available under a clear sky at ``moment`` (0 at night).

    ``sin(pi * x) ** 1.5`` with ``x`` the fraction of the day between sunrise (05:30) and
    sunset (20:30), UTC solar time.

    Parameters
    ----------
    moment : datetime
        The time (UTC).
    """
    h = _hour(moment)
    if h <= SUNRISE_H or h >= SUNSET_H:
        return 0.0
    x = (h - SUNRISE_H) / (SUNSET_H - SUNRISE_H)
    return float(math.sin(math.pi * x) ** 1.5)


def pv_forecast(rated_w: float, cloudiness: float = 0.15) -> Profile:
    """Forecast PV power [W]: ``0.85 * rated_w * clear_sky_fraction * (1 - cloudiness)``.

    Parameters
    ----------
    rated_w : float
        The inverter's rating [W].
    cloudiness : float
        The day's cloudiness (fraction of clear-sky power lost, 0 .. 1).
    """

    def profile(moment: datetime) -> float:
        return rated_w * 0.85 * clear_sky_fraction(moment) * (1 - cloudiness)

    return profile


def pv_actual(rated_w: float, key: str, cloudiness: float = 0.15) -> Profile:
    """Actual PV power [W]: the forecast with 5-minute cloud dips of up to 35 % (deterministic).

    Parameters
    ----------
    rated_w : float
        The inverter's rating [W].
    key : str
        Seed of the dips (the device id: every device gets its own clouds).
    cloudiness : float
        The day's cloudiness (fraction of clear-sky power lost, 0 .. 1).
    """
    forecast = pv_forecast(rated_w, cloudiness)

    def profile(moment: datetime) -> float:
        dip = 0.35 * max(_noise(key, moment, 5) - 0.55, 0.0) / 0.45
        return forecast(moment) * (1 - dip)

    return profile


def load_shape(moment: datetime) -> float:
    """Residential load as a fraction of its peak (0.25 .. 1).

    ``0.25 + 0.75 * max(morning, evening, midday)``: Gaussian bumps at 07:30 (width 1.5 h),
    19:00 (2 h) and 12:30 (3 h, at 35 %).

    Parameters
    ----------
    moment : datetime
        The time (UTC).
    """
    h = _hour(moment)
    morning = math.exp(-(((h - 7.5) / 1.5) ** 2))
    evening = math.exp(-(((h - 19.0) / 2.0) ** 2))
    midday = 0.35 * math.exp(-(((h - 12.5) / 3.0) ** 2))
    return 0.25 + 0.75 * max(morning, evening, midday)


def load_forecast(peak_w: float) -> Profile:
    """Forecast household consumption [W]: ``peak_w * load_shape``.

    Parameters
    ----------
    peak_w : float
        The household's peak consumption [W].
    """

    def profile(moment: datetime) -> float:
        return peak_w * load_shape(moment)

    return profile


def load_actual(peak_w: float, key: str) -> Profile:
    """Actual household consumption [W]: the forecast +/- 20 % in 5-minute slots.

    Parameters
    ----------
    peak_w : float
        The household's peak consumption [W].
    key : str
        Seed of the deviations (the device id).
    """
    forecast = load_forecast(peak_w)

    def profile(moment: datetime) -> float:
        return forecast(moment) * (0.8 + 0.4 * _noise(key, moment, 5))

    return profile
