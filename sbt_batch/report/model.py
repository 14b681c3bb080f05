"""What a report shows, as plain data (gathered by :mod:`.batch` and :mod:`.training`, drawn by the page)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OUTCOME_COLORS = {"completed": "#2ca02c", "failed": "#d62728", "killed": "#ff7f0e", "timeout": "#9467bd",
                  "cancelled": "#bcbd22", "lost": "#e377c2", "running": "#1f77b4"}


@dataclass
class Attempt:
    """One attempt of one task: when it was queued, started and finished (epoch seconds), and how it ended."""

    index: int
    attempt: int
    outcome: str
    queued: float | None = None
    started: float | None = None
    finished: float | None = None
    duration: float | None = None
    exit_code: int | None = None
    host: str | None = None
    tries: int = 1  # tries inside this attempt (the task wrapper's retries)


@dataclass
class FailureGroup:
    """Failed tasks that share a cause, each with the last line of its stderr."""

    cause: str
    tasks: list[tuple[int, str, str]] = field(default_factory=list)  # (index, state, last stderr line)


@dataclass
class SweepReport:
    """The sweep of a batch run of kind sweep: per-point summaries (best first), its two plots and best.yaml."""

    sweep_dir: str
    report_dir: str
    n_tasks: int = 0
    done: int = 0
    points: list[dict[str, Any]] = field(default_factory=list)  # sweep.json rows: point, seeds, auc, auc_std, ...
    figures: dict[str, str] = field(default_factory=dict)  # baseline_error, roc_best: data: URIs
    best_yaml: str = ""
    source: str = ""  # "collected" (read from report_dir) or "computed" (now, in a temporary folder)
    note: str = ""


@dataclass
class BatchReport:
    """A batch run: settings, task timing, throughput, cost and failures."""

    path: str
    name: str
    kind: str
    backend: str
    settings: dict[str, Any]
    counts: dict[str, int]
    n_tasks: int
    attempts: list[Attempt]
    finished: int
    status_note: str = ""
    durations: list[tuple[int, float]] = field(default_factory=list)  # (task, seconds) of finished attempts
    median: float | None = None
    stragglers: list[tuple[int, float, str]] = field(default_factory=list)  # (task, seconds, inputs)
    rates: list[tuple[int, int, float]] = field(default_factory=list)  # (task, events, events/s)
    events: int = 0
    overall_rate: float | None = None
    wall_hours: float = 0.0
    task_hours: float = 0.0
    cpu_hours: float = 0.0
    failures: list[FailureGroup] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    sweep: SweepReport | None = None  # batch runs of kind sweep

    kind_label = "batch run"


@dataclass
class TrainingReport:
    """A training run: curves, evaluation, config and exports."""

    path: str
    name: str
    model: str
    config: dict[str, Any]
    history: list[dict[str, Any]]
    metrics: dict[str, Any] | None
    evaluated: bool
    note: str = ""
    exports: list[dict[str, Any]] = field(default_factory=list)  # name, kind, size, provenance
    inputs: list[dict[str, Any]] = field(default_factory=list)  # training files from model.keras's provenance
    figures: dict[str, str] = field(default_factory=dict)

    kind_label = "training run"
