"""Export a trained run: SavedModel, frozen graph (.pb) for DNNDK/Vitis AI, ONNX, and JPEG image sets.

Outputs go to RUN_DIR/export/ (or ``out``). Every export is written to a temporary name first and
renamed into place, so an interrupted export never leaves a half-written file or folder.
The exported graphs take the *preprocessed* image (see ``preprocess`` in the ``.json`` beside them).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np

from sbt_batch.common.console import import_tensorflow
from sbt_batch.common.errors import UserError
from sbt_batch.common.fileio import atomic_dir, atomic_path, staged_dir, write_json_atomic
from sbt_batch.common.optional import check, require
from sbt_batch.common.provenance import record_export
from sbt_batch.common.rundir import RunDir

FORMATS = ("savedmodel", "frozen-pb", "onnx", "jpeg")
INPUT_NAME = "input"
# the optional packages each format needs (import names); the model itself needs TensorFlow
NEEDS = {"savedmodel": ("tensorflow",), "frozen-pb": ("tensorflow",), "onnx": ("tensorflow", "tf2onnx", "onnx"),
         "jpeg": ("PIL",)}


def needs(fmt: str) -> tuple[str, ...]:
    """The optional packages (import names) that exporting in ``fmt`` needs; () for an unknown format."""
    return NEEDS.get(fmt, ())


def _purpose(fmt: str) -> str:
    return f"sbt-batch export --format {fmt}"


def _concrete(model: Any) -> tuple[Any, Any]:
    tf = import_tensorflow("sbt-batch export")
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=INPUT_NAME)
    fn = tf.function(lambda t: model(t, training=False))
    return fn, spec


def _info(run: RunDir, model: Any, inputs: list[str], outputs: list[str], fmt: str) -> dict[str, Any]:
    cfg = run.read_config("model")
    return {
        "format": fmt,
        "model": cfg.get("model"),
        "inputs": inputs,
        "outputs": outputs,
        "input_shape": [None, *model.input_shape[1:]],
        "output_shape": [None, *model.output_shape[1:]],
        "output": cfg.get("output", "softmax"),
        "signal_column": 1 if model.output_shape[-1] == 2 else 0,
        "preprocess": cfg.get("preprocess"),
    }


def export_savedmodel(model: Any, target: Path) -> Path:
    """A TensorFlow SavedModel folder with a ``serve`` signature."""
    tf = import_tensorflow(_purpose("savedmodel"))

    _fn, spec = _concrete(model)
    module = tf.Module()
    module.model = model
    module.serve = tf.function(lambda input: {"output": model(input, training=False)}, input_signature=[spec])
    with atomic_dir(target) as tmp:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
    return target


def export_frozen_pb(model: Any, target: Path) -> tuple[Path, list[str], list[str]]:
    """A frozen GraphDef (variables folded into constants); returns (path, input names, output names)."""
    tf = import_tensorflow(_purpose("frozen-pb"))
    convert_variables_to_constants_v2 = require("tensorflow.python.framework.convert_to_constants",
                                                _purpose("frozen-pb")).convert_variables_to_constants_v2

    fn, spec = _concrete(model)
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(spec))
    graph_def = frozen.graph.as_graph_def()
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in frozen.outputs]
    with atomic_path(target, suffix=".pb") as tmp:
        tmp.write_bytes(graph_def.SerializeToString())
    return target, inputs, outputs


def export_onnx(model: Any, target: Path, opset: int = 17) -> tuple[Path, list[str], list[str]]:
    """An ONNX model through tf2onnx.convert.from_function (from_keras fails with Keras 3)."""
    tf2onnx = require("tf2onnx", _purpose("onnx"))

    fn, spec = _concrete(model)
    with atomic_path(target, suffix=".onnx") as tmp:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=opset, output_path=str(tmp))
    return target, [i.name for i in proto.graph.input], [o.name for o in proto.graph.output]


def export_jpeg(run: RunDir, target: Path, max_images: int | None = None, quality: int = 95) -> tuple[Path, int]:
    """The run's train/val/test images as viridis JPEGs (``train_images/<i>_train.jpeg``...) plus labels.csv."""
    from sbt_batch.cnn import prepare as D
    from sbt_batch.cnn.evaluate import run_stream

    Image = require("PIL.Image", _purpose("jpeg"))
    stream, _ids, split = run_stream(run)
    assert split is not None
    grey = dataclasses.replace(stream.prep, rgb=False, inputs="et")  # normalized grey ET images, colored below
    index = stream.index
    rows = []
    try:
        with atomic_dir(target) as tmp:
            for name in D.SPLIT_NAMES:
                ids = split.get(name, np.zeros(0, np.int64))[: max_images]
                folder = tmp / f"{name}_images"
                folder.mkdir()
                for lo in range(0, len(ids), 4096):
                    chunk = ids[lo : lo + 4096]
                    imgs = D.to_rgb_uint8(grey.apply(stream.read_raw(chunk))[..., 0])
                    files, events = index.locate(chunk)
                    for i, gid, img, f, r in zip(range(lo, lo + len(chunk)), chunk, imgs, files, events):
                        fname = f"{i}_{name}.jpeg"
                        Image.fromarray(img, "RGB").save(folder / fname, format="JPEG", quality=quality)
                        rows.append([name, i, f"{name}_images/{fname}", int(index.labels[gid]),
                                     index.sources[int(f)].path.name, int(r)])
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["split", "index", "image", "label", "file", "event"])
            w.writerows(rows)
            (tmp / "labels.csv").write_text(buf.getvalue())
    finally:
        stream.close()
    return target, len(rows)


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None, max_images: int | None = None) -> dict[str, Any]:
    """Export RUN_DIR in ``fmt``; returns a dict with the written path(s) and, for graphs, node names."""
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format '{fmt}' (choose from {', '.join(FORMATS)})")
    if max_images is not None and max_images < 0:
        raise UserError(f"--max-images: must be at least 0, got {max_images}")
    for module in needs(fmt):  # a light install learns what to install before any work
        check(module, _purpose(fmt))
    run = RunDir(Path(run_dir)).require("config", "model")
    out_dir = Path(out) if out else run.export
    if fmt == "jpeg":
        with staged_dir(out_dir) as stage:  # the export and its files appear together, or nothing on failure
            _tmp, n = export_jpeg(run, stage / "jpeg", max_images)
        path = out_dir / "jpeg"
        record_export(path, run.path, fmt)
        return {"format": fmt, "path": str(path), "images": n, "labels": str(path / "labels.csv")}
    from sbt_batch.cnn.evaluate import load_run_model
    from sbt_batch.cnn.symmetry import with_tta

    model = with_tta(load_run_model(run), str(run.read_config().get("tta") or "none"))  # the averaged score, as evaluate
    if fmt == "savedmodel":
        info = _info(run, model, [f"{INPUT_NAME}"], ["output"], fmt)
        with staged_dir(out_dir) as stage:
            export_savedmodel(model, stage / "savedmodel")
            write_json_atomic(stage / "savedmodel.json", info)
        path = out_dir / "savedmodel"
        record_export(path, run.path, fmt)
        return {**info, "path": str(path)}
    with staged_dir(out_dir) as stage:
        if fmt == "frozen-pb":
            tmp, ins, outs = export_frozen_pb(model, stage / "model.pb")
        else:
            tmp, ins, outs = export_onnx(model, stage / "model.onnx")
        info = _info(run, model, ins, outs, fmt)
        write_json_atomic(tmp.with_name(tmp.name + ".json"), info)
    path = out_dir / tmp.name
    record_export(path, run.path, fmt)
    return {**info, "path": str(path), "nodes": str(path.with_name(path.name + ".json"))}
