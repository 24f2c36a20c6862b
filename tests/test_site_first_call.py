"""Two agents of a new site calling in at once: one row, no error (PostgreSQL, where two
transactions really run side by side; SQLite serialises writers)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gpupool.scheduler.database import make_engine
from gpupool.scheduler.orm import SiteRow
from gpupool.scheduler.sites import _heard_from

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_first_heartbeats_of_one_site_make_one_row(db_kind, db):
    engine = make_engine(db)
    failures = []
    with Session(engine) as first:
        _heard_from(first, "Wuhan", "agent-a", NOW)  # inserted, not yet committed

        def second_agent():
            try:
                with Session(engine) as second:
                    _heard_from(second, "Wuhan", "agent-b", NOW + dt.timedelta(seconds=1))
                    second.commit()
            except Exception as exc:  # the failure this test is about
                failures.append(exc)

        thread = threading.Thread(target=second_agent)
        thread.start()
        thread.join(0.5)  # the second insert waits on the first's unique name
        first.commit()
        thread.join(30)
    with Session(engine) as session:
        rows = session.scalars(select(SiteRow).where(SiteRow.name == "Wuhan")).all()
    engine.dispose()
    assert failures == []
    assert [(r.agent, r.last_seen_at) for r in rows] == [("agent-b", NOW + dt.timedelta(seconds=1))]
