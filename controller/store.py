"""Persistence through SQLAlchemy (SQLite by default, PostgreSQL by URL).

Tables and the rules they keep:

* ``intervals``: one row per cleared interval; inserting it *claims* the interval, so the
  scheduler can never clear an interval twice (primary key).
* ``readings``: the device snapshot taken at each interval boundary.
* ``settlements``: the settlement ledger. The intent (batch, amounts, roots) is committed
  **before** the transaction is sent; the receipt is recorded after. On restart, an intent
  without a receipt is resolved by asking the chain first (exactly once).
* ``audit``: one record per interval for utilities (inputs' hashes, result, AC check,
  readings, settlement transaction, Merkle roots) and the SHA-256 of its core. The record is
  written in the **same transaction as the settlement intent**, so no interval can be sent
  (let alone settled) without it; its chain part (transaction, block, gas) is filled in
  with the receipt, in the same transaction as ``mark_settled``, and is not hashed
  (:func:`controller.audit.record_core`).
* ``ticks``: every scheduler tick, including missed ones, with its outcome (``running``,
  ``ran``, ``failed``, ``missed``, or ``crashed``: left ``running`` by a controller that died,
  closed by the next start-up).
* ``chain_nonces``: the next nonce of each sending account, so a restart never reuses or
  skips one.
* ``site_identity`` (revision ``0002``): the one site this database belongs to, its
  fingerprint and fields (:mod:`controller.site_identity`). It is written when the store is
  first *bound* to a site (``peergrid run`` and ``peergrid demo``, once they know the chain);
  :meth:`Store.check_site` compares every later site with it and refuses another one with
  :class:`~controller.errors.SiteMismatch`, before anything is written. A database of
  PeerGrid 0.1.0 (revision ``0001``, no identity) is bound by the first ``run`` that opens it.
* ``debts`` (revision ``0003``): what each settlement batch did to an account's carried
  balance (a debit it could not pay, or a credit withheld; :mod:`market.settlement`, rules
  6-9), written in the transaction that records the batch's intent; an account's outstanding
  balance is its latest row's ``balance_after`` (:meth:`Store.outstanding_debts`).
* ``auth_nonces`` and ``sessions`` (revision ``0006``, :mod:`controller.auth`): the sign-in
  nonces issued, each used at most once (:meth:`Store.open_session` marks it used in the
  transaction that stores the session), and the sessions, keyed by the SHA-256 of their
  bearer token; expired rows are deleted when a nonce is issued.

Every write is one transaction: an error leaves nothing half-written.

The schema is managed by Alembic (``controller/migrations/``; every schema change is a
revision there). Opening a :class:`Store` upgrades the database to the newest revision, or
refuses it and leaves it untouched:

* a database without PeerGrid tables gets them (``upgrade head``);
* a database PeerGrid 0.1.0 wrote (its tables, no ``alembic_version``) is recognised as the
  baseline, stamped ``0001`` and upgraded, keeping every row;
* a revision this release does not know (newer software wrote it), or PeerGrid tables that do
  not match the baseline, raise :class:`controller.errors.SchemaError`.

Only ``run``, ``demo`` and ``db upgrade`` create a database (``Store(url)``); commands that
read (``audit verify``, ``db current``, ``chain status`` ...) open it with ``create=False``,
and a SQLite file that does not exist, or a database without PeerGrid tables, raises
:class:`~controller.errors.MissingDatabase` instead of leaving an empty database behind.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeEngine

from controller.audit import record_core
from controller.errors import (
    AlreadyRunning,
    ConfigError,
    ControllerError,
    MissingDatabase,
    SchemaError,
    SiteMismatch,
)
from controller.site_identity import SiteIdentity
from market.canonical import canonical_json, content_hash
from market.domain import BusId, DeviceId, MeterReading, ParticipantId, ReadingQuality
from market.signed_readings import SignedReading
from market.units import W, Wh

metadata = MetaData()

intervals = Table(
    "intervals",
    metadata,
    Column("interval_id", BigInteger, primary_key=True),
    Column("length_s", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("book_hash", String(64), nullable=True),
    Column("n_orders", Integer, nullable=False, default=0),
    Column("result", JSON, nullable=True),
    Column("setpoints", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

readings = Table(
    "readings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("boundary", BigInteger, nullable=False, index=True),
    Column("device_id", String(128), nullable=False),
    Column("participant", String(128), nullable=False),
    Column("bus", String(128), nullable=False),
    Column("measured_at", DateTime(timezone=True), nullable=False),
    Column("p_w", BigInteger, nullable=False),
    Column("import_wh_total", BigInteger, nullable=False),
    Column("export_wh_total", BigInteger, nullable=False),
    Column("quality", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("soc_percent", Float, nullable=True),
    # a signed reading (issue 17, migration 0008): the OCMF form, its sequence number and the
    # block of the device key registry it was verified against; NULL for unsigned readings
    Column("signed", JSON, nullable=True),
    Column("seq", BigInteger, nullable=True),
    Column("key_block", BigInteger, nullable=True),
    UniqueConstraint("boundary", "device_id", name="uq_reading_boundary_device"),
)

device_seqs = Table(
    "device_seqs",
    metadata,
    # each signing device's last accepted (OK) sequence number and the boundary it was read
    # at (migration 0008): the replay check reads one row per device (Store.last_seqs)
    Column("device_id", String(128), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("boundary", BigInteger, nullable=False),
)

settlements = Table(
    "settlements",
    metadata,
    Column("interval_id", BigInteger, primary_key=True),
    Column("batch_id", String(64), nullable=False, unique=True),
    Column("state", String(16), nullable=False),  # intent | settled | failed
    Column("batch", JSON, nullable=False),
    Column("tx_hash", String(66), nullable=True),
    Column("block_number", BigInteger, nullable=True),
    Column("gas_used", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column("interval_id", BigInteger, primary_key=True),
    Column("record", JSON, nullable=False),
    Column("record_hash", String(64), nullable=False),
)

ticks = Table(
    "ticks",
    metadata,
    Column("boundary", BigInteger, primary_key=True),
    Column("outcome", String(32), nullable=False),  # running|ran|missed|failed|crashed
    Column("detail", Text, nullable=False, default=""),
    Column("at", DateTime(timezone=True), nullable=False),
)


chain_nonces = Table(
    "chain_nonces",
    metadata,
    Column("address", String(64), primary_key=True),
    Column("next", BigInteger, nullable=False),
)

site_identity = Table(
    "site_identity",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1: one site
    Column("fingerprint", String(64), nullable=False),
    Column("name", Text, nullable=False),
    Column("chain", String(80), nullable=False),  # trial | eip155:<chain id>
    Column("settlement", String(42), nullable=False),  # "" on a trial chain
    Column("grid_digest", String(64), nullable=False),
    Column("grid_spec", Text, nullable=False),  # for messages only
    Column("bound_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("id = 1", name="ck_site_identity_one_row"),
)

# Revision 0003: what each batch did to an account's debt balance [token units], signed:
# + = the account owes COMMUNITY, - = COMMUNITY owes it. Outstanding = the latest row's after.
debts = Table(
    "debts",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("interval_id", BigInteger, nullable=False),
    Column("account", String(128), nullable=False, index=True),
    Column("balance_before", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("interval_id", "account", name="uq_debt_interval_account"),
)

# Revision 0004: each grid an audit record references, stored once by its content hash
# (pandapower JSON without the base case, :func:`grid_models.grids.split_base_case`).
grids = Table(
    "grids",
    metadata,
    Column("grid_hash", String(64), primary_key=True),
    Column("spec", Text, nullable=False),  # for messages only
    Column("pandapower_json", Text, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
)

# Revision 0005: each signed message of the HTTP front door (controller.intake), stored before
# it is acknowledged. digest = EIP-712 digest; nonce = uint256 as decimal; status accepted |
# cancelled; cancel_digest: on an order the Cancel that cancelled it, on a Cancel its target.
signed_orders = Table(
    "signed_orders",
    metadata,
    Column("digest", String(66), primary_key=True),
    Column("participant", String(128), nullable=False),
    Column("signer", String(42), nullable=False),
    Column("nonce", String(80), nullable=False),
    Column("kind", String(16), nullable=False),  # Order | StandingOrder | Cancel
    Column("interval_id", BigInteger, nullable=True, index=True),
    Column("valid_from", BigInteger, nullable=True),
    Column("valid_until", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),  # accepted | cancelled
    Column("message", JSON, nullable=False),
    Column("signature", String(132), nullable=False),
    Column("typed_data", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("cancel_digest", String(66), nullable=True),
    Column("cancelled_from", BigInteger, nullable=True),  # first interval no longer applied to
    UniqueConstraint("participant", "nonce", name="uq_signed_order_participant_nonce"),
)


# Revision 0006: sign-in (controller.auth). A nonce signs in once (used_at set atomically); a
# session is kept under the SHA-256 of its bearer token (never the token). Times UTC.
auth_nonces = Table(
    "auth_nonces",
    metadata,
    Column("nonce", String(64), primary_key=True),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("used_at", DateTime(timezone=True), nullable=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("address", String(42), nullable=False),
    Column("role", String(16), nullable=False),  # prosumer | operator | auditor
    Column("participant", String(128), nullable=True),
    Column("nonce", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

site_actions = Table(
    "site_actions",
    metadata,
    Column("action_id", Integer, primary_key=True, autoincrement=True),
    Column("action", String(16), nullable=False),  # pause | resume | exclude
    Column("target_kind", String(16), nullable=True),  # participant | device | bus
    Column("target", String(128), nullable=True),
    Column("start", DateTime(timezone=True), nullable=True),
    Column("end", DateTime(timezone=True), nullable=True),
    Column("reason", Text, nullable=False),
    Column("by", String(42), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)


class NonceOutcome(StrEnum):
    """What :meth:`Store.open_session` found of a sign-in nonce."""

    OPENED = "opened"  # unused and unexpired: now used, and the session stored
    UNKNOWN = "unknown"  # never issued here (or purged after it expired)
    USED = "used"  # a session was already opened with it
    EXPIRED = "expired"  # issued, unused, but past its expiry


def _utc(moment: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite gives naive UTC back)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class PendingSettlement:
    """A settlement intent without a receipt (to resolve on restart)."""

    interval_id: int
    batch_id: str
    batch: Mapping[str, Any]


def _now() -> datetime:
    return datetime.now(UTC)


# -- schema revisions (Alembic) ------------------------------------------------------------
GATE_LOOKBACK = 64
"""How many of the latest results :meth:`Store.gate_closure_in_force` looks through for the
latest cleared one (the ones between were abandoned: nothing was read for them)."""

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE_REVISION = "0001"  # the schema of PeerGrid 0.1.0, written without migrations


class SchemaState(StrEnum):
    """Where a usable database stands relative to this release's migrations."""

    EMPTY = "empty"  # no PeerGrid table: an upgrade creates them
    BASELINE = "baseline"  # PeerGrid 0.1.0's tables without a revision: stamped, then upgraded
    BEHIND = "behind"  # a known revision older than the head
    HEAD = "head"  # the newest revision: nothing to do


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """A database's schema revision (``None``: not stamped), this release's head and the state."""

    revision: str | None
    head: str
    state: SchemaState


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def head_revision() -> str:
    """The newest schema revision this release knows."""
    head = _scripts().get_current_head()
    if head is None:
        msg = f"{MIGRATIONS / 'versions'} holds no revision (a broken installation)"
        raise SchemaError(msg)
    return head


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema_of(connection)
    return config


def _type_name(kind: TypeEngine[Any]) -> str:
    try:
        return kind.python_type.__name__
    except NotImplementedError:
        return type(kind).__name__.lower()


def _table_signatures(connection: Connection, tables: set[str]) -> dict[str, dict[str, Any]]:
    """What a table must have to be the same table on any database (names, not dialect types).

    Columns by name with their Python type and nullability, the primary key, the unique
    constraints (by columns: their names differ between dialects) and the other indexes.
    """
    found = inspect(connection)
    schema = schema_of(connection)
    out: dict[str, dict[str, Any]] = {}
    for table in sorted(tables):
        out[table] = {
            "columns": {
                c["name"]: f"{_type_name(c['type'])}{'' if c['nullable'] else ' not null'}"
                for c in found.get_columns(table, schema=schema)
            },
            "primary key": sorted(
                found.get_pk_constraint(table, schema=schema)["constrained_columns"]
            ),
            "unique constraints": sorted(
                sorted(u["column_names"])
                for u in found.get_unique_constraints(table, schema=schema)
            ),
            "indexes": sorted(
                (str(i["name"]), [str(c) for c in i["column_names"]], bool(i["unique"]))
                for i in found.get_indexes(table, schema=schema)
                if "duplicates_constraint" not in i
            ),
        }
    return out


_MIGRATING = threading.RLock()
"""Held around every Alembic command: its ``op``/``context`` proxies are process-wide, so
two threads migrating two sites' stores at once would mix their operations up."""


@functools.cache
def _baseline_signatures() -> dict[str, dict[str, Any]]:
    """The tables revision ``0001`` makes, built in an in-memory SQLite database."""
    engine = create_engine("sqlite://")
    try:
        with _MIGRATING, engine.begin() as conn:
            command.upgrade(_alembic_config(conn), BASELINE_REVISION)
            tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
            return _table_signatures(conn, tables)
    finally:
        engine.dispose()


def _baseline_differences(connection: Connection, present: set[str]) -> list[str]:
    want = _baseline_signatures()
    have = _table_signatures(connection, present)
    problems = [f"table {t} is missing" for t in sorted(want.keys() - have.keys())]
    for table in sorted(have):
        for aspect, expected in want[table].items():
            got = have[table][aspect]
            if aspect == "columns":
                problems += [
                    f"{table}.{name}: {got.get(name, 'missing')} (0.1.0: {kind})"
                    for name, kind in expected.items()
                    if got.get(name) != kind
                ]
                problems += [f"{table}.{name}: not in 0.1.0" for name in got.keys() - expected]
            elif got != expected:
                problems.append(f"{table} {aspect}: {got} (0.1.0: {expected})")
    return problems


def schema_status(connection: Connection, where: str = "database") -> SchemaStatus:
    """Read where the database on ``connection`` stands; raise if this release must refuse it.

    Parameters
    ----------
    connection
        An open connection; only read.
    where
        How messages name the database (its URL without password).

    Raises
    ------
    SchemaError
        The database's revision is unknown to this release (newer software wrote it), or it
        has PeerGrid tables but no revision and they do not match the baseline schema.
    """
    head = head_revision()
    schema = schema_of(connection)
    current = MigrationContext.configure(
        connection, opts={"version_table_schema": schema}
    ).get_current_heads()
    known = {script.revision for script in _scripts().walk_revisions()}
    unknown = sorted(set(current) - known)
    if unknown:
        msg = (
            f"{where}: schema revision {', '.join(unknown)} is unknown to this release of "
            f"PeerGrid (its newest is {head}): newer software wrote this database. Run that "
            "release, or a copy of the database from before it; the database was left unchanged"
        )
        raise SchemaError(msg)
    if len(current) > 1:
        msg = f"{where}: several schema revisions ({', '.join(current)}); expected one"
        raise SchemaError(msg)
    if current:
        state = SchemaState.HEAD if current[0] == head else SchemaState.BEHIND
        return SchemaStatus(current[0], head, state)
    present = (
        set(inspect(connection).get_table_names(schema=schema)) & _baseline_signatures().keys()
    )
    if not present:
        return SchemaStatus(None, head, SchemaState.EMPTY)
    problems = _baseline_differences(connection, present)
    if problems:
        msg = (
            f"{where}: PeerGrid tables without a schema revision that do not match the schema "
            f"of PeerGrid 0.1.0 (revision {BASELINE_REVISION}): {'; '.join(problems)}. "
            "The database was left unchanged"
        )
        raise SchemaError(msg)
    return SchemaStatus(None, head, SchemaState.BASELINE)


def upgrade_schema(connection: Connection, where: str = "database") -> str:
    """Bring the database on ``connection`` to the head revision; returns the head.

    A database of PeerGrid 0.1.0 is first stamped with the baseline revision; an empty one
    gets every table. The caller commits (or rolls back) the transaction.

    Parameters
    ----------
    connection
        An open connection inside a transaction.
    where
        How messages name the database (its URL without password).

    Raises
    ------
    SchemaError
        As :func:`schema_status`; nothing is written then.
    """
    status = schema_status(connection, where)
    schema = schema_of(connection)
    if schema is not None:  # Alembic's own DDL (ALTER TABLE ...) names tables unqualified
        connection.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
    config = _alembic_config(connection)
    with _MIGRATING:  # Alembic's op/context proxies are process-wide: one migration at a time
        if status.state is SchemaState.BASELINE:
            command.stamp(config, BASELINE_REVISION)
        if status.state is not SchemaState.HEAD:
            command.upgrade(config, "head")
    return status.head


SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
"""A site schema's name: lower-case letters, digits and ``_``, at most 63 (PostgreSQL's limit)."""


def split_schema(url: str) -> tuple[str, str | None]:
    """A database URL without PeerGrid's ``schema`` query parameter, and that schema.

    ``postgresql+psycopg://host/db?schema=riverside`` keeps one site's tables in the
    PostgreSQL schema ``riverside`` of database ``db`` (many sites share one database, each
    in its own schema: ``peergrid worker``). SQLAlchemy and the driver never see the
    parameter; the store's engine maps every table to the schema
    (``schema_translate_map``) and runs migrations with ``search_path`` set to it.

    Parameters
    ----------
    url
        SQLAlchemy database URL.

    Returns
    -------
    tuple of (str, str or None)
        The URL without ``schema``, and the schema (``None``: the database's default).

    Raises
    ------
    ConfigError
        ``schema`` on a database that is not PostgreSQL, given twice, or not a valid name.
    """
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url, None  # open_engine explains the bad URL
    schema = parsed.query.get("schema")
    if schema is None:
        return url, None
    if not isinstance(schema, str) or not SCHEMA_NAME.match(schema):
        msg = (
            f"schema={schema!r} in the database URL: one name of lower-case letters, digits "
            "and _ (at most 63, not starting with a digit)"
        )
        raise ConfigError(msg)
    if parsed.get_backend_name() != "postgresql":
        msg = "schema= in the database URL is for PostgreSQL only (one SQLite file per site)"
        raise ConfigError(msg)
    base = parsed.difference_update_query(["schema"])
    return base.render_as_string(hide_password=False), schema


def schema_of(connection: Connection) -> str | None:
    """The site schema a store's connection maps its tables to (``None``: the default)."""
    mapping = connection.get_execution_options().get("schema_translate_map") or {}
    schema = mapping.get(None)
    return None if schema is None else str(schema)


_SHARED: dict[str, Engine] = {}
_SHARED_LOCK = threading.Lock()


def shared_engine(url: str, *, pool_size: int = 4) -> Engine:
    """One engine (one connection pool) per database URL for this process.

    ``peergrid worker`` holds many sites' stores on one PostgreSQL database: each store is
    this engine with its schema mapped (:func:`split_schema`), so hundreds of sites share a
    pool of a few connections instead of holding a pool each. Never disposed by a store.

    Parameters
    ----------
    url
        SQLAlchemy URL without ``schema``.
    pool_size
        Connections kept, and as many more opened under load; the first call for a URL
        sets it (a worker: two per concurrent step and four for the rest).
    """
    with _SHARED_LOCK:
        engine = _SHARED.get(url)
        if engine is None:
            engine = open_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            _SHARED[url] = engine
        return engine


_LOCK_SALT = 0x5045_4552  # "PEER": keeps PeerGrid's advisory locks apart from others'


def lock_key(schema: str) -> int:
    """The advisory-lock key of a site's store (a signed 64-bit integer)."""
    digest = hashlib.sha256(f"peergrid-site:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True) ^ _LOCK_SALT


@contextlib.contextmanager
def site_lock(url: str) -> Iterator[SiteLockHeld]:
    """Hold the database's lock of the site at ``url`` for the block (a PostgreSQL store).

    A session advisory lock on a connection kept for the block: PostgreSQL releases it when
    the block ends or the process dies. ``peergrid run`` on PostgreSQL and every worker's
    step take it.

    Yields
    ------
    SiteLockHeld
        The lock's key and the server process holding it (a worker's hold checks that the
        lock is still there: :meth:`controller.fleet.Fleet.check_hold`).

    Raises
    ------
    AlreadyRunning
        Another process holds it.
    """
    base, schema = split_schema(url)
    shown = make_url(base).render_as_string(hide_password=True)
    key = lock_key(schema or shown)
    with shared_engine(base).connect() as conn:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        conn.commit()
        if not got:
            msg = f"another PeerGrid controller or worker is running this site ({schema or shown})"
            raise AlreadyRunning(msg)
        try:
            yield SiteLockHeld(key=key, pid=pid)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


@dataclass(frozen=True, slots=True)
class SiteLockHeld:
    """A held :func:`site_lock`: its 64-bit key and the PostgreSQL backend holding it."""

    key: int
    pid: int

    @property
    def halves(self) -> tuple[int, int]:
        """``pg_locks``' ``classid`` and ``objid`` of the key (its high and low 32 bits)."""
        unsigned = self.key & 0xFFFF_FFFF_FFFF_FFFF
        return unsigned >> 32, unsigned & 0xFFFF_FFFF


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (relative to the current folder if relative).

    Parameters
    ----------
    url
        SQLAlchemy database URL.

    Returns
    -------
    Path or None
        The database file, whether it exists or not; ``None`` for an in-memory SQLite
        database and for every other dialect.

    Raises
    ------
    sqlalchemy.exc.ArgumentError
        ``url`` is not a database URL.
    """
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    if name.startswith("file:") and parsed.query.get("uri") == "true":
        return None  # an SQLite URI filename: opened by SQLite itself, not a plain path
    return Path(name)


def _refuse_missing(url: str, where: str) -> None:
    """Raise :class:`MissingDatabase` if ``url`` is a SQLite file that does not exist."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        msg = (
            f"no database at {path.resolve()} ({where}): nothing was created. Check the "
            "site file's [site] database or --db; 'peergrid run' and 'peergrid db upgrade' "
            "create a database"
        )
        raise MissingDatabase(msg)


SQLITE_HEADER = b"SQLite format 3\x00"


def open_engine(url: str, **options: Any) -> Engine:  # noqa: ANN401 - create_engine's options
    """``create_engine(url)``, with a URL a person got wrong refused in one line.

    Parameters
    ----------
    url
        SQLAlchemy database URL (``sqlite:///file``, ``postgresql+psycopg://...``).
    **options
        Passed to :func:`sqlalchemy.create_engine`.

    Returns
    -------
    Engine
        The engine (not yet connected); with ``?schema=NAME`` (:func:`split_schema`) its
        tables are mapped to that schema.

    Raises
    ------
    ConfigError
        ``url`` is not a database URL, names a database kind SQLAlchemy does not know or
        whose driver is not installed, or a SQLite file that is a folder, lies in a folder
        that does not exist, or is not a SQLite database. The message never shows a
        password.
    """
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError  # noqa: PLC0415

    url, schema = split_schema(url)
    try:
        path = sqlite_file(url)
        engine = create_engine(url, **options)
    except NoSuchModuleError:  # before ArgumentError, its base class
        kind = url.split(":", 1)[0]
        msg = f"unknown kind of database {kind!r} in the database URL (sqlite or postgresql)"
        raise ConfigError(msg) from None
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        shown = url if "@" not in url else "<URL with credentials>"
        msg = (
            f"not a database URL: {shown!r} (e.g. sqlite:///peergrid.sqlite or "
            "postgresql+psycopg://user@host/dbname)"
        )
        raise ConfigError(msg) from None
    except ImportError as exc:  # the dialect imports its driver here
        where = make_url(url).render_as_string(hide_password=True)
        msg = (
            f"the database driver for {where} is not installed ({exc}); install it "
            "(e.g. pip install 'psycopg[binary]') or use sqlite:///FILE"
        )
        raise ConfigError(msg) from None
    if path is not None:
        _refuse_bad_sqlite_path(path)
    if schema is not None:
        return engine.execution_options(schema_translate_map={None: schema})
    return engine


def _refuse_bad_sqlite_path(path: Path) -> None:
    """Raise :class:`ConfigError` for a SQLite path SQLite would fail on with a traceback."""
    if path.is_dir():
        msg = f"database file {path} is a directory, not a SQLite database"
        raise ConfigError(msg)
    if not path.exists():
        if not path.resolve().parent.is_dir():
            msg = f"no folder {path.resolve().parent} for the database file {path.name}"
            raise ConfigError(msg)
        return
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        msg = f"cannot read database file {path}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    if head and head != SQLITE_HEADER:
        msg = f"{path} is not a SQLite database"
        raise ConfigError(msg)


def bound_identity(connection: Connection) -> SiteIdentity | None:
    """The identity of the site the database on ``connection`` is bound to (only read).

    Parameters
    ----------
    connection
        An open connection.

    Returns
    -------
    SiteIdentity or None
        ``None`` when the database is bound to no site yet (or predates revision ``0002``).
    """
    if not inspect(connection).has_table(site_identity.name, schema=schema_of(connection)):
        return None
    row = connection.execute(select(site_identity)).mappings().first()
    if row is None:
        return None
    return SiteIdentity(
        name=row["name"],
        chain=row["chain"],
        settlement=row["settlement"],
        grid_digest=row["grid_digest"],
        grid_spec=row["grid_spec"],
    )


def _refuse_other_site(bound: SiteIdentity, given: SiteIdentity, where: str) -> None:
    differ = bound.differences(given)
    if differ:
        msg = (
            f"{where} belongs to site {bound.describe()}, not to site {given.describe()}: "
            f"they differ in {', '.join(differ)}. Each site needs its own database (the site "
            "file's [site] database); this one was left unchanged"
        )
        raise SiteMismatch(msg)


def read_schema_status(url: str) -> SchemaStatus:
    """The schema status of the database at ``url``, read without changing it.

    Parameters
    ----------
    url
        SQLAlchemy database URL (``sqlite:///file``, ``postgresql://...``).

    Raises
    ------
    SchemaError
        As :func:`schema_status`.
    ConfigError
        A bad URL or SQLite path (:func:`open_engine`).
    """
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return schema_status(conn, engine.url.render_as_string(hide_password=True))
    finally:
        engine.dispose()


def read_bound_site(url: str) -> SiteIdentity | None:
    """The site the database at ``url`` is bound to, read without changing it.

    Parameters
    ----------
    url
        SQLAlchemy database URL of an existing database.

    Returns
    -------
    SiteIdentity or None
        ``None`` when it is bound to no site.
    """
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return bound_identity(conn)
    finally:
        engine.dispose()


class Store:
    """The controller's database. Create with a SQLAlchemy URL (``sqlite:///file``).

    Opening it checks the database first, then upgrades the schema to the head revision
    (``revision`` holds it). A refused database is left untouched.

    Parameters
    ----------
    url
        SQLAlchemy database URL.
    create
        Create the database (and its tables) if there is none; ``False`` for commands that
        only read.
    site
        Compare the site the database is bound to with this one before anything is written
        (fields it leaves ``None`` are not compared); it is not bound here (see
        :meth:`check_site`).
    shared
        Use this process's engine of the database (:func:`shared_engine`), with the URL's
        schema mapped: many sites' stores on one PostgreSQL database share one pool
        (``peergrid worker``).

    Raises
    ------
    ConfigError
        A bad URL or SQLite path, or a driver that is not installed (:func:`open_engine`).
    SchemaError
        A revision this release does not know, or tables unlike the baseline.
    MissingDatabase
        ``create`` is ``False`` and the SQLite file does not exist or the database has no
        PeerGrid tables.
    SiteMismatch
        The database is bound to another site than ``site``.
    """

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        site: SiteIdentity | None = None,
        shared: bool = False,
    ) -> None:
        self.url = url
        self._intake_lock = threading.Lock()
        base, self.schema = split_schema(url)
        self._shared = shared
        if shared:
            engine = shared_engine(base)
            self.engine: Engine = (
                engine
                if self.schema is None
                else engine.execution_options(schema_translate_map={None: self.schema})
            )
        else:
            self.engine = open_engine(url, future=True)
        self.where = self.engine.url.render_as_string(hide_password=True)
        if self.schema is not None:
            self.where += f" (schema {self.schema})"
        if not create:
            _refuse_missing(url, self.where)  # before connecting: SQLite would create it
        try:  # check before the SQLite pragmas (WAL): a refused database is not touched
            with self.engine.connect() as conn:
                status = schema_status(conn, self.where)
                if not create and status.state is SchemaState.EMPTY:
                    msg = (
                        f"{self.where} holds no PeerGrid tables: not a controller's database "
                        "(nothing was created; 'peergrid run' and 'peergrid db upgrade' "
                        "create them)"
                    )
                    raise MissingDatabase(msg)
                bound = bound_identity(conn) if site is not None else None
                if bound is not None and site is not None:
                    _refuse_other_site(bound, site, self.where)
        finally:
            if not shared:
                self.engine.dispose()
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # processes opening one new store at once (a fleet's workers) take turns:
                # the second finds the schema made and upgraded (upgrade_schema reads again)
                key = lock_key(f"migrate:{self.schema or self.where}")
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
                if create and self.schema is not None:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            self.revision: str = upgrade_schema(conn, self.where)

    @contextmanager
    def intake_lock(self) -> Iterator[None]:
        """Hold the site's intake lock (:mod:`controller.intake`, module docstring).

        On SQLite a lock of this store object (one process serves a SQLite site); on
        PostgreSQL also the database's advisory lock of the site's intake, held on a
        connection of its own for the block, so a ``serve --front`` and the fleet's workers
        on other machines take turns.
        """
        with self._intake_lock:
            if self.engine.dialect.name != "postgresql":
                yield
                return
            key = lock_key(f"intake:{self.schema or self.where}")
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()

    def close(self) -> None:
        """Release the connection pool (a shared one stays: :func:`shared_engine`)."""
        if not self._shared:
            self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- the site ----------------------------------------------------------------------------
    def site(self) -> SiteIdentity | None:
        """The site this database is bound to (``None``: none yet)."""
        with self.engine.connect() as conn:
            return bound_identity(conn)

    def check_site(self, identity: SiteIdentity, *, bind: bool = False) -> SiteIdentity | None:
        """Refuse another site; with ``bind``, bind a database that has no site yet.

        Parameters
        ----------
        identity
            The site of the command (fields left ``None`` are not compared).
        bind
            Record ``identity`` if the database is bound to no site and ``identity`` is
            complete (``peergrid run`` and ``peergrid demo``, once connected to the chain).

        Returns
        -------
        SiteIdentity or None
            The site the database is bound to now (``None``: still none).

        Raises
        ------
        SiteMismatch
            The database is bound to another site; nothing was written.
        """
        bound = self.site()
        fingerprint = identity.fingerprint
        if bound is None and bind and fingerprint is not None:
            try:
                with self._tx() as conn:
                    conn.execute(
                        insert(site_identity).values(
                            id=1,
                            fingerprint=fingerprint,
                            name=identity.name,
                            chain=identity.chain,
                            settlement=identity.settlement,
                            grid_digest=identity.grid_digest,
                            grid_spec=identity.grid_spec,
                            bound_at=_now(),
                        )
                    )
            except IntegrityError:  # another process bound it first: compare with that one
                bound = self.site()
            else:
                return identity
        if bound is not None:
            _refuse_other_site(bound, identity, self.where)
        return bound

    # -- sign-in (revision 0006, controller.auth) ---------------------------------------------
    def add_auth_nonce(self, nonce: str, issued_at: datetime, expires_at: datetime) -> int:
        """Store a sign-in nonce just issued, and delete expired nonces and sessions.

        Parameters
        ----------
        nonce : str
            The nonce (letters and digits, at most 64).
        issued_at, expires_at : datetime
            Aware; stored in UTC.

        Returns
        -------
        int
            How many expired rows (nonces and sessions) were deleted.
        """
        now = _utc(issued_at)
        with self._tx() as conn:
            purged = conn.execute(auth_nonces.delete().where(auth_nonces.c.expires_at < now))
            ended = conn.execute(sessions.delete().where(sessions.c.expires_at < now))
            conn.execute(
                insert(auth_nonces).values(
                    nonce=nonce, issued_at=now, expires_at=_utc(expires_at), used_at=None
                )
            )
        return int(purged.rowcount) + int(ended.rowcount)

    def open_session(
        self,
        nonce: str,
        now: datetime,
        *,
        token_hash: str,
        address: str,
        role: str,
        participant: str | None,
        expires_at: datetime,
    ) -> NonceOutcome:
        """Use a sign-in nonce and store the session it opens, in one transaction.

        The nonce is marked used by an update that succeeds only while it is unused, so of
        two sign-ins with one nonce (even concurrent ones) exactly one opens a session.

        Parameters
        ----------
        nonce : str
            The nonce of the signed message.
        now : datetime
            Aware: the time of the sign-in (the nonce must expire after it).
        token_hash : str
            SHA-256 of the session's bearer token, 64 hex digits.
        address, role, participant
            Who signed in (``participant`` ``None`` for operators and auditors).
        expires_at : datetime
            Aware: the end of the session.

        Returns
        -------
        NonceOutcome
            ``OPENED``, or why not (nothing is written then).
        """
        at = _utc(now)
        with self._tx() as conn:
            # Write first: the transaction takes the write lock at once (SQLite), and of two
            # concurrent sign-ins the second finds used_at set; then read why if it failed.
            used = conn.execute(
                update(auth_nonces)
                .where(auth_nonces.c.nonce == nonce)
                .where(auth_nonces.c.used_at.is_(None))
                .where(auth_nonces.c.expires_at > at)
                .values(used_at=at)
            )
            if used.rowcount != 1:
                row = conn.execute(
                    select(auth_nonces.c.used_at).where(auth_nonces.c.nonce == nonce)
                ).first()
                if row is None:
                    return NonceOutcome.UNKNOWN
                return NonceOutcome.USED if row.used_at is not None else NonceOutcome.EXPIRED
            conn.execute(
                insert(sessions).values(
                    token_hash=token_hash,
                    address=address,
                    role=role,
                    participant=participant,
                    nonce=nonce,
                    created_at=at,
                    expires_at=_utc(expires_at),
                )
            )
        return NonceOutcome.OPENED

    def session(self, token_hash: str) -> dict[str, Any] | None:
        """The ``sessions`` row of a token's SHA-256 (times aware UTC), or ``None``."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(sessions).where(sessions.c.token_hash == token_hash))
                .mappings()
                .first()
            )
        if row is None:
            return None
        out = dict(row)
        out["created_at"] = _utc(out["created_at"])
        out["expires_at"] = _utc(out["expires_at"])
        return out

    def delete_session(self, token_hash: str) -> bool:
        """Delete a session (signing out); ``False`` if there was none."""
        with self._tx() as conn:
            gone = conn.execute(sessions.delete().where(sessions.c.token_hash == token_hash))
        return bool(gone.rowcount)

    # -- site actions ----------------------------------------------------------------------
    def add_site_action(self, action: Mapping[str, Any]) -> int:
        """Append an operator's site action (:mod:`controller.controls`); durable on return.

        Parameters
        ----------
        action : Mapping
            ``action`` (pause | resume | exclude), ``reason``, ``by``, ``at`` (UTC) and, for
            an exclusion, ``target_kind``, ``target``, ``start`` and ``end`` (UTC).

        Returns
        -------
        int
            Its ``action_id`` (actions are numbered in the order they were taken).
        """
        with self._tx() as conn:
            done = conn.execute(insert(site_actions).values(**dict(action)))
        key = done.inserted_primary_key
        return int(key[0]) if key is not None else 0

    def site_actions(self) -> list[dict[str, Any]]:
        """Every site action in the order taken (times as aware UTC datetimes)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(site_actions).order_by(site_actions.c.action_id))
            out = [dict(r) for r in rows.mappings()]
        for row in out:
            for key in ("start", "end", "at"):
                if row[key] is not None:
                    row[key] = _utc(row[key])
        return out

    # -- intervals -------------------------------------------------------------------------
    def claim_interval(self, interval_id: int, length_s: int) -> bool:
        """Insert the interval's row; False if it was already claimed (never clear twice)."""
        try:
            with self._tx() as conn:
                conn.execute(
                    insert(intervals).values(
                        interval_id=interval_id,
                        length_s=length_s,
                        status="claimed",
                        reason="",
                        n_orders=0,
                        created_at=_now(),
                    )
                )
        except IntegrityError:
            return False
        return True

    def last_claimed(self) -> int | None:
        """The latest interval claimed for clearing [Unix s] (``None``: none)."""
        with self.engine.connect() as conn:
            found = conn.execute(select(func.max(intervals.c.interval_id))).scalar()
        return None if found is None else int(found)

    def save_result(
        self,
        interval_id: int,
        *,
        status: str,
        reason: str,
        book_hash: str,
        n_orders: int,
        result: Mapping[str, Any],
        setpoints: list[Mapping[str, Any]],
    ) -> None:
        """Record the clearing result of a claimed interval."""
        with self._tx() as conn:
            conn.execute(
                update(intervals)
                .where(intervals.c.interval_id == interval_id)
                .values(
                    status=status,
                    reason=reason,
                    book_hash=book_hash,
                    n_orders=n_orders,
                    result=json.loads(canonical_json(result)),
                    setpoints=json.loads(canonical_json(setpoints)),
                )
            )

    def gate_closure_in_force(self, site_gate_closure_s: int, interval_s: int) -> int:
        """The gate closure of the intervals not yet cleared [s].

        The ``next_gate_closure_s`` that the latest clearing recorded (the community's
        governed value, read when it was cleared: :meth:`controller.cycle.Cycle.terms_for`),
        if it is a valid gate closure for ``interval_s``; otherwise (no clearing recorded
        one, or the site's intervals changed since) the site file's ``site_gate_closure_s``.
        Only the JSON values themselves are read, not the results.
        """
        params = intervals.c.result[("inputs", "params")]
        in_force = params[("gate_closure_s",)].as_integer()
        following = params[("next_gate_closure_s",)].as_integer()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(in_force, following)
                .where(intervals.c.result.is_not(None))
                .order_by(intervals.c.interval_id.desc())
                .limit(GATE_LOOKBACK)
            ).all()
        for current, nxt in rows:
            if current is None:
                continue  # an abandoned interval: nothing was cleared or read
            if nxt is not None and 0 <= int(nxt) < interval_s:
                return int(nxt)
            break
        return site_gate_closure_s

    def result(self, interval_id: int) -> dict[str, Any] | None:
        """The stored result JSON of an interval."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(intervals.c.result).where(intervals.c.interval_id == interval_id)
            ).first()
        return None if row is None else row[0]

    def abandoned_intervals(self, before_id: int) -> list[tuple[int, int]]:
        """Claimed intervals before ``before_id`` that never got a result (a crash)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(intervals.c.interval_id, intervals.c.length_s)
                .where(intervals.c.status == "claimed")
                .where(intervals.c.interval_id < before_id)
                .order_by(intervals.c.interval_id)
            )
            return [(int(r[0]), int(r[1])) for r in rows]

    def unsettled_results(self, boundary_id: int) -> list[tuple[int, int, dict[str, Any]]]:
        """Intervals ended by ``boundary_id`` with a result and no settlement, oldest first."""
        with self.engine.connect() as conn:
            settled = select(settlements.c.interval_id)
            rows = conn.execute(
                select(intervals.c.interval_id, intervals.c.length_s, intervals.c.result)
                .where(intervals.c.result.is_not(None))
                .where(intervals.c.interval_id + intervals.c.length_s <= boundary_id)
                .where(intervals.c.interval_id.not_in(settled))
                .order_by(intervals.c.interval_id)
            )
            return [(int(r[0]), int(r[1]), r[2]) for r in rows]

    def interval_rows(self) -> list[dict[str, Any]]:
        """All intervals, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(intervals).order_by(intervals.c.interval_id)).mappings()
            return [dict(r) for r in rows]

    # -- readings --------------------------------------------------------------------------
    def save_readings(
        self,
        boundary: int,
        snapshot: Mapping[DeviceId, MeterReading],
        *,
        key_block: int | None = None,
    ) -> None:
        """Store a boundary's snapshot (idempotent per boundary and device).

        A signed reading keeps its OCMF form (``signed``), its sequence number and
        ``key_block``, the block of the device key registry it was verified against.
        """
        rows = [
            {
                "boundary": boundary,
                "device_id": r.device_id,
                "participant": r.participant,
                "bus": r.bus,
                "measured_at": r.measured_at,
                "p_w": r.p_w,
                "import_wh_total": r.import_wh_total,
                "export_wh_total": r.export_wh_total,
                "quality": r.quality.value,
                "reason": r.reason,
                "soc_percent": r.soc_percent,
                "signed": None if r.signed is None else r.signed.to_ocmf(),
                "seq": None if r.signed is None else r.signed.payload.seq,
                "key_block": None if r.signed is None else key_block,
            }
            for r in snapshot.values()
        ]
        with self._tx() as conn:
            existing = {
                row[0]
                for row in conn.execute(
                    select(readings.c.device_id).where(readings.c.boundary == boundary)
                )
            }
            new = [r for r in rows if r["device_id"] not in existing]
            if new:
                conn.execute(insert(readings), new)
            accepted = {
                r.device_id: r.signed.payload.seq
                for r in snapshot.values()
                if r.signed is not None
                and r.quality is ReadingQuality.OK
                and str(r.device_id) not in existing
            }
            if accepted:
                self._advance_seqs(conn, boundary, accepted)

    @staticmethod
    def _advance_seqs(conn: Connection, boundary: int, accepted: Mapping[DeviceId, int]) -> None:
        """Move ``device_seqs`` on to ``boundary``'s accepted sequence numbers (never back)."""
        kept = {
            str(r[0]): int(r[1])
            for r in conn.execute(
                select(device_seqs.c.device_id, device_seqs.c.boundary).where(
                    device_seqs.c.device_id.in_(sorted(accepted))
                )
            )
        }
        fresh = [
            {"device_id": d, "seq": s, "boundary": boundary}
            for d, s in accepted.items()
            if d not in kept
        ]
        if fresh:
            conn.execute(insert(device_seqs), fresh)
        later = [
            {"d": d, "s": s, "b": boundary}
            for d, s in accepted.items()
            if d in kept and kept[d] < boundary
        ]
        if later:
            conn.execute(
                update(device_seqs)
                .where(device_seqs.c.device_id == bindparam("d"))
                .values(seq=bindparam("s"), boundary=bindparam("b")),
                later,
            )

    def readings_at(self, boundary: int) -> dict[DeviceId, MeterReading]:
        """The snapshot stored at ``boundary``."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(readings).where(readings.c.boundary == boundary)).mappings()
            out: dict[DeviceId, MeterReading] = {}
            for r in rows:
                measured = r["measured_at"]
                if measured.tzinfo is None:  # SQLite drops the zone; we only ever store UTC
                    measured = measured.replace(tzinfo=UTC)
                out[DeviceId(r["device_id"])] = MeterReading(
                    device_id=DeviceId(r["device_id"]),
                    participant=ParticipantId(r["participant"]),
                    bus=BusId(r["bus"]),
                    measured_at=measured,
                    p_w=W(r["p_w"]),
                    import_wh_total=Wh(r["import_wh_total"]),
                    export_wh_total=Wh(r["export_wh_total"]),
                    quality=ReadingQuality(r["quality"]),
                    reason=r["reason"],
                    soc_percent=r["soc_percent"],
                    signed=None if r["signed"] is None else SignedReading.from_ocmf(r["signed"]),
                )
            return out

    def key_blocks_at(self, boundary: int) -> list[int]:
        """The registry blocks the signed readings of ``boundary`` were verified against."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(readings.c.key_block)
                .where(readings.c.boundary == boundary)
                .where(readings.c.key_block.is_not(None))
                .distinct()
            )
            return sorted(int(r[0]) for r in rows)

    def last_seqs(self, before: int) -> dict[DeviceId, int]:
        """The highest sequence number of each device's accepted readings before ``before``.

        Accepted: stored OK (verified) with a sequence number, at a boundary before
        ``before`` [Unix s]; devices without one are left out. Read from ``device_seqs``, one
        row per device; only a device whose latest accepted reading is not before ``before``
        (a boundary checked again) is looked up in its readings.
        """
        with self.engine.connect() as conn:
            latest = conn.execute(
                select(device_seqs.c.device_id, device_seqs.c.seq, device_seqs.c.boundary)
            ).all()
            out = {DeviceId(d): int(s) for d, s, b in latest if int(b) < before}
            again = sorted(str(d) for d, _, b in latest if int(b) >= before)
            if again:
                rows = conn.execute(
                    select(readings.c.device_id, func.max(readings.c.seq))
                    .where(readings.c.device_id.in_(again))
                    .where(readings.c.boundary < before)
                    .where(readings.c.quality == ReadingQuality.OK.value)
                    .where(readings.c.seq.is_not(None))
                    .group_by(readings.c.device_id)
                )
                out.update({DeviceId(r[0]): int(r[1]) for r in rows})
            return out

    # -- settlements -----------------------------------------------------------------------
    def record_intent(
        self,
        interval_id: int,
        batch_id: str,
        batch: Mapping[str, Any],
        record: Mapping[str, Any] | None = None,
    ) -> bool:
        """Persist the settlement intent (and its audit record) before anything is sent.

        Parameters
        ----------
        interval_id : int
            The interval [Unix s].
        batch_id : str
            The batch's content hash (64 hex digits).
        batch : mapping
            The batch in its stored form (amounts [token units], roots); its ``debts``
            (``[account, before, after]``) go to the ``debts`` table in the same transaction.
        record : mapping or None
            The interval's audit record (:meth:`save_audit`), written in the same database
            transaction as the intent: an interval can never be sent without its record.

        Returns
        -------
        bool
            False if the interval already has an intent (nothing is written then).
        """
        try:
            with self._tx() as conn:
                conn.execute(
                    insert(settlements).values(
                        interval_id=interval_id,
                        batch_id=batch_id,
                        state="intent",
                        batch=json.loads(canonical_json(batch)),
                        updated_at=_now(),
                    )
                )
                _put_debts(conn, interval_id, batch)  # the batch's debt changes, same tx
                if record is not None:
                    _put_audit(conn, interval_id, record)
        except IntegrityError:
            return False
        return True

    def mark_settled(
        self,
        interval_id: int,
        *,
        tx_hash: str,
        block_number: int,
        gas_used: int,
        status: str = "settled",
    ) -> None:
        """Record the receipt of a settlement, and its audit record's chain part (one transaction).

        Parameters
        ----------
        interval_id : int
            The interval [Unix s].
        tx_hash : str
            The settling transaction (``0x`` hex; ``""`` if the node no longer knows it).
        block_number : int
            Its block.
        gas_used : int
            Its gas [gas].
        status : str
            How the chain saw it (``settled``, ``already_settled``), for the record.
        """
        chain = {
            "tx_hash": tx_hash,
            "block_number": block_number,
            "gas_used": gas_used,
            "status": status,
        }
        with self._tx() as conn:
            conn.execute(
                update(settlements)
                .where(settlements.c.interval_id == interval_id)
                .values(
                    state="settled",
                    tx_hash=tx_hash,
                    block_number=block_number,
                    gas_used=gas_used,
                    error=None,
                    updated_at=_now(),
                )
            )
            _update_audit(conn, interval_id, chain=chain, error="")

    def settled_since(self, block_number: int) -> list[dict[str, Any]]:
        """Settled rows whose recorded block is ``block_number`` or later, oldest first.

        Parameters
        ----------
        block_number : int
            The first block of the window (the re-check of recent settlements).

        Returns
        -------
        list of dict
            The settlement rows (``interval_id``, ``batch_id``, ``tx_hash``,
            ``block_number``, ...).
        """
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(settlements)
                .where(settlements.c.state == "settled")
                .where(settlements.c.block_number >= block_number)
                .order_by(settlements.c.interval_id)
            ).mappings()
            return [dict(r) for r in rows]

    def reopen_settlement(self, interval_id: int, reason: str) -> bool:
        """Put a settlement the chain lost back to ``intent``, with its audit record's chain part.

        A reorganisation deeper than the finality depth can drop a settlement already
        recorded as final. The row goes back to ``intent`` (receipt fields cleared, ``error``
        = ``reason``) and the audit record's ``chain`` part is cleared and its ``error`` set,
        in one database transaction; the intent is then sent again like any other.

        Parameters
        ----------
        interval_id : int
            The interval [Unix s].
        reason : str
            Why (what the chain says now).

        Returns
        -------
        bool
            False if the row was not ``settled`` (nothing is written then).
        """
        with self._tx() as conn:
            changed = conn.execute(
                update(settlements)
                .where(settlements.c.interval_id == interval_id)
                .where(settlements.c.state == "settled")
                .values(
                    state="intent",
                    tx_hash=None,
                    block_number=None,
                    gas_used=None,
                    error=reason,
                    updated_at=_now(),
                )
            )
            if not changed.rowcount:
                return False
            _update_audit(conn, interval_id, chain=None, error=reason)
        return True

    def mark_failed(self, interval_id: int, error: str) -> None:
        """Record why a settlement failed (it stays resolvable: the intent is kept)."""
        with self._tx() as conn:
            conn.execute(
                update(settlements)
                .where(settlements.c.interval_id == interval_id)
                .values(state="failed", error=error, updated_at=_now())
            )
            _update_audit(conn, interval_id, error=error)

    def settlement_rows(self) -> list[dict[str, Any]]:
        """All settlement rows (intents, settled, failed), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(settlements).order_by(settlements.c.interval_id))
            return [dict(r) for r in rows.mappings()]

    def settled_without_record(self) -> list[dict[str, Any]]:
        """Settlement rows (any state) whose interval has no audit record, oldest first.

        A database written before records were committed with their intent can hold such
        rows (a controller killed between sending and auditing); the cycle fills them in.
        """
        with self.engine.connect() as conn:
            recorded = select(audit.c.interval_id)
            rows = conn.execute(
                select(settlements)
                .where(settlements.c.interval_id.not_in(recorded))
                .order_by(settlements.c.interval_id)
            ).mappings()
            return [dict(r) for r in rows]

    def settlement(self, interval_id: int) -> dict[str, Any] | None:
        """The settlement row of an interval."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(settlements).where(settlements.c.interval_id == interval_id))
                .mappings()
                .first()
            )
        return None if row is None else dict(row)

    def pending_settlements(self) -> list[PendingSettlement]:
        """Intents not yet settled (state intent or failed), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(settlements)
                .where(settlements.c.state != "settled")
                .order_by(settlements.c.interval_id)
            ).mappings()
            return [PendingSettlement(r["interval_id"], r["batch_id"], r["batch"]) for r in rows]

    # -- chain nonces ----------------------------------------------------------------------
    def load_next_nonce(self, address: str) -> int | None:
        """The next nonce persisted for a sender, or ``None``."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(chain_nonces.c.next).where(chain_nonces.c.address == address)
            ).first()
        return None if row is None else int(row[0])

    def save_next_nonce(self, address: str, nonce: int) -> None:
        """Persist a sender's next nonce (called by the chain client after every change).

        Update, else insert; an insert that another process made first (two processes
        opening one site's store at once) turns into the update.
        """
        for attempt in range(2):
            try:
                with self._tx() as conn:
                    updated = conn.execute(
                        update(chain_nonces)
                        .where(chain_nonces.c.address == address)
                        .values(next=nonce)
                    )
                    if not updated.rowcount:
                        conn.execute(insert(chain_nonces).values(address=address, next=nonce))
            except IntegrityError:
                if attempt:
                    raise
                continue  # inserted meanwhile: update it
            return

    # -- audit and ticks -------------------------------------------------------------------
    def save_audit(self, interval_id: int, record: Mapping[str, Any]) -> str:
        """Store (or replace) an interval's audit record; returns its SHA-256.

        The hash covers the record's core (:func:`controller.audit.record_core`: everything
        but the chain receipt and the last send error, which are filled in later).
        """
        with self._tx() as conn:
            return _put_audit(conn, interval_id, record)

    def audit_records(self) -> list[dict[str, Any]]:
        """All audit records, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(audit).order_by(audit.c.interval_id)).mappings()
            return [dict(r) for r in rows]

    def record_ticks(self, boundaries: range, outcome: str, detail: str = "") -> list[int]:
        """Record many ticks in one transaction (missed boundaries); skip those recorded.

        Parameters
        ----------
        boundaries : range
            The boundaries [Unix s] (a long outage can span thousands of them).
        outcome, detail : str
            As for :meth:`record_tick`.

        Returns
        -------
        list of int
            The boundaries recorded now, oldest first.
        """
        if not boundaries:
            return []
        with self._tx() as conn:
            lo, hi = min(boundaries), max(boundaries)
            known = {
                int(r[0])
                for r in conn.execute(
                    select(ticks.c.boundary).where(ticks.c.boundary.between(lo, hi))
                )
            }
            new = [b for b in boundaries if b not in known]
            at = _now()
            if new:
                conn.execute(
                    insert(ticks),
                    [{"boundary": b, "outcome": outcome, "detail": detail, "at": at} for b in new],
                )
        return new

    def record_tick(self, boundary: int, outcome: str, detail: str = "") -> bool:
        """Record a scheduler tick; False if that boundary was already recorded."""
        try:
            with self._tx() as conn:
                conn.execute(
                    insert(ticks).values(
                        boundary=boundary, outcome=outcome, detail=detail, at=_now()
                    )
                )
        except IntegrityError:
            return False
        return True

    def update_tick(self, boundary: int, outcome: str, detail: str = "") -> None:
        """Set the outcome of a tick recorded with :meth:`record_tick`."""
        with self._tx() as conn:
            conn.execute(
                update(ticks)
                .where(ticks.c.boundary == boundary)
                .values(outcome=outcome, detail=detail, at=_now())
            )

    def close_stale_ticks(self, detail: str) -> list[int]:
        """Close ticks left ``running`` by a controller that died: set them ``crashed``.

        Call it only while holding the site's single-instance lock (no live controller can
        be running a tick then).

        Parameters
        ----------
        detail : str
            The reason recorded on each closed tick.

        Returns
        -------
        list of int
            The boundaries closed [Unix s], oldest first.
        """
        with self._tx() as conn:
            stale = [
                int(r[0])
                for r in conn.execute(
                    select(ticks.c.boundary)
                    .where(ticks.c.outcome == "running")
                    .order_by(ticks.c.boundary)
                )
            ]
            if stale:
                conn.execute(
                    update(ticks)
                    .where(ticks.c.boundary.in_(stale))
                    .values(outcome="crashed", detail=detail, at=_now())
                )
        return stale

    def last_tick(self) -> int | None:
        """The latest recorded boundary."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(ticks.c.boundary).order_by(ticks.c.boundary.desc()).limit(1)
            ).first()
        return None if row is None else int(row[0])

    def tick_rows(self) -> list[dict[str, Any]]:
        """All ticks, oldest first."""
        with self.engine.connect() as conn:
            return [
                dict(r) for r in conn.execute(select(ticks).order_by(ticks.c.boundary)).mappings()
            ]

    # -- debts (revision 0003) ----------------------------------------------------------------
    def outstanding_debts(self) -> dict[str, int]:
        """Every account's carried balance [token units], non-zero only (+ = owes COMMUNITY).

        Includes the debts of intents not yet on-chain: they are settled in interval order.
        """
        with self.engine.connect() as conn:
            return _outstanding_debts(conn)

    def save_grid(self, grid_json: str, spec: str) -> str:
        """Store a grid's pandapower JSON once, by content hash; return the hash.

        Parameters
        ----------
        grid_json : str
            The pandapower JSON text (:func:`grid_models.grids.split_base_case`).
        spec : str
            The grid's spec (for messages).

        Returns
        -------
        str
            SHA-256 of the UTF-8 text, 64 hex digits (an audit record's ``grid_hash``).
        """
        digest = hashlib.sha256(grid_json.encode("utf-8")).hexdigest()
        with self._tx() as conn:
            known = conn.execute(select(grids.c.grid_hash).where(grids.c.grid_hash == digest))
            if known.first() is None:
                conn.execute(
                    insert(grids).values(
                        grid_hash=digest, spec=spec, pandapower_json=grid_json, stored_at=_now()
                    )
                )
        return digest

    def grid_json(self, grid_hash: str) -> str | None:
        """The pandapower JSON stored under ``grid_hash`` (``None`` if there is none).

        Parameters
        ----------
        grid_hash : str
            64 hex digits (:meth:`save_grid`).
        """
        with self.engine.connect() as conn:
            row = conn.execute(
                select(grids.c.pandapower_json).where(grids.c.grid_hash == grid_hash)
            ).first()
        return None if row is None else str(row[0])

    def debt_rows(self, account: str | None = None) -> list[dict[str, Any]]:
        """The ``debts`` rows (of one account, or all), in the order they were recorded."""
        query = select(debts).order_by(debts.c.seq)
        if account is not None:
            query = query.where(debts.c.account == account)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # -- signed orders (revision 0005, controller.intake) -----------------------------------
    def signed_order(self, digest: str) -> dict[str, Any] | None:
        """The ``signed_orders`` row of an EIP-712 digest (``0x`` + 64 hex), or ``None``."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(signed_orders).where(signed_orders.c.digest == digest))
                .mappings()
                .first()
            )
        return None if row is None else _signed_row(row)

    def signed_order_with_nonce(self, participant: str, nonce: int) -> dict[str, Any] | None:
        """The row that used ``nonce`` (a uint256) of ``participant``, or ``None``."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(signed_orders)
                    .where(signed_orders.c.participant == participant)
                    .where(signed_orders.c.nonce == str(nonce))
                )
                .mappings()
                .first()
            )
        return None if row is None else _signed_row(row)

    def add_signed_order(
        self, row: Mapping[str, Any], *, cancels: str | None = None, cancelled_from: int = 0
    ) -> tuple[dict[str, Any], bool]:
        """Store a signed message (one transaction, before it is acknowledged).

        Parameters
        ----------
        row : mapping
            The ``signed_orders`` columns (``nonce`` as an int; ``received_at`` UTC).
        cancels : str or None
            For a Cancel: the digest of the accepted order it cancels; that row becomes
            ``cancelled`` (with ``cancel_digest`` and ``cancelled_from``) in the same
            transaction.
        cancelled_from : int
            For a Cancel: the first interval [Unix s] the cancelled order no longer applies to.

        Returns
        -------
        tuple of (dict, bool)
            The row stored under the digest and ``True``; or, when nothing was written, the
            row that was there first and ``False``: the same digest (a resubmission), or the
            same participant and nonce (another message: the caller refuses it), or, for a
            Cancel whose target is no longer ``accepted``, the target row.
        """
        values = {**row, "nonce": str(row["nonce"])}
        try:
            with self._tx() as conn:
                conn.execute(insert(signed_orders).values(**values))
                if cancels is not None:
                    changed = conn.execute(
                        update(signed_orders)
                        .where(signed_orders.c.digest == cancels)
                        .where(signed_orders.c.status == "accepted")
                        .values(
                            status="cancelled",
                            cancel_digest=values["digest"],
                            cancelled_from=cancelled_from,
                        )
                    )
                    if not changed.rowcount:
                        _roll_back_cancel()  # the Cancel's row goes too
        except _NotCancelled:
            target = self.signed_order(cancels or "")
            return (target or {}), False
        except IntegrityError:
            first = self.signed_order(values["digest"]) or self.signed_order_with_nonce(
                str(values["participant"]), int(values["nonce"])
            )
            return (first or {}), False
        stored = self.signed_order(values["digest"])
        return (stored or {}), True

    def signed_orders_at(
        self, interval_id: int, participant: str | None = None
    ) -> list[dict[str, Any]]:
        """The signed orders that apply to the interval starting at ``interval_id`` [Unix s].

        Its ``Order`` messages and the ``StandingOrder`` messages whose window holds its
        start (``valid_from <= interval_id < valid_until``), unless cancelled from that
        interval or an earlier one; oldest first (received, then digest). With
        ``participant``, only that participant's (the intake's credit check, per order).
        """
        query = select(signed_orders)
        if participant is not None:
            query = query.where(signed_orders.c.participant == participant)
        with self.engine.connect() as conn:
            rows = conn.execute(
                query.where(signed_orders.c.kind != "Cancel")
                .where(
                    (signed_orders.c.interval_id == interval_id)
                    | (
                        (signed_orders.c.valid_from <= interval_id)
                        & (signed_orders.c.valid_until > interval_id)
                    )
                )
                .where(
                    signed_orders.c.cancelled_from.is_(None)
                    | (signed_orders.c.cancelled_from > interval_id)
                )
                .order_by(signed_orders.c.received_at, signed_orders.c.digest)
            ).mappings()
            return [_signed_row(r) for r in rows]

    def signed_order_rows(self, participant: str | None = None) -> list[dict[str, Any]]:
        """Every ``signed_orders`` row (of one participant, or all), oldest first."""
        query = select(signed_orders).order_by(signed_orders.c.received_at, signed_orders.c.digest)
        if participant is not None:
            query = query.where(signed_orders.c.participant == participant)
        with self.engine.connect() as conn:
            return [_signed_row(r) for r in conn.execute(query).mappings()]


class _NotCancelled(ControllerError):
    """The target of a Cancel was no longer ``accepted`` (raised to roll the transaction back)."""


def _roll_back_cancel() -> None:
    """Raise :class:`_NotCancelled` (caught by :meth:`Store.add_signed_order`, never escapes)."""
    raise _NotCancelled


def _signed_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A ``signed_orders`` row with ``nonce`` as an int and ``received_at`` in UTC."""
    out = dict(row)
    out["nonce"] = int(out["nonce"])
    received = out["received_at"]
    if isinstance(received, datetime) and received.tzinfo is None:
        out["received_at"] = received.replace(tzinfo=UTC)  # SQLite drops the zone
    return out


def _put_audit(conn: Connection, interval_id: int, record: Mapping[str, Any]) -> str:
    """Replace an interval's audit record inside the caller's transaction; return its hash."""
    clean = json.loads(canonical_json(record))
    digest = content_hash(record_core(clean))
    conn.execute(audit.delete().where(audit.c.interval_id == interval_id))
    conn.execute(insert(audit).values(interval_id=interval_id, record=clean, record_hash=digest))
    return digest


def _update_audit(conn: Connection, interval_id: int, **fields: Any) -> None:  # noqa: ANN401
    """Set unhashed fields (``chain``, ``error``) of an existing record; none: nothing."""
    row = conn.execute(select(audit.c.record).where(audit.c.interval_id == interval_id)).first()
    if row is None:
        return
    record = {**row[0], **json.loads(canonical_json(fields))}
    conn.execute(update(audit).where(audit.c.interval_id == interval_id).values(record=record))


def _put_debts(conn: Connection, interval_id: int, batch: Mapping[str, Any]) -> None:
    """Insert the ``debts`` rows of a batch's stored form (none for most batches)."""
    rows = [
        {
            "interval_id": interval_id,
            "account": str(account),
            "balance_before": int(before),
            "balance_after": int(after),
            "recorded_at": _now(),
        }
        for account, before, after in batch.get("debts") or []
    ]
    if rows:
        conn.execute(insert(debts), rows)


def _outstanding_debts(connection: Connection) -> dict[str, int]:
    """Every account's carried balance now [token units], non-zero ones only.

    The ``balance_after`` of each account's latest ``debts`` row (highest ``seq``): positive
    = it owes COMMUNITY, negative = COMMUNITY owes it (:mod:`market.settlement`, rules 6-9).
    """
    latest = (
        select(debts.c.account, func.max(debts.c.seq).label("seq"))
        .group_by(debts.c.account)
        .subquery()
    )
    rows = connection.execute(
        select(debts.c.account, debts.c.balance_after).join(
            latest, (debts.c.account == latest.c.account) & (debts.c.seq == latest.c.seq)
        )
    )
    return {str(a): int(b) for a, b in rows if b}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:  # noqa: ANN401
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
