"""Wall time of one `gpupool job submit`, locally and against a server.

Sets up a throw-away SQLite platform (`gpupool init --demo --no-jobs`), starts
`gpupool serve` on it (127.0.0.1, an ephemeral port), then runs the command
line a script would run, each time a fresh process, ``--runs`` times per mode:

- local:  ``gpupool --db URL job submit ...`` (the platform owner);
- remote: ``gpupool job submit ...`` with GPUPOOL_URL and GPUPOOL_TOKEN;
- ``job list`` in both modes, for a command that goes through Typer.

With ``--breakdown``, first three JSON lines of where a local submission's CPU goes
(imports, mapper configuration, the submission itself), each step in CPU ms.

Prints one JSON line per case: {"command", "mode", "runs", "p50_ms", "p95_ms",
"min_ms", "cpu_p50_ms" (user + system time of the process), "load_1min"}, and first
the bare interpreter's start (``python -c pass``).

    .venv/bin/python benchmarks/cli_startup.py --runs 20
    PYTHONPATH=/path/to/other/checkout .venv/bin/python benchmarks/cli_startup.py --no-remote

(the second measures another checkout's code, e.g. before a change; it needs
`init --demo` there.)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

_CLI = "from gpupool.cli.main import main; main()"
# `python -c` puts its working directory first on sys.path: every process runs in the
# checkout whose gpupool this script imported (PYTHONPATH=<other checkout> then measures
# that checkout, wherever the script is started from).
CODE_ROOT = str(Path(importlib.util.find_spec("gpupool").origin).resolve().parent.parent)
_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    return env | extra


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        cwd=CODE_ROOT,
        args=[sys.executable, "-c", _CLI, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str], env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) times in ms of ``runs`` fresh processes, after one
    untimed warm-up (the first run after an install compiles bytecode and fills the
    page cache). On a busy machine wall time includes waiting for a core; CPU time
    is close to what wall time would be on an idle one."""
    subprocess.run(cwd=CODE_ROOT, args=command, capture_output=True, env=env, timeout=600)
    walls, cpus = [], []
    for _ in range(runs):
        cpu, start = _cpu_seconds(), time.perf_counter()
        done = subprocess.run(
            cwd=CODE_ROOT, args=command, capture_output=True, text=True, env=env, timeout=120
        )
        walls.append((time.perf_counter() - start) * 1000)
        cpus.append((_cpu_seconds() - cpu) * 1000)
        if done.returncode != 0:
            raise SystemExit(f"{command[3:]} failed: {done.stderr}")
    return walls, cpus


def _line(command: str, mode: str, timed: tuple[list[float], list[float]]) -> None:
    walls, cpus = timed
    ordered = sorted(walls)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(
        json.dumps(
            {
                "command": command,
                "mode": mode,
                "runs": len(walls),
                "p50_ms": round(statistics.median(walls), 1),
                "p95_ms": round(p95, 1),
                "min_ms": round(ordered[0], 1),
                "cpu_p50_ms": round(statistics.median(cpus), 1),
                "load_1min": round(os.getloadavg()[0], 2),
            }
        ),
        flush=True,
    )


def _serve(db: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        cwd=CODE_ROOT,
        args=[sys.executable, "-c", _CLI, "--db", db, "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    found: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        for line in process.stderr:
            match = _LISTENING.search(line)
            if match and not found:
                found.append(f"http://127.0.0.1:{match.group(1)}")
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(60):
        process.kill()
        raise SystemExit("gpupool serve did not start")
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"{found[0]}/healthz", timeout=2):
                break
        except OSError:
            time.sleep(0.1)
    return process, found[0]


# Where a local `job submit` spends its CPU, step by step in one fresh process: each
# step's CPU ms (process_time) as one JSON line (--breakdown).
_BREAKDOWN = """
import json, sys, time
steps, last = {}, time.process_time()
def step(name):
    global last
    now = time.process_time(); steps[name] = round((now - last) * 1000, 1); last = now
import sqlalchemy; step("import sqlalchemy (Core)")
import sqlalchemy.orm; step("import sqlalchemy.orm")
import gpupool.model, gpupool.limits; step("import gpupool.model, limits")
import gpupool.scheduler.orm; step("import gpupool.scheduler.orm (mapped classes)")
sqlalchemy.orm.configure_mappers(); step("configure mappers")
import gpupool.scheduler.service, gpupool.cli.local; step("import service, permissions, cli")
from gpupool.cli.platform import connect
connect({"db": sys.argv[1], "user": None}).submit_job(sys.argv[2], "1", "1", [], "", "0", None)
step("engine, schema check, submission")
print(json.dumps({"breakdown_cpu_ms": steps, "total_cpu_ms": round(sum(steps.values()), 1)}))
"""


def _breakdown(db: str, org: str) -> None:
    done = subprocess.run(
        cwd=CODE_ROOT,
        args=[sys.executable, "-c", _BREAKDOWN, db, org],
        capture_output=True,
        text=True,
        env=_env(),
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    line = json.loads(done.stdout)
    print(json.dumps({**line, "load_1min": round(os.getloadavg()[0], 2)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-remote", action="store_true", help="Only the local mode.")
    parser.add_argument(
        "--breakdown", action="store_true", help="Also where a local submit's CPU goes."
    )
    options = parser.parse_args()
    runs = max(1, min(options.runs, 200))
    with tempfile.TemporaryDirectory(prefix="gpupool-startup-") as folder:
        db = f"sqlite:///{folder}/bench.db"
        made = _cli(["--db", db, "init", "--demo", "--no-jobs", "--admin", "bench"], _env())
        if made.returncode != 0:
            raise SystemExit(made.stderr)
        token = re.search(r"token: (\S+)", made.stdout).group(1)
        org = json.loads(_cli(["--db", db, "org", "list", "--json"], _env()).stdout)[0]["name"]
        submit = ["job", "submit", "--org", org, "--gpus", "1", "--hours", "1"]
        if options.breakdown:
            for _ in range(3):
                _breakdown(db, org)
        _line("python -c pass", "-", _timed([sys.executable, "-c", "pass"], _env(), runs))
        local = [sys.executable, "-c", _CLI, "--db", db]
        _line("job submit", "local", _timed([*local, *submit], _env(), runs))
        _line("job list", "local", _timed([*local, "job", "list", "--json"], _env(), runs))
        if options.no_remote:
            return
        server, url = _serve(db)
        try:
            remote = _env(GPUPOOL_URL=url, GPUPOOL_TOKEN=token)
            command = [sys.executable, "-c", _CLI]
            _line("job submit", "remote", _timed([*command, *submit], remote, runs))
            _line("job list", "remote", _timed([*command, "job", "list", "--json"], remote, runs))
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
