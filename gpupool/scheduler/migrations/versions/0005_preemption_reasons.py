"""Placements record why a run was preempted (placements.end_reason, Allocation.preempt_why).

Nullable: runs that ended otherwise, or before this revision, have none, and
`job show` prints nothing extra for them.

Revision ID: 0005_preemption_reasons
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_preemption_reasons"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("placements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("end_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("placements", schema=None) as batch_op:
        batch_op.drop_column("end_reason")
