"""The API's read model: paginated and filtered reads of the store's tables (no writes).

:class:`~controller.store.Store` returns whole tables; the API needs pages (newest first,
``limit`` rows after a ``cursor``) and one participant's rows, so these functions query the
store's tables through its engine. Cursors are the last row's key as a decimal string
(an interval's start [Unix s], a reading's row id); a page shorter than ``limit`` has no
next cursor.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from controller.store import Store, audit, intervals, readings, settlements, signed_orders


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite drops the zone; the store only ever writes UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def _next_cursor(rows: list[Any], limit: int, key: str) -> str | None:
    return str(rows[-1][key]) if len(rows) == limit else None


def interval_page(
    store: Store, *, limit: int, cursor: int | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Intervals newest first, with their settlement state.

    Parameters
    ----------
    store : Store
        The site's store.
    limit : int
        Rows per page.
    cursor : int or None
        Only intervals starting before this [Unix s] (the previous page's last).

    Returns
    -------
    tuple
        Rows (``interval_id``, ``length_s``, ``status``, ``reason``, ``n_orders``,
        ``settlement_state``) and the next cursor.
    """
    query = (
        select(
            intervals.c.interval_id,
            intervals.c.length_s,
            intervals.c.status,
            intervals.c.reason,
            intervals.c.n_orders,
            settlements.c.state.label("settlement_state"),
        )
        .select_from(
            intervals.outerjoin(settlements, settlements.c.interval_id == intervals.c.interval_id)
        )
        .order_by(intervals.c.interval_id.desc())
        .limit(limit)
    )
    if cursor is not None:
        query = query.where(intervals.c.interval_id < cursor)
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    return rows, _next_cursor(rows, limit, "interval_id")


def interval_row(store: Store, interval_id: int) -> dict[str, Any] | None:
    """One interval's row (with its ``result`` JSON), or ``None``."""
    with store.engine.connect() as conn:
        row = (
            conn.execute(select(intervals).where(intervals.c.interval_id == interval_id))
            .mappings()
            .first()
        )
    return None if row is None else dict(row)


def results_between(store: Store, start_s: int, end_s: int) -> list[tuple[int, dict[str, Any]]]:
    """The stored results of intervals starting in ``[start_s, end_s)``, oldest first."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(intervals.c.interval_id, intervals.c.result)
            .where(intervals.c.interval_id >= start_s)
            .where(intervals.c.interval_id < end_s)
            .where(intervals.c.result.is_not(None))
            .order_by(intervals.c.interval_id)
        )
        return [(int(r[0]), r[1]) for r in rows]


def settlements_between(store: Store, start_s: int, end_s: int) -> list[dict[str, Any]]:
    """Settlement rows of intervals starting in ``[start_s, end_s)``, oldest first."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(settlements)
            .where(settlements.c.interval_id >= start_s)
            .where(settlements.c.interval_id < end_s)
            .order_by(settlements.c.interval_id)
        ).mappings()
        return [dict(r) for r in rows]


def audit_row(store: Store, interval_id: int) -> dict[str, Any] | None:
    """An interval's audit record row (``record``, ``record_hash``), or ``None``."""
    with store.engine.connect() as conn:
        row = (
            conn.execute(select(audit).where(audit.c.interval_id == interval_id)).mappings().first()
        )
    return None if row is None else dict(row)


def reading_out(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``readings`` row in the API's form (:class:`~controller.api.models.ReadingOut`)."""
    return {
        "boundary_s": int(row["boundary"]),
        "device_id": row["device_id"],
        "participant": row["participant"],
        "bus": row["bus"],
        "measured_at": _iso(row["measured_at"]) or "",
        "p_w": int(row["p_w"]),
        "import_wh_total": int(row["import_wh_total"]),
        "export_wh_total": int(row["export_wh_total"]),
        "quality": row["quality"],
        "reason": row["reason"] or "",
        "soc_percent": row["soc_percent"],
        "signed": row.get("signed") is not None,
        "seq": row.get("seq"),
    }


def reading_page(
    store: Store,
    participant: str,
    *,
    start_s: int,
    end_s: int,
    limit: int,
    cursor: int | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A participant's readings taken at boundaries in ``[start_s, end_s)``, newest first.

    Parameters
    ----------
    store : Store
        The site's store.
    participant : str
        The participant id.
    start_s, end_s : int
        The period [Unix s].
    limit : int
        Rows per page.
    cursor : int or None
        Only rows with an id below this (the previous page's last).

    Returns
    -------
    tuple
        Readings (:func:`reading_out`) and the next cursor.
    """
    query = (
        select(readings)
        .where(readings.c.participant == participant)
        .where(readings.c.boundary >= start_s)
        .where(readings.c.boundary < end_s)
        .order_by(readings.c.id.desc())
        .limit(limit)
    )
    if cursor is not None:
        query = query.where(readings.c.id < cursor)
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    return [reading_out(r) for r in rows], _next_cursor(rows, limit, "id")


def last_readings(store: Store, device_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each device's latest stored reading (:func:`reading_out`); devices without none left out."""
    out: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        for device in device_ids:
            row = (
                conn.execute(
                    select(readings)
                    .where(readings.c.device_id == device)
                    .order_by(readings.c.boundary.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
            if row is not None:
                out[device] = reading_out(dict(row))
    return out


def signed_out(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``signed_orders`` row in the API's form (:class:`~.models.SignedOrderOut`)."""
    return {
        "digest": row["digest"],
        "kind": row["kind"],
        "participant": row["participant"],
        "signer": row["signer"],
        "nonce": str(row["nonce"]),
        "status": row["status"],
        "interval_start_s": row["interval_id"],
        "valid_from_s": row["valid_from"],
        "valid_until_s": row["valid_until"],
        "received_at": _iso(row["received_at"]) or "",
        "cancel_digest": row["cancel_digest"],
        "message": row["message"],
        "signature": row["signature"],
    }


def signed_page(
    store: Store,
    *,
    kind: str,
    participant: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None] | None:
    """Signed messages of one kind (of one participant, or all), newest first.

    Parameters
    ----------
    store : Store
        The site's store.
    kind : str
        ``Order``, ``StandingOrder`` or ``Cancel``.
    participant : str or None
        Only this participant's (a prosumer's own); ``None`` for all.
    limit : int
        Rows per page.
    cursor : str or None
        The digest of the previous page's last row.

    Returns
    -------
    tuple or None
        Rows (:func:`signed_out`) and the next cursor; ``None`` if ``cursor`` names no
        stored message.
    """
    query = (
        select(signed_orders)
        .where(signed_orders.c.kind == kind)
        .order_by(signed_orders.c.received_at.desc(), signed_orders.c.digest.desc())
        .limit(limit)
    )
    if participant is not None:
        query = query.where(signed_orders.c.participant == participant)
    with store.engine.connect() as conn:
        if cursor is not None:
            at = conn.execute(
                select(signed_orders.c.received_at).where(signed_orders.c.digest == cursor)
            ).scalar()
            if at is None:
                return None
            query = query.where(
                (signed_orders.c.received_at < at)
                | ((signed_orders.c.received_at == at) & (signed_orders.c.digest < cursor))
            )
        rows = [dict(r) for r in conn.execute(query).mappings()]
    return [signed_out(r) for r in rows], _next_cursor(rows, limit, "digest")


def latest_result_interval(store: Store) -> int | None:
    """The start [Unix s] of the latest interval with a stored result, or ``None``."""
    with store.engine.connect() as conn:
        value = conn.execute(
            select(intervals.c.interval_id)
            .where(intervals.c.result.is_not(None))
            .order_by(intervals.c.interval_id.desc())
            .limit(1)
        ).scalar()
    return None if value is None else int(value)


def audit_page(
    store: Store, *, limit: int, cursor: int | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Audit records newest first, with their settlement's state, transaction and block.

    Returns
    -------
    tuple
        Rows (``interval_id``, ``record_hash``, ``record``, ``state``, ``tx_hash``,
        ``block_number``, ``batch_id``) and the next cursor.
    """
    query = (
        select(
            audit.c.interval_id,
            audit.c.record_hash,
            audit.c.record,
            settlements.c.state,
            settlements.c.tx_hash,
            settlements.c.block_number,
            settlements.c.batch_id,
        )
        .select_from(audit.outerjoin(settlements, settlements.c.interval_id == audit.c.interval_id))
        .order_by(audit.c.interval_id.desc())
        .limit(limit)
    )
    if cursor is not None:
        query = query.where(audit.c.interval_id < cursor)
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    return rows, _next_cursor(rows, limit, "interval_id")
