"""A site's GPUs split by the policy: each domain's guarantee and borrow limit, per GPU type.

The policy speaks of the whole platform (gpupool.policies._borrowing): a guarantee
is a fraction of it or GPUs per type, a borrow limit a fraction of it. A site's
workload manager needs whole GPUs of its own types, so per GPU type t at the site:

- guarantee: ``fraction`` x the site's GPUs of t, or ``gpus[t]`` x the site's part
  of the platform's GPUs of t; rounded down, so the guarantees never exceed the site;
- borrow limit: ``borrow_limit`` x the site's GPUs of t, rounded down (None: unlimited);
- unguaranteed: the site's GPUs of t no guarantee holds, anyone's to use.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpupool.model import Domain, GpupoolError, Pool
from gpupool.policies.params import PolicyParams


@dataclass(frozen=True)
class DomainQuota:
    domain: str
    weight: float
    guarantee: dict[str, int]  # GPU type -> GPUs kept for the domain at this site
    borrow: dict[str, int] | None  # GPU type -> most GPUs of others' guarantees; None: unlimited


@dataclass(frozen=True)
class SiteQuotas:
    site: str | None  # None: the whole platform
    capacity: dict[str, int]  # GPU type -> GPUs at the site
    domains: tuple[DomainQuota, ...]
    unguaranteed: dict[str, int]


def site_quotas(
    site: str | None, pools: Sequence[Pool], domains: Iterable[Domain], params: PolicyParams
) -> SiteQuotas:
    platform = _gpus_by_type(pools)
    here = _gpus_by_type(p for p in pools if site is None or p.site == site)
    if not here:
        known = sorted({p.site for p in pools})
        raise GpupoolError(
            f"no pools at site {site!r}; sites: {', '.join(known)}", location="--site"
        )
    quotas = tuple(_domain_quota(d, params, here, platform) for d in sorted(domains, key=_name))
    held = defaultdict(int)
    for quota in quotas:
        for gpu_type, gpus in quota.guarantee.items():
            held[gpu_type] += gpus
    unguaranteed = {t: n - held[t] for t, n in here.items()}
    return SiteQuotas(site, here, quotas, unguaranteed)


def _domain_quota(domain: Domain, params: PolicyParams, here, platform) -> DomainQuota:
    weight = params.domain_weights.get(domain.name, domain.weight)
    share = params.shares.get(domain.name)
    if share is None:
        return DomainQuota(domain.name, weight, {t: 0 for t in here}, None)
    if share.fraction is not None:
        guarantee = {t: math.floor(share.fraction * n) for t, n in here.items()}
    else:
        wanted = share.gpus or {}
        guarantee = {t: math.floor(wanted.get(t, 0) * n / platform[t]) for t, n in here.items()}
    borrow = None
    if share.borrow_limit is not None:
        borrow = {t: math.floor(share.borrow_limit * n) for t, n in here.items()}
    return DomainQuota(domain.name, weight, guarantee, borrow)


def _gpus_by_type(pools: Iterable[Pool]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for pool in pools:
        total[pool.gpu_type] += pool.gpus
    return dict(sorted(total.items()))


def _name(domain: Domain) -> str:
    return domain.name
