"""Run the packaged Alembic migrations programmatically (no alembic.ini needed).

Alembic is imported only here, so commands that merely read or submit never
load it.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from gpupool.scheduler.engines import connect_or_fail

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` in one transaction; idempotent."""
    from alembic import command

    run(engine, command.upgrade, revision)


def run(engine: Engine, direction, revision: str) -> None:
    """``direction`` (alembic.command.upgrade or downgrade) to ``revision``, in one transaction.

    On SQLite, foreign keys are off while the scripts run: batch mode rebuilds a
    table by copying it and dropping the original, and dropping a table that
    others refer to (jobs) would otherwise fail. Every reference is checked
    before the transaction commits, so a migration cannot leave a dangling one.
    """
    sqlite = engine.dialect.name == "sqlite"
    with connect_or_fail(engine) as connection:
        if sqlite:
            _pragma(connection, "foreign_keys=OFF")
        try:
            with connection.begin():
                direction(_config(connection), revision)
                if sqlite:
                    _check_foreign_keys(connection)
        finally:
            if sqlite:
                _pragma(connection, "foreign_keys=ON")


def _pragma(connection, setting: str) -> None:
    """A PRAGMA outside any transaction (SQLite ignores foreign_keys inside one)."""
    connection.exec_driver_sql(f"PRAGMA {setting}")
    connection.commit()


def _check_foreign_keys(connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        from gpupool.model import GpupoolError

        raise GpupoolError(
            f"the migration would leave {len(broken)} broken reference(s), "
            f"first in table {broken[0][0]}: nothing was changed",
            location="--db",
        )


def upgrade_sql(dialect: str, revision: str = "head") -> str:
    """The migrations up to ``revision`` as one SQL script for ``dialect`` (Alembic's
    offline mode): what `upgrade` would run on an empty database, schema-unqualified,
    so it can be replayed into any schema. The test suite migrates once this way."""
    import io

    from alembic import command

    config = _config()
    config.attributes["dialect"] = dialect
    config.output_buffer = io.StringIO()
    command.upgrade(config, revision, sql=True)
    return config.output_buffer.getvalue()


def script_head() -> str:
    """The newest revision among the packaged scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def reset(engine: Engine) -> dict[str, int]:
    """Drop every gpupool table, then recreate the schema: `init --force` only.

    Returns how many rows each table held, for the audit row `init` writes
    into the new log (the old log is among what is dropped).
    """
    from sqlalchemy import func, inspect, select, text

    from gpupool.scheduler.orm import Base

    with connect_or_fail(engine) as connection, connection.begin():
        present = set(inspect(connection).get_table_names())
        counts = {
            name: connection.scalar(select(func.count()).select_from(table))
            for name, table in sorted(Base.metadata.tables.items())
            if name in present
        }
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    upgrade(engine)
    return counts
