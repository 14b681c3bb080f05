"""The options of ``sbt-batch train`` (TrainConfig), checked, and their resolution from a YAML spec and the command line."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sbt_batch.cnn import prepare as D
from sbt_batch.cnn import stream as DS
from sbt_batch.common.config import check_keys, load_yaml, merge_options
from sbt_batch.common.errors import EXIT_REQUEUE, UserError

OPTIMIZERS = {  # name -> (keras class name, default learning rate, extra kwargs)
    "adam": ("Adam", 1e-3, {}),
    "sgd": ("SGD", 1e-2, {"momentum": 0.9}),
    "rmsprop": ("RMSprop", 1e-3, {}),
    "adadelta": ("Adadelta", 1.0, {}),
    "adagrad": ("Adagrad", 1e-2, {}),
    "nadam": ("Nadam", 1e-3, {}),
}
SCHEDULES = ("constant", "exp")


_NUMERIC = (("epochs", int, 1), ("batch_size", int, 1), ("seed", int, 0), ("max_events", int, 1),
            ("log1p_scale", float, None), ("lr", float, None), ("lr_decay", float, None), ("early_stopping", int, 1),
            ("cache_limit_mb", int, 0), ("window_batches", int, 1), ("parallel_reads", int, 1), ("prefetch", int, 0),
            ("max_steps", int, 1), ("rgb", bool, None), ("keep_best", bool, None), ("deterministic", bool, None),
            ("progress", bool, None), ("drop_nonfinite", bool, None), ("split_seed", int, 0))
_OPTIONAL = {"max_events", "lr", "early_stopping", "max_steps", "split_seed"}
_POSITIVE = {"lr", "lr_decay", "log1p_scale"}  # must be > 0
_TEXT = ("model", "out", "norm", "negative", "output", "optimizer", "lr_schedule", "balance", "cache", "resume",
         "padding", "augment", "tta", "inputs")


class TrainingInterrupted(UserError):
    """SIGTERM arrived: a checkpoint was written; the batch layer should requeue (exit 75)."""

    exit_code = EXIT_REQUEUE


@dataclass
class TrainConfig:
    """Every option of ``sbt-batch train`` (also the keys of the YAML job spec)."""

    signal: list[str] = field(default_factory=list)
    background: list[str] = field(default_factory=list)
    model: str = "2c2m"
    out: str | None = None
    epochs: int = 10
    batch_size: int = 64
    seed: int = 1
    rows: str | list[int] | None = None  # None/"auto": drop rows that are zero in every event
    split: str = "0.5,0.45,0.05"
    max_events: int | None = None  # per class, seeded random subset
    norm: str = "standardize"
    negative: str = "clip"
    log1p_scale: float = 1000.0  # MeV
    rgb: bool = False
    output: str = "softmax"
    optimizer: str = "adam"
    lr: float | None = None  # default: the optimizer's (adam 1e-3, sgd 1e-2, ...)
    lr_schedule: str = "constant"  # or "exp": lr * lr_decay**epoch (the notebook's 1e-2 * 0.7**epoch)
    lr_decay: float = 0.7
    balance: str = "weights"
    early_stopping: int | None = None  # patience in epochs on val_loss
    keep_best: bool = False
    cache: str = "auto"
    cache_limit_mb: int = 2048
    window_batches: int = 64  # batches per read/shuffle window (at most 32 MB); part of the data order
    parallel_reads: int = 4
    prefetch: int = 2
    deterministic: bool = True
    resume: str | None = None
    max_steps: int | None = None  # stop each epoch after this many steps (smoke tests, benchmarks)
    progress: bool = True
    drop_nonfinite: bool = False  # leave out events with NaN/inf towers (default: refuse them)
    padding: str = "valid"  # valid (the notebook) | circular (phi periodic, eta zero) | circular-reflect (eta reflected)
    augment: str = "none"  # none | phi (random roll by whole towers) | eta (random reflection) | full (both); seeded per step
    tta: str = "none"  # test-time average over none | phi | eta | full at evaluate/export
    split_seed: int | None = None  # seed of the event subset and the split (default: --seed); fix it to compare seeds
    inputs: str = "et"  # image channels: et | et,et_over_rho (a second channel ET / rho of the event, offlineRho)

    @classmethod
    def keys(cls) -> list[str]:
        """All option names."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_options(cls, options: dict[str, Any], where: str = "options") -> TrainConfig:
        """Build from a mapping (YAML spec merged with CLI flags), with one-line errors for bad keys/values."""
        check_keys(options, cls.keys(), where)
        cfg = cls(**options)
        cfg.normalize()
        return cfg

    def normalize(self) -> None:
        """Coerce types and check values (raising one-line UserErrors)."""
        self._check_types()
        for name in ("signal", "background"):
            v = getattr(self, name)
            setattr(self, name, D.expand_paths([v] if isinstance(v, (str, Path)) else (v or []), f"--{name}"))
        if isinstance(self.split, (list, tuple)):
            self.split = ",".join(str(v) for v in self.split)
        for name, kind, lo in _NUMERIC:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            flag = f"--{name.replace('_', '-')}"
            val: bool | int | float
            try:
                if kind is bool:
                    if not isinstance(value, bool):
                        raise ValueError
                    val = value
                else:
                    val = kind(value)
                    if kind is int and val != float(value):
                        raise ValueError
            except (TypeError, ValueError):
                raise UserError(f"{flag}: expected {kind.__name__}, got {value!r}") from None
            if lo is not None and val < lo:
                raise UserError(f"{flag}: must be at least {lo}, got {value!r}")
            if name in _POSITIVE and not val > 0:
                raise UserError(f"{flag}: must be greater than 0, got {value!r}")
            setattr(self, name, val)
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer: unknown optimizer '{self.optimizer}' (choose from {', '.join(OPTIMIZERS)})")
        if self.lr_schedule not in SCHEDULES:
            raise UserError(f"--lr-schedule: unknown schedule '{self.lr_schedule}' (choose from {', '.join(SCHEDULES)})")
        if self.cache not in DS.CACHES:
            raise UserError(f"--cache: unknown mode '{self.cache}' (choose from {', '.join(DS.CACHES)})")
        if self.balance not in DS.BALANCES:
            raise UserError(f"--balance: unknown mode '{self.balance}' (choose from {', '.join(DS.BALANCES)})")
        D.check_preprocess_options(self.norm, self.negative)
        self.inputs = D.check_inputs(self.inputs, self.rgb)
        D.parse_split(self.split)
        from sbt_batch.cnn.models import check_model

        check_model(self.model, self.output)
        from sbt_batch.cnn.symmetry import check_group, check_padding

        check_padding(self.padding)
        check_group(self.augment, "--augment")
        check_group(self.tta, "--tta")

    def _check_types(self) -> None:
        """Raise a one-line UserError naming the key whose value has the wrong type (YAML job specs)."""
        for name in ("signal", "background"):
            v = getattr(self, name)
            items = v if isinstance(v, (list, tuple)) else [v]
            if v is not None and not all(isinstance(i, (str, Path)) for i in items):
                raise UserError(f"--{name}: expected file names (text or a list of text), got {v!r}")
        for name in _TEXT:
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, Path)):
                raise UserError(f"--{name.replace('_', '-')}: expected text, got {v!r}")
        if self.rows is not None and not isinstance(self.rows, (str, list, tuple)):
            raise UserError(f"--rows: expected START:STOP or a list of rows, got {self.rows!r}")
        if not isinstance(self.split, (str, list, tuple)):
            raise UserError(f"--split: expected train,val,test fractions, got {self.split!r}")

    def learning_rate(self, epoch: int) -> float:
        """The learning rate of 0-based ``epoch``."""
        lr = self.lr if self.lr is not None else OPTIMIZERS[self.optimizer][1]
        return lr * (self.lr_decay**epoch if self.lr_schedule == "exp" else 1.0)


def resolve_config(
    config: TrainConfig | None = None, spec_path: str | Path | None = None, **options: Any
) -> TrainConfig:
    """Merge a YAML spec (optional), a TrainConfig and keyword options (which win) into a checked config."""
    base: dict[str, Any] = {}
    if spec_path is not None:
        spec = load_yaml(spec_path)
        check_keys(spec, TrainConfig.keys(), str(spec_path))
        base.update(spec)
    if config is not None:
        default = TrainConfig()
        base.update({k: v for k, v in asdict(config).items() if v != getattr(default, k) or k not in base})
    check_keys(options, TrainConfig.keys(), "train options")
    return TrainConfig.from_options(merge_options(base, options), str(spec_path or "train options"))


