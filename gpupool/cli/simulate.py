"""`gpupool simulate run|compare`: replay a scenario under policy documents.

Numbers are taken as text and checked here, so a bad value gets the same
one-line ``error: --seed: ...`` (exit 2) as a bad file. Both files are parsed
before anything is written or any worker starts; outputs are written only
once every run has succeeded. The simulation stack (SimPy, matplotlib, rich)
is imported inside the commands, so `gpupool job submit` never pays for it.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import typer

from gpupool import limits
from gpupool.cli.output import echo
from gpupool.model import GpupoolError

app = typer.Typer(no_args_is_help=True)

PROGRESS_PERIOD_S = 0.25  # redraw the bar at most four times a second


def _number(
    text: str | None, option: str, *, integer: bool, minimum: float, limit: limits.Limit
) -> float | None:
    """``text`` as a number (ASCII decimal, gpupool.limits) >= ``minimum`` within ``limit``."""
    if text is None:
        return None
    value = limits.to_number(text)
    if value is not None and integer and not isinstance(value, int):
        value = None
    if value is None:
        kind = "an integer" if integer else "a number"
        raise GpupoolError(f"must be {kind}, not {text!r}", location=option)
    if value < minimum:
        raise GpupoolError(f"must be at least {minimum:g}, not {text}", location=option)
    return limit.check(value, option, text)


def _out_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise GpupoolError("exists and is not a directory", location=f"--out {path}")
    return path


class _Bar:
    """A rich progress bar fed by the engine's progress callback, redrawn at most 4 Hz."""

    def __init__(self, progress, task) -> None:
        self.progress, self.task = progress, task
        self._last = 0.0

    def __call__(self, hours: float, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_PERIOD_S and done < total:
            return
        self._last = now
        self.progress.update(
            self.task, completed=done, total=total, description=f"t = {hours:,.1f} h"
        )


@app.command()
def run(
    scenario: Path = typer.Argument(..., help="Scenario file (YAML)."),
    policy: Path = typer.Option(..., "--policy", help="Policy document (YAML)."),
    seed: str | None = typer.Option(None, "--seed", help="Override the scenario's seed."),
    out: Path = typer.Option(Path("simulation-out"), "--out", help="Directory for the results."),
    until: str | None = typer.Option(None, "--until", help="Stop after this many hours."),
    jobs: str | None = typer.Option(None, "--jobs", help="Replay only the first N jobs."),
) -> None:
    """Replay SCENARIO under one policy: progress, a summary, CSV + JSON + PNGs in --out."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from gpupool.simulations.compare import RunRequest, execute, load_inputs

    request = RunRequest(
        scenario=str(scenario),
        policy=str(policy),
        label=policy.stem,
        seed=_number(seed, "--seed", integer=True, minimum=0, limit=limits.SEED),
        until_hours=_number(until, "--until", integer=False, minimum=0, limit=limits.SIM_HOURS),
        max_jobs=_number(jobs, "--jobs", integer=True, minimum=1, limit=limits.MAX_JOBS),
    )
    out = _out_dir(out)
    inputs = load_inputs(request)  # bad files fail here, before the progress bar draws
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    # drawn only on a terminal: elsewhere rich's stop leaves a blank line on stderr, which
    # would come before an error raised during the run (errors are one line)
    quiet = not console.is_terminal
    with Progress(
        *columns, TextColumn("jobs done"), console=console, transient=True, disable=quiet
    ) as bar:
        task = bar.add_task("loading", total=None)
        result, summary = execute(request, progress=_Bar(bar, task), inputs=inputs)
    paths = _write_run(result, summary, out)
    _print_summary(summary.metrics)
    echo(f"wrote {', '.join(p.name for p in paths)} to {out}")


def _write_run(result, summary, out: Path) -> list[Path]:
    from gpupool.simulations.metrics import write_jobs_csv, write_metrics_json
    from gpupool.simulations.plots import plot_lines, plot_wait_cdf

    out.mkdir(parents=True, exist_ok=True)
    label = summary.label
    paths = [out / "jobs.csv", out / "metrics.json"]
    write_jobs_csv(result, paths[0])
    write_metrics_json(summary.metrics, paths[1])
    paths.append(plot_wait_cdf({label: summary.waits}, out / "wait_cdf.png"))
    paths.append(
        plot_lines(
            {label: summary.utilisation},
            out / "utilisation.png",
            title="GPU utilisation (busy GPUs / all GPUs)",
            ylabel="GPUs busy",
            fraction=True,
        )
    )
    paths.append(
        plot_lines(
            {label: summary.subsidy},
            out / "subsidy.png",
            title="Subsidy paid by the platform, cumulative",
            ylabel="subsidy (currency)",
        )
    )
    return paths


# Short two-line headers and compact numbers, so the table fits 80 columns even
# for a whole trace; everything else (and every exact figure) is in metrics.json.
SUMMARY_COLUMNS = (
    ("jobs", "jobs", 0),
    ("finished", "done", 0),
    ("queueing_delay_hours.mean", "wait h\nmean", 2),
    ("queueing_delay_hours.p95", "wait h\np95", 2),
    ("slowdown.mean", "slow-\ndown", 2),
    ("effective_gpu_hours", "eff.\nGPU-h", 0),
    ("subsidy", "subsidy", 0),
    ("org_pays", "orgs\npaid", 0),
)


def compact(value: float, decimals: int) -> str:
    """At most 7 characters: ``0.25``, ``12.5``, ``1,234``, ``98.8k``, ``1.23M``."""
    size = abs(value)
    if size >= 999_500:
        return f"{value / 1e6:.3g}M"
    if size >= 99_999.5:
        return f"{value / 1e3:.0f}k"
    if size >= 9_999.5:
        return f"{value / 1e3:.1f}k"
    if size >= 99.995 or decimals == 0:
        return f"{value:,.0f}"
    return f"{value:.{decimals}f}"


def _print_summary(metrics: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from gpupool.safe_text import rich_text
    from gpupool.simulations.compare import lookup

    platform = metrics["platform"]
    table = Table(
        title=rich_text(f"{metrics['scenario']} under {metrics['policy']}"),
        title_justify="left",
        box=box.SIMPLE_HEAD,  # no vertical rules: two characters a column for the numbers
        show_edge=False,
        padding=(0, 0, 0, 1),  # with the box's blank separator: two spaces between columns
    )
    table.add_column("domain", no_wrap=True)
    for _, header, _ in SUMMARY_COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    groups = [*metrics["domains"].items(), ("platform", platform)]
    for index, (name, scope) in enumerate(groups):
        cells = []
        for path, _, decimals in SUMMARY_COLUMNS:
            value = lookup(scope, path)
            cells.append("-" if value is None else compact(value, decimals))
        above_platform = index == len(groups) - 2  # a rule above the platform row
        table.add_row(rich_text(name), *cells, end_section=above_platform)
    console = Console()
    console.print(table)
    conservation = metrics["conservation"]
    util = platform["utilisation"]
    jain = platform["jain_slowdown"]
    console.print(
        f"utilisation {util:.1%} over the whole run  " if util is not None else "",
        f"idle while jobs wait {platform['idle_while_waiting_gpu_hours']:,.0f} GPU-h",
        sep="",
    )
    console.print(
        f"Jain(1/slowdown) {jain:.3f}  " if jain is not None else "",
        f"at the end: waiting {conservation['waiting']}  running {conservation['running']}  "
        f"dropped {sum(conservation['dropped'].values())}",
        sep="",
    )
    _print_preemptions(console, metrics)
    idle = {
        name: scope["idle_while_waiting_gpu_hours"]
        for name, scope in metrics["domains"].items()
        if scope.get("idle_while_waiting_gpu_hours")
    }
    if idle:  # per domain: free GPU-h where one of its waiting jobs would have fitted
        console.print(
            rich_text(
                "idle while its jobs wait, GPU-h: "
                + "  ".join(f"{name} {hours:,.0f}" for name, hours in idle.items())
            )
        )
    shares = platform.get("gpu_hours_share_by_gpu_type") or {}
    if len(shares) > 1:
        console.print(
            rich_text(
                "GPU-hours by type: "
                + "  ".join(
                    f"{name} {share:.1%}" for name, share in shares.items() if share is not None
                )
            )
        )
    if platform.get("budget_overrun"):
        console.print(
            f"orgs paid {platform['budget_overrun']:,.2f} beyond their budgets in "
            f"{platform['budget_overrun_periods']} org-period(s) (charged at run ends)"
        )


def _print_preemptions(console, metrics: dict) -> None:
    """Preemptions and the GPU-hours they lost (discarded work + restarts), per domain."""
    from gpupool.safe_text import rich_text

    platform = metrics["platform"]
    if not platform["preemptions"]:
        return
    hit = [
        f"{name} {scope['preemptions']}/{scope['lost_gpu_hours']:,.1f}"
        for name, scope in metrics["domains"].items()
        if scope["preemptions"]
    ]
    console.print(
        rich_text(
            f"preemptions {platform['preemptions']}, lost {platform['lost_gpu_hours']:,.1f} GPU-h"
            " (discarded work + restarts); by domain, preemptions/lost GPU-h: " + "  ".join(hit)
        )
    )


@app.command()
def compare(
    scenario: list[Path] = typer.Argument(
        ..., help="Scenario file(s) (YAML): several = schemes that differ in the scenario."
    ),
    policy: list[Path] = typer.Option(..., "--policy", help="Policy document; repeat."),
    seeds: str = typer.Option("5", "--seeds", help="How many seeds (workload draws) per scheme."),
    out: Path = typer.Option(Path("comparison"), "--out", help="Directory for the report."),
    until: str | None = typer.Option(None, "--until", help="Stop each run after these hours."),
    jobs: str | None = typer.Option(None, "--jobs", help="Replay only the first N jobs."),
    workers: str | None = typer.Option(None, "--workers", help="Processes (default: cores)."),
) -> None:
    """Compare schemes on the same workloads: CI table, plots and report.html in --out.

    A scheme is a policy document, or, with several scenario files (e.g. the
    same trace under different subsidy programmes), a scenario x policy pair.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from gpupool.policies.document import check_names, load_policy_file
    from gpupool.simulations.compare import RunRequest, run_grid, scheme_labels
    from gpupool.simulations.scenario import load_scenario

    count = int(_number(seeds, "--seeds", integer=True, minimum=1, limit=limits.SEEDS))
    until_hours = _number(until, "--until", integer=False, minimum=0, limit=limits.SIM_HOURS)
    max_jobs = _number(jobs, "--jobs", integer=True, minimum=1, limit=limits.MAX_JOBS)
    processes = _number(workers, "--workers", integer=True, minimum=1, limit=limits.WORKERS)
    out = _out_dir(out)
    schemes = [(s, p) for s in scenario for p in policy]
    labels = _scheme_labels(scenario, policy, scheme_labels)
    # Parse every file here first: a bad one is one error line, before any worker starts.
    documents = [load_policy_file(path) for path in policy]
    scenario_objs = [load_scenario(path, max_jobs=1) for path in scenario]
    for document in documents:  # each policy runs on every scenario: it must fit each
        for scen in scenario_objs:
            check_names(document, scen.gpu_types, scen.domains)
    scenario_obj = scenario_objs[0]
    seed_list = [scenario_obj.seed + i for i in range(count)]
    requests = [
        RunRequest(str(scen), str(path), label, seed, until_hours, max_jobs)
        for seed in seed_list
        for (scen, path), label in zip(schemes, labels, strict=True)
    ]
    columns = (TextColumn("runs"), BarColumn(), MofNCompleteColumn())
    console = Console()
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task("runs", total=len(requests))
        summaries = run_grid(
            requests, workers=processes and int(processes), on_done=lambda _: bar.advance(task)
        )
    names = ", ".join(dict.fromkeys(s.name for s in scenario_objs))
    report = _write_comparison(summaries, labels, seed_list, names, out)
    echo(f"wrote {report} ({len(requests)} runs: {len(labels)} schemes x {count} seeds)")


def _scheme_labels(scenarios: list[Path], policies: list[Path], label_files) -> list[str]:
    """Policy stems; scenario stems when several scenarios share one policy; both otherwise."""
    if len(scenarios) == 1:
        return label_files(policies)
    if len(policies) == 1:
        return label_files(scenarios)
    return [f"{s}/{p}" for s in label_files(scenarios) for p in label_files(policies)]


def _write_comparison(summaries, labels, seeds, scenario_name: str, out: Path) -> Path:
    from gpupool.simulations.compare import ci_table
    from gpupool.simulations.metrics import write_metrics_json
    from gpupool.simulations.plots import plot_lines, plot_wait_cdf
    from gpupool.simulations.report import write_html, write_markdown

    out.mkdir(parents=True, exist_ok=True)
    first = {s.label: s for s in reversed(summaries)}  # the first seed's run of each scheme
    plots = [
        (
            f"Queueing-delay CDF per domain (seed {seeds[0]})",
            plot_wait_cdf({label: first[label].waits for label in labels}, out / "wait_cdf.png"),
        ),
        (
            f"Utilisation over time (seed {seeds[0]})",
            plot_lines(
                {label: first[label].utilisation for label in labels},
                out / "utilisation.png",
                title="GPU utilisation (busy GPUs / all GPUs)",
                ylabel="GPUs busy",
                fraction=True,
            ),
        ),
        (
            f"Subsidy spent over time (seed {seeds[0]})",
            plot_lines(
                {label: first[label].subsidy for label in labels},
                out / "subsidy.png",
                title="Subsidy paid by the platform, cumulative",
                ylabel="subsidy (currency)",
            ),
        ),
    ]
    plots += _subsidy_plots(first, labels, seeds[0], out)
    rows = ci_table(summaries)
    runs = [{"scheme": s.label, "seed": s.seed, "metrics": s.metrics} for s in summaries]
    write_metrics_json({"runs": runs}, out / "metrics.json")
    pieces = dict(
        title=f"Scheme comparison on {scenario_name}",
        scenario=scenario_name,
        labels=labels,
        seeds=seeds,
        rows=rows,
        plots=plots,
    )
    write_markdown(out / "report.md", **pieces)
    return write_html(out / "report.html", **pieces)


def _subsidy_plots(first, labels, seed: int, out: Path) -> list[tuple[str, Path]]:
    from gpupool.simulations.plots import plot_burn_down, plot_shares

    shares = {
        label: {
            domain: metrics.get("subsidised_share")
            for domain, metrics in first[label].metrics["domains"].items()
        }
        for label in labels
    }
    type_shares = {
        label: first[label].metrics["platform"].get("gpu_hours_share_by_gpu_type", {})
        for label in labels
    }
    return [
        (
            f"Programme budget burn-down (seed {seed})",
            plot_burn_down(
                {label: first[label].burn_down for label in labels}, out / "burn_down.png"
            ),
        ),
        (
            f"Share of subsidised effective GPU-hours per domain (seed {seed})",
            plot_shares(
                shares,
                out / "subsidised_share.png",
                ylabel="share of subsidised effective GPU-h",
                title="Who the subsidy served",
            ),
        ),
        (
            f"Share of GPU-hours per GPU type (seed {seed})",
            plot_shares(
                type_shares,
                out / "gpu_types.png",
                ylabel="share of GPU-hours",
                title="Where the work ran",
            ),
        ),
    ]


@app.command()
def sweep(
    file: Path = typer.Argument(..., help="Sweep file (YAML): scenarios, policies, parameters."),
    out: Path = typer.Option(Path("sweep-out"), "--out", help="Directory for the results."),
    workers: str | None = typer.Option(None, "--workers", help="Local processes (default: cores)."),
    ray: str | None = typer.Option(
        None, "--ray", help="Run on the Ray cluster at ADDRESS (host:port) instead."
    ),
) -> None:
    """Run a grid or random search: results.csv, .parquet and report.html in --out.

    Finished runs are kept in --out/runs; run the same command again after an
    interruption and only the missing runs run.
    """
    from gpupool.simulations import sweep as sweeps
    from gpupool.simulations.sweep_report import write_report

    processes = _number(workers, "--workers", integer=True, minimum=1, limit=limits.WORKERS)
    if processes is not None and ray is not None:
        raise GpupoolError("give --workers or --ray, not both", location="--workers")
    out = _out_dir(out)
    spec = sweeps.load_sweep(file)
    sweeps.check_sweep(spec)  # every file and value read before anything runs or is written
    points = sweeps.plan(spec)
    store = sweeps.RunStore(out)
    done = len({p.run_id for p in points} & store.done())
    where = f"the Ray cluster at {ray}" if ray else "local processes"
    echo(f"sweep {spec.name}: {len(points)} runs, {done} already done; running the rest on {where}")
    with _runs_bar(len(points), done) as advance:
        sweeps.run_sweep(
            points,
            store,
            workers=processes and int(processes),
            ray_address=ray,
            on_done=lambda _: advance(),
        )
    rows = sweeps.table_rows(spec, points, store)
    table = sweeps.write_table(rows, out / "results.csv")
    sweeps.write_parquet(rows, out / "results.parquet")
    report = write_report(spec, rows, out)
    echo(f"wrote {table.name}, results.parquet and {report.name} to {out}")


PLAIN_PROGRESS_S = 30.0  # off a terminal (a log file): a line at most this often


@contextmanager
def _runs_bar(total: int, done: int):
    """Yield a function to call per finished run. On a terminal: a bar with runs done of
    all, elapsed and time left; elsewhere (a batch job's log) a line on stdout at most
    every PLAIN_PROGRESS_S seconds and at the last run, so long sweeps show progress."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal:
        yield _plain_progress(total, done)
        return
    columns = (TextColumn("runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    columns += (TextColumn("left"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("runs", total=total, completed=done)
        yield lambda: bar.advance(task)


def _plain_progress(total: int, done: int):
    start = last = time.monotonic()
    count = done

    def advance() -> None:
        nonlocal count, last
        count += 1
        now = time.monotonic()
        if now - last >= PLAIN_PROGRESS_S or count == total:
            last = now
            echo(f"runs done: {count} of {total} ({now - start:,.0f} s)")

    return advance
