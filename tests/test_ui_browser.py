"""End to end: a tiny real search, `python -m bench ui`, and the printed link opened in headless Chromium.

The search also shows that the best model's insight artifacts reach the parent run. The rendered page's screenshot
is kept in test-artifacts/ (gitignored)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from bench import paths
from bench.serving import free_port
from tests.conftest import need_system, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1600,900",
                  "--virtual-time-budget=15000"]
ARTIFACTS = paths.PROJECT_ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> str:
    """Debian's chromium, found before the module's search runs (skipped, or failed in CI, when missing)."""
    binary = shutil.which("chromium")
    need_system(binary, "Debian's chromium not installed (apt-get install chromium; .ci/run installs it)")
    return binary


def chromium(url: str, *action: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    with tempfile.TemporaryDirectory(prefix="hemabench-chromium-") as profile:
        return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action, url],
                              capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def searched(module_tracking: Path):
    from bench.search import study as search

    return search.run(tiny_config(module_tracking))


@pytest.fixture(scope="module")
def link(searched, module_tracking: Path):
    """`python -m bench ui` on a free loopback port; yields the printed link; SIGTERM stops server and worker."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench", "ui", "--experiment", "tests", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=module_tracking,
                               env={**os.environ, "PYTHONPATH": str(paths.PROJECT_ROOT)})
    url = None
    deadline = time.monotonic() + 90
    while url is None and time.monotonic() < deadline and process.poll() is None:
        found = re.search(r"(http://127\.0\.0\.1:\d+/#/experiments/\S+)", process.stdout.readline())
        url = found.group(1) if found else None
    assert url, f"no link printed (exit status {process.poll()})"
    yield url
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)  # the server went with it


def test_link_opens_the_trials_with_the_metric_column(browser: str, link: str) -> None:
    assert "viewStateShareKey=" in link
    page = chromium(link, "--dump-dom")
    assert page.returncode == 0, page.stderr[-2000:]
    dom = page.stdout
    assert "trial-0" in dom and "trial-1" in dom
    assert re.search(r">\s*val_f1_macro\s*<", dom), "objective column header not rendered"
    text = re.sub(r"<[^>]+>", "", dom)
    assert "Sort: val_f1_macro" in text
    assert "2 matching runs" in text  # the trials only: the parent run is filtered out, not nesting them
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "ui_leaderboard.png"
    shot.unlink(missing_ok=True)
    assert chromium(link, f"--screenshot={shot}").returncode == 0
    assert shot.stat().st_size > 10_000


def test_search_logs_insight_to_the_parent_run(searched) -> None:
    from bench.tracking import runs as tracking

    c = tracking.client()
    logged = {f.path for f in c.list_artifacts(searched.parent_run_id, "insight")}
    assert {"insight/gradcam.png", "insight/gradcam.html", "insight/reliability.png", "insight/reliability.html",
            "insight/mistakes.png"} <= logged
    assert 0 <= c.get_run(searched.parent_run_id).data.metrics["test_ece"] <= 1


def test_a_busy_port_is_one_line_exit_2(searched, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from bench import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["ui", "--experiment", "tests", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: port {port} on 127.0.0.1 is not free") and "\n" not in err
