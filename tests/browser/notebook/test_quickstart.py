"""Real browser: JupyterLab runs notebooks/quickstart.ipynb, a question typed into the chat panel
streams back. Debian's chromium driven by Playwright (never a downloaded browser).

Run: `.venv/bin/pytest tests/browser/notebook -m browser -x -q`; the screenshot lands in
tests/artifacts/ (kept by CI).
"""

from __future__ import annotations

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

# JupyterLab start-up, the model's first conversion and two answers on a shared CPU
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


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


def test_quickstart_chat_streams_in_the_browser(lab: tuple[str, str, Path]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, token, log = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{base}lab/tree/quickstart.ipynb?token={token}", timeout=120_000)
            page.locator(".jp-Notebook").first.wait_for(timeout=120_000)
            run_all_cells(page)

            chat = page.locator(".impetus-chat").first
            chat.wait_for(timeout=300_000)
            # all cells done: no prompt shows [*] and the last one has a number
            page.wait_for_function(
                """() => {
                    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                        .map((e) => e.textContent.trim());
                    return prompts.length > 0 && prompts.every((t) => /^\\[\\d+\\]:$/.test(t));
                }""",
                timeout=600_000,
            )
            # the panel talks to the engine of this Jupyter server, not to a private one
            expect(chat.locator(".impetus-status")).to_contain_text("/impetus/", timeout=30_000)
            answers = chat.locator(".impetus-msg.impetus-assistant:not(.impetus-pending)")
            before = answers.count()
            assert before >= 1, "the notebook's own question was answered in the panel"

            # record the pending answer's length at every DOM change: streamed text grows in steps
            page.evaluate(
                """(root) => {
                    window.__impetusLengths = [];
                    new MutationObserver(() => {
                        const body = root.querySelector('.impetus-pending .impetus-body');
                        const a = window.__impetusLengths;
                        if (body && a[a.length - 1] !== body.textContent.length) a.push(body.textContent.length);
                    }).observe(root, { subtree: true, childList: true, characterData: true });
                }""",
                chat.element_handle(),
            )
            chat.locator("textarea.impetus-input").fill("Name three colours of the rainbow.")
            chat.locator("textarea.impetus-input").press("Enter")
            page.wait_for_function(
                "() => window.__impetusLengths.some((n) => n > 0)", timeout=120_000
            )
            page.screenshot(path=str(ARTIFACTS / "quickstart-chat-streaming.png"))
            expect(answers).to_have_count(before + 1, timeout=300_000)
            last = answers.nth(before)
            expect(last.locator(".impetus-body")).not_to_have_text("")
            expect(last.locator(".impetus-stats")).to_contain_text("tok/s")
            lengths = page.evaluate("() => window.__impetusLengths")
            assert len([n for n in lengths if n > 0]) >= 2, f"text did not stream: {lengths}"
            chat.scroll_into_view_if_needed()
            chat.screenshot(path=str(ARTIFACTS / "quickstart-chat.png"))

            # the other tabs render too: the registry list, and live Bokeh charts
            workbench = page.locator(".widget-tab").first
            workbench.get_by_role("tab", name="Models").click()
            expect(
                workbench.locator("select option", has_text="smollm2-135m").first
            ).to_be_attached()
            expect(workbench).to_contain_text("budget", timeout=30_000)
            workbench.screenshot(path=str(ARTIFACTS / "quickstart-models.png"))
            workbench.get_by_role("tab", name="Dashboard").click()
            expect(workbench.locator("canvas").first).to_be_visible(timeout=60_000)
            page.wait_for_timeout(3_000)  # a few one-second refreshes on the charts
            workbench.screenshot(path=str(ARTIFACTS / "quickstart-dashboard.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "quickstart-failure.png"), full_page=True)
            print(log.read_text()[-5000:])
            raise
        finally:
            browser.close()
