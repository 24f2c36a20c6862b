"""Submissions and rounds on the largest pools gpupool.limits allows.

Issue 15: an admin's ``pool add --gpus 1000000000`` made every later ``job
submit`` take 5.8 s and 1 GB, and a round 43 s. The limits now stop such a
pool (GPUs per pool, nodes per pool); this prints what the largest allowed
pools cost, so the bounds can be judged against figures:

    .venv/bin/python benchmarks/largest_pools.py [--jobs 200] [--db sqlite:///x.db]

Two pools at the limits: 100,000 GPUs at 8 per node (12,500 nodes) and 12,500
GPUs at 1 per node (12,500 nodes). ``submit`` is one job submission (the
validation walks every pool's shape); ``round`` is one FIFO round placing
``--jobs`` pending jobs of 1..64 GPUs.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def _build(url: str, jobs: int) -> None:
    from gpupool import limits
    from gpupool.scheduler import service
    from gpupool.scheduler.database import make_engine, unit_of_work
    from gpupool.scheduler.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    with unit_of_work(url) as session:
        service.add_gpu_type(session, "admin", "A100", "NVIDIA", 80, 1.0)
        per_node = limits.MAX_POOL_GPUS // int(limits.POOL_NODES.high)
        service.add_pool(session, "admin", "huge", "s1", "A100", limits.MAX_POOL_GPUS, per_node, 5)
        service.add_pool(session, "admin", "wide", "s2", "A100", int(limits.POOL_NODES.high), 1, 5)
        service.add_domain(session, "admin", "general", 1.0)
        service.add_org(session, "admin", "lab", "general", None)
        for index in range(jobs):
            request = service.JobRequest(org="lab", gpus=1 + (index * 7) % 64, hours=1.0)
            service.submit_job(session, "admin", request)


def _timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    from gpupool.scheduler import service
    from gpupool.scheduler.database import unit_of_work
    from gpupool.scheduler.rounds import run_active_round

    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'largest.db'}"
        _build(url, args.jobs)

        def submit():
            with unit_of_work(url) as session:
                request = service.JobRequest(org="lab", gpus=64, hours=1.0)
                service.submit_job(session, "admin", request)

        def one_round():
            with unit_of_work(url) as session:
                result, _ = run_active_round(session)
                print(f"round started {len(result.started)} of {args.jobs + 1} jobs")

        submit_s = _timed(submit)
        round_s = _timed(one_round)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"submit {submit_s:.3f} s   round {round_s:.3f} s   peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
