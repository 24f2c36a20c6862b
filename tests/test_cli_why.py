"""`job show` says why the policy chose the job's pool, on SQLite and PostgreSQL.

The small platform (tests/conftest.py): p-a100, A100 speed 1, 10.00 per GPU-hour;
p-h100, H100 speed 2, 20.00 per GPU-hour. Per effective GPU-hour both cost 10.00,
so by value (a tie, broken by name) and at list price alike lab's 1-GPU job
goes to p-a100. With 50% off
H100 lab pays 20 / 2 x 0.5 = 5.00 on p-h100, which a cheapest-first FIFO takes.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import PlacementRow
from tests.conftest import SQLITE_ONLY

CHEAPEST_FIFO = """\
kind: fifo
subsidy:
  gpu_type_rates: {H100: 0.5}
placement: {pool_order: cheapest}
"""
H100_REASON = "cheapest for lab after subsidy: 5.00 per effective GPU-hour"
VALUE_REASON = (
    "most effective GPU-hours per unit of price for lab: 10.00 per effective GPU-hour (speed 1)"
)


@pytest.fixture
def cli(platform):
    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, ["--db", platform, "--as", "admin", *args])
        assert result.exit_code == 0, result.stderr
        return result.stdout

    return invoke


def _submit_and_schedule(cli) -> str:
    job_id = cli("job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1").strip()
    cli("schedule")
    return job_id


def _pool_line(text: str) -> str:
    return next(line.strip() for line in text.splitlines() if line.strip().startswith("pool:"))


@SQLITE_ONLY  # the reason's text; stored reasons on PostgreSQL: the tests below
@pytest.mark.parametrize(
    ("policy", "pool", "reason"),
    [(None, "p-a100", VALUE_REASON), (CHEAPEST_FIFO, "p-h100", H100_REASON)],
    ids=["default fifo by value", "cheapest after subsidy"],
)
def test_job_show_prints_why_this_pool(cli, tmp_path, policy, pool, reason):
    if policy is not None:
        document = tmp_path / "cheapest.yaml"
        document.write_text(policy)
        cli("policy", "apply", str(document))
    job_id = _submit_and_schedule(cli)
    assert _pool_line(cli("job", "show", job_id)) == f"pool: {pool} — {reason}"
    shown = json.loads(cli("job", "show", job_id, "--json"))
    assert shown["pool"] == pool
    assert shown["accounting"]["pool_reason"] == reason
    assert [p["reason"] for p in shown["placements"]] == [reason]


def test_a_placement_from_before_reasons_prints_nothing_extra(cli, platform):
    job_id = _submit_and_schedule(cli)
    with unit_of_work(platform) as session:  # as if placed before migration 0002
        session.execute(update(PlacementRow).values(reason=None))
    text = cli("job", "show", job_id)
    assert _pool_line(text) == "pool: p-a100"
    assert "—" not in text
    shown = json.loads(cli("job", "show", job_id, "--json"))
    assert shown["accounting"]["pool_reason"] is None


PREEMPTING_PRIORITY = """\
kind: priority
domains:
  medical: {weight: 3.0}
  general: {weight: 1.0}
preemption: {enabled: true, min_gap: 1.0, min_run_minutes: 0}
"""


def test_a_requeued_job_shows_its_earlier_runs_reason(cli, tmp_path):
    # lab's H100-only gang takes the one H100 node; hosp's (priority 3 vs 1) preempts it
    document = tmp_path / "priority.yaml"
    document.write_text(PREEMPTING_PRIORITY)
    cli("policy", "apply", str(document))
    submit = ("job", "submit", "--gpus", "8", "--gpu-type", "H100", "--org")
    lab = cli(*submit[:-1], "--hours", "100", "--org", "lab").strip()
    cli("schedule")
    hosp = cli(*submit[:-1], "--hours", "1", "--org", "hosp").strip()
    cli("schedule")
    only_h100 = "the only GPU type it can use here: H100"
    text = cli("job", "show", lab)
    assert _pool_line(text) == "pool: -"  # requeued: it holds no pool now
    ran_on = [line for line in text.splitlines() if "ran on:" in line]
    assert len(ran_on) == 1 and ran_on[0].endswith(f" — {only_h100}")
    # gain: (3 - 1) x hosp's 8 GPUs x the ~50 hours lab has left (100 h at H100 speed 2);
    # its restart is free
    worth = "gain 800 > cost 0 GPU-hours"
    preempted = f"no room elsewhere: preempted lower-priority job(s) {lab} on p-h100 ({worth})"
    assert _pool_line(cli("job", "show", hosp)) == f"pool: p-h100 — {preempted}"
    # when and why it was paused: who preempted it, at which priority, and the appraisal
    paused_why = f"preempted by job {hosp} (priority 3 over 1) to start on p-h100: {worth}"
    shown = json.loads(cli("job", "show", lab, "--json"))
    [run] = shown["placements"]
    assert run["end_reason"] == paused_why
    assert f"paused: at {run['ended_at']} — {paused_why}" in _stripped(text)
    # hosp ends: lab resumes, and says so
    cli("job", "finish", hosp)
    cli("schedule")
    text = _stripped(cli("job", "show", lab))
    assert text.index("ran on:") < text.index("paused: at") < text.index("resumed on: p-h100")
    shown = json.loads(cli("job", "show", lab, "--json"))
    assert [p["end_reason"] for p in shown["placements"]] == [paused_why, None]


def _stripped(text: str) -> str:
    return "\n".join(line.strip() for line in text.splitlines())
