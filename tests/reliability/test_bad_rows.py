"""Bad rows already stored never stop scheduling (issue 15; gpupool.scheduler.quarantine).

Each test writes the exact bad rows of the reproductions straight into the
database (bypassing every validator, as an older version, a hand edit or a
future bug would), next to a good job. One round must then start the good
job, fail the bad one with its reason and an audit row, or set aside the bad
platform row with an audit row; a daemon must keep running and scheduling.

Platform (tests/conftest.py): p-a100 = 2 nodes x 8 A100 (speed 1.0) at 10.00,
p-h100 = 1 node x 8 H100 (speed 2.0) at 20.00; hosp (medical, budget 1000),
lab (general, no budget). FIFO places on the first allowed pool by name.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, insert, select, update
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.model import WaitReason
from gpupool.policies.fifo import FifoPolicy
from gpupool.scheduler import daemon, repository, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import (
    AuditLogRow,
    GpuTypeRow,
    JobRow,
    LedgerEntryRow,
    OrgRow,
    PlacementRow,
    PolicyVersionRow,
    SchedulerRoundRow,
)
from gpupool.scheduler.rounds import run_active_round, run_round
from gpupool.scheduler.service import JobRequest
from tests.reliability.invariants import check_all

T0 = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)


def _submit(db, *requests, now=T0 - dt.timedelta(hours=1)):
    with unit_of_work(db) as session:
        results = service.submit_jobs(session, "admin", list(requests), now=now)
    return [job_id for job_id, _ in results]


def _store(db, statement):
    """Write a row as no validator would let it through."""
    with unit_of_work(db) as session:
        session.execute(statement)


def _job(db, job_id):
    with unit_of_work(db) as session:
        row = session.get(JobRow, job_id)
        return row.state, row.end_reason, row.wait_reason


def _audits(db, action):
    with unit_of_work(db) as session:
        rows = session.scalars(
            select(AuditLogRow).where(AuditLogRow.action == action).order_by(AuditLogRow.id)
        ).all()
        return [(r.actor, r.target, r.before, r.after) for r in rows]


def _round(db, now=T0, **kwargs):
    with unit_of_work(db) as session:
        result, _ = run_active_round(session, now=now, actor="admin", **kwargs)
    return result


@pytest.mark.parametrize(
    ("hours", "reason"),
    [
        (1e8, "invalid stored data: hours=1e+08 beyond 87600"),  # was: year 10000 is out of range
        (1e308, "invalid stored data: hours=1e+308 beyond 87600"),  # was: bad usage interval
    ],
)
def test_a_job_with_absurd_hours_is_failed_and_the_round_goes_on(platform, hours, reason):
    bad, good = _submit(
        platform, JobRequest(org="lab", gpus=1, hours=1), JobRequest(org="lab", gpus=1, hours=1)
    )
    _store(platform, update(JobRow).where(JobRow.id == bad).values(hours=hours))
    result = _round(platform)
    assert [s.job_id for s in result.started] == [good]
    assert result.quarantined == {bad: reason}
    assert _job(platform, bad) == ("failed", reason, None)
    assert _job(platform, good)[0] == "running"
    assert _audits(platform, "job.quarantine") == [
        ("admin", f"job {bad}", {"state": "pending"}, {"state": "failed", "reason": reason})
    ]
    again = _round(platform, now=T0 + dt.timedelta(minutes=1))  # the next round is plain
    assert again.quarantined == {} and len(_audits(platform, "job.quarantine")) == 1
    check_all(platform)


def test_schedule_command_exits_0_and_names_the_failed_job(platform):
    bad, good = _submit(
        platform, JobRequest(org="lab", gpus=1, hours=1), JobRequest(org="lab", gpus=1, hours=1)
    )
    _store(platform, update(JobRow).where(JobRow.id == bad).values(hours=1e8))
    runner = CliRunner()
    dry = runner.invoke(app, ["--db", platform, "--as", "admin", "schedule", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"job {bad} would be failed: invalid stored data: hours=1e+08 beyond 87600" in dry.stdout
    assert _job(platform, bad)[0] == "pending"  # a dry run writes nothing
    live = runner.invoke(app, ["--db", platform, "--as", "admin", "schedule", "--json"])
    assert live.exit_code == 0, live.output
    printed = json.loads(live.stdout)
    assert [s["job"] for s in printed["started"]] == [good]
    assert printed["quarantined"] == {str(bad): "invalid stored data: hours=1e+08 beyond 87600"}
    assert _job(platform, bad)[0] == "failed"


def test_a_gpu_type_with_absurd_speed_is_set_aside_and_its_pool_left_out(platform):
    anywhere, a100_only = _submit(
        platform,
        JobRequest(org="lab", gpus=2, hours=1),
        JobRequest(org="lab", gpus=1, hours=1, gpu_types=["A100"]),
    )
    _store(platform, update(GpuTypeRow).where(GpuTypeRow.name == "A100").values(speed=1e-300))
    result = _round(platform)
    assert [(s.job_id, s.pool) for s in result.started] == [(anywhere, "p-h100")]
    assert result.waiting[a100_only] in (WaitReason.NO_CAPACITY, WaitReason.NEVER_FITS)
    assert result.quarantined == {}
    assert result.set_aside == {
        "GPU type A100": "invalid stored data: speed=1e-300 below 0.001",
        "pool p-a100": "invalid stored data: its GPU type A100 is set aside",
    }
    assert _job(platform, a100_only)[0] == "pending"  # waits for the type to be fixed
    _round(platform, now=T0 + dt.timedelta(minutes=1))
    audits = _audits(platform, "platform.set_aside")
    assert [(actor, target) for actor, target, _, _ in audits] == [
        ("admin", "GPU type A100"),
        ("admin", "pool p-a100"),
    ]  # audited once, not every round


def test_a_running_job_on_a_type_that_turns_bad_keeps_its_gpus(platform):
    (running,) = _submit(platform, JobRequest(org="lab", gpus=8, hours=1, gpu_types=["A100"]))
    _round(platform)
    _store(platform, update(GpuTypeRow).where(GpuTypeRow.name == "A100").values(speed=1e-300))
    (later,) = _submit(platform, JobRequest(org="lab", gpus=8, hours=1, gpu_types=["H100"]))
    result = _round(platform, now=T0 + dt.timedelta(hours=3))  # past its deadline at speed 1
    assert [s.job_id for s in result.started] == [later]
    assert result.timed_out == []  # no deadline to trust: not reaped, not failed
    assert _job(platform, running)[0] == "running"
    with unit_of_work(platform) as session:  # its site can still report it, and it is charged
        from gpupool.scheduler import lifecycle

        lifecycle.finish_job(session, "admin", later, now=T0 + dt.timedelta(hours=4))
    check_all(platform)


def test_a_running_job_whose_hours_turn_bad_is_failed_and_charged_to_now(platform):
    running, good = _submit(
        platform, JobRequest(org="lab", gpus=8, hours=1), JobRequest(org="lab", gpus=16, hours=1)
    )
    _round(platform)
    _store(platform, update(JobRow).where(JobRow.id == running).values(hours=1e308))
    result = _round(platform, now=T0 + dt.timedelta(minutes=30))
    reason = "invalid stored data: hours=1e+308 beyond 87600"
    assert result.quarantined == {running: reason}
    assert [s.job_id for s in result.started] == [good]  # the GPUs it held were freed
    assert _job(platform, running) == ("failed", reason, None)
    with unit_of_work(platform) as session:
        charged = session.scalars(
            select(LedgerEntryRow.cost).where(LedgerEntryRow.job_id == running)
        ).all()
        open_ = session.scalar(
            select(func.count())
            .select_from(PlacementRow)
            .where(PlacementRow.job_id == running, PlacementRow.ended_at.is_(None))
        )
    assert charged == [40.0] and open_ == 0  # 8 GPUs x 0.5 h x 10.00
    check_all(platform)


def test_an_org_with_an_absurd_budget_is_set_aside_and_its_jobs_wait(platform, db_url):
    hosp_job, lab_job = _submit(
        platform, JobRequest(org="hosp", gpus=1, hours=1), JobRequest(org="lab", gpus=1, hours=1)
    )
    # NUMERIC(14, 2) refuses 1e30 on PostgreSQL; a negative budget is as impossible
    budget = 1e30 if db_url.startswith("sqlite") else -5.0
    _store(platform, update(OrgRow).where(OrgRow.name == "hosp").values(budget=budget))
    result = _round(platform)
    assert [s.job_id for s in result.started] == [lab_job]
    assert result.quarantined == {}
    assert result.held == {hosp_job: "organisation hosp has invalid stored data"}
    assert _job(platform, hosp_job) == (
        "pending",
        None,
        "organisation hosp has invalid stored data",
    )
    (target,) = [t for _, t, _, _ in _audits(platform, "platform.set_aside")]
    assert target == "organisation hosp"


POLICY_TEXT = """\
kind: fifo
subsidy: {domain_rates: {general: 0.5}, org_cap: 1.0e+30}
"""


def test_an_active_policy_with_an_absurd_cap_falls_back_to_fifo(platform):
    (job,) = _submit(platform, JobRequest(org="lab", gpus=1, hours=1))
    _store(
        platform,
        insert(PolicyVersionRow).values(
            version=1,
            kind="fifo",
            document=POLICY_TEXT,
            applied_by="admin",
            applied_at=T0 - dt.timedelta(days=1),
            active=True,
            comment="",
        ),
    )
    with unit_of_work(platform) as session:
        result, active = run_active_round(session, now=T0, actor="admin")
    assert [s.job_id for s in result.started] == [job]
    assert (active.version, active.kind) == (None, "fifo")
    # the document no longer parses (gpupool.limits bounds money in policy documents)
    assert result.set_aside == {
        "policy v1": "invalid stored data: PolicyDocumentError: policy v1:2 subsidy.org_cap: "
        "must be between 0 and 100,000,000,000 (money per period)"
    }
    assert daemon.policy_label(active) == "FIFO (default; policy v1 set aside)"
    assert result.started[0].charge.subsidy == 0.0  # its subsidy rules are set aside with it
    with unit_of_work(platform) as session:
        assert session.scalars(select(SchedulerRoundRow.policy_version)).all() == [None]
    assert [t for _, t, _, _ in _audits(platform, "platform.set_aside")] == ["policy v1"]


class _Choking(FifoPolicy):
    """FIFO that raises on jobs named "choke" (a bug the gate does not know about)."""

    def allocate(self, snapshot):
        if any(j.name == "choke" for j in snapshot.pending):
            raise ZeroDivisionError("float division by zero")
        return super().allocate(snapshot)


def test_a_job_the_policy_fails_on_is_isolated_and_failed(platform):
    jobs = _submit(
        platform,
        *[JobRequest(org="lab", gpus=1, hours=1) for _ in range(4)],
        JobRequest(org="lab", gpus=1, hours=1, name="choke"),
        *[JobRequest(org="hosp", gpus=1, hours=1) for _ in range(3)],
    )
    choke = jobs[4]
    with unit_of_work(platform) as session:
        result = run_round(session, _Choking(), T0, actor="admin")
    reason = "invalid stored data: scheduling it fails (ZeroDivisionError: float division by zero)"
    assert result.quarantined == {choke: reason}
    assert sorted(s.job_id for s in result.started) == sorted(set(jobs) - {choke})
    assert _job(platform, choke) == ("failed", reason, None)
    assert [t for _, t, _, _ in _audits(platform, "job.quarantine")] == [f"job {choke}"]


class _Broken(FifoPolicy):
    """A policy that fails on any pending job: no job is to blame."""

    def allocate(self, snapshot):
        if snapshot.pending:
            raise RuntimeError("broken policy")
        return super().allocate(snapshot)


def test_a_broken_policy_blames_no_job_and_the_round_fails_cleanly(platform):
    jobs = _submit(
        platform, JobRequest(org="lab", gpus=1, hours=1), JobRequest(org="hosp", gpus=1, hours=1)
    )
    _store(platform, update(JobRow).where(JobRow.id == jobs[0]).values(name="choke"))
    with unit_of_work(platform) as session:  # the culprit found, the others are fine
        assert run_round(session, _Choking(), T0, actor="admin").quarantined.keys() == {jobs[0]}
    (more,) = _submit(platform, JobRequest(org="lab", gpus=1, hours=1))
    with pytest.raises(RuntimeError, match="broken policy"), unit_of_work(platform) as session:
        run_round(session, _Broken(), T0, actor="admin")  # every job fails alone: no culprit
    assert _job(platform, more)[0] == "pending"
    with unit_of_work(platform) as session:  # rolled back: only the first round is there
        assert session.scalar(select(func.count()).select_from(SchedulerRoundRow)) == 1
    assert len(_audits(platform, "job.quarantine")) == 1


def test_the_daemon_backs_off_and_keeps_running_when_rounds_fail(monkeypatch):
    calls = []

    def failing_round(*_args):
        calls.append(time.monotonic())
        raise RuntimeError("an unexpected bug")

    monkeypatch.setattr(daemon, "one_round", failing_round)
    monkeypatch.setattr(daemon, "MIN_RETRY_SECONDS", 0.01)
    summary = daemon.run_daemon(None, "admin", interval=0.0, max_rounds=4)
    assert (summary.failed, summary.rounds) == (4, 0)
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert gaps[0] >= 0.01 and gaps[2] >= 0.04  # interval 0 never becomes a hot loop
    assert [daemon.next_wait(10, n) for n in range(5)] == [10, 10, 20, 40, 80]
    assert daemon.next_wait(10, 50) == daemon.MAX_BACKOFF_SECONDS


def test_the_daemon_stops_on_its_stop_event_while_backing_off(monkeypatch):
    monkeypatch.setattr(daemon, "one_round", lambda *_: 1 / 0)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    began = time.monotonic()
    summary = daemon.run_daemon(None, "admin", interval=0.0, stop=stop)
    assert summary.failed >= 1 and time.monotonic() - began < 30


def test_scheduler_run_keeps_scheduling_after_meeting_a_bad_row(platform):
    bad, good = _submit(
        platform,
        JobRequest(org="lab", gpus=1, hours=1),
        JobRequest(org="lab", gpus=1, hours=1),
        now=None,
    )
    _store(platform, update(JobRow).where(JobRow.id == bad).values(hours=1e8))
    env = dict(os.environ, GPUPOOL_USER="admin", GPUPOOL_DATABASE_URL=platform)
    env.pop("GPUPOOL_TEST_PAUSE_IN_ROUND", None)
    command = [sys.executable, "-m", "gpupool.cli.main", "scheduler", "run", "--interval", "0.2"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        later = None
        while time.monotonic() < deadline and process.poll() is None:
            if later is None and _job(platform, good)[0] == "running":
                (later,) = _submit(platform, JobRequest(org="lab", gpus=1, hours=1), now=None)
            if later is not None and _job(platform, later)[0] == "running":
                break
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()[1]  # it did not exit
        assert later is not None and _job(platform, later)[0] == "running"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"job {bad} quarantined: invalid stored data: hours=1e+08 beyond 87600" in err
    assert "round failed" not in err
    assert _job(platform, bad)[0] == "failed"
    with unit_of_work(platform) as session:
        assert repository.get_job(session, good).state == "running"


def test_a_policy_that_no_longer_parses_falls_back_to_fifo(platform):
    (job,) = _submit(platform, JobRequest(org="lab", gpus=1, hours=1))
    _store(
        platform,
        insert(PolicyVersionRow).values(
            version=1,
            kind="fifo",
            document="kind: fifo\nsubsidy: {org_cap: lots}\n",
            applied_by="admin",
            applied_at=T0 - dt.timedelta(days=1),
            active=True,
            comment="",
        ),
    )
    result = _round(platform)
    assert [s.job_id for s in result.started] == [job]
    (reason,) = result.set_aside.values()
    assert reason.startswith("invalid stored data: ") and "org_cap" in reason


def test_a_programme_and_a_voucher_with_absurd_numbers_are_set_aside(platform):
    from gpupool.accounting.programmes import Programme
    from gpupool.scheduler import accounts
    from gpupool.scheduler.orm import ProgrammeRow, VoucherRow

    with unit_of_work(platform) as session:
        accounts.add_programme(session, "admin", Programme("health", rate=0.5))
        accounts.add_programme(session, "admin", Programme("compute", uses_vouchers=True))
        voucher = accounts.award_voucher(
            session, "admin", "lab", "compute", 5, now=T0 - dt.timedelta(days=1)
        ).id
    with unit_of_work(platform) as session:
        row = session.scalars(select(ProgrammeRow).where(ProgrammeRow.name == "health")).one()
        row.rules = {**row.rules, "org_cap": 1.0e30}  # was: decimal.InvalidOperation
    _store(platform, update(VoucherRow).where(VoucherRow.id == voucher).values(amount=-1.0))
    (job,) = _submit(platform, JobRequest(org="lab", gpus=1, hours=1))
    result = _round(platform)
    assert [s.job_id for s in result.started] == [job]
    assert result.started[0].charge.subsidy == 0.0  # neither funds anything meanwhile
    assert result.set_aside == {
        "programme health": "invalid stored data: org_cap=1e+30 beyond 1e+12",
        f"voucher {voucher}": "invalid stored data: amount=-1 below 0",
    }
    with unit_of_work(platform) as session:
        assert session.get(VoucherRow, voucher).balance == 5.0  # kept as stored


@pytest.mark.parametrize(
    ("gpus", "hours", "priority", "gpu_types", "reason"),
    [
        (4, 2.0, 0, ["H100"], None),
        (4, 87_600.0, -5, None, None),
        (4, float("nan"), 0, [], "hours=nan is not finite"),
        (4, float("inf"), 0, [], "hours=inf is not finite"),
        (4, 0.0, 0, [], "hours=0 is not positive"),
        (0, 1.0, 0, [], "gpus=0 is not positive"),
        (True, 1.0, 0, [], "gpus=True is not a number"),
        (4, 1.0, 2**62, [], "priority=4611686018427387904 beyond 1e+09"),
        (4, 1.0, 0, {"H100": 1}, "gpu_types=dict is not a list of names"),
        (4, 1.0, 0, [7], "gpu_types=list is not a list of names"),
        (100_000, 1.0, 0, ["H100"], None),  # 1e5 GPUs x 5 h (10 x 0.5 h) x 1000.00
        (1_000_000, 87_600.0, 0, ["A100"], None),  # 1e6 x 92 days x 10.00: 2.2e10
        (1_000_000, 87_600.0, 0, [], "a charge on p-dear could reach 2.208e+12, beyond 1e+12"),
    ],
)
def test_the_job_gate_names_the_field_and_the_fast_path_agrees(
    gpus, hours, priority, gpu_types, reason
):
    from gpupool.scheduler import quarantine

    types = quarantine.type_facts(
        [
            quarantine.PoolFacts("p-a100", "A100", 1.0, 10.0, 2),
            quarantine.PoolFacts("p-h100", "H100", 2.0, 20.0, 1),
            quarantine.PoolFacts("p-dear", "H100", 2.0, 1000.0, 1),  # the dearest H100 pool
            quarantine.PoolFacts("p-cheap", "H100", 2.0, 1.0, 1),
        ]
    )
    assert quarantine.job_problem(gpus, hours, priority, T0, gpu_types, types) == reason
