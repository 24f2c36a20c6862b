"""Run simulations from files, alone or as a grid of schemes x seeds in parallel.

A run is described by a :class:`RunRequest` holding file paths only, so a
worker process rebuilds the scenario (``load_scenario(path, seed)``) and the
policy (``load_policy_file(path).build()``) itself: nothing but paths goes to
the workers and only a :class:`RunSummary` (metrics plus small curves) comes
back. Every seed replays the same workload under every scheme, so schemes
are compared on identical arrivals; the spread over seeds gives 95%
confidence intervals (Student t).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from gpupool.simulations.engine import EngineOptions, ProgressFn, SimulationResult, simulate
from gpupool.simulations.metrics import (
    burn_down,
    subsidy_curve,
    summarise,
    utilisation_curve,
    wait_quantiles,
)

Curve = tuple[list[float], list[float]]


@dataclass(frozen=True)
class RunRequest:
    scenario: str
    policy: str
    label: str
    seed: int | None = None
    until_hours: float | None = None
    max_jobs: int | None = None
    # fields set in the files before they are read (a sweep's parameters): (path, value)
    scenario_overrides: tuple[tuple[str, object], ...] = ()
    policy_overrides: tuple[tuple[str, object], ...] = ()


@dataclass
class RunSummary:
    label: str
    seed: int
    metrics: dict
    utilisation: Curve
    subsidy: Curve
    waits: dict[str, list[float]] = field(default_factory=dict)
    burn_down: dict[str, Curve] = field(default_factory=dict)  # programme -> budget left


def load_inputs(request: RunRequest):
    """Parse both files (raising their one-line GpupoolErrors); return (scenario, document).

    The document's GPU types and domains must be the scenario's (check_names)."""
    from gpupool.policies.document import check_names, load_policy_file
    from gpupool.simulations.scenario import load_scenario

    document = load_policy_file(request.policy, request.policy_overrides)
    scenario = load_scenario(
        request.scenario,
        seed=request.seed,
        max_jobs=request.max_jobs,
        overrides=request.scenario_overrides,
    )
    check_names(document, scenario.gpu_types, scenario.domains)
    return scenario, document


def execute(
    request: RunRequest, progress: ProgressFn | None = None, inputs=None
) -> tuple[SimulationResult, RunSummary]:
    """Run one request; ``inputs`` = load_inputs(request) when the caller parsed them already."""
    scenario, document = inputs or load_inputs(request)
    result = simulate(
        scenario,
        document.build(),
        pricing=document.params.subsidy,
        options=EngineOptions(until_hours=request.until_hours),
        progress=progress,
        policy_name=request.label,
    )
    return result, summarise_run(result, request.label, scenario.seed)


def summarise_run(result: SimulationResult, label: str, seed: int) -> RunSummary:
    return RunSummary(
        label=label,
        seed=seed,
        metrics=summarise(result),
        utilisation=utilisation_curve(result),
        subsidy=subsidy_curve(result),
        waits=wait_quantiles(result),
        burn_down=burn_down(result),
    )


def _worker(request: RunRequest) -> RunSummary:
    return execute(request)[1]


def run_grid(
    requests: Sequence[RunRequest],
    workers: int | None = None,
    on_done: Callable[[RunSummary], None] | None = None,
) -> list[RunSummary]:
    """Run every request, on up to ``workers`` processes; results in request order."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(requests)))
    summaries: list[RunSummary | None] = [None] * len(requests)
    if workers == 1:
        for index, request in enumerate(requests):
            summaries[index] = _worker(request)
            if on_done:
                on_done(summaries[index])
        return summaries  # type: ignore[return-value]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_worker, request): i for i, request in enumerate(requests)}
        for future in as_completed(futures):
            summaries[futures[future]] = future.result()
            if on_done:
                on_done(summaries[futures[future]])
    return summaries  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# Confidence intervals over seeds
# ---------------------------------------------------------------------------

# Two-sided 95% Student t quantiles for 1..30 degrees of freedom; 1.96 beyond.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def mean_ci(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and 95% confidence half-width (None with fewer than two values)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    df = len(values) - 1
    t = _T95[df - 1] if df <= len(_T95) else 1.96
    return mean, t * math.sqrt(variance / len(values))


GROUP_METRICS = (
    ("finished", "jobs finished"),
    ("timed_out", "jobs timed out"),
    ("queueing_delay_hours.mean", "mean wait (h)"),
    ("queueing_delay_hours.p95", "p95 wait (h)"),
    ("jct_hours.mean", "mean JCT (h)"),
    ("slowdown.mean", "mean slowdown"),
    ("preemptions", "preemptions"),
    ("lost_gpu_hours", "lost GPU-h (preemptions)"),
    ("effective_gpu_hours", "effective GPU-h"),
    ("subsidy", "subsidy spent"),
    ("org_pays", "paid by orgs"),
    ("subsidised_effective_gpu_hours", "subsidised effective GPU-h"),
)
DOMAIN_METRICS = (
    ("subsidised_share", "share of subsidised GPU-h"),
    ("idle_while_waiting_gpu_hours", "idle GPU-h while it waits"),
)
PROGRAMME_METRICS = (
    ("subsidy", "subsidy spent"),
    ("budget", "budget per period"),
    ("budget_left_at_end", "budget left at the end"),
    ("subsidised_effective_gpu_hours", "subsidised effective GPU-h"),
    ("jobs_funded", "jobs it paid for"),
    ("top_job_subsidy", "most one job got"),
    ("top10_share", "share the top 10 jobs got"),
)
PROGRAMME_GROUP = "programme: "
GPU_TYPE_METRICS = (
    ("gpu_hours", "GPU-hours"),
    ("share", "share of GPU-hours"),
    ("utilisation", "utilisation"),
)
GPU_TYPE_GROUP = "GPU type: "
PLATFORM_METRICS = (
    ("utilisation", "utilisation"),
    ("idle_while_waiting_share", "idle while jobs wait"),
    ("jain_slowdown", "Jain (1/slowdown)"),
    ("jain_share", "Jain (weighted share)"),
    ("makespan_hours", "makespan (h)"),
    ("budget_overrun", "paid beyond org budgets"),
)


def lookup(metrics: dict, path: str) -> float | None:
    value = metrics
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


@dataclass(frozen=True)
class CiRow:
    group: str  # "platform" or a domain name
    metric: str  # label
    cells: dict[str, tuple[float | None, float | None]]  # scheme -> (mean, half-width)


def ci_table(summaries: Sequence[RunSummary]) -> list[CiRow]:
    """Rows of (group, metric) with each scheme's mean and 95% CI over its seeds."""
    labels = list(dict.fromkeys(s.label for s in summaries))
    domains = sorted({d for s in summaries for d in s.metrics["domains"]})
    programmes = list(dict.fromkeys(p for s in summaries for p in s.metrics.get("programmes", {})))
    gpu_types = sorted(
        {t for s in summaries for t in s.metrics["platform"].get("gpu_hours_by_gpu_type", {})}
    )
    rows = []
    groups = [("platform", GROUP_METRICS + PLATFORM_METRICS)]
    groups += [(GPU_TYPE_GROUP + name, GPU_TYPE_METRICS) for name in gpu_types]
    groups += [(domain, GROUP_METRICS + DOMAIN_METRICS) for domain in domains]
    groups += [(PROGRAMME_GROUP + name, PROGRAMME_METRICS) for name in programmes]
    for group, metrics in groups:
        for path, name in metrics:
            cells = {}
            for label in labels:
                values = []
                for summary in summaries:
                    if summary.label != label:
                        continue
                    value = lookup(_scope(summary.metrics, group), path)
                    if value is not None:
                        values.append(float(value))
                cells[label] = mean_ci(values)
            rows.append(CiRow(group, name, cells))
    return rows


def _scope(metrics: dict, group: str) -> dict:
    """The part of one run's metrics a table group reads."""
    if group == "platform":
        return metrics["platform"]
    if group.startswith(PROGRAMME_GROUP):
        return metrics.get("programmes", {}).get(group[len(PROGRAMME_GROUP) :], {})
    if group.startswith(GPU_TYPE_GROUP):
        name, platform = group[len(GPU_TYPE_GROUP) :], metrics["platform"]
        return {
            "gpu_hours": platform.get("gpu_hours_by_gpu_type", {}).get(name),
            "share": platform.get("gpu_hours_share_by_gpu_type", {}).get(name),
            "utilisation": platform.get("utilisation_by_gpu_type", {}).get(name),
        }
    return metrics["domains"].get(group, {})


def scheme_labels(policy_paths: Sequence[str | Path]) -> list[str]:
    """Short unique labels for policy files: the file stem, numbered on clashes."""
    stems = [Path(p).stem for p in policy_paths]
    return [
        stem if stems.count(stem) == 1 else f"{stem}-{index + 1}"
        for index, stem in enumerate(stems)
    ]
