"""The packaged migrations produce exactly the ORM's schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from gpupool.model import GpupoolError
from gpupool.scheduler.database import current_revision, ensure_schema, make_engine, unit_of_work
from gpupool.scheduler.migrate import script_head, upgrade
from gpupool.scheduler.migrations import HEAD
from gpupool.scheduler.orm import Base, JobRow


def test_head_constant_matches_the_scripts():
    assert script_head() == HEAD


def test_upgrade_on_empty_database_gives_the_orm_schema(db_url):
    engine = make_engine(db_url)
    assert current_revision(engine) is None
    upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        tables = set(inspect(connection).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert current_revision(engine) == HEAD
    engine.dispose()


def test_upgrade_twice_is_a_no_op(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    upgrade(engine)
    assert current_revision(engine) == HEAD
    engine.dispose()


def test_fresh_database_is_upgraded_by_first_use(db_url):
    with unit_of_work(db_url) as session:
        assert session.query(JobRow).count() == 0
    engine = make_engine(db_url)
    assert current_revision(engine) == HEAD
    engine.dispose()


def test_database_with_foreign_tables_is_refused(db_url):
    engine = make_engine(db_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE something_else (x INTEGER)")
    with pytest.raises(GpupoolError, match="has no gpupool revision.*gpupool db upgrade") as info:
        ensure_schema(engine)
    assert info.value.location == "--db"
    engine.dispose()
