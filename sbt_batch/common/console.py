"""Rich console for what people read, logging for diagnostics, and progress bars."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

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


def task_bar(description: str, total: int, show: bool = True) -> tuple[Progress, Any]:
    """A progress bar over ``total`` items with a rate field, and its task (hidden unless ``show``)."""
    bar = progress(transient=False)
    if not show:
        bar.disable = True
    return bar, bar.add_task(description, total=total, rate="")


def rate_text(events: int, t0: float, nbytes: int | None = None) -> str:
    """``events/s`` since ``t0`` (a perf_counter time), and MB/s when ``nbytes`` (bytes read) is given."""
    dt = time.perf_counter() - t0
    if dt <= 0:
        return ""
    text = f"{events / dt:,.0f} events/s"
    return text if nbytes is None else f"{text}, {nbytes / dt / 1e6:,.1f} MB/s"


# TensorFlow's C++ start-up lines (absl, oneDNN, CPU features, CUDA plugin registration): hidden unless --debug.
TF_NOISE = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|cpu_feature_guard|To enable the following instructions|"
    r"rebuild TensorFlow with|Unable to register cu(DNN|FFT|BLAS) factory|computation_placer\.cc|TF-TRT Warning|"
    r"cuda_(executor|diagnostics|dnn|fft|blas|driver)\.cc|failed call to cuInit|port\.cc:\d+\]|"
    r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [a-z_]+\.cc:\d+\]"
)


def debug_enabled() -> bool:
    """True when --debug was given (TensorFlow's own messages are shown)."""
    return os.environ.get("SBT_BATCH_DEBUG") == "1"


def set_debug(debug: bool) -> None:
    """Record --debug for this process and its children, and set TensorFlow's C++ log level to match."""
    os.environ["SBT_BATCH_DEBUG"] = "1" if debug else "0"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if debug else "2"


@contextlib.contextmanager
def filtered_stderr(pattern: re.Pattern[str] = TF_NOISE) -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the block, then replay the lines not matching ``pattern``."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if line.strip() and not pattern.search(line):
                    sys.stderr.write(line + "\n")


def import_tensorflow(purpose: str = "training") -> Any:
    """Import TensorFlow (and Keras) with its C++ start-up lines hidden unless --debug; return the module.

    Without TensorFlow: the one-line UserError of :func:`sbt_batch.common.optional.require` naming ``purpose``.
    """
    from sbt_batch.common.optional import require

    loaded = sys.modules.get("tensorflow")
    if loaded is not None:
        return loaded
    if debug_enabled():
        return require("tensorflow", purpose)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # library use without the CLI (which sets it)
    with filtered_stderr():
        tensorflow = require("tensorflow", purpose)
    with contextlib.suppress(Exception):
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    return tensorflow


def import_keras(purpose: str = "training") -> Any:
    """Keras, after :func:`import_tensorflow` (its backend: same noise filtering, same install hint)."""
    from sbt_batch.common.optional import require

    import_tensorflow(purpose)
    return require("keras", purpose)
