"""A throwaway PostgreSQL cluster: tests, benchmarks and trials start a real server themselves.

:func:`throwaway_cluster` runs Debian's ``postgresql`` binaries (``initdb``, ``pg_ctl``): a
new cluster in a temporary folder, listening on a Unix socket in that folder only (no TCP
port, nothing to collide with), trust authentication for the local user, ``fsync`` on (the
crash tests kill processes, not the machine, but nothing here trades durability for speed).
``initdb`` refuses to run as root, and CI runs as root: there the cluster is made and run as
the ``postgres`` user (``runuser -u postgres``), which owns the folder. The cluster is
stopped (``pg_ctl stop -m immediate``) and its folder removed when the block ends.

It is not a way to run production: a deployment points PeerGrid at its own PostgreSQL
(README "Deployment").
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from controller.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Cluster:
    """A running throwaway cluster: its socket folder and the role to connect as."""

    socket_dir: Path
    user: str

    def url(self, database: str = "postgres", *, schema: str | None = None) -> str:
        """The SQLAlchemy URL of ``database`` (psycopg 3), optionally of one site schema."""
        url = f"postgresql+psycopg://{self.user}@/{database}?host={self.socket_dir}"
        return url if schema is None else f"{url}&schema={schema}"

    def conninfo(self, database: str = "postgres") -> str:
        """The libpq connection string of ``database`` (for psycopg and procrastinate)."""
        return f"host={self.socket_dir} user={self.user} dbname={database}"

    def create_database(self, name: str | None = None) -> str:
        """Create a new, empty database; returns its name (a fresh one if not given)."""
        import psycopg  # noqa: PLC0415 - the driver is imported where it is used

        name = name or f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name


def find_binary(name: str) -> str:
    """A PostgreSQL server binary: on ``PATH``, else Debian's ``/usr/lib/postgresql/*/bin``.

    Raises
    ------
    ConfigError
        Not installed (``apt-get install postgresql``).
    """
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    msg = f"PostgreSQL's {name} was not found: install Debian's postgresql package"
    raise ConfigError(msg)


def _as_owner(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@contextlib.contextmanager
def throwaway_cluster(*, max_connections: int = 200) -> Iterator[Cluster]:
    """Make, start, yield and finally stop and remove a PostgreSQL cluster (module docstring).

    Parameters
    ----------
    max_connections : int
        The server's ``max_connections`` (workers and tests hold pools).

    Yields
    ------
    Cluster
        Connect through ``cluster.url()`` or ``cluster.conninfo()``.
    """
    root = Path(tempfile.mkdtemp(prefix="peergrid-pg-"))
    data = root / "data"
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER") or "postgres"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    os.chmod(root, 0o755)  # noqa: S103 - the socket lives here; clients of other users connect
    started = False
    try:
        subprocess.run(  # noqa: S603 - fixed arguments
            _as_owner(
                [find_binary("initdb"), "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )
        options = f"-c listen_addresses='' -k {root} -c max_connections={max_connections}"
        subprocess.run(  # noqa: S603 - fixed arguments
            _as_owner(
                [
                    find_binary("pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-l",
                    str(root / "server.log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        started = True
        yield Cluster(socket_dir=root, user=user)
    except subprocess.CalledProcessError as exc:
        log = root / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        msg = f"{exc.cmd[0]} failed: {exc.stderr.decode(errors='replace')}{tail}"
        raise ConfigError(msg) from exc
    finally:
        if started:
            subprocess.run(  # noqa: S603 - fixed arguments
                _as_owner([find_binary("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                check=False,
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)
