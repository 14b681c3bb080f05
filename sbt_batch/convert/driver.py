"""convert(): gFEX ntuples to one HDF5 file of images, in-process or as dask tasks, written atomically."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbt_batch import __version__
from sbt_batch.common.console import log, rate_text, task_bar
from sbt_batch.common.errors import InputFileError, UserError
from sbt_batch.common.fileio import atomic_path
from sbt_batch.common.provenance import stamp_convert, utc_now
from sbt_batch.convert.geometry import DEFAULT_ETA_MAX
from sbt_batch.convert.h5chunks import EventWriter
from sbt_batch.convert.names import ET_DATASET, INDEX_DATASET, MAPS_TREE, RHO_DATASET, TREE
from sbt_batch.convert.output import CHUNK_EVENTS, check_output, create_datasets, write_provenance
from sbt_batch.convert.source import NtupleInput, iter_steps, scan_input

if TYPE_CHECKING:  # pragma: no cover
    import h5py

    from sbt_batch.convert.remote import RemoteOptions


DEFAULT_STEP = "100MB"
# Below this much tower data, starting a local cluster (seconds) costs more than it saves.
LOCAL_CLUSTER_MIN_BYTES = 200_000_000

_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def parse_step_size(text: str | int) -> tuple[int, bool]:
    """Parse ``--step-size``: ``100MB``, ``1GiB`` (bytes, returns (n, True)) or a plain entry count ((n, False))."""
    if isinstance(text, int):
        return text, False
    match = _SIZE_RE.match(str(text))
    if not match:
        raise UserError(f"--step-size: expected a size such as 100MB or an entry count, got {text!r}")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    if not unit:
        if number < 1 or number != int(number):
            raise UserError(f"--step-size: entry count must be a positive integer, got {text!r}")
        return int(number), False
    value = int(number * _UNITS[unit.rstrip("b")])
    if value < 1:
        raise UserError(f"--step-size: must be positive, got {text!r}")
    return value, True


def entry_bytes(n_towers: int) -> int:
    """Bytes read per entry: its float32 towers and rho."""
    return 4 * n_towers + 4


def step_entries(step_size: str | int, n_towers: int) -> int:
    """Entries per read step for ``step_size``, a multiple of the output chunk (at least one chunk)."""
    value, is_bytes = parse_step_size(step_size)
    entries = value // entry_bytes(n_towers) if is_bytes else value
    return max(CHUNK_EVENTS, entries // CHUNK_EVENTS * CHUNK_EVENTS)


def convert_into(source: NtupleInput, tree: str, et_out: EventWriter, rho_ds: h5py.Dataset, idx_ds: h5py.Dataset, at: int, file_index: int, step: int, on_step: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Convert ``source`` into the datasets from event ``at``, in steps; return (events, events padded or truncated)."""
    import numpy as np

    rows, cols = source.grid.shape
    done = n_padded = 0
    for et, rho, padded in iter_steps(source, tree, step):
        n = len(rho)
        n_padded += padded
        et_out.write(at + done, et.reshape(n, rows, cols))
        rho_ds[at + done : at + done + n] = rho
        idx_ds[at + done : at + done + n] = np.full(n, file_index, dtype=np.int32)
        done += n
        if on_step:
            on_step(n)
    if done != source.entries:
        raise InputFileError(source.path, f"tree '{tree}': read {done} entries but the tree has {source.entries}")
    return done, n_padded


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------


@dataclass
class ConvertResult:
    """What :func:`convert` did: the output, the files converted and skipped, events and timing."""

    output: Path
    events: int
    files: list[tuple[str, int]]  # (input path, entries) of every converted input, in order
    skipped: list[tuple[str, str]]  # (input path, reason)
    shape: tuple[int, int]
    eta_max: float
    seconds: float
    workers: int
    raw_chunks: int = 0
    padded: int = 0  # events whose tower count was padded or truncated (--pad-towers)
    pad_towers: bool = False
    bytes_read: int = 0  # input bytes read (compressed, local or remote), scan included

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_rate(self) -> float:
        """Input MB (10^6 bytes, compressed) read per second."""
        return self.bytes_read / self.seconds / 1e6 if self.seconds > 0 else 0.0


def _fail_or_skip(exc: InputFileError, skip_bad: bool, skipped: list[tuple[str, str]]) -> None:
    """Raise ``exc``, or (``skip_bad``) log it and add the input to ``skipped``."""
    if not skip_bad:
        raise exc
    log.warning("skipping %s", exc)
    skipped.append((exc.path, exc.problem))


def scan_inputs(paths: Sequence[Path | str], tree: str, maps_tree: str, eta_max: float, skip_bad: bool, skipped: list[tuple[str, str]], pad_towers: bool = False,
                remote: RemoteOptions | None = None) -> list[NtupleInput]:
    """Scan every input (paths or URLs) in order; the first good one defines the grid that the others must share."""
    sources: list[NtupleInput] = []
    for path in paths:
        try:
            source = scan_input(path, tree, maps_tree, eta_max, pad_towers, remote)
            if sources and not source.grid.same_grid(sources[0].grid):
                raise InputFileError(
                    path, f"tree '{maps_tree}': the {source.grid.rows}x{source.grid.cols} tower grid differs from "
                    f"{sources[0].path} ({sources[0].grid.rows}x{sources[0].grid.cols})"
                )  # fmt: skip
            sources.append(source)
        except InputFileError as exc:
            _fail_or_skip(exc, skip_bad, skipped)
    return sources


def convert(
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    tree: str = TREE,
    maps_tree: str = MAPS_TREE,
    eta_max: float = DEFAULT_ETA_MAX,
    workers: int | None = None,
    scheduler: str | None = None,
    step_size: str | int = DEFAULT_STEP,
    skip_bad: bool = False,
    cluster: str | None = None,
    jobs: int | None = None,
    profile: dict[str, Any] | None = None,
    show_progress: bool = False,
    level: int | None = 1,
    pad_towers: bool = False,
    read_timeout: float | None = None,
    read_retries: int | None = None,
) -> ConvertResult:
    """Convert gFEX ntuples (files, dirs, globs, @lists) to one HDF5 file; event order = input order.

    ``workers=1`` (and no scheduler or cluster) converts in this process; otherwise dask runs one task
    per file on a local cluster of ``workers`` processes (default: the CPU count, at most one per file,
    and in-process for less than LOCAL_CLUSTER_MIN_BYTES of tower data), on ``scheduler``,
    or on a dask-jobqueue ``cluster`` ("slurm" or "condor") of ``jobs`` jobs. ``level`` is the deflate
    level of the output (None: uncompressed chunks, for measurements). ``pad_towers`` pads tower
    arrays shorter than the maps with 0 and truncates longer ones (root_numpy's behaviour), counting
    the events affected; otherwise such an event is an error naming the file and entry. Inputs may
    be root:// or http(s):// URLs: each request waits at most ``read_timeout`` seconds and is
    retried ``read_retries`` times with backoff on transient errors (:mod:`sbt_batch.convert.remote`).
    """
    from sbt_batch.common.inputs import expand_inputs

    t0 = time.perf_counter()
    output = Path(output)
    if eta_max <= 0:
        raise UserError(f"--eta-max: must be positive, got {eta_max}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers: must be at least 1, got {workers}")
    parse_step_size(step_size)
    from sbt_batch.convert.cluster import check_cluster_options, default_workers

    check_cluster_options(scheduler, cluster, jobs)
    remote = remote_options(read_timeout, read_retries)
    from sbt_batch.convert.remote import bytes_read

    bytes0, dask_bytes = bytes_read(), [0]  # this thread's reads; the dask ranges' reads
    check_output(output)
    paths = expand_inputs(inputs)
    skipped: list[tuple[str, str]] = []
    padded: list[int] = []  # events padded or truncated, per converted input
    sources = scan_inputs(paths, tree, maps_tree, eta_max, skip_bad, skipped, pad_towers, remote)
    if not sources:
        raise UserError(f"no readable inputs among {len(paths)} file(s): " + "; ".join(f"{p}: {r}" for p, r in skipped))
    grid = sources[0].grid
    step = step_entries(step_size, grid.n_towers)
    total = sum(s.entries for s in sources)
    if workers is None:  # default: one process per core, but never more than the files, and none for small inputs
        small = total * entry_bytes(grid.n_towers) < LOCAL_CLUSTER_MIN_BYTES
        workers = 1 if small else min(default_workers(), len(sources))
    distributed = scheduler is not None or cluster is not None or workers > 1
    with atomic_path(output, suffix=".h5") as tmp:
        import h5py

        with h5py.File(tmp, "w", rdcc_nbytes=8 * 1024**2) as h5:
            create_datasets(h5, total, grid.shape, level)
            if not distributed:
                files, n_workers, raw = _convert_serial(sources, h5, tree, step, skip_bad, skipped, show_progress, padded), 1, 0
        if distributed:  # the output is closed here: dask workers may write it
            files, n_workers, raw = _convert_dask(sources, str(tmp), tree, step, skip_bad, skipped, workers, scheduler,
                                                  cluster, jobs, profile, show_progress, level, padded, dask_bytes)  # fmt: skip
        with h5py.File(tmp, "r+") as h5:
            events = sum(n for _, n in files)
            for name in (ET_DATASET, RHO_DATASET, INDEX_DATASET):
                if h5[name].shape[0] != events:
                    h5[name].resize(events, axis=0)
            write_provenance(h5, {
                "inputs": [p for p, _ in files],
                "entries": [int(n) for _, n in files],
                "eta_max": float(eta_max),
                "eta_centers": grid.eta,
                "phi_centers": grid.phi,
                "tree": tree,
                "maps_tree": maps_tree,
                "tool": "sbt-batch convert",
                "tool_version": __version__,
                "created": utc_now(),
                "skipped": [{"path": p, "reason": r} for p, r in skipped],
                "n_skipped": len(skipped),
                "pad_towers": bool(pad_towers),
                "padded": [int(n) for n in padded],
                "n_padded": int(sum(padded)),
            })  # fmt: skip
            stamp_convert(h5, output, [p for p, _ in files])
    return ConvertResult(output, events, files, skipped, grid.shape, float(eta_max), time.perf_counter() - t0, n_workers, raw,
                         int(sum(padded)), pad_towers, bytes_read() - bytes0 + dask_bytes[0])  # fmt: skip


def remote_options(read_timeout: float | None = None, read_retries: int | None = None) -> RemoteOptions:
    """RemoteOptions from ``--read-timeout`` and ``--read-retries`` (None: the defaults), checked."""
    from sbt_batch.convert.remote import DEFAULT_RETRIES, DEFAULT_TIMEOUT, RemoteOptions

    timeout = DEFAULT_TIMEOUT if read_timeout is None else float(read_timeout)
    return RemoteOptions(timeout=timeout, retries=DEFAULT_RETRIES if read_retries is None else int(read_retries)).check()


def _convert_serial(sources: list[NtupleInput], h5: h5py.File, tree: str, step: int, skip_bad: bool, skipped: list[tuple[str, str]], show: bool,
                    padded: list[int]) -> list[tuple[str, int]]:
    """Convert ``sources`` in this process, one after the other, into the open output ``h5``; the (input, entries) converted."""
    files: list[tuple[str, int]] = []
    at = 0
    t0 = time.perf_counter()
    bar, task = task_bar("converting", len(sources), show)
    counter = [0]
    writer = EventWriter(h5[ET_DATASET])
    from sbt_batch.convert.remote import bytes_read

    bytes0 = bytes_read()

    def on_step(n: int) -> None:
        counter[0] += n
        bar.update(task, rate=rate_text(counter[0], t0, bytes_read() - bytes0))

    with bar:
        for source in sources:
            try:
                n, n_padded = convert_into(source, tree, writer, h5[RHO_DATASET], h5[INDEX_DATASET], at, len(files), step, on_step)
            except InputFileError as exc:
                _fail_or_skip(exc, skip_bad, skipped)  # the slots it wrote are overwritten or trimmed
                bar.advance(task)
                continue
            files.append((str(source.path), n))
            padded.append(n_padded)
            at += n
            bar.advance(task)
    writer.flush()
    return files


def _convert_dask(sources: list[NtupleInput], output: str, tree: str, step: int, skip_bad: bool, skipped: list[tuple[str, str]],
                  workers: int | None, scheduler: str | None, cluster: str | None, jobs: int | None, profile: dict[str, Any] | None,
                  show: bool, level: int | None, padded: list[int], nbytes: list[int] | None = None) -> tuple[list[tuple[str, int]], int, int]:
    """Convert ``sources`` as dask tasks into the closed output file ``output``: (input, entries) converted, workers, raw chunks."""
    from sbt_batch.convert.cluster import dask_client
    from sbt_batch.convert.tasks import convert_distributed

    with dask_client(workers=workers, scheduler=scheduler, cluster=cluster, jobs=jobs, profile=profile) as client:
        n_workers = len(client.scheduler_info().get("workers", {})) or (workers or 1)
        state = convert_distributed(client, sources, output, tree, step, skip_bad, level, show, n_workers)
    for path, reason in state.skipped:
        _fail_or_skip(InputFileError(path, reason), True, skipped)  # str: a URL must keep its '//'
    if state.error:
        raise InputFileError(*state.error)
    padded.extend(state.padded)
    if nbytes is not None:
        nbytes[0] += state.bytes
    return [(str(p), n) for p, n in state.files], n_workers, state.raw
