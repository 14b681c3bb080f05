"""CLI commands: report (one self-contained HTML page per set of runs) and provenance (an artifact's chain)."""

from __future__ import annotations

from pathlib import Path

import typer

from sbt_batch.cli.app import app
from sbt_batch.common.console import console


@app.command("report", rich_help_panel="Reports")
def report_cmd(
    runs: list[str] = typer.Argument(..., help="Batch run directories or names, and/or training run directories."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="The HTML page to write."),
    runs_dir: Path | None = typer.Option(None, "--runs-dir", help="Where batch runs named by name live [$SBT_BATCH_RUNS or ./runs]."),
) -> None:
    """Write one self-contained HTML page (plots embedded, no network needed) and print a summary."""
    from sbt_batch.report import build_report
    from sbt_batch.report.terminal import summary

    built = build_report(runs, output, runs_dir)
    for rep in built.reports:
        for item in summary(rep):
            console.print(item)
    console.print(f"wrote {built.output}")


@app.command("provenance", rich_help_panel="Reports")
def provenance_cmd(
    file: Path = typer.Argument(..., help="An artifact: exported ONNX or frozen graph, model.keras, metrics.json, HDF5."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored record as JSON."),
    max_roots: int = typer.Option(20, "--max-roots", help="ROOT files listed per HDF5 file."),
) -> None:
    """Print the chain from FILE back through the model and the training HDF5 files to the ROOT files."""
    import json

    from sbt_batch.common import provenance as P

    record = P.read(file)
    if as_json:
        console.print_json(json.dumps(record, default=str))
        return
    for line in P.chain_lines(record, file, max_roots=max_roots):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    roots = P.root_files(record)
    console.print(f"{len(roots)} ROOT file(s) at the origin", highlight=False)
