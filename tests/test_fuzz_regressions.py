"""Defects the fuzz suite (tests/fuzz) found after issue 15's fixes, each as it was seen.

An unknown chart suffix (`report usage --png=[/].out`) was a matplotlib traceback; a NUL
in a batch row's key was stored on SQLite; an error raised once `simulate run` had
started came after a blank line on stderr; `serve --port=70000` listened anyway.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gpupool.cli.main import app
from tests.conftest import SQLITE_ONLY
from tests.fuzz.documents import SCENARIO_YAML, example_policy


def _cli(db: str, *args: str):
    return CliRunner().invoke(app, ["--db", db, "--as", "admin", *args])


def _one_error_line(result, start: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.startswith(start), result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), repr(result.stderr)


# --- report output paths -----------------------------------------------------


@SQLITE_ONLY  # the paths are checked before the report reads the database
@pytest.mark.parametrize("command", ["usage", "subsidies"])
@pytest.mark.parametrize("png", ["[/].out", "chart", "chart.PNGX"])
def test_report_refuses_a_chart_suffix_it_cannot_draw_and_writes_nothing(
    db, tmp_path, command, png
):
    table = tmp_path / "table.csv"
    result = _cli(db, "report", command, f"--csv={table}", f"--png={tmp_path / png}")
    _one_error_line(result, "error: --png: must end in .png")
    assert not table.exists()  # nothing half-written: the CSV waits for every check


@SQLITE_ONLY  # the paths are checked before the report reads the database
@pytest.mark.parametrize(
    ("option", "path", "problem"),
    [
        ("--csv", "{tmp}", "is a directory"),
        ("--csv", "{tmp}/no/such/dir/t.csv", "no directory"),
        ("--png", "{tmp}/no/such/dir/t.png", "no directory"),
        ("--csv", " ", "must name a file"),
        ("--csv", "{tmp}/\x1b[31m.csv", "control or format characters"),
    ],
)
def test_report_refuses_an_output_path_it_cannot_write(db, tmp_path, option, path, problem):
    result = _cli(db, "report", "usage", f"{option}={path.format(tmp=tmp_path)}")
    _one_error_line(result, f"error: {option}: ")
    assert problem in result.stderr


def test_report_still_draws_a_png(db, tmp_path):
    png = tmp_path / "usage.png"
    result = _cli(db, "report", "usage", f"--png={png}")
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:4] == b"\x89PNG"


# --- control characters in batch rows and keys ------------------------------


@pytest.mark.parametrize("bad", ["k1\x00", "k\x1b[31m", "k\u202e1", "k\x7f1", "k\x851"])
def test_batch_refuses_a_control_character_in_a_key_with_its_line(platform, tmp_path, bad):
    quoted = '"' + bad.replace('"', '""') + '"'
    batch = tmp_path / "jobs.csv"
    batch.write_text(f"org,gpus,hours,key\nlab,1,1,ok\nlab,1,1,{quoted}\n", encoding="utf-8")
    result = _cli(platform, "job", "submit-batch", str(batch))
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: jobs.csv:3 submit_key: must be printable text"), lines
    assert lines[-1] == f"error: 1 bad row(s) in {batch}; nothing submitted"
    listed = _cli(platform, "job", "list", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout)["jobs"] == []


def test_batch_yaml_and_the_cli_refuse_a_nul_in_a_key(platform, tmp_path):
    batch = tmp_path / "jobs.yaml"
    batch.write_text('- {org: lab, gpus: 1, hours: 1, key: "k1\\0"}\n', encoding="utf-8")
    result = _cli(platform, "job", "submit-batch", str(batch))
    assert result.exit_code == 2 and "jobs.yaml:1 submit_key: " in result.stderr, result.output
    single = _cli(platform, "job", "submit", "--org=lab", "--gpus=1", "--hours=1", "--key=k\x00")
    _one_error_line(single, "error: --key: must be printable text")


def test_a_plain_key_is_still_kept_as_given(platform):
    first = _cli(platform, "job", "submit", "--org=lab", "--gpus=1", "--hours=1", "--key=k 1")
    again = _cli(platform, "job", "submit", "--org=lab", "--gpus=1", "--hours=1", "--key=k 1")
    assert first.exit_code == 0 and again.exit_code == 0, (first.output, again.output)
    assert first.stdout == again.stdout  # the same job: the key matched


# --- simulate run: an error raised during the run ---------------------------


def test_simulate_run_error_during_the_run_is_one_line(tmp_path):
    """A programme field the scenario loader lets through fails once the run has started."""
    policy = tmp_path / "fifo.yaml"
    policy.write_text(example_policy("fifo.yaml"), encoding="utf-8")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO_YAML.replace(" rate: 0.5", " ratee: 0.5", 1), encoding="utf-8")
    assert "ratee:" in scenario.read_text()
    result = CliRunner().invoke(
        app,
        ["simulate", "run", "--until=2", "--jobs=1", f"--policy={policy}",
         f"--out={tmp_path / 'out'}", str(scenario)],
    )  # fmt: skip
    _one_error_line(result, "error: ")


# --- serve: hostile listening options ---------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--port", "70000"),
        ("--port", "٣"),
        ("--port", "-1"),
        ("--host", "[/]"),
        ("--host", "256.1.1.1"),
        ("--host", "127.0.0.1:8080"),
        ("--workers", "0"),
        ("--max-body", "1"),
        ("--log-level", "[/]"),
        ("--forwarded-allow-ips", "\x1b[31m*"),
    ],
)
def test_serve_refuses_a_bad_listening_option_before_binding(tmp_path, monkeypatch, option, value):
    import uvicorn

    def bind(*args, **kwargs):
        raise AssertionError(f"uvicorn.run reached with {kwargs.get('host')}:{kwargs.get('port')}")

    monkeypatch.setattr(uvicorn, "run", bind)
    plain = {"--host": "127.0.0.1", "--port": "0", "--workers": "1"}
    argv = [f"{flag}={text}" for flag, text in plain.items() if flag != option]
    result = CliRunner().invoke(
        app, ["--db", f"sqlite:///{tmp_path / 'x.db'}", "serve", *argv, f"{option}={value}"]
    )
    _one_error_line(result, f"error: {option}: ")
    assert not (tmp_path / "x.db").exists()  # refused before the database was touched


# --- login: a URL or token the HTTP client cannot use ------------------------


@pytest.mark.parametrize(
    ("url", "token", "start"),
    [
        ("http://[/]", "gpt_x", "error: URL: not a usable URL"),
        ("http://[::1", "gpt_x", "error: URL: not a usable URL"),
        ("http://127.0.0.1:99999", "gpt_x", "error: URL: not a usable URL"),
        ("http://:1", "gpt_x", "error: URL: names no host"),
        ("http://127.0.0.1:1", "gpt_a\x1b\nb", "error: --token: must be printable ASCII"),
        ("http://127.0.0.1:1", "gpt_a b", "error: --token: must be printable ASCII"),
    ],
)
def test_login_refuses_an_unusable_url_or_token_in_one_line(
    tmp_path, monkeypatch, url, token, start
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["login", url, "--token", token])
    _one_error_line(result, start)
    assert not (tmp_path / "gpupool").exists()  # nothing saved


@pytest.mark.parametrize(
    ("url", "token", "message"),
    [
        ("http://[::1", "gpt_x", "error: GPUPOOL_URL: not a usable URL"),
        ("http://127.0.0.1:99999", "gpt_x", "error: GPUPOOL_URL: not a usable URL"),
        ("ftp://127.0.0.1", "gpt_x", "error: GPUPOOL_URL: must start with http:// or https://"),
        ("http://127.0.0.1:1", "gpt\x1b[31m", "error: GPUPOOL_TOKEN: must be printable ASCII"),
    ],
)
def test_a_malformed_server_setting_is_one_line(url, token, message, monkeypatch, tmp_path):
    # Found after the fuzz suite: GPUPOOL_URL='http://[::1' made every command a traceback.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("GPUPOOL_DATABASE_URL", raising=False)
    result = CliRunner().invoke(
        app, ["job", "list"], env={"GPUPOOL_URL": url, "GPUPOOL_TOKEN": token}
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert len(result.stderr.splitlines()) == 1
