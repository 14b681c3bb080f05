"""Input URLs: recognize ``scheme://`` strings and check the ones convert reads (root://, http(s)://).

Only text handling lives here (no network client), so that input lists, the batch layer and
convert share one notion of what a URL is.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from sbt_batch.common.errors import InputFileError

SCHEMES = ("root", "http", "https")  # what convert reads; others get a one-line error
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def url_scheme(text: str) -> str | None:
    """The scheme of ``text`` when it is written as ``scheme://...`` (lower case), else None."""
    match = _SCHEME_RE.match(text)
    return match.group(1).lower() if match else None


def is_url(item: object) -> bool:
    """True when ``item`` is a URL string (``scheme://``), which is never a local path."""
    return isinstance(item, str) and url_scheme(item) is not None


def check_url(url: str) -> str:
    """Return ``url`` when convert can read it (root://HOST[:PORT]//PATH, http(s)://HOST/PATH), else InputFileError."""
    scheme = url_scheme(url)
    if scheme not in SCHEMES:
        raise InputFileError(url, f"unsupported URL scheme '{scheme}' (convert reads root://, https:// and http://)")
    parts = urlsplit(url)
    if not parts.hostname:
        raise InputFileError(url, "URL has no host")
    if not parts.path.strip("/") or parts.path.endswith("/"):
        raise InputFileError(url, "URL names no file (directories are not listed; give one URL per file)")
    if scheme == "root" and not parts.path.startswith("//"):
        raise InputFileError(url, "root:// URL needs an absolute path after the host: root://HOST[:PORT]//PATH")
    return url


def as_input(item: str | Path) -> str | Path:
    """An input as convert carries it: URLs stay strings (Path would collapse '//'), anything else is a Path."""
    return item if is_url(item) else Path(item)
