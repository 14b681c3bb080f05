"""YAML job specs and site profiles: loading and key validation with clear errors."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sbt_batch.common.errors import UserError


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML mapping from ``path``, raising a one-line UserError on any problem."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}: invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def check_keys(mapping: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Raise a UserError naming the first key of ``mapping`` not in ``allowed`` (with a suggestion)."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"{where}: unknown key '{key}'{hint}")


def merge_options(spec: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``spec`` updated with the ``overrides`` that are not None (CLI flags beat the YAML file)."""
    merged = dict(spec)
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return merged
