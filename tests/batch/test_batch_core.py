"""Batch layer without a scheduler: run directories, templates, profiles, resources and one-line errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_sbt

from sbt_batch.batch.backend import get_backend
from sbt_batch.batch.backends.slurm import array_spec
from sbt_batch.batch.profiles import load_profile
from sbt_batch.batch.render import render_template, shell_value
from sbt_batch.batch.resources import parse_mem, parse_time
from sbt_batch.batch.run import Run, Task, find_runs
from sbt_batch.common.errors import UserError

REPO = Path(__file__).resolve().parents[2]
NASTY = "we ird; $(touch PWNED) 'q' \"d\" `x` #h %A"


@pytest.fixture
def roots(tmp_path):
    """Two small ROOT-named input files (content is not read by these tests)."""
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        (d / f"f{i}.root").write_bytes(b"x")
    return d


def test_array_spec_compresses_ranges():
    assert array_spec([0, 1, 2, 3]) == "0-3"
    assert array_spec([7, 3, 1, 2, 9, 10]) == "1-3,7,9-10"
    assert array_spec(range(1000), 50) == "0-999%50"


@pytest.mark.parametrize(("text", "seconds"), [("10", 600), ("1:30", 90), ("01:00:00", 3600), ("2-00", 172800), ("1-02:03:04", 93784)])
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("bad", ["3 days", "1h", "-5", "0", "1:2:3:4"])
def test_parse_time_rejects(bad):
    with pytest.raises(UserError, match="--time"):
        parse_time(bad)


def test_parse_mem():
    assert parse_mem("4G") == 4096 and parse_mem("500M") == 500 and parse_mem("2000") == 2000
    with pytest.raises(UserError, match="--mem"):
        parse_mem("lots")


def test_same_name_makes_new_run(tmp_path):
    a = Run.create(tmp_path, NASTY, "probe", "local", [Task(0, ["task", "probe"])])
    b = Run.create(tmp_path, NASTY, "probe", "local", [Task(0, ["task", "probe"])])
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()
    assert find_runs(tmp_path, NASTY) == [a.path, b.path]
    assert Run.open(NASTY, tmp_path).path == b.path
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dir left


def test_template_quotes_every_value(tmp_path):
    """A nasty run name, path and argument render to a script that bash parses without executing anything."""
    runs = tmp_path / NASTY
    run = Run.create(runs, NASTY, "probe", "slurm", [Task(0, ["task", "probe", "--", NASTY])],
                     resources={"cpus": 1, "partition": "p q", "account": "a;b"},
                     extra_directives=["--comment=$(touch PWNED)"], env={"FOO": NASTY})
    text = get_backend("slurm").render(run, [0])
    script = tmp_path / "s.sh"
    script.write_text(text)
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # every directive value is one shell word that expands back to the original
    for line in text.splitlines():
        if line.startswith("#SBATCH --job-name="):
            value = line.split("=", 1)[1]
            out = subprocess.run(["bash", "-c", f"printf %s {value}"], capture_output=True, text=True, cwd=tmp_path)
            assert out.stdout == NASTY
    assert not (tmp_path / "PWNED").exists()


def test_shell_value_lists_and_none():
    assert shell_value(["a b", "c"]) == "'a b' c"
    assert shell_value(None) == ""


def test_render_reports_template_errors(tmp_path):
    bad = tmp_path / "bad.j2"
    bad.write_text("{% if %}")
    with pytest.raises(UserError, match="template syntax error"):
        render_template(bad, {})
    undefined = tmp_path / "undef.j2"
    undefined.write_text("{{ nope }}")
    with pytest.raises(UserError, match="nope"):
        render_template(undefined, {})


def test_site_examples_validate():
    for path in sorted((REPO / "jobs" / "sites").glob("*.yaml")):
        assert load_profile(str(path))["backend"] in {"slurm", "condor"}


def test_user_profile_from_config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "sbt-batch").mkdir()
    (tmp_path / "sbt-batch" / "mine.yaml").write_text("backend: slurm\npartition: short\ntime: '10'\n")
    assert load_profile("mine")["partition"] == "short"


@pytest.mark.parametrize(("text", "needle"), [
    ("partiton: x\n", "did you mean 'partition'"),
    ("cpus: two\n", "'cpus' must be a int"),
    ("time: 3 days\n", "3 days"),
    ("backend: pbs\n", "'backend' must be one of"),
    ("binds: /scratch\n", "'binds' must be a list"),
])
def test_bad_profile_one_line_error(tmp_path, roots, text, needle):
    profile = tmp_path / "site.yaml"
    profile.write_text(text)
    result = run_sbt("submit", "convert", roots, "-o", tmp_path / "out", "--site", profile, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, needle)
    assert not (tmp_path / "runs").exists()


def test_unknown_profile(tmp_path, roots):
    result = run_sbt("submit", "convert", roots, "-o", tmp_path / "out", "--site", "nowhere", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, "--site nowhere", "no such profile")


def test_unknown_backend(tmp_path, roots):
    result = run_sbt("submit", "convert", roots, "-o", tmp_path / "out", "--backend", "slrum", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, "unknown backend 'slrum'", "did you mean 'slurm'")
    assert not (tmp_path / "runs").exists()


def test_bad_time(tmp_path, roots):
    result = run_sbt("submit", "convert", roots, "-o", tmp_path / "out", "--time", "3 days", "--backend", "slurm", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, "--time", "3 days")
    assert not (tmp_path / "runs").exists()


def test_missing_template(tmp_path, roots):
    result = run_sbt("submit", "convert", roots, "-o", tmp_path / "out", "--backend", "slurm", "--template", tmp_path / "nope.j2", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, "--template", "not found")


def test_missing_input(tmp_path):
    result = run_sbt("submit", "convert", tmp_path / "absent.root", "-o", tmp_path / "out", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, "absent.root")


def test_unknown_run(tmp_path):
    assert_one_line_error(run_sbt("status", "nothing-here", "--runs-dir", tmp_path), "nothing-here")
    assert_one_line_error(run_sbt("collect", tmp_path / "nope", "--runs-dir", tmp_path), "nope")


def test_dry_run_prints_script_and_tasks(tmp_path, roots):
    template = tmp_path / "my.sh.j2"
    template.write_text((REPO / "slurm" / "array.sh.j2").read_text().replace("#SBATCH --job-name", "#SBATCH --comment=mine\n#SBATCH --job-name"))
    result = run_sbt("submit", "convert", roots, "-o", tmp_path / "out", "-k", "2", "--backend", "slurm", "--dry-run",
                     "--runs-dir", tmp_path / "runs", "--template", template, "--max-running", "5", "--image", "/img/x y.sif",
                     "--bind", "/data", "--gpus", "1", "--name", NASTY)
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --array=0-1%5" in result.stdout
    assert "#SBATCH --comment=mine" in result.stdout
    assert "apptainer exec --nv --bind /data:/data '/img/x y.sif'" in result.stdout
    assert "f2.root" in result.stdout
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "out").exists()


def test_task_wrapper_records_state(tmp_path):
    run = Run.create(tmp_path, "w", "probe", "local", [Task(0, ["task", "probe", "--exit", "3", "--", NASTY])])
    result = run_sbt("task", "run", run.path, 0)
    assert result.returncode == 3
    state = json.loads((run.task_dir(0) / "state.json").read_text())
    assert state["state"] == "failed" and state["exit_code"] == 3 and state["attempt"] == 1 and state["duration"] >= 0
    assert json.loads((run.task_dir(0) / "stdout").read_text())["args"] == [NASTY]


def test_submit_train_and_tabular_pass_options_through(tmp_path):
    train = run_sbt("submit", "train", "--backend", "slurm", "--gpus", "2", "--dry-run", "--runs-dir", tmp_path, "--",
                    "--signal", "a b.h5", "--epochs", "3")
    assert train.returncode == 0, train.stderr
    assert "#SBATCH --gres=gpu:2" in train.stdout and "sbt-batch train --signal 'a b.h5' --epochs 3" in train.stdout
    tab = run_sbt("submit", "train-tabular", "--repeats", "3", "-o", tmp_path / "kin", "--dry-run", "--runs-dir", tmp_path, "--",
                  "--data", "k.csv")
    assert tab.returncode == 0, tab.stderr
    assert f"train-tabular --data k.csv --out {tmp_path / 'kin'} --repeat-index 2" in tab.stdout


def test_status_watch_and_runs_on_a_finished_run(tmp_path):
    run = Run.create(tmp_path, "done", "probe", "local", [Task(0, ["task", "probe"])])
    assert run_sbt("task", "run", run.path, 0).returncode == 0
    run.begin_submission([0])  # as if submitted: attempt 1
    watch = run_sbt("status", run.path, "--watch", "--interval", "0.1")
    assert watch.returncode == 0 and "1 tasks: 1 completed" in watch.stdout
    listing = run_sbt("runs", "--runs-dir", tmp_path)
    assert "done-" in listing.stdout and "completed" in listing.stdout


@pytest.mark.parametrize("option", ["--directive", "--partition", "--account"])
def test_newline_in_a_slurm_value_is_refused_before_the_run_exists(tmp_path, roots, option):
    # a #SBATCH line ends at the newline whatever the quoting: the rest would run as a shell line
    result = run_sbt("submit", "convert", roots, "-o", tmp_path / "out", "--backend", "slurm", option, "x\necho pwned #",
                     "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, option, "newline")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_collectors_and_validators_are_named_and_resolve():
    """Every kind's collector and validator is a "module:function" string that imports to a function."""
    from sbt_batch.batch.collect import COLLECTORS, VALIDATORS, get_collector, get_validator, missing_outputs

    assert set(COLLECTORS) == {"convert", "train-tabular", "sweep"}
    for kind, target in {**COLLECTORS, **VALIDATORS}.items():
        assert isinstance(target, str) and ":" in target, kind
    for kind in COLLECTORS:
        assert callable(get_collector(kind)) and callable(get_validator(kind))
    assert get_validator("train-tabular") is missing_outputs
    with pytest.raises(UserError, match="nothing to collect .known: convert, sweep, train-tabular"):
        get_collector("probe")
