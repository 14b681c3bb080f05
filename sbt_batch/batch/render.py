"""Job script templates: find them (``--template``, ``$SBT_BATCH_TEMPLATES``, the package) and render them.

Templates are Jinja2 files in the top-level ``slurm/`` and ``condor/`` folders (installed as
``sbt_batch/templates/<backend>/``).  Every ``{{ value }}`` is passed through :func:`shlex.quote`
when it is printed (a list prints as its quoted words joined by spaces), so a template cannot
forget to quote a user's path, name or argument.  Values meant to reach the shell unquoted
(``"$SLURM_ARRAY_TASK_ID"``, trusted site setup lines) are wrapped in :class:`Raw` or use the
``raw`` filter.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from sbt_batch.common.errors import UserError

PACKAGE_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


class Raw(str):
    """A string printed verbatim by a template (not shell-quoted)."""


def shell_value(value: Any) -> str:
    """How a template prints a value: Raw as is, None as '', lists as quoted words, anything else quoted."""
    if isinstance(value, Raw):
        return value
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(shell_value(v) for v in value)
    if isinstance(value, bool):
        return "1" if value else "0"
    return shlex.quote(str(value))


def template_dirs(backend: str) -> list[Path]:
    """Directories searched for ``backend``'s templates, first match wins."""
    dirs = []
    if os.environ.get("SBT_BATCH_TEMPLATES"):
        dirs.append(Path(os.environ["SBT_BATCH_TEMPLATES"]) / backend)
    dirs.append(PACKAGE_TEMPLATES / backend)
    repo = Path(__file__).resolve().parents[2]
    if (repo / "setup.cfg").is_file():  # source checkout: the top-level folder is canonical
        dirs.append(repo / backend)
    return dirs


def find_template(backend: str, name: str, user_template: str | os.PathLike[str] | None = None) -> Path:
    """The template file to render: the user's ``--template`` or ``name`` from the template dirs."""
    if user_template:
        path = Path(user_template)
        if not path.is_file():
            raise UserError(f"--template {path}: file not found")
        return path
    for d in template_dirs(backend):
        if (d / name).is_file():
            return d / name
    raise UserError(f"{backend} template {name!r} not found (searched {', '.join(map(str, template_dirs(backend)))})")


def render_template(path: Path, context: dict[str, Any]) -> str:
    """Render the Jinja2 template at ``path`` with every printed value shell-quoted."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(path.parent)),
        undefined=jinja2.StrictUndefined,
        finalize=shell_value,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["raw"] = lambda v: Raw("" if v is None else str(v))
    env.filters["q"] = lambda v: Raw(shell_value(v))
    try:
        return env.get_template(path.name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(f"{path}: template syntax error at line {exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise UserError(f"{path}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise UserError(f"{path}: cannot render template ({exc})") from None


def container_prefix(runtime: str, image: str | None, binds: list[str], gpus: int = 0) -> list[str]:
    """The words that run a task inside ``image`` (see :func:`sbt_batch.container.images.exec_prefix`); [] without image."""
    if not image:
        return []
    from sbt_batch.container.images import OCI, exec_prefix

    # apptainer keeps the caller's working directory by itself; podman/docker need it spelled out
    workdir = os.getcwd() if runtime in OCI else None
    return exec_prefix(runtime, image, binds, gpus, workdir=workdir, host_pid=True)
