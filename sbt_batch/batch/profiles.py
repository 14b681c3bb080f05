"""Site profiles: YAML files with a site's scheduler settings, validated with clear errors; and the backends' defaults.

``--site NAME`` looks for ``NAME`` as a file path, then ``~/.config/sbt-batch/NAME.yaml``
(``$XDG_CONFIG_HOME`` respected), then the examples shipped in the package (``sbt_batch/batch/sites/``,
linked from ``jobs/sites/`` in a checkout), so a user's profile of the same name wins.
Command-line options override the profile.  Example (``sites/hpc-slurm.yaml``)::

    backend: slurm
    partition: gpu
    account: atlas
    time: "04:00:00"
    image: /scratch/images/sbt-batch.sif
    binds: [/scratch, /cvmfs]
    extra_directives: ["--qos=normal"]

The defaults every backend falls back on (Slurm's limits when ``scontrol`` does not report them, HTCondor's
universe, ...) are ``sites/defaults.yaml``, one section per scheduler as in dask-jobqueue's ``jobqueue.yaml``;
``~/.config/sbt-batch/defaults.yaml`` overrides single keys of it (:func:`backend_defaults`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sbt_batch.common.config import check_keys, load_yaml
from sbt_batch.common.errors import UserError

# key -> (type or tuple of types, help)
PROFILE_KEYS: dict[str, tuple[Any, str]] = {
    "description": (str, "free text"),
    "backend": (str, "default backend (see `sbt-batch submit --help`)"),
    "partition": (str, "Slurm partition"),
    "account": (str, "Slurm account"),
    "accounting_group": (str, "HTCondor accounting group (+AccountingGroup)"),
    "image": (str, "default container image (.sif path, docker:// or a podman image)"),
    "container_runtime": (str, "apptainer (default), singularity or podman"),
    "binds": (list, "paths bound into the container"),
    "extra_directives": (list, "extra #SBATCH options or HTCondor submit lines"),
    "env": (dict, "environment variables exported in the job"),
    "setup": (list, "trusted shell lines run before the task (e.g. module load apptainer)"),
    "time": ((str, int), "default wall time (MINUTES, HH:MM:SS, D-HH:MM:SS)"),
    "mem": ((str, int), "default memory per task (e.g. 4G)"),
    "cpus": (int, "default CPUs per task"),
    "gpus": (int, "default GPUs per task"),
    "max_running": (int, "default array throttle (%N) / local pool size"),
    "runs_dir": (str, "where run directories go"),
    "sbt_command": (list, "how jobs start sbt-batch outside a container"),
    "condor": (dict, "HTCondor-specific settings (see the condor backend)"),
}
PACKAGE_SITES = Path(__file__).resolve().parent / "sites"  # package data: the example profiles and defaults.yaml
DEFAULTS_NAME = "defaults"  # sites/defaults.yaml: the backends' defaults, not a site profile


def user_profile_dir() -> Path:
    """``$XDG_CONFIG_HOME/sbt-batch`` or ``~/.config/sbt-batch``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sbt-batch"


def example_profile_dir() -> Path | None:
    """The example profiles shipped in the package (``sbt_batch/batch/sites/``)."""
    return PACKAGE_SITES if PACKAGE_SITES.is_dir() else None


def find_profile(ref: str) -> Path:
    """Resolve ``--site REF`` to a YAML file (one-line UserError listing what exists when not found)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    dirs = [d for d in (user_profile_dir(), example_profile_dir()) if d is not None]
    if ref != DEFAULTS_NAME:
        for d in dirs:
            for ext in (".yaml", ".yml"):
                if (d / f"{ref}{ext}").is_file():
                    return d / f"{ref}{ext}"
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.y*ml")} - {DEFAULTS_NAME})
    listing = f"; known profiles: {', '.join(known)}" if known else ""
    raise UserError(f"--site {ref}: no such profile (looked in {', '.join(map(str, dirs))}){listing}")


def validate_profile(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Check keys and value types of a profile mapping; return it."""
    from sbt_batch.batch.resources import parse_mem, parse_time

    check_keys(data, PROFILE_KEYS, where)
    for key, value in data.items():
        kind, _help = PROFILE_KEYS[key]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
            raise UserError(f"{where}: '{key}' must be a {names}, got {type(value).__name__} {value!r}")
        if kind is list and not all(isinstance(v, str) for v in value):
            raise UserError(f"{where}: '{key}' must be a list of strings")
    if data.get("time") is not None:
        _wrap(where, parse_time, str(data["time"]))
    if data.get("mem") is not None:
        _wrap(where, parse_mem, str(data["mem"]))
    if data.get("backend"):
        from sbt_batch.batch.backend import backend_names  # names only: no backend module is imported

        if data["backend"] not in backend_names():
            raise UserError(f"{where}: 'backend' must be one of {', '.join(backend_names())}, got {data['backend']!r}")
    if data.get("container_runtime") and data["container_runtime"] not in {"apptainer", "singularity", "podman"}:
        raise UserError(f"{where}: 'container_runtime' must be apptainer, singularity or podman")
    for key in (data.get("env") or {}):
        if not str(key).isidentifier():
            raise UserError(f"{where}: env name {key!r} is not a valid variable name")
    for key in ("cpus", "gpus", "max_running"):
        if data.get(key) is not None and data[key] < 0:
            raise UserError(f"{where}: '{key}' must not be negative")
    return data


def _wrap(where: str, parse: Callable[[str], object], value: str) -> None:
    try:
        parse(value)
    except UserError as exc:
        raise UserError(f"{where}: {str(exc).replace('--', '', 1)}") from None


def load_profile(ref: str | None) -> dict[str, Any]:
    """Load and validate the profile ``ref`` ({} when None)."""
    if not ref:
        return {}
    path = find_profile(ref)
    data = load_yaml(path)
    validate_profile(data, str(path))
    data["_path"] = str(path)
    return data


def backend_defaults(backend: str) -> dict[str, Any]:
    """The defaults of ``backend``: its section of the package's ``sites/defaults.yaml``, updated from the user's."""
    user = user_profile_dir() / f"{DEFAULTS_NAME}.yaml"
    try:
        stat = user.stat()
        key: tuple[str, int, int] | None = (str(user), stat.st_mtime_ns, stat.st_size)  # read again after an edit
    except OSError:
        key = None
    return dict(_read_defaults(key[0] if key else None, key[1:] if key else ()).get(backend) or {})


@functools.lru_cache(maxsize=4)
def _read_defaults(user_file: str | None, _version: tuple[int, ...] = ()) -> dict[str, dict[str, Any]]:
    """Every section of the package's defaults, each updated key by key from ``user_file`` (checked against the package's keys)."""
    package = PACKAGE_SITES / f"{DEFAULTS_NAME}.yaml"
    merged = {name: dict(section or {}) for name, section in load_yaml(package).items()}
    if user_file is None:
        return merged
    user = load_yaml(user_file)
    for name, section in user.items():
        if not isinstance(section, dict):
            raise UserError(f"{user_file}: '{name}' must be a mapping of settings")
        if name in merged:
            check_keys(section, merged[name], f"{user_file}: {name}")
        merged.setdefault(name, {}).update(section)
    return merged
