"""Shared fixtures: every test gets its own fresh database.

``db_url`` is parametrised over SQLite (a file in tmp_path) and PostgreSQL (a
fresh schema in the ``test`` database, selected through the URL's search_path,
dropped at teardown), so other engineers' concurrent test runs never see each
other's rows. ``db_url`` is empty; ``db`` is the same URL at the newest
migration, with one user: ``admin``, an admin (what `gpupool init --admin admin`
leaves, less its token; there is no state in which everyone is admin).
``session`` is a Session on ``db`` inside one unit of work.

Migrating costs far more than copying, so the test run migrates once per
database kind: SQLite migrates a template file, adds the admin, and each ``db``
copies it; PostgreSQL replays the migrations' offline SQL script into each fresh
schema (tests/test_migrations.py checks that this gives the schema ``upgrade``
gives). A template database cloned with ``CREATE DATABASE ... TEMPLATE`` was
tried and was slower: it writes and fsyncs the whole database each time.

When PostgreSQL does not answer, its parameters are skipped, unless
GPUPOOL_REQUIRE_POSTGRES=1 (CI), where they fail loudly.
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

PG_ADMIN_URL = os.environ.get(
    "GPUPOOL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_pg_state: dict[str, str | None] = {}


def _pg_problem() -> str | None:
    """None when PostgreSQL answers, else why not (probed once per test session)."""
    if "problem" not in _pg_state:
        from sqlalchemy import create_engine, text

        try:
            engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            engine.dispose()
            _pg_state["problem"] = None
        except Exception as exc:  # any driver or network failure means "unreachable"
            _pg_state["problem"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return _pg_state["problem"]


def _admin_execute(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(sql))
    engine.dispose()


def _require_postgres() -> None:
    """Skip (or, under GPUPOOL_REQUIRE_POSTGRES=1, fail) when PostgreSQL does not answer."""
    problem = _pg_problem()
    if problem is not None:
        if os.environ.get("GPUPOOL_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_kind(request) -> str:
    """The parametrised database kind, ``"sqlite"`` or ``"postgres"`` (checked to answer)."""
    if request.param == "postgres":
        _require_postgres()
    return request.param


# For a test (or, as ``pytestmark``, a module) whose logic SQLite proves as well as
# PostgreSQL would (validation before any write, permissions, rendering): it runs on
# SQLite only. Keep PostgreSQL for what is database-specific (locking, triggers, types,
# decimals, migrations, key races) and at least one case per command group.
SQLITE_ONLY = pytest.mark.parametrize("db_kind", ["sqlite"])


@pytest.fixture
def db_url_factory(db_kind, tmp_path):
    """Makes URLs of empty, private databases of the parametrised kind (dropped at teardown)."""
    schemas: list[str] = []

    def make() -> str:
        name = uuid.uuid4().hex[:12]
        if db_kind == "sqlite":
            return f"sqlite:///{tmp_path / f'gpupool-test-{name}.db'}"
        schemas.append(f"gpupool_t_{name}")
        _admin_execute(f"CREATE SCHEMA {schemas[-1]}")
        return f"{PG_ADMIN_URL}?options=-csearch_path%3D{schemas[-1]}"

    make.kind = db_kind
    yield make
    for schema in schemas:
        _admin_execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


ADMIN = "admin"  # the admin every ``db`` starts with


@pytest.fixture
def db_url(db_url_factory):
    """A URL of an empty, private database."""
    return db_url_factory()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """A SQLite file migrated to the newest revision (no users)."""
    from gpupool.scheduler.database import make_engine
    from gpupool.scheduler.migrate import upgrade

    path = tmp_path_factory.mktemp("template") / "migrated.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def sqlite_admin_template(sqlite_template):
    """``sqlite_template`` with the admin: what every SQLite ``db`` copies."""
    path = sqlite_template.with_name("migrated-admin.db")
    shutil.copyfile(sqlite_template, path)
    add_users(f"sqlite:///{path}", (ADMIN, "admin"))
    return path


@pytest.fixture(scope="session")
def postgres_migration_sql():
    """The migrations as one PostgreSQL script (schema-unqualified)."""
    from gpupool.scheduler.migrate import upgrade_sql

    return upgrade_sql("postgresql")


def migrate_by_script(url: str, script: str) -> None:
    """Run the offline migration script in the schema ``url``'s search_path names."""
    from sqlalchemy import create_engine

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as connection:
        connection.exec_driver_sql(script)
        connection.commit()
    engine.dispose()


@pytest.fixture
def db(db_url, request):
    """A private database at the newest migration (copied, not migrated: see above),
    with the admin ``admin``."""
    if db_url.startswith("sqlite:///"):
        shutil.copyfile(
            request.getfixturevalue("sqlite_admin_template"), db_url[len("sqlite:///") :]
        )
    else:
        migrate_by_script(db_url, request.getfixturevalue("postgres_migration_sql"))
        add_users(db_url, (ADMIN, "admin"))
    return db_url


def add_users(url: str, *users: tuple) -> None:
    """Register users, each ``(name, role[, org[, site]])``, as the local owner would."""
    from gpupool.scheduler.database import unit_of_work
    from gpupool.scheduler.permissions import OWNER, add_user

    with unit_of_work(url) as session:
        for name, role, *where in users:
            add_user(session, OWNER, name, role, *where)


@pytest.fixture
def session(db):
    """A Session on ``db`` inside one transaction, committed at teardown."""
    from gpupool.scheduler.database import unit_of_work

    with unit_of_work(db) as session:
        yield session


def build_small_platform(session, actor: str = "admin") -> None:
    """Two pools, two domains, two orgs: small enough to work figures by hand.

    p-a100: 16 A100 (speed 1.0) on 2 nodes of 8, 10.00 per GPU-hour;
    p-h100: 8 H100 (speed 2.0) on 1 node, 20.00 per GPU-hour;
    medical (weight 3) / hosp (budget 1000); general (weight 1) / lab (no budget).
    """
    from gpupool.scheduler import service

    service.add_gpu_type(session, actor, "A100", "NVIDIA", 80, 1.0)
    service.add_gpu_type(session, actor, "H100", "NVIDIA", 80, 2.0)
    service.add_pool(session, actor, "p-a100", "Beijing", "A100", 16, 8, 10.0)
    service.add_pool(session, actor, "p-h100", "Shanghai", "H100", 8, 8, 20.0)
    service.add_domain(session, actor, "medical", 3.0)
    service.add_domain(session, actor, "general", 1.0)
    service.add_org(session, actor, "hosp", "medical", 1000.0)
    service.add_org(session, actor, "lab", "general", None)


@pytest.fixture
def platform(db):
    """``db`` holding build_small_platform's platform (committed)."""
    from gpupool.scheduler.database import unit_of_work

    with unit_of_work(db) as session:
        build_small_platform(session)
    return db
