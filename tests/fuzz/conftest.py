"""The fuzz suite's demo platform: built once per database per test session.

``fuzz_platform`` is parametrised like ``db_url`` in tests/conftest.py (SQLite,
and PostgreSQL marked ``postgres``, skipped when the server does not answer
unless GPUPOOL_REQUIRE_POSTGRES=1) but lives for the whole session: building
the platform costs seconds, putting it back after an example milliseconds.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from tests.conftest import PG_ADMIN_URL, _admin_execute, _pg_problem
from tests.fuzz import platform as fuzz


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def fuzz_platform(request, tmp_path_factory):
    if request.param == "sqlite":
        built = fuzz.sqlite_platform(tmp_path_factory.mktemp("fuzz-sqlite"))
        built.known = _known(built)
        yield built
        return
    problem = _pg_problem()
    if problem is not None:
        if os.environ.get("GPUPOOL_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    schema = f"gpupool_fz_{uuid.uuid4().hex[:12]}"
    _admin_execute(f"CREATE SCHEMA {schema}")
    try:
        built = fuzz.postgres_platform(PG_ADMIN_URL, schema)
        built.known = _known(built)
        yield built
    finally:
        fuzz.drop_schemas(PG_ADMIN_URL, schema)


def _known(built):
    from typer.testing import CliRunner

    from gpupool.cli.main import app
    from tests.fuzz.drivers import Known

    result = CliRunner().invoke(
        app, ["--db", built.url, "--as", fuzz.ADMIN, "job", "list", "--limit", "1000", "--json"]
    )
    jobs = json.loads(result.stdout)["jobs"]
    listed = CliRunner().invoke(
        app, ["--db", built.url, "--as", fuzz.ADMIN, "token", "list", "--json"]
    )

    def ids(*states):
        return tuple(job["id"] for job in jobs if job["state"] in states)

    return Known(
        running=ids("running"),
        pending=ids("pending"),
        ended=ids("completed", "failed", "cancelled", "timed_out"),
        next_job=max(job["id"] for job in jobs) + 1,
        tokens=tuple(token["id"] for token in json.loads(listed.stdout)),
    )
