"""`gpupool job submit` on a local SQLite file through the standard library's sqlite3.

Importing SQLAlchemy and mapping gpupool's tables costs most of a second of
CPU, several times the submission itself, and scripts submit jobs one process
each. This path, for the platform owner (the local CLI without ``--as``) on a
plain ``sqlite:///FILE`` at the current schema revision, does what
gpupool.scheduler.service.submit_job does with the same rules
(gpupool.scheduler.submission: checks, per-organisation key, one insert)
through a few small SQL statements, in one transaction holding SQLite's write
lock from its start (BEGIN IMMEDIATE), as every command's unit of work does.
Anything else (a server, ``--as``, another database, a file that does not exist
yet or is at another revision) answers None and goes the usual way, which
creates, upgrades or refuses as it always has.

Stored as SQLAlchemy stores it: times as naive UTC text with microseconds,
GPU types as JSON text (tests/test_sqlite_submit.py compares whole rows).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from collections.abc import Sequence
from types import SimpleNamespace

from gpupool.scheduler import clock, submission
from gpupool.scheduler.grants import OWNER_GRANT

DEFAULT_URL = "sqlite:///gpupool.db"
BUSY_TIMEOUT_MS = 10_000  # how long a command waits for SQLite's write lock
_PREFIX = "sqlite:///"


def sqlite_file(url: str | None) -> str | None:
    """The existing file a plain ``sqlite:///FILE`` URL (or the default) names, else None."""
    url = (url or DEFAULT_URL).strip()
    if not url.startswith(_PREFIX) or "?" in url:
        return None
    path = url[len(_PREFIX) :]
    return path if path and os.path.isfile(path) else None


def submit_as_owner(path: str, request: submission.JobRequest) -> tuple[int, bool] | None:
    """``(job id, created)``; None when the file is not at the current revision.

    Raises the same GpupoolError as the SQLAlchemy path for bad input (nothing
    written), and sqlite3.Error for a database problem (rolled back).
    """
    from gpupool.scheduler.migrations import HEAD

    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        connection.execute("PRAGMA foreign_keys=ON")
        if _revision(connection) != HEAD:
            return None
        connection.execute("BEGIN IMMEDIATE")
        try:
            store = _Store(connection)
            result = submission.submit_all(store, OWNER_GRANT, [request], clock.utcnow())[0]
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return result
    finally:
        connection.close()


def _revision(connection: sqlite3.Connection) -> str | None:
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:  # no such table: a new or foreign file
        return None
    return row[0] if row else None


_INSERT = (
    "INSERT INTO jobs (name, org_id, gpus, hours, gpu_types, priority, state,"
    " submitted_at, submitted_by, submit_key, payload, job_class)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (org_id, submit_key) DO NOTHING RETURNING id, org_id, submit_key"
)
_BY_KEY = (
    "SELECT id, org_id, gpus, hours, gpu_types, name, priority, payload, job_class FROM jobs"
    " WHERE org_id = ? AND submit_key = ?"
)


class _Store:
    """gpupool.scheduler.submission's store on a sqlite3 connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def _one(self, sql: str, parameters: Sequence) -> tuple | None:
        return self.connection.execute(sql, parameters).fetchone()

    def org_id(self, name: str) -> int | None:
        row = self._one("SELECT id FROM orgs WHERE name = ?", (name,))
        return None if row is None else row[0]

    def gpu_type_name(self, name: str) -> str | None:
        row = self._one("SELECT name FROM gpu_types WHERE name = ?", (name,))
        return None if row is None else row[0]

    def job_class_name(self, name: str) -> str | None:
        row = self._one("SELECT name FROM job_classes WHERE name = ?", (name,))
        return None if row is None else row[0]

    def pool_sizes(self, types: Sequence[str]) -> list[tuple[int, int]]:
        if not types:
            return self.connection.execute("SELECT gpus, gpus_per_node FROM pools").fetchall()
        marks = ", ".join("?" for _ in types)
        sql = (
            "SELECT pools.gpus, pools.gpus_per_node FROM pools JOIN gpu_types"
            f" ON pools.gpu_type_id = gpu_types.id WHERE gpu_types.name IN ({marks})"
        )
        return self.connection.execute(sql, list(types)).fetchall()

    def insert_jobs(self, values: list[dict]) -> dict[tuple, int]:
        inserted = {}
        for row in values:
            found = self._one(_INSERT, _insert_parameters(row))
            if found is not None:
                inserted[(found[1], found[2])] = found[0]
        return inserted

    def job_by_key(self, org_id: int, key: str):
        row = self._one(_BY_KEY, (org_id, key))
        if row is None:
            return None
        job_id, org_id, gpus, hours, gpu_types, name, priority, payload, job_class = row
        return SimpleNamespace(
            id=job_id,
            org_id=org_id,
            gpus=gpus,
            hours=hours,
            gpu_types=_json(gpu_types),
            name=name,
            priority=priority,
            payload=_json(payload),
            job_class=job_class,
        )


def _json(text: str | None):
    return None if text is None else json.loads(text)


def _insert_parameters(row: dict) -> tuple:
    return (
        row["name"],
        row["org_id"],
        row["gpus"],
        row["hours"],
        json.dumps(row["gpu_types"]),
        row["priority"],
        row["state"],
        _stored_time(row["submitted_at"]),
        row["submitted_by"],
        row["submit_key"],
        json.dumps(row["payload"]),  # None as JSON null, as SQLAlchemy's JSON type stores it
        row["job_class"],
    )


def _stored_time(moment: dt.datetime) -> str:
    """As SQLAlchemy's SQLite DateTime stores gpupool's UtcDateTime: naive UTC text."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
