"""Real-browser test kit: Debian's Chromium driven by Playwright, a real ``peergrid serve``.

The pieces (the fixtures in ``tests/web/conftest.py`` put them together):

* :func:`chromium_path` / :func:`launch`: Debian's ``/usr/bin/chromium`` (``apt-get install
  chromium``; ``scripts/test`` installs it), never a browser Playwright downloads. Missing,
  the tests FAIL (:class:`BrowserMissing`), they do not skip. The browser runs as if the
  machine had no network: every host name but ``localhost`` resolves to nothing
  (``--host-resolver-rules``), so a page that needs a CDN, a web font or a map tile breaks here
  as it would offline;
* :class:`Served`: one ``python -m controller serve --demo --port 0 --dev-interval-s N``
  process (demo site, its Modbus simulators and the embedded chain), its URL read from the log
  line ``serving http://HOST:PORT``; stopped with SIGTERM, its exit code checked;
* :class:`PageLog` / :class:`BrowserPage`: a page in its own browser context at a named
  :data:`VIEWPORTS` size that records console errors, uncaught page errors, failed requests,
  responses >= 400 and requests leaving the served origin; :meth:`BrowserPage.assert_clean`
  raises :class:`PageNotClean` listing them (minus those the test declared expected with
  :meth:`PageLog.expect`); screenshots go to :func:`artifacts_dir`;
* :class:`TestWallet`: an injected EIP-1193 provider (``window.ethereum``, also announced by
  EIP-6963) whose accounts and signatures come from Python: a demo key
  (:func:`adapters.chain.derive_account`), EIP-191 ``personal_sign`` and EIP-712
  ``eth_signTypedData_v4`` with eth-account. The server verifies what it signs;
* :data:`SIGN_IN_JS`: Sign-In with Ethereum (EIP-4361) from a page, through the wallet and the
  real API: nonce, message (as :func:`adapters.chain.siwe.format_message` writes it),
  ``personal_sign``, ``auth/signin``, ``auth/me``;
* :func:`api_token`: the same sign-in from Python (for checking through the API what a page
  did).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Frame,
    Page,
    Playwright,
    Request,
    Response,
)

from adapters.chain import derive_account
from controller.client import ApiRefused, PeerGridClient

REPO = Path(__file__).resolve().parents[2]

CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium (package ``chromium``); ``PEERGRID_CHROMIUM`` names another binary."""

VIEWPORTS: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}
"""Named browser-context options: the sizes every page is tested and photographed at [CSS px]."""

CHROMIUM_ARGS = (
    "--no-sandbox",  # CI and the dev machines run as root, where Chromium's sandbox refuses
    "--disable-dev-shm-usage",  # small /dev/shm in containers
    "--disable-gpu",
    # no network but this machine: a CDN, web font or map tile fails here as offline
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Command-line flags of every test browser."""

SERVE_START_S = 240.0
"""How long ``peergrid serve --demo`` may take to print its URL [s] (about 11 s here)."""

SERVE_STOP_S = 120.0
"""How long it may take to stop after SIGTERM [s] (the current step finishes first)."""

OPERATOR = "demo-operator"
"""The demo site's operator (``derive:demo-operator``)."""

AUDITOR = "demo-auditor"
"""The demo site's auditor (``derive:demo-auditor``); prosumers are its participant ids."""

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


class BrowserMissing(AssertionError):
    """Chromium is not installed where the tests look for it (a failure, never a skip)."""


class PageNotClean(AssertionError):
    """A page logged console errors, threw, or had failed or refused requests."""


class UnknownViewport(KeyError):
    """A viewport name that is not in :data:`VIEWPORTS`."""


class SignInRefused(AssertionError):
    """The API refused a test's sign-in."""


class ServeFailed(AssertionError):
    """``peergrid serve`` did not start, or did not stop cleanly."""


# ----------------------------------------------------------------------------- the browser


def chromium_path() -> str:
    """The Chromium binary the tests drive (``PEERGRID_CHROMIUM`` or :data:`CHROMIUM`).

    Raises
    ------
    BrowserMissing
        It is not an executable file; the message says how to install it.
    """
    path = os.environ.get("PEERGRID_CHROMIUM", CHROMIUM)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        found = shutil.which("chromium")
        hint = f" (a chromium is on PATH at {found}: set PEERGRID_CHROMIUM)" if found else ""
        msg = (
            f"no Chromium at {path}{hint}: the browser tests need Debian's chromium, "
            "`apt-get install -y chromium` (./scripts/test installs it); Playwright never "
            "downloads a browser here"
        )
        raise BrowserMissing(msg)
    return path


def launch(playwright: Playwright) -> Browser:
    """Start a headless Debian Chromium with :data:`CHROMIUM_ARGS`."""
    return playwright.chromium.launch(
        executable_path=chromium_path(), headless=True, args=list(CHROMIUM_ARGS)
    )


def artifacts_dir() -> Path:
    """Where screenshots go: ``PEERGRID_ARTIFACTS`` or ``<repo>/artifacts/browser`` (made)."""
    folder = Path(os.environ.get("PEERGRID_ARTIFACTS", REPO / "artifacts" / "browser"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:150]


# ----------------------------------------------------------------------------- the server


@dataclass
class Served:
    """A running ``peergrid serve --demo`` and what a test needs of it.

    Attributes
    ----------
    base_url : str
        ``http://127.0.0.1:PORT`` (no trailing slash).
    site_id : str
        The demo site's id in ``/v1/sites/{site_id}`` (from ``GET /health``).
    process : subprocess.Popen
        The server process.
    log_path : Path
        Its stdout and stderr.
    site : dict
        ``GET /v1/sites/{site_id}``: chain id, EIP-712 domain and types, sign-in fields,
        interval and gate closure [s].
    """

    base_url: str
    site_id: str
    process: subprocess.Popen[bytes]
    log_path: Path
    site: dict[str, Any] = field(default_factory=dict)

    @property
    def site_url(self) -> str:
        """``{base_url}/v1/sites/{site_id}``."""
        return f"{self.base_url}/v1/sites/{self.site_id}"

    @property
    def chain_id(self) -> int:
        """The served chain's id (EIP-155)."""
        return int(self.site["chain_id"])

    def log(self) -> str:
        """The server's output so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout_s:.0f} s waiting for {what}"
            raise ServeFailed(msg)
        time.sleep(0.1)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERGRID_")}
    if "PEERGRID_ANVIL" in os.environ:
        env["PEERGRID_ANVIL"] = os.environ["PEERGRID_ANVIL"]
    return env


@contextmanager
def serve_demo(workdir: Path, interval_s: int) -> Iterator[Served]:
    """Run ``python -m controller -v serve --demo`` on a free port for the ``with`` block.

    Parameters
    ----------
    workdir : Path
        Its working folder: the demo's database (``out/``) and the log (``serve.log``).
    interval_s : int
        ``--dev-interval-s``: the development interval [s] (>= 2, divides a day).

    Yields
    ------
    Served
        The running server (up: ``GET /health`` answered).

    Raises
    ------
    ServeFailed
        As :func:`serve`.
    """
    tail = ["--demo", "--dev-interval-s", str(interval_s), "--out", str(workdir / "out")]
    with serve(workdir, tail) as served:
        yield served


@contextmanager
def serve(workdir: Path, tail: list[str], start_s: float = SERVE_START_S) -> Iterator[Served]:
    """Run ``python -m controller -v serve --port 0 <tail>`` for the ``with`` block.

    Parameters
    ----------
    workdir : Path
        Its working folder (the log: ``serve.log``).
    tail : list of str
        The rest of the command line (``--demo ...`` or ``--site FILE``).
    start_s : float
        How long it may take to print its URL [s].

    Raises
    ------
    ServeFailed
        It did not print its URL in ``start_s`` s, or at the end of the block it did not
        exit with code 0 within :data:`SERVE_STOP_S` s of SIGTERM.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "serve.log"
    argv = [sys.executable, "-m", "controller", "-v", "serve", "--port", "0", *tail]
    with log_path.open("wb") as sink:
        proc = subprocess.Popen(  # noqa: S603 - our own command line
            argv, stdout=sink, stderr=subprocess.STDOUT, env=_clean_env(), cwd=workdir
        )

    def text() -> str:
        return log_path.read_text(encoding="utf-8", errors="replace")

    try:
        _wait(lambda: "serving http://" in text() or proc.poll() is not None, start_s,
              "peergrid serve to print its URL")  # fmt: skip
        if proc.poll() is not None:
            msg = f"peergrid serve exited with {proc.returncode}:\n{text()[-3000:]}"
            raise ServeFailed(msg)
        base_url = text().split("serving ", 1)[1].split()[0].rstrip("/")
        health = httpx.get(f"{base_url}/health", timeout=30).json()
        served = Served(base_url, str(health["site_id"]), proc, log_path)
        served.site = httpx.get(served.site_url, timeout=30).json()
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code: int | None
        try:
            code = proc.wait(SERVE_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            code = None
    if code != 0:
        msg = f"peergrid serve ended with {code} after SIGTERM (expected 0):\n{text()[-3000:]}"
        raise ServeFailed(msg)


def api_token(served: Served, label: str) -> str:
    """Sign in through the API from Python as the demo key of ``label``; its bearer token.

    With the project's own client (:class:`controller.client.PeerGridClient`), which writes
    the EIP-4361 message from what ``GET /v1/sites/{site}`` names.
    """
    with PeerGridClient(served.base_url, served.site_id) as client:
        try:
            client.sign_in(derive_account(label))
        except ApiRefused as exc:
            msg = f"sign-in as {label} refused: {exc}"
            raise SignInRefused(msg) from None
        return str(client.token)


# ----------------------------------------------------------------------------- pages


@dataclass
class PageLog:
    """What went wrong on a page, as it happened.

    ``console_errors`` are console messages of type ``error``; ``page_errors`` uncaught
    exceptions; ``failed_requests`` requests that got no response (``url: why``);
    ``bad_responses`` responses with status >= 400 (``STATUS METHOD url``);
    ``external_requests`` requests to a host that is not this machine (the page must work
    offline: no CDN, font or tile server).
    """

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    expected: list[tuple[re.Pattern[str], int | None]] = field(default_factory=list)
    navigations: int = 0
    """Documents the main frame has asked for (a request still open then is cut off)."""
    _started: dict[int, int] = field(default_factory=dict, repr=False)
    leaving: bool = False
    """A main-frame navigation was asked for and its document has not committed yet."""

    def on_navigated(self, frame: Frame) -> None:
        """The main frame committed a new document."""
        if frame.parent_frame is None:
            self.leaving = False

    def expect(self, url_pattern: str, status: int | None = None) -> None:
        """Declare a refused or failed request the test expects (not a problem).

        Parameters
        ----------
        url_pattern : str
            A regular expression searched in the request's URL.
        status : int or None
            Only a response with this status; ``None``: any status >= 400 or a failure.
        """
        self.expected.append((re.compile(url_pattern), status))

    def _expected(self, url: str, status: int | None) -> bool:
        return any(
            pattern.search(url) and (want is None or want == status)
            for pattern, want in self.expected
        )

    def on_console(self, message: ConsoleMessage) -> None:
        """Record a console message of type ``error`` (unless it reports an expected URL)."""
        if message.type != "error":
            return
        url = str(message.location.get("url", ""))
        if message.text.startswith("Failed to load resource") and any(
            pattern.search(url) for pattern, _ in self.expected
        ):
            return  # Chromium's own line about a refused request the test expects
        self.console_errors.append(f"{message.text} (at {url or '?'})")

    def on_page_error(self, error: Exception) -> None:
        """Record an uncaught exception in the page."""
        self.page_errors.append(str(error))

    def on_request(self, request: Request, origin: str) -> None:
        """Record a request leaving this machine (``origin``'s host is the served one)."""
        if request.is_navigation_request() and request.frame.parent_frame is None:
            self.navigations += 1  # a new document: what the old one had open is cut off
            self.leaving = True  # until the new document commits, requests are the old one's
            self._started[id(request)] = self.navigations
        else:
            self._started[id(request)] = self.navigations - (1 if self.leaving else 0)
        parts = urlsplit(request.url)
        if parts.scheme in {"http", "https", "ws", "wss"}:
            host = parts.hostname or ""
            if host not in LOCAL_HOSTS and host != urlsplit(origin).hostname:
                self.external_requests.append(request.url)

    def on_request_failed(self, request: Request) -> None:
        """Record a request that got no response.

        Not a request the browser cut off because the page it belonged to was left
        (``net::ERR_ABORTED`` after a navigation: an open event stream, a fetch in flight).
        """
        if self._expected(request.url, None):
            return
        left = self._started.get(id(request), self.navigations) < self.navigations
        if left and request.failure == "net::ERR_ABORTED":
            return
        self.failed_requests.append(f"{request.method} {request.url}: {request.failure}")

    def on_response(self, response: Response) -> None:
        """Record a response with status >= 400."""
        if response.status >= 400 and not self._expected(response.url, response.status):
            self.bad_responses.append(f"{response.status} {response.request.method} {response.url}")

    def problems(self) -> list[str]:
        """Every recorded problem, one line each (empty: the page is clean)."""
        out: list[str] = []
        for kind, items in (
            ("console error", self.console_errors),
            ("page error", self.page_errors),
            ("failed request", self.failed_requests),
            ("response", self.bad_responses),
            ("request off this machine", self.external_requests),
        ):
            out += [f"{kind}: {item}" for item in items]
        return out


@dataclass
class BrowserPage:
    """A page in its own browser context, its :class:`PageLog`, and where its shots go.

    Attributes
    ----------
    page : playwright.sync_api.Page
        The page (drive it with Playwright's API).
    log : PageLog
        What went wrong on it so far.
    viewport : str
        A key of :data:`VIEWPORTS`.
    name : str
        The file-name stem of its screenshots (test name and viewport).
    """

    page: Page
    context: BrowserContext
    log: PageLog
    viewport: str
    name: str
    shots: list[Path] = field(default_factory=list)

    def assert_clean(self) -> None:
        """Fail listing every console error, page error and failed/refused/external request.

        Raises
        ------
        PageNotClean
            Something was recorded (expected requests aside).
        """
        problems = self.log.problems()
        if problems:
            msg = f"{self.page.url} ({self.viewport}) is not clean:\n  " + "\n  ".join(problems)
            raise PageNotClean(msg)

    def screenshot(self, label: str = "") -> Path:
        """Save a full-page PNG as ``<artifacts>/<test>-<viewport>[-label].png``."""
        stem = _safe(self.name if not label else f"{self.name}-{label}")
        path = artifacts_dir() / f"{stem}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path


def open_page(
    browser: Browser, origin: str, viewport: str, name: str, wallet: TestWallet | None = None
) -> BrowserPage:
    """A fresh context and page at ``viewport`` that records what goes wrong.

    Parameters
    ----------
    browser : Browser
        The test browser (:func:`launch`).
    origin : str
        The served base URL (requests elsewhere are recorded as off-machine).
    viewport : str
        ``"desktop"`` or ``"phone"`` (:data:`VIEWPORTS`).
    name : str
        The screenshots' file-name stem.
    wallet : TestWallet or None
        Injected as ``window.ethereum`` before any page script runs.
    """
    if viewport not in VIEWPORTS:
        msg = f"viewport {viewport!r}: one of {sorted(VIEWPORTS)}"
        raise UnknownViewport(msg)
    context = browser.new_context(**VIEWPORTS[viewport])
    page = context.new_page()
    log = PageLog()
    page.on("console", log.on_console)
    page.on("pageerror", log.on_page_error)
    page.on("request", lambda request: log.on_request(request, origin))
    page.on("requestfailed", log.on_request_failed)
    page.on("framenavigated", log.on_navigated)
    page.on("response", log.on_response)
    if wallet is not None:
        wallet.install(page)
    return BrowserPage(page, context, log, viewport, name)


# ----------------------------------------------------------------------------- the wallet


USER_REJECTED = 4001
"""EIP-1193: the user rejected the request."""

UNAUTHORIZED = 4100
"""EIP-1193: the method/account has not been authorized by the user."""

UNSUPPORTED_METHOD = 4200
"""EIP-1193: the provider does not support the method."""

WALLET_JS = """
(() => {
  const listeners = {};
  class ProviderRpcError extends Error {
    constructor(code, message, data) { super(message); this.code = code; this.data = data; }
  }
  const provider = {
    isMetaMask: false,
    isPeerGridTestWallet: true,
    async request(args) {
      if (!args || typeof args.method !== 'string') {
        throw new ProviderRpcError(-32600, 'request({method, params}) expected');
      }
      const reply = await window.__peergridWallet(args.method, args.params ?? []);
      if (reply.error) throw new ProviderRpcError(reply.error.code, reply.error.message);
      return reply.result;
    },
    on(event, handler) { (listeners[event] ||= []).push(handler); return provider; },
    removeListener(event, handler) {
      listeners[event] = (listeners[event] || []).filter((h) => h !== handler);
      return provider;
    },
  };
  window.__peergridWalletEmit = (event, payload) => {
    for (const h of listeners[event] || []) h(payload);
  };
  Object.defineProperty(window, 'ethereum', { value: provider, configurable: true });
  const info = { uuid: '6f1c2a8e-0000-4000-8000-peergridtest', name: 'PeerGrid test wallet',
                 icon: 'data:image/svg+xml,<svg xmlns="http://www.w3.org/2000/svg"/>',
                 rdns: 'org.peergrid.testwallet' };
  const announce = () => window.dispatchEvent(new CustomEvent('eip6963:announceProvider',
    { detail: Object.freeze({ info, provider }) }));
  window.addEventListener('eip6963:requestProvider', announce);
  announce();
})();
"""
"""The injected provider: ``request`` goes to Python (``window.__peergridWallet``)."""


def signable_typed_data(typed: dict[str, Any]) -> dict[str, Any]:
    """``typed`` with only the types its ``primaryType`` uses (and ``EIP712Domain``).

    A wallet (MetaMask's eth-sig-util) hashes ``primaryType`` and the types it refers to and
    ignores any other type in ``types`` (the site's ``eip712_types`` lists Order,
    StandingOrder and Cancel together); eth-account's ``encode_typed_data`` instead derives the
    primary type from ``types`` and refuses several roots. Unknown ``primaryType``: unchanged
    (eth-account then refuses it, as a wallet would).
    """
    types: dict[str, Any] = typed.get("types", {})
    primary = typed.get("primaryType")
    if primary not in types:
        return typed
    used: set[str] = set()
    todo = [primary]
    while todo:
        name = todo.pop()
        if name in used or name not in types:
            continue
        used.add(name)
        todo += [str(f["type"]).split("[", 1)[0] for f in types[name]]
    kept = {k: v for k, v in types.items() if k in used or k == "EIP712Domain"}
    return {**typed, "types": kept}


class WalletError(Exception):
    """An EIP-1193 error the wallet answers with (``code`` and ``message``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class TestWallet:
    """A browser wallet that signs with a demo key in Python (EIP-1193 methods below).

        ``eth_requestAccounts`` connects and answers ``[address]`` (refused with 4001 while
        :attr:`rejecting`); ``eth_accounts`` answers ``[address]`` once connected (``[]`` before,
        as MetaMask does; ``connected=True`` starts connected); ``eth_chainId`` the served chain id
        in hex; ``personal_sign`` ``[message, address]`` signs EIP-191 (a ``0x`` hex message is
        bytes, anything else UTF-8 text); ``eth_signTypedData_v4`` ``[address, typedDataJSON]``
        signs EIP-712 (eth-account's ``encode_typed_data(full_message=...)`` of the types
    ``primaryType`` uses, :func:`signable_typed_data`). A signing call for
        another address is refused with 4100; every other method with 4200. Every call is in
        :attr:`calls`, what was signed in :attr:`signed`.
    """

    __test__ = False  # not a test class, despite its name

    label: str
    chain_id: int
    connected: bool = False
    rejecting: bool = False
    calls: list[tuple[str, Any]] = field(default_factory=list)
    signed: list[tuple[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.account = derive_account(self.label)

    @property
    def address(self) -> str:
        """The wallet's account (EIP-55)."""
        return str(self.account.address)

    def install(self, page: Page) -> None:
        """Inject ``window.ethereum`` into ``page`` (before its next navigation)."""
        page.expose_function("__peergridWallet", self.handle)
        page.add_init_script(WALLET_JS)

    def emit(self, page: Page, event: str, payload: Any) -> None:
        """Fire a provider event (``accountsChanged``, ``chainChanged`` ...) to the page."""
        page.evaluate("([e, p]) => window.__peergridWalletEmit(e, p)", [event, payload])

    def handle(self, method: str, params: Any) -> dict[str, Any]:
        """Answer one ``request``: ``{"result": ...}`` or ``{"error": {code, message}}``."""
        self.calls.append((method, params))
        try:
            return {"result": self._answer(method, list(params or []))}
        except WalletError as exc:
            return {"error": {"code": exc.code, "message": str(exc)}}

    def _check_user(self, what: str) -> None:
        if self.rejecting:
            msg = f"User rejected the request ({what})."
            raise WalletError(USER_REJECTED, msg)

    def _check_address(self, address: Any) -> None:
        if not isinstance(address, str) or address.lower() != self.address.lower():
            msg = f"the wallet holds {self.address}, not {address!r}"
            raise WalletError(UNAUTHORIZED, msg)

    def _answer(self, method: str, params: list[Any]) -> Any:
        if method == "eth_requestAccounts":
            self._check_user(method)
            self.connected = True
            return [self.address]
        if method == "eth_accounts":
            return [self.address] if self.connected else []
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "personal_sign":
            if len(params) < 2:
                raise WalletError(-32602, "personal_sign takes [message, address]")
            message, address = params[0], params[1]
            self._check_address(address)
            self._check_user(method)
            if isinstance(message, str) and re.fullmatch(r"0x([0-9a-fA-F]{2})*", message):
                signable = encode_defunct(primitive=bytes.fromhex(message[2:]))
                text: Any = bytes.fromhex(message[2:]).decode("utf-8", errors="replace")
            else:
                signable = encode_defunct(text=str(message))
                text = str(message)
            signed = Account.sign_message(signable, private_key=self.account.key)
            self.signed.append((method, text))
            return "0x" + bytes(signed.signature).hex()
        if method == "eth_signTypedData_v4":
            if len(params) < 2:
                raise WalletError(-32602, "eth_signTypedData_v4 takes [address, typedData]")
            address, data = params[0], params[1]
            self._check_address(address)
            typed = json.loads(data) if isinstance(data, str) else data
            self._check_user(method)
            signed = Account.sign_message(
                encode_typed_data(full_message=signable_typed_data(typed)),
                private_key=self.account.key,
            )
            self.signed.append((method, typed))
            return "0x" + bytes(signed.signature).hex()
        msg = f"the test wallet does not support {method}"
        raise WalletError(UNSUPPORTED_METHOD, msg)


NewPage = Callable[..., BrowserPage]
"""The ``new_page`` fixture: ``new_page(viewport="desktop", *, wallet=None)``."""

MakeWallet = Callable[..., TestWallet]
"""The ``wallet`` fixture: ``wallet(label, *, connected=False)``."""

# ----------------------------------------------------------------------------- sign-in JS

SIGN_IN_JS = """
async ([sitePath]) => {
  const site = await (await fetch(sitePath)).json();
  const [address] = await window.ethereum.request({ method: 'eth_requestAccounts' });
  const chainHex = await window.ethereum.request({ method: 'eth_chainId' });
  if (parseInt(chainHex, 16) !== site.chain_id) throw new Error('wallet on the wrong chain');
  const { nonce } = await (await fetch(sitePath + '/auth/nonce', { method: 'POST' })).json();
  const issuedAt = new Date(site.now_s * 1000).toISOString().replace(/\\.\\d{3}Z$/, 'Z');
  const message = [
    site.signin_domain + ' wants you to sign in with your Ethereum account:', address, '',
    site.signin_statement, '',
    'URI: ' + site.signin_uri, 'Version: 1', 'Chain ID: ' + site.chain_id,
    'Nonce: ' + nonce, 'Issued At: ' + issuedAt,
  ].join('\\n');
  const signature = await window.ethereum.request(
    { method: 'personal_sign', params: [message, address] });
  const signin = await fetch(sitePath + '/auth/signin', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ message, signature }) });
  const session = await signin.json();
  if (!signin.ok) return { status: signin.status, body: session, message };
  const me = await (await fetch(sitePath + '/auth/me',
    { headers: { Authorization: 'Bearer ' + session.token } })).json();
  return { status: signin.status, token: session.token, me, message };
}
"""
"""EIP-4361 sign-in from a page of the served origin: ``page.evaluate(SIGN_IN_JS, [path])``
with ``path = "/v1/sites/<site>"``; answers ``{status, token, me, message}`` (or
``{status, body, message}`` when refused). Issued At is the service's clock (``now_s``)."""
