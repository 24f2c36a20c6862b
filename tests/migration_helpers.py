"""What the migration tests read of a schema, and running one Alembic step."""

from __future__ import annotations

from sqlalchemy import inspect

from gpupool.scheduler.migrate import run


def columns(connection, table: str) -> list[str]:
    return [c["name"] for c in inspect(connection).get_columns(table)]


def foreign_keys(connection, table: str) -> list[tuple]:
    keys = inspect(connection).get_foreign_keys(table)
    return sorted((k["name"], tuple(k["constrained_columns"]), k["referred_table"]) for k in keys)


def migrate(engine, direction, revision: str) -> None:
    """``direction``: alembic.command.upgrade or downgrade, to ``revision``."""
    run(engine, direction, revision)
