"""Errors that reach the user as one line, and the exit codes the CLI uses."""

from __future__ import annotations

# Exit codes shared by every command (batch jobs and scripts rely on them).
EXIT_OK = 0
EXIT_FAILURE = 1  # a UserError: bad input, bad option, unreachable service
EXIT_USAGE = 2  # click/typer usage errors
EXIT_SKIPPED_BAD = 3  # convert --skip-bad finished but skipped some inputs
EXIT_INCOMPLETE = 4  # collect: the run has failed or missing tasks
EXIT_REQUEUE = 75  # EX_TEMPFAIL: checkpoint written after SIGTERM; requeue the task
EXIT_SIGNAL_BASE = 128  # killed by signal N (without a checkpoint): exit 128 + N, as a shell reports it


def one_line(exc: BaseException, limit: int | None = 160) -> str:
    """``exc``'s message on one line (its type name when empty), cut to ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputFileError(UserError):
    """A named input file is missing, unreadable or malformed."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class Terminated(BaseException):
    """SIGTERM or SIGHUP ended the command (exit 128 + signal number).

    Not an ``Exception``: no ``except Exception`` on the way up may turn it into another error;
    ``finally`` blocks and the atomic writers still clean up.
    """

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(f"terminated by {signal.Signals(signum).name}; partial output removed")
        self.exit_code = EXIT_SIGNAL_BASE + signum
