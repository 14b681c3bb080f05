"""Fault injection: every writing command against signals, a full disk, damaged inputs and non-finite values.

For each command that writes (convert, sample-ntuples, sample-kinematics, train, train-tabular,
evaluate, export, compare, collect, summarize-repeats) and each fault, the invariants are:

* the exit code (0 when the command finished first, else the signal's or a failure code);
* at most one ``error:`` line and no traceback (exactly one for a handled failure);
* no hidden temporary and no partial output left behind, at the latest once the same command
  has run again; no half-made output folder after a handled failure;
* the rerun succeeding (after a signal, and once the disk has room again).

Everything runs on tiny real inputs (a few hundred events, one epoch, the ``1c`` model).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_line_error, require, run_sbt

pytestmark = pytest.mark.timeout(900)

TRAIN_OPTS = ["-m", "1c", "--epochs", "1", "--max-events", "100", "--split", "0.5,0.3,0.2", "--no-progress"]
NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard", "To enable the following instructions",
         "rebuild TensorFlow", "I0000 00:00", "W0000 00:00", "E0000 00:00")


# --------------------------------------------------------------------------- helpers


def hidden(root: Path) -> list[Path]:
    """Hidden files and folders below ``root`` (temporaries; no output of sbt-batch starts with a dot)."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob(".*") if p.name not in {".", ".."})


def popen_sbt(*args: object, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start ``sbt-batch ARGS`` without waiting (its own session, so a signal reaches only it)."""
    return subprocess.Popen([sys.executable, "-m", "sbt_batch", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def error_lines(stderr: str) -> list[str]:
    """The ``error:`` lines of ``stderr``."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def truncate(src: Path, dest: Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``src`` to ``dest`` (a truncated file)."""
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


@dataclass
class Command:
    """One writing command: how to build its argv for an output folder, and what it writes there."""

    name: str
    argv: Callable[[Any, Path], list[object]]
    outputs: Callable[[Path], list[Path]]
    heavy: bool = False  # imports TensorFlow (slower)
    setup: Callable[[Any, Path], None] | None = None
    rerun: Callable[[Any, Path], list[object]] | None = None  # after an interrupt, if not the same argv
    complete: Callable[[Path], bool] | None = None  # the output is absent or whole (never half-made)


def _whole(folder: str, marker: str) -> Callable[[Path], bool]:
    """An output folder that exists only with ``marker`` in it (the file its command writes last)."""
    return lambda d: not (d / folder).exists() or (d / folder / marker).exists()


# --------------------------------------------------------------------------- shared inputs


class World:
    """Inputs made once per module: sample ntuples, a trained run, a kinematics table, repeats, a batch run."""

    def __init__(self, root: Path, signal_file: Path, background_file: Path) -> None:
        self.root = root
        self.sig, self.bkg = signal_file, background_file
        self.nt = root / "nt"
        self.run = root / "runA"
        self.kin = root / "kin.csv"
        self.reps = root / "reps"
        self.batch_runs = root / "runs"
        self.batch_run: Path | None = None

    def build(self) -> None:
        checks = [
            run_sbt("sample-ntuples", self.nt, "--kind", "signal", "--files", "2", "--events", "120", "--seed", "3"),
            run_sbt("train", "-s", self.sig, "-b", self.bkg, *TRAIN_OPTS, "-o", self.run),
            run_sbt("evaluate", self.run),
            run_sbt("sample-kinematics", self.kin, "-n", "600", "--seed", "2"),
            run_sbt("train-tabular", "--data", self.kin, "--epochs", "1", "--repeats", "3", "--no-plots", "-o", self.reps),
            run_sbt("submit", "convert", self.nt, "-o", self.root / "cout", "-k", "2", "--runs-dir", self.batch_runs,
                    "--name", "faults"),
        ]
        for result in checks:
            assert result.returncode == 0, result.stderr
        self.batch_run = next(p for p in self.batch_runs.iterdir() if not p.name.startswith("."))
        deadline = time.monotonic() + 120
        while True:
            status = run_sbt("status", self.batch_run, "--json")
            state = json.loads(status.stdout).get("state") if status.returncode == 0 else None
            if state == "completed":
                break
            assert state not in ("failed", "cancelled"), status.stdout
            assert time.monotonic() < deadline, status.stdout + status.stderr
            time.sleep(0.5)


@pytest.fixture(scope="module")
def world(tmp_path_factory, gfex_signal, gfex_background) -> World:
    w = World(tmp_path_factory.mktemp("faults"), gfex_signal[0], gfex_background[0])
    w.build()
    return w


def _copy_reps(w: World, dest: Path) -> None:
    for i in range(3):
        (dest / "reps" / f"repeat-{i}").mkdir(parents=True, exist_ok=True)
        shutil.copy(w.reps / f"repeat-{i}" / "sensitivity.json", dest / "reps" / f"repeat-{i}" / "sensitivity.json")


def _train_rerun(w: World, dest: Path) -> list[object]:
    run = dest / "run"
    if (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("epoch-*.npz")):
        return ["train", "--resume", run, "--no-progress"]
    return ["train", "-s", w.sig, "-b", w.bkg, *TRAIN_OPTS, "-o", run]


COMMANDS = {c.name: c for c in [
    Command("convert", lambda w, d: ["convert", w.nt, "-o", d / "out.h5", "--workers", "1"], lambda d: [d / "out.h5"]),
    Command("sample-ntuples", lambda w, d: ["sample-ntuples", d / "nt", "--kind", "background", "--files", "2", "--events", "300"],
            lambda d: [d / "nt"]),
    Command("sample-kinematics", lambda w, d: ["sample-kinematics", d / "k.h5", "-n", "3000"], lambda d: [d / "k.h5"]),
    Command("train", lambda w, d: ["train", "-s", w.sig, "-b", w.bkg, *TRAIN_OPTS, "-o", d / "run"], lambda d: [d / "run"],
            heavy=True, rerun=_train_rerun,
            complete=lambda d: not (d / "run").exists() or any((d / "run" / "checkpoints").glob("epoch-*.npz"))),
    Command("train-tabular", lambda w, d: ["train-tabular", "--data", w.kin, "--epochs", "1", "-o", d / "tab"],
            lambda d: [d / "tab"], heavy=True, complete=_whole("tab", "sensitivity.json")),
    Command("evaluate", lambda w, d: ["evaluate", w.run, "-o", d / "eval"], lambda d: [d / "eval"], heavy=True,
            complete=_whole("eval", "metrics.json")),
    Command("export", lambda w, d: ["export", w.run, "-f", "frozen-pb", "-o", d / "exp"], lambda d: [d / "exp"], heavy=True,
            complete=_whole("exp", "model.pb.json")),
    Command("compare", lambda w, d: ["compare", w.run, "-o", d / "cmp"], lambda d: [d / "cmp"], heavy=True,
            complete=_whole("cmp", "compare.json")),
    Command("collect", lambda w, d: ["collect", w.batch_run, "-o", d / "merged.h5"], lambda d: [d / "merged.h5"]),
    Command("summarize-repeats", lambda w, d: ["summarize-repeats", d / "reps"], lambda d: [d / "reps"], setup=_copy_reps,
            complete=lambda d: not (d / "reps" / "repeats.json").exists()
            or (d / "reps" / "plots" / "sensitivity-repeats.png").exists()),
]}


def _clean_ok(world: World, cmd: Command, dest: Path, argv: list[object] | None = None) -> subprocess.CompletedProcess[str]:
    result = run_sbt(*(argv or cmd.argv(world, dest)))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert not hidden(dest), hidden(dest)
    return result


def _no_new_hidden(world: World) -> None:
    """Inputs shared by every case must stay free of temporaries too (collect, evaluate write beside them)."""
    assert not [p for p in hidden(world.run) if "sbt-tmp" in p.name or p.suffix in {".tmp"}], hidden(world.run)


# --------------------------------------------------------------------------- signals

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)
FAST_SEEDS, HEAVY_SEEDS = (0, 1), (0,)
SIGNAL_CASES = [(name, seed) for name, c in COMMANDS.items() for seed in (HEAVY_SEEDS if c.heavy else FAST_SEEDS)]


@pytest.mark.slow
@pytest.mark.parametrize("name,seed", SIGNAL_CASES, ids=[f"{n}-seed{s}" for n, s in SIGNAL_CASES])
def test_signal_mid_write(world, tmp_path, name, seed):
    """SIGTERM, SIGINT and SIGKILL at seeded random moments: no temporaries, handled exits, the rerun succeeds."""
    cmd = COMMANDS[name]
    dest = tmp_path / "out"
    dest.mkdir()
    if cmd.setup:
        cmd.setup(world, dest)
    t0 = time.monotonic()
    _clean_ok(world, cmd, dest)  # an undisturbed run first: its duration spreads the signal times
    duration = max(time.monotonic() - t0, 1.0)
    for out in cmd.outputs(dest):  # start each signalled run from scratch
        shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
    if cmd.setup:
        cmd.setup(world, dest)
    rng = random.Random(f"{name}-{seed}")
    problems = []
    for sig in SIGNALS:
        delay = 1.5 + rng.random() * max(duration - 1.5, 0.5)
        proc = popen_sbt(*cmd.argv(world, dest))
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        _out, err = proc.communicate(timeout=600)
        rc = proc.returncode
        if rc == 0 or rc == -sig:
            assert "Traceback" not in err, err
        else:
            if sig == signal.SIGKILL:
                problems.append(f"{sig.name}: exit {rc}")
            assert "Traceback" not in err, f"{sig.name} after {delay:.1f}s: {err}"
            assert len(error_lines(err)) == 1, f"{sig.name} after {delay:.1f}s (exit {rc}): {err}"
            assert rc in (75, 130, 143), f"{sig.name}: exit {rc}: {err}"
        if sig != signal.SIGKILL:  # a handled signal removes its own temporaries at once
            assert not hidden(dest), f"{sig.name} after {delay:.1f}s left {hidden(dest)}"
            if rc not in (0, 75) and cmd.complete is not None:  # no half-made output folder
                assert cmd.complete(dest), f"{sig.name} after {delay:.1f}s: half-made output in {dest}"
        argv = cmd.rerun(world, dest) if cmd.rerun else cmd.argv(world, dest)
        if sig == signal.SIGKILL or rc == 75:
            _clean_ok(world, cmd, dest, argv)  # the same command again: succeeds and sweeps what the killed one left
        for out in cmd.outputs(dest):  # the next signal starts from scratch
            shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
        if cmd.setup:
            cmd.setup(world, dest)
    assert not problems, problems
    _no_new_hidden(world)


# --------------------------------------------------------------------------- full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs mounted below tmp_path (root only); unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True).returncode == 0
    require(ok, "cannot mount a tmpfs (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path, free_bytes: int) -> Path:
    """Fill ``mnt`` until only about ``free_bytes`` are free; return the filler file."""
    filler = mnt / "filler"
    stat = os.statvfs(mnt)
    size = max(stat.f_bavail * stat.f_frsize - free_bytes, 0)
    with open(filler, "wb") as fh:
        fh.truncate(0)
        chunk = b"\0" * (1 << 20)
        while size > 0:
            n = fh.write(chunk[: min(size, len(chunk))])
            size -= n
    return filler


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMANDS))
def test_full_disk(world, small_disk, name):
    """A full disk: one error line naming a path on it, no traceback, nothing partial; with room, the rerun works."""
    cmd = COMMANDS[name]
    dest = small_disk / "out"
    dest.mkdir()
    if cmd.setup:
        cmd.setup(world, dest)
    before = {p for p in dest.rglob("*")}
    filler = fill(small_disk, 8 * 1024)
    result = run_sbt(*cmd.argv(world, dest))
    assert_one_line_error(result, str(small_disk))
    assert any(w in result.stderr for w in ("No space left", "no space left", "disk full", "quota")), result.stderr
    assert not hidden(dest), hidden(dest)
    after = {p for p in dest.rglob("*")}
    assert after <= before, f"left behind: {sorted(after - before)}"
    filler.unlink()
    _clean_ok(world, cmd, dest)


# --------------------------------------------------------------------------- damaged inputs


def _damaged_run(world: World, tmp: Path, file: str, how: str) -> Path:
    run = tmp / "run"
    shutil.copytree(world.run, run)
    target = run / file
    if how == "truncate":
        truncate(world.run / file, target)
    else:
        target.write_text("{ this is : not [ valid\n\0\0")
    return run


def _latest_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("epoch-*.npz"))[-1]


DAMAGED = {
    # name: (command, make argv from (world, tmp), text the error line must contain)
    "convert-truncated-root": ("convert", lambda w, t: ["convert", truncate(sorted(w.nt.glob("*.root"))[0], t / "bad.root"),
                                                          "-o", t / "o.h5", "--workers", "1"], "bad.root"),
    "sample-ntuples-truncated-hdf5": ("sample-ntuples", lambda w, t: ["sample-ntuples", t / "nt", "--from-hdf5",
                                                                        truncate(w.sig, t / "bad.hdf5")], "bad.hdf5"),
    "sample-kinematics-events": ("sample-kinematics", lambda w, t: ["sample-kinematics", t / "k.csv", "-n", "-5"], "--events"),
    "train-truncated-hdf5": ("train", lambda w, t: ["train", "-s", truncate(w.sig, t / "bad.hdf5"), "-b", w.bkg, *TRAIN_OPTS,
                                                    "-o", t / "r"], "bad.hdf5"),
    "train-resume-checkpoint": ("train", lambda w, t: ["train", "--resume", (lambda r: (truncate(_latest_checkpoint(w.run),
                                                        _latest_checkpoint(r)), r)[1])(_damaged_run(w, t, "history.json", "truncate")),
                                                       "--epochs", "2"], "epoch-0001.npz"),
    "train-resume-config": ("train", lambda w, t: ["train", "--resume", _damaged_run(w, t, "config.yaml", "garbage"), "--epochs", "2"],
                            "config.yaml"),
    "train-resume-split": ("train", lambda w, t: ["train", "--resume", _damaged_run(w, t, "split.npz", "truncate"), "--epochs", "2"],
                           "split.npz"),
    "train-tabular-truncated-csv": ("train-tabular", lambda w, t: ["train-tabular", "--data", truncate(w.kin, t / "bad.csv", 0.37),
                                                                  "--epochs", "1", "-o", t / "tab"], "bad.csv"),
    "evaluate-model": ("evaluate", lambda w, t: ["evaluate", _damaged_run(w, t, "model.keras", "truncate")], "model.keras"),
    "evaluate-config": ("evaluate", lambda w, t: ["evaluate", _damaged_run(w, t, "config.yaml", "truncate")], "config.yaml"),
    "evaluate-split": ("evaluate", lambda w, t: ["evaluate", _damaged_run(w, t, "split.npz", "truncate")], "split.npz"),
    "evaluate-history": ("evaluate", lambda w, t: ["evaluate", _damaged_run(w, t, "history.json", "garbage")], "history.json"),
    "export-model": ("export", lambda w, t: ["export", _damaged_run(w, t, "model.keras", "garbage"), "-f", "onnx"], "model.keras"),
    "export-max-images": ("export", lambda w, t: ["export", w.run, "-f", "jpeg", "--max-images", "-1", "-o", t / "x"], "--max-images"),
    "compare-metrics": ("compare", lambda w, t: ["compare", _damaged_run(w, t, "eval/metrics.json", "garbage"), "-o", t / "c"],
                        "metrics.json"),
    "compare-roc": ("compare", lambda w, t: ["compare", _damaged_run(w, t, "eval/roc.npz", "truncate"), "-o", t / "c"], "roc.npz"),
    "collect-part": ("collect", None, "part"),
    "summarize-repeats-json": ("summarize-repeats", None, "sensitivity.json"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_input(world, tmp_path, case):
    """A truncated or corrupt input from an earlier step: one line naming that file, nothing partial."""
    name, make, needle = DAMAGED[case]
    if case == "collect-part":
        run = tmp_path / "batch"
        shutil.copytree(world.batch_run, run)
        parts = sorted(p for p in run.rglob("*.h5") if "merged" not in p.name)
        if not parts:  # the parts live in the run's output folder
            manifest_out = world.root / "cout"
            parts = sorted(p for p in manifest_out.rglob("*.h5") if "merged" not in p.name)
        require(bool(parts), "no convert parts found for the collect case")
        saved = tmp_path / "saved.h5"
        shutil.copy(parts[0], saved)
        try:
            truncate(saved, parts[0])
            result = run_sbt("collect", run, "-o", tmp_path / "m.h5")
        finally:
            shutil.copy(saved, parts[0])
        assert_one_line_error(result)
        assert not (tmp_path / "m.h5").exists()
        assert not hidden(tmp_path), hidden(tmp_path)
        return
    if case == "summarize-repeats-json":
        _copy_reps(world, tmp_path)
        (tmp_path / "reps" / "repeat-1" / "sensitivity.json").write_text('{"sensitivity": 1.2, "err')
        argv: list[object] = ["summarize-repeats", tmp_path / "reps"]
    else:
        argv = make(world, tmp_path)
    result = run_sbt(*argv)
    assert_one_line_error(result, needle)
    assert not hidden(tmp_path), hidden(tmp_path)
    for leftover in ("r", "tab", "x", "c", "o.h5", "nt", "k.csv"):
        path = tmp_path / leftover
        assert not path.exists() or (path.is_dir() and not any(path.iterdir())), f"half-made {path}"
    if (tmp_path / "run").is_dir():
        assert not (tmp_path / "run" / "eval").exists() or (tmp_path / "run" / "eval").samefile(tmp_path / "run" / "eval")


# --------------------------------------------------------------------------- non-finite values


def _nan_copy(src: Path, dest: Path, event: int, value: float = float("nan")) -> Path:
    import h5py

    shutil.copy(src, dest)
    with h5py.File(dest, "r+") as f:
        img = f["gTowerEt"][event]
        img[5, 7] = value
        f["gTowerEt"][event] = img
    return dest


def _kin_with(world: World, dest: Path, column: str, fn: Callable[[Any], Any]) -> Path:
    import numpy as np

    from sbt_batch.tabular.columns import Columns
    from sbt_batch.tabular.data import read_columns, write_table

    cols = Columns()
    data = read_columns(world.kin, cols)
    data[column] = fn(np.asarray(data[column], dtype=np.float64))
    write_table(dest, data)
    return dest


@pytest.mark.slow
def test_nonfinite_cnn_input_refused_and_dropped(world, tmp_path):
    """One NaN tower: train refuses naming the file and event; --drop-nonfinite trains and counts it."""
    bad = _nan_copy(world.sig, tmp_path / "nan.hdf5", 17)
    refused = run_sbt("train", "-s", bad, "-b", world.bkg, *TRAIN_OPTS, "-o", tmp_path / "r")
    assert_one_line_error(refused, "nan.hdf5", "event 17")
    assert not (tmp_path / "r").exists()
    inf = _nan_copy(world.sig, tmp_path / "inf.hdf5", 3, float("inf"))
    evaluated = run_sbt("evaluate", world.run, "--signal", inf, "--background", world.bkg, "-o", tmp_path / "e")
    assert_one_line_error(evaluated, "inf.hdf5", "event 3")
    assert not (tmp_path / "e").exists()
    dropped = run_sbt("train", "-s", bad, "-b", world.bkg, *TRAIN_OPTS, "--max-events", "300", "--drop-nonfinite", "-o", tmp_path / "d")
    assert dropped.returncode == 0, dropped.stderr
    import yaml

    cfg = yaml.safe_load((tmp_path / "d" / "config.yaml").read_text())
    assert cfg["dropped_nonfinite"] == 1
    assert "1 event" in dropped.stderr + dropped.stdout


@pytest.mark.parametrize("column,fn,needle", [
    ("EventWeight", lambda a: -abs(a), "EventWeight"),
    ("EventWeight", lambda a: a * 0, "EventWeight"),
    ("training_weight", lambda a: a * 0, "training_weight"),
    ("mBB", lambda a: __import__("numpy").where(__import__("numpy").arange(len(a)) == 9, __import__("numpy").inf, a), "mBB"),
], ids=["eventweight-negative", "eventweight-zero", "training-weight-zero", "variable-inf"])
def test_tabular_unusable_weights(world, tmp_path, column, fn, needle):
    """Unusable weights or a non-finite variable: one line naming column and file, and no run directory."""
    data = _kin_with(world, tmp_path / "w.csv", column, fn)
    result = run_sbt("train-tabular", "--data", data, "--epochs", "1", "-o", tmp_path / "tab")
    assert_one_line_error(result, needle, "w.csv")
    assert not (tmp_path / "tab").exists()


def test_nonfinite_sensitivity_in_repeats(world, tmp_path):
    """A repeat whose sensitivity is NaN is refused, naming its file."""
    _copy_reps(world, tmp_path)
    path = tmp_path / "reps" / "repeat-2" / "sensitivity.json"
    data = json.loads(path.read_text())
    data["sensitivity"] = float("nan")
    path.write_text(json.dumps(data))
    result = run_sbt("summarize-repeats", tmp_path / "reps")
    assert_one_line_error(result, "repeat-2")
    assert not (tmp_path / "reps" / "repeats.json").exists()


def test_nonfinite_in_conversion(world, tmp_path):
    """A NaN tower in an ntuple: convert reports it in one line naming the file (or skips it with --skip-bad)."""
    import numpy as np
    import uproot

    src = sorted(world.nt.glob("*.root"))[0]
    with uproot.open(src) as f:
        tree = f["mytree"]
        arrays = tree.arrays(library="np")
        maps = f["maps"].arrays(library="np")
    et = np.array(arrays["gTowerEt"], dtype=np.float32)
    require(et.ndim == 2, "sample ntuple is not float[1184]")
    et[4, 10] = np.nan
    bad = tmp_path / "nan.root"
    with uproot.recreate(bad) as f:
        f.mktree("mytree", {"gTowerEt": (np.float32, (et.shape[1],)), "Kt4EMTopoEventShape_Density": np.float32})
        f["mytree"].extend({"gTowerEt": et, "Kt4EMTopoEventShape_Density": arrays["Kt4EMTopoEventShape_Density"].astype(np.float32)})
        f.mktree("maps", {k: (np.asarray(v[0]).dtype, np.asarray(v[0]).shape) for k, v in maps.items()})
        f["maps"].extend({k: np.stack(list(v)) for k, v in maps.items()})
    result = run_sbt("convert", bad, "-o", tmp_path / "o.h5", "--workers", "1")
    if result.returncode == 0:
        pytest.xfail("convert does not check non-finite values yet (the conversion item of issue 14, not in this module's scope)")
    assert_one_line_error(result, "nan.root")
    assert not (tmp_path / "o.h5").exists()
    assert not hidden(tmp_path)


# --------------------------------------------------------------------------- option values and job specs


RANGE_CASES = [
    (["train", "--lr", "0"], "--lr"),
    (["train", "--lr", "-1e-3"], "--lr"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train-tabular", "--lr", "0"], "--lr"),
    (["train-tabular", "--epochs", "0"], "--epochs"),
    (["train-tabular", "--repeats", "0"], "--repeats"),
    (["train-tabular", "--batch-size", "-4"], "--batch-size"),
    (["summarize-repeats", "{reps}", "--expected", "0"], "--expected"),
    (["summarize-repeats", "{reps}", "--drop", "-1"], "--drop"),
    (["export", "{run}", "-f", "jpeg", "--max-images", "-3"], "--max-images"),
]


@pytest.mark.parametrize("argv,needle", RANGE_CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in RANGE_CASES])
def test_out_of_range_option(world, tmp_path, argv, needle):
    """Out-of-range option values: one line naming the option, before anything is written."""
    common = {"train": ["-s", world.sig, "-b", world.bkg, "-o", tmp_path / "r"],
              "train-tabular": ["--data", world.kin, "-o", tmp_path / "r"]}.get(argv[0], [])
    full = [str(a).format(reps=world.reps, run=world.run) for a in argv] + common
    result = run_sbt(*full)
    assert_one_line_error(result, needle)
    assert not (tmp_path / "r").exists()


SPEC_CASES = [
    ("train", "signal: 5\nbackground: {bkg}\nout: {out}\n", "signal"),
    ("train", "signal: {sig}\nbackground: {bkg}\nmodel: [1c]\nout: {out}\n", "model"),
    ("train", "signal: {sig}\nbackground: {bkg}\nout: 7\n", "out"),
    ("train", "signal: {sig}\nbackground: {bkg}\nout: {out}\nepochs: many\n", "epochs"),
    ("train", "signal: {sig}\nbackground: {bkg}\nout: {out}\nlr: 0\n", "lr"),
    ("train-tabular", "data: {kin}\nout: 7\n", "out"),
    ("train-tabular", "data: {kin}\nout: {out}\nepochs: [1]\n", "epochs"),
    ("train-tabular", "data: 5\nout: {out}\n", "data"),
    ("train-tabular", "data: {kin}\nout: {out}\nlr: -1\n", "lr"),
]


@pytest.mark.parametrize("command,text,key", SPEC_CASES, ids=[f"{c}-{k}-{i}" for i, (c, _t, k) in enumerate(SPEC_CASES)])
def test_job_spec_wrong_type(world, tmp_path, command, text, key):
    """Wrong types or values in a YAML job spec: one line naming the key."""
    spec = tmp_path / "job.yaml"
    spec.write_text(text.format(sig=world.sig, bkg=world.bkg, kin=world.kin, out=tmp_path / "r"))
    result = run_sbt(command, "--config", spec)
    assert_one_line_error(result, key)
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- output hygiene


def test_no_arguments_prints_help_without_error():
    result = run_sbt()
    assert "Usage" in result.stdout + result.stderr
    assert not error_lines(result.stderr), result.stderr


@pytest.mark.slow
def test_tensorflow_noise_hidden_unless_debug(world, tmp_path):
    """TensorFlow's C++ start-up lines stay off the terminal, even with TF_CPP_MIN_LOG_LEVEL=0 set, unless --debug."""
    env = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    quiet = run_sbt("evaluate", world.run, "-o", tmp_path / "e", env=env)
    assert quiet.returncode == 0, quiet.stderr
    noisy = [line for line in quiet.stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, quiet.stderr
    loud = run_sbt("--debug", "evaluate", world.run, "-o", tmp_path / "e2", env=env)
    assert loud.returncode == 0, loud.stderr
    assert any(n in loud.stderr for n in NOISE), loud.stderr


# --------------------------------------------------------------------------- the sweep itself


def test_sweep_removes_only_stale_temporaries(tmp_path):
    """The next atomic write to a target deletes temporaries of dead owners here, and old ones of other hosts."""
    from sbt_batch.common import fileio

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = fileio._HOST
    names = {
        "dead": f".out.h5.sbt-tmp.{host}.{dead.pid}.0a0b.h5",
        "alive": f".out.h5.sbt-tmp.{host}.{os.getpid()}.0c0d.h5",
        "foreign-new": ".out.h5.sbt-tmp.othernode.12345.0e0f.h5",
        "foreign-old": ".out.h5.sbt-tmp.othernode.12346.1a1b.h5",
        "other-target": f".other.h5.sbt-tmp.{host}.{dead.pid}.2c2d.h5",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    old = time.time() - fileio.FOREIGN_TMP_AGE - 60
    os.utime(tmp_path / names["foreign-old"], (old, old))
    fileio.write_text_atomic(tmp_path / "out.h5", "done")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"out.h5", names["alive"], names["foreign-new"], names["other-target"]}
    with fileio.staged_dir(tmp_path / "folder") as stage:
        (stage / "a.txt").write_text("a")
    assert (tmp_path / "folder" / "a.txt").read_text() == "a" and not hidden(tmp_path / "folder")
