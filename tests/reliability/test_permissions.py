"""The role model, enforced in the service layer, with an audit trail of every refusal.

Platform: build_small_platform (hosp in medical, lab in general), written while
the users table is empty, i.e. by the bootstrap admin.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.model import GpupoolError, PermissionDenied
from gpupool.scheduler import permissions, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import AuditLogRow, DomainRow, JobRow, UserRow
from gpupool.scheduler.service import JobRequest


def _audit(db, since: int = 0):
    with unit_of_work(db) as session:
        rows = session.scalars(select(AuditLogRow).where(AuditLogRow.id > since))
        return [(r.actor, r.action, r.target, r.outcome) for r in rows.all()]


def _last_audit_id(db) -> int:
    with unit_of_work(db) as session:
        return session.scalar(select(func.max(AuditLogRow.id))) or 0


def _count(db, row_type) -> int:
    with unit_of_work(db) as session:
        return session.scalar(select(func.count()).select_from(row_type))


@pytest.fixture
def users(platform):
    """root bootstraps by adding alice (submitter for hosp); bob submits for lab."""
    with unit_of_work(platform) as session:
        permissions.add_user(session, "root", "alice", "submitter", "hosp")
        permissions.add_user(session, "root", "bob", "submitter", "lab")
    return platform


def test_the_first_user_add_records_the_bootstrapping_actor_as_admin(users):
    with unit_of_work(users) as session:
        roles = {u.name: (u.role, u.org and u.org.name) for u in session.scalars(select(UserRow))}
        assert permissions.role_of(session, "root") == "admin"
        assert permissions.role_of(session, "stranger") is None
    assert roles == {
        "root": ("admin", None),
        "alice": ("submitter", "hosp"),
        "bob": ("submitter", "lab"),
    }
    added = [a for a in _audit(users) if a[1] == "user.add"]
    assert added == [
        ("root", "user.add", "user root", "ok"),
        ("root", "user.add", "user alice", "ok"),
        ("root", "user.add", "user bob", "ok"),
    ]


@pytest.mark.parametrize(
    ("name", "role", "org", "message"),
    [
        ("root", "submitter", "hosp", "--role: the first user must be an admin, and root is you"),
        ("x", "owner", None, "--role: must be one of admin, submitter, got 'owner'"),
        ("x", "submitter", None, "--org: a submitter acts for one organisation: give --org"),
        ("x", "admin", "lab", "--org: admins act for every organisation: leave out --org"),
        ("x", "submitter", "nope", "--org: no organisation named 'nope'"),
        (" ", "admin", None, "name: must not be empty"),
    ],
)
def test_bad_user_additions_write_nothing(platform, name, role, org, message):
    with pytest.raises(GpupoolError) as info, unit_of_work(platform) as session:
        permissions.add_user(session, "root", name, role, org)
    assert str(info.value) == message
    assert _count(platform, UserRow) == 0


def test_a_submitter_may_not_change_the_platform_and_the_refusal_is_audited(users):
    before = _last_audit_id(users)
    with pytest.raises(PermissionDenied) as info, unit_of_work(users) as session:
        service.add_domain(session, "alice", "robotics", 1.5)
    assert str(info.value) == "--as: alice may not add domains: admins only"
    assert _audit(users, before) == [("alice", "add domains", "", "denied")]
    assert _count(users, DomainRow) == 2


def test_an_unknown_actor_may_do_nothing_once_users_exist(users):
    before = _last_audit_id(users)
    with pytest.raises(PermissionDenied) as info, unit_of_work(users) as session:
        service.submit_job(session, "mallory", JobRequest(org="lab", gpus=1, hours=1))
    assert str(info.value).startswith("--as: mallory is not a gpupool user and may not submit")
    assert _audit(users, before) == [("mallory", "submit jobs", "", "denied")]
    assert _count(users, JobRow) == 0


def test_submitters_submit_see_and_cancel_only_their_own_organisations_jobs(users):
    with unit_of_work(users) as session:
        mine, _ = service.submit_job(session, "alice", JobRequest(org="hosp", gpus=1, hours=1))
        theirs, _ = service.submit_job(session, "bob", JobRequest(org="lab", gpus=1, hours=1))
        assert [j.id for j in permissions.visible_jobs(session, "alice")] == [mine]
        assert [j.id for j in permissions.visible_jobs(session, "root")] == [mine, theirs]
    before = _last_audit_id(users)
    refusals = [
        (lambda s: service.submit_job(s, "alice", JobRequest(org="lab", gpus=1, hours=1)),
         "--as: alice submits for hosp only, not 'lab'"),
        (lambda s: service.cancel_job(s, "alice", theirs),
         f"--as: alice may not cancel job {theirs}: it belongs to another organisation"),
        (lambda s: permissions.job_for(s, "alice", theirs),
         f"--as: alice may not see job {theirs}: it belongs to another organisation"),
    ]  # fmt: skip
    for attempt, message in refusals:
        with pytest.raises(PermissionDenied) as info, unit_of_work(users) as session:
            attempt(session)
        assert str(info.value) == message
    assert [(a[0], a[3]) for a in _audit(users, before)] == [("alice", "denied")] * 3
    with unit_of_work(users) as session:
        service.cancel_job(session, "alice", mine)
        states = {j.id: j.state for j in session.scalars(select(JobRow))}
    assert states == {mine: "cancelled", theirs: "pending"}
    assert _audit(users, before)[-1] == ("alice", "job.cancel", f"job {mine}", "ok")


def test_admin_actions_record_before_and_after(users):
    with unit_of_work(users) as session:
        job, _ = service.submit_job(session, "bob", JobRequest(org="lab", gpus=1, hours=1))
        service.cancel_job(session, "root", job)
    with unit_of_work(users) as session:
        row = session.scalars(select(AuditLogRow).order_by(AuditLogRow.id.desc())).first()
        assert (row.actor, row.action, row.before, row.after, row.outcome) == (
            "root",
            "job.cancel",
            {"state": "pending"},
            {"state": "cancelled"},
            "ok",
        )
        assert row.at is not None


def test_cli_refusals_are_one_line_and_user_list_is_admin_only(users):
    runner = CliRunner()

    def cli(who, *args):
        return runner.invoke(app, ["--db", users, "--as", who, *args])

    refused = cli("bob", "domain", "add", "robotics")
    assert (refused.exit_code, refused.stderr) == (
        2,
        "error: --as: bob may not add domains: admins only\n",
    )
    assert cli("bob", "user", "list").exit_code == 2
    listed = cli("root", "user", "list", "--json")
    assert listed.exit_code == 0 and '"name": "alice"' in listed.stdout
    added = cli("root", "user", "add", "carol", "--role", "admin")
    assert (added.exit_code, added.stdout) == (0, "added admin carol\n")
    shown = cli("bob", "job", "list", "--json")
    assert (shown.exit_code, shown.stdout.strip()) == (0, "[]")
    assert cli("bob", "schedule").exit_code == 2  # live rounds are an admin's
