"""Ledger entries record the pool a charge was for (ledger_entries.pool_id).

Nullable: award, expiry and carry-over entries have no pool, and charges
written before this revision keep NULL; `report usage --by site` counts those at
the job's last pool, as it did before.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pool_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_ledger_entries_pool_id_pools"), "pools", ["pool_id"], ["id"]
        )


def downgrade() -> None:

    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_ledger_entries_pool_id_pools"), type_="foreignkey")
        batch_op.drop_column("pool_id")
