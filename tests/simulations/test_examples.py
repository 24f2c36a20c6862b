"""The shipped example scenarios are contended, as their comments promise.

Offered load is computed from the synthetic scenario's own parameters (rate x
mean gang x mean capped runtime, in closed form) and checked against the
effective capacity and against the jobs actually drawn; the samples are
replayed under FIFO and their waits and the 80-column table are checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.simulations import synthetic as syn
from gpupool.simulations.scenario import load_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
HOURS = 72


def _runtime(spec) -> syn.Runtime:
    ((kind, args),) = spec.items()
    if kind == "fixed":
        return syn.Fixed(args)
    return {"lognormal": syn.LogNormal, "exponential": syn.Exponential, "uniform": syn.Uniform}[
        kind
    ](**args)


def _streams(document: dict) -> list[syn.Stream]:
    streams = []
    for domain, spec in document["workload"]["domains"].items():
        gangs = spec["gpus"] if isinstance(spec["gpus"], dict) else {spec["gpus"]: 1}
        streams.append(
            syn.Stream(
                domain=domain,
                orgs=("any",),
                rate_per_hour=spec["rate_per_hour"],
                gang_sizes=tuple(int(size) for size in gangs),
                gang_weights=tuple(float(weight) for weight in gangs.values()),
                runtime=_runtime(spec["runtime_hours"]),
                max_hours=spec.get("max_hours"),
            )
        )
    return streams


def test_synthetic_example_offers_about_its_capacity():
    document = yaml.safe_load((EXAMPLES / "synthetic.yaml").read_text())
    speeds = {name: spec.get("speed", 1.0) for name, spec in document["gpu_types"].items()}
    capacity = sum(pool["gpus"] * speeds[pool["gpu_type"]] for pool in document["pools"].values())
    assert capacity == pytest.approx(344.0)  # 32x2 + 96x1 + 48x0.9 + 160x0.8 + 32x0.4
    offered = sum(syn.offered_gpu_hours_per_hour(s) for s in _streams(document))
    assert 0.9 <= offered / capacity <= 1.1
    # the draws agree with the formula: 3 seeds pooled, within 10%
    drawn = [
        sum(
            sim.job.gpus * sim.actual_hours
            for sim in load_scenario(EXAMPLES / "synthetic.yaml", seed=s).jobs
        )
        for s in (7, 8, 9)
    ]
    assert np.mean(drawn) / HOURS == pytest.approx(offered, rel=0.1)


@pytest.mark.parametrize(
    ("runtime", "cap", "expected"),
    [
        (syn.Fixed(3.0), 2.0, 2.0),
        (syn.Exponential(2.0), None, 2.0),
        (syn.Exponential(1.0), 1.0, 1 - np.exp(-1)),  # int_0^1 e^-t dt
        (syn.Uniform(0.0, 4.0), 2.0, 1.5),  # half below (mean 1), half capped at 2
        (syn.Uniform(1.0, 3.0), 5.0, 2.0),
        (syn.LogNormal(2.0, 0.0), 1.5, 1.5),
        (syn.LogNormal(1.0, 1.0), None, np.exp(0.5)),
    ],
)
def test_mean_runtime_by_hand(runtime, cap, expected):
    assert syn.mean_runtime(runtime, cap) == pytest.approx(expected)


def test_capped_lognormal_mean_matches_sampling():
    runtime = syn.LogNormal(2.5, 1.3)
    draws = np.minimum(runtime.sample(np.random.default_rng(0), 400_000), 24.0)
    assert syn.mean_runtime(runtime, 24.0) == pytest.approx(draws.mean(), rel=0.01)
    assert syn.mean_runtime(runtime, 24.0) < syn.mean_runtime(runtime)


def _run(tmp_path: Path, scenario: str):
    out = tmp_path / scenario
    policy = EXAMPLES.parent / "policies" / "fifo.yaml"
    if scenario.startswith("alibaba"):  # its own domains: fifo.yaml's medical rate is refused
        policy = tmp_path / "fifo.yaml"
        policy.write_text("kind: fifo\n")
    result = CliRunner().invoke(
        app,
        ["simulate", "run", str(EXAMPLES / f"{scenario}.yaml"), "--policy", str(policy)]
        + ["--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    return result.output, (out / "metrics.json").read_text()


@pytest.mark.parametrize("scenario", ["philly-sample", "alibaba-sample"])
def test_sample_examples_are_contended_and_the_table_fits_80_columns(tmp_path, scenario):
    import json

    output, metrics_text = _run(tmp_path, scenario)
    metrics = json.loads(metrics_text)
    assert metrics["platform"]["queueing_delay_hours"]["mean"] > 1.0  # jobs really wait
    table = output.split("wrote ")[0]
    assert "…" not in table
    assert max(len(line) for line in table.splitlines()) <= 80
    for domain in metrics["domains"]:
        assert f" {domain} " in table  # full names, never truncated
