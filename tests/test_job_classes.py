"""Job classes live (issue 14): added by admins with checked speeds, named by jobs,
and used by rounds for placement, charges, usage, timeouts and `job show`.

Small platform (tests/conftest.py): p-a100 = 2 nodes x 8 A100 (speed 1.0) at
10.00 per GPU-hour, p-h100 = 1 node x 8 H100 (speed 2.0) at 20.00. Without a
class both cost 10.00 per effective GPU-hour, so FIFO takes p-a100 by name.
Class ``h100-4x`` runs 4x on H100 and 0.5x on A100: 5.00 against 20.00.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from gpupool.model import Conflict, GpupoolError, PermissionDenied
from gpupool.policies.fifo import FifoPolicy
from gpupool.scheduler import lifecycle, queries, repository, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import AuditLogRow, LedgerEntryRow
from gpupool.scheduler.rounds import run_round
from gpupool.scheduler.service import JobRequest
from tests.conftest import SQLITE_ONLY, add_users

T0 = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
H100_4X = {"A100": 0.5, "H100": 4.0}

# (speeds given, the location named, words of the message)
BAD_SPEEDS = [
    ({}, "--speed", "at least one"),
    ({"V100": 1.0}, "--speed V100", "no GPU type named 'V100'"),
    ({"A100": 0}, "--speed A100", "must be a positive number"),
    ({"A100": -1}, "--speed A100", "must be a positive number"),
    ({"A100": 5000}, "--speed A100", "must be between 0.01 and 1,000"),
    ({"A100": "fast"}, "--speed A100", "must be a positive number, got 'fast'"),
    ({"A100": 1.0, "a100": 2.0}, "--speed a100", "no GPU type named 'a100'"),
]


@SQLITE_ONLY
@pytest.mark.parametrize(("speeds", "location", "words"), BAD_SPEEDS)
def test_bad_speeds_are_refused_by_field_and_nothing_is_written(platform, speeds, location, words):
    with pytest.raises(GpupoolError) as info, unit_of_work(platform) as session:
        service.add_job_class(session, "admin", "llm", speeds)
    assert info.value.location == location and words in info.value.message
    with unit_of_work(platform) as session:
        assert repository.list_job_classes(session) == []


@SQLITE_ONLY
def test_only_admins_add_classes_names_are_unique_and_jobs_name_known_ones(platform):
    add_users(platform, ("bob", "submitter", "lab", None))
    with pytest.raises(PermissionDenied), unit_of_work(platform) as session:
        service.add_job_class(session, "bob", "llm", {"A100": 1.0})
    with unit_of_work(platform) as session:
        row = service.add_job_class(session, "admin", "llm", {"H100": 3, "A100": "1.5"})
        assert service.job_class_view(row) == {"name": "llm", "speeds": {"A100": 1.5, "H100": 3.0}}
    with pytest.raises(Conflict) as info, unit_of_work(platform) as session:
        service.add_job_class(session, "admin", "LLM", {"A100": 1.0})
    assert info.value.location == "name"
    with pytest.raises(GpupoolError) as info, unit_of_work(platform) as session:
        service.submit_job(session, "bob", JobRequest(org="lab", gpus=1, hours=1, job_class="x"))
    assert info.value.location == "--class"


def _submit_and_start(db, **request) -> int:
    with unit_of_work(db) as session:
        job_id, _ = service.submit_job(session, "admin", JobRequest(**request), now=T0 - MINUTE)
        result = run_round(session, FifoPolicy(), T0)
    assert [s.job_id for s in result.started] == [job_id]
    return job_id


def _ledger(db, job_id):
    with unit_of_work(db) as session:
        rows = session.scalars(select(LedgerEntryRow).where(LedgerEntryRow.job_id == job_id))
        return [(e.kind, e.cost, e.effective_gpu_hours) for e in rows]


@pytest.mark.parametrize(
    ("job_class", "pool", "cost", "effective"),
    [
        ("", "p-a100", 8 * 0.5 * 10.0, 8 * 0.5 * 1.0),  # no class: 30 min of a 2 h job on A100
        ("h100-4x", "p-h100", 8 * 0.5 * 20.0, 8 * 0.5 * 4.0),  # 4x on H100: all 2 h done
    ],
)
def test_a_class_decides_the_pool_and_the_charge(platform, job_class, pool, cost, effective):
    with unit_of_work(platform) as session:
        service.add_job_class(session, "admin", "h100-4x", H100_4X)
    job = _submit_and_start(platform, org="lab", gpus=8, hours=2, job_class=job_class)
    end = T0 + 30 * MINUTE
    with unit_of_work(platform) as session:
        lifecycle.finish_job(session, "admin", job, at=end, now=end + MINUTE)
        detail = queries.job_detail(session, "admin", job)
        usage = queries.usage_report(session, "admin", by="org")
    assert [(r["gpu_hours"], r["effective_gpu_hours"]) for r in usage] == [(8 * 0.5, effective)]
    assert detail["pool"] == pool and detail["job_class"] == (job_class or None)
    assert _ledger(platform, job) == [("charge", cost, effective)]
    accounting = detail["accounting"]
    speed = H100_4X["H100"] if job_class else 1.0
    assert (accounting["speed"], accounting["estimated_runtime_hours"]) == (speed, 2 / speed)
    assert accounting["charged_gpu_hours"] == 8 * 0.5  # wall GPU-hours, whatever the speed


def test_a_class_job_times_out_at_its_class_deadline_and_its_class_stays_until_it_ends(platform):
    with unit_of_work(platform) as session:
        service.add_job_class(session, "admin", "h100-4x", H100_4X)
    job = _submit_and_start(platform, org="lab", gpus=8, hours=1, job_class="h100-4x")
    # 1 h at 4x on H100 = 15 min; + 10% + 5 min grace: the deadline is 21.5 min
    with unit_of_work(platform) as session:
        assert run_round(session, FifoPolicy(), T0 + 21 * MINUTE).timed_out == []
    with pytest.raises(Conflict), unit_of_work(platform) as session:
        service.remove_job_class(session, "admin", "h100-4x")  # job 1 still runs
    with unit_of_work(platform) as session:
        assert run_round(session, FifoPolicy(), T0 + 60 * MINUTE).timed_out == [job]
        assert repository.get_job(session, job).ended_at == T0 + 21.5 * MINUTE
    with unit_of_work(platform) as session:
        service.remove_job_class(session, "admin", "h100-4x")
        actions = session.scalars(
            select(AuditLogRow.action).where(AuditLogRow.action.like("job_class.%"))
        )
        assert list(actions) == ["job_class.add", "job_class.remove"]


@SQLITE_ONLY
def test_batch_files_name_a_class_per_row_and_an_unknown_one_by_file_line(platform, tmp_path):
    from gpupool.scheduler.batch import read_batch

    with unit_of_work(platform) as session:
        service.add_job_class(session, "admin", "h100-4x", H100_4X)
    path = tmp_path / "jobs.csv"
    path.write_text("org,gpus,hours,job_class\nlab,1,1,h100-4x\nlab,1,1,nope\nlab,1,1,\n")
    with pytest.raises(GpupoolError) as info, unit_of_work(platform) as session:
        service.submit_jobs(session, "admin", read_batch(path))
    assert str(info.value).endswith("jobs.csv:3 job_class: no job class named 'nope'")
    path.write_text("org,gpus,hours,job_class\nlab,1,1,h100-4x\nlab,1,1,\n")
    with unit_of_work(platform) as session:
        ids = [job_id for job_id, _ in service.submit_jobs(session, "admin", read_batch(path))]
        assert [repository.get_job(session, i).job_class for i in ids] == ["h100-4x", None]


@SQLITE_ONLY
def test_a_class_with_bad_stored_speeds_is_set_aside_and_its_jobs_wait(platform):
    from sqlalchemy import update

    from gpupool.scheduler.orm import JobClassRow

    with unit_of_work(platform) as session:
        service.add_job_class(session, "admin", "h100-4x", H100_4X)
        held, _ = service.submit_job(
            session, "admin", JobRequest(org="lab", gpus=1, hours=1, job_class="h100-4x"), T0
        )
        plain, _ = service.submit_job(session, "admin", JobRequest(org="lab", gpus=1, hours=1), T0)
        session.execute(update(JobClassRow).values(speeds={"H100": 0}))  # written by hand
    with unit_of_work(platform) as session:
        result = run_round(session, FifoPolicy(), T0 + MINUTE)
        assert [s.job_id for s in result.started] == [plain]
        job = repository.get_job(session, held)
        assert job.state == "pending" and "job class h100-4x" in job.wait_reason
