"""Concurrent clients against a real `gpupool serve` on PostgreSQL; one JSON line per run.

    .venv/bin/python benchmarks/api.py                       # 1, 4, 16 clients, both phases
    .venv/bin/python benchmarks/api.py --clients 16 --seconds 20 --workers 2

Starts `gpupool serve` on 127.0.0.1 (an ephemeral port) over a private schema
of the local PostgreSQL (dropped afterwards), with the small test platform
and one submitter (and token) per organisation. Then, for each client count,
two phases of ``--seconds`` each:

- ``submit``: every client submits jobs back to back (POST /api/v1/jobs);
- ``mixed``: every client repeats submit, list its organisation's pending
  jobs (GET /api/v1/jobs?state=pending), cancel the job it submitted.

Clients are asyncio tasks with one keep-alive httpx connection each, in this
process (so they share the 2 cores with the server: the figures include the
client's cost). Traffic goes to 127.0.0.1 only and each phase stops after
``--seconds`` or ``--max-requests``.

Output fields: phase, clients, workers, requests, seconds, requests_per_second,
p50_ms, p99_ms, errors (non-2xx responses and transport failures), and where
the CPU went: server_cpu_ms_per_request (the serve process and its workers,
from /proc), client_cpu_ms_per_request (this process), load_average (the
1-minute load when the phase ended: the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

PG_URL = os.environ.get("GPUPOOL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ORGS = ("hosp", "lab", "uni", "corp")
_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def main() -> None:
    args = _arguments()
    schema = f"gpupool_bench_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE SCHEMA {schema}")
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        tokens = _platform(url)
        server = _server(url, args.workers, args.log_level, args.server_log)
        with server as base:
            for clients in args.clients:
                for phase in args.phases:
                    server_cpu, client_cpu = _tree_cpu(server.pid), time.process_time()
                    result = asyncio.run(_phase(base, tokens, phase, clients, args))
                    used = {
                        "server_cpu_ms_per_request": _per_request(
                            _tree_cpu(server.pid) - server_cpu, result["requests"]
                        ),
                        "client_cpu_ms_per_request": _per_request(
                            time.process_time() - client_cpu, result["requests"]
                        ),
                        "load_average": round(os.getloadavg()[0], 1),
                    }
                    print(json.dumps({**result, "workers": args.workers, **used}), flush=True)
    finally:
        _admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=_counts, default=[1, 4, 16])
    parser.add_argument("--phases", type=lambda s: s.split(","), default=["submit", "mixed"])
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--max-requests", type=int, default=50_000, help="per phase")
    parser.add_argument("--workers", type=int, default=1, help="gpupool serve --workers")
    parser.add_argument("--log-level", default="info", help="the server's (info logs each request)")
    parser.add_argument("--server-log", help="keep the server's log (JSON lines) in this file")
    return parser.parse_args()


def _counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",")]
    if any(c < 1 or c > 64 for c in counts):
        raise argparse.ArgumentTypeError("client counts must be 1..64")
    return counts


def _admin(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(sql))
    engine.dispose()


def _platform(url: str) -> dict[str, str]:
    """Pools, domains, the organisations, a submitter per organisation; org -> token."""
    from gpupool.scheduler import permissions, service, tokens
    from gpupool.scheduler.database import make_engine, unit_of_work
    from gpupool.scheduler.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    raw = {}
    with unit_of_work(url) as session:
        permissions.add_user(session, permissions.OWNER, "root", "admin")
        service.add_gpu_type(session, "root", "A100", "NVIDIA", 80, 1.0)
        service.add_pool(session, "root", "p-a100", "Beijing", "A100", 64, 8, 10.0)
        service.add_domain(session, "root", "general", 1.0)
        for org in ORGS:
            service.add_org(session, "root", org, "general", None)
            permissions.add_user(session, "root", f"user-{org}", "submitter", org)
            raw[org] = tokens.create_token(session, "root", f"user-{org}")[1]
    return raw


class _server:
    """`gpupool serve --port 0` for the with-block; yields its base URL."""

    def __init__(self, url: str, workers: int, log_level: str, keep: str | None = None) -> None:
        self.keep = keep
        self.command = [
            sys.executable,
            "-m",
            "gpupool.cli.main",
            "--db",
            url,
            "serve",
            "--port",
            "0",
            "--workers",
            str(workers),
            "--log-level",
            log_level,
        ]

    @property
    def pid(self) -> int:
        return self.process.pid

    def __enter__(self) -> str:
        if self.keep:
            self.log = open(self.keep, "w+")  # noqa: SIM115 (closed in __exit__)
        else:
            self.log = tempfile.NamedTemporaryFile("w+", prefix="gpupool-bench-", suffix=".log")
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=self.log, text=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            match = _LISTENING.search(Path(self.log.name).read_text())
            if match:
                base = f"http://127.0.0.1:{match.group(1)}"
                _wait_healthy(base)
                return base
            time.sleep(0.1)
        self.process.kill()
        raise SystemExit("gpupool serve did not start:\n" + Path(self.log.name).read_text())

    def __exit__(self, *_exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants (the workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(cpu.get(p, 0.0) for p in tree)


def _per_request(seconds: float, requests: int) -> float | None:
    return round(seconds * 1000 / requests, 2) if requests else None


def _wait_healthy(base: str) -> None:
    for _ in range(600):  # --workers N: the parent listens before the workers start
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("gpupool serve never answered /healthz")


async def _phase(base: str, tokens: dict[str, str], phase: str, clients: int, args) -> dict:
    latencies: list[float] = []
    errors = [0]
    budget = [args.max_requests]
    stop_at = time.perf_counter() + args.seconds
    began = time.perf_counter()
    await asyncio.gather(
        *(
            _client(
                base,
                tokens[ORGS[i % len(ORGS)]],
                ORGS[i % len(ORGS)],
                phase,
                stop_at,
                budget,
                latencies,
                errors,
            )
            for i in range(clients)
        )
    )
    seconds = time.perf_counter() - began
    latencies.sort()
    return {
        "phase": phase,
        "clients": clients,
        "requests": len(latencies),
        "seconds": round(seconds, 2),
        "requests_per_second": round(len(latencies) / seconds, 1),
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "errors": errors[0],
    }


async def _client(base, token, org, phase, stop_at, budget, latencies, errors) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=30
    ) as client:
        while time.perf_counter() < stop_at and budget[0] > 0:
            job = {"org": org, "gpus": 1, "hours": 1.0, "name": "bench"}
            created = await _timed(
                client, "POST", "/api/v1/jobs", latencies, errors, budget, json=job
            )
            if phase == "mixed" and created is not None:
                params = {"state": "pending", "org": org}
                await _timed(
                    client, "GET", "/api/v1/jobs", latencies, errors, budget, params=params
                )
                path = f"/api/v1/jobs/{created['id']}/cancel"
                await _timed(client, "POST", path, latencies, errors, budget)


async def _timed(client, method, path, latencies, errors, budget, **kwargs):
    budget[0] -= 1
    start = time.perf_counter()
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.HTTPError:
        errors[0] += 1
        return None
    latencies.append(time.perf_counter() - start)
    if response.status_code >= 300:
        errors[0] += 1
        return None
    return response.json()


def _percentile(sorted_values: list[float], share: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(share * len(sorted_values)))
    return round(sorted_values[index] * 1000, 2)


if __name__ == "__main__":
    main()
