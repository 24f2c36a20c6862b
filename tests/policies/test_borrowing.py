"""Guarantees and borrowing (gpupool.policies._borrowing), as a table of cases (Kueue style).

One pool of 16 GPUs of speed 1 (8 nodes of 2), so effective GPUs are GPUs and
every fraction of the platform is a count: 0.5 = 8 GPUs. Each case gives the
shares, what runs, what waits, and per domain the GPUs each policy that reads
guarantees starts (priority; fair-share, which never preempts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gpupool.model import WaitReason
from gpupool.policies.fairshare import FairSharePolicy
from gpupool.policies.params import DomainShare, PolicyParams, Preemption
from gpupool.policies.priority import PriorityPolicy
from tests.policies.builders import SnapshotBuilder, check_invariants


@dataclass(frozen=True)
class Case:
    name: str
    shares: dict[str, DomainShare]
    pending: dict[str, int]  # domain -> jobs of 2 GPUs waiting
    started: dict[str, int]  # domain -> GPUs started
    running: dict[str, int] = field(default_factory=dict)  # domain -> jobs of 2 GPUs running
    weights: dict[str, float] = field(default_factory=dict)
    preempted: dict[str, int] = field(default_factory=dict)  # domain -> jobs stopped
    preemption: bool = False
    policies: tuple[str, ...] = ("priority", "fair-share")


def fraction(f: float, borrow: float | None = None) -> DomainShare:
    return DomainShare(fraction=f, borrow_limit=borrow)


CASES = [
    Case(
        # med's guarantee is 8, U = 8 belongs to nobody: borrow limit 0 does not stop it
        "a borrow limit of 0 still uses free unguaranteed GPUs",
        shares={"med": fraction(0.5, 0.0)},
        pending={"med": 7},
        started={"med": 14},
    ),
    Case(
        # U = 16 - 8 - 4 = 4; edu: its 4, U's 4, and 2 (0.125 x 16) of med's idle 8
        "a borrower takes at most its borrow limit of others' idle guarantees",
        shares={"med": fraction(0.5), "edu": fraction(0.25, 0.125)},
        pending={"edu": 8},
        started={"edu": 10},
    ),
    Case(
        # fraction 0: no guarantee of its own; U = 8, and 4 of med's idle 8 borrowed
        "a domain without a guarantee borrows up to its limit beyond the free unguaranteed GPUs",
        shares={"med": fraction(0.5), "edu": fraction(0.0, 0.25)},
        pending={"edu": 8},
        started={"edu": 12},
    ),
    Case(
        # unlimited borrowing: everything idle is usable
        "no borrow limit uses every idle guarantee",
        shares={"med": fraction(0.5), "edu": fraction(0.25)},
        pending={"edu": 8},
        started={"edu": 16},
    ),
    Case(
        # edu (weight 5) goes first; med keeps 4 of its idle 8 for its waiting 4 GPUs
        "an owner with jobs waiting is not lent the guarantee they need (reclaim by waiting)",
        shares={"med": fraction(0.5)},
        weights={"edu": 5.0},
        pending={"edu": 8, "med": 2},
        started={"edu": 12, "med": 4},
    ),
    Case(
        # edu holds all 16; med's guarantee (8) is borrowed; without preemption med waits
        "without preemption a guarantee is reclaimed only as borrowers end",
        shares={"med": fraction(0.5)},
        weights={"edu": 5.0},
        running={"edu": 8},
        pending={"med": 2},
        started={},
    ),
    Case(
        # with preemption, med stops borrowers (of any priority) to get back to its guarantee
        "with preemption a guarantee is reclaimed from borrowers of any priority",
        shares={"med": fraction(0.5)},
        weights={"edu": 5.0},
        running={"edu": 8},
        pending={"med": 2},
        started={"med": 4},
        preempted={"edu": 2},
        preemption=True,
        policies=("priority",),
    ),
    Case(
        # edu runs 12 with a guarantee of 8: only 4 are borrowed, so at most 2 jobs go;
        # med's 5th and 6th jobs would take it beyond its own guarantee: they wait
        "reclaim stops only borrowed capacity and only up to the reclaimer's guarantee",
        shares={"med": fraction(0.5), "edu": fraction(0.5)},
        weights={"edu": 5.0},
        running={"edu": 6},
        pending={"med": 6},
        started={"med": 8},
        preempted={"edu": 2},
        preemption=True,
        policies=("priority",),
    ),
]


def build(case: Case):
    snapshot = SnapshotBuilder().pool("p", "A100", 16, per_node=2)
    for domain in sorted(set(case.pending) | set(case.running) | set(case.weights)):
        snapshot.domain(domain, case.weights.get(domain, 1.0)).org(f"{domain}-org", domain)
    for domain, count in sorted(case.running.items()):
        for _ in range(count):
            snapshot.running(2, "p", org=f"{domain}-org", hours=100.0)
    for domain, count in sorted(case.pending.items()):
        for _ in range(count):
            snapshot.job(2, org=f"{domain}-org")
    return snapshot.build()


def policy(kind: str, case: Case):
    params = PolicyParams(
        shares=case.shares, preemption=Preemption(case.preemption, min_gap=10.0, min_run_minutes=0)
    )
    return PriorityPolicy(params) if kind == "priority" else FairSharePolicy(params)


@pytest.mark.parametrize(
    ("case", "kind"),
    [(c, k) for c in CASES for k in c.policies],
    ids=[f"{k}: {c.name}" for c in CASES for k in c.policies],
)
def test_borrowing(case: Case, kind: str):
    snapshot = build(case)
    allocation = policy(kind, case).allocate(snapshot)
    check_invariants(snapshot, allocation)
    jobs = {j.id: j for j in snapshot.pending} | {r.job.id: r.job for r in snapshot.running}
    started: dict[str, int] = {}
    for p in allocation.placements:
        started[jobs[p.job_id].domain] = started.get(jobs[p.job_id].domain, 0) + p.gpus
    assert started == case.started
    stopped: dict[str, int] = {}
    for job_id in allocation.preempt:
        stopped[jobs[job_id].domain] = stopped.get(jobs[job_id].domain, 0) + 1
    assert stopped == case.preempted
    free = 16 - 2 * sum(case.running.values()) + 2 * sum(case.preempted.values())
    if allocation.waiting and sum(started.values()) < free:  # idle: the rule said wait
        assert WaitReason.QUOTA in set(allocation.waiting.values())
