"""Sessions and the one-transaction unit of work (engines: gpupool.scheduler.engines).

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
from typing import Literal

from sqlalchemy import Engine, inspect, text
from sqlalchemy.orm import Session

from gpupool.model import GpupoolError
from gpupool.scheduler.engines import (  # noqa: F401  (the names callers import from here)
    DEFAULT_URL,
    connect_or_fail,
    lock_at_start,
    lock_write,
    make_engine,
    normalise_url,
    safe_url,
)

_LOCATION = "--db"
_checked: set[str] = set()  # URLs whose schema revision this process already verified
_checked_engines: weakref.WeakSet[Engine] = weakref.WeakSet()  # engines on those URLs


@contextmanager
def unit_of_work(
    url_or_engine: str | Engine | None,
    *,
    check_schema: bool = True,
    write_lock: Literal["at_start", "when_writing"] = "at_start",
) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception.

    On SQLite the transaction holds the database's write lock from its start
    (``write_lock="at_start"``: commands), or from its first write or
    lock_write (``"when_writing"``: rounds, and commands that only read).

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
            if write_lock == "at_start":
                lock_at_start(connection)
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
