"""A real `gpupool serve` (uvicorn on 127.0.0.1, an ephemeral port) per database backend.

``live`` starts one server per backend (SQLite file, PostgreSQL private schema)
for the whole test session, on a database holding the small platform of
tests/conftest.py and these users, each with a token:

    root   admin
    bob    submitter for lab
    hana   submitter for hosp
    audrey auditor

Tests share it, so each keeps to its own names and rows, and the failed-login
limits are exercised from their own client addresses (X-Forwarded-For, which
the server trusts from 127.0.0.1 as a reverse proxy in front of it would be).
``start_server`` starts further servers (e.g. on a database left at an old
revision) and stops them at teardown.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    PG_ADMIN_URL,
    _admin_execute,
    _pg_problem,
    build_small_platform,
    migrate_by_script,
)

STARTUP_SECONDS = 60  # the machine is shared; a cold start can take several seconds
_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
USERS = {"root": ("admin", None), "bob": ("submitter", "lab"), "hana": ("submitter", "hosp")}
AUDITOR = "audrey"


@dataclass
class Server:
    """A running `gpupool serve` and what tests need to talk to it."""

    url: str
    db: str
    process: subprocess.Popen
    tokens: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def client(self, user: str | None = None, **headers: str) -> httpx.Client:
        if user is not None:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def launch(db: str, *extra: str) -> Server:
    """`gpupool --db DB serve --port 0`; returns once /healthz answers."""
    command = [sys.executable, "-m", "gpupool.cli.main", "--db", db, "serve", "--port", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    process = subprocess.Popen(
        [*command, *extra], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    lines: list[str] = []
    found = threading.Event()
    port: list[int] = []

    def drain() -> None:  # keeps the pipe from filling; the lines stay for assertions
        for line in process.stderr:
            lines.append(line)
            match = _LISTENING.search(line)
            if match and not port:
                port.append(int(match.group(1)))
                found.set()

    threading.Thread(target=drain, daemon=True).start()
    if not found.wait(STARTUP_SECONDS) or process.poll() is not None:
        process.kill()
        raise RuntimeError("gpupool serve did not start:\n" + "".join(lines[-20:]))
    server = Server(url=f"http://127.0.0.1:{port[0]}", db=db, process=process, log=lines)
    # with --workers the parent listens before its workers have started: wait for them
    if not wait_for(lambda: _healthy(server.url), STARTUP_SECONDS):
        server.stop()
        raise RuntimeError("gpupool serve never answered /healthz:\n" + "".join(lines[-20:]))
    return server


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def private_database(backend: str, folder) -> tuple[str, callable]:
    """A fresh database URL and its clean-up."""
    if backend == "sqlite":
        return f"sqlite:///{folder / f'gpupool-{uuid.uuid4().hex[:8]}.db'}", lambda: None
    problem = _pg_problem()
    if problem is not None:
        if os.environ.get("GPUPOOL_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    schema = f"gpupool_s_{uuid.uuid4().hex[:12]}"
    _admin_execute(f"CREATE SCHEMA {schema}")
    url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    return url, lambda: _admin_execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@functools.cache
def _migrated_sqlite_file() -> Path:
    """A SQLite file at the newest migration, made once per test process."""
    from gpupool.scheduler.database import make_engine
    from gpupool.scheduler.migrate import upgrade

    folder = Path(tempfile.mkdtemp(prefix="gpupool-server-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    engine = make_engine(f"sqlite:///{folder / 'migrated.db'}")
    upgrade(engine)
    engine.dispose()
    return folder / "migrated.db"


@functools.cache
def _postgres_script() -> str:
    from gpupool.scheduler.migrate import upgrade_sql

    return upgrade_sql("postgresql")


def migrate_fresh(db: str) -> None:
    """Bring the empty database ``db`` to the newest migration as tests/conftest.py's
    ``db`` does: a copy of a migrated SQLite file, or the offline script replayed."""
    if db.startswith("sqlite:///"):
        shutil.copyfile(_migrated_sqlite_file(), db[len("sqlite:///") :])
    else:
        migrate_by_script(db, _postgres_script())


def populate(db: str) -> dict[str, str]:
    """The small platform, the users above and a token each; returns user -> token."""
    from gpupool.scheduler import permissions, tokens
    from gpupool.scheduler.database import unit_of_work

    migrate_fresh(db)
    raw = {}
    with unit_of_work(db) as session:
        permissions.add_user(session, permissions.OWNER, "root", "admin")
        build_small_platform(session, "root")
        for name, (role, org) in USERS.items():
            if name != "root":
                permissions.add_user(session, "root", name, role, org)
        permissions.add_user(session, "root", AUDITOR, "auditor")
        for name in [*USERS, AUDITOR]:
            raw[name] = tokens.create_token(session, "root", name)[1]
    return raw


def make_token(db: str, user: str, expires=None, scopes=(), now=None) -> str:
    from gpupool.scheduler import tokens
    from gpupool.scheduler.database import unit_of_work

    with unit_of_work(db) as session:
        return tokens.create_token(session, "root", user, expires, scopes, now=now)[1]


def expired_token(db: str, user: str) -> str:
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    return make_token(db, user, dt.timedelta(hours=1), now=an_hour_ago)


def audit_rows(db: str, action: str | None = None, actor: str | None = None) -> list:
    from sqlalchemy import select

    from gpupool.scheduler.database import unit_of_work
    from gpupool.scheduler.orm import AuditLogRow

    query = select(AuditLogRow).order_by(AuditLogRow.id)
    if action is not None:
        query = query.where(AuditLogRow.action == action)
    if actor is not None:
        query = query.where(AuditLogRow.actor == actor)
    with unit_of_work(db) as session:
        return list(session.scalars(query))


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def live(request, tmp_path_factory):
    """One running server per backend for the whole session (see the module docstring)."""
    with populated_server(request.param, tmp_path_factory.mktemp("serve")) as server:
        yield server


@contextlib.contextmanager
def populated_server(kind: str, folder):
    """A server on a private, populated database of ``kind``, its ``tokens`` by user;
    stopped and the database dropped on leaving."""
    db, drop = private_database(kind, folder)
    try:
        tokens = populate(db)
        server = launch(db)
        server.tokens = tokens
        try:
            yield server
        finally:
            server.stop()
    finally:
        drop()


@pytest.fixture(scope="session")
def dashboard_server(tmp_path_factory):
    """``dashboard_server(kind)`` -> (server, history): one server per backend on the
    platform with tests/server/dashboard_history.py's week, started on first use and
    shared for the session by the dashboard's HTTP and browser tests (they add only
    tokens, sessions and audit rows, which no page figure counts)."""
    from tests.server.dashboard_history import start_dashboard_server

    started: dict[str, tuple] = {}

    def get(kind: str):
        if kind not in started:
            started[kind] = start_dashboard_server(kind, tmp_path_factory.mktemp("board"))
        server, history, _stop = started[kind]
        return server, history

    yield get
    for _server, _history, stop in started.values():
        stop()


@pytest.fixture
def start_server():
    """Start extra servers in a test (stopped at its end): ``start_server(db, *options)``."""
    started: list[Server] = []

    def start(db: str, *extra: str) -> Server:
        server = launch(db, *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def wait_for(predicate, seconds: float = 10.0):
    """Poll ``predicate`` until it returns something truthy (log lines land asynchronously)."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)
