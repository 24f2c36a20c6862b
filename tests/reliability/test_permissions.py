"""The role model, enforced in the service layer, with an audit trail of every refusal.

Platform: build_small_platform (hosp in medical, lab in general), written by
``admin``, the admin every test database starts with. There is no bootstrap
rule: an empty users table makes nobody an admin; the local owner
(permissions.OWNER, the CLI without --as) is the only admin without a row.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.model import GpupoolError, PermissionDenied
from gpupool.scheduler import permissions, queries, service
from gpupool.scheduler.database import make_engine, unit_of_work
from gpupool.scheduler.migrate import upgrade
from gpupool.scheduler.orm import AuditLogRow, DomainRow, JobRow, UserRow
from gpupool.scheduler.service import JobRequest
from tests.conftest import SQLITE_ONLY

OWNER = permissions.OWNER


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
    """admin adds alice (submitter for hosp) and bob (submitter for lab)."""
    with unit_of_work(platform) as session:
        permissions.add_user(session, "admin", "alice", "submitter", "hosp")
        permissions.add_user(session, "admin", "bob", "submitter", "lab")
    return platform


def test_users_are_added_by_an_admin_and_audited(users):
    with unit_of_work(users) as session:
        roles = {u.name: (u.role, u.org and u.org.name) for u in session.scalars(select(UserRow))}
        assert permissions.role_of(session, "admin") == "admin"
        assert permissions.role_of(session, "stranger") is None
        assert permissions.role_of(session, OWNER) == "admin"
    assert roles == {
        "admin": ("admin", None),
        "alice": ("submitter", "hosp"),
        "bob": ("submitter", "lab"),
    }
    added = [a for a in _audit(users) if a[1] == "user.add"]
    assert added == [
        (OWNER, "user.add", "user admin", "ok"),  # the db fixture, as `init` does
        ("admin", "user.add", "user alice", "ok"),
        ("admin", "user.add", "user bob", "ok"),
    ]


def test_an_empty_users_table_makes_nobody_an_admin(db_url):
    """The old bootstrap rule (everyone is admin while no user exists) is gone."""
    engine = make_engine(db_url)
    upgrade(engine)
    engine.dispose()
    for attempt in (
        lambda s: service.add_domain(s, "root", "medical", 3.0),
        lambda s: permissions.add_user(s, "root", "root", "admin"),
        lambda s: permissions.list_users(s, "root"),
    ):
        with pytest.raises(PermissionDenied) as info, unit_of_work(db_url) as session:
            attempt(session)
        assert str(info.value).startswith("--as: root is not a gpupool user and may not ")
    assert _count(db_url, UserRow) == 0 and _count(db_url, DomainRow) == 0
    assert [(a[0], a[3]) for a in _audit(db_url)] == [("root", "denied")] * 3
    with unit_of_work(db_url) as session:  # the local owner may, and adds the first admin
        permissions.add_user(session, OWNER, "root", "admin")
    with unit_of_work(db_url) as session:
        service.add_domain(session, "root", "medical", 3.0)
    assert _count(db_url, DomainRow) == 1


def test_the_os_user_grants_nothing_and_the_owner_is_the_local_default(db_url, monkeypatch):
    runner = CliRunner()
    monkeypatch.setenv("USER", "carol")
    monkeypatch.setenv("LOGNAME", "carol")
    monkeypatch.delenv("GPUPOOL_USER", raising=False)
    as_owner = runner.invoke(app, ["--db", db_url, "domain", "add", "medical"])
    assert as_owner.exit_code == 0, as_owner.stderr
    as_carol = runner.invoke(app, ["--db", db_url, "--as", "carol", "domain", "add", "weather"])
    assert (as_carol.exit_code, as_carol.stderr.split(":")[:2]) == (2, ["error", " --as"])
    monkeypatch.setenv("GPUPOOL_USER", "carol")  # the same as --as carol
    assert runner.invoke(app, ["--db", db_url, "domain", "add", "weather"]).exit_code == 2
    assert [(a[0], a[1], a[3]) for a in _audit(db_url)] == [
        (OWNER, "domain.add", "ok"),
        ("carol", "add domains", "denied"),
        ("carol", "add domains", "denied"),
    ]


@SQLITE_ONLY  # validated before anything is written: no database-specific step
@pytest.mark.parametrize(
    ("name", "role", "org", "site", "message"),
    [
        ("x", "owner", None, None,
         "--role: must be one of admin, submitter, agent, auditor, got 'owner'"),
        ("x", "submitter", None, None, "--org: a submitter acts for one organisation: give --org"),
        ("x", "admin", "lab", None, "--org: only submitters act for an organisation, not admins"),
        ("x", "auditor", "lab", None,
         "--org: only submitters act for an organisation, not auditors"),
        ("x", "submitter", "nope", None, "--org: no organisation named 'nope'"),
        ("x", "agent", None, None, "--site: an agent acts for one site: give --site"),
        ("x", "agent", None, "Mars",
         "--site: no pool at site 'Mars' (sites: Beijing, Shanghai)"),
        ("x", "submitter", "lab", "Beijing", "--site: only agents act for a site, not submitters"),
        (" ", "admin", None, None, "name: must not be empty"),
        ("@owner", "admin", None, None, "name: must not start with '@' (reserved)"),
    ],
)  # fmt: skip
def test_bad_user_additions_write_nothing(platform, name, role, org, site, message):
    with pytest.raises(GpupoolError) as info, unit_of_work(platform) as session:
        permissions.add_user(session, "admin", name, role, org, site)
    assert str(info.value) == message
    assert _count(platform, UserRow) == 1  # the admin alone


def test_agents_and_auditors_are_added_with_their_site(platform):
    with unit_of_work(platform) as session:
        agent = permissions.add_user(session, "admin", "bj", "agent", site=" Beijing ")
        auditor = permissions.add_user(session, "admin", "eve", "auditor")
        assert (agent.role, agent.site, agent.org_id) == ("agent", "Beijing", None)
        assert (auditor.role, auditor.site, auditor.org_id) == ("auditor", None, None)
        listed = permissions.list_users(session, "eve")  # auditors read every user
    assert [u["name"] for u in listed] == ["admin", "bj", "eve"]
    assert listed[1] == {"name": "bj", "role": "agent", "org": None, "site": "Beijing"}


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
        assert [j["id"] for j in queries.job_page(session, "alice")["jobs"]] == [mine]
        assert [j["id"] for j in queries.job_page(session, "admin")["jobs"]] == [mine, theirs]
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
        service.cancel_job(session, "admin", job)
    with unit_of_work(users) as session:
        row = session.scalars(select(AuditLogRow).order_by(AuditLogRow.id.desc())).first()
        assert (row.actor, row.action, row.before, row.after, row.outcome) == (
            "admin",
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
    listed = cli("admin", "user", "list", "--json")
    assert listed.exit_code == 0 and '"name": "alice"' in listed.stdout
    added = cli("admin", "user", "add", "carol", "--role", "admin")
    assert (added.exit_code, added.stdout) == (0, "added admin carol\n")
    shown = cli("bob", "job", "list", "--json")
    assert (shown.exit_code, json.loads(shown.stdout)["jobs"]) == (0, [])
    assert cli("bob", "schedule").exit_code == 2  # live rounds are an admin's
