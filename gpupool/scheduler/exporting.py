"""`gpupool export kueue|slurm`: the platform and its active policy for a site's workload manager.

Reads the pools, GPU types, domains and organisations and the active policy's
parameters in one unit of work, checks who asks (admins and auditors any site, an
agent its own site only), and hands them to the pure writers in gpupool.exports.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.orm import Session

from gpupool.model import GpupoolError
from gpupool.scheduler import repository
from gpupool.scheduler.active import active_params
from gpupool.scheduler.permissions import OWN_SITE, Denied, authorize

KINDS = ("kueue", "slurm")


def export(
    session: Session,
    actor: str,
    kind: str,
    site: str | None,
    resources: Mapping[str, str] | None = None,
    gres: Mapping[str, str] | None = None,
) -> dict:
    """``{"kind", "site", "text"}``: Kueue objects as YAML, or sacctmgr command lines."""
    from gpupool.exports.quotas import site_quotas

    if kind not in KINDS:
        raise GpupoolError(f"unknown export {kind!r}; one of: {', '.join(KINDS)}", location="KIND")
    words = f"export {kind} for site {site}" if site else f"export {kind}"
    grant = authorize(session, actor, "platform.export", site or "", action=words)
    if grant.scope == OWN_SITE and site != grant.site:
        raise Denied(
            f"{actor} may not {words}: it acts for site {grant.site}", actor, words, site or ""
        )
    pools = [repository.pool_model(r) for r in repository.list_pools(session)]
    domains = [repository.domain_model(r) for r in repository.list_domains(session)]
    orgs = [repository.org_model(r) for r in repository.list_orgs(session)]
    params = active_params(session)
    quotas = site_quotas(site, pools, domains, params)
    if kind == "kueue":
        text = _kueue(session, quotas, orgs, params, resources or {})
    else:
        text = _slurm(quotas, orgs, gres or {})
    return {"kind": kind, "site": site, "text": text}


def _kueue(session: Session, quotas, orgs, params, resources: Mapping[str, str]) -> str:
    from gpupool.exports.kueue import kueue_objects, to_yaml

    types = [repository.gpu_type_model(r) for r in repository.list_gpu_types(session)]
    return to_yaml(kueue_objects(quotas, types, orgs, params.preemption.enabled, resources))


def _slurm(quotas, orgs, gres: Mapping[str, str]) -> str:
    from gpupool.exports.slurm import sacctmgr_commands

    return "".join(line + "\n" for line in sacctmgr_commands(quotas, orgs, gres))
