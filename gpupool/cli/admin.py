"""Platform description for admins: `init`, and `gpu-type|pool|domain|org add|list`.

Each `add` is one transaction through gpupool.scheduler.service (validation,
audit log); each `list` supports --json with the model's field names.
"""

from __future__ import annotations

import typer

from gpupool.cli.output import JSON_OPTION, actor, db_url, echo, render, work

gpu_type_app = typer.Typer(no_args_is_help=True)
pool_app = typer.Typer(no_args_is_help=True)
domain_app = typer.Typer(no_args_is_help=True)
org_app = typer.Typer(no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.add_typer(gpu_type_app, name="gpu-type", help="GPU types: add, list.")
    app.add_typer(pool_app, name="pool", help="GPU pools at sites: add, list.")
    app.add_typer(domain_app, name="domain", help="Application domains: add, list.")
    app.add_typer(org_app, name="org", help="Organisations: add, list.")


def init(
    ctx: typer.Context,
    demo: bool = typer.Option(False, "--demo", help="Create the demo platform."),
    force: bool = typer.Option(False, "--force", help="Erase an existing database first."),
    jobs: bool = typer.Option(True, "--jobs/--no-jobs", help="Submit demo jobs with --demo."),
) -> None:
    """Create (or with --force recreate) the database schema; --demo fills it."""
    from gpupool.model import GpupoolError
    from gpupool.scheduler import repository
    from gpupool.scheduler.database import forget_checks, make_engine
    from gpupool.scheduler.demo import create_demo_platform
    from gpupool.scheduler.migrate import reset, upgrade

    engine = make_engine(db_url(ctx))
    try:
        if force:
            reset(engine)
            forget_checks()
        else:
            upgrade(engine)
    finally:
        engine.dispose()
    if demo:
        with work(ctx) as session:
            if repository.list_gpu_types(session) or repository.list_orgs(session):
                raise GpupoolError(
                    "the database already describes a platform; add --force to replace it",
                    location="--demo",
                )
            create_demo_platform(session, actor(ctx), with_jobs=jobs)
    typer.echo("demo platform created" if demo else "database ready")


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
    from gpupool.scheduler.service import add_gpu_type

    with work(ctx) as session:
        add_gpu_type(session, actor(ctx), name, vendor, memory, speed, domestic)
    echo(f"added GPU type {name}")


@gpu_type_app.command("list")
def gpu_type_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List GPU types."""
    from gpupool.scheduler import repository
    from gpupool.scheduler.service import gpu_type_view

    with work(ctx) as session:
        rows = [gpu_type_view(r) for r in repository.list_gpu_types(session)]
    columns = [
        ("name", "name"),
        ("vendor", "vendor"),
        ("memory_gb", "memory GB"),
        ("speed", "speed"),
        ("domestic", "domestic"),
    ]
    render(rows, columns, as_json, title="GPU types")


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
    from gpupool.scheduler.service import add_pool

    with work(ctx) as session:
        add_pool(session, actor(ctx), name, site, gpu_type, gpus, gpus_per_node, price)
    echo(f"added pool {name}")


@pool_app.command("list")
def pool_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List pools with their free GPUs now."""
    from gpupool.scheduler.service import pool_views

    with work(ctx) as session:
        rows = pool_views(session)
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
    from gpupool.scheduler.service import add_domain

    with work(ctx) as session:
        add_domain(session, actor(ctx), name, weight)
    echo(f"added domain {name}")


@domain_app.command("list")
def domain_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List domains and their priority weights."""
    from gpupool.scheduler import repository
    from gpupool.scheduler.service import domain_view

    with work(ctx) as session:
        rows = [domain_view(r) for r in repository.list_domains(session)]
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
    from gpupool.scheduler.service import add_org

    with work(ctx) as session:
        add_org(session, actor(ctx), name, domain, budget)
    echo(f"added organisation {name}")


@org_app.command("list")
def org_list(
    ctx: typer.Context,
    domain: str | None = typer.Option(None, "--domain", help="Only this domain's orgs."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List organisations."""
    from gpupool.scheduler import repository
    from gpupool.scheduler.service import org_view

    with work(ctx) as session:
        rows = [org_view(r) for r in repository.list_orgs(session, domain)]
    render(
        rows,
        [("name", "org"), ("domain", "domain"), ("budget", "budget")],
        as_json,
        title="organisations",
    )
