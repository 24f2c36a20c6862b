"""Platform description for admins: `init`, `gpu-type|job-class|pool|domain|org add|list`,
and `job-class remove`.

Each `add` is one transaction through gpupool.scheduler.service (validation,
audit log); each `list` supports --json with the model's field names.
"""

from __future__ import annotations

import typer

from gpupool.cli.output import JSON_OPTION, actor, echo, local_database, platform, render, work

gpu_type_app = typer.Typer(no_args_is_help=True)
pool_app = typer.Typer(no_args_is_help=True)
job_class_app = typer.Typer(no_args_is_help=True)
domain_app = typer.Typer(no_args_is_help=True)
org_app = typer.Typer(no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.add_typer(gpu_type_app, name="gpu-type", help="GPU types: add, list.")
    app.add_typer(
        job_class_app,
        name="job-class",
        help="Job classes (how fast a kind of job runs on each GPU type): add, list, remove.",
    )
    app.add_typer(pool_app, name="pool", help="GPU pools at sites: add, list.")
    app.add_typer(domain_app, name="domain", help="Application domains: add, list.")
    app.add_typer(org_app, name="org", help="Organisations: add, list.")


def init(
    ctx: typer.Context,
    demo: bool = typer.Option(False, "--demo", help="Create the demo platform and its users."),
    force: bool = typer.Option(
        False, "--force", help="Erase an existing database first (admins; audited)."
    ),
    jobs: bool = typer.Option(True, "--jobs/--no-jobs", help="Submit demo jobs with --demo."),
    admin: str | None = typer.Option(
        None, "--admin", help="The first admin's name (default: your OS user name)."
    ),
) -> None:
    """Create (or with --force recreate) the database; add the first admin and print its token.

    The first admin's API token is printed once, only when the platform has no
    users yet. --force drops every table, the audit log included; the new log
    starts with a `platform.reset` row saying who erased what.
    """
    from gpupool.scheduler.database import forget_checks, make_engine
    from gpupool.scheduler.migrate import reset, upgrade
    from gpupool.scheduler.permissions import OWNER

    url = local_database(ctx, "init")
    who = actor(ctx)
    engine = make_engine(url)
    try:
        if force:
            _require_reset(engine, who)
            erased = reset(engine)
            forget_checks()
        else:
            upgrade(engine)
    finally:
        engine.dispose()
    with work(ctx) as session:
        if force:
            from gpupool.scheduler.permissions import audit

            audit(session, who, "platform.reset", "platform", before={"rows": erased})
        first = _first_admin(session, admin)
        if demo:  # after --force, `who` (checked above) is gone with the old users table
            _demo(session, OWNER if force or first else who, jobs)
    typer.echo("demo platform created" if demo else "database ready")
    if first is not None:
        name, token = first
        typer.echo(f"first admin: {name}")
        typer.echo(f"token: {token}")
        typer.echo(
            f"that token is shown once: store it now (GPUPOOL_TOKEN); "
            f"`gpupool token create {name}` makes another",
            err=True,
        )


def _require_reset(engine, who: str) -> None:
    """Erasing the platform is an admin's act; a refusal is audited in the old log."""
    from gpupool.scheduler.database import unit_of_work
    from gpupool.scheduler.permissions import OWNER, authorize

    if who == OWNER:
        return  # the database's holder: it could drop the tables itself anyway
    with unit_of_work(engine) as session:
        authorize(session, who, "platform.reset", "platform")


def _first_admin(session, name: str | None) -> tuple[str, str] | None:
    """The first admin and its token, when the platform has no users; else None."""
    from sqlalchemy import func, select

    from gpupool.model import GpupoolError
    from gpupool.scheduler import tokens
    from gpupool.scheduler.orm import UserRow
    from gpupool.scheduler.permissions import ADMIN, OWNER, add_user

    if session.scalar(select(func.count()).select_from(UserRow)):
        if name is not None:
            raise GpupoolError(
                "the platform already has users: add another admin with "
                f"`gpupool user add {name.strip()} --role admin`",
                location="--admin",
            )
        return None
    row = add_user(session, OWNER, _os_user() if name is None else name, ADMIN)
    _, raw = tokens.create_token(session, OWNER, row.name, tokens.parse_duration("90d"))
    return row.name, raw


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "admin"


def _demo(session, who: str, jobs: bool) -> None:
    from gpupool.model import GpupoolError
    from gpupool.scheduler import repository
    from gpupool.scheduler.demo import create_demo_platform, create_demo_users

    if repository.list_gpu_types(session) or repository.list_orgs(session):
        raise GpupoolError(
            "the database already describes a platform; add --force to replace it",
            location="--demo",
        )
    create_demo_platform(session, who, with_jobs=jobs)
    create_demo_users(session, who)


# --- GPU types ---------------------------------------------------------------


@gpu_type_app.command("add")
def gpu_type_add(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    vendor: str = typer.Option(..., "--vendor"),
    memory: str = typer.Option(..., "--memory", help="GPU memory in GB."),
    speed: str = typer.Option("1.0", "--speed", help="Relative speed (A100 = 1.0)."),
    domestic: bool = typer.Option(False, "--domestic", help="A domestic accelerator."),
) -> None:
    """Add a GPU type."""
    platform(ctx).add_gpu_type(name, vendor, memory, speed, domestic)
    echo(f"added GPU type {name}")


@gpu_type_app.command("list")
def gpu_type_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List GPU types."""
    rows = platform(ctx).list_gpu_types()
    columns = [
        ("name", "name"),
        ("vendor", "vendor"),
        ("memory_gb", "memory GB"),
        ("speed", "speed"),
        ("domestic", "domestic"),
    ]
    render(rows, columns, as_json, title="GPU types")


# --- job classes -------------------------------------------------------------


@job_class_app.command("add")
def job_class_add(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    speed: list[str] = typer.Option(
        ...,
        "--speed",
        help="GPU_TYPE=SPEED: the class's speed on that type, A100 = 1 (repeat; a type "
        "left out runs the class at the type's own speed).",
    ),
) -> None:
    """Add a job class: its speed on each GPU type (Gavel's throughput matrix)."""
    platform(ctx).add_job_class(name, parse_speeds(speed))
    echo(f"added job class {name}")


def parse_speeds(pairs: list[str]) -> dict[str, str]:
    """``TYPE=SPEED`` options as {type: speed text}; the service checks both parts."""
    from gpupool.model import GpupoolError

    speeds: dict[str, str] = {}
    for pair in pairs:
        type_name, equals, value = pair.rpartition("=")
        if not equals or not type_name.strip():
            raise GpupoolError(f"must be GPU_TYPE=SPEED, got {pair!r}", location="--speed")
        if type_name.strip() in speeds:
            raise GpupoolError(f"GPU type {type_name.strip()} is given twice", location="--speed")
        speeds[type_name.strip()] = value.strip()
    return speeds


@job_class_app.command("list")
def job_class_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List job classes and their speeds."""
    rows = platform(ctx).list_job_classes()
    if not as_json:
        rows = [
            {**row, "speeds": ", ".join(f"{t}={s:g}" for t, s in row["speeds"].items())}
            for row in rows
        ]
    render(rows, [("name", "class"), ("speeds", "speed per GPU type")], as_json, "job classes")


@job_class_app.command("remove")
def job_class_remove(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Remove a job class that no unfinished job names."""
    platform(ctx).remove_job_class(name)
    echo(f"removed job class {name}")


# --- pools -------------------------------------------------------------------


@pool_app.command("add")
def pool_add(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    site: str = typer.Option(..., "--site"),
    gpu_type: str = typer.Option(..., "--gpu-type"),
    gpus: str = typer.Option(..., "--gpus", help="Total GPUs in the pool."),
    gpus_per_node: str = typer.Option("8", "--gpus-per-node"),
    price: str = typer.Option(..., "--price", help="Price per GPU-hour."),
) -> None:
    """Add a pool of identical GPUs at a site."""
    platform(ctx).add_pool(name, site, gpu_type, gpus, gpus_per_node, price)
    echo(f"added pool {name}")


@pool_app.command("list")
def pool_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List pools with their free GPUs now."""
    rows = platform(ctx).list_pools()
    columns = [
        ("name", "pool"),
        ("site", "site"),
        ("gpu_type", "GPU type"),
        ("gpus", "GPUs"),
        ("gpus_per_node", "per node"),
        ("free_gpus", "free"),
        ("price_per_gpu_hour", "price/GPU-h"),
    ]
    render(rows, columns, as_json, title="pools")


# --- domains -----------------------------------------------------------------


@domain_app.command("add")
def domain_add(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    weight: str = typer.Option("1.0", "--weight", help="Priority weight (general = 1.0)."),
) -> None:
    """Add an application domain."""
    platform(ctx).add_domain(name, weight)
    echo(f"added domain {name}")


@domain_app.command("list")
def domain_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List domains and their priority weights."""
    rows = platform(ctx).list_domains()
    render(rows, [("name", "domain"), ("weight", "weight")], as_json, title="domains")


# --- organisations -----------------------------------------------------------


@org_app.command("add")
def org_add(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    domain: str = typer.Option(..., "--domain"),
    budget: str | None = typer.Option(None, "--budget", help="Spend cap per period (yuan)."),
) -> None:
    """Add an organisation in a domain."""
    platform(ctx).add_org(name, domain, budget)
    echo(f"added organisation {name}")


@org_app.command("list")
def org_list(
    ctx: typer.Context,
    domain: str | None = typer.Option(None, "--domain", help="Only this domain's orgs."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List organisations."""
    rows = platform(ctx).list_orgs(domain)
    render(
        rows,
        [("name", "org"), ("domain", "domain"), ("budget", "budget")],
        as_json,
        title="organisations",
    )
