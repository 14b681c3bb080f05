"""The source layer of convert: open ROOT files (local or remote), check trees and branches, read steps of entries.

Every reading failure becomes an InputFileError naming the file, tree and branch; TTree baskets take
the fast path of :mod:`sbt_batch.convert.baskets`, anything else uproot's own reader.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbt_batch.common.errors import InputFileError, UserError, one_line
from sbt_batch.common.fileio import is_hdf5
from sbt_batch.common.provenance import remember_root
from sbt_batch.convert.baskets import Layout, LayoutError, NonFiniteError, TowerCountError, first_nonfinite, iter_gathered, tower_layout
from sbt_batch.convert.geometry import DEFAULT_ETA_MAX, Grid, GridError, build_grid
from sbt_batch.convert.names import ET_BRANCH, ET_DATASET, ETA_BRANCH, MAPS_TREE, PHI_BRANCH, RHO_BRANCH, TREE

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from sbt_batch.convert.remote import RemoteOptions


@functools.cache
def use_fast_inflate() -> bool:
    """Let uproot inflate zlib baskets with ISA-L when installed (uproot's own ``library="isal"`` option); once per process."""
    from sbt_batch.common.optional import available

    if not available("isal"):
        return False
    import uproot.compression as uc

    if getattr(uc, "_decompress_ZLIB", None) is not None and hasattr(uc._decompress_ZLIB, "library"):
        uc._decompress_ZLIB.library = "isal"
        return True
    return False


def open_root(path: str | Path, remote: RemoteOptions | None = None) -> Any:
    """Open a local file or a root:// or http(s):// URL with uproot; InputFileError for missing, unreachable, non-ROOT, truncated or corrupt files.

    Local files are memory-mapped; URLs are read through :mod:`sbt_batch.convert.remote` (timeouts, retries
    with backoff, readahead, ``remote`` options). Both count the bytes they read, for MB/s.
    """
    import uproot

    from sbt_batch.common.urls import is_url
    from sbt_batch.convert.remote import local_source

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


def _open_remote(url: str, remote: RemoteOptions | None) -> Any:
    """open_root for a URL: transient errors retried, then one InputFileError (a RemoteError) naming the URL."""
    from sbt_batch.convert.remote import open_url

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


def get_tree(rfile: Any, path: str | Path, name: str) -> Any:
    """The TTree or RNTuple ``name`` in ``rfile``, or InputFileError naming file and tree."""
    try:
        classes = rfile.classnames()
    except InputFileError:  # a remote read that failed (sbt_batch.convert.remote.RemoteError)
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


def _check_branches(tree: Any, path: str | Path, tree_name: str, names: Sequence[str]) -> None:
    """InputFileError naming the first of ``names`` that ``tree`` lacks."""
    available = set(tree.keys())
    for name in names:
        if name not in available:
            raise InputFileError(path, f"tree '{tree_name}' has no branch '{name}'")


def _is_rntuple(tree: Any) -> bool:
    """True for an uproot RNTuple (rather than a TTree)."""
    return "RNTuple" in type(tree).__name__


def _towers_per_entry(tree: Any, path: str | Path, tree_name: str) -> int | None:
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


def _check_rho_branch(tree: Any, path: str | Path, tree_name: str) -> None:
    """Refuse a rho branch that is not one number per event (for example ``float[2]``)."""
    if _is_rntuple(tree):
        return  # checked when read
    branch = tree[RHO_BRANCH]
    from_dtype = getattr(branch.interpretation, "from_dtype", None)
    if type(branch.interpretation).__name__ != "AsDtype" or from_dtype is None or from_dtype.shape != () or from_dtype.kind not in "fiu":
        typename = getattr(branch, "typename", "") or str(branch.interpretation)
        raise InputFileError(path, f"tree '{tree_name}' branch '{RHO_BRANCH}' is {typename}; expected one float or double per event")


@dataclass
class NtupleInput:
    """One scanned input: its entries and its own tower grid (the stored order may differ per file)."""

    path: Path | str  # a local file, or a root:// or http(s):// URL
    entries: int
    grid: Grid
    rntuple: bool = False
    pad_towers: bool = False  # pad short tower arrays with 0 and truncate long ones (root_numpy's (branch, 0, N))
    remote: RemoteOptions | None = None  # timeouts and retries for a URL input (its path is then a str)


def scan_input(path: str | Path, tree: str = TREE, maps_tree: str = MAPS_TREE, eta_max: float = DEFAULT_ETA_MAX, pad_towers: bool = False,
               remote: RemoteOptions | None = None) -> NtupleInput:
    """Open one input (a path or URL), check its trees and branches, and build its grid; InputFileError on any problem."""
    import numpy as np

    from sbt_batch.common.urls import as_input

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
        return NtupleInput(path=path, entries=int(events.num_entries), grid=grid, rntuple=_is_rntuple(events), pad_towers=pad_towers,
                      remote=remote if isinstance(path, str) else None)
    finally:
        rfile.close()


Step = tuple["np.ndarray", "np.ndarray", int]  # (towers (n, rows*cols) in grid order, rho (n,), events padded or truncated)


def iter_steps(source: NtupleInput, tree: str, step: int, entry_start: int = 0, entry_stop: int | None = None) -> Iterator[Step]:
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


def _read_step(source: NtupleInput, tree: str, step: int, start: int, stop: int) -> Iterator[Step]:
    """The steps of entries [start, stop) of ``source`` from one opening of the file; read errors become InputFileError."""
    path = source.path
    rfile = open_root(path, source.remote)
    try:
        events = get_tree(rfile, path, tree)
        layout = None if source.rntuple else tower_layout(events[ET_BRANCH])  # scan_input checked it
        steps: Iterator[Step]
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


def _checked_rho(rho: np.ndarray, path: str | Path, tree: str, at: int) -> np.ndarray:
    """``rho`` when it is one finite number per event; InputFileError naming the first bad entry otherwise."""
    if rho.dtype == object or rho.ndim != 1:
        raise InputFileError(path, f"tree '{tree}' branch '{RHO_BRANCH}' is not one number per event (shape {rho.shape[1:]})")
    bad = first_nonfinite(rho)
    if bad is not None:
        raise InputFileError(path, f"tree '{tree}' branch '{RHO_BRANCH}': {NonFiniteError(at + bad)}")
    return rho


def _basket_steps(events: Any, layout: Layout, source: NtupleInput, tree: str, step: int, entry_start: int, entry_stop: int | None) -> Iterator[Step]:
    """TTree fast path: towers gathered from the baskets (:mod:`sbt_batch.convert.baskets`), rho read alongside."""
    rho_branch = events[RHO_BRANCH]
    grid = source.grid
    at = entry_start
    blocks = iter_gathered(events[ET_BRANCH], layout, grid.index, step, entry_start, entry_stop, n_towers=grid.n_towers, pad=source.pad_towers)
    for block, padded in blocks:
        rho = rho_branch.array(entry_start=at, entry_stop=at + len(block), library="np")
        yield block, _checked_rho(rho, source.path, tree, at), padded
        at += len(block)


def _uproot_steps(events: Any, path: str | Path, tree: str, source: NtupleInput, step: int, entry_start: int, entry_stop: int | None) -> Iterator[Step]:
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


def _tower_rows(et: np.ndarray, path: str | Path, tree: str, n_towers: int, pad: bool, at: int) -> tuple[np.ndarray, int]:
    """uproot's gTowerEt of one step as (n, n_towers) rows and the entries padded or truncated (only with ``pad``)."""
    import numpy as np

    if et.dtype == object:  # variable length (an RNTuple vector, or a layout the basket path does not take)
        lengths = np.fromiter((len(x) for x in et), dtype=np.int64, count=len(et))
        wrong = np.flatnonzero(lengths != n_towers)
        if not len(wrong):
            return (np.stack(list(et)) if len(et) else np.empty((0, n_towers), np.float32)), 0
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
    from sbt_batch.common.urls import as_input

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

