"""Placements record why the policy chose their pool (placements.reason, Allocation.why).

Nullable: placements written before this revision have no reason, and `job show`
prints nothing extra for them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table("placements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("placements", schema=None) as batch_op:
        batch_op.drop_column("reason")
