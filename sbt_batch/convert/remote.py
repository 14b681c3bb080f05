"""Remote inputs: ``root://`` (XRootD) and ``http(s)://`` URLs, read by uproot with timeouts, retries and readahead.

uproot reads a remote file through an fsspec filesystem (fsspec-xrootd with the PyPI XRootD client,
or fsspec's aiohttp HTTP). :class:`RemoteSource` is uproot's fsspec source with three additions:

* every request (single reads and uproot's vectored reads) is retried with exponential backoff on
  transient errors (connection refused or reset, timeouts, HTTP 5xx/429, XRootD server-side I/O
  errors), and fails at once on permanent ones (no such file, permission denied, other 4xx);
* single reads go through aligned 2 MB blocks that are kept per process (64 MB in all) and
  read ahead in the background (4 blocks past the last one asked for), so reading TTree baskets
  one at a time (the fast path of :mod:`sbt_batch.convert.baskets`) overlaps the network with the
  decompression, costs few round trips however small the baskets are, and reopening a file for
  every step reads no byte twice;
* the bytes it fetches are counted per thread (:func:`bytes_read`), as :class:`CountingMemmapSource`
  does for local files, so that progress bars can show MB/s.

Failures reach the caller as :class:`RemoteError`, an :class:`~sbt_batch.common.errors.InputFileError`
that names the URL, so the reading code reports (or, with ``--skip-bad``, skips) them like any
unreadable file.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sbt_batch.common.console import log
from sbt_batch.common.errors import InputFileError, UserError, one_line
from sbt_batch.common.urls import check_url, url_scheme

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0  # seconds without progress on one request (connect, or a read)
DEFAULT_RETRIES = 3  # retries after the first try, on transient errors only
BACKOFF_BASE = 1.0  # seconds before the first retry; doubled for each next one
BACKOFF_CAP = 30.0
BLOCK = 2 * 1024**2  # single reads are served from aligned blocks of this size (plain reads, run together)
PREFETCH = 4  # blocks read ahead, in the background, past the last block a read touched
CACHE_BYTES = 64 * 1024**2  # blocks kept per process (all remote files together), least recently used out

# XRootD status codes (XProtocol.hh, kXR_*): a server that is overloaded, restarting or failing
# internally may succeed on a later try; the others describe the request itself.
_XRD_CODE = re.compile(r"\[(3\d\d\d)\]")
_XRD_TRANSIENT = {3004, 3007, 3008, 3012, 3014, 3020, 3024, 3034, 3035}
_XRD_PROBLEMS = {3010: "permission denied by the server", 3011: "no such file on the server",
                 3016: "is a directory on the server", 3030: "authentication failed"}  # fmt: skip
_HTTP_TRANSIENT = {408, 425, 429}


@dataclass(frozen=True)
class RemoteOptions:
    """How remote inputs are read: the per-request timeout (s), the retries and the first backoff (s)."""

    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    backoff: float = BACKOFF_BASE
    block: int = BLOCK
    prefetch: int = PREFETCH

    def check(self) -> RemoteOptions:
        """Return self, or raise a UserError naming the bad option."""
        if not self.timeout > 0 or math.isinf(self.timeout):
            raise UserError(f"--read-timeout: must be a positive number of seconds, got {self.timeout}")
        if self.retries < 0:
            raise UserError(f"--read-retries: must be 0 or more, got {self.retries}")
        return self

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1, 2, ...): exponential, capped, with 10% jitter."""
        return min(BACKOFF_CAP, self.backoff * 2 ** (attempt - 1)) * (1 + 0.1 * random.random())


class RemoteError(InputFileError):
    """A remote input that could not be read: a permanent refusal, or transient errors that outlasted the retries."""


# ---------------------------------------------------------------------------------------------
# Classifying errors
# ---------------------------------------------------------------------------------------------


def _network_errors() -> tuple[type[BaseException], ...]:
    """The exception types that a remote read may raise (aiohttp's when installed)."""
    from sbt_batch.common.optional import try_import

    aiohttp = try_import("aiohttp")
    if aiohttp is None:
        return (OSError, asyncio.TimeoutError)
    return (OSError, asyncio.TimeoutError, aiohttp.ClientError)


def classify(exc: BaseException) -> tuple[bool, str]:
    """(transient, short problem) for an exception raised by a remote request."""
    cause = exc.__cause__
    if isinstance(exc, FileNotFoundError) and cause is not None and not isinstance(cause, FileNotFoundError):
        return classify(cause)  # fsspec's HTTP size lookup says "not found" for any failure, a refused connection too
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status >= 400:  # aiohttp.ClientResponseError
        reason = f"HTTP {status} {getattr(exc, 'message', '') or ''}".strip()
        if status in (401, 403):
            return False, f"permission denied by the server ({reason})"
        if status in (404, 410):
            return False, f"no such file on the server ({reason})"
        return status >= 500 or status in _HTTP_TRANSIENT, reason
    if isinstance(exc, FileNotFoundError):
        return False, "no such file on the server"
    if isinstance(exc, PermissionError):
        return False, "permission denied by the server"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return True, "timed out"
    if isinstance(exc, ConnectionRefusedError) or isinstance(getattr(exc, "os_error", None), ConnectionRefusedError):
        return True, "connection refused"  # (aiohttp keeps the OS error as .os_error)
    text = one_line(exc, 200)
    match = _XRD_CODE.search(text)
    if match:
        code = int(match.group(1))
        if code in _XRD_PROBLEMS:
            return False, _XRD_PROBLEMS[code]
        detail = text.split("error: ", 1)[-1]
        return code in _XRD_TRANSIENT, f"XRootD error {detail}"
    for prefix in ("Failed to open file: ", "Bytes failed to read from open file: ", "File did not vector_read properly: "):
        text = text.replace(prefix, "")
    if "refused" in text.lower() or "[FATAL] Connection error" in text:
        return True, "connection refused"
    return True, text  # connection resets, socket errors, "Operation expired": worth another try


# ---------------------------------------------------------------------------------------------
# Retrying
# ---------------------------------------------------------------------------------------------


def _give_up(url: str, problem: str, tries: int, reached: bool) -> RemoteError:
    if tries <= 1:
        return RemoteError(url, problem)
    what = "read failed" if reached else "server unreachable"
    return RemoteError(url, f"{what} after {tries} tries ({problem})")


def _should_retry(url: str, exc: BaseException, opts: RemoteOptions, attempt: int, reached: bool) -> float:
    """Seconds to wait before trying again, or raise the RemoteError that ends the tries."""
    transient, problem = classify(exc)
    if not transient or attempt > opts.retries:
        raise _give_up(url, problem, attempt, reached) from None
    delay = opts.delay(attempt)
    log.warning("%s: %s; retry %d of %d in %.1f s", url, problem, attempt, opts.retries, delay)
    return delay


def with_retries(url: str, opts: RemoteOptions, call: Callable[[], T], reached: bool = True) -> T:
    """``call()``, retried with backoff on transient errors; RemoteError naming ``url`` when it keeps failing."""
    errors = _network_errors()
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except RemoteError:
            raise
        except errors as exc:
            time.sleep(_should_retry(url, exc, opts, attempt, reached))


async def with_retries_async(url: str, opts: RemoteOptions, call: Callable[[], Any], reached: bool = True) -> Any:
    """The awaitable form of :func:`with_retries` (``call()`` returns a coroutine), for fsspec's event loop."""
    errors = _network_errors()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except RemoteError:
            raise
        except errors as exc:
            await asyncio.sleep(_should_retry(url, exc, opts, attempt, reached))


# ---------------------------------------------------------------------------------------------
# Byte counting (local and remote)
# ---------------------------------------------------------------------------------------------

_COUNTER = threading.local()


def count_bytes(n: int) -> None:
    """Add ``n`` bytes read from an input to this thread's counter."""
    _COUNTER.n = getattr(_COUNTER, "n", 0) + n


def bytes_read() -> int:
    """Bytes this thread has read from inputs (compressed, as stored): deltas give MB/s."""
    return getattr(_COUNTER, "n", 0)


@functools.cache
def _sources() -> tuple[type, type]:
    """The two uproot source classes, defined on first use (importing uproot is slow)."""
    import numpy as np
    import uproot.source.chunk
    import uproot.source.file
    import uproot.source.fsspec
    import uproot.source.futures

    class CountingMemmapSource(uproot.source.file.MemmapSource):
        """uproot's memory-mapped local source, counting the bytes it hands out."""

        def chunk(self, start: int, stop: int) -> Any:
            """Bytes [start, stop) of the mapped file, counted."""
            count_bytes(stop - start)
            return super().chunk(start, stop)

        def chunks(self, ranges: list[tuple[int, int]], notifications: Any) -> Any:
            """The byte ranges of the mapped file, counted."""
            count_bytes(sum(b - a for a, b in ranges))
            return super().chunks(ranges, notifications)

    class RemoteSource(uproot.source.fsspec.FSSpecSource):
        """uproot's fsspec source with retries, block cache and readahead, and byte counting (options: ``remote_options``)."""

        _fs: Any  # the fsspec filesystem uproot opened, wrapped in a _RetryingFS by _open

        def __init__(self, file_path: str, remote_options: RemoteOptions | None = None, **options: Any) -> None:
            self._remote = remote_options or RemoteOptions()
            self._url = file_path
            self._key = f"{self._remote.block}:{file_path}"  # the block cache's name for this file and block size
            self._reached = False  # a request succeeded: later failures are "read failed", not "unreachable"
            super().__init__(file_path, **options)

        def _open(self) -> None:
            super()._open()
            self._fs = _RetryingFS(self._fs, self)

        def chunk(self, start: int, stop: int) -> Any:
            """Bytes [start, stop) through the block cache (read ahead), retried."""
            if self.closed:
                raise OSError(f"file {self._url!r} is closed")
            return uproot.source.chunk.Chunk(self, start, stop, uproot.source.futures.TrivialFuture(self._read(start, stop)))

        def _read(self, start: int, stop: int, prefetch: bool = True) -> Any:
            """Bytes [start, stop) as a uint8 array, from the blocks that hold them."""
            size = self._remote.block
            first, last = start // size, max(start, stop - 1) // size
            blocks = self._blocks(range(first, last + 1))
            if prefetch:
                self._prefetch(last + 1)
            if first == last:
                return blocks[0][start - first * size : stop - first * size]
            return np.concatenate([b[max(0, start - k * size) : stop - k * size] for k, b in zip(range(first, last + 1), blocks)])

        def _blocks(self, numbers: range) -> list[Any]:
            """Blocks ``numbers`` of the file: from the cache (waiting for a prefetch), the missing ones fetched now."""
            found = {k: _BLOCKS.get(self._key, k) for k in numbers}
            for k, got in found.items():
                if isinstance(got, _Pending):
                    try:
                        found[k] = got.result()
                    except UserError:  # its retries are spent: try again now (and report it, if it fails again)
                        found[k] = None
            missing = [k for k, got in found.items() if got is None]
            if missing:
                for k, data in zip(missing, self._fetch(missing)):
                    found[k] = np.frombuffer(data, dtype=np.uint8)
                    _BLOCKS.put(self._key, k, found[k])
            return [found[k] for k in numbers]

        def _ranges(self, numbers: list[int]) -> tuple[str, list[int], list[int]]:
            """(path, starts, ends) of blocks ``numbers``, the last one cut at the end of the file (counted as read)."""
            size, end = self._remote.block, self.num_bytes
            starts = [min(k * size, end) for k in numbers]
            ends = [min((k + 1) * size, end) for k in numbers]
            count_bytes(sum(ends) - sum(starts))
            return self._file_path, starts, ends

        def _fetch(self, numbers: list[int]) -> list[Any]:
            import fsspec.asyn

            return fsspec.asyn.sync(fsspec.asyn.get_loop(), self._fs._cat_blocks, *self._ranges(numbers))

        def _prefetch(self, first: int) -> None:
            """Start reading the ``prefetch`` blocks from ``first`` in fsspec's event loop (those not cached, within the file)."""
            import fsspec.asyn

            size, end = self._remote.block, getattr(self, "_size", None)
            if not self._remote.prefetch or end is None:
                return
            numbers = [k for k in range(first, first + self._remote.prefetch) if k * size < end and _BLOCKS.get(self._key, k) is None]
            if numbers:
                future = asyncio.run_coroutine_threadsafe(self._fs._cat_blocks(*self._ranges(numbers)), fsspec.asyn.get_loop())
                for i, k in enumerate(numbers):
                    _BLOCKS.put(self._key, k, _Pending(future, i, size))

        def chunks(self, ranges: list[tuple[int, int]], notifications: Any) -> Any:
            """uproot's vectored read: from the block cache when every range is there, else one retried request."""
            size = self._remote.block
            if ranges and all(_BLOCKS.get(self._key, k) is not None for a, b in ranges for k in range(a // size, max(a, b - 1) // size + 1)):
                # every range lies in blocks already read or being read ahead (small rho baskets between
                # the tower baskets): no request at all
                out = []
                for a, b in ranges:
                    chunk = uproot.source.chunk.Chunk(self, a, b, uproot.source.futures.TrivialFuture(self._read(a, b, prefetch=False)))
                    notifications.put(chunk)
                    out.append(chunk)
                return out
            count_bytes(sum(b - a for a, b in ranges))
            return super().chunks(ranges, notifications)

        @property
        def num_bytes(self) -> int:
            """The file's size (one stat or HEAD request, retried, then remembered)."""
            if getattr(self, "_size", None) is None:
                self._size = int(self._fs.size(self._file_path))
            return self._size

    return CountingMemmapSource, RemoteSource


def local_source() -> type:
    """The uproot source class for local files (memory-mapped, counting bytes)."""
    return _sources()[0]


def remote_source() -> type:
    """The uproot source class for URLs (retries, readahead, counting bytes)."""
    return _sources()[1]


class _Pending:
    """Block ``index`` of a background read (a concurrent future of a list of blocks)."""

    def __init__(self, future: Any, index: int, size: int) -> None:
        self.future, self.index, self.nbytes = future, index, size

    def __len__(self) -> int:
        return self.nbytes

    def result(self) -> Any:
        """The block's bytes as a uint8 array (raises what the read raised)."""
        import numpy as np

        return np.frombuffer(self.future.result()[self.index], dtype=np.uint8)


class _BlockCache:
    """Blocks of remote files (arrays, or _Pending reads) shared by all sources of this process, least recently used out."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._blocks: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, url: str, number: int) -> Any:
        """Block ``number`` of ``url`` (an array or a _Pending), or None."""
        with self._lock:
            block = self._blocks.get((url, number))
            if block is not None:
                self._blocks.move_to_end((url, number))
            return block

    def put(self, url: str, number: int, block: Any) -> None:
        """Keep ``block``, dropping the least recently used blocks beyond the budget."""
        with self._lock:
            old = self._blocks.pop((url, number), None)
            self._size += len(block) - (len(old) if old is not None else 0)
            self._blocks[(url, number)] = block
            while self._size > self._budget and len(self._blocks) > 1:
                _, dropped = self._blocks.popitem(last=False)
                self._size -= len(dropped)


_BLOCKS = _BlockCache(CACHE_BYTES)


class _RetryingFS:
    """The fsspec filesystem of one RemoteSource, with its three reading calls retried; the rest delegated."""

    def __init__(self, fs: Any, owner: Any) -> None:
        self._wrapped = fs
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)

    def _done(self, result: T) -> T:
        self._owner._reached = True
        return result

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> Any:
        """The wrapped filesystem's cat_file, retried."""
        owner = self._owner
        return self._done(with_retries(owner._url, owner._remote, lambda: self._wrapped.cat_file(path, start=start, end=end, **kwargs), owner._reached))

    def size(self, path: str) -> int:
        """The wrapped filesystem's size, retried."""
        owner = self._owner
        return self._done(with_retries(owner._url, owner._remote, lambda: self._wrapped.size(path), owner._reached))

    async def _cat_blocks(self, path: str, starts: list[int], ends: list[int]) -> list[bytes]:
        """Bytes [start, end) of ``path`` for each pair: plain reads run together, each retried.

        Plain concurrent reads, not one vector read: XRootD's readv moved about 200 MB/s on loopback
        here against 500-900 MB/s for plain 2 MB reads, and refuses requests past its readv limits.
        """
        owner = self._owner

        async def one(start: int, end: int) -> bytes:
            if end <= start:
                return b""
            return await with_retries_async(owner._url, owner._remote, lambda: self._wrapped._cat_file(path, start=start, end=end), owner._reached)

        return self._done(list(await asyncio.gather(*(one(a, b) for a, b in zip(starts, ends)))))

    async def _cat_ranges(self, paths: list[str], starts: list[int], ends: list[int], **kwargs: Any) -> list[Any]:
        owner = self._owner

        async def once() -> list[Any]:
            out = await self._wrapped._cat_ranges(paths=paths, starts=starts, ends=ends, **kwargs)
            failed = next((r for r in out if isinstance(r, BaseException)), None)  # fsspec may return errors in the list
            if failed is not None:
                raise failed
            return out

        return self._done(await with_retries_async(owner._url, owner._remote, once, owner._reached))


# ---------------------------------------------------------------------------------------------
# Opening
# ---------------------------------------------------------------------------------------------


@functools.cache
def _configure_xrootd(timeout: int) -> None:
    """Let this process's XRootD client give up on a connection within ``timeout`` s, once: our retries do the rest."""
    from sbt_batch.common.optional import require

    EnvPutInt = require("XRootD.client", "reading root:// URLs").EnvPutInt

    EnvPutInt("ConnectionRetry", 1)  # the client's own default: 5 tries over 120 s windows, per connection
    EnvPutInt("ConnectionWindow", timeout)
    EnvPutInt("RequestTimeout", timeout)
    EnvPutInt("TimeoutResolution", 1)  # how often it checks timeouts (15 s by default)


def uproot_options(url: str, opts: RemoteOptions) -> dict[str, Any]:
    """The uproot.open options that read ``url`` with ``opts`` (source class, protocol timeouts)."""
    from sbt_batch.common.optional import require

    scheme = url_scheme(url)
    options: dict[str, Any] = {"handler": remote_source(), "remote_options": opts}
    if scheme == "root":
        require("fsspec_xrootd", f"{url}: reading root://")  # a missing client fails here with the hint, not inside uproot
        seconds = max(1, math.ceil(opts.timeout))
        _configure_xrootd(seconds)
        options["timeout"] = seconds
    else:
        aiohttp = require("aiohttp", f"{url}: reading {scheme or 'http'}://")
        # per socket operation, not for the whole (possibly long) transfer
        options["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=opts.timeout, sock_read=opts.timeout)}
    return options


def open_url(url: str, opts: RemoteOptions | None = None, **uproot_kwargs: Any) -> Any:
    """Open ``url`` with uproot (retrying transient errors); RemoteError naming it when it cannot be read."""
    import uproot

    opts = (opts or RemoteOptions()).check()
    check_url(url)
    options = uproot_options(url, opts)
    return uproot.open(url, **options, **uproot_kwargs)


def remote_size(url: str, opts: RemoteOptions | None = None) -> int:
    """Size in bytes of the file at ``url`` (a stat or HEAD request, retried)."""
    import fsspec

    opts = (opts or RemoteOptions()).check()
    check_url(url)
    options = uproot_options(url, opts)
    storage = {k: v for k, v in options.items() if k in ("timeout", "client_kwargs")}
    fs, path = fsspec.core.url_to_fs(url, **storage)
    return int(with_retries(url, opts, lambda: fs.size(path), reached=False))
