"""The ``sbt-batch`` command line: thin typer commands over library functions.

Each module in this package registers its commands on :data:`sbt_batch.cli.app.app`
and imports heavy libraries (numpy, uproot, TensorFlow) only inside command bodies,
so that ``sbt-batch --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

# Registering order is the order of the help panels.
from sbt_batch.cli import demo, convert, train, batch, kinematics, image  # noqa: F401,I001
from sbt_batch.cli.app import app
from sbt_batch.errors import EXIT_FAILURE, EXIT_USAGE, UserError

__all__ = ["app", "main"]


def _fail(message: str, code: int) -> None:
    """Print one ``error:`` line on stderr and exit with ``code``."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; usage errors and UserError become one ``error:`` line and an exit code, never a traceback."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="sbt-batch", standalone_mode=False)
    except UserError as exc:
        _fail(str(exc), exc.exit_code)
    except typer.Abort:
        _fail("aborted", EXIT_FAILURE)
    except typer.TyperException as exc:  # click's usage errors (bad option value, missing argument, ...)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _fail(f"{exc.format_message()}{hint}", getattr(exc, "exit_code", EXIT_USAGE))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
    sys.exit(result if isinstance(result, int) else 0)
