"""The chunk encoder writes standard HDF5 shuffle + deflate chunks; ranges for dask tasks sit on the chunk grid."""

from __future__ import annotations

import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from sbt_batch.convert.h5chunks import EventWriter, ShuffleDeflate, decode_chunk
from sbt_batch.convert.tasks import plan_ranges


@pytest.fixture(scope="module")
def real_images(gfex_signal) -> np.ndarray:
    with h5py.File(gfex_signal[0], "r") as h5:
        return h5["gTowerEt"][:192].astype("<f4")


@pytest.mark.parametrize("order", ["<f4", ">f4"])
def test_chunks_inflate_with_the_standard_zlib(real_images, order: str):
    encoder = ShuffleDeflate(1)
    for chunk in np.split(real_images[:, :24].astype(order), 3):  # without the two all-zero buffer rows
        stream = encoder.encode(chunk)
        planes = np.frombuffer(zlib.decompress(stream), dtype=np.uint8).reshape(4, -1)
        np.testing.assert_array_equal(planes.T.copy().view("<f4").reshape(chunk.shape), chunk.astype("<f4"))
        assert len(stream) < 0.9 * chunk.nbytes  # the exponent plane compresses
    assert encoder.pays == [False, False, False, True]  # the mantissa planes of calorimeter energies do not


def test_any_hdf5_reader_sees_the_written_events(real_images, tmp_path: Path):
    big_endian = real_images.astype(">f4")
    with h5py.File(tmp_path / "x.h5", "w") as h5:
        ds = h5.create_dataset("x", shape=(180, *real_images.shape[1:]), dtype="<f4", chunks=(64, *real_images.shape[1:]),
                               compression="gzip", compression_opts=1, shuffle=True)  # fmt: skip
        writer = EventWriter(ds)
        writer.write(0, big_endian[:10])  # a chunk begun: kept until the next block completes it
        writer.write(10, big_endian[10:180])  # two whole chunks, and the edge chunk begun
        assert writer.raw_chunks == 2
        writer.flush()  # the dataset's edge chunk, zero padded
        assert writer.raw_chunks == 3
        writer.write(100, real_images[100:110])  # not contiguous: through HDF5, merged with the chunk's content
        writer.flush()
        assert writer.raw_chunks == 3
        mask, stored = ds.id.read_direct_chunk((64, 0, 0))
        np.testing.assert_array_equal(decode_chunk(stored, ds), real_images[64:128])
    with h5py.File(tmp_path / "x.h5", "r") as h5:
        np.testing.assert_array_equal(h5["x"][()], real_images[:180])


def test_ranges_split_on_the_chunk_grid():
    ranges = plan_ranges([300, 0, 1000, 5], step=256, chunk=64)
    assert [(r.source, r.start, r.stop, r.at) for r in ranges][:4] == [(0, 0, 256, 0), (0, 256, 300, 256), (1, 0, 0, 300), (2, 0, 212, 300)]
    for r in ranges:
        assert 0 < r.stop - r.start <= 256 or r.source == 1  # an empty input keeps one empty range
        ends_inside = r.stop < [300, 0, 1000, 5][r.source]
        assert not ends_inside or (r.at + r.stop - r.start) % 64 == 0
    assert sum(r.stop - r.start for r in ranges) == 1305
