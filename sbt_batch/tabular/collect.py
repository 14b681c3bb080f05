"""The batch collector of train-tabular runs: summarise the repeats (registered by name in sbt_batch.batch.collect)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sbt_batch.batch.collect import CollectResult, Problem
from sbt_batch.batch.core import TaskStatus
from sbt_batch.batch.run import Run
from sbt_batch.tabular.repeats import collect_repeats, summary_renderables


def collect_tabular(run: Run, rows: Sequence[TaskStatus], allow_partial: bool, output: Path | None, problems: list[Problem]) -> CollectResult:
    """train-tabular: summarise the repeats with ``collect_repeats``; the CLI shows its table."""
    opts = run.manifest.get("options", {})
    summary = collect_repeats(opts["output_dir"], expected=opts.get("repeats"), allow_missing=allow_partial)
    return CollectResult(None, summary, [], display=summary_renderables(summary))
