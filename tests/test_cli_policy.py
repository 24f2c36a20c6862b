"""`gpupool policy apply|show|history|diff|rollback` and `schedule` under the applied policy.

End to end through the Typer app on SQLite and PostgreSQL: exact output lines,
exit codes, and nothing written when a document or a version is bad.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import AuditLogRow, SchedulerRoundRow
from tests.conftest import SQLITE_ONLY, add_users

FIFO = "# baseline\nkind: fifo\n"
MEDICAL_FIRST = """\
kind: multifactor
description: medical first
domains:
  medical: {weight: 3.0}
  general: {weight: 1.0}
subsidy:
  domain_rates: {medical: 0.5}
options: {age_weight: 0, fairshare_weight: 0}
"""


@pytest.fixture
def cli(platform):
    add_users(platform, ("alice", "admin"), ("bob", "admin"))  # two admins: history says who
    runner = CliRunner()

    def invoke(*args: str, user: str = "alice"):
        return runner.invoke(app, ["--db", platform, "--as", user, *args])

    invoke.db = platform
    return invoke


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, text in (("fifo.yaml", FIFO), ("medical.yaml", MEDICAL_FIRST)):
        paths[name] = tmp_path / name
        paths[name].write_text(text)
    return paths


def _ok(result) -> str:
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _history(cli) -> list[dict]:
    return json.loads(_ok(cli("policy", "history", "--json")))


def test_apply_show_history_diff_rollback(cli, files):
    assert _ok(cli("policy", "apply", str(files["fifo.yaml"]), "--comment", "baseline")) == (
        "applied policy v1 (fifo); it replaces the FIFO default\n"
    )
    assert _ok(cli("policy", "apply", str(files["medical.yaml"]), user="bob")) == (
        "applied policy v2 (multifactor); it replaces v1\n"
    )
    shown = _ok(cli("policy", "show")).splitlines()
    assert shown[:6] == [
        "version:    2 (active)",
        "kind:       multifactor",
        "applied_by: bob",
        f"applied_at: {shown[3].split()[-1]}",
        "comment:    -",
        "",
    ]
    assert "\n".join(shown[6:]) + "\n" == MEDICAL_FIRST
    first = json.loads(_ok(cli("policy", "show", "v1", "--json")))
    assert (first["version"], first["active"], first["comment"], first["document"]) == (
        1,
        False,
        "baseline",
        FIFO,
    )
    diff = _ok(cli("policy", "diff", "1", "2")).splitlines()
    assert diff[:4] == [
        "* kind: fifo -> multifactor",
        "* domain medical weight: 1 -> 3",
        "* subsidy rate for domain medical: 0 -> 0.5",
        "* options: {} -> {age_weight: 0, fairshare_weight: 0}",
    ]
    assert diff[4:7] == ["", "--- v1", "+++ v2"]
    assert _ok(cli("policy", "rollback", "v1", "--comment", "oops")) == (
        "applied policy v3 (fifo), a copy of v1; it replaces v2\n"
    )
    history = _history(cli)
    assert [set(h) for h in history] == [
        {"version", "kind", "applied_by", "applied_at", "active", "comment"}
    ] * 3
    assert [
        (h["version"], h["kind"], h["applied_by"], h["active"], h["comment"]) for h in history
    ] == [
        (1, "fifo", "alice", False, "baseline"),
        (2, "multifactor", "bob", False, ""),
        (3, "fifo", "alice", True, "rollback to v1: oops"),
    ]
    assert json.loads(_ok(cli("policy", "show", "--json")))["document"] == FIFO
    table = _ok(cli("policy", "history"))
    assert "rollback to v1: oops" in table and "multifactor" in table
    with unit_of_work(cli.db) as session:
        actions = session.scalars(
            select(AuditLogRow.action)
            .where(AuditLogRow.action.like("policy.%"))
            .order_by(AuditLogRow.id)
        ).all()
    assert actions == ["policy.apply", "policy.apply", "policy.rollback"]


@SQLITE_ONLY  # a file's errors are found before the database is opened
def test_apply_of_an_invalid_file_prints_file_line_errors_and_writes_nothing(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: multifactor\ndomains:\n  medical: {weight: 0}\nsubsidy: {org_cap: -5}\n")
    result = cli("policy", "apply", str(bad))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"{bad}:3 domains.medical.weight: must be > 0",
        f"{bad}:4 subsidy.org_cap: must be >= 0",
    ]
    assert _history(cli) == []
    with unit_of_work(cli.db) as session:
        assert (
            session.scalars(select(AuditLogRow).where(AuditLogRow.action.like("policy.%"))).all()
            == []
        )


UNKNOWN_NAMES = """\
kind: priority
domains:
  medical: {weight: 2, guarantee: {gpus: {A100: 8, B200: 4}}}
  edu: {weight: 1}
subsidy:
  domain_rates: {medicl: 0.5}
  gpu_type_rates: {H100: 0.2, MI300: 0.1}
"""


def test_apply_refuses_names_the_platform_lacks_and_writes_nothing(cli, tmp_path):
    bad = tmp_path / "names.yaml"
    bad.write_text(UNKNOWN_NAMES)
    result = cli("policy", "apply", str(bad))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"{bad}:3 domains.medical.guarantee.gpus.B200: the platform has no GPU type 'B200'; "
        "it has: A100, H100",
        f"{bad}:4 domains.edu: the platform has no domain 'edu'; it has: general, medical",
        f"{bad}:6 subsidy.domain_rates.medicl: the platform has no domain 'medicl' "
        "(did you mean 'medical'?)",
        f"{bad}:7 subsidy.gpu_type_rates.MI300: the platform has no GPU type 'MI300'; "
        "it has: A100, H100",
    ]
    assert _history(cli) == []
    with unit_of_work(cli.db) as session:
        audit = select(AuditLogRow).where(AuditLogRow.action.like("policy.%"))
        assert session.scalars(audit).all() == []


def test_rollback_refuses_a_version_stored_before_names_were_checked(cli, files):
    """Versions applied by earlier releases were never checked: a rollback checks them."""
    from gpupool.scheduler import policies_store

    with unit_of_work(cli.db) as session:  # as an earlier release stored it
        policies_store._activate(session, "alice", "priority", UNKNOWN_NAMES, "", None, "x")
    _ok(cli("policy", "apply", str(files["fifo.yaml"])))
    result = cli("policy", "rollback", "v1")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[1] == (
        "error: policy v1:4 domains.edu: the platform has no domain 'edu'; it has: general, medical"
    )
    assert [h["version"] for h in _history(cli)] == [1, 2]


@SQLITE_ONLY  # version text and range checks; apply and rollback run on PostgreSQL too
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "9"), "error: VERSION: no policy version 9 (versions 1..1)"),
        (("show", "nine"), "error: VERSION: not a policy version: 'nine' (expected e.g. 3 or v3)"),
        (("diff", "1", "4"), "error: V2: no policy version 4 (versions 1..1)"),
        (("rollback", "5"), "error: VERSION: no policy version 5 (versions 1..1)"),
        (("rollback", "1"), "error: VERSION: v1 is already the active policy"),
    ],
)
def test_unknown_versions_are_one_line_errors(cli, files, args, message):
    _ok(cli("policy", "apply", str(files["fifo.yaml"])))
    result = cli("policy", *args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message + "\n")
    assert len(_history(cli)) == 1


@SQLITE_ONLY  # an empty history; apply and rollback run on PostgreSQL too
def test_show_and_history_before_any_apply(cli):
    result = cli("policy", "show")
    assert (result.exit_code, result.stderr) == (
        2,
        "error: VERSION: no policy has been applied; rounds use the FIFO default\n",
    )
    assert _ok(cli("policy", "history")) == (
        "no policy has been applied; rounds use the FIFO default\n"
    )


def test_schedule_uses_the_applied_policy_and_records_its_version(cli, files):
    lab = _ok(
        cli("job", "submit", "--org", "lab", "--gpus", "16", "--hours", "1", "--gpu-type", "A100")
    ).strip()
    hosp = _ok(
        cli("job", "submit", "--org", "hosp", "--gpus", "16", "--hours", "1", "--gpu-type", "A100")
    ).strip()
    fifo = json.loads(_ok(cli("schedule", "--dry-run", "--json")))
    assert (fifo["policy"], [s["job"] for s in fifo["started"]]) == ("FIFO (default)", [int(lab)])
    _ok(cli("policy", "apply", str(files["medical.yaml"])))
    live = json.loads(_ok(cli("schedule", "--json")))
    assert live["policy"] == "policy v1 (multifactor)"
    # 16 A100 x 1 h x 10.00 = 160; the document subsidises medical at 50%
    assert [
        (s["job"], s["pool"], s["cost"], s["subsidy"], s["org_pays"]) for s in live["started"]
    ] == [(int(hosp), "p-a100", 160.0, 80.0, 80.0)]
    assert [w["job"] for w in live["waiting"]] == [int(lab)]
    with unit_of_work(cli.db) as session:
        rounds = session.scalars(select(SchedulerRoundRow)).all()
    assert [(r.id, r.policy_version, r.started_jobs) for r in rounds] == [(live["round"], 1, 1)]
