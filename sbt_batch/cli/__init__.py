"""The ``sbt-batch`` command line: thin typer commands over library functions.

Each module in this package registers its commands on :data:`sbt_batch.cli.app.app`
and imports heavy libraries (numpy, uproot, TensorFlow) only inside command bodies,
so that ``sbt-batch --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from sbt_batch.cli import batch, convert, demo, image, kinematics, train  # noqa: F401  (register commands)
from sbt_batch.cli.app import app
from sbt_batch.errors import EXIT_FAILURE, UserError

__all__ = ["app", "main"]


def _fail(message: str, code: int) -> None:
    """Print one ``error:`` line on stderr and exit with ``code``."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning UserError into a one-line error and its exit code (never a traceback)."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="sbt-batch")  # standalone: usage errors exit 2 by themselves
    except UserError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
