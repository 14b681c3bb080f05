"""Issue 13 on HTCondor: retries (max_retries, exit 75 resumes), X.509 proxy checks, hold reasons in words.

The proxy checks use short-lived certificates made with openssl; the retry and proxy-passing cases run on the
real pool (scripts/condor-pool.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC
from pathlib import Path

import pytest
from batchtest import probe_output, probe_tasks, settled, states, submit_probe, wait_rows
from conftest import assert_one_line_error, require, run_sbt

from sbt_batch.batch.run import Run, Task

TIMEOUT = 180


def make_cert(path: Path, minutes: int) -> Path:
    """A self-signed certificate + key (what a proxy file holds), made by openssl, valid for ``minutes`` (< 0: expired)."""
    require(shutil.which("openssl") is not None, "openssl is not installed")
    from datetime import datetime, timedelta

    now = datetime.now(UTC)
    start, end = (now + timedelta(minutes=minutes - 60), now + timedelta(minutes=minutes)) if minutes < 0 else (now - timedelta(minutes=5), now + timedelta(minutes=minutes))
    ca = path.parent / f"{path.name}.ca"
    ca.mkdir()
    (ca / "index.txt").write_text("")
    (ca / "serial").write_text("01\n")
    (ca / "ca.cnf").write_text(f"[ca]\ndefault_ca = d\n[d]\ndatabase = {ca}/index.txt\nserial = {ca}/serial\nnew_certs_dir = {ca}\n"
                               "default_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n"
                               "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = sbt-batch test proxy\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)
    run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca / "key.pem"), "-out", str(ca / "req.pem"), "-config", str(ca / "ca.cnf"))
    run("ca", "-batch", "-selfsign", "-config", str(ca / "ca.cnf"), "-keyfile", str(ca / "key.pem"), "-in", str(ca / "req.pem"),
        "-out", str(ca / "cert.pem"), "-notext", "-startdate", f"{start:%Y%m%d%H%M%S}Z", "-enddate", f"{end:%Y%m%d%H%M%S}Z")
    path.write_bytes((ca / "cert.pem").read_bytes() + (ca / "key.pem").read_bytes())
    path.chmod(0o600)
    return path


def _dry_run(tmp_path: Path, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site.yaml"
    site.write_text("backend: condor\n")
    return run_sbt("submit", "train", "--site", site, "--runs-dir", tmp_path / "runs", *extra, "--dry-run", "--", "--epochs", "1", env=env)


def test_proxy_expired_or_too_short_is_refused_in_one_line(tmp_path):
    expired = make_cert(tmp_path / "expired.pem", -10)
    assert_one_line_error(_dry_run(tmp_path, env={"X509_USER_PROXY": str(expired)}), str(expired), "expired")
    short = make_cert(tmp_path / "short.pem", 30)  # 30 minutes left
    assert_one_line_error(_dry_run(tmp_path, "--time", "1:00:00", env={"X509_USER_PROXY": str(short)}),
                          str(short), "less than --time 1:00:00")
    assert_one_line_error(_dry_run(tmp_path, env={"X509_USER_PROXY": str(tmp_path / "nope.pem")}), "nope.pem", "not found")
    good = _dry_run(tmp_path, "--time", "20", env={"X509_USER_PROXY": str(short)})
    assert good.returncode == 0, good.stderr
    assert "use_x509userproxy       = true" in good.stdout and f"x509userproxy           = {short}" in good.stdout
    assert not (tmp_path / "runs").exists()


def test_hold_reasons_in_words():
    from sbt_batch.batch.backends.condor import _held_state

    assert _held_state(13, "Transfer input files failure at execution point").reason.startswith("transferring the inputs failed: ")
    assert _held_state(15, "submitted on hold").reason.startswith("submitted on hold")
    assert _held_state(99, "odd").reason == "held (code 99): odd"


def test_retries_submit_file(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("backend: condor\n")
    result = run_sbt("submit", "train", "--site", site, "--retries", "2", "--runs-dir", tmp_path / "runs", "--dry-run", "--", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert "max_retries             = 2" in result.stdout and "ExitCode =!= 75" in result.stdout
    assert "periodic_release        = (NumJobStarts <= 2) && (HoldReasonCode =?= 6" in result.stdout


@pytest.mark.condor
def test_retries_and_exit_75_resume_on_the_pool(condor_pool):
    condor_pool.require_shared_filesystem()
    work = condor_pool.workdir("retry")
    counter1, counter2 = work / "c1", work / "c2"
    flaky = Task(index=0, argv=["task", "probe", "--exit", "3", "--fail-first", "1", "--counter", str(counter1)])
    ckpt = Task(index=1, argv=["task", "probe", "--exit", "75", "--fail-first", "1", "--counter", str(counter2), "--", "first"],
                meta={"resume_argv": ["task", "probe", "--", "resumed"]})
    run = submit_probe(work / "runs", "condor", [flaky, ckpt], name="retry", retries=1, site=str(condor_pool.profile(work)))
    rows = wait_rows(run, lambda r: settled(r) and r[1].state != "pending", timeout=TIMEOUT)
    assert states(rows) == ["completed", "completed"], [(r.state, r.reason) for r in rows]
    assert [h["exit_code"] for h in rows[0].history] == [3]
    assert [h["exit_code"] for h in rows[1].history] == [75]
    lines = [json.loads(line) for line in (run.task_dir(1) / "stdout").read_text().splitlines()]
    assert lines[-1]["args"] == ["resumed"]


@pytest.mark.condor
def test_proxy_reaches_the_job_and_holds_show_in_words(condor_pool, tmp_path):
    condor_pool.require_shared_filesystem()
    work = condor_pool.workdir("proxy")
    proxy = make_cert(work / "x509up", 120)
    import os

    os.environ["X509_USER_PROXY"] = str(proxy)
    try:
        run = submit_probe(work / "runs", "condor", probe_tasks(1), name="proxy", site=str(condor_pool.profile(work)), time="1:00:00")
        rows = wait_rows(run, settled, timeout=TIMEOUT)
        assert rows[0].state == "completed"
        assert probe_output(run, 0)["x509_user_proxy"]  # HTCondor hands the job its copy of the proxy
        held = submit_probe(work / "runs2", "condor", probe_tasks(1), name="held", site=str(condor_pool.profile(work)), hold=True)
        rows = wait_rows(held, lambda r: r[0].state == "held", timeout=TIMEOUT)
        status = run_sbt("status", held.path)
        assert "submitted on hold" in status.stdout, status.stdout
        assert run_sbt("cancel", held.path).returncode == 0
    finally:
        os.environ.pop("X509_USER_PROXY", None)


@pytest.mark.condor
def test_after_chains_runs_through_dagman_on_the_pool(condor_pool):
    condor_pool.require_shared_filesystem()
    work = condor_pool.workdir("dag")
    site = str(condor_pool.profile(work))
    gate = work / "gate"
    first = submit_probe(work / "runs", "condor", probe_tasks(2, sleep=300, done_if=gate), name="first", site=site)
    wait_rows(first, lambda r: all(x.state in ("pending", "running") for x in r), timeout=TIMEOUT)
    second = run_sbt("submit", "train", "--site", site, "--runs-dir", work / "runs", "--after", first.path, "--name", "second",
                     "--dry-run", "--", "--epochs", "1")
    assert second.returncode == 0 and "JOB tasks condor-1.sub" in second.stdout and "task wait-run" in second.stdout, second.stderr
    then = submit_probe(work / "runs", "condor", probe_tasks(1), name="then", site=site, after=str(first.path))
    assert then.latest_job_ids()[0].startswith("dag")
    rows = wait_rows(then, lambda r: r[0].state == "pending" and "waiting for" in r[0].reason, timeout=TIMEOUT)
    assert not (then.task_dir(0) / "state.json").exists()  # nothing runs before the first run completed
    gate.write_text("")
    wait_rows(first, lambda r: [x.state for x in r] == ["completed"] * 2, timeout=TIMEOUT)
    rows = wait_rows(then, lambda r: r[0].state == "completed", timeout=TIMEOUT)
    assert Run.open(first.path).read_state(0)["finished"] <= then.read_state(0)["started"]
    assert "." in rows[0].job_id


@pytest.mark.condor
def test_convert_on_a_dask_jobqueue_htcondor_cluster_equals_local(condor_pool, monkeypatch):
    """`convert --cluster condor`: dask workers started by dask-jobqueue's HTCondorCluster as real pool jobs."""
    condor_pool.require_shared_filesystem()
    import h5py
    import numpy as np

    from sbt_batch.convert.driver import convert

    work = condor_pool.workdir("dask")
    made = run_sbt("sample-ntuples", work / "in", "--kind", "signal", "--files", "2", "--events", "30", "--seed", "3")
    assert made.returncode == 0, made.stderr
    shims = condor_pool.base / "host" / "bin"  # condor_submit/condor_q/condor_rm of the pool, for dask-jobqueue
    require((shims / "condor_submit").is_file(), "the pool's condor_submit shim is missing (scripts/condor-pool.sh start)")
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    reference = convert([str(work / "in")], work / "ref.h5", workers=1)
    profile = {"python": "/opt/sbt-batch/bin/python", "memory": "1GB", "disk": "1GB", "start_timeout": 150, "death_timeout": 60}
    result = convert([str(work / "in")], work / "out.h5", cluster="condor", jobs=1, profile=profile)
    assert result.events == reference.events == 60 and result.workers >= 1
    with h5py.File(work / "ref.h5", "r") as a, h5py.File(work / "out.h5", "r") as b:
        assert sorted(a) == sorted(b)
        for key in a:
            assert np.array_equal(a[key][()], b[key][()]), key
