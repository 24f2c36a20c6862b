"""The local executor's supervisor of one run: ``python -I wrapper.py RUNDIR``.

Started by gpupool.agents.local in a session of its own (so an agent killed, even
with SIGKILL, leaves it running), it starts the run's command in a further
process group, enforces the time limit and stop requests (SIGTERM to the whole
group, then SIGKILL after the kill grace) and writes the exit code to
``RUNDIR/exit.json``: a restarted agent reads what became of the run from there.

Standard library only, and run with ``-I``: a job's environment (PYTHONPATH,
PYTHONHOME) must not change how its supervisor runs.

Files in RUNDIR: launch.json (written by the executor: argv, cwd, stdout,
stderr, time_limit_s, kill_grace_s), wrapper.pid, child.json ({pid, started_at}),
stop (a stop request's reason, from the executor), exit.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

POLL_SECONDS = 0.05


def write_json(path: str, data: dict) -> None:
    """Atomically: a reader sees the whole file or none."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def main(rundir: str) -> int:
    with open(os.path.join(rundir, "launch.json"), encoding="utf-8") as handle:
        spec = json.load(handle)
    with open(os.path.join(rundir, "wrapper.pid"), "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))
    started = time.time()
    stop_file = os.path.join(rundir, "stop")
    if os.path.exists(stop_file):
        return _record(rundir, started, None, f"stopped before it started: {_read(stop_file)}")
    try:
        child = _spawn(spec)
    except OSError as exc:
        return _record(rundir, started, 127, f"cannot start: {exc.strerror or exc}")
    write_json(os.path.join(rundir, "child.json"), {"pid": child.pid, "started_at": started})
    why = _supervise(child, started + float(spec["time_limit_s"]), spec, stop_file)
    return _record(rundir, started, child.returncode, why)


def _spawn(spec: dict) -> subprocess.Popen:
    with open(spec["stdout"], "ab") as out, open(spec["stderr"], "ab") as err:
        return subprocess.Popen(
            spec["argv"],
            cwd=spec["cwd"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group: a stop reaches all it started
        )


def _supervise(child: subprocess.Popen, deadline: float, spec: dict, stop_file: str) -> str:
    """Wait for the run; stop it at its deadline or on request. Why it was stopped, or ''."""
    why, term_at = "", 0.0
    kill_grace = float(spec.get("kill_grace_s", 10.0))
    while True:
        try:
            child.wait(timeout=POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.time()
        if not why:
            if os.path.exists(stop_file):
                why = f"stopped: {_read(stop_file)}"
            elif now >= deadline:
                why = "killed at its time limit"
            if why:
                _signal_group(child.pid, signal.SIGTERM)
                term_at = now
        elif now >= term_at + kill_grace:
            _signal_group(child.pid, signal.SIGKILL)
    if not why and os.path.exists(stop_file):  # the executor's SIGTERM came first
        why = f"stopped: {_read(stop_file)}"
    _signal_group(child.pid, signal.SIGKILL)  # what it left behind in its group
    return why


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()[:200] or "stop requested"
    except OSError:
        return "stop requested"


def _record(rundir: str, started: float, returncode: int | None, why: str) -> int:
    code = returncode if returncode is None or returncode >= 0 else 128 - returncode
    detail = why
    if not detail and returncode is not None and returncode < 0:
        detail = f"killed by signal {-returncode}"
    elif not detail and code:
        detail = f"exit code {code}"
    phase = "ended" if code == 0 and not why else "failed"
    write_json(
        os.path.join(rundir, "exit.json"),
        {
            "phase": phase,
            "exit_code": code,
            "started_at": started,
            "ended_at": time.time(),
            "detail": detail,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
