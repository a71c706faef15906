"""What the HTTP API of one site runs on: :class:`Service` and :func:`build_service`.

A :class:`Service` holds the site, its :class:`~controller.wiring.Runtime` (store, cycle,
chain client, accounts), the order intake (:class:`~controller.intake.OrderIntake`), sign-in
(:class:`~controller.auth.Auth`), the event hub of the server-sent events stream
(:class:`~controller.events.EventHub`), the operator's site actions
(:class:`~controller.controls.MarketControls`) and the clock. :func:`controller.api.create_app`
turns it into the FastAPI application; ``peergrid serve`` (:mod:`controller.serve`) runs that
on uvicorn beside the scheduler, in one process.

``site_id`` is the site's name in the API's paths (``/v1/sites/{site_id}/...``): by default
:func:`site_slug` of the site's name (``"PeerGrid demo community (CIGRE LV)"`` ->
``peergrid-demo-community-cigre-lv``).

``chain_lock`` serialises the API's chain reads (balances, escrow) with each other; the
process that runs the cycle should hold it around each tick, as the embedded chain (py-evm)
is not safe to use from two threads at once.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adapters.chain.governance import Governance
from controller.auth import Auth
from controller.config import SiteConfig
from controller.controls import MarketControls
from controller.events import EventHub
from controller.intake import OrderIntake
from controller.wiring import Runtime, build_runtime
from market.domain import ParticipantId


def utc_now() -> datetime:
    """The wall clock, UTC (the service's default clock)."""
    return datetime.now(UTC)


def site_slug(name: str) -> str:
    """The URL form of a site's name: lower case, runs of other characters as one ``-``.

    Parameters
    ----------
    name : str
        The site's name.

    Returns
    -------
    str
        E.g. ``peergrid-demo-community-cigre-lv``; ``site`` for a name without letters or
        digits.
    """
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "site"


@dataclass(eq=False)
class Service:
    """Everything the API of one site needs (see the module docstring)."""

    site: SiteConfig
    runtime: Runtime
    intake: OrderIntake
    auth: Auth
    events: EventHub
    controls: MarketControls
    now: Callable[[], datetime] = utc_now
    site_id: str = ""
    started_at: datetime = field(default_factory=utc_now)
    chain_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    governance: Governance | None = None
    """The community's governance contracts, attached (``/governance``); ``None``: none."""

    def __post_init__(self) -> None:
        if not self.site_id:
            self.site_id = site_slug(self.site.name)

    def close(self) -> None:
        """Close the runtime (store, chain, devices)."""
        self.runtime.close()


def free_escrow(
    runtime: Runtime, chain_lock: threading.RLock
) -> Callable[[ParticipantId], int | None]:
    """A participant's free escrow, the credit check of the intake [token units].

    As the cycle's credit check (:meth:`controller.cycle.Cycle._free_credit`): the escrow
    the contract can still charge (less a pending withdrawal), less what the pending
    settlement intents charge the participant, less a carried debt.

    Parameters
    ----------
    runtime : Runtime
        The site's runtime (store and chain).
    chain_lock : threading.RLock
        Held while the chain is read.

    Returns
    -------
    Callable
        ``participant -> free escrow`` (``None`` without an account or a chain).
    """
    # participant -> (block number, available escrow): the contract's value cannot change
    # without a new block, and reading the block number is ~15x cheaper than the escrow
    # (an eth_call; ~30 ms on py-evm), so each order reads the escrow at most once per block
    # (benchmarks/api.py). A value read after a newer block landed is kept under the older
    # number, which the chain never reports again: never a stale hit.
    seen: dict[ParticipantId, tuple[int, int]] = {}

    def free(participant: ParticipantId) -> int | None:
        if runtime.settler is None:
            return None
        with chain_lock:
            block = runtime.client.block_number()
            cached = seen.get(participant)
            if cached is not None and cached[0] == block:
                available: int | None = cached[1]
            else:
                available = runtime.settler.escrow(participant)
                if available is not None:
                    seen[participant] = (block, int(available))
        if available is None:
            return None
        owed = sum(
            -int(amount)
            for pending in runtime.store.pending_settlements()
            for account, amount in pending.batch.get("amounts", [])
            if account == participant and int(amount) < 0
        )
        debt = int(runtime.store.outstanding_debts().get(participant, 0))
        return int(available) - owed - max(0, debt)

    return free


def build_service(
    site: SiteConfig,
    *,
    runtime: Runtime | None = None,
    now: Callable[[], datetime] = utc_now,
    domain: str = "127.0.0.1:8080",
    uri: str = "http://127.0.0.1:8080",
    site_id: str = "",
    governance: Governance | None = None,
    **runtime_options: Any,  # noqa: ANN401 - build_runtime's keywords, passed through
) -> Service:
    """Build the service of ``site``, reusing :func:`~controller.wiring.build_runtime`.

    Parameters
    ----------
    site : SiteConfig
        The site.
    runtime : Runtime or None
        A runtime already built (the demo's, a test's); ``None`` builds one with
        ``runtime_options``. It must have the chain (addresses, chain id, escrow).
    now : callable
        The clock (UTC) for sign-in, intake and the current interval.
    domain, uri : str
        What sign-in messages must name (EIP-4361 ``domain`` and ``URI``): the host and
        port, and the URL, clients reach the API at.
    site_id : str
        The site's name in the paths; ``""`` uses :func:`site_slug` of ``site.name``.
    governance : Governance or None
        The community's governance, attached; ``None``: the runtime's (the site's
        ``[chain] governance_file`` or ``$PEERGRID_GOVERNANCE``), if any.
    **runtime_options
        Passed to :func:`build_runtime` when ``runtime`` is ``None``.

    Returns
    -------
    Service
        The service; :meth:`Service.close` closes a runtime built here (and one passed in).

    Raises
    ------
    ConfigError
        As :func:`build_runtime`.
    NotWired
        A runtime without the chain.
    """
    rt = runtime if runtime is not None else build_runtime(site, **runtime_options)
    client = rt.client
    accounts = dict(rt.accounts)
    chain_id = client.chain_id()
    settlement = str(client.settlement.address)
    auth = Auth(
        rt.store,
        site,
        accounts,
        domain=domain,
        uri=uri,
        chain_id=chain_id,
        now=now,
        trial=rt.trial,  # demo keys (derive:) name operators and auditors on a trial chain only
    )
    chain_lock = threading.RLock()
    intake = OrderIntake(
        store=rt.store,
        site=site,
        accounts=accounts,
        chain_id=chain_id,
        verifying_contract=settlement,
        now=now,
        escrow=free_escrow(rt, chain_lock),
    )
    controls = rt.cycle.controls  # build_runtime's, replayed from the store
    if controls is None:  # a runtime assembled by hand (tests)
        buses = frozenset(rt.grid.bus_names) if rt.grid is not None else frozenset()
        controls = MarketControls(
            participants=frozenset(p.id for p in site.participants),
            devices=frozenset(d.id for d in site.devices),
            buses=buses | frozenset(p.bus for p in site.participants),
            log=rt.store,
        )
        rt.cycle.controls = controls  # the cycle honours them (controller.controls)
    if governance is None:
        governance = rt.governance
    return Service(
        governance=governance,
        site=site,
        runtime=rt,
        intake=intake,
        auth=auth,
        events=EventHub(),
        controls=controls,
        now=now,
        site_id=site_id,
        started_at=now(),
        chain_lock=chain_lock,
    )
