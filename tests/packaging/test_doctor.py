"""`impetus doctor` on MLX backend installs: one backend is fine, none or several are not, and the
fix is one command. Mixed and missing installs are faked with distribution metadata in a temporary
folder (importlib.metadata reads it like site-packages), so the real environment stays intact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from impetus.install import check_backend


def fake_site(tmp: Path, **dists: str) -> list[str]:
    """A folder holding only the metadata of `dists` (name with underscores -> version)."""
    for name, version in dists.items():
        info = tmp / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"
        )
    return [str(tmp)]


def test_one_linux_backend_is_fine(tmp_path: Path) -> None:
    site = fake_site(tmp_path, mlx="0.32.4", mlx_cpu="0.32.4", mlx_lm="0.32.2")
    got = check_backend(site, system="Linux", python="py")
    assert got.ok and got.installed == ("mlx-cpu",) and got.fix is None
    with pytest.raises(ValueError, match="choose cpu or cuda"):
        check_backend(site, system="Linux", want="rocm")


@pytest.mark.parametrize("extra", ["cpu", "cuda"])
def test_missing_backend_names_the_extra(tmp_path: Path, extra: str) -> None:
    site = fake_site(tmp_path, mlx_lm="0.32.2")  # a plain `pip install impetus-lab` on Linux
    got = check_backend(site, system="Linux", python="py", want=extra)
    assert not got.ok and got.installed == ()
    assert "no MLX backend" in (got.problem or "")
    assert got.fix == f"py -m pip install 'impetus-lab[{extra}]'"


@pytest.mark.parametrize(
    ("want", "keep", "drop"),
    [("cpu", "mlx-cpu", "mlx-cuda-13"), ("cuda", "mlx-cuda-13", "mlx-cpu")],
)
def test_mixed_backends_uninstall_one_and_restore_the_other(
    tmp_path: Path, want: str, keep: str, drop: str
) -> None:
    site = fake_site(tmp_path, mlx="0.32.4", mlx_cpu="0.32.4", mlx_cuda_13="0.32.4")
    got = check_backend(site, system="Linux", python="/v/bin/python", want=want)
    assert not got.ok and got.installed == ("mlx-cpu", "mlx-cuda-13")
    assert "several MLX backends" in (got.problem or "")
    # Uninstalling one removes the shared libmlx.so: the kept one is reinstalled in the same line.
    assert got.fix == (
        f"/v/bin/python -m pip uninstall -y {drop} && "
        f"/v/bin/python -m pip install --force-reinstall --no-deps '{keep}==0.32.4'"
    )


def test_macos_needs_the_metal_backend(tmp_path: Path) -> None:
    assert check_backend(
        fake_site(tmp_path / "ok", mlx="0.32.4", mlx_metal="0.32.4"), system="Darwin"
    ).ok
    broken = check_backend(fake_site(tmp_path / "bad", mlx="0.32.4"), system="Darwin", python="py")
    assert not broken.ok
    assert broken.fix == "py -m pip install --force-reinstall 'mlx==0.32.4'"


def test_doctor_reports_this_environment() -> None:
    """The real command on the test environment (one backend, installed by `make`)."""
    out = subprocess.run(
        [sys.executable, "-m", "impetus.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    info = json.loads(out.stdout)
    assert out.returncode == 0, info["backend_install"]
    assert info["backend_install"]["problem"] is None
    assert len(info["backend_install"]["installed"]) == 1
    assert info["engine"]["backend"] in ("cpu", "cuda", "metal")
