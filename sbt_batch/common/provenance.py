"""Provenance: every artifact records what it came from, and ``sbt-batch provenance FILE`` prints the chain.

A *record* is a JSON object::

    {"schema": 1, "artifact": "model.keras", "step": "train", "tool": "sbt-batch", "tool_version": "0.1.0",
     "git_commit": "b98cafb..." | null, "image": {...} | null, "host": "node12", "time": "2026-12-01T09:00:00Z",
     "inputs": [ {"type": "root", "path": ..., "size": ..., "uuid": ...},
                 {"type": "hdf5", "path": ..., "size": ..., "digest": "xxh3_128:...", "provenance": {record}},
                 {"type": "model", "path": ..., "size": ..., "digest": ..., "provenance": {record}} ]}

Each input carries the record of the file it names, so a record holds the whole chain back to the
ROOT files and stays readable when the upstream files have moved. Where records live:

- converted and merged HDF5: the file attribute ``provenance`` (JSON text);
- ONNX exports: the model's ``metadata_props`` key ``sbt_batch.common.provenance``;
- everything else (``model.keras``, ``metrics.json``, frozen graphs, SavedModel and JPEG folders):
  a sidecar ``<artifact>.provenance.json`` beside it (``model.keras`` is a zip that Keras rewrites).

ROOT inputs are identified by size and the UUID in their header (no extra read); other inputs by an
xxHash3-128 digest of their bytes.  This module imports only the standard library at module level.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sbt_batch.common.errors import InputFileError, UserError
from sbt_batch.common.fileio import is_hdf5

SCHEMA = 1
H5_ATTR = "provenance"
ONNX_KEY = "sbt_batch.common.provenance"
SIDECAR_SUFFIX = ".provenance.json"
IMAGE_INFO = Path("/etc/sbt-batch/image.json")
_BLOCK = 8 * 1024 * 1024

_root_seen: dict[str, dict[str, Any]] = {}
_digests: dict[tuple[str, int, int, int], str] = {}
_allow_mixed: contextvars.ContextVar[bool] = contextvars.ContextVar("sbt_batch_allow_mixed", default=False)


# --------------------------------------------------------------------------- where and with what


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout this package runs from (read from .git, no subprocess), or None."""
    git = Path(__file__).resolve().parents[2] / ".git"  # sbt_batch/common/provenance.py -> the checkout
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: PATH"
            git = (git.parent / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        common = git / "commondir"
        bases = [git, (git / common.read_text().strip()).resolve()] if common.is_file() else [git]
        for base in bases:
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
        for base in bases:
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
    except (OSError, IndexError):
        return None
    return None


@functools.cache
def image_identity() -> dict[str, Any] | None:
    """What identifies the container image this process runs in (None outside an image).

    The image's own build facts come from /etc/sbt-batch/image.json (written by containers/Dockerfile);
    its digest from $SBT_BATCH_IMAGE_DIGEST (or a ``@sha256:`` reference in $SBT_BATCH_IMAGE), what the
    runtime says (podman's /run/.containerenv, Apptainer's $APPTAINER_CONTAINER).
    """
    env = os.environ
    in_image = env.get("SBT_BATCH_IN_IMAGE") == "1" or IMAGE_INFO.is_file()
    if not in_image:
        return None
    out: dict[str, Any] = {}
    try:
        out["info"] = json.loads(IMAGE_INFO.read_text())
    except (OSError, ValueError):
        pass
    ref = env.get("SBT_BATCH_IMAGE") or env.get("APPTAINER_CONTAINER") or env.get("SINGULARITY_CONTAINER")
    digest = env.get("SBT_BATCH_IMAGE_DIGEST")
    try:
        for line in Path("/run/.containerenv").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "image" and not ref:
                ref = value.strip('"')
            elif key == "imageid" and not digest:
                digest = "sha256:" + value.strip('"').removeprefix("sha256:")
    except OSError:
        pass
    if not digest and ref and "@sha256:" in ref:
        digest = ref.split("@", 1)[1]
    out["reference"] = ref
    out["digest"] = digest
    return out


def environment() -> dict[str, Any]:
    """Tool version, git commit, image, host and time of this process (the common part of every record)."""
    from sbt_batch import __version__

    return {"tool": "sbt-batch", "tool_version": __version__, "git_commit": git_commit(), "image": image_identity(),
            "host": socket.gethostname(), "time": utc_now()}


def new_record(artifact: str | os.PathLike[str], step: str, inputs: Sequence[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A provenance record of ``artifact`` made by ``step`` (convert, merge, train, evaluate, export) from ``inputs``."""
    return {"schema": SCHEMA, "artifact": Path(artifact).name, "step": step, **environment(), **extra, "inputs": list(inputs)}


# --------------------------------------------------------------------------- inputs


def remember_root(path: str | os.PathLike[str], rfile: Any) -> None:
    """Note a ROOT input's size and header UUID while convert has it open (no extra read)."""
    _root_seen[str(path)] = root_input(path, rfile)


def root_input(path: str | os.PathLike[str], rfile: Any) -> dict[str, Any]:
    """The input entry of an open ROOT file: path or URL, size (the header's fEND) and the file UUID."""
    f = getattr(rfile, "file", rfile)
    try:
        uuid = str(f.uuid)
    except Exception:  # a header too old or damaged to hold one
        uuid = None
    size = getattr(f, "fEND", None)
    if size is None:
        with contextlib.suppress(OSError):
            size = os.stat(path).st_size
    return {"type": "root", "path": _where(path), "size": None if size is None else int(size), "uuid": uuid}


def _where(path: str | os.PathLike[str]) -> str:
    """An absolute local path, or a URL unchanged."""
    text = str(path)
    return text if "://" in text else os.path.abspath(text)


def root_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Entries of ROOT inputs, from what :func:`remember_root` saw (opened again only when it saw nothing)."""
    out = []
    for path in paths:
        entry = _root_seen.get(str(path))
        if entry is None:
            import uproot

            try:
                with uproot.open(path) as rfile:
                    entry = root_input(path, rfile)
            except Exception:
                entry = {"type": "root", "path": str(path), "size": None, "uuid": None}
        out.append(entry)
    return out


def file_digest(path: str | os.PathLike[str]) -> str:
    """``xxh3_128:<hex>`` of the file's bytes (cached per path, size, mtime and inode within the process)."""
    import xxhash

    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _digests:
        return _digests[key]
    h = xxhash.xxh3_128()
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    _digests[key] = f"xxh3_128:{h.hexdigest()}"
    return _digests[key]


def _file_input(kind: str, path: str | os.PathLike[str], record: dict[str, Any] | None, digest: bool = True) -> dict[str, Any]:
    """The input entry of a file: its kind, path, size, digest (unless not wanted) and record."""
    path = Path(path)
    size: int | None
    value: str | None
    try:
        size, value = path.stat().st_size, (file_digest(path) if digest else None)
    except OSError:
        size, value = None, None
    return {"type": kind, "path": _where(path), "size": size, "digest": value, "provenance": record}


def hdf5_input(path: str | os.PathLike[str], digest: bool = True) -> dict[str, Any]:
    """The input entry of an HDF5 file: path, size, digest (unless not wanted) and the file's own record (or None)."""
    return _file_input("hdf5", path, read_hdf5(path), digest)


def artifact_input(path: str | os.PathLike[str], kind: str = "model") -> dict[str, Any]:
    """The input entry of any other artifact (a model): path, size, digest and its record (or None)."""
    try:
        record = read(path)
    except UserError:
        record = None
    return _file_input(kind, path, record)


# --------------------------------------------------------------------------- storing and reading


def stamp_hdf5(h5: Any, record: dict[str, Any]) -> None:
    """Store ``record`` as the ``provenance`` attribute (JSON text) of an open, writable HDF5 file."""
    h5.attrs[H5_ATTR] = json.dumps(record, separators=(",", ":"), default=str)


def read_hdf5(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance record in an HDF5 file, or None when it has none (or is not HDF5)."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            text = h5.attrs.get(H5_ATTR)
            version = h5.attrs.get("tool_version")
    except (OSError, ValueError):
        return None
    if text is None:
        return None
    try:
        return json.loads(text.decode() if isinstance(text, bytes) else str(text))
    except ValueError:
        return {"tool_version": version, "error": "unreadable provenance attribute"}


def stamp_convert(h5: Any, output: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]]) -> None:
    """convert's hook: record the ROOT inputs (size, UUID) in ``output`` (open as ``h5``)."""
    stamp_hdf5(h5, new_record(output, "convert", root_inputs(inputs)))


def stamp_merge(h5: Any, output: str | os.PathLike[str], parts: Sequence[str | os.PathLike[str]]) -> None:
    """merge's hook: record every part (path, size, its own record with the ROOT files) in ``output`` (open as ``h5``).

    Parts are not digested: they are intermediate outputs of one run, identified by their records, and
    a digest would add a second read of every part to collect.
    """
    stamp_hdf5(h5, new_record(output, "merge", [hdf5_input(p, digest=False) for p in parts]))


def sidecar(path: str | os.PathLike[str]) -> Path:
    """Where the record of a non-HDF5, non-ONNX artifact lives: ``<artifact>.provenance.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_sidecar(artifact: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write ``record`` beside ``artifact`` atomically; return the sidecar path."""
    from sbt_batch.common.fileio import write_json_atomic

    target = sidecar(artifact)
    write_json_atomic(target, record)
    return target


def stamp_onnx(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Put ``record`` into an ONNX file's ``metadata_props`` (rewritten atomically)."""
    from sbt_batch.common.fileio import atomic_path
    from sbt_batch.common.optional import require

    onnx = require("onnx", f"{path}: writing ONNX metadata")

    model = onnx.load(str(path))
    props = [p for p in model.metadata_props if p.key != ONNX_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_KEY, json.dumps(record, separators=(",", ":"), default=str)
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))


def _read_onnx(path: Path) -> dict[str, Any] | None:
    from sbt_batch.common.optional import require

    onnx = require("onnx", f"{path}: reading ONNX metadata")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputFileError(path, f"not an ONNX model ({' '.join(str(exc).split())[:120]})") from None
    for prop in model.metadata_props:
        if prop.key == ONNX_KEY:
            return json.loads(prop.value)
    return None


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record of any artifact (HDF5 attribute, ONNX metadata or sidecar); UserError if none."""
    path = Path(path)
    if path.name.endswith(SIDECAR_SUFFIX):
        path = path.with_name(path.name[: -len(SIDECAR_SUFFIX)])
    car = sidecar(path)
    if not path.exists() and not car.exists():
        raise InputFileError(path, "no such file or directory")
    record: dict[str, Any] | None = None
    if car.is_file():
        try:
            record = json.loads(car.read_text())
        except (OSError, ValueError) as exc:
            raise InputFileError(car, f"unreadable provenance sidecar ({exc})") from None
    elif path.is_file() and is_hdf5(path):
        record = read_hdf5(path)
    elif path.is_file() and path.suffix == ".onnx":
        record = _read_onnx(path)
    if not record:
        raise InputFileError(path, f"no provenance recorded (no {car.name}, no embedded record)")
    return record


# --------------------------------------------------------------------------- hooks for train, evaluate, export


def record_training(run_dir: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]]) -> Path:
    """train's hook: the record of RUN_DIR/model.keras (its training HDF5 files, digested) as a sidecar."""
    run_dir = Path(run_dir)
    model = run_dir / "model.keras"
    extra: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        extra["digest"] = file_digest(model)
    record = new_record(model, "train", [hdf5_input(p) for p in inputs], run_dir=str(run_dir.absolute()), **extra)
    return write_sidecar(model, record)


def record_evaluation(metrics: str | os.PathLike[str], run_dir: str | os.PathLike[str],
                      inputs: Sequence[str | os.PathLike[str]]) -> Path:
    """evaluate's hook: the record of metrics.json (the model and the evaluation HDF5 files) as a sidecar."""
    model = Path(run_dir) / "model.keras"
    record = new_record(metrics, "evaluate", [artifact_input(model), *(hdf5_input(p) for p in inputs)])
    return write_sidecar(metrics, record)


def record_export(target: str | os.PathLike[str], run_dir: str | os.PathLike[str], fmt: str) -> None:
    """export's hook: the record of an export (ONNX: in its metadata; others: a sidecar)."""
    target = Path(target)
    record = new_record(target, "export", [artifact_input(Path(run_dir) / "model.keras")], format=fmt)
    if fmt == "onnx":
        stamp_onnx(target, record)
    else:
        write_sidecar(target, record)


# --------------------------------------------------------------------------- collect: one tool version


@contextlib.contextmanager
def allow_mixed_versions(allow: bool) -> Iterator[None]:
    """Within this block, :func:`check_part_versions` accepts parts written by different tool versions."""
    token = _allow_mixed.set(bool(allow))
    try:
        yield
    finally:
        _allow_mixed.reset(token)


def part_version(path: str | os.PathLike[str]) -> str | None:
    """The tool version that wrote a converted HDF5 part (its ``tool_version`` attribute)."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            value = h5.attrs.get("tool_version")
    except (OSError, ValueError):
        return None
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def check_part_versions(parts: Sequence[str | os.PathLike[str]], allow_mixed: bool | None = None) -> None:
    """Raise a one-line UserError when the parts were written by different tool versions (unless allowed)."""
    if allow_mixed if allow_mixed is not None else _allow_mixed.get():
        return
    versions: dict[str, str] = {}
    for part in parts:
        versions.setdefault(part_version(part) or "unknown", str(part))
    if len(versions) > 1:
        shown = ", ".join(f"{v} ({Path(p).name})" for v, p in sorted(versions.items()))
        raise UserError(f"merge: the parts were written by different sbt-batch versions: {shown}; "
                        "convert them again with one version, or pass --allow-mixed")


# --------------------------------------------------------------------------- the chain


def chain_lines(record: dict[str, Any], path: str | os.PathLike[str] | None = None, max_roots: int = 20) -> list[str]:
    """The chain of ``record`` as indented text lines: the artifact and how it was made, then each input below it."""
    name = str(path) if path is not None else record.get("artifact", "?")
    return [f"{name}  ({_made(record)})", *_inputs_lines(record, 1, max_roots)]


def _made(record: dict[str, Any]) -> str:
    """``step: sbt-batch VERSION, git COMMIT, image ..., on HOST, at TIME``."""
    parts = (
        f"sbt-batch {record.get('tool_version', '?')}",
        f"git {str(record['git_commit'])[:12]}" if record.get("git_commit") else "",
        _image_text(record.get("image")),
        f"on {record['host']}" if record.get("host") else "",
        f"at {record['time']}" if record.get("time") else "",
    )
    return f"{record.get('step', '?')}: " + ", ".join(p for p in parts if p)


def _inputs_lines(record: dict[str, Any], depth: int, max_roots: int) -> list[str]:
    pad = "  " * (depth - 1) + "<- "
    lines: list[str] = []
    inputs = record.get("inputs") or []
    roots = [i for i in inputs if i.get("type") == "root"]
    for item in inputs:
        if item.get("type") == "root":
            continue
        sub = item.get("provenance")
        made = f"({_made(sub)})" if sub else "(no provenance recorded in this file)"
        lines.append(f"{pad}{item.get('path')}  [{item.get('type', '?')}, {_size(item.get('size'))}, "
                     f"{item.get('digest') or 'no digest'}]  {made}")
        if sub:
            lines += _inputs_lines(sub, depth + 1, max_roots)
    for item in roots[:max_roots]:
        lines.append(f"{pad}{item.get('path')}  [ROOT, {_size(item.get('size'))}, uuid {item.get('uuid') or '?'}]")
    if len(roots) > max_roots:
        lines.append(f"{pad}... and {len(roots) - max_roots} more ROOT file(s)")
    return lines


def _image_text(image: dict[str, Any] | None) -> str:
    if not image:
        return ""
    return f"image {image.get('digest') or image.get('reference') or (image.get('info') or {}).get('variant', '?')}"


def _size(n: int | None) -> str:
    """A byte count as text in decimal units (``12.3 MB``)."""
    if n is None:
        return "size ?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value} B"  # pragma: no cover


def root_files(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ROOT input anywhere up the chain of ``record`` (in order, each path once)."""
    out: dict[str, dict[str, Any]] = {}
    stack = [record]
    while stack:
        rec = stack.pop(0)
        for item in rec.get("inputs") or []:
            if item.get("type") == "root":
                out.setdefault(str(item.get("path")), item)
            elif item.get("provenance"):
                stack.append(item["provenance"])
    return list(out.values())
