"""The local executor: each run a child process on the agent's own machine.

``launch`` claims the run's directory ``STATE/runs/gpupool-JOB-RUN`` (a rename,
so a second launch of one key, from this agent or a restarted one, does nothing)
and starts gpupool/agents/wrapper.py there in a session of its own. The wrapper
starts the command in its own process group with the run's GPUs visible
(``CUDA_VISIBLE_DEVICES``, or ``ASCEND_RT_VISIBLE_DEVICES`` for Huawei Ascend),
enforces the time limit (SIGTERM to the group, SIGKILL after the kill grace)
and writes the exit code to the run's directory. ``states`` reads those
directories, so an agent restarted mid-flight knows every run it launched.

The run's environment is the agent's without any ``GPUPOOL_*`` variable (the
agent's token stays with the agent), plus the payload's ``env``, the visible
devices and ``GPUPOOL_JOB_ID`` / ``GPUPOOL_RUN_ID``. Output goes to the
payload's stdout/stderr files, or ``stdout``/``stderr`` in the run's directory;
the working directory is the payload's, or the run's directory.

What it cannot run fails at once with a one-line detail: a container image,
a gang over several nodes (one machine is one node).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gpupool.agents.executor import Launch, RunKey, RunPhase, RunState
from gpupool.agents.wrapper import write_json

WRAPPER = Path(__file__).with_name("wrapper.py")
STARTING_SECONDS = 30.0  # a run directory without a wrapper this long was never started
ASCEND_VENDORS = ("huawei", "ascend")


def visible_devices_variable(vendor: str) -> str:
    lowered = vendor.lower()
    if any(name in lowered for name in ASCEND_VENDORS):
        return "ASCEND_RT_VISIBLE_DEVICES"
    return "CUDA_VISIBLE_DEVICES"


class LocalExecutor:
    name = "local"

    def __init__(self, state_dir: str | Path, kill_grace_s: float = 10.0) -> None:
        self.runs = Path(state_dir) / "runs"
        self.runs.mkdir(parents=True, exist_ok=True)
        self.kill_grace_s = kill_grace_s
        self._wrappers: list[subprocess.Popen] = []  # reaped in states()

    # --- launch --------------------------------------------------------------

    def launch(self, launch: Launch) -> None:
        rundir = self.runs / launch.key.tag
        if rundir.exists():
            return
        claim = self.runs / f".claim-{launch.key.tag}-{os.getpid()}"
        shutil.rmtree(claim, ignore_errors=True)
        claim.mkdir()
        problem = self._prepare(launch, claim, rundir)
        try:
            os.rename(claim, rundir)  # fails if another launch of this key won
        except OSError:
            shutil.rmtree(claim, ignore_errors=True)
            return
        if problem is not None:
            now = time.time()
            record = {"phase": "failed", "exit_code": None, "started_at": now}
            write_json(str(rundir / "exit.json"), {**record, "ended_at": now, "detail": problem})
            return
        self._wrappers.append(
            subprocess.Popen(
                [sys.executable, "-I", str(WRAPPER), str(rundir)],
                env=self._environment(launch),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=(rundir / "wrapper.log").open("ab"),
                start_new_session=True,  # survives the agent, even its SIGKILL
            )
        )

    def _prepare(self, launch: Launch, claim: Path, rundir: Path) -> str | None:
        """Write launch.json into the claimed directory; a problem's detail, or None."""
        payload = launch.payload
        argv = list(payload.argv)
        if payload.script is not None:
            (claim / "script.sh").write_text(payload.script, encoding="utf-8")
            argv = ["/bin/sh", str(rundir / "script.sh")]
        spec = {
            "key": [launch.key.job_id, launch.key.run_id],
            "argv": argv,
            "cwd": payload.workdir or str(rundir),
            "stdout": payload.stdout or str(rundir / "stdout"),
            "stderr": payload.stderr or str(rundir / "stderr"),
            "time_limit_s": launch.time_limit_s,
            "kill_grace_s": self.kill_grace_s,
            "launched_at": time.time(),
        }
        write_json(str(claim / "launch.json"), spec)
        if payload.image:
            return "the local executor runs no container images"
        if len(launch.nodes) > 1:
            return "the local executor runs gangs on one node only"
        return None

    def _environment(self, launch: Launch) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
        env.update(launch.payload.env)
        indices = launch.nodes[0][1] if launch.nodes else ()
        env[visible_devices_variable(launch.vendor)] = ",".join(str(i) for i in indices)
        env["GPUPOOL_JOB_ID"] = str(launch.key.job_id)
        env["GPUPOOL_RUN_ID"] = str(launch.key.run_id)
        return env

    # --- states --------------------------------------------------------------

    def states(self, keys: Sequence[RunKey] | None = None) -> list[RunState]:
        self._wrappers = [w for w in self._wrappers if w.poll() is None]
        if keys is None:
            dirs = sorted(p for p in self.runs.iterdir() if p.name.startswith("gpupool-"))
        else:
            dirs = [self.runs / key.tag for key in keys]
        return [state for path in dirs if (state := self._state(path)) is not None]

    def _state(self, rundir: Path) -> RunState | None:
        spec = _read_json(rundir / "launch.json")
        if spec is None:
            return None
        key = RunKey(*spec["key"])
        ended = _read_json(rundir / "exit.json")
        if ended is not None:
            return _ended(key, ended)
        child = _read_json(rundir / "child.json")
        started = child["started_at"] if child else spec["launched_at"]
        if _alive(_read_pid(rundir / "wrapper.pid")):
            return RunState(key, RunPhase.RUNNING, started)
        if child is None and time.time() - spec["launched_at"] < STARTING_SECONDS:
            return RunState(key, RunPhase.RUNNING, started)  # its wrapper is starting
        if (rundir / "exit.json").exists():  # it wrote its record and exited meanwhile
            return self._state(rundir)
        detail = "its supervisor died; the exit code is unknown" if child else "never started"
        record = {"phase": "failed", "exit_code": None, "started_at": started}
        write_json(str(rundir / "exit.json"), {**record, "ended_at": time.time(), "detail": detail})
        return self._state(rundir)

    # --- stop ----------------------------------------------------------------

    def stop(self, key: RunKey, reason: str) -> None:
        rundir = self.runs / key.tag
        if not rundir.exists() or (rundir / "exit.json").exists():
            return
        (rundir / "stop").write_text(reason or "stop requested", encoding="utf-8")
        child = _read_json(rundir / "child.json")
        if child is not None:  # at once; the wrapper sends SIGKILL after the grace
            import signal

            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child["pid"], signal.SIGTERM)


def _ended(key: RunKey, record: dict) -> RunState:
    return RunState(
        key,
        RunPhase(record["phase"]),
        record["started_at"],
        record["ended_at"],
        record["exit_code"],
        record.get("detail") or "",
    )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_a_zombie(pid)


def _not_a_zombie(pid: int) -> bool:
    """A wrapper that exited but was not reaped yet (its parent, an agent, is busy)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return status.rpartition(")")[2].split()[0] != "Z"
