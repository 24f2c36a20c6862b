"""CLI: programme add|list, voucher award|list, report usage|subsidies; bad input writes nothing."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.scheduler import lifecycle, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import LedgerEntryRow, ProgrammeRow, VoucherRow
from gpupool.scheduler.rounds import active_policy, run_round
from tests.conftest import SQLITE_ONLY


@pytest.fixture
def cli(platform):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["--db", platform, "--as", "admin", *args])

    return invoke


def _counts(db):
    with unit_of_work(db) as session:
        return [
            session.scalar(select(func.count()).select_from(t))
            for t in (ProgrammeRow, VoucherRow, LedgerEntryRow)
        ]


HEALTH = [
    *("programme", "add", "health", "--period", "2026-Q4", "--budget", "1000"),
    *("--rate", "0.5", "--domain", "medical", "--exchange", "H100=0.6", "--org-cap", "600"),
    *("--end", "carry-over:0.5", "--when-exhausted", "wait"),
    *("--job-cap", "250", "--org-share", "0.4"),
]


def test_programme_add_and_list(cli):
    assert cli(*HEALTH).stdout == "added programme health\n"
    (view,) = json.loads(cli("programme", "list", "--json").stdout)
    assert view == {
        "name": "health",
        "period": "2026-Q4",
        "budget": 1000.0,
        "rate": 0.5,
        "domains": ["medical"],
        "orgs": [],
        "gpu_type_rates": {},
        "vouchers": True,
        "exchange_rates": {"H100": 0.6},
        "org_cap": 600.0,
        "end_of_period": "carry-over:0.5",
        "when_exhausted": "wait",
        "job_cap": 250.0,
        "pacing": "none",
        "org_share": 0.4,
        "subsidy_paid": 0.0,
        "budget_left_now": 1000.0,
    }


@SQLITE_ONLY  # the view's field, not the database
def test_a_paced_programme_says_so(cli):
    added = cli("programme", "add", "even", "--period", "quarterly", "--budget", "90")
    paced = cli(
        "programme", "add", "slow", "--period", "quarterly", "--budget", "90", "--pacing", "even"
    )
    assert added.exit_code == paced.exit_code == 0, paced.stderr
    views = {v["name"]: v for v in json.loads(cli("programme", "list", "--json").stdout)}
    assert (views["even"]["pacing"], views["slow"]["pacing"]) == ("none", "even")
    # released evenly: less than the whole budget is left before the quarter ends
    assert views["even"]["budget_left_now"] == 90.0 > views["slow"]["budget_left_now"]


@SQLITE_ONLY  # a file's errors are found before the database is opened
def test_programme_from_file_reports_file_and_line(cli, tmp_path, platform):
    good = tmp_path / "p.yaml"
    good.write_text("programmes:\n  - name: edu\n    period: yearly\n    rate: 0.3\n")
    assert cli("programme", "add", "--file", str(good)).exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("programmes:\n  - name: x\n    rate: 1.5\n")
    result = cli("programme", "add", "--file", str(bad))
    assert result.exit_code == 2
    assert result.stderr == f"error: {bad}:3 programmes[0].rate: must be between 0 and 1\n"
    assert _counts(platform) == [1, 0, 0]


@SQLITE_ONLY  # validated before anything is written: no database-specific step
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--period", "2026-Q5"], "error: --period: period is a label like 2026-Q4"),
        (["--rate", "2"], "error: --rate: must be between 0 and 1"),
        (["--budget", "-3"], "error: --budget: must be >= 0"),
        (["--domain", "nope"], "error: --domain: no domain named 'nope'"),
        (["--end", "keep"], "error: --end: end_of_period is 'expire' or {carry_over:"),
        (["--gpu-type-rate", "H100"], "error: --gpu-type-rate: expected TYPE=NUMBER, got 'H100'"),
        (
            ["--rate", "0.5", "--pacing", "weekly"],
            "error: --pacing: unknown value 'weekly'; expected one of: none, even",
        ),
        (
            ["--rate", "0.5", "--org-share", "3"],
            "error: --org-share: must be between 0 and 1",
        ),
        (
            ["--rate", "0.5", "--job-cap", "-1"],
            "error: --job-cap: must be >= 0",
        ),
    ],
)
def test_bad_programme_options_write_nothing(cli, platform, args, message):
    result = cli("programme", "add", "p", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert _counts(platform) == [0, 0, 0]


def test_voucher_award_list_and_bad_input(cli, platform):
    cli(*HEALTH)
    out = cli(
        "voucher", "award", "hosp", "--programme", "health", "--amount", "100", "--at", "2026-10-01"
    )
    assert out.stdout == (
        "awarded voucher 1: 100 hours of health to hosp, expires 2027-01-01T00:00:00Z\n"
    )
    assert json.loads(cli("voucher", "list", "--org", "hosp", "--json").stdout) == [
        {
            "id": 1,
            "org": "hosp",
            "programme": "health",
            "amount": 100.0,
            "balance": 100.0,
            "awarded_at": "2026-10-01T00:00:00Z",
            "expires_at": "2027-01-01T00:00:00Z",
        }
    ]
    for args, message in [
        (
            ["hosp", "--programme", "nope", "--amount", "5"],
            "error: --programme: no programme named 'nope'\n",
        ),
        (
            ["hosp", "--programme", "health", "--amount", "-5"],
            "error: --amount: must be a positive number of voucher hours, got '-5'\n",
        ),
        (
            ["hosp", "--programme", "health", "--amount", "5", "--expires", "soon"],
            "error: --expires: expected a date or time like 2026-10-01 or 2026-10-01T08:00, "
            "got 'soon'\n",
        ),
    ]:
        result = cli("voucher", "award", *args)
        assert (result.exit_code, result.stderr) == (2, message)
    assert _counts(platform) == [1, 1, 1]  # the programme, one voucher, its award entry


def test_reports_sum_the_ledger(cli, platform):
    cli(*HEALTH)
    cli(
        "voucher", "award", "hosp", "--programme", "health", "--amount", "100", "--at", "2026-10-01"
    )
    t0 = dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC)
    with unit_of_work(platform) as session:
        job, _ = service.submit_job(
            session,
            "admin",
            service.JobRequest(org="hosp", gpus=4, hours=4, gpu_types=["H100"]),
            t0,
        )
    with unit_of_work(platform) as session:
        run_round(session, active_policy(session).policy, t0)
    with unit_of_work(platform) as session:
        lifecycle.finish_job(
            session, "admin", job, at=t0 + dt.timedelta(hours=2), now=t0 + dt.timedelta(hours=2)
        )
    # 4 H100 x 2 h x 20.00 = 160.00; 8 GPU-h / 0.6 = 13.33 voucher hours; half subsidised
    usage = json.loads(
        cli("report", "usage", "--by", "org", "--period", "2026-Q4", "--json").stdout
    )
    assert usage == [
        {
            "period": "2026-Q4",
            "org": "hosp",
            "gpu_hours": 8.0,
            "effective_gpu_hours": 16.0,
            "cost": 160.0,
            "subsidy": 80.0,
            "org_pays": 80.0,
            "jobs": 1,
        }
    ]
    subsidies = json.loads(cli("report", "subsidies", "--json").stdout)
    assert subsidies == [
        {
            "programme": "health",
            "period": "2026-Q4",
            "org": "hosp",
            "budget": 1000.0,
            "subsidy": 80.0,
            "cost": 160.0,
            "org_pays": 80.0,
            "effective_gpu_hours": 16.0,
            "voucher_hours": 13.3333,
        }
    ]
    for args, message in [
        (["usage", "--period", "2026-Q5"], "error: --period: bad period label '2026-Q5'"),
        (["usage", "--by", "planet"], "error: --by: must be one of domain, org, gpu-type, site"),
        (["subsidies", "--programme", "nope"], "error: --programme: no programme named 'nope'"),
    ]:
        result = cli("report", *args)
        assert result.exit_code == 2 and result.stderr.startswith(message)
