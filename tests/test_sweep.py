"""`sbt-batch sweep`: bad configs fail in one line before anything is written; a tiny real sweep on the local backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, assert_one_line_error, run_sbt

from sbt_batch.cnn.sweep import load_sweep, point_id


def _wait(run, timeout: float) -> list:
    """Poll the run until no task is queued or running."""
    import time

    from sbt_batch.batch.core import run_status
    from sbt_batch.batch.run import Run

    deadline = time.monotonic() + timeout
    while True:
        rows = run_status(Run.open(run.path))
        if not any(r.active for r in rows):
            return rows
        assert time.monotonic() < deadline, [(r.index, r.state) for r in rows]
        time.sleep(1)


def _config(tmp_path: Path, gfex_signal, gfex_background, **over) -> Path:
    spec = {
        "out": str(tmp_path / "sweep"),
        "train": {"signal": [str(p) for p in gfex_signal], "background": [str(p) for p in gfex_background],
                  "max_events": 40, "split": "0.5,0.2,0.3", "epochs": 1, "batch_size": 16, "max_steps": 1},
        "grid": {"model": ["1c", "2c2m"]},
        "seeds": [1, 2],
    }
    spec.update(over)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize("over, needles", [
    ({"grid": {"model": ["2c2m"], "modle": ["x"]}}, ("grid", "unknown key 'modle'", "did you mean 'model'")),
    ({"grid": {}}, ("grid: empty",)),
    ({"grid": {"model": []}}, ("grid.model: empty",)),
    ({"grid": {"model": ["2c2m", "3c3m"]}}, ("point 1 (model=3c3m)", "unknown model '3c3m'")),
    ({"points": [{"augment": "spin"}]}, ("point 2 (augment=spin)", "--augment")),
    ({"seeds": []}, ("seeds",)),
    ({"grid": {"seed": [1, 2]}}, ("grid", "unknown key 'seed'")),
])
def test_bad_sweep_configs_fail_before_anything_is_submitted(tmp_path: Path, gfex_signal, gfex_background, over, needles) -> None:
    cfg = _config(tmp_path, gfex_signal, gfex_background, **over)
    r = run_sbt("sweep", "--config", cfg, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(r, "sweep.yaml", *needles)
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "runs").exists()


def test_shipped_sweep_config_is_valid() -> None:
    sweep = load_sweep(REPO / "jobs" / "sweep-gfex.yaml")
    models = {p.get("model") for p in sweep.points.values()}
    assert {"1c", "2c", "1c1m", "2c2m", "2c2m-dropout", "res3", "3c-gpool"} <= models
    assert sweep.seeds == [1, 2, 3] and sweep.base["split"] == "0.5,0.1,0.4"
    assert any(p.get("augment", "none") != "none" and p.get("padding", "valid") != "valid" for p in sweep.points.values())
    assert point_id({"model": "res3", "augment": "full"}) == "res3_augment=full"


def test_local_sweep_collect_report_and_resubmit_only_missing(tmp_path: Path, gfex_signal, gfex_background) -> None:
    from sbt_batch.batch.run import Run

    cfg = _config(tmp_path, gfex_signal, gfex_background, points=[{"model": "2c2m", "padding": "circular", "augment": "full"}],
                  seeds=[1, 2], grid={"model": ["1c"]})
    runs = tmp_path / "runs"
    r = run_sbt("sweep", "--config", cfg, "--runs-dir", runs)
    assert r.returncode == 0, r.stderr
    run = Run.open(next(runs.iterdir()))
    assert run.kind == "sweep" and len(run.tasks) == 4  # 2 points x 2 seeds, one array
    rows = _wait(run, 400)
    assert all(row.state == "completed" for row in rows), [(row.index, row.state) for row in rows]
    sweep = tmp_path / "sweep"
    splits = {(sweep / "points" / p / f"seed-{s}" / "run" / "split.npz").read_bytes()
              for p in ("1c", "2c2m_padding=circular_augment=full") for s in (1, 2)}
    assert len(splits) == 1  # one split for every point and seed
    r = run_sbt("collect", run.path)
    assert r.returncode == 0, r.stderr
    report = sweep / "report"
    for name in ("sweep.md", "sweep.csv", "sweep.json", "baseline_error.png", "baseline_error.pdf", "roc_best.png", "best.yaml"):
        assert (report / name).exists(), name
    table = json.loads((report / "sweep.json").read_text())
    assert len(table) == 2 and all(len(t["seeds"]) == 2 and t["ensemble"]["auc"] > 0 for t in table)
    assert "±" in (report / "sweep.md").read_text()
    best = yaml.safe_load((report / "best.yaml").read_text())
    assert best["model"] == table[0]["options"]["model"] and "out" in best

    import shutil

    shutil.rmtree(sweep / "points" / "1c" / "seed-2" / "run")
    r = run_sbt("sweep", "--config", cfg, "--runs-dir", runs)
    assert r.returncode == 0 and "1 of 4 point x seed(s) submitted" in " ".join(r.stdout.split()), r.stdout + r.stderr
    second = Run.open(sorted(runs.iterdir())[-1])
    assert [t.meta["point"] for t in second.tasks] == ["1c"]
    _wait(second, 300)
    r = run_sbt("sweep", "--config", cfg, "--runs-dir", runs)
    assert r.returncode == 0 and "are done" in r.stdout
    r = run_sbt("sweep-report", sweep)
    assert r.returncode == 0 and "1c" in r.stdout
