"""Exceptions of the market kernel.

::

    MarketError
     ├── InvalidOrder (ValueError)        a bid or offer that breaks a rule; names the order
     ├── InvalidInterval (ValueError)     naive or misaligned times
     ├── InvalidNetwork (ValueError)      a NetworkModel that cannot be cleared against
     └── SettlementError (ValueError)     a batch that would not sum to zero, or bad readings

Infeasibility and solver trouble are *not* exceptions: ``clear`` returns a
``ClearingResult`` whose ``status`` says what happened.
"""

from __future__ import annotations


class MarketError(Exception):
    """Root of every error raised by the ``market`` package."""


class InvalidOrder(MarketError, ValueError):
    """An order (or a row of an order file) breaks a validation rule."""


class InvalidInterval(MarketError, ValueError):
    """An interval with naive or misaligned timestamps."""


class InvalidNetwork(MarketError, ValueError):
    """A network model the clearing cannot use (unknown slack, dangling branch ...)."""


class SettlementError(MarketError, ValueError):
    """A settlement that cannot be computed exactly."""
