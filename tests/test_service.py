"""Service operations on SQLite and PostgreSQL: validation, audit, idempotency, all-or-none."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from gpupool.model import GpupoolError, IllegalTransition, NotFound, PermissionDenied
from gpupool.scheduler import repository, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import AuditLogRow, JobRow, UserRow
from gpupool.scheduler.service import BatchError, JobRequest
from tests.conftest import SQLITE_ONLY


def _count(db, row_type) -> int:
    with unit_of_work(db) as session:
        return session.scalar(select(func.count()).select_from(row_type))


def test_admin_additions_are_audited(platform):
    with unit_of_work(platform) as session:
        actions = session.execute(
            select(AuditLogRow.action, AuditLogRow.target, AuditLogRow.actor)
            .where(AuditLogRow.action != "user.add")  # the db fixture's admin
            .order_by(AuditLogRow.id)
        ).all()
        pool = session.scalars(
            select(AuditLogRow.after).where(AuditLogRow.action == "pool.add")
        ).first()
    assert [a for a, _, _ in actions] == ["gpu_type.add"] * 2 + ["pool.add"] * 2 + [
        "domain.add"
    ] * 2 + ["org.add"] * 2
    assert {actor for _, _, actor in actions} == {"admin"}
    assert pool == {
        "name": "p-a100",
        "site": "Beijing",
        "gpu_type": "A100",
        "gpus": 16,
        "gpus_per_node": 8,
        "price_per_gpu_hour": 10.0,
        "free_gpus": 16,
    }


def test_duplicate_names_are_refused(platform):
    with pytest.raises(GpupoolError) as info, unit_of_work(platform) as session:
        service.add_domain(session, "admin", "medical", 2.0)
    assert str(info.value) == "name: a domain named 'medical' already exists"


def test_pool_needs_a_known_gpu_type(platform):
    with pytest.raises(NotFound) as info, unit_of_work(platform) as session:
        service.add_pool(session, "admin", "p-x", "Hefei", "V100", 8, 8, 1.0)
    assert str(info.value) == "--gpu-type: no GPU type named 'V100'"


def test_submitter_may_not_change_the_platform(platform):
    with unit_of_work(platform) as session:
        session.add(UserRow(name="alice", role="submitter"))
    with pytest.raises(PermissionDenied), unit_of_work(platform) as session:
        service.add_domain(session, "alice", "robotics", 1.5)


@SQLITE_ONLY  # validated before anything is written: no database-specific step
@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        (dict(org="nobody", gpus=1, hours=1), "--org: no organisation named 'nobody'"),
        (dict(org="lab", gpus=0, hours=1), "--gpus: must be a positive whole number, got 0"),
        (dict(org="lab", gpus="-2", hours=1), "--gpus: must be a positive whole number, got '-2'"),
        (
            dict(org="lab", gpus="1.5", hours=1),
            "--gpus: must be a positive whole number, got '1.5'",
        ),
        (
            dict(org="lab", gpus=1, hours="soon"),
            "--hours: must be a positive number of hours, got 'soon'",
        ),
        (
            dict(org="lab", gpus=1, hours="nan"),
            "--hours: must be a positive number of hours, got 'nan'",
        ),
        (
            dict(org="lab", gpus=1, hours=1, gpu_types=["V100"]),
            "--gpu-type: no GPU type named 'V100'",
        ),
        # p-a100 holds 2 nodes x 8 = 16; p-h100 one node of 8.
        (
            dict(org="lab", gpus=17, hours=1),
            "--gpus: asks for 17 GPUs but the largest gang any pool can hold is 16",
        ),
        (
            dict(org="lab", gpus=9, hours=1, gpu_types=["H100"]),
            "--gpus: asks for 9 GPUs but the largest gang any pool of an allowed GPU type can "
            "hold is 8",
        ),
    ],
)
def test_bad_job_requests_name_the_field_and_write_nothing(platform, request_fields, expected):
    with pytest.raises(GpupoolError) as info, unit_of_work(platform) as session:
        service.submit_job(session, "admin", JobRequest(**request_fields))
    assert str(info.value) == expected
    assert _count(platform, JobRow) == 0


def test_max_gang_follows_fit_gang_rules():
    from gpupool.model import Pool

    assert service.max_gang(Pool("p", "s", "A", 20, 8, 1.0)) == 16  # 2 whole nodes
    assert service.max_gang(Pool("p", "s", "A", 4, 8, 1.0)) == 4  # one partial node
    assert service.max_gang(Pool("p", "s", "A", 12, 8, 1.0)) == 8


def test_submit_writes_a_pending_job(platform):
    with unit_of_work(platform) as session:
        job_id, created = service.submit_job(
            session,
            "admin",
            JobRequest(
                org="hosp", gpus="4", hours="2.5", gpu_types=["A100", "A100", "H100"], name=" scan "
            ),
        )
    assert created
    with unit_of_work(platform) as session:
        view = service.job_view(repository.get_job(session, job_id))
    assert {
        k: view[k]
        for k in (
            "org",
            "domain",
            "gpus",
            "gpu_types",
            "hours",
            "state",
            "pool",
            "name",
            "submitted_by",
        )
    } == {
        "org": "hosp",
        "domain": "medical",
        "gpus": 4,
        "gpu_types": ["A100", "H100"],
        "hours": 2.5,
        "state": "pending",
        "pool": None,
        "name": "scan",
        "submitted_by": "admin",
    }
    assert view["submitted_at"].endswith("Z")


def test_retried_submission_with_the_same_key_is_not_written_twice(platform):
    request = JobRequest(org="lab", gpus=2, hours=1, submit_key="run-42")
    with unit_of_work(platform) as session:
        first = service.submit_job(session, "admin", request)
    with unit_of_work(platform) as session:
        again = service.submit_job(session, "admin", request)
    assert first == (first[0], True) and again == (first[0], False)
    assert _count(platform, JobRow) == 1
    with pytest.raises(GpupoolError) as info, unit_of_work(platform) as session:
        service.submit_job(
            session, "admin", JobRequest(org="lab", gpus=3, hours=1, submit_key="run-42")
        )
    assert str(info.value) == (
        f"--key: submit key 'run-42' was already used by job {first[0]} with different content"
    )


def test_a_batch_is_all_or_none_and_reports_every_bad_row(platform):
    requests = [
        JobRequest(org="lab", gpus=1, hours=1, where="jobs.csv:2"),
        JobRequest(org="nobody", gpus=1, hours=1, where="jobs.csv:3"),
        JobRequest(org="lab", gpus=1, hours=1, where="jobs.csv:4"),
        JobRequest(org="lab", gpus="x", hours=1, where="jobs.csv:5"),
    ]
    with pytest.raises(BatchError) as info, unit_of_work(platform) as session:
        service.submit_jobs(session, "admin", requests)
    assert [str(e) for e in info.value.errors] == [
        "jobs.csv:3 org: no organisation named 'nobody'",
        "jobs.csv:5 gpus: must be a positive whole number, got 'x'",
    ]
    assert _count(platform, JobRow) == 0
    with unit_of_work(platform) as session:
        results = service.submit_jobs(session, "admin", [requests[0], requests[2]])
    assert [created for _, created in results] == [True, True]
    assert _count(platform, JobRow) == 2


def test_cancel_follows_the_state_machine_and_is_audited(platform):
    with unit_of_work(platform) as session:
        job_id, _ = service.submit_job(session, "admin", JobRequest(org="lab", gpus=1, hours=1))
    with unit_of_work(platform) as session:
        service.cancel_job(session, "admin", job_id)
    with unit_of_work(platform) as session:
        job = repository.get_job(session, job_id)
        assert (job.state, job.end_reason) == ("cancelled", "cancelled by admin")
        assert job.ended_at is not None
        audit = session.scalars(select(AuditLogRow).where(AuditLogRow.action == "job.cancel")).one()
        assert (audit.before, audit.after) == ({"state": "pending"}, {"state": "cancelled"})
    with pytest.raises(IllegalTransition) as info, unit_of_work(platform) as session:
        service.cancel_job(session, "admin", job_id)
    assert str(info.value) == "state: a cancelled job cannot become cancelled"


def test_unknown_job_is_not_found(platform):
    with pytest.raises(NotFound) as info, unit_of_work(platform) as session:
        service.cancel_job(session, "admin", 12345)
    assert str(info.value) == "job id: no job with id 12345"
