"""Trace loaders: the real files (skipped without ../shared), the shipped
samples, hand-made small files with exact results, and broken files."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from gpupool.model import Org, Pool
from gpupool.simulations.scenario import resolve_path
from gpupool.simulations.traces import (
    ScenarioError,
    load_alibaba_nodes,
    load_alibaba_pods,
    load_philly,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "traces"
PHILLY = SHARED / "philly_pollux" / "philly.csv"
PODS = SHARED / "alibaba_openb_v2023" / "openb_pod_list_gpuspec33.csv"
PODS_DEFAULT = SHARED / "alibaba_openb_v2023" / "openb_pod_list_default.csv"
NODES = SHARED / "alibaba_openb_v2023" / "openb_node_list_gpu_node.csv"
ORGS = {"lab": Org("lab", "research"), "clinic": Org("clinic", "medical")}
PHILLY_HEADER = "timestamp,duration,num_gpus,gpu_time,cluster\n"
POD_HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
)


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} is absent (needs ../shared/traces)")
    return path


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _philly(path: Path, **kwargs):
    options = {"vc_map": {}, "default_org": "lab", "orgs": ORGS} | kwargs
    return load_philly(path, **options)


def _pods(path: Path, **kwargs):
    options = {"qos_map": {}, "default_org": "lab", "orgs": ORGS} | kwargs
    return load_alibaba_pods(path, **options)


def _sorted_ids_and_times(jobs) -> None:
    assert [sim.job.id for sim in jobs] == list(range(1, len(jobs) + 1))
    times = [sim.job.submitted_at for sim in jobs]
    assert times == sorted(times)
    assert times[0] == 0.0


# ---------------------------------------------------------------------------
# Real traces
# ---------------------------------------------------------------------------


def test_full_philly_trace_counts_and_order():
    load = _philly(_need(PHILLY), vc_map={"6214e9": "clinic"})
    assert load.rows == 82_247
    assert len(load.jobs) == 82_247 and load.dropped == {}
    _sorted_ids_and_times(load.jobs)
    gangs = Counter(sim.job.gpus for sim in load.jobs)
    assert gangs[1] == 76_627 and gangs[128] == 3 and gangs[64] == 6
    assert sum(sim.job.org == "clinic" for sim in load.jobs) == 41_226
    # 2017-09-04 10:30:41 to 2017-12-22 08:02:11
    assert load.jobs[-1].job.submitted_at == 109 * 86400 + (8 * 3600 + 2 * 60 + 11) - (
        10 * 3600 + 30 * 60 + 41
    )
    assert all(sim.job.hours == sim.actual_hours for sim in load.jobs)


def test_full_philly_pool_limit():
    pools = [Pool("big", "s", "A100", 64, 8, 1.0)]
    load = _philly(_need(PHILLY), pools=pools)
    assert load.dropped == {"larger than any pool": 3}  # the three 128-GPU jobs
    assert max(sim.job.gpus for sim in load.jobs) == 64


def test_full_philly_pollux_minimum_duration():
    load = _philly(_need(PHILLY), min_duration_s=60)
    # rows with duration < 60 s; the file's trailing blank line is skipped, not counted
    assert load.dropped == {"shorter than min_duration_s": 7_654}
    assert min(sim.actual_hours for sim in load.jobs) >= 60 / 3600


def test_full_alibaba_nodes_group_into_pools():
    pools = load_alibaba_nodes(_need(NODES), site="hz", prices={"T4": 3.0})
    by_model = Counter()
    for pool in pools:
        by_model[pool.gpu_type] += pool.gpus
    assert sum(by_model.values()) == 6_212
    assert by_model == {
        "G2": 4392,
        "T4": 842,
        "G3": 312,
        "P100": 265,
        "V100M32": 204,
        "V100M16": 195,
        "A10": 2,
    }
    shapes = {pool.name: (pool.gpus, pool.gpus_per_node) for pool in pools}
    assert shapes["G2"] == (4392, 8)
    assert shapes["T4-2gpu"] == (774, 2) and shapes["T4-4gpu"] == (68, 4)
    assert sum(pool.nodes for pool in pools) == 1_213
    assert {pool.price_per_gpu_hour for pool in pools if pool.gpu_type == "T4"} == {3.0}


@pytest.mark.parametrize("path", [PODS, PODS_DEFAULT], ids=["gpuspec33", "default"])
def test_full_alibaba_pods_counts(path):
    pools = load_alibaba_nodes(_need(NODES))
    load = _pods(_need(path), qos_map={"BE": "clinic"}, pools=pools)
    assert load.rows == 8_152
    assert load.dropped == {"cpu only": 1_088, "never scheduled": 861}
    assert len(load.jobs) == 8_152 - 1_088 - 861
    assert load.adjusted == {"fractional gpu": 2_573, "censored runtime": 32}
    _sorted_ids_and_times(load.jobs)
    # README's gang counts (1: 6,989, 2: 16, 4: 15, 8: 44) less the never-scheduled pods
    assert Counter(sim.job.gpus for sim in load.jobs) == {1: 6129, 2: 15, 4: 15, 8: 44}
    assert all(sim.actual_hours > 0 for sim in load.jobs)


def test_full_alibaba_gpu_spec_becomes_allowed_types():
    load = _pods(_need(PODS))
    by_name = {sim.job.name: sim.job for sim in load.jobs}
    assert by_name["openb-pod-0009"].gpu_types == ("V100M16", "V100M32")
    assert by_name["openb-pod-0012"].gpu_types == ("T4",)
    assert by_name["openb-pod-0000"].gpu_types == ()
    # created 6,588,193, scheduled 6,595,531, deleted 10,959,245
    assert by_name["openb-pod-0012"].hours == pytest.approx((10_959_245 - 6_595_531) / 3600)


# ---------------------------------------------------------------------------
# Small hand-made files: exact results
# ---------------------------------------------------------------------------


def test_philly_sorts_by_time_then_line_and_maps_vcs(tmp_path):
    path = _write(
        tmp_path,
        "p.csv",
        PHILLY_HEADER
        + "2017-10-01 00:10:00,3600.0,2,7200.0,aaa\n"  # line 2
        + "2017-10-01 00:00:00,60.0,1,60.0,bbb\n"  # line 3: earliest
        + "2017-10-01 00:10:00,1800.0,4,7200.0,ccc\n"  # line 4: ties line 2
        + "2017-10-01 01:00:00,0.0,1,0.0,aaa\n"  # line 5: zero duration
        + "2017-10-01 02:00:00,10.0,,10.0,aaa\n",  # line 6: missing num_gpus
    )
    load = _philly(path, vc_map={"aaa": "clinic"}, default_org="lab", gpu_types=("A100",))
    jobs = [sim.job for sim in load.jobs]
    assert [(j.id, j.name, j.submitted_at, j.gpus, j.org, j.domain) for j in jobs] == [
        (1, "philly-bbb-L3", 0.0, 1, "lab", "research"),
        (2, "philly-aaa-L2", 600.0, 2, "clinic", "medical"),
        (3, "philly-ccc-L4", 600.0, 4, "lab", "research"),
    ]
    assert [sim.actual_hours for sim in load.jobs] == [60 / 3600, 1.0, 0.5]
    assert all(j.gpu_types == ("A100",) for j in jobs)
    assert load.rows == 5
    assert load.dropped == {"zero duration": 1, "missing num_gpus": 1}


def test_philly_unmapped_vcs_dropped_without_default(tmp_path):
    path = _write(
        tmp_path,
        "p.csv",
        PHILLY_HEADER + "2017-10-01 00:00:00,60,1,60,aaa\n2017-10-01 00:00:05,60,1,60,zzz\n",
    )
    load = _philly(path, vc_map={"aaa": "clinic"}, default_org=None)
    assert [sim.job.org for sim in load.jobs] == ["clinic"]
    assert load.dropped == {"unmapped vc": 1}


def test_alibaba_pod_rules(tmp_path):
    rows = [
        "p0,1,1,0,0,,LS,Running,100,200,100",  # cpu only
        "p1,1,1,1,460,T4|G2,LS,Running,50,3650,50",  # fractional, arrives first
        "p2,1,1,8,1000,,BE,Pending,60,900,",  # never scheduled
        "p3,1,1,2,1000,X9,LS,Running,70,100,80",  # only an unknown type
        "p4,1,1,4,1000,,BE,Running,90,12902960,95",  # censored at snapshot end
        "p5,1,1,1,1000,,Guaranteed,Succeeded,95,95,95",  # zero runtime
        "p6,1,1,16,1000,,LS,Running,99,199,99",  # larger than any pool
    ]
    path = _write(tmp_path, "pods.csv", POD_HEADER + "\n".join(rows) + "\n")
    pools = [Pool("t4", "s", "T4", 8, 4, 1.0), Pool("g2", "s", "G2", 8, 8, 1.0)]
    load = _pods(path, qos_map={"BE": "clinic"}, known_gpu_types=("T4", "G2"), pools=pools)
    jobs = [sim.job for sim in load.jobs]
    assert [(j.id, j.name, j.submitted_at, j.gpus, j.org, j.gpu_types) for j in jobs] == [
        (1, "p1", 0.0, 1, "lab", ("G2", "T4")),
        (2, "p4", 40.0, 4, "clinic", ()),
    ]
    assert [sim.actual_hours for sim in load.jobs] == [1.0, (12_902_960 - 95) / 3600]
    assert load.dropped == {
        "cpu only": 1,
        "never scheduled": 1,
        "unknown gpu type": 1,
        "zero duration": 1,
        "larger than any pool": 1,
    }
    assert load.adjusted == {"fractional gpu": 1, "censored runtime": 1}


def test_shipped_samples_are_what_the_script_makes(tmp_path, monkeypatch):
    script = Path(__file__).resolve().parents[2] / "scripts" / "make_samples.py"
    spec = importlib.util.spec_from_file_location("make_samples", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "OUT", tmp_path)
    module.main()
    for name in ("philly_sample.csv", "openb_pod_sample.csv", "openb_node_sample.csv"):
        shipped = resolve_path(f"package:samples/{name}", Path("."))
        assert (tmp_path / name).read_bytes() == shipped.read_bytes(), name


def test_shipped_samples_load():
    philly = _philly(resolve_path("package:samples/philly_sample.csv", Path(".")))
    assert philly.rows == 300 and len(philly.jobs) == 300
    _sorted_ids_and_times(philly.jobs)
    pools = load_alibaba_nodes(resolve_path("package:samples/openb_node_sample.csv", Path(".")))
    assert {pool.name for pool in pools} >= {"G2", "T4-2gpu", "T4-4gpu", "A10"}
    pods = _pods(resolve_path("package:samples/openb_pod_sample.csv", Path(".")), pools=pools)
    assert pods.rows == 300
    assert pods.dropped["cpu only"] > 0 and pods.dropped["never scheduled"] > 0
    assert pods.adjusted["fractional gpu"] > 0 and pods.adjusted["censored runtime"] > 0
    assert len(pods.jobs) + sum(pods.dropped.values()) == 300


# ---------------------------------------------------------------------------
# Broken files: ScenarioError at file:line column
# ---------------------------------------------------------------------------


def _error(call) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        call()
    return caught.value


def test_philly_missing_column(tmp_path):
    path = _write(tmp_path, "p.csv", "timestamp,duration,gpu_time,cluster\nx,1,1,a\n")
    error = _error(lambda: _philly(path))
    assert error.location == f"{path}:1"
    assert error.message == "missing column(s) num_gpus in the header"


def test_philly_non_numeric_duration_names_its_line(tmp_path):
    good = "2017-10-01 00:00:00,60,1,60,a\n"
    path = _write(tmp_path, "p.csv", PHILLY_HEADER + good * 3 + "2017-10-01 00:00:00,abc,1,60,a\n")
    error = _error(lambda: _philly(path))
    assert error.location == f"{path}:5 duration"
    assert error.message == "not a number: 'abc'"


def test_philly_bad_timestamp(tmp_path):
    path = _write(tmp_path, "p.csv", PHILLY_HEADER + "2017-13-45 99:00:00,60,1,60,a\n")
    error = _error(lambda: _philly(path))
    assert error.location == f"{path}:2 timestamp"
    assert "not a timestamp" in error.message


def test_philly_fractional_gpu_count(tmp_path):
    path = _write(tmp_path, "p.csv", PHILLY_HEADER + "2017-10-01 00:00:00,60,1.5,60,a\n")
    assert _error(lambda: _philly(path)).location == f"{path}:2 num_gpus"


@pytest.mark.parametrize("text", ["", "\n", "  \n"], ids=["empty", "newline", "blank"])
def test_empty_file(tmp_path, text):
    path = _write(tmp_path, "p.csv", text)
    error = _error(lambda: _philly(path))
    assert error.location == f"{path}:1"
    assert error.message.startswith("empty file")


def test_wrong_field_count(tmp_path):
    path = _write(tmp_path, "p.csv", PHILLY_HEADER + "2017-10-01 00:00:00,60,1\n")
    error = _error(lambda: _philly(path))
    assert (error.location, error.message) == (f"{path}:2", "expected 5 fields, found 3")


def test_missing_file(tmp_path):
    path = tmp_path / "absent.csv"
    assert _error(lambda: _philly(path)).location == str(path)


def test_pod_bad_number_and_node_bad_gpu(tmp_path):
    pods = _write(tmp_path, "pods.csv", POD_HEADER + "p1,1,1,1,1000,,LS,Running,5x,9,5\n")
    assert _error(lambda: _pods(pods)).location == f"{pods}:2 creation_time"
    nodes = _write(
        tmp_path, "nodes.csv", "sn,cpu_milli,memory_mib,gpu,model\nn1,1,1,8,G2\nn2,1,1,-2,G2\n"
    )
    error = _error(lambda: load_alibaba_nodes(nodes))
    assert (error.location, error.message) == (
        f"{nodes}:3 gpu",
        "expected a whole number >= 0, got '-2'",
    )


def test_unknown_org_in_map():
    error = _error(lambda: _philly(Path("unused.csv"), vc_map={"a": "nobody"}))
    assert (error.location, error.message) == ("vc_map.a", "unknown org 'nobody'")
