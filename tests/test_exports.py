"""`gpupool export kueue|slurm`: the policy's guarantees and borrow limits as a site's
workload manager needs them, worked by hand on a small platform.

Platform (pure model objects): Beijing has 40 A100 (pools of 32 and 8) and 8 Ascend;
Shanghai 24 more A100. The platform's A100: 64. Policy: medical guaranteed 25% with a
borrow limit of 10%; education guaranteed 16 A100 and 8 Ascend platform-wide, no limit;
general has no share.
"""

from __future__ import annotations

import shlex

import pytest
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.exports.kueue import check, kueue_objects
from gpupool.exports.quotas import site_quotas
from gpupool.exports.slurm import sacctmgr_commands
from gpupool.model import Domain, GpupoolError, GpuType, Org, Pool
from gpupool.policies.params import DomainShare, PolicyParams
from tests.conftest import SQLITE_ONLY

POOLS = [
    Pool("bj-a", "Beijing", "A100", 32, 8, 10.0),
    Pool("bj-b", "Beijing", "A100", 8, 8, 10.0),
    Pool("bj-910b", "Beijing", "Ascend-910B", 8, 8, 5.0),
    Pool("sh-a", "Shanghai", "A100", 24, 8, 10.0),
]
TYPES = [GpuType("A100", "NVIDIA", 80), GpuType("Ascend-910B", "Huawei", 64, 0.8, True)]
DOMAINS = [Domain("medical", 3.0), Domain("education", 2.0), Domain("general", 1.0)]
ORGS = [Org("pumc", "medical"), Org("ruijin", "medical"), Org("zju", "education")]
PARAMS = PolicyParams(
    domain_weights={"medical": 3.0, "education": 2.0},
    shares={
        "medical": DomainShare(fraction=0.25, borrow_limit=0.10),
        "education": DomainShare(gpus={"A100": 16, "Ascend-910B": 8}),
    },
)


def _quotas(site="Beijing", params=PARAMS):
    return site_quotas(site, POOLS, DOMAINS, params)


def test_guarantees_and_borrow_limits_become_whole_gpus_of_the_site():
    quotas = _quotas()
    by_domain = {q.domain: q for q in quotas.domains}
    assert quotas.capacity == {"A100": 40, "Ascend-910B": 8}
    # medical: 25% of 40 = 10 A100, of 8 = 2 Ascend; borrow 10%: 4 and 0 (rounded down)
    assert by_domain["medical"].guarantee == {"A100": 10, "Ascend-910B": 2}
    assert by_domain["medical"].borrow == {"A100": 4, "Ascend-910B": 0}
    # education: 16 of the platform's 64 A100, Beijing holding 40 of them: 10; all 8 Ascend
    assert by_domain["education"].guarantee == {"A100": 10, "Ascend-910B": 8}
    assert by_domain["education"].borrow is None  # no limit
    assert by_domain["general"].guarantee == {"A100": 0, "Ascend-910B": 0}
    assert quotas.unguaranteed == {"A100": 20, "Ascend-910B": -2}


def test_kueue_objects_carry_the_quotas_and_pass_kueues_crd_schemas():
    objects = kueue_objects(_quotas("Shanghai"), TYPES, ORGS, preemption=True)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [
        ("ResourceFlavor", "a100"),
        ("Cohort", "gpupool-shanghai"),
        ("ClusterQueue", "education"),
        ("ClusterQueue", "general"),
        ("ClusterQueue", "medical"),
        ("LocalQueue", "pumc"),
        ("LocalQueue", "ruijin"),
        ("LocalQueue", "zju"),
    ]
    named = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    medical = named[("ClusterQueue", "medical")]["spec"]
    (group,) = medical["resourceGroups"]
    # Shanghai: 24 A100; medical 6 (25%), education 6 (16 x 24/64); unguaranteed 12;
    # medical may borrow 2 (10%) of others' guarantees plus the 12 nobody holds
    assert group == {
        "coveredResources": ["nvidia.com/gpu"],
        "flavors": [
            {
                "name": "a100",
                "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 6, "borrowingLimit": 14}],
            }
        ],
    }
    assert medical["cohortName"] == "gpupool-shanghai"
    assert medical["fairSharing"] == {"weight": "3"}
    assert medical["preemption"]["reclaimWithinCohort"] == "Any"
    cohort = named[("Cohort", "gpupool-shanghai")]["spec"]["resourceGroups"][0]
    assert cohort["flavors"][0]["resources"][0]["nominalQuota"] == 12
    education = named[("ClusterQueue", "education")]["spec"]["resourceGroups"][0]
    assert "borrowingLimit" not in education["flavors"][0]["resources"][0]  # unlimited
    assert named[("LocalQueue", "zju")]["metadata"]["namespace"] == "zju"
    assert named[("LocalQueue", "zju")]["spec"] == {"clusterQueue": "education"}


def test_an_object_kueue_would_refuse_is_named_with_its_field():
    objects = kueue_objects(_quotas("Shanghai"), TYPES, ORGS, preemption=False)
    queue = next(o for o in objects if o["kind"] == "ClusterQueue")
    queue["spec"]["queueingStrategy"] = "Random"
    with pytest.raises(GpupoolError) as raised:
        check(queue, "object 3 (ClusterQueue education)")
    assert str(raised.value).startswith(
        "object 3 (ClusterQueue education) spec.queueingStrategy: Kueue's CRD refuses it: 'Random'"
    )


@pytest.mark.parametrize(
    ("types", "resources", "message"),
    [
        (
            [GpuType("A100", "NVIDIA", 80), GpuType("Ascend-910B", "Moore", 64)],
            {},
            "--resource: no known device-plugin resource for vendor 'Moore' of 'Ascend-910B'",
        ),
        ([GpuType("A100", "NVIDIA", 80), GpuType("a100", "NVIDIA", 40)], {}, None),
    ],
)
def test_vendor_resources_are_known_or_given(types, resources, message):
    quotas = _quotas()
    if message is None:
        kueue_objects(quotas, types, ORGS, preemption=False, resources={"Ascend-910B": "x.io/npu"})
        return
    with pytest.raises(GpupoolError) as raised:
        kueue_objects(quotas, types, ORGS, preemption=False, resources=resources)
    assert str(raised.value).startswith(message)
    given = kueue_objects(
        quotas, types, ORGS, preemption=False, resources={"Ascend-910B": "x.io/npu"}
    )
    covered = [g["coveredResources"] for g in given[2]["spec"]["resourceGroups"]]
    assert covered == [["nvidia.com/gpu"], ["x.io/npu"]]


def test_two_names_that_become_one_kubernetes_name_are_refused():
    orgs = [Org("Ruijin Lab", "medical"), Org("ruijin-lab", "medical")]
    with pytest.raises(
        GpupoolError, match="'ruijin-lab' and 'Ruijin Lab' both become 'ruijin-lab'"
    ):
        kueue_objects(_quotas(), TYPES, orgs, preemption=False)


def test_sacctmgr_commands_give_accounts_shares_and_group_limits():
    lines = sacctmgr_commands(_quotas(), ORGS, {"A100": "gpu:a100"})
    words = [shlex.split(line) for line in lines]
    assert all(w[:2] == ["sacctmgr", "-i"] for w in words)
    assert words[0][2:] == [
        "add",
        "account",
        "education",
        "Fairshare=20",
        "Description=gpupool domain education",
    ]
    # medical may hold its 10 + 4 borrowed + the 20 nobody holds A100; Ascend: 2 + 0 - 2
    assert ["add", "qos", "medical", "GrpTRES=gres/gpu:a100=34,gres/gpu:ascend-910b=0"] in [
        w[2:] for w in words
    ]
    assert [
        "add",
        "account",
        "zju",
        "Parent=education",
        "Fairshare=1",
        "Description=gpupool organisation zju",
    ] in [w[2:] for w in words]
    assert not any(w[2:4] == ["add", "qos"] and w[4] != "medical" for w in words)  # unlimited


@SQLITE_ONLY
def test_the_cli_exports_the_active_policy_and_refuses_another_sites_agent(
    platform, tmp_path, db_kind
):
    from tests.conftest import add_users

    add_users(platform, ("agnes", "agent", None, "Beijing"))
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "kind: priority\ndomains:\n  medical: {guarantee: {fraction: 0.5}, borrow_limit: 0}\n"
    )
    runner = CliRunner()
    applied = runner.invoke(app, ["--db", platform, "policy", "apply", str(policy)])
    assert applied.exit_code == 0, applied.stderr
    out = tmp_path / "kueue.yaml"
    exported = runner.invoke(
        app,
        [
            "--db",
            platform,
            "--as",
            "agnes",
            "export",
            "kueue",
            "--site",
            "Beijing",
            "--out",
            str(out),
        ],
    )
    refused = runner.invoke(
        app, ["--db", platform, "--as", "agnes", "export", "kueue", "--site", "Shanghai"]
    )
    slurm = runner.invoke(app, ["--db", platform, "export", "slurm", "--site", "Beijing"])
    assert exported.exit_code == 0, exported.stderr
    assert "nominalQuota: 8" in out.read_text()  # half of Beijing's 16 A100
    assert refused.exit_code == 2
    assert refused.stderr == (
        "error: --as: agnes may not export kueue for site Shanghai: it acts for site Beijing\n"
    )
    assert "GrpTRES=gres/gpu:a100=16" in slurm.stdout  # 8 + 0 borrowed + 8 nobody holds
