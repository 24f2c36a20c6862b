"""Issue 15's reproductions through the CLI, on SQLite and PostgreSQL.

Each command below was accepted (and then stopped every later round, or
crashed with a traceback) or mis-read its value; each must now exit 2 with
one line naming the field, and leave the database exactly as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpupool.cli.main import app
from tests.conftest import SQLITE_ONLY

ROOT = Path(__file__).resolve().parents[1]
FIFO = str(ROOT / "examples" / "policies" / "fifo.yaml")
BIG = "9223372036854775808"  # 2**63: SQLite raised OverflowError on it


def _dump(url: str) -> dict[str, list[str]]:
    """Every row of every table, as text: what 'nothing was written' is checked against."""
    from sqlalchemy import select

    from gpupool.scheduler.database import make_engine
    from gpupool.scheduler.orm import Base

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table.name: sorted(repr(tuple(row)) for row in connection.execute(select(table)))
                for table in Base.metadata.sorted_tables
            }
    finally:
        engine.dispose()


@pytest.fixture
def cli(platform):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["--db", platform, "--as", "admin", *args])

    invoke.url = platform
    return invoke


def _refused(cli, args, location: str, message: str = "") -> str:
    before = _dump(cli.url)
    result = cli(*args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {location}: "), result.stderr
    assert message in result.stderr
    assert _dump(cli.url) == before
    return result.stderr


SUBMIT = ("job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1")


def _with(args: tuple[str, ...], option: str, value: str) -> tuple[str, ...]:
    index = args.index(option)
    return (*args[: index + 1], value, *args[index + 2 :])


@pytest.mark.parametrize(
    ("args", "location", "message"),
    [
        # one submission used to stop all scheduling
        (_with(SUBMIT, "--hours", "1e8"), "--hours", "(hours per job)"),
        (_with(SUBMIT, "--hours", "1e308"), "--hours", "(hours per job)"),
        # numbers in other digits, and underscores
        (_with(SUBMIT, "--gpus", "٣"), "--gpus", "positive whole number"),
        (_with(SUBMIT, "--gpus", "１"), "--gpus", "positive whole number"),
        (_with(SUBMIT, "--gpus", "1_000"), "--gpus", "positive whole number"),
        # integers of 2**63 and more (SQLite: OverflowError)
        (_with(SUBMIT, "--gpus", BIG), "--gpus", "(GPUs per job)"),
        ((*SUBMIT, "--priority", BIG), "--priority", "(job priority)"),
        (("job", "show", BIG), "job id", "(id)"),
        (("job", "cancel", BIG), "job id", "(id)"),
        (("gpu-type", "add", "T", "--vendor", "v", "--memory", BIG), "--memory", "GPU memory"),
        # a GPU type so slow that every round failed
        (
            ("gpu-type", "add", "T", "--vendor", "v", "--memory", "8", "--speed", "1e-300"),
            "--speed",
            "",
        ),
        # a pool of a billion GPUs, money beyond NUMERIC(14, 2)
        (
            (
                "pool",
                "add",
                "P",
                "--site",
                "s",
                "--gpu-type",
                "A100",
                "--gpus",
                "1000000000",
                "--price",
                "1",
            ),
            "--gpus",
            "(GPUs per pool)",
        ),
        (
            (
                "pool",
                "add",
                "P",
                "--site",
                "s",
                "--gpu-type",
                "A100",
                "--gpus",
                "8",
                "--price",
                "1e308",
            ),
            "--price",
            "(price per GPU-hour)",
        ),
        (
            (
                "pool",
                "add",
                "P",
                "--site",
                "s",
                "--gpu-type",
                "A100",
                "--gpus",
                "100000",
                "--gpus-per-node",
                "1",
                "--price",
                "1",
            ),
            "--gpus",
            "(nodes per pool)",
        ),
        (("org", "add", "o", "--domain", "general", "--budget", "1e30"), "--budget", "money"),
        (("programme", "add", "p", "--budget", "1e30"), "--budget", "money"),
        (("programme", "add", "p", "--org-cap", "1e30"), "--org-cap", "money"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_values_beyond_the_limits_are_refused(cli, args, location, message):
    """Integers and money the databases' column types hold differently: both databases."""
    _refused(cli, args, location, message)


@SQLITE_ONLY  # refused before any row is read or written: the database adds nothing
@pytest.mark.parametrize(
    ("args", "location", "message"),
    [
        # dates outside the supported window
        (("programme", "add", "p", "--period", "9999-Q4"), "--period", "2200"),
        (("report", "usage", "--period", "9999-Q4"), "--period", "2200"),
        (("policy", "whatif", FIFO, "--until", "0001-01-01"), "--until", "1970"),
        (("policy", "whatif", FIFO, "--since", "99999999999w"), "--since", "1970"),
        (("scheduler", "run", "--interval", "1e308", "--max-rounds", "2"), "--interval", ""),
        (("job", "finish", "1", "--at", "0001-01-01T00:00:00"), "--at", "1970"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_dates_and_intervals_beyond_the_limits_are_refused(cli, args, location, message):
    _refused(cli, args, location, message)


@SQLITE_ONLY  # checked in gpupool.limits before the database is touched
@pytest.mark.parametrize(
    ("args", "location"),
    [
        (("org", "add", "pumc\u200bhospital", "--domain", "medical"), "name"),
        (("org", "add", "red\x1b[31m", "--domain", "medical"), "name"),
        (("domain", "add", "a\nb"), "name"),
        (("gpu-type", "add", "x\u202eT", "--vendor", "v", "--memory", "8"), "name"),
        (("gpu-type", "add", "T", "--vendor", "v\u200d", "--memory", "8"), "--vendor"),
        (
            (
                "pool",
                "add",
                "p\u2066",
                "--site",
                "s",
                "--gpu-type",
                "A100",
                "--gpus",
                "8",
                "--price",
                "1",
            ),
            "name",
        ),
        (
            (
                "pool",
                "add",
                "P",
                "--site",
                "s\x07",
                "--gpu-type",
                "A100",
                "--gpus",
                "8",
                "--price",
                "1",
            ),
            "--site",
        ),
        (("user", "add", "bob\u202e", "--role", "admin"), "name"),
        (("programme", "add", "health\u200b"), "NAME"),
        ((*SUBMIT, "--name", "line\nbreak"), "--name"),
        (("policy", "apply", FIFO, "--comment", "evil\u202etxt"), "--comment"),
        (("org", "add", "o" * 65, "--domain", "medical"), "name"),
    ],
)
def test_names_that_are_not_one_printable_line_are_refused(cli, args, location):
    _refused(cli, args, location, "")


@SQLITE_ONLY  # checked in gpupool.limits before the database is touched
@pytest.mark.parametrize(
    ("kind", "first", "second"),
    [
        ("org", ("org", "add", "pumc-hospital", "--domain", "medical"), ("PUMC-HOSPITAL",)),
        ("domain", ("domain", "add", "weather"), ("Weather",)),
        ("gpu type", ("gpu-type", "add", "a100x", "--vendor", "v", "--memory", "8"), ("A100X",)),
        ("user", ("user", "add", "Alice", "--role", "admin"), ("alice",)),
        ("programme", ("programme", "add", "health"), ("ＨＥＡＬＴＨ",)),
    ],
)
def test_names_are_unique_case_folded(cli, kind, first, second):
    assert cli(*first).exit_code == 0
    again = (*first[:2], *second, *first[3:])
    err = _refused(cli, again, "name", "already exists")
    assert "differ only in case or form" in err


def test_names_are_stored_normalised_and_found_as_typed(cli):
    assert cli("org", "add", "ｐｕｍｃ", "--domain", "medical").exit_code == 0
    listed = cli("org", "list", "--json")
    assert '"pumc"' in listed.stdout
    submitted = cli("job", "submit", "--org", "ｐｕｍｃ", "--gpus", "1", "--hours", "1")
    assert submitted.exit_code == 0, submitted.stderr


def test_the_largest_values_are_accepted(cli):
    assert (
        cli("pool", "add", "big", "--site", "s", "--gpu-type", "A100", "--gpus", "100000").exit_code
        == 2
    )  # no price
    ok = cli(
        "pool",
        "add",
        "big",
        "--site",
        "s",
        "--gpu-type",
        "A100",
        "--gpus",
        "100000",
        "--price",
        "1000",
    )
    assert ok.exit_code == 0, ok.stderr
    job = cli(
        *_with(_with(SUBMIT, "--hours", "8760"), "--gpus", "100000"), "--priority", "-1000000"
    )
    assert job.exit_code == 0, job.stderr


@SQLITE_ONLY  # checked in gpupool.limits before the database is touched
def test_a_policy_with_an_org_cap_of_1e30_is_refused(cli, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("kind: fifo\nsubsidy: {org_cap: 1.0e+30}\n")
    expected = (
        f"{path}:2 subsidy.org_cap: must be between 0 and 100,000,000,000 (money per period)\n"
    )
    for command in ("validate", "apply"):
        before = _dump(cli.url)
        result = cli("policy", command, str(path))
        assert (result.exit_code, result.stderr) == (2, expected)
        assert _dump(cli.url) == before


@SQLITE_ONLY  # checked in gpupool.limits before the database is touched
@pytest.mark.parametrize("command", [("job", "reap"), ("schedule",)])
def test_a_grace_of_10_to_the_20_hours_is_refused(cli, command):
    assert cli(*SUBMIT).exit_code == 0
    assert cli("schedule").exit_code == 0  # the job runs: its deadline is what overflowed
    _refused(cli, (*command, "--grace", "99999999999999999999h"), "--grace", "grace minutes")


@pytest.fixture
def vouchers(cli):
    assert cli("programme", "add", "health", "--period", "quarterly", "--vouchers").exit_code == 0
    return cli


@SQLITE_ONLY  # checked in gpupool.limits before the database is touched
def test_a_voucher_awarded_at_the_end_of_year_9999_is_refused(vouchers):
    args = ("voucher", "award", "hosp", "--programme", "health", "--amount", "5")
    _refused(vouchers, (*args, "--at", "9999-12-31T23:59:59"), "--at", "2200")
    _refused(vouchers, (*args, "--expires", "9999-12-31"), "--expires", "2200")
    _refused(vouchers, _with(args, "--amount", "1e300"), "--amount", "voucher hours")


# ---------------------------------------------------------------------------
# Simulations (no database)
# ---------------------------------------------------------------------------

SCENARIO = ROOT / "examples" / "scenarios" / "synthetic.yaml"


@pytest.mark.parametrize(
    ("args", "location"),
    [
        (("simulate", "run", str(SCENARIO), "--policy", FIFO, "--until", "0"), "--until"),
        (("simulate", "run", str(SCENARIO), "--policy", FIFO, "--until", "1e308"), "--until"),
        (("simulate", "run", str(SCENARIO), "--policy", FIFO, "--seed", BIG), "--seed"),
        (
            ("simulate", "compare", str(SCENARIO), "--policy", FIFO, "--seeds", str(10**30)),
            "--seeds",
        ),
        (("simulate", "compare", str(SCENARIO), "--policy", FIFO, "--seeds", "10**30"), "--seeds"),
    ],
)
def test_simulation_options_beyond_the_limits_are_refused(tmp_path, args, location):
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.startswith(f"error: {location}: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()
