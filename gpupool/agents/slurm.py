"""The Slurm executor: each run an ``sbatch`` job on the site's own Slurm.

``launch`` writes the run's batch script to ``STATE/TAG.sh`` (the payload's script,
or ``exec`` of its argv) and submits it as ``sbatch --job-name=TAG`` with the
partition the mapping file gives the pool, ``--gres=NAME:TYPE:N`` per node for the
GPU type, ``--nodes`` for the gang and ``--time`` from the run's limit (estimate
plus grace, rounded up to Slurm's minutes). The job name is the run's tag
(``gpupool-JOB-RUN``): before submitting, ``squeue`` is asked for that name, so a
second launch of one key, from this agent or a restarted one, does nothing.

``states`` reads every ``gpupool-`` job from ``scontrol show job`` (Slurm keeps an
ended job there for ``MinJobAge``) and, for jobs already purged, from the job
completion log the mapping names (``JobCompType=jobcomp/filetxt``; there is no
``sacct`` without slurmdbd). Start and end times and exit codes are Slurm's own.
``stop`` is ``scancel --name=TAG``; the reason is kept beside the script so the
run's end says why it was cancelled.

The run's environment is the agent's without any ``GPUPOOL_*`` variable (the
agent's token stays with the agent), plus the payload's ``env`` and
``GPUPOOL_JOB_ID`` / ``GPUPOOL_RUN_ID``, passed with ``--export=ALL``; Slurm sets
the visible devices from the GRES it grants. What it cannot run (a container
image, a pool or GPU type the mapping lacks, a submission Slurm refuses) fails at
once with a one-line detail, recorded in ``STATE/TAG.failed``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from gpupool.agents.executor import ExecutorUnavailable, Launch, RunKey, RunPhase, RunState
from gpupool.agents.slurm_mapping import SlurmMapping
from gpupool.model import GpupoolError

COMMAND_TIMEOUT_S = 30.0
_TAG = re.compile(r"gpupool-(\d+)-(\d+)")
_FIELD = re.compile(r"(\w+)=(\S*)")
QUEUED = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
RUNNING = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING"})
FAILURE_DETAIL = {
    "TIMEOUT": "killed at its time limit",
    "CANCELLED": "cancelled",
    "NODE_FAIL": "its node failed",
    "OUT_OF_MEMORY": "out of memory",
    "PREEMPTED": "preempted by Slurm",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "missed its Slurm deadline",
}


class SlurmError(GpupoolError):
    """A Slurm command refused what it was asked (its own message)."""


class SlurmUnavailable(ExecutorUnavailable):
    """A Slurm command is missing or did not answer: the agent tries again next step
    (a submission that timed out may have been accepted: the job name tells)."""


class SlurmExecutor:
    name = "slurm"

    def __init__(self, mapping: SlurmMapping, state_dir: str | Path) -> None:
        self.mapping = mapping
        self.state = Path(state_dir)
        self.state.mkdir(parents=True, exist_ok=True)

    # --- launch --------------------------------------------------------------

    def launch(self, launch: Launch) -> None:
        tag = launch.key.tag
        if self._failure(tag) is not None or self._submitted(tag):
            return
        try:
            script = self._write_script(launch)
            _run(self._sbatch_argv(launch, script), env=self._environment(launch))
        except SlurmUnavailable:
            raise
        except GpupoolError as exc:  # refused by us or by sbatch: the run fails, once
            self._record_failure(tag, str(exc))

    def _submitted(self, tag: str) -> bool:
        listed = _run(["squeue", "--states=all", "--noheader", f"--name={tag}", "--format=%i"])
        return bool(listed.strip())

    def _write_script(self, launch: Launch) -> Path:
        payload = launch.payload
        if payload.image:
            raise GpupoolError("container images need a Slurm OCI runtime; not run here")
        if payload.script is not None:
            text = (
                payload.script
                if payload.script.startswith("#!")
                else "#!/bin/sh\n" + payload.script
            )
        elif payload.argv:
            text = f"#!/bin/sh\nexec {shlex.join(payload.argv)}\n"
        else:
            raise GpupoolError("the job has no command to run")
        path = self.state / f"{launch.key.tag}.sh"
        path.write_text(text)
        path.chmod(0o700)
        return path

    def _sbatch_argv(self, launch: Launch, script: Path) -> list[str]:
        tag = launch.key.tag
        gres = self.mapping.gres.get(launch.gpu_type)
        if gres is None:
            raise GpupoolError(f"GPU type {launch.gpu_type!r} has no gres in {self.mapping.source}")
        per_node = max(len(indices) for _, indices in launch.nodes)
        payload = launch.payload
        return [
            "sbatch",
            "--parsable",
            f"--job-name={tag}",
            f"--partition={self.mapping.partition(launch.pool)}",
            f"--nodes={len(launch.nodes)}",
            f"--gres={gres}:{per_node}",
            f"--time={max(1, math.ceil(launch.time_limit_s / 60.0))}",
            f"--chdir={payload.workdir or self.state}",
            f"--output={payload.stdout or self.state / f'{tag}.out'}",
            f"--error={payload.stderr or self.state / f'{tag}.err'}",
            "--export=ALL",
            str(script),
        ]

    def _environment(self, launch: Launch) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
        env.update(launch.payload.env)
        env["GPUPOOL_JOB_ID"] = str(launch.key.job_id)
        env["GPUPOOL_RUN_ID"] = str(launch.key.run_id)
        return env

    # --- states --------------------------------------------------------------

    def states(self, keys: Sequence[RunKey] | None = None) -> list[RunState]:
        records = {**self._completed_records(), **self._live_records()}
        found = {key: self._state(key, record) for key, record in records.items()}
        for path in self.state.glob("gpupool-*.failed"):
            key = _key(path.stem)
            if key is not None and key not in found:
                failure = json.loads(path.read_text())
                found[key] = RunState(
                    key, RunPhase.FAILED, failure["at"], failure["at"], None, failure["detail"]
                )
        wanted = found if keys is None else {k: found[k] for k in keys if k in found}
        return sorted(wanted.values(), key=lambda state: state.key)

    def _live_records(self) -> dict[RunKey, dict[str, str]]:
        shown = _run(["scontrol", "--oneliner", "show", "job"])
        return _latest(_fields(line) for line in shown.splitlines())

    def _completed_records(self) -> dict[RunKey, dict[str, str]]:
        log = self.mapping.completion_log
        if log is None or not log.exists():
            return {}
        with log.open(errors="replace") as lines:
            return _latest(_fields(line) for line in lines)

    def _state(self, key: RunKey, record: dict[str, str]) -> RunState:
        state = record.get("JobState", "").split("+")[0]
        started = _epoch(record.get("StartTime"))
        ended = _epoch(record.get("EndTime"))
        if state in QUEUED:
            return RunState(key, RunPhase.QUEUED, started or time.time())
        if state in RUNNING:
            return RunState(key, RunPhase.RUNNING, started or time.time())
        ended = ended or time.time()
        started = started or ended  # cancelled before it started
        code = _exit_code(record.get("ExitCode", ""))
        if state == "COMPLETED" and code == 0:
            return RunState(key, RunPhase.ENDED, started, ended, 0)
        detail = FAILURE_DETAIL.get(state, f"Slurm state {state.lower() or 'unknown'}")
        stopped = self.state / f"{key.tag}.stop"
        if state == "CANCELLED" and stopped.exists():
            detail = f"stopped: {stopped.read_text().strip()}"
        return RunState(key, RunPhase.FAILED, started, ended, code, detail)

    # --- stop ----------------------------------------------------------------

    def stop(self, key: RunKey, reason: str) -> None:
        (self.state / f"{key.tag}.stop").write_text(reason.replace("\n", " ") + "\n")
        _run(["scancel", f"--name={key.tag}"])

    # --- failures ------------------------------------------------------------

    def _failure(self, tag: str) -> dict | None:
        path = self.state / f"{tag}.failed"
        return json.loads(path.read_text()) if path.exists() else None

    def _record_failure(self, tag: str, detail: str) -> None:
        path = self.state / f"{tag}.failed"
        temporary = path.with_suffix(".failed.tmp")
        temporary.write_text(json.dumps({"at": time.time(), "detail": detail}))
        temporary.replace(path)


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, env=env, check=False
        )
    except FileNotFoundError as exc:
        raise SlurmUnavailable(f"{argv[0]} not found: is Slurm's client installed?") from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmUnavailable(f"{argv[0]} did not answer in {COMMAND_TIMEOUT_S:g} s") from exc
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        said = lines[-1] if lines else f"exit {done.returncode}"
        said = re.sub(rf"^{argv[0]}: (error: )?", "", said)
        raise SlurmError(f"{argv[0]} refused it: {said}")
    return done.stdout


def _fields(line: str) -> dict[str, str]:
    fields = dict(_FIELD.findall(line))
    if "Name" in fields and "JobName" not in fields:  # the completion log's spelling
        fields["JobName"] = fields["Name"]
    return fields


def _latest(records: Iterable[dict[str, str]]) -> dict[RunKey, dict[str, str]]:
    """The newest Slurm job of each gpupool run (the highest job id)."""
    found: dict[RunKey, dict[str, str]] = {}
    for record in records:
        key = _key(record.get("JobName", ""))
        if key is None or not record.get("JobId", "").isdigit():
            continue
        if key not in found or int(record["JobId"]) > int(found[key]["JobId"]):
            found[key] = record
    return found


def _key(tag: str) -> RunKey | None:
    match = _TAG.fullmatch(tag)
    return RunKey(int(match[1]), int(match[2])) if match else None


def _epoch(value: str | None) -> float | None:
    """Slurm's local-time stamps (``2026-12-03T19:08:44``); ``Unknown``/``None`` -> None."""
    try:
        return time.mktime(time.strptime(value or "", "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _exit_code(value: str) -> int | None:
    """``ExitCode=3:0`` -> 3; killed by signal n (``0:9``) -> 128 + n, the shell's way."""
    code, _, signal = value.partition(":")
    if not code.isdigit():
        return None
    return 128 + int(signal) if signal.isdigit() and int(signal) else int(code)
