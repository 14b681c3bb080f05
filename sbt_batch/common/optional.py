"""Optional packages: the one place that imports them, and one install hint for each.

``require("tensorflow", "sbt-batch train")`` returns the module, or raises a one-line
:class:`~sbt_batch.common.errors.UserError` that says what needs it and what to install::

    sbt-batch train: TensorFlow is not installed in this Python; install it with: pip install 'sbt-batch[train]'

``available("htcondor2")`` says whether a package is installed without importing it, ``check()``
raises the same error as ``require`` without importing (for a command that checks up front and
imports later), and ``try_import()`` returns the module or None where a fallback exists.

The extras named here are those of ``setup.cfg``'s ``[options.extras_require]``; Horovod is built
against the installed TensorFlow by ``scripts/build-horovod.sh`` instead.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from sbt_batch.common.errors import UserError

__all__ = ["DEPENDENCIES", "Dependency", "available", "check", "install_hint", "missing_error", "require", "try_import"]

HOROVOD_BUILD = "bash scripts/build-horovod.sh"


@dataclass(frozen=True)
class Dependency:
    """An optional package: the name people know it by, and the extra (or command) that installs it."""

    name: str
    extra: str | None = None  # setup.cfg extras_require key: pip install 'sbt-batch[extra]'
    command: str | None = None  # the install command when no extra provides it

    @property
    def hint(self) -> str:
        """The install command."""
        if self.extra is not None:
            return f"pip install 'sbt-batch[{self.extra}]'"
        return self.command or "pip install it"


# Top-level import name -> how to install it.
DEPENDENCIES: dict[str, Dependency] = {
    "tensorflow": Dependency("TensorFlow", extra="train"),
    "keras": Dependency("Keras", extra="train"),  # comes with TensorFlow
    "tf2onnx": Dependency("tf2onnx", extra="train"),
    "onnx": Dependency("onnx", extra="train"),  # comes with tf2onnx
    "onnxruntime": Dependency("ONNX Runtime", extra="train"),
    "matplotlib": Dependency("matplotlib", extra="train"),
    "mplhep": Dependency("mplhep", extra="train"),
    "PIL": Dependency("Pillow", extra="train"),
    "horovod": Dependency("Horovod", command=HOROVOD_BUILD),
    "mpi4py": Dependency("mpi4py", extra="horovod"),
    "htcondor2": Dependency("the HTCondor Python bindings (htcondor2)", extra="condor"),
    "dask_jobqueue": Dependency("dask-jobqueue", extra="jobqueue"),
    "ROOT": Dependency("PyROOT", extra="test"),
    # dependencies of sbt-batch itself (install_requires), optional only for what they read
    "XRootD": Dependency("the XRootD client", command="pip install xrootd fsspec-xrootd"),
    "fsspec_xrootd": Dependency("fsspec-xrootd", command="pip install xrootd fsspec-xrootd"),
    "aiohttp": Dependency("aiohttp", command="pip install aiohttp"),
    "isal": Dependency("ISA-L (isal)", command="pip install isal"),
}


def _dependency(module: str) -> Dependency:
    top = module.partition(".")[0]
    return DEPENDENCIES.get(top) or Dependency(top, command=f"pip install {top}")


def install_hint(module: str) -> str:
    """The command that installs ``module`` (an import name such as "tensorflow" or "horovod.tensorflow")."""
    return _dependency(module).hint


def missing_error(module: str, purpose: str, exc: BaseException | None = None) -> UserError:
    """The one-line UserError for ``purpose`` (what needs it) when ``module`` is absent or fails to import."""
    dep = _dependency(module)
    if exc is None or _not_installed(module, exc):
        return UserError(f"{purpose}: {dep.name} is not installed in this Python; install it with: {dep.hint}")
    detail = " ".join(f"{type(exc).__name__}: {exc}".split())
    return UserError(f"{purpose}: {dep.name} does not import in this Python ({detail}); reinstall it with: {dep.hint}")


def _not_installed(module: str, exc: BaseException) -> bool:
    """True when ``exc`` says ``module`` (or a package above it) is absent, not that it is broken."""
    name = getattr(exc, "name", None)
    if name:
        return module == name or module.startswith(name + ".")
    return "No module named" in str(exc)


def available(module: str) -> bool:
    """True when ``module`` can be found (importlib.util.find_spec), without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a module whose __spec__ is None
        return False


def check(module: str, purpose: str) -> None:
    """Raise :func:`require`'s UserError when ``module`` is not installed, without importing it."""
    if not available(module):
        raise missing_error(module, purpose)


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` and return it, or raise a one-line UserError naming ``purpose`` and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_error(module, purpose, exc) from None


def try_import(module: str) -> ModuleType | None:
    """Import ``module`` and return it, or None when it is not installed (for code that has a fallback)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
