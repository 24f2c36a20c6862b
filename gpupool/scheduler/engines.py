"""Engines and connections: database URLs, and SQLite's transactions and write lock.

gpupool.scheduler.database builds the unit of work on these; the migrations
(gpupool.scheduler.migrate) and the round lock (gpupool.scheduler.locking) use
them too.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session

from gpupool.model import GpupoolError

# defined beside the SQLAlchemy-free local submission, which must agree with them
from gpupool.scheduler.sqlite_submit import BUSY_TIMEOUT_MS, DEFAULT_URL  # noqa: F401

_LOCATION = "--db"


def normalise_url(url: str | None) -> str:
    """Default to the local SQLite file; send plain postgresql:// to psycopg 3."""
    url = (url or DEFAULT_URL).strip()
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def safe_url(url: str) -> str:
    """The URL as it may be shown to users: password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def make_engine(url: str | None, pool_size: int | None = None) -> Engine:
    """``pool_size``: connections kept open (a server sizes it to its thread pool, so a
    busy moment never opens and closes connections per request); None: SQLAlchemy's."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise GpupoolError(f"not a database URL: {url!r}", location=_LOCATION) from None
    connect_args: dict[str, object] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = 5
    pooling = {} if pool_size is None else {"pool_size": pool_size, "max_overflow": 4}
    try:
        engine = create_engine(parsed, connect_args=connect_args, **pooling)
    except (NoSuchModuleError, ImportError) as exc:
        raise GpupoolError(
            f"unsupported database URL {safe_url(url)}: {exc}", location=_LOCATION
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "before_cursor_execute", _sqlite_before_write)
    return engine


# SQLite's write lock (docs/storage.md, "Transactions and locking"). pysqlite
# opens a transaction only at the first INSERT/UPDATE/DELETE, so what a command
# read before that was read outside any lock, and SELECT ... FOR UPDATE means
# nothing to SQLite: a command could act on a job another had just ended. So
# the driver's own transaction handling is switched off (SQLAlchemy's
# documented pysqlite recipe) and transactions begin here, always with BEGIN
# IMMEDIATE: the database's write lock, waited for up to BUSY_TIMEOUT_MS.
# A connection marked by lock_at_start (a command's unit of work) takes it when
# its transaction begins, so commands run one after another, each reading what
# the previous one committed. Any other (a scheduling round, whose snapshot and
# solve must not hold writers up; schema checks; inspectors) reads outside a
# transaction and takes the lock just before its first write, or when it calls
# lock_write (gpupool.scheduler.locking.lock_writes) before its re-checks.
_AT_START = "gpupool_write_lock_at_start"
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")


def _sqlite_connect(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # no implicit BEGIN: the hooks below decide
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    if connection.get_execution_options().get(_AT_START):
        _begin_immediate(connection.connection.dbapi_connection)


def _sqlite_before_write(connection, _cursor, statement, _parameters, _context, _many) -> None:
    if _is_write(statement):
        _begin_immediate(connection.connection.dbapi_connection)


def _is_write(statement: str) -> bool:
    return statement.lstrip().upper().startswith(_WRITES)


def _begin_immediate(dbapi_connection) -> None:
    if not dbapi_connection.in_transaction:
        dbapi_connection.execute("BEGIN IMMEDIATE")


def lock_at_start(connection: Connection) -> Connection:
    """On SQLite, let ``connection``'s transactions hold the write lock from their
    start (a command's unit of work); returns it."""
    return connection.execution_options(**{_AT_START: True})


def lock_write(session: Session) -> None:
    """Hold SQLite's write lock from now to the end of the transaction (no-op elsewhere).

    A command's unit of work holds it already; a round's takes it here.
    """
    if session.get_bind().dialect.name == "sqlite":
        _begin_immediate(session.connection().connection.dbapi_connection)


def connect_or_fail(engine: Engine):
    """Open a connection, turning any driver failure into a one-line GpupoolError."""
    try:
        return engine.connect()
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise GpupoolError(
            f"cannot connect to database {safe_url(str(engine.url.render_as_string(False)))}: "
            f"{reason}",
            location=_LOCATION,
        ) from None
