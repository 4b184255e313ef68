"""JupyterLab started exactly as `make run` starts it shows the impetus sidebar.

(`make run` also sets IMPETUS_MODELS and IMPETUS_ENGINE_START=eager to serve its model at once;
these tests leave them out: loading a model is not what they check, and the sidebar's lazy-start
state, "not started" with a Start button, is.)

No `extra_labextensions_path` and no symlink of the tests' own: the sidebar must come from the
development install's standard registration (`jupyter labextension develop`, run by
`make extension`) in this environment's share/jupyter/labextensions. Jupyter's user-level folders
point at an empty temporary folder, so a copy left there by hand cannot stand in for it.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from impetus import LABEXTENSION
from tests.browser.sidebar.conftest import ARTIFACTS, CHROMIUM, LABEXT, _free_port, stop_lab

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # as the Makefile sets it
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env[var] = str(tmp / var.lower())
    env.pop("JUPYTER_PATH", None)
    env["IMPETUS_HOME"] = str(tmp / "impetus-home")
    return env


@pytest.fixture(scope="module")
def sidebar_built() -> None:
    if not (LABEXT / "package.json").exists():
        reason = "the sidebar is not built: run `make extension` (needs node and npm)"
        if os.environ.get("IMPETUS_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def test_the_sidebar_is_registered(sidebar_built: None, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(BIN / "jupyter"), "labextension", "list"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = ANSI.sub("", out.stdout + out.stderr)
    assert re.search(rf"^\s*{LABEXTENSION} v\S+ enabled OK", text, re.M), (
        f"the sidebar is not registered in {sys.prefix} (run `make extension`):\n{text}"
    )


@pytest.fixture(scope="module")
def make_run_lab(
    sidebar_built: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    tmp_path = tmp_path_factory.mktemp("make-run")
    port = _free_port()
    token = os.urandom(16).hex()
    # The Makefile's command line: jupyter lab --no-browser --port --IdentityProvider.token
    args = [
        str(BIN / "jupyter"), "lab", "--no-browser", f"--port={port}",
        f"--IdentityProvider.token={token}",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")
    root = tmp_path / "root"
    root.mkdir()
    log = tmp_path / "lab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, env=_env(tmp_path), cwd=root, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                if httpx.get(f"{url}api/status?token={token}", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        yield url, token
    finally:
        stop_lab(proc)


def test_the_lab_page_loads_the_sidebar(make_run_lab: tuple[str, str]) -> None:
    url, token = make_run_lab
    # The lab page lists the federated extensions it will load: the sidebar must be one.
    page = httpx.get(f"{url}lab?token={token}", timeout=30)
    page.raise_for_status()
    found = re.search(
        r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page.text, re.S
    )
    assert found, page.text[:500]
    config = json.loads(html.unescape(found.group(1)))
    names = [ext["name"] for ext in config.get("federated_extensions", [])]
    assert LABEXTENSION in names, names
    # The impetus server extension answers beside it.
    assert httpx.get(f"{url}impetus/health", timeout=10).status_code == 200


def test_the_sidebar_shows_in_chromium(browser_ready: None, make_run_lab: tuple[str, str]) -> None:
    url, token = make_run_lab
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            pg = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            pg.goto(f"{url}lab?token={token}")
            tab = pg.locator('.lm-TabBar-tab[data-id="impetus-sidebar"]')
            tab.wait_for(timeout=120_000)
            tab.click()
            pg.wait_for_selector(".jp-ImpetusSidebar-body", timeout=30_000)
            # Jupyter's convention: no engine until first use; the sidebar offers to start it
            state = pg.locator('[data-testid="impetus-engine-state"]')
            pg.wait_for_function(
                "() => document.querySelector('[data-testid=\"impetus-engine-state\"]')"
                "?.dataset.state === 'not started'"
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=str(ARTIFACTS / "make-run-not-started.png"))
            pg.locator('[data-testid="impetus-engine-start"]').click()
            pg.wait_for_function(
                "() => document.querySelector('[data-testid=\"impetus-engine-state\"]')"
                "?.dataset.state === 'ready'",
                timeout=120_000,
            )
            assert state.get_attribute("data-state") == "ready"
            assert pg.locator('[data-testid="impetus-engine-start"]').count() == 0
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=str(ARTIFACTS / "make-run-sidebar.png"))
            assert not errors, errors
        finally:
            browser.close()
