"""The CLI as a client: every command the same against a server as on the database.

``twin`` is two databases built alike (tests/server/conftest.populate: the small
platform, root an admin, bob a submitter for lab, hana for hosp, audrey an
auditor) and a real `gpupool serve` (uvicorn on 127.0.0.1) on the second, one
pair per backend for the module. ``twin.run(*args)`` runs a command locally on
the first (``--db URL --as USER``) and remotely on the second (GPUPOOL_URL and
that user's GPUPOOL_TOKEN), asserts that both give the same exit code, stdout
and stderr (instants and solve times masked: the two databases were written
milliseconds apart; ``--json`` compared parsed, as key order may differ), and
returns the local result for the test's own expectations. The tests run in
file order and both databases see the same commands in it, so they stay alike.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from gpupool.cli.main import app
from tests.server.conftest import launch, populate, private_database

_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
_SOLVE = re.compile(r'"solve_seconds": [0-9.e-]+')


def _masked(text: str) -> str:
    return _SOLVE.sub('"solve_seconds": 0', _INSTANT.sub("<instant>", text))


def _out(result, args) -> object:
    """stdout to compare: ``--json`` output parsed (the API's response schemas may
    list an object's keys in another order; keys and values are the same)."""
    if "--json" in args and result.exit_code == 0:
        return json.loads(_masked(result.stdout))
    return _masked(result.stdout)


@dataclass
class Twin:
    local_db: str
    remote_db: str
    url: str
    tokens: dict[str, str]
    config: str

    def local(self, *args: str, user: str = "root"):
        env = {"GPUPOOL_URL": None, "GPUPOOL_TOKEN": None, "XDG_CONFIG_HOME": self.config}
        return CliRunner().invoke(app, ["--db", self.local_db, "--as", user, *args], env=env)

    def remote(self, *args: str, user: str = "root", token: str | None = None):
        env = {
            "GPUPOOL_URL": self.url,
            "GPUPOOL_TOKEN": token or self.tokens[user],
            "GPUPOOL_DATABASE_URL": None,
            "GPUPOOL_USER": None,
            "XDG_CONFIG_HOME": self.config,
        }
        return CliRunner().invoke(app, list(args), env=env)

    def on_server_db(self, *args: str, user: str = "root"):
        """Locally on the server's own database: byte-for-byte comparisons of files."""
        env = {"GPUPOOL_URL": None, "GPUPOOL_TOKEN": None, "XDG_CONFIG_HOME": self.config}
        return CliRunner().invoke(app, ["--db", self.remote_db, "--as", user, *args], env=env)

    def run(self, *args: str, user: str = "root", exit_code: int = 0):
        """Both modes, compared; the local result."""
        here, there = self.local(*args, user=user), self.remote(*args, user=user)
        assert here.exception is None or isinstance(here.exception, SystemExit), here.exception
        assert there.exception is None or isinstance(there.exception, SystemExit), there.exception
        assert (there.exit_code, _out(there, args), _masked(there.stderr)) == (
            here.exit_code,
            _out(here, args),
            _masked(here.stderr),
        ), args
        assert here.exit_code == exit_code, here.stderr
        return here

    def json(self, *args: str, user: str = "root"):
        return json.loads(self.run(*args, "--json", user=user).stdout)

    def error(self, *args: str, user: str = "root") -> str:
        """Both refuse the same way: nothing on stdout, exit 2; the stderr."""
        result = self.run(*args, user=user, exit_code=2)
        assert result.stdout == ""
        return result.stderr


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def twin(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("client")
    local_db, drop_local = private_database(request.param, folder)
    remote_db, drop_remote = private_database(request.param, folder)
    server = None
    try:
        populate(local_db)
        tokens = populate(remote_db)
        server = launch(remote_db)
        config = folder / "config"
        config.mkdir()
        yield Twin(local_db, remote_db, server.url, tokens, str(config))
    finally:
        if server is not None:
            server.stop()
        drop_local()
        drop_remote()


# --- jobs ----------------------------------------------------------------------


def test_job_submit_list_show_cancel(twin):
    first = twin.run("job", "submit", "--org", "lab", "--gpus", "2", "--hours", "1.5")
    job_id = first.stdout.strip()
    assert job_id.isdigit()
    keyed = ("job", "submit", "--org", "hosp", "--gpus", "1", "--hours", "2", "--key", "k1")
    created = twin.json(*keyed)
    assert created["created"] is True
    assert twin.json(*keyed) == {"id": created["id"], "created": False}
    jobs = twin.json("job", "list")["jobs"]
    assert [j["org"] for j in jobs[-2:]] == ["lab", "hosp"]
    assert [j["id"] for j in twin.json("job", "list", "--org", "hosp")["jobs"]] == [created["id"]]
    assert "lab" in twin.run("job", "list").stdout
    shown = twin.json("job", "show", job_id)
    assert (shown["id"], shown["state"], shown["placements"]) == (int(job_id), "pending", [])
    assert "submitted_by" in twin.run("job", "show", job_id).stdout
    assert twin.run("job", "cancel", job_id).stdout == f"cancelled job {job_id}\n"


def test_payloads_and_sites_are_the_same_through_the_server(twin, tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("echo one\necho two\n")
    submit = ("job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1")
    command = ("--env", "A=1", "--", "python", "-c", "print(1)")
    created = json.loads(twin.run(*submit, "--json", *command).stdout)  # --json before --
    shown = twin.json("job", "show", str(created["id"]))
    assert (shown["payload"]["argv"], shown["payload"]["env"]) == (
        ["python", "-c", "print(1)"],
        {"A": "1"},
    )
    assert "command: python -c 'print(1)'" in twin.run("job", "show", str(created["id"])).stdout
    scripted = twin.json(*submit, "--script", str(script))
    assert (
        twin.json("job", "show", str(scripted["id"]))["payload"]["script"] == "echo one\necho two\n"
    )
    assert twin.error(*submit, "--env", "1X=2", "--", "true").startswith(
        "error: --env: '1X' is not a variable name"
    )
    assert twin.error(*submit, "--env", "A=\0", "--", "true") == (
        "error: --env A: must not hold a NUL byte\n"
    )
    assert twin.json("site", "list") == []
    for job in (created, scripted):
        twin.run("job", "cancel", str(job["id"]))


def test_job_errors_are_the_same_line(twin):
    assert twin.error("job", "submit", "--org", "lab", "--gpus", "0", "--hours", "1") == (
        "error: --gpus: must be a positive whole number, got '0'\n"
    )
    assert twin.error("job", "submit", "--org", "nobody", "--gpus", "1", "--hours", "1") == (
        "error: --org: no organisation named 'nobody'\n"
    )
    assert twin.error("job", "show", "999") == "error: job id: no job with id 999\n"
    assert twin.error("job", "cancel", "abc") == (
        "error: job id: must be a positive whole number, got 'abc'\n"
    )
    assert twin.error("job", "list", "--state", "sleeping").startswith(
        "error: --state: unknown state 'sleeping'"
    )
    job_id = twin.run("job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1").stdout
    twin.run("job", "cancel", job_id.strip())
    assert twin.error("job", "cancel", job_id.strip()) == (
        "error: state: a cancelled job cannot become cancelled\n"
    )


def test_submit_batch_all_or_none(twin, tmp_path):
    bad = tmp_path / "jobs.csv"
    bad.write_text("org,gpus,hours,gpu_types\nlab,2,1,A100\nnobody,1,1,\nlab,1,x,\n")
    assert twin.error("job", "submit-batch", str(bad)).splitlines() == [
        "error: jobs.csv:3 org: no organisation named 'nobody'",
        "error: jobs.csv:4 hours: must be a positive number of hours, got 'x'",
        f"error: 2 bad row(s) in {bad}; nothing submitted",
    ]
    good = tmp_path / "good.yaml"
    good.write_text("- {org: lab, gpus: 2, hours: 1}\n- {org: hosp, gpus: 1, hours: 2, key: b}\n")
    assert [r["created"] for r in twin.json("job", "submit-batch", str(good))] == [True, True]
    again = twin.run("job", "submit-batch", str(good)).stdout
    assert again.startswith("submitted 1 new job(s) of 2: ")


def test_schedule_dry_run_real_finish_and_reap(twin):
    twin.run("job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1")  # one to start
    dry = twin.json("schedule", "--dry-run")
    assert dry["round"] is None and dry["started"]
    assert twin.run("schedule", "--dry-run").stdout.startswith("dry run with FIFO (default): ")
    real = twin.json("schedule")
    assert real["round"] is not None and real["policy"] == "FIFO (default)"
    running = real["started"][0]["job"]
    assert twin.run("job", "finish", str(running)).stdout == f"job {running} completed\n"
    assert twin.run("schedule").stdout.startswith("round ")
    assert twin.run("job", "reap").stdout == "0 job(s) timed out\n"
    assert twin.error("job", "finish", str(running)) == (
        "error: state: a completed job cannot become completed\n"
    )


# --- the platform's description ----------------------------------------------


def test_platform_add_and_list(twin):
    assert twin.run("gpu-type", "add", "L40", "--vendor", "NVIDIA", "--memory", "48").stdout == (
        "added GPU type L40\n"
    )
    assert "L40" in [t["name"] for t in twin.json("gpu-type", "list")]
    twin.run("pool", "add", "p-l40b", "--site", "Wuhan", "--gpu-type", "L40", "--gpus", "4",
             "--price", "3")  # fmt: skip
    pools = {p["name"]: p for p in twin.json("pool", "list")}
    assert pools["p-l40b"]["free_gpus"] == 4
    assert "p-l40b" in twin.run("pool", "list").stdout
    assert twin.run("domain", "add", "climate", "--weight", "2").stdout == "added domain climate\n"
    assert {"name": "climate", "weight": 2.0} in twin.json("domain", "list")
    twin.run("org", "add", "uni", "--domain", "climate", "--budget", "50")
    assert [o["name"] for o in twin.json("org", "list", "--domain", "climate")] == ["uni"]
    assert "uni" in twin.run("org", "list").stdout


def test_platform_errors(twin):
    twin.run("domain", "add", "ocean", "--weight", "1")  # this test's own names
    twin.run("org", "add", "tide", "--domain", "ocean")
    assert "already exists" in twin.error("domain", "add", "ocean", "--weight", "2")
    assert twin.error("domain", "add", "dry", "--weight", "x").startswith("error: --weight: ")
    assert "already exists" in twin.error("org", "add", "tide", "--domain", "ocean")
    assert twin.error("pool", "add", "p-x", "--site", "S", "--gpu-type", "V100", "--gpus", "4",
                      "--price", "1").startswith("error: --gpu-type: ")  # fmt: skip


def test_job_classes_add_list_submit_show_remove_and_refuse_the_same(twin):
    assert twin.error("job-class", "add", "x", "--speed", "V100=1") == (
        "error: --speed V100: no GPU type named 'V100'\n"
    )
    assert twin.error("job-class", "add", "x", "--speed", "A100=0").startswith(
        "error: --speed A100: must be a positive number"
    )
    assert twin.error("job-class", "add", "x", "--speed", "A100=2000").startswith(
        "error: --speed A100: must be between 0.01 and 1,000"
    )
    assert twin.error("job-class", "add", "x", "--speed", "A100") == (
        "error: --speed: must be GPU_TYPE=SPEED, got 'A100'\n"
    )
    assert twin.error("job-class", "add", "x", "--speed", "A100=1", user="bob").startswith(
        "error: "
    )
    assert twin.json("job-class", "list") == []  # nothing was written
    added = ("job-class", "add", "llm", "--speed", "A100=1.5", "--speed", "H100=3")
    assert twin.run(*added).stdout == "added job class llm\n"
    assert twin.json("job-class", "list") == [{"name": "llm", "speeds": {"A100": 1.5, "H100": 3.0}}]
    assert "A100=1.5, H100=3" in twin.run("job-class", "list").stdout
    unknown = ("job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1", "--class", "x")
    assert twin.error(*unknown) == "error: --class: no job class named 'x'\n"
    job_id = twin.run(
        "job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1", "--class", "llm"
    ).stdout.strip()
    assert twin.json("job", "show", job_id)["job_class"] == "llm"
    assert twin.error("job-class", "remove", "llm") == (
        f"error: name: job {job_id} (not finished) is of class llm; remove it when none is\n"
    )
    twin.run("job", "cancel", job_id)
    assert twin.run("job-class", "remove", "llm").stdout == "removed job class llm\n"
    assert twin.json("job-class", "list") == []


# --- policies --------------------------------------------------------------------

MEDICAL_FIRST = """\
kind: multifactor
domains:
  medical: {weight: 3.0}
  general: {weight: 1.0}
options: {age_weight: 0, fairshare_weight: 0}
"""


def test_policy_validate_apply_history_show_diff_rollback(twin, tmp_path):
    fifo, medical = tmp_path / "fifo.yaml", tmp_path / "medical.yaml"
    fifo.write_text("kind: fifo\n")
    medical.write_text(MEDICAL_FIRST)
    assert twin.run("policy", "validate", str(medical)).stdout.startswith("ok: multifactor")
    assert twin.run("policy", "history").stdout == (
        "no policy has been applied; rounds use the FIFO default\n"
    )
    assert twin.run("policy", "apply", str(fifo), "--comment", "start").stdout == (
        "applied policy v1 (fifo); it replaces the FIFO default\n"
    )
    assert twin.run("policy", "apply", str(medical)).stdout == (
        "applied policy v2 (multifactor); it replaces v1\n"
    )
    history = twin.json("policy", "history")
    assert [(v["version"], v["active"]) for v in history] == [(1, False), (2, True)]
    assert "applied by" in twin.run("policy", "history").stdout
    assert twin.json("policy", "show")["document"] == MEDICAL_FIRST
    assert "version:    1" in twin.run("policy", "show", "v1").stdout
    assert twin.json("policy", "diff", "1", "2")["old"] == 1
    assert twin.run("policy", "diff", "1", "2").stdout.startswith("* ")
    assert twin.run("policy", "rollback", "v1", "--comment", "back").stdout == (
        "applied policy v3 (fifo), a copy of v1; it replaces v2\n"
    )
    window = ("--since", "2026-01-01", "--until", "2026-01-02")  # fixed: the same replay
    compared = twin.json("policy", "whatif", str(medical), *window)
    assert (compared["current"], compared["proposed"]) == (
        "v3 (fifo)",
        "medical.yaml (multifactor)",
    )
    assert (compared["since"], compared["until"]) == (
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
    )
    assert twin.run("policy", "whatif", str(medical), *window).stdout.startswith(
        "0 jobs submitted 2026-01-01T00:00:00Z .. 2026-01-02T00:00:00Z replayed on today's "
    )
    # --out through the server writes here what the local command writes, byte for byte
    # (both on the server's database; a window of fixed ends, so the same replay)
    import datetime as dt

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    whole = ("--since", "2026-01-01", "--until", now)
    there = twin.remote("policy", "whatif", str(medical), *whole, "--out", str(tmp_path / "r"))
    here = twin.on_server_db("policy", "whatif", str(medical), *whole, "--out", str(tmp_path / "l"))
    assert (there.exit_code, there.stderr) == (here.exit_code, here.stderr) == (0, "")
    assert there.stdout == here.stdout
    written = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    assert written == {p.name: p.read_bytes() for p in (tmp_path / "l").iterdir()}
    assert set(written) == {"whatif.json", "jobs-current.csv", "jobs-proposed.csv"}
    assert json.loads(written["whatif.json"])["jobs"] >= 1
    assert written["jobs-current.csv"].count(b"\r\n") >= 2  # csv's line ends kept
    assert twin.error("policy", "whatif", str(medical), "--out", str(medical)).startswith(
        "error: --out "
    )


def test_policy_errors(twin, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: multifactor\ndomains:\n  medical: {weight: -1}\n")
    lines = twin.run("policy", "apply", str(bad), exit_code=2).stderr.splitlines()
    assert lines and all(line.startswith(f"{bad}:") for line in lines)
    assert twin.error("policy", "show", "v99").startswith("error: VERSION: ")
    assert twin.error("policy", "show", "x") == (
        "error: VERSION: not a policy version: 'x' (expected e.g. 3 or v3)\n"
    )


# --- accounting -------------------------------------------------------------------


def test_programmes_vouchers_reports(twin):
    assert twin.run(
        "programme", "add", "health", "--period", "2026-Q4", "--budget", "1000",
        "--rate", "0.5", "--domain", "medical", "--exchange", "H100=0.6",
    ).stdout == "added programme health\n"  # fmt: skip
    assert [p["name"] for p in twin.json("programme", "list")] == ["health"]
    assert "health" in twin.run("programme", "list").stdout
    awarded = twin.run(
        "voucher", "award", "hosp", "--programme", "health", "--amount", "10",
        "--at", "2026-10-01", "--expires", "2026-12-31",
    ).stdout  # fmt: skip
    assert awarded.startswith("awarded voucher 1: 10 hours of health to hosp")
    assert [v["org"] for v in twin.json("voucher", "list")] == ["hosp"]
    assert "hosp" in twin.run("voucher", "list", "--org", "hosp").stdout
    # a finished job of this test's own, so that the usage reports have a charge
    twin.run("job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1")
    started = [s["job"] for s in twin.json("schedule")["started"]]
    assert started, "the round started nothing"
    twin.run("job", "finish", str(started[0]))
    # the finished jobs ran a few milliseconds longer in one of the two databases:
    # compare the groups and counts, not the GPU-hours
    for args in (["usage", "--by", "org"], ["usage"], ["subsidies"]):
        here = twin.local("report", *args, "--json")
        there = twin.remote("report", *args, "--json")
        assert (here.exit_code, there.exit_code) == (0, 0), (here.stderr, there.stderr)
        groups = [
            [(r["period"], r.get("org"), r.get("domain"), r.get("jobs")) for r in json.loads(out)]
            for out in (here.stdout, there.stdout)
        ]
        assert groups[0] == groups[1]
        assert groups[0] or args == ["subsidies"]  # the finished jobs' charges are there
        tables = [twin.local("report", *args), twin.remote("report", *args)]
        assert [t.exit_code for t in tables] == [0, 0]
        assert tables[0].stdout.splitlines()[:3] == tables[1].stdout.splitlines()[:3]


def test_subsidy_burn_down_chart_through_the_server(twin, tmp_path):
    there = twin.remote("report", "subsidies", "--png", str(tmp_path / "r.png"))
    here = twin.on_server_db("report", "subsidies", "--png", str(tmp_path / "l.png"))
    assert (there.exit_code, there.stderr) == (here.exit_code, here.stderr) == (0, "")
    image = (tmp_path / "r.png").read_bytes()
    assert image.startswith(b"\x89PNG") and image == (tmp_path / "l.png").read_bytes()
    svg = twin.remote("report", "subsidies", "--png", str(tmp_path / "r.svg"), "--json")
    assert svg.exit_code == 0 and (tmp_path / "r.svg").read_text().lstrip().startswith("<?xml")
    assert json.loads(svg.stdout) == json.loads(twin.remote("report", "subsidies", "--json").stdout)
    refused = twin.error("report", "subsidies", "--png", str(tmp_path / "b.png"), user="bob")
    assert refused.startswith("error: --as: bob may not chart budget burn-down")
    assert not (tmp_path / "b.png").exists()
    assert twin.error("report", "subsidies", "--png", str(tmp_path / "x.bmp")).startswith(
        "error: --png: must end in .png"
    )


def test_accounting_errors(twin):
    assert twin.error("voucher", "award", "nobody", "--programme", "health", "--amount", "1") == (
        twin.local("voucher", "award", "nobody", "--programme", "health", "--amount", "1").stderr
    )
    assert twin.error("report", "usage", "--by", "colour") == (
        "error: --by: must be one of domain, org, gpu-type, site, pool, got 'colour'\n"
    )
    assert twin.error("programme", "add", "x", "--rate", "2").startswith("error: --rate: ")


# --- users, tokens, audit, roles --------------------------------------------------


def test_users_tokens_audit(twin):
    assert twin.run("user", "add", "sam", "--role", "submitter", "--org", "lab").stdout == (
        "added submitter sam for lab\n"
    )
    assert ("sam", "submitter", "lab") in [
        (u["name"], u["role"], u["org"]) for u in twin.json("user", "list")
    ]
    assert "audrey" in twin.run("user", "list").stdout
    # a token's id and secret are random: compare what they say, not the strings
    here = json.loads(twin.local("token", "create", "sam", "--json").stdout)
    there = json.loads(twin.remote("token", "create", "sam", "--json").stdout)
    assert set(here) == set(there) and here["user"] == there["user"] == "sam"
    assert there["token"].startswith("gpt_") and there["token"] != here["token"]
    for mode in (twin.local, twin.remote):
        listed = json.loads(mode("token", "list", "--user", "sam", "--json").stdout)
        assert [t["user"] for t in listed] == ["sam"]
        audit = json.loads(mode("audit", "list", "--action", "user.add", "--json").stdout)
        assert "sam" in [entry["target"].split()[-1] for entry in audit]
    assert twin.error("user", "add", "x", "--role", "king").startswith("error: --role: ")
    assert twin.error("audit", "list", "--since", "soon").startswith("error: --since: ")


def test_a_submitter_sees_its_own_and_is_refused_the_same(twin):
    twin.run("job", "submit", "--org", "hosp", "--gpus", "1", "--hours", "1", user="hana")
    assert {j["org"] for j in twin.json("job", "list", user="hana")["jobs"]} == {"hosp"}
    assert twin.error("user", "list", user="hana").startswith("error: ")
    assert twin.error(
        "job", "submit", "--org", "hosp", "--gpus", "1", "--hours", "1", "--priority", "5",
        user="hana",
    ).startswith("error: --priority: ")  # fmt: skip
    assert twin.error("audit", "list", user="bob").startswith("error: ")


def test_job_list_pages(twin):
    for _ in range(3):
        twin.run("job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1")
    ids = [j["id"] for j in twin.json("job", "list", "--limit", "1000")["jobs"]]
    first = twin.json("job", "list", "--limit", "2")
    assert [j["id"] for j in first["jobs"]] == ids[:2]
    assert (first["limit"], first["next_after"], first["previous_before"]) == (2, ids[1], None)
    second = twin.json("job", "list", "--limit", "2", "--after", str(first["next_after"]))
    assert [j["id"] for j in second["jobs"]] == ids[2:4]
    assert second["previous_before"] == ids[2]
    back = twin.json("job", "list", "--limit", "2", "--before", str(second["previous_before"]))
    assert back == first
    table = twin.run("job", "list", "--limit", "2")
    assert table.stderr == f"more jobs: the next page is --after {ids[1]}\n"
    assert twin.error("job", "list", "--limit", "1001").startswith("error: --limit: must be")
    assert twin.error("job", "list", "--after", "x").startswith("error: --after: ")
    assert twin.error("job", "list", "--after", "1", "--before", "3") == (
        "error: --before: give --after or --before, not both\n"
    )


def test_user_set_role_and_remove(twin):
    twin.run("user", "add", "uma", "--role", "submitter", "--org", "lab")
    assert twin.run("user", "set-role", "uma", "auditor").stdout == "uma is now auditor\n"
    assert ("uma", "auditor", None) in [
        (u["name"], u["role"], u["org"]) for u in twin.json("user", "list")
    ]
    assert twin.error("user", "set-role", "uma", "submitter").startswith("error: --org: ")
    assert twin.error("user", "set-role", "uma", "king").startswith("error: ROLE: must be one")
    assert twin.error("user", "remove", "uma", user="bob").startswith(
        "error: --as: bob may not remove users: admins only"
    )
    assert twin.error("user", "remove", "root").startswith(
        "error: NAME: root is the last admin and cannot be removed"
    )
    assert twin.error("user", "set-role", "root", "auditor").startswith(
        "error: NAME: root is the last admin and cannot be demoted"
    )
    assert twin.run("user", "remove", "uma").stdout == "removed auditor uma and 0 API token(s)\n"
    assert twin.error("user", "remove", "uma") == "error: NAME: no user named 'uma'\n"
    assert "uma" not in [u["name"] for u in twin.json("user", "list")]
    actions = [e["action"] for e in twin.json("audit", "list", "--action", "user.")]
    assert actions[-2:] == ["user.set_role", "user.remove"]


# --- remote only ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["init"], "init"),
        (["db", "upgrade"], "db upgrade"),
        (["serve"], "serve"),
        (["scheduler", "run", "--max-rounds", "1"], "scheduler run"),
    ],
)
def test_host_only_commands_refuse_with_a_server(twin, args, where):
    result = twin.remote(*args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(f"error: {where}: runs only where the database is")


def test_bad_or_missing_token_and_as(twin):
    result = twin.remote("job", "list", token="gpt_nothing_here")
    assert (result.exit_code, result.stderr) == (2, "error: token: invalid or expired token\n")
    result = CliRunner().invoke(
        app,
        ["job", "list"],
        env={"GPUPOOL_URL": twin.url, "GPUPOOL_TOKEN": None, "XDG_CONFIG_HOME": twin.config},
    )
    assert result.exit_code == 2 and result.stderr.startswith("error: GPUPOOL_TOKEN: ")
    result = CliRunner().invoke(
        app,
        ["--as", "bob", "job", "list"],
        env={"GPUPOOL_URL": twin.url, "GPUPOOL_TOKEN": twin.tokens["bob"]},
    )
    assert result.exit_code == 2 and result.stderr.startswith("error: --as: ")
    unreachable = CliRunner().invoke(
        app, ["job", "list"], env={"GPUPOOL_URL": "http://127.0.0.1:9", "GPUPOOL_TOKEN": "t"}
    )
    assert unreachable.exit_code == 2
    assert unreachable.stderr.startswith("error: GPUPOOL_URL: cannot reach the server ")


def test_login_saves_the_token_0600_and_logout_forgets_it(twin, tmp_path):
    env = {
        "XDG_CONFIG_HOME": str(tmp_path),
        "GPUPOOL_URL": None,
        "GPUPOOL_TOKEN": None,
        "GPUPOOL_DATABASE_URL": None,
        "GPUPOOL_USER": None,
    }
    runner = CliRunner()
    refused = runner.invoke(app, ["login", twin.url, "--token", "gpt_bad_token"], env=env)
    assert (refused.exit_code, refused.stderr) == (2, "error: token: invalid or expired token\n")
    saved = tmp_path / "gpupool" / "credentials"
    assert not saved.exists()
    ok = runner.invoke(app, ["login", twin.url], input=twin.tokens["bob"] + "\n", env=env)
    assert ok.exit_code == 0, ok.stderr
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert twin.tokens["bob"] in saved.read_text()
    # a job of each organisation, so that seeing only lab's is bob's view, not the data
    twin.run("job", "submit", "--org", "hosp", "--gpus", "1", "--hours", "1", user="hana")
    twin.run("job", "submit", "--org", "lab", "--gpus", "1", "--hours", "1", user="bob")
    mine = runner.invoke(app, ["job", "list", "--json"], env=env)
    assert mine.exit_code == 0, mine.stderr
    assert {j["org"] for j in json.loads(mine.stdout)["jobs"]} == {"lab"}  # bob's own organisation
    out = runner.invoke(app, ["logout"], env=env)
    assert out.exit_code == 0 and not saved.exists()


PREEMPTING_PRIORITY = """\
kind: priority
domains:
  medical: {weight: 3.0}   # hosp's domain
  general: {weight: 1.0}   # lab's
preemption: {enabled: true, min_gap: 1.0, min_run_minutes: 0}
"""


def test_job_show_says_when_and_why_a_run_was_paused(twin, tmp_path):
    # a clean slate: earlier tests' jobs could hold the H100 node
    for job in twin.json("job", "list", "--state", "pending", "--state", "running")["jobs"]:
        twin.run("job", "cancel", str(job["id"]))
    document = tmp_path / "priority.yaml"
    document.write_text(PREEMPTING_PRIORITY)
    twin.run("policy", "apply", str(document))
    submit = ("job", "submit", "--gpus", "8", "--gpu-type", "H100", "--hours")
    lab = twin.run(*submit, "100", "--org", "lab").stdout.strip()
    twin.run("schedule")
    hosp = twin.run(*submit, "1", "--org", "hosp").stdout.strip()
    twin.run("schedule")
    expected = (
        f"preempted by job {hosp} (priority 3 over 1) to start on p-h100: "
        "gain 800 > cost 0 GPU-hours"
    )
    # the same reason over the API as on the database; each side on its own, as the
    # charges of a run timed by the wall clock differ between the two
    for side in (twin.local, twin.remote):
        shown = side("job", "show", lab, "--json")
        assert shown.exit_code == 0, shown.stderr
        [run] = json.loads(shown.stdout)["placements"]
        assert run["end_reason"] == expected
        text = side("job", "show", lab).stdout
        assert f"paused: at {run['ended_at']} — {expected}" in text


def test_remote_submit_loads_no_database_or_solver_modules(twin):
    code = (
        "import sys\n"
        "from gpupool.cli.main import main\n"
        "sys.argv = ['gpupool', 'job', 'submit', '--org', 'lab', '--gpus', '1', '--hours', '1']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = ('sqlalchemy', 'alembic', 'ortools', 'simpy', 'matplotlib', 'numpy', 'rich',"
        " 'typer', 'pydantic', 'httpx')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    env |= {"GPUPOOL_URL": twin.url, "GPUPOOL_TOKEN": twin.tokens["bob"]}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().isdigit()
    assert out.stderr.strip() == "[]"
