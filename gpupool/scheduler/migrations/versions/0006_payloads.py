"""Sites run the work: job payloads, what agents report of each run, sites' heartbeats.

- ``jobs.payload``: what to run (JSON; NULL for jobs that only book GPUs).
- ``placements``: the GPU indices an agent was given (``devices``), the run's real
  start, its exit code and a one-line detail, as the site's agent reported them.
- ``sites``: each site whose agent called in, with when it was last heard from.

Revision ID: 0006_payloads
Revises: 0005_preemption_reasons
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_payloads"
down_revision = "0005_preemption_reasons"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.JSON(), nullable=True))
    with op.batch_alter_table("placements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("devices", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("run_started_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("exit_code", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("run_detail", sa.String(length=256), nullable=True))
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("agent", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
        sa.UniqueConstraint("name", name=op.f("uq_sites_name")),
    )


def downgrade() -> None:
    op.drop_table("sites")
    with op.batch_alter_table("placements", schema=None) as batch_op:
        for column in ("run_detail", "exit_code", "run_started_at", "devices"):
            batch_op.drop_column(column)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("payload")
