"""Atomic file output: write to a temporary beside the target, then rename; never leave temporaries behind.

Temporaries are named ``.NAME.sbt-tmp.HOST.PID.RANDOM[SUFFIX]`` beside their target NAME. They are
kept in a process-wide registry that is emptied on exit, on SIGTERM/SIGINT (see
:func:`install_signal_cleanup`) and when the write fails. A temporary of a killed process
(SIGKILL, a node crash) is swept by the next atomic write to the same target: on this host when its
owner pid is gone, from another host only once it is older than :data:`FOREIGN_TMP_AGE`.

A full disk or exhausted quota (ENOSPC, EDQUOT, also buried in h5py and Keras messages) becomes
one :class:`~sbt_batch.common.errors.UserError` line naming the target.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sbt_batch.common.errors import Terminated, UserError

TMP_MARK = ".sbt-tmp."
FOREIGN_TMP_AGE = 7 * 86400  # seconds: another host's temporary is stale after a week
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0]) or "host"
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.sbt-tmp\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[0-9a-f]+")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "errno = 28", "errno = 122", "enospc", "edquot")

_live: set[Path] = set()
_live_lock = threading.RLock()  # re-entrant: a signal handler may clean up while the lock is held


# --------------------------------------------------------------------------- errors


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause/context) reports ENOSPC or EDQUOT, by errno or in its message."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return True
        if any(t in str(exc).lower() for t in _DISK_FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def disk_full_error(path: str | os.PathLike[str], exc: BaseException) -> UserError:
    """The one-line error for a full disk or quota while writing ``path``."""
    quota = isinstance(exc, OSError) and exc.errno == errno.EDQUOT or "quota" in str(exc).lower()
    what = "disk quota exceeded (EDQUOT)" if quota else "no space left on device (ENOSPC)"
    return UserError(f"{path}: cannot write: {what}")


def write_error(path: str | os.PathLike[str], exc: BaseException) -> UserError | None:
    """A one-line UserError for an OS-level write failure of ``path`` (full disk, permission, read-only), else None."""
    if is_disk_full(exc):
        return disk_full_error(path, exc)
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO):
        return UserError(f"{path}: cannot write ({exc.strerror or exc})")
    return None


# --------------------------------------------------------------------------- the registry


def _register(path: Path) -> None:
    with _live_lock:
        _live.add(path)


def _unregister(path: Path) -> None:
    with _live_lock:
        _live.discard(path)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


_new_dirs: list[Path] = []  # output folders this process created: removed at exit if still empty


def remove_if_left_empty(directory: str | os.PathLike[str]) -> None:
    """Remove ``directory`` (made by this process) at exit or on SIGTERM/SIGINT if nothing was written into it."""
    with _live_lock:
        _new_dirs.append(Path(directory))


def cleanup_temporaries() -> None:
    """Remove every temporary this process still holds, and its new output folders left empty (exit, signals)."""
    with _live_lock:
        paths = list(_live)
        _live.clear()
        dirs = list(reversed(_new_dirs))
        _new_dirs.clear()
    for path in paths:
        _remove(path)
    for directory in dirs:
        with contextlib.suppress(OSError):
            directory.rmdir()


atexit.register(cleanup_temporaries)

_disk_full_seen: list[BaseException] = []  # full-disk errors that libraries could only report as "unraisable"
_default_unraisablehook = sys.unraisablehook


def _unraisablehook(unraisable: Any) -> None:
    """Record, instead of printing, a full-disk error raised where it cannot propagate (h5py's dealloc)."""
    exc = unraisable.exc_value
    if exc is not None and is_disk_full(exc):
        if len(_disk_full_seen) < 16:
            _disk_full_seen.append(exc)
        return
    _default_unraisablehook(unraisable)


sys.unraisablehook = _unraisablehook


def _raise_deferred_disk_full(target: Path) -> None:
    """Raise the full-disk error a library swallowed while this process wrote (checked before each rename)."""
    if _disk_full_seen:
        exc = _disk_full_seen[0]
        _disk_full_seen.clear()
        raise disk_full_error(target, exc)


_first_signal: int | None = None  # the first signal _on_signal handled


def signal_received() -> int | None:
    """The first SIGTERM/SIGHUP/SIGINT that :func:`install_signal_cleanup`'s handler received, or None."""
    return _first_signal


def _on_signal(signum: int, _frame: Any) -> None:
    global _first_signal
    if _first_signal is None:
        _first_signal = signum
    cleanup_temporaries()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def install_signal_cleanup() -> None:
    """Make SIGTERM, SIGHUP and SIGINT remove this process's temporaries and end the command with one line.

    Commands that handle SIGTERM themselves (training checkpoints, exit 75) install their own
    handler on top; their temporaries are removed by the failing write. Only the main thread can
    install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        try:
            if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
                signal.signal(sig, _on_signal)
        except (ValueError, OSError):
            pass


# --------------------------------------------------------------------------- temporaries


def temporary_name(target: Path, suffix: str = "") -> Path:
    """A fresh temporary path beside ``target``, recognisable by owner host and pid."""
    return target.parent / f".{target.name}{TMP_MARK}{_HOST}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (no init reaps it here) is dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_stale(path: Path, now: float | None = None) -> bool:
    """True for a temporary whose owner is gone (this host) or that is older than FOREIGN_TMP_AGE (other hosts)."""
    m = _TMP_RE.match(path.name)
    if not m:
        return False
    if m.group("host") == _HOST:
        return not _pid_alive(int(m.group("pid")))
    try:
        age = (now or time.time()) - path.lstat().st_mtime
    except OSError:
        return False
    return age > FOREIGN_TMP_AGE


def sweep_stale(directory: Path, name: str | None = None) -> list[Path]:
    """Delete stale temporaries in ``directory`` (only those of target ``name`` when given); return them."""
    removed: list[Path] = []
    prefix = f".{name}{TMP_MARK}" if name else "."
    try:
        entries = [p for p in directory.iterdir() if p.name.startswith(prefix) and TMP_MARK in p.name]
    except OSError:
        return removed
    now = time.time()
    for path in entries:
        if is_stale(path, now):
            _remove(path)
            removed.append(path)
    return removed


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a readable file that starts with the HDF5 signature."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def check_writable_dir(directory: Path, what: str = "output") -> None:
    """Raise a UserError unless files can be created in ``directory``."""
    if not directory.is_dir():
        raise UserError(f"{directory}: {what} directory does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UserError(f"{directory}: {what} directory is not writable")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _release_hdf5(path: Path) -> None:
    """After a full disk: free ``path``'s blocks at once, so that the flushes HDF5 retries when Python frees
    its handles (they are still open on the unlinked file) find room and stay quiet."""
    with contextlib.suppress(OSError):
        os.truncate(path, 0)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    The temporary is removed on any failure (and on SIGTERM/SIGINT); a full disk raises one
    UserError naming ``target``.
    """
    target = Path(target)
    sweep_stale(target.parent, target.name)
    tmp_path = temporary_name(target, suffix or ".tmp")
    _register(tmp_path)
    try:
        try:
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
        except OSError as exc:
            raise write_error(target, exc) or UserError(f"{target}: cannot write output ({exc.strerror})") from None
        os.close(fd)
        yield tmp_path
        _raise_deferred_disk_full(target)
        os.replace(tmp_path, target)
    except BaseException as exc:
        full = is_disk_full(exc) or bool(_disk_full_seen)
        if full:
            _release_hdf5(tmp_path)
        _remove(tmp_path)
        if full and isinstance(exc, Exception) and not isinstance(exc, UserError):
            _disk_full_seen.clear()
            raise disk_full_error(target, exc) from None
        err = None if isinstance(exc, UserError) else write_error(target, exc) if isinstance(exc, Exception) else None
        if err is not None:
            raise err from None
        raise
    finally:
        _unregister(tmp_path)


def _new_temporary_dir(target: Path) -> Path:
    """Create (and register) a fresh temporary folder beside ``target``, after sweeping stale ones."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(target.parent, exc) or UserError(f"{target.parent}: cannot create ({exc.strerror})") from None
    sweep_stale(target.parent, target.name)
    tmp = temporary_name(target)
    _register(tmp)
    try:
        tmp.mkdir()
    except OSError as exc:
        _unregister(tmp)
        raise write_error(target, exc) or UserError(f"{target}: cannot write output ({exc.strerror})") from None
    return tmp


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; it replaces ``target`` only on success."""
    target = Path(target)
    tmp = _new_temporary_dir(target)
    try:
        yield tmp
        _replace(tmp, target)
    except BaseException as exc:
        _remove(tmp)
        _reraise_for(exc, tmp, target)
        raise
    finally:
        _unregister(tmp)


def _reraise_for(exc: BaseException, tmp: Path, target: Path) -> None:
    """Raise ``exc`` as a one-line UserError about ``target`` (not its temporary ``tmp``) where it is one."""
    if isinstance(exc, UserError):
        if str(tmp) in str(exc):
            raise UserError(str(exc).replace(str(tmp), str(target)), exc.exit_code) from None
        return
    err = write_error(target, exc) if isinstance(exc, Exception) else None
    if err is not None:
        raise err from None


def _replace(src: Path, dest: Path) -> None:
    """Move ``src`` onto ``dest`` (a file with one rename; a folder by swapping the old one out first)."""
    if src.is_dir() and dest.exists():
        old = temporary_name(dest, ".old")
        _register(old)
        try:
            dest.rename(old)
            src.rename(dest)
        finally:
            _remove(old)
            _unregister(old)
    else:
        os.replace(src, dest)


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder whose files move into ``target`` (created if needed) only on success.

    Files already in ``target`` that the stage does not hold stay; those it holds are replaced,
    one rename each. A failure leaves ``target`` as it was (and no new ``target`` folder).
    """
    target = Path(target)
    stage = _new_temporary_dir(target)
    try:
        yield stage
        if not target.exists():
            stage.rename(target)
            return
        for src in sorted(stage.iterdir()):
            _replace(src, target / src.name)
    except BaseException as exc:
        _reraise_for(exc, stage, target)
        raise
    finally:
        _remove(stage)
        _unregister(stage)


@contextlib.contextmanager
def new_dir(path: str | os.PathLike[str], keep: Callable[[BaseException], bool] | None = None) -> Iterator[Path]:
    """Create ``path`` (and parents); if the block fails, remove whatever of it this call created.

    An exception for which ``keep(exc)`` is true (e.g. an interrupt after a checkpoint) leaves the folder.
    """
    path = Path(path)
    first_new = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        first_new = p
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if first_new is not None:
            _remove(first_new)
        raise write_error(path, exc) or UserError(f"{path}: cannot create directory ({exc.strerror})") from None
    try:
        yield path
    except BaseException as exc:
        if first_new is not None and not (keep is not None and keep(exc)):
            _remove(first_new)
        raise


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json_atomic(target: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON to ``target`` atomically."""
    write_text_atomic(target, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
