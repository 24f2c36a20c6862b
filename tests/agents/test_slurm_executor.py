"""The Slurm executor against a real one-node Slurm (scripts/ensure-slurm.sh: partitions
`gpu` and `gpu-b`, eight `gpu:fake` GRES, finished jobs kept an hour and written to
the job completion log). Skipped without Slurm, failed under GPUPOOL_REQUIRE_SLURM=1 (CI).

Every run gets a fresh random job id: the controller remembers finished jobs by name
for an hour, and a name seen before is, by design, never submitted again."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time

import pytest

from gpupool.agents.executor import Launch, Payload, RunKey, RunPhase
from gpupool.agents.slurm import SlurmExecutor
from gpupool.agents.slurm_mapping import load_mapping
from gpupool.files import FileError

pytestmark = pytest.mark.slurm

MAPPING = """\
partitions:
  lab-a: gpu
  lab-b: gpu-b
  nowhere: no-such-partition
gres:
  A100: gpu:fake
completion_log: /var/log/slurm/jobcomp.log
"""


def _slurm_problem() -> str | None:
    if shutil.which("scontrol") is None:
        return "scontrol not installed"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    return None if "is UP" in ping.stdout else (ping.stdout + ping.stderr).strip()


@pytest.fixture(scope="module")
def slurm_up():
    problem = _slurm_problem()
    if problem is not None:
        if os.environ.get("GPUPOOL_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm required but not running (scripts/ensure-slurm.sh): {problem}")
        pytest.skip(f"Slurm not running: {problem}")


@pytest.fixture
def executor(slurm_up, tmp_path):
    (tmp_path / "slurm.yaml").write_text(MAPPING)
    running = SlurmExecutor(load_mapping(tmp_path / "slurm.yaml"), tmp_path / "state")
    yield running
    for state in running.states():
        if state.phase in (RunPhase.QUEUED, RunPhase.RUNNING):
            running.stop(state.key, "test over")


def _launch(pool="lab-a", gpus=2, limit_s=600.0, **payload) -> Launch:
    key = RunKey(random.randrange(10**8, 10**9), os.getpid())
    return Launch(
        key=key,
        pool=pool,
        gpu_type="A100",
        vendor="NVIDIA",
        nodes=((0, tuple(range(gpus))),),
        time_limit_s=limit_s,
        payload=Payload(**payload),
    )


def _wait(executor, key, phases, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = executor.states([key])
        if found and found[0].phase in phases:
            return found[0]
        time.sleep(0.3)
    raise AssertionError(f"{key.tag} never reached {phases}: {executor.states([key])}")


def _slurm_jobs(tag: str) -> list[str]:
    shown = subprocess.run(
        ["squeue", "--states=all", "--noheader", f"--name={tag}", "--format=%i"],
        capture_output=True,
        text=True,
        check=True,
    )
    return shown.stdout.split()


def _job_field(tag: str, name: str) -> str:
    (job,) = _slurm_jobs(tag)
    shown = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", job], capture_output=True, text=True, check=True
    ).stdout
    return next(f.split("=", 1)[1] for f in shown.split() if f.startswith(f"{name}="))


def test_a_failing_command_ends_failed_with_its_exit_code_and_slurms_times(executor, tmp_path):
    out = tmp_path / "out.txt"
    launch = _launch(
        argv=("sh", "-c", 'echo "job $GPUPOOL_JOB_ID $COLOUR"; exit 3'),
        env={"COLOUR": "teal"},
        stdout=str(out),
    )
    before = time.time()
    executor.launch(launch)
    executor.launch(launch)  # a second launch of one key submits nothing
    state = _wait(executor, launch.key, {RunPhase.FAILED})
    assert len(_slurm_jobs(launch.key.tag)) == 1
    assert (state.exit_code, state.detail) == (3, "Slurm state failed")
    assert before - 2 <= state.started_at <= state.ended_at <= time.time() + 2
    assert out.read_text() == f"job {launch.key.job_id} teal\n"


def test_a_script_runs_in_its_workdir_and_ends(executor, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    launch = _launch(script="pwd > where.txt\n", workdir=str(work))
    executor.launch(launch)
    state = _wait(executor, launch.key, {RunPhase.ENDED, RunPhase.FAILED})
    assert (state.phase, state.exit_code) == (RunPhase.ENDED, 0)
    assert (work / "where.txt").read_text().strip() == str(work)


def test_partition_gres_and_time_limit_come_from_the_mapping_and_the_launch(executor):
    launch = _launch(pool="lab-b", gpus=3, limit_s=61.0, argv=("sleep", "30"))
    executor.launch(launch)
    _wait(executor, launch.key, {RunPhase.RUNNING, RunPhase.QUEUED})
    assert _job_field(launch.key.tag, "Partition") == "gpu-b"
    assert _job_field(launch.key.tag, "TimeLimit") == "00:02:00"  # 61 s, rounded up
    assert "gpu:fake:3" in _job_field(launch.key.tag, "TresPerNode")


def test_stop_cancels_the_job_and_its_end_says_why(executor):
    launch = _launch(argv=("sleep", "60"))
    executor.launch(launch)
    _wait(executor, launch.key, {RunPhase.RUNNING})
    executor.stop(launch.key, "preempted for job 7")
    state = _wait(executor, launch.key, {RunPhase.FAILED})
    assert state.detail == "stopped: preempted for job 7"
    executor.stop(launch.key, "again")  # stopping an ended run does nothing


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"pool": "nowhere"}, "sbatch refused it: Batch job submission failed: Invalid partition"),
        ({"pool": "unmapped"}, "no partition for pool 'unmapped'"),
        ({"image": "nvcr.io/pytorch:24.01"}, "container images need a Slurm OCI runtime"),
        ({}, "the job has no command to run"),
    ],
)
def test_what_it_cannot_run_fails_at_once_with_one_line(executor, changes, detail):
    pool = changes.pop("pool", "lab-a")
    launch = _launch(
        pool=pool, **({"argv": ("true",)} if changes or pool != "lab-a" else {}), **changes
    )
    executor.launch(launch)
    (state,) = executor.states([launch.key])
    assert state.phase == RunPhase.FAILED and detail in state.detail
    assert _slurm_jobs(launch.key.tag) == []
    executor.launch(launch)  # a failed launch is not tried again
    assert executor.states([launch.key]) == [state]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "partitions:\n  a: gpu\ngress:\n  A100: gpu:x\n",
            "m.yaml:3 gress: unknown section (did you mean 'gres'?)",
        ),
        (
            "partitions:\n  a: gpu\n  b: 'gpu; rm -rf /'\n",
            "m.yaml:3 partitions.b: must be a Slurm name",
        ),
        ("gres: [gpu]\n", "m.yaml:1 gres: must be a mapping of names"),
        ("completion_log: jobcomp.log\n", "m.yaml:1 completion_log: must be an absolute file path"),
        ("- partitions\n", "m.yaml:1: must be a mapping of partitions and gres"),
    ],
)
def test_a_bad_mapping_file_is_named_by_file_line_and_field(tmp_path, text, message):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(FileError) as raised:
        load_mapping(path)
    assert str(raised.value).replace(str(tmp_path) + "/", "").startswith(message)
