"""Migration 0007_job_classes (job_classes, jobs.job_class): up from the revision
before it with rows, down, up; SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, text

from gpupool.scheduler.database import current_revision, make_engine
from gpupool.scheduler.migrate import upgrade
from tests.migration_helpers import columns, foreign_keys, migrate

# a job as the revision before defines it: it must survive the jobs table's rebuild both ways
ROWS_BEFORE = [
    "INSERT INTO domains (id, name, weight) VALUES (1, 'general', 1.0)",
    "INSERT INTO orgs (id, name, domain_id) VALUES (1, 'lab', 1)",
    "INSERT INTO jobs (id, name, org_id, gpus, hours, gpu_types, priority, state,"
    " submitted_at, submitted_by, submit_key)"
    " VALUES (1, 'j', 1, 8, 2.0, '[]', 0, 'pending', '2026-11-02 10:00:00', 'bob', 'k1')",
]
REVISION = "0007_job_classes"
BEFORE = "0006_payloads"


def _jobs(connection) -> list[tuple]:
    return [tuple(r) for r in connection.execute(text("SELECT id, name, gpus, hours FROM jobs"))]


def test_upgrade_adds_job_classes_and_a_class_per_job_and_downgrade_drops_them(db_url):
    engine = make_engine(db_url)
    upgrade(engine, BEFORE)
    with engine.begin() as connection:
        for statement in ROWS_BEFORE:
            connection.execute(text(statement))
        keys_before = foreign_keys(connection, "jobs")

    upgrade(engine, REVISION)
    assert current_revision(engine) == REVISION
    with engine.begin() as connection:
        assert columns(connection, "job_classes") == ["id", "name", "speeds"]
        assert columns(connection, "jobs")[-1] == "job_class"
        assert foreign_keys(connection, "jobs") == keys_before
        assert _jobs(connection) == [(1, "j", 8, 2.0)]
        assert connection.execute(text("SELECT job_class FROM jobs")).scalar() is None
        connection.execute(
            text("INSERT INTO job_classes (id, name, speeds) VALUES (1, 'llm', '{\"A100\": 2.0}')")
        )
        connection.execute(text("UPDATE jobs SET job_class = 'llm'"))

    migrate(engine, command.downgrade, BEFORE)
    assert current_revision(engine) == BEFORE
    with engine.begin() as connection:
        assert "job_classes" not in inspect(connection).get_table_names()
        assert "job_class" not in columns(connection, "jobs")
        assert _jobs(connection) == [(1, "j", 8, 2.0)]

    upgrade(engine, REVISION)  # and up again
    assert current_revision(engine) == REVISION
    engine.dispose()
