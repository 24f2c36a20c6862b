"""The two locks: one scheduling round at a time, and one writer of jobs and books.

Two locks keep rounds correct and cheap:

- the **round lock** (this module) serialises whole rounds, so two daemons never
  solve the same snapshot twice. A caller either waits for it or skips the round.
  It is held outside any transaction, so it never blocks submissions, cancels or
  finishes:
    * PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock`` /
      ``pg_advisory_lock``) on a dedicated connection; the server drops it when
      that connection dies, so a killed scheduler never leaves it behind;
    * SQLite file: ``fcntl.flock`` on ``<database file>.round-lock``; the kernel
      drops it when the process dies;
    * in-memory SQLite: a process-local lock.
- the **write lock** (``lock_writes``) is held by every transaction that ends
  jobs, charges usage or awards vouchers, taken before any job row is locked. A
  round takes it only for its short write phase, which re-checks that the jobs
  are still pending and the GPUs still free. It alone guarantees that no GPU is
  handed out twice, even to callers that run ``run_round`` without the round
  lock, and that no budget or voucher balance is spent twice:
    * PostgreSQL: a transaction-level advisory lock on ``WRITE_LOCK_KEY`` and the schema;
    * SQLite: the database's own write lock (BEGIN IMMEDIATE), which every
      command's unit of work holds from its start anyway
      (gpupool.scheduler.database).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from gpupool.scheduler.engines import connect_or_fail, lock_write

# PostgreSQL advisory locks are database-wide: the second key is the platform's schema,
# so platforms in different schemas of one database (tests, staging) never wait on
# each other's rounds or writes.
KEYS = "(CAST(:key AS integer), hashtext(current_schema()))"
ROUND_LOCK_KEY = 0x6770_7571  # "gpuq": whole rounds (session-level, outside transactions)
WRITE_LOCK_KEY = 0x6770_7570  # "gpup": writers of jobs' ends, the ledger and vouchers
_memory_lock = threading.Lock()


def lock_writes(session: Session) -> None:
    """Hold the write lock until ``session``'s transaction ends (see the module docstring)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SELECT pg_advisory_xact_lock{KEYS}"), {"key": WRITE_LOCK_KEY})
    else:
        lock_write(session)


@contextmanager
def round_lock(
    engine: Engine, wait: bool = True, on_wait: Callable[[], None] | None = None
) -> Iterator[bool]:
    """Hold the round lock for the ``with`` block; yields whether it is held.

    With ``wait=False`` a busy lock yields False at once (the caller skips its
    round). With ``wait=True`` a busy lock calls ``on_wait()`` once (to log that
    we wait) and then blocks until the lock is free.
    """
    if engine.dialect.name == "postgresql":
        lock = _postgres_lock
    elif _sqlite_file(engine) is None:
        lock = _memory
    else:
        lock = _file_lock
    with lock(engine, wait, on_wait or (lambda: None)) as held:
        yield held


@contextmanager
def _postgres_lock(engine: Engine, wait: bool, on_wait) -> Iterator[bool]:
    with connect_or_fail(engine).execution_options(isolation_level="AUTOCOMMIT") as conn:
        key = {"key": ROUND_LOCK_KEY}
        held = bool(conn.execute(text(f"SELECT pg_try_advisory_lock{KEYS}"), key).scalar())
        if not held and wait:
            on_wait()
            conn.execute(text(f"SELECT pg_advisory_lock{KEYS}"), key)
            held = True
        try:
            yield held
        finally:
            if held:
                conn.execute(text(f"SELECT pg_advisory_unlock{KEYS}"), key)


@contextmanager
def _file_lock(engine: Engine, wait: bool, on_wait) -> Iterator[bool]:
    path = _sqlite_file(engine) + ".round-lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        held = _try_flock(descriptor)
        if not held and wait:
            on_wait()
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            held = True
        try:
            yield held
        finally:
            if held:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _try_flock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def _memory(engine: Engine, wait: bool, on_wait) -> Iterator[bool]:
    held = _memory_lock.acquire(blocking=False)
    if not held and wait:
        on_wait()
        held = _memory_lock.acquire()
    try:
        yield held
    finally:
        if held:
            _memory_lock.release()


def _sqlite_file(engine: Engine) -> str | None:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return os.path.abspath(database)
