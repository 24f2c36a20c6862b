"""Job classes: how fast each kind of job runs on each GPU type (Gavel's throughput matrix).

- ``job_classes``: one row per class, its speeds as JSON (GPU type name -> speed).
- ``jobs.job_class``: the class a job names (NULL: none; each type's own speed).

Downgrade drops both: jobs run at their GPU types' own speeds again.

Revision ID: 0007_job_classes
Revises: 0006_payloads
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_job_classes"
down_revision = "0006_payloads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_classes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("speeds", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_classes")),
        sa.UniqueConstraint("name", name=op.f("uq_job_classes_name")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("job_class", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("job_class")
    op.drop_table("job_classes")
