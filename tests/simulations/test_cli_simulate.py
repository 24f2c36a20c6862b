"""`gpupool simulate run|compare` end to end on a tiny synthetic scenario."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from gpupool.cli.main import app

SCENARIO = """\
name: tiny
seed: 3
gpu_types:
  A100: {vendor: nvidia, memory_gb: 80, speed: 1.0, price_per_gpu_hour: 10.0}
  H100: {vendor: nvidia, memory_gb: 80, speed: 2.0, price_per_gpu_hour: 20.0}
pools:
  pa: {site: s1, gpu_type: A100, gpus: 16, gpus_per_node: 8}
  ph: {site: s2, gpu_type: H100, gpus: 8, gpus_per_node: 8}
domains:
  medical: {weight: 2.0}
  education: {weight: 1.0}
orgs:
  hospital: {domain: medical, budget: null}
  uni: {domain: education, budget: 400}
workload:
  kind: synthetic
  hours: 6
  estimate: exact
  domains:
    medical:
      rate_per_hour: 4
      gpus: {1: 60, 4: 30, 8: 10}
      runtime_hours: {exponential: {mean: 1.0}}
    education:
      rate_per_hour: 4
      gpus: {1: 80, 2: 20}
      runtime_hours: {uniform: {low: 0.2, high: 2}}
"""

FIFO = """\
kind: fifo
subsidy: {domain_rates: {medical: 0.5}}
"""

MULTIFACTOR = """\
kind: multifactor
domains:
  medical: {weight: 3.0}
subsidy: {domain_rates: {medical: 0.5}}
"""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, text in (("tiny.yaml", SCENARIO), ("fifo.yaml", FIFO), ("mf.yaml", MULTIFACTOR)):
        paths[name] = tmp_path / name
        paths[name].write_text(text)
    return paths


def invoke(*args):
    return CliRunner().invoke(app, ["simulate", *map(str, args)])


def test_run_writes_jobs_metrics_and_plots(files, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", files["tiny.yaml"], "--policy", files["fifo.yaml"], "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "tiny under fifo" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    conservation = metrics["conservation"]
    assert conservation["balanced"]
    with (out / "jobs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == conservation["replayed_jobs"] > 0
    finished = [r for r in rows if r["state"] == "finished"]
    assert len(finished) == metrics["platform"]["finished"] == conservation["finished"]
    # medical jobs are half subsidised, education jobs not at all
    for row in finished:
        share = 0.5 if row["domain"] == "medical" else 0.0
        assert float(row["subsidy"]) == pytest.approx(float(row["cost"]) * share, abs=0.011)
    for png in ("wait_cdf.png", "utilisation.png", "subsidy.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)
    shares = metrics["platform"]["gpu_hours_share_by_gpu_type"]
    assert sum(shares.values()) == pytest.approx(1.0)
    line = next(x for x in result.stdout.splitlines() if x.startswith("GPU-hours by type:"))
    assert f"A100 {shares['A100']:.1%}" in line and f"H100 {shares['H100']:.1%}" in line


def test_run_twice_with_one_seed_gives_identical_results(files, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        args = ("run", files["tiny.yaml"], "--policy", files["mf.yaml"], "--seed", 11)
        assert invoke(*args, "--out", out).exit_code == 0
    assert (outs[0] / "jobs.csv").read_text() == (outs[1] / "jobs.csv").read_text()
    assert (outs[0] / "metrics.json").read_text() == (outs[1] / "metrics.json").read_text()


def test_run_until_and_jobs_limit_the_replay(files, tmp_path):
    out = tmp_path / "out"
    args = ("run", files["tiny.yaml"], "--policy", files["fifo.yaml"], "--out", out)
    result = invoke(*args, "--jobs", 10, "--until", 1.5)
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["conservation"]["replayed_jobs"] == 10
    assert metrics["platform"]["simulated_hours"] == 1.5


def test_compare_writes_a_self_contained_report(files, tmp_path):
    out = tmp_path / "cmp"
    result = invoke(
        "compare",
        files["tiny.yaml"],
        "--policy",
        files["fifo.yaml"],
        "--policy",
        files["mf.yaml"],
        "--seeds",
        2,
        "--workers",
        2,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.stderr
    assert "4 runs: 2 schemes x 2 seeds" in result.stdout
    html = (out / "report.html").read_text()
    # wait CDF, utilisation, subsidy, burn-down, subsidised shares, GPU-type shares
    assert html.count("data:image/png;base64,") == 6
    assert "<th>fifo</th>" in html and "<th>mf</th>" in html and "medical" in html
    markdown = (out / "report.md").read_text()
    assert "| metric | fifo | mf |" in markdown and "±" in markdown
    runs = json.loads((out / "metrics.json").read_text())["runs"]
    assert sorted((r["scheme"], r["seed"]) for r in runs) == [
        ("fifo", 3),
        ("fifo", 4),
        ("mf", 3),
        ("mf", 4),
    ]
    # the same seed gives the same workload under both schemes
    by_seed = {}
    for run in runs:
        by_seed.setdefault(run["seed"], set()).add(run["metrics"]["platform"]["jobs"])
    assert all(len(counts) == 1 for counts in by_seed.values())


def test_compare_matches_single_runs(files, tmp_path):
    """A worker process rebuilds scenario and policy from files: same figures as `run`."""
    invoke("run", files["tiny.yaml"], "--policy", files["mf.yaml"], "--out", tmp_path / "r")
    single = json.loads((tmp_path / "r" / "metrics.json").read_text())
    invoke("compare", files["tiny.yaml"], "--policy", files["mf.yaml"], "--seeds", 1,
           "--out", tmp_path / "c")  # fmt: skip
    (run,) = json.loads((tmp_path / "c" / "metrics.json").read_text())["runs"]
    assert run["metrics"]["platform"] == single["platform"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--seed", "x"), "error: --seed: must be an integer, not 'x'"),
        (("--jobs", "0"), "error: --jobs: must be at least 1, not 0"),
        (("--until", "-1"), "error: --until: must be at least 0, not -1"),
    ],
)
def test_bad_numbers_are_one_line_errors(files, tmp_path, args, message):
    out = tmp_path / "out"
    result = invoke("run", files["tiny.yaml"], "--policy", files["fifo.yaml"], "--out", out, *args)
    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert not out.exists()


def test_bad_files_are_one_line_errors_and_nothing_is_written(files, tmp_path):
    out = tmp_path / "out"
    missing = invoke("run", tmp_path / "nope.yaml", "--policy", files["fifo.yaml"], "--out", out)
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: ") and "nope.yaml" in missing.stderr
    assert len(missing.stderr.splitlines()) == 1

    bad_policy = tmp_path / "bad.yaml"
    bad_policy.write_text("kind: fifo\nseed: -1\n")
    result = invoke("compare", files["tiny.yaml"], "--policy", bad_policy, "--out", out)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {bad_policy}:2 seed")
    assert len(result.stderr.splitlines()) == 1

    broken = tmp_path / "broken.yaml"
    broken.write_text(SCENARIO.replace("gpus: 16,", "gpus: lots,"))
    result = invoke("run", broken, "--policy", files["fifo.yaml"], "--out", out)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {broken}:7 pools.pa.gpus")
    assert not out.exists()


def test_a_policy_naming_what_the_scenario_lacks_is_refused_before_any_run(files, tmp_path):
    out = tmp_path / "out"
    policy = tmp_path / "names.yaml"
    policy.write_text(
        "kind: priority\ndomains:\n  medical: {guarantee: {gpus: {B200: 8}}}\n  edu: {weight: 2}\n"
    )
    lines = [
        f"error: {policy}:3 domains.medical.guarantee.gpus.B200: the platform has no GPU type "
        "'B200'; it has: A100, H100",
        f"error: {policy}:4 domains.edu: the platform has no domain 'edu'; "
        "it has: education, medical",
    ]
    for command in ("run", "compare"):
        result = invoke(command, files["tiny.yaml"], "--policy", policy, "--out", out)
        assert (result.exit_code, result.stderr.splitlines()) == (2, lines)
        assert not out.exists()
