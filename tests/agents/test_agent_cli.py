"""`gpupool agent run`'s refusals: one line naming the option, exit code 2, nothing started."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gpupool.cli.main import app

NO_SERVER = {"GPUPOOL_URL": None, "GPUPOOL_TOKEN": None, "GPUPOOL_DATABASE_URL": None}


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--executor", "docker"], {}, "--executor: must be one of local, slurm, got 'docker'"),
        (["--executor", "slurm"], {}, "--mapping: the slurm executor needs --mapping"),
        (["--mapping", "m.yaml"], {}, "--mapping: is for slurm only"),
        (["--poll", "-1"], {}, "--poll: must be between 0 and 86,400"),
        ([], {}, "GPUPOOL_URL: an agent needs a server"),
        ([], {"GPUPOOL_URL": "ftp://x"}, "GPUPOOL_URL: must start with http:// or https://"),
    ],
)
def test_bad_agent_options_are_refused_by_name(tmp_path, monkeypatch, args, env, message):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no saved login
    runner = CliRunner()
    environment = {**NO_SERVER, "GPUPOOL_TOKEN": "gpt_x", **env} if env else NO_SERVER
    state = tmp_path / "state"
    result = runner.invoke(
        app,
        ["agent", "run", "--site", "Beijing", "--state-dir", str(state), "--once", *args],
        env=environment,
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {message}")
    assert not state.exists()


def test_an_agent_refuses_the_database(tmp_path):
    result = CliRunner().invoke(
        app,
        ["--db", f"sqlite:///{tmp_path}/x.db", "agent", "run", "--site", "Beijing", "--once"],
        env=NO_SERVER,
    )
    assert result.exit_code == 2
    assert result.stderr == "error: --db: an agent talks to a server, not the database\n"
