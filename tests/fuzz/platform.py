"""The demo platform every fuzz call runs against, its fingerprint and its restore.

Built once per database per test session (``gpupool init --demo`` plus users, a
voucher programme, a voucher, two policy versions, a round and a finished job,
so every command has something to act on), then snapshotted: a copy of the
SQLite file, or a second PostgreSQL schema holding a copy of every table. After
a call that changed anything the platform is put back (the SQLite file copied
back; the PostgreSQL schema dropped, migrated afresh and refilled from the copy:
audit_log is append-only, its triggers refuse DELETE and TRUNCATE, and the
restore must not get round them), so every example starts
from the same rows and Hypothesis can replay and shrink it.

The fingerprint is every table's rows, as text, sorted: two databases with the
same fingerprint hold the same data.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin"
SUBMITTER = "alice"  # a submitter for pumc-hospital (registered by `init --demo`)
AUDITOR = "audrey"  # `init --demo`'s auditor
AGENT = "bj-agent"  # `init --demo`'s agent for the Beijing site
VOUCHER_PROGRAMME = "compute-vouchers"

Fingerprint = dict[str, tuple[str, ...]]


def build_demo(url: str) -> None:
    """The demo platform through the CLI itself (in this process: it warms the imports)."""
    from typer.testing import CliRunner

    from gpupool.cli.main import app

    warm_imports()
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, ["--db", url, "--as", ADMIN, *args])
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.stdout

    policies = ROOT / "examples" / "policies"
    # the first admin is ADMIN; the demo registers SUBMITTER (pumc-hospital), an auditor
    # and an agent
    cli("init", "--demo", "--admin", ADMIN)
    cli("token", "create", SUBMITTER, "--scope", "read")  # a token to list and revoke
    cli(
        "programme", "add", VOUCHER_PROGRAMME, "--period", "quarterly", "--budget", "5000",
        "--rate", "0.5", "--exchange", "Ascend-910B=1.5", "--org-cap", "800",
    )  # fmt: skip
    cli("programme", "add", "health-2026", "--period", "yearly", "--rate", "0.3")
    cli("voucher", "award", "pumc-hospital", "--programme", VOUCHER_PROGRAMME, "--amount", "12")
    cli("policy", "apply", str(policies / "fifo.yaml"), "--comment", "first")
    cli("policy", "apply", str(policies / "priority.yaml"), "--comment", "second")
    cli("schedule")
    running = [job for job in _jobs(cli) if job["state"] == "running"]
    assert running, "the demo round started nothing"
    cli("job", "finish", str(running[0]["id"]))
    # a job that stays pending and one to cancel, submitted by the submitter's org
    cli("job", "submit", "--org", "pumc-hospital", "--gpus", "2", "--hours", "1", "--name", "x")


def warm_imports() -> None:
    """Import here what commands import lazily, so that every forked call finds it loaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import rich.console  # noqa: F401
    import rich.progress  # noqa: F401
    import rich.table  # noqa: F401

    import gpupool.simulations.compare  # noqa: F401
    import gpupool.simulations.from_db  # noqa: F401
    import gpupool.simulations.plots  # noqa: F401
    import gpupool.simulations.report  # noqa: F401
    import gpupool.simulations.scenario  # noqa: F401


def _jobs(cli) -> list[dict]:
    import json

    return json.loads(cli("job", "list", "--limit", "1000", "--json"))["jobs"]


@dataclass
class Platform:
    """A built demo platform at ``url`` that can be fingerprinted and put back."""

    url: str
    kind: str  # sqlite | postgres
    baseline: Fingerprint
    _restore: object  # () -> None

    def fingerprint(self) -> Fingerprint:
        return fingerprint(self.url)

    def restore(self) -> None:
        self._restore()
        assert self.fingerprint() == self.baseline, "the platform was not put back"

    def max_id(self, table: str) -> int:
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                return connection.execute(text(f"SELECT MAX(id) FROM {table}")).scalar() or 0
        finally:
            engine.dispose()


def fingerprint(url: str) -> Fingerprint:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            tables = sorted(inspect(connection).get_table_names())
            found = {}
            for table in tables:
                result = connection.execute(text(f'SELECT * FROM "{table}"'))
                columns = list(result.keys())
                found[table] = tuple(
                    sorted(repr(dict(zip(columns, row, strict=True))) for row in result)
                )
            return found
    finally:
        engine.dispose()


def changes(before: Fingerprint, after: Fingerprint) -> list[str]:
    """What differs, table by table, leaving out a refusal's own audit row."""
    found = []
    for table in sorted(set(before) | set(after)):
        old, new = set(before.get(table, ())), set(after.get(table, ()))
        added, removed = new - old, old - new
        if table == "audit_log":
            added = {row for row in added if "'outcome': 'denied'" not in row}
        if added or removed:
            sample = sorted(added or removed)[0]
            found.append(f"{table}: +{len(added)} -{len(removed)} row(s), e.g. {sample[:300]}")
    return found


# ---------------------------------------------------------------------------
# SQLite: the snapshot is a copy of the file
# ---------------------------------------------------------------------------


def sqlite_platform(directory: Path) -> Platform:
    work = directory / "platform.db"
    base = directory / "platform-base.db"
    url = f"sqlite:///{work}"
    build_demo(url)
    shutil.copyfile(work, base)

    def restore() -> None:
        for suffix in ("-journal", "-wal", "-shm"):
            Path(f"{work}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(base, work)

    return Platform(url=url, kind="sqlite", baseline=fingerprint(url), _restore=restore)


# ---------------------------------------------------------------------------
# PostgreSQL: the snapshot is a second schema with a copy of every table
# ---------------------------------------------------------------------------


def postgres_platform(admin_url: str, schema: str) -> Platform:
    base = f"{schema}_base"
    url = f"{admin_url}?options=-csearch_path%3D{schema}"
    build_demo(url)
    admin = create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {base}"))
        for table in _tables_in_order(url):
            connection.execute(
                text(f'CREATE TABLE {base}."{table}" AS SELECT * FROM {schema}."{table}"')
            )
    admin.dispose()
    tables = _tables_in_order(url)

    script = _migration_script()

    def restore() -> None:
        _recreate(admin_url, url, schema, script)
        _copy_back(url, base, tables)

    return Platform(url=url, kind="postgres", baseline=fingerprint(url), _restore=restore)


def _tables_in_order(url: str) -> list[str]:
    """Tables of the current schema, each after those its foreign keys point at."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        return [table.name for table in metadata.sorted_tables]
    finally:
        engine.dispose()


def _copy_back(url: str, base: str, tables: list[str]) -> None:
    """Fill the freshly migrated schema from the snapshot (INSERT only: nothing deleted)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            for table in tables:
                if table in _WRITTEN_BY_MIGRATIONS:
                    connection.execute(text(f'DELETE FROM "{table}"'))
                connection.execute(text(f'INSERT INTO "{table}" SELECT * FROM {base}."{table}"'))
            # move each sequence past the copied rows
            for (sequence,) in connection.execute(_SEQUENCES).all():
                table = sequence.removesuffix("_id_seq")
                connection.execute(
                    text(
                        f"SELECT setval('{sequence}', COALESCE(MAX(id), 0) + 1, false) FROM {table}"
                    )
                )
    finally:
        engine.dispose()


_WRITTEN_BY_MIGRATIONS = {"alembic_version"}
_SEQUENCES = text(
    "SELECT sequence_name FROM information_schema.sequences "
    "WHERE sequence_schema = current_schema() AND sequence_name LIKE '%\\_id\\_seq'"
)


def _migration_script() -> str:
    from gpupool.scheduler.migrate import upgrade_sql

    return upgrade_sql("postgresql")


def _recreate(admin_url: str, url: str, schema: str, script: str) -> None:
    """An empty schema at the newest migration (the offline script: quicker than alembic)."""
    admin = create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    admin.dispose()
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(script)
            connection.commit()
    finally:
        engine.dispose()


def drop_schemas(admin_url: str, schema: str) -> None:
    admin = create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name in (schema, f"{schema}_base"):
            connection.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
    admin.dispose()
