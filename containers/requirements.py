"""Print sbt-batch's pinned dependencies (install_requires plus extras) from setup.cfg, one per line.

Used by containers/Dockerfile so that the heavy dependency layer depends on setup.cfg only
(a code change does not reinstall TensorFlow). Standard library only: it runs on the bare base.

    python3 containers/requirements.py setup.cfg --extras train,jobqueue,condor \
        --tensorflow 'tensorflow[and-cuda]==2.21.0' --without mpi4py
"""

from __future__ import annotations

import argparse
import configparser
import re
import sys

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _name(requirement: str) -> str:
    """The normalized project name of a requirement line."""
    match = _NAME.match(requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def requirements(setup_cfg: str, extras: list[str], tensorflow: str | None, without: set[str]) -> list[str]:
    """install_requires plus the named extras, with TensorFlow replaced and ``without`` dropped."""
    parser = configparser.ConfigParser(interpolation=None)
    if not parser.read(setup_cfg):
        raise SystemExit(f"{setup_cfg}: cannot read")
    lines = parser.get("options", "install_requires", fallback="").splitlines()
    defined = parser["options.extras_require"] if parser.has_section("options.extras_require") else {}
    for extra in extras:
        if extra not in defined:
            raise SystemExit(f"{setup_cfg}: no extra named {extra!r} (have: {', '.join(defined)})")
        lines += defined[extra].splitlines()
    out: list[str] = []
    for line in (raw.split("#")[0].strip() for raw in lines):
        if not line or line.startswith("%("):
            continue
        name = _name(line)
        if name in without:
            continue
        if tensorflow and name in {"tensorflow", "tensorflow-cpu", "tensorflow-gpu"}:
            line = tensorflow
        if line not in out:
            out.append(line)
    return out


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("setup_cfg")
    ap.add_argument("--extras", default="", help="comma-separated extras to include")
    ap.add_argument("--tensorflow", default="", help="requirement that replaces tensorflow/tensorflow-cpu")
    ap.add_argument("--without", action="append", default=[], help="project name to leave out (repeatable)")
    args = ap.parse_args()
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    without = {_name(w) for w in args.without}
    sys.stdout.write("".join(f"{r}\n" for r in requirements(args.setup_cfg, extras, args.tensorflow or None, without)))


if __name__ == "__main__":
    main()
