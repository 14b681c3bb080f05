"""The tower grid comes from the maps' coordinates alone, never from the stored order."""

from __future__ import annotations

import numpy as np
import pytest

from sbt_batch.convert.geometry import GridError, build_grid
from sbt_batch.convert.samples import ETA_MAX_FOR_ROWS, N_TOWERS, tower_map


@pytest.mark.parametrize("rows, eta_max", sorted(ETA_MAX_FOR_ROWS.items()))
def test_rows_for_eta_max(rows: int, eta_max: float):
    eta, phi, _ = tower_map()
    grid = build_grid(eta, phi, eta_max)
    assert grid.shape == (rows, 32)
    assert np.all(np.diff(grid.eta) > 0) and np.all(np.diff(grid.phi) > 0)
    assert np.all(np.abs(grid.eta) <= eta_max)
    # the gathered coordinates are the grid, row by row
    np.testing.assert_array_equal(eta[grid.index].reshape(grid.shape), np.repeat(grid.eta[:, None], 32, axis=1))
    np.testing.assert_array_equal(phi[grid.index].reshape(grid.shape), np.repeat(grid.phi[None, :], rows, axis=0))


def test_default_is_24_rows_like_the_original_tool():
    eta, phi, _ = tower_map()
    assert eta.size == N_TOWERS
    assert build_grid(eta, phi).shape == (24, 32)


def test_stored_order_does_not_matter():
    eta, phi, _ = tower_map()
    perm = np.random.default_rng(3).permutation(eta.size)
    values = np.arange(eta.size, dtype=np.float32)  # a tower's value is its original position
    a = build_grid(eta, phi, 2.7)
    b = build_grid(eta[perm], phi[perm], 2.7)
    assert a.same_grid(b)
    np.testing.assert_array_equal(values[a.index], values[perm][b.index])


def test_not_a_full_grid_is_explained():
    eta, phi, _ = tower_map()
    with pytest.raises(GridError, match="do not form a full grid.*16..32 towers"):
        build_grid(eta, phi, 4.0)  # FCAL rows have 16 phi towers
    with pytest.raises(GridError, match="full grid"):
        keep = np.arange(eta.size) != np.flatnonzero(np.abs(eta) < 1)[5]
        build_grid(eta[keep], phi[keep], 2.4)  # one central tower missing


def test_bad_maps():
    with pytest.raises(GridError, match="no tower"):
        build_grid(np.array([3.0, 3.1]), np.array([0.0, 0.1]), 2.4)
    with pytest.raises(GridError, match="non-finite"):
        build_grid(np.array([np.nan]), np.array([0.0]), 2.4)
    with pytest.raises(GridError, match="gTowerPhi has 1"):
        build_grid(np.zeros(2), np.zeros(1), 2.4)
    with pytest.raises(GridError, match="repeat"):
        build_grid(np.array([0.1, 0.1, 0.3, 0.3]), np.array([0.0, 0.0, 0.0, 1.0]), 2.4)
