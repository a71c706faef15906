r"""Canonical JSON: the one byte encoding behind every hash an auditor recomputes.

Trade ids, order-book digests, batch ids (the on-chain idempotency key), audit record hashes
and the leaves of both Merkle trees (:mod:`market.merkle`) are SHA-256 digests of the
canonical JSON of a value. This module is the only definition of that encoding; it is
specified here so that a utility can reproduce every hash in another language.

Specification
-------------
A value is ``null``, a boolean, an integer, a finite float, a string, an array (a Python
``list`` or ``tuple``) or an object (a ``dict`` whose keys are all strings). Its encoding is:

* **no whitespace** anywhere: ``,`` between items, ``:`` between a key and its value;
* **objects** with their members sorted by key, comparing keys code point by code point
  (Python's ``sorted`` on ``str``); duplicate keys cannot occur;
* ``null``, ``true``, ``false`` for ``None``, ``True``, ``False``;
* **integers** in decimal, ``-`` for negatives, no leading zeros, no fraction, no exponent,
  any magnitude. Money (token base units), prices (base units per kWh), energy [Wh] and
  power [W] are always integers (:mod:`market.units`), so their encoding is exact;
* **floats** (voltages [p.u.], loadings [%]) in their *shortest round-trip* form: the fewest
  significant digits that read back as the same IEEE-754 double, written as Python's
  ``repr(float)`` writes them: positional with at least one digit after the point when
  ``1e-4 <= |x| < 1e16`` (``0.9693``, ``100.0``, ``-0.0``), otherwise ``d[.ddd]e±XX`` with at
  least two exponent digits (``1e-05``, ``1.5e+16``). A float is never written as an integer
  (``2.0``, not ``2``), so a float and an integer never collide;
* **NaN and the infinities are rejected** (:class:`~market.errors.NotCanonical`): JSON has no
  encoding for them and guessing one (``null``, ``"NaN"``) would make two different values
  hash alike. The JSON forms of :mod:`market.codec` write "no number" as ``null`` themselves;
* **strings** between ``"``, with ``\"``, ``\\``, ``\b``, ``\f``, ``\n``, ``\r`` and
  ``\t`` escaped as shown and every other character outside printable ASCII (below U+0020,
  or U+007F and above) as ``\uXXXX`` with four lowercase hex digits (characters above U+FFFF
  as their UTF-16 surrogate pair, e.g. ``\ud83d\ude00``); ``/`` is not escaped;
* the text is **UTF-8** encoded. Because of the escapes above it is pure ASCII, so no
  choice of the encoder about non-ASCII text can change the bytes (strings are hashed as
  given: no Unicode normalisation).

Anything else (a ``set``, ``bytes``, a ``datetime``, a non-string key) is rejected with
:class:`~market.errors.NotCanonical`; the codecs turn such values into strings or integers
first (hex for hashes, ISO 8601 for times, Unix seconds for interval ids).

This is the encoding of Python's ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=True, allow_nan=False)``, which every hash recorded so far was computed with.
Example::

    >>> canonical_json({"b": [1, 2.5, None], "a": "Zürich"})
    b'{"a":"Z\\u00fcrich","b":[1,2.5,null]}'
"""

from __future__ import annotations

import hashlib
import json
import math

from market.errors import NotCanonical

_SCALARS = (str, int, type(None))  # bool is an int


def _is_canonical(value: object) -> bool:
    """Whether ``value`` has a canonical encoding (the fast check; no path on failure)."""
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_canonical(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_is_canonical(v) for v in value)
    return False


def _problem(value: object, path: str) -> str | None:
    """Where and why ``value`` has no canonical encoding (``None`` if it has one)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path}: {value!r} is not a finite number"
    items: list[tuple[str, object]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}: key {key!r} is not a string"
            items.append((f"{path}.{key}", item))
    elif isinstance(value, list | tuple):
        items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    elif not isinstance(value, (*_SCALARS, float)):
        return f"{path}: a {type(value).__name__} has no JSON encoding"
    for where, item in items:
        found = _problem(item, where)
        if found is not None:
            return found
    return None


def canonical_json(value: object) -> bytes:
    """Encode ``value`` as canonical JSON (see the module docstring for the specification).

    Parameters
    ----------
    value : object
        ``None``, bool, int, finite float, str, list or tuple of values, or dict of str to
        values. ``str`` and ``int`` subclasses (``StrEnum``, ``NewType`` values) encode as
        their plain value.

    Returns
    -------
    bytes
        The UTF-8 (in fact ASCII) encoding.

    Raises
    ------
    NotCanonical
        For NaN or an infinity, a non-string object key, or a type JSON does not have; the
        message gives the path of the offending item (``$.check.min_vm_pu``).
    """
    if not _is_canonical(value):
        msg = f"no canonical JSON for this value: {_problem(value, '$')}"
        raise NotCanonical(msg)
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return text.encode("utf-8")


def content_hash(value: object) -> str:
    """SHA-256 of the canonical JSON of ``value``, as 64 lowercase hex digits.

    Parameters
    ----------
    value : object
        Any value :func:`canonical_json` accepts.

    Returns
    -------
    str
        The hex digest: trade ids, book digests, batch ids and audit record hashes.

    Raises
    ------
    NotCanonical
        If ``value`` has no canonical encoding.
    """
    return hashlib.sha256(canonical_json(value)).hexdigest()


__all__ = ["canonical_json", "content_hash"]
