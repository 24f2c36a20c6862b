"""`gpupool init` (first admin, --demo users, --force), `token ...` and `audit list` end to
end, and the append-only audit log; SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from gpupool.cli import output
from gpupool.cli.main import app
from gpupool.scheduler import permissions, tokens
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import ApiTokenRow, AuditLogRow, JobRow, UserRow
from tests.conftest import add_users

TOKEN = r"gpt_[a-z0-9]{8}_[A-Za-z0-9_-]{43}"


def _cli(db, *args, user=None):
    prefix = ["--db", db] + (["--as", user] if user else [])
    return CliRunner().invoke(app, [*prefix, *args])


def _ok(result) -> str:
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _users(db) -> dict[str, tuple]:
    with unit_of_work(db) as session:
        rows = session.scalars(select(UserRow).order_by(UserRow.name))
        return {u.name: (u.role, u.org and u.org.name, u.site) for u in rows}


def test_the_cli_owner_is_the_permissions_owner():
    assert output.OWNER == permissions.OWNER


def test_init_creates_the_first_admin_and_prints_a_working_token_once(db_url):
    out = _ok(_cli(db_url, "init", "--admin", "root"))
    match = re.fullmatch(rf"database ready\nfirst admin: root\ntoken: ({TOKEN})\n", out)
    assert match
    with unit_of_work(db_url) as session:
        assert tokens.authenticate(session, match.group(1)).name == "root"
    assert _users(db_url) == {"root": ("admin", None, None)}
    # once: a second init adds no admin and prints no token; naming another is refused
    assert _ok(_cli(db_url, "init")) == "database ready\n"
    again = _cli(db_url, "init", "--admin", "eve")
    assert (again.exit_code, again.stderr) == (
        2,
        "error: --admin: the platform already has users: add another admin with "
        "`gpupool user add eve --role admin`\n",
    )
    assert list(_users(db_url)) == ["root"]


def test_init_demo_creates_users_of_every_role(db_url):
    out = _ok(_cli(db_url, "init", "--demo", "--no-jobs", "--admin", "root"))
    assert out.startswith("demo platform created\nfirst admin: root\ntoken: gpt_")
    assert _users(db_url) == {
        "alice": ("submitter", "pumc-hospital", None),
        "audrey": ("auditor", None, None),
        "bj-agent": ("agent", None, "Beijing"),
        "bob": ("submitter", "tsinghua-ai", None),
        "carol": ("submitter", "cma-forecast", None),
        "root": ("admin", None, None),
    }
    listed = json.loads(_ok(_cli(db_url, "user", "list", "--json", user="audrey")))
    assert len(listed) == 6


def test_init_force_needs_an_admin_and_the_new_log_says_who_erased_what(platform):
    add_users(platform, ("alice", "submitter", "lab"))
    _ok(_cli(platform, "job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1"))
    refused = _cli(platform, "init", "--force", user="alice")
    assert (refused.exit_code, refused.stderr) == (
        2,
        "error: --as: alice may not erase the platform: admins only\n",
    )
    with unit_of_work(platform) as session:
        assert session.scalar(select(func.count()).select_from(JobRow)) == 1  # nothing erased
        denied = session.scalars(select(AuditLogRow).where(AuditLogRow.outcome == "denied")).one()
        assert (denied.actor, denied.action) == ("alice", "erase the platform")
    out = _ok(_cli(platform, "init", "--force", "--admin", "root", user="admin"))
    assert out.startswith("database ready\nfirst admin: root\ntoken: gpt_")
    assert list(_users(platform)) == ["root"]
    with unit_of_work(platform) as session:
        first = session.scalars(select(AuditLogRow).order_by(AuditLogRow.id)).first()
        assert session.scalar(select(func.count()).select_from(JobRow)) == 0
    assert (first.actor, first.action, first.target, first.outcome) == (
        "admin",
        "platform.reset",
        "platform",
        "ok",
    )
    erased = first.before["rows"]
    assert (erased["jobs"], erased["users"], erased["orgs"]) == (1, 2, 2)
    assert erased["audit_log"] > 0


def test_token_commands(platform):
    add_users(platform, ("alice", "submitter", "hosp"))
    created = _cli(platform, "token", "create", "alice", "--expires", "2w", "--scope", "read")
    raw = _ok(created).strip()
    assert re.fullmatch(TOKEN, raw)  # stdout is the token alone, for scripts
    assert created.stderr.startswith(f"token {tokens.token_prefix(raw)} for alice, expires ")
    assert created.stderr.rstrip().endswith("shown once: store it now (GPUPOOL_TOKEN)")
    listed = json.loads(_ok(_cli(platform, "token", "list", "--json")))
    assert [(t["user"], t["state"], t["scopes"]) for t in listed] == [("alice", "active", ["read"])]
    assert raw.split("_", 2)[2] not in json.dumps(listed)  # the secret (it may hold "_")
    own = json.loads(_ok(_cli(platform, "token", "list", "--json", user="alice")))
    assert own == listed
    as_json = json.loads(_ok(_cli(platform, "token", "create", "alice", "--json")))
    assert re.fullmatch(TOKEN, as_json["token"]) and as_json["expires_at"] is not None
    bad = _cli(platform, "token", "create", "alice", "--expires", "soon")
    assert (bad.exit_code, bad.stderr) == (
        2,
        "error: --expires: must be a duration like 90d, 12h, 30m or 2w, or never; got 'soon'\n",
    )
    first = listed[0]["id"]
    assert _ok(_cli(platform, "token", "revoke", first, user="alice")) == (
        f"token {first} of alice revoked\n"
    )
    again = _ok(_cli(platform, "token", "revoke", first))
    assert again.startswith(f"token {first} of alice was already revoked at ")
    with unit_of_work(platform) as session:
        assert session.scalar(select(func.count()).select_from(ApiTokenRow)) == 2


def test_audit_list_filters_and_is_for_admins_and_auditors(platform):
    add_users(platform, ("alice", "submitter", "hosp"), ("audrey", "auditor"))
    _cli(platform, "domain", "add", "robotics", user="alice")  # denied, audited
    _ok(_cli(platform, "domain", "add", "robotics", user="admin"))
    every = json.loads(_ok(_cli(platform, "audit", "list", "--json", user="audrey")))
    assert [a["id"] for a in every] == sorted(a["id"] for a in every)  # oldest first
    assert set(every[0]) == {"id", "at", "actor", "action", "target", "outcome", "before", "after"}
    denied = json.loads(_ok(_cli(platform, "audit", "list", "--outcome", "denied", "--json")))
    assert [(a["actor"], a["action"]) for a in denied] == [("alice", "add domains")]
    by_admin = _cli(platform, "audit", "list", "--actor", "admin", "--action", "domain", "--json")
    assert [(a["action"], a["target"]) for a in json.loads(_ok(by_admin))] == [
        ("domain.add", "medical"),
        ("domain.add", "general"),
        ("domain.add", "robotics"),
    ]
    recent = json.loads(_ok(_cli(platform, "audit", "list", "--since", "1h", "--json")))
    assert recent == every  # all within the hour (reads that are allowed are not audited)
    assert json.loads(_ok(_cli(platform, "audit", "list", "--since", "2199-01-01", "--json"))) == []
    newest = json.loads(_ok(_cli(platform, "audit", "list", "--limit", "2", "--json")))
    assert newest == every[-2:]
    refused = _cli(platform, "audit", "list", user="alice")
    assert refused.stderr == (
        "error: --as: alice may not read the audit log: admins and auditors only\n"
    )
    bad = _cli(platform, "audit", "list", "--outcome", "maybe")
    assert bad.stderr == "error: --outcome: must be one of ok, denied, got 'maybe'\n"
    bad_since = _cli(platform, "audit", "list", "--since", "yesterday")
    assert bad_since.exit_code == 2 and bad_since.stderr.startswith("error: --since: ")


@pytest.mark.parametrize(
    "tamper",
    [
        update(AuditLogRow).values(outcome="ok"),
        update(AuditLogRow).where(AuditLogRow.outcome == "denied").values(actor="nobody"),
        delete(AuditLogRow),
    ],
)
def test_the_database_refuses_to_change_the_audit_log(platform, tamper):
    _cli(platform, "domain", "list", user="x")  # a denied row, too
    with unit_of_work(platform) as session:
        before = session.scalar(select(func.count()).select_from(AuditLogRow))
    refused = pytest.raises(DBAPIError, match="audit_log is append-only")
    with refused, unit_of_work(platform) as session:
        session.execute(tamper)
    with unit_of_work(platform) as session:
        assert session.scalar(select(func.count()).select_from(AuditLogRow)) == before
        row = session.scalars(select(AuditLogRow).order_by(AuditLogRow.id)).first()
        session.add(AuditLogRow(at=row.at, actor="a", action="b", target="c", outcome="ok"))
    with unit_of_work(platform) as session:  # appending still works
        assert session.scalar(select(func.count()).select_from(AuditLogRow)) == before + 1
