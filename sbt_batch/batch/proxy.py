"""X.509 grid proxies for batch jobs: find the proxy and check its remaining lifetime before submitting."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from sbt_batch.common.errors import UserError

OPENSSL_DATE = "%b %d %H:%M:%S %Y %Z"


def find_proxy() -> Path | None:
    """The proxy jobs should get: ``$X509_USER_PROXY`` (must exist), else ``/tmp/x509up_u<uid>`` when present."""
    env = os.environ.get("X509_USER_PROXY")
    if env:
        path = Path(env)
        if not path.is_file():
            raise UserError(f"X509_USER_PROXY={env}: file not found (create a proxy with voms-proxy-init, or unset it)")
        return path.absolute()
    default = Path(f"/tmp/x509up_u{os.getuid()}")
    return default if default.is_file() else None


def not_after(path: Path) -> datetime:
    """The expiry time (UTC) of the first certificate in ``path`` (openssl, else the cryptography package)."""
    try:
        proc = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", str(path)], capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        proc = None
    if proc is not None and proc.returncode == 0 and "=" in proc.stdout:
        text = " ".join(proc.stdout.strip().split("=", 1)[1].split())
        try:
            return datetime.strptime(text, OPENSSL_DATE).replace(tzinfo=UTC)
        except ValueError:
            pass
    from sbt_batch.common.optional import try_import

    x509 = try_import("cryptography.x509")  # the fallback when openssl is missing or fails
    if x509 is None:
        raise UserError(f"{path}: cannot read the X.509 proxy's lifetime (openssl failed: "
                        f"{(proc.stderr.strip().splitlines() or ['not found'])[-1] if proc else 'not found'})")
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        return cert.not_valid_after_utc
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not an X.509 certificate/proxy ({' '.join(str(exc).split())})") from None


def _hms(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def checked_proxy(time_seconds: int | None) -> Path | None:
    """The proxy to pass to the jobs, refused in one line when expired or shorter than ``time_seconds`` (--time)."""
    path = find_proxy()
    if path is None:
        return None
    end = not_after(path)
    left = (end - datetime.now(UTC)).total_seconds()
    if left <= 0:
        raise UserError(f"{path}: X.509 proxy expired at {end:%Y-%m-%d %H:%M:%S} UTC; renew it (voms-proxy-init) before submitting")
    if time_seconds and left < time_seconds:
        raise UserError(f"{path}: X.509 proxy has {_hms(left)} left, less than --time {_hms(time_seconds)}; "
                        f"renew it for longer (voms-proxy-init --valid HH:MM) or lower --time")
    return path
