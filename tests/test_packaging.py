"""A plain (non-editable) ``pip install .`` into a fresh venv gives a working ``sbt-batch`` with its package data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The CLI imports heavy libraries lazily, so --help needs only these (the rest of install_requires is
# installed by users; here it would only make the test slow).
LIGHT_DEPS = ["typer>=0.12", "rich>=13", "pyyaml>=6", "jinja2>=3.1"]
IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                "runs", "demo-out", ".whl", ".gl", "*.h5", "*.hdf5", "*.root")  # fmt: skip


def run(args: list[str], **kw) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, **kw)


@pytest.mark.slow
def test_pip_install_into_fresh_venv(tmp_path: Path):
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=IGNORE)
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    py = venv / "bin" / "python"
    result = run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(src)])
    assert result.returncode == 0, result.stderr[-2000:]
    result = run([str(py), "-m", "pip", "install", "-q", *LIGHT_DEPS])
    assert result.returncode == 0, result.stderr[-2000:]
    shutil.rmtree(src)  # nothing may come from the source tree any more
    exe = venv / "bin" / "sbt-batch"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    for args in (["--help"], ["--version"], ["convert", "--help"], ["sample-ntuples", "--help"]):
        result = run([str(exe), *args], cwd=elsewhere)
        assert result.returncode == 0, (args, result.stderr[-2000:])
        assert "Usage" in result.stdout or "sbt-batch" in result.stdout
    code = (
        "import sbt_batch, pathlib\n"
        "from sbt_batch.batch.render import find_template\n"
        "root = pathlib.Path(sbt_batch.__file__).parent\n"
        "assert 'site-packages' in str(root), root\n"
        "for backend, name in (('slurm', 'array.sh.j2'), ('condor', 'job.sub.j2')):\n"
        "    path = find_template(backend, name)\n"
        "    assert path.is_relative_to(root), path\n"
        "assert (root / 'py.typed').is_file()\n"
        "assert (root / 'report' / 'page.html.j2').is_file()\n"
        # the example site profiles and the backends' defaults are package data: --site works without a checkout
        "from sbt_batch.batch.profiles import backend_defaults, find_profile, load_profile\n"
        "for name, backend in (('hpc-slurm', 'slurm'), ('tier3-condor', 'condor')):\n"
        "    assert find_profile(name).is_relative_to(root), find_profile(name)\n"
        "    assert load_profile(name)['backend'] == backend\n"
        "assert backend_defaults('slurm')['max_array_size'] == 1001\n"
    )
    result = run([str(py), "-c", code], cwd=elsewhere)
    assert result.returncode == 0, result.stderr[-2000:]
