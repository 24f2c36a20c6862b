"""Idempotency keys are per organisation, and a race on one key gives one job; both databases."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from gpupool.model import GpupoolError
from gpupool.scheduler import permissions, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow
from gpupool.scheduler.service import JobRequest

OWNER = permissions.OWNER


def _submit(db, request: JobRequest) -> tuple[int, bool]:
    with unit_of_work(db) as session:
        return service.submit_job(session, OWNER, request)


def _jobs(db) -> list[tuple]:
    with unit_of_work(db) as session:
        rows = session.scalars(select(JobRow).order_by(JobRow.id))
        return [(r.id, r.org.name, r.gpus, r.submit_key) for r in rows]


def test_another_org_reusing_a_key_gets_its_own_job_and_learns_nothing(platform):
    first, created = _submit(platform, JobRequest(org="lab", gpus=2, hours=1, submit_key="run-1"))
    assert created
    # hosp asks for something else under the same key: a new job, no word about lab's
    second, created = _submit(platform, JobRequest(org="hosp", gpus=4, hours=1, submit_key="run-1"))
    assert created and second != first
    assert _jobs(platform) == [(first, "lab", 2, "run-1"), (second, "hosp", 4, "run-1")]
    # within one org the key still means "the same job"
    again = _submit(platform, JobRequest(org="hosp", gpus=4, hours=1, submit_key="run-1"))
    assert again == (second, False)
    with pytest.raises(GpupoolError) as info:
        _submit(platform, JobRequest(org="hosp", gpus=8, hours=1, submit_key="run-1"))
    assert str(info.value) == (
        f"--key: submit key 'run-1' was already used by job {second} with different content"
    )
    assert len(_jobs(platform)) == 2


def test_concurrent_submissions_with_one_key_give_one_job(platform, monkeypatch):
    """PostgreSQL: both transactions pass the "is the key taken?" check before either
    inserts. SQLite: a submission's transaction holds the write lock from its start
    (BEGIN IMMEDIATE), so the second waits for the first to commit and then finds the
    key; the first lingers before inserting to make sure the two overlap."""
    both_checked = threading.Barrier(2, timeout=20)
    real_insert = service._insert_unless_keys_taken
    serialised = platform.startswith("sqlite")

    def insert_after_both_checked(session, values):
        if serialised:
            time.sleep(0.3)
        else:
            both_checked.wait()
        return real_insert(session, values)

    monkeypatch.setattr(service, "_insert_unless_keys_taken", insert_after_both_checked)
    request = JobRequest(org="lab", gpus=2, hours=1, submit_key="retry-me")
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def submit():
        try:
            results.append(_submit(platform, request))
        except BaseException as exc:  # reported below, with the test's own assertion
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(created for _, created in results) == [False, True]
    assert len({job_id for job_id, _ in results}) == 1
    with unit_of_work(platform) as session:
        assert session.scalar(select(func.count()).select_from(JobRow)) == 1
