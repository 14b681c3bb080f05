"""HTCondor backend: the ``htcondor2`` bindings submit every task in ONE ``queue task from`` submission.

Two modes (site profile ``condor: {spool: true|false}``):

* **shared filesystem** (default): the run directory is visible at the same path on the execute
  nodes; jobs write ``tasks/<i>/state.json`` and their outputs in place, and the job event log
  ``logs/condor-<n>.log`` gives the scheduler-side state (no ``condor_history`` needed).
* **spool** (no shared filesystem): each task gets a folder ``spool/<n>/<i>/`` with a copy of the
  manifest whose argv points at ``inputs/`` and ``outputs/``; HTCondor transfers it in, the task
  runs in its scratch directory (``sbt-batch task run . INDEX``), and ``status``/``collect``
  retrieve the finished jobs' files from the schedd and move state files and outputs into place.

Job ids are ``<ClusterId>.<ProcId>``; the proc of each task index is kept in the submission record.
``--image`` becomes ``container_image`` (``universe = container``) or, with the profile's
``condor: {image_style: singularity}``, ``+SingularityImage``.

A run with ``nodes > 1`` (``submit train --nodes N``) is one parallel-universe job (``machine_count = N``)
whose nodes run ``sbt-batch task condor-node`` (:mod:`sbt_batch.batch.backends.condor_parallel`); it needs the
shared-filesystem mode, and with ``--image`` the ``singularity`` image style.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sbt_batch.batch.backend import (
    CANCELLED,
    COMPLETED,
    FAILED,
    HELD,
    PENDING,
    REQUEUE_SCHEDULER,
    RUNNING,
    TIMEOUT,
    Backend,
    JobState,
    register_backend,
)
from sbt_batch.batch.profiles import backend_defaults
from sbt_batch.batch.render import Raw, find_template, render_template
from sbt_batch.batch.run import MANIFEST, Run
from sbt_batch.common.config import check_keys
from sbt_batch.common.console import log
from sbt_batch.common.errors import UserError, one_line

TEMPLATE = "job.sub.j2"
SPOOL_DIR = "spool"
# Keys of the site profile's `condor:` mapping.
CONDOR_KEYS = {
    "spool": "true: no shared filesystem; transfer inputs and outputs through the schedd",
    "image_style": "container_image (default) or singularity (+SingularityImage)",
    "schedd": "name of the schedd to submit to (default: the local one)",
    "pool": "collector host:port used to locate the schedd",
    "universe": "universe for jobs without an image (default vanilla)",
    "dagman": "path of condor_dagman on the schedd's machine, for --after (default /usr/bin/condor_dagman)",
}
# JobStatus codes of the job ClassAd.
_IDLE, _RUNNING, _REMOVED, _COMPLETED, _HELD, _TRANSFERRING, _SUSPENDED = 1, 2, 3, 4, 5, 6, 7
_HOLD_SPOOLING = 16  # "Spooling input data files": held only while spool() transfers the inputs
_HOLD_DURATION = (46, 47)  # allowed_job_duration / allowed_execute_duration exceeded
# HoldReasonCode in words (HTCondor manual, job ClassAd attributes), shown by `status`.
HOLD_WORDS = {
    1: "held by a user or admin (condor_hold)", 3: "held by the job's own policy (periodic_hold)", 4: "credentials (proxy) invalid",
    5: "a policy expression was undefined", 6: "the job could not start on the execute node",
    7: "cannot open an output file on the execute node", 8: "cannot open an input file on the execute node",
    9: "cannot open the output stream", 10: "cannot open the input stream", 11: "file transfer protocol error",
    12: "transferring the outputs back failed", 13: "transferring the inputs failed", 14: "the initial directory is not accessible",
    15: "submitted on hold (--hold; condor_release to start)", 16: "transferring inputs (spool)", 21: "held by the execute node",
    22: "cannot write the job event log", 23: "cannot access the user account on the execute node",
    26: "held by the pool's system policy", 32: "inputs larger than the pool allows", 33: "outputs larger than the pool allows",
    34: "over its memory or disk request", 35: "invalid container image", 45: "the Singularity/Apptainer test failed",
    46: "over its allowed job duration (--time)", 47: "over its allowed execute duration (--time)",
}
# Holds worth releasing automatically (node or file-system hiccups); with --retries N, periodic_release does it N times.
TRANSIENT_HOLDS = (6, 7, 8, 9, 10, 11, 12, 13, 14, 21, 22)


# ---- quoting for submit descriptions ------------------------------------------------------------


def _check_line(text: str, what: str) -> str:
    if any(c in text for c in "\n\r\0"):
        raise UserError(f"{what}: {text!r} contains a newline or NUL, which an HTCondor submit file cannot carry")
    return text


def macro_escape(text: str) -> str:
    """Protect ``$`` from submit-file macro expansion (``$`` -> ``$(DOLLAR)``)."""
    return text.replace("$", "$(DOLLAR)")


def quote_word(word: str) -> str:
    """One word of the new (double-quoted) arguments/environment syntax."""
    word = word.replace('"', '""')
    if word == "" or any(c in word for c in " \t'"):
        word = "'" + word.replace("'", "''") + "'"
    return word


def quote_arguments(words: Iterable[object]) -> Raw:
    """A submit-file ``arguments`` value that reaches the job as exactly ``words``."""
    checked = [_check_line(str(w), "argument") for w in words]
    return Raw(macro_escape('"' + " ".join(quote_word(w) for w in checked) + '"'))


def classad_string(text: str) -> Raw:
    """A ClassAd string literal for ``+Attr = value`` lines."""
    _check_line(text, "value")
    return Raw(macro_escape('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'))


def submit_path(path: str | os.PathLike[str], what: str) -> Raw:
    """A path as a plain submit-file value (no quoting exists: reject what cannot be written)."""
    text = _check_line(str(path), what)
    if text != text.strip():
        raise UserError(f"{what}: {text!r} starts or ends with whitespace, which HTCondor would drop")
    return Raw(macro_escape(text))


# ---- the backend --------------------------------------------------------------------------------


def condor_defaults() -> dict[str, Any]:
    """This backend's section of the packaged defaults (``sites/defaults.yaml``, ``condor:``)."""
    return backend_defaults("condor")


def condor_settings(run: Run) -> dict[str, Any]:
    """The run's validated ``condor:`` settings from the site profile."""
    settings = dict(run.manifest.get("condor") or {})
    check_keys(settings, CONDOR_KEYS, "site profile 'condor'")
    defaults = condor_defaults()
    if not isinstance(settings.get("spool", defaults["spool"]), bool):
        raise UserError("site profile 'condor': 'spool' must be true or false")
    style = settings.get("image_style", defaults["image_style"])
    if style not in {"container_image", "singularity"}:
        raise UserError(f"site profile 'condor': 'image_style' must be container_image or singularity, got {style!r}")
    return settings


def check_parallel(nodes: int, settings: Mapping[str, Any], image: str | None) -> None:
    """A one-line error when a ``nodes``-machine parallel-universe job cannot work with these settings."""
    if nodes <= 1:
        return
    if settings.get("spool"):
        raise UserError(f"--nodes {nodes}: the HTCondor parallel universe needs the shared-filesystem mode "
                        "(every node would send back its own tasks/ and outputs/); set condor: {spool: false} "
                        "in the site profile, or use --nodes 1")
    if image and settings.get("image_style", condor_defaults()["image_style"]) == "container_image":
        raise UserError(f"--nodes {nodes}: a container_image job runs in the container universe, which has no "
                        "parallel jobs; set condor: {image_style: singularity} in the site profile")


def _htcondor() -> Any:
    from sbt_batch.common.optional import require

    return require("htcondor2", "--backend condor")


def _submission_number(run: Run) -> int:
    return run.submissions[-1]["number"] if run.submissions else 1


def _job_id(cluster: int, proc: int) -> str:
    return f"{cluster}.{proc}"


def _procs_constraint(ids: Iterable[tuple[int, int]]) -> str:
    """A ClassAd constraint matching exactly the jobs ``(cluster, proc)`` of ``ids``."""
    return " || ".join(f"(ClusterId == {c} && ProcId == {p})" for c, p in ids)


def _split_id(job_id: str) -> tuple[int, int] | None:
    head, _, tail = job_id.partition(".")
    return (int(head), int(tail)) if head.isdigit() and tail.isdigit() else None


@register_backend("condor")
class CondorBackend(Backend):
    """Submit runs to an HTCondor schedd through the htcondor2 bindings."""

    script_name = "condor.sub"
    requeue = REQUEUE_SCHEDULER  # max_retries (retry_until ExitCode =!= 75) and eviction start a checkpointed job again

    def plan_ranks(self, total: int, nodes: int, mpi: str) -> dict[str, Any]:
        """One machine: ``train --ranks T`` starts the ranks; several: a parallel-universe job, T/N ranks per node."""
        if nodes > 1:  # parallel universe: `sbt-batch task condor-node` starts each node's ranks (Gloo)
            if total % nodes:
                raise UserError(f"--ntasks {total}: HTCondor starts the same number of ranks on each of the "
                                f"--nodes {nodes}; use a multiple of {nodes} or --ntasks-per-node")
            return {"ntasks": total, "cpus_min": total // nodes}
        return {"train_args": ["--ranks", str(total), "--launcher", "gloo"], "cpus_min": total}

    def check_ranks(self, nodes: int, profile: dict[str, Any], image: str | None) -> None:
        """The profile's ``condor:`` settings must allow a parallel-universe job (:func:`check_parallel`)."""
        check_parallel(nodes, profile.get("condor") or {}, image)

    def check(self) -> None:
        """Fail with one line when the htcondor2 bindings are not installed."""
        _htcondor()

    # ---- rendering ---------------------------------------------------------------------------
    def context(self, run: Run, indices: Sequence[int]) -> dict[str, Any]:
        """The values the submit template sees, each already quoted for HTCondor."""
        settings = condor_settings(run)
        defaults = condor_defaults()
        spool = bool(settings.get("spool", defaults["spool"]))
        res = run.resources
        number = _submission_number(run)
        if _waits_for_run(run) and spool:
            raise UserError("--after: on HTCondor a run waits for another through DAGMan, which needs the shared-filesystem "
                            "mode (condor: {spool: false})")
        image = run.manifest.get("image")
        image_settings: dict[str, Raw] = {}
        if image:
            from sbt_batch.container.images import condor_image_settings

            for key, value in condor_image_settings(image, settings.get("image_style", defaults["image_style"])).items():
                if key.startswith("+"):
                    image_settings[key] = Raw(macro_escape(_check_line(value, "--image")))
                else:
                    image_settings[key] = submit_path(value, "--image")
        nodes = int(res.get("nodes") or 1)
        check_parallel(nodes, settings, image)
        command = list(run.sbt_command)
        if not command:
            raise UserError("sbt_command: empty")
        argv = [*(run.manifest.get("launcher") or []), *command]
        # Several machines: each node of the parallel job runs the node wrapper, which starts its ranks.
        wrapper = ["task", "condor-node"] if nodes > 1 else ["task", "run"]
        node = ".node$(Node)" if nodes > 1 else ""
        # An absolute program runs directly; a bare name is looked up on the job's PATH by env.
        if Path(argv[0]).is_absolute():
            executable, args = argv[0], argv[1:]
        else:
            executable, args = "/usr/bin/env", argv
        run_dir = "." if spool else str(run.path)
        env: dict[str, str] = {"SBT_BATCH_JOB_ID": Raw("$(ClusterId).$(ProcId)")}
        if not image:  # HTCondor starts jobs with an empty environment; an image brings its own PATH
            env["PATH"] = str(defaults["job_path"])
        env.update({str(k): str(v) for k, v in (run.manifest.get("env") or {}).items()})
        env_words = []
        for key, value in env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise UserError(f"env: {key!r} is not a valid variable name")
            # Raw values are submit-file macros ($(ClusterId)) and must expand; others are literal.
            env_words.append(f"{key}={value}" if isinstance(value, Raw) else macro_escape(quote_word(f"{key}={_check_line(value, 'env')}")))
        environment = Raw('"' + " ".join(env_words) + '"')
        spool_base = run.path / SPOOL_DIR / str(number)
        from sbt_batch.batch.proxy import checked_proxy

        proxy = checked_proxy(res.get("time_seconds"))
        retries = int(res.get("retries") or 0)
        return {
            "retries": retries,
            "transient_holds": Raw(" || ".join(f"HoldReasonCode =?= {c}" for c in TRANSIENT_HOLDS)),
            "proxy": submit_path(proxy, "X509_USER_PROXY") if proxy else None,
            "run_name": Raw(" ".join(run.name.split())),
            "submission": number,
            "ntasks": len(indices),
            "mode": Raw("spool" if spool else "shared-filesystem"),
            "spool": spool,
            "universe": Raw("parallel" if nodes > 1 else "container" if image and "container_image" in image_settings
                            else settings.get("universe", defaults["universe"])),
            "machine_count": nodes if nodes > 1 else None,
            "executable": submit_path(executable, "sbt_command"),
            "arguments": Raw(quote_arguments([*args, *wrapper, run_dir]).removesuffix('"') + ' $(task)"'),
            "initialdir": Raw(submit_path(spool_base, "run directory") + "/$(task)") if spool else submit_path(run.path, "run directory"),
            # relative to initialdir: HTCondor cannot write an event log whose path has a space
            "log": Raw("condor.log" if spool else f"logs/condor-{number}.log"),
            "output": Raw("condor.out" if spool else f"logs/condor-{number}-$(task){node}.out"),
            "error": Raw("condor.err" if spool else f"logs/condor-{number}-$(task){node}.err"),
            "environment": environment,
            "cpus": int(res.get("cpus") or 1),
            "mem_mb": res.get("mem_mb"),
            "gpus": int(res.get("gpus") or 0),
            "time_seconds": res.get("time_seconds"),
            "accounting_group": submit_path(res["accounting_group"], "accounting_group") if res.get("accounting_group") else None,
            "image_settings": image_settings,
            "max_running": res.get("max_running"),
            "hold": bool(res.get("hold")),
            "run_classad": classad_string(str(run.path)),
            "extra_directives": [Raw(_check_line(str(line), "extra_directives")) for line in run.manifest.get("extra_directives") or []],
            "indices": [int(i) for i in indices],
        }

    def render(self, run: Run, indices: Sequence[int]) -> str:
        """The submit description for ``indices`` (with --after: followed by the DAG that waits for the other run)."""
        path = find_template("condor", TEMPLATE, run.manifest.get("template"))
        text = render_template(path, self.context(run, indices))
        if _waits_for_run(run):
            number = _submission_number(run)
            dag = dag_text(run, f"condor-{number}.sub")
            text += f"\n# --after: submitted through DAGMan; scripts/run-{number}.dag:\n" + "".join(f"#   {line}\n" for line in dag.splitlines())
        return text

    def _submit_dag(self, run: Run, schedd: Any, script: Path, number: int, indices: Sequence[int]) -> dict[int, str]:
        """--after: submit a DAG whose PRE script waits for the other run, then submits this run's node file."""
        htcondor2 = _htcondor()
        dag = run.write_script(f"run-{number}.dag", dag_text(run, script.name), executable=False)
        settings = condor_settings(run)
        text = "\n".join([
            "# DAGMan for sbt-batch --after: the node submits this run's tasks once the other run completed",
            "universe = scheduler",
            f"executable = {submit_path(settings.get('dagman') or condor_defaults()['dagman'], 'dagman')}",
            f"initialdir = {submit_path(dag.parent, 'run directory')}",
            f"output = {dag.name}.lib.out", f"error = {dag.name}.lib.err", f"log = {dag.name}.dagman.log",
            "getenv = PATH,HOME,USER,LANG,TZ",
            "remove_kill_sig = SIGUSR1",
            'My.OtherJobRemoveRequirements = "DAGManJobId =?= $(cluster)"',
            "on_exit_remove = (ExitSignal =?= 11 || (ExitCode =!= UNDEFINED && ExitCode >=0 && ExitCode <= 2))",
            "copy_to_spool = False",
            f'arguments = "-p 0 -f -l . -Lockfile {dag.name}.lock -Dag {dag.name} -AutoRescue 0 -DoRescueFrom 0"',
            # not strict: a warning (e.g. the node log under /tmp, as in the test pool) must not abort the DAG
            f'environment = "_CONDOR_DAGMAN_LOG={dag.name}.dagman.out _CONDOR_MAX_DAGMAN_LOG=0 _CONDOR_DAGMAN_USE_STRICT=0"',
            f"+SbtBatchRun = {classad_string(str(run.path))}",
            "queue", ""])
        run.write_script(f"run-{number}.dag.condor.sub", text, executable=False)
        try:
            result = schedd.submit(htcondor2.Submit(text))
        except Exception as exc:
            raise UserError(f"condor: submitting the DAG for --after failed ({one_line(exc, 300)})") from None
        dagman = result.cluster()
        if run.submissions:
            run.submissions[-1]["backend"] = {"dagman": dagman, "cluster": None, "mode": "shared", "log": f"logs/condor-{number}.log",
                                              "spool_dir": None, "dag": f"scripts/{dag.name}"}
            run.submissions[-1]["script"] = f"scripts/{script.name}"
        return {i: f"dag{dagman}.{p}" for p, i in enumerate(sorted(indices))}

    # ---- scheduler access --------------------------------------------------------------------
    def _schedd(self, run: Run) -> Any:
        htcondor2 = _htcondor()
        settings = condor_settings(run)
        try:
            if settings.get("schedd") or settings.get("pool"):
                collector = htcondor2.Collector(settings.get("pool")) if settings.get("pool") else htcondor2.Collector()
                ad = collector.locate(htcondor2.DaemonType.Schedd, settings["schedd"]) if settings.get("schedd") else collector.locate(htcondor2.DaemonType.Schedd)
                return htcondor2.Schedd(ad)
            return htcondor2.Schedd()
        except Exception as exc:  # the bindings raise HTCondorException/RuntimeError/ValueError
            raise UserError(f"condor: cannot reach the schedd ({one_line(exc, 300)})") from None

    def submit(self, run: Run, indices: Sequence[int]) -> dict[int, str]:
        """Render, save and submit all ``indices`` in one ``queue task from`` submission."""
        htcondor2 = _htcondor()
        spool = bool(condor_settings(run).get("spool", condor_defaults()["spool"]))
        indices = sorted(indices)
        text = self.render(run, indices)
        script = run.write_script(self.script_name_for(run), text, executable=False)
        number = _submission_number(run)
        if spool:
            self._stage(run, number, indices)
        if _waits_for_run(run):
            return self._submit_dag(run, self._schedd(run), script, number, indices)
        try:
            description = htcondor2.Submit(text)
        except Exception as exc:
            raise UserError(f"{script}: invalid submit description ({one_line(exc, 300)})") from None
        schedd = self._schedd(run)
        try:
            result = schedd.submit(description, spool=spool)
        except Exception as exc:
            raise UserError(f"condor: submit failed ({one_line(exc, 300)})") from None
        cluster = result.cluster()
        if result.num_procs() != len(indices):
            self._remove(schedd, [f"{cluster}"], "sbt-batch: wrong number of jobs")
            raise UserError(f"condor: the schedd made {result.num_procs()} jobs for {len(indices)} tasks (edited template?)")
        if spool:
            try:
                schedd.spool(result)
            except Exception as exc:
                self._remove(schedd, [f"{cluster}"], "sbt-batch: input transfer failed")
                raise UserError(f"condor: transferring the inputs to the schedd failed ({one_line(exc, 300)})") from None
        procs = {i: p for p, i in enumerate(indices)}
        if run.submissions:
            run.submissions[-1]["backend"] = {
                "cluster": cluster,
                "mode": "spool" if spool else "shared",
                "log": None if spool else f"logs/condor-{number}.log",
                "spool_dir": f"{SPOOL_DIR}/{number}" if spool else None,
            }
            run.submissions[-1]["script"] = f"scripts/{script.name}"
        return {i: _job_id(cluster, p) for i, p in procs.items()}

    def query(self, run: Run, job_ids: Sequence[str]) -> dict[str, JobState]:
        """States of ``job_ids`` (DAG placeholders ``dagD.p`` resolved through the node's event log); see :meth:`_query`."""
        dag_ids = [j for j in job_ids if j.startswith("dag")]
        if not dag_ids:
            return self._query(run, job_ids)
        real: dict[str, str] = {}
        waiting: dict[int, list[str]] = {}
        for jid in dag_ids:
            dagman, _, proc = jid[3:].partition(".")
            rec = next((s for s in run.submissions if str(s.get("backend", {}).get("dagman")) == dagman), None)
            if rec is None or not proc.isdigit():
                continue
            states = read_event_log(run.path / rec["backend"]["log"])
            clusters = sorted({int(j.split(".")[0]) for j in states})
            if clusters:
                rec["backend"]["cluster"] = clusters[0]  # the node's jobs exist: ask about them as usual
                real[jid] = f"{clusters[0]}.{proc}"
            else:
                waiting.setdefault(int(dagman), []).append(jid)
        out = self._query(run, [j for j in job_ids if j not in dag_ids] + list(real.values()))
        answers = {jid: out.pop(r) for jid, r in real.items() if r in out}
        if waiting:  # the node is not submitted yet: the DAGMan job waits for the other run (PRE script)
            try:
                ads = self._schedd(run).query(" || ".join(f"ClusterId == {d}" for d in waiting), ["ClusterId", "JobStatus"])
            except Exception as exc:
                raise UserError(f"condor: cannot reach the schedd ({one_line(exc, 300)})") from None
            alive = {int(ad["ClusterId"]) for ad in ads if int(ad.get("JobStatus", 0)) in (_IDLE, _RUNNING, _HELD)}
            after = (run.manifest.get("after") or {}).get("run", "the other run")
            for dag_cluster, ids in waiting.items():
                js = JobState(PENDING, None, f"waiting for {Path(after).name} (DAGMan)") if dag_cluster in alive else \
                    JobState(CANCELLED, None, f"DAGMan ended before submitting the tasks: {Path(after).name} did not complete")
                answers.update({jid: js for jid in ids})
        return {**out, **answers}

    def _query(self, run: Run, job_ids: Sequence[str]) -> dict[str, JobState]:
        """States of ``job_ids``: the event log first (shared mode), then one schedd query; spool jobs that finished are retrieved."""
        records = self._records(run)
        wanted: dict[str, tuple[int, int]] = {j: ids for j in job_ids if (ids := _split_id(j)) and ids[0] in records}
        if not wanted:
            return {}
        out: dict[str, JobState] = {}
        # 1. shared mode: the job event log of each submission asked about (a file read, no scheduler call)
        for cluster in sorted({c for c, _ in wanted.values()}):
            if records[cluster]["backend"].get("log"):
                states = read_event_log(run.path / records[cluster]["backend"]["log"])
                out.update({jid: states[jid] for jid, (c, _p) in wanted.items() if c == cluster and jid in states})
        ask = {jid: ids for jid, ids in wanted.items() if jid not in out or out[jid].active}
        if not ask:
            return out
        # 2. one schedd query for what is not final in the log (and every spool job)
        schedd = self._schedd(run)
        clusters = sorted({c for c, _ in ask.values()})
        constraint = " || ".join(f"ClusterId == {c}" for c in clusters)
        projection = ["ClusterId", "ProcId", "JobStatus", "ExitCode", "ExitBySignal", "ExitSignal", "HoldReason", "HoldReasonCode", "RemoveReason"]
        try:
            ads = schedd.query(constraint, projection)
        except Exception as exc:
            raise UserError(f"condor: cannot reach the schedd ({one_line(exc, 300)})") from None
        seen: dict[str, Any] = {}
        for ad in ads:
            jid = _job_id(int(ad["ClusterId"]), int(ad["ProcId"]))
            if jid in ask:
                seen[jid] = ad
        spool_done = []
        for jid, ad in seen.items():
            state = _state_from_ad(ad)
            cluster = ask[jid][0]
            if records[cluster]["backend"].get("mode") == "spool" and int(ad.get("JobStatus", 0)) == _COMPLETED:
                spool_done.append(jid)
            out[jid] = state
        if spool_done:
            self._retrieve(run, schedd, records, spool_done, ask)
        # 3. spool jobs that left the queue: ask the history once (removed jobs, retrieved elsewhere)
        gone = [jid for jid in ask if jid not in seen and records[ask[jid][0]]["backend"].get("mode") == "spool"]
        if gone:
            try:
                hist = schedd.history(_procs_constraint(ask[j] for j in gone), projection, match=len(gone))
            except Exception as exc:
                log.info("condor history failed: %s", one_line(exc, 300))
                hist = []
            for ad in hist:
                jid = _job_id(int(ad["ClusterId"]), int(ad["ProcId"]))
                if jid in ask and int(ad.get("JobStatus", 0)) == _REMOVED:
                    out[jid] = JobState(CANCELLED, None, str(ad.get("RemoveReason") or "removed"))
        return out

    def cancel(self, run: Run, job_ids: Sequence[str]) -> None:
        """Remove ``job_ids`` with one ``JobAction.Remove`` (a DAG's tasks: its DAGMan job, which removes its node)."""
        ids = [j for j in job_ids if _split_id(j)] + sorted({j[3:].split(".")[0] for j in job_ids if j.startswith("dag")})
        if ids:
            self._remove(self._schedd(run), ids, "cancelled with sbt-batch cancel", strict=True)

    # ---- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _records(run: Run) -> dict[int, dict[str, Any]]:
        return {int(s["backend"]["cluster"]): s for s in run.submissions if s.get("backend", {}).get("cluster") is not None}

    @staticmethod
    def _remove(schedd: Any, ids: list[str], reason: str, strict: bool = False) -> None:
        htcondor2 = _htcondor()
        try:
            schedd.act(htcondor2.JobAction.Remove, ids, reason)
        except Exception as exc:
            if strict:
                raise UserError(f"condor: cannot remove jobs ({one_line(exc, 300)})") from None
            log.warning("condor: cannot remove jobs %s: %s", ids, one_line(exc, 300))

    def _stage(self, run: Run, number: int, indices: Sequence[int]) -> None:
        """Spool mode: write ``spool/<n>/<i>/`` (manifest with local paths, input links, empty output dirs; URL inputs stay URLs)."""
        from sbt_batch.common.urls import is_url

        base = run.path / SPOOL_DIR / str(number)
        if base.exists():
            shutil.rmtree(base)
        for index in indices:
            task = run.task(index)
            folder = base / str(index)
            (folder / "tasks" / str(index)).mkdir(parents=True)
            (folder / "outputs").mkdir()
            (folder / "inputs").mkdir()
            mapping: dict[str, str] = {}
            for k, src in enumerate(task.inputs):
                if is_url(src):  # root:// or https://: the task reads it from the storage itself; nothing to transfer
                    continue
                path = Path(src)
                if not path.exists():
                    raise UserError(f"{src}: input not found (spool mode transfers it to the execute node)")
                (folder / "inputs" / str(k)).mkdir()
                (folder / "inputs" / str(k) / path.name).symlink_to(path.absolute())
                mapping[src] = f"inputs/{k}/{path.name}"
            for k, dst in enumerate(task.outputs):
                (folder / "outputs" / str(k)).mkdir()
                mapping[dst] = f"outputs/{k}/{Path(dst).name}"
            manifest = json.loads(json.dumps(run.manifest))
            entry = manifest["tasks"][index]
            entry["argv"] = rewrite_argv(entry["argv"], mapping)
            entry["inputs"] = [mapping.get(p, p) for p in entry.get("inputs", [])]
            entry["outputs"] = [mapping.get(p, p) for p in entry.get("outputs", [])]
            (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))

    def _retrieve(self, run: Run, schedd: Any, records: Mapping[int, dict[str, Any]], job_ids: list[str],
                  ids: Mapping[str, tuple[int, int]]) -> None:
        """Spool mode: fetch the finished jobs' files from the schedd and move them into place."""
        try:
            schedd.retrieve(_procs_constraint(ids[j] for j in job_ids))
        except Exception as exc:
            raise UserError(f"condor: cannot retrieve the outputs of finished jobs ({one_line(exc, 300)})") from None
        for jid in job_ids:
            cluster, proc = ids[jid]
            rec = records[cluster]
            index = sorted(rec["indices"])[proc]
            harvest(run, run.path / rec["backend"]["spool_dir"] / str(index), index)


def _waits_for_run(run: Run) -> bool:
    """True when --after named a run that was still active at submit time (so DAGMan must wait for it)."""
    after = run.manifest.get("after") or {}
    return isinstance(after, dict) and bool(after.get("job_ids"))


def dag_text(run: Run, node_file: str) -> str:
    """The DAG of a run submitted with --after: one node (this run's tasks) whose PRE script waits for the other run."""
    other = str(run.manifest["after"]["run"])
    command = list(run.sbt_command)
    words = [*command, "task", "wait-run", other]
    bad = next((w for w in [str(run.path), *words] if not w or any(c.isspace() or c == '"' for c in w)), None)
    if bad is not None:
        raise UserError(f"--after: {bad!r} contains whitespace or a quote, which a DAG file cannot carry")
    return (f"# sbt-batch --after: submit {node_file} once every task of {other} completed\n"
            f"JOB tasks {node_file} DIR {run.path / 'scripts'}\n"
            f"SCRIPT PRE tasks {' '.join(words)}\n")


def rewrite_argv(argv: Sequence[str], mapping: Mapping[str, str]) -> list[str]:
    """Replace paths in ``argv`` (whole words or ``--opt=PATH``) by their spool-local names."""
    out = []
    for word in argv:
        if word in mapping:
            out.append(mapping[word])
            continue
        opt, eq, value = word.partition("=")
        out.append(f"{opt}={mapping[value]}" if eq and opt.startswith("-") and value in mapping else word)
    return out


def harvest(run: Run, folder: Path, index: int) -> None:
    """Move a retrieved spool folder's outputs, then its task files, into the run (outputs first)."""
    from sbt_batch.batch.task import archive_previous

    task = run.task(index)
    for k, dst in enumerate(task.outputs):
        src = folder / "outputs" / str(k) / Path(dst).name
        if src.exists() or src.is_symlink():
            _move_into_place(src, Path(dst))
    new_files = folder / "tasks" / str(index)
    if not new_files.is_dir():
        return
    try:
        attempt = json.loads((new_files / "state.json").read_text()).get("attempt", 1)
    except (OSError, ValueError):
        attempt = max(1, run.attempt_of(index))
    target = run.task_dir(index)
    target.mkdir(parents=True, exist_ok=True)
    archive_previous(run, index, attempt)
    names = sorted(os.listdir(new_files), key=lambda n: n == "state.json")  # state.json last
    for name in names:
        _move_into_place(new_files / name, target / name)
    for leftover in ("inputs", "outputs", "tasks", MANIFEST):
        path = folder / leftover
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def _move_into_place(src: Path, dst: Path) -> None:
    """Rename ``src`` onto ``dst`` (copy beside ``dst`` first when they are on different filesystems)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    try:
        os.replace(src, dst)
    except OSError:
        tmp = dst.with_name(f".{dst.name}.sbt-batch-tmp")
        if src.is_dir():
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        else:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
        shutil.rmtree(src) if src.is_dir() else src.unlink()


def hold_words(code: int, reason: str) -> str:
    """A hold reason in words: what the code means, then HTCondor's own message."""
    words = HOLD_WORDS.get(code)
    if words is None:
        return f"held (code {code}): {reason}" if code else reason
    return f"{words}: {reason}" if reason and reason != "held" else words


def _held_state(code: int, reason: str) -> JobState:
    """A held job's state: still spooling its inputs (pending), over its time limit (timeout), or held."""
    if code == _HOLD_SPOOLING:
        return JobState(PENDING, None, "transferring inputs")
    if code in _HOLD_DURATION:
        return JobState(TIMEOUT, None, f"time limit exceeded: {reason}")
    return JobState(HELD, None, hold_words(code, reason))


def _state_from_ad(ad: Mapping[str, Any]) -> JobState:
    """A JobState from a job ClassAd (JobStatus, ExitCode, HoldReason...)."""
    status = int(ad.get("JobStatus", 0))
    if status == _IDLE:
        return JobState(PENDING)
    if status in (_RUNNING, _TRANSFERRING, _SUSPENDED):
        return JobState(RUNNING)
    if status == _REMOVED:
        return JobState(CANCELLED, None, str(ad.get("RemoveReason") or "removed"))
    if status == _HELD:
        return _held_state(int(ad.get("HoldReasonCode", 0) or 0), str(ad.get("HoldReason") or "held"))
    if status == _COMPLETED:
        if ad.get("ExitBySignal") is True:
            return JobState(FAILED, 128 + int(ad.get("ExitSignal", 0) or 0), f"signal {ad.get('ExitSignal')}")
        code = ad.get("ExitCode")
        code = int(code) if isinstance(code, int) else None
        return JobState(COMPLETED if code == 0 else FAILED, code)
    return JobState(PENDING, None, f"JobStatus {status}")


def read_event_log(path: Path) -> dict[str, JobState]:
    """Each job's latest state in an HTCondor job event log ({} when the file does not exist yet)."""
    if not path.is_file():
        return {}
    htcondor2 = _htcondor()
    JT = htcondor2.JobEventType
    states: dict[str, JobState] = {}
    try:
        events = htcondor2.JobEventLog(str(path)).events(stop_after=0)
        for event in events:
            jid = _job_id(event.cluster, event.proc)
            kind = event.type
            if kind == JT.SUBMIT or kind == JT.JOB_RELEASED or kind == JT.JOB_EVICTED or kind == JT.JOB_RECONNECT_FAILED:
                states[jid] = JobState(PENDING)
            elif kind == JT.EXECUTE:
                states[jid] = JobState(RUNNING)
            elif kind == JT.JOB_HELD:
                states[jid] = _held_state(int(event.get("HoldReasonCode", 0) or 0), str(event.get("HoldReason", "held")))
            elif kind == JT.JOB_ABORTED:
                if jid not in states or states[jid].state != TIMEOUT:  # periodic_remove after a time-limit hold
                    states[jid] = JobState(CANCELLED, None, str(event.get("Reason", "removed")))
            elif kind == JT.EXECUTABLE_ERROR:
                states[jid] = JobState(FAILED, None, "executable error")
            elif kind == JT.JOB_TERMINATED:
                if event.get("TerminatedNormally", True):
                    code = int(event.get("ReturnValue", 0))
                    states[jid] = JobState(COMPLETED if code == 0 else FAILED, code)
                else:
                    sig = int(event.get("TerminatedBySignal", 0) or 0)
                    states[jid] = JobState(FAILED, 128 + sig, f"signal {sig}")
    except Exception as exc:  # a torn or foreign file: fall back to the schedd
        log.info("%s: cannot read the event log: %s", path, one_line(exc, 300))
    return states
