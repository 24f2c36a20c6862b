"""Subsidy programmes and vouchers: `gpupool programme add|list`, `gpupool voucher award|list`.

Options are turned into the same declaration a programme file holds and parsed
by gpupool.accounting.declarations, so the command line and ``--file`` accept
exactly the same programmes and report problems the same way (naming the
option, or ``file:line field`` for a file). Each command is one transaction
through gpupool.scheduler.accounts: a bad value writes nothing.
"""

from __future__ import annotations

import typer

from gpupool.cli.output import JSON_OPTION, echo, platform, render
from gpupool.limits import to_number

programme_app = typer.Typer(no_args_is_help=True)
voucher_app = typer.Typer(no_args_is_help=True)

_OPTION_OF = {
    "name": "NAME",
    "period": "--period",
    "budget": "--budget",
    "rate": "--rate",
    "domains": "--domain",
    "orgs": "--org",
    "gpu_type_rates": "--gpu-type-rate",
    "exchange_rates": "--exchange",
    "vouchers": "--vouchers",
    "org_cap": "--org-cap",
    "end_of_period": "--end",
    "when_exhausted": "--when-exhausted",
    "job_cap": "--job-cap",
    "pacing": "--pacing",
    "org_share": "--org-share",
}


class _OptionEntry(dict):
    """A declaration built from options; errors name the option they came from."""

    location = "programme"

    def where(self, key: str) -> str:
        return _OPTION_OF.get(key, key)


def _number(text: str | None, option: str) -> float | str | None:
    """Numbers (ASCII decimal text, gpupool.limits) stay numbers; anything else is
    handed on for the parser to reject."""
    if text is None:
        return None
    number = to_number(text)
    return text if number is None else float(number)


def _pairs(items: list[str], option: str) -> dict[str, float | str]:
    from gpupool.model import GpupoolError

    pairs: dict[str, float | str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise GpupoolError(f"expected TYPE=NUMBER, got {item!r}", location=option)
        pairs[name.strip()] = _number(value.strip(), option)
    return pairs


def _end_of_period(text: str) -> object:
    if text.startswith("carry-over:"):
        return {"carry_over": _number(text.split(":", 1)[1], "--end")}
    return text


def _declaration(name: str, **options) -> _OptionEntry:
    entry = _OptionEntry(name=name)
    for key, value in options.items():
        if value not in (None, [], {}):
            entry[key] = value
    return entry


@programme_app.command("add")
def programme_add(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Programme name (or use --file)."),
    file: str | None = typer.Option(None, "--file", help="YAML file with a programmes: list."),
    period: str | None = typer.Option(
        None, "--period", help="2026-Q4, 2026-11, 2026, monthly, quarterly or yearly."
    ),
    budget: str | None = typer.Option(None, "--budget", help="Money per programme period."),
    rate: str | None = typer.Option(None, "--rate", help="Share of the price paid (0-1)."),
    domain: list[str] = typer.Option([], "--domain", help="Eligible domain (repeatable)."),
    org: list[str] = typer.Option([], "--org", help="Eligible organisation (repeatable)."),
    gpu_type_rate: list[str] = typer.Option(
        [], "--gpu-type-rate", help="TYPE=RATE replacing --rate on that type (repeatable)."
    ),
    exchange: list[str] = typer.Option(
        [], "--exchange", help="TYPE=GPU-hours one voucher hour buys (implies --vouchers)."
    ),
    vouchers: bool = typer.Option(False, "--vouchers", help="Pay only usage vouchers cover."),
    org_cap: str | None = typer.Option(None, "--org-cap", help="Most subsidy per org per period."),
    end: str | None = typer.Option(None, "--end", help="expire or carry-over:SHARE."),
    when_exhausted: str | None = typer.Option(
        None, "--when-exhausted", help="wait (jobs wait) or full-price (run unsubsidised)."
    ),
    job_cap: str | None = typer.Option(None, "--job-cap", help="Most subsidy one job gets."),
    pacing: str | None = typer.Option(
        None, "--pacing", help="none, or even (each period's budget released evenly)."
    ),
    org_share: str | None = typer.Option(
        None, "--org-share", help="Most share (0-1) of a period's budget one org gets."
    ),
) -> None:
    """Create a subsidy programme from options, or every programme in --file."""
    from gpupool.accounting.declarations import parse_programmes
    from gpupool.model import GpupoolError

    declarations = None
    if (name is None) == (file is None):
        raise GpupoolError("give a programme NAME or --file, not both", location="NAME")
    if file is not None:
        programmes = parse_programmes(_compose(file), file)
    else:
        exchange_rates = _pairs(exchange, "--exchange")
        entry = _declaration(
            name,
            period=period,
            budget=_number(budget, "--budget"),
            rate=_number(rate, "--rate"),
            domains=domain,
            orgs=org,
            gpu_type_rates=_pairs(gpu_type_rate, "--gpu-type-rate"),
            exchange_rates=exchange_rates,
            vouchers=True if vouchers or exchange_rates else None,
            org_cap=_number(org_cap, "--org-cap"),
            end_of_period=None if end is None else _end_of_period(end),
            when_exhausted=None if when_exhausted is None else when_exhausted.replace("-", "_"),
            job_cap=_number(job_cap, "--job-cap"),
            pacing=pacing,
            org_share=_number(org_share, "--org-share"),
        )
        programmes = parse_programmes([entry], "programme")  # errors name the options
        declarations = [dict(entry)]
    platform(ctx).add_programmes(declarations, file)
    echo(f"added programme {', '.join(p.name for p in programmes)}")


def _compose(path: str):
    from gpupool import located_yaml
    from gpupool.files import PROGRAMMES

    return located_yaml.load(path, PROGRAMMES)


@programme_app.command("list")
def programme_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Programmes with their rules, subsidy paid so far and budget left now."""
    rows = platform(ctx).list_programmes()
    render(
        rows,
        [
            ("name", "name"),
            ("period", "period"),
            ("rate", "rate"),
            ("domains", "domains"),
            ("orgs", "orgs"),
            ("vouchers", "vouchers"),
            ("budget", "budget"),
            ("subsidy_paid", "paid"),
            ("budget_left_now", "left now"),
            ("org_cap", "org cap"),
            ("job_cap", "job cap"),
            ("pacing", "pacing"),
            ("org_share", "org share"),
            ("when_exhausted", "when exhausted"),
        ],
        as_json,
    )


@voucher_app.command("award")
def voucher_award(
    ctx: typer.Context,
    org: str = typer.Argument(..., metavar="ORG"),
    programme: str = typer.Option(..., "--programme", help="A programme that uses vouchers."),
    amount: str = typer.Option(..., "--amount", help="Voucher hours (1 = one effective GPU-hour)."),
    expires: str | None = typer.Option(
        None, "--expires", help="Date or time (UTC); default: the end of the programme period."
    ),
    at: str | None = typer.Option(None, "--at", help="Award time (UTC); default: now."),
) -> None:
    """Give an organisation voucher hours from a programme."""
    view = platform(ctx).award_voucher(org, programme, amount, expires, at)
    echo(
        f"awarded voucher {view['id']}: {view['amount']:g} hours of {view['programme']} "
        f"to {view['org']}, expires {view['expires_at'] or 'never'}"
    )


@voucher_app.command("list")
def voucher_list(
    ctx: typer.Context,
    org: str | None = typer.Option(None, "--org", help="Only this organisation's vouchers."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Vouchers with their balances (voucher hours)."""
    rows = platform(ctx).list_vouchers(org)
    render(
        rows,
        [
            ("id", "id"),
            ("org", "org"),
            ("programme", "programme"),
            ("amount", "amount"),
            ("balance", "balance"),
            ("awarded_at", "awarded"),
            ("expires_at", "expires"),
        ],
        as_json,
    )
