"""Site agents against a real `gpupool serve`: the agent API, and `gpupool agent run`
with the local executor running real child processes, killed and restarted.

One server per backend for the module, on tests/conftest.py's small platform:
Beijing holds p-a100 (A100, 2 nodes of 8), Shanghai p-h100 (H100, 1 node of 8).
The agent API's cases run on SQLite and PostgreSQL; the cases that run agent
processes (whose logic is the API's, already proved on both) on SQLite only.
Each test submits its own jobs and schedules them; agents run every open start
of their site, so each test ends what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import add_users
from tests.server.conftest import make_token, populated_server, wait_for

PY = sys.executable
AGENTS = {"agent-bj": "Beijing", "agent-sh": "Shanghai"}


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# the agent processes' end-to-end cases: their server logic is the API's, run on both
SQLITE_SERVER = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory):
    with populated_server(request.param, tmp_path_factory.mktemp("agents")) as server:
        add_users(server.db, *[(name, "agent", None, site) for name, site in AGENTS.items()])
        for name in AGENTS:
            server.tokens[name] = make_token(server.db, name)
        yield server


def _submit(server, argv=None, gpu_type="A100", gpus=1, hours=1, user="bob", **payload) -> int:
    org = {"bob": "lab", "hana": "hosp"}[user]
    body = {"org": org, "gpus": gpus, "hours": hours, "gpu_types": [gpu_type]}
    if argv is not None or payload:
        body["payload"] = {"argv": argv, **payload}
    with server.client(user) as client:
        response = client.post("/api/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _schedule(server) -> dict:
    with server.client("root") as client:
        response = client.post("/api/v1/schedule", json={})
    assert response.status_code == 200, response.text
    return response.json()


def _job(server, job_id: int) -> dict:
    with server.client("root") as client:
        return client.get(f"/api/v1/jobs/{job_id}").json()


def _starts(server, agent="agent-bj") -> dict[int, dict]:
    with server.client(agent) as client:
        response = client.get("/api/v1/agent/starts")
    assert response.status_code == 200, response.text
    return {start["job_id"]: start for start in response.json()["starts"]}


def _report(server, agent, *reports) -> tuple[int, dict]:
    with server.client(agent) as client:
        response = client.post("/api/v1/agent/reports", json={"reports": list(reports)})
    return response.status_code, response.json()


def _cancel(server, job_id: int, user: str = "bob") -> None:
    with server.client(user) as client:
        assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200


def test_an_agent_pulls_its_sites_starts_with_gpus_time_limit_and_payload(server):
    a100 = _submit(server, ["python", "-c", "pass"], env={"A": "1"})
    h100 = _submit(server, ["true"], gpu_type="H100", gpus=2)
    booking = _submit(server)  # no payload: booked GPUs only, nothing for an agent to run
    started = {s["job"] for s in _schedule(server)["started"]}
    assert {a100, h100, booking} <= started
    beijing = _starts(server, "agent-bj")
    assert a100 in beijing and h100 not in beijing and booking not in beijing
    start = beijing[a100]
    assert (start["pool"], start["gpu_type"], start["vendor"]) == ("p-a100", "A100", "NVIDIA")
    assert start["time_limit_s"] == pytest.approx(3600 * 1.1 + 300)  # 1 h on A100 + 10%+5m
    assert start["payload"]["argv"] == ["python", "-c", "pass"]
    assert start["payload"]["env"] == {"A": "1"}
    shanghai = _starts(server, "agent-sh")
    assert shanghai[h100]["time_limit_s"] == pytest.approx(1800 * 1.1 + 300)  # H100: speed 2
    # GPU indices: distinct among the site's open runs on one node, and stable
    used = [
        (node, index)
        for s in _starts(server, "agent-bj").values()
        for node, indices in s["nodes"]
        for index in indices
    ]
    assert len(used) == len(set(used))
    assert _starts(server, "agent-bj")[a100]["nodes"] == start["nodes"]
    for job in (a100, h100, booking):
        _cancel(server, job)


def test_only_an_agent_of_the_site_may_pull_report_or_beat(server):
    job = _submit(server, ["true"])
    _schedule(server)
    run = _starts(server)[job]["run_id"]
    report = {"job_id": job, "run_id": run, "phase": "ended", "exit_code": 0}
    status, body = _report(server, "agent-sh", report)
    assert status == 403 and "a site other than Shanghai" in body["detail"]
    assert _job(server, job)["state"] == "running"
    for user in ("bob", "root", "audrey"):
        with server.client(user) as client:
            assert client.get("/api/v1/agent/starts").status_code == 403
            assert client.post("/api/v1/agent/heartbeat", json={"running": []}).status_code == 403
    # a run this server never placed (another platform's, on a shared Slurm): left alone
    unknown = {**report, "run_id": run + 10_000}
    status, body = _report(server, "agent-bj", unknown)
    assert (status, body["results"][0]["outcome"]) == (200, "unknown")
    with server.client("agent-bj") as client:
        beat = {"running": [{"job_id": job, "run_id": run + 10_000}]}
        assert client.post("/api/v1/agent/heartbeat", json=beat).json()["stop"] == []
    _cancel(server, job)


def test_reports_are_idempotent_and_ends_go_through_finish(server):
    job = _submit(server, ["true"])
    _schedule(server)
    run = _starts(server)[job]["run_id"]
    now = time.time()
    running = {"job_id": job, "run_id": run, "phase": "running", "started_at": now}
    ended = {**running, "phase": "failed", "ended_at": now + 1, "exit_code": 3,
             "detail": "exit code 3"}  # fmt: skip
    outcomes = []
    for item in (running, running, ended, ended):
        status, body = _report(server, "agent-bj", item)
        assert status == 200, body
        outcomes.append(body["results"][0]["outcome"])
    assert outcomes == ["recorded", "unchanged", "recorded", "unchanged"]
    shown = _job(server, job)
    assert shown["state"] == "failed"
    assert shown["end_reason"] == "reported failed by agent-bj"
    assert (shown["placements"][0]["exit_code"], shown["placements"][0]["run_detail"]) == (
        3,
        "exit code 3",
    )
    charged = shown["accounting"]["cost"]
    assert charged >= 0
    assert _report(server, "agent-bj", ended)[1]["results"][0]["outcome"] == "unchanged"
    assert _job(server, job)["accounting"]["cost"] == charged


def test_a_heartbeat_orders_stopped_what_the_server_ended(server):
    job = _submit(server, ["sleep", "100"])
    _schedule(server)
    run = _starts(server)[job]["run_id"]
    beat = {"running": [{"job_id": job, "run_id": run}]}
    with server.client("agent-bj") as client:
        assert client.post("/api/v1/agent/heartbeat", json=beat).json()["stop"] == []
        _cancel(server, job)
        stop = client.post("/api/v1/agent/heartbeat", json=beat).json()["stop"]
        assert stop == [{"job_id": job, "run_id": run, "reason": "cancelled by bob"}]
        sites = {s["name"]: s for s in _admin_get(server, "/api/v1/sites")}
    assert sites["Beijing"]["reachable"] is True
    assert sites["Beijing"]["agent"] == "agent-bj"


def _admin_get(server, path: str):
    with server.client("root") as client:
        response = client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


# --- gpupool agent run, end to end -----------------------------------------------


def _agent(server, state, *extra) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    env.update(GPUPOOL_URL=server.url, GPUPOOL_TOKEN=server.tokens["agent-bj"])
    command = [PY, "-m", "gpupool.cli.main", "agent", "run", "--site", "Beijing"]
    options = ["--executor", "local", "--state-dir", str(state), "--kill-grace", "0.5"]
    return subprocess.Popen(
        [*command, *options, *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _state_of(server, job_id: int, *states: str, seconds: float = 60.0) -> dict:
    view = wait_for(lambda: (v := _job(server, job_id))["state"] in states and v, seconds)
    assert view, f"job {job_id} is {_job(server, job_id)['state']}, not {states}"
    return view


@SQLITE_SERVER
def test_the_agent_runs_jobs_survives_sigkill_and_launches_nothing_twice(server, tmp_path):
    launches = tmp_path / "launches"
    devices = tmp_path / "devices"
    sleeper_code = f"open({str(launches)!r}, 'a').write('x'); import time; time.sleep(60)"
    fails = _submit(server, [PY, "-c", "import sys; sys.exit(3)"])
    shows = _submit(server, [PY, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
                    stdout=str(devices))  # fmt: skip
    sleeps = _submit(server, [PY, "-c", sleeper_code], gpus=2)
    started = {s["job"]: s for s in _schedule(server)["started"]}
    assert {fails, shows, sleeps} <= set(started)

    agent = _agent(server, tmp_path / "state", "--poll", "0.2")
    try:
        failed = _state_of(server, fails, "failed")
        assert failed["placements"][-1]["exit_code"] == 3
        completed = _state_of(server, shows, "completed")
        assert completed["placements"][-1]["exit_code"] == 0
        indices = _starts_seen(server, tmp_path, shows, devices)
        assert devices.read_text().strip() == indices
        assert wait_for(lambda: launches.exists(), 30)
        agent.send_signal(signal.SIGKILL)  # mid-flight: the sleeper runs on
        agent.wait(timeout=10)

        agent = _agent(server, tmp_path / "state", "--poll", "0.2")
        time.sleep(1.0)  # several steps of the restarted agent
        assert _job(server, sleeps)["state"] == "running"
        assert launches.read_text() == "x"  # launched once, not again
        _cancel(server, sleeps)  # the heartbeat's stop order kills its process group
        stopped = wait_for(
            lambda: _job(server, sleeps)["placements"][-1]["exit_code"] is not None, 30
        )
        assert stopped, "the cancelled run's end was never reported"
        placement = _job(server, sleeps)["placements"][-1]
        assert placement["exit_code"] == 128 + signal.SIGTERM
        assert placement["run_detail"] == "stopped: cancelled by bob"
        assert launches.read_text() == "x"
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=10)


def _starts_seen(server, tmp_path, job_id: int, devices) -> str:
    """The CUDA_VISIBLE_DEVICES the job was given, from its run's launch record."""
    state = tmp_path / "state" / "runs"
    (rundir,) = [p for p in state.iterdir() if p.name.startswith(f"gpupool-{job_id}-")]
    record = json.loads((rundir / "launch.json").read_text())
    assert record["stdout"] == str(devices)
    (view,) = [p for p in _job(server, job_id)["placements"]]
    assert view["pool"] == "p-a100"
    return _devices_from_server(server, job_id, rundir.name)


def _devices_from_server(server, job_id: int, tag: str) -> str:
    from sqlalchemy import select

    from gpupool.scheduler.database import unit_of_work
    from gpupool.scheduler.orm import PlacementRow

    run_id = int(tag.rsplit("-", 1)[1])
    with unit_of_work(server.db) as session:
        devices = session.scalar(select(PlacementRow.devices).where(PlacementRow.id == run_id))
    ((_node, indices),) = devices
    return ",".join(str(i) for i in indices)


@SQLITE_SERVER
def test_a_start_reported_running_but_unknown_to_the_executor_fails_not_relaunched(
    server, tmp_path
):
    from gpupool.agents.agent import LOST_RECORD, Agent
    from gpupool.agents.client import AgentApi
    from gpupool.agents.local import LocalExecutor

    launches = tmp_path / "launches"
    code = f"open({str(launches)!r}, 'a').write('x'); import time; time.sleep(60)"
    job = _submit(server, [PY, "-c", code])
    _schedule(server)
    api = AgentApi(server.url, server.tokens["agent-bj"])
    first = Agent(api, LocalExecutor(tmp_path / "first", kill_grace_s=0.2), "Beijing")
    try:
        assert any(key.job_id == job for key in first.step().launched)
        assert wait_for(lambda: launches.exists(), 30)
        first.step()  # reports it running
        # its state directory is lost: a new executor knows nothing of the run
        second = Agent(api, LocalExecutor(tmp_path / "second"), "Beijing")
        result = second.step()
        assert all(key.job_id != job for key in result.launched)
        shown = _job(server, job)
        assert shown["state"] == "failed"
        assert shown["placements"][-1]["run_detail"] == LOST_RECORD
        first.step()  # the first executor's run is now stopped by the heartbeat's order
        assert wait_for(lambda: first.executor.states()[0].phase != "running", 30)
        assert launches.read_text() == "x"
    finally:
        for state in first.executor.states():
            first.executor.stop(state.key, "test over")
        api.close()


PREEMPTING = """kind: priority
domains:
  medical: {weight: 3.0}
  general: {weight: 1.0}
preemption: {enabled: true, min_gap: 1.0, min_run_minutes: 0}
"""


def _apply_policy(server, text: str) -> None:
    from gpupool.scheduler import policies_store
    from gpupool.scheduler.database import unit_of_work

    with unit_of_work(server.db) as session:
        policies_store.apply_policy_text(session, "root", text, "policy.yaml", "agents test")


def _run_started(server, job_id: int, placements: int = 1) -> dict | None:
    view = _job(server, job_id)
    runs = view["placements"]
    return view if len(runs) == placements and runs[-1]["run_started_at"] else None


@SQLITE_SERVER
def test_a_preempted_run_is_stopped_by_the_agent_then_requeued_and_started_again(server, tmp_path):
    """A priority policy with preemption ends a run on the agent's site; the agent's
    next heartbeat stops its process group, the run is reported stopped with the
    preemption's reason, the job waits requeued and starts again when GPUs free."""
    launches = tmp_path / "launches"

    def sleeper(tag: str) -> list[str]:
        code = f"open({str(launches)!r}, 'a').write({tag!r}); import time; time.sleep(60)"
        return [PY, "-c", code]

    _apply_policy(server, PREEMPTING)
    low: list[int] = []
    agent = _agent(server, tmp_path / "state", "--poll", "0.2")
    try:
        low += [_submit(server, sleeper(tag), gpus=8) for tag in "ab"]  # both A100 nodes
        assert set(low) <= {s["job"] for s in _schedule(server)["started"]}
        for job in low:
            assert wait_for(lambda job=job: _run_started(server, job), 60), "never started"
        urgent = _submit(server, [PY, "-c", "pass"], gpus=8, user="hana")  # medical: 3 > 1
        result = _schedule(server)
        (victim,) = result["preempted"]
        assert victim in low and urgent in {s["job"] for s in result["started"]}

        stopped = wait_for(
            lambda: _job(server, victim)["placements"][0]["exit_code"] is not None, 30
        )
        assert stopped, "the preempted run's end was never reported"
        view = _job(server, victim)
        first = view["placements"][0]
        assert first["exit_code"] == 128 + signal.SIGTERM
        assert first["run_detail"].startswith(f"stopped: preempted by job {urgent}")
        assert view["state"] == "pending" and "preempted" in view["wait_reason"]
        assert _state_of(server, urgent, "completed")["placements"][-1]["exit_code"] == 0

        # the urgent job is done: the requeued job starts again, a new run launched once
        assert victim in {s["job"] for s in _schedule(server)["started"]}
        restarted = wait_for(lambda: _run_started(server, victim, placements=2), 60)
        assert restarted, "the requeued job never started again"
        assert restarted["state"] == "running"
        tags = launches.read_text()
        assert sorted(tags) == ["a", "a", "b"] or sorted(tags) == ["a", "b", "b"]
    finally:
        for job in low:
            if _job(server, job)["state"] in ("pending", "running"):
                _cancel(server, job)
        _apply_policy(server, "kind: fifo\n")
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=10)


@SQLITE_SERVER
def test_a_payload_with_a_lone_surrogate_is_refused_naming_the_field(server):
    body = {"org": "lab", "gpus": 1, "hours": 1, "payload": {"argv": ["echo", "\ud800"]}}
    raw = json.dumps(body).encode("ascii")  # JSON's escape: what any client may send
    with server.client("bob", **{"Content-Type": "application/json"}) as client:
        response = client.post("/api/v1/jobs", content=raw)
    assert response.status_code == 422
    assert response.json()["detail"] == "COMMAND: must be valid Unicode text"


# --- the same agent with the Slurm executor (real one-node Slurm, CI) -------------------

SLURM_MAPPING = "partitions:\n  p-a100: gpu\ngres:\n  A100: gpu:fake\n"


def _fresh_ids(server) -> None:
    """Move the job and placement ids past any the test Slurm saw within the hour: it
    never submits a job name (gpupool-JOB-RUN) it has seen before, by design."""
    import random

    from sqlalchemy import text

    from gpupool.scheduler.database import unit_of_work

    base = random.randint(10**6, 10**9)
    with unit_of_work(server.db) as session:
        org = session.execute(text("SELECT id FROM orgs WHERE name = 'lab'")).scalar()
        pool = session.execute(text("SELECT id FROM pools WHERE name = 'p-a100'")).scalar()
        session.execute(
            text(
                "INSERT INTO jobs (id, name, org_id, gpus, hours, gpu_types, priority, state, "
                "submitted_at, ended_at, submitted_by, submit_key) VALUES (:id, 'ids', :org, 1, "
                "1, '[]', 0, 'cancelled', '2026-01-01', '2026-01-01', 'test', :key)"
            ),
            {"id": base, "org": org, "key": f"ids-{base}"},
        )
        session.execute(
            text(
                "INSERT INTO placements (id, job_id, pool_id, nodes, started_at, ended_at) "
                "VALUES (:id, :id, :pool, '[[0, 1]]', '2026-01-01', '2026-01-01')"
            ),
            {"id": base, "pool": pool},
        )


@pytest.fixture(scope="module")
def slurm_up():
    """As tests/agents/test_slurm_executor.py: skipped without Slurm, failed in CI."""
    from tests.agents.test_slurm_executor import _slurm_problem

    problem = _slurm_problem()
    if problem is not None:
        if os.environ.get("GPUPOOL_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm required but not running (scripts/ensure-slurm.sh): {problem}")
        pytest.skip(f"Slurm not running: {problem}")


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_up")
@SQLITE_SERVER
def test_the_agent_runs_jobs_through_slurm(server, tmp_path):
    from gpupool.agents.agent import Agent
    from gpupool.agents.client import AgentApi
    from gpupool.agents.slurm import SlurmExecutor
    from gpupool.agents.slurm_mapping import load_mapping

    _fresh_ids(server)
    (tmp_path / "slurm.yaml").write_text(SLURM_MAPPING)
    executor = SlurmExecutor(load_mapping(tmp_path / "slurm.yaml"), tmp_path / "state")
    fails = _submit(server, ["sh", "-c", "exit 3"])
    sleeps = _submit(server, ["sleep", "60"])
    _schedule(server)
    api = AgentApi(server.url, server.tokens["agent-bj"])
    agent = Agent(api, executor, "Beijing")
    try:
        launched = agent.step().launched
        assert {fails, sleeps} <= {key.job_id for key in launched}
        assert agent.step().launched == []  # known to Slurm now: nothing launched twice

        def ended() -> dict | None:
            agent.step()
            view = _job(server, fails)
            return view if view["state"] == "failed" else None

        view = wait_for(ended, 90)
        assert view, "the failing job's end never reached the server"
        assert view["placements"][-1]["exit_code"] == 3
        _cancel(server, sleeps)

        def stopped() -> bool:
            agent.step()
            return _job(server, sleeps)["placements"][-1]["exit_code"] is not None

        assert wait_for(stopped, 90), "the cancelled run's end was never reported"
        states = {s.key.job_id: s for s in executor.states()}
        assert states[sleeps].phase == "failed"
    finally:
        for state in executor.states():
            if state.phase in ("queued", "running"):
                executor.stop(state.key, "test over")
        api.close()
