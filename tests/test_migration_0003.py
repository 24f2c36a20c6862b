"""Migration 0003 (ledger_entries.pool_id): up from 0002 with a charge, down, up; both databases."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from gpupool.scheduler.database import current_revision, make_engine
from gpupool.scheduler.migrate import upgrade
from tests.migration_helpers import columns, foreign_keys, migrate

# a charge and what it refers to, as 0002 defines the tables (plain SQL: the ORM
# already has the new column)
ROWS_AT_0002 = [
    "INSERT INTO gpu_types (id, name, vendor, memory_gb, speed, domestic)"
    " VALUES (1, 'A100', 'nvidia', 80, 1.0, false)",
    "INSERT INTO pools (id, name, site, gpu_type_id, gpus, gpus_per_node, price_per_gpu_hour)"
    " VALUES (1, 'p-a100', 'bj', 1, 8, 8, 10)",
    "INSERT INTO domains (id, name, weight) VALUES (1, 'general', 1.0)",
    "INSERT INTO orgs (id, name, domain_id) VALUES (1, 'lab', 1)",
    "INSERT INTO jobs (id, name, org_id, gpus, hours, gpu_types, priority, state,"
    " submitted_at, submitted_by, submit_key)"
    " VALUES (1, '', 1, 8, 1.0, '[]', 0, 'completed', '2026-11-02 10:00:00', 'bob', 'k1')",
    "INSERT INTO ledger_entries (id, job_id, org_id, domain, gpu_type, period, kind, cost,"
    " subsidy, org_pays, effective_gpu_hours, created_at, note)"
    " VALUES (1, 1, 1, 'general', 'A100', '2026-Q4', 'charge', 80, 0, 80, 8.0,"
    " '2026-11-02 11:00:00', '')",
]


def test_upgrade_keeps_old_charges_without_a_pool_and_downgrade_drops_the_column(db_url):
    engine = make_engine(db_url)
    upgrade(engine, "0002")
    with engine.begin() as connection:
        for statement in ROWS_AT_0002:
            connection.execute(text(statement))
        keys_at_0002 = foreign_keys(connection, "ledger_entries")
        assert "pool_id" not in columns(connection, "ledger_entries")

    upgrade(engine, "0003")
    assert current_revision(engine) == "0003"
    with engine.begin() as connection:
        assert columns(connection, "ledger_entries")[-1] == "pool_id"
        new_key = ("fk_ledger_entries_pool_id_pools", ("pool_id",), "pools")
        assert foreign_keys(connection, "ledger_entries") == sorted([*keys_at_0002, new_key])
        old = connection.execute(text("SELECT id, pool_id FROM ledger_entries")).all()
        assert [tuple(row) for row in old] == [(1, None)]  # charged before: no pool
        connection.execute(text("UPDATE ledger_entries SET pool_id = 1"))

    migrate(engine, command.downgrade, "0002")
    assert current_revision(engine) == "0002"
    with engine.connect() as connection:
        assert "pool_id" not in columns(connection, "ledger_entries")
        # SQLite's batch mode rebuilds the table: the row and the named keys survive
        kept = connection.execute(text("SELECT id, job_id, cost FROM ledger_entries")).all()
        assert [tuple(row) for row in kept] == [(1, 1, 80.0)]
        assert foreign_keys(connection, "ledger_entries") == keys_at_0002

    upgrade(engine, "0003")  # and up again: the column comes back empty
    with engine.connect() as connection:
        assert connection.execute(text("SELECT pool_id FROM ledger_entries")).all() == [(None,)]
    engine.dispose()
