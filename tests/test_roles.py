"""Every operation x every role through the CLI: allowed, or refused with the refusal
audited and nothing else written; both databases.

Platform: build_small_platform (p-a100 in Beijing, p-h100 in Shanghai; hosp in
medical, lab in general), a voucher programme with a voucher for hosp, policy v1
applied, hosp's job 1 running on p-a100 (Beijing) and jobs 2 (hosp) and 3 (lab)
pending. Users: ada (admin), alice (submitter for hosp), agnes (agent for
Beijing), audrey (auditor), each with a token.

EXPECTED is written out here, independently of gpupool.scheduler.permissions;
a test checks that the permissions table (and so docs/security.md) agrees.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.scheduler import permissions, service, tokens
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import AuditLogRow, Base
from gpupool.scheduler.rounds import run_active_round
from gpupool.scheduler.service import JobRequest
from tests.conftest import SQLITE_ONLY, add_users

USERS = {"admin": "ada", "submitter": "alice", "agent": "agnes", "auditor": "audrey"}
A, S, G, U = "admin", "submitter", "agent", "auditor"
POLICY = "kind: fifo\n"

# (operation, CLI arguments, roles allowed). {job}: hosp's running job on p-a100;
# {pending}: hosp's pending job; {lab}: lab's pending job; {policy}: a policy file;
# {own}: the acting user's token; {ada}: the admin's token. Order matters only
# for the writes that change what later ones see (finish, then reset, last).
EXPECTED = [
    ("platform.read", ["gpu-type", "list", "--json"], {A, S, G, U}),
    ("platform.read", ["pool", "list", "--json"], {A, S, G, U}),
    ("platform.read", ["domain", "list", "--json"], {A, S, G, U}),
    ("org.list", ["org", "list", "--json"], {A, S, U}),
    ("platform.add", ["domain", "add", "robotics"], {A}),
    ("platform.add", ["org", "add", "new-org", "--domain", "general"], {A}),
    ("job.submit", ["job", "submit", "--org", "hosp", "--gpus", "1", "--hours", "1"], {A, S}),
    ("job.list", ["job", "list", "--json"], {A, S, G, U}),
    ("job.show", ["job", "show", "{job}", "--json"], {A, S, G, U}),
    ("job.show", ["job", "show", "{lab}", "--json"], {A, U}),
    ("job.cancel", ["job", "cancel", "{pending}"], {A, S}),
    ("agent.run", ["agent", "starts", "--json"], {G}),
    ("site.list", ["site", "list", "--json"], {A, U}),
    ("job.cancel", ["job", "cancel", "{lab}"], {A}),
    ("job.reap", ["job", "reap"], {A}),
    ("schedule.dry_run", ["schedule", "--dry-run", "--json"], {A, U}),
    ("schedule.run", ["schedule", "--json"], {A}),
    ("report.read", ["report", "usage", "--json"], {A, S, U}),
    ("report.read", ["report", "subsidies", "--json"], {A, S, U}),
    ("programme.list", ["programme", "list", "--json"], {A, S, U}),
    ("programme.add", ["programme", "add", "p2", "--rate", "0.5"], {A}),
    ("voucher.list", ["voucher", "list", "--json"], {A, S, U}),
    ("voucher.list", ["voucher", "list", "--org", "lab", "--json"], {A, U}),
    ("voucher.award", ["voucher", "award", "hosp", "--programme", "vouch", "--amount", "5"], {A}),
    ("policy.read", ["policy", "show", "--json"], {A, S, U}),
    ("policy.read", ["policy", "history", "--json"], {A, S, U}),
    ("policy.read", ["policy", "diff", "1", "1", "--json"], {A, S, U}),
    ("policy.whatif", ["policy", "whatif", "{policy}", "--json"], {A, U}),
    ("policy.change", ["policy", "apply", "{policy}"], {A}),
    ("user.list", ["user", "list", "--json"], {A, U}),
    ("user.add", ["user", "add", "zoe", "--role", "auditor"], {A}),
    ("user.change", ["user", "set-role", "zoe", "submitter", "--org", "hosp"], {A}),
    ("user.change", ["user", "remove", "zoe"], {A}),
    ("token.create", ["token", "create", "alice"], {A}),
    ("token.list", ["token", "list", "--json"], {A, S, G, U}),
    ("token.list", ["token", "list", "--user", "ada", "--json"], {A, U}),
    ("audit.list", ["audit", "list", "--json"], {A, U}),
    ("platform.export", ["export", "kueue", "--site", "Beijing"], {A, G, U}),
    ("platform.export", ["export", "slurm", "--site", "Shanghai"], {A, U}),
    ("job.finish", ["job", "finish", "{job}"], {A, G}),
    ("token.revoke", ["token", "revoke", "{ada}"], {A}),
    ("token.revoke", ["token", "revoke", "{own}"], {A, S, G, U}),
    ("platform.reset", ["init", "--force"], {A}),
]


@pytest.fixture
def world(platform, tmp_path):
    add_users(
        platform,
        ("ada", "admin"),
        ("alice", "submitter", "hosp"),
        ("agnes", "agent", None, "Beijing"),
        ("audrey", "auditor"),
    )
    owner = permissions.OWNER
    policy = tmp_path / "fifo.yaml"
    policy.write_text(POLICY)
    with unit_of_work(platform) as session:
        from gpupool.accounting.declarations import parse_programmes
        from gpupool.scheduler import accounts, policies_store

        (programme,) = parse_programmes([{"name": "vouch", "rate": 1.0, "vouchers": True}], "p")
        accounts.add_programme(session, owner, programme)
        accounts.award_voucher(session, owner, "hosp", "vouch", 10)
        policies_store.apply_policy_text(session, owner, POLICY, "p.yaml", "")
        job, _ = service.submit_job(
            session, owner, JobRequest(org="hosp", gpus=8, hours=5, gpu_types=["A100"])
        )
        run_active_round(session)
        pending, _ = service.submit_job(session, owner, JobRequest(org="hosp", gpus=16, hours=1))
        lab, _ = service.submit_job(session, owner, JobRequest(org="lab", gpus=16, hours=1))
        raw = {name: tokens.create_token(session, owner, name)[1] for name in USERS.values()}
    ids = {name: tokens.token_prefix(token) for name, token in raw.items()}
    return {
        "db": platform,
        "job": str(job),
        "pending": str(pending),
        "lab": str(lab),
        "policy": str(policy),
        "ids": ids,
    }


def _counts(db) -> dict[str, int]:
    with unit_of_work(db) as session:
        return {
            name: session.scalar(select(func.count()).select_from(table))
            for name, table in Base.metadata.tables.items()
        }


def _audit_since(db, last: int) -> list[tuple]:
    with unit_of_work(db) as session:
        query = select(AuditLogRow).where(AuditLogRow.id > last).order_by(AuditLogRow.id)
        return [(r.actor, r.outcome) for r in session.scalars(query)]


def _last_audit(db) -> int:
    with unit_of_work(db) as session:
        return session.scalar(select(func.max(AuditLogRow.id))) or 0


# Who may do what is decided above the database: every role runs on SQLite, and the
# submitter (allowed and refused operations both, each refusal rolled back and its
# audit row written) on PostgreSQL too.
@pytest.mark.parametrize(
    ("db_kind", "role"),
    [
        *(("sqlite", role) for role in (A, S, G, U)),
        pytest.param("postgres", S, marks=pytest.mark.postgres),
    ],
    indirect=["db_kind"],
)
def test_every_operation_for_every_role(world, role):
    user = USERS[role]
    runner = CliRunner()
    values = {**world, "own": world["ids"][user], "ada": world["ids"]["ada"]}
    for operation, template, allowed in EXPECTED:
        args = [part.format(**values) for part in template]
        before, last = _counts(world["db"]), _last_audit(world["db"])
        result = runner.invoke(app, ["--db", world["db"], "--as", user, *args])
        what = f"{operation}: {user} ({role}) {' '.join(args)}"
        if role in allowed:
            assert result.exit_code == 0, f"{what} was refused: {result.stderr}"
            continue
        assert result.exit_code == 2, f"{what} was allowed"
        assert result.stderr.startswith("error: ") and " may not " in result.stderr, what
        assert len(result.stderr.splitlines()) == 1, what
        counts = _counts(world["db"])
        assert counts.pop("audit_log") == before.pop("audit_log") + 1, what
        assert counts == before, f"{what} wrote something"
        assert _audit_since(world["db"], last) == [(user, "denied")], what


def test_the_permissions_table_says_what_the_cli_does():
    for operation, _args, allowed in EXPECTED:
        granted = set(permissions.OPERATIONS[operation].grants)
        # a scoped grant may still refuse one target (another org's job): never more roles
        assert allowed <= granted, operation
    tested = {operation for operation, _args, _allowed in EXPECTED}
    assert tested == set(permissions.OPERATIONS)  # every operation is tried


def _json(db, user, *args):
    result = CliRunner().invoke(app, ["--db", db, "--as", user, *args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@SQLITE_ONLY  # the PostgreSQL submitter case above covers the same checks
def test_a_submitter_sees_its_own_organisation_only(world):
    db = world["db"]
    assert {j["org"] for j in _json(db, "alice", "job", "list")["jobs"]} == {"hosp"}
    assert {j["org"] for j in _json(db, "ada", "job", "list")["jobs"]} == {"hosp", "lab"}
    assert [o["name"] for o in _json(db, "alice", "org", "list")] == ["hosp"]
    assert [v["org"] for v in _json(db, "alice", "voucher", "list")] == ["hosp"]
    (programme,) = _json(db, "alice", "programme", "list")
    assert programme["name"] == "vouch" and programme["subsidy_paid"] is None
    assert _json(db, "ada", "programme", "list")[0]["subsidy_paid"] == 0.0
    # an agent sees the jobs placed at its site only (job 1 runs on p-a100 in Beijing)
    assert [j["id"] for j in _json(db, "agnes", "job", "list")["jobs"]] == [int(world["job"])]


def test_a_submitter_reads_only_its_own_organisations_money(world):
    db = world["db"]
    with unit_of_work(db) as session:
        for waiting in (world["pending"], world["lab"]):  # FIFO: they would block the rest
            service.cancel_job(session, "ada", int(waiting))
        for org, gpus in (("hosp", 1), ("lab", 2)):
            job, _ = service.submit_job(
                session, "ada", JobRequest(org=org, gpus=gpus, hours=1, gpu_types=["H100"])
            )
    runner = CliRunner()
    assert runner.invoke(app, ["--db", db, "schedule"]).exit_code == 0
    for job in ("4", "5"):
        finished = runner.invoke(app, ["--db", db, "job", "finish", job])
        assert finished.exit_code == 0, finished.stderr
    every = _json(db, "ada", "report", "usage", "--by", "org")
    own = _json(db, "alice", "report", "usage", "--by", "org")
    assert {r["org"] for r in every} == {"hosp", "lab"}
    assert {r["org"] for r in own} == {"hosp"}
    assert own == [r for r in every if r["org"] == "hosp"]
    by_domain = _json(db, "alice", "report", "usage", "--by", "domain")
    assert [r["domain"] for r in by_domain] == ["medical"]  # lab's general is not there
    refused = runner.invoke(
        app, ["--db", db, "--as", "alice", "report", "subsidies", "--png", "burn.png"]
    )
    assert refused.exit_code == 2 and refused.stderr.startswith("error: --as: alice may not")


@SQLITE_ONLY  # the PostgreSQL submitter case above covers the same checks
def test_a_submitter_may_not_set_a_priority_boost(world):
    db = world["db"]
    runner = CliRunner()
    last, before = _last_audit(db), _counts(db)
    boosted = ["job", "submit", "--org", "hosp", "--gpus", "1", "--hours", "1", "--priority", "5"]
    result = runner.invoke(app, ["--db", db, "--as", "alice", *boosted])
    assert (result.exit_code, result.stderr) == (
        2,
        "error: --priority: alice may not set a priority boost: admins only (leave it out or 0)\n",
    )
    after = _counts(db)
    assert after.pop("audit_log") == before.pop("audit_log") + 1 and after == before
    assert _audit_since(db, last) == [("alice", "denied")]
    plain = runner.invoke(app, ["--db", db, "--as", "alice", *boosted[:-2], "--priority", "0"])
    assert plain.exit_code == 0, plain.stderr
    admin = runner.invoke(app, ["--db", db, "--as", "ada", *boosted])
    assert admin.exit_code == 0, admin.stderr
    shown = _json(db, "ada", "job", "show", admin.stdout.strip())
    assert shown["priority"] == 5


def test_docs_security_shows_the_table_the_code_enforces():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs/security.md").read_text()
    start = text.index("<!-- operations table: generated by permissions.operations_table() -->")
    end = text.index("<!-- end of operations table -->")
    shown = text[start:end].split("\n", 1)[1].strip()
    assert shown == permissions.operations_table()
