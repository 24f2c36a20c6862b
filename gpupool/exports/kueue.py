"""`gpupool export kueue --site SITE`: the policy as Kueue objects for a Kubernetes site.

Written (API ``kueue.x-k8s.io/v1beta2``):

- a **ResourceFlavor** per GPU type at the site, selecting nodes labelled
  ``gpupool.io/gpu-type: TYPE``;
- a **Cohort** ``gpupool-SITE`` holding, as its own quota, the site's GPUs that no
  guarantee holds: anyone in the cohort may borrow them (gpupool's work-conserving
  unguaranteed capacity);
- a **ClusterQueue** per domain in that cohort: ``nominalQuota`` its guarantee,
  ``borrowingLimit`` its borrow limit plus the unguaranteed GPUs (Kueue counts both
  as borrowing; gpupool bounds only the use of others' guarantees), none when the
  policy sets no limit; ``fairSharing.weight`` the domain's weight; guarantees are
  reclaimed by preemption (``reclaimWithinCohort: Any``) only when the policy enables it;
- a **LocalQueue** per organisation, in a namespace of the organisation's name,
  feeding its domain's ClusterQueue.

Names become Kubernetes names (lower case, ``-`` for other characters); two platform
names that become one are an error, as is a GPU vendor with no known device-plugin
resource (``--resource TYPE=NAME`` gives it). Every object is checked against the
``openAPIV3Schema`` of Kueue's published CRDs kept in ``crds/`` before anything is
written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from gpupool.exports.quotas import SiteQuotas
from gpupool.model import GpupoolError, GpuType, Org

API = "kueue.x-k8s.io/v1beta2"
VERSION = "v1beta2"
CRDS = Path(__file__).with_name("crds")
KIND_FILES = {
    "ResourceFlavor": "resourceflavors",
    "Cohort": "cohorts",
    "ClusterQueue": "clusterqueues",
    "LocalQueue": "localqueues",
}
VENDOR_RESOURCES = {
    "nvidia": "nvidia.com/gpu",
    "amd": "amd.com/gpu",
    "huawei": "huawei.com/Ascend910",
}
TYPE_LABEL = "gpupool.io/gpu-type"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def kueue_objects(
    quotas: SiteQuotas,
    gpu_types: Sequence[GpuType],
    orgs: Sequence[Org],
    preemption: bool,
    resources: Mapping[str, str] | None = None,
) -> list[dict]:
    resource = _resources(quotas, gpu_types, resources or {})
    flavor_names, queue_names, org_names = _Names(), _Names(), _Names()  # one per kind
    flavors = {t: flavor_names.take(t, "GPU type") for t in quotas.capacity}
    queues = {q.domain: queue_names.take(q.domain, "domain") for q in quotas.domains}
    cohort = _Names().take(f"gpupool-{quotas.site or 'platform'}", "site")
    objects = [_flavor(flavors[t], t) for t in quotas.capacity]
    objects.append(_cohort(cohort, quotas, flavors, resource))
    objects += [
        _cluster_queue(queues[q.domain], cohort, q, quotas, flavors, resource, preemption)
        for q in quotas.domains
    ]
    objects += [
        _local_queue(org_names.take(o.name, "org"), queues[o.domain])
        for o in sorted(orgs, key=lambda o: o.name)
        if o.domain in queues
    ]
    for number, item in enumerate(objects):
        check(item, f"object {number + 1} ({item['kind']} {item['metadata']['name']})")
    return objects


def to_yaml(objects: Sequence[dict]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)


# --- objects ---------------------------------------------------------------------


def _flavor(name: str, gpu_type: str) -> dict:
    return _object("ResourceFlavor", name, {"nodeLabels": {TYPE_LABEL: gpu_type}})


def _cohort(name: str, quotas: SiteQuotas, flavors, resource) -> dict:
    groups = _groups(quotas, flavors, resource, lambda t: {"nominalQuota": quotas.unguaranteed[t]})
    return _object("Cohort", name, {"resourceGroups": groups})


def _cluster_queue(name, cohort, quota, quotas: SiteQuotas, flavors, resource, preemption) -> dict:
    def limits(gpu_type: str) -> dict:
        found = {"nominalQuota": quota.guarantee[gpu_type]}
        if quota.borrow is not None:
            found["borrowingLimit"] = quota.borrow[gpu_type] + quotas.unguaranteed[gpu_type]
        return found

    spec = {
        "cohortName": cohort,
        "namespaceSelector": {},
        "queueingStrategy": "BestEffortFIFO",
        "resourceGroups": _groups(quotas, flavors, resource, limits),
        "fairSharing": {"weight": _quantity(quota.weight)},
        "preemption": {
            "reclaimWithinCohort": "Any" if preemption else "Never",
            "withinClusterQueue": "LowerPriority" if preemption else "Never",
        },
    }
    return _object("ClusterQueue", name, spec)


def _local_queue(name: str, cluster_queue: str) -> dict:
    item = _object("LocalQueue", name, {"clusterQueue": cluster_queue})
    item["metadata"]["namespace"] = name
    return item


def _groups(quotas: SiteQuotas, flavors, resource, limits) -> list[dict]:
    """One resource group per device-plugin resource, its flavors the GPU types using it."""
    by_resource: dict[str, list[str]] = {}
    for gpu_type in quotas.capacity:
        by_resource.setdefault(resource[gpu_type], []).append(gpu_type)
    return [
        {
            "coveredResources": [name],
            "flavors": [
                {"name": flavors[t], "resources": [{"name": name, **limits(t)}]} for t in types
            ],
        }
        for name, types in sorted(by_resource.items())
    ]


def _object(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


def _quantity(value: float) -> str:
    return f"{value:g}"


def _resources(quotas: SiteQuotas, gpu_types, given: Mapping[str, str]) -> dict[str, str]:
    vendors = {t.name: t.vendor for t in gpu_types}
    found = {}
    for gpu_type in quotas.capacity:
        name = given.get(gpu_type) or VENDOR_RESOURCES.get(vendors.get(gpu_type, "").lower())
        if name is None:
            raise GpupoolError(
                f"no known device-plugin resource for vendor {vendors.get(gpu_type)!r} of "
                f"{gpu_type!r}; give one with --resource {gpu_type}=DOMAIN/NAME",
                location="--resource",
            )
        found[gpu_type] = name
    return found


class _Names:
    """Platform names as Kubernetes names, each used once."""

    def __init__(self) -> None:
        self.taken: dict[str, str] = {}

    def take(self, name: str, what: str) -> str:
        kube = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
        if not _DNS_LABEL.fullmatch(kube):
            raise GpupoolError(f"{what} {name!r} has no Kubernetes name", location=what)
        if kube in self.taken and self.taken[kube] != name:
            raise GpupoolError(
                f"{what} {name!r} and {self.taken[kube]!r} both become {kube!r} in Kubernetes",
                location=what,
            )
        self.taken[kube] = name
        return kube


# --- checking against Kueue's CRDs --------------------------------------------------


def check(item: dict, where: str) -> None:
    """Raise a GpupoolError naming the field of ``item`` Kueue's CRD schema refuses."""
    validator = _validator(item["kind"])
    errors = sorted(validator.iter_errors(item), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        path = ".".join(str(p) for p in first.absolute_path) or "(object)"
        raise GpupoolError(f"Kueue's CRD refuses it: {first.message}", location=f"{where} {path}")


@functools.cache
def _validator(kind: str):
    import jsonschema

    crd = yaml.safe_load((CRDS / f"kueue.x-k8s.io_{KIND_FILES[kind]}.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == VERSION]
    schema = version["schema"]["openAPIV3Schema"]
    return jsonschema.Draft7Validator(schema)
