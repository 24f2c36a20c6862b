"""The model's own rules: the job state machine and gang placement on nodes."""

from __future__ import annotations

import random

import pytest

from gpupool.model import (
    IllegalTransition,
    Job,
    JobState,
    Pool,
    check_transition,
    fit_gang,
)

LEGAL = {
    ("pending", "running"),
    ("pending", "cancelled"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "preempted"),
    ("running", "timed_out"),
    ("preempted", "pending"),
    ("preempted", "cancelled"),
}


@pytest.mark.parametrize("current", [s.value for s in JobState])
@pytest.mark.parametrize("new", [s.value for s in JobState])
def test_transition_table(current, new):
    if (current, new) in LEGAL:
        assert check_transition(current, new) == JobState(new)
    else:
        with pytest.raises(IllegalTransition) as info:
            check_transition(current, new)
        assert str(info.value) == f"state: a {current} job cannot become {new}"


def test_unknown_state_is_rejected():
    with pytest.raises(ValueError):
        check_transition("pending", "paused")


def test_single_node_gang_takes_the_best_fitting_node():
    # free 8, 3, 5: a 3-GPU gang goes to node 1 (exact fit), a 4-GPU one to node 2.
    assert fit_gang([8, 3, 5], 3, 8) == ((1, 3),)
    assert fit_gang([8, 3, 5], 4, 8) == ((2, 4),)
    assert fit_gang([8, 3, 5], 8, 8) == ((0, 8),)
    assert fit_gang([7, 3, 5], 8, 8) is None


def test_multi_node_gang_takes_whole_free_nodes_lowest_first():
    assert fit_gang([8, 7, 8, 8], 20, 8) == ((0, 8), (2, 8), (3, 4))
    assert fit_gang([8, 7, 8], 20, 8) is None
    assert fit_gang([8, 8], 0, 8) is None


def test_pool_node_sizes_hold_the_remainder_last():
    pool = Pool("p", "s", "A100", 20, 8, 1.0)
    assert pool.node_sizes() == (8, 8, 4)
    assert pool.nodes == 3


def test_job_allows_any_type_when_none_listed():
    job = Job(id=1, org="o", domain="d", gpus=1, hours=2.0, submitted_at=0.0)
    assert job.allows("H100")
    typed = Job(id=2, org="o", domain="d", gpus=3, hours=2.0, submitted_at=0.0, gpu_types=("A100",))
    assert typed.allows("A100") and not typed.allows("H100")
    assert typed.effective_gpu_hours == 6.0


@pytest.mark.parametrize("seed", range(20))
def test_fit_gang_never_overfills_and_gives_exactly_the_gang(seed):
    rng = random.Random(seed)
    per_node = rng.choice([4, 8])
    free = [rng.randint(0, per_node) for _ in range(rng.randint(1, 6))]
    gpus = rng.randint(1, per_node * 3)
    nodes = fit_gang(free, gpus, per_node)
    if nodes is None:
        return
    assert sum(n for _, n in nodes) == gpus
    assert [i for i, _ in nodes] == sorted({i for i, _ in nodes})
    for index, taken in nodes:
        assert 0 < taken <= free[index]
        if gpus > per_node:
            assert free[index] == per_node  # multi-node gangs use whole free nodes
