"""Migration 0002 (placements.reason): up from 0001 with a row, down, up; SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from gpupool.scheduler.database import current_revision, make_engine
from gpupool.scheduler.migrate import upgrade
from tests.migration_helpers import columns, foreign_keys, migrate

# one row per table a placement needs, as 0001 defines them (plain SQL: no ORM,
# which already has the new column)
ROWS_AT_0001 = [
    "INSERT INTO gpu_types (id, name, vendor, memory_gb, speed, domestic)"
    " VALUES (1, 'A100', 'nvidia', 80, 1.0, false)",
    "INSERT INTO pools (id, name, site, gpu_type_id, gpus, gpus_per_node, price_per_gpu_hour)"
    " VALUES (1, 'p-a100', 'bj', 1, 8, 8, 10)",
    "INSERT INTO domains (id, name, weight) VALUES (1, 'general', 1.0)",
    "INSERT INTO orgs (id, name, domain_id) VALUES (1, 'lab', 1)",
    "INSERT INTO jobs (id, name, org_id, gpus, hours, gpu_types, priority, state,"
    " submitted_at, submitted_by, submit_key)"
    " VALUES (1, '', 1, 8, 1.0, '[]', 0, 'running', '2026-11-02 10:00:00', 'bob', 'k1')",
    "INSERT INTO placements (id, job_id, pool_id, nodes, started_at)"
    " VALUES (1, 1, 1, '[[0, 8]]', '2026-11-02 10:00:00')",
]


def test_upgrade_keeps_old_placements_without_a_reason_and_downgrade_drops_the_column(db_url):
    engine = make_engine(db_url)
    upgrade(engine, "0001")
    with engine.begin() as connection:
        for statement in ROWS_AT_0001:
            connection.execute(text(statement))
        keys_at_0001 = foreign_keys(connection, "placements")
        assert "reason" not in columns(connection, "placements")

    upgrade(engine, "0002")  # later revisions have their own tests
    assert current_revision(engine) == "0002"
    with engine.begin() as connection:
        assert columns(connection, "placements")[-1] == "reason"
        old = connection.execute(text("SELECT job_id, reason FROM placements")).all()
        assert [tuple(row) for row in old] == [(1, None)]  # placed before: no reason
        connection.execute(text("UPDATE placements SET reason = 'first pool by name'"))

    migrate(engine, command.downgrade, "0001")
    assert current_revision(engine) == "0001"
    with engine.connect() as connection:
        assert "reason" not in columns(connection, "placements")
        # SQLite's batch mode rebuilds the table: the row and the named keys survive
        assert connection.execute(text("SELECT id, job_id FROM placements")).all() == [(1, 1)]
        assert foreign_keys(connection, "placements") == keys_at_0001

    upgrade(engine, "0002")  # and up again: the column comes back empty
    with engine.connect() as connection:
        assert connection.execute(text("SELECT reason FROM placements")).all() == [(None,)]
    engine.dispose()
