"""Live scheduling rounds with FifoPolicy on the small platform (figures worked by hand).

Platform (tests/conftest.py): p-a100 = 2 nodes x 8 A100 at 10.00/GPU-h,
p-h100 = 1 node x 8 H100 (speed 2.0) at 20.00/GPU-h; hosp (medical, budget
1000), lab (general, no budget). FIFO places on the first pool by name.
"""

from __future__ import annotations

import datetime as dt
import math

import pytest
from sqlalchemy import func, select

from gpupool.model import Allocation, Placement, WaitReason
from gpupool.policies.fifo import FifoPolicy
from gpupool.scheduler import lifecycle, repository, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow, LedgerEntryRow, PlacementRow, SchedulerRoundRow
from gpupool.scheduler.rounds import PolicyViolation, active_policy, run_round
from gpupool.scheduler.service import JobRequest
from gpupool.scheduler.snapshot import take_snapshot

T0 = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)


def _submit(db, *requests):
    with unit_of_work(db) as session:
        results = service.submit_jobs(
            session, "admin", list(requests), now=T0 - dt.timedelta(hours=1)
        )
    return [job_id for job_id, _ in results]


def _four_jobs(db):
    return _submit(
        db,
        JobRequest(org="lab", gpus=8, hours=2),  # p-a100 node 0: 8 x 2h x 10 = 160
        JobRequest(org="hosp", gpus=8, hours=1, gpu_types=["H100"]),  # 8 x 0.5h x 20 = 80
        JobRequest(org="lab", gpus=16, hours=1),  # needs both A100 nodes: no capacity
        JobRequest(org="lab", gpus=1, hours=1),  # FIFO: blocked behind the 16-GPU job
    )


def _counts(db):
    with unit_of_work(db) as session:
        return tuple(
            session.scalar(select(func.count()).select_from(t))
            for t in (PlacementRow, LedgerEntryRow, SchedulerRoundRow)
        )


def test_fifo_round_writes_placements_ledger_and_wait_reasons(platform):
    j1, j2, j3, j4 = _four_jobs(platform)
    with unit_of_work(platform) as session:
        result = run_round(session, FifoPolicy(), T0)
    assert [(s.job_id, s.pool, s.nodes) for s in result.started] == [
        (j1, "p-a100", ((0, 8),)),
        (j2, "p-h100", ((0, 8),)),
    ]
    assert result.waiting == {j3: WaitReason.NO_CAPACITY, j4: WaitReason.PRIORITY}
    with unit_of_work(platform) as session:
        jobs = {j.id: service.job_view(j) for j in repository.list_jobs(session)}
        ledger = session.scalars(select(LedgerEntryRow).order_by(LedgerEntryRow.id)).all()
        round_row = session.scalars(select(SchedulerRoundRow)).one()
        placements = session.scalars(select(PlacementRow).order_by(PlacementRow.id)).all()
        free = {p["name"]: p["free_gpus"] for p in service.pool_views(session)}
    assert [
        (jobs[j]["state"], jobs[j]["pool"], jobs[j]["wait_reason"]) for j in (j1, j2, j3, j4)
    ] == [
        ("running", "p-a100", None),
        ("running", "p-h100", None),
        ("pending", None, "no capacity of an allowed GPU type"),
        ("pending", None, "lower priority"),
    ]
    assert jobs[j1]["started_at"] == "2026-11-02T08:00:00Z"
    # usage is charged when a run ends (gpupool.scheduler.accounts), not at start
    assert ledger == []
    assert [(s.job_id, s.charge.cost) for s in result.started] == [(j1, 160.0), (j2, 80.0)]
    assert (round_row.started_jobs, round_row.dry_run, round_row.policy_version) == (2, False, None)
    assert [(p.job_id, p.nodes, p.round_id, p.ended_at) for p in placements] == [
        (j1, [[0, 8]], round_row.id, None),
        (j2, [[0, 8]], round_row.id, None),
    ]
    assert free == {"p-a100": 8, "p-h100": 0}
    with unit_of_work(platform) as session:  # the sites report both runs over: charged as they end
        _report_finished(session, (j2, 0.5), (j1, 2))
        ledger = session.scalars(select(LedgerEntryRow).order_by(LedgerEntryRow.id)).all()
        rows = [
            (e.job_id, e.kind, e.period, e.cost, e.subsidy, e.org_pays, e.effective_gpu_hours)
            for e in ledger
        ]
    assert sorted(rows) == [
        (j1, "charge", "2026-Q4", 160.0, 0.0, 160.0, 16.0),
        (j2, "charge", "2026-Q4", 80.0, 0.0, 80.0, 8.0),
    ]


def test_dry_run_writes_nothing(platform):
    j1, *_ = _four_jobs(platform)
    with unit_of_work(platform) as session:
        result = run_round(session, FifoPolicy(), T0, dry_run=True)
    assert result.round_id is None and [s.job_id for s in result.started] == [j1, j1 + 1]
    assert _counts(platform) == (0, 0, 0)
    with unit_of_work(platform) as session:
        assert {(j.state, j.wait_reason) for j in repository.list_jobs(session)} == {
            ("pending", None)
        }


def _report_finished(session, *jobs_and_hours):
    """Sites report each job completed ``hours`` after T0 (reported at T0 + the last)."""
    now = T0 + dt.timedelta(hours=max(hours for _, hours in jobs_and_hours))
    for job_id, hours in jobs_and_hours:
        lifecycle.finish_job(session, "admin", job_id, at=T0 + dt.timedelta(hours=hours), now=now)


def test_overdue_jobs_time_out_and_reported_ones_free_their_gpus(platform):
    j1, j2, j3, j4 = _four_jobs(platform)
    with unit_of_work(platform) as session:
        run_round(session, FifoPolicy(), T0)
    # j2 runs 1h / speed 2.0 = 30 min: its deadline is 30 x 1.1 + 5 = 38 min (default grace).
    # j1's estimate is 2h, deadline 2h x 1.1 + 5 min = 2h17: still running at T0 + 1h.
    with unit_of_work(platform) as session:
        later = run_round(session, FifoPolicy(), T0 + dt.timedelta(hours=1))
        reaped = repository.get_job(session, j2)
        assert (reaped.state, reaped.ended_at) == ("timed_out", T0 + dt.timedelta(minutes=38))
    assert later.timed_out == [j2] and later.completed == []
    assert later.waiting == {j3: WaitReason.NO_CAPACITY, j4: WaitReason.PRIORITY}
    with unit_of_work(platform) as session:
        _report_finished(session, (j1, 2))
        third = run_round(session, FifoPolicy(), T0 + dt.timedelta(hours=2))
        done = repository.get_job(session, j1)
        assert (done.state, done.ended_at) == ("completed", T0 + dt.timedelta(hours=2))
    assert third.timed_out == []
    assert [(s.job_id, s.pool, s.nodes) for s in third.started] == [
        (j3, "p-a100", ((0, 8), (1, 8))),
        (j4, "p-h100", ((0, 1),)),
    ]


def test_budget_exhausted_job_waits(platform):
    # 8 A100 x 20h x 10 = 1600 > hosp's 1000; on H100: 8 x 10h x 20 = 1600 too.
    (job,) = _submit(platform, JobRequest(org="hosp", gpus=8, hours=20))
    with unit_of_work(platform) as session:
        result = run_round(session, FifoPolicy(), T0)
    assert result.started == [] and result.waiting == {job: WaitReason.BUDGET}


def test_snapshot_decays_usage_and_subtracts_spend(platform):
    j1, j2, *_ = _four_jobs(platform)
    with unit_of_work(platform) as session:
        run_round(session, FifoPolicy(), T0)
    with unit_of_work(platform) as session:  # charged as they end: j2 at +0.5h, j1 at +2h
        _report_finished(session, (j2, 0.5), (j1, 2))
    with unit_of_work(platform) as session:
        snap = take_snapshot(session, T0 + dt.timedelta(hours=0.5 + 168))

    # every hour of use weighs 2^(-age / 168 h): j1's 8 effective GPUs were busy
    # 168.5 h to 166.5 h ago, j2's 16 (8 H100 x speed 2) from 168.5 h to 168 h ago
    def used(rate, oldest, newest):
        return rate * 168 / math.log(2) * (0.5 ** (newest / 168) - 0.5 ** (oldest / 168))

    assert snap.usage == pytest.approx(
        {"general": used(8, 168.5, 166.5), "medical": used(16, 168.5, 168)}
    )
    assert snap.usage["medical"] == pytest.approx(4.0, rel=2e-3)  # about 8 halved
    assert snap.accounts["hosp"].budget_left == pytest.approx(920.0)
    assert snap.accounts["lab"].budget_left is None
    assert [s.free_per_node for s in snap.pools] == [(8, 8), (8,)]  # both jobs finished


class _Fixed:
    def __init__(self, allocation):
        self.allocation = allocation

    def allocate(self, snapshot):
        return self.allocation


@pytest.mark.parametrize(
    ("placements", "waiting", "message"),
    [
        (
            (Placement(1, "p-h100", ((0, 8),)), Placement(2, "p-h100", ((0, 1),))),
            {},
            "overfills node 0 of p-h100 with job 2",
        ),
        (
            (Placement(1, "p-a100", ((0, 4),)),),
            {2: WaitReason.PRIORITY},
            "gives job 1 4 of its 8 GPUs",
        ),
        (
            (Placement(2, "p-a100", ((0, 1),)),),
            {1: WaitReason.PRIORITY},
            "places job 2 on A100, which it does not allow",
        ),
        ((Placement(1, "p-a100", ((0, 8),)),), {}, "gives no wait reason for pending job 2"),
        ((Placement(7, "p-a100", ((0, 1),)),), {}, "starts job 7, which is not pending"),
    ],
)
def test_a_policy_breaking_invariants_is_refused_and_nothing_written(
    platform, placements, waiting, message
):
    _submit(
        platform,
        JobRequest(org="lab", gpus=8, hours=1),
        JobRequest(org="lab", gpus=1, hours=1, gpu_types=["H100"]),
    )
    policy = _Fixed(Allocation(placements=placements, waiting=waiting))
    with pytest.raises(PolicyViolation) as info, unit_of_work(platform) as session:
        run_round(session, policy, T0)
    assert str(info.value) == message
    assert _counts(platform) == (0, 0, 0)


def test_without_an_applied_policy_fifo_is_active(platform):
    with unit_of_work(platform) as session:
        active = active_policy(session)
    assert isinstance(active.policy, FifoPolicy) and active.version is None


def test_cancelling_a_running_job_closes_its_placement(platform):
    j1, *_ = _four_jobs(platform)
    with unit_of_work(platform) as session:
        run_round(session, FifoPolicy(), T0)
        service.cancel_job(session, "admin", j1, now=T0 + dt.timedelta(minutes=5))
    with unit_of_work(platform) as session:
        placement = repository.placements_of(session, j1)[0]
        assert placement.ended_at == T0 + dt.timedelta(minutes=5)
        assert session.get(JobRow, j1).state == "cancelled"
        assert {p["name"]: p["free_gpus"] for p in service.pool_views(session)}["p-a100"] == 16


def test_preemption_requeues_the_running_job_and_frees_its_nodes(platform):
    (low,) = _submit(platform, JobRequest(org="lab", gpus=8, hours=5, gpu_types=["H100"]))
    with unit_of_work(platform) as session:
        run_round(session, FifoPolicy(), T0)
    (urgent,) = _submit(platform, JobRequest(org="hosp", gpus=8, hours=1, gpu_types=["H100"]))
    policy = _Fixed(
        Allocation(placements=(Placement(urgent, "p-h100", ((0, 8),)),), preempt=(low,))
    )
    later = T0 + dt.timedelta(minutes=30)
    with unit_of_work(platform) as session:
        result = run_round(session, policy, later)
    assert result.preempted == [low] and [s.job_id for s in result.started] == [urgent]
    with unit_of_work(platform) as session:
        requeued = repository.get_job(session, low)
        assert (requeued.state, requeued.pool_id, requeued.wait_reason) == (
            "pending",
            None,
            "preempted; requeued",
        )
        history = [
            (p.job_id, p.ended_at)
            for p in session.scalars(select(PlacementRow).order_by(PlacementRow.id))
        ]
    assert history == [(low, later), (urgent, None)]


def test_preempting_a_job_that_is_not_running_is_refused(platform):
    (job,) = _submit(platform, JobRequest(org="lab", gpus=1, hours=1))
    policy = _Fixed(Allocation(waiting={job: WaitReason.PRIORITY}, preempt=(job,)))
    message = f"preempts job {job}, which is not running"
    with pytest.raises(PolicyViolation, match=message), unit_of_work(platform) as session:
        run_round(session, policy, T0)


def test_concurrent_rounds_never_double_book(platform):
    import threading

    _submit(platform, *[JobRequest(org="lab", gpus=4, hours=10) for _ in range(8)])
    errors = []

    def one_round():
        try:
            with unit_of_work(platform) as session:
                run_round(session, FifoPolicy(), T0)
        except Exception as exc:  # SQLite may refuse the loser outright ("locked"): fine
            errors.append(exc)

    threads = [threading.Thread(target=one_round) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with unit_of_work(platform) as session:
        placements = session.scalars(select(PlacementRow)).all()
        free = {p["name"]: p["free_gpus"] for p in service.pool_views(session)}
    assert len({p.job_id for p in placements}) == len(placements)
    # 24 GPUs of capacity: six 4-GPU jobs at most, whatever the interleaving.
    assert len(placements) == 6 and free == {"p-a100": 0, "p-h100": 0}
    assert len(errors) <= 2
