"""Pytest fixtures for the local one-node Slurm cluster started by scripts/slurm-cluster.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SLURM_SCRIPT = REPO / "scripts" / "slurm-cluster.sh"
SLURM_BASE = Path(os.environ.get("SBT_SLURM_BASE", "/tmp/sbt-batch-slurm"))


def _require(ok: bool, reason: str) -> None:
    from conftest import require

    require(ok, reason)


def slurm_script(action: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/slurm-cluster.sh ACTION``."""
    return subprocess.run(["bash", str(SLURM_SCRIPT), action], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, Path]:
    """A running local Slurm cluster (started if needed, left running); SLURM_CONF exported for the tests."""
    _require(os.geteuid() == 0 or shutil.which("sbatch") is not None, "the local Slurm cluster needs root to start")
    result = slurm_script("status", timeout=60)
    if result.returncode != 0:
        result = slurm_script("start")
    _require(result.returncode == 0, f"local Slurm cluster did not start: {(result.stderr or result.stdout).strip()[-300:]}")
    conf = SLURM_BASE / "etc" / "slurm.conf"
    os.environ["SLURM_CONF"] = str(conf)
    return {"conf": conf, "base": SLURM_BASE, "script": SLURM_SCRIPT}
