"""The gTower grid: which stored towers form the (eta, phi) image, and in which order.

The maps tree of a gFEX ntuple stores one entry with the centre of every tower
(``gTowerEta``, ``gTowerPhi``). The stored order is whatever the ntuple maker used,
so the grid is rebuilt from the coordinates alone: keep |eta| <= eta_max, sort by
(eta, phi), and infer rows x columns from the distinct values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

DEFAULT_ETA_MAX = 2.4


class GridError(ValueError):
    """The towers kept by the eta cut do not form a full rectangular (eta, phi) grid."""


@dataclass(frozen=True)
class Grid:
    """A tower grid: ``index[r * cols + c]`` is the stored position of the tower at row r, column c."""

    index: np.ndarray  # (rows * cols,) int64 positions into the stored tower array
    eta: np.ndarray  # (rows,) float32 eta centres, ascending
    phi: np.ndarray  # (cols,) float32 phi centres, ascending
    n_towers: int  # length of the stored tower arrays
    eta_max: float

    @property
    def rows(self) -> int:
        """Number of eta rows."""
        return len(self.eta)

    @property
    def cols(self) -> int:
        """Number of phi columns."""
        return len(self.phi)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return (self.rows, self.cols)

    def same_grid(self, other: Grid) -> bool:
        """True when ``other`` has the same rows, columns and centres (the stored order may differ)."""
        import numpy as np

        return (
            self.shape == other.shape
            and bool(np.array_equal(self.eta, other.eta))
            and bool(np.array_equal(self.phi, other.phi))
        )


def build_grid(eta: np.ndarray, phi: np.ndarray, eta_max: float = DEFAULT_ETA_MAX) -> Grid:
    """Build the (eta, phi) grid of the towers with |eta| <= eta_max from the tower centres."""
    import numpy as np

    eta = np.asarray(eta).reshape(-1)
    phi = np.asarray(phi).reshape(-1)
    if eta.shape != phi.shape:
        raise GridError(f"gTowerEta has {eta.size} towers but gTowerPhi has {phi.size}")
    if eta.size == 0:
        raise GridError("the maps have no towers")
    if not (np.all(np.isfinite(eta)) and np.all(np.isfinite(phi))):
        raise GridError("the maps contain non-finite tower coordinates")
    keep = np.flatnonzero(np.abs(eta) <= eta_max)
    if keep.size == 0:
        raise GridError(f"no tower has |eta| <= {eta_max:g}")
    k_eta, k_phi = eta[keep], phi[keep]
    order = np.lexsort((k_phi, k_eta))  # primary key eta, then phi
    index = keep[order]
    etas = np.unique(k_eta)
    phis = np.unique(k_phi)
    rows, cols = len(etas), len(phis)
    if rows * cols != keep.size:
        counts = np.unique(k_eta, return_counts=True)[1]
        raise GridError(
            f"the {keep.size} towers with |eta| <= {eta_max:g} do not form a full grid: "
            f"{rows} distinct eta x {cols} distinct phi values, but rows hold "
            f"{counts.min()}..{counts.max()} towers (choose another --eta-max)"
        )
    grid_eta = eta[index].reshape(rows, cols)
    grid_phi = phi[index].reshape(rows, cols)
    if not (np.all(grid_eta == etas[:, None]) and np.all(grid_phi == phis[None, :])):
        raise GridError(f"the towers with |eta| <= {eta_max:g} repeat (eta, phi) positions")
    return Grid(
        index=index.astype(np.int64),
        eta=etas.astype(np.float32),
        phi=phis.astype(np.float32),
        n_towers=int(eta.size),
        eta_max=float(eta_max),
    )
