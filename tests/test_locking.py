"""The round and write locks are per platform: per schema on PostgreSQL, whose advisory
locks are otherwise database-wide (two platforms, or two test schemas, in one database
would wait on each other's rounds)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from gpupool.scheduler.database import make_engine
from gpupool.scheduler.locking import lock_writes, round_lock


@pytest.fixture
def two_platforms(db_url_factory):
    engines = [make_engine(db_url_factory()), make_engine(db_url_factory())]
    yield engines
    for engine in engines:
        engine.dispose()


@pytest.mark.parametrize("db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)])
def test_round_lock_is_held_per_schema(db_kind, two_platforms):
    first, second = two_platforms
    with round_lock(first, wait=False) as held_first:
        assert held_first
        with round_lock(first, wait=False) as again:
            assert not again  # the same platform: a second round skips
        with round_lock(second, wait=False) as held_second:
            assert held_second  # another schema is another platform
    with round_lock(first, wait=False) as after:
        assert after  # released at the end of the block


@pytest.mark.parametrize("db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)])
def test_write_lock_is_held_per_schema(db_kind, two_platforms):
    first, second = two_platforms
    with Session(first) as holder, Session(second) as other, Session(first) as rival:
        lock_writes(holder)
        other.execute(text("SET LOCAL lock_timeout = '2s'"))
        lock_writes(other)  # would wait for ever on a database-wide key
        rival.execute(text("SET LOCAL lock_timeout = '200ms'"))
        with pytest.raises(Exception, match="lock timeout"):
            lock_writes(rival)
