"""gpupool.limits and the document readers that use it (issue 15, "Numbers and dates").

Each reproduction from the issue that needs no database is here, as the issue
states it: a value that used to be accepted (and then crashed a round, a
replay or the process) is refused with a located one-line error. The CLI and
database reproductions are in tests/test_cli_limits.py.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from gpupool import limits
from gpupool.model import GpupoolError, Pool, fit_gang

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# The number parser
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3", 3), (" 12 ", 12), ("-4", -4), ("2.5", 2.5), ("1e3", 1000.0), (".5", 0.5), (7, 7)],
)
def test_plain_ascii_numbers_are_read(text, expected):
    assert limits.to_number(text) == expected


@pytest.mark.parametrize(
    "text",
    ["٣", "１", "1_000", "²", "inf", "-inf", "nan", "0x10", "1e999", "9" * 41, "", "1,000", True],
)
def test_anything_else_is_no_number(text):
    assert limits.to_number(text) is None


@pytest.mark.parametrize("text", ["٣", "１", "1_000"])
def test_gpus_in_other_digits_are_refused_by_the_service(text):
    from gpupool.scheduler.service import positive_int

    with pytest.raises(GpupoolError) as caught:
        positive_int(text, "--gpus", limits.GPUS_PER_JOB)
    assert str(caught.value) == f"--gpus: must be a positive whole number, got {text!r}"


def test_a_limit_names_the_bound_and_the_value():
    with pytest.raises(GpupoolError) as caught:
        limits.read("1000000000", limits.POOL_GPUS, "--gpus")
    assert str(caught.value) == (
        "--gpus: must be between 1 and 100,000 (GPUs per pool), got '1000000000'"
    )
    assert limits.read("100000", limits.POOL_GPUS, "--gpus") == 100_000


def test_ids_stop_at_the_largest_signed_64_bit_integer():
    assert limits.ID.holds(2**63 - 1)
    assert not limits.ID.holds(2**63)


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("pumc\u200bhospital", "U+200B"),  # zero-width space
        ("evil\u202eexe.txt", "U+202E"),  # right-to-left override
        ("red\x1b[31mname", "U+001B"),  # ANSI escape
        ("two\nlines", "U+000A"),
        ("tab\there", "U+0009"),
        ("joined\u200dname", "U+200D"),
    ],
)
def test_names_with_invisible_or_control_characters_are_refused(text, code):
    with pytest.raises(GpupoolError) as caught:
        limits.check_text(text, "name")
    assert caught.value.location == "name"
    assert code in caught.value.message and "\n" not in str(caught.value)


def test_names_are_nfkc_normalised_stripped_and_bounded():
    assert limits.check_text("  ｐｕｍｃ－hospital ", "name") == "pumc-hospital"
    assert limits.check_text("x" * 64, "name") == "x" * 64
    with pytest.raises(GpupoolError, match="at most 64 characters"):
        limits.check_text("x" * 65, "name")
    with pytest.raises(GpupoolError, match="must not be empty"):
        limits.check_text("   ", "name")


def test_uniqueness_is_compared_case_folded():
    with pytest.raises(GpupoolError) as caught:
        limits.check_unique("PUMC-HOSPITAL", ["pumc-hospital"], "organisation", "name")
    assert "already exists (as 'pumc-hospital'" in caught.value.message
    limits.check_unique("pumc-clinic", ["pumc-hospital"], "organisation", "name")


# ---------------------------------------------------------------------------
# Dates, periods, durations
# ---------------------------------------------------------------------------


def test_instants_outside_1970_to_2200_are_refused():
    from gpupool.accounting.periods import parse_instant

    assert parse_instant("2199-12-31T23:59:59", "--at") > 0
    for value in ("9999-12-31T23:59:59", "0001-01-01", "1969-12-31", 1e300, -1):
        with pytest.raises(GpupoolError) as caught:
            parse_instant(value, "--at")
        assert caught.value.location == "--at"


def test_period_labels_outside_the_window_are_refused():
    from gpupool.accounting.periods import label_bounds, label_kind

    with pytest.raises(GpupoolError, match="1970-01-01 to before 2200"):
        label_bounds("9999-Q4")
    with pytest.raises(GpupoolError, match="bad period label"):
        label_kind("٢٠٢٦-Q1")
    assert label_kind("2199-Q4") == "quarter"


def test_a_programme_period_of_9999_q4_is_refused_at_its_field():
    from gpupool.accounting.declarations import parse_programmes

    with pytest.raises(GpupoolError) as caught:
        parse_programmes([{"name": "p", "period": "9999-Q4"}])
    assert caught.value.location == "<programmes> programmes[0].period"
    assert "1970-01-01 to before 2200-01-01" in caught.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("99999999999999999999h", "grace minutes"),
        ("100000%", "grace percentage"),
        ("١٠%", "must look like 10%+5m"),
    ],
)
def test_graces_are_bounded_and_ascii(text, message):
    from gpupool.scheduler.lifecycle import parse_grace

    with pytest.raises(GpupoolError) as caught:
        parse_grace(text)
    assert caught.value.location == "--grace" and message in caught.value.message


def test_whatif_windows_stay_inside_the_supported_dates():
    from gpupool.simulations.from_db import parse_since, parse_until

    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with pytest.raises(GpupoolError) as caught:
        parse_since("99999999999w", now)
    assert caught.value.location == "--since"
    with pytest.raises(GpupoolError) as caught:
        parse_until("0001-01-01", now)
    assert caught.value.location == "--until"
    assert parse_since("2w", now) == now - dt.timedelta(weeks=2)


def test_finish_times_stay_inside_the_supported_dates():
    from gpupool.scheduler.lifecycle import parse_time

    with pytest.raises(GpupoolError, match="--at: must be from 1970"):
        parse_time("0001-01-01T00:00:00")
    with pytest.raises(GpupoolError, match="--at: must be from 1970"):
        parse_time("9999-12-31T23:59:59-01:00")


# ---------------------------------------------------------------------------
# Policy documents
# ---------------------------------------------------------------------------


def _problems(text: str) -> list[tuple[str, str]]:
    from gpupool.policies.document import PolicyDocumentError, parse_policy_text

    with pytest.raises(PolicyDocumentError) as caught:
        parse_policy_text(text, source="p.yaml")
    return caught.value.problems


def test_a_subsidy_cap_of_1e30_is_refused():
    assert _problems("kind: fifo\nsubsidy: {org_cap: 1.0e+30}\n") == [
        ("p.yaml:2 subsidy.org_cap", "must be between 0 and 100,000,000,000 (money per period)")
    ]


def test_policy_numbers_are_bounded():
    text = (
        "kind: priority\n"
        f"domains: {{medical: {{weight: {'9' * 400}}}}}\n"
        "seed: 99999999999\n"
        "time_limit_s: 1.0e+9\n"
        "aging: {per_hour: .inf}\n"
        "options: {plan_depth: 1.0e+300}\n"
    )
    found = dict(_problems(text))
    assert "weight" in found["p.yaml:2 domains.medical.weight"]
    assert "seed" in found["p.yaml:3 seed"]
    assert "solver seconds" in found["p.yaml:4 time_limit_s"]
    assert "policy setting" in found["p.yaml:5 aging.per_hour"]
    assert "policy setting" in found["p.yaml:6 options.plan_depth"]


def test_a_policy_description_is_one_line_of_text():
    found = _problems('kind: fifo\ndescription: "evil\\u202eexe"\n')
    assert found[0][0] == "p.yaml:2 description" and "U+202E" in found[0][1]


# ---------------------------------------------------------------------------
# Scenario documents
# ---------------------------------------------------------------------------

SCENARIO = """\
name: tiny
gpu_types:
  A100: {price_per_gpu_hour: 10}
pools:
  p1: {site: bj, gpu_type: A100, gpus: 16, gpus_per_node: 8}
domains:
  medical: {weight: 2}
orgs:
  clinic: {domain: medical}
workload:
  kind: synthetic
  hours: 10
  domains:
    medical:
      rate_per_hour: 3
      gpus: {1: 3, 8: 1}
      runtime_hours: {lognormal: {median: 1, sigma: 0.5}}
"""


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        ("hours: 10", "hours: .inf", "12 workload.hours", "simulated hours"),
        ("sigma: 0.5", "sigma: 1000", "17 workload.domains.medical.runtime_hours", "sigma"),
        ("rate_per_hour: 3", "rate_per_hour: 1.0e+7", "15 workload.domains", "arrivals per hour"),
        ("gpus: 16,", f"gpus: {10**20},", "5 pools.p1.gpus", "GPUs per pool"),
        ("weight: 2", f"weight: {'9' * 400}", "7 domains.medical.weight", "(weight)"),
        ("{1: 3, 8: 1}", f"{{1: {'9' * 400}, 8: 1}}", "16 workload.domains.medical.gpus", "weight"),
        ("name: tiny", 'name: "tiny\\u200b"', "1 name", "U+200B"),
        ("clinic:", '"clinic\\x1b[2J":', "9 orgs.clinic", "U+001B"),
    ],
)
def test_scenario_values_beyond_the_limits_are_refused(tmp_path, old, new, where, message):
    from gpupool.simulations.scenario import load_scenario

    path = tmp_path / "s.yaml"
    assert old in SCENARIO
    path.write_text(SCENARIO.replace(old, new, 1))
    with pytest.raises(GpupoolError) as caught:
        load_scenario(path)
    line, field = where.split(" ", 1)
    assert caught.value.location.startswith(f"{path}:{line} {field}"), caught.value.location
    assert message in caught.value.message


def test_rate_times_hours_is_bounded(tmp_path):
    from gpupool.simulations.scenario import load_scenario

    path = tmp_path / "s.yaml"
    path.write_text(
        SCENARIO.replace("hours: 10", "hours: 80000").replace(
            "rate_per_hour: 3", "rate_per_hour: 9000"
        )
    )
    with pytest.raises(GpupoolError) as caught:
        load_scenario(path)
    assert caught.value.location == f"{path}:12 workload.hours"
    assert "expected synthetic jobs" in caught.value.message


def test_scenario_names_are_unique_case_folded(tmp_path):
    from gpupool.simulations.scenario import load_scenario

    path = tmp_path / "s.yaml"
    path.write_text(
        SCENARIO.replace(
            "  clinic: {domain: medical}",
            "  clinic: {domain: medical}\n  CLINIC: {domain: medical}",
        )
    )
    with pytest.raises(GpupoolError) as caught:
        load_scenario(path)
    assert caught.value.location == f"{path}:10 orgs.CLINIC"
    assert "already exists" in caught.value.message


def test_heavy_tailed_runtimes_never_exceed_the_job_hours_limit():
    from gpupool.simulations.synthetic import LogNormal, Noisy, Stream, apply_estimate, generate

    stream = Stream("d", ("o",), 50.0, (1,), (1.0,), LogNormal(median=100.0, sigma=10.0))
    jobs = generate([stream], 20.0, seed=1)
    assert jobs and max(sim.actual_hours for sim in jobs) == limits.MAX_JOB_HOURS
    estimated = apply_estimate(jobs, Noisy(sigma=10.0), seed=1)
    assert max(sim.job.hours for sim in estimated) <= limits.MAX_JOB_HOURS


# ---------------------------------------------------------------------------
# Trace files
# ---------------------------------------------------------------------------

PHILLY_HEADER = "timestamp,duration,num_gpus,gpu_time,cluster\n"


def _philly(tmp_path, row: str):
    from gpupool.model import Org
    from gpupool.simulations.traces import load_philly

    path = tmp_path / "p.csv"
    path.write_text(PHILLY_HEADER + "2017-10-02 02:49:54,102.0,1,102.0,vc\n" + row + "\n")
    org = Org("lab", "research")
    return load_philly(path, vc_map={"vc": "lab"}, default_org=None, orgs={"lab": org})


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ("2017-10-02 03:00:00,60,٣,60,vc", "num_gpus"),
        ("2017-10-02 03:00:00,1_000,1,60,vc", "duration"),
        ("1969-12-31 23:00:00,60,1,60,vc", "timestamp"),
    ],
)
def test_philly_numbers_are_ascii_and_times_inside_the_window(tmp_path, row, column):
    with pytest.raises(GpupoolError) as caught:
        _philly(tmp_path, row)
    assert caught.value.location == f"{tmp_path / 'p.csv'}:3 {column}"


def test_philly_rows_beyond_the_job_limits_are_dropped_and_counted(tmp_path):
    load = _philly(
        tmp_path, "2017-10-02 03:00:00,1e12,1,60,vc\n2017-10-02 03:00:00,60,200000,60,vc"
    )
    assert len(load.jobs) == 1
    assert load.dropped == {"longer than 8,760 hours": 1, "larger than any pool": 1}


def test_alibaba_times_and_node_sizes_are_bounded(tmp_path):
    from gpupool.model import Org
    from gpupool.simulations.traces import load_alibaba_nodes, load_alibaba_pods

    pods = tmp_path / "pods.csv"
    pods.write_text(
        "name,num_gpu,gpu_milli,gpu_spec,qos,creation_time,deletion_time,scheduled_time\n"
        "a,1,1000,,BE,1e300,20,10\n"
    )
    with pytest.raises(GpupoolError) as caught:
        load_alibaba_pods(
            pods, qos_map={"BE": "lab"}, default_org=None, orgs={"lab": Org("lab", "d")}
        )
    assert caught.value.location == f"{pods}:2 creation_time"
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,gpu,model\nn1,5000,G2\n")
    with pytest.raises(GpupoolError) as caught:
        load_alibaba_nodes(nodes)
    assert caught.value.location == f"{nodes}:2 gpu"
    assert "GPUs per node" in caught.value.message


# ---------------------------------------------------------------------------
# Gang shapes without a pass per node
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gpus", [1, 3, 7, 8, 9, 16, 17, 24, 100])
@pytest.mark.parametrize("per_node", [1, 4, 8, 16])
def test_fits_empty_agrees_with_fit_gang(gpus, per_node):
    pool = Pool("p", "s", "A100", gpus, per_node, 1.0)
    for gang in range(0, gpus + per_node + 2):
        expected = fit_gang(pool.node_sizes(), gang, per_node) is not None
        assert pool.fits_empty(gang) == expected, (gpus, per_node, gang)


def test_a_pool_of_a_billion_gpus_is_never_expanded_node_by_node():
    pool = Pool("p", "s", "A100", 10**9, 8, 1.0)
    assert (
        pool.largest_gang() == 10**9 and pool.fits_empty(10**9) and not pool.fits_empty(10**9 + 1)
    )


# ---------------------------------------------------------------------------
# Documentation
# ---------------------------------------------------------------------------


def test_reliability_docs_list_every_limit_with_its_value():
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = text[text.index("## Limits") :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    for limit in limits.LIMITS:
        row = [line for line in section.splitlines() if f"| {limit.label} |" in line]
        assert row, f"{limit.label} is not in docs/reliability.md's Limits table"
        assert limit.span() in row[0], (limit.label, limit.span())
    for limit in limits.TEXT_LIMITS:
        assert re.search(rf"\| {limit.label} \|[^|]*{limit.length} characters", section), limit


def test_nothing_an_entry_point_accepts_is_set_aside_by_a_round():
    """The round's sanity gate (scheduler/quarantine.py) must be at least as wide as
    every domain limit, or a value accepted on the way in would be failed later."""
    from gpupool.scheduler import quarantine as gate

    assert gate.EARLIEST <= limits.EARLIEST and gate.LATEST >= limits.LATEST
    assert limits.JOB_HOURS.high <= gate.MAX_JOB_HOURS
    # a job's estimated runtime on the slowest type
    slowest = limits.JOB_HOURS.high / limits.SPEED.low
    assert slowest <= gate.MAX_RUNTIME_HOURS
    assert max(limits.GPUS_PER_JOB.high, limits.POOL_GPUS.high) <= gate.MAX_GPUS
    assert limits.GPUS_PER_NODE.high <= gate.MAX_GPUS
    assert limits.POOL_NODES.high <= gate.MAX_NODES
    assert max(-limits.PRIORITY.low, limits.PRIORITY.high) <= gate.MAX_PRIORITY
    assert gate.SPEED[0] <= limits.SPEED.low and gate.SPEED[1] >= limits.SPEED.high
    assert limits.WEIGHT.high <= gate.MAX_WEIGHT
    assert max(limits.MONEY.high, limits.PRICE.high) <= gate.MAX_MONEY
    # one ledger entry: a quarter of a full pool at the highest price
    assert gate.ENTRY_HOURS * limits.POOL_GPUS.high * limits.PRICE.high < gate.MAX_MONEY
    assert limits.VOUCHER_HOURS.high <= gate.MAX_VOUCHER_HOURS
    assert limits.EXCHANGE_RATE.high <= gate.MAX_EXCHANGE_RATE
    assert max(limits.POLICY_NUMBER.high, limits.MONEY.high) <= gate.MAX_POLICY_NUMBER
    assert limits.SEED.high <= gate.MAX_SEED
    assert limits.SOLVER_SECONDS.high <= gate.MAX_TIME_LIMIT_S
