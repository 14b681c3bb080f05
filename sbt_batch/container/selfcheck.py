"""What this environment (a host or an image) provides: stack versions, Horovod build, GPUs, batch tools.

Nothing here imports TensorFlow or Horovod in-process: package versions come from the installed
metadata, and the framework checks run in a child interpreter with a timeout, so a missing or broken
TensorFlow/Horovod shows up as "not installed" or as an error line instead of crashing the check.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata, util
from pathlib import Path
from typing import Any

from sbt_batch import __version__
from sbt_batch.common.console import log
from sbt_batch.common.errors import UserError

NOT_INSTALLED = "not installed"
IMAGE_INFO = Path("/etc/sbt-batch/image.json")

# display name -> distribution names to try (first installed wins)
PACKAGES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "h5py": ("h5py",),
    "uproot": ("uproot",),
    "awkward": ("awkward",),
    "dask": ("dask",),
    "distributed": ("distributed",),
    "dask-jobqueue": ("dask-jobqueue",),
    "tensorflow": ("tensorflow-cpu", "tensorflow", "tensorflow-gpu", "tensorflow-intel"),
    "keras": ("keras",),
    "horovod": ("horovod",),
    "mpi4py": ("mpi4py",),
    "htcondor": ("htcondor",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tf2onnx": ("tf2onnx",),
    "matplotlib": ("matplotlib",),
    "mplhep": ("mplhep",),
}
TOOLS = ("sbatch", "srun", "condor_submit", "apptainer", "singularity", "podman", "docker", "mpirun", "horovodrun", "nvidia-smi")
FRAMEWORK_LIBS = {"tensorflow": "tensorflow", "pytorch": "torch", "mxnet": "mxnet"}

# Runs in a child interpreter: import TensorFlow and Horovod and print one JSON line.
_PROBE = r"""
import importlib.util, json, sys
want_tf, want_hvd = sys.argv[1] == "1", sys.argv[2] == "1"
out = {}
if want_tf:
    try:
        import tensorflow as tf
        out["tensorflow"] = {
            "version": tf.__version__,
            "built_with_cuda": bool(tf.test.is_built_with_cuda()),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        }
    except Exception as exc:
        out["tensorflow"] = {"error": "%s: %s" % (type(exc).__name__, exc)}
if want_hvd:
    try:
        if importlib.util.find_spec("sbt_batch.cnn.horovod") is not None:
            from sbt_batch.cnn import horovod as helper
            info = helper.build_info() if hasattr(helper, "build_info") else None
        else:
            info = None
        if info is None:
            import horovod.tensorflow as hvd
            info = {}
            for key, fn in (("mpi", "mpi_built"), ("gloo", "gloo_built")):
                info[key] = bool(getattr(hvd, fn)())
            for key, fn in (("nccl", "nccl_built"), ("cuda", "cuda_built"), ("rocm", "rocm_built"),
                            ("ddl", "ddl_built"), ("ccl", "ccl_built")):
                if hasattr(hvd, fn):
                    info[key] = bool(getattr(hvd, fn)())
        out["horovod"] = info
    except Exception as exc:
        out["horovod"] = {"error": "%s: %s" % (type(exc).__name__, exc)}
print(json.dumps(out, default=str))
"""


def package_versions(packages: dict[str, tuple[str, ...]] | None = None) -> dict[str, str]:
    """Installed version of each package (from its metadata, no import), or "not installed"."""
    versions: dict[str, str] = {}
    for name, dists in (packages or PACKAGES).items():
        versions[name] = NOT_INSTALLED
        for dist in dists:
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def _first_line(argv: list[str], timeout: float = 10) -> str:
    """First non-empty output line of a short command, or a short error text."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout:.0f} s"
    except OSError as exc:
        return f"cannot run ({exc.strerror})"
    lines = [line.strip() for line in (proc.stdout + "\n" + proc.stderr).splitlines() if line.strip()]
    if proc.returncode != 0:
        return f"exit {proc.returncode}: {lines[0] if lines else ''}".strip()
    return lines[0] if lines else ""


def tool_status(names: tuple[str, ...] = TOOLS) -> dict[str, dict[str, str | None]]:
    """For each tool: its path on PATH (None when absent) and the first line of ``--version``."""
    found = {name: shutil.which(name) for name in names}

    def version(name: str) -> str | None:
        path = found[name]
        if path is None:
            return None
        if name == "nvidia-smi":
            return "driver " + _first_line([path, "--query-gpu=driver_version", "--format=csv,noheader"])
        text = _first_line([path, "--version"])
        if name == "sbatch" and shutil.which("scontrol"):  # reachable = the controller answers
            ping = f"controller: {_first_line(['scontrol', 'ping'])}"
            text = ping if text.startswith("exit") else f"{text}; {ping}"
        return text if len(text) <= 100 else text[:97] + "..."

    with ThreadPoolExecutor(max_workers=4) as pool:
        versions = dict(zip(names, pool.map(version, names)))
    return {name: {"path": found[name], "version": versions[name]} for name in names}


def nvidia_gpus() -> list[str]:
    """GPUs that nvidia-smi lists (index, name, memory), or [] without nvidia-smi or GPUs."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        proc = subprocess.run(
            [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("nvidia-smi failed: %s", exc)
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()] if proc.returncode == 0 else []


def horovod_frameworks() -> dict[str, bool]:
    """Which Horovod framework extensions are installed (by their compiled library files, no import)."""
    try:
        spec = util.find_spec("horovod")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return {}
    root = Path(next(iter(spec.submodule_search_locations)))
    return {name: any((root / sub).glob("mpi_lib*.so")) for name, sub in FRAMEWORK_LIBS.items()}


def probe_frameworks(tensorflow: bool, horovod: bool, python: str = sys.executable, timeout: float = 300) -> dict[str, Any]:
    """Import TensorFlow/Horovod in a child interpreter; what they report, or an error per framework."""
    if not (tensorflow or horovod):
        return {}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    argv = [python, "-c", _PROBE, "1" if tensorflow else "0", "1" if horovod else "0"]

    def failed(error: str) -> dict[str, Any]:
        return {k: {"error": error} for k, wanted in (("tensorflow", tensorflow), ("horovod", horovod)) if wanted}

    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return failed(f"import did not finish within {timeout:.0f} s")
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return failed(f"probe crashed ({tail})")


def image_info() -> dict[str, Any]:
    """Where this runs: inside an sbt-batch image (its build info), another container, or a host."""
    info: dict[str, Any] = {"container": None, "image": None}
    if IMAGE_INFO.is_file():
        try:
            info["image"] = json.loads(IMAGE_INFO.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            info["image"] = {"error": str(exc)}
    if os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER"):
        info["container"] = "apptainer"
    elif Path("/run/.containerenv").exists():
        info["container"] = "podman"
    elif Path("/.dockerenv").exists():
        info["container"] = "docker"
    elif info["image"] is not None:
        info["container"] = "unknown"
    return info


def collect(quick: bool = False) -> dict[str, Any]:
    """The whole report as a JSON-able dict (``quick`` skips importing TensorFlow/Horovod)."""
    versions = package_versions()
    have_tf = versions["tensorflow"] != NOT_INSTALLED
    have_hvd = versions["horovod"] != NOT_INSTALLED
    probe = {} if quick else probe_frameworks(have_tf, have_hvd)
    horovod: dict[str, Any] = {"version": versions["horovod"]}
    if have_hvd:
        horovod["frameworks"] = horovod_frameworks()
        if "horovod" in probe:
            horovod["build"] = probe["horovod"]
    return {
        "sbt_batch": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "environment": image_info(),
        "packages": {"sbt-batch": __version__, **versions},
        "tensorflow": probe.get("tensorflow", {"version": versions["tensorflow"]}),
        "horovod": horovod,
        "gpus": {
            "nvidia_smi": nvidia_gpus(),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "tensorflow": probe.get("tensorflow", {}).get("gpus"),
        },
        "tools": tool_status(),
    }


def missing(report: dict[str, Any], required: list[str]) -> list[str]:
    """The required components that the report shows as absent or broken."""
    problems = []
    for name in required:
        key = name.lower()
        version = report["packages"].get(key)
        if version is None and key not in report["tools"]:
            raise UserError(f"--require: unknown component {name!r} (use a package or tool name that selfcheck lists)")
        if version == NOT_INSTALLED:
            problems.append(f"{name} not installed")
        elif key in report["tools"] and not report["tools"][key]["path"]:
            problems.append(f"{name} not on PATH")
        elif key == "tensorflow" and "error" in report["tensorflow"]:
            problems.append(f"tensorflow does not import ({report['tensorflow']['error']})")
        elif key == "horovod":
            build = report["horovod"].get("build", {})
            if "error" in build:
                problems.append(f"horovod does not import ({build['error']})")
            elif not report["horovod"].get("frameworks", {}).get("tensorflow"):
                problems.append("horovod was built without TensorFlow")
    return problems


def _yes(flag: object) -> str:
    return "[green]yes[/]" if flag else "[dim]no[/]"


def render(report: dict[str, Any]) -> list[Any]:
    """The report as rich renderables for people (two header lines, then tables), for the CLI to print."""
    from rich.table import Table

    out: list[Any] = []
    env = report["environment"]
    where = f"container ({env['container']})" if env["container"] else "host"
    image = env.get("image") or {}
    if image:
        where += f", sbt-batch image {image.get('variant', '?')} built from {image.get('base_image', '?')}"
    out.append(f"[bold]sbt-batch {report['sbt_batch']}[/] on {report['platform']}, Python {report['python']}")
    out.append(f"running on: {where}")

    stack = Table(title="Stack", title_justify="left", show_header=False)
    for name, version in report["packages"].items():
        stack.add_row(name, f"[red]{version}[/]" if version == NOT_INSTALLED else version)
    tf = report["tensorflow"]
    if "error" in tf:
        stack.add_row("tensorflow import", f"[red]{tf['error']}[/]")
    elif "built_with_cuda" in tf:
        stack.add_row("tensorflow import", f"ok (built with CUDA: {_yes(tf['built_with_cuda'])})")
    out.append(stack)

    hvd = report["horovod"]
    table = Table(title="Horovod", title_justify="left", show_header=False)
    table.add_row("version", f"[red]{hvd['version']}[/]" if hvd["version"] == NOT_INSTALLED else hvd["version"])
    if "frameworks" in hvd:
        table.add_row("frameworks", ", ".join(f"{k} {_yes(v)}" for k, v in hvd["frameworks"].items()))
    build = hvd.get("build")
    if isinstance(build, dict) and "error" in build:
        table.add_row("import", f"[red]{build['error']}[/]")
    elif isinstance(build, dict):
        for key, value in build.items():
            if key == "version" and value == hvd["version"]:
                continue
            shown = ", ".join(f"{k} {_yes(v)}" for k, v in value.items()) if isinstance(value, dict) else (
                _yes(value) if isinstance(value, bool) else str(value))
            table.add_row(str(key), shown)
    out.append(table)

    gpus = report["gpus"]
    table = Table(title="GPUs", title_justify="left", show_header=False)
    table.add_row("nvidia-smi", "; ".join(gpus["nvidia_smi"]) or "[dim]none[/]")
    table.add_row("CUDA_VISIBLE_DEVICES", gpus["CUDA_VISIBLE_DEVICES"] if gpus["CUDA_VISIBLE_DEVICES"] is not None else "[dim]unset[/]")
    if gpus["tensorflow"] is not None:
        table.add_row("tensorflow sees", ", ".join(gpus["tensorflow"]) or "[dim]no GPU[/]")
    out.append(table)

    table = Table(title="Batch and container tools", title_justify="left", show_header=False)
    for name, info in report["tools"].items():
        if info["path"]:
            table.add_row(name, f"[green]{info['path']}[/]", info["version"] or "")
        else:
            table.add_row(name, "[dim]not found[/]", "")
    out.append(table)
    return out
