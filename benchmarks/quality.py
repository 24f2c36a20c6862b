"""Replay Gavel's workload under each policy and print one JSON line of quality figures each.

    .venv/bin/python benchmarks/quality.py                  # 2,000 jobs if the trace is here
    .venv/bin/python benchmarks/quality.py --jobs 500 --policy priority
    .venv/bin/python benchmarks/quality.py --traces /path/to/traces
    .venv/bin/python benchmarks/quality.py --classes        # Gavel's per-job-type speeds

The workload (issue 14) is the first ``--jobs`` (2,000) Microsoft Philly jobs
submitted from 2017-10-01 with duration >= 60 s and 1, 2, 4 or 8 GPUs, on
36 V100 + 36 P100 + 36 K80 (speeds 1.0, 0.833, 0.283), one domain per Philly
virtual cluster: examples/scenarios/gavel-sample.yaml with its trace replaced
by these jobs, cut from ``<traces>/philly_pollux/philly.csv``. ``--traces``
defaults to $GPUPOOL_TRACES, else ../shared/traces beside the project root;
without the trace the scenario's shipped 200-job sample is replayed (and
``"trace": "sample"`` says so). ``--classes`` replays the same jobs with
Gavel's per-job-type throughputs instead of one ratio per GPU type:
examples/scenarios/gavel-classes-sample.yaml (job classes, each job's class
picked by a hash of its Philly id; ``"classes": true`` says so).

Output fields: policy, jobs (replayed), mean_jct_hours and p95_jct_hours
(submission to end, finished jobs), utilisation (busy GPU-hours over GPUs x
the span in which work exists: gpupool.simulations.metrics), preemptions
(total), preemptions_per_job, lost_gpu_hours (GPUs x hours of work discarded
at preemptions, since the job's last checkpoint, plus restarts:
gpupool.simulations.metrics), wall_seconds (engine + policy), makespan_hours,
trace. ``priority`` runs with preemption on and ``--min-gap`` (0: every
domain weighs 1, so a larger gap would never let it preempt). Every policy's
document says jobs checkpoint every ``--checkpoint-minutes`` (30) and
restart in ``--restart-minutes`` (5): what the simulated site does after a
preemption, and what priority weighs a preemption's gain against.
``--aging-per-hour`` gives every policy aging (up to a boost of 4), so that
jobs that waited outrank running ones and priority has preemptions to weigh.
``--order shortest-remaining`` runs priority and multifactor with that
``order`` option (shortest remaining effective time first within a domain).
``fair-share`` time-slices with ``--lease-minutes`` (default 0: jobs run to
completion; its restarts cost what ``--restart-minutes`` and
``--checkpoint-minutes`` say). ``--objective finish-time-fairness`` ranks
the slices by finish-time fairness instead of max-min (fair-share's
``objective`` option). ``--per-job`` puts every job in one domain and org,
so fairness is among jobs (Gavel's max-min fairness has no domains); by
default each Philly virtual cluster is a domain.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gpupool.model import GpupoolError
from gpupool.policies._order import ORDERS
from gpupool.policies.document import POLICY_KINDS
from gpupool.policies.params import Aging, PolicyParams, Preemption
from gpupool.simulations.engine import simulate
from gpupool.simulations.metrics import summarise
from gpupool.simulations.scenario import load_scenario
from gpupool.simulations.workload import Scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "examples/scenarios/gavel-sample.yaml"
CLASSES_SCENARIO = ROOT / "examples/scenarios/gavel-classes-sample.yaml"
SAMPLE_PATH = "package:samples/gavel_sample.csv"
POLICIES = ("fifo", "multifactor", "fair-share", "priority")
FROM = "2017-10-01"
GANGS = (1, 2, 4, 8)
ORDERED = ("priority", "multifactor")  # the kinds with an ``order`` option
MIN_SECONDS = 60.0


def traces_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    env = os.environ.get("GPUPOOL_TRACES")
    return Path(env) if env else ROOT.parent / "shared" / "traces"


def gavel_rows(trace: Path, jobs: int) -> list[list[str]]:
    """The first ``jobs`` rows of Gavel's cut, in submission order (ties by line)."""
    with trace.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        at, sec, num = (header.index(c) for c in ("timestamp", "duration", "num_gpus"))
        kept = [
            (row[at], line, row)
            for line, row in enumerate(reader)
            if len(row) == len(header)
            and row[at] >= FROM
            and float(row[sec]) >= MIN_SECONDS
            and int(row[num]) in GANGS
        ]
    kept.sort(key=lambda item: item[:2])
    return [header] + [row for _, _, row in kept[:jobs]]


def gavel_scenario(
    traces: Path, jobs: int, workdir: Path, scenario: Path = SCENARIO
) -> tuple[Scenario, str]:
    """``scenario`` on ``jobs`` jobs cut from the trace, or on its shipped sample."""
    trace = traces / "philly_pollux" / "philly.csv"
    if not trace.is_file():
        return load_scenario(scenario), "sample"
    cut = workdir / "gavel.csv"
    with cut.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(gavel_rows(trace, jobs))
    text = scenario.read_text().replace(SAMPLE_PATH, str(cut))
    scenario_file = workdir / "gavel.yaml"
    scenario_file.write_text(text)
    return load_scenario(scenario_file), str(trace)


@dataclass(frozen=True)
class Site:
    """What a restart costs the replayed jobs (the policies' ``preemption`` section)."""

    restart_minutes: float = 5.0
    checkpoint_minutes: float = 30.0
    aging_per_hour: float = 0.0  # priority a waiting job gains per hour (up to 4)


def params_for(kind: str, min_gap: float, site: Site) -> PolicyParams:
    # priority is the preempting policy: the replay measures its preemption rule.
    # Every domain weighs 1 here, so only min_gap 0 lets it preempt at all (the
    # setting that thrashed before hysteresis); its other options keep defaults.
    preemption = Preemption(
        enabled=kind == "priority",
        min_gap=min_gap,
        restart_minutes=site.restart_minutes,
        checkpoint_minutes=site.checkpoint_minutes,
    )
    aging = Aging(per_hour=site.aging_per_hour, max_boost=4.0 if site.aging_per_hour else 0.0)
    return PolicyParams(time_limit_s=1.0, preemption=preemption, aging=aging)


def per_job(scenario: Scenario) -> Scenario:
    """Every job in one domain and org: fairness among jobs, as Gavel's max-min has it."""
    from dataclasses import replace

    org = scenario.orgs["org-other"]
    return replace(
        scenario,
        jobs=tuple(
            replace(s, job=replace(s.job, org=org.name, domain=org.domain)) for s in scenario.jobs
        ),
    )


def run_one(
    kind: str, scenario: Scenario, min_gap: float = 0.0, site: Site = Site(), **options
) -> dict:
    policy = POLICY_KINDS[kind](params=params_for(kind, min_gap, site), **options)
    started = time.perf_counter()
    result = simulate(scenario, policy, policy_name=kind)
    wall = time.perf_counter() - started
    platform = summarise(result)["platform"]
    jobs = len(result.records)
    return {
        "policy": kind,
        "jobs": jobs,
        "mean_jct_hours": _round(platform["jct_hours"]["mean"]),
        "p95_jct_hours": _round(platform["jct_hours"]["p95"]),
        "utilisation": _round(platform["utilisation"]),
        "preemptions": platform["preemptions"],
        "preemptions_per_job": round(platform["preemptions"] / jobs, 3) if jobs else 0.0,
        "lost_gpu_hours": round(platform["lost_gpu_hours"], 3),
        "wall_seconds": round(wall, 2),
        "makespan_hours": _round(platform["makespan_hours"]),
        "finished": platform["finished"],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=None, help="the traces folder")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs cut from the trace")
    parser.add_argument("--policy", action="append", choices=sorted(POLICY_KINDS))
    parser.add_argument("--min-gap", type=float, default=0.0, help="priority's preemption gap")
    parser.add_argument("--restart-minutes", type=float, default=Site.restart_minutes)
    parser.add_argument("--checkpoint-minutes", type=float, default=Site.checkpoint_minutes)
    parser.add_argument(
        "--aging-per-hour", type=float, default=0.0, help="aging (max 4): waiting jobs outrank"
    )
    parser.add_argument(
        "--order", choices=ORDERS, default=None, help="priority's and multifactor's job order"
    )
    parser.add_argument(
        "--classes", action="store_true", help="Gavel's per-job-type throughputs (job classes)"
    )
    parser.add_argument("--lease-minutes", type=float, default=0.0, help="fair-share's leases")
    parser.add_argument("--per-job", action="store_true", help="one domain: fairness among jobs")
    parser.add_argument(
        "--objective", default=None, help="fair-share's objective with leases (max-min, ...)"
    )
    args = parser.parse_args(argv)
    path = CLASSES_SCENARIO if args.classes else SCENARIO
    site = Site(args.restart_minutes, args.checkpoint_minutes, args.aging_per_hour)
    with tempfile.TemporaryDirectory() as workdir:
        try:
            scenario, source = gavel_scenario(
                traces_dir(args.traces), args.jobs, Path(workdir), path
            )
        except GpupoolError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.per_job:
        scenario = per_job(scenario)
    for kind in args.policy or POLICIES:
        options = {"order": args.order} if args.order and kind in ORDERED else {}
        if kind == "fair-share" and args.lease_minutes:
            options = {"lease_minutes": args.lease_minutes}
            if args.objective:
                options["objective"] = args.objective
        figures = run_one(kind, scenario, args.min_gap, site, **options)
        if "order" in options:
            figures["order"] = args.order
        if "lease_minutes" in options:
            figures["lease_minutes"] = args.lease_minutes
            figures["objective"] = options.get("objective", "max-min")
        figures["fairness"] = "jobs" if args.per_job else "domains"
        figures["trace"] = "sample" if source == "sample" else "philly"
        figures["classes"] = args.classes
        print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
