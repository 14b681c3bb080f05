"""The ``sbt-batch`` command line: thin typer commands over library functions.

Each module in this package registers its commands on :data:`sbt_batch.cli.app.app`
and imports heavy libraries (numpy, uproot, TensorFlow) only inside command bodies,
so that ``sbt-batch --help`` stays fast.
"""

from __future__ import annotations

import signal
import sys

import typer

# Importing registers the commands; the registering order is the order of the help panels.
# isort: off
from sbt_batch.cli import demo, convert, train, batch, kinematics, image, report, sweep  # noqa: F401
# isort: on
from sbt_batch.cli.app import app
from sbt_batch.common.errors import EXIT_FAILURE, EXIT_SIGNAL_BASE, EXIT_USAGE, Terminated, UserError

__all__ = ["app", "main"]

_INTERRUPTED = "interrupted (SIGINT); partial output removed"


def _fail(message: str, code: int) -> None:
    """Print one ``error:`` line on stderr and exit with ``code``."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.exit(code)


def _fail_if_signalled() -> None:
    """After a signal, end with its one line: an interrupt inside a C extension can surface as another exception."""
    from sbt_batch.common.fileio import signal_received

    received = signal_received()
    if received == signal.SIGINT:
        _fail(_INTERRUPTED, EXIT_SIGNAL_BASE + 2)
    if received is not None:
        stopped = Terminated(received)
        _fail(str(stopped), stopped.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; usage errors and UserError become one ``error:`` line and an exit code, never a traceback."""
    from sbt_batch.common.fileio import disk_full_error, install_signal_cleanup, is_disk_full

    install_signal_cleanup()  # SIGTERM/SIGINT remove this process's temporaries, then one error line
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="sbt-batch", standalone_mode=False)
    except UserError as exc:
        _fail(str(exc), exc.exit_code)
    except typer.Abort:
        _fail("aborted", EXIT_FAILURE)
    except typer.TyperException as exc:  # click's usage errors (bad option value, missing argument, ...)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `sbt-batch` or a group alone: help shown, no error line
            if exc.format_message().strip():
                sys.stdout.write(exc.format_message().rstrip("\n") + "\n")
            sys.exit(EXIT_USAGE)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _fail(f"{exc.format_message()}{hint}", getattr(exc, "exit_code", EXIT_USAGE))
    except Terminated as exc:  # SIGTERM/SIGHUP (sbt_batch.common.fileio.install_signal_cleanup)
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail(_INTERRUPTED, EXIT_SIGNAL_BASE + 2)
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
    except (OSError, RuntimeError) as exc:  # a full disk or quota deep inside a library (h5py, Keras, matplotlib)
        if not is_disk_full(exc):
            _fail_if_signalled()
            raise
        err = disk_full_error(getattr(exc, "filename", None) or "output", exc)
        _fail(str(err), err.exit_code)
    except Exception:
        _fail_if_signalled()
        raise
    if result == EXIT_SIGNAL_BASE + 2:  # typer turns KeyboardInterrupt (SIGINT, Ctrl-C) into a silent exit 130
        _fail(_INTERRUPTED, result)
    sys.exit(result if isinstance(result, int) else 0)
