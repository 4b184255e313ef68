"""A real JupyterLab with impetus, a local fake hub and Debian's chromium, for the sidebar tests.

One JupyterLab (serving the embedded default model) and one browser page are shared by the
module: starting the engine and loading the model is the slow part. JupyterLab runs under a
non-trivial base URL, with the token and XSRF checks on, its config and state in a temporary
folder, and the sidebar from this checkout's `impetus/labextension`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from impetus import LABEXTENSION
from tests.fake_hub import FakeHub, Repo

REPO = Path(__file__).resolve().parents[3]
LABEXT = REPO / "impetus" / "labextension"
CHROMIUM = os.environ.get("IMPETUS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
DEFAULT_MODEL = "smollm2-135m"
HUB_REPO = "impetus-test/tiny-llama"
SLOW_REPO = "impetus-test/tiny-llama-slow"  # the same files, slow enough to cancel mid-way
BASE_URL = "/jp/"
# Seconds: the engine converts and loads the default model on 2 shared cores.
START_TIMEOUT = float(os.environ.get("IMPETUS_BROWSER_START_TIMEOUT", 300))


def skip_reason() -> str | None:
    """Why these tests cannot run here (None: they can). IMPETUS_REQUIRE_BROWSER=1 makes it a failure."""
    if not (LABEXT / "package.json").exists():
        return "the sidebar is not built: run `make extension` (needs node and npm)"
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    try:
        import impetus.jupyter.extension  # noqa: F401
    except ImportError as exc:
        return f"the impetus server extension does not import: {exc}"
    return None


@pytest.fixture(scope="module")
def browser_ready() -> None:
    reason = skip_reason()
    if reason:
        if os.environ.get("IMPETUS_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LabServer:
    url: str  # ends with the base URL, e.g. http://127.0.0.1:PORT/jp/
    token: str
    root: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers(), timeout=30, **kw)

    def admin_status(self) -> dict[str, Any]:
        r = self.get("impetus/admin/status")
        r.raise_for_status()
        return r.json()

    def loaded(self) -> list[str]:
        return [m["id"] for m in self.admin_status().get("models", [])]

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture(scope="module")
def tiny_hub_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("hub") / "tiny-llama")


@pytest.fixture(scope="module")
def hub(browser_ready: None, tiny_hub_folder: Path) -> Iterator[FakeHub]:
    # ~400 KB at 128 KB/s: a three-second download, long enough to watch its progress.
    server = FakeHub(chunk=16 * 1024, rate=128 * 1024, rates={SLOW_REPO: 8 * 1024})
    for repo_id in (HUB_REPO, SLOW_REPO):
        server.add(Repo.from_folder(repo_id, tiny_hub_folder))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _write_config(tmp: Path) -> dict[str, str]:
    """Isolated Jupyter config, data and state; returns the environment that points at them."""
    dirs = {
        name: tmp / name
        for name in (
            "config",
            "data",
            "runtime",
            "settings",
            "workspaces",
            "app-settings",
            "labext",
            "hf",
        )
    }
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    (dirs["config"] / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "ServerApp": {"jpserver_extensions": {"impetus": True}},
                # loaded with the server: the tests start from a ready engine (the lazy default
                # is tested in test_make_run)
                "ImpetusExtension": {"models": [DEFAULT_MODEL], "engine_start": "eager"},
            }
        )
    )
    # No news prompt over the screenshots, and a known starting theme.
    (dirs["app-settings"] / "overrides.json").write_text(
        json.dumps(
            {
                "@jupyterlab/apputils-extension:notification": {
                    "fetchNews": "false",
                    "checkForUpdates": False,
                },
                "@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Light"},
            }
        )
    )
    # The sidebar under test is this checkout's build, ahead of any installed copy of the same
    # name (the standard registration is tested as `make run` starts JupyterLab, in test_make_run).
    (dirs["labext"] / LABEXTENSION).symlink_to(LABEXT, target_is_directory=True)
    return {
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
        "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
        "HF_HOME": str(dirs["hf"]),
        "LABEXT": str(dirs["labext"]),
        "APP_SETTINGS": str(dirs["app-settings"]),
    }


@pytest.fixture(scope="module")
def lab(
    browser_ready: None, hub: FakeHub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabServer]:
    tmp = tmp_path_factory.mktemp("lab")
    # A private IMPETUS_HOME: the downloads and keys of these tests stay out of other tests' way.
    home = tmp / "impetus-home"
    paths = _write_config(tmp)
    root = tmp / "root"
    (root / "notebooks").mkdir(parents=True)
    for nb in (REPO / "notebooks").glob("*.ipynb"):
        shutil.copy(nb, root / "notebooks" / nb.name)
    port = _free_port()
    token = os.urandom(16).hex()
    env = dict(os.environ)
    env.update({k: v for k, v in paths.items() if k not in ("LABEXT", "APP_SETTINGS")})
    env.update(
        IMPETUS_HOME=str(home),
        HF_ENDPOINT=hub.url,
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    args = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--ServerApp.base_url={BASE_URL}",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.extra_labextensions_path={paths['LABEXT']}",
        f"--LabApp.app_settings_dir={paths['APP_SETTINGS']}",
        "--LabApp.expose_app_in_browser=True",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")
    log = tmp / "jupyterlab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    server = LabServer(
        url=f"http://127.0.0.1:{port}{BASE_URL}", token=token, root=root, log=log, proc=proc
    )
    try:
        _wait_ready(server)
        yield server
    finally:
        stop_lab(proc)


def stop_lab(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a service manager stops JupyterLab (it shuts the kernels and the engine down
    as Ctrl-C does); killed when it has not ended 30 s later. Not Ctrl-C: one only asks "Shut
    down this Jupyter server?" and goes on serving, and a suite started in the background by a
    non-interactive shell has SIGINT ignored in all its children."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _wait_ready(server: LabServer) -> None:
    """Until the engine reports the default model loaded (the sidebar's first assertion)."""
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        try:
            r = server.get("impetus/admin/status")
            last = f"{r.status_code} {r.text[:300]}"
            if (
                r.status_code == 200
                and r.json().get("state") == "ready"
                and DEFAULT_MODEL in server.loaded()
            ):
                return
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(1)
    raise RuntimeError(
        f"impetus not ready after {START_TIMEOUT:.0f}s (last: {last}):\n{server.log_tail()}"
    )


@pytest.fixture(scope="module")
def browser(lab: LabServer) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser: Any, lab: LabServer) -> Iterator[Any]:
    """JupyterLab open in chromium with the impetus sidebar shown."""
    context = browser.new_context(viewport={"width": 1280, "height": 1200})
    context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=lab.url.split(BASE_URL)[0]
    )
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(f"{lab.url}lab?token={lab.token}")
    pg.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
    pg.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.commands.hasCommand('impetus:open-sidebar')"
    )
    pg.evaluate("() => window.jupyterapp.commands.execute('impetus:open-sidebar')")
    pg.wait_for_selector(".jp-ImpetusSidebar-body")
    try:
        yield pg
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / "sidebar-last.png"))
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
