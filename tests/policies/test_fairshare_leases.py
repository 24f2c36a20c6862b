"""``fair-share`` with leases (time slicing): water-filling, renewal, no needless migration."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gpupool.model import GpupoolError
from gpupool.policies._slicing import finish_time_rho, fluid_shares, water_fill
from gpupool.policies.fairshare import FairSharePolicy
from gpupool.policies.params import PolicyParams
from tests.policies.builders import SnapshotBuilder, check_invariants

HOUR = 3600.0
GRID = 10 * HOUR  # a lease boundary for 60-minute leases
LEASED = FairSharePolicy(lease_minutes=60.0)


def test_water_fill_caps_then_shares_the_rest_by_weight():
    assert water_fill([1.0, 5.0, 10.0], [1.0, 1.0, 1.0], 9.0) == pytest.approx([1.0, 4.0, 4.0])
    assert water_fill([10.0, 10.0], [2.0, 1.0], 9.0) == pytest.approx([6.0, 3.0])
    assert water_fill([1.0, 2.0], [1.0, 1.0], 10.0) == pytest.approx([1.0, 2.0])  # all met


def test_fluid_shares_are_hierarchical_domains_then_orgs_then_jobs():
    # 12 GPUs; domains a : b weigh 2 : 1 -> 8 and 4. Domain a's orgs split 8 equally
    # (4 each): oa1's three jobs get 4/3 each, oa2's one 8-GPU job 4. Domain b's 4 go
    # to its two 1-GPU jobs (capped at 1 each) and its 4-GPU job (the 2 left).
    b = SnapshotBuilder().now(GRID).pool("p", "A100", 12, per_node=4)
    b.domain("a", 2.0).domain("b", 1.0).org("oa1", "a").org("oa2", "a").org("ob", "b")
    b.job(4, org="oa1").job(4, org="oa1").job(4, org="oa1").job(8, org="oa2")
    b.job(1, org="ob").job(1, org="ob").job(4, org="ob")
    snapshot = b.build()
    cap = {job.id: float(job.gpus) for job in snapshot.pending}
    shares = fluid_shares(snapshot, PolicyParams(), snapshot.pending, cap)
    assert [round(shares[j.id], 6) for j in snapshot.pending] == pytest.approx(
        [4 / 3, 4 / 3, 4 / 3, 4.0, 1.0, 1.0, 2.0]
    )


def two_running(now: float, served: float = 0.0):
    """2 GPUs, both busy: job 1 ran 2 h, job 2 ran 1 h (both since before the grid
    point's half lease); job 3 waits, with ``served`` effective GPU-hours from before.

    Fluid shares: 2 GPUs over 3 one-GPU jobs, 2/3 each. Levels (lease 1 h): job 1
    received 2 -> 3 h of its share -> level 2; job 2: 1.5 h -> level 1; job 3:
    0 -> level 0, 2 -> 3 h -> level 2.
    """
    b = SnapshotBuilder().now(now).pool("p", "A100", 2, per_node=2)
    b.domain("a").org("org-a", "a")
    b.running(1, "p", hours=50.0, started_at=GRID - 2 * HOUR, id=1)
    b.running(1, "p", hours=50.0, started_at=GRID - 1 * HOUR, id=2)
    b.job(1, hours=50.0, id=3)
    snapshot = b.build()
    return replace(snapshot, served={3: served} if served else {})


def test_a_renewal_stops_only_the_job_furthest_ahead_and_keeps_the_other():
    snapshot = two_running(GRID)
    allocation = LEASED.allocate(snapshot)
    check_invariants(snapshot, allocation)
    assert allocation.preempt == (1,)  # job 2 would be chosen again: it keeps its GPU
    (placement,) = allocation.placements
    assert (placement.job_id, placement.pool) == (3, "p")
    assert "level 0" in allocation.why[3]
    assert allocation.next_round_at is None  # nothing waits any more: no lease to renew


def test_no_preemption_for_a_job_of_the_same_level():
    snapshot = two_running(GRID, served=2.0)  # job 3 is at level 2, as job 1
    allocation = LEASED.allocate(snapshot)
    check_invariants(snapshot, allocation)
    assert allocation.preempt == ()
    assert allocation.placements == ()
    assert 3 in allocation.waiting


def test_leases_are_only_taken_back_at_their_end():
    snapshot = two_running(GRID + 0.5 * HOUR)  # mid-lease: nothing is due
    allocation = LEASED.allocate(snapshot)
    check_invariants(snapshot, allocation)
    assert (allocation.preempt, allocation.placements) == ((), ())
    assert allocation.next_round_at == GRID + HOUR


def test_a_run_keeps_its_gpus_for_half_a_lease_at_least():
    snapshot = two_running(GRID)
    late = replace(
        snapshot,
        running=tuple(replace(r, started_at=GRID - 0.25 * HOUR) for r in snapshot.running),
    )
    allocation = LEASED.allocate(late)
    assert allocation.preempt == ()


def test_without_leases_fair_share_never_preempts():
    allocation = FairSharePolicy().allocate(two_running(GRID))
    assert (allocation.preempt, allocation.next_round_at) == ((), None)


def test_a_due_job_moves_to_a_type_much_faster_for_it_when_that_is_free():
    # job 1 runs on a slow K80 since before the grid point; a V100 (3.5x) stands free
    b = SnapshotBuilder().now(GRID).gpu_type("V100", 1.0).gpu_type("K80", 0.28)
    b.pool("v", "V100", 4, per_node=4).pool("k", "K80", 4, per_node=4)
    b.domain("a").org("org-a", "a")
    b.running(1, "k", hours=50.0, started_at=GRID - 2 * HOUR, id=1)
    snapshot = b.build()
    allocation = LEASED.allocate(snapshot)
    assert allocation.preempt == (1,)
    assert allocation.next_round_at == GRID + HOUR  # and it restarts on the V100 next round


def test_a_negative_lease_is_refused():
    with pytest.raises(GpupoolError) as raised:
        FairSharePolicy(lease_minutes=-1.0)
    assert raised.value.location == "options.lease_minutes"


def three_waiting_for_one_gpu():
    """1 GPU, 3 one-GPU jobs, none served: fluid share 1/3 each, isolated 1/N share 1/3.

    rho = (age + remaining / fluid) / (work / isolated):
    job 1, 10 h submitted 5 h ago: (5 + 30) / 30 = 1.17 -> level 0;
    job 2, 1 h submitted 4 h ago: (4 + 3) / 3 = 2.33 -> level -1 (furthest behind);
    job 3, 1 h submitted now: (0 + 3) / 3 = 1 -> level 0.
    """
    b = SnapshotBuilder().now(GRID).pool("p", "A100", 1, per_node=1)
    b.domain("a").org("org-a", "a")
    b.job(1, hours=10.0, submitted_at=GRID - 5 * HOUR, id=1)
    b.job(1, hours=1.0, submitted_at=GRID - 4 * HOUR, id=2)
    b.job(1, hours=1.0, submitted_at=GRID, id=3)
    return b.build()


def test_finish_time_fairness_runs_the_job_furthest_behind_its_isolated_finish():
    snapshot = three_waiting_for_one_gpu()
    work, submitted = np.array([10.0, 1.0, 1.0]), np.array([GRID - 5 * HOUR, GRID - 4 * HOUR, GRID])
    share = np.full(3, 1 / 3)
    rho = finish_time_rho(work, submitted, share, np.ones(3), np.zeros(3), 1 / 3, GRID)
    assert rho.tolist() == pytest.approx([35 / 30, 7 / 3, 1.0])
    fair = FairSharePolicy(lease_minutes=60.0, objective="finish-time-fairness")
    allocation = fair.allocate(snapshot)
    check_invariants(snapshot, allocation)
    assert [p.job_id for p in allocation.placements] == [2]
    assert "level -1" in allocation.why[2]
    # max-min ranks all three at level 0 (never served), so the earliest submitted runs
    assert [p.job_id for p in LEASED.allocate(snapshot).placements] == [1]


def test_an_unknown_objective_is_refused():
    with pytest.raises(GpupoolError) as raised:
        FairSharePolicy(lease_minutes=60.0, objective="shortest")
    assert raised.value.location == "options.objective"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ("  lease_minutes: -3\n", "p.yaml:3 options.lease_minutes: must be 0 or more"),
        (
            "  lease_minutes: 30\n  objective: shortest\n",
            "p.yaml:4 options.objective: must be one of max-min, finish-time-fairness",
        ),
    ],
)
def test_a_document_with_bad_lease_options_is_refused_at_their_line(options, problem):
    """Found when the document is read (policy validate, apply), not first by a round."""
    from gpupool.policies.document import PolicyDocumentError, parse_policy_text

    with pytest.raises(PolicyDocumentError) as raised:
        parse_policy_text(f"kind: fair-share\noptions:\n{options}", "p.yaml")
    assert str(raised.value).startswith(problem)
