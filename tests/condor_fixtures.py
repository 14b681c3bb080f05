"""Pytest fixtures for the local HTCondor pool started by scripts/condor-pool.sh (Debian trixie minicondor)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONDOR_SCRIPT = REPO / "scripts" / "condor-pool.sh"
CONDOR_BASE = Path(os.environ.get("SBT_BATCH_CONDOR_DIR", "/tmp/sbt-batch-condor"))
CONDOR_SHARED = Path(os.environ.get("SBT_BATCH_CONDOR_SHARED", "/tmp/sbt-batch-condor-shared"))
# sbt-batch inside the pool's root filesystem (a light venv with the conversion dependencies).
POOL_SBT_COMMAND = ["/opt/sbt-batch/bin/sbt-batch"]


def _require(ok: bool, reason: str) -> None:
    from conftest import require

    require(ok, reason)


def condor_script(action: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/condor-pool.sh ACTION``."""
    return subprocess.run(["bash", str(CONDOR_SCRIPT), action], capture_output=True, text=True, timeout=timeout)


@dataclass
class CondorPool:
    """The running pool: client config, the folder shared with the execute side, and helpers."""

    config: Path
    shared: Path
    base: Path
    idmapped: bool  # the shared folder is idmapped (host root's files belong to the job user inside)

    def require_shared_filesystem(self) -> None:
        """Skip (fail under CI) a shared-filesystem test when the kernel gave no idmapped mount."""
        _require(self.idmapped, "the pool's shared folder is not idmapped (kernel or filesystem without idmapped mounts), so jobs cannot use root's files")

    def workdir(self, name: str = "t") -> Path:
        """A fresh folder under the shared folder (visible to jobs at the same path)."""
        path = self.shared / "pytest" / f"{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def profile(self, folder: Path, spool: bool = False, **extra: object) -> Path:
        """Write a site profile for this pool (jobs start the pool's sbt-batch) and return its path."""
        import yaml

        data = {"backend": "condor", "sbt_command": POOL_SBT_COMMAND, "condor": {"spool": spool}, **extra}
        path = folder / ("condor-spool.yaml" if spool else "condor-shared.yaml")
        path.write_text(yaml.safe_dump(data))
        return path


@pytest.fixture(scope="session")
def condor_pool() -> CondorPool:
    """A running HTCondor pool (started if needed, left running); CONDOR_CONFIG exported for the tests."""
    _require(os.geteuid() == 0, "the HTCondor test pool needs root (debootstrap, chroot, mount namespaces)")
    # `start` is idempotent: on a running pool it only refreshes the pool's copy of sbt_batch.
    result = condor_script("start")
    _require(result.returncode == 0, f"HTCondor pool did not start: {(result.stderr or result.stdout).strip()[-400:]}")
    config = CONDOR_BASE / "host" / "condor_config"
    os.environ["CONDOR_CONFIG"] = str(config)
    try:
        import htcondor2

        htcondor2.reload_config()
    except ImportError:
        _require(False, "the htcondor Python bindings (htcondor2) are not installed")
    pool = CondorPool(config=config, shared=CONDOR_SHARED, base=CONDOR_BASE, idmapped=(CONDOR_BASE / "idmapped").exists())
    yield pool
    shutil.rmtree(CONDOR_SHARED / "pytest", ignore_errors=True)
