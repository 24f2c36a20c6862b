"""Identity and authorisation: API tokens, agents' sites, per-org submit keys, append-only audit.

- ``api_tokens``: one row per token (gpupool.scheduler.tokens); the secret is
  stored only as a scrypt hash.
- ``users.site``: the one site an ``agent`` acts for (NULL for other roles).
- ``jobs``: submit keys are unique per organisation, ``(org_id, submit_key)``,
  instead of globally: another organisation's key neither collides nor
  reveals its job.
- ``audit_log`` is append-only in the database itself: a trigger refuses
  UPDATE and DELETE (and TRUNCATE on PostgreSQL).

Downgrade makes submit keys globally unique again: where two organisations
share a key, every job but the oldest gets ``#<job id>`` appended to it (so
the downgrade never fails on data); agents keep their rows but lose their
site, and every token is dropped.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

APPEND_ONLY = "audit_log is append-only"
_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION gpupool_audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{APPEND_ONLY}: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql
"""
_PG_TRIGGERS = {
    "audit_log_no_update_delete": "BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW",
    "audit_log_no_truncate": "BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT",
}
_SQLITE_TRIGGERS = {"audit_log_no_update": "UPDATE", "audit_log_no_delete": "DELETE"}


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=256), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_id", name=op.f("uq_api_tokens_token_id")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_user_id"), ["user_id"], unique=False)

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("site", sa.String(length=64), nullable=True))

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_jobs_submit_key"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_jobs_org_id_submit_key"), ["org_id", "submit_key"]
        )

    _create_audit_triggers()


def downgrade() -> None:
    _drop_audit_triggers()

    op.execute(
        "UPDATE jobs SET submit_key = SUBSTR(submit_key, 1, 100) || '#' || CAST(id AS VARCHAR)"
        " WHERE id NOT IN (SELECT MIN(id) FROM jobs GROUP BY submit_key)"
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_jobs_org_id_submit_key"), type_="unique")
        batch_op.create_unique_constraint(batch_op.f("uq_jobs_submit_key"), ["submit_key"])

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("site")

    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_user_id"))
    op.drop_table("api_tokens")


def _create_audit_triggers() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for name, when in _PG_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION gpupool_audit_log_append_only()"
            )
        return
    for name, operation in _SQLITE_TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {name} BEFORE {operation} ON audit_log "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: {operation} refused'); END"
        )


def _drop_audit_triggers() -> None:
    if op.get_context().dialect.name == "postgresql":
        for name in _PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS gpupool_audit_log_append_only()")
        return
    for name in _SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
