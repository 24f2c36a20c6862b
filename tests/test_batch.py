"""Batch file parsing: every malformed row is reported with its file and line."""

from __future__ import annotations

import pytest

from gpupool.model import GpupoolError
from gpupool.scheduler.batch import load_batch, read_batch
from gpupool.scheduler.service import BatchError


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rows_become_requests_with_line_locations(tmp_path):
    path = _write(
        tmp_path,
        "jobs.csv",
        "org,gpus,hours,gpu_types,name,key\nlab,2,1.5,A100;H100,train,k1\n\nhosp,8,3,,scan,\n",
    )
    first, second = read_batch(path)
    assert (first.org, first.gpus, first.hours, list(first.gpu_types), first.name) == (
        "lab",
        "2",
        "1.5",
        ["A100", "H100"],
        "train",
    )
    assert (first.where, first.submit_key) == ("jobs.csv:2", "k1")
    assert (second.where, list(second.gpu_types), second.submit_key) == ("jobs.csv:4", [], None)
    assert second.location("gpus") == "jobs.csv:4 gpus"


def test_csv_header_problems_point_at_line_1(tmp_path):
    with pytest.raises(GpupoolError) as info:
        read_batch(_write(tmp_path, "a.csv", "org,gpus\nlab,1\n"))
    assert str(info.value) == "a.csv:1 header: missing column(s) hours"
    with pytest.raises(GpupoolError) as info:
        read_batch(_write(tmp_path, "b.csv", "org,gpus,hours,colour\nlab,1,1,red\n"))
    assert str(info.value).startswith("b.csv:1 header: unknown column(s) colour; allowed: org,")


def test_csv_rows_with_the_wrong_field_count_are_each_reported(tmp_path):
    path = _write(tmp_path, "c.csv", "org,gpus,hours\nlab,1\nlab,1,1\nlab,1,1,9\n")
    requests, errors = load_batch(path)
    assert [r.where for r in requests] == ["c.csv:3"]
    assert [str(e) for e in errors] == [
        "c.csv:2: has 2 fields, the header has 3",
        "c.csv:4: has 4 fields, the header has 3",
    ]
    with pytest.raises(BatchError):
        read_batch(path)


def test_yaml_list_or_jobs_mapping_with_node_lines(tmp_path):
    text = (
        "# nightly work\n"
        "jobs:\n"
        "  - org: lab\n"
        "    gpus: 2\n"
        "    hours: 1\n"
        "    gpu_types: [A100, H100]\n"
        "  - {org: hosp, gpus: 8, hours: 3, gpu_type: H100, submit_key: abc}\n"
    )
    first, second = read_batch(_write(tmp_path, "j.yaml", text))
    assert (first.where, first.gpus, list(first.gpu_types)) == ("j.yaml:3", 2, ["A100", "H100"])
    assert (second.where, list(second.gpu_types), second.submit_key) == (
        "j.yaml:7",
        ["H100"],
        "abc",
    )
    (only,) = read_batch(_write(tmp_path, "k.yml", "- org: lab\n  gpus: 1\n  hours: 2\n"))
    assert only.where == "k.yml:1"


def test_yaml_errors_carry_lines(tmp_path):
    with pytest.raises(GpupoolError) as info:
        read_batch(_write(tmp_path, "bad.yaml", "jobs:\n  - org: lab\n   gpus: 1\n"))
    assert str(info.value).startswith("bad.yaml:3: invalid YAML")
    with pytest.raises(GpupoolError) as info:
        read_batch(_write(tmp_path, "m.yaml", "org: lab\n"))
    assert str(info.value) == "m.yaml:1: expected a list of jobs, or a mapping with a `jobs` list"
    requests, errors = load_batch(
        _write(tmp_path, "n.yaml", "- org: lab\n  gpus: 1\n  hours: 1\n- just text\n- {org: x}\n")
    )
    assert [str(e) for e in errors] == [
        "n.yaml:4: each job must be a mapping of fields",
        "n.yaml:5: missing column(s) gpus, hours",
    ]
    assert len(requests) == 1


def test_unreadable_or_unknown_files(tmp_path):
    with pytest.raises(GpupoolError) as info:
        read_batch(tmp_path / "missing.csv")
    assert str(info.value) == f"{tmp_path / 'missing.csv'}: cannot read: No such file or directory"
    with pytest.raises(GpupoolError, match="batch files must end in .csv, .yaml or .yml"):
        read_batch(_write(tmp_path, "jobs.txt", "org,gpus,hours\n"))
    with pytest.raises(GpupoolError) as info:
        read_batch(_write(tmp_path, "empty.csv", "org,gpus,hours\n"))
    assert str(info.value) == "empty.csv: no jobs in batch file"
