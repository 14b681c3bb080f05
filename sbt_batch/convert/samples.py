"""Sample gFEX ntuples, generated or embedding the images of a converted HDF5 file.

Layout: TTree ``mytree`` with ``gTowerEt`` (MeV) and ``Kt4EMTopoEventShape_Density`` ``float``; TTree
``maps`` with one entry of ``gTowerEta`` and ``gTowerPhi``. The tower branches are ``float[1184]``, or
with ``layout="jagged"`` variable-length arrays (what uproot writes for jagged data; convert reads them
as it reads the ``std::vector<float>`` of the real ntuples, which only ROOT itself writes: see
tests/root_fixtures.py). The 1184 towers are 32 rows of 32 phi towers for |eta| < 3.2
(0.2 wide, 0.1 at |eta| = 2.45, 0.3 at |eta| = 3.05) and 5 rows of 16 phi towers per FCAL side.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbt_batch.common.errors import InputFileError, UserError
from sbt_batch.common.fileio import atomic_path, check_writable_dir, remove_if_left_empty
from sbt_batch.convert.names import ET_BRANCH, ET_DATASET, ETA_BRANCH, MAPS_TREE, PHI_BRANCH, RHO_BRANCH, RHO_DATASET, TREE

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

N_TOWERS = 1184
KINDS = ("signal", "background")
COMPRESSIONS = ("zlib", "lz4", "zstd", "lzma", "none")
# fixed: float[1184] leaves; jagged: variable-length arrays (uproot writes them as counted float[n], read
# by convert like ROOT's std::vector<float>, which only ROOT itself writes: see tests/root_fixtures.py)
LAYOUTS = ("fixed", "jagged")
OnFile = Callable[[Path, int], None]  # called with each file written and its event count

# (eta centre, eta width) of the 32-phi rows on the positive side; the negative side mirrors them.
_ROWS32 = [(0.1 + 0.2 * i, 0.2) for i in range(12)] + [(2.45, 0.1), (2.6, 0.2), (2.8, 0.2), (3.05, 0.3)]
_ROWS16 = [(3.2 + 0.34 * (i + 0.5), 0.34) for i in range(5)]  # FCAL
# --eta-max that keeps exactly this many 32-phi rows (a full grid); used by --from-hdf5.
ETA_MAX_FOR_ROWS = {24: 2.4, 26: 2.5, 28: 2.7, 30: 2.9, 32: 3.1}


def tower_map() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tower (eta, phi, area relative to a 0.2x0.2 tower) in the stored order (region by region, phi-major)."""
    import numpy as np

    blocks = []
    # central |eta| < 2.5 first, then the 32-phi forward rows, then FCAL: not the (eta, phi) order.
    central = [r for r in _ROWS32 if r[0] < 2.5]
    forward = [r for r in _ROWS32 if r[0] > 2.5]
    for rows, nphi in ((central, 32), (forward, 32), (_ROWS16, 16)):
        signed = [(-c, w) for c, w in reversed(rows)] + list(rows)
        centres = np.array([c for c, _ in signed])
        widths = np.array([w for _, w in signed])
        phis = -math.pi + (np.arange(nphi) + 0.5) * (2 * math.pi / nphi)
        # phi-major: for each phi, every eta row
        blocks.append(
            (
                np.tile(centres, nphi),
                np.repeat(phis, len(centres)),
                np.tile(widths, nphi) / 0.2 * (32 / nphi),
            )
        )
    eta = np.concatenate([b[0] for b in blocks]).astype(np.float32)
    phi = np.concatenate([b[1] for b in blocks]).astype(np.float32)
    area = np.concatenate([b[2] for b in blocks]).astype(np.float32)
    assert eta.size == N_TOWERS
    return eta, phi, area


def _deposit_jets(et: np.ndarray, eta: np.ndarray, phi: np.ndarray, jet_et: np.ndarray, jet_eta: np.ndarray, jet_phi: np.ndarray) -> None:
    """Add jets (arrays of shape (n_events,)) to ``et`` as Gaussian showers of width 0.15 in eta and phi."""
    import numpy as np

    deta = eta[None, :] - jet_eta[:, None]
    dphi = np.angle(np.exp(1j * (phi[None, :] - jet_phi[:, None])))
    w = np.exp(-(deta**2 + dphi**2) / (2 * 0.15**2))
    w[deta**2 + dphi**2 > 0.5**2] = 0.0
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    et += (w * jet_et[:, None]).astype(np.float32)


def generate_events(kind: str, n: int, rng: np.random.Generator, rho: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tower ET (n, 1184) float32 MeV and offline rho (n,) for ``kind``; signal has two central b-jets."""
    import numpy as np

    if kind not in KINDS:
        raise UserError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    eta, phi, area = tower_map()
    if rho is None:
        mean, std = (15000.0, 4400.0) if kind == "signal" else (13500.0, 3700.0)
        shape = (mean / std) ** 2
        rho = rng.gamma(shape, mean / shape, size=n).astype(np.float32)
    scale = (np.asarray(rho, dtype=np.float32) / 13500.0)[:, None]
    mu = 1100.0 * area * (1.0 - 0.05 * np.abs(eta))  # pile-up ET per tower, MeV
    et = (rng.standard_exponential((n, N_TOWERS), dtype=np.float32) * (mu[None, :] * scale)).astype(np.float32)
    et -= np.float32(250.0) * area[None, :]  # pedestal subtraction leaves negative towers
    et += rng.normal(0.0, 400.0, size=(n, N_TOWERS)).astype(np.float32)
    # soft jets everywhere (both kinds)
    for _ in range(2):
        has = rng.random(n) < 0.35
        jet_et = np.where(has, rng.uniform(8e3, 30e3, n), 0.0)
        _deposit_jets(et, eta, phi, jet_et, rng.uniform(-4.0, 4.0, n), rng.uniform(-math.pi, math.pi, n))
    if kind == "signal":  # H->bb: two hard, central b-jets
        for _ in range(2):
            jet_et = 30e3 + rng.exponential(60e3, n)
            jet_eta = np.clip(rng.normal(0.0, 1.0, n), -2.3, 2.3)
            _deposit_jets(et, eta, phi, jet_et, jet_eta, rng.uniform(-math.pi, math.pi, n))
    return et.astype(np.float32, copy=False), np.asarray(rho, dtype=np.float32)


def parse_compression(spec: str) -> Any:
    """``zlib``, ``lz4``, ``zstd``, ``lzma`` or ``none``, optionally ``:LEVEL``, as an uproot compression object."""
    import uproot

    name, _, level = spec.lower().partition(":")
    if name not in COMPRESSIONS:
        raise UserError(f"--compression: expected one of {', '.join(COMPRESSIONS)}[:LEVEL], got {spec!r}")
    if name == "none":
        return None
    try:
        lvl = int(level) if level else 1
    except ValueError:
        raise UserError(f"--compression: level must be an integer, got {level!r}") from None
    if not 1 <= lvl <= 9:
        raise UserError(f"--compression: level must be 1..9, got {lvl}")
    return {"zlib": uproot.ZLIB, "lz4": uproot.LZ4, "zstd": uproot.ZSTD, "lzma": uproot.LZMA}[name](lvl)


def write_ntuple(
    path: str | Path,
    et: np.ndarray,
    rho: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    *,
    compression: str = "zlib:1",
    rntuple: bool = False,
    basket_events: int = 1000,
    tree: str = TREE,
    maps_tree: str = MAPS_TREE,
    layout: str = "fixed",
) -> Path:
    """Write one ntuple atomically (TTree with one basket per ``basket_events`` events, or RNTuple; ``layout`` in LAYOUTS)."""
    import numpy as np
    import uproot

    path = Path(path)
    comp = parse_compression(compression)
    check_layout(layout)
    n_towers = eta.size
    et = np.ascontiguousarray(et, dtype=np.float32).reshape(-1, n_towers)
    rho = np.ascontiguousarray(rho, dtype=np.float32).reshape(-1)
    column = _jagged if layout == "jagged" else (lambda a: a)
    maps = {ETA_BRANCH: column(eta.astype(np.float32)[None, :]), PHI_BRANCH: column(phi.astype(np.float32)[None, :])}
    towers: Any = "var * float32" if layout == "jagged" else (np.float32, (n_towers,))
    with atomic_path(path, suffix=".root") as tmp:
        with uproot.recreate(tmp, compression=comp) as out:
            if rntuple:
                out[tree] = {ET_BRANCH: column(et), RHO_BRANCH: rho}
                out[maps_tree] = maps
            else:
                out.mktree(tree, {ET_BRANCH: towers, RHO_BRANCH: np.float32})
                step = max(1, int(basket_events))
                for start in range(0, len(et), step):  # each extend writes one basket per branch
                    out[tree].extend({ET_BRANCH: column(et[start : start + step]), RHO_BRANCH: rho[start : start + step]})
                out.mktree(maps_tree, {ETA_BRANCH: towers, PHI_BRANCH: towers})
                out[maps_tree].extend(maps)
    return path


def check_layout(layout: str) -> None:
    """UserError unless ``layout`` is one of LAYOUTS."""
    if layout not in LAYOUTS:
        raise UserError(f"--layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")


def _jagged(rows: np.ndarray) -> Any:
    """(n, N) rows as an awkward array of n variable-length lists (each of N floats)."""
    import awkward as ak
    import numpy as np

    return ak.unflatten(rows.reshape(-1), np.full(len(rows), rows.shape[1], dtype=np.int64))


def _stored_map(rng: np.random.Generator, shuffle_towers: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tower map and the permutation applied to the stored order (identity unless shuffled)."""
    import numpy as np

    eta, phi, _ = tower_map()
    perm = rng.permutation(N_TOWERS) if shuffle_towers else np.arange(N_TOWERS)
    return eta[perm], phi[perm], perm


def make_sample_ntuples(
    out_dir: str | Path,
    kind: str,
    files: int,
    events: int,
    *,
    seed: int = 0,
    compression: str = "zlib:1",
    rntuple: bool = False,
    shuffle_towers: bool = False,
    basket_events: int = 1000,
    on_file: OnFile | None = None,
    layout: str = "fixed",
) -> list[Path]:
    """Generate ``files`` ntuples of ``events`` events of ``kind`` in ``out_dir``; return their paths."""
    import numpy as np

    if kind not in KINDS:
        raise UserError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if files < 1:
        raise UserError(f"--files: must be at least 1, got {files}")
    if events < 0:
        raise UserError(f"--events: must not be negative, got {events}")
    parse_compression(compression)
    check_layout(layout)
    out_dir = _prepare_dir(out_dir)
    paths = []
    for i in range(files):
        rng = np.random.default_rng([seed, KINDS.index(kind), i])
        eta, phi, perm = _stored_map(rng, shuffle_towers)
        et, rho = generate_events(kind, events, rng)
        path = out_dir / f"{kind}_{i:03d}.root"
        write_ntuple(path, et[:, perm], rho, eta, phi, compression=compression, rntuple=rntuple, basket_events=basket_events, layout=layout)
        paths.append(path)
        if on_file:
            on_file(path, events)
    return paths


def _prepare_dir(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    if not out_dir.exists():
        remove_if_left_empty(out_dir)  # a failure before the first file leaves no empty folder
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot create output directory ({exc.strerror})") from None
    check_writable_dir(out_dir)
    return out_dir


def read_hdf5_images(h5_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """gTowerEt (N, rows, cols) and offlineRho (N,) of a converted file, with one-line errors."""
    import h5py
    import numpy as np

    h5_path = Path(h5_path)
    if not h5_path.is_file():
        raise InputFileError(h5_path, "no such file")
    try:
        with h5py.File(h5_path, "r") as h5:
            for name in (ET_DATASET, RHO_DATASET):
                if name not in h5:
                    raise InputFileError(h5_path, f"no dataset '{name}'")
            images = h5[ET_DATASET][()]
            rho = h5[RHO_DATASET][()]
    except OSError as exc:
        raise InputFileError(h5_path, f"not a readable HDF5 file ({exc})") from None
    if images.ndim != 3 or rho.shape != images.shape[:1]:
        raise InputFileError(h5_path, f"{ET_DATASET} {images.shape} and {RHO_DATASET} {rho.shape} do not match")
    return np.asarray(images, dtype=np.float32), np.asarray(rho, dtype=np.float32)


def embed_images(images: np.ndarray, rho: np.ndarray, rng: np.random.Generator, shuffle_towers: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full 1184-tower events (n, 1184) holding ``images`` (n, rows, 32) at the towers that ``ETA_MAX_FOR_ROWS[rows]`` keeps; and the stored (eta, phi).

    The other towers get generated forward activity; converting with that ``--eta-max`` gives back ``images``.
    """
    from sbt_batch.convert.geometry import build_grid

    n, rows, cols = images.shape
    eta, phi, _ = _stored_map(rng, shuffle_towers)
    grid = build_grid(eta, phi, ETA_MAX_FOR_ROWS[rows])
    full, _ = generate_events("background", n, rng, rho=rho)  # plausible forward towers
    full[:, grid.index] = images.reshape(n, rows * cols)
    return full, eta, phi


def embed_hdf5(
    h5_path: str | Path,
    out_dir: str | Path,
    *,
    files: int = 1,
    events: int | None = None,
    seed: int = 0,
    compression: str = "zlib:1",
    rntuple: bool = False,
    shuffle_towers: bool = False,
    basket_events: int = 1000,
    on_file: OnFile | None = None,
    layout: str = "fixed",
) -> list[Path]:
    """Embed the images of a converted HDF5 file into full 1184-tower ntuples (forward towers generated).

    Converting the result with ``--eta-max ETA_MAX_FOR_ROWS[rows]`` gives back exactly the same arrays.
    The events are split over ``files`` consecutive files; ``events`` caps the total.
    """
    import numpy as np

    h5_path = Path(h5_path)
    images, rho = read_hdf5_images(h5_path)
    n, rows, cols = images.shape
    if cols != 32 or rows not in ETA_MAX_FOR_ROWS:
        raise InputFileError(
            h5_path, f"gTowerEt images are {rows}x{cols}; expected 32 columns and {sorted(ETA_MAX_FOR_ROWS)} rows"
        )
    if files < 1:
        raise UserError(f"--files: must be at least 1, got {files}")
    if events is not None:
        n = min(n, max(0, events))
    parse_compression(compression)
    check_layout(layout)
    out_dir = _prepare_dir(out_dir)
    bounds = np.linspace(0, n, files + 1).astype(int)
    paths = []
    for i in range(files):
        lo, hi = bounds[i], bounds[i + 1]
        rng = np.random.default_rng([seed, 2, i])
        full, eta, phi = embed_images(images[lo:hi], rho[lo:hi], rng, shuffle_towers)
        name = f"{h5_path.stem}.root" if files == 1 else f"{h5_path.stem}_{i:03d}.root"
        path = write_ntuple(
            out_dir / name, full, rho[lo:hi], eta, phi,
            compression=compression, rntuple=rntuple, basket_events=basket_events, layout=layout,
        )  # fmt: skip
        paths.append(path)
        if on_file:
            on_file(path, hi - lo)
    return paths
