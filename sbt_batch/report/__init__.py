"""``sbt-batch report``: one self-contained HTML page (inline CSS, plots as data: URIs, no network) per set of runs.

A RUN is a batch run (``runs/<name>-<UTC>/`` with manifest.json, or a run name; a sweep's batch run also
gets its comparison table, :mod:`.sweep`) or a training run (``config.yaml`` with
``history.json``/``model.keras``). :func:`build_report` gathers each one (:mod:`.batch`, :mod:`.training`),
renders ``page.html.j2`` and writes the page atomically. No TensorFlow is imported on this path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbt_batch.common.errors import UserError
from sbt_batch.report.model import BatchReport, TrainingReport

__all__ = ["Built", "Report", "build_report", "duration_text", "load", "render"]

TEMPLATE = "page.html.j2"

Report = BatchReport | TrainingReport


@dataclass
class Built:
    """What :func:`build_report` wrote: the page and the reports on it."""

    output: Path
    reports: list[Report]


def load(ref: str | os.PathLike[str], runs_dir: Path | None = None, figures: bool = True) -> Report:
    """The report of one RUN: a batch run directory or name, or a training run directory."""
    from sbt_batch.batch.run import MANIFEST, Run, find_runs
    from sbt_batch.report.training import is_training_run, training_report

    path = Path(ref)
    if (path / MANIFEST).is_file():
        from sbt_batch.report.batch import batch_report

        return batch_report(Run.open(path), figures)
    if path.is_dir() and is_training_run(path):
        return training_report(path, figures)
    if not path.exists():
        from sbt_batch.batch.run import default_runs_dir

        found = find_runs(runs_dir or default_runs_dir(), name=str(ref)) if "/" not in str(ref) else []
        if found:
            from sbt_batch.report.batch import batch_report

            return batch_report(Run.open(found[-1]), figures)
        raise UserError(f"{ref}: no such run directory (and no batch run of that name)")
    raise UserError(f"{ref}: not a run directory (no {MANIFEST} of a batch run, no config.yaml with history.json "
                    "or split.npz of a training run)")


def render(reports: Sequence[Report], title: str | None = None) -> str:
    """The HTML page of ``reports`` (self-contained: inline CSS and images, no script, no external URL)."""
    import jinja2

    from sbt_batch import __version__
    from sbt_batch.common.provenance import utc_now
    from sbt_batch.report.model import OUTCOME_COLORS
    from sbt_batch.report.sweep import pm

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["hours"] = lambda h: f"{h:.3f}" if h < 10 else f"{h:,.1f}"
    env.filters["seconds"] = duration_text
    env.filters["size"] = _size
    env.filters["num"] = _num
    env.filters["pm"] = pm
    names = ", ".join(r.name for r in reports)
    return env.get_template(TEMPLATE).render(reports=reports, title=title or f"sbt-batch report: {names}",
                                             version=__version__, created=utc_now(), colors=OUTCOME_COLORS,
                                             yaml=_yaml)


def build_report(refs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str],
                 runs_dir: Path | None = None) -> Built:
    """Gather every RUN in ``refs`` and write one page to ``output`` (atomically)."""
    from sbt_batch.common.fileio import atomic_path, check_writable_dir

    if not refs:
        raise UserError("report: give at least one RUN")
    output = Path(output)
    if output.is_dir():
        raise UserError(f"{output}: --output is a directory")
    check_writable_dir(output.parent if str(output.parent) else Path("."), "--output")
    _check_plotting()
    reports = [load(r, runs_dir) for r in refs]
    text = render(reports)
    with atomic_path(output, suffix=".html") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Built(output, reports)


def _check_plotting() -> None:
    """A one-line error when matplotlib or mplhep (the plots) are not installed."""
    from sbt_batch.common.optional import available

    missing = [m for m in ("matplotlib", "mplhep") if not available(m)]
    if missing:
        raise UserError(f"report: the plots need {' and '.join(missing)} (pip install 'sbt-batch[train]')")


def duration_text(value: float | None) -> str:
    """Seconds as ``h:mm:ss.s``, ``m:ss.s`` or ``s.s s`` (``-`` when unknown)."""
    if value is None:
        return "-"
    m, s = divmod(float(value), 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else (f"{m}:{s:04.1f}" if m else f"{s:.1f} s")


def _size(n: int | None) -> str:
    """A byte count in decimal units (``?`` when unknown)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _num(value: Any, digits: int = 4) -> str:
    """A float to ``digits`` places, anything else as it prints (``-`` for None)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _yaml(data: Any) -> str:
    """``data`` as block YAML, in its own key order."""
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
