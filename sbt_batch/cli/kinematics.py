"""CLI commands for the H->bb kinematic classifier: sample-kinematics, train-tabular, summarize-repeats."""

from __future__ import annotations

from pathlib import Path

import typer

from sbt_batch.cli.app import app


@app.command("sample-kinematics", rich_help_panel="Kinematics")
def sample_kinematics(
    out: Path = typer.Argument(..., help="Output file: .csv, .h5/.hdf5 or .root (a TTree)."),
    events: int = typer.Option(20000, "--events", "-n", help="Number of events (signal and backgrounds together)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    tree: str = typer.Option("Nominal", "--tree", help="TTree name for .root output."),
) -> None:
    """Generate a VHbb-like data set (ZH signal; ttbar, W+jets, Z+jets, diboson) with weights."""
    import numpy as np

    from sbt_batch.common.console import console
    from sbt_batch.tabular.data import write_table
    from sbt_batch.tabular.sample import PROCESSES, generate

    data = generate(events, seed)
    write_table(out, data, tree=tree)
    parts = []
    for proc in PROCESSES:
        mask = data["sample"] == proc.name
        parts.append(f"{proc.name} {int(mask.sum())} ev, yield {float(np.sum(data['EventWeight'][mask] * data['post_fit_weight'][mask])):.1f}")
    console.print(f"wrote {out}: {events} events ({'; '.join(parts)})")


@app.command("train-tabular", rich_help_panel="Kinematics")
def train_tabular(
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory (with --repeats N or --repeat-index: RUN_DIR/repeat-<i>/ each)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML job spec (keys as the long options); flags override it."),
    data: list[str] | None = typer.Option(None, "--data", help="Input file(s) (.csv, .h5, .root), split by --split. Repeatable."),
    train: str | None = typer.Option(None, "--train", help="Separate training file (with --val and --test)."),
    val: str | None = typer.Option(None, "--val", help="Separate validation file."),
    test: str | None = typer.Option(None, "--test", help="Separate test file (the sensitivity is computed on it)."),
    split: str | None = typer.Option(None, "--split", help="train,val,test fractions for --data (default 0.6,0.2,0.2)."),
    split_seed: int | None = typer.Option(None, "--split-seed", help="Seed of the split (default --seed; the same for all repeats)."),
    tree: str | None = typer.Option(None, "--tree", help="Tree name in ROOT inputs (default the only tree)."),
    hdf5_key: str | None = typer.Option(None, "--hdf5-key", help="Group or compound dataset in HDF5 inputs (default the root group)."),
    variables: str | None = typer.Option(None, "--variables", help="Input variable columns (default dRBB,mBB,MET,Mtop,pTV)."),
    class_column: str | None = typer.Option(None, "--class-column", help="Class column, 1 signal / 0 background (default Class)."),
    training_weight: str | None = typer.Option(None, "--training-weight", help="Training weight column, or 'none' (default training_weight)."),
    event_weight: str | None = typer.Option(None, "--event-weight", help="Event weight column, or 'none' (default EventWeight)."),
    post_fit_weight: str | None = typer.Option(None, "--post-fit-weight", help="Post-fit weight column, or 'none' (default post_fit_weight)."),
    sample_column: str | None = typer.Option(None, "--sample-column", help="Process name column, or 'none' (default sample)."),
    scaler: str | None = typer.Option(None, "--scaler", help="minmax, standard, norm (to -1..1) or none (default standard); fit on train only."),
    layers: int | None = typer.Option(None, "--layers", help="Number of hidden layers (default 3)."),
    units: str | None = typer.Option(None, "--units", help="Units per hidden layer: one value or one per layer, e.g. 64,32 (default 64)."),
    activation: str | None = typer.Option(None, "--activation", help="Activation: one value or one per layer (default relu)."),
    dropout: float | None = typer.Option(None, "--dropout", help="Dropout after each hidden layer (default 0)."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="adam or sgd (momentum 0.9) (default adam)."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (default 1e-3)."),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs (default 20)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size (default 256)."),
    seed: int | None = typer.Option(None, "--seed", help="Base seed; repeat i trains with seed + i (default 0)."),
    negative_weights: str | None = typer.Option(None, "--negative-weights", help="Negative training weights: abs, zero or keep (default abs)."),
    balance: bool | None = typer.Option(None, "--balance/--no-balance", help="Rescale training weights so both classes sum equally (default on)."),
    z_s: float | None = typer.Option(None, "--z-s", help="Transformation D z_s (default 10)."),
    z_b: float | None = typer.Option(None, "--z-b", help="Transformation D z_b (default 10)."),
    fine_steps: int | None = typer.Option(None, "--fine-steps", help="Fine steps of the transformation D scan (default 1000)."),
    repeats: int | None = typer.Option(None, "--repeats", help="Train N models with seeds seed..seed+N-1 and summarise (default 1)."),
    repeat_index: int | None = typer.Option(None, "--repeat-index", help="Train only repeat I (seed + I) into RUN_DIR/repeat-I (one batch array task)."),
    drop: int | None = typer.Option(None, "--drop", help="Drop the K largest and K smallest sensitivities from the summary (default 1)."),
    plots: bool | None = typer.Option(None, "--plots/--no-plots", help="Write plots (PNG and PDF) (default on)."),
) -> None:
    """Train the dense H->bb classifier with event weights and report its binned Asimov sensitivity."""
    from sbt_batch.common.config import merge_options
    from sbt_batch.common.console import console
    from sbt_batch.common.optional import check
    from sbt_batch.tabular.repeats import summary_renderables
    from sbt_batch.tabular.train import load_config_file, resolve_config
    from sbt_batch.tabular.train import train_tabular as run

    spec = load_config_file(config)
    column_flags = {
        "variables": variables, "label": class_column, "training_weight": training_weight,
        "event_weight": event_weight, "post_fit_weight": post_fit_weight, "sample": sample_column,
    }
    columns = spec.get("columns") or {}
    if isinstance(columns, dict):  # a non-mapping is reported by resolve_config
        columns = {**columns, **{k: v for k, v in column_flags.items() if v is not None}}
    options = {
        "out": str(out) if out else None, "data": data or None, "train": train, "val": val, "test": test, "split": split, "split_seed": split_seed,
        "tree": tree, "hdf5_key": hdf5_key, "scaler": scaler, "layers": layers, "units": units, "activation": activation,
        "dropout": dropout, "optimizer": optimizer, "lr": lr, "epochs": epochs, "batch_size": batch_size, "seed": seed,
        "negative_weights": negative_weights, "balance": balance, "z_s": z_s, "z_b": z_b, "fine_steps": fine_steps,
        "repeats": repeats, "repeat_index": repeat_index, "drop": drop, "plots": plots, "columns": columns or None,
    }
    cfg = resolve_config(merge_options(spec, options), str(config) if config else "config")
    check("tensorflow", "sbt-batch train-tabular")  # before the inputs are read (no import)
    result = run(cfg, notify=console.print)
    if "repeats" in result:
        for item in summary_renderables(result):
            console.print(item)
    else:
        console.print(
            f"{cfg.out}: sensitivity {result['sensitivity']:.4f} ± {result['error']:.4f} "
            f"({result['n_bins']} bins, test AUC {result['auc']:.4f}, repeat {result['repeat']}, seed {result['seed']})"
        )


@app.command("summarize-repeats", rich_help_panel="Kinematics")
def summarize_repeats(
    run_dir: Path = typer.Argument(..., help="Run directory with repeat-<i>/sensitivity.json."),
    drop: int = typer.Option(1, "--drop", help="Drop the K largest and K smallest sensitivities."),
    expected: int | None = typer.Option(None, "--expected", help="Number of repeats there should be (missing ones are an error)."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Summarise the repeats present even if some are missing."),
) -> None:
    """Mean and std of the sensitivity over repeated trainings, and the table of all repeats."""
    from sbt_batch.common.console import console
    from sbt_batch.tabular.repeats import collect_repeats, summary_renderables

    for item in summary_renderables(collect_repeats(run_dir, drop=drop, expected=expected, allow_missing=allow_missing)):
        console.print(item)
