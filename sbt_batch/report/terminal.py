"""The compact terminal summary printed beside the page: the same figures as rich tables."""

from __future__ import annotations

from typing import Any

from sbt_batch.report.model import BatchReport, SweepReport, TrainingReport


def summary(report: BatchReport | TrainingReport) -> list[Any]:
    """Rich renderables summarizing one report."""
    return batch_summary(report) if isinstance(report, BatchReport) else training_summary(report)


def _grid(title: str, rows: list[tuple[str, str]]) -> Any:
    """A two-column rich table without header: bold keys, their values."""
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table


def batch_summary(r: BatchReport) -> list[Any]:
    """Tasks by state, wall and CPU hours, rate, stragglers and failures by cause."""
    from rich.markup import escape
    from rich.table import Table

    from sbt_batch.report import duration_text

    states = ", ".join(f"{n} {s}" for s, n in r.counts.items())
    rows = [("tasks", f"{r.n_tasks} ({states})"), ("backend", f"{r.backend}, image {r.settings.get('image')}"),
            ("wall hours", f"{r.wall_hours:.3f}"), ("CPU-hours", f"{r.cpu_hours:.3f}")]
    if r.median is not None:
        rows.append(("median task", duration_text(r.median)))
    if r.kind == "convert" and r.events:
        rate = f", {r.overall_rate:,.0f} events/s overall" if r.overall_rate else ""
        rows.append(("events", f"{r.events:,}{rate}"))
    if r.stragglers:
        rows.append(("stragglers", ", ".join(f"task {i} ({duration_text(s)})" for i, s, _ in r.stragglers[:10])))
    if r.sweep is not None:
        rows.append(("sweep", sweep_line(r.sweep)))
    if r.finished == 0:
        rows.append(("note", "no task has finished yet"))
    if r.status_note:
        rows.append(("note", r.status_note))
    out: list[Any] = [_grid(f"{r.name} ({r.kind}, batch run)", [(k, escape(v)) for k, v in rows])]
    if r.failures:
        table = Table(title="failures by cause", title_justify="left")
        for col in ("cause", "tasks", "last stderr line (first task)"):
            table.add_column(col, overflow="fold")
        for g in r.failures:
            first = g.tasks[0]
            table.add_row(escape(g.cause), f"{len(g.tasks)}: " + ", ".join(str(t[0]) for t in g.tasks[:8])
                          + (" ..." if len(g.tasks) > 8 else ""), escape(first[2]))
        out.append(table)
    return out


def sweep_line(s: SweepReport) -> str:
    """One line on a sweep: points compared and the best one's AUC (or why there is no table)."""
    from sbt_batch.report.sweep import pm

    if not s.points:
        return f"{s.done} of {s.n_tasks} point x seed(s) done; {s.note or 'no table'}"
    best = s.points[0]
    ens = (best.get("ensemble") or {}).get("auc")
    text = (f"{len(s.points)} point(s), {s.done} of {s.n_tasks} point x seed(s) done; best {best['point']} "
            f"AUC {pm(best.get('auc'), best.get('auc_std'), 4)}" + (f" (ensemble {ens:.4f})" if isinstance(ens, float) else ""))
    return text + ("" if s.source == "collected" else " [computed now; sbt-batch collect writes the report]")


def training_summary(r: TrainingReport) -> list[Any]:
    """Model, epochs, last losses, AUC and rejections (or why they are missing), exports."""
    from rich.markup import escape

    rows = [("model", r.model), ("epochs", str(len(r.history)))]
    if r.history:
        last = r.history[-1]
        rows.append(("last epoch", ", ".join(f"{k} {last[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                                              if isinstance(last.get(k), (int, float)))))
    if r.metrics:
        m = r.metrics
        parts = [f"AUC {m['auc']:.4f}" if m.get("auc") is not None else "",
                 f"rejection {m['rejection_at_50']:.1f} at 50%" if m.get("rejection_at_50") else "",
                 f"{m['rejection_at_80']:.1f} at 80%" if m.get("rejection_at_80") else ""]
        rows.append(("evaluation", ", ".join(p for p in parts if p)))
    if r.note:
        rows.append(("note", r.note))
    rows.append(("exports", ", ".join(e["name"] for e in r.exports) or "none"))
    return [_grid(f"{r.name} (training run)", [(k, escape(v)) for k, v in rows])]
