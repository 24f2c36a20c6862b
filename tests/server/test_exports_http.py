"""`gpupool export` over HTTP: the same text as the local export, the same refusals."""

from __future__ import annotations

from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.exporting import export


def test_an_export_over_http_is_the_local_export(live):
    with live.client("root") as root:
        kueue = root.get("/api/v1/exports/kueue", params={"site": "Beijing"})
        slurm = root.get("/api/v1/exports/slurm", params={"gres": "A100=gpu:a100"})
        bad_pair = root.get("/api/v1/exports/kueue", params={"site": "Beijing", "resource": "x"})
        no_site = root.get("/api/v1/exports/kueue", params={"site": "Atlantis"})
    with live.client("bob") as bob:
        refused = bob.get("/api/v1/exports/kueue", params={"site": "Beijing"})
    with unit_of_work(live.db) as session:
        local_kueue = export(session, "root", "kueue", "Beijing")
        local_slurm = export(session, "root", "slurm", None, gres={"A100": "gpu:a100"})
    assert kueue.status_code == 200 and kueue.json() == local_kueue
    assert slurm.status_code == 200 and slurm.json() == local_slurm
    assert bad_pair.status_code == 422 and bad_pair.json()["field"] == "resource"
    assert no_site.status_code == 422, no_site.text
    assert no_site.json()["field"] == "site" and "no pools at site" in no_site.json()["detail"]
    assert refused.status_code == 403
