"""A realistic demo platform for `gpupool init --demo` and scripts/demo.sh.

Five sites of a national public compute network, five GPU types (the
reference A100-80G at speed 1.0, with relative speeds as rough training
throughput), seven application domains with priority weights, and a dozen
organisations with quarterly budgets (yuan). Prices are per GPU-hour. Users:
three submitters, an auditor and an agent for the Beijing site.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from gpupool.scheduler import service

# name, vendor, memory GB, speed, domestic
GPU_TYPES = [
    ("A100-80G", "NVIDIA", 80, 1.0, False),
    ("H100", "NVIDIA", 80, 2.0, False),
    ("H20", "NVIDIA", 96, 0.9, False),
    ("Ascend-910B", "Huawei", 64, 0.8, True),
    ("MI250", "AMD", 128, 0.7, False),
]

# name, site, GPU type, GPUs, GPUs per node, price per GPU-hour
POOLS = [
    ("bj-a100", "Beijing", "A100-80G", 64, 8, 12.0),
    ("bj-h100", "Beijing", "H100", 32, 8, 28.0),
    ("sh-h20", "Shanghai", "H20", 48, 8, 9.0),
    ("sz-a100", "Shenzhen", "A100-80G", 32, 8, 11.5),
    ("hf-910b", "Hefei", "Ascend-910B", 64, 8, 6.5),
    ("gy-910b", "Guiyang", "Ascend-910B", 128, 8, 5.0),
    ("gy-mi250", "Guiyang", "MI250", 16, 4, 7.0),
]

DOMAINS = [
    ("medical", 3.0),
    ("education", 2.0),
    ("weather", 2.0),
    ("robotics", 1.5),
    ("manufacturing", 1.2),
    ("finance", 1.0),
    ("general", 1.0),
]

# name, domain, budget per quarter (None: no cap)
ORGS = [
    ("pumc-hospital", "medical", 200_000.0),
    ("ruijin-imaging", "medical", 120_000.0),
    ("tsinghua-ai", "education", 150_000.0),
    ("zju-cs", "education", 80_000.0),
    ("ustc-physics", "education", 60_000.0),
    ("cma-forecast", "weather", None),
    ("unitree-lab", "robotics", 90_000.0),
    ("sia-robotics", "robotics", 50_000.0),
    ("byd-factory-ai", "manufacturing", 100_000.0),
    ("comac-design", "manufacturing", 70_000.0),
    ("ping-an-risk", "finance", 250_000.0),
    ("open-llm-community", "general", 20_000.0),
]

# org, GPUs, hours, allowed types, name
JOBS = [
    ("pumc-hospital", 8, 12.0, ["A100-80G", "H100"], "ct-segmentation"),
    ("cma-forecast", 32, 24.0, [], "typhoon-ensemble"),
    ("tsinghua-ai", 16, 6.0, ["H100"], "llm-finetune"),
    ("byd-factory-ai", 4, 3.0, ["Ascend-910B"], "defect-detector"),
    ("open-llm-community", 64, 48.0, [], "pretrain-7b"),
    ("zju-cs", 2, 1.5, [], "course-lab"),
    ("ping-an-risk", 24, 8.0, ["H100"], "risk-model"),
    ("ruijin-imaging", 4, 2.0, ["A100-80G"], "mri-reconstruction"),
    ("unitree-lab", 8, 4.0, ["H20", "A100-80G"], "locomotion-rl"),
]


# name, role, organisation (submitters), site (agents)
USERS = [
    ("alice", "submitter", "pumc-hospital", None),
    ("bob", "submitter", "tsinghua-ai", None),
    ("carol", "submitter", "cma-forecast", None),
    ("audrey", "auditor", None, None),
    ("bj-agent", "agent", None, "Beijing"),
]


def create_demo_users(session: Session, actor: str) -> list[str]:
    """One user of each role but admin (`init` adds the admin); a name already
    taken (by that admin) is skipped. Returns the names added."""
    from gpupool.scheduler import permissions, repository

    added = []
    for name, role, org, site in USERS:
        if repository.find_user(session, name) is None:
            permissions.add_user(session, actor, name, role, org, site)
            added.append(name)
    return added


def create_demo_platform(session: Session, actor: str, with_jobs: bool = True) -> None:
    for name, vendor, memory, speed, domestic in GPU_TYPES:
        service.add_gpu_type(session, actor, name, vendor, memory, speed, domestic)
    for name, site, gpu_type, gpus, per_node, price in POOLS:
        service.add_pool(session, actor, name, site, gpu_type, gpus, per_node, price)
    for name, weight in DOMAINS:
        service.add_domain(session, actor, name, weight)
    for name, domain, budget in ORGS:
        service.add_org(session, actor, name, domain, budget)
    if with_jobs:
        requests = [
            service.JobRequest(org=org, gpus=gpus, hours=hours, gpu_types=types, name=name)
            for org, gpus, hours, types, name in JOBS
        ]
        service.submit_jobs(session, actor, requests)
