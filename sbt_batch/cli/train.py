"""CLI commands: train, evaluate, compare, export (thin wrappers; TensorFlow is imported inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sbt_batch.cli.app import app
from sbt_batch.common.console import console, err_console
from sbt_batch.common.optional import check

_FILES = "HDF5 file from 'sbt-batch convert'; repeat the option, give a comma list or quote a glob ('data/*.hdf5')."


@app.command("train", rich_help_panel="Train")
def train_cmd(
    signal: list[str] | None = typer.Option(None, "--signal", "-s", help=f"Signal (label 1) {_FILES}"),
    background: list[str] | None = typer.Option(None, "--background", "-b", help=f"Background (label 0) {_FILES}"),
    model: str | None = typer.Option(None, "--model", "-m", help="Model name: 1c, 2c, 1c1m, 2c2m (default), 2c2m-dropout, res3."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory to create."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML job spec (jobs/train-gfex.yaml); flags override it."),
    epochs: int | None = typer.Option(None, help="Epochs [10]."),
    batch_size: int | None = typer.Option(None, help="Batch size [64]."),
    seed: int | None = typer.Option(None, help="Seed for split, shuffling and weights [1]."),
    rows: str | None = typer.Option(None, help="Eta rows START:STOP, e.g. 0:26 [auto: drop rows zero in every event]."),
    split: str | None = typer.Option(None, help="Train,val,test fractions [0.5,0.45,0.05]."),
    max_events: int | None = typer.Option(None, help="At most this many events per class (seeded subset)."),
    norm: str | None = typer.Option(None, help="none | log1p | standardize (default; train-split mean/std) | max."),
    negative: str | None = typer.Option(None, help="Negative ET: clip (default, set to 0) | keep."),
    log1p_scale: float | None = typer.Option(None, help="log1p(ET/scale), scale in MeV [1000]."),
    rgb: bool | None = typer.Option(None, "--rgb/--grey", help="Viridis RGB input (rows,32,3) as for JPEG/DNNDK."),
    output: str | None = typer.Option(None, help="Output layer: softmax (2 classes, default) | sigmoid."),
    optimizer: str | None = typer.Option(None, help="adam (default) | sgd | rmsprop | adadelta | adagrad | nadam."),
    lr: float | None = typer.Option(None, help="Learning rate [optimizer default: adam 1e-3, sgd 1e-2]."),
    lr_schedule: str | None = typer.Option(None, help="constant (default) | exp: lr * lr-decay^epoch."),
    lr_decay: float | None = typer.Option(None, help="Decay factor per epoch for --lr-schedule exp [0.7]."),
    balance: str | None = typer.Option(None, help="weights (default, class weights) | oversample | none."),
    early_stopping: int | None = typer.Option(None, help="Stop after N epochs without val_loss improvement."),
    keep_best: bool | None = typer.Option(None, "--keep-best/--keep-last", help="Save the best-val_loss weights as model.keras."),
    cache: str | None = typer.Option(None, help="auto (default: memory when it fits) | memory | stream."),
    cache_limit_mb: int | None = typer.Option(None, help="Largest in-memory cache for --cache auto [2048]."),
    window_batches: int | None = typer.Option(None, help="Batches per read and shuffle window, capped at 32 MB [64]."),
    parallel_reads: int | None = typer.Option(None, help="Concurrent window reads [4]."),
    prefetch: int | None = typer.Option(None, help="Batches prefetched [2]."),
    max_steps: int | None = typer.Option(None, help="Stop each epoch after N steps (smoke tests)."),
    deterministic: bool | None = typer.Option(None, "--deterministic/--fast", help="TF op determinism [on]."),
    resume: Path | None = typer.Option(None, help="Continue RUN_DIR from its last checkpoint (same weights as uninterrupted)."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Progress bar per epoch."),
    drop_nonfinite: bool | None = typer.Option(None, "--drop-nonfinite/--refuse-nonfinite",
                                                  help="Leave out events with NaN/inf towers (counted in config.yaml) instead of refusing the file."),
    padding: str | None = typer.Option(None, help="valid (default) | circular (phi periodic, eta zero) | circular-reflect (eta reflected)."),
    augment: str | None = typer.Option(None, help="Random symmetry per event and step: none (default) | phi (roll) | eta (reflect) | full."),
    tta: str | None = typer.Option(None, help="Test-time average at evaluate/export over: none (default) | phi | eta | full."),
    split_seed: int | None = typer.Option(None, help="Seed of the event subset and split [--seed]; fix it to compare seeds on one split."),
    inputs: str | None = typer.Option(None, help="Image channels: et (default) | et,et_over_rho (adds ET / rho of the event, offlineRho)."),
    ranks: int | None = typer.Option(None, "--ranks", help="Train on N Horovod ranks on this machine (see --launcher)."),
    launcher: str = typer.Option("gloo", "--launcher", help="For --ranks: gloo (horovodrun --gloo) | mpi (mpirun)."),
) -> None:
    """Train a gFEX CNN (signal vs background) and write a run directory.

    Exit code 75 means SIGTERM arrived: a checkpoint was saved; requeue with --resume RUN_DIR.
    """
    check("tensorflow", "sbt-batch train")  # before any data is read (no import: --help and bad options stay fast)
    from sbt_batch.cnn.train import train

    opts: dict[str, Any] = {k: v for k, v in locals().items()
                            if k not in ("config", "resume", "train", "ranks", "launcher") and v is not None}
    for key in ("signal", "background"):
        if key in opts and not opts[key]:
            del opts[key]
    if "out" in opts:
        opts["out"] = str(opts["out"])
    if ranks is not None:  # start the ranks (they run this same command line), or be one of them
        import sys

        from sbt_batch.cnn.launch import launch_local

        if launch_local(ranks, launcher, sys.argv[1:], opts, config, resume, notify=_say):
            return
    if resume is not None:
        result = train(resume=str(resume), notify=_say, **{k: v for k, v in opts.items() if k not in ("signal", "background")})
    else:
        result = train(spec=config, notify=_say, **opts)
    last = result.history[-1] if result.history else {}
    from sbt_batch.common.launchenv import launch_info

    info = launch_info()
    if info is not None and info.rank != 0:  # only rank 0 reports
        return
    console.print(f"wrote {result.run_dir}/model.keras"
                  + (f" (val_accuracy {last.get('val_accuracy', float('nan')):.4f})" if last else ""))


@app.command("evaluate", rich_help_panel="Train")
def evaluate_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory written by 'sbt-batch train'."),
    signal: list[str] | None = typer.Option(None, "--signal", "-s", help="Evaluate on these signal files instead of the test split."),
    background: list[str] | None = typer.Option(None, "--background", "-b", help="... and these background files."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder [RUN_DIR/eval]."),
) -> None:
    """Accuracy, baseline error, ROC/AUC, rejection at 50%/80% signal efficiency, plots and metrics.json."""
    for module in ("tensorflow", "matplotlib"):
        check(module, "sbt-batch evaluate")
    from sbt_batch.cnn.evaluate import evaluate_run
    from sbt_batch.cnn.prepare import expand_paths

    sig = expand_paths(signal or [], "--signal")
    bkg = expand_paths(background or [], "--background")
    if bool(sig) != bool(bkg):
        from sbt_batch.common.errors import UserError

        raise UserError("evaluate: give both --signal and --background files, or neither (test split)")
    m = evaluate_run(run_dir, sig or None, bkg or None, out)
    _print_table([{"run": str(run_dir), **m}], title=f"{run_dir} ({m['evaluated_on']}, {m['events']} events)")


@app.command("compare", rich_help_panel="Train")
def compare_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories to compare."),
    out: Path = typer.Option(Path("compare"), "--out", "-o", help="Output folder for roc and baseline_error plots."),
) -> None:
    """Overlay ROC curves, draw the baseline-error bar chart and print a table."""
    check("matplotlib", "sbt-batch compare")
    from sbt_batch.cnn.evaluate import compare_runs

    rows = compare_runs(run_dirs, out)
    _print_table(rows, title="comparison (test split)")
    console.print(f"plots: {out}/roc.png, {out}/baseline_error.png (and .pdf)")


@app.command("export", rich_help_panel="Train")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory written by 'sbt-batch train'."),
    format: str = typer.Option(..., "--format", "-f", help="savedmodel | frozen-pb | onnx | jpeg."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder [RUN_DIR/export]."),
    max_images: int | None = typer.Option(None, help="jpeg: at most N images per split."),
) -> None:
    """Export a trained model (SavedModel, frozen graph, ONNX) or its JPEG image sets."""
    from sbt_batch.cnn.export import export_run

    info = export_run(run_dir, format, out, max_images)
    console.print(f"wrote {info['path']}")
    if "inputs" in info:
        console.print(f"input nodes:  {', '.join(info['inputs'])}  shape {info['input_shape']}")
        console.print(f"output nodes: {', '.join(info['outputs'])}  shape {info['output_shape']}")
    if "nodes" in info:
        console.print(f"node names stored in {info['nodes']}")
    if "images" in info:
        console.print(f"{info['images']} images, labels in {info['labels']}")


def _say(line: str) -> None:
    """Print one of the training's progress lines (epoch summaries, resuming, early stopping) on stderr."""
    err_console.print(line, markup=False, highlight=False, soft_wrap=True)


def _print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("model/run", "AUC", "accuracy", "baseline error %", "rej@50%", "rej@80%"):
        table.add_column(col, justify="left" if col == "model/run" else "right")
    for r in rows:
        table.add_row(str(r.get("label") or r.get("model") or r.get("run")), _f(r.get("auc"), 4), _f(r.get("accuracy"), 4),
                      _f(r.get("baseline_error_percent"), 2), _f(r.get("rejection_at_50"), 1), _f(r.get("rejection_at_80"), 1))
    console.print(table)


def _f(v: Any, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
