"""``idle_while_waiting`` per domain: GPU-hours free where a waiting job of the domain fits.

The replay is the check of issue 12: one domain with a guarantee and a borrow
limit of 0 leaves no GPU-hour idle while its jobs wait and the GPUs nobody is
guaranteed are free (before the borrowing fix, its cap of guarantee + limit x
platform held it to 8 of 32 GPUs).
"""

from __future__ import annotations

import pytest

from gpupool.model import Domain, GpuType, Job, Org, Pool
from gpupool.policies.fairshare import FairSharePolicy
from gpupool.policies.params import DomainShare, PolicyParams
from gpupool.policies.priority import PriorityPolicy
from gpupool.simulations.engine import HOUR, simulate
from gpupool.simulations.idle import IdleWhileWaiting
from gpupool.simulations.metrics import summarise
from gpupool.simulations.workload import Scenario, SimJob

A100 = GpuType("a100", "nvidia", 80, speed=1.0)


def guaranteed_domain_replay() -> Scenario:
    """32 GPUs (4 nodes of 8). med: 12 jobs of 4 GPUs, 2 h, at 0 h; general: 2 of them at 0.5 h.

    med is guaranteed 25% (8 GPUs) and may borrow nothing of others' guarantees;
    nobody else has one, so 24 GPUs belong to nobody.
    """
    jobs = [SimJob(Job(i, "hospital", "med", 4, 2.0, 0.0), 2.0) for i in range(1, 13)]
    jobs += [SimJob(Job(i, "lab", "general", 4, 2.0, 0.5 * HOUR), 2.0) for i in (13, 14)]
    return Scenario(
        name="guarantee",
        gpu_types={"a100": A100},
        pools=(Pool("p", "s1", "a100", 32, 8, 1.0),),
        domains={"med": Domain("med", 1.0), "general": Domain("general", 1.0)},
        orgs={"hospital": Org("hospital", "med"), "lab": Org("lab", "general")},
        jobs=tuple(jobs),
    )


@pytest.mark.parametrize("kind", ["priority", "fair-share"])
def test_a_guaranteed_domain_with_borrow_limit_0_leaves_no_gpu_idle_while_it_waits(kind):
    params = PolicyParams(shares={"med": DomainShare(fraction=0.25, borrow_limit=0.0)})
    policy = PriorityPolicy(params) if kind == "priority" else FairSharePolicy(params)
    metrics = summarise(simulate(guaranteed_domain_replay(), policy))
    med = metrics["domains"]["med"]
    assert med["queueing_delay_hours"]["mean"] > 0  # its jobs did wait: 48 GPUs asked of 32
    assert med["idle_while_waiting_gpu_hours"] == 0.0
    assert metrics["domains"]["general"]["idle_while_waiting_gpu_hours"] == 0.0
    assert metrics["platform"]["idle_while_waiting_gpu_hours"] == 0.0


def test_idle_counts_free_gpus_only_where_a_waiting_gang_fits():
    meter = IdleWhileWaiting([Pool("a", "s", "a100", 8, 4, 1.0), Pool("b", "s", "h100", 8, 4, 1.0)])
    meter.add(Job(1, "o", "med", 4, 1.0, 0.0, gpu_types=("a100",)))
    meter.add(Job(2, "o", "edu", 2, 1.0, 0.0))
    meter.advance({"a": [2, 2], "b": [3, 0]}, 10.0)  # no node with 4 free: med's gang fits nowhere
    assert meter.gpu_seconds == {"edu": (4 + 3) * 10.0}
    meter.advance({"a": [4, 1], "b": [0, 0]}, 1.0)  # fits on a; b has nothing free
    assert meter.gpu_seconds == {"edu": 70.0 + 5.0, "med": 5.0}
    meter.remove(Job(1, "o", "med", 4, 1.0, 0.0, gpu_types=("a100",)))
    meter.advance({"a": [4, 4], "b": [4, 4]}, 1.0)
    assert meter.gpu_seconds == {"edu": 75.0 + 16.0, "med": 5.0}
