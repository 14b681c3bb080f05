"""The small interface every batch backend implements, and the registry of backends by name.

A backend turns task indices of a :class:`~sbt_batch.batch.run.Run` into scheduler jobs.
It never decides whether a task succeeded: the task wrapper (``sbt-batch task run RUN_DIR INDEX``)
records that in ``tasks/<i>/state.json``.  The scheduler is asked only about tasks whose
state file is not final, in **one** call per run (:meth:`Backend.query`).

Writing a backend (see ``local.py`` and ``slurm.py``)::

    from sbt_batch.batch.backend import Backend, JobState, register_backend

    @register_backend("mysched")
    class MySched(Backend):
        script_name = "mysched.sub"
        def render(self, run, indices): ...          # text of the submit file (shown by --dry-run)
        def submit(self, run, indices): ...          # ONE scheduler call -> {index: job id}
        def query(self, run, job_ids): ...           # ONE scheduler call -> {job id: JobState}
        def cancel(self, run, job_ids): ...          # stop these jobs

Contract:

* ``submit`` is called after the core appended a submission record to the manifest
  (``run.submissions[-1]``, status ``"submitting"``, with ``number`` and ``indices``);
  the backend writes what it submitted with ``run.write_script(self.script_name_for(run), text)``
  and may store its own bookkeeping in ``run.submissions[-1]["backend"]`` (a JSON-able dict).
  The core records the returned job ids and saves the manifest.
* Job ids are strings, unique within the run, one per task (``"1234_7"`` for Slurm array task 7).
* ``query`` returns a :class:`JobState` for every id the scheduler still knows; ids it does not
  know are simply absent (the core treats them as finished or lost, from the task's state file).
* Every failure to reach the scheduler raises :class:`~sbt_batch.common.errors.UserError` with one line
  (``"slurm: sbatch failed: ..."``); the run directory must stay consistent.
* The task command every job runs is :meth:`Backend.task_command` (``sbt-batch task run RUN INDEX``),
  prefixed by the task's ``launcher`` list and the container wrapper when the run has an image.
* Several ranks of one training (``submit train --ntasks/--nodes``): :meth:`Backend.plan_ranks` says how
  the backend starts them (a launcher line, or ``train --ranks``); :meth:`Backend.check_ranks` refuses
  site settings that cannot run them. The generic checks live in :mod:`sbt_batch.batch.ranks`.
* A task that checkpointed after SIGTERM (exit 75) runs again as :attr:`Backend.requeue` says
  (:meth:`Backend.requeue_job` asks the scheduler when it must be asked).

Registering a built-in backend is one line in ``_BUILTIN`` below; nothing else names backends.
"""

from __future__ import annotations

import difflib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from sbt_batch.common.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from sbt_batch.batch.run import Run

# Normalized scheduler states (what query() reports; the core merges them with state.json).
PENDING = "pending"  # queued, waiting for resources or a dependency
HELD = "held"  # queued but held (sbatch --hold, condor hold)
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
SCHEDULER_STATES = (PENDING, HELD, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT)
ACTIVE_STATES = frozenset({PENDING, HELD, RUNNING})

# How a task that checkpointed after SIGTERM (exit 75) runs again (:attr:`Backend.requeue`).
REQUEUE_NONE: Final = "none"  # it does not: the wrapper records it killed (or retries it in place, --retries)
REQUEUE_ASK: Final = "ask"  # stopped by a signal: the wrapper asks the scheduler to requeue the job (requeue_job)
REQUEUE_SCHEDULER: Final = "scheduler"  # the scheduler starts a job that exited 75 again by itself, stopped or not
RequeueMode = Literal["none", "ask", "scheduler"]


@dataclass(frozen=True)
class JobState:
    """What the scheduler says about one job: a normalized state, exit code if known, and a reason."""

    state: str
    exit_code: int | None = None
    reason: str = ""

    @property
    def active(self) -> bool:
        """True while the job is queued, held or running."""
        return self.state in ACTIVE_STATES


class Backend(ABC):
    """One scheduler (or the local machine): submit, query and cancel the tasks of a run."""

    name: ClassVar[str] = ""
    script_name: ClassVar[str] = "job.sh"  # file name stem used under RUN/scripts/
    requeue: ClassVar[RequeueMode] = REQUEUE_NONE  # how an exit-75 task runs again (see REQUEUE_*)

    def script_name_for(self, run: Run) -> str:
        """The file name under ``RUN/scripts/`` for the current submission (``array-2.sh``)."""
        stem, dot, ext = self.script_name.rpartition(".")
        number = run.submissions[-1]["number"] if run.submissions else 0
        return f"{stem}-{number}{dot}{ext}" if dot else f"{self.script_name}-{number}"

    def task_command(self, run: Run, index_placeholder: str | int) -> list[str]:
        """The argv of the task wrapper (``python -m sbt_batch task run RUN INDEX``), before container wrapping."""
        return [*run.sbt_command, "task", "run", str(run.path), str(index_placeholder)]

    def check(self) -> None:  # noqa: B027  (an optional hook: most backends need no check)
        """Raise a UserError when the scheduler's client tools are missing (called before submit)."""

    def precheck(self, count: int) -> None:  # noqa: B027  (an optional hook)
        """Before a new run's directory exists: raise a UserError when ``count`` tasks cannot be submitted (site limits)."""

    def requeue_job(self) -> bool:
        """From inside a job: ask the scheduler to run this job again; False when it cannot (``requeue == "ask"``)."""
        return False

    def plan_ranks(self, total: int, nodes: int, mpi: str) -> dict[str, Any]:
        """How this backend starts ``total`` ranks of one training on ``nodes`` machines (``mpi``: srun | mpirun).

        Returns any of ``launcher`` (words before the task wrapper), ``ntasks`` (ranks the job script
        asks for), ``train_args`` (appended to the train command) and ``cpus_min`` (the least --cpus).
        Called by :func:`sbt_batch.batch.ranks.plan_ranks` only for more than one rank or node.
        """
        raise UserError(f"--ntasks {total}: the {self.name or type(self).__name__} backend cannot start several ranks")

    def check_ranks(self, nodes: int, profile: dict[str, Any], image: str | None) -> None:  # noqa: B027  (an optional hook)
        """Before the run exists: raise a UserError when the site ``profile`` cannot run a ``nodes``-machine job."""

    @abstractmethod
    def render(self, run: Run, indices: Sequence[int]) -> str:
        """Return the text of the script/submit file that :meth:`submit` would send for ``indices``."""

    @abstractmethod
    def submit(self, run: Run, indices: Sequence[int]) -> dict[int, str]:
        """Submit the tasks ``indices`` of ``run`` in ONE scheduler call; return ``{index: job id}``."""

    @abstractmethod
    def query(self, run: Run, job_ids: Sequence[str]) -> dict[str, JobState]:
        """Ask the scheduler about ``job_ids`` in ONE call; return states of the ids it still knows."""

    @abstractmethod
    def cancel(self, run: Run, job_ids: Sequence[str]) -> None:
        """Stop the jobs ``job_ids`` (queued or running); unknown ids are ignored."""


# name -> "module:Class"; imported on first use so that `sbt-batch --help` stays fast.
# Adding a backend: its module under backends/, and one line here.
DEFAULT_BACKEND = "local"  # when neither --backend nor the site profile names one
_BUILTIN: dict[str, str] = {
    "local": "sbt_batch.batch.backends.local:LocalBackend",
    "slurm": "sbt_batch.batch.backends.slurm:SlurmBackend",
    "condor": "sbt_batch.batch.backends.condor:CondorBackend",
}
_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator: make a Backend subclass available as ``--backend name``."""

    def decorate(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def backend_names() -> list[str]:
    """Names of all known backends (built-in and registered), without importing their modules."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get_backend(name: str) -> Backend:
    """Return a new instance of the backend called ``name`` (one-line UserError when unknown)."""
    if name not in _REGISTRY and name in _BUILTIN:
        module, _, _cls = _BUILTIN[name].partition(":")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"--backend {name}: not available ({exc})") from None
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, backend_names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"--backend: unknown backend '{name}'{hint}; choose from {', '.join(backend_names())}")
    return _REGISTRY[name]()
