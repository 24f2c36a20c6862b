"""Admin CLI end to end: init (--demo), gpu-type/pool/domain/org add|list, db upgrade|current.

The CLI runs as the platform owner (no --as): whoever holds the database URL.
"""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.scheduler.migrations import HEAD
from tests.conftest import SQLITE_ONLY


@pytest.fixture
def cli(db_url):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["--db", db_url, *args])

    return invoke


def _json(cli, *args):
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _first_admin(output: str, done: str) -> None:
    """init's output: what it did, then the first admin and its token (shown once)."""
    assert re.fullmatch(
        rf"{done}\nfirst admin: root\ntoken: gpt_[a-z0-9]{{8}}_[A-Za-z0-9_-]{{43}}\n", output
    )


def test_demo_platform_is_realistic(cli):
    _first_admin(cli("init", "--demo", "--admin", "root").stdout, "demo platform created")
    types = _json(cli, "gpu-type", "list")
    pools = _json(cli, "pool", "list")
    domains = _json(cli, "domain", "list")
    orgs = _json(cli, "org", "list")
    assert len(types) >= 4 and any(t["domestic"] for t in types)
    assert len({p["site"] for p in pools}) >= 4
    assert set(pools[0]) == {
        "name",
        "site",
        "gpu_type",
        "gpus",
        "gpus_per_node",
        "price_per_gpu_hour",
        "free_gpus",
    }
    assert all(p["free_gpus"] == p["gpus"] for p in pools)
    assert len(domains) >= 6 and {"medical", "education", "general"} <= {d["name"] for d in domains}
    assert len(orgs) >= 12 and set(orgs[0]) == {"name", "domain", "budget"}
    assert len(_json(cli, "job", "list")["jobs"]) >= 3


def test_demo_refuses_to_overwrite_without_force(cli):
    cli("init", "--demo")
    again = cli("init", "--demo")
    assert (again.exit_code, again.stderr) == (
        2,
        "error: --demo: the database already describes a platform; add --force to replace it\n",
    )
    jobs_before = len(_json(cli, "job", "list")["jobs"])
    cli("job", "submit", "--org", "zju-cs", "--gpus", "1", "--hours", "1")
    assert cli("init", "--demo", "--force", "--no-jobs").exit_code == 0
    assert jobs_before > 0 and _json(cli, "job", "list")["jobs"] == []


def test_describe_a_platform_by_hand(cli):
    _first_admin(cli("init", "--admin", "root").stdout, "database ready")
    steps = [
        (
            "gpu-type",
            "add",
            "Ascend-910B",
            "--vendor",
            "Huawei",
            "--memory",
            "64",
            "--speed",
            "0.8",
            "--domestic",
        ),
        (
            "pool",
            "add",
            "hf-910b",
            "--site",
            "Hefei",
            "--gpu-type",
            "Ascend-910B",
            "--gpus",
            "20",
            "--gpus-per-node",
            "8",
            "--price",
            "6.5",
        ),
        ("domain", "add", "weather", "--weight", "2"),
        ("org", "add", "cma", "--domain", "weather"),
        ("org", "add", "nmc", "--domain", "weather", "--budget", "5000.555"),
    ]
    for step in steps:
        result = cli(*step)
        assert result.exit_code == 0, result.stderr
    assert _json(cli, "gpu-type", "list") == [
        {"name": "Ascend-910B", "vendor": "Huawei", "memory_gb": 64, "speed": 0.8, "domestic": True}
    ]
    assert _json(cli, "pool", "list") == [
        {
            "name": "hf-910b",
            "site": "Hefei",
            "gpu_type": "Ascend-910B",
            "gpus": 20,
            "gpus_per_node": 8,
            "price_per_gpu_hour": 6.5,
            "free_gpus": 20,
        }
    ]
    assert _json(cli, "org", "list") == [
        {"name": "cma", "domain": "weather", "budget": None},
        {"name": "nmc", "domain": "weather", "budget": 5000.56},
    ]
    # 20 GPUs on nodes of 8: whole nodes hold 16, so 17 can never be placed.
    result = cli("job", "submit", "--org", "cma", "--gpus", "17", "--hours", "1")
    assert result.stderr == (
        "error: --gpus: asks for 17 GPUs but the largest gang any pool can hold is 16\n"
    )


@SQLITE_ONLY  # validated before anything is written: no database-specific step
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (
                "pool",
                "add",
                "p",
                "--site",
                "X",
                "--gpu-type",
                "V100",
                "--gpus",
                "8",
                "--price",
                "1",
            ),
            "error: --gpu-type: no GPU type named 'V100'",
        ),
        (
            ("gpu-type", "add", "A", "--vendor", "N", "--memory", "lots"),
            "error: --memory: must be a positive whole number, got 'lots'",
        ),
        (
            ("domain", "add", "d", "--weight", "-1"),
            "error: --weight: must be a positive number, got '-1'",
        ),
        (("org", "add", "o", "--domain", "nowhere"), "error: --domain: no domain named 'nowhere'"),
        (
            ("org", "add", "o", "--domain", "general", "--budget", "-5"),
            "error: --budget: must be zero or more, got '-5'",
        ),
        (
            ("org", "add", "o", "--domain", "general", "--budget", "lots"),
            "error: --budget: must be a number, got 'lots'",
        ),
        (("domain", "add", "general"), "error: name: a domain named 'general' already exists"),
    ],
)
def test_bad_admin_input_writes_nothing(cli, args, message):
    cli("domain", "add", "general")
    before = [_json(cli, what, "list") for what in ("gpu-type", "pool", "domain", "org")]
    result = cli(*args)
    assert (result.exit_code, result.stderr) == (2, message + "\n")
    assert [_json(cli, what, "list") for what in ("gpu-type", "pool", "domain", "org")] == before


def test_db_upgrade_is_idempotent_and_current_reports_it(cli):
    assert cli("db", "current").stdout == f"none (not initialised; newest is {HEAD})\n"
    assert cli("db", "upgrade").stdout == f"database upgraded from empty to revision {HEAD}\n"
    assert cli("db", "upgrade").stdout == f"database already at revision {HEAD}\n"
    assert cli("db", "current").stdout == f"{HEAD} (newest)\n"


def test_db_commands_on_an_unreachable_database():
    result = CliRunner().invoke(app, ["--db", "postgresql://x@127.0.0.1:1/db", "db", "upgrade"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --db: cannot connect to database ")
