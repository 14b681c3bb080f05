"""The end-to-end demo: sample ntuples -> HDF5 -> CNN training -> evaluation -> export."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbt_batch.common.console import console, log


@dataclass
class DemoResult:
    """What the demo wrote and measured, stage by stage."""

    out_dir: Path
    stages: list[tuple[str, str, float]] = field(default_factory=list)  # (stage, summary, seconds)
    metrics: dict[str, Any] = field(default_factory=dict)


def training_available() -> bool:
    """True when the training extra (TensorFlow) is installed."""
    return importlib.util.find_spec("tensorflow") is not None


def run_demo(
    out_dir: str | Path = "demo-out",
    *,
    files: int = 2,
    events: int = 1000,
    epochs: int = 5,
    model: str = "2c2m",
    seed: int = 1,
    train: bool = True,
) -> DemoResult:
    """Generate sample ntuples, convert them, and (when TensorFlow is installed) train, evaluate and export."""
    from sbt_batch.convert.driver import convert
    from sbt_batch.convert.samples import KINDS, make_sample_ntuples

    out = Path(out_dir)
    result = DemoResult(out)

    def stage(name: str, summary: str, t0: float) -> None:
        seconds = time.perf_counter() - t0
        result.stages.append((name, summary, seconds))
        console.print(f"[green]✓[/] {name}: {summary} [dim]({seconds:.1f} s)[/]")

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
        console.print("[yellow]TensorFlow is not installed: skipping training (pip install 'sbt-batch[train]').[/]")
        return result

    from sbt_batch.cnn.evaluate import evaluate_run
    from sbt_batch.cnn.export import export_run
    from sbt_batch.cnn.train import train as train_model

    run_dir = out / "run"
    t0 = time.perf_counter()
    trained = train_model(
        signal=[str(h5["signal"])], background=[str(h5["background"])], model=model, out=str(run_dir),
        epochs=epochs, seed=seed, split="0.6,0.2,0.2",
    )  # fmt: skip
    last = trained.history[-1] if trained.history else {}
    stage("train", f"{model}, {epochs} epochs, val_loss {last.get('val_loss', float('nan')):.3f} -> {run_dir}", t0)

    t0 = time.perf_counter()
    result.metrics = evaluate_run(run_dir)
    stage("evaluate", f"test AUC {result.metrics.get('auc', float('nan')):.3f}, "
          f"accuracy {result.metrics.get('accuracy', float('nan')):.3f}", t0)  # fmt: skip

    for fmt in ("frozen-pb", "onnx"):
        t0 = time.perf_counter()
        try:
            info = export_run(run_dir, fmt)
        except ImportError as exc:  # onnx extras missing: the demo goes on
            log.warning("export %s skipped: %s", fmt, exc)
            continue
        stage(f"export {fmt}", str(info.get("path")), t0)
    return result
