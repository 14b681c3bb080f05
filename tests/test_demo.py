"""The README's first command: the demo on generated sample data, end to end."""

from __future__ import annotations

import json

import h5py
import pytest


def test_demo_convert_only(sbt, tmp_path):
    result = sbt("demo", tmp_path / "d", "--files", "1", "--events", "50", "--no-train")
    assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "d" / "data" / "signal.h5") as h5:
        assert h5["gTowerEt"].shape == (50, 24, 32)
        assert h5["offlineRho"].shape == (50,)
    assert not (tmp_path / "d" / "run").exists()


@pytest.mark.slow
def test_demo_full_chain(sbt, tmp_path):
    out = tmp_path / "demo"
    result = sbt("demo", out, "--files", "1", "--events", "400", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    metrics = json.loads((out / "run" / "eval" / "metrics.json").read_text())
    assert metrics["auc"] > 0.7
    for name in ("model.keras", "history.json", "config.yaml", "export/model.pb", "export/model.onnx"):
        assert (out / "run" / name).exists(), name
