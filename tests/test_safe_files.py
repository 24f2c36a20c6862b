"""Hostile input files (issue 15): each is refused with one located line and exit 2,
nothing is written, and nothing hangs, recurses or eats memory.

Input that hung or exhausted memory before (a FIFO, /dev/zero, an alias bomb)
is run in a child process with a time limit and 1 GiB of address space, so a
regression fails the test instead of stopping the test run.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from gpupool import files, located_yaml
from gpupool.cli.main import app
from gpupool.files import FileError
from gpupool.model import GpupoolError, Org
from gpupool.policies.document import PolicyDocumentError, load_policy_file, parse_policy_text
from gpupool.scheduler.batch import load_batch
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow, ProgrammeRow
from gpupool.simulations.scenario import load_scenario
from gpupool.simulations.traces import ScenarioError, load_philly
from tests.conftest import SQLITE_ONLY

GPUPOOL = str(Path(sys.executable).parent / "gpupool")
NESTED = "[" * 5000 + "]" * 5000 + "\n"
DEEP = "nested deeper than 32 levels"
# 9 levels of 9 aliases: 390 bytes that expand to 9**9 (387 million) strings
ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]\n"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "jobs: [{org: lab, gpus: 1, hours: 1, name: *i}]\n"
)
FIFO_POLICY = "kind: fifo\n"
PHILLY_HEADER = "timestamp,duration,num_gpus,gpu_time,cluster\n"


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def _cli(*args: str):
    return CliRunner().invoke(app, [*args])


def _bounded(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, preexec_fn=limit_memory
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(argv[:4])} ... ran past {timeout} s")


def _one_error(result, expected: str) -> None:
    """Exit 2, nothing on stdout, exactly ``expected`` as the one line on stderr."""
    code = (
        result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    )
    assert (code, result.stdout, result.stderr) == (2, "", expected + "\n")


def _rows(db: str, table) -> int:
    with unit_of_work(db) as session:
        return session.scalar(select(func.count()).select_from(table))


# ---------------------------------------------------------------------------
# Deep nesting: RecursionError before, in all four YAML readers
# ---------------------------------------------------------------------------


def test_deep_nesting_is_located_in_batch_policy_scenario_and_programme_readers(tmp_path):
    path = _write(tmp_path / "deep.yaml", NESTED)
    with pytest.raises(GpupoolError) as batch:
        load_batch(path)
    with pytest.raises(PolicyDocumentError) as policy:
        load_policy_file(path)
    with pytest.raises(ScenarioError) as scenario:
        load_scenario(path)
    with pytest.raises(FileError) as programmes:
        located_yaml.load(path, files.PROGRAMMES)
    shallow = "[0]" * 32  # the path of the node that goes one level too deep
    assert str(batch.value) == f"deep.yaml:1 {shallow}: {DEEP}"
    assert policy.value.problems == [(f"{path}:1 {shallow}", DEEP)]
    assert (scenario.value.location, scenario.value.message) == (f"{path}:1 {shallow}", DEEP)
    assert (programmes.value.location, programmes.value.message) == (f"{path}:1 {shallow}", DEEP)


def test_nesting_up_to_the_limit_is_read():
    # the root mapping and 31 lists: 32 levels
    value = located_yaml.to_python(located_yaml.compose("a: " + NESTED[4969:5031], "f.yaml"))["a"]
    for _ in range(30):
        (value,) = value
    assert value == []
    with pytest.raises(FileError, match=DEEP):
        located_yaml.compose("a: " + NESTED[4968:5032], "f.yaml")


def test_cli_policy_validate_and_simulate_run_refuse_deep_nesting(tmp_path):
    deep = _write(tmp_path / "deep.yaml", "kind: fifo\noptions: " + NESTED)
    where = f"{deep}:2 options" + "[0]" * 31
    _one_error(_cli("policy", "validate", str(deep)), f"{where}: {DEEP}")
    policy = _write(tmp_path / "fifo.yaml", FIFO_POLICY)
    out = tmp_path / "out"
    result = _cli("simulate", "run", str(deep), "--policy", str(policy), "--out", str(out))
    _one_error(result, f"error: {where}: {DEEP}")
    assert not out.exists()


@SQLITE_ONLY  # a file's errors are found before the database is opened
def test_cli_submit_batch_and_programme_file_refuse_deep_nesting(platform, tmp_path):
    deep = _write(tmp_path / "deep.yaml", "jobs: " + NESTED)
    where = "jobs" + "[0]" * 31
    result = _cli("--db", platform, "--as", "admin", "job", "submit-batch", str(deep))
    _one_error(result, f"error: deep.yaml:1 {where}: {DEEP}")
    assert _rows(platform, JobRow) == 0
    programmes = _write(tmp_path / "p.yaml", "programmes: " + NESTED)
    result = _cli("--db", platform, "--as", "admin", "programme", "add", "--file", str(programmes))
    _one_error(result, f"error: {programmes}:1 programmes{'[0]' * 31}: {DEEP}")
    assert _rows(platform, ProgrammeRow) == 0


# ---------------------------------------------------------------------------
# Anchors, aliases and merge keys
# ---------------------------------------------------------------------------


def test_an_alias_bomb_in_a_batch_file_is_refused_at_its_first_anchor(tmp_path):
    assert len(ALIAS_BOMB.encode()) == 390
    bomb = _write(tmp_path / "bomb.yaml", ALIAS_BOMB)
    database = tmp_path / "never.db"
    result = _bounded([GPUPOOL, "--db", f"sqlite:///{database}", "job", "submit-batch", str(bomb)])
    anchors = "anchors (&a) are not allowed; write the value out where it is used"
    _one_error(result, f"error: bomb.yaml:1 a: {anchors}")
    assert not database.exists()  # refused before the database was opened


def test_a_merge_key_is_a_located_policy_error(tmp_path):
    path = _write(tmp_path / "p.yaml", "kind: priority\naging:\n  <<: {per_hour: 0.1}\n")
    result = _cli("policy", "validate", str(path))
    _one_error(result, f"{path}:3 aging: merge keys (<<) are not allowed; write the fields out")


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("a: 1\nb: *a\n", "f.yaml:2 b", "aliases (*a) are not allowed; write the value out"),
        ("a: !!binary aGk=\n", "f.yaml:1 a", "the tag '!!binary' is not allowed"),
        ("a: !!python/name:os.system x\n", "f.yaml:1 a", "the tag '!!python/name:os.system' is"),
        ("a: !custom x\n", "f.yaml:1 a", "the tag '!custom' is not allowed"),
        ("? [a]\n: 1\n", "f.yaml:1", "a key must be a single value, not a list or map"),
        ("x:\n  at: 2026-02-30\n", "f.yaml:2 x.at", "not a valid date or time: '2026-02-30'"),
        ("n: " + "9" * 5000 + "\n", "f.yaml:1 n", "not a valid integer: '9999999999"),
        ("a: 1\nb: \x07\n", "f.yaml:2", "invalid YAML: unacceptable character #x0007"),
    ],
)
def test_yaml_that_only_tags_aliases_or_bad_scalars_could_make_is_located(text, where, message):
    with pytest.raises(FileError) as caught:
        located_yaml.compose(text, "f.yaml")
    assert caught.value.location == where
    assert caught.value.message.startswith(message)


# ---------------------------------------------------------------------------
# Duplicate keys and columns
# ---------------------------------------------------------------------------


@SQLITE_ONLY  # a file's errors are found before the database is opened
def test_duplicate_yaml_keys_and_csv_columns_in_batch_files(platform, tmp_path):
    yaml_file = _write(tmp_path / "dup.yaml", "- org: lab\n  gpus: 1\n  hours: 1\n  gpus: 8\n")
    result = _cli("--db", platform, "--as", "admin", "job", "submit-batch", str(yaml_file))
    _one_error(
        result, "error: dup.yaml:4 [0].gpus: duplicate key (first at line 2, again at line 4)"
    )
    csv_file = _write(tmp_path / "dup.csv", "org,gpus,hours,gpus\nlab,1,1,8\n")
    result = _cli("--db", platform, "--as", "admin", "job", "submit-batch", str(csv_file))
    _one_error(result, "error: dup.csv:1 gpus: column given twice (columns 2 and 4)")
    assert _rows(platform, JobRow) == 0


def test_a_column_and_its_alias_or_a_key_as_text_and_number_are_duplicates(tmp_path):
    with pytest.raises(GpupoolError) as caught:
        load_batch(_write(tmp_path / "a.csv", "org,gpus,hours,gpu_type,GPU_TYPES\nlab,1,1,A,B\n"))
    assert str(caught.value) == "a.csv:1 gpu_types: column given twice (columns 4 and 5)"
    _, errors = load_batch(
        _write(tmp_path / "a.yaml", "- {org: lab, gpus: 1, hours: 1, gpu_type: A, gpu_types: B}\n")
    )
    assert [str(e) for e in errors] == ["a.yaml:1 gpu_types: field given twice (fields 4 and 5)"]
    with pytest.raises(FileError) as caught:
        located_yaml.compose("gpus: {1: 60, '1': 30}\n", "s.yaml")
    assert str(caught.value) == "s.yaml:1 gpus.1: duplicate key (first at line 1, again at line 1)"


@SQLITE_ONLY  # a file's errors are found before the database is opened
def test_duplicate_keys_in_a_programme_file(platform, tmp_path):
    path = _write(tmp_path / "p.yaml", "programmes:\n  - name: a\n    rate: 0.5\n    rate: 1\n")
    result = _cli("--db", platform, "--as", "admin", "programme", "add", "--file", str(path))
    message = "duplicate key (first at line 3, again at line 4)"
    _one_error(result, f"error: {path}:4 programmes[0].rate: {message}")
    assert _rows(platform, ProgrammeRow) == 0


# ---------------------------------------------------------------------------
# FIFOs, devices and size limits
# ---------------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path):
    def make(name: str) -> Path:
        path = tmp_path / name
        os.mkfifo(path)
        return path

    return make


@pytest.mark.parametrize(
    ("command", "name"),
    [
        (["job", "submit-batch"], "x.csv"),
        (["job", "submit-batch"], "zero.csv"),
        (["programme", "add", "--file"], "x.yaml"),
        (["programme", "add", "--file"], "zero.yaml"),
    ],
)
def test_cli_refuses_a_fifo_and_a_device_before_the_database(tmp_path, fifo, command, name):
    path = tmp_path / name
    if name.startswith("zero"):
        path.symlink_to("/dev/zero")
        what = "a character device"
    else:
        fifo(name)
        what = "a FIFO (named pipe)"
    database = tmp_path / "never.db"
    result = _bounded([GPUPOOL, "--db", f"sqlite:///{database}", *command, str(path)])
    _one_error(result, f"error: {path}: cannot read: {what}, not a regular file")
    assert not database.exists()


def test_policy_scenario_and_trace_readers_refuse_a_fifo_and_dev_zero(tmp_path, fifo):
    pipe = fifo("x.yaml")
    _one_error(
        _bounded([GPUPOOL, "policy", "validate", "/dev/zero"]),
        "/dev/zero: cannot read: a character device, not a regular file",
    )
    policy = _write(tmp_path / "fifo.yaml", FIFO_POLICY)
    out = tmp_path / "out"
    result = _bounded(
        [GPUPOOL, "simulate", "run", str(pipe), "--policy", str(policy), "--out", str(out)]
    )
    _one_error(result, f"error: {pipe}: cannot read: a FIFO (named pipe), not a regular file")
    assert not out.exists()
    trace = fifo("trace.csv")
    code = (
        "import sys\n"
        "from gpupool.simulations.traces import load_philly\n"
        "for path in sys.argv[1:]:\n"
        "    try: load_philly(path, vc_map={}, default_org=None, orgs={})\n"
        "    except Exception as exc: print(type(exc).__name__, exc)\n"
    )
    result = _bounded([sys.executable, "-c", code, "/dev/zero", str(trace)])
    assert result.stdout.splitlines() == [
        "ScenarioError /dev/zero: cannot read: a character device, not a regular file",
        f"ScenarioError {trace}: cannot read: a FIFO (named pipe), not a regular file",
    ]


def test_files_over_their_size_limit_are_refused_unread(tmp_path):
    big = _write(tmp_path / "big.yaml", "kind: fifo\n" + "#" * 300_000 + "\n")
    size = big.stat().st_size
    _one_error(
        _cli("policy", "validate", str(big)),
        f"{big}: file too large: {size:,} bytes; a policy document may have at most 262,144 bytes",
    )
    with pytest.raises(PolicyDocumentError) as caught:  # text from the API or the database
        parse_policy_text("kind: fifo\n" + "#" * 300_000, source="upload")
    assert caught.value.problems == [
        ("upload", "too large: 300,011 characters; a policy document may have at most 262,144")
    ]
    rows = "org,gpus,hours\n" + "lab,1,1\n" * 600_000
    with pytest.raises(FileError, match="a CSV batch file may have at most 4,194,304 bytes"):
        load_batch(_write(tmp_path / "big.csv", rows))


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(FileError) as caught:
        load_batch(tmp_path / "dir.csv")
    assert (
        str(caught.value) == f"{tmp_path / 'dir.csv'}: cannot read: a directory, not a regular file"
    )


# ---------------------------------------------------------------------------
# Encodings
# ---------------------------------------------------------------------------


def test_a_utf8_bom_is_accepted_in_csv_and_yaml(platform, tmp_path):
    path = _write(tmp_path / "bom.csv", "\ufefforg,gpus,hours\nlab,1,1\n")
    result = _cli("--db", platform, "--as", "admin", "job", "submit-batch", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert [row["created"] for row in json.loads(result.stdout)] == [True]
    policy = _write(tmp_path / "p.yaml", "\ufeffkind: fifo\n")
    assert load_policy_file(policy).kind == "fifo"
    trace = _write(
        tmp_path / "t.csv", "\ufeff" + PHILLY_HEADER + "2017-10-03 05:26:04,60,1,60,vc\n"
    )
    lab = {"lab": Org(name="lab", domain="d")}
    assert len(load_philly(trace, vc_map={}, default_org="lab", orgs=lab).jobs) == 1


def test_utf16_and_bad_bytes_are_named(tmp_path):
    path = _write(tmp_path / "u16.csv", "org,gpus,hours\nlab,1,1\n", encoding="utf-16")
    with pytest.raises(FileError) as caught:
        load_batch(path)
    assert caught.value.message == (
        "cannot read: UTF-16 text (it starts with a UTF-16 byte order mark); save it as UTF-8"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"kind: fifo\nseed: 1\ndescription: caf\xe9\n")
    with pytest.raises(PolicyDocumentError) as caught:
        load_policy_file(bad)
    assert caught.value.problems == [(f"{bad}:3", "cannot read: not UTF-8 text (byte 0xe9)")]
    trace = tmp_path / "t.csv"
    trace.write_bytes(PHILLY_HEADER.encode() + b"2017-10-03 05:26:04,60,1,60,v\xff\n")
    with pytest.raises(ScenarioError) as caught:
        load_philly(trace, vc_map={}, default_org=None, orgs={})
    assert (caught.value.location, caught.value.message) == (
        f"{trace}:2",
        "cannot read: not UTF-8 text (byte 0xff)",
    )


# ---------------------------------------------------------------------------
# Traces: time zones, long fields, long lines
# ---------------------------------------------------------------------------

LAB = {"lab": Org(name="lab", domain="d")}


def test_trace_timestamps_with_a_zone_are_converted_to_utc(tmp_path):
    trace = _write(
        tmp_path / "t.csv",
        PHILLY_HEADER
        + "2017-10-03 05:26:04+08:00,60,1,60,vc\n"  # 2017-10-02 21:26:04 UTC
        + "2017-10-02 21:26:05,60,1,60,vc\n"  # no zone: read as UTC
        + "2017-10-02T21:26:06Z,60,1,60,vc\n",
    )
    jobs = load_philly(trace, vc_map={}, default_org="lab", orgs=LAB).jobs
    assert [(sim.job.name, sim.job.submitted_at) for sim in jobs] == [
        ("philly-vc-L2", 0.0),
        ("philly-vc-L3", 1.0),
        ("philly-vc-L4", 2.0),
    ]
    bad = _write(tmp_path / "b.csv", PHILLY_HEADER + "2017-10-03 05:26:04+25:00,60,1,60,vc\n")
    with pytest.raises(ScenarioError) as caught:
        load_philly(bad, vc_map={}, default_org="lab", orgs=LAB)
    assert caught.value.location == f"{bad}:2 timestamp"


def test_a_trace_field_longer_than_pythons_default_limit_is_read(tmp_path):
    long_vc = "v" * 200_000  # Python's csv module stops at 131,072 characters
    trace = _write(tmp_path / "t.csv", PHILLY_HEADER + f"2017-10-03 05:26:04,60,1,60,{long_vc}\n")
    load = load_philly(trace, vc_map={long_vc: "lab"}, default_org=None, orgs=LAB)
    assert [sim.job.org for sim in load.jobs] == ["lab"]


def test_a_field_over_the_limit_is_a_located_error(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "FIELD_LIMIT", 1_000)
    trace = _write(
        tmp_path / "t.csv",
        PHILLY_HEADER + "2017-10-03 05:26:04,60,1,60,vc\n" + f'2017,1,1,1,"{"v" * 1_001}"\n',
    )
    with pytest.raises(ScenarioError) as caught:
        load_philly(trace, vc_map={}, default_org="lab", orgs=LAB)
    assert (caught.value.location, caught.value.message) == (
        f"{trace}:3",
        "a field is longer than 1,000 characters",
    )
    batch = _write(tmp_path / "b.csv", f"org,gpus,hours,name\nlab,1,1,{'n' * 1_001}\n")
    with pytest.raises(FileError, match="^b.csv:2: a field is longer than 1,000 characters$"):
        load_batch(batch)


def test_an_over_long_trace_line_is_a_located_error(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "LINE_LIMIT", 100)
    trace = _write(tmp_path / "t.csv", PHILLY_HEADER + "2017-10-03 05:26:04,60,1,60," + "v" * 99)
    with pytest.raises(ScenarioError) as caught:
        load_philly(trace, vc_map={}, default_org="lab", orgs=LAB)
    assert (caught.value.location, caught.value.message) == (
        f"{trace}:2",
        "line longer than 100 bytes",
    )


def test_a_scenario_trace_path_that_is_not_a_regular_file(tmp_path, fifo):
    fifo("p.csv")
    scenario = _write(
        tmp_path / "s.yaml",
        "gpu_types: {A100: {price_per_gpu_hour: 1}}\n"
        "pools: {p: {site: s, gpu_type: A100, gpus: 8, gpus_per_node: 8}}\n"
        "domains: {d: {}}\n"
        "orgs: {lab: {domain: d}}\n"
        "workload: {kind: philly, path: p.csv, default_org: lab}\n",
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario)
    assert (caught.value.location, caught.value.message) == (
        f"{scenario}:5 workload.path",
        f"not a regular file: {tmp_path / 'p.csv'}",
    )
