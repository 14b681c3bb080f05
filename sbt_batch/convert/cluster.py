"""Dask clusters for conversion: a local one sized to the cores, an existing scheduler, or dask-jobqueue.

Every cluster listens on loopback unless a site profile says otherwise. Profile keys for the
jobqueue clusters are validated (typos get a did-you-mean) and passed to the cluster class.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sbt_batch.common.config import check_keys
from sbt_batch.common.console import log
from sbt_batch.common.errors import UserError, one_line


@dataclass(frozen=True)
class JobqueueKind:
    """One ``--cluster`` kind: its dask-jobqueue class and the defaults added to the site profile's settings."""

    cls: str  # the class name in dask_jobqueue
    defaults: Mapping[str, Any] = field(default_factory=dict)


# --cluster KIND -> dask-jobqueue class; adding a kind is one line here.
JOBQUEUE_KINDS: dict[str, JobqueueKind] = {
    "slurm": JobqueueKind("SLURMCluster", {"walltime": "01:00:00"}),
    "condor": JobqueueKind("HTCondorCluster", {"disk": "1GB"}),
}
CLUSTERS = tuple(JOBQUEUE_KINDS)
JOBQUEUE_KEYS = (
    "cores", "processes", "memory", "walltime", "queue", "account", "project", "disk", "interface",
    "python", "job_name", "job_extra_directives", "job_script_prologue", "job_directives_skip",
    "local_directory", "log_directory", "worker_extra_args", "scheduler_options", "death_timeout",
    "submit_command_extra", "shebang", "nanny", "start_timeout",
)  # fmt: skip
DEFAULT_START_TIMEOUT = 300.0
LOOPBACK_ANY_PORT = "127.0.0.1:0"  # the scheduler's HTTP server: loopback only, any free port
# dask starts workers with MALLOC_TRIM_THRESHOLD_=64k, which also fixes glibc's mmap threshold at 128k:
# every large array is then a fresh mmap, and page faults made conversion ~30% slower in a worker than
# in-process. Keep freed memory (bounded by --step-size) for reuse instead. No statistical profiler:
# it costs CPU in every worker and nobody looks at its dashboard here.
MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": 256 * 2**20, "MALLOC_MMAP_THRESHOLD_": 32 * 2**20}
WORKER_CONFIG = {
    "distributed.worker.multiprocessing-method": "forkserver",
    "distributed.worker.profile.enabled": False,
    **{f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in MALLOC_ENV.items()},
}


def default_workers() -> int:
    """Worker processes for a local cluster: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover (not Linux)
        return max(1, os.cpu_count() or 1)


def check_cluster_options(scheduler: str | None, cluster: str | None, jobs: int | None) -> None:
    """Raise a UserError naming the option when ``--scheduler``, ``--cluster`` and ``--jobs`` do not go together."""
    if cluster is not None and cluster not in CLUSTERS:
        raise UserError(f"--cluster: expected one of {', '.join(CLUSTERS)}, got {cluster!r}")
    if scheduler and cluster:
        raise UserError("--scheduler and --cluster cannot be combined")
    if jobs is not None and not cluster:
        raise UserError(f"--jobs needs --cluster {'|'.join(CLUSTERS)}")
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs: must be at least 1, got {jobs}")


def local_cluster(workers: int | None = None) -> Any:
    """A local dask cluster of single-threaded worker processes on loopback (``workers`` defaults to the cores)."""
    import dask
    from distributed import LocalCluster

    n = workers or default_workers()
    # forkserver starts workers about twice as fast as spawn, without forking this threaded process
    with dask.config.set(WORKER_CONFIG):
        return LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=LOOPBACK_ANY_PORT, silence_logs=logging.ERROR, memory_limit=0,
        )  # fmt: skip


def jobqueue_cluster(kind: str, profile: dict[str, Any] | None = None) -> Any:
    """The dask-jobqueue cluster of ``kind`` (JOBQUEUE_KINDS; not scaled yet), settings from a site ``profile``."""
    check_cluster_options(None, kind, None)
    spec = JOBQUEUE_KINDS[kind]
    settings = dict(profile or {})
    check_keys(settings, JOBQUEUE_KEYS, f"{kind} cluster profile")
    settings.pop("start_timeout", None)
    from sbt_batch.common.optional import require

    dask_jobqueue = require("dask_jobqueue", f"--cluster {kind}")
    options: dict[str, Any] = {
        "cores": 1, "processes": 1, "memory": "2GB", "interface": "lo", "python": sys.executable,
        "job_name": "sbt-convert",
    }  # fmt: skip
    options.update(spec.defaults)
    options.update(settings)
    # without a nanny the worker runs in the job's own process, so the exports reach glibc unchanged
    options.setdefault("nanny", False)
    exports = [f"export {k}={v}" for k, v in MALLOC_ENV.items()]
    options["job_script_prologue"] = exports + list(settings.get("job_script_prologue") or [])
    options["scheduler_options"] = {"dashboard_address": LOOPBACK_ANY_PORT, **(settings.get("scheduler_options") or {})}
    cls = getattr(dask_jobqueue, spec.cls)
    try:
        cluster = cls(**options)
    except Exception as exc:
        raise UserError(f"--cluster {kind}: cannot create the cluster ({one_line(exc, None)})") from None
    log.info("%s job script:\n%s", kind, cluster.job_script())
    return cluster


@contextlib.contextmanager
def dask_client(
    workers: int | None = None,
    scheduler: str | None = None,
    cluster: str | None = None,
    jobs: int | None = None,
    profile: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Yield a dask Client: on ``scheduler`` if given, else a jobqueue ``cluster``, else a local cluster."""
    from distributed import Client

    check_cluster_options(scheduler, cluster, jobs)
    owned = None
    try:
        if scheduler:
            try:
                client = Client(scheduler, timeout="10s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise UserError(f"--scheduler {scheduler}: cannot connect ({one_line(exc, None)})") from None
        elif cluster:
            owned = jobqueue_cluster(cluster, profile)
            owned.scale(jobs=jobs or 1)
            client = Client(owned)
            timeout = float((profile or {}).get("start_timeout", DEFAULT_START_TIMEOUT))
            try:
                client.wait_for_workers(1, timeout=timeout)
            except TimeoutError:
                client.close()
                raise UserError(f"--cluster {cluster}: no dask worker started within {timeout:g} s (check the queue)") from None
        else:
            owned = local_cluster(workers)
            client = Client(owned)
        try:
            yield client
        finally:
            client.close()
    finally:
        if owned is not None:
            owned.close()
