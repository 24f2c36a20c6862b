"""Subsidy metrics of a simulation (issue 6): worked by hand on a tiny workload.

Platform: pool ``pa`` = 8 A100 (speed 1) on one node at 10.00 per GPU-hour, pool
``pb`` = 1 A100 at 10.00. Programme ``care``: domains med and edu, rate 0.5,
budget 40 (one fixed, unbounded period), no vouchers, no org cap.

All jobs arrive at 0 and start at once (fifo, everything fits):

    job 1 hospital (med) 2 GPUs x 2 h on pa: cost 40, subsidy 20 -> booked at 2 h,
          budget left 20; 4 subsidised effective GPU-h.
    job 2 uni (edu)      2 GPUs x 3 h on pa: cost 60; the programme wants 30 but
          has 20 left, so it funds 2/3 of the run: an entry of cost 40, subsidy 20,
          4 effective GPU-h, and an unfunded entry of cost 20, 2 effective GPU-h.
          Booked at 3 h, budget left 0.
    job 3 lab (gen)      4 GPUs x 1 h on pa: cost 40, no subsidy.
    job 4 lab (gen)      1 GPU, estimate 1 h, really 2 h, on pb: timed out at
          1 h x 1.1 + 5 min = 1 h 11 min (the live reaper's rule): cost 11.83.

Subsidised effective GPU-h: med 4, edu 4 (the funded entry only), gen 0:
shares 0.5 / 0.5 / 0. Burn-down of care: 40 at 0 h, 20 at 2 h, 0 at 3 h.
"""

from __future__ import annotations

import pytest

from gpupool.accounting.programmes import Programme
from gpupool.model import Domain, GpuType, Job, Org, Pool
from gpupool.policies.fifo import FifoPolicy
from gpupool.simulations.compare import (
    GPU_TYPE_GROUP,
    PROGRAMME_GROUP,
    ci_table,
    summarise_run,
)
from gpupool.simulations.engine import FINISHED, HOUR, TIMED_OUT, simulate
from gpupool.simulations.metrics import burn_down, summarise
from gpupool.simulations.workload import Scenario, SimJob

A100 = GpuType("A100", "nvidia", 80, speed=1.0)
CARE = Programme(name="care", budget=40.0, domains=frozenset({"med", "edu"}), rate=0.5)
ORGS = {"hospital": ("med",), "uni": ("edu",), "lab": ("gen",)}


def sim_job(job_id, org, gpus, hours, actual=None, types=()):
    domain = ORGS[org][0]
    job = Job(job_id, org, domain, gpus, hours, 0.0, gpu_types=types)
    return SimJob(job, hours if actual is None else actual)


def tiny(programmes=(CARE,)) -> Scenario:
    return Scenario(
        name="tiny-subsidy",
        gpu_types={"A100": A100},
        pools=(Pool("pa", "s1", "A100", 8, 8, 10.0), Pool("pb", "s2", "A100", 1, 1, 10.0)),
        domains={name: Domain(name) for name in ("med", "edu", "gen")},
        orgs={name: Org(name, domain) for name, (domain,) in ORGS.items()},
        jobs=(
            sim_job(1, "hospital", 2, 2.0),
            sim_job(2, "uni", 2, 3.0),
            sim_job(3, "lab", 4, 1.0),
            sim_job(4, "lab", 1, 1.0, actual=2.0),
        ),
        programmes=programmes,
    )


@pytest.fixture(scope="module")
def result():
    return simulate(tiny(), FifoPolicy())


def test_runs_as_worked(result):
    states = {r.job.id: (r.state, r.pool, r.finished_at / HOUR) for r in result.records}
    assert states == {
        1: (FINISHED, "pa", 2.0),
        2: (FINISHED, "pa", 3.0),
        3: (FINISHED, "pa", 1.0),
        4: (TIMED_OUT, "pb", pytest.approx(1.1 + 5 / 60)),
    }


def test_per_domain_subsidy_and_shares_of_subsidised_gpu_hours(result):
    metrics = summarise(result)
    domains = metrics["domains"]
    assert {d: m["subsidy"] for d, m in domains.items()} == {"edu": 20.0, "gen": 0.0, "med": 20.0}
    assert {d: m["subsidised_effective_gpu_hours"] for d, m in domains.items()} == {
        "edu": pytest.approx(4.0),
        "gen": 0.0,
        "med": pytest.approx(4.0),
    }
    assert {d: m["subsidised_share"] for d, m in domains.items()} == {
        "edu": pytest.approx(0.5),
        "gen": 0.0,
        "med": pytest.approx(0.5),
    }
    assert domains["edu"]["org_pays"] == 40.0
    assert domains["gen"]["timed_out"] == 1 and domains["gen"]["finished"] == 1
    assert domains["gen"]["cost"] == pytest.approx(40.0 + 11.83)
    assert metrics["conservation"]["timed_out"] == 1 and metrics["conservation"]["balanced"]


def test_programme_metrics_and_burn_down(result):
    assert summarise(result)["programmes"] == {
        "care": {
            "budget": 40.0,
            "subsidy": 40.0,
            "subsidised_effective_gpu_hours": pytest.approx(8.0),
            "budget_left_at_end": 0.0,
            "jobs_funded": 2,  # one medical and one education job, 20.00 each
            "top_job_subsidy": 20.0,
            "top10_share": 1.0,
        }
    }
    hours, left = burn_down(result)["care"]
    assert hours == [0.0, 2.0, 3.0, 3.0]
    assert left == [40.0, 20.0, 0.0, 0.0]


def test_without_programmes_no_subsidy_and_no_shares():
    metrics = summarise(simulate(tiny(programmes=()), FifoPolicy()))
    assert metrics["programmes"] == {}
    assert all(m["subsidised_share"] is None for m in metrics["domains"].values())
    assert metrics["platform"]["subsidy"] == 0.0


def test_comparison_table_has_programme_rows_and_domain_shares(result):
    summaries = [summarise_run(result, "care", 1), summarise_run(result, "care", 2)]
    rows = {(row.group, row.metric): row.cells["care"] for row in ci_table(summaries)}
    assert rows[(PROGRAMME_GROUP + "care", "subsidy spent")] == (40.0, 0.0)
    assert rows[(PROGRAMME_GROUP + "care", "budget left at the end")] == (0.0, 0.0)
    assert rows[("med", "share of subsidised GPU-h")] == (pytest.approx(0.5), 0.0)
    assert rows[("platform", "jobs timed out")] == (1.0, 0.0)
    # one GPU type: all the work, and its utilisation is the platform's
    assert rows[(GPU_TYPE_GROUP + "A100", "share of GPU-hours")] == (1.0, 0.0)
    hours = rows[(GPU_TYPE_GROUP + "A100", "GPU-hours")][0]
    assert hours == pytest.approx(result.busy_gpu_seconds["A100"] / HOUR) and hours > 0
    assert rows[(GPU_TYPE_GROUP + "A100", "utilisation")] == rows[("platform", "utilisation")]


def test_compare_takes_one_scenario_per_subsidy_scheme(tmp_path):
    """Schemes that differ in the scenario (its programmes) compare on the same workload."""
    from typer.testing import CliRunner

    from gpupool.cli.main import app
    from tests.simulations.test_cli_simulate import SCENARIO

    plain = tmp_path / "plain.yaml"
    plain.write_text(SCENARIO)
    care = tmp_path / "care.yaml"
    care.write_text(
        SCENARIO
        + "programmes:\n  - {name: care, period: quarterly, budget: 50, domains: [medical],"
        + " rate: 0.5}\n"
    )
    policy = tmp_path / "fifo.yaml"
    policy.write_text("kind: fifo\n")
    out = tmp_path / "cmp"
    args = ["simulate", "compare", str(plain), str(care), "--policy", str(policy)]
    result = CliRunner().invoke(app, [*args, "--seeds", "1", "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "2 runs: 2 schemes x 1 seeds" in result.stdout
    markdown = (out / "report.md").read_text()
    assert "| metric | plain | care |" in markdown
    assert "## programme: care" in markdown
    assert "| budget per period | – | 50.0 |" in markdown
    assert "| subsidy spent | – | 50.0 |" in markdown  # medical work far exceeds 100
    assert (out / "burn_down.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "subsidised_share.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "gpu_types.png").read_bytes()[:4] == b"\x89PNG"
    assert "## GPU type: " in markdown and "| share of GPU-hours |" in markdown


def test_budget_overrun_sums_what_orgs_paid_beyond_each_period_budget():
    from types import SimpleNamespace

    from gpupool.accounting.books import LedgerEntry
    from gpupool.simulations.metrics import budget_overrun

    def paid(org, period, amount, kind="charge"):
        return LedgerEntry(kind=kind, org=org, period=period, at=0.0, cost=amount)

    ledger = (
        paid("uni", "2026-Q1", 60.0),
        paid("uni", "2026-Q1", 50.0),  # 110 against 100: 10 over
        paid("uni", "2026-Q2", 30.0),  # within
        paid("hospital", "2026-Q1", 80.0),
        paid("hospital", "2026-Q1", -5.0, kind="correction"),  # 75 against 70: 5 over
        paid("lab", "2026-Q1", 1e6),  # no budget: never over
        LedgerEntry(kind="award", org="uni", period="2026-Q1", at=0.0, effective_gpu_hours=9.0),
    )
    result = SimpleNamespace(ledger=ledger, org_budgets={"uni": 100.0, "hospital": 70.0})
    assert budget_overrun(result) == {
        "budget_overrun": pytest.approx(15.0),
        "budget_overrun_periods": 2,
    }
