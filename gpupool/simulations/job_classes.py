"""A scenario's ``job_classes:`` block: how fast each kind of job runs on each GPU type,
and which trace job is of which class (Gavel's per-job-type throughput matrix).

::

    job_classes:
      assign: round_robin        # round_robin (per GPU count) | hash
      classes:
        resnet18:   {speeds: {V100: 1.0, P100: 0.93, K80: 0.29}}
        lm-8gpu:    {gpus: [8], speeds: {V100: 1.0, P100: 0.36, K80: 0.12}}

A class applies to jobs of the GPU counts in its ``gpus`` (absent: any). Each
job is given one of the classes that apply to its GPU count: ``round_robin``
takes them in turn, per GPU count, in arrival order; ``hash`` picks one from a
stable hash of the job's trace name (its id when it has none), so a job keeps
its class when the replay is cut short (``max_jobs``). A job no class applies
to keeps its GPU types' own speeds. A type a class leaves out runs it at the
type's own speed (model.Job.speed_on). The block is validated with its model
(gpupool.simulations.scenario_schema.ScenarioJobClasses); names are then checked
on gpupool.simulations.scenario's located nodes: every problem names its file,
line and field.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from gpupool.model import GpuType
from gpupool.simulations.workload import SimJob


@dataclass(frozen=True)
class _Class:
    name: str
    gpus: frozenset[int]  # empty: any GPU count
    speeds: Mapping[str, float]


def assign_job_classes(node, jobs: Sequence[SimJob], gpu_types: Mapping[str, GpuType]):
    """``jobs`` with a class each where one applies (see the module docstring)."""
    from gpupool.simulations.scenario_schema import ScenarioJobClasses, validated

    spec = validated(node, ScenarioJobClasses)
    section = node.mapping()["classes"]
    classes = [
        _job_class(name, spec.classes[key], item, gpu_types)
        for key, name, item in _declared(section)
    ]
    pick = _round_robin() if spec.assign == "round_robin" else _hashed
    assigned = []
    for sim in jobs:
        applies = [c for c in classes if not c.gpus or sim.job.gpus in c.gpus]
        if not applies:
            assigned.append(sim)
            continue
        chosen = applies[pick(sim, len(applies))]
        job = replace(sim.job, job_class=chosen.name, speeds=chosen.speeds)
        assigned.append(replace(sim, job=job))
    return tuple(assigned)


def _declared(node) -> list[tuple[str, str, object]]:
    """(key as written, checked name, node) of each class."""
    entries = node.mapping()
    if not entries:
        node.fail("declare at least one class")
    return [(key, node.key(key).name(), item) for key, item in entries.items()]


def _job_class(name: str, spec, node, gpu_types: Mapping[str, GpuType]) -> _Class:
    speeds_node = node.mapping()["speeds"]
    for type_name in speeds_node.mapping():
        if type_name not in gpu_types:
            known = ", ".join(sorted(gpu_types))
            speeds_node.key(type_name).fail(f"unknown GPU type {type_name!r} (known: {known})")
    if not spec.speeds:
        speeds_node.fail("give the class's speed on at least one GPU type")
    return _Class(name, frozenset(spec.gpus or ()), dict(spec.speeds))


def _round_robin():
    turn: dict[int, int] = {}

    def pick(sim: SimJob, count: int) -> int:
        index = turn.get(sim.job.gpus, 0)
        turn[sim.job.gpus] = index + 1
        return index % count

    return pick


def _hashed(sim: SimJob, count: int) -> int:
    key = sim.job.name or str(sim.job.id)
    return zlib.crc32(key.encode("utf-8")) % count
