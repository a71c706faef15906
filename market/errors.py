"""Exceptions of the market kernel.

::

    MarketError
     ├── InvalidOrder (ValueError)        a bid or offer that breaks a rule; names the order
     ├── InvalidInterval (ValueError)     naive or misaligned times
     ├── InvalidNetwork (ValueError)      a NetworkModel that cannot be cleared against
     ├── InvalidQuantity (ValueError)     a non-finite float to round, a negative Wh or price to pay
     ├── NotCanonical (ValueError)        a value canonical JSON has no encoding for (NaN, inf ...)
     ├── NotALeaf (KeyError)              a Merkle proof asked for an item that is not a leaf
     ├── SettlementError (ValueError)     a batch that would not sum to zero, or bad readings
     │    └── BatchMismatch               a stored batch whose id does not match its content
     └── UnbalancedEnergy (ValueError)    cleared energy that does not balance to the Wh

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


class InvalidQuantity(MarketError, ValueError):
    """A quantity the integer rules of :mod:`market.units` cannot take (NaN, inf, < 0)."""


class NotCanonical(MarketError, ValueError):
    """A value with no canonical JSON encoding (:mod:`market.canonical`).

    NaN and the infinities, a mapping key that is not a string, or a type JSON does not have.
    """


class NotALeaf(MarketError, KeyError):
    """An item whose Merkle proof was asked for is not a leaf of the tree."""


class SettlementError(MarketError, ValueError):
    """A settlement that cannot be computed exactly."""


class BatchMismatch(SettlementError):
    """A stored settlement batch whose batch id does not recompute from its content."""


class UnbalancedEnergy(MarketError, ValueError):
    """Energy sold and bought (with the grid and losses) that does not balance to the Wh.

    Raised by the matching when its two sides differ, and by the extraction if its own
    rounding ever failed to balance (a bug, never an input error).
    """
