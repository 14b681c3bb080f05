"""Expand command-line INPUT arguments (files, directories, globs, @list.txt) into an ordered file list."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from sbt_batch.errors import InputFileError, UserError

GLOB_CHARS = set("*?[")
DIR_PATTERN = "*.root"


def _is_glob(text: str) -> bool:
    return any(ch in GLOB_CHARS for ch in text)


def _read_list(list_file: Path) -> list[str]:
    """Entries of an @list file: one per line, blank lines and '#' comments ignored."""
    try:
        text = list_file.read_text()
    except FileNotFoundError:
        raise InputFileError(list_file, "list file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(list_file, f"cannot read list file ({getattr(exc, 'strerror', None) or exc})") from None
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            at, name = ("@", line[1:]) if line.startswith("@") else ("", line)
            entry = Path(name).expanduser()
            # relative entries are relative to the list file, so a list travels with its data
            entries.append(at + str(entry if entry.is_absolute() else list_file.parent / entry))
    if not entries:
        raise InputFileError(list_file, "list file names no inputs")
    return entries


def expand_inputs(items: Iterable[str | Path], pattern: str = DIR_PATTERN, _depth: int = 0) -> list[Path]:
    """Expand files, directories (their ``pattern`` files), globs and ``@list.txt`` into paths, in the order given."""
    paths: list[Path] = []
    for item in items:
        text = str(item)
        if text.startswith("@"):
            list_file = Path(text[1:]).expanduser()
            if _depth >= 8:  # also ends a list that names itself
                raise InputFileError(list_file, "@list files nest more than 8 deep")
            paths.extend(expand_inputs(_read_list(list_file), pattern, _depth + 1))
        elif _is_glob(text) and not Path(text).exists():
            matches = sorted(glob.glob(str(Path(text).expanduser()), recursive=True))
            files = [Path(m) for m in matches if not Path(m).is_dir()]
            if not files:
                raise InputFileError(text, "no files match this pattern")
            paths.extend(files)
        else:
            path = Path(text).expanduser()
            if path.is_dir():
                files = sorted(p for p in path.glob(pattern) if p.is_file())
                if not files:
                    raise InputFileError(path, f"directory has no {pattern} files")
                paths.extend(files)
            elif path.is_file():
                paths.append(path)
            elif path.exists():
                raise InputFileError(path, "not a regular file")
            else:
                raise InputFileError(path, "no such file or directory")
    if not paths and _depth == 0:
        raise UserError("no input files given")
    return paths
