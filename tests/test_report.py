"""`sbt-batch report`: real batch runs (local backend, a corrupt input), a real training run and a tiny real sweep,
rendered in a real headless Chromium with the network unreachable; no external URL in the page; one-line errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, require, run_sbt

from sbt_batch.batch.core import run_status
from sbt_batch.batch.run import Run, Task

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]
EXTERNAL = re.compile(r"""https?://|(?:src|href)\s*=\s*["']?\s*//|url\(\s*["']?\s*(?:https?:)?//|@import""", re.IGNORECASE)


def offline() -> list[str]:
    """A prefix that runs a command in a new network namespace (no network at all), when this host allows it."""
    ok = shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    return ["unshare", "-n"] if ok else []


def chromium(page: Path, *mode: str, size: str = "1200,2400") -> subprocess.CompletedProcess[str]:
    """Open ``page`` in headless Chromium with a fresh profile and no network; ``mode`` is --dump-dom or --screenshot=..."""
    require(CHROMIUM is not None, "Debian's chromium is not installed (scripts/install-system.sh)")
    with tempfile.TemporaryDirectory(prefix="sbt-chromium-") as profile:
        cmd = [*offline(), CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}", *mode,
               page.resolve().as_uri()]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def dom(page: Path) -> str:
    """The page's DOM after Chromium rendered it."""
    return chromium(page, "--dump-dom").stdout


def screenshot(page: Path, target: Path) -> Path:
    """A screenshot of ``page``; asserts it is a PNG with real content (not blank)."""
    from PIL import Image

    chromium(page, f"--screenshot={target}")
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(target) as img:
        grey = img.convert("L")
        colours = len(img.convert("RGB").getcolors(maxcolors=1 << 20) or [])
        lo, hi = grey.getextrema()
    assert colours > 50 and hi - lo > 100, f"screenshot looks blank ({colours} colours, range {lo}-{hi})"
    return target


def assert_self_contained(html: str) -> None:
    """No external URL: no http(s)://, no protocol-relative src/href, no CSS url() or @import, no script."""
    found = EXTERNAL.findall(html)
    assert not found, found[:5]
    assert "<script" not in html.lower() and "<link" not in html.lower()
    for src in re.findall(r"""src\s*=\s*["']([^"']*)""", html):
        assert src.startswith("data:image/png;base64,"), src[:80]


def element_ids(html: str) -> set[str]:
    """Every id attribute in ``html``."""
    return set(re.findall(r"""\bid\s*=\s*["']([^"']+)""", html))


def wait_settled(run: Run, timeout: float = 120) -> None:
    """Poll `status` until no task is queued or running."""
    deadline = time.monotonic() + timeout
    while any(r.active for r in run_status(Run.open(run.path))):
        assert time.monotonic() < deadline, "run did not settle"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory) -> Run:
    """A real local-backend convert run of 4 sample ntuples: two corrupt; one is repaired and resubmitted (attempt 2)."""
    base = tmp_path_factory.mktemp("batch")
    made = run_sbt("sample-ntuples", base / "in", "--kind", "background", "--files", "4", "--events", "40", "--seed", "5")
    assert made.returncode == 0, made.stderr
    files = sorted((base / "in").glob("*.root"))
    good = files[1].read_bytes()
    for bad in files[1:3]:
        bad.write_bytes(b"this is not a ROOT file\n")
    sub = run_sbt("submit", "convert", base / "in", "-o", base / "out", "--runs-dir", base / "runs", "--name", "report-test")
    assert sub.returncode == 0, sub.stderr
    run = Run.open(next((base / "runs").glob("report-test-*")))
    wait_settled(run)
    assert [r.state for r in run_status(run)] == ["completed", "failed", "failed", "completed"]
    files[1].write_bytes(good)
    assert run_sbt("resubmit", run.path, "--failed").returncode == 0
    run = Run.open(run.path)
    wait_settled(run)
    assert [r.state for r in run_status(run)] == ["completed", "completed", "failed", "completed"]
    return run


def test_batch_report_data(batch_run: Run) -> None:
    from sbt_batch.report.batch import batch_report

    rep = batch_report(batch_run, figures=False)
    tries = {i: [(a.attempt, a.outcome) for a in rep.attempts if a.index == i] for i in range(4)}
    assert tries[1] == [(1, "failed"), (2, "completed")] and tries[2] == [(1, "failed"), (2, "failed")]
    assert tries[0] == [(1, "completed")] and all(a.queued is not None and a.started >= a.queued for a in rep.attempts)
    assert [(g.cause, [t[0] for t in g.tasks]) for g in rep.failures] == [("not a ROOT file", [2])]
    assert rep.events == 120 and rep.overall_rate and len(rep.rates) == 3
    assert rep.cpu_hours == pytest.approx(sum(d for _, d in rep.durations) / 3600)
    assert rep.settings["backend"] == "local" and rep.settings["submissions"] == 2


def test_stragglers_are_named(tmp_path: Path) -> None:
    from sbt_batch.batch.submit import SubmitOptions, submit_new_run
    from sbt_batch.report.batch import batch_report

    sleeps = [0.2, 0.2, 0.2, 4.0]
    tasks = [Task(index=i, argv=["task", "probe", "--sleep", str(s)]) for i, s in enumerate(sleeps)]
    run = submit_new_run("probe", lambda _s: tasks, SubmitOptions(backend="local", name="slow", runs_dir=tmp_path / "runs"), {})
    wait_settled(run)
    rep = batch_report(Run.open(run.path), figures=False)
    assert [i for i, _, _ in rep.stragglers] == [3] and rep.median is not None
    page = tmp_path / "slow.html"
    r = run_sbt("report", run.path, "-o", page)
    assert r.returncode == 0 and "task 3" in r.stdout, r.stderr
    table = re.search(r'<table id="stragglers">(.*?)</table>', page.read_text(), re.S).group(1)
    assert re.search(r"<td class=\"num\">3</td>", table)


@pytest.fixture(scope="module")
def training_run(tmp_path_factory, gfex_signal, gfex_background) -> Path:
    """A quick real training on the real data (1 epoch, the small 1c model), not evaluated yet."""
    out = tmp_path_factory.mktemp("train") / "cnn"
    r = run_sbt("train", "-s", ",".join(map(str, gfex_signal)), "-b", ",".join(map(str, gfex_background)), "--model", "1c",
                "--out", out, "--epochs", "1", "--max-events", "200", "--split", "0.5,0.2,0.3", "--no-progress")
    assert r.returncode == 0, r.stderr
    return out


def test_batch_report_in_chromium(batch_run: Run, tmp_path: Path) -> None:
    page = tmp_path / "batch.html"
    r = run_sbt("report", batch_run.path, "--output", page)
    assert r.returncode == 0, r.stderr
    # the terminal summary: the same figures
    assert "CPU-hours" in r.stdout and "failures by cause" in r.stdout and "not a ROOT file" in r.stdout
    html = page.read_text()
    assert_self_contained(html)
    rendered = dom(page)
    ids = element_ids(rendered)
    assert {"timeline", "durations", "throughput", "failures", "stragglers", "settings"} <= ids, ids
    failures = re.search(r'<table id="failures">(.*?)</table>', rendered, re.S).group(1)
    assert "not a ROOT file" in failures and "background_002.root" in failures and "background_001" not in failures
    assert rendered.count("data:image/png;base64,") >= 3
    screenshot(page, tmp_path / "batch.png")


def test_training_report_before_and_after_evaluate(training_run: Path, tmp_path: Path) -> None:
    before = tmp_path / "before.html"
    r = run_sbt("report", training_run, "-o", before)
    assert r.returncode == 0, r.stderr
    assert "evaluate has not run" in r.stdout
    ids = element_ids(before.read_text())
    assert {"not-evaluated", "loss", "accuracy", "config", "exports"} <= ids and "roc" not in ids
    assert run_sbt("evaluate", training_run).returncode == 0
    after = tmp_path / "after.html"
    r = run_sbt("report", training_run, "-o", after)
    assert r.returncode == 0, r.stderr
    assert "AUC" in r.stdout
    assert_self_contained(after.read_text())
    rendered = dom(after)
    assert {"roc", "rejection", "scores", "loss", "accuracy", "config"} <= element_ids(rendered)
    assert "not-evaluated" not in element_ids(rendered)
    assert re.search(r'<figure id="roc"><img[^>]+src="data:image/png;base64,', rendered)
    screenshot(after, tmp_path / "training.png")


def test_one_page_for_several_runs_offline(batch_run: Run, training_run: Path, tmp_path: Path) -> None:
    if not (training_run / "eval" / "metrics.json").exists():
        assert run_sbt("evaluate", training_run).returncode == 0
    page = tmp_path / "both.html"
    r = run_sbt("report", batch_run.path, training_run, "-o", page)
    assert r.returncode == 0, r.stderr
    html = page.read_text()
    assert_self_contained(html)
    ids = element_ids(dom(page))  # Chromium runs in a network namespace without any network here
    assert {"timeline", "failures", "r2-roc", "r2-config"} <= ids, ids
    screenshot(page, tmp_path / "both.png")


def test_run_with_no_finished_task_gets_a_page(tmp_path: Path) -> None:
    run = Run.create(tmp_path / "runs", "idle", "probe", "local", [Task(index=i, argv=["task", "probe"]) for i in range(3)])
    page = tmp_path / "idle.html"
    r = run_sbt("report", run.path, "-o", page)
    assert r.returncode == 0, r.stderr
    assert "no task has finished yet" in r.stdout
    assert "no-finished" in element_ids(page.read_text())
    assert_self_contained(page.read_text())


def test_report_errors(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    assert_one_line_error(run_sbt("report", tmp_path / "plain", "-o", tmp_path / "x.html"), "not a run directory")
    assert_one_line_error(run_sbt("report", tmp_path / "missing", "-o", tmp_path / "x.html"), "no such run directory")
    assert_one_line_error(run_sbt("report", tmp_path / "plain", "-o", tmp_path / "nodir" / "x.html"), "--output")
    assert not (tmp_path / "x.html").exists()


def test_sweep_run_report_has_table_plots_and_best(tmp_path: Path, gfex_signal, gfex_background) -> None:
    from test_sweep import _config, _wait

    cfg = _config(tmp_path, gfex_signal, gfex_background, grid={"model": ["1c", "2c2m"]}, seeds=[1])
    r = run_sbt("sweep", "--config", cfg, "--runs-dir", tmp_path / "runs")
    assert r.returncode == 0, r.stderr
    run = Run.open(next((tmp_path / "runs").iterdir()))
    assert all(row.state == "completed" for row in _wait(run, 400))
    report_dir = tmp_path / "sweep" / "report"
    for collected in (False, True):  # before collect: computed in a temporary folder; after: read from report/
        if collected:
            assert run_sbt("collect", run.path).returncode == 0
        page = tmp_path / f"sweep-{collected}.html"
        # as `sbt-batch report RUN -o PAGE`, checking that neither path (computed or read) loads TensorFlow
        code = ("import sys\nfrom sbt_batch.cli import main\n"
                f"try:\n    main(['report', {str(run.path)!r}, '-o', {str(page)!r}])\n"
                "except SystemExit as e:\n    assert not e.code, e.code\n"
                "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\nassert not bad, bad\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "2 point(s), 2 of 2 point x seed(s) done; best" in " ".join(r.stdout.split()), r.stdout
        assert report_dir.exists() == collected  # report never writes into the sweep directory
        html = page.read_text()
        assert_self_contained(html)
        assert {"sweep", "sweep-table", "sweep-baseline-error", "sweep-roc-best", "sweep-best", "timeline"} <= element_ids(html)
        assert ("sweep-note" in element_ids(html)) != collected
        table = re.search(r'<table id="sweep-table"[^>]*>(.*?)</table>', html, re.S).group(1)
        assert table.count('<tr class="sweep-point">') == 2 and "<code>1c</code>" in table and "<code>2c2m</code>" in table
        assert "±" in table
        for fig in ("sweep-baseline-error", "sweep-roc-best"):
            assert re.search(rf'<figure id="{fig}"><img[^>]+src="data:image/png;base64,', html), fig
        assert "sbt-batch train --config best.yaml" in html
