"""Provenance on real artifacts: ROOT files written by `sample-ntuples`, real conversions, a local batch run and
its collect, a real training, evaluation and ONNX/frozen-graph exports; `sbt-batch provenance` prints the chain."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from conftest import REPO, assert_one_line_error, run_sbt

from sbt_batch.batch.core import run_status
from sbt_batch.batch.run import Run
from sbt_batch.common import provenance as P


def sample(folder: Path, kind: str, files: int, events: int, seed: int) -> list[Path]:
    """Real ROOT ntuples from `sbt-batch sample-ntuples`."""
    r = run_sbt("sample-ntuples", folder, "--kind", kind, "--files", str(files), "--events", str(events), "--seed", str(seed))
    assert r.returncode == 0, r.stderr
    return sorted(folder.glob("*.root"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, object]:
    """Signal and background ntuples converted to HDF5 with `sbt-batch convert`."""
    base = tmp_path_factory.mktemp("prov")
    out: dict[str, object] = {"base": base}
    for kind, seed in (("signal", 1), ("background", 2)):
        roots = sample(base / kind, kind, 2, 120, seed)
        h5 = base / f"{kind}.h5"
        r = run_sbt("convert", base / kind, "-o", h5, "--workers", "1")
        assert r.returncode == 0, r.stderr
        out[kind] = (roots, h5)
    return out


def test_convert_records_root_uuid_and_size(converted) -> None:
    import uproot

    roots, h5 = converted["background"]
    record = P.read(h5)
    assert record["step"] == "convert" and record["artifact"] == h5.name
    assert record["tool_version"] and record["host"] and record["time"]
    assert [i["path"] for i in record["inputs"]] == [str(p) for p in roots]
    for item, path in zip(record["inputs"], roots):
        with uproot.open(path) as f:
            assert item["uuid"] == str(f.file.uuid)
        assert item["size"] == path.stat().st_size and item["type"] == "root"


def test_git_commit_and_image_identity() -> None:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert P.git_commit() == head.stdout.strip()
    code = "import json; from sbt_batch.common import provenance as P; print(json.dumps(P.environment()))"
    env = {**os.environ, "SBT_BATCH_IN_IMAGE": "1", "SBT_BATCH_IMAGE": "localhost/sbt-batch:0.1.0-cpu",
           "SBT_BATCH_IMAGE_DIGEST": "sha256:" + "ab" * 32}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    image = json.loads(r.stdout)["image"]
    assert image["digest"] == "sha256:" + "ab" * 32 and image["reference"] == "localhost/sbt-batch:0.1.0-cpu"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBT_BATCH_IMAGE") and k != "SBT_BATCH_IN_IMAGE"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    if not P.IMAGE_INFO.exists():  # outside the image: no image identity
        assert json.loads(r.stdout)["image"] is None


def test_digest_is_xxh3_of_the_bytes(gfex_signal) -> None:
    import xxhash

    path = gfex_signal[0]
    assert P.file_digest(path) == "xxh3_128:" + xxhash.xxh3_128_hexdigest(path.read_bytes())


def test_chain_from_exports_back_to_root_files(converted, tmp_path: Path) -> None:
    sig_roots, sig = converted["signal"]
    bkg_roots, bkg = converted["background"]
    run = tmp_path / "cnn"
    r = run_sbt("train", "-s", sig, "-b", bkg, "--model", "1c", "--out", run, "--epochs", "1", "--split", "0.5,0.2,0.3",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    model = P.read(run / "model.keras")
    assert model["step"] == "train" and (run / "model.keras.provenance.json").is_file()
    assert {i["path"] for i in model["inputs"]} == {str(sig.resolve()), str(bkg.resolve())}
    assert all(i["digest"] == P.file_digest(i["path"]) for i in model["inputs"])
    assert run_sbt("evaluate", run).returncode == 0
    assert P.read(run / "eval" / "metrics.json")["inputs"][0]["digest"] == P.file_digest(run / "model.keras")
    for fmt in ("onnx", "frozen-pb"):
        r = run_sbt("export", run, "--format", fmt)
        assert r.returncode == 0, r.stderr
    import onnx

    props = {p.key: p.value for p in onnx.load(str(run / "export" / "model.onnx")).metadata_props}
    assert json.loads(props[P.ONNX_KEY])["step"] == "export"
    assert (run / "export" / "model.pb.provenance.json").is_file()
    assert run_sbt("export", run, "--format", "jpeg", "--max-images", "2").returncode == 0
    assert P.read(run / "export" / "jpeg")["inputs"][0]["provenance"]["step"] == "train"  # export/jpeg.provenance.json
    for artifact in ("model.onnx", "model.pb"):
        out = run_sbt("provenance", run / "export" / artifact)
        assert out.returncode == 0, out.stderr
        text = out.stdout
        assert "model.keras" in text and sig.name in text and bkg.name in text
        for root in sig_roots + bkg_roots:
            with __import__("uproot").open(root) as f:
                assert str(root) in text and str(f.file.uuid) in text
        assert f"{len(sig_roots) + len(bkg_roots)} ROOT file(s) at the origin" in text
    js = json.loads(run_sbt("provenance", run / "export" / "model.onnx", "--json").stdout)
    assert len(P.root_files(js)) == 4


def test_no_provenance_is_one_line(gfex_signal, tmp_path: Path) -> None:
    assert_one_line_error(run_sbt("provenance", gfex_signal[0]), gfex_signal[0].name, "no provenance recorded")
    assert_one_line_error(run_sbt("provenance", tmp_path / "nope.onnx"), "no such file")
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    assert_one_line_error(run_sbt("provenance", tmp_path / "junk.onnx"), "junk.onnx")


def _set_version(part: Path, version: str) -> None:
    with h5py.File(part, "r+") as h5:
        h5.attrs["tool_version"] = version


def test_merge_refuses_mixed_versions(converted, tmp_path: Path) -> None:
    from sbt_batch.common.errors import UserError
    from sbt_batch.convert.merge import merge_outputs

    parts = []
    for kind in ("signal", "background"):
        parts.append(tmp_path / f"{kind}.h5")
        shutil.copy(converted[kind][1], parts[-1])
    merged = merge_outputs(parts, tmp_path / "merged.h5")
    record = P.read(merged.output)
    assert record["step"] == "merge" and [i["path"] for i in record["inputs"]] == [str(p) for p in parts]
    assert len(P.root_files(record)) == 4
    _set_version(parts[1], "0.0.1")
    with pytest.raises(UserError, match="different sbt-batch versions.*--allow-mixed"):
        merge_outputs(parts, tmp_path / "mixed.h5")
    assert not (tmp_path / "mixed.h5").exists()
    with P.allow_mixed_versions(True):
        merge_outputs(parts, tmp_path / "mixed.h5")


def test_collect_refuses_mixed_versions_unless_allowed(converted, tmp_path: Path) -> None:
    roots, _ = converted["background"]
    r = run_sbt("submit", "convert", *roots, "-o", tmp_path / "out", "--runs-dir", tmp_path / "runs", "--name", "mixed")
    assert r.returncode == 0, r.stderr
    run = Run.open(next((tmp_path / "runs").glob("mixed-*")))
    deadline = time.monotonic() + 120
    while any(x.active for x in run_status(Run.open(run.path))):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    ok = run_sbt("collect", run.path)
    assert ok.returncode == 0, ok.stderr
    merged = tmp_path / "out" / "merged.h5"
    assert [i["type"] for i in P.read(merged)["inputs"]] == ["hdf5", "hdf5"]
    assert [r["uuid"] for r in P.root_files(P.read(merged))] == [i["uuid"] for i in P.read(roots[0].parent.parent / "background.h5")["inputs"]]
    merged.unlink()
    _set_version(Path(run.tasks[1].outputs[0]), "0.0.1")
    refused = run_sbt("collect", run.path)
    assert_one_line_error(refused, "different sbt-batch versions", "0.0.1", "--allow-mixed")
    assert not merged.exists()
    allowed = run_sbt("collect", run.path, "--allow-mixed")
    assert allowed.returncode == 0, allowed.stderr
    assert merged.exists()
