"""`gpupool policy validate`: success line, every problem on stderr one per line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpupool.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "policies"
runner = CliRunner()


def validate(path: Path):
    return runner.invoke(app, ["policy", "validate", str(path)])


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("fifo.yaml", "ok: fifo policy, 0 domains\n"),
        ("multifactor.yaml", "ok: multifactor policy, 2 domains\n"),
        ("priority.yaml", "ok: priority policy, 2 domains\n"),
        ("fair-share.yaml", "ok: fair-share policy, 2 domains\n"),
    ],
)
def test_examples_validate(name, line):
    result = validate(EXAMPLES / name)
    assert (result.exit_code, result.stdout) == (0, line), result.stderr


def test_every_error_on_its_own_line_and_exit_2(tmp_path):
    path = tmp_path / "priority.yaml"
    path.write_text(
        "kind: priority\n"
        "domains:\n"
        "  medical: {weight: -3}\n"
        "  education: {weigth: 2}\n"
        "subsidy: {org_cap: -1}\n"
    )
    result = validate(path)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:3 domains.medical.weight: must be > 0",
        f"{path}:4 domains.education.weigth: unknown field 'weigth' (did you mean 'weight'?)",
        f"{path}:5 subsidy.org_cap: must be >= 0",
    ]


def test_missing_file_and_bad_yaml(tmp_path):
    result = validate(tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert result.stderr == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: fifo\nsubsidy: {org_cap: 1\n")
    result = validate(bad)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{bad}:3: invalid YAML: ")
    assert "Traceback" not in result.output


def test_validate_touches_no_database(tmp_path, monkeypatch):
    # the default database is gpupool.db in the current directory: it must not appear
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GPUPOOL_DATABASE_URL", raising=False)
    result = validate(EXAMPLES / "fifo.yaml")
    assert result.exit_code == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_start_does_not_import_policy_documents_or_solvers():
    code = (
        "import sys; import gpupool.cli.main; "
        "heavy = ('ortools', 'simpy', 'gpupool.policies.document', 'gpupool.schemas'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
