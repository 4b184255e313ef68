"""The distribution as a user gets it: sdist, then the wheel built from the sdist, installed into
a fresh virtual environment outside the checkout. The server extension is enabled, the sidebar is
listed by JupyterLab, and `impetus serve` answers a chat request. A tree without the built sidebar
and without npm gives no wheel at all.

To stay fast (no downloads), the build runs without isolation (hatchling, hatch-jupyter-builder
and jupyterlab come with the dev extra) and the fresh environment sees this environment's
packages as its base (a .pth, like --system-site-packages); only impetus-lab is installed in it.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from impetus import LABEXTENSION

REPO = Path(__file__).resolve().parents[2]
LABEXT = REPO / "impetus" / "labextension"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = [pytest.mark.timeout(600)]


def _clean_env(**extra: str) -> dict[str, str]:
    # PYTHONPATH would put the checkout's impetus ahead of the installed one
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JUPYTER_PATH")}
    # this environment's scripts (jupyter, for `jupyter labextension build`) as `make` has them
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, **kw)  # type: ignore[call-overload]
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not (LABEXT / "package.json").exists():
        reason = "the sidebar is not built: run `make extension` (needs node and npm)"
        if os.environ.get("IMPETUS_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("dist")
    # sdist, then the wheel from the unpacked sdist (what `python -m build` does)
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
         env=_clean_env())  # fmt: skip
    sdist = next(out.glob("impetus_lab-*.tar.gz"))
    wheel = next(out.glob("impetus_lab-*.whl"))
    return {"sdist": sdist, "wheel": wheel}


def test_the_dists_carry_the_sidebar(dists: dict[str, Path]) -> None:
    names = zipfile.ZipFile(dists["wheel"]).namelist()
    data = next(n.split("/")[0] for n in names if ".data/" in n)
    share = f"{data}/data/share/jupyter/labextensions/{LABEXTENSION}"
    assert f"{share}/package.json" in names and f"{share}/install.json" in names
    assert any(n.startswith(f"{share}/static/remoteEntry.") for n in names)
    assert f"{data}/data/etc/jupyter/jupyter_server_config.d/impetus.json" in names
    meta = (
        zipfile.ZipFile(dists["wheel"])
        .read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        .decode()
    )
    assert "Name: impetus-lab" in meta
    assert "Classifier: Framework :: Jupyter :: JupyterLab :: Extensions :: Prebuilt" in meta
    assert "Provides-Extra: cpu" in meta and "Provides-Extra: cuda" in meta
    # no backend without an extra on Linux
    assert not re.search(r"^Requires-Dist: mlx\[cpu\].*linux(?!.*extra)", meta, re.M)
    with tarfile.open(dists["sdist"]) as tar:
        sdist = tar.getnames()
    assert any(n.endswith("impetus/labextension/package.json") for n in sdist)
    assert any(n.endswith("extension/src/index.ts") for n in sdist)
    assert not any("node_modules" in n for n in sdist)


@pytest.fixture(scope="module")
def venv(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fresh")
    env_dir = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    py = env_dir / "bin" / "python"
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    # this environment's packages as the base, behind the fresh one's own site-packages
    base = site.getsitepackages()[0]
    (Path(purelib.stdout.strip()) / "_base.pth").write_text(
        f"import site; site.addsitedir({base!r})\n"
    )
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
          str(dists["wheel"])], env=_clean_env())  # fmt: skip
    return env_dir


def test_installed_wheel_enables_everything(venv: Path, tiny_model_dir: Path) -> None:
    py = str(venv / "bin" / "python")
    cwd = venv.parent  # outside the checkout
    env = _clean_env(JUPYTER_CONFIG_DIR=str(cwd / "cfg"), JUPYTER_DATA_DIR=str(cwd / "data"))
    where = _run([py, "-c", "import impetus; print(impetus.__file__)"], cwd=cwd, env=env)
    assert where.stdout.strip().startswith(str(venv)), where.stdout

    server = _run([py, "-m", "jupyter_server.extension.serverextension", "list"], cwd=cwd, env=env)
    text = ANSI.sub("", server.stdout + server.stderr)
    assert re.search(r"impetus enabled", text), text
    assert re.search(r"impetus .*OK", text), text

    lab = _run([py, "-m", "jupyterlab.labextensions", "list"], cwd=cwd, env=env)
    text = ANSI.sub("", lab.stdout + lab.stderr)
    assert re.search(rf"{LABEXTENSION} v\S+ enabled OK \(python, impetus-lab\)", text), text
    assert str(venv) in text  # found in the fresh environment's share/jupyter

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve = subprocess.Popen(
        [py, "-m", "impetus.cli", "serve", "--port", str(port), "--no-auth",
         "--allow-model-paths", "--model", str(tiny_model_dir), "--home", str(cwd / "home")],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        while True:
            assert serve.poll() is None, serve.stderr.read() if serve.stderr else ""
            try:
                if httpx.get(url + "ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "impetus serve never became ready"
            time.sleep(0.5)
        r = httpx.post(
            url + "v1/chat/completions",
            json={
                "model": str(tiny_model_dir),
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 4,
            },
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 4
    finally:
        os.killpg(serve.pid, 15)
        serve.wait(30)


def test_no_wheel_without_the_sidebar(tmp_path: Path) -> None:
    """A tree whose sidebar is not built, with no npm to build it: the build fails."""
    tree = tmp_path / "tree"
    shutil.copytree(
        REPO,
        tree,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "node_modules", "labextension", "tests", "benchmarks", "dist"
        ),
    )
    bin_dir = tmp_path / "bin"  # a PATH with python and nothing else (no node, no npm)
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    out = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir",
         str(tmp_path / "out"), str(tree)],
        capture_output=True, text=True, timeout=300,
        env=_clean_env(PATH=str(bin_dir)),
    )  # fmt: skip
    assert out.returncode != 0
    assert not list((tmp_path / "out").glob("*.whl")) if (tmp_path / "out").exists() else True
    assert "npm" in (out.stdout + out.stderr).lower()
