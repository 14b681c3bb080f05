"""The end-to-end demo: sample ntuples -> HDF5 -> CNN training -> evaluation -> export."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbt_batch.common.console import log
from sbt_batch.common.optional import available, install_hint

OnStage = Callable[[str, str, float], None]
"""Called after each stage with (stage, summary, seconds)."""


@dataclass
class DemoResult:
    """What the demo wrote and measured, stage by stage."""

    out_dir: Path
    stages: list[tuple[str, str, float]] = field(default_factory=list)  # (stage, summary, seconds)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was skipped and why


def training_available() -> bool:
    """True when the training extra (TensorFlow) is installed."""
    return available("tensorflow")


def run_demo(
    out_dir: str | Path = "demo-out",
    *,
    files: int = 2,
    events: int = 1000,
    epochs: int = 5,
    model: str = "2c2m",
    seed: int = 1,
    train: bool = True,
    on_stage: OnStage | None = None,
    notify: Callable[[str], None] | None = None,
) -> DemoResult:
    """Generate sample ntuples, convert them, and (when TensorFlow is installed) train, evaluate and export.

    ``on_stage`` hears of each finished stage; ``notify`` receives the training's progress lines.
    """
    from sbt_batch.convert.driver import convert
    from sbt_batch.convert.samples import KINDS, make_sample_ntuples

    out = Path(out_dir)
    result = DemoResult(out)

    def stage(name: str, summary: str, t0: float) -> None:
        seconds = time.perf_counter() - t0
        result.stages.append((name, summary, seconds))
        log.info("demo stage %s: %s (%.1f s)", name, summary, seconds)
        if on_stage is not None:
            on_stage(name, summary, seconds)

    t0 = time.perf_counter()
    ntuples = {
        kind: make_sample_ntuples(out / "ntuples" / kind, kind, files, events, seed=seed)
        for kind in KINDS
    }
    stage("sample-ntuples", f"{2 * files} ROOT files x {events} events in {out / 'ntuples'}", t0)

    h5 = {}
    (out / "data").mkdir(parents=True, exist_ok=True)
    for kind, paths in ntuples.items():
        t0 = time.perf_counter()
        conv = convert(paths, out / "data" / f"{kind}.h5", workers=1)
        h5[kind] = conv.output
        rows, cols = conv.shape
        stage(f"convert {kind}", f"{conv.events} events -> {conv.output} ({rows}x{cols}, {conv.rate:,.0f} events/s)", t0)

    if not train:
        return result
    if not training_available():
        result.notes.append(f"TensorFlow is not installed: skipping training ({install_hint('tensorflow')}).")
        return result

    from sbt_batch.cnn.evaluate import evaluate_run
    from sbt_batch.cnn.export import export_run, needs
    from sbt_batch.cnn.train import train as train_model

    run_dir = out / "run"
    t0 = time.perf_counter()
    trained = train_model(
        signal=[str(h5["signal"])], background=[str(h5["background"])], model=model, out=str(run_dir),
        epochs=epochs, seed=seed, split="0.6,0.2,0.2", notify=notify,
    )  # fmt: skip
    last = trained.history[-1] if trained.history else {}
    stage("train", f"{model}, {epochs} epochs, val_loss {last.get('val_loss', float('nan')):.3f} -> {run_dir}", t0)

    t0 = time.perf_counter()
    result.metrics = evaluate_run(run_dir)
    stage("evaluate", f"test AUC {result.metrics.get('auc', float('nan')):.3f}, "
          f"accuracy {result.metrics.get('accuracy', float('nan')):.3f}", t0)  # fmt: skip

    for fmt in ("frozen-pb", "onnx"):
        absent = [m for m in needs(fmt) if not available(m)]
        if absent:  # e.g. the onnx extras missing: the demo goes on
            result.notes.append(f"export {fmt} skipped: {', '.join(absent)} not installed ({install_hint(absent[0])}).")
            continue
        t0 = time.perf_counter()
        info = export_run(run_dir, fmt)
        stage(f"export {fmt}", str(info.get("path")), t0)
    return result
