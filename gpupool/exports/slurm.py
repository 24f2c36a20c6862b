"""`gpupool export slurm [--site SITE]`: the policy as ``sacctmgr`` commands.

An account per domain (``Fairshare`` the domain's weight x 10, rounded: Slurm's
shares are integers) and, under it, an account per organisation (equal shares
within a domain). A QOS per domain whose guarantee or borrow limit bounds it, with
``GrpTRES`` the most GPUs of each type the domain may hold at the site at once: its
guarantee, plus its borrow limit of others' guarantees, plus the GPUs no guarantee
holds (gpupool.exports.quotas). A domain with no limit gets no QOS. TRES names are
``gres/NAME:TYPE`` from the Slurm mapping file's ``gres`` (the executor's), else
``gres/gpu:TYPE`` in lower case. Each line is shell-quoted, ``-i`` so that it runs
without asking.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from gpupool.exports.quotas import DomainQuota, SiteQuotas
from gpupool.model import Org

SHARE_SCALE = 10


def sacctmgr_commands(
    quotas: SiteQuotas, orgs: Sequence[Org], gres: Mapping[str, str] | None = None
) -> list[str]:
    gres = gres or {}
    lines = []
    for quota in quotas.domains:
        share = max(1, round(quota.weight * SHARE_SCALE))
        lines.append(
            _sacctmgr(
                "add",
                "account",
                quota.domain,
                f"Fairshare={share}",
                f"Description=gpupool domain {quota.domain}",
            )
        )
        limit = _group_limit(quota, quotas, gres)
        if limit:
            lines.append(_sacctmgr("add", "qos", quota.domain, f"GrpTRES={limit}"))
            lines.append(
                _sacctmgr(
                    "modify",
                    "account",
                    quota.domain,
                    "set",
                    f"QOS={quota.domain}",
                    f"DefaultQOS={quota.domain}",
                )
            )
        for org in sorted((o for o in orgs if o.domain == quota.domain), key=lambda o: o.name):
            lines.append(
                _sacctmgr(
                    "add",
                    "account",
                    org.name,
                    f"Parent={quota.domain}",
                    "Fairshare=1",
                    f"Description=gpupool organisation {org.name}",
                )
            )
    return lines


def _group_limit(quota: DomainQuota, quotas: SiteQuotas, gres: Mapping[str, str]) -> str:
    if quota.borrow is None:
        return ""
    most = {
        t: quota.guarantee[t] + quota.borrow[t] + quotas.unguaranteed[t] for t in quotas.capacity
    }
    return ",".join(f"gres/{_tres(t, gres)}={n}" for t, n in most.items())


def _tres(gpu_type: str, gres: Mapping[str, str]) -> str:
    return gres.get(gpu_type) or f"gpu:{gpu_type.lower()}"


def _sacctmgr(*words: str) -> str:
    return shlex.join(["sacctmgr", "-i", *words])
