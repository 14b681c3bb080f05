"""Train a gFEX CNN: custom tf.GradientTape loop with checkpoints, exact resume and SIGTERM handling.

``train(TrainConfig(...))`` or ``train(signal=[...], background=[...], model="2c2m", out="runs/x")``.
The loop does not use ``model.fit``: with Keras 3, Horovod only works through low-level ops, so
gradients go through ``ctx.allreduce_gradients`` and variables are broadcast after the first step.
"""


from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbt_batch.cnn import prepare as D
from sbt_batch.cnn import stream as DS
from sbt_batch.cnn.config import OPTIMIZERS, TrainConfig, TrainingInterrupted, resolve_config
from sbt_batch.cnn.symmetry import augment_batch, augment_rng
from sbt_batch.common.console import import_keras, import_tensorflow, log, progress
from sbt_batch.common.errors import InputFileError, UserError
from sbt_batch.common.fileio import atomic_path, new_dir
from sbt_batch.common.provenance import record_training
from sbt_batch.common.rundir import RunDir

PURPOSE = "sbt-batch train"  # what the install hint names when TensorFlow is missing

Notify = Callable[[str], None]
"""Receives each line people read during training (rank 0 only): epoch summaries, resuming, early stopping."""


def _quiet(_line: str) -> None:
    """The default ``notify``: nothing shown (the epoch lines still go to the log and logs/train.log)."""


# --------------------------------------------------------------------------- checkpoints


def _save_checkpoint(path: Path, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    arrays: dict[str, Any] = {f"m{i}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
    arrays.update({f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)})
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, state=np.array(json.dumps(state)), **arrays)


def _load_checkpoint(path: Path, model: Any, optimizer: Any = None) -> dict[str, Any]:
    """Restore the model (and, when given, the optimizer) variables; return the saved loop state."""
    try:
        with np.load(path) as z:
            for i, v in enumerate(model.variables):
                v.assign(z[f"m{i}"])
            for i, v in enumerate(optimizer.variables if optimizer is not None else ()):
                v.assign(z[f"o{i}"])
            state = json.loads(str(z["state"]))
        if not isinstance(state, dict) or "epoch" not in state:
            raise ValueError("no loop state")
        return state
    except Exception as exc:  # zipfile, numpy, json and TensorFlow raise their own types for a damaged file
        raise InputFileError(path, f"damaged or truncated checkpoint ({type(exc).__name__}); delete it to resume "
                                   "from the one before") from None


def _make_optimizer(cfg: TrainConfig) -> Any:
    keras = import_keras(PURPOSE)
    cls_name, _, extra = OPTIMIZERS[cfg.optimizer]
    return getattr(keras.optimizers, cls_name)(learning_rate=cfg.learning_rate(0), **extra)


# --------------------------------------------------------------------------- setup


@dataclass
class Prepared:
    """Everything assembled from the input files before the first step."""

    index: D.EventIndex
    stream: DS.EventStream
    split: dict[str, np.ndarray]
    balance: DS.Balance
    weights: np.ndarray
    dropped_nonfinite: int = 0


def prepare_data(cfg: TrainConfig, ctx: Any, split: dict[str, np.ndarray] | None = None,
                 prep: D.Preprocess | None = None, notify: Notify = _quiet) -> Prepared:
    """Open files, choose rows, split, fit normalization and open the event stream (cached when it fits)."""
    sources = D.open_sources(cfg.signal, cfg.background)
    index = D.EventIndex(sources)
    bad = np.zeros(0, np.int64)
    if prep is None:
        rows = D.parse_rows(cfg.rows, index.shape[0])
        if rows is None or cfg.drop_nonfinite:  # one streamed pass finds the rows and the NaN/inf events
            scan = D.scan_sources(sources)
            rows, bad = rows or scan.rows, scan.nonfinite
            if len(bad) and not cfg.drop_nonfinite:
                raise D.nonfinite_error(index, bad)
        prep = D.Preprocess(rows, cfg.norm, cfg.negative, float(cfg.log1p_scale), bool(cfg.rgb), inputs=cfg.inputs)
    if prep.uses_rho:
        D.check_rho(sources)
    if split is None:
        split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
        ids = D.limit_events(index.labels, cfg.max_events, split_seed, exclude=bad)
        if len(bad) and ctx.is_root:
            notify(f"--drop-nonfinite: left out {len(bad)} event(s) with NaN or inf towers")
        for c, name in ((D.SIGNAL, "signal"), (D.BACKGROUND, "background")):
            if not np.any(index.labels[ids] == c):
                raise UserError(f"--{name}: no {name} events in the input files: dataset is empty after filtering")
        sub = D.make_split(len(ids), D.parse_split(cfg.split), split_seed)
        split = {k: ids[v] for k, v in sub.items()}
    stream = DS.EventStream(index, prep)
    if prep.norm == "standardize" and prep.mean == 0.0 and prep.std == 1.0:
        prep.mean, prep.std = DS.compute_standardize(stream, split["train"])
        if prep.uses_rho:
            prep.mean2, prep.std2 = DS.compute_standardize_over_rho(stream, split["train"])
    balance = DS.Balance.from_labels(cfg.balance, index.labels[split["train"]])
    used = np.concatenate([split["train"], split["val"]])
    fits = stream.nbytes(len(used)) <= cfg.cache_limit_mb * 2**20
    if cfg.cache == "memory" or (cfg.cache == "auto" and fits):
        stream.load_cache(used, show=cfg.progress and ctx.is_root)
    return Prepared(index, stream, split, balance, balance.weights(index.labels), int(len(bad)))


def _resolved(cfg: TrainConfig, prepared: Prepared, run: RunDir) -> dict[str, Any]:
    from sbt_batch import __version__

    d = asdict(cfg)
    d["out"] = str(run.path)
    for key, label in (("signal", D.SIGNAL), ("background", D.BACKGROUND)):
        d[key] = [str(s.path) for s in prepared.index.sources if s.label == label]
    d["resume"] = None
    d["preprocess"] = prepared.stream.prep.to_dict()
    d["rows"] = D.rows_to_spec(prepared.stream.prep.rows)
    d["lr"] = cfg.learning_rate(0)
    d["input_shape"] = list(prepared.stream.prep.input_shape)
    d["class_weight"] = {int(k): float(v) for k, v in prepared.balance.class_weight.items()}
    d["events"] = {k: int(len(v)) for k, v in prepared.split.items()}
    d["dropped_nonfinite"] = prepared.dropped_nonfinite
    d["sbt_batch_version"] = __version__
    return d


def _fmt_rate(n: float, seconds: float) -> str:
    return f"{n / seconds:,.0f} img/s" if seconds > 0 else ""


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    history: list[dict[str, Any]]
    model: Any


def train(config: TrainConfig | None = None, *, spec: str | Path | None = None, ctx: Any = None,
          notify: Notify | None = None, **options: Any) -> TrainResult:
    """Train one model and write RUN_DIR (see :mod:`sbt_batch.common.rundir`); keyword options override ``config``.

    ``notify`` receives the lines people read (rank 0 only; the CLI prints them on stderr): see :data:`Notify`.
    """
    from sbt_batch.cnn.context import detect

    ctx = ctx or detect()
    resume = options.pop("resume", None) or (config.resume if config else None)
    if resume:
        run = RunDir(Path(resume)).require("config")
        resolved = run.read_config("preprocess", "signal", "background", "model")
        stored = {k: v for k, v in resolved.items() if k in TrainConfig.keys()}
        allowed = {"epochs", "progress", "cache", "cache_limit_mb", "parallel_reads", "prefetch"}
        extra = {k: v for k, v in options.items() if k in allowed and v is not None}
        clash = [k for k, v in options.items() if k not in allowed and v is not None and k != "out" and stored.get(k) != v]
        if clash:
            raise UserError(f"--resume: option '{clash[0]}' cannot change when resuming {run.path}")
        cfg = TrainConfig.from_options({**stored, **extra}, str(run.config))
        cfg.out = str(run.path)
        split, _files = D.load_split(run.split)
        from sbt_batch.cnn.evaluate import run_preprocess

        prep = run_preprocess(run, resolved)
    else:
        cfg = resolve_config(config, spec, **options)
        if not cfg.out:
            raise UserError("--out: no run directory given")
        run = RunDir(Path(cfg.out))
        if run.model.exists() or run.latest_checkpoint() is not None:
            raise UserError(f"{run.path}: run directory already holds a training run (use --resume or a new --out)")
        split, prep = None, None

    stop = {"flag": False}

    def _on_term(signum: int, _frame: Any) -> None:
        stop["flag"] = True

    try:
        old_handler = signal.signal(signal.SIGTERM, _on_term)
    except ValueError:  # not the main thread
        old_handler = None
    def _keep(exc: BaseException) -> bool:  # an interrupt or any checkpoint keeps the run for --resume
        return isinstance(exc, TrainingInterrupted) or run.latest_checkpoint() is not None

    fresh = not resume and ctx.is_root  # a new run directory is removed again if training fails before a checkpoint
    try:
        with new_dir(run.path, keep=_keep) if fresh else contextlib.nullcontext():
            return _train(cfg, run, bool(resume), split, prep, ctx, stop, notify or _quiet)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)


def _train(cfg: TrainConfig, run: RunDir, resume: bool, split: dict[str, np.ndarray] | None,
           prep: D.Preprocess | None, ctx: Any, stop: dict[str, bool], notify: Notify) -> TrainResult:
    """The body of :func:`train` once options are resolved (SIGTERM sets ``stop['flag']``)."""
    prepared = prepare_data(cfg, ctx, split, prep, notify)  # all input checks happen before TensorFlow loads
    tf = import_tensorflow(PURPOSE)
    keras = import_keras(PURPOSE)

    from sbt_batch.cnn.models import build_model

    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    p = prepared.stream.prep
    if ctx.is_root:
        run.create()
        if not resume:
            D.save_split(run.split, prepared.split, prepared.index.sources)
            run.write_config(_resolved(cfg, prepared, run))

    model = build_model(cfg.model, p.input_shape, cfg.output, cfg.padding)
    optimizer = _make_optimizer(cfg)
    optimizer.build(model.trainable_variables)
    train_step, eval_step = make_steps(model, optimizer, p.input_shape, cfg.output, ctx)

    # ---- state (possibly restored)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "sums": [0.0, 0.0, 0.0], "history": [], "best": None, "wait": 0}
    ckpt = run.latest_checkpoint() if resume else None
    if ckpt is not None:
        state = _load_checkpoint(ckpt, model, optimizer)
    if resume and ctx.is_root:
        notify(f"resuming {run.path} from {ckpt.name if ckpt else 'the start (no checkpoint yet)'}")
    history: list[dict[str, Any]] = state["history"]

    def _interrupted() -> bool:
        return ctx.average(1.0 if stop["flag"] else 0.0) > 0

    train_ids, labels = prepared.split["train"], prepared.index.labels
    val_ids = prepared.split["val"]
    if _interrupted():
        prepared.stream.close()
        raise TrainingInterrupted(f"SIGTERM before the first step: nothing to checkpoint; continue with --resume {run.path}")
    first_step = True
    window = DS.window_events(prepared.stream, cfg.batch_size, cfg.window_batches)
    try:
        for epoch in range(state["epoch"], cfg.epochs):
            if state.get("stopped"):  # early stopping already ended this run
                break
            t0, c0 = time.perf_counter(), time.process_time()
            lr = cfg.learning_rate(epoch)
            if callable(getattr(ctx, "lr_multiplier", None)):  # e.g. Horovod: scale with ranks after warm-up
                lr *= float(ctx.lr_multiplier(epoch))
            optimizer.learning_rate.assign(lr)
            ids = prepared.balance.epoch_ids(train_ids, labels, cfg.seed, epoch)
            order = ctx.shard(DS.epoch_order(ids, cfg.seed, epoch, window))
            n_steps = math.ceil(len(order) / cfg.batch_size)
            if cfg.max_steps:
                n_steps = min(n_steps, cfg.max_steps)
            # a checkpoint from another number of ranks: continue after the same share of the epoch
            start = min(n_steps, state["step"] * state.get("size", ctx.size) // ctx.size) if state["epoch"] == epoch else 0
            loss_sum, correct, seen = state["sums"] if start else (0.0, 0.0, 0.0)
            order = order[start * cfg.batch_size : n_steps * cfg.batch_size]
            ds = DS.make_tf_dataset(prepared.stream, order, cfg.batch_size, prepared.weights if cfg.balance == "weights" else None,
                                   cfg.window_batches, cfg.parallel_reads, cfg.prefetch)
            step = start
            with progress(transient=True) as bar, _read_errors(prepared.stream, tf):
                task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=n_steps, completed=start, rate="",
                                    visible=cfg.progress and ctx.is_root)
                for x, y, w in ds:
                    if cfg.augment != "none":  # seeded by (seed, epoch, step, rank): --resume repeats it exactly
                        x = augment_batch(np.asarray(x), cfg.augment, augment_rng(cfg.seed, epoch, step, ctx.rank))
                    l_b, c_b = train_step(x, y, w)
                    if first_step:
                        ctx.broadcast_variables(list(model.variables) + list(optimizer.variables))
                        first_step = False
                    step += 1
                    loss_sum += float(l_b)
                    correct += float(c_b)
                    seen += int(x.shape[0])
                    bar.update(task, advance=1, rate=_fmt_rate(seen, time.perf_counter() - t0))
                    if _interrupted():
                        _checkpoint_and_exit(run, ctx, model, optimizer, state, epoch, step, [loss_sum, correct, seen])
            train_loss = ctx.average(loss_sum) / max(ctx.average(seen), 1)
            train_acc = ctx.average(correct) / max(ctx.average(seen), 1)
            seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
            val_loss, val_acc = _evaluate_ids(prepared, val_ids, cfg, eval_step, ctx)
            row = {"epoch": epoch + 1, "loss": train_loss, "accuracy": train_acc, "val_loss": val_loss,
                   "val_accuracy": val_acc, "lr": lr, "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
                   "images_per_s": round(ctx.average(seen) * ctx.size / seconds, 1) if seconds > 0 else None}
            history.append(row)
            improved = state["best"] is None or (val_loss == val_loss and val_loss < state["best"])
            if improved:
                state["best"], state["wait"] = val_loss, 0
            else:
                state["wait"] += 1
            state.update(epoch=epoch + 1, step=0, sums=[0.0, 0.0, 0.0], history=history)
            line = (f"epoch {epoch + 1}/{cfg.epochs} loss {train_loss:.4f} acc {train_acc:.4f} val_loss {val_loss:.4f} "
                    f"val_acc {val_acc:.4f} lr {lr:.3g} {seconds:.1f}s {_fmt_rate(seen * ctx.size, seconds)}")
            if ctx.is_root:
                if improved and cfg.keep_best:
                    _save_checkpoint(run.checkpoints / "best.npz", model, optimizer, state)
                _save_checkpoint(run.checkpoint_path(epoch + 1), model, optimizer, state)
                for old in run.checkpoints.glob(f"epoch-{epoch + 1:04d}-step-*.npz"):
                    old.unlink(missing_ok=True)
                run.write_history(history)
                run.append_log(line)
                notify(line)
            log.info(line)
            if cfg.early_stopping and state["wait"] >= cfg.early_stopping:
                state["stopped"] = True
                if ctx.is_root:
                    _save_checkpoint(run.checkpoint_path(epoch + 1), model, optimizer, state)
                    notify(f"early stopping: val_loss did not improve for {cfg.early_stopping} epochs")
                break
            if _interrupted():
                raise TrainingInterrupted(f"SIGTERM: checkpoint saved after epoch {epoch + 1} in {run.checkpoints}; "
                                          f"continue with --resume {run.path}")
    finally:
        prepared.stream.close()

    if cfg.keep_best and (run.checkpoints / "best.npz").exists():
        _load_checkpoint(run.checkpoints / "best.npz", model)
    if ctx.is_root:
        with atomic_path(run.model, suffix=".keras") as tmp:
            model.save(tmp)
        run.write_history(history)
        record_training(run.path, [s.path for s in prepared.index.sources])  # model.keras.provenance.json
    return TrainResult(run.path, history, model)


def make_steps(model: Any, optimizer: Any, input_shape: tuple[int, ...], output: str, ctx: Any) -> tuple[Any, Any]:
    """Compiled ``train_step(x, y, w)`` (GradientTape, gradients averaged through ``ctx``) and ``eval_step(x, y)``.

    Both return (sum of per-event unweighted loss, number of correct predictions) for the batch.
    """
    tf = import_tensorflow(PURPOSE)
    keras = import_keras(PURPOSE)

    softmax = output == "softmax"
    loss_fn = (keras.losses.SparseCategoricalCrossentropy if softmax else keras.losses.BinaryCrossentropy)(reduction=None)

    spec_x = tf.TensorSpec((None, *input_shape), tf.float32)
    spec_v = tf.TensorSpec((None,), tf.float32)

    def _targets(y: Any) -> Any:
        return y if softmax else tf.cast(y, tf.float32)[:, None]

    def _correct(y: Any, pred: Any) -> Any:
        guess = tf.argmax(pred, axis=-1, output_type=tf.int32) if softmax else tf.cast(pred[:, 0] > 0.5, tf.int32)
        return tf.reduce_sum(tf.cast(tf.equal(guess, y), tf.float32))

    @tf.function(input_signature=[spec_x, tf.TensorSpec((None,), tf.int32), spec_v])
    def train_step(x: Any, y: Any, w: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            per = loss_fn(_targets(y), pred)
            loss = tf.reduce_mean(per * w)
        grads = tape.gradient(loss, model.trainable_variables)
        grads = ctx.allreduce_gradients(grads)
        optimizer.apply(grads, model.trainable_variables)
        return tf.reduce_sum(per), _correct(y, pred)

    @tf.function(input_signature=[spec_x, tf.TensorSpec((None,), tf.int32)])
    def eval_step(x: Any, y: Any) -> tuple[Any, Any]:
        pred = model(x, training=False)
        return tf.reduce_sum(loss_fn(_targets(y), pred)), _correct(y, pred)

    return train_step, eval_step


def _checkpoint_and_exit(run: RunDir, ctx: Any, model: Any, optimizer: Any, state: dict[str, Any],
                         epoch: int, step: int, sums: list[float]) -> None:
    state = {**state, "epoch": epoch, "step": step, "sums": sums, "size": ctx.size}
    path = run.checkpoint_path(epoch + 1, step)
    if ctx.is_root:
        _save_checkpoint(path, model, optimizer, state)
    raise TrainingInterrupted(f"SIGTERM: checkpoint saved at epoch {epoch + 1} step {step} ({path}); "
                              f"continue with --resume {run.path}")


@contextlib.contextmanager
def _read_errors(stream: DS.EventStream, tf: Any) -> Any:
    """Turn a read error that tf.data wrapped (a damaged chunk, NaN in a streamed event) back into its one line."""
    try:
        yield
    except tf.errors.OpError:
        if stream.failure is not None:
            raise stream.failure from None
        raise


def _evaluate_ids(prepared: Prepared, ids: np.ndarray, cfg: TrainConfig, eval_step: Any, ctx: Any) -> tuple[float, float]:
    """Unweighted mean loss and accuracy over ``ids`` (sharded over ranks, averaged)."""
    if len(ids) == 0:
        return float("nan"), float("nan")
    mine = np.array_split(ids, ctx.size)[ctx.rank]
    loss = correct = 0.0
    tf = import_tensorflow(PURPOSE)
    with _read_errors(prepared.stream, tf):
        for x, y, _w in DS.make_tf_dataset(prepared.stream, mine, max(cfg.batch_size, 256), None,
                                          cfg.window_batches, cfg.parallel_reads, cfg.prefetch):
            l_b, c_b = eval_step(x, y)
            loss += float(l_b)
            correct += float(c_b)
    n = ctx.average(len(mine))
    return ctx.average(loss) / n, ctx.average(correct) / n
