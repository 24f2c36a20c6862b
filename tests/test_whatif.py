"""`gpupool policy whatif`: recorded jobs replayed under two policies, figures by hand.

Platform (tests/conftest.py): p-a100 = 2 nodes x 8 A100 (speed 1) at 10.00/GPU-h,
p-h100 = 1 node x 8 H100 (speed 2) at 20.00/GPU-h; hosp (medical), lab (general).

The recorded history (``_record``), window [T0, T0 + 10 h):
  job  org   submitted  state      est.  ran (placements)               replayed for
  1    lab   0.0 h      completed  2 h   A100 1 h wall                  1 h (real)
  2    hosp  0.1 h      completed  1 h   H100 0.5 h wall (speed 2)      1 h (real, reference)
  3    lab   0.2 h      pending    1 h   -                              1 h (estimate)
  4    hosp  0.3 h      running    1 h   A100 since 9 h                 1 h (estimate)
  5    lab   0.4 h      cancelled  1 h   never started                  left out
  0    lab   -1 h       completed  1 h   before the window              left out
All jobs ask for 16 A100 GPUs (the whole p-a100 pool), so they run one at a time.
Job 2 asked for 16 A100 too but is recorded on H100 only to check the speed
conversion (the replay places it on A100 like the others).

FIFO (no policy applied): 1 at 0-1, 2 at 1-2, 3 at 2-3, 4 at 3-4.
  waits: 1: 0, 2: 0.9, 3: 1.8, 4: 2.7 -> medical mean 1.8, general mean 0.9.
Multifactor with medical weight 3 (the only factor that differs): at 1 h jobs 2,
  3, 4 wait; medical first: 2 at 1-2, 4 at 2-3, then 3 at 3-4.
  waits: 2: 0.9, 4: 1.7, 3: 2.8 -> medical mean 1.3 (-0.5), general mean (0 + 2.8) / 2 = 1.4 (+0.5).
Subsidy: the proposed document subsidises medical at 50%: each medical job is
quoted 16 GPUs x 1 h x 10.00 = 160, subsidy 80, so medical's subsidy is 160.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.model import GpupoolError
from gpupool.scheduler import repository
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import AuditLogRow, JobRow, PlacementRow, PolicyVersionRow
from gpupool.simulations import from_db
from tests.conftest import SQLITE_ONLY

T0 = dt.datetime(2026, 10, 5, 8, 0, tzinfo=dt.UTC)
UNTIL = T0 + dt.timedelta(hours=10)
H = dt.timedelta(hours=1)

# Slurm-style priorities on the domain weight alone (no age or fair-share factor).
PRIORITY_MEDICAL = """\
kind: multifactor
domains:
  medical: {weight: 3.0}
  general: {weight: 1.0}
subsidy:
  domain_rates: {medical: 0.5}
options: {age_weight: 0, fairshare_weight: 0}
"""


def _job(session, key, org, submitted, state, hours=1.0, started=None, ended=None):
    row = JobRow(
        org_id=repository.get_org(session, org).id,
        gpus=16,
        hours=hours,
        gpu_types=["A100"],
        state=state,
        submitted_at=T0 + submitted * H,
        started_at=started,
        ended_at=ended,
        submit_key=key,
    )
    session.add(row)
    session.flush()
    return row


def _placement(session, job, pool, start, end, nodes):
    session.add(
        PlacementRow(
            job_id=job.id,
            pool_id=repository.get_pool(session, pool).id,
            nodes=nodes,
            started_at=start,
            ended_at=end,
        )
    )


def _record(db):
    """Write the history of the module docstring; return the window's job ids, in order."""
    with unit_of_work(db) as session:
        _job(session, "old", "lab", -1, "completed", started=T0 - H, ended=T0)
        j1 = _job(session, "j1", "lab", 0, "completed", hours=2, started=T0, ended=T0 + H)
        _placement(session, j1, "p-a100", T0, T0 + H, [[0, 8], [1, 8]])
        j2 = _job(session, "j2", "hosp", 0.1, "completed", started=T0 + H, ended=T0 + 1.5 * H)
        _placement(session, j2, "p-h100", T0 + H, T0 + 1.5 * H, [[0, 8]])
        j3 = _job(session, "j3", "lab", 0.2, "pending")
        j4 = _job(session, "j4", "hosp", 0.3, "running", started=T0 + 9 * H)
        _placement(session, j4, "p-a100", T0 + 9 * H, None, [[0, 8], [1, 8]])
        _job(session, "j5", "lab", 0.4, "cancelled", ended=T0 + 0.5 * H)
        return [j1.id, j2.id, j3.id, j4.id]


def test_scenario_from_db_uses_real_runtimes_in_reference_hours(platform):
    ids = _record(platform)
    with unit_of_work(platform) as session:
        scenario = from_db.scenario_from_db(session, T0, UNTIL)
    assert scenario.start == T0.timestamp()  # the replay lives on the calendar
    assert [
        (s.job.id, s.job.org, s.job.submitted_at - scenario.start, s.job.hours, s.actual_hours)
        for s in scenario.jobs
    ] == [
        (ids[0], "lab", 0.0, 2.0, 1.0),  # real: 1 h on A100
        (ids[1], "hosp", 360.0, 1.0, 1.0),  # real: 0.5 h wall on H100 (speed 2)
        (ids[2], "lab", 720.0, 1.0, 1.0),  # pending: its estimate
        (ids[3], "hosp", 1080.0, 1.0, 1.0),  # running: its estimate
    ]
    assert scenario.dropped == {"cancelled before starting": 1}
    assert [p.name for p in scenario.pools] == ["p-a100", "p-h100"]
    assert {name: d.weight for name, d in scenario.domains.items()} == {
        "general": 1.0,
        "medical": 3.0,
    }


def test_preempted_segments_add_up(platform):
    with unit_of_work(platform) as session:
        job = _job(
            session, "p", "lab", 0, "completed", hours=5, started=T0 + 2 * H, ended=T0 + 3 * H
        )
        _placement(session, job, "p-a100", T0, T0 + 0.5 * H, [[0, 8], [1, 8]])  # preempted
        _placement(session, job, "p-h100", T0 + 2 * H, T0 + 3 * H, [[0, 8]])  # 1 h x speed 2
    with unit_of_work(platform) as session:
        (sim_job,) = from_db.scenario_from_db(session, T0, UNTIL).jobs
    assert sim_job.actual_hours == pytest.approx(2.5)


def _whatif(db, proposed_text=PRIORITY_MEDICAL):
    from gpupool.policies.document import parse_policy_text
    from gpupool.scheduler.rounds import active_policy

    document = parse_policy_text(proposed_text)
    with unit_of_work(db) as session:
        scenario = from_db.scenario_from_db(session, T0, UNTIL)
        active = active_policy(session)
    current = from_db.Contender("fifo", active.policy, active.pricing)
    proposed = from_db.Contender("prio", document.build(), document.params.subsidy)
    comparison, _ = from_db.whatif(scenario, 10.0, current, proposed)
    return comparison


def test_priority_for_medical_cuts_medical_waits_by_hand(platform):
    _record(platform)
    domains = _whatif(platform)["domains"]
    medical, general = domains["medical"], domains["general"]
    assert medical["current"]["mean_wait_hours"] == pytest.approx(1.8)
    assert medical["proposed"]["mean_wait_hours"] == pytest.approx(1.3)
    assert medical["delta"]["mean_wait_hours"] == pytest.approx(-0.5)
    assert medical["current"]["p95_wait_hours"] == pytest.approx(0.9 + 0.95 * 1.8)
    assert medical["proposed"]["p95_wait_hours"] == pytest.approx(0.9 + 0.95 * 0.8)
    assert general["current"]["mean_wait_hours"] == pytest.approx(0.9)
    assert general["proposed"]["mean_wait_hours"] == pytest.approx(1.4)
    for side in ("current", "proposed"):
        assert (medical[side]["finished"], general[side]["finished"]) == (2, 2)
        assert medical[side]["gpu_hours"] == pytest.approx(32.0)
        assert general[side]["gpu_hours"] == pytest.approx(32.0)
    assert medical["current"]["subsidy"] == 0.0
    assert medical["proposed"]["subsidy"] == pytest.approx(160.0)
    assert general["proposed"]["subsidy"] == 0.0
    assert domains["all"]["delta"]["mean_wait_hours"] == pytest.approx(0.0)


def test_replays_with_the_platforms_programmes_vouchers_and_calendar(platform):
    """A 50% programme for general with a quarterly budget of 100.00: under FIFO, lab's
    job 1 (16 GPUs x 1 h x 10.00 = 160.00) gets 80.00 and job 3 the 20.00 left."""
    from gpupool.accounting.periods import PeriodSpec
    from gpupool.accounting.programmes import Programme
    from gpupool.policies.fifo import FifoPolicy
    from gpupool.scheduler import accounts

    _record(platform)
    general = Programme(
        "general-fund",
        period=PeriodSpec(kind="quarter"),
        budget=100,
        domains=frozenset({"general"}),
        rate=0.5,
    )
    vouchers = Programme("vouch", uses_vouchers=True, domains=frozenset({"medical"}))
    with unit_of_work(platform) as session:
        accounts.add_programme(session, "admin", general)
        accounts.add_programme(session, "admin", vouchers)
        accounts.award_voucher(session, "admin", "hosp", "vouch", 10, now=T0 - H)
        accounts.award_voucher(session, "admin", "hosp", "vouch", 5, now=T0 + H)
        scenario = from_db.scenario_from_db(session, T0, UNTIL)
    assert [p.name for p in scenario.programmes] == ["general-fund", "vouch"]
    assert [(v.amount, v.awarded_at - scenario.start) for v in scenario.vouchers] == [
        (10.0, -3600.0),
        (5.0, 3600.0),
    ]
    fifo = from_db.Contender("fifo", FifoPolicy(), None)
    comparison, results = from_db.whatif(scenario, 10, fifo, fifo)
    assert comparison["domains"]["general"]["current"]["subsidy"] == pytest.approx(100.0)
    periods = {e.period for e in results["current"].ledger if e.kind == "charge"}
    assert periods == {"2026-Q4"}


def test_a_short_window_leaves_jobs_waiting(platform):
    """Replayed only to 2.5 h: FIFO has finished jobs 1 and 2 and runs 3; job 4 waits."""
    _record(platform)
    from gpupool.policies.document import parse_policy_text
    from gpupool.policies.fifo import FifoPolicy

    with unit_of_work(platform) as session:
        scenario = from_db.scenario_from_db(session, T0, UNTIL)
    fifo = from_db.Contender("fifo", FifoPolicy(), None)
    document = parse_policy_text(PRIORITY_MEDICAL)
    prio = from_db.Contender("prio", document.build(), document.params.subsidy)
    domains = from_db.whatif(scenario, 2.5, fifo, prio)[0]["domains"]
    assert (
        domains["medical"]["current"]["finished"],
        domains["medical"]["current"]["waiting"],
    ) == (1, 1)
    # priority ran 4 at 2-3 instead: medical has one finished, one running, none waiting
    assert (
        domains["medical"]["proposed"]["finished"],
        domains["medical"]["proposed"]["waiting"],
    ) == (1, 0)
    assert domains["general"]["proposed"]["waiting"] == 1


def _counts(db):
    with unit_of_work(db) as session:
        return tuple(
            session.scalar(select(func.count()).select_from(t))
            for t in (JobRow, PlacementRow, PolicyVersionRow, AuditLogRow)
        )


def test_cli_whatif_json_table_and_out_write_nothing(platform, tmp_path):
    _record(platform)
    policy = tmp_path / "prio.yaml"
    policy.write_text(PRIORITY_MEDICAL)
    before = _counts(platform)
    runner = CliRunner()
    args = [
        "--db",
        platform,
        "policy",
        "whatif",
        str(policy),
        "--since",
        "10h",
        "--until",
        UNTIL.isoformat(),
    ]
    result = runner.invoke(app, [*args, "--json", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["current"], data["proposed"], data["jobs"]) == (
        "FIFO (default)",
        "prio.yaml (multifactor)",
        4,
    )
    assert data["domains"]["medical"]["delta"]["mean_wait_hours"] == pytest.approx(-0.5)
    assert json.loads((tmp_path / "out" / "whatif.json").read_text()) == json.loads(result.stdout)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "jobs-current.csv",
        "jobs-proposed.csv",
        "whatif.json",
    ]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == (
        "4 jobs submitted 2026-10-05T08:00:00Z .. 2026-10-05T18:00:00Z replayed on today's "
        "2 pools (1 cancelled before starting, left out)"
    )
    assert lines[1] == "current: FIFO (default)    proposed: prio.yaml (multifactor)"
    at = next(i for i, line in enumerate(lines) if "medical" in line)
    assert [line.split("│")[1:-1] for line in lines[at : at + 3]] == [
        [
            " medical ",
            " current  ",
            "        2 ",
            "       0 ",
            "        1.80 ",
            "       2.61 ",
            "      32.0 ",
            "    0.00 ",
        ],
        [
            "         ",
            " proposed ",
            "        2 ",
            "       0 ",
            "        1.30 ",
            "       1.66 ",
            "      32.0 ",
            "  160.00 ",
        ],
        [
            "         ",
            " change   ",
            "        0 ",
            "       0 ",
            "       -0.50 ",
            "      -0.95 ",
            "         0 ",
            " +160.00 ",
        ],
    ]
    assert _counts(platform) == before


def test_cli_whatif_compares_with_the_active_policy(platform, tmp_path):
    """With the priority document active, proposing FIFO shows medical waiting longer."""
    _record(platform)
    prio, fifo = tmp_path / "prio.yaml", tmp_path / "fifo.yaml"
    prio.write_text(PRIORITY_MEDICAL)
    fifo.write_text("kind: fifo\n")
    runner = CliRunner()
    assert runner.invoke(app, ["--db", platform, "policy", "apply", str(prio)]).exit_code == 0
    result = runner.invoke(
        app,
        [
            "--db",
            platform,
            "policy",
            "whatif",
            str(fifo),
            "--since",
            "10h",
            "--until",
            UNTIL.isoformat(),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["current"] == "v1 (multifactor)"
    assert data["domains"]["medical"]["delta"]["mean_wait_hours"] == pytest.approx(0.5)
    assert data["domains"]["medical"]["delta"]["subsidy"] == pytest.approx(-160.0)


@SQLITE_ONLY  # validated before anything is written: no database-specific step
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--since", "soon"],
            "error: --since: expected a span like 30d, 12h, 2w, 90m or an ISO date, got 'soon'",
        ),
        (["--since", "0d"], "error: --since: must be a positive span, got '0d'"),
        (["--until", "2199-01-01"], "error: --until: '2199-01-01' is in the future"),
        (
            ["--until", "2026-10-05", "--since", "2026-10-06"],
            "error: --since: '2026-10-06' is not in the past",
        ),
    ],
)
def test_cli_whatif_bad_windows(platform, tmp_path, args, message):
    policy = tmp_path / "fifo.yaml"
    policy.write_text("kind: fifo\n")
    result = CliRunner().invoke(app, ["--db", platform, "policy", "whatif", str(policy), *args])
    assert (result.exit_code, result.stderr) == (2, message + "\n")


def test_parse_since_accepts_spans_and_dates():
    assert from_db.parse_since("30d", UNTIL) == UNTIL - 30 * 24 * H
    assert from_db.parse_since("2w", UNTIL) == UNTIL - 14 * 24 * H
    assert from_db.parse_since("90m", UNTIL) == UNTIL - 1.5 * H
    assert from_db.parse_since("2026-10-05T08:00", UNTIL) == T0
    with pytest.raises(GpupoolError):
        from_db.parse_since("-3d", UNTIL)


def test_cli_whatif_refuses_names_the_platform_lacks_and_writes_nothing(platform, tmp_path):
    _record(platform)
    policy = tmp_path / "names.yaml"
    policy.write_text("kind: multifactor\nsubsidy:\n  gpu_type_rates: {A100: 0.5, B200: 0.5}\n")
    before = _counts(platform)
    args = ["--db", platform, "policy", "whatif", str(policy), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "names.yaml:3 subsidy.gpu_type_rates.B200: the platform has no GPU type 'B200'; "
        "it has: A100, H100\n"
    )
    assert _counts(platform) == before
    assert not (tmp_path / "out").exists()
