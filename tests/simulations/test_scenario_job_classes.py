"""A scenario's job classes (issue 14): declared with speeds per GPU type, assigned to
the workload's jobs (round robin per GPU count, or a stable hash), checked at their
file:line field, and replayed at the class's speed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gpupool.model import Domain, GpuType, Job, Org, Pool
from gpupool.policies.fifo import FifoPolicy
from gpupool.simulations.engine import simulate
from gpupool.simulations.scenario import ScenarioError, load_scenario
from gpupool.simulations.workload import Scenario, SimJob
from tests.simulations.test_scenario import BASE

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"

CLASSES = """\
job_classes:
  assign: {assign}
  classes:
    one-a: {{gpus: [1], speeds: {{A100: 1.0, 910B: 0.25}}}}
    one-b: {{gpus: 1, speeds: {{A100: 2.0}}}}
    eight: {{gpus: [8], speeds: {{910B: 3.0}}}}
"""


def _load(tmp_path, classes: str, **kwargs) -> Scenario:
    path = tmp_path / "s.yaml"
    path.write_text(BASE + classes)
    return load_scenario(path, **kwargs)


def test_round_robin_takes_the_classes_of_each_gpu_count_in_turn(tmp_path):
    scenario = _load(tmp_path, CLASSES.format(assign="round_robin"))
    by_gpus: dict[int, list[str]] = {}
    for sim in scenario.jobs:
        by_gpus.setdefault(sim.job.gpus, []).append(sim.job.job_class)
    ones = by_gpus[1]
    assert len(ones) >= 4 and ones == ["one-a", "one-b"] * (len(ones) // 2) + ["one-a"] * (
        len(ones) % 2
    )
    assert set(by_gpus[8]) == {"eight"}
    assert set(by_gpus[2]) == {""}  # no class for 2 GPUs: the types' own speeds
    one_b = next(sim.job for sim in scenario.jobs if sim.job.job_class == "one-b")
    a100, ascend = scenario.gpu_types["A100"], scenario.gpu_types["910B"]
    assert (one_b.speed_on(a100), one_b.speed_on(ascend)) == (2.0, 0.5)  # 910B: its own


def test_hash_gives_a_job_the_same_class_however_many_jobs_are_replayed(tmp_path):
    full = _load(tmp_path, CLASSES.format(assign="hash"))
    cut = _load(tmp_path, CLASSES.format(assign="hash"), max_jobs=10)
    assert [s.job.job_class for s in cut.jobs] == [s.job.job_class for s in full.jobs[:10]]
    assert Counter(s.job.job_class for s in full.jobs if s.job.gpus == 1).keys() == {
        "one-a",
        "one-b",
    }


ERRORS = [
    ("unknown type", "910B: 3.0}}", "V100: 3.0}}", 33, "job_classes.classes.eight.speeds.V100",
     "unknown GPU type 'V100' (known: 910B, A100)"),
    ("zero speed", "A100: 2.0}", "A100: 0}", 32, "job_classes.classes.one-b.speeds.A100",
     "must be > 0, got 0"),
    ("absurd speed", "A100: 2.0}", "A100: 5000}", 32, "job_classes.classes.one-b.speeds.A100",
     "must be between 0.01 and 1,000 (GPU speed, A100 = 1), got 5000"),
    ("unknown assign", "assign: hash", "assign: random", 29, "job_classes.assign",
     "unknown assignment 'random'; expected one of: round_robin, hash"),
    ("no speeds", "speeds: {910B: 3.0}", "speeds: {}", 33, "job_classes.classes.eight.speeds",
     "give the class's speed on at least one GPU type"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_errors_name_file_line_and_field(tmp_path, old, new, line, field, message):
    text = CLASSES.format(assign="hash")
    assert old in text
    with pytest.raises(ScenarioError) as caught:
        _load(tmp_path, text.replace(old, new, 1))
    assert caught.value.location == f"{tmp_path / 's.yaml'}:{line} {field}"
    assert caught.value.message == message


@pytest.mark.parametrize(("speeds", "hours"), [({}, 4.0), ({"A": 2.0}, 2.0), ({"A": 0.5}, 8.0)])
def test_the_simulator_runs_a_job_at_its_class_speed(speeds, hours):
    job = Job(1, "o", "d", 8, 4.0, 0.0, job_class="k" if speeds else "", speeds=speeds)
    scenario = Scenario(
        name="one job",
        gpu_types={"A": GpuType("A", "v", 80, speed=1.0)},
        pools=(Pool("p", "s", "A", 8, 8, 1.0),),
        domains={"d": Domain("d")},
        orgs={"o": Org("o", "d")},
        jobs=(SimJob(job, actual_hours=4.0),),
    )
    record = simulate(scenario, FifoPolicy()).records[0]
    assert record.finished_at - record.first_start == pytest.approx(hours * 3600)
    assert record.effective_gpu_hours == pytest.approx(8 * 4.0)  # the work, at any speed


def test_the_gavel_variant_gives_every_job_a_class_with_gavels_speeds():
    plain = load_scenario(EXAMPLES / "gavel-sample.yaml")
    classes = load_scenario(EXAMPLES / "gavel-classes-sample.yaml")
    assert [s.job.id for s in classes.jobs] == [s.job.id for s in plain.jobs]
    v100 = classes.gpu_types["V100"]
    assert all(s.job.job_class and s.job.speed_on(v100) == 1.0 for s in classes.jobs)
    # the first job's class: ResNet-50 at batch size 128 on 1 GPU, which Gavel measured
    # at 0.635x a V100 on a P100 and 0.139x on a K80
    first = classes.jobs[0].job
    assert first.job_class == "resnet50-b128-x1"
    assert dict(first.speeds) == {"V100": 1.0, "P100": 0.635, "K80": 0.139}
    assert len({s.job.job_class for s in classes.jobs}) > 10
