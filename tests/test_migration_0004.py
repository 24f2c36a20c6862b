"""Migration 0004 (tokens, users.site, per-org submit keys, append-only audit log):
up from 0003 with rows, down, up; SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from gpupool.scheduler.database import current_revision, make_engine
from gpupool.scheduler.migrate import upgrade
from tests.migration_helpers import columns, foreign_keys, migrate

# two organisations, one job with a key, a user and an audit row, as 0003 defines them
ROWS_AT_0003 = [
    "INSERT INTO domains (id, name, weight) VALUES (1, 'general', 1.0)",
    "INSERT INTO orgs (id, name, domain_id) VALUES (1, 'lab', 1)",
    "INSERT INTO orgs (id, name, domain_id) VALUES (2, 'hosp', 1)",
    "INSERT INTO jobs (id, name, org_id, gpus, hours, gpu_types, priority, state,"
    " submitted_at, submitted_by, submit_key)"
    " VALUES (1, '', 1, 8, 1.0, '[]', 0, 'pending', '2026-11-02 10:00:00', 'bob', 'k1')",
    "INSERT INTO users (id, name, role, org_id) VALUES (1, 'bob', 'submitter', 1)",
    "INSERT INTO audit_log (id, at, actor, action, target, outcome)"
    " VALUES (1, '2026-11-02 10:00:00', 'root', 'org.add', 'lab', 'ok')",
]
SECOND_ORG_SAME_KEY = (
    "INSERT INTO jobs (id, name, org_id, gpus, hours, gpu_types, priority, state,"
    " submitted_at, submitted_by, submit_key)"
    " VALUES (2, '', 2, 1, 1.0, '[]', 0, 'pending', '2026-11-02 11:00:00', 'amy', 'k1')"
)


def _uniques(connection, table: str) -> list[tuple]:
    found = inspect(connection).get_unique_constraints(table)
    return sorted((u["name"], tuple(u["column_names"])) for u in found)


def _refused(engine, statement: str) -> str:
    with pytest.raises((DBAPIError, IntegrityError)) as info, engine.begin() as connection:
        connection.execute(text(statement))
    return str(info.value.orig)


def test_upgrade_scopes_keys_per_org_adds_tokens_and_locks_the_audit_log(db_url):
    engine = make_engine(db_url)
    upgrade(engine, "0003")
    with engine.begin() as connection:
        for statement in ROWS_AT_0003:
            connection.execute(text(statement))
        keys_at_0003 = foreign_keys(connection, "jobs")
        assert _uniques(connection, "jobs") == [("uq_jobs_submit_key", ("submit_key",))]
    _refused(engine, SECOND_ORG_SAME_KEY)  # at 0003 a key is global

    upgrade(engine, "0004")
    assert current_revision(engine) == "0004"
    with engine.begin() as connection:
        assert _uniques(connection, "jobs") == [
            ("uq_jobs_org_id_submit_key", ("org_id", "submit_key"))
        ]
        assert foreign_keys(connection, "jobs") == keys_at_0003  # the rebuilt table kept them
        assert columns(connection, "users")[-1] == "site"
        assert columns(connection, "api_tokens") == [
            "id", "token_id", "secret_hash", "user_id", "scopes", "created_at", "created_by",
            "expires_at", "revoked_at", "last_used_at",
        ]  # fmt: skip
        assert foreign_keys(connection, "api_tokens") == [
            ("fk_api_tokens_user_id_users", ("user_id",), "users")
        ]
        connection.execute(text(SECOND_ORG_SAME_KEY))  # another org may use the same key
        kept = connection.execute(text("SELECT id, org_id, submit_key FROM jobs ORDER BY id"))
        assert [tuple(r) for r in kept] == [(1, 1, "k1"), (2, 2, "k1")]
        connection.execute(
            text(
                "INSERT INTO audit_log (id, at, actor, action, target, outcome)"
                " VALUES (2, '2026-11-02 12:00:00', 'root', 'org.add', 'hosp', 'ok')"
            )
        )
    same_org_again = SECOND_ORG_SAME_KEY.replace("(2, '', 2,", "(3, '', 2,")
    _refused(engine, same_org_again)  # but not twice in one org
    for tamper in ("UPDATE audit_log SET outcome = 'ok'", "DELETE FROM audit_log WHERE id = 1"):
        assert "audit_log is append-only" in _refused(engine, tamper)
    if engine.dialect.name == "postgresql":
        assert "append-only" in _refused(engine, "TRUNCATE audit_log")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_log")).scalar() == 2

    migrate(engine, command.downgrade, "0003")
    assert current_revision(engine) == "0003"
    with engine.begin() as connection:
        assert "api_tokens" not in inspect(connection).get_table_names()
        assert "site" not in columns(connection, "users")
        assert _uniques(connection, "jobs") == [("uq_jobs_submit_key", ("submit_key",))]
        assert foreign_keys(connection, "jobs") == keys_at_0003
        # the newer job with a shared key was renamed so the global constraint holds
        keys = connection.execute(text("SELECT id, submit_key FROM jobs ORDER BY id")).all()
        assert [tuple(r) for r in keys] == [(1, "k1"), (2, "k1#2")]
        connection.execute(text("DELETE FROM audit_log WHERE id = 2"))  # no trigger at 0003

    upgrade(engine, "0004")  # and up again
    assert current_revision(engine) == "0004"
    assert "append-only" in _refused(engine, "DELETE FROM audit_log")
    engine.dispose()
