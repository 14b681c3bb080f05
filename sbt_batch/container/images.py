"""Container images: pull, build, list and check them, and the argv that runs a command inside one.

Functions for the batch layer (argument lists only; shlex.join them into job scripts):

- :func:`exec_prefix` -- ``apptainer exec [--nv] --bind ... IMAGE`` or ``podman run --rm ... IMAGE``
  (the words before a command; the sbt-batch image's entrypoint runs ``sbt-batch ...`` given as a command);
- :func:`exec_argv` -- the whole command line, exact for any image (podman/docker use ``--entrypoint``);
- :func:`condor_image_settings` -- the submit-file keys for HTCondor's container support;
- :func:`find_runtime` / :func:`runtime_for` -- which runtime is on PATH / suits an image reference.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sbt_batch import __version__
from sbt_batch.common.console import log
from sbt_batch.common.errors import UserError

APPTAINER = ("apptainer", "singularity")
OCI = ("podman", "docker")
RUNTIMES = (*APPTAINER, *OCI)
BUILDERS = ("docker", "podman", "buildah")
DEFAULT_REPOSITORY = "ghcr.io/sbt-batch/sbt-batch"
GPU_BUILD_ARGS = {
    "BASE_IMAGE": "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04",
    "VARIANT": "gpu",
    "TF_PACKAGE": "tensorflow[and-cuda]==2.21.0",
}
# transports that apptainer understands in a reference, and those podman/docker can load
_APPTAINER_TRANSPORTS = ("docker://", "library://", "oras://", "shub://", "http://", "https://",
                         "docker-daemon:", "docker-archive:", "oci-archive:", "oci:")
_ARCHIVE_TRANSPORTS = ("docker-archive:", "oci-archive:")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")
_BIND_OPTS = {"ro", "rw"}


def repository() -> str:
    """The registry repository that CI publishes to ($SBT_BATCH_IMAGE_REPO overrides it)."""
    return os.environ.get("SBT_BATCH_IMAGE_REPO") or DEFAULT_REPOSITORY


def default_ref(gpu: bool = False) -> str:
    """The published image for this version: ``REPO:VERSION-cpu`` or ``-gpu``."""
    return f"{repository()}:{__version__}-{'gpu' if gpu else 'cpu'}"


def cache_root() -> Path:
    """``$SBT_BATCH_CACHE`` (default ~/.cache/sbt-batch)."""
    return Path(os.environ.get("SBT_BATCH_CACHE") or str(Path.home() / ".cache" / "sbt-batch"))


def cache_dir() -> Path:
    """Where pulled SIF files live: ``$SBT_BATCH_CACHE/images``."""
    return cache_root() / "images"


def runtime_env(runtime: str) -> dict[str, str] | None:
    """Environment for a podman/buildah call: the storage of scripts/build-image.sh when that exists
    and CONTAINERS_CONF is not set (so its images are found and no bridge network is made); else None."""
    if runtime not in ("podman", "buildah") or os.environ.get("CONTAINERS_CONF"):
        return None
    work = cache_root() / "podman"
    if not (work / "containers.conf").is_file() or not (work / "storage.conf").is_file():
        return None
    return {**os.environ, "CONTAINERS_CONF": str(work / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(work / "storage.conf")}


# ---- references and runtimes -------------------------------------------------------------------


def _is_local_path(image: str) -> bool:
    return image.endswith(".sif") or image.startswith(("/", "./", "../")) or Path(image).is_dir()


def check_ref(image: str, what: str = "image") -> str:
    """Return ``image`` if it is a usable reference or path, else raise a one-line UserError."""
    if not image or image.startswith("-") or any(not c.isprintable() for c in image):
        raise UserError(f"{what}: invalid image reference {image!r}")
    if _is_local_path(image):  # a SIF file or sandbox folder: any path (it is quoted where rendered)
        return image
    if any(c.isspace() for c in image):
        raise UserError(f"{what}: invalid image reference {image!r}")
    body = image
    for transport in (*_APPTAINER_TRANSPORTS,):
        if body.startswith(transport):
            body = body[len(transport):]
            break
    if body.startswith(_ARCHIVE_TRANSPORTS) or image.startswith(_ARCHIVE_TRANSPORTS):
        return image
    if not _REF.match(body.lstrip("/")):
        raise UserError(f"{what}: invalid image reference {image!r}")
    return image


def _archive_path(image: str) -> Path | None:
    for transport in _ARCHIVE_TRANSPORTS:
        if image.startswith(transport):
            return Path(image[len(transport):].split(":", 1)[0] if transport == "oci-archive:" else image[len(transport):])
    return None


def find_runtime(preferred: str | None = None, candidates: Sequence[str] = RUNTIMES) -> str:
    """The first container runtime of ``candidates`` on PATH (or ``preferred``), else a UserError."""
    if preferred:
        if preferred not in RUNTIMES:
            raise UserError(f"--runtime: unknown container runtime {preferred!r} (use {', '.join(RUNTIMES)})")
        if not shutil.which(preferred):
            raise UserError(f"--runtime: {preferred} not found on PATH")
        return preferred
    for name in candidates:
        if shutil.which(name):
            return name
    raise UserError(f"no container runtime found: install {' or '.join(candidates)} (none is on PATH)")


def runtime_for(image: str, preferred: str | None = None) -> str:
    """The runtime that suits ``image``: apptainer for SIF files and folders, podman/docker for local tags."""
    check_ref(image)
    if _is_local_path(image) and not image.startswith(_ARCHIVE_TRANSPORTS):
        if preferred in OCI:
            raise UserError(f"{image}: {preferred} cannot run a SIF file or folder; use apptainer or singularity")
        return find_runtime(preferred, APPTAINER)
    if image.startswith(("library://", "oras://", "shub://")):
        return find_runtime(preferred, APPTAINER)
    if image.startswith("docker://"):
        return find_runtime(preferred, RUNTIMES)
    return find_runtime(preferred, (*OCI, *APPTAINER))


def apptainer_ref(image: str) -> str:
    """The reference as apptainer takes it: paths and transports as given, plain names as docker://."""
    if _is_local_path(image) or image.startswith(_APPTAINER_TRANSPORTS):
        return image
    return f"docker://{image}"


def oci_ref(image: str) -> str:
    """The reference as podman/docker take it (docker:// dropped)."""
    return image[len("docker://"):] if image.startswith("docker://") else image


def check_bind(spec: str) -> tuple[str, str, str | None]:
    """Split ``SRC[:DST[:ro|rw]]`` into (src, dst, opts); a UserError for anything else."""
    if not spec or "," in spec or any(c.isspace() and c != " " for c in spec) or spec.startswith("-"):
        raise UserError(f"--bind: invalid bind {spec!r} (use SRC[:DST[:ro|rw]] without commas)")
    parts = spec.split(":")
    if len(parts) > 3 or (len(parts) == 3 and parts[2] not in _BIND_OPTS):
        raise UserError(f"--bind: invalid bind {spec!r} (use SRC[:DST[:ro|rw]])")
    src = parts[0]
    dst = parts[1] if len(parts) > 1 and parts[1] else src
    opts = parts[2] if len(parts) == 3 else None
    if not src.startswith("/") or not dst.startswith("/"):
        raise UserError(f"--bind: {spec!r}: paths must be absolute")
    return src, dst, opts


# ---- argv inside an image (used by the batch layer) ----------------------------------------------


def exec_prefix(
    runtime: str,
    image: str,
    binds: Iterable[str] = (),
    gpus: int = 0,
    workdir: str | None = None,
    network: str = "none",
    env: Mapping[str, str] | None = None,
    host_pid: bool = False,
) -> list[str]:
    """The words that run a following command inside ``image`` with ``runtime``."""
    check_ref(image)
    mounts = [":".join([src, dst, *([opts] if opts else [])]) for src, dst, opts in map(check_bind, binds)]
    env = dict(env or {})
    for key in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UserError(f"--env: invalid variable name {key!r}")
    assignments = [f"{key}={value}" for key, value in env.items()]

    def options(bind_flag: str, workdir_flag: str, env_flag: str) -> list[str]:
        """The bind, working-directory and environment words (the same for every runtime but their flags)."""
        words = [w for m in mounts for w in (bind_flag, m)]
        words += [workdir_flag, workdir] if workdir else []
        return words + [w for a in assignments for w in (env_flag, a)]

    if runtime in APPTAINER:
        return [runtime, "exec", *(["--nv"] if gpus else []), *options("--bind", "--pwd", "--env"), apptainer_ref(image)]
    if runtime in OCI:
        if _is_local_path(image) and not image.startswith(_ARCHIVE_TRANSPORTS):
            raise UserError(f"{image}: {runtime} cannot run a SIF file or folder; use apptainer or singularity")
        words = [runtime, "run", "--rm", "--network", network]
        if host_pid:  # the batch layer signals task process groups from outside the container
            words += ["--pid", "host"]
        uid, gid = os.getuid(), os.getgid()
        if runtime == "podman" and uid != 0:
            words += ["--userns", "keep-id"]
        else:  # root, or docker: run as the caller so that outputs in bind mounts belong to them
            words += ["--user", f"{uid}:{gid}"]
        if gpus:
            words += ["--device", "nvidia.com/gpu=all"] if runtime == "podman" else ["--gpus", "all"]
        return [*words, *options("-v", "-w", "-e"), oci_ref(image)]
    raise UserError(f"container runtime {runtime!r} is not supported (use {', '.join(RUNTIMES)})")


def exec_argv(runtime: str, image: str, argv: Sequence[str], **options: Any) -> list[str]:
    """The full command that runs ``argv`` inside ``image`` (exact for any image's entrypoint)."""
    if not argv:
        raise UserError("no command given to run inside the image")
    prefix = exec_prefix(runtime, image, **options)
    if runtime in OCI:  # replace the image's entrypoint by the command itself
        return [*prefix[:-1], "--entrypoint", argv[0], prefix[-1], *argv[1:]]
    return [*prefix, *argv]


def condor_image_settings(image: str, style: str = "container_image") -> dict[str, str]:
    """HTCondor submit keys for a job in ``image``: ``container_image`` or ``+SingularityImage``."""
    check_ref(image)
    if style == "container_image":
        return {"container_image": image if _is_local_path(image) else apptainer_ref(image)}
    if style == "singularity":
        return {"+SingularityImage": json.dumps(apptainer_ref(image))}
    raise UserError(f"condor image style {style!r}: use container_image or singularity")


# ---- pull ---------------------------------------------------------------------------------------


def sif_name(image: str) -> str:
    """A file name for the SIF of ``image``: ``ghcr.io/x/y:1-cpu`` -> ``ghcr.io_x_y_1-cpu.sif``."""
    body = image.split("://", 1)[-1]
    for transport in _ARCHIVE_TRANSPORTS:
        body = body[len(transport):] if body.startswith(transport) else body
    body = Path(body).name if _archive_path(image) else body
    body = re.sub(r"\.(tar|tgz|tar\.gz)$", "", body)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", body).strip("_") + ".sif"


def pull_command(runtime: str, image: str, dest: Path | None = None) -> list[str]:
    """The command that pulls ``image`` (to SIF file ``dest`` for apptainer)."""
    check_ref(image)
    if runtime in APPTAINER:
        if dest is None:
            raise UserError("pull: apptainer needs a destination SIF file")
        # `pull` takes registry references; archives are converted with `build`
        verb = "build" if image.startswith((*_ARCHIVE_TRANSPORTS, "docker-daemon:", "oci:")) else "pull"
        return [runtime, verb, "--force", str(dest), apptainer_ref(image)]
    if runtime == "podman":
        return ["podman", "pull", image if image.startswith(_ARCHIVE_TRANSPORTS) else oci_ref(image)]
    if runtime == "docker":
        archive = _archive_path(image)
        if archive is not None:
            return ["docker", "load", "-i", str(archive)]
        return ["docker", "pull", oci_ref(image)]
    raise UserError(f"container runtime {runtime!r} is not supported (use {', '.join(RUNTIMES)})")


def pull(image: str, runtime: str | None = None, dest_dir: Path | None = None) -> str:
    """Pull ``image``: a SIF in the cache with apptainer, else into podman/docker; returns what to run."""
    check_ref(image)
    archive = _archive_path(image)
    if archive is not None and not archive.is_file():
        raise UserError(f"{archive}: image archive not found")
    runtime = find_runtime(runtime, RUNTIMES if not _is_local_path(image) else APPTAINER)
    if runtime in APPTAINER:
        from sbt_batch.common.fileio import atomic_path, check_writable_dir

        dest_dir = Path(dest_dir) if dest_dir else cache_dir()
        dest_dir.mkdir(parents=True, exist_ok=True)
        check_writable_dir(dest_dir, "image cache")
        dest = dest_dir / sif_name(image)
        with atomic_path(dest, suffix=".sif") as tmp:
            _run(pull_command(runtime, image, tmp), f"{runtime} pull {image}")
        return str(dest)
    proc = _run(pull_command(runtime, image), f"{runtime} pull {image}", capture=True)
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if archive is not None and lines:
        # podman pull prints the image id; docker load prints "Loaded image: REF"
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return oci_ref(image)


def _run(argv: list[str], what: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a runtime command; a failure becomes one line with the tool's last message."""
    log.info("running: %s", " ".join(argv))
    try:
        proc = subprocess.run(argv, text=True, capture_output=capture, stdin=subprocess.DEVNULL,
                              stderr=subprocess.PIPE if not capture else None, env=runtime_env(argv[0]))
    except OSError as exc:
        raise UserError(f"{what}: cannot run {argv[0]} ({exc.strerror})") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
        raise UserError(f"{what}: failed with exit code {proc.returncode}" + (f": {lines[-1]}" if lines else ""))
    return proc


# ---- build --------------------------------------------------------------------------------------


def find_context(context: Path | None = None) -> Path:
    """The source tree with containers/Dockerfile: ``context``, else the cwd or the package's checkout."""
    if context is not None:
        if not (Path(context) / "containers" / "Dockerfile").is_file():
            raise UserError(f"{context}: containers/Dockerfile not found (use a sbt-batch source checkout)")
        return Path(context)
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "containers" / "Dockerfile").is_file() and (folder / "setup.cfg").is_file():
                return folder
    raise UserError("containers/Dockerfile not found: run from a sbt-batch source checkout or pass --context")


def build_command(
    builder: str,
    context: Path,
    tag: str,
    gpu: bool = False,
    base: str | None = None,
    build_args: Mapping[str, str] | None = None,
) -> list[str]:
    """The docker/podman/buildah command that builds the CPU or GPU image from containers/Dockerfile."""
    check_ref(tag, "--tag")
    args = {"SBT_BATCH_VERSION": __version__, **(GPU_BUILD_ARGS if gpu else {"VARIANT": "cpu"})}
    if base:
        args["BASE_IMAGE"] = check_ref(base, "--base")
    args.update(build_args or {})
    for key in args:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UserError(f"--build-arg: invalid name {key!r}")
    if builder == "docker":
        words = ["docker", "build"]
    elif builder == "podman":
        words = ["podman", "build", "--network", "host"]
    elif builder == "buildah":
        words = ["buildah", "bud", "--network", "host", "--layers"]
    else:
        raise UserError(f"image build: unknown builder {builder!r} (use {', '.join(BUILDERS)})")
    for key, value in args.items():
        words += ["--build-arg", f"{key}={value}"]
    return [*words, "-f", str(context / "containers" / "Dockerfile"), "-t", tag, str(context)]


def build(
    gpu: bool = False,
    tag: str | None = None,
    context: Path | None = None,
    builder: str | None = None,
    base: str | None = None,
    build_args: Mapping[str, str] | None = None,
) -> str:
    """Build the image from the source tree with docker, podman or buildah; returns its tag."""
    context = find_context(context)
    if builder is None:
        try:
            builder = find_runtime(None, BUILDERS)
        except UserError:
            raise UserError("image build needs docker, podman or buildah on PATH "
                            "(apptainer then converts the result: see containers/sbt-batch.def)") from None
    elif not shutil.which(builder):
        raise UserError(f"--builder: {builder} not found on PATH")
    tag = tag or f"sbt-batch:{__version__}-{'gpu' if gpu else 'cpu'}"
    _run(build_command(builder, context, tag, gpu, base, build_args), f"{builder} build {tag}")
    return tag


# ---- list and check -----------------------------------------------------------------------------


def list_images(runtime: str | None = None) -> list[dict[str, str]]:
    """SIF files in the cache and sbt-batch images known to podman/docker."""
    rows: list[dict[str, str]] = []
    folder = cache_dir()
    if folder.is_dir() and runtime in (None, *APPTAINER):
        for sif in sorted(folder.glob("*.sif")):
            rows.append({"runtime": "apptainer", "image": str(sif), "size": f"{sif.stat().st_size / 1e6:.0f} MB"})
    for name in OCI if runtime in (None, *OCI) else ():
        if (runtime and name != runtime) or not shutil.which(name):
            continue
        argv = [name, "images", "--format", "{{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}"]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                                  env=runtime_env(name))
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.info("%s images failed: %s", name, exc)
            continue
        if proc.returncode != 0:
            log.info("%s images failed: %s", name, (proc.stderr.strip().splitlines() or ["?"])[-1])
            continue
        for line in proc.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and "sbt-batch" in parts[0]:
                rows.append({"runtime": name, "image": parts[0], "id": parts[1], "size": parts[2]})
    return rows


def check(image: str, runtime: str | None = None, gpus: int = 0, quick: bool = False) -> int:
    """Run ``sbt-batch selfcheck`` inside ``image`` (output streamed); returns its exit code."""
    check_ref(image)
    if (image.endswith(".sif") or image.startswith(("/", "./", "../"))) and not Path(image).exists():
        raise UserError(f"{image}: image file not found")
    runtime = runtime_for(image, runtime)
    argv = exec_argv(runtime, image, ["sbt-batch", "selfcheck", *(["--quick"] if quick else [])], gpus=gpus)
    log.info("running: %s", " ".join(argv))
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, env=runtime_env(runtime)).returncode
    except OSError as exc:
        raise UserError(f"{runtime}: cannot run ({exc.strerror})") from None
