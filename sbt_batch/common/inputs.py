"""Expand command-line INPUT arguments (files, directories, globs, URLs, @list.txt) into an ordered input list.

Local inputs become :class:`~pathlib.Path` objects. ``root://`` and ``http(s)://`` URLs stay strings
(a Path would collapse their ``//``): they are checked for form only, never stat'ed or globbed here.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable
from pathlib import Path

from sbt_batch.common.errors import InputFileError, UserError
from sbt_batch.common.urls import check_url, is_url

GLOB_CHARS = set("*?[")
DIR_PATTERN = "*.root"
_COMMENT = re.compile(r"(^|\s)#.*$")  # '#' starts a comment at the line start or after a space (not inside a URL)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_TABLE_BARS = re.compile(r"[|\u2502\u2503]")  # the column bars of a table row (ASCII, or rich's box drawing)
_TABLE_RULE = re.compile(r"^[\s+\-=:|\u2500-\u257f]+$")  # a table's rule lines: +---+, |---|, box drawing


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
    replicas: set[tuple[str, ...]] = set()
    for line in text.splitlines():
        if _TABLE_RULE.match(line):
            continue
        if _TABLE_BARS.search(line):
            entries.extend(_table_row_url(line, replicas))
            continue
        line = _COMMENT.sub("", line).strip()
        if is_url(line):
            entries.append(line)
        elif line:
            at, name = ("@", line[1:]) if line.startswith("@") else ("", line)
            entry = Path(name).expanduser()
            # relative entries are relative to the list file, so a list travels with its data
            entries.append(at + str(entry if entry.is_absolute() else list_file.parent / entry))
    if not entries:
        raise InputFileError(list_file, "list file names no inputs")
    return entries


def _table_row_url(line: str, seen: set[tuple[str, ...]]) -> list[str]:
    """The replica URL of one row of ``rucio list-file-replicas`` table output (the first replica of each file).

    Rows look like ``| SCOPE | NAME | FILESIZE | ADLER32 | RSE: URL |``; the header and rule lines
    name no URL and give nothing. A file listed again with another replica gives nothing either.
    """
    cells = [c.strip() for c in _TABLE_BARS.split(line)]
    urls = [m.group(0) for c in cells for m in [_URL_IN_TEXT.search(c)] if m]
    if not urls:
        return []
    key = tuple(c for c in cells if c and not _URL_IN_TEXT.search(c))
    if key in seen:
        return []
    seen.add(key)
    return [urls[0]]


def expand_inputs(items: Iterable[str | Path], pattern: str = DIR_PATTERN, _depth: int = 0) -> list[Path | str]:
    """Expand files, directories (their ``pattern`` files), globs, URLs and ``@list.txt`` into inputs, in the order given.

    Local inputs are Paths; ``root://`` and ``http(s)://`` URLs are kept as strings, unchecked beyond their form.
    """
    paths: list[Path | str] = []
    for item in items:
        text = str(item)
        if is_url(item):
            paths.append(check_url(text))
        elif text.startswith("@"):
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
