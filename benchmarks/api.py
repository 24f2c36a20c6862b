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

Clients are cheap on purpose (they share the 2 cores with the server and
PostgreSQL): ``--client-processes`` processes (default 2), each running its
share of the clients as asyncio tasks over raw keep-alive sockets, writing
HTTP/1.1 requests by hand and reading only the status line, Content-Length
and body (well under 1 ms of CPU per request, against 5 to 10 for httpx).
Before the phases, every token is used a few times (each worker verifies a
token with scrypt once; that start-up cost is not what the phases measure).
Traffic goes to 127.0.0.1 only and each phase stops after ``--seconds`` or
``--max-requests``.

Output fields: phase, clients, workers, requests, seconds, requests_per_second,
p50_ms, p99_ms, errors (non-2xx responses and transport failures), and where
the CPU went: server_cpu_ms_per_request (the serve process and its workers,
from /proc), db_cpu_ms_per_request (the PostgreSQL backends of the server's
connections, found by application name; not the WAL writer and other shared
PostgreSQL processes), client_cpu_ms_per_request (the client processes), load_average (the
1-minute load when the phase ended: the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

PG_URL = os.environ.get("GPUPOOL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ORGS = ("hosp", "lab", "uni", "corp")
# `python -m` puts its working directory first on sys.path: the server runs in the
# checkout whose gpupool this script imported (PYTHONPATH=<other checkout> then
# measures that checkout, wherever the script is started from).
CODE_ROOT = str(Path(importlib.util.find_spec("gpupool").origin).resolve().parent.parent)


def main() -> None:
    args = _arguments()
    schema = f"gpupool_bench_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE SCHEMA {schema}")
    # the application name finds the server's PostgreSQL backends (their CPU is counted)
    url = f"{PG_URL}?options=-csearch_path%3D{schema}&application_name={schema}"
    try:
        tokens = _platform(url)
        server = _server(url, args.workers, args.log_level, args.server_log)
        with server as port:
            _warm_up(port, tokens, args.workers)
            for clients in args.clients:
                for phase in args.phases:
                    server_cpu, db_cpu = _tree_cpu(server.pid), _backends_cpu(schema)
                    result = _phase(port, tokens, phase, clients, args)
                    result["server_cpu_ms_per_request"] = _per_request(
                        _tree_cpu(server.pid) - server_cpu, result["requests"]
                    )
                    result["db_cpu_ms_per_request"] = _per_request(
                        _backends_cpu(schema) - db_cpu, result["requests"]
                    )
                    result["client_cpu_ms_per_request"] = _per_request(
                        result.pop("client_cpu_s"), result["requests"]
                    )
                    result["load_average"] = round(os.getloadavg()[0], 1)
                    print(json.dumps({**result, "workers": args.workers}), flush=True)
    finally:
        _admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=_counts, default=[1, 4, 16])
    parser.add_argument("--phases", type=lambda s: s.split(","), default=["submit", "mixed"])
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--max-requests", type=int, default=50_000, help="per phase")
    parser.add_argument("--workers", type=int, default=1, help="gpupool serve --workers")
    parser.add_argument("--client-processes", type=int, default=2, help="processes for clients")
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
    """`gpupool serve` on a free port of 127.0.0.1 for the with-block; yields the port."""

    def __init__(self, url: str, workers: int, log_level: str, keep: str | None = None) -> None:
        self.keep = keep
        self.port = _free_port()
        self.command = [
            sys.executable,
            "-m",
            "gpupool.cli.main",
            "--db",
            url,
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--log-level",
            log_level,
        ]

    @property
    def pid(self) -> int:
        return self.process.pid

    def __enter__(self) -> int:
        if self.keep:
            self.log = open(self.keep, "w+")  # noqa: SIM115 (closed in __exit__)
        else:
            self.log = tempfile.NamedTemporaryFile("w+", prefix="gpupool-bench-", suffix=".log")
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=self.log, text=True, cwd=CODE_ROOT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            if _get(self.port, "/healthz") == 200:
                return self.port
            time.sleep(0.2)
        self.process.kill()
        raise SystemExit("gpupool serve did not start:\n" + Path(self.log.name).read_text())

    def __exit__(self, *_exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port: int, path: str, token: str | None = None) -> int | None:
    """One GET on a fresh connection: its status, or None if nothing answered."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", path, headers=headers)
        status = connection.getresponse().status
        connection.close()
        return status
    except OSError:
        return None


def _warm_up(port: int, tokens: dict[str, str], workers: int) -> None:
    """Each token a few times per worker (new connections spread over the workers), so
    every worker has verified every token before the phases start."""
    for token in tokens.values():
        for _ in range(4 * workers):
            _get(port, "/api/v1/gpu-types", token)


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


def _backends_cpu(application_name: str) -> float:
    """CPU seconds of the PostgreSQL backends serving the server's connections (the
    server's pool keeps them open from phase to phase)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_URL)
    with engine.connect() as connection:
        pids = connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": application_name},
        ).scalars()
        return sum(_process_cpu(pid) for pid in pids)


def _process_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # a backend that has gone (or another machine's PostgreSQL)
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_request(seconds: float, requests: int) -> float | None:
    return round(seconds * 1000 / requests, 2) if requests else None


def _phase(port: int, tokens: dict[str, str], phase: str, clients: int, args) -> dict:
    """Run the phase's clients in ``--client-processes`` processes; merge their figures."""
    processes = max(1, min(args.client_processes, clients))
    shares = [list(range(clients))[k::processes] for k in range(processes)]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 0.5  # every process starts together, after forking
    stop_at = start_at + args.seconds
    budget = max(1, args.max_requests // processes)
    workers = [
        context.Process(
            target=_client_process,
            args=(port, tokens, phase, share, start_at, stop_at, budget, results),
        )
        for share in shares
    ]
    for worker in workers:
        worker.start()
    parts = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    latencies = sorted(lat for part in parts for lat in part["latencies"])
    seconds = max(part["seconds"] for part in parts)
    return {
        "phase": phase,
        "clients": clients,
        "client_processes": processes,
        "requests": len(latencies),
        "seconds": round(seconds, 2),
        "requests_per_second": round(len(latencies) / seconds, 1) if seconds else 0.0,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "errors": sum(part["errors"] for part in parts),
        "client_cpu_s": sum(part["cpu_s"] for part in parts),
    }


def _client_process(port, tokens, phase, share, start_at, stop_at, budget, results) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    cpu, began = time.process_time(), time.perf_counter()
    tally = {"latencies": [], "errors": 0, "budget": budget}
    deadline = time.perf_counter() + (stop_at - time.time())

    async def everyone() -> None:
        clients = []
        for i in share:
            org = ORGS[i % len(ORGS)]
            clients.append(_client(port, tokens[org], org, phase, deadline, tally))
        await asyncio.gather(*clients)

    asyncio.run(everyone())
    results.put(
        {
            "latencies": tally["latencies"],
            "errors": tally["errors"],
            "seconds": time.perf_counter() - began,
            "cpu_s": time.process_time() - cpu,
        }
    )


class _Connection:
    """One keep-alive HTTP/1.1 connection: requests written by hand, responses read
    by Content-Length (the server always sends one)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        extra = "Content-Type: application/json\r\n" if body else ""
        length = f"Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(f"{method} {path} HTTP/1.1\r\n{self.head}{extra}{length}".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        payload = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _client(port, token, org, phase, deadline, tally) -> None:
    connection = _Connection(port, token)
    job = json.dumps({"org": org, "gpus": 1, "hours": 1.0, "name": "bench"}).encode()
    listing = f"/api/v1/jobs?state=pending&org={org}"
    try:
        while time.perf_counter() < deadline and tally["budget"] > 0:
            created = await _timed(connection, "POST", "/api/v1/jobs", tally, job)
            if phase == "mixed" and created is not None:
                await _timed(connection, "GET", listing, tally)
                await _timed(connection, "POST", f"/api/v1/jobs/{created['id']}/cancel", tally)
    finally:
        connection.close()


async def _timed(connection, method, path, tally, body=b""):
    tally["budget"] -= 1
    start = time.perf_counter()
    try:
        status, payload = await asyncio.wait_for(connection.request(method, path, body), 30)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
        tally["errors"] += 1
        connection.close()
        return None
    tally["latencies"].append(time.perf_counter() - start)
    if status >= 300:
        tally["errors"] += 1
        return None
    return json.loads(payload)


def _percentile(sorted_values: list[float], share: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(share * len(sorted_values)))
    return round(sorted_values[index] * 1000, 2)


if __name__ == "__main__":
    main()
