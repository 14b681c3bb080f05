"""Run directories and their manifest: ``runs/<name>-<UTC timestamp>/``.

Layout::

    runs/<name>-<YYYYmmddTHHMMSSZ>/
      manifest.json     backend, image, resources, tool version, the task list
                        (index, argv, inputs, outputs, launcher) and every submission
                        (number, indices, job ids, script, status)
      scripts/          what was actually submitted (sbatch script, condor submit file, ...)
      logs/             scheduler-side logs (Slurm --output, local runner log)
      tasks/<i>/        stdout, stderr, state.json (written atomically by `sbt-batch task run`, which makes the folder)

A *task* is an ``sbt-batch`` command line (``argv`` without the program name).  A *submission*
sends some task indices to the backend in one scheduler call; ``resubmit`` appends a new one.
The attempt number of task ``i`` is the number of submissions (not failed) that contain ``i``.

This module imports only the standard library and ``sbt_batch.common.fileio`` so that the task
wrapper and ``status`` start fast.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sbt_batch.common.errors import UserError
from sbt_batch.common.fileio import write_json_atomic, write_text_atomic

MANIFEST = "manifest.json"
STATE = "state.json"
MANIFEST_VERSION = 1
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_TIMESTAMP_RE = re.compile(r"-(\d{8}T\d{6}Z)(?:-\d+)?$")

# Task-file states written by the wrapper (state.json "state").
T_RUNNING = "running"
T_COMPLETED = "completed"
T_FAILED = "failed"  # the command exited non-zero
T_KILLED = "killed"  # the wrapper got SIGTERM/SIGINT (cancel, timeout, preemption)
T_REQUEUED = "requeued"  # checkpointed (exit 75) and handed back to the scheduler, which runs it again
FINAL_TASK_STATES = frozenset({T_COMPLETED, T_FAILED})
CANCEL_MARKER = "cancel-requested"  # logs/<this>: `sbt-batch cancel` ran; stopped tasks are not requeued
DAMAGED = {"state": "damaged"}  # what read_state returns for a state.json that exists but cannot be parsed


def utc_now() -> str:
    """The current UTC time as ISO 8601 with seconds (``2026-11-26T15:40:20Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_runs_dir() -> Path:
    """Where runs go: ``$SBT_BATCH_RUNS`` or ``./runs``."""
    return Path(os.environ.get("SBT_BATCH_RUNS") or "runs")


def check_run_name(name: str) -> str:
    """Validate a run name (used in the directory name); any character except '/', NUL and newlines."""
    if not name or name in {".", ".."} or name.startswith("."):
        raise UserError(f"--name: invalid run name {name!r} (empty or starts with '.')")
    if any(c in name for c in "/\0\n\r"):
        raise UserError(f"--name: run name {name!r} must not contain '/' or control characters")
    if len(name.encode()) > 200:
        raise UserError("--name: run name is longer than 200 bytes")
    return name


def default_sbt_command() -> list[str]:
    """How a job outside a container starts sbt-batch: this interpreter with ``-m sbt_batch``."""
    return [sys.executable, "-m", "sbt_batch"]


@dataclass
class Task:
    """One task: an sbt-batch command line plus what it reads and writes."""

    index: int
    argv: list[str]  # sbt-batch arguments, without the program name
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    launcher: list[str] = field(default_factory=list)  # prefix such as ["srun", "--mpi=pmix"]
    meta: dict[str, Any] = field(default_factory=dict)  # kind-specific (e.g. expected entries)

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry of this task."""
        return {"index": self.index, "argv": list(self.argv), "inputs": list(self.inputs), "outputs": list(self.outputs),
                "launcher": list(self.launcher), "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """Build a Task from its manifest entry."""
        return cls(**{k: data[k] for k in ("index", "argv", "inputs", "outputs", "launcher", "meta") if k in data})


class Run:
    """A run directory and its manifest (load with :meth:`open`, create with :meth:`create`)."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._tasks: list[Task] | None = None

    # ---- creation and loading -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        runs_dir: Path,
        name: str,
        kind: str,
        backend: str,
        tasks: Sequence[Task],
        **settings: Any,
    ) -> Run:
        """Create ``runs_dir/<name>-<timestamp>/`` atomically (a temp dir renamed into place); never reuses a directory."""
        from sbt_batch import __version__

        check_run_name(name)
        runs_dir = Path(runs_dir).absolute()
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{runs_dir}: cannot create runs directory ({exc.strerror})") from None
        if not os.access(runs_dir, os.W_OK | os.X_OK):
            raise UserError(f"{runs_dir}: runs directory is not writable")
        stamp = datetime.now(UTC).strftime(TIMESTAMP_FORMAT)
        manifest: dict[str, Any] = {
            "version": MANIFEST_VERSION,
            "tool_version": __version__,
            "name": name,
            "kind": kind,
            "backend": backend,
            "created": utc_now(),
            "image": None,
            "binds": [],
            "sbt_command": None,
            "resources": {},
            "site": None,
            "template": None,
            "after": [],
            "options": {},
            **settings,
            "tasks": [t.to_dict() for t in tasks],
            "submissions": [],
        }
        tmp = runs_dir / f".{name}-{stamp}.{os.getpid()}.tmp"
        tmp.mkdir()
        try:
            for sub in ("scripts", "logs", "tasks"):
                (tmp / sub).mkdir()
            # tasks/<i>/ is made by the task's wrapper when it starts: 10,000 mkdirs would cost seconds here
            write_text_atomic(tmp / MANIFEST, manifest_text(manifest))
            for n in range(1, 1000):
                final = runs_dir / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
                try:
                    os.rename(tmp, final)  # fails if final exists and is not empty
                    break
                except OSError:
                    if not final.exists():
                        raise
            else:  # pragma: no cover
                raise UserError(f"{runs_dir}: too many runs named {name!r} in one second")
        except BaseException:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(final, manifest)

    @classmethod
    def open(cls, ref: str | os.PathLike[str], runs_dir: Path | None = None) -> Run:
        """Load a run from its directory, or the newest run called ``ref`` under ``runs_dir``."""
        path = Path(ref)
        if not (path / MANIFEST).is_file():
            found = find_runs(runs_dir or default_runs_dir(), name=str(ref))
            if not found:
                raise UserError(f"{ref}: not a run directory (no {MANIFEST}) and no run of that name")
            path = found[-1]
        return cls(path.absolute(), read_manifest(path / MANIFEST))

    def save(self) -> None:
        """Write the manifest atomically."""
        write_text_atomic(self.path / MANIFEST, manifest_text(self.manifest))

    # ---- properties -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The run's name (without timestamp)."""
        return self.manifest["name"]

    @property
    def kind(self) -> str:
        """What the run does: convert, train, evaluate, train-tabular, ..."""
        return self.manifest["kind"]

    @property
    def backend(self) -> str:
        """The backend name the run was submitted with."""
        return self.manifest["backend"]

    @property
    def resources(self) -> dict[str, Any]:
        """Resources (cpus, mem, time, gpus, partition, account, ...)."""
        return self.manifest.get("resources") or {}

    @property
    def sbt_command(self) -> list[str]:
        """How jobs start sbt-batch (``sbt-batch`` inside an image, else this interpreter with -m)."""
        cmd = self.manifest.get("sbt_command")
        if cmd:
            return list(cmd)
        return ["sbt-batch"] if self.manifest.get("image") else default_sbt_command()

    @property
    def tasks(self) -> list[Task]:
        """The task list, in index order."""
        if self._tasks is None:
            self._tasks = [Task.from_dict(t) for t in self.manifest["tasks"]]
        return self._tasks

    def task(self, index: int) -> Task:
        """The task with ``index`` (UserError if out of range)."""
        if not 0 <= index < len(self.manifest["tasks"]):
            raise UserError(f"{self.path}: no task {index} (run has {len(self.manifest['tasks'])} tasks)")
        return self.tasks[index]

    @property
    def submissions(self) -> list[dict[str, Any]]:
        """All submission records, oldest first."""
        return self.manifest.setdefault("submissions", [])

    # ---- files ----------------------------------------------------------------------------
    def task_dir(self, index: int) -> Path:
        """``tasks/<index>/``."""
        return self.path / "tasks" / str(index)

    def read_state(self, index: int) -> dict[str, Any] | None:
        """The task's state.json; None when missing; ``{"state": "damaged", "error": ...}`` when it cannot be parsed."""
        path = self.task_dir(index) / STATE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return {**DAMAGED, "error": f"{path}: unreadable ({exc.strerror})"}
        try:
            state = json.loads(text)
        except ValueError as exc:
            return {**DAMAGED, "error": f"{path}: corrupt state file ({exc})"}
        if not isinstance(state, dict) or not isinstance(state.get("state"), str):
            return {**DAMAGED, "error": f"{path}: corrupt state file (not a task state)"}
        return state

    def write_state(self, index: int, state: dict[str, Any]) -> None:
        """Write the task's state.json atomically (creating ``tasks/<i>/`` when needed)."""
        self.task_dir(index).mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.task_dir(index) / STATE, state)

    def write_script(self, filename: str, text: str, executable: bool = True) -> Path:
        """Save what is submitted under ``scripts/`` (atomically) and return its path."""
        path = self.path / "scripts" / filename
        write_text_atomic(path, text)
        if executable:
            path.chmod(0o755)
        return path

    # ---- submissions ----------------------------------------------------------------------
    def begin_submission(self, indices: Iterable[int]) -> dict[str, Any]:
        """Append a submission record (status 'submitting') and save, before the scheduler is called."""
        record = {
            "number": len(self.submissions) + 1,
            "indices": sorted(set(indices)),
            "status": "submitting",
            "time": utc_now(),
            "backend": {},
            "job_ids": {},
            "script": None,
        }
        self.submissions.append(record)
        self.save()
        return record

    def finish_submission(self, record: dict[str, Any], job_ids: dict[int, str]) -> None:
        """Record the job ids of a successful submission and save."""
        record["job_ids"] = {str(i): j for i, j in job_ids.items()}
        record["status"] = "submitted"
        self.save()

    def fail_submission(self, record: dict[str, Any], error: str) -> None:
        """Mark a submission as failed (no job exists for it) and save."""
        record["status"] = "failed"
        record["error"] = error
        self.save()

    def attempt_of(self, index: int) -> int:
        """How many (non-failed) submissions contained task ``index``."""
        return sum(1 for s in self.submissions if s["status"] != "failed" and index in s["indices"])

    def latest_job_ids(self) -> dict[int, str]:
        """Each task's job id from its newest submission that has one."""
        out: dict[int, str] = {}
        for s in self.submissions:
            for i, j in s.get("job_ids", {}).items():
                out[int(i)] = j
        return out


def read_manifest(path: Path) -> dict[str, Any]:
    """Load and sanity-check a manifest.json; one-line UserError naming the file when it is damaged."""
    try:
        manifest = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read manifest ({exc.strerror})") from None
    except ValueError as exc:
        raise UserError(f"{path}: corrupt manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: corrupt manifest (not a JSON object)")
    for key, kind in (("name", str), ("kind", str), ("backend", str), ("tasks", list)):
        if not isinstance(manifest.get(key), kind):
            raise UserError(f"{path}: corrupt manifest ('{key}' missing or not a {kind.__name__})")
    if not all(isinstance(t, dict) and isinstance(t.get("argv"), list) for t in manifest["tasks"]):
        raise UserError(f"{path}: corrupt manifest (a task entry has no argv list)")
    if not isinstance(manifest.get("submissions", []), list):
        raise UserError(f"{path}: corrupt manifest ('submissions' is not a list)")
    return manifest


def manifest_text(manifest: dict[str, Any]) -> str:
    """The manifest as JSON: one key per line, one task or submission per line (fast C encoder, readable diff)."""
    def dump(v):
        return json.dumps(v, default=str)
    lines = []
    for key, value in manifest.items():
        if key in ("tasks", "submissions") and value:
            body = ",\n    ".join(dump(v) for v in value)
            lines.append(f"  {dump(key)}: [\n    {body}\n  ]")
        else:
            lines.append(f"  {dump(key)}: {dump(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def find_runs(runs_dir: Path, name: str | None = None) -> list[Path]:
    """Run directories under ``runs_dir`` (optionally only those called ``name``), oldest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = []
    for entry in os.scandir(runs_dir):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        m = _TIMESTAMP_RE.search(entry.name)
        if not m or (name is not None and entry.name[: m.start()] != name):
            continue
        if os.path.isfile(os.path.join(entry.path, MANIFEST)):
            suffix = entry.name[m.end(1):]
            found.append((m.group(1), int(suffix[1:] or 1) if suffix else 1, Path(entry.path)))
    return [p for _, _, p in sorted(found)]
