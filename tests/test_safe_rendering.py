"""Stored and user-supplied text is shown escaped for its medium (issue 15, safe rendering).

The hostile rows are written straight into the database (as an older version,
before names were checked at input, could have stored them), so these tests keep
holding whatever the input checks refuse today.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.safe_text import html_text, markdown_text, plot_text, terminal
from gpupool.scheduler import lifecycle, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import (
    DomainRow,
    GpuTypeRow,
    JobRow,
    LedgerEntryRow,
    OrgRow,
    PlacementRow,
    PolicyVersionRow,
    PoolRow,
    ProgrammeRow,
    UserRow,
)
from tests.conftest import SQLITE_ONLY

HOSTILE = (
    "[/]",
    "[link=file:///etc/passwd]x[/link]",
    "\x1b[31mred",
    "a\u202eb",
    "a\nb",
    "a\u200bb",
)
# What must never reach the screen raw: ESC (colours, OSC-8 links, cursor moves),
# a right-to-left override, a zero-width space, a line break inside a name.
RAW = ("\x1b", "\u202e", "\u200b", "a\nb")


# --- the medium-specific escapes ---------------------------------------------


def test_terminal_makes_invisible_and_controlling_characters_visible():
    assert terminal("\x1b[31mred") == "\\x1b[31mred"
    assert (
        terminal("a\u202eb a\u2066b a\u200bb a\ufeffb") == "a\\u202eb a\\u2066b a\\u200bb a\\ufeffb"
    )
    assert terminal("a\nb\rc\td\x00e\x7f\x9b") == "a\\nb\\rc\\td\\x00e\\x7f\\x9b"
    assert terminal("a\u2028b\udcff") == "a\\u2028b\\udcff"
    assert terminal("tag\U000e0041") == "tag\\U000e0041"
    assert terminal("line one\nline two\x1b", keep_newlines=True) == "line one\nline two\\x1b"
    assert terminal("医院 [ok] ±") == "医院 [ok] ±"  # printable text is left alone


def test_markdown_text_renders_as_the_literal_text():
    from markdown_it import MarkdownIt

    hostile = "[x](http://evil.example) <b>b</b> *e* `c` a|b &amp; \\ u@h.example"
    rendered = MarkdownIt("commonmark").enable("table").renderInline(markdown_text(hostile))
    assert "<a" not in rendered and "<b>" not in rendered and "<em>" not in rendered
    assert "<code>" not in rendered
    assert rendered == (
        "[x](http://evil.example) &lt;b&gt;b&lt;/b&gt; *e* `c` a|b &amp;amp; \\ u@h.example"
    )
    # GFM's extended autolinks need "://", "www." or "@": each is broken by a backslash
    assert markdown_text("http://a.example www.b.example u@c.example") == (
        "http\\://a.example www\\.b.example u\\@c.example"
    )


def test_plot_text_turns_off_mathtext_and_keeps_hidden_labels_visible():
    assert plot_text("$\\frac$ costs $5") == "\\$\\frac\\$ costs \\$5"
    assert plot_text("_hidden") == " _hidden"
    assert plot_text("a\nb") == "a\\nb"


# --- the CLI on a platform whose stored names are hostile --------------------


@pytest.fixture
def hostile(platform):
    """The small platform plus, per hostile text, a GPU type, pool, domain, org, user,
    programme with a voucher, policy version and jobs (one finished, one running, two
    pending), all created with plain names and then renamed in the database."""
    from gpupool.accounting.declarations import parse_programmes
    from gpupool.scheduler import accounts, policies_store
    from gpupool.scheduler.permissions import add_user
    from gpupool.scheduler.rounds import active_policy, run_round

    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    finished = []
    with unit_of_work(platform) as session:
        for i in range(len(HOSTILE)):
            service.add_gpu_type(session, "admin", f"gt{i}", "v", 80, 1.0)
            service.add_pool(session, "admin", f"pool{i}", f"site{i}", f"gt{i}", 16, 8, 10.0)
            service.add_domain(session, "admin", f"dom{i}", 1.0)
            service.add_org(session, "admin", f"org{i}", f"dom{i}", None)
            add_user(session, "admin", f"user{i}", "submitter", f"org{i}")
            entry = {"name": f"prog{i}", "period": "quarterly", "rate": 0.5, "vouchers": True}
            (programme,) = parse_programmes([entry], "test")
            accounts.add_programme(session, "admin", programme)
            accounts.award_voucher(session, "admin", f"org{i}", f"prog{i}", 100, now=t0)
            policies_store.apply_policy_text(session, "admin", "kind: fifo\n", "p.yaml", f"c{i}")
        for letter in "ABCD":  # FIFO: every org's A and B start, C and D wait
            for i in range(len(HOSTILE)):
                request = service.JobRequest(
                    org=f"org{i}", gpus=8, hours=5, gpu_types=[f"gt{i}"], name=f"job{i}{letter}"
                )
                job_id, _ = service.submit_job(session, "admin", request, t0)
                if letter == "A":
                    finished.append(job_id)
    with unit_of_work(platform) as session:
        run_round(session, active_policy(session).policy, t0)
    with unit_of_work(platform) as session:
        for job_id in finished:
            lifecycle.finish_job(session, "admin", job_id, at=t0 + dt.timedelta(hours=1))
    with unit_of_work(platform) as session:
        for i, text in enumerate(HOSTILE):
            _rename(session, i, text)
    return platform


def _rename(session, i: int, text: str) -> None:
    def rename(column, old, **values):
        session.execute(update(column.class_).where(column == old).values(**values))

    rename(GpuTypeRow.name, f"gt{i}", name=text, vendor=text)
    rename(PoolRow.name, f"pool{i}", name=text, site=text)
    rename(DomainRow.name, f"dom{i}", name=text)
    rename(OrgRow.name, f"org{i}", name=text)
    rename(UserRow.name, f"user{i}", name=text)
    rename(ProgrammeRow.name, f"prog{i}", name=text)
    rename(PolicyVersionRow.comment, f"c{i}", comment=text, applied_by=text)
    rename(LedgerEntryRow.domain, f"dom{i}", domain=text)
    rename(LedgerEntryRow.gpu_type, f"gt{i}", gpu_type=text)
    for job in session.scalars(select(JobRow).where(JobRow.name.like(f"job{i}_"))):
        job.name, job.gpu_types, job.submitted_by = text, [text], text
        if job.state == "pending":
            job.wait_reason = text
    session.execute(update(PlacementRow).values(reason=HOSTILE[1]))


def _invoker(db: str, monkeypatch):
    # wide enough that no cell wraps: each name must show whole, on one line
    monkeypatch.setattr("gpupool.cli.output._terminal_width", lambda: 400)
    runner = CliRunner()

    def invoke(*args: str, env: dict | None = None):
        # color=True: click would otherwise strip CSI sequences from what it echoes
        return runner.invoke(app, ["--db", db, "--as", "admin", *args], color=True, env=env)

    return invoke


@pytest.fixture
def cli(hostile, monkeypatch):
    return _invoker(hostile, monkeypatch)


LISTINGS = [
    ("job", "list"),
    ("org", "list"),
    ("pool", "list"),
    ("domain", "list"),
    ("gpu-type", "list"),
    ("programme", "list"),
    ("voucher", "list"),
    ("user", "list"),
    ("policy", "history"),
    ("schedule", "--dry-run"),
    ("report", "usage", "--by", "domain"),
    ("report", "usage", "--by", "org"),
    ("report", "usage", "--by", "gpu-type"),
    ("report", "usage", "--by", "site"),
    ("report", "usage", "--by", "pool"),
    ("report", "subsidies"),
]


def _assert_shown_safely(result, args, texts=HOSTILE) -> None:
    where = " ".join(args)
    assert result.exit_code == 0, f"{where}: {result.output}"
    for raw in RAW:
        assert raw not in result.stdout, f"{where} printed {raw!r}"
    for text in texts:
        assert terminal(text) in result.stdout, f"{where} does not show {terminal(text)}"


def test_every_listing_shows_hostile_names_escaped(cli):
    for args in LISTINGS:
        _assert_shown_safely(cli(*args), args)
    # on a colour terminal, where rich would draw [link=...] as a live OSC-8 hyperlink
    for args in (("org", "list"), ("job", "list"), ("user", "list")):
        result = cli(*args, env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})
        assert result.exit_code == 0, result.output
        assert "\x1b[1m" in result.stdout  # the colour terminal really was in use
        assert "\x1b]8;" not in result.stdout
        assert "[link=file:///etc/passwd]x[/link]" in result.stdout
    # --json prints what is stored, exactly (json.dumps escapes control characters itself)
    result = cli("org", "list", "--json")
    assert result.exit_code == 0 and "\x1b" not in result.stdout
    assert set(HOSTILE) <= {row["name"] for row in json.loads(result.stdout)}


@SQLITE_ONLY  # escaping is rendering; names stored on PostgreSQL: the listing test
def test_job_show_prints_each_field_escaped(cli, hostile):
    with unit_of_work(hostile) as session:
        jobs = {
            j.name: j.id for j in session.scalars(select(JobRow).where(JobRow.state == "running"))
        }
    assert set(jobs) == set(HOSTILE)
    for text, job_id in jobs.items():
        result = cli("job", "show", str(job_id))
        _assert_shown_safely(result, ("job", "show", text), texts=(text, HOSTILE[1]))
        assert f"{'name':>13}: {terminal(text)}\n" in result.stdout


@SQLITE_ONLY  # escaping is rendering; names stored on PostgreSQL: the listing test
def test_policy_show_keeps_the_document_lines_but_escapes_the_rest(cli, hostile):
    with unit_of_work(hostile) as session:
        row = session.scalar(select(PolicyVersionRow).where(PolicyVersionRow.version == 3))
        row.document = "kind: fifo\n# \x1b[2J\u202e" + HOSTILE[1] + "\n"
    result = cli("policy", "show", "3")
    _assert_shown_safely(result, ("policy", "show"), texts=(HOSTILE[2],))
    assert result.stdout.endswith("kind: fifo\n# \\x1b[2J\\u202e" + HOSTILE[1] + "\n")


@SQLITE_ONLY  # escaping is rendering; names stored on PostgreSQL: the listing test
def test_errors_quoting_user_input_stay_one_visible_line(platform, monkeypatch):
    cli = _invoker(platform, monkeypatch)
    for args in (
        ("job", "list", "--org", "\x1b[31mx\u202e\ny"),
        ("job", "submit", "--org", "x\x1b]8;;http://e\x1b\\y", "--gpus", "1", "--hours", "1"),
        ("report", "subsidies", "--programme", "a\u200b\nb"),
        ("programme", "add", "--file", "p\x1b[2J\u202e\n.yaml"),  # paths are quoted raw
        ("job", "submit-batch", "b\x1b[2J\n.csv"),
        ("policy", "validate", "v\x1b[2J\n.yaml"),
    ):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1, result.stderr
        for raw in ("\x1b", "\u202e", "\u200b"):
            assert raw not in result.stderr


def test_scheduler_log_lines_are_one_visible_line(capsys):
    import logging

    from gpupool.cli.daemon import configure_logging

    configure_logging()
    logging.getLogger("gpupool.scheduler.daemon").error("round failed: %s", "x\x1b[2J\u202e\ny")
    err = capsys.readouterr().err
    assert err.endswith("ERROR round failed: x\\x1b[2J\\u202e\\ny\n")


@SQLITE_ONLY  # escaping is rendering; names stored on PostgreSQL: the listing test
def test_usage_chart_draws_names_that_look_like_mathtext(cli, hostile, tmp_path):
    with unit_of_work(hostile) as session:
        session.execute(update(DomainRow).where(DomainRow.name == "[/]").values(name="$\\frac$"))
        session.execute(
            update(LedgerEntryRow).where(LedgerEntryRow.domain == "[/]").values(domain="$\\frac$")
        )
    png = tmp_path / "usage.png"
    result = cli("report", "usage", "--png", str(png))
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:4] == b"\x89PNG"


# --- reports and plots -------------------------------------------------------

REPORT_HOSTILE = (
    *HOSTILE,
    "<script>alert(1)</script>",
    "[click](http://evil.example)",
    "http://bare.example",
    "a|b",
)


@pytest.fixture
def report_pieces(tmp_path):
    from gpupool.simulations.compare import CiRow

    png = tmp_path / "plot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    labels = list(REPORT_HOSTILE[:3])
    rows = [
        CiRow(group, "mean wait", {label: (1.0, 0.5) for label in labels})
        for group in REPORT_HOSTILE
    ]
    return dict(
        title=f"Scheme comparison on {REPORT_HOSTILE[6]}",
        scenario=REPORT_HOSTILE[6],
        labels=labels,
        seeds=[1, 2],
        rows=rows,
        plots=[("a plot", png)],
    )


def test_html_report_escapes_every_name(report_pieces, tmp_path):
    from gpupool.simulations.report import write_html

    text = write_html(tmp_path / "report.html", **report_pieces).read_text()
    assert "<script" not in text and "<a " not in text
    for raw in RAW:
        assert raw not in text
    for name in REPORT_HOSTILE:
        assert html_text(name) in text
    assert text.count("<h2>") == len(REPORT_HOSTILE) + 2  # one per group, plots, definitions


def test_markdown_report_renders_names_as_plain_text(report_pieces, tmp_path):
    from markdown_it import MarkdownIt

    from gpupool.simulations.report import write_markdown

    source = write_markdown(tmp_path / "report.md", **report_pieces).read_text()
    for raw in RAW:
        assert raw not in source
    html = MarkdownIt("commonmark").enable("table").render(source)
    assert "<script" not in html and "<a " not in html
    assert html.count("<table>") == len(REPORT_HOSTILE)
    # every table keeps one metric column plus one per scheme: no '|' split a cell
    assert html.count("<th>") == len(REPORT_HOSTILE) * (1 + len(report_pieces["labels"]))
    assert "[click](http://evil.example)" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_plots_draw_hostile_scheme_domain_and_programme_names(tmp_path):
    from gpupool.simulations import plots

    names = ["$\\frac$", "_hidden", "a\nb\x1b[31m", "[/]"]
    waits = {scheme: {domain: [0.0, 0.5, 2.0] for domain in names} for scheme in names}
    figure = plots.wait_cdf_figure(waits)
    titles = [ax.get_title() for ax in figure.axes if ax.get_visible() and ax.get_title()]
    assert titles == [plot_text(name) for name in sorted(names)]
    plots._save(figure, tmp_path / "cdf.png")
    curves = {scheme: ([0.0, 1.0], [0.0, 1.0]) for scheme in names}
    plots.plot_lines(curves, tmp_path / "lines.png", title="t", ylabel="y")
    plots.plot_burn_down(
        {s: {p: ([0.0, 1.0], [2.0, 1.0]) for p in names} for s in names}, tmp_path / "b.png"
    )
    plots.plot_shares(
        {s: {d: 0.5 for d in names} for s in names}, tmp_path / "s.png", ylabel="y", title="t"
    )
    for name in ("cdf", "lines", "b", "s"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


SCENARIO = """\
name: "[/]"
seed: 3
gpu_types:
  A100: {vendor: nvidia, memory_gb: 80, speed: 1.0, price_per_gpu_hour: 10.0}
pools:
  pa: {site: s1, gpu_type: A100, gpus: 8, gpus_per_node: 8}
domains:
  "[link=file:///etc/passwd]x[/link]": {weight: 1.0}
orgs:
  lab: {domain: "[link=file:///etc/passwd]x[/link]", budget: null}
workload:
  kind: synthetic
  hours: 2
  estimate: exact
  domains:
    "[link=file:///etc/passwd]x[/link]":
      rate_per_hour: 2
      gpus: {1: 100}
      runtime_hours: {uniform: {low: 0.2, high: 1}}
"""


def test_simulate_run_with_a_scenario_named_like_markup(tmp_path):
    scenario, policy = tmp_path / "s.yaml", tmp_path / "fifo.yaml"
    scenario.write_text(SCENARIO)
    policy.write_text("kind: fifo\n")
    args = ["simulate", "run", str(scenario), "--policy", str(policy), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "[/] under fifo" in result.stdout
    assert "[link=file:///etc/passwd]x[/lin" in result.stdout  # as text (cropped at 80 columns)
