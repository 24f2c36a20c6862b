"""/api/v1/programmes, /vouchers, /reports: `gpupool programme|voucher ...`, `report ...`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from gpupool.model import GpupoolError
from gpupool.scheduler.queries import CHART_FORMATS
from gpupool.server import problems
from gpupool.server.deps import UnitOfWork, User
from gpupool.server.routes import API_PREFIX
from gpupool.server.schemas import (
    ProgrammesAdd,
    ProgrammeView,
    SubsidyRow,
    UsageRow,
    VoucherAward,
    VoucherView,
)
from gpupool.server.uploads import upload_name, uploaded_text

router = APIRouter(
    prefix=API_PREFIX, tags=["accounting"], responses=problems.responses(*problems.COMMON)
)


@router.get("/programmes", response_model=list[ProgrammeView])
def list_programmes(user: User, work: UnitOfWork) -> list[dict]:
    """Programmes with their rules, subsidy paid so far and budget left now."""
    from gpupool.scheduler import accounts

    with work() as session:
        return accounts.list_programmes(session, user.name)


@router.post("/programmes", status_code=201, response_model=list[ProgrammeView])
def add_programmes(body: ProgrammesAdd, user: User, work: UnitOfWork) -> list[dict]:
    """Create programmes from declarations (``programmes``) or a YAML file's text
    (``content``), all or none (admins)."""
    from gpupool.scheduler import accounts

    programmes = _declared(body)
    with work() as session:
        rows = [accounts.add_programme(session, user.name, p) for p in programmes]
        return [accounts.programme_view(r) for r in rows]


def _declared(body: ProgrammesAdd):
    from gpupool.accounting.declarations import parse_programmes

    if (body.programmes is None) == (body.content is None):
        raise GpupoolError("give either programmes or content, not both", location="programmes")
    if body.programmes is not None:
        if not body.programmes:
            raise GpupoolError("no programmes given", location="programmes")
        return parse_programmes({"programmes": body.programmes}, "body")
    from gpupool import located_yaml
    from gpupool.files import PROGRAMMES

    name = upload_name(body.filename, "programmes.yaml")
    text = uploaded_text(body.content, PROGRAMMES, name)
    programmes = parse_programmes(located_yaml.compose(text, name, PROGRAMMES), name)
    if not programmes:
        raise GpupoolError("no programmes in the file", location=name)
    return programmes


@router.get("/vouchers", response_model=list[VoucherView])
def list_vouchers(
    user: User,
    work: UnitOfWork,
    org: Annotated[str | None, Query(max_length=128)] = None,
) -> list[dict]:
    """Vouchers with their balances (voucher hours)."""
    from gpupool.scheduler import accounts

    with work() as session:
        return accounts.list_vouchers(session, user.name, org)


@router.post("/vouchers", status_code=201, response_model=VoucherView)
def award_voucher(body: VoucherAward, user: User, work: UnitOfWork) -> dict:
    """Give an organisation voucher hours from a programme (admins)."""
    from gpupool.accounting.periods import parse_instant
    from gpupool.scheduler import accounts

    awarded = None if body.at is None else parse_instant(body.at, "--at")
    expiry = None if body.expires is None else parse_instant(body.expires, "--expires")
    with work() as session:
        row = accounts.award_voucher(
            session,
            user.name,
            body.org,
            body.programme,
            body.amount,
            now=awarded,
            expires_at=expiry,
        )
        return accounts.voucher_view(row)


@router.get("/reports/usage", response_model=list[UsageRow])
def usage_report(
    user: User,
    work: UnitOfWork,
    period: Annotated[str | None, Query(max_length=32, description="e.g. 2026-Q4")] = None,
    by: Annotated[
        str, Query(max_length=16, description="domain, org, gpu-type, site or pool")
    ] = "domain",
) -> list[dict]:
    """GPU usage and money per period, grouped by domain, org, GPU type, site or pool."""
    from gpupool.scheduler.queries import usage_report as report

    with work() as session:
        return report(session, user.name, period, by)


@router.get("/reports/subsidies", response_model=list[SubsidyRow])
def subsidy_report(
    user: User,
    work: UnitOfWork,
    programme: Annotated[str | None, Query(max_length=128)] = None,
) -> list[dict]:
    """Subsidy paid per programme, period and org, against each programme's budget."""
    from gpupool.scheduler.queries import subsidy_report as report

    with work() as session:
        return report(session, user.name, programme)


_CHART = {200: {"content": {t: {} for t in CHART_FORMATS.values()}, "description": "The chart"}}


@router.get(
    "/reports/subsidies/chart",
    response_class=Response,
    responses=_CHART,
)
def subsidy_chart(
    user: User,
    work: UnitOfWork,
    programme: Annotated[str | None, Query(max_length=128)] = None,
    format: Annotated[str, Query(pattern="^(png|svg|pdf)$", description="png, svg or pdf")] = "png",
) -> Response:
    """Each programme's budget burn-down as a chart (`report subsidies --png FILE`):
    every organisation's subsidy, so admins and auditors only."""
    from gpupool.scheduler.queries import burn_down_chart

    with work() as session:
        image = burn_down_chart(session, user.name, programme, format)
    return Response(image, media_type=CHART_FORMATS[format])
