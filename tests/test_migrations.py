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


def _schema_facts(url: str) -> dict:
    """Everything the inspector reports about every table, plus PostgreSQL triggers."""
    engine = make_engine(url)
    with engine.connect() as connection:
        inspector = inspect(connection)
        facts = {
            table: {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in inspector.get_columns(table)
                ],
                "pk": inspector.get_pk_constraint(table),
                "fks": sorted(map(repr, inspector.get_foreign_keys(table))),
                "indexes": sorted(map(repr, inspector.get_indexes(table))),
                "unique": sorted(map(repr, inspector.get_unique_constraints(table))),
                "checks": sorted(map(repr, inspector.get_check_constraints(table))),
            }
            for table in sorted(inspector.get_table_names())  # catalog order moves with writes
        }
        if connection.dialect.name == "postgresql":
            facts["triggers"] = sorted(
                connection.exec_driver_sql(
                    "SELECT tgname, tgrelid::regclass::text FROM pg_trigger "
                    "WHERE NOT tgisinternal AND tgrelid::regclass::text NOT LIKE '%%.%%'"
                ).all()
            )
        revision = current_revision(engine)
    engine.dispose()
    # Serial defaults name their schema's sequence; the schema names differ by design.
    return {"revision": revision, "facts": repr(facts).replace(url.split("%3D")[-1], "S")}


def test_the_test_fixture_database_equals_an_upgraded_one(db, db_url_factory):
    """The suite copies or replays migrations instead of running them per test
    (tests/conftest.py); the result must be exactly what `upgrade` makes."""
    fresh = db_url_factory()
    engine = make_engine(fresh)
    upgrade(engine)
    engine.dispose()
    assert _schema_facts(db)["revision"] == HEAD
    assert _schema_facts(db) == _schema_facts(fresh)
