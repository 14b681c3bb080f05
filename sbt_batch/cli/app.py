"""The typer application object that every command module registers on."""

from __future__ import annotations

import typer

from sbt_batch import __version__
from sbt_batch.common.console import set_debug, setup_logging

app = typer.Typer(
    name="sbt-batch",
    help="Containerized HPC batch toolkit for particle-physics machine learning (gFEX CNNs, H->bb classifiers).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    # The group's own --help is the bool option in root() below: typer coerces a built-in help
    # option's unset value through pydantic, an import that costs every `COMMAND --help` 0.15 s.
    add_help_option=False,
)


def _print_help(ctx: typer.Context, value: bool) -> None:
    if value:
        typer.echo(ctx.get_help(), color=ctx.color)
        raise typer.Exit()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sbt-batch {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
    show_help: bool = typer.Option(
        False, "--help", "-h", callback=_print_help, is_eager=True, expose_value=False, help="Show this message and exit."
    ),
    # Flags, not a counted int: typer coerces every non-bool value through pydantic, whose import
    # would cost every `sbt-batch COMMAND --help` about 0.15 s.
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More log output (INFO)."),
    debug: bool = typer.Option(False, "--debug", help="Debug log output, TensorFlow's own messages included."),
) -> None:
    """Convert gFEX ntuples, train and export CNNs, and run it all as batch jobs."""
    # TensorFlow's C++ start-up lines drown what people read; --debug brings them back (set_debug
    # overrides a TF_CPP_MIN_LOG_LEVEL inherited from the environment; console.import_tensorflow
    # filters what C++ writes before that variable takes effect).
    set_debug(debug)
    setup_logging(2 if debug else int(verbose))
