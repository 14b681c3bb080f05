"""convert: exact round trip of the real data, formats, compressions, baskets, tower order, workers, merge."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from sbt_batch.common.errors import UserError
from sbt_batch.convert.driver import convert
from sbt_batch.convert.merge import merge_outputs
from sbt_batch.convert.samples import ETA_MAX_FOR_ROWS, embed_hdf5, make_sample_ntuples
from sbt_batch.convert.source import read_entries

ETA_MAX_28 = ETA_MAX_FOR_ROWS[28]  # 2.7 keeps the 28 rows of the real data (|eta| <= 2.6)


def load(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {k: h5[k][()] for k in h5}


@pytest.fixture(scope="module")
def real_ntuples(gfex_dir: Path, tmp_path_factory) -> list[tuple[Path, Path]]:
    """(original HDF5, ntuple made from it with --from-hdf5) for the 8 real files; 3 baskets per branch."""
    out = tmp_path_factory.mktemp("real-ntuples")
    pairs = []
    for i, h5 in enumerate(sorted(gfex_dir.glob("*.hdf5"))):
        (root,) = embed_hdf5(h5, out, seed=i, basket_events=100)
        pairs.append((h5, root))
    return pairs


def test_round_trip_all_real_files(sbt, real_ntuples, tmp_path: Path):
    out = tmp_path / "all.h5"
    result = sbt("convert", *[r for _, r in real_ntuples], "--output", out, "--eta-max", ETA_MAX_28, "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "2,000" in result.stdout and "28 x 32" in result.stdout
    got = load(out)
    originals = [load(h) for h, _ in real_ntuples]
    np.testing.assert_array_equal(got["gTowerEt"], np.concatenate([o["gTowerEt"] for o in originals]))
    np.testing.assert_array_equal(got["offlineRho"], np.concatenate([o["offlineRho"] for o in originals]))
    np.testing.assert_array_equal(got["fileIndex"], np.repeat(np.arange(8), 250))
    assert got["gTowerEt"].dtype == np.float32 and got["offlineRho"].dtype == np.float32
    with h5py.File(out, "r") as h5:
        assert h5["gTowerEt"].chunks is not None and h5["gTowerEt"].compression
        assert h5["offlineRho"].compression
        attrs = h5.attrs
        assert [str(p) for p in attrs["inputs"]] == [str(r) for _, r in real_ntuples]
        assert list(attrs["entries"]) == [250] * 8
        assert attrs["eta_max"] == ETA_MAX_28 and len(attrs["eta_centers"]) == 28 and len(attrs["phi_centers"]) == 32
        assert attrs["tool_version"] and attrs["created"].endswith("Z") and attrs["n_skipped"] == 0
    assert read_entries(out) == 2000 and read_entries(real_ntuples[0][1]) == 250


@pytest.mark.parametrize("where", ["workers write", "client writes"])
def test_two_workers_identical_to_one(real_ntuples, tmp_path: Path, monkeypatch, where: str):
    from sbt_batch.convert import tasks as convert_tasks

    if where == "client writes":  # as when remote workers do not see the output's filesystem
        monkeypatch.setattr(convert_tasks, "workers_see", lambda client, output: False)
    roots = [r for _, r in real_ntuples]
    one = convert(roots, tmp_path / "one.h5", eta_max=ETA_MAX_28, workers=1)
    two = convert(roots, tmp_path / "two.h5", eta_max=ETA_MAX_28, workers=2, step_size="100")
    assert one.workers == 1 and two.workers == 2 and two.events == 2000
    assert two.raw_chunks > 0  # chunks encoded by the workers were written without recompressing
    a, b = load(tmp_path / "one.h5"), load(tmp_path / "two.h5")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(
    "compression, rntuple, shuffle",
    [("zlib:1", False, False), ("lz4:1", False, True), ("zstd:3", False, False), ("lzma:1", False, False),
     ("zstd:1", True, False), ("lz4:4", True, True)],
)  # fmt: skip
def test_formats_compressions_and_tower_order(gfex_signal, tmp_path: Path, compression, rntuple, shuffle):
    original = load(gfex_signal[0])
    (root,) = embed_hdf5(gfex_signal[0], tmp_path, compression=compression, rntuple=rntuple,
                         shuffle_towers=shuffle, basket_events=60)  # fmt: skip
    result = convert([root], tmp_path / "out.h5", eta_max=ETA_MAX_28, workers=1, step_size="70")
    got = load(result.output)
    np.testing.assert_array_equal(got["gTowerEt"], original["gTowerEt"])
    np.testing.assert_array_equal(got["offlineRho"], original["offlineRho"])


def test_default_grid_is_24_rows_and_steps_do_not_matter(tmp_path: Path):
    roots = make_sample_ntuples(tmp_path, "signal", 2, 150, basket_events=40)
    big = convert(roots, tmp_path / "big.h5", workers=1)
    small = convert(roots, tmp_path / "small.h5", workers=1, step_size="1kB")  # one chunk (64 events) per step
    assert big.shape == (24, 32)
    a, b = load(big.output), load(small.output)
    assert a["gTowerEt"].shape == (300, 24, 32)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_zero_entry_file_contributes_nothing(tmp_path: Path):
    (a,) = make_sample_ntuples(tmp_path / "a", "signal", 1, 70)
    (empty,) = make_sample_ntuples(tmp_path / "e", "background", 1, 0)
    (b,) = make_sample_ntuples(tmp_path / "b", "background", 1, 30)
    for workers in (1, 2):
        result = convert([a, empty, b], tmp_path / f"out{workers}.h5", workers=workers)
        assert result.events == 100 and not result.skipped
        with h5py.File(result.output, "r") as h5:
            assert list(h5.attrs["entries"]) == [70, 0, 30]
            assert set(h5["fileIndex"][()]) == {0, 2}


def test_merge_outputs_in_order(real_ntuples, tmp_path: Path):
    parts = []
    for i, (_, root) in enumerate(real_ntuples[:4]):
        parts.append(convert([root], tmp_path / f"p{i}.h5", eta_max=ETA_MAX_28, workers=1).output)
    merged = merge_outputs(parts, tmp_path / "merged.h5", expected_events=1000)
    assert merged.events == 1000 and merged.inputs == [str(r) for _, r in real_ntuples[:4]]
    got = load(merged.output)
    originals = [load(h) for h, _ in real_ntuples[:4]]
    np.testing.assert_array_equal(got["gTowerEt"], np.concatenate([o["gTowerEt"] for o in originals]))
    np.testing.assert_array_equal(got["fileIndex"], np.repeat(np.arange(4), 250))
    with pytest.raises(UserError, match="1000 events but 999 were expected"):
        merge_outputs(parts, tmp_path / "bad.h5", expected_events=999)
    other = convert([real_ntuples[0][1]], tmp_path / "p24.h5", workers=1).output  # 24 rows
    with pytest.raises(UserError, match="p24.h5: grid"):
        merge_outputs([parts[0], other], tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists()


def test_conversion_never_imports_tensorflow(tmp_path: Path):
    (root,) = make_sample_ntuples(tmp_path, "signal", 1, 20)
    code = (
        "import sys\n"
        "from sbt_batch.cli import main\n"
        f"try:\n    main(['convert', {str(root)!r}, '-o', {str(tmp_path / 'o.h5')!r}, '--workers', '1'])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "from sbt_batch.convert import merge_outputs\n"
        f"merge_outputs([{str(tmp_path / 'o.h5')!r}], {str(tmp_path / 'm.h5')!r})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_small_inputs_default_to_in_process(tmp_path: Path):
    roots = make_sample_ntuples(tmp_path, "background", 2, 20)
    assert convert(roots, tmp_path / "o.h5").workers == 1  # a local cluster would cost more than it saves
