"""Loading an optimized BLAS before MLX: each case runs in a fresh interpreter, because whether
MLX binds to it is decided at the first `import mlx.core` of a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from impetus.engine.blas import ENV_VAR

ROOT = Path(__file__).resolve().parents[2]

# Prints one JSON line: what was loaded, a float32 CPU matmul of fixed inputs, and which shared
# objects the process really has mapped.
PROBE = """
import json, logging, os, sys
import numpy as np
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
from impetus.engine import blas
# numpy brings its own (symbol-prefixed) OpenBLAS, so look for the system libraries by path.
candidates = {{os.path.realpath(p) for p in blas.candidate_libraries() if os.path.exists(p)}}
{before}
info = blas.load_optimized_blas({mode!r})
{after}
import mlx.core as mx
rng = np.random.default_rng(0)
a = rng.standard_normal((300, 200), dtype=np.float32)
b = rng.standard_normal((200, 100), dtype=np.float32)
c = mx.matmul(mx.array(a), mx.array(b), stream=mx.cpu)
mx.eval(c)
maps = open("/proc/self/maps").read()
print(json.dumps({{
    "info": None if info is None else {{"name": info.name, "path": info.path}},
    "in_maps": None if info is None else info.path in maps,
    "candidate_mapped": any(p in maps for p in candidates),
    "c": np.array(c).tolist(),
    "gflops": blas.sgemm_gflops(256, 2),
}}))
"""


def probe(
    mode: str = "auto", env: dict[str, str] | None = None, before: str = "", after: str = ""
) -> tuple[dict[str, Any], str]:
    script = PROBE.format(mode=mode, before=textwrap.dedent(before), after=textwrap.dedent(after))
    full_env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def reference_product() -> Any:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 200), dtype=np.float32)
    b = rng.standard_normal((200, 100), dtype=np.float32)
    return a.astype(np.float64) @ b.astype(np.float64)


@pytest.fixture(scope="module")
def loaded() -> tuple[dict[str, Any], str]:
    out, log = probe("auto")
    if out["info"] is None:
        pytest.skip("no optimized BLAS on this machine (apt-get install libopenblas0-pthread)")
    return out, log


def test_importing_blas_does_not_import_mlx() -> None:
    code = "import sys, impetus.engine.blas; assert 'mlx.core' not in sys.modules, 'imported'"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def test_loaded_blas_is_in_the_process_and_gives_the_same_result(
    loaded: tuple[dict[str, Any], str],
) -> None:
    import numpy as np

    out, log = loaded
    assert out["in_maps"], "the loaded library is not mapped in the process"
    assert out["info"]["name"] == "openblas"
    assert "optimized BLAS loaded" in log
    off, off_log = probe("off")
    assert off["info"] is None and not off["candidate_mapped"]
    assert "disabled" in off_log
    ref = reference_product()
    fast, slow = np.array(out["c"]), np.array(off["c"])
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(slow, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-4)
    assert out["gflops"] > 0 and off["gflops"] > 0


def test_env_var_overrides_mode(loaded: tuple[dict[str, Any], str]) -> None:
    path = loaded[0]["info"]["path"]
    out, _ = probe("off", env={ENV_VAR: path})
    assert out["info"]["path"] == path and out["in_maps"]
    out, _ = probe("auto", env={ENV_VAR: "off"})
    assert out["info"] is None and not out["candidate_mapped"]


@pytest.mark.parametrize("bad", ["/nonexistent/libopenblas.so.0", "libm.so.6"])
def test_explicit_bad_library_falls_back_with_an_error(bad: str) -> None:
    out, log = probe("auto", env={ENV_VAR: bad})
    assert out["info"] is None and not out["candidate_mapped"]
    assert f"ERROR {bad}" in log or f"{ENV_VAR}={bad}" in log
    np = pytest.importorskip("numpy")
    np.testing.assert_allclose(np.array(out["c"]), reference_product(), rtol=1e-4, atol=1e-4)


def test_none_found_is_logged_once() -> None:
    out, log = probe(
        before="blas.candidate_libraries = lambda: []",
        after="assert blas.load_optimized_blas() is None",
    )
    assert out["info"] is None and not out["candidate_mapped"]
    message = (
        "no optimized BLAS found; float32 matmul uses the reference BLAS (slow); "
        "install libopenblas0-pthread"
    )
    assert log.count(message) == 1


def test_too_late_after_mlx_import_does_nothing() -> None:
    out, log = probe(before="import mlx.core")
    assert out["info"] is None and not out["candidate_mapped"]
    assert "mlx.core is already imported" in log


def test_second_call_returns_what_is_loaded(loaded: tuple[dict[str, Any], str]) -> None:
    # Once in the process a BLAS cannot be taken out, so later calls (even "off") report it.
    out, _ = probe(after="assert blas.load_optimized_blas('off') == info")
    assert out["info"] == loaded[0]["info"]
