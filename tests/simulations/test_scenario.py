"""Scenario files: the shipped examples load, a small file parses to exact
objects, and every kind of mistake is reported at its file:line field."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gpupool.model import Domain, GpuType, Org, Pool
from gpupool.simulations.scenario import ScenarioError, load_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "traces"

BASE = """\
name: tiny
seed: 3
gpu_types:
  A100: {vendor: nvidia, memory_gb: 80, speed: 1.0, price_per_gpu_hour: 10}
  910B: {vendor: huawei, memory_gb: 64, speed: 0.5, domestic: true}
pools:
  p1: {site: bj, gpu_type: A100, gpus: 16, gpus_per_node: 8}
  p2: {site: gz, gpu_type: 910B, gpus: 8, gpus_per_node: 8, price_per_gpu_hour: 4}
domains:
  medical: {weight: 2}
  edu:
orgs:
  clinic: {domain: medical, budget: 1000}
  school: {domain: edu}
workload:
  kind: synthetic
  hours: 10
  domains:
    medical:
      rate_per_hour: 3
      gpus: {1: 3, 8: 1}
      runtime_hours: {lognormal: {median: 1, sigma: 0.5}}
    edu:
      rate_per_hour: 2
      gpus: 2
      runtime_hours: 1.5
      gpu_types: [910B]
"""

PHILLY = """\
gpu_types:
  A100: {price_per_gpu_hour: 10}
pools:
  p1: {site: bj, gpu_type: A100, gpus: 16, gpus_per_node: 8}
domains:
  research:
orgs:
  lab: {domain: research}
workload:
  kind: philly
  path: traces/p.csv
  vc_map: {"103959": lab}
  estimate: {factor: 2}
"""


def _file(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _changed(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# ---------------------------------------------------------------------------
# A small scenario, parsed exactly
# ---------------------------------------------------------------------------


def test_small_scenario_parses_to_exact_objects(tmp_path):
    scenario = load_scenario(_file(tmp_path, BASE))
    assert scenario.name == "tiny" and scenario.seed == 3
    assert scenario.gpu_types["910B"] == GpuType("910B", "huawei", 64, 0.5, True)
    assert scenario.pools == (
        Pool("p1", "bj", "A100", 16, 8, 10.0),  # price from the GPU type
        Pool("p2", "gz", "910B", 8, 8, 4.0),
    )
    assert scenario.domains == {"medical": Domain("medical", 2.0), "edu": Domain("edu", 1.0)}
    assert scenario.orgs == {
        "clinic": Org("clinic", "medical", 1000.0),
        "school": Org("school", "edu", None),
    }
    jobs = [sim.job for sim in scenario.jobs]
    assert [job.id for job in jobs] == list(range(1, len(jobs) + 1))
    assert [job.submitted_at for job in jobs] == sorted(job.submitted_at for job in jobs)
    assert all(0 <= job.submitted_at < 10 * 3600 for job in jobs)
    edu = [job for job in jobs if job.domain == "edu"]
    assert edu and {(j.org, j.gpus, j.hours, j.gpu_types) for j in edu} == {
        ("school", 2, 1.5, ("910B",))
    }
    medical = [job for job in jobs if job.domain == "medical"]
    assert {job.org for job in medical} == {"clinic"} and {j.gpus for j in medical} <= {1, 8}
    assert scenario.dropped == {} and scenario.programmes == () and scenario.vouchers == ()


def test_same_seed_same_jobs_other_seed_other_jobs(tmp_path):
    path = _file(tmp_path, BASE)
    first, again = load_scenario(path), load_scenario(path)
    assert first.jobs == again.jobs
    other = load_scenario(path, seed=4)
    assert other.seed == 4 and other.jobs != first.jobs
    assert load_scenario(path, seed=3).jobs == first.jobs  # the file's seed is 3


def test_max_jobs_keeps_the_first_arrivals(tmp_path):
    path = _file(tmp_path, BASE)
    full, first5 = load_scenario(path), load_scenario(path, max_jobs=5)
    assert first5.jobs == full.jobs[:5]


def test_jobs_larger_than_any_allowed_pool_are_dropped_and_counted(tmp_path):
    base = load_scenario(_file(tmp_path, BASE))
    edu_jobs = sum(sim.job.domain == "edu" for sim in base.jobs)
    # edu may only use the 8-GPU 910B pool; the stream's draws do not depend on the size
    big = load_scenario(_file(tmp_path, _changed("      gpus: 2\n", "      gpus: 16\n"), "b.yaml"))
    assert big.dropped == {"larger than any pool": edu_jobs}
    assert [sim.job.name for sim in big.jobs] == [
        sim.job.name for sim in base.jobs if sim.job.domain != "edu"
    ]
    assert [sim.job.id for sim in big.jobs] == list(range(1, len(big.jobs) + 1))


def test_philly_workload_relative_path_vc_map_and_factor_estimate(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "p.csv").write_text(
        "timestamp,duration,num_gpus,gpu_time,cluster\n"
        "2017-10-01 00:00:30,7200,2,14400,103959\n"
        "2017-10-01 00:00:00,1800,1,1800,other\n"
        "2017-10-01 00:01:00,3600,32,115200,103959\n"
    )
    scenario = load_scenario(_file(tmp_path, PHILLY))
    got = [
        (s.job.id, s.job.org, s.job.submitted_at, s.job.hours, s.actual_hours)
        for s in scenario.jobs
    ]
    # 'other' is unmapped and there is no default_org; 32 GPUs exceed the 16-GPU pool
    assert got == [(1, "lab", 0.0, 4.0, 2.0)]
    assert scenario.dropped == {"unmapped vc": 1, "larger than any pool": 1}
    assert scenario.name == "s"  # the file name when the scenario has no name


def test_arrival_scale_compresses_a_trace(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "p.csv").write_text(
        "timestamp,duration,num_gpus,gpu_time,cluster\n"
        "2017-10-01 00:00:00,60,1,60,103959\n"
        "2017-10-01 01:00:00,60,1,60,103959\n"
    )
    text = _changed("  estimate: {factor: 2}\n", "  arrival_scale: 0.25\n", PHILLY)
    scenario = load_scenario(_file(tmp_path, text))
    assert [sim.job.submitted_at for sim in scenario.jobs] == [0.0, 900.0]
    bad = _file(tmp_path, text.replace("0.25", "0"), "bad.yaml")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(bad)
    assert (caught.value.location, caught.value.message) == (
        f"{bad}:13 workload.arrival_scale",
        "must be > 0, got 0",
    )


def test_noisy_estimate_is_seeded_and_sigma_zero_is_exact(tmp_path):
    noisy = _changed("  hours: 10\n", "  hours: 10\n  estimate: {noisy: {sigma: 0.5}}\n")
    path = _file(tmp_path, noisy)
    first, again, other = load_scenario(path), load_scenario(path), load_scenario(path, seed=9)
    assert first.jobs == again.jobs
    assert any(sim.job.hours != sim.actual_hours for sim in first.jobs)
    assert [s.job.hours for s in first.jobs] != [s.job.hours for s in other.jobs]
    zero = load_scenario(_file(tmp_path, noisy.replace("sigma: 0.5", "sigma: 0"), "z.yaml"))
    assert all(sim.job.hours == sim.actual_hours for sim in zero.jobs)


def test_programmes_and_vouchers_are_kept_raw_with_locations(tmp_path):
    text = BASE + (
        "programmes:\n"  # line 28
        "  medical-support: {rate: 0.5, domains: [medical]}\n"
        "vouchers:\n"
        "  - org: clinic\n"
        "    hours: 100\n"
    )
    path = _file(tmp_path, text)
    scenario = load_scenario(path)
    (programme,) = scenario.programmes
    assert programme == {"rate": 0.5, "domains": ["medical"], "name": "medical-support"}
    assert programme.location == f"{path}:29 programmes.medical-support"
    assert programme.where("rate") == f"{path}:29 programmes.medical-support.rate"
    (voucher,) = scenario.vouchers
    assert voucher == {"org": "clinic", "hours": 100}
    assert voucher.where("hours") == f"{path}:32 vouchers[0].hours"


@pytest.mark.parametrize(
    ("section", "line", "path", "message"),
    [
        (
            "programmes:\n  p: {domains: [medical, law]}\n",
            29,
            "programmes.p.domains",
            "unknown domain 'law' (known: edu, medical)",
        ),
        (
            "programmes:\n  - name: p\n    orgs: clinik\n",
            30,
            "programmes[0].orgs",
            "unknown org 'clinik' (known: clinic, school)",
        ),
        (
            "programmes:\n  p: {gpu_type_rates: {H100: 0.5}}\n",
            29,
            "programmes.p.gpu_type_rates",
            "unknown GPU type 'H100' (known: 910B, A100)",
        ),
        (
            "programmes:\n  p:\n    vouchers: true\n    exchange_rates: {V100: 2}\n",
            31,
            "programmes.p.exchange_rates",
            "unknown GPU type 'V100' (known: 910B, A100)",
        ),
        (
            "vouchers:\n  - {org: nobody, programme: p, amount: 5, awarded_at: 0}\n",
            29,
            "vouchers[0].org",
            "unknown org 'nobody' (known: clinic, school)",
        ),
    ],
)
def test_programmes_and_vouchers_naming_what_the_scenario_lacks(
    tmp_path, section, line, path, message
):
    scenario = _file(tmp_path, BASE + section)
    with pytest.raises(ScenarioError) as error:
        load_scenario(scenario)
    assert (error.value.location, error.value.message) == (f"{scenario}:{line} {path}", message)


# ---------------------------------------------------------------------------
# Every kind of mistake, at its line
# ---------------------------------------------------------------------------

ERRORS = [
    # (id, old text, new text, line, field path, message)
    (
        "unknown top-level key",
        "name: tiny\n",
        "name: tiny\npolices: x\n",
        2,
        "polices",
        "unknown key 'polices' (expected one of: description, domains, gpu_types, job_classes, "
        "name, orgs, pools, programmes, seed, start, vouchers, workload)",
    ),
    (
        "unknown GPU type in a pool",
        "gpu_type: A100, gpus: 16",
        "gpu_type: V100, gpus: 16",
        7,
        "pools.p1.gpu_type",
        "unknown GPU type 'V100' (known: 910B, A100)",
    ),
    ("negative GPU count", "gpus: 16,", "gpus: -1,", 7, "pools.p1.gpus", "must be >= 1, got -1"),
    (
        "GPU count not a number",
        "gpus: 16,",
        "gpus: many,",
        7,
        "pools.p1.gpus",
        "must be an integer, got 'many'",
    ),
    (
        "missing required pool key",
        "gpus: 16, gpus_per_node: 8}",
        "gpus: 16}",
        7,
        "pools.p1.gpus_per_node",
        "missing required key 'gpus_per_node'",
    ),
    (
        "no price anywhere",
        ", price_per_gpu_hour: 4}",
        "}",
        8,
        "pools.p2",
        "no price: set price_per_gpu_hour here or on GPU type 910B",
    ),
    ("zero speed", "speed: 1.0", "speed: 0", 4, "gpu_types.A100.speed", "must be > 0, got 0"),
    (
        "domestic not a boolean",
        "domestic: true",
        "domestic: maybe",
        5,
        "gpu_types.910B.domestic",
        "must be true or false, got 'maybe'",
    ),
    (
        "duplicate domain",
        "  edu:\norgs:",
        "  medical:\norgs:",
        11,
        "domains.medical",
        "duplicate key (first at line 10, again at line 11)",
    ),
    (
        "org in an unknown domain",
        "school: {domain: edu}",
        "school: {domain: law}",
        14,
        "orgs.school.domain",
        "unknown domain 'law' (known: edu, medical)",
    ),
    (
        "negative budget",
        "budget: 1000",
        "budget: -5",
        13,
        "orgs.clinic.budget",
        "must be >= 0, got -5",
    ),
    (
        "unknown workload kind",
        "kind: synthetic",
        "kind: gavel",
        16,
        "workload.kind",
        "unknown workload kind 'gavel' (known: synthetic, philly, alibaba, csv)",
    ),
    (
        "stream for an unknown domain",
        "    edu:\n      rate_per_hour: 2",
        "    law:\n      rate_per_hour: 2",
        23,
        "workload.domains.law",
        "unknown domain 'law'",
    ),
    (
        "gang size zero",
        "gpus: {1: 3, 8: 1}",
        "gpus: {0: 3}",
        21,
        "workload.domains.medical.gpus.0",
        "a gang size must be a whole number >= 1, got '0'",
    ),
    (
        "two runtime distributions",
        "runtime_hours: {lognormal: {median: 1, sigma: 0.5}}",
        "runtime_hours: {fixed: 1, exponential: {mean: 2}}",
        22,
        "workload.domains.medical.runtime_hours",
        "give exactly one of: exponential, fixed, lognormal, uniform",
    ),
    (
        "uniform high below low",
        "runtime_hours: 1.5",
        "runtime_hours: {uniform: {low: 2, high: 1}}",
        26,
        "workload.domains.edu.runtime_hours.uniform.high",
        "must be > low (2.0), got 1.0",
    ),
    (
        "stream org of another domain",
        "      gpus: 2\n",
        "      gpus: 2\n      orgs: [clinic]\n",
        26,
        "workload.domains.edu.orgs[0]",
        "org 'clinic' belongs to domain 'medical', not 'edu'",
    ),
    (
        "unknown estimate",
        "  hours: 10\n",
        "  hours: 10\n  estimate: guess\n",
        18,
        "workload.estimate",
        "expected exact, {factor: F} or {noisy: {sigma: S}}, got 'guess'",
    ),
    (
        "rate not a number",
        "rate_per_hour: 3",
        "rate_per_hour: [3]",
        20,
        "workload.domains.medical.rate_per_hour",
        "expected a single value, got a list",
    ),
    (
        "missing workload",
        "workload:\n  kind: synthetic",
        "work:\n  kind: synthetic",
        15,
        "work",
        "unknown key 'work' (expected one of: description, domains, gpu_types, job_classes, "
        "name, orgs, pools, programmes, seed, start, vouchers, workload)",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_errors_name_file_line_and_field(tmp_path, old, new, line, field, message):
    path = _file(tmp_path, _changed(old, new))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert caught.value.location == f"{path}:{line} {field}"
    assert caught.value.message == message


def test_missing_required_top_key_points_at_the_document(tmp_path):
    text = BASE.split("workload:")[0]
    path = _file(tmp_path, text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert (caught.value.location, caught.value.message) == (
        f"{path}:1",
        "missing required key 'workload'",
    )


def test_yaml_syntax_error_has_its_line(tmp_path):
    path = _file(tmp_path, _changed("  hours: 10\n", "\thours: 10\n"))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert caught.value.location == f"{path}:17"
    assert caught.value.message.startswith("invalid YAML: found character '\\t'")


@pytest.mark.parametrize("text", ["", "# only a comment\n"], ids=["empty", "comment"])
def test_empty_scenario(tmp_path, text):
    path = _file(tmp_path, text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert (caught.value.location, caught.value.message) == (f"{path}:1", "empty scenario file")


def test_missing_scenario_file(tmp_path):
    with pytest.raises(ScenarioError) as caught:
        load_scenario(tmp_path / "nope.yaml")
    assert caught.value.location == str(tmp_path / "nope.yaml")


def test_trace_path_that_does_not_exist(tmp_path):
    path = _file(tmp_path, PHILLY)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert caught.value.location == f"{path}:11 workload.path"
    assert caught.value.message == f"no such file: {tmp_path / 'traces' / 'p.csv'}"


def test_vc_map_to_unknown_org(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "p.csv").write_text("timestamp,duration,num_gpus,gpu_time,cluster\n")
    path = _file(tmp_path, _changed('{"103959": lab}', '{"103959": lab2}', PHILLY))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert caught.value.location == f"{path}:12 workload.vc_map.103959"
    assert caught.value.message == "unknown org 'lab2' (known: lab)"


def test_malformed_trace_reports_the_trace_line(tmp_path):
    (tmp_path / "traces").mkdir()
    trace = tmp_path / "traces" / "p.csv"
    trace.write_text("timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-01 00:00:00,x,1,1,a\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(_file(tmp_path, PHILLY))
    assert caught.value.location == f"{trace}:2 duration"


# ---------------------------------------------------------------------------
# The shipped examples
# ---------------------------------------------------------------------------


def test_synthetic_example_is_a_public_platform():
    scenario = load_scenario(EXAMPLES / "synthetic.yaml")
    assert len({pool.site for pool in scenario.pools}) >= 4
    assert len(scenario.gpu_types) >= 4
    assert any(gpu.domestic for gpu in scenario.gpu_types.values())
    assert len(scenario.domains) >= 6 and len(scenario.orgs) >= 12
    assert 2_000 <= len(scenario.jobs) <= 6_000 and scenario.dropped == {}
    assert scenario.jobs[-1].job.submitted_at < 72 * 3600
    assert {sim.job.domain for sim in scenario.jobs} == set(scenario.domains)
    # estimate {factor: 1.5}
    assert all(sim.job.hours == pytest.approx(1.5 * sim.actual_hours) for sim in scenario.jobs)


def test_sample_examples_need_no_shared_data():
    philly = load_scenario(EXAMPLES / "philly-sample.yaml")
    assert len(philly.jobs) == 300 and philly.dropped == {}
    alibaba = load_scenario(EXAMPLES / "alibaba-sample.yaml")
    assert sum(pool.gpus for pool in alibaba.pools) == 44  # a contended cut of the 30 nodes
    assert len(alibaba.jobs) + sum(alibaba.dropped.values()) == 300


def test_philly_example_on_the_real_trace():
    if not (SHARED / "philly_pollux" / "philly.csv").is_file():
        pytest.skip("needs ../shared/traces")
    scenario = load_scenario(EXAMPLES / "philly.yaml")
    assert len(scenario.jobs) == 82_247 and scenario.dropped == {}
    orgs = Counter(sim.job.org for sim in scenario.jobs)
    assert orgs["ai-institute"] == 41_226  # VC 6214e9
    assert orgs["factory-vision"] == 1_934  # VC 103959, a key that looks like a number
    assert orgs["community-users"] == 8 + 4 + 3 + 3  # the four tiny VCs, by default


def test_alibaba_example_on_the_real_trace():
    if not (SHARED / "alibaba_openb_v2023").is_dir():
        pytest.skip("needs ../shared/traces")
    scenario = load_scenario(EXAMPLES / "alibaba.yaml", max_jobs=1000)
    assert sum(pool.gpus for pool in scenario.pools) == 78  # a contended cut of 6,212
    assert {pool.site for pool in scenario.pools} == {"alibaba-openb"}
    assert len(scenario.jobs) == 1000
    assert scenario.dropped == {"cpu only": 1_088, "never scheduled": 861}
    assert scenario.adjusted["censored runtime"] == 32
