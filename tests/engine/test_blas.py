"""Loading an optimized BLAS before MLX: each case runs in a fresh interpreter, because whether
MLX binds to it is decided at the first `import mlx.core` of a process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from impetus.engine.blas import (
    CORETYPE_VAR,
    ENV_VAR,
    choose_coretype,
    cpu_features,
    cpu_level,
    preferred_cores,
)
from tests.child import run_python

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
    "info": None if info is None else {{"name": info.name, "path": info.path, "core": info.core,
        "core_source": info.core_source, "check_error": info.check_error}},
    "in_maps": None if info is None else info.path in maps,
    "candidate_mapped": any(p in maps for p in candidates),
    "c": np.array(c).tolist(),
    "gflops": blas.sgemm_gflops(256, 2),
}}))
"""


def probe(
    mode: str = "auto",
    env: dict[str, str] | None = None,
    before: str = "",
    after: str = "",
    drop: tuple[str, ...] = (),
) -> tuple[dict[str, Any], str]:
    script = PROBE.format(mode=mode, before=textwrap.dedent(before), after=textwrap.dedent(after))
    full_env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, *drop)}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    return run_python(script, env=full_env, cwd=ROOT)


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


# ---- which OpenBLAS kernels run -----------------------------------------------------------------

SAPPHIRE_RAPIDS = {"avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
SAPPHIRE_RAPIDS |= {"avx512_bf16", "avx512_fp16", "amx_tile"}


def test_preferred_cores_follow_the_processor_flags() -> None:
    assert preferred_cores(SAPPHIRE_RAPIDS, "GenuineIntel") == [
        "SapphireRapids",
        "Cooperlake",
        "SkylakeX",
        "Haswell",
        "Sandybridge",
    ]
    assert preferred_cores({"avx", "avx2", "fma"}, "AuthenticAMD") == [
        "Zen",
        "Haswell",
        "Sandybridge",
    ]
    assert preferred_cores({"sse3", "ssse3"}, "GenuineIntel") == []
    assert cpu_level(SAPPHIRE_RAPIDS) == 4 and cpu_level({"avx"}) == 2


def refuse(coretype: str | None) -> None:
    raise AssertionError(f"probed {coretype} although the library's own pick was fine")


def test_a_generic_pick_is_replaced_by_the_best_core_that_really_runs_and_checks_out() -> None:
    tried: list[str | None] = []
    answers = {
        "SapphireRapids": ("Prescott", 1e-7),  # the library ignored the request
        "Cooperlake": ("Cooperlake", 0.4),  # ran, but computed a wrong product
        "SkylakeX": ("SkylakeX", 2e-7),
    }

    def fake(coretype: str | None) -> tuple[str, float] | None:
        tried.append(coretype)
        return answers.get(coretype or "")

    chosen, why = choose_coretype("Prescott", 1e-7, SAPPHIRE_RAPIDS, "GenuineIntel", fake)
    assert (chosen, tried) == ("SkylakeX", ["SapphireRapids", "Cooperlake", "SkylakeX"])
    assert "Prescott" in why and "generic" in why


def test_a_good_pick_is_left_alone() -> None:
    assert choose_coretype("SkylakeX", 2e-7, SAPPHIRE_RAPIDS - {"avx512_bf16"}, "", refuse) == (
        None,
        "the library's choice",
    )
    assert (
        choose_coretype("Haswell", 2e-7, {"avx", "avx2", "fma"}, "GenuineIntel", refuse)[0] is None
    )
    assert choose_coretype("SomeFutureCore", 2e-7, SAPPHIRE_RAPIDS, "", refuse)[0] is None


def test_a_pick_with_wrong_results_falls_back_to_a_core_that_checks_out() -> None:
    answers = {"Haswell": ("Haswell", 1e-7)}
    chosen, why = choose_coretype(
        "SkylakeX",
        0.3,
        SAPPHIRE_RAPIDS - {"avx512_bf16", "amx_tile"},
        "GenuineIntel",
        lambda ct: answers.get(ct or "", ("SkylakeX", 0.3)),
    )
    assert chosen == "Haswell" and "wrong" in why
    nothing = choose_coretype("SkylakeX", 0.3, {"avx"}, "", lambda ct: ("Sandybridge", 0.2))
    assert nothing[0] is None


def test_the_kernels_in_use_are_named_and_checked(loaded: tuple[dict[str, Any], str]) -> None:
    info, log = loaded[0]["info"], loaded[1]
    if CORETYPE_VAR in os.environ:
        assert info["core_source"] == f"{CORETYPE_VAR}={os.environ[CORETYPE_VAR]} set by the user"
    assert info["core"] and info["check_error"] < 1e-4
    assert f"{info['core']} kernels" in log and "checked: relative error" in log


def test_a_coretype_the_user_set_is_kept(loaded: tuple[dict[str, Any], str]) -> None:
    flags, _ = cpu_features()
    user = os.environ.get(CORETYPE_VAR) or ("Haswell" if cpu_level(flags) >= 3 else "Prescott")
    out, _ = probe(env={CORETYPE_VAR: user})
    assert out["info"]["core_source"] == f"{CORETYPE_VAR}={user} set by the user"
    assert out["info"]["core"].lower() == user.lower()


def test_a_generic_default_is_upgraded_in_the_engine(loaded: tuple[dict[str, Any], str]) -> None:
    if CORETYPE_VAR in os.environ:
        pytest.skip(f"{CORETYPE_VAR} is set here: the user's value is kept (tested above)")
    if cpu_level(cpu_features()[0]) < 3:
        pytest.skip("no core better than the generic ones on this processor")
    # The library's own pick, as a library too old for this processor makes it: generic.
    fake_default = """
    real = blas._probe_in_child
    blas._probe_in_child = lambda c, ct: ("Prescott", 1e-7) if ct is None else real(c, ct)
    """
    out, log = probe(before=fake_default)
    assert "set by impetus: the library picked Prescott" in out["info"]["core_source"]
    assert out["info"]["core"].lower() not in ("prescott", "")
    assert out["info"]["check_error"] < 1e-4
    np = pytest.importorskip("numpy")
    np.testing.assert_allclose(np.array(out["c"]), reference_product(), rtol=1e-4, atol=1e-4)


def test_kernels_that_compute_wrong_results_are_not_used() -> None:
    out, log = probe(before="blas._sgemm_error = lambda lib: 0.5")
    # (the library was opened locally for the check, so it is mapped; MLX never binds to it)
    assert out["info"] is None
    assert "computed a wrong float32 product" in log
    np = pytest.importorskip("numpy")
    np.testing.assert_allclose(np.array(out["c"]), reference_product(), rtol=1e-4, atol=1e-4)
