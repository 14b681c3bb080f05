"""CLI commands: convert (gFEX ntuples to HDF5) and sample-ntuples (ntuples in the real layout)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sbt_batch.cli.app import app
from sbt_batch.convert.geometry import DEFAULT_ETA_MAX

if TYPE_CHECKING:  # pragma: no cover
    from sbt_batch.convert.driver import ConvertResult

PANEL = "Data"


@app.command("convert", rich_help_panel=PANEL)
def convert_cmd(
    inputs: list[str] = typer.Argument(..., help="Input ntuples: files, directories (their *.root), globs, root:// or https:// URLs, or @list.txt.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="Output HDF5 file (written atomically).", show_default=False),
    tree: str = typer.Option("mytree", "--tree", help="Event TTree or RNTuple."),
    maps_tree: str = typer.Option("maps", "--maps-tree", help="Tree with one entry of gTowerEta/gTowerPhi."),
    eta_max: float = typer.Option(DEFAULT_ETA_MAX, "--eta-max", help="Keep towers with |eta| <= this (2.4: 24 rows; 2.7: 28 rows)."),
    workers: int | None = typer.Option(None, "--workers", "-j", help="Local dask worker processes (default: one per core, at most one per file, none below 200 MB of towers); 1 converts in-process."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Address of a running dask scheduler (tcp://HOST:PORT)."),
    step_size: str = typer.Option("100MB", "--step-size", help="Read this much (or this many entries) per step; bounds memory."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable inputs (also URLs that stay unreachable), list them, and exit with code 3."),
    read_timeout: float = typer.Option(60.0, "--read-timeout", help="root:// and http(s):// inputs: seconds one request may wait (connect, or a read without progress)."),
    read_retries: int = typer.Option(3, "--read-retries", help="root:// and http(s):// inputs: retries of a request on transient errors, with exponential backoff (1, 2, 4 s...)."),
    pad_towers: bool = typer.Option(False, "--pad-towers", help="Pad gTowerEt shorter than the maps with 0 and truncate longer ones (root_numpy's behaviour), counting the events; otherwise such an event is an error."),
    cluster: str | None = typer.Option(None, "--cluster", help="Start dask workers as batch jobs: slurm or condor (dask-jobqueue)."),
    jobs: int | None = typer.Option(None, "--jobs", help="Number of batch jobs for --cluster."),
) -> None:
    """Convert gFEX ntuples (TTree or RNTuple) to HDF5 images gTowerEt (N, rows, cols) and offlineRho (N,)."""
    from sbt_batch.common.errors import EXIT_SKIPPED_BAD
    from sbt_batch.convert.driver import convert

    result = convert(
        inputs, output, tree=tree, maps_tree=maps_tree, eta_max=eta_max, workers=workers, scheduler=scheduler,
        step_size=step_size, skip_bad=skip_bad, cluster=cluster, jobs=jobs, show_progress=True, pad_towers=pad_towers,
        read_timeout=read_timeout, read_retries=read_retries,
    )  # fmt: skip
    print_summary(result)
    if result.skipped:
        raise typer.Exit(EXIT_SKIPPED_BAD)


def print_summary(result: ConvertResult) -> None:
    """Print a rich summary of a :class:`~sbt_batch.convert.driver.ConvertResult` (and the skipped files)."""
    from rich.table import Table

    from sbt_batch.common.console import console

    table = Table(title="convert", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    size = result.output.stat().st_size if result.output.exists() else 0
    rows, cols = result.shape
    table.add_row("output", f"{result.output} ({size / 1e6:.1f} MB)")
    table.add_row("events", f"{result.events:,}")
    table.add_row("files", f"{len(result.files)} converted, {len(result.skipped)} skipped")
    table.add_row("grid", f"{rows} x {cols} (|eta| <= {result.eta_max:g})")
    if result.pad_towers or result.padded:
        table.add_row("padded", f"{result.padded:,} events padded or truncated to the maps' tower count")
    table.add_row("workers", str(result.workers))
    table.add_row("time", f"{result.seconds:.2f} s ({result.rate:,.0f} events/s, {result.mb_rate:,.1f} MB/s read)")
    console.print(table)
    if result.skipped:
        bad = Table(title="skipped inputs", title_justify="left")
        bad.add_column("file", overflow="fold")
        bad.add_column("reason", overflow="fold")
        for path, reason in result.skipped:
            bad.add_row(path, reason)
        console.print(bad)


@app.command("sample-ntuples", rich_help_panel=PANEL)
def sample_ntuples_cmd(
    out_dir: Path = typer.Argument(..., help="Directory for the ROOT files (created if needed).", show_default=False),
    kind: str | None = typer.Option(None, "--kind", help="signal (ZvvHbb-like, central b-jets) or background (JZ0W-like)."),
    files: int = typer.Option(1, "--files", help="Number of files."),
    events: int | None = typer.Option(None, "--events", help="Events per file (default: 1000); with --from-hdf5, caps the total."),
    seed: int = typer.Option(0, "--seed", help="Random seed (files are reproducible)."),
    from_hdf5: Path | None = typer.Option(None, "--from-hdf5", help="Embed the images of this converted HDF5 file (exact round trip)."),
    compression: str = typer.Option("zlib:1", "--compression", help="zlib, lz4, zstd, lzma or none, optionally :LEVEL."),
    rntuple: bool = typer.Option(False, "--rntuple", help="Write RNTuples instead of TTrees."),
    shuffle_towers: bool = typer.Option(False, "--shuffle-towers", help="Store the towers in a random order (maps shuffled alike)."),
    basket_events: int = typer.Option(1000, "--basket-events", help="Events per TTree basket."),
    layout: str = typer.Option("fixed", "--layout", help="Tower branches as fixed float[1184] arrays, or jagged (variable-length arrays, read like std::vector<float>)."),
) -> None:
    """Write gFEX ntuples in the real layout (mytree: gTowerEt float[1184], Kt4EMTopoEventShape_Density; maps)."""
    from rich.table import Table

    from sbt_batch.common.console import console
    from sbt_batch.common.errors import UserError
    from sbt_batch.convert.samples import ETA_MAX_FOR_ROWS, embed_hdf5, make_sample_ntuples

    written: list[tuple[Path, int]] = []

    def on_file(path: Path, n: int) -> None:
        written.append((path, n))

    if from_hdf5 is not None:
        embed_hdf5(from_hdf5, out_dir, files=files, events=events, seed=seed, compression=compression, rntuple=rntuple,
                   shuffle_towers=shuffle_towers, basket_events=basket_events, layout=layout, on_file=on_file)
        note = "convert back with --eta-max " + ", ".join(f"{e} ({r} rows)" for r, e in ETA_MAX_FOR_ROWS.items())
    else:
        if kind is None:
            raise UserError("--kind: required (signal or background) unless --from-hdf5 is given")
        make_sample_ntuples(out_dir, kind, files, 1000 if events is None else events, seed=seed, compression=compression,
                            rntuple=rntuple, shuffle_towers=shuffle_towers, basket_events=basket_events, layout=layout,
                            on_file=on_file)
        note = ""
    table = Table(title="sample-ntuples", title_justify="left")
    table.add_column("file")
    table.add_column("events", justify="right")
    table.add_column("MB", justify="right")
    for path, n in written:
        table.add_row(str(path), f"{n:,}", f"{path.stat().st_size / 1e6:.1f}")
    console.print(table)
    if note:
        console.print(note)
