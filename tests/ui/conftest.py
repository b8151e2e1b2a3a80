"""One UI server (the real ``launcher ui`` command) and one headless Chromium per test session.

Chromium is Debian's package (/usr/bin/chromium), driven by Playwright's Python package; no browser is
downloaded. Tests skip with the reason where either is missing. The server's output root is a fresh temp
folder; it starts after the SLURM test cluster (when slurm is installed) so that it can submit to it.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import SHARED_DEMO

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LAUNCHER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SHOTS = REPO_ROOT / "docs" / "ui"
UPLOAD_LIMIT_MB = 16
"""The session server's --max-upload-mb: above every file the tests upload, low enough to test cheaply."""
"""Where the README's screenshots live. Tests write there only when LAUNCHER_UI_SCREENSHOTS=1 (to refresh them);
otherwise to a temporary folder, so that a test run leaves the checkout as it found it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_page(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 300) -> float:
    """Seconds until ``url`` answers 200; fails with the server's output if it dies first."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"launcher ui exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"launcher ui did not serve {url} within {timeout_s} s")


def start_ui(root: Path, port: int, log: Path, extra_args: tuple = ()) -> subprocess.Popen:
    """``launcher ui`` as a user starts it; its output goes to ``log`` (a pipe nobody reads would block it)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    if SHARED_DEMO.is_dir():  # LF's demo data (its videos and audio) for data=mllm_video_demo / mllm_audio_demo
        env.setdefault("LLAMAFACTORY_DATA", str(SHARED_DEMO))
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "launcher", "ui", "--port", str(port), "--root", str(root),
                                 *extra_args], cwd=str(REPO_ROOT), env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_ui(proc: subprocess.Popen) -> None:
    """Ask the server to stop; kill it when it has not within 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def ui_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui-runs")


@pytest.fixture(scope="session")
def ui_server(request, ui_root):
    """(url, root): ``launcher ui --root ROOT`` on a free port, for the whole session."""
    pytest.importorskip("gradio")
    try:
        request.getfixturevalue("slurm_cluster")  # sets SLURM_CONF for the server to inherit
    except pytest.skip.Exception:
        pass
    port = free_port()
    log = ui_root.parent / "ui-server.log"
    proc = start_ui(ui_root, port, log, extra_args=("--max-upload-mb", str(UPLOAD_LIMIT_MB)))
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_page(url, proc, log)
        yield url, ui_root
    finally:
        stop_ui(proc)
        errors = [line for line in log.read_text(errors="replace").splitlines() if "Traceback" in line]
        if errors:  # a handler failed: the page showed a toast, the cause is in the server log
            print(f"launcher ui logged {len(errors)} traceback(s); see {log}")


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (or set LAUNCHER_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api")
    playwright = sync_api.sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    import tempfile

    folder = SHOTS if os.environ.get("LAUNCHER_UI_SCREENSHOTS") == "1" else Path(tempfile.gettempdir()) / "launcher-ui-shots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
