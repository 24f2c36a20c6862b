"""Metrics of one simulation, per domain and for the whole platform.

Definitions (all durations in hours, money in platform currency):

- queueing delay: first start - submission, over jobs that started;
- job completion time (JCT): end - submission, over jobs that ended (finished,
  or timed out: stopped at their estimate on their GPU type + the timeout
  grace, the live reaper's rule, gpupool.model.TimeoutGrace);
- slowdown: JCT / time the job actually ran on GPUs (>= 1; 1 = never waited);
- GPU-hours served: GPUs x wall hours held; effective GPU-hours: GPUs x
  reference hours of work done (GPU-hours x speed of the GPU type);
- utilisation: busy GPU-hours / (GPUs x hours of the work span), overall and
  per GPU type. The work span runs from the first submission to the last end
  (to the end of the replay while a job still runs or waits): the clock may
  run on past the last end (stale completion events of preempted jobs,
  ``--until``), and idle time after all work is done is no measure of a
  policy; ``simulated_hours`` is the whole clock;
- idle while waiting: GPU-hours that sat free in pools some queued job may
  use, while it was queued (fragmentation plus head-of-line blocking), and
  its share of capacity x time; per domain (``idle_while_waiting_gpu_hours``
  of a domain): GPU-hours free on pools where one of the domain's waiting
  jobs would have fitted right then (gpupool.simulations.idle), so a policy
  holding a domain back while GPUs it could use sit free shows here;
- Jain's index J(x) = (sum x)^2 / (n sum x^2), 1 = perfectly even, 1/n = one
  domain gets everything. ``jain_slowdown`` takes x_d = 1 / mean slowdown of
  domain d (evenness of service quality, the headline figure);
  ``jain_share`` takes x_d = (d's share of effective GPU-hours served) /
  (d's share of the weights), over domains that submitted work;
- makespan: last completion - first arrival;
- preemptions (per domain and platform): times a running job was stopped and
  requeued; lost GPU-hours: GPUs x wall hours of work discarded at those
  preemptions (since the job's last checkpoint) plus the restarts that
  followed (the policy's ``preemption.checkpoint_minutes`` and
  ``restart_minutes``, gpupool.simulations.engine).

Every job of the workload is in exactly one of: finished, timed out, waiting, running,
not arrived (after ``--until``) or dropped (load-time drops of the scenario
plus jobs that can never fit an allowed pool); ``conservation`` lists them.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from gpupool.simulations.engine import (
    FAILED,
    FINISHED,
    FLAT_RATES,
    HOUR,
    NEVER_FITS,
    NOT_ARRIVED,
    RUNNING,
    TIMED_OUT,
    WAITING,
    JobRecord,
    SimulationResult,
)

PERCENTILES = (50, 95, 99)
STATES = (FINISHED, TIMED_OUT, FAILED, WAITING, RUNNING, NOT_ARRIVED, NEVER_FITS)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile by linear interpolation between ranks (numpy's default)."""
    if not sorted_values:
        return None
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def jain(values: Iterable[float]) -> float | None:
    """Jain's fairness index of non-negative values; None when undefined."""
    values = list(values)
    square_sum = sum(v * v for v in values)
    if not values or square_sum == 0:
        return None
    return sum(values) ** 2 / (len(values) * square_sum)


def wait_hours(record: JobRecord) -> float | None:
    if record.first_start is None:
        return None
    return (record.first_start - record.job.submitted_at) / HOUR


def jct_hours(record: JobRecord) -> float | None:
    if record.finished_at is None:
        return None
    return (record.finished_at - record.job.submitted_at) / HOUR


def slowdown(record: JobRecord) -> float | None:
    jct = jct_hours(record)
    if jct is None or record.run_seconds <= 0:
        return None
    return jct / (record.run_seconds / HOUR)


def _distribution(values: list[float]) -> dict[str, float | None]:
    values.sort()
    stats: dict[str, float | None] = {"mean": sum(values) / len(values) if values else None}
    for q in PERCENTILES:
        stats[f"p{q}"] = percentile(values, q)
    return stats


def group_metrics(records: Sequence[JobRecord]) -> dict:
    """Counts, delays, work and money over one group of jobs (a domain or all)."""
    states = dict.fromkeys(STATES, 0)
    for record in records:
        states[record.state] += 1
    slowdowns = [s for s in map(slowdown, records) if s is not None]
    return {
        "jobs": len(records),
        "finished": states[FINISHED],
        "timed_out": states[TIMED_OUT],
        "failed": states[FAILED],  # set aside: the policy failed on it (round driver)
        "waiting": states[WAITING],
        "running": states[RUNNING],
        "not_arrived": states[NOT_ARRIVED],
        "never_fits": states[NEVER_FITS],
        "queueing_delay_hours": _distribution(
            [w for w in map(wait_hours, records) if w is not None]
        ),
        "jct_hours": _distribution([j for j in map(jct_hours, records) if j is not None]),
        "slowdown": _distribution(slowdowns),
        "gpu_hours": sum(r.job.gpus * r.run_seconds for r in records) / HOUR,
        "effective_gpu_hours": sum(r.effective_gpu_hours for r in records),
        "demand_effective_gpu_hours": sum(r.job.gpus * r.actual_hours for r in records),
        "cost": sum(r.cost for r in records),
        "subsidy": sum(r.subsidy for r in records),
        "subsidised_effective_gpu_hours": sum(r.subsidised_effective_gpu_hours for r in records),
        "org_pays": sum(r.org_pays for r in records),
        "preemptions": sum(r.preemptions for r in records),
        "lost_gpu_hours": sum(r.lost_gpu_hours for r in records),
    }


def summarise(result: SimulationResult) -> dict:
    """All metrics of one run, JSON-ready: ``platform``, ``domains``, ``conservation``."""
    by_domain: dict[str, list[JobRecord]] = {name: [] for name in result.domain_weights}
    for record in result.records:
        by_domain.setdefault(record.job.domain, []).append(record)
    domains = {name: group_metrics(records) for name, records in sorted(by_domain.items())}
    for name, metrics in domains.items():
        idle = result.idle_while_waiting_by_domain.get(name, 0.0)
        metrics["idle_while_waiting_gpu_hours"] = idle / HOUR
    platform = group_metrics(result.records)
    platform.update(_capacity_metrics(result))
    platform["jain_slowdown"] = jain(
        1.0 / d["slowdown"]["mean"] for d in domains.values() if d["slowdown"]["mean"]
    )
    platform["jain_share"] = _jain_share(domains, result.domain_weights)
    platform["subsidy_budget"] = result.subsidy_budget
    platform["rounds"] = result.rounds
    platform["events"] = result.events
    platform.update(budget_overrun(result))
    _subsidised_shares(domains, platform["subsidised_effective_gpu_hours"])
    return {
        "scenario": result.scenario,
        "policy": result.policy,
        "platform": platform,
        "domains": domains,
        "programmes": programme_metrics(result),
        "conservation": conservation(result),
    }


def budget_overrun(result: SimulationResult) -> dict:
    """How far orgs paid beyond their budget per accounting period, summed.

    Admission quotes a job's share against what is left, but usage is charged
    when runs end, in another order than they were quoted: a run that ends
    first may spend vouchers a longer one was quoted with (docs/accounting.md).
    """
    paid: dict[tuple[str, str], float] = {}
    for entry in result.ledger:
        if entry.kind in ("charge", "correction") and entry.org in result.org_budgets:
            key = (entry.org, entry.period)
            paid[key] = paid.get(key, 0.0) + float(entry.org_pays)
    over = {key: amount - result.org_budgets[key[0]] for key, amount in paid.items()}
    over = {key: amount for key, amount in over.items() if amount > 0.005}
    return {"budget_overrun": sum(over.values()), "budget_overrun_periods": len(over)}


def _subsidised_shares(domains: dict[str, dict], total: float) -> None:
    """Each domain's share of the effective GPU-hours a subsidy paid part of."""
    for metrics in domains.values():
        share = metrics["subsidised_effective_gpu_hours"] / total if total else None
        metrics["subsidised_share"] = share


def _programme_stats() -> dict:
    return {"subsidy": 0.0, "effective_gpu_hours": 0.0, "spent": {}, "jobs": {}}


def programme_metrics(result: SimulationResult) -> dict[str, dict]:
    """Per programme (and the flat rates): subsidy paid, usage it paid part of, budget.

    ``budget`` is per programme period (None = unlimited); ``budget_left_at_end``
    is what the budget of the period holding the end time still holds. How evenly
    it went round: ``jobs_funded`` (jobs it paid anything), ``top_job_subsidy``
    (the most one job got) and ``top10_share`` (the share of it the ten most
    subsidised jobs got).
    """
    periods = _period_keys(result)
    paid: dict[str, dict] = {}
    for entry in result.ledger:
        if entry.kind not in ("charge", "correction") or not entry.subsidy:
            continue
        name = entry.programme or FLAT_RATES
        stats = paid.setdefault(name, _programme_stats())
        stats["subsidy"] += float(entry.subsidy)
        stats["jobs"][entry.job_id] = stats["jobs"].get(entry.job_id, 0.0) + float(entry.subsidy)
        stats["effective_gpu_hours"] += entry.effective_gpu_hours
        key = periods(name, entry)
        stats["spent"][key] = stats["spent"].get(key, 0.0) + float(entry.subsidy)
    out = {}
    for name in dict.fromkeys([*result.programme_budgets, *paid]):
        stats = paid.get(name, _programme_stats())
        budget = result.programme_budgets.get(name)
        last = periods(name, None)
        by_job = sorted((v for v in stats["jobs"].values() if v > 0), reverse=True)
        out[name] = {
            "budget": budget,
            "subsidy": stats["subsidy"],
            "jobs_funded": len(by_job),
            "top_job_subsidy": by_job[0] if by_job else 0.0,
            "top10_share": sum(by_job[:10]) / stats["subsidy"] if stats["subsidy"] else None,
            "subsidised_effective_gpu_hours": stats["effective_gpu_hours"],
            "budget_left_at_end": None
            if budget is None
            else max(0.0, budget - stats["spent"].get(last, 0.0)),
        }
    return out


def burn_down(result: SimulationResult) -> dict[str, tuple[list[float], list[float]]]:
    """Budget left over time per programme with a budget: (hours, amount) step curves.

    A charge lowers the budget of its programme period when it is booked (at
    the end of the usage it books); a recurring programme starts afresh each
    period, so its curve jumps back up at the first charge of a new period.
    """
    periods = _period_keys(result)
    budgets = {n: b for n, b in result.programme_budgets.items() if b is not None}
    origin = result.start_time  # hours count from the replay's start
    curves = {name: ([0.0], [budget]) for name, budget in budgets.items()}
    spent: dict[tuple[str, str], float] = {}
    for entry in result.ledger:
        name = entry.programme or FLAT_RATES
        if name not in budgets or entry.kind not in ("charge", "correction") or not entry.subsidy:
            continue
        key = (name, periods(name, entry))
        spent[key] = spent.get(key, 0.0) + float(entry.subsidy)
        hours, left = curves[name]
        hours.append((entry.at - origin) / HOUR)
        left.append(budgets[name] - spent[key])
    for hours, left in curves.values():
        hours.append((result.end_time - origin) / HOUR)
        left.append(left[-1])
    return curves


def _period_keys(result: SimulationResult):
    """key(programme, entry) -> the programme period an entry's subsidy counts in.

    Programmes' periods are known by name in ``result.programme_periods``; the
    flat rates (and unknown names) count per accounting period (``entry.period``).
    With ``entry`` None, the key of the period holding the end time.
    """
    from gpupool.accounting.periods import period_label

    specs = result.programme_periods

    def key(name: str, entry) -> str:
        spec = specs.get(name)
        if entry is None:
            at = max(0.0, result.end_time - 1e-6)
            return period_label(at, result.accounting_period) if spec is None else spec.key(at)
        return entry.period if spec is None else spec.key(entry.at - 1e-6)

    return key


def work_span_hours(result: SimulationResult) -> float:
    """Hours from the first submission to the last end, or to the replay's end if work is left."""
    arrived = [r for r in result.records if r.state not in (NOT_ARRIVED, NEVER_FITS)]
    if not arrived:
        return 0.0
    start = min(r.job.submitted_at for r in arrived)
    if any(r.state in (WAITING, RUNNING) for r in arrived):
        end = result.end_time
    else:
        end = max(r.finished_at for r in arrived if r.finished_at is not None)
    return max(end - start, 0.0) / HOUR


def _capacity_metrics(result: SimulationResult) -> dict:
    hours = work_span_hours(result)
    capacity = sum(result.capacity.values())
    busy = sum(result.busy_gpu_seconds.values()) / HOUR
    finishes = [r.finished_at for r in result.records if r.finished_at is not None]
    arrivals = [r.job.submitted_at for r in result.records if r.state != NOT_ARRIVED]
    per_type = {
        gpu_type: (result.busy_gpu_seconds[gpu_type] / HOUR / (gpus * hours) if hours else None)
        for gpu_type, gpus in result.capacity.items()
    }
    busy_by_type = {t: result.busy_gpu_seconds[t] / HOUR for t in result.capacity}
    idle = result.idle_while_waiting_gpu_seconds / HOUR
    return {
        "gpus": capacity,
        "simulated_hours": (result.end_time - result.start_time) / HOUR,
        "work_span_hours": hours,
        "busy_gpu_hours": busy,
        "utilisation": busy / (capacity * hours) if capacity and hours else None,
        "utilisation_by_gpu_type": per_type,
        "gpu_hours_by_gpu_type": busy_by_type,
        # where the work went: what vouchers for one accelerator are meant to move
        "gpu_hours_share_by_gpu_type": {
            t: (b / busy if busy else None) for t, b in busy_by_type.items()
        },
        "idle_while_waiting_gpu_hours": idle,
        "idle_while_waiting_share": idle / (capacity * hours) if capacity and hours else None,
        "makespan_hours": (max(finishes) - min(arrivals)) / HOUR if finishes else None,
    }


def _jain_share(domains: dict[str, dict], weights: dict[str, float]) -> float | None:
    active = {name: d for name, d in domains.items() if d["demand_effective_gpu_hours"] > 0}
    served = sum(d["effective_gpu_hours"] for d in active.values())
    weight_sum = sum(weights.get(name, 1.0) for name in active)
    if not served or not weight_sum:
        return None
    return jain(
        (d["effective_gpu_hours"] / served) / (weights.get(name, 1.0) / weight_sum)
        for name, d in active.items()
    )


def conservation(result: SimulationResult) -> dict:
    """Where every job of the workload ended up; ``balanced`` is the invariant."""
    states = dict.fromkeys(STATES, 0)
    for record in result.records:
        states[record.state] += 1
    dropped_at_load = sum(n for reason, n in result.dropped.items() if reason != NEVER_FITS)
    return {
        "replayed_jobs": len(result.records),
        "dropped_at_load": dropped_at_load,
        "dropped": dict(result.dropped),
        **states,
        "balanced": sum(states.values()) == len(result.records)
        and states[NEVER_FITS] == result.dropped.get(NEVER_FITS, 0),
    }


JOB_COLUMNS = (
    "id",
    "name",
    "org",
    "domain",
    "gpus",
    "estimate_hours",
    "actual_hours",
    "submitted_hours",
    "state",
    "first_start_hours",
    "finished_hours",
    "wait_hours",
    "jct_hours",
    "run_hours",
    "slowdown",
    "pool",
    "gpu_type",
    "preemptions",
    "lost_gpu_hours",
    "cost",
    "subsidy",
    "org_pays",
)


def job_row(record: JobRecord, origin: float = 0.0) -> tuple:
    """One jobs.csv row; times in hours from ``origin`` (the replay's start)."""
    job = record.job

    def hours(at: float | None) -> float | None:
        return None if at is None else (at - origin) / HOUR

    return (
        job.id,
        job.name,
        job.org,
        job.domain,
        job.gpus,
        job.hours,
        record.actual_hours,
        hours(job.submitted_at),
        record.state,
        hours(record.first_start),
        hours(record.finished_at),
        wait_hours(record),
        jct_hours(record),
        record.run_seconds / HOUR,
        slowdown(record),
        record.pool,
        record.gpu_type,
        record.preemptions,
        round(record.lost_gpu_hours, 4),
        round(record.cost, 2),
        round(record.subsidy, 2),
        round(record.org_pays, 2),
    )


def write_jobs_csv(result: SimulationResult, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(JOB_COLUMNS)
        for record in sorted(result.records, key=lambda r: r.job.id):
            row = job_row(record, result.start_time)
            writer.writerow(["" if v is None else v for v in row])


def write_metrics_json(metrics: dict, path: Path) -> None:
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------
# Curves for plots: small, picklable summaries of the step series
# ---------------------------------------------------------------------------


def utilisation_curve(result: SimulationResult, bins: int = 200) -> tuple[list[float], list[float]]:
    """Mean platform utilisation in ``bins`` equal time bins: (bin centres in hours, fractions)."""
    capacity = sum(result.capacity.values())
    origin = result.start_time
    end = result.end_time - origin
    if not capacity or end <= 0:
        return [], []
    width = end / bins
    busy_seconds = [0.0] * bins
    series = result.utilisation_series
    for (start, busy), (stop, _) in zip(series, [*series[1:], (end + origin, ())], strict=True):
        _spread(busy_seconds, start - origin, min(stop - origin, end), sum(busy), width)
    centres = [(i + 0.5) * width / HOUR for i in range(bins)]
    return centres, [b / (capacity * width) for b in busy_seconds]


def _spread(bins: list[float], start: float, stop: float, level: float, width: float) -> None:
    """Add ``level`` x time over [start, stop) to the bins it overlaps."""
    index = min(int(start / width), len(bins) - 1)
    while start < stop and index < len(bins):
        edge = min(stop, (index + 1) * width)
        bins[index] += level * (edge - start)
        start, index = edge, index + 1


def subsidy_curve(result: SimulationResult) -> tuple[list[float], list[float]]:
    """Cumulative subsidy spent: (hours, amount) at each change, ending at the end time."""
    points = [*result.subsidy_series, (result.end_time, result.subsidy_series[-1][1])]
    return [(t - result.start_time) / HOUR for t, _ in points], [amount for _, amount in points]


def wait_quantiles(result: SimulationResult, points: int = 101) -> dict[str, list[float]]:
    """Queueing delay (hours) at ``points`` evenly spaced quantiles, per domain: a compact CDF."""
    waits: dict[str, list[float]] = {}
    for record in result.records:
        wait = wait_hours(record)
        if wait is not None:
            waits.setdefault(record.job.domain, []).append(wait)
    curves = {}
    for domain, values in sorted(waits.items()):
        values.sort()
        curves[domain] = [percentile(values, 100.0 * i / (points - 1)) for i in range(points)]
    return curves
