"""`make demo`, the README's first command, runs scripts/demo.sh: it must keep working.

The script drives the real CLI end to end on a fresh SQLite file (init, policy, a
programme and a voucher, two submissions, a round, a finish, the reports), so a
change to any command's output or arguments that breaks the newcomer's first run
fails here rather than on their machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_script_runs_the_main_job_end_to_end(tmp_path):
    gpupool = Path(sys.executable).parent / "gpupool"
    database = f"sqlite:///{tmp_path / 'demo.db'}"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), str(gpupool), database],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    # the round started the medical job on the subsidised platform, the finish was
    # charged with a subsidy from the programme and its voucher
    assert "end_reason: reported completed by @owner" in out
    assert "from health-q (voucher 1)" in out
    assert "demo: medical and education first" in out
    assert not (tmp_path / "gpupool-demo.db").exists()  # it used the URL it was given
