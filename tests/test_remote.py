"""Remote inputs against real servers on 127.0.0.1: XRootD (root://) and HTTP with Range requests.

Converting from either server gives the local result; unreachable servers, missing and refused
files and a server that dies mid-run give one-line errors naming the URL (or, with --skip-bad, a
skipped input and exit 3) and leave no output; URLs work in @list files and in batch runs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, run_sbt
from remote_fixtures import BIG_FILES, SMALL_FILES, Server, free_port, http_server, served, server, start_server, xrootd_server  # noqa: F401  (pytest fixtures)

from sbt_batch.common.errors import EXIT_SKIPPED_BAD, InputFileError, UserError
from sbt_batch.common.inputs import expand_inputs
from sbt_batch.convert.remote import RemoteOptions, classify

FAST = ("--read-retries", "1", "--read-timeout", "10")  # one retry after 1 s: failing runs stay short
SMALL = [f"small/signal_{i:03d}.root" for i in range(SMALL_FILES)]
BIG = [f"big/signal_{i:03d}.root" for i in range(BIG_FILES)]
VARYING_ATTRS = {"inputs", "created", "provenance"}  # where the inputs are, and when: the rest must be equal


def assert_same_output(remote: Path, local: Path, merged: bool = False) -> None:
    """Datasets identical, and every attribute except the input names and times equal (``merged``: those both have)."""
    with h5py.File(remote, "r") as fr, h5py.File(local, "r") as fl:
        assert sorted(fr) == sorted(fl)
        for key in fl:
            assert fr[key].dtype == fl[key].dtype and np.array_equal(fr[key][()], fl[key][()]), key
        if not merged:
            assert set(fr.attrs) == set(fl.attrs)
        for key in (set(fl.attrs) & set(fr.attrs)) - VARYING_ATTRS - ({"tool"} if merged else set()):
            a, b = fr.attrs[key], fl.attrs[key]
            assert (a == b) if isinstance(a, str) else np.array_equal(np.asarray(a), np.asarray(b)), key


def no_output_left(out: Path) -> bool:
    """Neither the output nor a temporary beside it exists."""
    return not out.exists() and not [p for p in out.parent.iterdir() if out.name in p.name]


@pytest.fixture(scope="module")
def local_small(served: Path, tmp_path_factory) -> Path:
    """The local convert of the small files."""
    out = tmp_path_factory.mktemp("local") / "local.h5"
    result = run_sbt("convert", *(served / n for n in SMALL), "-o", out, "--workers", "1")
    assert result.returncode == 0, result.stderr
    return out


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def test_convert_from_server_equals_local(server: Server, local_small: Path, tmp_path: Path):
    urls = [server.url(n) for n in SMALL]
    out = tmp_path / "remote.h5"
    result = run_sbt("convert", *urls, "-o", out, "--workers", "1", "--step-size", "300")
    assert result.returncode == 0, result.stderr
    assert_same_output(out, local_small)
    with h5py.File(out, "r") as h5:
        assert [str(x) for x in h5.attrs["inputs"]] == urls  # URLs kept whole ('//' included), in order
    assert "MB/s read" in result.stdout


def test_convert_from_server_on_dask_workers(xrootd_server: Server, local_small: Path, tmp_path: Path):
    out = tmp_path / "dask.h5"
    result = run_sbt("convert", *(xrootd_server.url(n) for n in SMALL), "-o", out, "--workers", "2", "--step-size", "500")
    assert result.returncode == 0, result.stderr
    assert_same_output(out, local_small)


def test_list_file_of_urls_and_rucio_table(xrootd_server: Server, http_server: Server, local_small: Path, tmp_path: Path):
    plain = tmp_path / "plain.txt"  # `rucio list-file-replicas --protocols root --pfns DID`: one URL per line
    plain.write_text("# replicas\n" + "\n".join(xrootd_server.url(n) for n in SMALL) + "\n")
    table = tmp_path / "table.txt"  # the same command without --pfns: a table, two replicas of the first file
    rows = [f"| user.me | {n.split('/')[1]} | 4.4 MB | 0a1b2c3d | SITE-{s}_DATADISK: {srv.url(n)} |"
            for n in SMALL for s, srv in (("A", xrootd_server), ("B", http_server))[: 2 if n == SMALL[0] else 1]]  # fmt: skip
    table.write_text("+---------+------+----------+---------+--------------+\n"
                     "| SCOPE   | NAME | FILESIZE | ADLER32 | RSE: REPLICA |\n"
                     "|---------+------+----------+---------+--------------|\n" + "\n".join(rows) + "\n")  # fmt: skip
    assert expand_inputs([f"@{table}"]) == [xrootd_server.url(n) for n in SMALL]
    for listing in (plain, table):
        out = tmp_path / f"{listing.stem}.h5"
        result = run_sbt("convert", f"@{listing}", "-o", out)
        assert result.returncode == 0, result.stderr
        assert_same_output(out, local_small)


def test_urls_stay_strings_in_order_and_are_not_stat_ed(tmp_path: Path):
    local = tmp_path / "a.root"
    local.write_bytes(b"x")
    urls = ["root://eos.example.org:1094//eos/atlas/a.root", "https://dcache.example.org/pnfs/b.root?authz=x#frag"]
    assert expand_inputs([urls[0], local, urls[1]]) == [urls[0], local, urls[1]]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{urls[1]}\na.root  # local, relative to the list\n{urls[0]}\n")
    assert expand_inputs([f"@{listing}"]) == [urls[1], local, urls[0]]


@pytest.mark.parametrize(
    "url, problem",
    [
        ("davs://host//x.root", "unsupported URL scheme 'davs'"),
        ("root://host/x.root", "absolute path after the host"),
        ("https://host/dir/", "names no file"),
        ("https:///x.root", "no host"),
    ],
)
def test_malformed_urls_are_one_line_errors(url: str, problem: str):
    with pytest.raises(InputFileError, match=problem):
        expand_inputs([url])


# ---------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["root", "http"])
def test_unreachable_server_is_retried_then_one_line_error(scheme: str, tmp_path: Path):
    port = free_port()  # loopback, nothing listening
    url = f"root://127.0.0.1:{port}//data/a.root" if scheme == "root" else f"http://127.0.0.1:{port}/a.root"
    out = tmp_path / "out.h5"
    result = run_sbt("convert", url, "-o", out, *FAST)
    assert_one_line_error(result, url, "server unreachable after 2 tries", "connection refused")
    assert "retry 1 of 1" in result.stderr
    assert no_output_left(out)


def test_missing_file_on_server(server: Server, tmp_path: Path):
    url = server.url("small/nothing-here.root")
    out = tmp_path / "out.h5"
    started = time.monotonic()
    result = run_sbt("convert", url, "-o", out, *FAST)
    assert_one_line_error(result, url, "no such file on the server")
    assert "retry" not in result.stderr and time.monotonic() - started < 20  # permanent: not retried
    assert no_output_left(out)


def test_permission_denied_by_server(server: Server, tmp_path: Path):
    url = server.url("secret.root")  # mode 000; both servers run as nobody
    out = tmp_path / "out.h5"
    result = run_sbt("convert", url, "-o", out, *FAST)
    assert_one_line_error(result, url, "permission denied by the server")
    assert "retry" not in result.stderr
    assert no_output_left(out)


def test_skip_bad_covers_unreachable_and_refused(server: Server, served: Path, tmp_path: Path):
    dead = f"http://127.0.0.1:{free_port()}/a.root"
    out = tmp_path / "out.h5"
    result = run_sbt("convert", server.url(SMALL[0]), dead, server.url("secret.root"), served / SMALL[1], "-o", out, "--skip-bad", *FAST)
    assert result.returncode == EXIT_SKIPPED_BAD, result.stderr
    assert "2 converted, 2 skipped" in result.stdout
    with h5py.File(out, "r") as h5:
        assert [str(x) for x in h5.attrs["inputs"]] == [server.url(SMALL[0]), str(served / SMALL[1])]
        assert h5.attrs["n_skipped"] == 2


def _convert_until_server_dies(server: Server, inputs: list, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run convert on ``inputs`` and kill ``server`` once the scan is over and the output is being written."""
    proc = subprocess.Popen([sys.executable, "-m", "sbt_batch", "convert", *map(str, inputs), "-o", str(out), "--workers", "1",
                             "--step-size", "64", *FAST, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not [p for p in out.parent.iterdir() if out.name in p.name] and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # the temporary output appears when the scan has read every input's metadata
    server.kill()
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("kind", ["root", "http"])
def test_server_stopped_mid_run(kind: str, served: Path, tmp_path: Path):
    server = start_server(kind, served)  # its own instance: this test kills it
    urls = [server.url(n) for n in BIG]
    out = tmp_path / "out.h5"
    result = _convert_until_server_dies(server, urls, out)
    assert_one_line_error(result, "after 2 tries")  # "server unreachable" or "read failed", by where it stopped
    assert any(url in result.stderr for url in urls)
    assert no_output_left(out)


@pytest.mark.parametrize("kind", ["root", "http"])
def test_server_stopped_mid_run_with_skip_bad(kind: str, served: Path, tmp_path: Path):
    server = start_server(kind, served)
    url = server.url(BIG[0])
    out = tmp_path / "out.h5"
    result = _convert_until_server_dies(server, [url, served / SMALL[0]], out, "--skip-bad")
    assert result.returncode == EXIT_SKIPPED_BAD, result.stderr
    assert "1 converted, 1 skipped" in result.stdout and "Traceback" not in result.stderr
    with h5py.File(out, "r") as h5:
        assert [str(x) for x in h5.attrs["inputs"]] == [str(served / SMALL[0])]
        assert url in h5.attrs["skipped"] and h5["gTowerEt"].shape[0] == 1000


# ---------------------------------------------------------------------------------------------
# Options and error classes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, problem", [(("--read-timeout", "0"), "--read-timeout"), (("--read-retries", "-1"), "--read-retries")])
def test_bad_remote_options(args, problem, served: Path, tmp_path: Path):
    assert_one_line_error(run_sbt("convert", served / SMALL[0], "-o", tmp_path / "o.h5", *args), problem)


def test_transient_and_permanent_errors():
    assert classify(ConnectionRefusedError(111, "refused")) == (True, "connection refused")
    assert classify(TimeoutError())[0] is True
    assert classify(FileNotFoundError("x")) == (False, "no such file on the server")
    assert classify(OSError("Failed to open file: [ERROR] Server responded with an error: [3010] Unable to open x; permission denied")) == (
        False, "permission denied by the server")  # fmt: skip
    assert classify(OSError("[ERROR] Server responded with an error: [3024] overloaded"))[0] is True
    assert classify(OSError("[ERROR] Operation expired"))[0] is True
    with pytest.raises(UserError, match="--read-retries"):
        RemoteOptions(retries=-1).check()
    assert 1.0 <= RemoteOptions().delay(1) <= 1.1 and 4.0 <= RemoteOptions().delay(3) <= 4.4


# ---------------------------------------------------------------------------------------------
# Batch runs
# ---------------------------------------------------------------------------------------------


def test_submit_convert_local_backend_reads_remotely(xrootd_server: Server, local_small: Path, tmp_path: Path):
    from sbt_batch.batch.core import run_status
    from sbt_batch.batch.run import Run

    runs = tmp_path / "runs"
    urls = [xrootd_server.url(n) for n in SMALL]
    submitted = run_sbt("submit", "convert", *urls, "-o", tmp_path / "out", "-k", "2", "--runs-dir", runs)
    assert submitted.returncode == 0, submitted.stderr
    run = Run.open(next(p for p in runs.iterdir() if not p.name.startswith(".")))
    assert [t.inputs for t in run.tasks] == [urls[:2], urls[2:]]
    deadline = time.monotonic() + 120
    rows = run_status(run)
    while any(r.active for r in rows) and time.monotonic() < deadline:
        time.sleep(0.3)
        rows = run_status(Run.open(run.path))
    assert [r.state for r in rows] == ["completed", "completed"], [(r.state, r.reason) for r in rows]
    collected = run_sbt("collect", run.path)  # checks each part's events against its (remote) inputs
    assert collected.returncode == 0, collected.stderr
    assert_same_output(tmp_path / "out" / "merged.h5", local_small, merged=True)
    with h5py.File(tmp_path / "out" / "merged.h5", "r") as h5:
        assert [str(x) for x in h5.attrs["inputs"]] == urls


def test_condor_spool_mode_transfers_nothing_for_urls(tmp_path: Path, served: Path):
    from sbt_batch.batch.backends.condor import CondorBackend
    from sbt_batch.batch.kinds import convert_tasks
    from sbt_batch.batch.run import Run

    url = "root://eos.example.org:1094//eos/atlas/x.root"
    local = served / SMALL[0]
    tasks = convert_tasks([url, local], 2, tmp_path / "out")
    run = Run.create(tmp_path / "runs", "spool", "convert", "condor", tasks, condor={"spool": True},
                     sbt_command=["/opt/sbt-batch/bin/sbt-batch"])  # fmt: skip
    run.begin_submission([0])
    CondorBackend()._stage(run, 1, [0])  # what submit() writes before it spools (offline: no pool needed)
    folder = run.path / "spool" / "1" / "0"
    linked = sorted(p.relative_to(folder / "inputs") for p in (folder / "inputs").rglob("*") if p.is_symlink())
    assert linked == [Path("1") / local.name]  # only the local input travels
    import json

    argv = json.loads((folder / "manifest.json").read_text())["tasks"][0]["argv"]
    assert url in argv and f"inputs/1/{local.name}" in argv


@pytest.mark.condor
def test_condor_pool_spool_run_reads_root_urls(condor_pool, xrootd_server: Server, local_small: Path, tmp_path: Path):
    from conftest import require

    from sbt_batch.batch.core import run_status
    from sbt_batch.batch.run import Run

    require((condor_pool.base / "root" / "opt" / "sbt-batch" / ".optional-deps").exists(),
            "the pool's venv has no XRootD client (scripts/condor-pool.sh installs it where wheels exist)")  # fmt: skip
    runs = tmp_path / "runs"  # outside the shared folder: spool mode, the jobs see nothing of this machine but the URLs
    urls = [xrootd_server.url(n) for n in SMALL]
    submitted = run_sbt("submit", "convert", *urls, "-o", tmp_path / "out", "-k", "2", "--runs-dir", runs,
                        "--site", condor_pool.profile(tmp_path, spool=True))  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    run = Run.open(next(p for p in runs.iterdir() if not p.name.startswith(".")))
    assert run.submissions[-1]["backend"]["mode"] == "spool"
    deadline = time.monotonic() + 300
    rows = run_status(run)
    while any(r.active for r in rows) and time.monotonic() < deadline:
        time.sleep(1)
        rows = run_status(Run.open(run.path))
    assert [r.state for r in rows] == ["completed", "completed"], [(r.state, r.reason) for r in rows]
    collected = run_sbt("collect", run.path)
    assert collected.returncode == 0, collected.stderr
    assert_same_output(tmp_path / "out" / "merged.h5", local_small, merged=True)
