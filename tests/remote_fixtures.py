"""Real servers for remote inputs: XRootD (scripts/xrootd-server.sh) and HTTP with Range requests
(scripts/http-range-server.py), on 127.0.0.1, serving sample ntuples written by ``sbt-batch sample-ntuples``.

Both run as ``nobody`` when the tests run as root, so a file with mode 000 is refused for real.
Each test that stops a server mid-run starts its own instance (:func:`start_server`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
XROOTD_SCRIPT = REPO / "scripts" / "xrootd-server.sh"
HTTP_SCRIPT = REPO / "scripts" / "http-range-server.py"
SMALL_FILES, SMALL_EVENTS = 3, 1000  # about 4.4 MB each (uproot writer, zlib)
BIG_FILES, BIG_EVENTS = 2, 4000  # about 18 MB each: more than remote.py's readahead, so reads go on after the scan


def _require(ok: bool, reason: str) -> None:
    from conftest import require

    require(ok, reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running server: ``url(name)`` is the URL of ``served/name``; ``kill()`` stops it at once (SIGKILL)."""

    kind: str  # "root" or "http"
    prefix: str  # URL of the served folder, without the trailing slash
    pid: int
    port: int
    served: Path
    base: Path
    proc: subprocess.Popen | None = None

    def url(self, name: str) -> str:
        """URL of a file in the served folder."""
        return f"{self.prefix}/{name}"

    def kill(self) -> None:
        """Stop the server abruptly, as a crash or a lost node would."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if self.proc is not None:
            self.proc.wait(timeout=10)
            return
        for _ in range(100):  # xrootd detached itself: wait until it is gone (a zombie counts as gone)
            try:
                state = Path(f"/proc/{self.pid}/stat").read_text().split()[2]
            except (FileNotFoundError, IndexError):
                return
            if state in "ZX":
                return
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server cleanly."""
        if self.kind == "root":
            subprocess.run(["bash", str(XROOTD_SCRIPT), "stop"], env=self._env(), capture_output=True, timeout=60)
        else:
            self.kill()

    def _env(self) -> dict[str, str]:
        return _xrootd_env(self.base, self.port, self.served)


def _xrootd_env(base: Path, port: int, served: Path) -> dict[str, str]:
    """The environment that points scripts/xrootd-server.sh at one instance."""
    return {**os.environ, "SBT_XROOTD_BASE": str(base), "SBT_XROOTD_PORT": str(port), "SBT_XROOTD_DATA": str(served)}


def start_server(kind: str, served: Path) -> Server:
    """Start an XRootD (``root``) or HTTP (``http``) server for ``served``, with its state in a new folder beside it."""
    base = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=served.parent))  # beside, not under pytest's 0700 tmp_path
    base.chmod(0o755)
    port = free_port()
    if kind == "root":
        result = subprocess.run(["bash", str(XROOTD_SCRIPT), "start"], env=_xrootd_env(base, port, served),
                                capture_output=True, text=True, timeout=600)  # fmt: skip
        _require(result.returncode == 0, f"xrootd server did not start: {(result.stderr or result.stdout).strip()[-300:]}")
        pid = int((base / "run" / "xrootd.pid").read_text().strip())
        return Server("root", f"root://127.0.0.1:{port}/{served}", pid, port, served, base)
    port_file = base / "http.port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, str(HTTP_SCRIPT), str(served), "--port", "0", "--port-file", str(port_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for _ in range(200):
        if port_file.exists() or proc.poll() is not None:
            break
        time.sleep(0.05)
    _require(port_file.exists(), f"http server did not start: {proc.stderr.read() if proc.poll() is not None else 'no port after 10 s'}")
    port = int(port_file.read_text())
    return Server("http", f"http://127.0.0.1:{port}", proc.pid, port, served, base, proc)


@pytest.fixture(scope="session")
def served() -> Iterator[Path]:
    """A folder readable by ``nobody`` with sample ntuples: small/ (3 x 1000 events), big/ (2 x 4000), secret.root (mode 000)."""
    from sbt_batch.convert.samples import make_sample_ntuples

    base = Path(tempfile.mkdtemp(prefix="sbt-remote-", dir="/tmp"))  # pytest's tmp_path is 0700: nobody could not enter
    data = base / "data"
    try:
        for folder, files, events, seed in (("small", SMALL_FILES, SMALL_EVENTS, 11), ("big", BIG_FILES, BIG_EVENTS, 12)):
            make_sample_ntuples(data / folder, "signal", files, events, seed=seed)
        shutil.copy(data / "small" / "signal_000.root", data / "secret.root")
        for folder in (base, data, data / "small", data / "big"):
            folder.chmod(0o755)
        for path in data.rglob("*.root"):
            path.chmod(0o644)
        (data / "secret.root").chmod(0o000)
        yield data
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def xrootd_server(served: Path) -> Iterator[Server]:
    """A real XRootD server (Debian xrootd-server, as nobody) for the whole session."""
    _require(shutil.which("xrootd") is not None or os.geteuid() == 0, "xrootd is not installed (apt-get install xrootd-server)")
    server = start_server("root", served)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def http_server(served: Path) -> Iterator[Server]:
    """An HTTP server with Range requests (rangehttpserver, as nobody) for the whole session."""
    try:
        import RangeHTTPServer  # noqa: F401  (only whether it is installed)
    except ImportError:
        _require(False, "rangehttpserver is not installed (pip install rangehttpserver)")
    server = start_server("http", served)
    yield server
    server.stop()


@pytest.fixture(params=["root", "http"])
def server(request: pytest.FixtureRequest) -> Server:
    """Each of the two servers in turn."""
    return request.getfixturevalue("xrootd_server" if request.param == "root" else "http_server")
