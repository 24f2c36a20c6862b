"""Run the packaged Alembic migrations programmatically (no alembic.ini needed).

Alembic is imported only here, so commands that merely read or submit never
load it.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from gpupool.scheduler.database import connect_or_fail

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

    with connect_or_fail(engine) as connection, connection.begin():
        command.upgrade(_config(connection), revision)


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


def reset(engine: Engine) -> None:
    """Drop every gpupool table, then recreate the schema: `init --force` only."""
    from sqlalchemy import text

    from gpupool.scheduler.orm import Base

    with connect_or_fail(engine) as connection, connection.begin():
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    upgrade(engine)
