"""JupyterLab with the impetus extension serving a copy of notebooks/, and how to run a notebook
in it from Debian's chromium (Playwright). Shared by the notebook browser tests."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# for the modules' `pytestmark`: JupyterLab start-up, the model's first conversion and the
# notebooks' answers on a shared CPU
BROWSER_MARKS = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def lab(tmp_path: Path, impetus_home: Path) -> Iterator[tuple[str, str, Path]]:
    """JupyterLab with the impetus extension, serving a copy of notebooks/ (outputs stay out of git)."""
    root = tmp_path / "work"
    shutil.copytree(ROOT / "notebooks", root)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "config")  # nothing from the user's config
    # no "get notified about Jupyter news?" toast over the screenshots
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "lab-settings")
    env.pop("IMPETUS_URL", None)
    log = (tmp_path / "lab.log").open("wb")
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--ServerApp.jpserver_extensions=impetus=True", "--allow-root",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if (
                    httpx.get(base + "api/status", params={"token": token}, timeout=2).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:]
                )
            time.sleep(0.5)
        yield base, token, tmp_path / "lab.log"
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


def run_all_cells(page: Any) -> None:
    """Run > Run All Cells. JupyterLab may ask "Select Kernel" first (the kernel session is still
    being set up); the run is then dropped, so accept the dialog and run again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    dialog = page.locator(".jp-Dialog button.jp-mod-accept")
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=120_000)
    for _ in range(3):
        if dialog.count():
            dialog.first.click()
        page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            dialog.first.wait_for(timeout=5_000)
        except PlaywrightTimeout:
            return
    raise AssertionError("JupyterLab kept asking for a kernel")


def wait_all_cells_done(page: Any, timeout: int = 600_000) -> None:
    """In the notebook on show, no prompt shows [*] and every code cell has an execution number
    (notebooks in other tabs stay in the page, hidden: they are not looked at)."""
    page.wait_for_function(
        """() => {
            const shown = '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt';
            const prompts = [...document.querySelectorAll(shown)]
                .map((e) => e.textContent.trim());
            return prompts.length > 0 && prompts.every((t) => /^\\[\\d+\\]:$/.test(t));
        }""",
        timeout=timeout,
    )


def open_and_run(page: Any, base: str, token: str, name: str) -> None:
    """Open `name` alone (`reset`: no tabs restored from an earlier notebook, whose kernel's
    "Idle" would otherwise be taken for this one's) and run all its cells; retry Run All when the
    first cell has not started a minute later (JupyterLab drops a run while the kernel starts)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(f"{base}lab/tree/{name}?reset&token={token}", timeout=120_000)
    page.locator(".jp-Notebook").first.wait_for(timeout=120_000)
    started = """() => {
        const p = document.querySelector(
            '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt');
        return p && /\\[(\\*|\\d+)\\]/.test(p.textContent);
    }"""
    for _ in range(3):
        run_all_cells(page)
        try:
            page.wait_for_function(started, timeout=60_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"{name}: Run All Cells never started the first cell")


def launch(p: Any) -> Any:
    return p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)


@contextlib.contextmanager
def lab_page(lab: tuple[str, str, Path], notebook: str, failure: str, height: int) -> Iterator[Any]:
    """A chromium page (1400 x `height`) on the `lab` fixture's JupyterLab, `notebook` opened and
    all its cells started. When the test fails in it: a full-page screenshot `failure` in
    ARTIFACTS, and the end of JupyterLab's log."""
    from playwright.sync_api import sync_playwright

    base, token, log = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": height})
        try:
            open_and_run(page, base, token, notebook)
            yield page
        except Exception:
            page.screenshot(path=str(ARTIFACTS / failure), full_page=True)
            print(log.read_text()[-5000:])
            raise
        finally:
            browser.close()
