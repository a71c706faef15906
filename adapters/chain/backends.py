"""Chain backends: where a :class:`~web3.Web3` connection comes from.

=============  ==========================================================================
backend        what :func:`connect` does
=============  ==========================================================================
``embedded``   an in-process py-evm chain (eth-tester), ephemeral: demo and tests
``anvil``      starts a local anvil node (:class:`AnvilNode`) on a free 127.0.0.1 port,
               its state kept in ``state_path`` across restarts, stopped by ``close()``
``rpc``        any EVM JSON-RPC endpoint (``http(s)://`` URL or ``.ipc`` path): a production chain
=============  ==========================================================================

The controller calls :func:`connect` and hands ``connection.w3`` to
:class:`~adapters.chain.client.ChainClient`; it never imports web3 itself.

The anvil binary is ``$PEERGRID_ANVIL`` if set, else ``.tools/node_modules/.bin/anvil``
(``scripts/test`` installs npm ``@foundry-rs/anvil`` there), else ``anvil`` on ``PATH``. The npm
package's ``bin`` is a node wrapper around a native binary; :func:`find_anvil` runs the native
binary directly when it finds it, so that signals reach the node itself and no node process is
left in between.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import requests
from web3 import HTTPProvider, IPCProvider, Web3
from web3.exceptions import Web3Exception
from web3.types import RPCEndpoint

from adapters.chain.embedded import embedded_web3
from adapters.chain.errors import ChainError, InvalidArgument, NodeUnavailable

BACKENDS: Final = ("embedded", "anvil", "rpc")
"""Names accepted by :func:`connect`."""

ANVIL_ENV: Final = "PEERGRID_ANVIL"
DEFAULT_ANVIL: Final = Path(".tools/node_modules/.bin/anvil")

_NPM_PLATFORMS: Final = {
    ("linux", "x86_64"): "linux-amd64",
    ("linux", "amd64"): "linux-amd64",
    ("linux", "aarch64"): "linux-arm64",
    ("linux", "arm64"): "linux-arm64",
    ("darwin", "x86_64"): "darwin-amd64",
    ("darwin", "arm64"): "darwin-arm64",
    ("win32", "amd64"): "win32-amd64",
    ("win32", "x86_64"): "win32-amd64",
}


def rpc_web3(url: str, *, timeout_s: float = 30.0) -> Web3:
    """A :class:`~web3.Web3` on the JSON-RPC endpoint ``url`` (not contacted yet).

    ``url`` is an ``http(s)://`` URL or the path of a node's ``.ipc`` socket. (web3 8 talks
    WebSocket only asynchronously; use the node's HTTP endpoint.)

    Parameters
    ----------
    url : str
        The endpoint.
    timeout_s : float
        Request timeout [s] (whole seconds, at least 1, for IPC).

    Returns
    -------
    Web3
        The connection.

    Raises
    ------
    InvalidArgument
        If ``url`` is neither (a :class:`ValueError`).
    """
    if url.startswith(("http://", "https://")):
        session = _http_session(url)
        return Web3(HTTPProvider(url, request_kwargs={"timeout": timeout_s}, session=session))
    if url.endswith(".ipc"):
        return Web3(IPCProvider(url, timeout=max(1, round(timeout_s))))
    msg = f"rpc_url must be an http(s):// URL or an .ipc path, got {url!r}"
    raise InvalidArgument(msg)


_SESSIONS: dict[str, requests.Session] = {}
_SESSIONS_LOCK = threading.Lock()


def _http_session(url: str) -> requests.Session:
    """The process's HTTP session to ``url``, its environment's settings read once.

    ``requests`` reads the proxy variables (scanning the whole environment) before every
    request of a session that trusts the environment: a millisecond a request, a third of a
    fleet site's settlement step when its worker's environment holds hundreds of variables.
    Here the environment is read once, when the first connection to ``url`` is made
    (proxies and ``NO_PROXY`` for this URL, ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``; not
    ``.netrc``, which a node's URL does not use). Every connection to ``url`` in this
    process then shares the session and its connection pool, in every thread, as web3
    shares one per thread (urllib3's pool is thread-safe; JSON-RPC sets no cookies).
    """
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(url)
        if session is None:
            session = requests.Session()
            found = session.merge_environment_settings(url, {}, None, None, None)
            session.trust_env = False
            session.proxies.update(found.get("proxies") or {})
            if found.get("verify") is not None:
                session.verify = found["verify"]
            if found.get("cert") is not None:
                session.cert = found["cert"]
            _SESSIONS[url] = session
        return session


def find_anvil(path: str | os.PathLike[str] | None = None) -> Path:
    """The anvil executable to run.

    Parameters
    ----------
    path : path or None
        Explicit location; default ``$PEERGRID_ANVIL``, then ``.tools/node_modules/.bin/anvil``
        under the working directory, then ``anvil`` on ``PATH``.

    Returns
    -------
    Path
        The native binary next to an npm wrapper if there is one, else the file found.

    Raises
    ------
    NodeUnavailable
        If no anvil is found.
    """
    candidates: list[Path] = []
    if path is not None:
        candidates.append(Path(path))
    else:
        if os.environ.get(ANVIL_ENV):
            candidates.append(Path(os.environ[ANVIL_ENV]))
        candidates.append(Path.cwd() / DEFAULT_ANVIL)
        on_path = shutil.which("anvil")
        if on_path:
            candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file():
            return _native_anvil(candidate)
    tried = ", ".join(str(c) for c in candidates) or "nothing"
    msg = (
        f"anvil not found (tried {tried}); install it with "
        "`npm install --prefix .tools @foundry-rs/anvil@1.7.1` or set PEERGRID_ANVIL"
    )
    raise NodeUnavailable(msg)


def _native_anvil(path: Path) -> Path:
    """The native binary behind npm's node wrapper (``bin.mjs``), or ``path`` itself."""
    real = path.resolve()
    try:
        head = real.read_bytes()[:64]
    except OSError:
        return path
    if not head.startswith(b"#!") or b"node" not in head:
        return path
    suffix = _NPM_PLATFORMS.get((sys.platform, platform.machine().lower()))
    if suffix is None:
        return path
    exe = "anvil.exe" if sys.platform == "win32" else "anvil"
    # <prefix>/node_modules/@foundry-rs/anvil/bin.mjs -> <prefix>/node_modules/@foundry-rs/
    native = real.parent.parent / f"anvil-{suffix}" / "bin" / exe
    return native if native.is_file() else path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now.

    Parameters
    ----------
    host : str
        The interface to bind.

    Returns
    -------
    int
        The port (another process may take it before it is used).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM the child when the parent dies, so anvil saves its state and exits."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


MAX_PERSISTED_STATES = 64
"""Old blocks' states anvil keeps on disk (beside those it keeps in memory): reads at a block
older than both fail, which no PeerGrid check does (they read events, and the latest state)."""


@dataclass(eq=False)
class AnvilNode:
    """A local anvil node started and stopped by PeerGrid (a context manager).

    Parameters
    ----------
    state_path : path or None
        anvil's ``--state`` file: loaded at start if it exists, written at a clean stop (and
        every ``state_interval_s``). ``None`` keeps the chain in memory only.
    binary : path or None
        The anvil executable (default: :func:`find_anvil`).
    port : int or None
        Port on 127.0.0.1 (default: a free one).
    block_time_s : float or None
        Mine a block every ``block_time_s`` seconds; ``None`` mines one per transaction.
    state_interval_s : int or None
        Also write the state file every this many seconds [s], so a node killed hard loses
        at most that much.
    chain_id : int
        The chain id (anvil's default 31337).
    prune_history : int or None
        Keep only this many recent states, in memory, none on disk, as a full node does (geth
        keeps 128): calls at older blocks fail. ``None`` keeps every state, old ones on disk
        (anvil's default, what reorganisation tests and audits of old blocks need).
    extra_args : sequence of str
        More anvil arguments.
    start_timeout_s : float
        Longest wait for the node to answer [s].

    Notes
    -----
    On Linux the node gets SIGTERM when the process that started it dies (``PR_SET_PDEATHSIG``),
    so even a controller killed with SIGKILL leaves no orphan node behind and the node writes
    its state file on the way out. The kernel ties this to the *thread* that started the node:
    start it from a thread that lives as long as the node (the main thread).
    """

    state_path: Path | None = None
    binary: Path | None = None
    port: int | None = None
    block_time_s: float | None = None
    state_interval_s: int | None = None
    chain_id: int = 31337
    prune_history: int | None = None
    extra_args: Sequence[str] = ()
    start_timeout_s: float = 20.0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: Path | None = field(default=None, init=False, repr=False)
    _cache: Path | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """The node's HTTP JSON-RPC URL."""
        if self.port is None:
            msg = "anvil is not started"
            raise ChainError(msg)
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the node process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the node, while it runs."""
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        """The command line that starts the node."""
        binary = self.binary if self.binary is not None else find_anvil()
        port = self.port if self.port is not None else 0
        cmd = [
            str(binary),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--chain-id",
            str(self.chain_id),
        ]
        if self.state_path is not None:
            cmd += ["--state", str(self.state_path)]
        if self.state_interval_s is not None:
            cmd += ["--state-interval", str(self.state_interval_s)]
        if self.block_time_s is not None:
            cmd += ["--block-time", _seconds(self.block_time_s)]
        return [*cmd, *self.extra_args]

    def start(self) -> Self:
        """Start the node and wait until it answers ``eth_chainId``.

        A port picked by PeerGrid that another process grabs first is picked again (3 tries).

        Raises
        ------
        NodeUnavailable
            If anvil is missing, exits, or does not answer within ``start_timeout_s``.
        """
        if self.running:
            return self
        if self.state_path is not None:
            self.state_path = Path(self.state_path)
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
        chosen = self.port is None
        attempt = 0
        while True:
            if chosen:
                self.port = free_port()
            try:
                return self._start_once()
            except NodeUnavailable as exc:
                attempt += 1
                if not chosen or "in use" not in str(exc).lower() or attempt == 3:
                    raise

    def _start_once(self) -> Self:
        # anvil moves old blocks' states to disk, by default under ~/.foundry/anvil/tmp, and
        # leaves them there: each a dump of every contract (12 MB each with 300 sites'
        # contracts; 78 GB after a day of tests). Ours go to a folder of this node's, removed
        # when it stops, and at most MAX_PERSISTED_STATES of them.
        if self.prune_history is not None:  # nothing on disk
            cmd = [*self.command(), "--prune-history", str(self.prune_history)]
        else:
            self._cache = Path(tempfile.mkdtemp(prefix="peergrid-anvil-cache-"))
            cmd = [
                *self.command(),
                "--cache-path",
                str(self._cache),
                "--max-persisted-states",
                str(MAX_PERSISTED_STATES),
            ]
        fd, log_name = tempfile.mkstemp(prefix="peergrid-anvil-", suffix=".log")
        self._log = Path(log_name)
        with os.fdopen(fd, "wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own argument list
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            )
        process = self._process
        deadline = time.monotonic() + self.start_timeout_s
        w3 = rpc_web3(self.url, timeout_s=2.0)
        while True:
            if process.poll() is not None:
                output = self._read_log()
                self._cleanup()
                self._process = None
                msg = f"anvil exited with code {process.returncode}: {output[-2000:]}"
                raise NodeUnavailable(msg)
            try:
                if int(w3.eth.chain_id) == self.chain_id:
                    self._keep_clock_monotonic(w3)
                    return self
            except (Web3Exception, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                msg = f"anvil did not answer on {self.url} within {self.start_timeout_s} s"
                raise NodeUnavailable(msg)
            time.sleep(0.05)

    @staticmethod
    def _keep_clock_monotonic(w3: Web3) -> None:
        """Never let a reloaded chain's clock run backwards.

        anvil stamps the blocks it mines after loading a state file with the wall clock, even
        when the file's last block is later (its clock had been moved on with
        ``evm_increaseTime``, or the file comes from a machine whose clock was ahead): block
        times would then go backwards, and a timelock, a vote or a withdrawal notice would
        see time undone. When the last block is not in the past, the node's clock is set just
        after it (``evm_setTime``) and runs on from there.
        """
        latest = int(w3.eth.get_block("latest")["timestamp"])
        if latest >= int(time.time()):
            w3.provider.make_request(RPCEndpoint("evm_setTime"), [latest + 1])

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the node: SIGTERM (anvil writes its state file), SIGKILL after ``timeout_s``.

        Parameters
        ----------
        timeout_s : float
            Longest wait for the node to exit after each signal [s].
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout_s)
        self._process = None
        self._cleanup()

    def _read_log(self) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_text(encoding="utf-8", errors="replace")

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            self._log = None
        if self._cache is not None:
            shutil.rmtree(self._cache, ignore_errors=True)
            self._cache = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(eq=False)
class ChainConnection:
    """A live connection: ``w3`` for :class:`~adapters.chain.client.ChainClient`, and ``close``.

    Unpacks as ``w3, close = connect(...)``; also a context manager.

    Attributes
    ----------
    w3 : Web3
        The connection.
    backend : str
        ``"embedded"``, ``"anvil"`` or ``"rpc"``.
    url : str
        The JSON-RPC URL (``""`` for the embedded chain).
    node : AnvilNode or None
        The node PeerGrid started (``anvil`` backend only).
    """

    w3: Web3
    backend: str
    url: str = ""
    node: AnvilNode | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        """Release the connection; stop the node PeerGrid started. Safe to call twice."""
        while self._closers:
            self._closers.pop()()

    def __iter__(self) -> Iterator[Any]:
        """``(w3, close)``, for ``w3, close = connect(...)``."""
        return iter((self.w3, self.close))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    backend: str,
    *,
    rpc_url: str | None = None,
    state_path: str | os.PathLike[str] | None = None,
    anvil_binary: str | os.PathLike[str] | None = None,
    block_time_s: float | None = None,
    timeout_s: float = 30.0,
) -> ChainConnection:
    """Connect to a chain backend (see the module docstring).

    Parameters
    ----------
    backend : {"embedded", "anvil", "rpc"}
        Where the chain is.
    rpc_url : str or None
        The node's URL; required for ``rpc``.
    state_path : path or None
        ``anvil`` only: the state file kept across restarts (``None``: memory only).
    anvil_binary : path or None
        ``anvil`` only: the executable (default :func:`find_anvil`).
    block_time_s : float or None
        ``anvil`` only: interval mining; ``None`` mines a block per transaction.
    timeout_s : float
        Request timeout for ``rpc`` [s].

    Returns
    -------
    ChainConnection
        The connection; call ``close()`` (or use ``with``) when done.

    Raises
    ------
    InvalidArgument
        Unknown backend, or ``rpc`` without a URL or with one that is not http(s) or IPC
        (a :class:`ValueError`).
    NodeUnavailable
        If the node does not start or does not answer.
    """
    if backend == "embedded":
        return ChainConnection(w3=embedded_web3(), backend=backend)
    if backend == "anvil":
        node = AnvilNode(
            state_path=None if state_path is None else Path(state_path),
            binary=None if anvil_binary is None else Path(anvil_binary),
            block_time_s=block_time_s,
        ).start()
        w3 = rpc_web3(node.url, timeout_s=timeout_s)
        return ChainConnection(
            w3=w3, backend=backend, url=node.url, node=node, _closers=[node.stop]
        )
    if backend == "rpc":
        if not rpc_url:
            msg = "the rpc backend needs rpc_url"
            raise InvalidArgument(msg)
        w3 = rpc_web3(rpc_url, timeout_s=timeout_s)
        try:
            w3.eth.chain_id  # noqa: B018 - the first request proves the node answers
        except (Web3Exception, OSError) as exc:
            msg = f"no EVM node answers at {rpc_url}: {exc}"
            raise NodeUnavailable(msg) from exc
        return ChainConnection(w3=w3, backend=backend, url=rpc_url)
    msg = f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}"
    raise InvalidArgument(msg)


__all__ = [
    "ANVIL_ENV",
    "BACKENDS",
    "AnvilNode",
    "ChainConnection",
    "connect",
    "find_anvil",
    "free_port",
    "rpc_web3",
]
