"""CLI command: demo (the whole chain on generated sample data)."""

from __future__ import annotations

from pathlib import Path

import typer

from sbt_batch.cli.app import app


@app.command("demo", rich_help_panel="Start here")
def demo_cmd(
    out_dir: Path = typer.Argument(Path("demo-out"), help="Directory for everything the demo writes."),
    files: int = typer.Option(2, "--files", help="Sample ntuple files per class."),
    events: int = typer.Option(1000, "--events", help="Events per sample file."),
    epochs: int = typer.Option(5, "--epochs", help="Training epochs."),
    model: str = typer.Option("2c2m", "--model", help="CNN from the model registry."),
    seed: int = typer.Option(1, "--seed", help="Random seed for the samples and the training."),
    train: bool = typer.Option(True, "--train/--no-train", help="Also train, evaluate and export (needs the [train] extra)."),
) -> None:
    """Run the whole chain on generated sample data: ntuples, convert, train, evaluate, export."""
    from rich.markup import escape
    from rich.table import Table

    from sbt_batch.cnn.demo import run_demo
    from sbt_batch.common.console import console, err_console

    def on_stage(name: str, summary: str, seconds: float) -> None:
        console.print(f"[green]✓[/] {escape(name)}: {escape(summary)} [dim]({seconds:.1f} s)[/]")

    def notify(line: str) -> None:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)

    result = run_demo(out_dir, files=files, events=events, epochs=epochs, model=model, seed=seed, train=train,
                      on_stage=on_stage, notify=notify)
    for note in result.notes:
        console.print(f"[yellow]{escape(note)}[/]")
    table = Table(title=f"sbt-batch demo: {result.out_dir}", title_justify="left")
    table.add_column("stage", style="bold")
    table.add_column("result", overflow="fold")
    table.add_column("time", justify="right")
    for name, summary, seconds in result.stages:
        table.add_row(name, summary, f"{seconds:.1f} s")
    console.print(table)
