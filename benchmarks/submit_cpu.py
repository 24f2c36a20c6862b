"""CPU per submission of the server's database work, without HTTP: one at a time against
a group of N (the group commit), on PostgreSQL; one JSON line per case.

    .venv/bin/python benchmarks/submit_cpu.py                 # 400 submissions, groups of 1 and 8
    .venv/bin/python benchmarks/submit_cpu.py --groups 1,4,8,16,64 --submissions 800

Each case does, per submission, what `gpupool serve` does for POST /api/v1/jobs
besides HTTP: the bearer token checked (tokens.identify_many, in autocommit), then
the submission checked and written (service.submit_each, one transaction), with
``group`` submissions per token query and per transaction. ``alone`` is the path
before the group commit (tokens.identify, then service.submit_job in its own
transaction). Figures are this process's CPU (``time.process_time``: SQLAlchemy,
psycopg, gpupool) and the PostgreSQL backend's (from /proc), so the machine's load
moves them much less than wall time; ``wall_ms`` is given for completeness.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from pathlib import Path

PG_URL = os.environ.get("GPUPOOL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="1,8", help="submissions per transaction")
    parser.add_argument("--submissions", type=int, default=400, help="per case")
    args = parser.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from api import ORGS, _admin, _platform

    schema = f"gpupool_bench_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE SCHEMA {schema}")
    url = f"{PG_URL}?options=-csearch_path%3D{schema}&application_name={schema}"
    try:
        raw = _platform(url)
        from gpupool.scheduler.database import make_engine

        engine = make_engine(url)
        cases = [("alone", 1)] + [("group", int(g)) for g in args.groups.split(",")]
        for case, group in cases:
            print(json.dumps(_case(engine, raw, ORGS, case, group, args.submissions)), flush=True)
        engine.dispose()
    finally:
        _admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _case(engine, raw: dict, orgs, case: str, group: int, submissions: int) -> dict:
    from sqlalchemy import text

    from gpupool.scheduler.service import JobRequest

    requests = [
        (orgs[i % len(orgs)], JobRequest(org=orgs[i % len(orgs)], gpus=1, hours=1.0, name="b"))
        for i in range(submissions)
    ]
    run = _alone if case == "alone" else _grouped
    run(engine, raw, requests[: 2 * group], group)  # warm: connections, statement caches
    with engine.connect() as connection:
        backend = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    db_cpu, cpu, wall = _process_cpu(backend), time.process_time(), time.perf_counter()
    run(engine, raw, requests, group)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    db_cpu = _process_cpu(backend) - db_cpu
    return {
        "case": case,
        "group": group,
        "submissions": submissions,
        "cpu_ms": round(cpu * 1000 / submissions, 3),
        "db_cpu_ms": round(db_cpu * 1000 / submissions, 3),
        "wall_ms": round(wall * 1000 / submissions, 3),
        "load_average": round(os.getloadavg()[0], 1),
    }


def _alone(engine, raw, requests, _group) -> None:
    from gpupool.scheduler import service, tokens
    from gpupool.scheduler.database import unit_of_work

    reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    for org, request in requests:
        with reader.begin() as connection:
            bearer = tokens.identify(connection, raw[org])
        with unit_of_work(engine) as session:
            service.submit_job(session, bearer.user, request)


def _grouped(engine, raw, requests, group) -> None:
    from gpupool.scheduler import service, tokens
    from gpupool.scheduler.database import unit_of_work

    reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    for start in range(0, len(requests), group):
        chunk = requests[start : start + group]
        with reader.begin() as connection:
            bearers = tokens.identify_many(connection, [raw[org] for org, _ in chunk])
        with unit_of_work(engine) as session:
            outcomes = service.submit_each(
                session, [(b.user, r) for b, (_, r) in zip(bearers, chunk, strict=True)]
            )
        assert all(isinstance(o, tuple) for o in outcomes), outcomes


def _process_cpu(pid: int) -> float:
    """CPU seconds of a local process (the PostgreSQL backend), 0 if it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
