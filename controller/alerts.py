"""A site's alerts: what an operator must look at now, and a webhook that hears of changes.

:func:`site_alerts` evaluates the rules below on the site's store (a few indexed queries over
the last day) and, when given them, on :class:`ChainFacts` read by :func:`chain_facts` (one
balance, one block and one batched contract call). The operator page, ``peergrid status``
and the webhook show the same list. :class:`AlertWatch` evaluates after each step of
``peergrid run`` / ``peergrid serve`` and hands the list to a :class:`Webhook`, which POSTs
the changes (an alert raised, an alert cleared) in a background thread: a slow or dead
receiver never blocks or breaks the cycle (the step's report is already stored).

Rules (``L`` = the site's interval [s]; "the window" = the last day, :data:`WINDOW_S`, but
not before the first interval the store has a row for):

=================== =========== ================================================================
kind                severity    when
=================== =========== ================================================================
interval_missed     warning     an interval of the window that has ended without being cleared:
                                no row (the controller was not running, or its boundary was
                                skipped), ``abandoned`` (its gate closure passed unattended,
                                or the controller died clearing it), or still ``claimed``
                                after it ended
interval_failed     warning     an interval of the window whose clearing status is not ok
                                (``infeasible``, ``time_limit``, ``solver_error``: grid only),
                                or whose tick failed (``ticks.outcome = failed``)
settlement_pending  warning;    an interval that ended more than ``2 L`` ago and is not
                    critical    settled: an intent, a failed send, or no settlement row yet
                    if a send
                    failed
device_stale        warning;    a device of the site whose readings have not been OK for more
                    critical    than ``2 L``: its first non-OK reading after its last OK one
                    if MISSING  (in the window) is more than ``2 L`` old; UNVERIFIED (its
                    or UNVER-   signed readings fail their check) is critical too
                    IFIED
escrow_low          warning;    a participant's free escrow (escrow less a pending
                    critical    withdrawal, pending intents and a carried debt) below
                    below one   ``escrow_days`` x its typical daily spend: the mean it paid
                    interval's  per settled interval over the last day (at most
                    spend       :data:`SPEND_SAMPLE` intervals) x intervals per day.
                                Participants that paid nothing are skipped
gas_low             warning;    the operator's balance below ``gas_low_wei`` (default 0.05
                    critical    ether, :data:`~controller.config.DEFAULT_GAS_LOW_WEI`)
                    below 1/4
clock_skew          warning     ``rpc`` chains only (below): the chain's latest block is more
                                than ``clock_skew_s`` ahead of the controller's clock, or more
                                than ``clock_skew_s + block_time_s`` behind it
=================== =========== ================================================================

Consecutive intervals (missed, failed, pending) are one alert, named after the first (so a
long outage is one alert whose key does not change while it grows).

**Clock skew and chains that mine on demand.** A block's timestamp is when it was mined. On
a live chain with regular blocks (``rpc``; ``block_time_s``, default 12 s) the latest block
is at most one block time old, so a block from the future means the controller's clock is
behind, and one older than ``clock_skew_s + block_time_s`` means it is ahead (or the chain
stalled; both deserve a look). The ``embedded`` chain and the ``anvil`` node PeerGrid
starts mine a block only when a transaction arrives, run on this machine's clock, and stamp
a burst of blocks ``parent + 1 s`` apart (the demo's trial funding, 53 blocks, puts the
latest block ~49 s in the future): their latest block time says nothing about the
controller's clock, and the rule is off for them (no permanent false alert on the demo).
``block_time_s = 0`` declares an ``rpc`` chain that mines on demand: only a block from the
future is checked then.

**Webhook.** ``[site.alerts] webhook_url`` (http or https). When the set of alerts changes
(keyed by kind and subject; a changed message alone is not a change), the watch POSTs
``{"site", "at", "raised": [...], "cleared": [...], "alerts": [...]}`` (each alert as
:meth:`Alert.to_dict`), with a 5 s timeout, from a daemon thread. A failed delivery is
logged (with the host, never the URL: it may carry a token) and the changes are sent again,
merged with any newer ones, at the next evaluation. A restarted process starts with nothing
delivered, so it raises the alerts that still hold again.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select

from adapters.chain.node import rpc
from controller.config import ChainBackend, SiteConfig
from controller.store import Store, intervals, readings, settlements, ticks
from market.domain import COMMUNITY, GRID, ClearingStatus, ReadingQuality, utc_label

if TYPE_CHECKING:
    from controller.wiring import Runtime

log = logging.getLogger("peergrid.alerts")

WINDOW_S: Final = 86400
"""How far back missed and failed intervals and device readings are looked at [s]."""

SPEND_WINDOW_S: Final = 86400
"""Over how long a participant's typical spend is measured [s]."""

SPEND_SAMPLE: Final = 288
"""At most this many settled intervals (the newest) make the typical spend (a day of 5 min)."""

PENDING_INTERVALS: Final = 2
"""A settlement, a device's bad readings: alert after more than this many intervals."""

WEBHOOK_TIMEOUT_S: Final = 5.0
"""How long one webhook POST may take [s]."""

_OK_STATUSES: Final = frozenset(s.value for s in ClearingStatus if s.is_ok)
_NOT_CLEARED: Final = frozenset({"abandoned", "claimed"})


class AlertKind(enum.StrEnum):
    """What an alert is about (the module docstring's table)."""

    INTERVAL_MISSED = "interval_missed"
    INTERVAL_FAILED = "interval_failed"
    SETTLEMENT_PENDING = "settlement_pending"
    DEVICE_STALE = "device_stale"
    ESCROW_LOW = "escrow_low"
    GAS_LOW = "gas_low"
    CLOCK_SKEW = "clock_skew"


_KIND_ORDER: Final = {kind: rank for rank, kind in enumerate(AlertKind)}


@dataclass(frozen=True, slots=True)
class Alert:
    """One condition that holds now.

    Attributes
    ----------
    kind : AlertKind
        What it is about.
    severity : str
        ``"warning"`` or ``"critical"``.
    subject : str
        What it names: an interval (:func:`~market.domain.utc_label` of its start), a device
        id, a participant id, ``"operator"`` or ``"clock"``.
    message : str
        A sentence for people, with numbers and units.
    since_s : int or None
        When the condition began [Unix s], when known.
    """

    kind: AlertKind
    severity: str
    subject: str
    message: str
    since_s: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the alert across evaluations: (kind, subject)."""
        return (self.kind.value, self.subject)

    def to_dict(self) -> dict[str, Any]:
        """The alert as JSON-ready data (the API, the webhook).

        Returns
        -------
        dict
            ``kind``, ``severity``, ``subject``, ``message``, ``since_s`` [Unix s or None]
            and ``since`` (its ISO 8601 UTC form, or None).
        """
        since = None
        if self.since_s is not None:
            since = datetime.fromtimestamp(self.since_s, UTC).isoformat().replace("+00:00", "Z")
        return {
            "kind": self.kind.value,
            "severity": self.severity,
            "subject": self.subject,
            "message": self.message,
            "since_s": self.since_s,
            "since": since,
        }


@dataclass(frozen=True, slots=True)
class ChainFacts:
    """What the alerts need from the chain, read once per evaluation (:func:`chain_facts`).

    Attributes
    ----------
    operator_balance_wei : int
        The operator account's balance [wei].
    latest_block_time_s : int
        The timestamp of the chain's latest block [Unix s].
    escrow_units : Mapping
        participant id -> free escrow [token base units]: what the contract can still
        charge, less pending settlement intents and a carried debt (the intake's credit
        check, :func:`controller.service.free_escrow`).
    """

    operator_balance_wei: int
    latest_block_time_s: int
    escrow_units: Mapping[str, int]


# ------------------------------------------------------------------------------ the chain


def chain_facts(runtime: Runtime) -> ChainFacts:
    """Read :class:`ChainFacts` from the site's chain (three requests).

    Call it holding the chain lock when the chain is not thread-safe (embedded).

    Parameters
    ----------
    runtime : Runtime
        The site's runtime, built with the chain.

    Returns
    -------
    ChainFacts
        The operator's balance, the latest block's time and every participant's free
        escrow (participants without an account are left out).

    Raises
    ------
    NotWired
        The runtime was built without the chain.
    ChainError
        The node failed.
    """
    client = runtime.client
    w3 = client.w3
    operator = client.operator.address
    balance = int(rpc(lambda: w3.eth.get_balance(operator)))
    block_time = int(rpc(lambda: w3.eth.get_block("latest"))["timestamp"])
    accounts = {
        str(pid): address
        for pid, address in runtime.accounts.items()
        if pid not in {GRID, COMMUNITY} and address
    }
    states = client.account_states(accounts.values()) if accounts else {}
    by_address = {str(address).lower(): state for address, state in states.items()}
    available = {
        pid: int(by_address[address.lower()].available)
        for pid, address in accounts.items()
        if address.lower() in by_address
    }
    owed: dict[str, int] = {}
    for pending in runtime.store.pending_settlements():
        for account, amount in pending.batch.get("amounts", []):
            if int(amount) < 0:
                owed[str(account)] = owed.get(str(account), 0) - int(amount)
    debts = runtime.store.outstanding_debts()
    escrow = {
        pid: value - owed.get(pid, 0) - max(0, int(debts.get(pid, 0)))
        for pid, value in available.items()
    }
    return ChainFacts(
        operator_balance_wei=balance, latest_block_time_s=block_time, escrow_units=escrow
    )


# ------------------------------------------------------------------------------ the rules


def site_alerts(
    store: Store, site: SiteConfig, *, now: datetime, chain: ChainFacts | None
) -> list[Alert]:
    """The alerts of ``site`` at ``now`` (module docstring: the rules).

    Parameters
    ----------
    store : Store
        The site's store.
    site : SiteConfig
        The site (``interval_s`` [s], its devices, ``alerts`` thresholds, chain backend).
    now : datetime
        The time to evaluate at (UTC).
    chain : ChainFacts or None
        The chain's facts; ``None`` skips the escrow, gas and clock rules.

    Returns
    -------
    list of Alert
        Critical first, then by kind (:class:`AlertKind` order) and subject.
    """
    now_s = int(now.timestamp())
    found = [
        *_interval_alerts(store, site, now_s),
        *_settlement_alerts(store, site, now_s),
        *_device_alerts(store, site, now_s),
    ]
    if chain is not None:
        found += _escrow_alerts(store, site, now_s, chain)
        found += _gas_alerts(site, chain)
        found += _clock_alerts(site, chain, now.timestamp())
    return sorted(found, key=lambda a: (a.severity != "critical", _KIND_ORDER[a.kind], a.subject))


def _runs(ids: Iterable[int], step: int) -> list[list[int]]:
    """Sorted ``ids`` cut into runs of consecutive values ``step`` apart."""
    out: list[list[int]] = []
    for i in sorted(set(ids)):
        if out and i - out[-1][-1] == step:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _span(run: Sequence[int], length_s: int) -> str:
    """``2026-06-21T09:00Z`` or ``3 intervals, 2026-06-21T09:00Z to 09:30Z``."""
    if len(run) == 1:
        return utc_label(run[0])
    return f"{len(run)} intervals, {utc_label(run[0])} to {utc_label(run[-1] + length_s)}"


def _minutes(seconds: float) -> str:
    """A duration as people read it: ``45 s``, ``12 min``, ``3.5 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _window_start(store: Store, length_s: int, now_s: int) -> tuple[int, int] | None:
    """The first interval start the window looks at and the store's first interval."""
    with store.engine.connect() as conn:
        first = conn.execute(select(func.min(intervals.c.interval_id))).scalar()
    if first is None:
        return None
    oldest = now_s - WINDOW_S
    aligned = -(-oldest // length_s) * length_s  # the first boundary at or after it
    return max(int(first), aligned), int(first)


def _interval_alerts(store: Store, site: SiteConfig, now_s: int) -> list[Alert]:
    """``interval_missed`` and ``interval_failed`` over the window."""
    length = site.interval_s
    window = _window_start(store, length, now_s)
    if window is None:
        return []
    lo, first_row = window
    current = now_s - now_s % length  # the start of the interval containing now
    with store.engine.connect() as conn:
        rows = {
            int(r.interval_id): (str(r.status), str(r.reason or ""))
            for r in conn.execute(
                select(intervals.c.interval_id, intervals.c.status, intervals.c.reason).where(
                    intervals.c.interval_id >= lo
                )
            )
        }
        tick_rows = {
            int(r.boundary): (str(r.outcome), str(r.detail or ""))
            for r in conn.execute(
                select(ticks.c.boundary, ticks.c.outcome, ticks.c.detail)
                .where(ticks.c.boundary >= lo)
                .where(ticks.c.outcome.in_(("missed", "failed", "crashed")))
            )
        }
    missed: dict[int, str] = {}
    for start in range(lo, current, length):  # ended intervals
        status, reason = rows.get(start, ("", ""))
        if not status:
            outcome, detail = tick_rows.get(start, ("", ""))
            missed[start] = f"{outcome}: {detail}" if outcome else "no clearing recorded"
        elif status in _NOT_CLEARED:
            missed[start] = reason or "claimed but never cleared"
    failed: dict[int, str] = {
        start: f"{status} ({reason})" if reason else status
        for start, (status, reason) in rows.items()
        if status not in _OK_STATUSES and status not in _NOT_CLEARED
    }
    for boundary, (outcome, detail) in tick_rows.items():
        if outcome == "failed" and boundary not in failed and boundary not in missed:
            failed[boundary] = f"its tick failed: {detail}"
    # a run cut by the window's start (older than a day) is named after its last interval,
    # which stays put while the window slides over the run's start
    clipped = lo if lo > first_row else None
    out: list[Alert] = []
    for kind, found, what in (
        (AlertKind.INTERVAL_MISSED, missed, "not cleared"),
        (AlertKind.INTERVAL_FAILED, failed, "clearing failed"),
    ):
        for run in _runs(found, length):
            cut = run[0] == clipped
            out.append(
                Alert(
                    kind,
                    "warning",
                    utc_label(run[-1] if cut else run[0]),
                    f"{what} ({_span(run, length)}{', and before' if cut else ''}; grid "
                    f"only): {found[run[0]]}",
                    run[0],
                )
            )
    return out


def _settlement_alerts(store: Store, site: SiteConfig, now_s: int) -> list[Alert]:
    """``settlement_pending``: intervals ended more than 2 intervals ago and not settled."""
    length = site.interval_s
    due = now_s - PENDING_INTERVALS * length  # an interval ending before this is overdue
    pending: dict[int, tuple[str, str]] = {}
    with store.engine.connect() as conn:
        for r in conn.execute(
            select(
                settlements.c.interval_id,
                settlements.c.state,
                settlements.c.error,
                intervals.c.length_s,
            )
            .select_from(
                settlements.outerjoin(
                    intervals, intervals.c.interval_id == settlements.c.interval_id
                )
            )
            .where(settlements.c.state != "settled")
        ):
            end = int(r.interval_id) + int(r.length_s or length)
            if end < due:
                pending[int(r.interval_id)] = (str(r.state), str(r.error or ""))
        settled = select(settlements.c.interval_id)
        for r in conn.execute(
            select(intervals.c.interval_id)
            .where(intervals.c.result.is_not(None))
            .where(intervals.c.interval_id + intervals.c.length_s < due)
            .where(intervals.c.interval_id.not_in(settled))
        ):
            pending[int(r.interval_id)] = ("unsettled", "no settlement recorded yet")
    out: list[Alert] = []
    for run in _runs(pending, length):
        states = [pending[i] for i in run]
        failed = [error for state, error in states if state == "failed"]
        why = (
            f"the last send failed: {failed[-1]}"
            if failed
            else ("intent recorded, not yet on-chain" if states[0][0] == "intent" else states[0][1])
        )
        overdue = now_s - (run[0] + length)
        out.append(
            Alert(
                AlertKind.SETTLEMENT_PENDING,
                "critical" if failed else "warning",
                utc_label(run[0]),
                f"settlement pending for {_minutes(overdue)} ({_span(run, length)}; more than "
                f"{PENDING_INTERVALS} intervals): {why}",
                run[0] + length,
            )
        )
    return out


def _device_alerts(store: Store, site: SiteConfig, now_s: int) -> list[Alert]:
    """``device_stale``: a device's readings not OK for more than 2 intervals."""
    lo = now_s - WINDOW_S
    wanted = {str(d.id) for d in site.devices}
    if not wanted:
        return []
    with store.engine.connect() as conn:
        last_ok = (
            select(readings.c.device_id, func.max(readings.c.boundary).label("ok_at"))
            .where(readings.c.boundary >= lo)
            .where(readings.c.quality == ReadingQuality.OK.value)
            .group_by(readings.c.device_id)
            .subquery()
        )
        bad = conn.execute(
            select(
                readings.c.device_id,
                func.min(readings.c.boundary).label("first"),
                func.max(readings.c.boundary).label("last"),
                func.count().label("n"),
            )
            .select_from(readings.outerjoin(last_ok, last_ok.c.device_id == readings.c.device_id))
            .where(readings.c.boundary >= lo)
            .where(readings.c.quality != ReadingQuality.OK.value)
            .where((last_ok.c.ok_at.is_(None)) | (readings.c.boundary > last_ok.c.ok_at))
            .group_by(readings.c.device_id)
        ).all()
        runs = {
            str(r.device_id): (int(r.first), int(r.last), int(r.n))
            for r in bad
            if str(r.device_id) in wanted
            and now_s - int(r.first) > PENDING_INTERVALS * site.interval_s
        }
        latest: dict[str, tuple[str, str]] = {}
        for device, (_, last, _) in runs.items():
            row = conn.execute(
                select(readings.c.quality, readings.c.reason)
                .where(readings.c.boundary == last)
                .where(readings.c.device_id == device)
            ).first()
            if row is not None:
                latest[device] = (str(row.quality), str(row.reason or ""))
    out: list[Alert] = []
    for device, (first, _, n) in sorted(runs.items()):
        quality, reason = latest.get(device, (ReadingQuality.MISSING.value, ""))
        out.append(
            Alert(
                AlertKind.DEVICE_STALE,
                # a dead meter, or one whose signed readings fail: money is settled without it
                "critical"
                if quality in {ReadingQuality.MISSING.value, ReadingQuality.UNVERIFIED.value}
                else "warning",
                device,
                f"{quality.upper()}: {n} readings not OK since {utc_label(first)} "
                f"({_minutes(now_s - first)})" + (f": {reason}" if reason else ""),
                first,
            )
        )
    return out


def typical_spend(store: Store, site: SiteConfig, now_s: int) -> dict[str, float]:
    """What each participant paid per interval over the last day, on average [token units].

    The mean over the settled (or intended) intervals of :data:`SPEND_WINDOW_S` (at most
    the newest :data:`SPEND_SAMPLE`), an interval it paid nothing in counting as 0;
    participants that paid nothing are left out.

    Parameters
    ----------
    store : Store
        The site's store (settlement batches: ``amounts`` < 0 are payments).
    site : SiteConfig
        The site.
    now_s : int
        The time [Unix s].

    Returns
    -------
    dict
        participant id -> mean payment per interval [token base units].
    """
    with store.engine.connect() as conn:
        batches = [
            r.batch
            for r in conn.execute(
                select(settlements.c.batch)
                .where(settlements.c.interval_id >= now_s - SPEND_WINDOW_S)
                .where(settlements.c.interval_id < now_s)
                .order_by(settlements.c.interval_id.desc())
                .limit(SPEND_SAMPLE)
            )
        ]
    if not batches:
        return {}
    paid: dict[str, int] = {}
    for batch in batches:
        for account, amount in (batch or {}).get("amounts", []):
            if int(amount) < 0 and str(account) not in {GRID, COMMUNITY}:
                paid[str(account)] = paid.get(str(account), 0) - int(amount)
    wanted = {str(p.id) for p in site.participants}
    return {p: total / len(batches) for p, total in paid.items() if p in wanted}


def _escrow_alerts(store: Store, site: SiteConfig, now_s: int, chain: ChainFacts) -> list[Alert]:
    """``escrow_low``: free escrow below ``escrow_days`` of the typical daily spend."""
    per_day = 86400 / site.interval_s
    days = site.alerts.escrow_days
    out: list[Alert] = []
    for participant, mean in sorted(typical_spend(store, site, now_s).items()):
        free = chain.escrow_units.get(participant)
        if free is None:
            continue
        need = mean * per_day * days
        if free < need:
            out.append(
                Alert(
                    AlertKind.ESCROW_LOW,
                    "critical" if free < mean else "warning",
                    participant,
                    f"free escrow {free} token units is below {days:g} day(s) of its typical "
                    f"spend ({need:.0f} token units: {mean:.0f} per interval x "
                    f"{per_day * days:.0f} intervals)",
                )
            )
    return out


def _gas_alerts(site: SiteConfig, chain: ChainFacts) -> list[Alert]:
    """``gas_low``: the operator's balance below ``gas_low_wei``."""
    threshold = site.alerts.gas_low_wei
    balance = chain.operator_balance_wei
    if balance >= threshold:
        return []
    return [
        Alert(
            AlertKind.GAS_LOW,
            "critical" if balance < threshold / 4 else "warning",
            "operator",
            f"the operator's gas balance {balance / 10**18:.6f} ether ({balance} wei) is below "
            f"{threshold / 10**18:.6f} ether: settlements stop when it runs out",
        )
    ]


def _clock_alerts(site: SiteConfig, chain: ChainFacts, now_s: float) -> list[Alert]:
    """``clock_skew``: the controller's clock against an ``rpc`` chain's latest block."""
    if site.chain.backend is not ChainBackend.RPC:
        return []  # blocks mined on demand on this machine's clock (module docstring)
    skew = site.alerts.clock_skew_s
    block = chain.latest_block_time_s
    ahead = block - now_s  # > 0: the block is from the controller's future
    if ahead > skew:
        message = (
            f"the chain's latest block is {ahead:.1f} s ahead of the controller's clock "
            f"(more than {skew:g} s): the controller's clock is slow"
        )
    elif site.alerts.block_time_s and -ahead > skew + site.alerts.block_time_s:
        message = (
            f"the chain's latest block is {-ahead:.1f} s old (more than {skew:g} s beyond the "
            f"{site.alerts.block_time_s} s block time): the controller's clock is fast, or the "
            "chain has stalled"
        )
    else:
        return []
    return [Alert(AlertKind.CLOCK_SKEW, "warning", "clock", message)]


def format_alerts(alerts: Sequence[Alert]) -> list[str]:
    """One line per alert, for the terminal (``peergrid status``, ``peergrid run``).

    Parameters
    ----------
    alerts : sequence of Alert
        The alerts.

    Returns
    -------
    list of str
        ``CRITICAL device_stale bob-meter: MISSING: ...``; ``["no alerts"]`` when empty.
    """
    if not alerts:
        return ["no alerts"]
    return [f"{a.severity.upper():8} {a.kind.value} {a.subject}: {a.message}" for a in alerts]


# ------------------------------------------------------------------------------ the webhook


def safe_url(url: str) -> str:
    """What may be logged of a URL that can carry a secret: its scheme and host[:port].

    Parameters
    ----------
    url : str
        The URL.

    Returns
    -------
    str
        ``https://hooks.example.org`` (no user, path, query or fragment).
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


class _Redact(logging.Filter):
    """Replaces a secret URL in the records of a logger (httpx logs each request's URL)."""

    def __init__(self, url: str, shown: str) -> None:
        super().__init__()
        parts = urlsplit(url)
        secret_parts = [url, url.rstrip("/"), parts.path, parts.query]
        secret_parts += [parts.username or "", parts.password or ""]
        self.secrets = sorted({s for s in secret_parts if s and s != "/"}, key=len, reverse=True)
        self.shown = shown

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(s in text for s in self.secrets):
            for secret in self.secrets:
                text = text.replace(secret, self.shown if secret.startswith("http") else "***")
            record.msg, record.args = text, None
        return True


class Webhook:
    """POSTs a site's alert changes to ``url`` as JSON, in a daemon thread (module docstring).

    :meth:`update` never blocks: it records the newest list and wakes the sender. The sender
    compares it with the last list the receiver accepted (a 2xx answer) and, if the set of
    keys differs, POSTs the raised and cleared alerts and the whole list. A failure is logged
    with the host only; the next :meth:`update` tries again with the changes since the last
    accepted list.

    Parameters
    ----------
    url : str
        The receiver (``http(s)://``); may carry a token: it is never logged.
    site : str
        The site's name, sent with each POST.
    timeout_s : float
        One POST's timeout [s].
    transport : httpx.BaseTransport or None
        The HTTP transport (``None``: the network).
    now : Callable or None
        The clock (UTC) for the payload's ``at``.
    """

    def __init__(
        self,
        url: str,
        site: str,
        *,
        timeout_s: float = WEBHOOK_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.site = site
        self.host = safe_url(url)
        self._url = url
        self._now = now if now is not None else (lambda: datetime.now(UTC))
        self._client = httpx.Client(timeout=timeout_s, transport=transport)
        self._redact = _Redact(url, self.host)
        logging.getLogger("httpx").addFilter(self._redact)  # it logs each request's URL
        self._lock = threading.Condition()
        self._wanted: tuple[Alert, ...] | None = None
        self._delivered: dict[tuple[str, str], Alert] = {}
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.deliveries = 0
        """POSTs the receiver accepted."""
        self.failures = 0
        """POSTs that failed (an error or a non-2xx answer)."""

    def __repr__(self) -> str:
        return f"Webhook({self.host}, site={self.site!r})"

    def update(self, alerts: Sequence[Alert]) -> None:
        """Hand the current alerts over; the changes are sent in the background.

        Parameters
        ----------
        alerts : sequence of Alert
            Every alert that holds now.
        """
        with self._lock:
            if self._closed:
                return
            self._wanted = tuple(alerts)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="alerts-webhook", daemon=True
                )
                self._thread.start()
            self._lock.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is waiting to be sent or being sent.

        Parameters
        ----------
        timeout_s : float
            How long to wait at most [s].

        Returns
        -------
        bool
            True if idle (delivered, or failed and waiting for the next :meth:`update`).
        """
        with self._lock:
            return self._lock.wait_for(
                lambda: self._wanted is None and not self._busy, timeout=timeout_s
            )

    def close(self, wait_s: float = 0.0) -> None:
        """Stop sending (after up to ``wait_s`` [s] for a POST in progress) and release.

        Parameters
        ----------
        wait_s : float
            How long to let pending changes go out first [s].
        """
        if wait_s > 0:
            self.wait_idle(wait_s)
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        logging.getLogger("httpx").removeFilter(self._redact)
        if self._thread is not None:
            self._thread.join(0.1)
        if self._thread is None or not self._thread.is_alive():
            self._client.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._wanted is not None or self._closed)
                if self._closed:
                    return
                wanted, self._wanted = self._wanted or (), None
                self._busy = True
            try:
                self._send(wanted)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _send(self, alerts: tuple[Alert, ...]) -> None:
        current = {a.key: a for a in alerts}
        if current.keys() == self._delivered.keys():
            self._delivered = current  # messages may change; the set did not
            return
        raised = [a.to_dict() for key, a in current.items() if key not in self._delivered]
        cleared = [a.to_dict() for key, a in self._delivered.items() if key not in current]
        payload = {
            "site": self.site,
            "at": self._now().isoformat().replace("+00:00", "Z"),
            "raised": raised,
            "cleared": cleared,
            "alerts": [a.to_dict() for a in alerts],
        }
        try:
            answer = self._client.post(self._url, json=payload)
        except httpx.HTTPError as exc:
            self.failures += 1
            log.warning(  # the exception's text can hold the URL: only its kind is logged
                "alert webhook %s failed (%s); retried at the next evaluation",
                self.host,
                type(exc).__name__,
            )
            return
        if not answer.is_success:
            self.failures += 1
            log.warning(
                "alert webhook %s answered %d; retried at the next evaluation",
                self.host,
                answer.status_code,
            )
            return
        self.deliveries += 1
        self._delivered = current
        log.info("alert webhook %s: %d raised, %d cleared", self.host, len(raised), len(cleared))


# ------------------------------------------------------------------------------ the watch


@dataclass(eq=False)
class AlertWatch:
    """Evaluates a site's alerts after each step and hands them to the webhook.

    Call it (``watch()``) after each step of the cycle; it never raises (a failure to
    evaluate is logged and the previous list kept). :attr:`latest` holds the last list and
    :attr:`evaluated_at` when it was made. Changes are logged (raised: warning; cleared:
    info).

    Parameters
    ----------
    runtime : Runtime
        The site's runtime (its ``site``, ``store`` and chain).
    now : Callable
        The clock (UTC).
    lock : AbstractContextManager or None
        Held while the chain is read (the API's chain lock on the embedded chain).
    webhook : Webhook or None
        Where changes go (``None``: nowhere; :func:`watch_site` builds it from the site).
    """

    runtime: Runtime
    now: Callable[[], datetime]
    lock: AbstractContextManager[object] | None = None
    webhook: Webhook | None = None
    latest: tuple[Alert, ...] = ()
    evaluated_at: datetime | None = None
    _keys: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def __call__(self, _report: object = None) -> tuple[Alert, ...]:
        """Evaluate now, log the changes, hand the list to the webhook; the list.

        Parameters
        ----------
        _report : object
            Ignored (so the watch can be a report callback).
        """
        runtime = self.runtime
        at = self.now()
        try:
            facts = None
            if runtime.settler is not None:
                with self.lock if self.lock is not None else nullcontext():
                    facts = chain_facts(runtime)
            found = tuple(site_alerts(runtime.store, runtime.site, now=at, chain=facts))
        except Exception:  # boundary: alerts must never break the cycle; the list is kept
            log.exception("evaluating the alerts failed (the step itself is stored)")
            return self.latest
        keys = {a.key for a in found}
        for a in found:
            if a.key not in self._keys:
                log.warning("alert %s %s: %s", a.kind.value, a.subject, a.message)
        for kind, subject in sorted(self._keys - keys):
            log.info("alert cleared: %s %s", kind, subject)
        self._keys = keys
        self.latest, self.evaluated_at = found, at
        if self.webhook is not None:
            self.webhook.update(found)
        return found

    def close(self, wait_s: float = 0.0) -> None:
        """Close the webhook (after up to ``wait_s`` [s] for pending changes).

        Parameters
        ----------
        wait_s : float
            How long to let pending changes go out first [s].
        """
        if self.webhook is not None:
            self.webhook.close(wait_s)


def watch_site(
    runtime: Runtime,
    *,
    now: Callable[[], datetime] | None = None,
    lock: AbstractContextManager[object] | None = None,
) -> AlertWatch:
    """The :class:`AlertWatch` of a runtime's site, with its ``[site.alerts]`` webhook.

    Parameters
    ----------
    runtime : Runtime
        The site's runtime.
    now : Callable or None
        The clock (UTC); ``None``: the wall clock.
    lock : AbstractContextManager or None
        Held while the chain is read.

    Returns
    -------
    AlertWatch
        Close it when the runtime closes.
    """
    clock = now if now is not None else (lambda: datetime.now(UTC))
    url = runtime.site.alerts.webhook_url
    webhook = Webhook(url, runtime.site.name, now=clock) if url else None
    if webhook is not None:
        log.info("alerts go to the webhook at %s", webhook.host)
    return AlertWatch(runtime, clock, lock=lock, webhook=webhook)


__all__ = [
    "Alert",
    "AlertKind",
    "AlertWatch",
    "ChainFacts",
    "Webhook",
    "chain_facts",
    "format_alerts",
    "safe_url",
    "site_alerts",
    "typical_spend",
    "watch_site",
]
