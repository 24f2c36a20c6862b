"""``kind: csv`` workloads: any job log through a column mapping (CSV or Parquet)."""

from __future__ import annotations

import datetime as dt
import zlib
from pathlib import Path

import pytest

from gpupool.simulations.scenario import ScenarioError, load_scenario

LOG = """\
ref,queued,wall_min,accel,n,dept,pi,state
a,03.02.2025 09:00,90,v100|h100,4,BIO,Moreau,ok
b,03.02.2025 09:30,30,,1,CS,Novak,ok
c,03.02.2025 10:00,60,h100,8,CS,Iyer,ok
d,03.02.2025 10:15,15,v100,2,CS,Novak,cancelled
e,03.02.2025 11:00,0,,1,TEACH,x,ok
f,03.02.2025 12:00,45,,2,TEACH,y,ok
g,03.02.2025 13:00,45,,2,TEACH,z,ok
h,10.02.2025 09:00,45,,2,BIO,Osei,ok
i,03.02.2025 14:00,,,2,BIO,Osei,ok
"""

SCENARIO = """\
gpu_types:
  A100: {price_per_gpu_hour: 10}
  H100: {price_per_gpu_hour: 20, speed: 2}
pools:
  a: {site: x, gpu_type: A100, gpus: 16, gpus_per_node: 8}
  h: {site: x, gpu_type: H100, gpus: 8, gpus_per_node: 8}
domains:
  medical:
  research:
  education:
orgs:
  clinic: {domain: medical}
  lab-1: {domain: research}
  lab-2: {domain: research}
  lab-3: {domain: research}
  course-a: {domain: education}
  course-b: {domain: education}
workload:
  kind: csv
  path: log.csv
  columns:
    submit: {column: queued, format: "%d.%m.%Y %H:%M", timezone: "+01:00"}
    duration: {column: wall_min, unit: minutes}
    gpus: n
    gpu_types: {column: accel, separator: "|"}
    domain: dept
  domain_map: {BIO: medical, CS: research, TEACH: education}
  gpu_type_map: {v100: A100, h100: H100}
  org_rules:
    medical: {fixed: clinic}
    research: {hash: pi}
    education: {round_robin: [course-b, course-a]}
  filters: [{column: state, in: [ok]}]
  window: {to: 2025-02-05}
"""


def _write(tmp_path: Path, scenario: str = SCENARIO, log: str = LOG) -> Path:
    (tmp_path / "log.csv").write_text(log)
    path = tmp_path / "s.yaml"
    path.write_text(scenario)
    return path


def _failure(path: Path) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    return caught.value


def _lab(pi: str) -> str:
    return ["lab-1", "lab-2", "lab-3"][zlib.crc32(pi.encode()) % 3]


def test_a_log_with_its_own_columns_units_and_time_formats(tmp_path):
    scenario = load_scenario(_write(tmp_path))
    rows = [
        (s.job.org, s.job.domain, s.job.gpus, s.actual_hours, s.job.submitted_at, s.job.gpu_types)
        for s in scenario.jobs
    ]
    assert rows == [
        ("clinic", "medical", 4, 1.5, 0.0, ("A100", "H100")),
        (_lab("Novak"), "research", 1, 0.5, 1800.0, ()),
        (_lab("Iyer"), "research", 8, 1.0, 3600.0, ("H100",)),
        ("course-b", "education", 2, 0.75, 3 * 3600.0, ()),  # round robin, in file order
        ("course-a", "education", 2, 0.75, 4 * 3600.0, ()),
    ]
    assert scenario.dropped == {
        "filtered out": 1,  # d: cancelled
        "zero duration": 1,  # e
        "outside the window": 1,  # h: 10 Feb
        "missing wall_min": 1,  # i
    }


def test_calendar_start_and_the_trace_times_in_their_zone(tmp_path):
    text = "start: 2025-02-03T08:00Z\n" + SCENARIO  # 09:00 at UTC+01:00
    scenario = load_scenario(_write(tmp_path, text))
    first = dt.datetime(2025, 2, 3, 8, 0, tzinfo=dt.UTC).timestamp()
    assert [s.job.submitted_at - first for s in scenario.jobs[:2]] == [0.0, 1800.0]


def test_end_column_in_epoch_seconds_and_an_org_column(tmp_path):
    log = "sub,fin,g,who\n1738573200,1738576800,1,L1\n1738573260,1738573320,2,clinic\n"
    text = SCENARIO.split("workload:")[0] + (
        "workload:\n  kind: csv\n  path: log.csv\n"
        "  columns: {submit: {column: sub, format: epoch}, end: {column: fin, format: epoch},"
        " gpus: g, org: who}\n"
        "  org_map: {L1: lab-1}\n"
    )
    scenario = load_scenario(_write(tmp_path, text, log))
    assert [(s.job.org, s.actual_hours, s.job.submitted_at) for s in scenario.jobs] == [
        ("lab-1", 1.0, 0.0),
        ("clinic", 1 / 60, 60.0),
    ]


def test_parquet_gives_the_same_jobs_as_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    csv_jobs = load_scenario(_write(tmp_path)).jobs
    lines = [line.split(",") for line in LOG.splitlines()[1:]]
    zone = dt.timezone(dt.timedelta(hours=1))
    table = pa.table(
        {
            "queued": [
                dt.datetime.strptime(r[1], "%d.%m.%Y %H:%M").replace(tzinfo=zone) for r in lines
            ],
            "wall_min": [float(r[2]) if r[2] else None for r in lines],
            "accel": [r[3] for r in lines],
            "n": [int(r[4]) for r in lines],
            "dept": [r[5] for r in lines],
            "pi": [r[6] for r in lines],
            "state": [r[7] for r in lines],
        }
    )
    pq.write_table(table, tmp_path / "log.parquet")
    path = tmp_path / "p.yaml"
    path.write_text(SCENARIO.replace("path: log.csv", "path: log.parquet"))
    parquet_jobs = load_scenario(path).jobs
    strip = [
        (s.job.org, s.job.gpus, s.actual_hours, s.job.submitted_at, s.job.gpu_types)
        for s in csv_jobs
    ]
    assert [
        (s.job.org, s.job.gpus, s.actual_hours, s.job.submitted_at, s.job.gpu_types)
        for s in parquet_jobs
    ] == strip


def test_pool_list_keeps_a_share_of_each_pools_nodes(tmp_path):
    (tmp_path / "pools.csv").write_text(
        "name,site,gpu_type,gpus,gpus_per_node,price_per_gpu_hour\n"
        "big,x,A100,64,8,\nsmall,y,H100,8,8,25\n"
    )
    text = (
        SCENARIO.replace(
            "pools:\n  a: {site: x, gpu_type: A100, gpus: 16, gpus_per_node: 8}\n"
            "  h: {site: x, gpu_type: H100, gpus: 8, gpus_per_node: 8}\n",
            "",
        )
        + "  pool_list: {path: pools.csv, scale: 0.25}\n"
    )
    scenario = load_scenario(_write(tmp_path, text))
    assert [(p.name, p.gpus, p.price_per_gpu_hour) for p in scenario.pools] == [
        ("big", 16, 10.0),  # 8 nodes x 0.25 = 2 nodes
        ("small", 8, 25.0),  # at least one node is kept
    ]


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        ("dept,pi", "department,pi", "log.csv:1", "missing column(s) dept"),
        (
            "unit: minutes",
            "unit: fortnights",
            "s.yaml:23 workload.columns.duration.unit",
            "unknown unit",
        ),
        ("v100|h100,4", "v100|tpu,4", "log.csv:2 accel", "unknown GPU type 'tpu'"),
        ("03.02.2025 09:30", "2025-02-03 09:30", "log.csv:3 queued", "not a time in format"),
        ("30,,1,CS", "30,,one,CS", "log.csv:3 n", "not a number"),
        (",CS,Novak,ok", ",MATH,Novak,ok", "log.csv:3 dept", "unknown domain 'MATH'"),
    ],
)
def test_errors_name_the_file_line_and_column(tmp_path, old, new, where, message):
    scenario, log = SCENARIO, LOG
    if old in log:
        log = log.replace(old, new, 1)
    else:
        scenario = scenario.replace(old, new, 1)
    error = _failure(_write(tmp_path, scenario, log))
    assert error.location == f"{tmp_path}/{where}"
    assert message in error.message


def test_org_rules_must_name_orgs_of_their_domain(tmp_path):
    error = _failure(_write(tmp_path, SCENARIO.replace("{fixed: clinic}", "{fixed: lab-1}")))
    assert error.location.endswith("s.yaml:30 workload.org_rules.medical.fixed")
    assert "not an org of domain 'medical'" in error.message


def test_a_bad_parquet_cell_names_its_row_and_a_missing_column_the_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    columns = {"queued": ["03.02.2025 09:00", "soon"], "wall_min": [5.0, 5.0], "n": [1, 1]}
    columns |= {"accel": ["", ""], "dept": ["CS", "CS"], "pi": ["a", "b"], "state": ["ok", "ok"]}
    pq.write_table(pa.table(columns), tmp_path / "log.parquet")
    path = tmp_path / "p.yaml"
    path.write_text(SCENARIO.replace("path: log.csv", "path: log.parquet"))
    error = _failure(path)
    assert (error.location, "not a time" in error.message) == (
        f"{tmp_path}/log.parquet:row 2 queued",
        True,
    )
    del columns["dept"]
    pq.write_table(pa.table(columns), tmp_path / "log.parquet")
    error = _failure(path)
    assert (error.location, error.message) == (
        f"{tmp_path}/log.parquet:1",
        "missing column(s) dept",
    )


def test_the_shipped_institute_example():
    examples = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
    scenario = load_scenario(examples / "institute-csv.yaml")
    assert len(scenario.jobs) == 212
    assert scenario.dropped == {"filtered out": 27, "outside the window": 1}
    assert [(p.name, p.gpus) for p in scenario.pools] == [
        ("hall-a-a100", 32),
        ("hall-a-h100", 16),
        ("hall-b-l40s", 24),
    ]
    first = dt.datetime(2025, 1, 27, 7, 56, tzinfo=dt.UTC).timestamp()
    assert scenario.start == first == scenario.jobs[0].job.submitted_at
