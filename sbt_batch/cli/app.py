"""The typer application object that every command module registers on."""

from __future__ import annotations

import os

import typer

from sbt_batch import __version__
from sbt_batch.console import setup_logging

app = typer.Typer(
    name="sbt-batch",
    help="Containerized HPC batch toolkit for particle-physics machine learning (gFEX CNNs, H->bb classifiers).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sbt-batch {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-v info, -vv debug)."),
) -> None:
    """Convert gFEX ntuples, train and export CNNs, and run it all as batch jobs."""
    # TensorFlow's C++ INFO/WARNING lines drown what people read; -vv brings them back.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose >= 2 else "2")
    setup_logging(verbose)
