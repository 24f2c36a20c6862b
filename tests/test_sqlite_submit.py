"""The local `job submit` on SQLite without SQLAlchemy (gpupool.scheduler.sqlite_submit)
writes what the SQLAlchemy path writes and refuses what it refuses, word for word."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from gpupool.model import GpupoolError
from gpupool.scheduler import service, sqlite_submit
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.permissions import OWNER
from gpupool.scheduler.submission import JobRequest
from tests.conftest import SQLITE_ONLY, build_small_platform
from tests.test_cli_jobs import _run_console_script, _run_typer_app, _same_start

pytestmark = SQLITE_ONLY

GOOD = [
    JobRequest(org="lab", gpus=2, hours=1.5, name="train"),
    JobRequest(org=" lab ", gpus="8", hours="0.25", gpu_types=["H100", "A100", "H100"]),
    JobRequest(org="hosp", gpus=1, hours=1, priority="7", submit_key="k-1"),
    JobRequest(org="hosp", gpus=1, hours=1, priority=7, submit_key="k-1"),  # the retry
]
BAD = [
    JobRequest(org="nowhere", gpus=1, hours=1),
    JobRequest(org="lab", gpus=0, hours=1),
    JobRequest(org="lab", gpus=1, hours="soon"),
    JobRequest(org="lab", gpus=1, hours=1, gpu_types=["Z9"]),
    JobRequest(org="lab", gpus=9, hours=1, gpu_types=["H100"]),  # larger than any H100 pool
    JobRequest(org="lab", gpus=1, hours=1, priority="high"),
    JobRequest(org="lab", gpus=1, hours=1, name="two\nlines"),
    JobRequest(org="hosp", gpus=2, hours=1, submit_key="k-1"),  # the key, other content
]


def _file(url: str) -> str:
    return url[len("sqlite:///") :]


def _rows(url: str) -> list[dict]:
    connection = sqlite3.connect(_file(url))
    connection.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in connection.execute("SELECT * FROM jobs ORDER BY id")]
    finally:
        connection.close()


def _via_sqlalchemy(url: str, request: JobRequest):
    with unit_of_work(url) as session:
        return service.submit_job(session, OWNER, request)


def _outcomes(submit, url: str) -> list:
    outcomes = []
    for request in GOOD + BAD:
        try:
            outcomes.append(submit(url, request))
        except GpupoolError as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
    return outcomes


def _comparable(row: dict) -> dict:
    """A row without what differs by nature (the moment; a generated key)."""
    generated = len(row["submit_key"]) == 32 and row["submit_key"] != "k-1"
    return {
        k: v
        for k, v in row.items()
        if k != "submitted_at" and not (generated and k == "submit_key")
    }


@pytest.fixture
def twin_platforms(platform, db_url_factory, request):
    """Two SQLite platforms built alike."""
    other = db_url_factory()
    _same_start(other, request)
    with unit_of_work(other) as session:
        build_small_platform(session)
    return platform, other


def test_both_paths_write_the_same_rows_and_refuse_alike(twin_platforms):
    fast_url, orm_url = twin_platforms
    fast = _outcomes(lambda url, r: sqlite_submit.submit_as_owner(_file(url), r), fast_url)
    orm = _outcomes(_via_sqlalchemy, orm_url)
    assert fast == orm
    assert [o[1] for o in fast[: len(GOOD)]] == [True, True, True, False]
    assert fast[len(GOOD) + 1] == "GpupoolError: --gpus: must be a positive whole number, got 0"
    fast_rows, orm_rows = _rows(fast_url), _rows(orm_url)
    assert [_comparable(r) for r in fast_rows] == [_comparable(r) for r in orm_rows]
    assert len(fast_rows) == 3
    # stored alike, so the SQLAlchemy side reads what the fast path wrote
    assert {len(r["submitted_at"]) for r in fast_rows + orm_rows} == {26}
    with unit_of_work(fast_url) as session:
        page = service.job_view(session.get(service.JobRow, fast_rows[1]["id"]))
    assert (page["gpus"], page["gpu_types"], page["state"]) == (8, ["H100", "A100"], "pending")


def test_anything_but_a_current_local_file_goes_the_usual_way(platform, tmp_path):
    assert sqlite_submit.sqlite_file("postgresql://db/x") is None
    assert sqlite_submit.sqlite_file("sqlite://") is None  # in memory
    assert sqlite_submit.sqlite_file(f"sqlite:///{tmp_path / 'missing.db'}") is None
    assert sqlite_submit.sqlite_file(f"{platform}?mode=ro") is None
    assert sqlite_submit.sqlite_file(platform) == _file(platform)
    stale = tmp_path / "stale.db"
    connection = sqlite3.connect(stale)
    connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
    connection.execute("INSERT INTO alembic_version VALUES ('0001')")
    connection.commit()
    connection.close()
    assert sqlite_submit.submit_as_owner(str(stale), GOOD[0]) is None


OWNER_LINES = [
    ["--org", "lab", "--gpus", "2", "--hours", "1", "--name", "a"],
    ["--org", "lab", "--gpus", "2", "--hours", "1", "--key", "k1", "--json"],
    ["--org", "lab", "--gpus", "2", "--hours", "1", "--key", "k1", "--json"],  # a retry
    ["--org", "lab", "--gpus", "3", "--hours", "1", "--key", "k1"],  # other content
    ["--org", "nowhere", "--gpus", "2", "--hours", "1"],
    ["--org", "lab", "--gpus", "2", "--hours", "1", "--priority", "5"],
    ["--org", "lab", "--gpus", "2", "--hours", "1", "--gpu-type", "H100", "--gpu-type", "Z9"],
]


def test_the_owners_console_script_answers_as_the_typer_app_does(twin_platforms):
    fast_url, orm_url = twin_platforms
    fast = [_run_console_script(fast_url, ["job", "submit", *line]) for line in OWNER_LINES]
    typer = [_run_typer_app(orm_url, ["job", "submit", *line]) for line in OWNER_LINES]
    assert fast == typer
    assert [code for code, _, _ in fast] == [0, 0, 0, 2, 2, 0, 2]
    assert _rows(fast_url)[-1]["priority"] == 5


def test_the_console_script_submits_without_sqlalchemy(platform):
    script = (
        "import sys\n"
        "from gpupool.cli.main import main\n"
        f"sys.argv = ['gpupool', '--db', {platform!r}, 'job', 'submit', '--org', 'lab',"
        " '--gpus', '1', '--hours', '1']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('sqlalchemy' in sys.modules, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "False"
    assert int(out.stdout) == _rows(platform)[-1]["id"]
