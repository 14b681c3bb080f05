"""Rich console for what people read, logging for diagnostics, and progress bars."""

from __future__ import annotations

import logging
import os

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console()
err_console = Console(stderr=True)

log = logging.getLogger("sbt_batch")


def setup_logging(verbose: int = 0) -> None:
    """Send sbt_batch's log records to stderr through rich (WARNING, INFO with -v, DEBUG with -vv)."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    if os.environ.get("SBT_BATCH_LOG"):
        level = getattr(logging, os.environ["SBT_BATCH_LOG"].upper(), level)
    handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def progress(transient: bool = False) -> Progress:
    """A progress bar with a description, count, elapsed and remaining time (hidden when not a TTY)."""
    return Progress(
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=not err_console.is_terminal,
    )
