"""`gpupool simulate sweep`: expansion, seeded random search, the Pareto front, bad
sweep files, resuming, and the same table on local processes, on a real local Ray
cluster and from each run alone. Runs are tiny (a few jobs on a small platform)."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.simulations import sweep as sweeps
from gpupool.simulations.compare import execute

REPO = Path(__file__).resolve().parents[2]

SCENARIO = """\
name: tiny
seed: 3
gpu_types:
  A100: {vendor: nvidia, memory_gb: 80, speed: 1.0, price_per_gpu_hour: 10.0}
pools:
  pa: {site: s1, gpu_type: A100, gpus: 8, gpus_per_node: 8}
domains:
  medical: {weight: 2.0}
  education: {weight: 1.0}
orgs:
  hospital: {domain: medical, budget: null}
  uni: {domain: education, budget: 400}
workload:
  kind: synthetic
  hours: 3
  estimate: exact
  domains:
    medical: {rate_per_hour: 3, gpus: {1: 60, 4: 40}, runtime_hours: {exponential: {mean: 1.0}}}
    education:
      rate_per_hour: 3
      gpus: {2: 50, 8: 50}
      runtime_hours: {uniform: {low: 0.2, high: 2}}
"""
FIFO = "kind: fifo\nsubsidy: {domain_rates: {medical: 0.5}}\n"
MULTIFACTOR = "kind: multifactor\ndomains:\n  medical: {weight: 3.0}\n"

# 2 policies x 2 subsidy rates x 2 seeds
SWEEP = """\
name: tiny-sweep
scenarios: tiny.yaml
policies: [fifo.yaml, mf.yaml]
seeds: [3, 4]
jobs: 12
priority_domain: medical
parameters:
  policy.subsidy.domain_rates.medical: [0.3, 0.7]
"""


def write_files(directory: Path, sweep_text: str = SWEEP) -> Path:
    for name, text in (("tiny.yaml", SCENARIO), ("fifo.yaml", FIFO), ("mf.yaml", MULTIFACTOR)):
        (directory / name).write_text(text)
    (directory / "sweep.yaml").write_text(sweep_text)
    return directory / "sweep.yaml"


def invoke(*args):
    return CliRunner().invoke(app, ["simulate", "sweep", *map(str, args)])


def read_table(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The 2 x 2 x 2 sweep run once on two local processes: (sweep file, out dir)."""
    directory = tmp_path_factory.mktemp("sweep")
    path = write_files(directory)
    result = invoke(path, "--out", directory / "out", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "runs done: 8 of 8" in result.stdout  # progress, off a terminal
    return path, directory / "out"


# ---------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------


def test_grid_crosses_values_scenarios_policies_and_seeds(tmp_path):
    text = SWEEP + "  scenario.domains.medical.weight: {low: 1, high: 3, steps: 3}\n"
    spec = sweeps.load_sweep(write_files(tmp_path, text))
    points = sweeps.plan(spec)
    assert len(points) == 2 * 3 * 2 * 2  # rates x weights x policies x seeds
    combos = {(p.values, p.policy, p.seed) for p in points}
    assert len(combos) == len(points)
    assert {dict(p.values)["scenario.domains.medical.weight"] for p in points} == {1.0, 2.0, 3.0}
    assert len({p.run_id for p in points}) == len(points)
    assert [p.run_id for p in sweeps.plan(sweeps.load_sweep(tmp_path / "sweep.yaml"))] == [
        p.run_id for p in points
    ]  # stable across reads
    point = next(p for p in points if p.policy == "mf" and p.seed == 4)
    rate, weight = dict(point.values).values()
    assert point.request.policy_overrides == (("subsidy.domain_rates.medical", rate),)
    assert point.request.scenario_overrides == (("domains.medical.weight", weight),)
    assert point.request.seed == 4 and point.request.max_jobs == 12
    assert {p.config for p in points} == set(range(2 * 3 * 2))  # seeds vary inside one


def test_run_ids_follow_the_files_contents(tmp_path):
    path = write_files(tmp_path)
    before = {p.run_id for p in sweeps.plan(sweeps.load_sweep(path))}
    (tmp_path / "fifo.yaml").write_text(FIFO + "seed: 5\n")
    after = sweeps.plan(sweeps.load_sweep(path))
    changed = {p.run_id for p in after if p.policy == "fifo"}
    kept = {p.run_id for p in after if p.policy == "mf"}
    assert not changed & before and kept <= before


def test_random_search_is_seeded_and_stays_in_range(tmp_path):
    def draw(seed: int) -> list[tuple]:
        text = SWEEP.replace("[0.3, 0.7]", "{low: 0.3, high: 0.7}")
        text += "  policy.domains.medical.weight: [1, 2, 4]\n"
        text += f"search: {{random: {{samples: 6, seed: {seed}}}}}\n"
        spec = sweeps.load_sweep(write_files(tmp_path, text))
        return [p.values for p in sweeps.plan(spec) if p.policy == "fifo" and p.seed == 3]

    first = draw(11)
    assert first == draw(11)
    assert first != draw(12)
    rates = [dict(v)["policy.subsidy.domain_rates.medical"] for v in first]
    weights = [dict(v)["policy.domains.medical.weight"] for v in first]
    assert len(rates) == 6 and all(0.3 <= rate <= 0.7 for rate in rates)
    assert len(set(rates)) == 6  # drawn, not a grid
    assert all(rate == float(f"{rate:.6g}") for rate in rates)
    assert set(weights) <= {1, 2, 4}


# ---------------------------------------------------------------------------
# Pareto front
# ---------------------------------------------------------------------------


def test_pareto_front_hand_worked():
    # (p95 wait: min, subsidy: min, utilisation: max)
    points = [
        (1.0, 100, 0.80),  # 0: on the front (lowest wait)
        (2.0, 50, 0.80),  # 1: on the front (lowest subsidy)
        (2.0, 60, 0.80),  # 2: dominated by 1 (more subsidy, same rest)
        (3.0, 100, 0.95),  # 3: on the front (highest utilisation)
        (3.0, 100, 0.90),  # 4: dominated by 3
        (1.0, 100, 0.80),  # 5: equal to 0: neither beats the other, both kept
        (1.5, 120, 0.70),  # 6: dominated by 0
    ]
    assert sweeps.pareto_front(points, ["min", "min", "max"]) == [0, 1, 3, 5]
    assert sweeps.pareto_front([(1, 1)], ["min", "max"]) == [0]
    assert sweeps.pareto_front([(1, 5), (2, 6)], ["min", "max"]) == [0, 1]
    assert sweeps.pareto_front([(1, 5), (2, 6)], ["min", "min"]) == [0]


# ---------------------------------------------------------------------------
# Bad sweep files: one line naming file:line field, exit 2, nothing written
# ---------------------------------------------------------------------------

PARAMETER = "  policy.subsidy.domain_rates.medical: [0.3, 0.7]\n"  # line 8 of SWEEP
BAD = [  # (line 8 instead, where, what the error says)
    (
        "  policy.subsidy.domain_rates.medical: [0.3, 1.5]\n",
        ":8 parameters.policy.subsidy.domain_rates.medical",
        "1.5 is refused by fifo.yaml: ",
    ),
    ("  budget.medical: [1]\n", ":8 parameters.budget.medical", "policy.FIELD or scenario.FIELD"),
    ("  scenario.domains.medical.weight: {low: 1, high: 3}\n", ":8 parameters", "steps: N"),
    (
        "  scenario.domains.medical.weight: {low: 3, high: 1, steps: 2}\n",
        ":8 parameters.scenario.domains.medical.weight.high",
        "must be >= low",
    ),
    ("  scenario.pools[3].gpus: [8]\n", ":8 parameters", "pools is a mapping: name a key"),
    ("  scenario.seed.x: [1]\n", ":8 parameters", "seed is a single value"),
    ("  policy.domains.medical.weight: [2]\n", ":8 parameters", "not used by kind fifo"),
    ("  policy.subsidy.domain_rates.surgery: [0.5]\n", ":8 parameters", "no domain 'surgery'"),
    ("  scenario.seed: [-1]\n", ":8 parameters", "must be >= 0"),
    ("  policy.subsidy.domain_rates.medical: []\n", ":8 parameters", "at least one value"),
    (PARAMETER + "colour: blue\n", ":9 colour", "unknown key 'colour'"),
]


@pytest.mark.parametrize(("line", "where", "message"), BAD)
def test_bad_sweep_file_is_one_located_error(tmp_path, line, where, message):
    assert SWEEP.endswith(PARAMETER)
    path = write_files(tmp_path, SWEEP.replace(PARAMETER, line))
    result = invoke(path, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {path}{where}"), lines[0]
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        ("tiny.yaml", "nope.yaml", ":2 scenarios", "no such file"),
        (
            "priority_domain: medical",
            "priority_domain: surgery",
            ":6 priority_domain",
            "scenario 'tiny' has no domain 'surgery'",
        ),
        ("seeds: [3, 4]", "seeds: [3, 3]", ":4 seeds", "listed twice"),
        ("jobs: 12", "jobs: 0", ":5 jobs", "must be >= 1"),
    ],
)
def test_bad_top_level_fields(tmp_path, old, new, where, message):
    path = write_files(tmp_path, SWEEP.replace(old, new))
    result = invoke(path, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {path}{where}"), result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_ray_address_nothing_listens_on_is_one_error(tmp_path):
    path = write_files(tmp_path)
    address = f"127.0.0.1:{_free_port()}"
    result = invoke(path, "--out", tmp_path / "out", "--ray", address)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: --ray: cannot connect to the Ray cluster at {address}")
    assert not (tmp_path / "out").exists()
    both = invoke(path, "--out", tmp_path / "out", "--ray", address, "--workers", "2")
    assert (both.exit_code, both.stderr) == (
        2,
        "error: --workers: give --workers or --ray, not both\n",
    )


# ---------------------------------------------------------------------------
# Results: each run alone, resuming, a killed sweep
# ---------------------------------------------------------------------------


def test_sweep_table_equals_each_run_alone(local_sweep):
    path, out = local_sweep
    rows = read_table(out / "results.csv")
    points = sweeps.plan(sweeps.load_sweep(path))
    assert len(rows) == len(points) == 8
    for row, point in zip(rows, points, strict=True):
        assert row["run_id"] == point.run_id
        alone = execute(point.request)[1].metrics  # the ordinary simulate path
        expected = sweeps.flatten(
            {k: v for k, v in alone.items() if k not in ("scenario", "policy")}
        )
        for column, value in expected.items():
            assert row[column] == ("" if value is None else str(value)), column
    # the subsidy rate really reached the policy: more subsidy at 0.7 than at 0.3
    fifo = {
        (r["policy.subsidy.domain_rates.medical"], r["seed"]): r
        for r in rows
        if r["policy"] == "fifo"
    }
    assert float(fifo["0.7", "3"]["subsidy"]) > float(fifo["0.3", "3"]["subsidy"]) > 0
    report = (out / "report.html").read_text()
    assert "Pareto front" in report and "data:image/png;base64," in report
    import pyarrow.parquet as pq

    parquet = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["run_id"] for r in parquet] == [r["run_id"] for r in rows]
    assert [r["subsidy"] for r in parquet] == [float(r["subsidy"]) for r in rows]


def test_rerun_runs_nothing_and_rewrites_the_same_table(local_sweep, tmp_path):
    path, out = local_sweep
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    table = (out / "results.csv").read_text()
    result = invoke(path, "--out", out, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "8 runs, 8 already done" in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamps
    assert (out / "results.csv").read_text() == table


def test_killed_sweep_resumes_without_redoing_finished_runs(local_sweep, tmp_path):
    path, finished = local_sweep
    out = tmp_path / "out"
    runs = out / "runs"
    command = [sys.executable, "-m", "gpupool.cli.main", "simulate", "sweep", str(path)]
    command += ["--out", str(out), "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (runs.is_dir() and any(runs.glob("*.json"))):
            assert process.poll() is None, "the sweep ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    assert 1 <= len(kept) < 8
    assert not (out / "results.csv").exists()
    result = invoke(path, "--out", out, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert f"8 runs, {len(kept)} already done" in result.stdout
    assert {name: (runs / name).stat().st_mtime_ns for name in kept} == kept  # not redone
    assert len(list(runs.glob("*.json"))) == 8
    assert not list(runs.glob(".*.partial"))  # a write the kill cut short was redone
    assert (out / "results.csv").read_text() == (finished / "results.csv").read_text()


# ---------------------------------------------------------------------------
# A real local Ray cluster
# ---------------------------------------------------------------------------

RAY_START_S = 120  # a loaded 2-core machine starts a head node in 5-30 s
RAY_STOP_S = 5


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head on 127.0.0.1 with 2 CPUs (two worker processes), no dashboard, a small
    object store; stopped afterwards by signalling the processes it started (its own
    process group: `ray stop` would stop every Ray cluster of this user on the machine).
    Skipped when it cannot start, unless GPUPOOL_REQUIRE_RAY=1 (CI), where it fails."""
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        _ray_unavailable(f"no {ray}: install the dev extra (pip install -e '.[dev]')")
    temp = Path(tempfile.mkdtemp(prefix="gpray-", dir="/tmp"))  # Ray's socket paths are short
    port = _free_port()
    command = [str(ray), "start", "--head", "--block", f"--port={port}"]
    command += ["--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0"]
    command += ["--include-dashboard=false", "--object-store-memory=80000000"]
    command += ["--disable-usage-stats", f"--temp-dir={temp}"]
    log = temp / "start.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        problem = _wait_for_ray(process, log)
        if problem:
            _ray_unavailable(problem)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_group(process)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_ray(process: subprocess.Popen, log: Path) -> str | None:
    deadline = time.monotonic() + RAY_START_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "Ray runtime started" in text:
            return None
        if process.poll() is not None:
            return f"ray start exited with {process.returncode}: {text[-800:]}"
        time.sleep(0.2)
    return f"ray start did not finish within {RAY_START_S} s"


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the group (every process of this node), then SIGKILL what is left: the
    group holds only this cluster's processes, so nothing needs a graceful goodbye."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=RAY_STOP_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _ray_unavailable(problem: str) -> None:
    if os.environ.get("GPUPOOL_REQUIRE_RAY") == "1":
        pytest.fail(f"a local Ray cluster is required but could not start: {problem}")
    pytest.skip(f"no local Ray cluster: {problem}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ray_cluster_gives_the_local_table(local_sweep, ray_cluster, tmp_path):
    path, finished = local_sweep
    out = tmp_path / "out"
    result = invoke(path, "--out", out, "--ray", ray_cluster)
    assert result.exit_code == 0, result.output
    assert f"on the Ray cluster at {ray_cluster}" in result.stdout
    assert (out / "results.csv").read_text() == (finished / "results.csv").read_text()


# ---------------------------------------------------------------------------
# Setting a parameter inside a composed document (located_yaml.override)
# ---------------------------------------------------------------------------

DOCUMENT = """\
domains:
  medical: {weight: 2}
  education:
programmes:
  - name: health-edu
    rate: 0.5
  - name: vouchers
    rate: 0.3
"""


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("domains.medical.weight", 3.5, ("domains", "medical", "weight", 3.5)),
        ("domains.education.weight", 1, ("domains", "education", "weight", 1)),  # null
        ("domains.finance.weight", 0.8, ("domains", "finance", "weight", 0.8)),  # new key
        ("programmes.vouchers.rate", 0.7, ("programmes", 1, "rate", 0.7)),  # by name
        ("programmes[0].rate", 0.6, ("programmes", 0, "rate", 0.6)),  # by index
        ("programmes[0].budget", None, ("programmes", 0, "budget", None)),
    ],
)
def test_override_sets_one_field_and_keeps_the_rest(path, value, expected):
    from gpupool import located_yaml

    root = located_yaml.compose(DOCUMENT, "d.yaml")
    located_yaml.apply_overrides(root, ((path, value),), "d.yaml")
    data = located_yaml.to_python(root)
    *keys, wanted = expected
    node = data
    for key in keys:
        node = node[key]
    assert node == wanted
    untouched = located_yaml.to_python(located_yaml.compose(DOCUMENT, "d.yaml"))
    section = keys[0]  # every other entry of the section is as it was
    others = range(2) if section == "programmes" else untouched["domains"]
    for other in others:
        if other != keys[1]:
            assert data[section][other] == untouched[section][other]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("programmes.nope.rate", "no entry named 'nope'"),
        ("programmes[5].rate", "index 5 is past the end of a list of 2"),
        ("domains[0]", "domains is a mapping: name a key, not [0]"),
        ("programmes.vouchers.rate.x", "programmes.vouchers.rate is a single value"),
        ("domains..weight", "empty key"),
        ("programmes[x].rate", "bad index"),
    ],
)
def test_override_paths_that_cannot_be_followed(path, message):
    from gpupool import located_yaml
    from gpupool.files import FileError

    root = located_yaml.compose(DOCUMENT, "d.yaml")
    with pytest.raises(FileError) as caught:
        located_yaml.apply_overrides(root, ((path, 1),), "d.yaml")
    assert caught.value.location == f"d.yaml {path}"
    assert message in caught.value.message


@pytest.mark.parametrize("name", ["health-edu-rate.yaml", "startups.yaml"])
def test_shipped_sweeps_check(name):
    spec = sweeps.load_sweep(REPO / "examples" / "sweeps" / name)
    sweeps.check_sweep(spec)  # every file, and every value set in it, reads
    points = sweeps.plan(spec)
    assert len(points) == {"health-edu-rate.yaml": 9, "startups.yaml": 12}[name]


def test_too_many_runs_is_refused_before_listing_them(tmp_path):
    values = "{low: 0, high: 1, steps: 1000}"
    text = SWEEP.replace("[0.3, 0.7]", values) + f"  scenario.domains.medical.weight: {values}\n"
    result = invoke(write_files(tmp_path, text), "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert ":8 parameters: 4,000,000 runs: must be between 1 and 10,000" in result.stderr
