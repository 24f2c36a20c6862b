"""Engines, sessions and the one-transaction unit of work.

Every CLI command and every scheduling round runs inside exactly one
``unit_of_work``: it commits when the block ends normally and rolls back on any
exception, so a failed command leaves nothing half-written.

Schema policy (documented in docs/storage.md): a database with no tables at all
is upgraded to the newest migration automatically the first time a command
opens it; a database at an older revision is refused with a one-line error
asking for ``gpupool db upgrade`` (migrating a shared PostgreSQL database is an
admin's decision, not a side effect of ``job list``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session

from gpupool.model import GpupoolError

DEFAULT_URL = "sqlite:///gpupool.db"
_LOCATION = "--db"
_checked: set[str] = set()  # URLs whose schema revision this process already verified
_checked_engines: weakref.WeakSet[Engine] = weakref.WeakSet()  # engines on those URLs


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
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


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


@contextmanager
def unit_of_work(
    url_or_engine: str | Engine | None, *, check_schema: bool = True
) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception.

    Given a URL, the engine is created and disposed here and the schema
    revision is checked (fresh databases are upgraded first). A refused action
    (gpupool.scheduler.permissions.Denied) is rolled back, then its refusal is
    written to the audit log in a transaction of its own.
    """
    owned = not isinstance(url_or_engine, Engine)
    engine = make_engine(url_or_engine) if owned else url_or_engine
    try:
        if check_schema:
            ensure_schema(engine)
        with (
            connect_or_fail(engine) as connection,
            Session(bind=connection, expire_on_commit=False) as session,
        ):
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
    except GpupoolError as exc:
        # A refused action leaves one trace: its refusal, in a transaction of its own.
        if getattr(exc, "audit_entry", None) is not None:
            from gpupool.scheduler.permissions import record_denial

            record_denial(engine, exc.audit_entry)
        raise
    finally:
        if owned:
            engine.dispose()


def ensure_schema(engine: Engine) -> None:
    """Upgrade an empty database; refuse one whose revision is not the newest."""
    if engine in _checked_engines:  # every request of a server asks: answer without work
        return
    from gpupool.scheduler.migrations import HEAD

    key = engine.url.render_as_string(hide_password=False)
    if key in _checked:
        _checked_engines.add(engine)
        return
    with connect_or_fail(engine) as connection:
        revision = _revision(connection)
        has_tables = bool(inspect(connection).get_table_names())
    if revision is None and not has_tables:
        from gpupool.scheduler.migrate import upgrade

        upgrade(engine)
    elif revision != HEAD:
        found = "no gpupool revision" if revision is None else f"revision {revision}"
        raise GpupoolError(
            f"database {safe_url(key)} has {found}, this gpupool needs {HEAD}: "
            "run `gpupool db upgrade`",
            location=_LOCATION,
        )
    _checked.add(key)
    _checked_engines.add(engine)


def _revision(connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def current_revision(engine: Engine) -> str | None:
    with connect_or_fail(engine) as connection:
        return _revision(connection)


def forget_checks() -> None:
    """Tests that drop or recreate databases call this between uses of one URL."""
    _checked.clear()
    _checked_engines.clear()
