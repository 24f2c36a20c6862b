"""Write the small synthetic trace samples shipped in gpupool/data/samples/.

The rows are made up (seeded, reproducible), in exactly the formats of the
real traces in ../shared/traces, with their quirks on purpose, so that the
sample scenarios exercise every loader rule without the real data:

- philly_sample.csv: unsorted rows, the real 15 VC hashes, gang sizes 1..32.
- openb_pod_sample.csv: CPU-only pods, GPU-sharing pods (gpu_milli < 1000),
  never-scheduled pods, pods alive at the snapshot end, gpu_spec constraints.
- openb_node_sample.csv: nodes of 7 models, some models with two node sizes.

Run: .venv/bin/python scripts/make_samples.py
"""

from __future__ import annotations

import csv
import math
import random
from datetime import datetime, timedelta
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "gpupool" / "data" / "samples"
SNAPSHOT_END = 12_902_960
PHILLY_VCS = {  # hash: relative share, like the real trace
    "6214e9": 50,
    "11cb48": 20,
    "6c71a0": 12,
    "b436b2": 9,
    "103959": 3,
    "ee9e8c": 2,
    "0e4a51": 2,
    "ed69ec": 1,
    "7f04ca": 1,
    "2869ce": 1,
    "e13805": 1,
    "23dbec": 0.3,
    "51b7ef": 0.2,
    "925e2b": 0.2,
    "795a4c": 0.2,
}
PHILLY_GANGS = {1: 80, 2: 6, 4: 6, 8: 5, 16: 2, 32: 1}
NODE_SHAPES = [  # (model, gpus per node, nodes): small enough that the pods contend
    ("G2", 8, 8),
    ("G3", 8, 2),
    ("T4", 2, 8),
    ("T4", 4, 2),
    ("P100", 2, 4),
    ("V100M16", 4, 2),
    ("V100M32", 8, 2),
    ("A10", 1, 2),
]
GPU_SPECS = ["", "", "", "", "T4", "G2", "P100", "V100M16|V100M32", "A10|T4", "G3"]


def _pick(rng: random.Random, weights: dict) -> object:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def philly_rows(rng: random.Random, count: int = 300) -> list[list[str]]:
    start = datetime(2017, 10, 2, 0, 0, 0)
    rows = []
    for _ in range(count):
        submitted = start + timedelta(seconds=rng.uniform(0, 86400))  # one busy day
        duration = float(max(1, round(math.exp(rng.gauss(math.log(1200), 1.6)))))
        gpus = _pick(rng, PHILLY_GANGS)
        rows.append(
            [
                submitted.strftime("%Y-%m-%d %H:%M:%S"),
                f"{duration:.1f}",
                str(gpus),
                f"{duration * gpus:.1f}",
                _pick(rng, PHILLY_VCS),
            ]
        )
    return rows  # unsorted on purpose, like the real file


def pod_rows(rng: random.Random, count: int = 300) -> list[list[str]]:
    created = SNAPSHOT_END - 4 * 86400
    rows = []
    for index in range(count):
        created += int(rng.expovariate(count / (3.5 * 86400)))
        cpu_only = rng.random() < 0.13
        gpus = 0 if cpu_only else _pick(rng, {1: 90, 2: 3, 4: 3, 8: 4})
        milli = (
            0
            if cpu_only
            else (1000 if gpus > 1 or rng.random() < 0.6 else rng.choice([230, 460, 810]))
        )
        phase = _pick(rng, {"Running": 60, "Failed": 22, "Pending": 11, "Succeeded": 7})
        runtime = int(math.exp(rng.gauss(math.log(600), 1.8)))
        scheduled = "" if phase == "Pending" else str(created + rng.randint(0, 30))
        begin = created if phase == "Pending" else int(scheduled)
        deleted = min(SNAPSHOT_END, begin + max(1, runtime))
        if phase == "Running" and rng.random() < 0.1:
            deleted = SNAPSHOT_END  # still alive when the snapshot was taken
        rows.append(
            [
                f"openb-pod-{index:04d}",
                str(rng.choice([4000, 8000, 12000])),
                str(rng.choice([8192, 16384, 32768])),
                str(gpus),
                str(milli),
                "" if cpu_only else rng.choice(GPU_SPECS),
                _pick(rng, {"LS": 55, "BE": 40, "Burstable": 4, "Guaranteed": 1}),
                phase,
                str(created),
                str(deleted),
                scheduled,
            ]
        )
    return rows


def node_rows() -> list[list[str]]:
    rows, index = [], 0
    for model, gpus, nodes in NODE_SHAPES:
        for _ in range(nodes):
            rows.append([f"openb-node-{index:04d}", "96000", "393216", str(gpus), model])
            index += 1
    return rows


def _write(name: str, header: list[str], rows: list[list[str]]) -> None:
    with (OUT / name).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    print(f"wrote {OUT / name}: {len(rows)} rows")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20240601)
    _write(
        "philly_sample.csv",
        ["timestamp", "duration", "num_gpus", "gpu_time", "cluster"],
        philly_rows(rng),
    )
    pod_header = [
        "name",
        "cpu_milli",
        "memory_mib",
        "num_gpu",
        "gpu_milli",
        "gpu_spec",
        "qos",
        "pod_phase",
        "creation_time",
        "deletion_time",
        "scheduled_time",
    ]
    _write("openb_pod_sample.csv", pod_header, pod_rows(rng))
    _write("openb_node_sample.csv", ["sn", "cpu_milli", "memory_mib", "gpu", "model"], node_rows())


if __name__ == "__main__":
    main()
