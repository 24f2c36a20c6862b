"""Alembic environment, run programmatically by gpupool.scheduler.migrate.

The caller passes an open connection in ``config.attributes["connection"]``;
there is no alembic.ini and no URL here, so the same migrations run against
any database the CLI is pointed at.
"""

from alembic import context

from gpupool.scheduler.orm import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode recreates tables instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
