"""The server's group commit and batched token checks, on both databases: submissions
that arrive together share one transaction, yet each is checked, answered and audited
as if it had come alone."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from gpupool.model import Conflict, GpupoolError, PermissionDenied
from gpupool.scheduler import service, tokens
from gpupool.scheduler.database import make_engine, unit_of_work
from gpupool.scheduler.orm import JobRow
from gpupool.scheduler.service import JobRequest
from gpupool.server.submissions import GroupCommit
from tests.conftest import add_users
from tests.server.conftest import audit_rows


@pytest.fixture
def org_users(platform):
    add_users(platform, ("bob", "submitter", "lab"), ("hana", "submitter", "hosp"))
    return platform


def _jobs(db) -> dict[int, tuple]:
    with unit_of_work(db) as session:
        rows = session.scalars(select(JobRow).order_by(JobRow.id))
        return {r.id: (r.org.name, r.gpus, r.submitted_by, r.submit_key) for r in rows}


def test_one_transaction_answers_each_submission_on_its_own(org_users):
    group = [
        ("bob", JobRequest(org="lab", gpus=2, hours=1, submit_key="k1")),
        ("bob", JobRequest(org="hosp", gpus=1, hours=1)),  # another organisation
        ("hana", JobRequest(org="hosp", gpus="x", hours=1)),  # a bad field
        ("hana", JobRequest(org="hosp", gpus=4, hours=2)),
        ("bob", JobRequest(org="lab", gpus=2, hours=1, submit_key="k1")),  # a retry, same group
        ("bob", JobRequest(org="lab", gpus=8, hours=1, submit_key="k1")),  # the key, reused
        ("bob", JobRequest(org="lab", gpus=1, hours=1, priority=5)),  # admins only
        ("admin", JobRequest(org="lab", gpus=99, hours=1)),  # larger than any pool
    ]
    with unit_of_work(org_users) as session:
        outcomes = service.submit_each(session, group)
    bob_job, created = outcomes[0]
    hana_job, hana_created = outcomes[3]
    assert created and hana_created
    assert outcomes[4] == (bob_job, False)
    assert isinstance(outcomes[1], PermissionDenied) and "hosp" in str(outcomes[1])
    assert str(outcomes[2]) == "--gpus: must be a positive whole number, got 'x'"
    assert isinstance(outcomes[5], Conflict) and "different content" in str(outcomes[5])
    assert isinstance(outcomes[6], PermissionDenied) and "priority" in str(outcomes[6])
    assert "largest gang" in str(outcomes[7])
    assert _jobs(org_users) == {
        bob_job: ("lab", 2, "bob", "k1"),
        hana_job: ("hosp", 4, "hana", _jobs(org_users)[hana_job][3]),
    }


def _submit_together(db, submissions, **group_options) -> tuple[list, int]:
    """Every submission through one GroupCommit at once; (outcomes, transactions)."""
    engine = make_engine(db)
    committer = GroupCommit(engine, **group_options)

    async def everyone():
        calls = [committer.submit(actor, request) for actor, request in submissions]
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        outcomes = asyncio.run(everyone())
    finally:
        committer.close()
        engine.dispose()
    return outcomes, committer.batcher.batches


def test_concurrent_submissions_each_get_their_job_and_refusals_are_audited(org_users):
    good = [("bob", JobRequest(org="lab", gpus=1, hours=1, name=f"j{i}")) for i in range(12)]
    retries = [("hana", JobRequest(org="hosp", gpus=2, hours=1, submit_key="same"))] * 3
    refused = [("bob", JobRequest(org="hosp", gpus=1, hours=1))]
    outcomes, transactions = _submit_together(org_users, good + retries + refused)
    ids = [job_id for job_id, created in outcomes[:12]]
    assert all(created for _, created in outcomes[:12])
    assert len(set(ids)) == 12
    assert len({job_id for job_id, _ in outcomes[12:15]}) == 1  # one job for the key
    assert sorted(created for _, created in outcomes[12:15]) == [False, False, True]
    assert isinstance(outcomes[15], PermissionDenied)
    assert transactions < len(outcomes)  # they did share transactions
    jobs = _jobs(org_users)
    assert len(jobs) == 13 and set(ids) <= set(jobs)
    denial = audit_rows(org_users, actor="bob")[-1]
    assert (denial.action, denial.outcome) == ("submit jobs", "denied")


def test_a_group_whose_transaction_fails_is_retried_one_by_one(org_users, monkeypatch):
    """A database error on the group's insert: each submission is then written alone
    (here the failure hits only inserts of several rows), so all of them land."""
    real_insert = service._insert_unless_keys_taken

    def fails_for_groups(session, values):
        if len(values) > 1:
            raise OperationalError("INSERT", {}, Exception("the group's statement failed"))
        return real_insert(session, values)

    monkeypatch.setattr(service, "_insert_unless_keys_taken", fails_for_groups)
    submissions = [("bob", JobRequest(org="lab", gpus=1, hours=1)) for _ in range(6)]
    outcomes, _ = _submit_together(org_users, submissions)
    assert all(isinstance(o, tuple) and o[1] for o in outcomes), outcomes
    assert len(_jobs(org_users)) == 6


def test_an_error_in_a_lone_submission_is_its_answer(org_users):
    outcomes, _ = _submit_together(org_users, [("nobody", JobRequest(org="lab", gpus=1, hours=1))])
    assert isinstance(outcomes[0], GpupoolError) and "not a gpupool user" in str(outcomes[0])
    assert _jobs(org_users) == {}


def test_tokens_checked_together_each_get_their_own_answer(org_users):
    with unit_of_work(org_users) as session:
        bob = tokens.create_token(session, "admin", "bob")[1]
        hana = tokens.create_token(session, "admin", "hana")[1]
        revoked_row, revoked = tokens.create_token(session, "admin", "hana")
    with unit_of_work(org_users) as session:
        tokens.revoke_token(session, "admin", revoked_row.token_id)
    engine = make_engine(org_users)
    try:
        with engine.connect() as connection:
            found = tokens.identify_many(
                connection, [bob, "gp_nonsense", hana, revoked, bob[:-2] + "xx", bob]
            )
    finally:
        engine.dispose()
    assert [getattr(o, "user", None) for o in found] == ["bob", None, "hana", None, None, "bob"]
    assert [getattr(o, "reason", None) for o in found[1:5]] == [
        "malformed",
        None,
        "revoked",
        "wrong secret",
    ]
