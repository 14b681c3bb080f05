"""Slurm backend: one ``sbatch --parsable --array`` per submission, ``squeue`` for state, ``scancel``.

Array task ids are the run's task indices, so a resubmission of tasks 3 and 7 is ``--array=3,7``
and job ids are ``<array job id>_<index>``.  State comes from the task's state.json; the
scheduler is asked (one ``squeue -r -t all -j A,B,...`` call) only about unfinished tasks, since
``sacct`` needs slurmdbd, which many clusters (and the local test cluster) do not have.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from sbt_batch.batch.backend import (
    CANCELLED,
    COMPLETED,
    FAILED,
    HELD,
    PENDING,
    RUNNING,
    TIMEOUT,
    Backend,
    JobState,
    register_backend,
)
from sbt_batch.batch.resources import format_slurm_time
from sbt_batch.batch.run import Run
from sbt_batch.batch.templates import Raw, container_prefix, find_template, render_template
from sbt_batch.errors import UserError

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
SCHEDULER_TIMEOUT = 60.0


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
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=SCHEDULER_TIMEOUT, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise UserError(f"slurm: {argv[0]} not found (is the Slurm client installed and on PATH?)") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"slurm: {what} did not answer within {SCHEDULER_TIMEOUT:.0f} s (is slurmctld running?)") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


@register_backend("slurm")
class SlurmBackend(Backend):
    """Submit runs as Slurm job arrays."""

    script_name = "array.sh"

    def check(self) -> None:
        """Fail with one line when sbatch is not installed."""
        if not shutil.which("sbatch"):
            raise UserError("slurm: sbatch not found (is the Slurm client installed and on PATH?)")

    def context(self, run: Run, indices: Sequence[int]) -> dict:
        """The values the array template sees (all shell-quoted when printed)."""
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
            "array": array_spec(indices, res.get("max_running")),
            "log_file": Raw('"logs/slurm-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}.out"'),
            "ntasks": res.get("ntasks") or 1,
            "nodes": res.get("nodes"),
            "cpus": res.get("cpus") or 1,
            "partition": res.get("partition"),
            "account": res.get("account"),
            "time": format_slurm_time(time_s) if time_s else None,
            "mem": f"{res['mem_mb']}M" if res.get("mem_mb") else None,
            "gpus": res.get("gpus") or 0,
            "dependency": ("afterok:" + ":".join(dep_ids)) if dep_ids else None,
            "hold": bool(res.get("hold")),
            "extra_directives": list(run.manifest.get("extra_directives") or []),
            "env": dict(run.manifest.get("env") or {}),
            "setup": list(run.manifest.get("setup") or []),
            "launcher": list(run.manifest.get("launcher") or []),
            "container": container_prefix(
                run.manifest.get("container_runtime") or "apptainer", image, list(run.manifest.get("binds") or []), res.get("gpus") or 0
            ),
            "command": self.task_command(run, "")[:-1],
        }

    def render(self, run: Run, indices: Sequence[int]) -> str:
        """The sbatch script for ``indices``."""
        path = find_template("slurm", TEMPLATE, run.manifest.get("template"))
        return render_template(path, self.context(run, indices))

    def submit(self, run: Run, indices: Sequence[int]) -> dict[int, str]:
        """One ``sbatch --parsable`` call for the whole array."""
        self.check()
        script = run.write_script(self.script_name_for(run), self.render(run, indices))
        proc = _run_tool(["sbatch", "--parsable", str(script)], "sbatch")
        if proc.returncode != 0:
            raise UserError(f"slurm: sbatch failed: {_last_line(proc.stderr or proc.stdout)}")
        job_id = proc.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise UserError(f"slurm: sbatch gave an unexpected answer: {_last_line(proc.stdout)!r}")
        if run.submissions:
            run.submissions[-1]["backend"] = {"array_job_id": job_id, "script": script.name}
            run.submissions[-1]["script"] = f"scripts/{script.name}"
        return {i: f"{job_id}_{i}" for i in indices}

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
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 3 or parts[0] not in wanted:
                continue
            jid, raw_state, reason = parts
            raw_state = raw_state.split()[0].rstrip("+")
            state = _STATE_MAP.get(raw_state, RUNNING)
            if state == PENDING and reason in _HOLD_REASONS:
                state = HELD
            out[jid] = JobState(state, None, reason if reason != "None" else "")
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
