"""Storage layer: URLs, unit of work, connection errors, column conventions."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gpupool.model import GpupoolError, NotFound
from gpupool.scheduler import clock, repository
from gpupool.scheduler.database import normalise_url, safe_url, unit_of_work
from gpupool.scheduler.orm import DomainRow, JobRow, OrgRow


def test_postgres_urls_go_to_psycopg3():
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url(None) == "sqlite:///gpupool.db"


def test_safe_url_hides_the_password():
    assert safe_url("postgresql+psycopg://bob:s3cret@h:5432/db") == (
        "postgresql+psycopg://bob:***@h:5432/db"
    )


def test_unreachable_postgres_is_one_line_error_without_password():
    url = "postgresql://bob:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(GpupoolError) as info, unit_of_work(url):
        pass
    assert info.value.location == "--db"
    assert info.value.message.startswith(
        "cannot connect to database postgresql+psycopg://bob:***@127.0.0.1:1/nowhere: "
    )
    assert "s3cret" not in str(info.value) and "\n" not in str(info.value)


def test_unopenable_sqlite_file_is_one_line_error(tmp_path):
    url = f"sqlite:///{tmp_path}/missing-dir/x.db"
    with (
        pytest.raises(GpupoolError, match="cannot connect to database sqlite:///"),
        unit_of_work(url),
    ):
        pass


def test_not_a_url_is_rejected():
    with pytest.raises(GpupoolError, match="not a database URL") as info, unit_of_work("nonsense"):
        pass
    assert info.value.location == "--db"


def _add_domain(session, name="medical"):
    domain = DomainRow(name=name, weight=3.0)
    session.add(domain)
    session.flush()
    return domain


def test_unit_of_work_rolls_back_on_error(db):
    with pytest.raises(RuntimeError), unit_of_work(db) as session:
        _add_domain(session)
        raise RuntimeError("boom")
    with unit_of_work(db) as session:
        assert session.scalars(select(DomainRow)).all() == []


def test_unit_of_work_commits_on_success(db):
    with unit_of_work(db) as session:
        _add_domain(session)
    with unit_of_work(db) as session:
        assert [d.name for d in session.scalars(select(DomainRow))] == ["medical"]


def test_datetimes_come_back_aware_utc_and_money_in_cents(db):
    moment = dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    with unit_of_work(db) as session:
        domain = _add_domain(session)
        org = OrgRow(name="pumc", domain_id=domain.id, budget=clock.cents(1234.567))
        session.add(org)
        session.flush()
        session.add(
            JobRow(
                org_id=org.id,
                gpus=2,
                hours=1.5,
                state="pending",
                submitted_at=moment,
                submit_key="k1",
            )
        )
    with unit_of_work(db) as session:
        job = session.scalars(select(JobRow)).one()
        assert job.submitted_at == moment
        assert job.submitted_at.tzinfo == dt.UTC
        assert clock.iso(job.submitted_at) == "2026-11-24T01:30:00Z"
        assert job.gpu_types == [] and job.priority == 0
        assert repository.get_org(session, "pumc").budget == 1234.57


def test_submit_key_is_unique(db):
    with pytest.raises(IntegrityError), unit_of_work(db) as session:
        domain = _add_domain(session)
        org = OrgRow(name="pumc", domain_id=domain.id)
        session.add(org)
        session.flush()
        now = clock.utcnow()
        for _ in range(2):
            session.add(
                JobRow(
                    org_id=org.id,
                    gpus=1,
                    hours=1,
                    state="pending",
                    submitted_at=now,
                    submit_key="same",
                )
            )
        session.flush()


def test_lookup_by_name_names_the_field(db):
    with unit_of_work(db) as session, pytest.raises(NotFound) as info:
        repository.get_org(session, "nobody", location="jobs.csv:3 org")
    assert str(info.value) == "jobs.csv:3 org: no organisation named 'nobody'"


def test_periods_are_utc_quarters():
    assert clock.period_of(dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC)) == "2026-Q4"
    assert (
        clock.period_of(dt.datetime(2027, 1, 1, 7, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))))
        == "2026-Q4"
    )
    assert clock.period_of(dt.datetime(2027, 4, 1, tzinfo=dt.UTC)) == "2027-Q2"
    assert clock.period_start("2027-Q2") == dt.datetime(2027, 4, 1, tzinfo=dt.UTC)


def test_cents_round_half_up_on_the_written_figure():
    assert clock.cents(2.675) == 2.68
    assert clock.cents(5000.555) == 5000.56
    assert clock.cents(-1.005) == -1.01
    assert clock.cents(0.1 + 0.2) == 0.3
