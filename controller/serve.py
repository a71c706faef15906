"""``peergrid serve``: a site's real-time cycle and its HTTP API, in one process.

``peergrid serve --site FILE [--host 127.0.0.1] [--port 8080] [--dev-interval-s N]``
(:func:`serve_site`) builds the site's runtime as ``peergrid run`` does (the same
single-instance lock on the database, the same start-up: stale ticks closed, pending
settlements resolved, the grace window), then runs

* the cycle's events (:class:`controller.scheduler.CycleThread`: ``tick`` at each boundary,
  or ``clear`` at each gate closure and ``boundary`` at each boundary when the site's
  ``gate_closure_s > 0``) in a background thread, publishing each interval's result and each
  settlement to the service's event hub (:mod:`controller.events`) after the step stored
  them, then evaluating the site's alerts (:func:`controller.alerts.watch_site`: changes
  logged and POSTed to ``[site.alerts] webhook_url`` in the background);
* the HTTP API (:func:`controller.api.create_app` on :func:`controller.service.build_service`)
  on uvicorn in the main thread, on a socket bound before anything starts (a port in use is
  an error at once; ``--port 0`` takes a free port, logged as ``serving http://HOST:PORT``).

``peergrid serve --site FILE --front`` serves the API only, in front of a fleet whose
workers run the site (:mod:`controller.fleet`): no site lock, no devices, no cycle. Signed
orders and the operator's actions go to the site's store, which the workers' steps read
(orders under the intake's database lock, :mod:`controller.intake`); reads come from the
same store and chain. Its event stream carries no interval events (the steps run in other
processes): pages show new intervals when reloaded.

``peergrid serve --demo`` (:func:`serve_demo`) does the same for the demo site: its Modbus
simulators on 127.0.0.1 in real time (a thread moves their clocks with the wall clock) and a
trial chain (embedded, funded as ``peergrid demo`` funds it), with the community's
governance deployed, voted on once and attached (:func:`demo_community`). The embedded
chain's state is lost at exit, so the demo's database (in ``--out``) starts afresh at every
start.

**Stopping** (SIGTERM or Ctrl-C): the server stops accepting connections and finishes the
requests in progress (open event streams are closed after :data:`GRACEFUL_S`); the cycle
finishes its current step (a stop is seen between steps only, never inside one), up to
``stop_timeout_s``; then the runtime is closed, the lock released and the process exits 0. A
second signal, or a step still running after ``stop_timeout_s``, abandons the step: the
process exits at once (code 0, logged), exactly as after a crash, which the next start
recovers (the boundary's tick is closed as crashed, a claimed interval as abandoned, a
settlement intent is resolved by asking the chain first). Orders are persisted before they
are acknowledged, so nothing acknowledged is lost either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Final
from urllib.parse import urlsplit

from adapters.chain.governance import Support
from controller.alerts import watch_site
from controller.config import ChainBackend, SiteConfig
from controller.cycle import IntervalReport
from controller.errors import AlreadyRunning, ConfigError
from controller.events import EventHub, interval_event, settlement_event
from controller.runner import close_stale_ticks, dev_interval, lock_path, site_guard, summary
from controller.scheduler import CycleThread, Report, single_instance
from controller.wiring import Runtime, build_runtime

log = logging.getLogger("peergrid.serve")

GRACEFUL_S: Final = 5
"""How long the server waits for open requests and event streams when stopping [s]."""

STOP_TIMEOUT_S: Final = 120.0
"""How long a stop waits for the cycle's current step before abandoning it [s]."""

EXIT_BIND_FAILED: Final = 2
"""Exit code when the address cannot be bound (e.g. the port is in use)."""

EXIT_CYCLE_FAILED: Final = 3
"""Exit code when the cycle's loop stopped on an error (the server is stopped with it)."""


def publisher(
    events: EventHub, watch: Callable[[], object] | None = None
) -> Callable[[Report], None]:
    """The cycle's report callback that publishes to ``events`` (and logs a summary).

    Parameters
    ----------
    events : EventHub
        The service's hub.
    watch : Callable or None
        Called after each report is published: the site's
        :class:`~controller.alerts.AlertWatch` (evaluates the alerts, hands them to the
        webhook; it never raises).

    Returns
    -------
    Callable
        ``report -> None``: an ``interval`` event for each clearing (at its gate closure, or
        in a tick), then a ``settlement`` event for each settlement the tick sent or failed;
        then ``watch()``.
    """

    def publish(report: Report) -> None:
        log.info("%s", summary(report))
        if isinstance(report, IntervalReport):
            events.publish(interval_event(report))
        else:
            if report.cleared is not None:
                events.publish(interval_event(report.cleared))
            for settled in report.settlements:
                events.publish(settlement_event(settled))
        if watch is not None:
            watch()

    return publish


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: a free one).

    Parameters
    ----------
    host : str
        The address (IPv4, or IPv6 with a ``:``).
    port : int
        The port; 0 takes a free one.

    Returns
    -------
    socket.socket
        The bound, listening socket.

    Raises
    ------
    OSError
        The address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@dataclasses.dataclass(eq=False)
class _Stopper:
    """What SIGTERM/SIGINT do while serving: stop the server, then the cycle; twice: abandon."""

    cycle: CycleThread
    server_stop: Callable[[], None] = lambda: None
    signals: int = 0

    def __call__(self, sig: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals == 1:
            log.info("%s: stopping (the current step finishes first)", signal.Signals(sig).name)
            self.server_stop()
            self.cycle.request_stop()
            return
        log.warning("%s again: abandoning the current step", signal.Signals(sig).name)

    @property
    def abandon(self) -> bool:
        return self.signals > 1


@contextlib.contextmanager
def _handlers(handler: _Stopper) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_service(
    site: SiteConfig,
    runtime: Runtime,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    stop_timeout_s: float = STOP_TIMEOUT_S,
    now: Callable[[], datetime] | None = None,
    public_url: str | None = None,
    front: bool = False,
) -> int:
    """Serve ``runtime``'s site until SIGTERM or Ctrl-C (module docstring); the exit code.

    Call it holding the site's single-instance lock, in the main thread (``front``: without
    it; the API only, in front of a fleet's workers).

    Parameters
    ----------
    site : SiteConfig
        The site (as run: with a development interval already applied).
    runtime : Runtime
        Its runtime (store, cycle, chain); closed by the caller.
    host : str
        The address to listen on.
    port : int
        The port (0: a free one, logged).
    stop_timeout_s : float
        How long a stop waits for the current step [s].
    now : Callable or None
        The clock (UTC) of the cycle and the API; ``None``: the wall clock.
    public_url : str or None
        The URL clients reach the API at (behind a reverse proxy or TLS, e.g.
        ``https://grid.example.org``): sign-in messages must name it (:func:`public_origin`);
        ``None``: ``http://HOST:PORT`` as bound.
    front : bool
        Serve the API without running the cycle (``peergrid serve --front``): the site's
        steps run elsewhere (``peergrid worker``); signed orders and site actions go to the
        shared store, which the steps read.

    Returns
    -------
    int
        0; :data:`EXIT_BIND_FAILED` if the address cannot be bound;
        :data:`EXIT_CYCLE_FAILED` if the cycle's loop stopped on an error (logged with its
        traceback; the server is stopped with it).
    """
    import uvicorn  # noqa: PLC0415 - only the serving process needs it

    from controller.api import create_app  # noqa: PLC0415
    from controller.service import build_service  # noqa: PLC0415

    clock = now if now is not None else (lambda: datetime.now(UTC))
    try:
        sock = bind(host, port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)  # noqa: TRY400 - the whole story
        return EXIT_BIND_FAILED
    with sock:
        bound = sock.getsockname()[1]
        authority = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        domain, uri = (authority, f"http://{authority}")
        if public_url is not None:
            domain, uri = public_origin(public_url)
        if front:
            return _serve_front(site, runtime, sock, clock, domain, uri, authority)
        close_stale_ticks(runtime.store)
        service = build_service(site, runtime=runtime, now=clock, domain=domain, uri=uri)
        # py-evm is not safe from two threads: the API's chain reads wait for the cycle's step
        embedded = site.chain.backend is ChainBackend.EMBEDDED
        server: uvicorn.Server | None = None

        def cycle_failed(_exc: BaseException) -> None:  # no API without its cycle
            if server is not None:
                server.should_exit = True

        # the alerts after each step; the chain lock as the API's chain reads take it
        watch = watch_site(runtime, now=clock, lock=service.chain_lock)
        cycle = CycleThread(
            runtime.cycle,
            publisher(service.events, watch),
            now=clock,
            lock=service.chain_lock if embedded else None,
            on_failure=cycle_failed,
        )
        app = create_app(service)
        # the feeder map's geometry is built once per server: build it now, in the background,
        # so the first visitor's map does not wait for it (0.1-0.4 s on a 9,099-bus grid)
        threading.Thread(target=app.state.dashboard.warm, name="peergrid-warm", daemon=True).start()
        config = uvicorn.Config(
            app,
            log_config=None,
            timeout_graceful_shutdown=GRACEFUL_S,
            access_log=False,
        )
        server = uvicorn.Server(config)
        stopper = _Stopper(cycle, server_stop=lambda: setattr(server, "should_exit", True))
        with _handlers(stopper):
            cycle.start()
            log.info(
                "serving http://%s (site %s, /v1/sites/%s)", authority, site.name, service.site_id
            )
            # uvicorn's own handlers replace ours while it serves; it calls ours once it has
            # stopped (it re-raises the signals it caught), which then stops the cycle
            server.run(sockets=[sock])
            stopper.server_stop = lambda: None
            if not stopper.signals:  # the server ended on its own (an error): stop anyway
                cycle.request_stop()
            log.info("server stopped; waiting for the cycle's current step")
            deadline = time.monotonic() + stop_timeout_s
            while not cycle.join(0.2):
                if stopper.abandon or time.monotonic() > deadline:
                    log.warning(
                        "abandoning the cycle's current step: the next start recovers it "
                        "as after a crash"
                    )
                    logging.shutdown()
                    os._exit(0)
        watch.close(wait_s=1.0)
    if cycle.failure is not None:
        log.error("stopped: the cycle failed (%s)", cycle.failure)
        return EXIT_CYCLE_FAILED
    log.info("stopped")
    return 0


def _serve_front(
    site: SiteConfig,
    runtime: Runtime,
    sock: socket.socket,
    clock: Callable[[], datetime],
    domain: str,
    uri: str,
    authority: str,
) -> int:
    """The API only, until SIGTERM or Ctrl-C (uvicorn's own graceful stop); exit code 0."""
    import uvicorn  # noqa: PLC0415

    from controller.api import create_app  # noqa: PLC0415
    from controller.service import build_service  # noqa: PLC0415

    service = build_service(site, runtime=runtime, now=clock, domain=domain, uri=uri)
    app = create_app(service)
    threading.Thread(target=app.state.dashboard.warm, name="peergrid-warm", daemon=True).start()
    config = uvicorn.Config(
        app, log_config=None, timeout_graceful_shutdown=GRACEFUL_S, access_log=False
    )
    log.info(
        "serving http://%s (site %s, /v1/sites/%s) in front: the cycle runs in the workers",
        authority,
        site.name,
        service.site_id,
    )
    # uvicorn stops gracefully on SIGTERM/SIGINT, then re-raises the signal: to this no-op,
    # so the process exits 0 as `serve` does
    quiet = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, old in quiet.items():
            signal.signal(sig, old)
    log.info("stopped")
    return 0


def public_origin(url: str) -> tuple[str, str]:
    """The EIP-4361 ``domain`` and ``URI`` of a public URL (``--public-url``).

    Parameters
    ----------
    url : str
        ``http(s)://host[:port]``, without a path, query or user.

    Returns
    -------
    (str, str)
        The authority (``host[:port]``) and the URL as given without a final ``/``.

    Raises
    ------
    ConfigError
        Not such a URL.
    """
    parts = urlsplit(url.strip())
    bad = (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or parts.path not in {"", "/"}
        or parts.query
        or parts.fragment
        or parts.username is not None
    )
    if bad:
        msg = f"--public-url {url!r}: give http(s)://HOST[:PORT], without a path or user"
        raise ConfigError(msg)
    return parts.netloc, f"{parts.scheme}://{parts.netloc}"


def serve_site(
    site: SiteConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    dev_interval_s: int | None = None,
    stop_timeout_s: float = STOP_TIMEOUT_S,
    public_url: str | None = None,
    front: bool = False,
) -> int:
    """``peergrid serve --site``: run ``site``'s cycle and API (module docstring).

    Parameters
    ----------
    site : SiteConfig
        The site.
    host, port
        Where the API listens (``port`` 0: a free one).
    dev_interval_s : int or None
        A development interval [s] (:func:`controller.runner.dev_interval`).
    stop_timeout_s : float
        How long a stop waits for the current step [s].
    public_url : str or None
        The URL clients reach the API at (see :func:`run_service`).
    front : bool
        The API only, in front of a fleet's workers (``--front``): no site lock, no devices,
        no cycle; the store is the site's schema of the fleet's PostgreSQL database.

    Returns
    -------
    int
        0; 1 when another controller holds the site's lock; :data:`EXIT_BIND_FAILED` when
        the address cannot be bound.

    Raises
    ------
    ConfigError
        The site cannot be wired, ``dev_interval_s`` is not a valid interval, or
        ``public_url`` is not an ``http(s)://HOST[:PORT]`` URL.
    """
    if public_url is not None:
        public_origin(public_url)  # a bad URL is refused before anything starts
    if dev_interval_s is not None:
        site = dev_interval(site, dev_interval_s)
    guard = None if front else site_guard(site.database)
    try:
        with build_runtime(
            site, guard=guard, devices=not front, reconcile_nonce=not front
        ) as runtime:
            return run_service(
                site,
                runtime,
                host=host,
                port=port,
                stop_timeout_s=stop_timeout_s,
                public_url=public_url,
                front=front,
            )
    except AlreadyRunning as exc:
        log.error("%s", exc)  # noqa: TRY400 - the message is the whole story
        return 1


DEMO_DATABASE: Final = "peergrid-serve.sqlite"
"""The demo service's database file, in its ``--out`` folder."""


@contextlib.contextmanager
def realtime_clock(advance: Callable[[datetime], None], period_s: float = 0.2) -> Iterator[None]:
    """Call ``advance(now)`` every ``period_s`` [s] in a thread while the block runs.

    Parameters
    ----------
    advance : Callable
        Moves the simulators' clocks to the wall clock (UTC).
    period_s : float
        The period [s].
    """
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(period_s):
            advance(datetime.now(UTC))

    thread = threading.Thread(target=run, name="sim-clock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


OPEN_PROPOSAL: Final = (
    "grace",
    "Lower the community fee on local sales to 0.5 %",
    "community_fee_bps",
    50,
)
"""The proposal the served demo leaves open: (proposer, description, parameter, value)."""

OPEN_BALLOTS: Final = {"alice": "FOR", "bob": "AGAINST", "carol": "FOR"}
"""Votes already cast on :data:`OPEN_PROPOSAL` (the other members may vote on the page)."""


def demo_community(runtime: Runtime) -> None:
    """Give the served demo its community (issue 16), as ``peergrid demo`` does, attached.

    The community's contracts are deployed with the demo's participants as members and
    handed over (:func:`controller.demo_vote.set_up_community`); the demo's vote runs from
    proposal to execution (:func:`controller.demo_vote.hold_vote`: a higher reward and a 1 %
    community fee); then :data:`OPEN_PROPOSAL` is proposed and :data:`OPEN_BALLOTS` cast, so
    the governance page has a vote to take part in. The cycle reads the governed terms at
    each clearing and lifts an expired pause, and the API serves the governance
    (``/governance``). About a second on the embedded chain.

    The vote moves the trial chain's clock two days on (voting period and timelock delay):
    the chain's times (votes, withdrawals, pauses) run that far ahead of the wall clock.
    """
    from controller.demo_vote import hold_vote, set_up_community  # noqa: PLC0415 - --demo only

    client = runtime.client
    accounts = {str(p): address for p, address in runtime.accounts.items()}
    community = set_up_community(client, runtime.site, accounts)
    gov = community.gov
    hold_vote(community)
    proposer, description, name, value = OPEN_PROPOSAL
    members = community.members
    pid, _ = gov.propose(members[proposer], [gov.set_parameter(name, value)], description)
    for participant, choice in OPEN_BALLOTS.items():
        gov.vote(members[participant], pid, Support[choice])
    runtime.cycle.governed = gov.governed_values  # read at each clearing
    runtime.cycle.lift_expired_pause = functools.partial(gov.lift_if_expired, client.operator)
    runtime.governance = gov  # build_service serves it
    log.info("community governance attached: %d members, proposal %d open", len(members), pid)


def serve_demo(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    dev_interval_s: int | None = None,
    out_dir: Path = Path("peergrid-serve-demo"),
    stop_timeout_s: float = STOP_TIMEOUT_S,
    public_url: str | None = None,
) -> int:
    """``peergrid serve --demo``: the demo site, its simulators and trial chain, served.

    Parameters
    ----------
    host, port
        Where the API listens.
    dev_interval_s : int or None
        A development interval [s] (e.g. 30 to see a result every half minute).
    out_dir : Path
        The folder of the demo's database (:data:`DEMO_DATABASE`, made afresh at each start)
        and its lock.
    stop_timeout_s : float
        How long a stop waits for the current step [s].
    public_url : str or None
        The URL clients reach the API at (see :func:`run_service`).

    Returns
    -------
    int
        As :func:`serve_site`.

    Raises
    ------
    ConfigError
        ``dev_interval_s`` is not a valid interval, ``out_dir`` cannot be used, or
        ``public_url`` is not an ``http(s)://HOST[:PORT]`` URL.
    """
    if public_url is not None:
        public_origin(public_url)  # a bad URL is refused before anything starts
    from controller.demo import (  # noqa: PLC0415 - the demo's modules only for --demo
        DEMO_TRIAL,
        ProfileForecaster,
        demo_site,
        enroll_device_keys,
        start_simulators,
    )
    from controller.userfiles import output_folder  # noqa: PLC0415

    site = demo_site()
    if dev_interval_s is not None:
        site = dev_interval(site, dev_interval_s)
    output_folder(out_dir, "the demo service's folder")
    db = (out_dir / DEMO_DATABASE).resolve()
    site = dataclasses.replace(site, database=f"sqlite:///{db.as_posix()}")
    try:
        with single_instance(lock_path(site.database)):
            for suffix in ("", "-wal", "-shm"):  # the embedded chain starts afresh: so does this
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            sims, forecasts, site = start_simulators(site, datetime.now(UTC))
            try:

                def advance(now: datetime) -> None:
                    for sim in sims.values():
                        if sim.running:
                            sim.advance(now)

                with (
                    realtime_clock(advance),
                    build_runtime(
                        site, trial=DEMO_TRIAL, forecaster=ProfileForecaster(forecasts)
                    ) as runtime,
                ):
                    # the simulators sign: their keys, registered by their participants
                    runtime.cycle.device_keys = enroll_device_keys(
                        runtime.client, site, runtime.accounts, sims
                    )
                    demo_community(runtime)
                    return run_service(
                        site,
                        runtime,
                        host=host,
                        port=port,
                        stop_timeout_s=stop_timeout_s,
                        public_url=public_url,
                    )
            finally:
                for sim in sims.values():
                    sim.stop()
    except AlreadyRunning as exc:
        log.error("%s", exc)  # noqa: TRY400 - the message is the whole story
        return 1
