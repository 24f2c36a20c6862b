"""Job payloads: what a job runs, given on the command line, in batch files and checked.

SQLite only: the checks run before any write, and the payload is one JSON column
(tests/test_migrations.py compares the migrated schema with the ORM's on both).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gpupool.cli.main import app
from tests.conftest import SQLITE_ONLY

pytestmark = SQLITE_ONLY


@pytest.fixture
def cli(platform):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["--db", platform, "--as", "admin", *args])

    return invoke


SUBMIT = ("job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1")


def _show(cli, job_id: str) -> dict:
    result = cli("job", "show", job_id, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_a_command_after_double_dash_is_stored_and_shown(cli):
    result = cli(
        *SUBMIT, "--env", "LR=3e-4", "--env", "X=a=b", "--workdir", "/tmp/w",
        "--stdout", "/tmp/w/out.txt", "--", "python", "-c", "print('hi there')",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    job_id = result.stdout.strip()
    payload = _show(cli, job_id)["payload"]
    assert payload["argv"] == ["python", "-c", "print('hi there')"]
    assert payload["env"] == {"LR": "3e-4", "X": "a=b"}
    assert (payload["workdir"], payload["stdout"], payload["stderr"]) == (
        "/tmp/w",
        "/tmp/w/out.txt",
        None,
    )
    text = cli("job", "show", job_id).stdout
    assert "command: python -c 'print('\"'\"'hi there'\"'\"')'" in text
    assert "env: LR=3e-4" in text


def test_a_script_file_is_stored_as_its_text(cli, tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho start\nexit 3\n")
    result = cli(*SUBMIT, "--script", str(script))
    assert result.exit_code == 0, result.stderr
    assert _show(cli, result.stdout.strip())["payload"]["script"] == script.read_text()


def test_a_job_without_payload_shows_none(cli):
    job_id = cli(*SUBMIT).stdout.strip()
    assert _show(cli, job_id)["payload"] is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--env", "1X=2", "--", "true"), "--env: '1X' is not a variable name"),
        (("--env", "NOEQUALS", "--", "true"), "--env: must look like NAME=value, got 'NOEQUALS'"),
        (("--env", "CUDA_VISIBLE_DEVICES=3", "--", "true"), "--env: CUDA_VISIBLE_DEVICES is set"),
        (("--workdir", "/tmp"), "COMMAND: a payload needs a command or a script"),
        (("--", "a\0b"), "COMMAND: must not hold a NUL byte"),
        (("--env", "A=x\0y", "--", "true"), "--env A: must not hold a NUL byte"),
        (("--stdout", "a\nb", "--", "true"), "--stdout: must be printable text on one line"),
        (("--image", "x" * 600, "--", "true"), "--image: must be at most 512 characters"),
        (("--", "x" * 300_000), "payload: must be between 0 and 262,144 (bytes"),
    ],
)
def test_bad_payloads_are_refused_naming_the_field(cli, extra, message):
    result = cli(*SUBMIT, *extra)
    assert result.exit_code == 2
    assert message in result.stderr
    assert json.loads(cli("job", "list", "--json").stdout)["jobs"] == []


def test_a_command_and_a_script_are_not_both_taken(cli, tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("true\n")
    result = cli(*SUBMIT, "--script", str(script), "--", "true")
    assert result.exit_code == 2
    assert "--script: give a command or a script, not both" in result.stderr


def test_batch_files_carry_payloads_with_located_errors(cli, tmp_path):
    good = tmp_path / "jobs.yaml"
    good.write_text(
        "jobs:\n"
        "  - {org: lab, gpus: 1, hours: 1, command: [python, -c, 'exit(3)'], env: {PORT: 8080}}\n"
        "  - org: lab\n    gpus: 1\n    hours: 1\n    script: |\n      echo one\n      echo two\n"
    )
    result = cli("job", "submit-batch", str(good), "--json")
    assert result.exit_code == 0, result.stderr
    first, second = (str(r["id"]) for r in json.loads(result.stdout))
    assert _show(cli, first)["payload"]["argv"] == ["python", "-c", "exit(3)"]
    assert _show(cli, first)["payload"]["env"] == {"PORT": "8080"}
    assert _show(cli, second)["payload"]["script"] == "echo one\necho two\n"

    csv = tmp_path / "jobs.csv"
    csv.write_text(
        "org,gpus,hours,command,env\n"
        "lab,1,1,python -c 'print(1)',A=1;B=2\n"
        "lab,1,1,'unterminated,\n"
        "lab,1,1,true,B\n"
    )
    result = cli("job", "submit-batch", str(csv))
    assert result.exit_code == 2
    assert "jobs.csv:3 command: cannot be split into arguments" in result.stderr
    assert "jobs.csv:4 env: must look like NAME=value, got 'B'" in result.stderr
    assert len(json.loads(cli("job", "list", "--json").stdout)["jobs"]) == 2


def test_a_resubmission_with_another_payload_is_a_conflict(cli):
    assert cli(*SUBMIT, "--key", "k1", "--", "echo", "a").exit_code == 0
    assert cli(*SUBMIT, "--key", "k1", "--", "echo", "a").exit_code == 0
    result = cli(*SUBMIT, "--key", "k1", "--", "echo", "b")
    assert result.exit_code == 2
    assert "already used by job" in result.stderr
