"""Slurm backend: ``sbatch --parsable --array`` per array, ``squeue`` for state, ``scancel``.

The cluster's limits come from ONE ``scontrol show config`` per submission: every array index
must be below ``MaxArraySize`` (default 1001) and the controller holds at most ``MaxJobCount``
jobs (default 10000; every array task counts).  A submission is split into as many arrays as the
limits need; each array carries an *offset*, so array task ``t`` of an array with offset ``o`` runs
task index ``o + t`` (``"$((SLURM_ARRAY_TASK_ID + o))"`` in the script).  Resubmitting task 5000
alone is ``--array=0`` with offset 5000.  Job ids are ``<array job id>_<array task id>``; the
mapping to task indices is the submission's ``job_ids``.  With ``--max-running N`` and several
arrays, array k+1 starts after array k ended (``afterany``), so at most N tasks run at once.

State comes from the task's state.json; the scheduler is asked (one ``squeue -r -t all -j A,B,...``
call) only about unfinished tasks, since ``sacct`` needs slurmdbd, which many clusters (and the
local test cluster) do not have.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from sbt_batch.batch.backend import (
    CANCELLED,
    COMPLETED,
    FAILED,
    HELD,
    PENDING,
    REQUEUE_ASK,
    RUNNING,
    TIMEOUT,
    Backend,
    JobState,
    register_backend,
)
from sbt_batch.batch.profiles import backend_defaults
from sbt_batch.batch.render import Raw, container_prefix, find_template, render_template
from sbt_batch.batch.resources import format_slurm_time
from sbt_batch.batch.run import Run
from sbt_batch.common.errors import UserError

TEMPLATE = "array.sh.j2"
_STATE_MAP = {
    "PENDING": PENDING,
    "CONFIGURING": PENDING,
    "REQUEUED": PENDING,
    "REQUEUE_HOLD": HELD,
    "REQUEUE_FED": PENDING,
    "RESV_DEL_HOLD": HELD,
    "SUSPENDED": RUNNING,
    "RUNNING": RUNNING,
    "COMPLETING": RUNNING,
    "STAGE_OUT": RUNNING,
    "SIGNALING": RUNNING,
    "RESIZING": RUNNING,
    "COMPLETED": COMPLETED,
    "FAILED": FAILED,
    "BOOT_FAIL": FAILED,
    "NODE_FAIL": FAILED,
    "OUT_OF_MEMORY": FAILED,
    "DEADLINE": TIMEOUT,
    "TIMEOUT": TIMEOUT,
    "PREEMPTED": CANCELLED,
    "CANCELLED": CANCELLED,
    "REVOKED": CANCELLED,
    "SPECIAL_EXIT": FAILED,
}
_HOLD_REASONS = {"JobHeldUser", "JobHeldAdmin"}
log = logging.getLogger("sbt_batch")


def slurm_defaults() -> dict[str, Any]:
    """This backend's section of the packaged defaults (``sites/defaults.yaml``, ``slurm:``)."""
    return backend_defaults("slurm")


def default_limits() -> dict[str, int]:
    """Slurm's own MaxArraySize and MaxJobCount, assumed when ``scontrol`` does not report a value."""
    d = slurm_defaults()
    return {"MaxArraySize": int(d["max_array_size"]), "MaxJobCount": int(d["max_job_count"])}


def read_limits() -> dict[str, int]:
    """MaxArraySize and MaxJobCount from ONE ``scontrol show config`` call."""
    proc = _run_tool(["scontrol", "show", "config"], "scontrol show config")
    if proc.returncode != 0:
        raise UserError(f"slurm: scontrol show config failed: {_last_line(proc.stderr or proc.stdout)}")
    limits = default_limits()
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip().split(" ")[0]
        if key in limits and value.isdigit():
            limits[key] = int(value)
    return limits


def _limits_or_none() -> dict[str, int] | None:
    """:func:`read_limits`, or None (logged) when the controller cannot be reached."""
    try:
        return read_limits()
    except UserError as exc:
        log.warning("%s; assuming Slurm's default limits", exc)
        return None


def jobs_in_controller() -> int:
    """How many job records slurmctld holds now (array tasks counted one by one; one squeue call)."""
    proc = _run_tool(["squeue", "-h", "-r", "-t", "all", "-o", "%i"], "squeue")
    return proc.stdout.count("\n") if proc.returncode == 0 else 0


def split_arrays(indices: Sequence[int], max_array_size: int) -> list[tuple[int, list[int]]]:
    """Split sorted task indices into arrays ``(offset, indices)`` whose ids ``index - offset`` are below ``max_array_size``."""
    out: list[tuple[int, list[int]]] = []
    for i in sorted(set(indices)):
        if out and i - out[-1][0] < max_array_size:
            out[-1][1].append(i)
        else:
            out.append((i, [i]))
    return out


def array_spec(indices: Sequence[int], throttle: int | None = None) -> str:
    """Compress indices into a Slurm --array spec ("0-9,12,15-17%4")."""
    values = sorted(set(indices))
    if not values:
        raise ValueError("no task indices")
    parts = []
    start = prev = values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    spec = ",".join(parts)
    return f"{spec}%{throttle}" if throttle else spec


def _run_tool(argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client tool; one-line UserError when it cannot run or time out."""
    timeout = float(slurm_defaults()["scheduler_timeout"])
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise UserError(f"slurm: {argv[0]} not found (is the Slurm client installed and on PATH?)") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"slurm: {what} did not answer within {timeout:.0f} s (is slurmctld running?)") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


@register_backend("slurm")
class SlurmBackend(Backend):
    """Submit runs as Slurm job arrays."""

    script_name = "array.sh"
    requeue = REQUEUE_ASK  # a checkpointed task asks `scontrol requeue` for its job (requeue_job)

    def requeue_job(self) -> bool:
        """Ask Slurm to run this job again (``scontrol requeue $SLURM_JOB_ID``); False when it cannot."""
        job = os.environ.get("SLURM_JOB_ID")
        if not job:
            return False
        try:
            proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return proc.returncode == 0

    def plan_ranks(self, total: int, nodes: int, mpi: str) -> dict[str, Any]:
        """``total`` ranks as ``--ntasks`` of one job, started by ``srun --mpi=pmix`` or ``mpirun`` inside the allocation."""
        launcher = (["srun", "--mpi=pmix", "--kill-on-bad-exit=1"] if mpi == "srun" else
                    ["mpirun", "--bind-to", "none", "--map-by", "slot", *(["--allow-run-as-root"] if os.geteuid() == 0 else [])])
        return {"ntasks": total, "launcher": launcher}

    def check(self) -> None:
        """Fail with one line when sbatch is not installed."""
        if not shutil.which("sbatch"):
            raise UserError("slurm: sbatch not found (is the Slurm client installed and on PATH?)")

    def context(self, run: Run, indices: Sequence[int], offset: int = 0, previous: str | None = None) -> dict[str, Any]:
        """The values the array template sees (all shell-quoted when printed) for one array of ``indices``."""
        res = run.resources
        # #SBATCH lines end at a newline whatever the quoting: a value that holds one would start a shell line
        for what, value in (("run directory", run.path), ("--name", run.manifest.get("job_name") or run.name),
                            ("--partition", res.get("partition")), ("--account", res.get("account")),
                            *(("--directive", d) for d in run.manifest.get("extra_directives") or [])):
            if value is not None and any(c in str(value) for c in "\n\r\0"):
                raise UserError(f"{what}: {str(value)!r} contains a newline or NUL, which a #SBATCH line cannot carry")
        time_s = res.get("time_seconds")
        after = run.manifest.get("after") or {}
        dep_ids = after.get("job_ids") if isinstance(after, dict) else None
        image = run.manifest.get("image")
        number = len([s for s in run.submissions if s["status"] != "failed"]) or 1
        if run.submissions and run.submissions[-1]["status"] == "submitting":
            number = run.submissions[-1]["number"]
        return {
            "run_name": run.name,
            "run_dir": str(run.path),
            "submission": number,
            "job_name": run.manifest.get("job_name") or run.name,
            "array": array_spec([i - offset for i in indices], res.get("max_running")),
            "offset": offset,
            "task_index": Raw(f'"$((SLURM_ARRAY_TASK_ID + {offset}))"' if offset else '"$SLURM_ARRAY_TASK_ID"'),
            "log_file": Raw('"logs/slurm-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}.out"'),
            "ntasks": res.get("ntasks") or 1,
            "nodes": res.get("nodes"),
            "cpus": res.get("cpus") or 1,
            "partition": res.get("partition"),
            "account": res.get("account"),
            "time": format_slurm_time(time_s) if time_s else None,
            "mem": f"{res['mem_mb']}M" if res.get("mem_mb") else None,
            "gpus": res.get("gpus") or 0,
            "dependency": ",".join(d for d in (("afterok:" + ":".join(dep_ids)) if dep_ids else "",
                                               f"afterany:{previous}" if previous else "") if d) or None,
            "hold": bool(res.get("hold")),
            "extra_directives": list(run.manifest.get("extra_directives") or []),
            "env": dict(run.manifest.get("env") or {}),
            "setup": list(run.manifest.get("setup") or []),
            "launcher": list(run.manifest.get("launcher") or []),
            "container": container_prefix(
                run.manifest.get("container_runtime") or slurm_defaults()["container_runtime"], image, list(run.manifest.get("binds") or []), res.get("gpus") or 0
            ),
            "command": self.task_command(run, "")[:-1],
        }

    def render_array(self, run: Run, indices: Sequence[int], offset: int = 0, previous: str | None = None) -> str:
        """The sbatch script of one array (``indices`` run as array ids ``index - offset``)."""
        path = find_template("slurm", TEMPLATE, run.manifest.get("template"))
        text = render_template(path, self.context(run, indices, offset, previous))
        if offset and f"SLURM_ARRAY_TASK_ID + {offset}" not in text:
            raise UserError(f"--template {path}: the template must end with `... {{{{ task_index }}}}` (tasks above "
                            "MaxArraySize run as array id + offset); see slurm/array.sh.j2")
        return text

    def render(self, run: Run, indices: Sequence[int], max_array_size: int | None = None) -> str:
        """The sbatch script(s) for ``indices``, one per array that the cluster's MaxArraySize (default: Slurm's) needs."""
        chunks = split_arrays(indices, max_array_size or default_limits()["MaxArraySize"])
        texts = [self.render_array(run, idx, off, "PREVIOUS_ARRAY" if k and run.resources.get("max_running") else None)
                 for k, (off, idx) in enumerate(chunks)]
        if len(texts) == 1:
            return texts[0]
        return "".join(f"# ---- array {k + 1} of {len(texts)}: tasks {idx[0]}-{idx[-1]} (offset {off}) ----\n{t}"
                       for k, ((off, idx), t) in enumerate(zip(chunks, texts)))

    def _script_name(self, run: Run, part: int, parts: int) -> str:
        name = self.script_name_for(run)
        return name if parts == 1 else name.replace(".sh", f".{part + 1}.sh")

    def precheck(self, count: int) -> None:
        """Before the run exists: read the limits (the one ``scontrol show config``) and refuse what cannot fit."""
        self.check()
        self._limits = _limits_or_none()
        self._pack = self._fits(count, self._limits) if self._limits is not None else 1

    @staticmethod
    def _fits(count: int, limits: dict[str, int]) -> int:
        """How many tasks each array job runs (1 normally); a one-line UserError when the run cannot be queued.

        slurmctld refuses a job once its records (every array task counts) would reach MaxJobCount, so an empty
        controller holds at most MaxJobCount - 1 jobs (sbatch would then retry for ever). A run of at most
        MaxJobCount tasks that does not fit the room left is *packed*: each array job runs several tasks, one
        after another. A larger run is refused.
        """
        max_jobs = limits["MaxJobCount"]
        if count > max_jobs:
            raise UserError(f"slurm: {count} tasks exceed the cluster's MaxJobCount={max_jobs}; "
                            "use fewer tasks, e.g. a larger --files-per-job")
        held = jobs_in_controller()
        room = max_jobs - 1 - held
        if room < 1:
            raise UserError(f"slurm: slurmctld already holds {held} of MaxJobCount={max_jobs} jobs; "
                            "wait until finished jobs are purged (MinJobAge) and submit again")
        return -(-count // room)

    def submit(self, run: Run, indices: Sequence[int]) -> dict[int, str]:
        """Use (or read) the limits, refuse what cannot fit, then one ``sbatch`` per array."""
        self.check()
        limits = getattr(self, "_limits", None)
        pack = getattr(self, "_pack", 1)
        if limits is None:
            limits = _limits_or_none()
            if limits is None:  # the controller does not answer: sbatch will say so (the run stays, resubmit later)
                limits = default_limits()
            else:
                pack = self._fits(len(indices), limits)
        self._limits, self._pack = None, 1  # a later submission (resubmit) reads them again
        if pack > 1:
            return self._submit_packed(run, indices, pack, limits)
        chunks = split_arrays(indices, limits["MaxArraySize"])
        job_ids: dict[int, str] = {}
        arrays: list[dict] = []
        previous: str | None = None
        for k, (offset, idx) in enumerate(chunks):
            dep = previous if run.resources.get("max_running") else None
            script = run.write_script(self._script_name(run, k, len(chunks)), self.render_array(run, idx, offset, dep))
            proc = _run_tool(["sbatch", "--parsable", str(script)], "sbatch")
            job_id = proc.stdout.strip().split(";")[0]
            if proc.returncode != 0 or not job_id.isdigit():
                if arrays:  # all or nothing: the run's submission failed as a whole
                    _run_tool(["scancel", *[a["job_id"] for a in arrays]], "scancel")
                if proc.returncode != 0:
                    raise UserError(f"slurm: sbatch failed: {_last_line(proc.stderr or proc.stdout)}")
                raise UserError(f"slurm: sbatch gave an unexpected answer: {_last_line(proc.stdout)!r}")
            arrays.append({"job_id": job_id, "offset": offset, "count": len(idx), "script": script.name})
            job_ids.update({i: f"{job_id}_{i - offset}" for i in idx})
            previous = job_id
        if run.submissions:
            run.submissions[-1]["backend"] = {"array_job_id": arrays[0]["job_id"], "script": arrays[0]["script"], "arrays": arrays,
                                              "limits": limits}
            run.submissions[-1]["script"] = f"scripts/{arrays[0]['script']}"
        return job_ids

    def _submit_packed(self, run: Run, indices: Sequence[int], pack: int, limits: dict[str, int]) -> dict[int, str]:
        """A run too large for the room left in MaxJobCount: array job ``e`` runs ``pack`` tasks, listed in a map file."""
        values = sorted(set(indices))
        groups = [values[g:g + pack] for g in range(0, len(values), pack)]
        size = limits["MaxArraySize"]
        parts = [groups[a:a + size] for a in range(0, len(groups), size)]
        job_ids: dict[int, str] = {}
        arrays: list[dict] = []
        previous: str | None = None
        for k, part in enumerate(parts):
            name = self._script_name(run, k, len(parts))
            mapfile = run.write_script(name.replace(".sh", ".map"), "".join(" ".join(map(str, g)) + "\n" for g in part),
                                       executable=False)
            dep = previous if run.resources.get("max_running") else None
            context = self.context(run, list(range(len(part))), 0, dep)
            context["task_index"] = Raw(f'--map {shlex.quote(str(mapfile))} "$SLURM_ARRAY_TASK_ID"')
            path = find_template("slurm", TEMPLATE, run.manifest.get("template"))
            text = render_template(path, context)
            if "--map " not in text:
                raise UserError(f"--template {path}: the template must end with `... {{{{ task_index }}}}` (packed runs "
                                "pass a map file there); see slurm/array.sh.j2")
            script = run.write_script(name, text)
            proc = _run_tool(["sbatch", "--parsable", str(script)], "sbatch")
            job_id = proc.stdout.strip().split(";")[0]
            if proc.returncode != 0 or not job_id.isdigit():
                if arrays:
                    _run_tool(["scancel", *[a["job_id"] for a in arrays]], "scancel")
                raise UserError(f"slurm: sbatch failed: {_last_line(proc.stderr or proc.stdout)}")
            arrays.append({"job_id": job_id, "offset": None, "count": sum(map(len, part)), "jobs": len(part),
                           "script": script.name, "map": mapfile.name})
            job_ids.update({i: f"{job_id}_{e}" for e, g in enumerate(part) for i in g})
            previous = job_id
        if run.submissions:
            run.submissions[-1]["backend"] = {"array_job_id": arrays[0]["job_id"], "script": arrays[0]["script"], "arrays": arrays,
                                              "limits": limits, "pack": pack}
            run.submissions[-1]["script"] = f"scripts/{arrays[0]['script']}"
        return job_ids

    def query(self, run: Run, job_ids: Sequence[str]) -> dict[str, JobState]:
        """One ``squeue -r -t all`` call over the array jobs of ``job_ids``."""
        arrays = sorted({j.split("_")[0] for j in job_ids})
        if not arrays:
            return {}
        proc = _run_tool(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(arrays)], "squeue")
        if proc.returncode != 0:
            if "Invalid job id" in proc.stderr:
                return {}  # every job was purged from the controller
            raise UserError(f"slurm: squeue failed: {_last_line(proc.stderr)}")
        wanted = set(job_ids)
        out: dict[str, JobState] = {}
        meta: dict[str, JobState] = {}  # the record of an array's tasks that never started (e.g. cancelled while pending)
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 3:
                continue
            jid, raw_state, reason = parts
            if jid not in wanted and not jid.isdigit():
                continue
            raw_state = raw_state.split()[0].rstrip("+")
            state = _STATE_MAP.get(raw_state, RUNNING)
            if state == PENDING and reason in _HOLD_REASONS:
                state = HELD
            js = JobState(state, None, reason if reason not in ("None", "JobHeldUser") or state == HELD else "")
            if jid in wanted:
                out[jid] = js
            else:
                meta[jid] = js
        for jid in wanted - set(out):
            array_state = meta.get(jid.split("_")[0])
            if array_state is not None and not array_state.active:
                out[jid] = array_state
        return out

    def cancel(self, run: Run, job_ids: Sequence[str]) -> None:
        """One ``scancel`` call for ``job_ids``."""
        if not job_ids:
            return
        groups: dict[str, list[int]] = {}
        singles = []
        for j in job_ids:
            aid, _, idx = j.partition("_")
            if idx.isdigit():
                groups.setdefault(aid, []).append(int(idx))
            else:
                singles.append(j)
        targets = [f"{aid}_[{array_spec(idx)}]" for aid, idx in groups.items()] + singles
        proc = _run_tool(["scancel", *targets], "scancel")
        if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
            raise UserError(f"slurm: scancel failed: {_last_line(proc.stderr)}")
