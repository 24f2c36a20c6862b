"""Alembic environment, run programmatically by gpupool.scheduler.migrate.

The caller passes an open connection in ``config.attributes["connection"]``;
there is no alembic.ini and no URL here, so the same migrations run against
any database the CLI is pointed at. Offline (``migrate.upgrade_sql``), the
caller names a dialect in ``config.attributes["dialect"]`` and the migrations
are written as SQL instead of run.
"""

from alembic import context

from gpupool.scheduler.orm import Base

if context.is_offline_mode():
    context.configure(
        dialect_name=context.config.attributes["dialect"],
        target_metadata=Base.metadata,
        literal_binds=True,
    )
else:
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
