"""gFEX ntuples (ROOT, read with uproot) to HDF5 images, in bounded-memory steps; and merging outputs.

Layers, as in uproot: *source* (open a file, find the trees, read steps of entries, turn every
reading failure into a one-line error naming the file and tree), *interpretation* (the tower grid
from the maps tree, applied as one gather per step; TTree baskets take the fast path of
:mod:`sbt_batch.baskets`) and *output* (chunked, compressed HDF5 written atomically, with
provenance; whole chunks encoded by :mod:`sbt_batch.h5chunks`). :func:`convert` runs files
in-process (one worker) or as dask tasks (:mod:`sbt_batch.convert_tasks`) that return encoded
chunks which this process writes in input order.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbt_batch import __version__
from sbt_batch.console import log
from sbt_batch.errors import InputFileError, UserError, one_line
from sbt_batch.fileio import atomic_path, check_writable_dir, is_hdf5
from sbt_batch.baskets import Layout, LayoutError, NonFiniteError, TowerCountError, first_nonfinite, iter_gathered, tower_layout
from sbt_batch.geometry import DEFAULT_ETA_MAX, Grid, GridError, build_grid
from sbt_batch.h5chunks import EventWriter, copy_events
from sbt_batch.provenance import check_part_versions, remember_root, stamp_convert, stamp_merge

if TYPE_CHECKING:  # pragma: no cover
    import h5py
    import numpy as np

    from sbt_batch.remote import RemoteOptions

TREE = "mytree"  # the event tree of the gFEX ntuples
MAPS_TREE = "maps"  # the tree with one entry of tower coordinates
ET_BRANCH = "gTowerEt"
RHO_BRANCH = "Kt4EMTopoEventShape_Density"
ETA_BRANCH = "gTowerEta"
PHI_BRANCH = "gTowerPhi"
ET_DATASET = "gTowerEt"
RHO_DATASET = "offlineRho"
INDEX_DATASET = "fileIndex"
CHUNK_EVENTS = 64  # events per gTowerEt chunk (about 200 kB for 24 x 32 towers)
FLAT_CHUNK = 16384  # events per chunk of the per-event scalars
# Standard HDF5 filters (shuffle + deflate) so that any HDF5 reader opens the output. Whole gTowerEt
# chunks are encoded by sbt_batch.h5chunks (ISA-L deflate of the planes that compress) and written
# raw; HDF5 itself only compresses the few partial chunks at file boundaries.
COMPRESSION: dict[str, Any] = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
DEFAULT_STEP = "100MB"
# Below this much tower data, starting a local cluster (seconds) costs more than it saves.
LOCAL_CLUSTER_MIN_BYTES = 200_000_000

# ---------------------------------------------------------------------------------------------
# Source: opening files and reading steps of entries
# ---------------------------------------------------------------------------------------------


@functools.cache
def use_fast_inflate() -> bool:
    """Let uproot inflate zlib baskets with ISA-L when installed (uproot's own ``library="isal"`` option); once per process."""
    try:
        import isal  # noqa: F401
        import uproot.compression as uc
    except ImportError:
        return False
    if getattr(uc, "_decompress_ZLIB", None) is not None and hasattr(uc._decompress_ZLIB, "library"):
        uc._decompress_ZLIB.library = "isal"
        return True
    return False


def open_root(path: str | Path, remote: "RemoteOptions | None" = None) -> Any:
    """Open a local file or a root:// or http(s):// URL with uproot; InputFileError for missing, unreachable, non-ROOT, truncated or corrupt files.

    Local files are memory-mapped; URLs are read through :mod:`sbt_batch.remote` (timeouts, retries
    with backoff, readahead, ``remote`` options). Both count the bytes they read, for MB/s.
    """
    import uproot

    from sbt_batch.remote import is_url, local_source

    if is_url(path):
        return _open_remote(str(path), remote)
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "no such file or directory")
    if not path.is_file():
        raise InputFileError(path, "not a regular file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise InputFileError(path, f"cannot read ({exc.strerror})") from None
    if magic != b"root":
        raise InputFileError(path, "not a ROOT file")
    use_fast_inflate()
    try:
        # a memory map: baskets are inflated (or, when stored uncompressed, gathered) straight from the
        # page cache, with no read() copy and no reopening per basket as the default fsspec source does
        rfile = uproot.open(path, array_cache=None, object_cache=None, handler=local_source())
    except Exception as exc:  # uproot raises many types for damaged headers
        raise InputFileError(path, f"truncated or corrupt ROOT file ({one_line(exc)})") from None
    return _check_size(rfile, path, path.stat().st_size)


def _open_remote(url: str, remote: "RemoteOptions | None") -> Any:
    """open_root for a URL: transient errors retried, then one InputFileError (a RemoteError) naming the URL."""
    from sbt_batch.remote import open_url

    use_fast_inflate()
    try:
        rfile = open_url(url, remote, array_cache=None, object_cache=None)
    except UserError:  # RemoteError (unreachable, missing, refused) or a missing client package
        raise
    except Exception as exc:  # the server answered, but not with a ROOT file
        text = one_line(exc)
        problem = "not a ROOT file" if "not a ROOT file" in text else f"truncated or corrupt ROOT file ({text})"
        raise InputFileError(url, problem) from None
    try:
        size = rfile.file.source.num_bytes  # one stat/HEAD request, retried like the reads
    except UserError:
        rfile.close()
        raise
    return _check_size(rfile, url, size)


def _check_size(rfile: Any, path: str | Path, size: int) -> Any:
    """``rfile``, unless the file is shorter than its header says (then closed, and InputFileError)."""
    end = getattr(rfile.file, "fEND", size)
    if size < end:
        rfile.close()
        raise InputFileError(path, f"truncated ROOT file ({size} bytes, the header says {end})")
    return rfile


def get_tree(rfile: Any, path: Path, name: str) -> Any:
    """The TTree or RNTuple ``name`` in ``rfile``, or InputFileError naming file and tree."""
    try:
        classes = rfile.classnames()
    except InputFileError:  # a remote read that failed (sbt_batch.remote.RemoteError)
        raise
    except Exception as exc:
        raise InputFileError(path, f"truncated or corrupt ROOT file ({one_line(exc)})") from None
    keys = {k.split(";")[0]: v for k, v in classes.items()}
    if name not in keys:
        found = ", ".join(sorted(keys)) or "nothing"
        raise InputFileError(path, f"no tree '{name}' (found: {found})")
    if keys[name] not in ("TTree", "ROOT::RNTuple", "ROOT::Experimental::RNTuple"):
        raise InputFileError(path, f"'{name}' is a {keys[name]}, not a TTree or RNTuple")
    try:
        return rfile[name]
    except InputFileError:
        raise
    except Exception as exc:
        raise InputFileError(path, f"tree '{name}': truncated or corrupt ({one_line(exc)})") from None


def _check_branches(tree, path: Path, tree_name: str, names: Sequence[str]) -> None:
    available = set(tree.keys())
    for name in names:
        if name not in available:
            raise InputFileError(path, f"tree '{tree_name}' has no branch '{name}'")


def _is_rntuple(tree) -> bool:
    return "RNTuple" in type(tree).__name__


def _towers_per_entry(tree, path: Path, tree_name: str) -> int | None:
    """Towers per entry of a fixed-size gTowerEt array; None for std::vector/RVec (each entry has its own) and RNTuple."""
    if _is_rntuple(tree):
        return None
    branch = tree[ET_BRANCH]
    try:
        layout = tower_layout(branch)
    except LayoutError as exc:
        raise InputFileError(path, f"tree '{tree_name}' branch '{ET_BRANCH}' {exc}") from None
    if layout is not None:
        return layout.items
    return int(branch.interpretation.inner_shape[0])  # a fixed array of another type: uproot's generic read


def _check_rho_branch(tree, path: Path, tree_name: str) -> None:
    """Refuse a rho branch that is not one number per event (for example ``float[2]``)."""
    if _is_rntuple(tree):
        return  # checked when read
    branch = tree[RHO_BRANCH]
    from_dtype = getattr(branch.interpretation, "from_dtype", None)
    if type(branch.interpretation).__name__ != "AsDtype" or from_dtype is None or from_dtype.shape != () or from_dtype.kind not in "fiu":
        typename = getattr(branch, "typename", "") or str(branch.interpretation)
        raise InputFileError(path, f"tree '{tree_name}' branch '{RHO_BRANCH}' is {typename}; expected one float or double per event")


@dataclass
class Source:
    """One scanned input: its entries and its own tower grid (the stored order may differ per file)."""

    path: Path
    entries: int
    grid: Grid
    rntuple: bool = False
    pad_towers: bool = False  # pad short tower arrays with 0 and truncate long ones (root_numpy's (branch, 0, N))
    remote: "RemoteOptions | None" = None  # timeouts and retries for a URL input (its path is then a str)


def scan_input(path: str | Path, tree: str = TREE, maps_tree: str = MAPS_TREE, eta_max: float = DEFAULT_ETA_MAX, pad_towers: bool = False,
               remote: "RemoteOptions | None" = None) -> Source:
    """Open one input (a path or URL), check its trees and branches, and build its grid; InputFileError on any problem."""
    import numpy as np

    from sbt_batch.remote import as_input

    path = as_input(path)  # a URL stays a str
    rfile = open_root(path, remote)
    remember_root(path, rfile)  # provenance: size and header UUID, no extra read
    try:
        maps = get_tree(rfile, path, maps_tree)
        _check_branches(maps, path, maps_tree, (ETA_BRANCH, PHI_BRANCH))
        if maps.num_entries < 1:
            raise InputFileError(path, f"tree '{maps_tree}' has no entries")
        try:
            m = maps.arrays([ETA_BRANCH, PHI_BRANCH], entry_stop=1, library="np")
            eta, phi = (np.asarray(m[b][0], dtype=np.float32).reshape(-1) for b in (ETA_BRANCH, PHI_BRANCH))
        except InputFileError:
            raise
        except Exception as exc:
            raise InputFileError(path, f"tree '{maps_tree}': cannot read ({one_line(exc)})") from None
        try:
            grid = build_grid(eta, phi, eta_max)
        except GridError as exc:
            raise InputFileError(path, f"tree '{maps_tree}': {exc}") from None
        events = get_tree(rfile, path, tree)
        _check_branches(events, path, tree, (ET_BRANCH, RHO_BRANCH))
        n_towers = _towers_per_entry(events, path, tree)
        _check_rho_branch(events, path, tree)
        if n_towers is not None and n_towers != grid.n_towers and not pad_towers:
            raise InputFileError(
                path, f"tree '{tree}' branch '{ET_BRANCH}' has {n_towers} towers but '{maps_tree}' has {grid.n_towers}"
                " (--pad-towers pads or truncates)"
            )  # fmt: skip
        return Source(path=path, entries=int(events.num_entries), grid=grid, rntuple=_is_rntuple(events), pad_towers=pad_towers,
                      remote=remote if isinstance(path, str) else None)
    finally:
        rfile.close()


Step = tuple["np.ndarray", "np.ndarray", int]  # (towers (n, rows*cols) in grid order, rho (n,), events padded or truncated)


def iter_steps(source: Source, tree: str, step: int, entry_start: int = 0, entry_stop: int | None = None) -> Iterator[Step]:
    """Yield (towers in grid order (n, rows*cols), rho (n,), events padded) steps of ``source``; read errors become InputFileError.

    The towers keep the file's byte order (big-endian from TTree baskets); each block may be a view
    of a reused buffer, valid until the next step is asked for. The file is mapped again for every
    step, so the pages one step touched leave the process's resident memory when it is done. An
    entry whose tower count differs from the maps, or a NaN or infinity in the towers that are kept
    or in rho, is an InputFileError naming the entry (``source.pad_towers``: counts are padded or
    truncated instead, and counted).
    """
    stop = source.entries if entry_stop is None else min(entry_stop, source.entries)
    step = max(1, int(step))
    for lo in range(entry_start, stop, step):
        yield from _read_step(source, tree, step, lo, min(lo + step, stop))


def _read_step(source: Source, tree: str, step: int, start: int, stop: int) -> Iterator[Step]:
    path = source.path
    rfile = open_root(path, source.remote)
    try:
        events = get_tree(rfile, path, tree)
        layout = None if source.rntuple else tower_layout(events[ET_BRANCH])  # scan_input checked it
        if layout is not None:
            steps = _basket_steps(events, layout, source, tree, step, start, stop)
        else:
            steps = _uproot_steps(events, path, tree, source, step, start, stop)
        while True:
            try:
                et, rho, padded = next(steps)
            except StopIteration:
                return
            except InputFileError:
                raise
            except TowerCountError as exc:
                raise InputFileError(path, f"tree '{tree}' branch '{ET_BRANCH}': {exc} (--pad-towers pads or truncates)") from None
            except NonFiniteError as exc:
                raise InputFileError(path, f"tree '{tree}' branch '{ET_BRANCH}': {exc}") from None
            except Exception as exc:  # decompression, deserialization, short reads
                raise InputFileError(path, f"tree '{tree}': truncated or corrupt data ({one_line(exc)})") from None
            yield et, rho, padded
    finally:
        rfile.close()


def _checked_rho(rho: "np.ndarray", path: Path, tree: str, at: int) -> "np.ndarray":
    """``rho`` when it is one finite number per event; InputFileError naming the first bad entry otherwise."""
    if rho.dtype == object or rho.ndim != 1:
        raise InputFileError(path, f"tree '{tree}' branch '{RHO_BRANCH}' is not one number per event (shape {rho.shape[1:]})")
    bad = first_nonfinite(rho)
    if bad is not None:
        raise InputFileError(path, f"tree '{tree}' branch '{RHO_BRANCH}': {NonFiniteError(at + bad)}")
    return rho


def _basket_steps(events, layout: Layout, source: Source, tree: str, step: int, entry_start: int, entry_stop: int | None) -> Iterator[Step]:
    """TTree fast path: towers gathered from the baskets (:mod:`sbt_batch.baskets`), rho read alongside."""
    rho_branch = events[RHO_BRANCH]
    grid = source.grid
    at = entry_start
    blocks = iter_gathered(events[ET_BRANCH], layout, grid.index, step, entry_start, entry_stop, n_towers=grid.n_towers, pad=source.pad_towers)
    for block, padded in blocks:
        rho = rho_branch.array(entry_start=at, entry_stop=at + len(block), library="np")
        yield block, _checked_rho(rho, source.path, tree, at), padded
        at += len(block)


def _uproot_steps(events, path: Path, tree: str, source: Source, step: int, entry_start: int, entry_stop: int | None) -> Iterator[Step]:
    """Any layout uproot reads (RNTuple included): ``iterate`` in steps, then gather the grid's towers."""
    import numpy as np

    at = entry_start
    for arrays in events.iterate([ET_BRANCH, RHO_BRANCH], step_size=step, library="np", entry_start=entry_start, entry_stop=entry_stop):
        et, padded = _tower_rows(arrays[ET_BRANCH], path, tree, source.grid.n_towers, source.pad_towers, at)
        towers = np.take(et, source.grid.index, axis=1)  # 3x faster than et[:, index]
        bad = first_nonfinite(towers)
        if bad is not None:
            raise NonFiniteError(at + bad)
        yield towers, _checked_rho(arrays[RHO_BRANCH], path, tree, at), padded
        at += len(towers)


def _tower_rows(et: "np.ndarray", path: Path, tree: str, n_towers: int, pad: bool, at: int) -> tuple["np.ndarray", int]:
    """uproot's gTowerEt of one step as (n, n_towers) rows and the entries padded or truncated (only with ``pad``)."""
    import numpy as np

    if et.dtype == object:  # variable length (an RNTuple vector, or a layout the basket path does not take)
        lengths = np.fromiter((len(x) for x in et), dtype=np.int64, count=len(et))
        wrong = np.flatnonzero(lengths != n_towers)
        if not len(wrong):
            return (np.stack(et) if len(et) else np.empty((0, n_towers), np.float32)), 0
        if not pad:
            raise TowerCountError(at + int(wrong[0]), int(lengths[wrong[0]]), n_towers)
        rows = np.zeros((len(et), n_towers), dtype=np.result_type(*[np.asarray(x).dtype for x in et[wrong[:1]]]))
        for i, x in enumerate(et):
            rows[i, : min(len(x), n_towers)] = x[:n_towers]
        return rows, len(wrong)
    if et.ndim != 2:
        raise InputFileError(path, f"tree '{tree}' branch '{ET_BRANCH}' is not one value per tower (shape {et.shape[1:]})")
    if et.shape[1] == n_towers:
        return et, 0
    if not pad:
        raise TowerCountError(at, et.shape[1], n_towers)
    rows = np.zeros((len(et), n_towers), dtype=et.dtype)
    k = min(et.shape[1], n_towers)
    rows[:, :k] = et[:, :k]
    return rows, len(et)


def read_entries(path: str | Path, tree: str = TREE) -> int:
    """Events in a converted HDF5 file (its gTowerEt length) or entries of ``tree`` in a ROOT file (local or URL)."""
    from sbt_batch.remote import as_input

    path = as_input(path)
    if isinstance(path, Path) and is_hdf5(path):
        import h5py

        try:
            with h5py.File(path, "r") as h5:
                return int(h5[ET_DATASET].shape[0])
        except (OSError, KeyError) as exc:
            raise InputFileError(path, f"not a converted HDF5 file ({one_line(exc)})") from None
    rfile = open_root(path)
    try:
        return int(get_tree(rfile, path, tree).num_entries)
    finally:
        rfile.close()


# ---------------------------------------------------------------------------------------------
# Interpretation: step sizes and the grid gather
# ---------------------------------------------------------------------------------------------

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


def _entry_bytes(n_towers: int) -> int:
    """Bytes read per entry: its float32 towers and rho."""
    return 4 * n_towers + 4


def step_entries(step_size: str | int, n_towers: int) -> int:
    """Entries per read step for ``step_size``, a multiple of the output chunk (at least one chunk)."""
    value, is_bytes = parse_step_size(step_size)
    entries = value // _entry_bytes(n_towers) if is_bytes else value
    return max(CHUNK_EVENTS, entries // CHUNK_EVENTS * CHUNK_EVENTS)


# ---------------------------------------------------------------------------------------------
# Output: HDF5 datasets, event copies that reuse compressed chunks, provenance
# ---------------------------------------------------------------------------------------------


def create_datasets(h5: "h5py.File", n: int, shape: tuple[int, int], level: int | None = 1) -> None:
    """Create gTowerEt (n, rows, cols), offlineRho and fileIndex (n,), chunked and deflated at ``level``."""
    import numpy as np

    rows, cols = shape
    filters = dict(COMPRESSION, compression_opts=level) if level else {}
    h5.create_dataset(
        ET_DATASET, shape=(n, rows, cols), maxshape=(None, rows, cols), dtype=np.float32,
        chunks=(CHUNK_EVENTS, rows, cols), **filters,
    )  # fmt: skip
    flat = dict(maxshape=(None,), chunks=(FLAT_CHUNK,), **filters)
    h5.create_dataset(RHO_DATASET, shape=(n,), dtype=np.float32, **flat)
    h5.create_dataset(INDEX_DATASET, shape=(n,), dtype=np.int32, **flat)
    h5[ET_DATASET].attrs["units"] = "MeV"
    h5[ET_DATASET].attrs["dims"] = "event, eta row (ascending), phi column (ascending)"
    h5[RHO_DATASET].attrs["source"] = RHO_BRANCH
    h5[INDEX_DATASET].attrs["description"] = "index into the file attribute 'inputs' of each event's source file"


def write_provenance(h5: "h5py.File", attrs: dict[str, Any]) -> None:
    """Store provenance attributes (lists of strings become string arrays, dicts and lists of dicts JSON)."""
    import h5py
    import numpy as np

    for key, value in attrs.items():
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            h5.attrs[key] = np.array(value, dtype=h5py.string_dtype())
        elif isinstance(value, (list, tuple)) and not value:
            h5.attrs[key] = np.array([], dtype=h5py.string_dtype())
        elif isinstance(value, dict) or (isinstance(value, (list, tuple)) and isinstance(value[0], dict)):
            h5.attrs[key] = json.dumps(value)
        else:
            h5.attrs[key] = value


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------------------------------------
# Converting one file in-process (dask workers: sbt_batch.convert_tasks)
# ---------------------------------------------------------------------------------------------


def convert_into(source: Source, tree: str, et_out: EventWriter, rho_ds: "h5py.Dataset", idx_ds: "h5py.Dataset", at: int, file_index: int, step: int, on_step: Callable[[int], None] | None = None) -> tuple[int, int]:
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
    if not skip_bad:
        raise exc
    log.warning("skipping %s", exc)
    skipped.append((exc.path, exc.problem))


def scan_inputs(paths: Sequence[Path | str], tree: str, maps_tree: str, eta_max: float, skip_bad: bool, skipped: list[tuple[str, str]], pad_towers: bool = False,
                remote: "RemoteOptions | None" = None) -> list[Source]:
    """Scan every input (paths or URLs) in order; the first good one defines the grid that the others must share."""
    sources: list[Source] = []
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


def check_output(output: Path) -> None:
    """Raise a UserError unless ``output`` can be written (its directory exists and is writable)."""
    if output.is_dir():
        raise UserError(f"{output}: output is a directory")
    check_writable_dir(output.parent, "output")
    if output.exists() and not os.access(output, os.W_OK):
        raise UserError(f"{output}: output exists and is not writable")


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
    retried ``read_retries`` times with backoff on transient errors (:mod:`sbt_batch.remote`).
    """
    from sbt_batch.inputs import expand_inputs

    t0 = time.perf_counter()
    output = Path(output)
    if eta_max <= 0:
        raise UserError(f"--eta-max: must be positive, got {eta_max}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers: must be at least 1, got {workers}")
    parse_step_size(step_size)
    from sbt_batch.parallel import check_cluster_options, default_workers

    check_cluster_options(scheduler, cluster, jobs)
    remote = remote_options(read_timeout, read_retries)
    from sbt_batch.remote import bytes_read

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
        small = total * _entry_bytes(grid.n_towers) < LOCAL_CLUSTER_MIN_BYTES
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
                "created": _utc_now(),
                "skipped": [{"path": p, "reason": r} for p, r in skipped],
                "n_skipped": len(skipped),
                "pad_towers": bool(pad_towers),
                "padded": [int(n) for n in padded],
                "n_padded": int(sum(padded)),
            })  # fmt: skip
            stamp_convert(h5, output, [p for p, _ in files])
    return ConvertResult(output, events, files, skipped, grid.shape, float(eta_max), time.perf_counter() - t0, n_workers, raw,
                         int(sum(padded)), pad_towers, bytes_read() - bytes0 + dask_bytes[0])  # fmt: skip


def remote_options(read_timeout: float | None = None, read_retries: int | None = None) -> "RemoteOptions":
    """RemoteOptions from ``--read-timeout`` and ``--read-retries`` (None: the defaults), checked."""
    from sbt_batch.remote import DEFAULT_RETRIES, DEFAULT_TIMEOUT, RemoteOptions

    timeout = DEFAULT_TIMEOUT if read_timeout is None else float(read_timeout)
    return RemoteOptions(timeout=timeout, retries=DEFAULT_RETRIES if read_retries is None else int(read_retries)).check()


def _progress(show: bool, n_files: int):
    """A progress bar over ``n_files`` inputs with a rate field (hidden unless ``show``)."""
    from sbt_batch.console import progress

    bar = progress(transient=False)
    if not show:
        bar.disable = True
    task = bar.add_task("converting", total=n_files, rate="")
    return bar, task


def _rate_text(events: int, t0: float, nbytes: int | None = None) -> str:
    """``events/s`` since ``t0``, and the input MB/s when ``nbytes`` (bytes read, compressed) is given."""
    dt = time.perf_counter() - t0
    if dt <= 0:
        return ""
    text = f"{events / dt:,.0f} events/s"
    return text if nbytes is None else f"{text}, {nbytes / dt / 1e6:,.1f} MB/s"


def _convert_serial(sources: list[Source], h5, tree: str, step: int, skip_bad: bool, skipped: list, show: bool, padded: list[int]) -> list[tuple[str, int]]:
    files: list[tuple[str, int]] = []
    at = 0
    t0 = time.perf_counter()
    bar, task = _progress(show, len(sources))
    counter = [0]
    writer = EventWriter(h5[ET_DATASET])
    from sbt_batch.remote import bytes_read

    bytes0 = bytes_read()

    def on_step(n: int) -> None:
        counter[0] += n
        bar.update(task, rate=_rate_text(counter[0], t0, bytes_read() - bytes0))

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


def _convert_dask(sources, output, tree, step, skip_bad, skipped, workers, scheduler, cluster, jobs, profile, show, level, padded, nbytes=None):
    from sbt_batch.convert_tasks import convert_distributed
    from sbt_batch.parallel import dask_client

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


# ---------------------------------------------------------------------------------------------
# Merging converted outputs (the batch layer's collect)
# ---------------------------------------------------------------------------------------------


@dataclass
class MergeResult:
    """What :func:`merge_outputs` wrote."""

    output: Path
    events: int
    parts: list[tuple[str, int]]
    inputs: list[str]
    raw_chunks: int


def _load_attr_list(h5, key: str) -> list:
    value = h5.attrs.get(key)
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        return json.loads(text) if text.startswith("[") else [text]
    return [v.decode() if isinstance(v, bytes) else (v.item() if hasattr(v, "item") else v) for v in value]


def merge_outputs(parts: Sequence[str | Path], out: str | Path, expected_events: int | None = None) -> MergeResult:
    """Merge converted HDF5 files in the given order into ``out`` (atomically), checking event counts."""
    import h5py
    import numpy as np

    parts = [Path(p) for p in parts]
    if not parts:
        raise UserError("merge: no parts to merge")
    out = Path(out)
    check_output(out)
    infos = []
    for part in parts:
        if not is_hdf5(part):
            raise InputFileError(part, "missing or not an HDF5 file" if part.exists() else "no such file")
        try:
            with h5py.File(part, "r") as h5:
                missing = [d for d in (ET_DATASET, RHO_DATASET) if d not in h5]
                if missing:
                    raise InputFileError(part, f"no dataset '{missing[0]}'")
                n = h5[ET_DATASET].shape[0]
                entries = [int(e) for e in _load_attr_list(h5, "entries")]
                if h5[RHO_DATASET].shape[0] != n:
                    raise InputFileError(part, f"{ET_DATASET} has {n} events but {RHO_DATASET} has {h5[RHO_DATASET].shape[0]}")
                if "entries" in h5.attrs and sum(entries) != n:
                    raise InputFileError(part, f"has {n} events but its inputs had {sum(entries)} entries")
                infos.append({
                    "n": n, "shape": h5[ET_DATASET].shape[1:], "entries": entries,
                    "inputs": _load_attr_list(h5, "inputs"), "skipped": _load_attr_list(h5, "skipped"),
                    "padded": [int(p) for p in _load_attr_list(h5, "padded")], "pad_towers": bool(h5.attrs.get("pad_towers", False)),
                    "eta": np.asarray(h5.attrs.get("eta_centers", [])), "phi": np.asarray(h5.attrs.get("phi_centers", [])),
                    "eta_max": h5.attrs.get("eta_max"), "has_index": INDEX_DATASET in h5,
                })  # fmt: skip
        except OSError as exc:
            raise InputFileError(part, f"cannot read HDF5 ({one_line(exc)})") from None
    check_part_versions(parts)  # one tool version unless collect --allow-mixed
    first = infos[0]
    for part, info in zip(parts, infos):
        if info["shape"] != first["shape"] or not (np.array_equal(info["eta"], first["eta"]) and np.array_equal(info["phi"], first["phi"])):
            raise InputFileError(part, f"grid {info['shape']} differs from {parts[0]} {first['shape']}")
    total = sum(i["n"] for i in infos)
    if expected_events is not None and total != expected_events:
        raise UserError(f"{out}: the parts hold {total} events but {expected_events} were expected")
    raw = 0
    inputs: list[str] = []
    entries: list[int] = []
    skipped: list = []
    padded: list[int] = []
    with atomic_path(out, suffix=".h5") as tmp:
        with h5py.File(tmp, "w", rdcc_nbytes=8 * 1024**2) as h5:
            create_datasets(h5, total, tuple(first["shape"]))
            at = 0
            for part, info in zip(parts, infos):
                n = info["n"]
                with h5py.File(part, "r") as ph:
                    raw += copy_events(ph[ET_DATASET], 0, n, h5[ET_DATASET], at, writer=EventWriter(h5[ET_DATASET]))
                    copy_events(ph[RHO_DATASET], 0, n, h5[RHO_DATASET], at)
                    if info["has_index"]:
                        for lo in range(0, n, FLAT_CHUNK * 16):
                            hi = min(n, lo + FLAT_CHUNK * 16)
                            h5[INDEX_DATASET][at + lo : at + hi] = ph[INDEX_DATASET][lo:hi] + len(inputs)
                    else:
                        h5[INDEX_DATASET][at : at + n] = len(inputs)
                part_inputs = info["inputs"] or [str(part)]
                inputs += part_inputs
                entries += info["entries"] or [n]
                skipped += info["skipped"]
                padded += info["padded"] or [0] * len(info["entries"] or [n])
                at += n
            write_provenance(h5, {
                "inputs": inputs, "entries": entries,
                "eta_max": float(first["eta_max"]) if first["eta_max"] is not None else float("nan"),
                "eta_centers": first["eta"], "phi_centers": first["phi"],
                "tool": "sbt-batch merge", "tool_version": __version__, "created": _utc_now(),
                "merged_from": [str(p) for p in parts], "skipped": skipped, "n_skipped": len(skipped),
                "pad_towers": any(i["pad_towers"] for i in infos), "padded": padded, "n_padded": int(sum(padded)),
            })  # fmt: skip
            stamp_merge(h5, out, parts)
    return MergeResult(out, total, [(str(p), i["n"]) for p, i in zip(parts, infos)], inputs, raw)
