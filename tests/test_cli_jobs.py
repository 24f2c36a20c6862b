"""`gpupool job ...` and `gpupool schedule` end to end, on SQLite and PostgreSQL.

Every bad input: the exact one-line message, exit code 2, no traceback, and
nothing written (checked by listing the jobs afterwards).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpupool.cli.main import app
from tests.conftest import SQLITE_ONLY, add_users

JOB_KEYS = {
    "id",
    "name",
    "org",
    "domain",
    "gpus",
    "gpu_types",
    "hours",
    "state",
    "submitted_at",
    "pool",
    "wait_reason",
    "priority",
    "started_at",
    "ended_at",
    "end_reason",
    "submitted_by",
    "job_class",
}


@pytest.fixture
def cli(platform):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["--db", platform, "--as", "admin", *args])

    return invoke


def _jobs(cli) -> list[dict]:
    result = cli("job", "list", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["jobs"]


def test_submit_prints_the_id_and_list_shows_the_job(cli):
    first = cli("job", "submit", "--org", "lab", "--gpus", "2", "--hours", "1.5", "--name", "a")
    second = cli(
        "job", "submit", "--org", "hosp", "--gpus", "8", "--hours", "3", "--gpu-type", "H100"
    )
    assert first.exit_code == 0 and second.exit_code == 0
    ids = [int(first.stdout), int(second.stdout)]
    jobs = _jobs(cli)
    assert [j["id"] for j in jobs] == ids
    assert set(jobs[0]) == JOB_KEYS
    assert {
        k: jobs[1][k]
        for k in (
            "org",
            "domain",
            "gpus",
            "gpu_types",
            "hours",
            "state",
            "pool",
            "wait_reason",
            "submitted_by",
        )
    } == {
        "org": "hosp",
        "domain": "medical",
        "gpus": 8,
        "gpu_types": ["H100"],
        "hours": 3.0,
        "state": "pending",
        "pool": None,
        "wait_reason": None,
        "submitted_by": "admin",
    }
    only_hosp = json.loads(cli("job", "list", "--org", "hosp", "--json").stdout)["jobs"]
    assert [j["id"] for j in only_hosp] == [ids[1]]
    table = cli("job", "list")
    assert table.exit_code == 0 and "hosp" in table.stdout and "medical" in table.stdout


def test_submit_with_a_key_is_idempotent(cli):
    args = ("job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1", "--key", "k-1")
    first, again = cli(*args, "--json"), cli(*args, "--json")
    assert json.loads(first.stdout)["created"] is True
    assert json.loads(again.stdout) == {"id": json.loads(first.stdout)["id"], "created": False}
    assert len(_jobs(cli)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--org", "nobody", "--gpus", "1", "--hours", "1"],
            "error: --org: no organisation named 'nobody'",
        ),
        (
            ["--org", "lab", "--gpus", "0", "--hours", "1"],
            "error: --gpus: must be a positive whole number, got '0'",
        ),
        (
            ["--org", "lab", "--gpus", "-4", "--hours", "1"],
            "error: --gpus: must be a positive whole number, got '-4'",
        ),
        (
            ["--org", "lab", "--gpus", "2", "--hours", "two"],
            "error: --hours: must be a positive number of hours, got 'two'",
        ),
        (
            ["--org", "lab", "--gpus", "2", "--hours", "1", "--gpu-type", "V100"],
            "error: --gpu-type: no GPU type named 'V100'",
        ),
        (
            ["--org", "lab", "--gpus", "17", "--hours", "1"],
            "error: --gpus: asks for 17 GPUs but the largest gang any pool can hold is 16",
        ),
    ],
)
def test_bad_submissions(cli, args, message):
    result = cli("job", "submit", *args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message + "\n")
    assert _jobs(cli) == []


def test_batch_csv_all_or_none(cli, tmp_path):
    bad = tmp_path / "jobs.csv"
    bad.write_text("org,gpus,hours,gpu_types\nlab,2,1,A100\nnobody,1,1,\nlab,1,x,\n")
    result = cli("job", "submit-batch", str(bad))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: jobs.csv:3 org: no organisation named 'nobody'",
        "error: jobs.csv:4 hours: must be a positive number of hours, got 'x'",
        f"error: 2 bad row(s) in {bad}; nothing submitted",
    ]
    assert _jobs(cli) == []
    good = tmp_path / "good.yaml"
    good.write_text("- {org: lab, gpus: 2, hours: 1}\n- {org: hosp, gpus: 1, hours: 2, key: z}\n")
    result = cli("job", "submit-batch", str(good), "--json")
    assert result.exit_code == 0, result.stderr
    assert [r["created"] for r in json.loads(result.stdout)] == [True, True]
    assert [j["org"] for j in _jobs(cli)] == ["lab", "hosp"]


def test_show_and_cancel(cli):
    job_id = cli("job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1").stdout.strip()
    shown = json.loads(cli("job", "show", job_id, "--json").stdout)
    assert (shown["id"], shown["state"], shown["placements"]) == (int(job_id), "pending", [])
    assert cli("job", "cancel", job_id).stdout == f"cancelled job {job_id}\n"
    again = cli("job", "cancel", job_id)
    assert (again.exit_code, again.stderr) == (
        2,
        "error: state: a cancelled job cannot become cancelled\n",
    )
    missing = cli("job", "show", "999")
    assert (missing.exit_code, missing.stderr) == (2, "error: job id: no job with id 999\n")
    assert cli("job", "cancel", "abc").stderr == (
        "error: job id: must be a positive whole number, got 'abc'\n"
    )


def test_list_rejects_an_unknown_state(cli):
    result = cli("job", "list", "--state", "sleeping")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --state: unknown state 'sleeping'; one of pending,")


def test_schedule_starts_jobs_and_explains_the_rest(cli):
    for gpus in ("8", "16", "1"):
        cli("job", "submit", "--org", "lab", "--gpus", gpus, "--hours", "1")
    dry = json.loads(cli("schedule", "--dry-run", "--json").stdout)
    assert dry["round"] is None and [s["job"] for s in dry["started"]] == [1]
    assert {j["state"] for j in _jobs(cli)} == {"pending"}
    real = json.loads(cli("schedule", "--json").stdout)
    assert real["policy"] == "FIFO (default)"
    assert [(s["job"], s["pool"], s["nodes"], s["cost"]) for s in real["started"]] == [
        (1, "p-a100", [[0, 8]], 80.0)
    ]
    # the default FIFO takes the pool of most value per effective GPU-hour; the round
    # says so, as job show does
    shown = json.loads(cli("job", "show", "1", "--json").stdout)["accounting"]["pool_reason"]
    assert real["started"][0]["why"] == shown
    assert shown.startswith("most effective GPU-hours per unit of price for lab")
    assert real["waiting"] == [
        {"job": 2, "org": "lab", "gpus": 16, "reason": "no capacity of an allowed GPU type"},
        {"job": 3, "org": "lab", "gpus": 1, "reason": "lower priority"},
    ]
    pending = json.loads(cli("job", "list", "--state", "pending", "--json").stdout)["jobs"]
    assert [j["wait_reason"] for j in pending] == [
        "no capacity of an allowed GPU type",
        "lower priority",
    ]
    human = cli("schedule")
    assert human.exit_code == 0 and "waiting because" in human.stdout


def test_unreachable_database_is_one_line():
    result = CliRunner().invoke(
        app, ["--db", "postgresql://u:secret@127.0.0.1:1/none", "job", "list"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: --db: cannot connect to database postgresql+psycopg://u:***@127.0.0.1:1/none: "
    )
    assert len(result.stderr.splitlines()) == 1 and "secret" not in result.stderr


def _entry_point() -> str:
    return str(Path(sys.executable).with_name("gpupool"))


@SQLITE_ONLY  # the console script and its environment; the same commands on both: below
def test_real_entry_point_submits_and_fails_cleanly(platform):
    add_users(platform, ("dora", "submitter", "lab"))  # GPUPOOL_USER acts as dora, a submitter
    env = {**os.environ, "GPUPOOL_DATABASE_URL": platform, "GPUPOOL_USER": "dora"}
    ok = subprocess.run(
        [_entry_point(), "job", "submit", "--org", "lab", "--gpus", "2", "--hours", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (ok.returncode, ok.stderr) == (0, "") and ok.stdout.strip().isdigit()
    bad = subprocess.run(
        [_entry_point(), "job", "submit", "--org", "lab", "--gpus", "2", "--hours", "soon"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == "error: --hours: must be a positive number of hours, got 'soon'\n"
    listed = subprocess.run(
        [_entry_point(), "job", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert [j["submitted_by"] for j in json.loads(listed.stdout)["jobs"]] == ["dora"]


def test_cli_import_loads_no_heavy_modules():
    code = (
        "import sys, gpupool.cli.main; "
        "print(sorted(m for m in ('ortools', 'simpy', 'matplotlib', 'numpy', 'alembic') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_job_submit_path_loads_no_heavy_modules(platform):
    """The Typer app's path (CliRunner) loads no solver or plotting library, and the
    console script's (gpupool.cli.main.main: the fast path) not even Typer, pydantic,
    rich or an HTTP client (the remote path: tests/test_cli_client.py)."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from gpupool.cli.main import app\n"
        f"r = CliRunner().invoke(app, ['--db', {platform!r}, 'job', 'submit', '--org', 'lab',"
        " '--gpus', '1', '--hours', '1'])\n"
        "assert r.exit_code == 0, r.stderr\n"
        "print(sorted(m for m in ('ortools', 'simpy', 'matplotlib', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    script = (
        "import sys\n"
        "from gpupool.cli.main import main\n"
        f"sys.argv = ['gpupool', '--db', {platform!r}, 'job', 'submit', '--org', 'lab',"
        " '--gpus', '1', '--hours', '1', '--json']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = ('ortools', 'simpy', 'matplotlib', 'numpy', 'alembic', 'typer', 'click',"
        " 'pydantic', 'rich', 'httpx')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["created"] is True
    assert out.stderr.strip() == "[]"


# `gpupool job submit` through the console script's entry function (gpupool.cli.main.main)
# takes gpupool/cli/fast.py's parser; through the Typer app, Typer's. Both must answer
# every command line alike. main() runs in this process (what a separate interpreter
# adds, the console script itself, test_real_entry_point_submits_and_fails_cleanly runs).
FAST_PATH_LINES = [
    ["--org", "lab", "--gpus", "2", "--hours", "1", "--name", "a"],
    ["--org", "lab", "--gpus", "2", "--hours", "1", "--key", "k1", "--json"],
    ["--org", "lab", "--gpus", "2", "--hours", "1", "--key", "k1", "--json"],  # a retry
    ["--org", "nowhere", "--gpus", "2", "--hours", "1"],
    ["--org", "lab", "--gpus", "٣", "--hours", "1"],
    ["--org", "lab", "--gpus", "2", "--hours", "1", "--priority", "5"],
    ["--org", "lab", "--gpus", "2"],  # missing --hours: Typer's usage error either way
    ["--org", "lab", "--gpus", "2", "--hours", "1", "--gpu-type", "H100", "--gpu-type", "A100"],
]


def test_the_fast_submit_path_answers_as_the_typer_app_does(platform, request):
    from gpupool.scheduler.database import unit_of_work
    from tests.conftest import build_small_platform

    answers = []
    for via_console_script in (True, False):
        url = platform if via_console_script else request.getfixturevalue("db_url_factory")()
        if not via_console_script:  # a second platform built the same way
            _same_start(url, request)
            with unit_of_work(url) as session:
                build_small_platform(session)
        add_users(url, ("dora", "submitter", "lab"))
        run = _run_console_script if via_console_script else _run_typer_app
        answers.append(
            [run(url, ["--as", "dora", "job", "submit", *line]) for line in FAST_PATH_LINES]
        )
    assert answers[0] == answers[1]
    assert [code for code, _, _ in answers[0]] == [0, 0, 0, 2, 2, 2, 2, 0]


def _same_start(url: str, request) -> None:
    """``url`` migrated and with the admin ``admin``, as the ``db`` fixture makes one."""
    import shutil

    from tests.conftest import ADMIN, migrate_by_script

    if url.startswith("sqlite:///"):
        shutil.copyfile(request.getfixturevalue("sqlite_template"), url[len("sqlite:///") :])
    else:
        migrate_by_script(url, request.getfixturevalue("postgres_migration_sql"))
    add_users(url, (ADMIN, "admin"))


def _run_console_script(url: str, args: list[str]) -> tuple[int, str, str]:
    """What the console script does (gpupool.cli.main.main), in this process."""
    import contextlib
    import io
    from unittest import mock

    from gpupool.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with (
        mock.patch.object(sys, "argv", ["gpupool", "--db", url, *args]),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), _first_line(err.getvalue())


def _run_typer_app(url: str, args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--db", url, *args])
    return result.exit_code, result.stdout, _first_line(result.stderr)


def _first_line(stderr: str) -> str:
    """Typer's usage box differs in width between a terminal and a runner: compare its gist."""
    lines = [line.strip(" │╭╮╰╯─") for line in stderr.splitlines()]
    return next((line for line in lines if "error" in line.lower()), "")
