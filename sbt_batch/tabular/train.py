"""Weighted training of the kinematic classifier, its test-split sensitivity, and local repeats.

One training writes the run directory of ``sbt-batch train`` (see :mod:`sbt_batch.common.rundir`) plus::

    scaler.json        the input scaler fitted on the train split
    sensitivity.json   repeat index, seed, binned Asimov sensitivity and error, bins, AUC
    predictions.npz    test scores, class, physics weight and process name
    plots/             nn-output (stacked by process) and training (loss and accuracy), PNG and PDF

``--repeats N`` (N > 1) writes ``repeat-<i>/`` run directories below RUN_DIR (seed = seed + i),
then ``repeats.json`` and ``plots/sensitivity-repeats``; ``--repeat-index i`` trains only repeat i
into ``RUN_DIR/repeat-<i>/`` (one batch array task; ``collect_repeats(RUN_DIR)`` summarises).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbt_batch.common.config import check_keys, load_yaml
from sbt_batch.common.console import import_keras, log, progress
from sbt_batch.common.errors import UserError
from sbt_batch.common.fileio import atomic_path, new_dir, write_json_atomic
from sbt_batch.common.metrics import auc, roc_curve
from sbt_batch.common.rundir import RunDir
from sbt_batch.tabular.columns import Columns, parse_list
from sbt_batch.tabular.data import (
    NEGATIVE_WEIGHT_MODES,
    Datasets,
    check_weights,
    load_datasets,
    parse_split_ratios,
    training_weights,
)
from sbt_batch.tabular.scalers import SCALERS, fit_scaler
from sbt_batch.tabular.sensitivity import binned_sensitivity

SENSITIVITY_FILE = "sensitivity.json"
SCALER_FILE = "scaler.json"
PREDICTIONS_FILE = "predictions.npz"
REPEAT_PREFIX = "repeat-"


@dataclass
class TabularConfig:
    """Every option of ``train-tabular`` (the YAML job spec uses the same keys)."""

    out: str | None = None
    data: list[str] = field(default_factory=list)
    train: str | None = None
    val: str | None = None
    test: str | None = None
    split: str = "0.6,0.2,0.2"
    tree: str | None = None
    hdf5_key: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    scaler: str = "standard"
    layers: int = 3
    units: list[int] = field(default_factory=lambda: [64])
    activation: list[str] = field(default_factory=lambda: ["relu"])
    dropout: float = 0.0
    optimizer: str = "adam"
    lr: float = 1e-3
    epochs: int = 20
    batch_size: int = 256
    seed: int = 0
    split_seed: int | None = None
    negative_weights: str = "abs"
    balance: bool = True
    z_s: float = 10.0
    z_b: float = 10.0
    fine_steps: int = 1000
    repeats: int = 1
    repeat_index: int | None = None
    drop: int = 1
    plots: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved options (written as config.yaml)."""
        return asdict(self)


_INTS = ("layers", "epochs", "batch_size", "seed", "split_seed", "fine_steps", "repeats", "repeat_index", "drop")
_FLOATS = ("dropout", "lr", "z_s", "z_b")
_BOOLS = ("balance", "plots")
_TEXTS = ("out", "train", "val", "test", "tree", "hdf5_key", "scaler", "optimizer", "negative_weights")


def _check_types(spec: dict[str, Any]) -> None:
    """Raise a one-line UserError naming the key whose value has the wrong type (YAML job specs)."""
    def flag(name: str) -> str:
        return f"--{name.replace('_', '-')}"

    for name, value in spec.items():
        if value is None:
            continue
        if name in _INTS and (isinstance(value, bool) or not isinstance(value, int)):
            raise UserError(f"{flag(name)}: expected an integer, got {value!r}")
        if name in _FLOATS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"{flag(name)}: expected a number, got {value!r}")
        if name in _BOOLS and not isinstance(value, bool):
            raise UserError(f"{flag(name)}: expected true or false, got {value!r}")
        if name in _TEXTS and not isinstance(value, (str, Path)):
            raise UserError(f"{flag(name)}: expected text, got {value!r}")
    data = spec.get("data")
    if data is not None and not all(isinstance(p, (str, Path)) for p in (data if isinstance(data, list) else [data])):
        raise UserError(f"--data: expected file names (text or a list of text), got {data!r}")


def resolve_config(spec: dict[str, Any], where: str = "config") -> TabularConfig:
    """Build a :class:`TabularConfig` from a mapping (YAML spec merged with CLI flags), validated."""
    check_keys(spec, TabularConfig.__dataclass_fields__, where)
    _check_types(spec)
    spec = dict(spec)
    if "data" in spec:
        spec["data"] = [str(p) for p in (spec["data"] if isinstance(spec["data"], list) else [spec["data"]])]
    if "units" in spec:
        try:
            spec["units"] = [int(u) for u in parse_list(spec["units"] if not isinstance(spec["units"], int) else [spec["units"]])]
        except ValueError:
            raise UserError(f"--units: expected integers like 64 or 64,32, got {spec['units']!r}") from None
    if "activation" in spec:
        spec["activation"] = parse_list(spec["activation"])
    if "columns" in spec and not isinstance(spec["columns"], dict):
        raise UserError(f"{where}: 'columns' must be a mapping")
    if "split" in spec and not isinstance(spec["split"], str):
        spec["split"] = ",".join(str(v) for v in spec["split"])
    cfg = TabularConfig(**spec)
    for name, low in (("epochs", 1), ("batch_size", 1), ("repeats", 1), ("drop", 0), ("fine_steps", 1)):
        if int(getattr(cfg, name)) < low:
            raise UserError(f"--{name.replace('_', '-')}: must be >= {low}, got {getattr(cfg, name)}")
    if cfg.repeat_index is not None and cfg.repeat_index < 0:
        raise UserError(f"--repeat-index: must be >= 0, got {cfg.repeat_index}")
    _check_choices(cfg)
    if not 0 <= cfg.dropout < 1:
        raise UserError(f"--dropout: must be in [0, 1), got {cfg.dropout}")
    return cfg


def _check_choices(cfg: TabularConfig) -> None:
    """Reject unknown scaler, optimizer, negative-weight mode or layer layout before any work starts."""
    from sbt_batch.tabular.model import OPTIMIZERS, layer_spec

    for flag, value, allowed in (("--scaler", cfg.scaler, SCALERS), ("--optimizer", str(cfg.optimizer).lower(), OPTIMIZERS),
                                 ("--negative-weights", cfg.negative_weights, NEGATIVE_WEIGHT_MODES)):
        if value not in allowed:
            raise UserError(f"{flag}: expected one of {', '.join(allowed)}, got {value!r}")
    for flag, number in (("--lr", cfg.lr), ("--z-s", cfg.z_s), ("--z-b", cfg.z_b)):
        if not float(number) > 0:
            raise UserError(f"{flag}: must be > 0, got {number}")
    layer_spec(cfg.layers, cfg.units, cfg.activation)
    _columns(cfg)
    parse_split_ratios(cfg.split)


def load_config_file(path: str | Path | None) -> dict[str, Any]:
    """The ``--config`` YAML mapping (empty when no file is given)."""
    return load_yaml(path) if path else {}


def _columns(cfg: TabularConfig) -> Columns:
    return Columns.from_dict(cfg.columns, "columns")


def load_inputs(cfg: TabularConfig) -> Datasets:
    """Load the train/val/test tables named by the configuration."""
    return load_datasets(
        _columns(cfg), data=cfg.data, train=cfg.train, val=cfg.val, test=cfg.test, split=parse_split_ratios(cfg.split),
        seed=cfg.seed if cfg.split_seed is None else cfg.split_seed, tree=cfg.tree, key=cfg.hdf5_key,
    )


def _save_checkpoint(path: Path, model: Any, epoch: int) -> None:
    """Write the model weights after ``epoch`` as an .npz file (atomically)."""
    weights: dict[str, Any] = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, epoch=epoch, **weights)


def train_one(cfg: TabularConfig, out: str | Path, repeat: int = 0, datasets: Datasets | None = None) -> dict[str, Any]:
    """Train one model with seed ``cfg.seed + repeat`` into run directory ``out``; return sensitivity.json's content."""
    from sbt_batch.tabular.model import layer_spec

    spec = layer_spec(cfg.layers, cfg.units, cfg.activation)
    data = datasets or load_inputs(cfg)  # bad options and inputs fail before TensorFlow loads
    check_weights(data, _columns(cfg), cfg.negative_weights)  # unusable weights fail before any directory exists
    with new_dir(out):  # a failed training leaves no half-made run directory
        return _train_one(cfg, RunDir(Path(out)), repeat, data, spec)


def _train_one(cfg: TabularConfig, run: RunDir, repeat: int, data: Datasets, spec: list[tuple[int, str]]) -> dict[str, Any]:
    """The body of :func:`train_one` inside its new run directory."""
    from sbt_batch.tabular.model import PURPOSE, build_model, compile_model

    keras: Any = import_keras(PURPOSE)  # TensorFlow's C++ start-up chatter stays off stderr

    rd = run.create()
    seed = cfg.seed + repeat
    rd.write_config({**cfg.to_dict(), "repeat_index": repeat, "training_seed": seed, "task": "kinematics"})
    if data.split is not None:
        with atomic_path(rd.split, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            arrays: dict[str, Any] = {"files": np.asarray(cfg.data), **data.split}
            np.savez(fh, **arrays)

    scaler = fit_scaler(cfg.scaler, data.train.x, data.train.variables)
    scaler.save(rd.path / SCALER_FILE)
    x_train, x_val, x_test = (scaler.transform(t.x).astype(np.float32) for t in (data.train, data.val, data.test))
    w_train = training_weights(data.train, cfg.negative_weights, cfg.balance)
    w_val = training_weights(data.val, cfg.negative_weights, cfg.balance)

    keras.utils.set_random_seed(seed)
    model = compile_model(build_model(x_train.shape[1], spec, cfg.dropout), cfg.optimizer, cfg.lr)
    history: list[dict[str, Any]] = []

    class _EpochEnd(keras.callbacks.Callback):
        def __init__(self, bar: Any, task: Any) -> None:
            super().__init__()
            self.bar, self.task, self.start = bar, task, time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            history.append(row)
            _save_checkpoint(rd.checkpoint_path(epoch + 1), self.model, epoch + 1)
            rd.write_history(history)
            line = " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch")
            rd.append_log(f"repeat {repeat} epoch {epoch + 1}/{cfg.epochs} {line}")
            log.info("repeat %d epoch %d/%d %s", repeat, epoch + 1, cfg.epochs, line)
            rate = (epoch + 1) * len(x_train) / max(time.perf_counter() - self.start, 1e-9)
            self.bar.update(self.task, advance=1, rate=f"{rate:,.0f} ev/s")

    with progress() as bar:
        task = bar.add_task(f"train repeat {repeat}", total=cfg.epochs, rate="")
        model.fit(
            x_train, data.train.y.astype(np.float32), sample_weight=w_train.astype(np.float32),
            validation_data=(x_val, data.val.y.astype(np.float32), w_val.astype(np.float32)),
            epochs=cfg.epochs, batch_size=cfg.batch_size, shuffle=True, verbose=0, callbacks=[_EpochEnd(bar, task)],
        )
    with atomic_path(rd.model, suffix=".keras") as tmp:
        model.save(tmp)

    # eager calls in chunks: model.predict would trace a new tf.function per repeat (and warn about it)
    chunk = 65536
    scores = np.concatenate(
        [np.asarray(model(x_test[i : i + chunk], training=False)).ravel() for i in range(0, len(x_test), chunk)]
    ).astype(np.float64)
    test = data.test
    result = binned_sensitivity(scores, test.y == 1, test.physics_weight, z_s=cfg.z_s, z_b=cfg.z_b, n_fine=cfg.fine_steps)
    with atomic_path(rd.path / PREDICTIONS_FILE, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, score=scores, y=test.y, weight=test.physics_weight, sample=test.sample.astype(str))
    summary = {
        "repeat": repeat,
        "seed": seed,
        "sensitivity": result.sensitivity,
        "error": result.error,
        "n_bins": result.n_bins,
        "auc": auc(*roc_curve(test.y, scores)),  # unweighted, ties counted half
        "test_events": len(test),
        "test_weight_scale": data.test_scale,
        "final": history[-1] if history else {},
        "binning": result.to_dict(),
    }
    write_json_atomic(rd.path / SENSITIVITY_FILE, summary)
    if cfg.plots:
        from sbt_batch.tabular.plots import plot_history, plot_nn_output

        plot_nn_output(scores, test.y, test.physics_weight, test.sample, rd.path / "plots" / "nn-output", result)
        plot_history(history, rd.path / "plots")
    rd.append_log(f"repeat {repeat} sensitivity {result.sensitivity:.4f} +- {result.error:.4f} ({result.n_bins} bins)")
    return summary


def train_tabular(cfg: TabularConfig, out: str | Path | None = None,
                  notify: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run what ``train-tabular`` asks for: one model, repeat ``cfg.repeat_index``, or ``cfg.repeats`` models.

    With ``cfg.repeats`` > 1, ``notify`` receives one line per finished repeat (the CLI prints them).
    """
    if out is None and cfg.out is None:
        raise UserError("--out: give the run directory (or 'out:' in the --config file)")
    out = Path(out if out is not None else cfg.out)  # type: ignore[arg-type]
    cfg.out = str(out)
    data = load_inputs(cfg)  # load and validate once, before any directory is made
    check_weights(data, _columns(cfg), cfg.negative_weights)
    if cfg.repeat_index is not None:  # one array task: RUN/repeat-<i>, as with --repeats N
        from sbt_batch.common.fileio import check_writable_dir

        check_writable_dir((out.parent if str(out.parent) else Path(".")).resolve(), "run parent")
        out.mkdir(exist_ok=True)  # concurrent tasks may race here; exist_ok makes that harmless
        return train_one(cfg, out / f"{REPEAT_PREFIX}{cfg.repeat_index}", cfg.repeat_index, data)
    if cfg.repeats == 1:
        return train_one(cfg, out, 0, data)
    from sbt_batch.tabular.repeats import collect_repeats

    if cfg.repeats <= 2 * cfg.drop:
        raise UserError(f"--repeats: {cfg.repeats} repeats leave nothing after dropping --drop {cfg.drop} largest and smallest")
    def _keep(_exc: BaseException) -> bool:  # finished repeats are kept (rerun the missing ones with --repeat-index)
        return any(out.glob(f"{REPEAT_PREFIX}*/{SENSITIVITY_FILE}"))

    with new_dir(out, keep=_keep):
        RunDir(out).create().write_config({**cfg.to_dict(), "task": "kinematics"})
        for i in range(cfg.repeats):
            res = train_one(cfg, out / f"{REPEAT_PREFIX}{i}", i, data)
            line = f"repeat {i}: sensitivity {res['sensitivity']:.3f} ± {res['error']:.3f}"
            log.info(line)
            if notify is not None:
                notify(line)
        return collect_repeats(out, drop=cfg.drop, expected=cfg.repeats, plots=cfg.plots)
