"""What authenticating a request costs: scrypt alone, and tokens.authenticate with and
without the verified-token cache, on SQLite or PostgreSQL.

    .venv/bin/python benchmarks/tokens.py                       # SQLite file in a temp dir
    .venv/bin/python benchmarks/tokens.py --db postgresql://postgres@127.0.0.1/test
    .venv/bin/python benchmarks/tokens.py --requests 2000 --threads 4

Each case prints one JSON line:
``{"case","requests","threads","seconds","per_second","p50_ms","p99_ms"}``.
Cases: ``scrypt`` (hashlib.scrypt at the stored cost, n=2**14, r=8, p=1, the
floor of an uncached check); ``uncached`` (authenticate with the cache cleared
before every call: row lookup + scrypt + compare); ``cached`` (the same token
again and again: row lookup + revocation/expiry check, scrypt skipped);
``cached-in-transaction`` (the same, all in one open transaction: what
authentication adds to a request that has its own transaction anyway, i.e. the
token row's SELECT); ``cached-threads`` (the cached case from ``--threads``
threads at once, as a server's worker threads would). Each authentication runs in its own unit of
work, as a request would. On PostgreSQL the script works in a schema of its
own and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from gpupool.scheduler import permissions, tokens  # noqa: E402
from gpupool.scheduler.database import make_engine, normalise_url, unit_of_work  # noqa: E402
from gpupool.scheduler.migrate import upgrade  # noqa: E402


def _figures(case: str, latencies: list[float], seconds: float, threads: int = 1) -> dict:
    ordered = sorted(latencies)
    return {
        "case": case,
        "requests": len(ordered),
        "threads": threads,
        "seconds": round(seconds, 3),
        "per_second": round(len(ordered) / seconds, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 3),
    }


def _timed(call, count: int) -> tuple[list[float], float]:
    latencies = []
    began = time.perf_counter()
    for _ in range(count):
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    return latencies, time.perf_counter() - began


def _setup(url: str) -> str:
    engine = make_engine(url)
    upgrade(engine)
    with unit_of_work(engine) as session:
        permissions.add_user(session, permissions.OWNER, "bench", "admin")
        _, raw = tokens.create_token(session, permissions.OWNER, "bench")
    engine.dispose()
    return raw


def run(url: str, requests: int, threads: int) -> list[dict]:
    raw = _setup(url)
    engine = make_engine(url)

    def authenticate():
        with unit_of_work(engine) as session:
            tokens.authenticate(session, raw)

    secret = raw.split("_", 2)[2]
    stored = tokens.hash_secret(secret)
    slow = max(requests // 50, 20)
    results = [_figures("scrypt", *_timed(lambda: tokens.verify_secret(secret, stored), slow))]

    def uncached():
        tokens.clear_cache()
        authenticate()

    results.append(_figures("uncached", *_timed(uncached, slow)))
    authenticate()  # warm the cache
    results.append(_figures("cached", *_timed(authenticate, requests)))
    with unit_of_work(engine) as session:  # what a request's own transaction adds
        timed = _timed(lambda: tokens.authenticate(session, raw), requests)
    results.append(_figures("cached-in-transaction", *timed))
    results.append(_threaded(authenticate, requests, threads))
    engine.dispose()
    return results


def _threaded(call, requests: int, threads: int) -> dict:
    per_thread = requests // threads
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def worker(index: int) -> None:
        latencies[index] = _timed(call, per_thread)[0]

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    began = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    seconds = time.perf_counter() - began
    return _figures("cached-threads", [x for part in latencies for x in part], seconds, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    if args.db is None or args.db.startswith("sqlite"):
        with tempfile.TemporaryDirectory() as folder:
            url = args.db or f"sqlite:///{folder}/bench.db"
            results = run(url, args.requests, args.threads)
    else:
        results = _in_schema(normalise_url(args.db), args.requests, args.threads)
    for line in results:
        print(json.dumps(line))


def _in_schema(url: str, requests: int, threads: int) -> list[dict]:
    schema = f"gpupool_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in url else "?"
    try:
        return run(f"{url}{separator}options=-csearch_path%3D{schema}", requests, threads)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


if __name__ == "__main__":
    main()
