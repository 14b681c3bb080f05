"""Export: frozen graph (tf.compat.v1), ONNX (onnxruntime), SavedModel equal Keras within 1e-5; JPEG sets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, frozen_graph_def, run_frozen_graph, run_sbt


@pytest.fixture(scope="module")
def run(tmp_path_factory, gfex_signal, gfex_background) -> Path:
    from sbt_batch.cnn.train import train

    out = tmp_path_factory.mktemp("export") / "run"
    train(signal=gfex_signal, background=gfex_background, model="2c2m-dropout", out=str(out), epochs=1,
          max_events=100, split="0.5,0.3,0.2", seed=3, progress=False)
    return out


@pytest.fixture(scope="module")
def reference(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed test images of the run and the Keras model's predictions on them."""
    from sbt_batch.cnn.evaluate import load_run_model, run_stream
    from sbt_batch.common.rundir import RunDir

    rd = RunDir(run)
    stream, _, split = run_stream(rd)
    x = stream.read(split["test"])
    return x, np.asarray(load_run_model(rd)(x, training=False))


def test_frozen_pb_equals_keras(run: Path, reference) -> None:
    from sbt_batch.cnn.export import export_run

    info = export_run(run, "frozen-pb")
    pb = Path(info["path"])
    nodes = json.loads((run / "export" / "model.pb.json").read_text())
    assert nodes["inputs"] == ["input:0"] and nodes["outputs"] == ["Identity:0"] and nodes["input_shape"] == [None, 26, 32, 1]
    graph_def = frozen_graph_def(pb)
    assert not any(n.op in ("VarHandleOp", "ReadVariableOp") for n in graph_def.node)  # variables folded
    x, ref = reference
    got = run_frozen_graph(graph_def, nodes, x)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_onnx_equals_keras(run: Path, reference) -> None:
    import onnxruntime as ort

    from sbt_batch.cnn.export import export_run

    info = export_run(run, "onnx")
    sess = ort.InferenceSession(info["path"], providers=["CPUExecutionProvider"])
    x, ref = reference
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert json.loads(Path(info["nodes"]).read_text())["inputs"] == [sess.get_inputs()[0].name]


def test_savedmodel_equals_keras(run: Path, reference) -> None:
    import tensorflow as tf

    from sbt_batch.cnn.export import export_run

    info = export_run(run, "savedmodel")
    loaded = tf.saved_model.load(info["path"])
    x, ref = reference
    got = loaded.signatures["serving_default"](input=tf.constant(x))["output"].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_jpeg_sets_via_cli(run: Path) -> None:
    from PIL import Image

    r = run_sbt("export", run, "--format", "jpeg", "--max-images", "20")
    assert r.returncode == 0, r.stderr
    root = run / "export" / "jpeg"
    for name, n in (("train", 20), ("val", 20), ("test", 20)):
        files = sorted((root / f"{name}_images").iterdir())
        assert len(files) == n and (root / f"{name}_images" / f"0_{name}.jpeg") in files
    img = np.asarray(Image.open(root / "train_images" / "0_train.jpeg"))
    assert img.shape == (26, 32, 3)
    rows = list(csv.DictReader((root / "labels.csv").open()))
    assert len(rows) == 60 and {r["label"] for r in rows} <= {"0", "1"}
    assert rows[0]["image"] == "train_images/0_train.jpeg"


def test_export_cli_errors(run: Path, tmp_path: Path) -> None:
    assert_one_line_error(run_sbt("export", run, "--format", "tflite"), "unknown format 'tflite'")
    assert_one_line_error(run_sbt("export", tmp_path / "none", "--format", "onnx"), "run directory not found")


def test_two_channel_et_over_rho_exports_equal_keras(tmp_path: Path, gfex_signal, gfex_background) -> None:
    """--inputs et,et_over_rho: a (rows, 32, 2) input to 3c-gpool (global max and mean pool); frozen pb and ONNX
    (with eta TTA) equal Keras."""
    import onnxruntime as ort

    from sbt_batch.cnn.evaluate import load_run_model, run_stream
    from sbt_batch.cnn.export import export_run
    from sbt_batch.cnn.symmetry import with_tta
    from sbt_batch.cnn.train import train
    from sbt_batch.common.rundir import RunDir

    out = tmp_path / "run"
    train(signal=gfex_signal, background=gfex_background, model="3c-gpool", padding="circular", tta="eta",
          inputs="et,et_over_rho", out=str(out), epochs=1, max_events=60, split="0.5,0.2,0.3", seed=2,
          max_steps=2, progress=False)
    rd = RunDir(out)
    stream, _, split = run_stream(rd)
    x = stream.read(split["test"])
    assert x.shape[1:] == (26, 32, 2) and rd.read_config()["preprocess"]["std2"] != 1.0
    ref = np.asarray(with_tta(load_run_model(rd), "eta")(x))
    info = export_run(out, "frozen-pb")
    nodes = json.loads(Path(info["nodes"]).read_text())
    assert nodes["input_shape"] == [None, 26, 32, 2]
    got = run_frozen_graph(frozen_graph_def(info["path"]), nodes, x)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    sess_onnx = ort.InferenceSession(export_run(out, "onnx")["path"], providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess_onnx.run(None, {sess_onnx.get_inputs()[0].name: x})[0], ref, atol=1e-5)
