"""convert on dask clusters: an existing scheduler (--scheduler) and dask-jobqueue on the local Slurm."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from sbt_batch.common.errors import UserError
from sbt_batch.convert.cluster import jobqueue_cluster
from sbt_batch.convert.driver import convert
from sbt_batch.convert.samples import make_sample_ntuples


@pytest.fixture(scope="module")
def ntuples(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("cluster-ntuples")
    return make_sample_ntuples(d / "s", "signal", 2, 100) + make_sample_ntuples(d / "b", "background", 2, 90)


def same_content(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as ha, h5py.File(b, "r") as hb:
        assert set(ha) == set(hb)
        for key in ha:
            np.testing.assert_array_equal(ha[key][()], hb[key][()])


def test_existing_scheduler(sbt, ntuples, tmp_path: Path):
    from distributed import LocalCluster

    reference = convert(ntuples, tmp_path / "ref.h5", workers=1).output
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster:  # fmt: skip
        result = sbt("convert", *ntuples, "--output", tmp_path / "out.h5", "--scheduler", cluster.scheduler_address)
    assert result.returncode == 0, result.stderr
    same_content(reference, tmp_path / "out.h5")


def test_jobqueue_profile_is_validated_and_rendered():
    with pytest.raises(UserError, match="did you mean 'walltime'"):
        jobqueue_cluster("slurm", {"waltime": "00:05:00"})
    cluster = jobqueue_cluster("condor", {"memory": "1GB", "disk": "2GB"})
    try:
        script = cluster.job_script()
        assert "--interface lo" in script or "interface lo" in script
    finally:
        cluster.close()


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_cluster_jobs(request, ntuples, tmp_path: Path):
    request.getfixturevalue("slurm_cluster")
    reference = convert(ntuples, tmp_path / "ref.h5", workers=1).output
    profile = {"memory": "1GB", "walltime": "00:10:00", "log_directory": str(tmp_path / "logs"), "start_timeout": 120}
    result = convert(ntuples, tmp_path / "out.h5", cluster="slurm", jobs=2, profile=profile)
    assert result.events == 380 and result.workers >= 1
    same_content(reference, tmp_path / "out.h5")
