"""Training run directories: one place that knows the file layout of RUN_DIR.

Layout (every file written atomically, only by the root rank)::

    RUN_DIR/
      config.yaml        fully resolved options of the run
      model.keras        the final (or best, with keep_best) model
      history.json       per-epoch metrics
      split.npz          train/val/test event indices (and the file list they index)
      checkpoints/       one checkpoint per epoch (epoch-0003.npz) and an interrupt checkpoint
      logs/              train.log (one line per epoch)
      eval/              metrics.json and plots written by ``evaluate``
      export/            SavedModel, frozen graph, ONNX, JPEG sets written by ``export``
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbt_batch.common.errors import InputFileError, UserError
from sbt_batch.common.fileio import sweep_stale, write_error, write_json_atomic, write_text_atomic

_CKPT = re.compile(r"^epoch-(\d{4,})(?:-step-(\d+))?\.npz$")


@dataclass(frozen=True)
class RunDir:
    """Paths inside one training run directory."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    config = property(lambda self: self.path / "config.yaml")
    model = property(lambda self: self.path / "model.keras")
    history = property(lambda self: self.path / "history.json")
    split = property(lambda self: self.path / "split.npz")
    checkpoints = property(lambda self: self.path / "checkpoints")
    logs = property(lambda self: self.path / "logs")
    eval = property(lambda self: self.path / "eval")
    export = property(lambda self: self.path / "export")

    def create(self) -> RunDir:
        """Create the directory (with parents) and its sub-folders."""
        from sbt_batch.common.fileio import check_writable_dir

        try:
            self.path.mkdir(parents=True, exist_ok=True)
            check_writable_dir(self.path, "run")
            for sub in (self.checkpoints, self.logs):
                sub.mkdir(exist_ok=True)
            for folder in (self.path, self.checkpoints):  # what a killed run left (its owner pid is gone)
                sweep_stale(folder)
        except OSError as exc:
            raise write_error(self.path, exc) or UserError(f"{self.path}: cannot create run directory ({exc.strerror})") from None
        return self

    def require(self, *names: str) -> RunDir:
        """Raise a UserError unless RUN_DIR exists and holds the named attributes' files."""
        if not self.path.is_dir():
            raise UserError(f"{self.path}: run directory not found")
        for name in names:
            target = getattr(self, name)
            if not target.exists():
                raise UserError(f"{self.path}: no {target.name} in run directory (did training finish?)")
        return self

    def checkpoint_path(self, epoch: int, step: int | None = None) -> Path:
        """The checkpoint file for the end of ``epoch`` (1-based), or mid-epoch after ``step`` steps."""
        name = f"epoch-{epoch:04d}" + (f"-step-{step}" if step is not None else "") + ".npz"
        return self.checkpoints / name

    def latest_checkpoint(self) -> Path | None:
        """The most advanced checkpoint (by epoch, then step; a finished epoch beats its mid-epoch ones)."""
        if not self.checkpoints.is_dir():
            return None
        best: tuple[tuple[int, int, int], Path] | None = None
        for p in self.checkpoints.iterdir():
            m = _CKPT.match(p.name)
            if not m:
                continue
            # a mid-epoch checkpoint of epoch e+1 after s steps ranks after the end of epoch e
            epoch = int(m.group(1))
            key = (epoch, 0, 0) if m.group(2) is None else (epoch - 1, 1, int(m.group(2)))
            if best is None or key > best[0]:
                best = (key, p)
        return best[1] if best else None

    def write_config(self, config: dict[str, Any]) -> None:
        """Write the resolved configuration as YAML."""
        import yaml

        write_text_atomic(self.config, yaml.safe_dump(config, sort_keys=False, default_flow_style=None))

    def read_config(self, *required: str) -> dict[str, Any]:
        """Read config.yaml back; a damaged file, or one without the ``required`` keys, is one line naming it."""
        from sbt_batch.common.config import load_yaml

        self.require("config")
        config = load_yaml(self.config)
        missing = [k for k in required if k not in config]
        if missing:
            raise InputFileError(self.config, f"no '{missing[0]}' key: truncated or not written by sbt-batch")
        return config

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """Write the per-epoch history list as JSON."""
        write_json_atomic(self.history, history)

    def read_history(self) -> list[dict[str, Any]]:
        """Read history.json (an empty list when absent)."""
        if not self.history.exists():
            return []
        try:
            history = json.loads(self.history.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputFileError(self.history, f"damaged or truncated ({type(exc).__name__})") from None
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise InputFileError(self.history, "expected a list of per-epoch records")
        return history

    def append_log(self, line: str, name: str = "train.log") -> None:
        """Append one line to ``logs/<name>``."""
        path = self.logs / name
        try:
            self.logs.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as fh:
                fh.write(line.rstrip("\n") + "\n")
        except OSError as exc:
            raise write_error(path, exc) or UserError(f"{path}: cannot write ({exc.strerror})") from None
