"""The local executor with real child processes (no server): visible devices, exit
codes, time limits, stops, and a second executor on the same state directory (an
agent restarted) that launches nothing twice and still knows every end."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from gpupool.agents.executor import Launch, Payload, RunKey, RunPhase
from gpupool.agents.local import LocalExecutor

PY = sys.executable


def _launch(key: RunKey, argv=(), vendor="NVIDIA", nodes=((0, (2, 3)),), limit=60.0, **fields):
    return Launch(
        key=key,
        pool="p",
        gpu_type="A100",
        vendor=vendor,
        nodes=nodes,
        time_limit_s=limit,
        payload=Payload(argv=tuple(argv), **fields),
    )


def _ended(executor: LocalExecutor, key: RunKey, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        (state,) = executor.states([key])
        if state.phase != RunPhase.RUNNING:
            return state
        time.sleep(0.05)
    raise AssertionError(f"{key} still running after {seconds}s")


def test_a_run_sees_its_gpus_and_its_env_but_not_the_agents_token(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUPOOL_TOKEN", "gpt_secret")
    executor = LocalExecutor(tmp_path / "state")
    out = tmp_path / "out.txt"
    code = (
        "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['LR'], "
        "os.environ.get('GPUPOOL_TOKEN'), os.environ['GPUPOOL_JOB_ID'], os.getcwd())"
    )
    key = RunKey(7, 11)
    executor.launch(
        _launch(key, [PY, "-c", code], env={"LR": "0.1"}, stdout=str(out), workdir=str(tmp_path))
    )
    state = _ended(executor, key)
    assert (state.phase, state.exit_code) == (RunPhase.ENDED, 0)
    assert out.read_text().split() == ["2,3", "0.1", "None", "7", str(tmp_path)]
    assert state.started_at <= state.ended_at


def test_ascend_pools_get_their_own_variable(tmp_path):
    executor = LocalExecutor(tmp_path / "state")
    key = RunKey(1, 1)
    code = (
        "import os; "
        "print(os.environ['ASCEND_RT_VISIBLE_DEVICES'], 'CUDA_VISIBLE_DEVICES' in os.environ)"
    )
    executor.launch(_launch(key, [PY, "-c", code], vendor="Huawei", nodes=((1, (0, 1, 2)),)))
    _ended(executor, key)
    assert (executor.runs / key.tag / "stdout").read_text().split() == ["0,1,2", "False"]


def test_exit_codes_and_scripts_are_recorded(tmp_path):
    executor = LocalExecutor(tmp_path / "state")
    failing, script = RunKey(2, 1), RunKey(3, 1)
    executor.launch(_launch(failing, [PY, "-c", "import sys; sys.exit(3)"]))
    executor.launch(_launch(script, script="echo from-script\nexit 0\n"))
    state = _ended(executor, failing)
    assert (state.phase, state.exit_code, state.detail) == (RunPhase.FAILED, 3, "exit code 3")
    assert _ended(executor, script).phase == RunPhase.ENDED
    assert (executor.runs / script.tag / "stdout").read_text() == "from-script\n"


def test_the_time_limit_sends_sigterm_then_sigkill_to_the_group(tmp_path):
    executor = LocalExecutor(tmp_path / "state", kill_grace_s=0.3)
    key = RunKey(4, 1)
    # ignores SIGTERM, and its own child (same group) would outlive it without the group kill
    code = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"p = subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(60)']); "
        "print(p.pid, flush=True); time.sleep(60)"
    )
    executor.launch(_launch(key, [PY, "-c", code], limit=0.5))
    state = _ended(executor, key)
    assert (state.phase, state.exit_code, state.detail) == (
        RunPhase.FAILED,
        128 + 9,
        "killed at its time limit",
    )
    grandchild = int((executor.runs / key.tag / "stdout").read_text().split()[0])
    assert _gone(grandchild)


def test_stop_ends_a_run_and_repeating_it_does_nothing(tmp_path):
    executor = LocalExecutor(tmp_path / "state", kill_grace_s=5)
    key = RunKey(5, 1)
    executor.launch(_launch(key, [PY, "-c", "import time; time.sleep(60)"]))
    _wait_started(executor, key)
    executor.stop(key, "preempted")
    state = _ended(executor, key)
    assert (state.phase, state.exit_code, state.detail) == (
        RunPhase.FAILED,
        128 + 15,
        "stopped: preempted",
    )
    executor.stop(key, "again")  # an ended run: nothing
    assert executor.states([key]) == [state]


def test_a_second_executor_on_the_same_state_launches_nothing_twice(tmp_path):
    first = LocalExecutor(tmp_path / "state")
    counter = tmp_path / "launches"
    key = RunKey(6, 1)
    code = f"open({str(counter)!r}, 'a').write('x'); import time; time.sleep(0.5)"
    first.launch(_launch(key, [PY, "-c", code]))
    first.launch(_launch(key, [PY, "-c", code]))
    restarted = LocalExecutor(tmp_path / "state")
    restarted.launch(_launch(key, [PY, "-c", code]))
    assert [s.key for s in restarted.states()] == [key]
    state = _ended(restarted, key)
    assert state.phase == RunPhase.ENDED
    assert counter.read_text() == "x"


def test_what_it_cannot_run_fails_at_once(tmp_path):
    executor = LocalExecutor(tmp_path / "state")
    image, gang = RunKey(8, 1), RunKey(9, 1)
    executor.launch(_launch(image, ["true"], image="nvcr.io/nvidia/pytorch:24.01"))
    executor.launch(_launch(gang, ["true"], nodes=((0, (0,)), (1, (0,)))))
    states = {s.key: s for s in executor.states()}
    assert states[image].detail == "the local executor runs no container images"
    assert states[gang].detail == "the local executor runs gangs on one node only"
    assert {s.phase for s in states.values()} == {RunPhase.FAILED}


def _wait_started(executor: LocalExecutor, key: RunKey) -> None:
    deadline = time.monotonic() + 30
    while not (executor.runs / key.tag / "child.json").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie waiting for init counts as gone
            if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False
