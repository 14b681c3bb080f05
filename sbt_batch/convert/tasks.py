"""Converting on dask workers: each task turns a range of one input into finished HDF5 chunks.

The client plans ranges of at most one step whose boundaries fall on the output's chunk grid. A
worker reads its range, gathers the towers and encodes every whole chunk (:mod:`sbt_batch.convert.h5chunks`);
the events of the partial chunks at a file's two ends come back as arrays. The client writes the
results in input order: whole chunks with ``write_direct_chunk`` (no recompression, no part files,
no shared filesystem needed by remote workers), partial ones through HDF5. A bounded window of
ranges is in flight, so memory stays bounded whatever the input size.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sbt_batch.common.console import log
from sbt_batch.common.errors import InputFileError
from sbt_batch.convert.source import NtupleInput

if TYPE_CHECKING:  # pragma: no cover
    import h5py
    import numpy as np

    from sbt_batch.convert.h5chunks import EventWriter


@dataclass(frozen=True)
class Range:
    """Entries [start, stop) of input ``source``, planned at output event ``at`` (if nothing is skipped)."""

    source: int
    start: int
    stop: int
    at: int


def plan_ranges(entries: list[int], step: int, chunk: int) -> list[Range]:
    """Split inputs of ``entries`` events into ranges of at most ``step`` whose inner ends lie on the chunk grid."""
    ranges: list[Range] = []
    at = 0
    for i, n in enumerate(entries):
        if n == 0:  # still one (empty) range: the input is listed with 0 entries
            ranges.append(Range(i, 0, 0, at))
        start = 0
        while start < n:
            end = at + start + step
            stop = min(n, end - end % chunk - at)  # the last chunk boundary within one step
            ranges.append(Range(i, start, stop, at + start))
            start = stop
        at += n
    return ranges


def encode_range(source: NtupleInput, tree: str, start: int, stop: int, at: int, step: int, level: int | None) -> dict[str, Any]:
    """Dask task: entries [start, stop) as whole encoded chunks (from output event ``at``) plus the partial-chunk events."""
    import numpy as np

    from sbt_batch.convert.h5chunks import chunk_encoder
    from sbt_batch.convert.output import CHUNK_EVENTS
    from sbt_batch.convert.remote import bytes_read
    from sbt_batch.convert.source import iter_steps

    bytes0 = bytes_read()  # this thread's input bytes: the range's delta goes back for the MB/s of the progress bar

    chunk = CHUNK_EVENTS  # the output's chunk grid, on which plan_ranges put the inner range ends
    rows, cols = source.grid.shape
    total = stop - start
    head = np.empty((min(total, -at % chunk), rows, cols), dtype="<f4")
    encoder = chunk_encoder(level)
    chunks: list = []  # encoded chunks, kept apart (joining them would copy them again)
    rho = np.empty(total, dtype=np.float32)
    carry: np.ndarray | None = None
    n_head = n_carry = done = n_padded = 0

    def emit(events: np.ndarray) -> None:
        chunks.append(encoder.encode(events))

    try:
        for et, r, padded in iter_steps(source, tree, step, start, stop):
            n = len(r)
            n_padded += padded
            rho[done : done + n] = r
            block = et.reshape(n, rows, cols)
            pos = min(n, len(head) - n_head)
            head[n_head : n_head + pos] = block[:pos]
            n_head += pos
            if carry is None:
                carry = np.empty((chunk, rows, cols), dtype=block.dtype)
            if n_carry and pos < n:  # finish the chunk begun by the previous step
                k = min(n - pos, chunk - n_carry)
                carry[n_carry : n_carry + k] = block[pos : pos + k]
                n_carry, pos = n_carry + k, pos + k
                if n_carry == chunk:
                    emit(carry)
                    n_carry = 0
            while n - pos >= chunk:
                emit(block[pos : pos + chunk])
                pos += chunk
            if pos < n:
                carry[: n - pos] = block[pos:]
                n_carry = n - pos
            done += n
        if done != total:
            raise InputFileError(source.path, f"tree '{tree}': read {done} entries where {total} were expected (entries {start}-{stop})")
    except InputFileError as exc:
        return {"entries": 0, "error": str(exc), "problem": exc.problem, "bytes": bytes_read() - bytes0}
    tail = carry[:n_carry].astype("<f4") if carry is not None else np.empty((0, rows, cols), dtype="<f4")
    return {"entries": done, "error": None, "head": head, "tail": tail, "rho": rho, "chunks": chunks, "padded": n_padded,
            "bytes": bytes_read() - bytes0}


def write_range(res: dict[str, Any], h5: h5py.File, pos: int, file_index: int, writer: EventWriter) -> int:
    """Write one range's result at output event ``pos`` (towers through ``writer``); return the chunks written as they came."""
    import numpy as np

    from sbt_batch.convert.h5chunks import decode_chunk
    from sbt_batch.convert.names import INDEX_DATASET, RHO_DATASET

    ds, chunk = writer.ds, writer.c
    head, tail, chunks = res["head"], res["tail"], res["chunks"]
    if len(head):
        writer.write(pos, head)
    at = pos + len(head)
    aligned = at % chunk == 0
    tail_index = (0,) * (ds.ndim - 1)
    for data in chunks:
        if aligned:
            ds.id.write_direct_chunk((at, *tail_index), data, 0)
        else:  # an earlier input was skipped: this range moved off the chunk grid
            writer.write(at, decode_chunk(data, ds))
        at += chunk
    if len(tail):
        writer.write(at, tail)
    writer.flush()
    n = res["entries"]
    h5[RHO_DATASET][pos : pos + n] = res["rho"]
    h5[INDEX_DATASET][pos : pos + n] = np.full(n, file_index, dtype=np.int32)
    return len(chunks) if aligned else 0


@dataclass
class Progress:
    """What the ranges written so far add up to; passed from each write to the next (small and picklable)."""

    pos: int = 0  # output events written
    files: list = field(default_factory=list)  # (input path, entries) of each input written
    skipped: list = field(default_factory=list)  # (input path, reason)
    raw: int = 0  # chunks written as the workers encoded them
    bytes: int = 0  # input bytes read (compressed) by the ranges so far, for MB/s
    padded: list = field(default_factory=list)  # events padded or truncated (--pad-towers), per input written
    input_padded: int = 0  # the same, so far, for the current input
    start: int = 0  # output position where the current input began
    failed: str | None = None  # why the current input is being skipped
    error: tuple[str, str] | None = None  # (input, problem): a fatal error without --skip-bad; nothing more is written


def advance(state: Progress, res: dict[str, Any], output: Callable[[], h5py.File], path: str, first: bool, last: bool, skip_bad: bool) -> Progress:
    """Write one range's result (in input order) and return the new state; ``output()`` opens the file when it is needed."""
    from sbt_batch.convert.h5chunks import EventWriter
    from sbt_batch.convert.names import ET_DATASET

    state = replace(state, files=list(state.files), skipped=list(state.skipped), padded=list(state.padded))
    if state.error:
        return state
    state.bytes += res.get("bytes", 0)
    if first:
        state.start, state.failed, state.input_padded = state.pos, None, 0
    if state.failed is None and res["error"]:
        if not skip_bad:
            state.error = (path, res["problem"])
            return state
        state.failed = res["problem"]
    elif state.failed is None and res["entries"]:
        handle = output()
        state.raw += write_range(res, handle, state.pos, len(state.files), EventWriter(handle[ET_DATASET]))
        state.pos += res["entries"]
        state.input_padded += res.get("padded", 0)
    if last:
        if state.failed is not None:
            state.skipped.append((path, state.failed))
            state.pos = state.start  # what it wrote is overwritten by the next inputs or trimmed
        else:
            state.files.append((path, state.pos - state.start))
            state.padded.append(state.input_padded)
    return state


def write_on_worker(state: Progress, res: dict[str, Any], output: str, path: str, first: bool, last: bool, skip_bad: bool) -> Progress:
    """Dask task: open the output (shared filesystem), write one range after the previous one, close it."""
    import h5py

    files: list = []

    def opened() -> h5py.File:
        files.append(h5py.File(output, "r+"))
        return files[0]

    try:
        return advance(state, res, opened, path, first, last, skip_bad)
    finally:
        for f in files:
            f.close()


def workers_see(client: Any, output: str) -> bool:
    """True when every worker sees ``output`` at the same path (a shared or local filesystem)."""
    import os

    seen = client.run(os.path.exists, output)
    return bool(seen) and all(seen.values())


def convert_distributed(
    client: Any, sources: list[NtupleInput], output: str, tree: str, step: int, skip_bad: bool, level: int | None, show: bool, n_workers: int
) -> Progress:
    """Run the ranges of ``sources`` on ``client``'s ``n_workers`` workers and write them to ``output`` in input order.

    Where the workers see the output file, each range is written by the worker that encoded it, one
    after the other (a chain of small write tasks: no data crosses the network); otherwise the
    encoded chunks come back here and this process writes them.
    """
    import h5py
    from distributed import wait

    from sbt_batch.common.console import rate_text, task_bar
    from sbt_batch.convert.output import CHUNK_EVENTS

    ranges = plan_ranges([s.entries for s in sources], step, CHUNK_EVENTS)
    firsts = {k for k, r in enumerate(ranges) if r.start == 0}
    lasts = {k for k, r in enumerate(ranges) if r.stop == sources[r.source].entries}
    window = 2 * max(1, n_workers) + 1
    on_workers = workers_see(client, output)
    tag = uuid.uuid4().hex  # keys unique per run: other clients of a shared scheduler may run the same ranges
    state = Progress()
    h5 = None if on_workers else h5py.File(output, "r+")
    encoded: deque = deque()  # encode futures not yet handed to a write
    written: deque = deque()  # the chain of write futures not yet seen finished (on workers)
    submitted = 0

    def refill() -> None:
        nonlocal submitted
        while submitted < len(ranges) and len(encoded) < window:
            k, r = submitted, ranges[submitted]
            encoded.append(client.submit(encode_range, sources[r.source], tree, r.start, r.stop, r.at, step, level,
                                         key=f"sbt-convert-encode-{k}-{tag}", pure=False))  # fmt: skip
            submitted += 1

    def drain(keep: int) -> Progress:
        """The state after the finished writes (waiting until at most ``keep`` are unfinished)."""
        nonlocal state
        while written and (written[0].done() or len(written) > keep):
            state = written.popleft().result()
        return state

    t0 = time.perf_counter()
    bar, task = task_bar("converting", len(sources), show)
    try:
        with bar:
            refill()
            previous: Any = state
            for k, r in enumerate(ranges):
                enc = encoded.popleft()
                path = str(sources[r.source].path)
                if on_workers:  # written by the worker holding the encoded range, right after the range before it
                    wait([enc])
                    holders = list(client.who_has([enc]).get(enc.key, ()))
                    previous = client.submit(write_on_worker, previous, enc, output, path, k in firsts, k in lasts, skip_bad,
                                             workers=holders or None, allow_other_workers=True, priority=1,
                                             key=f"sbt-convert-write-{k}-{tag}", pure=False)  # fmt: skip
                    written.append(previous)
                    drain(window)
                else:
                    state = advance(state, enc.result(), lambda: h5, path, k in firsts, k in lasts, skip_bad)
                if state.error:
                    break
                refill()
                bar.update(task, completed=len(state.files) + len(state.skipped), rate=rate_text(state.pos, t0, state.bytes))
            drain(0)
            bar.update(task, completed=len(sources), rate=rate_text(state.pos, t0, state.bytes))
    finally:
        for fut in (*encoded, *written):
            fut.cancel()
        if h5 is not None:
            h5.close()
    log.debug("converted %d ranges on %d workers (written %s); %d chunks written as encoded",
              len(ranges), n_workers, "by the workers" if on_workers else "here", state.raw)  # fmt: skip
    return state
