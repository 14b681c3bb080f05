"""Shared fixtures: the real gFEX data in ../shared, CLI runners, and real-component checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Fixtures that start real services live in their own plugin modules beside this file.
pytest_plugins = ["slurm_fixtures", "condor_fixtures"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SBT_BATCH_SHARED", REPO.parent / "shared")) / "data" / "gfex-hdf5"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(ok: bool, reason: str) -> None:
    """Skip a test whose real component is missing; under CI=true, fail it instead."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required component missing under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def gfex_dir() -> Path:
    """The directory with the 8 real gFEX HDF5 files (4 JZ0W background, 4 ZvvHbb signal)."""
    require(SHARED_DATA.is_dir() and len(list(SHARED_DATA.glob("*.hdf5"))) == 8, f"real data not found in {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def gfex_signal(gfex_dir: Path) -> list[Path]:
    """The 4 real ZvvHbb signal files."""
    return sorted(gfex_dir.glob("*ZvvHbb*.hdf5"))


@pytest.fixture(scope="session")
def gfex_background(gfex_dir: Path) -> list[Path]:
    """The 4 real JZ0W background files."""
    return sorted(gfex_dir.glob("*JZ0W*.hdf5"))


def run_sbt(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``sbt-batch ARGS`` in a subprocess (as a user would) and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sbt_batch", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Assert a failed run printed exactly one ``error:`` line containing every needle, and no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"


@pytest.fixture
def sbt():
    """Fixture form of :func:`run_sbt`."""
    return run_sbt


def frozen_graph_def(pb: Path):
    """The GraphDef of an exported frozen graph (``export --format frozen-pb``)."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(Path(pb).read_bytes())
    return graph_def


def run_frozen_graph(graph_def, nodes: dict, x):
    """The frozen graph's output for the input batch ``x`` (``nodes``: the export's model.pb.json)."""
    import tensorflow as tf

    with tf.Graph().as_default() as g:
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            return sess.run(nodes["outputs"][0], {nodes["inputs"][0]: x})

