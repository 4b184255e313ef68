"""Load an optimized BLAS into the engine process before MLX, on Linux.

The ``mlx-cpu`` wheel links the reference (Netlib) BLAS, whose ``cblas_sgemm`` runs at a few
GFLOP/s. ``libmlx.so`` resolves its BLAS symbols (``cblas_sgemm``, ``cblas_dgemm``,
``cblas_cgemm``; LAPACK's ``sgetrf_`` and friends too) through the dynamic linker, which looks in
the global scope first. A library opened with ``RTLD_GLOBAL`` *before* ``libmlx.so`` is loaded
therefore wins, and float32 matmul becomes ~50x faster with OpenBLAS. Once ``mlx.core`` is
imported its symbols are bound and loading a library changes nothing, hence the order rule.

Quantized and bf16 kernels do not use BLAS; float32 matmul (the CPU serving dtype) does.

OpenBLAS built with ``DYNAMIC_ARCH`` picks its kernels for the processor when it loads, and an
older build that does not know a newer processor falls back to generic ones (OpenBLAS 0.3.21 on a
Sapphire Rapids ran Prescott's SSE3 kernels: 62 GFLOP/s instead of 271 with ``SkylakeX``). So,
before loading it, a child process reports which kernels the library picks; when they are of a
lower instruction-set level than the processor supports, the best core the processor can run is
tried (``OPENBLAS_CORETYPE``, read by OpenBLAS when it loads). Some builds compute wrong results
with their newest kernels on some processors, which is why environments pin ``OPENBLAS_CORETYPE``:
a value the user set is never changed, and every choice is checked against an exact reference on
a small product, in the child and again in this process; kernels that disagree are not used.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import platform
import random
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CORETYPE_VAR",
    "ENV_VAR",
    "BlasInfo",
    "candidate_libraries",
    "choose_coretype",
    "cpu_features",
    "load_optimized_blas",
    "preferred_cores",
    "sgemm_gflops",
]

log = logging.getLogger(__name__)

ENV_VAR = "IMPETUS_BLAS"
"""Overrides the ``mode`` argument: ``off``, ``auto``, or the path of a BLAS library."""

CORETYPE_VAR = "OPENBLAS_CORETYPE"
"""OpenBLAS's own variable: the kernels a DYNAMIC_ARCH build uses. Set by the user: kept."""

# Relative error (Frobenius) a float32 product of the check's size stays far below; wrong kernels
# give errors of order one.
CHECK_TOLERANCE = 1e-4

# x86-64 OpenBLAS cores by instruction-set level, as `openblas_get_corename` names them (lower
# case): 1 SSE-era, 2 AVX, 3 AVX2 + FMA, 4 AVX-512. Names not listed count as unknown (no switch).
CORE_LEVELS = {
    **dict.fromkeys(
        (
            "prescott",
            "katmai",
            "coppermine",
            "northwood",
            "core2",
            "penryn",
            "dunnington",
            "nehalem",
            "atom",
            "opteron",
            "opteron_sse3",
            "barcelona",
            "bobcat",
            "nano",
            "athlon",
        ),
        1,
    ),
    **dict.fromkeys(("sandybridge", "bulldozer", "piledriver", "steamroller", "excavator"), 2),
    **dict.fromkeys(("haswell", "zen"), 3),
    **dict.fromkeys(("skylakex", "cooperlake", "sapphirerapids"), 4),
}
_AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}

# What libmlx.so leaves undefined for BLAS (checked with `nm -D --undefined-only libmlx.so`).
REQUIRED_SYMBOLS = ("cblas_sgemm", "cblas_dgemm", "cblas_cgemm")

_INSTALL_HINT = "install libopenblas0-pthread"

_loaded: BlasInfo | None = None
_warned_missing = False


@dataclass(frozen=True)
class BlasInfo:
    """The optimized BLAS now in the process."""

    name: str  # "openblas", "blis", "mkl" or the file name for a library given by path
    path: str  # resolved file that was loaded
    config: str | None = None  # the library's own build string (OpenBLAS: version, core, threads)
    core: str | None = None  # OpenBLAS: the kernels in use (openblas_get_corename)
    core_source: str | None = None  # why those kernels: the library's pick, the user's, impetus's
    check_error: float | None = None  # relative error of the start-up product against exact

    def describe(self) -> str:
        """One line for logs and `impetus doctor`."""
        text = f"{self.name} ({self.path})"
        if self.core:
            text += f", {self.core} kernels ({self.core_source})"
        if self.check_error is not None:
            text += f", checked: relative error {self.check_error:.1e}"
        return text


def candidate_libraries() -> list[str]:
    """Libraries to try, best first: file paths that exist, then sonames for the loader's search.

    Debian's alternatives system points ``libopenblas.so.0`` at one of the openblas-* flavours;
    the flavour folders are listed too so that a machine whose alternative points elsewhere (or a
    container without ldconfig's cache) still finds them. ``sys.prefix/lib`` covers conda.
    """
    paths: list[Path] = []
    lib_dirs = [Path(sys.prefix) / "lib"]
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        lib_dirs += [Path("/usr/lib") / multiarch, Path("/lib") / multiarch]
        for flavour in ("openblas-pthread", "openblas-openmp", "openblas-serial"):
            paths.append(Path("/usr/lib") / multiarch / flavour / "libopenblas.so.0")
    lib_dirs += [Path("/usr/lib64"), Path("/usr/lib"), Path("/usr/local/lib")]
    sonames = ("libopenblas.so.0", "libopenblas.so", "libblis.so.4", "libmkl_rt.so.2")
    for d in lib_dirs:
        paths.extend(d / s for s in sonames)
    seen: set[str] = set()
    found: list[str] = []
    for p in paths:
        if p.exists():
            real = str(p.resolve())
            if real not in seen:
                seen.add(real)
                found.append(str(p))
    # Bare sonames: let the dynamic loader search LD_LIBRARY_PATH and its cache as a last resort.
    return found + list(sonames)


def load_optimized_blas(mode: str = "auto") -> BlasInfo | None:
    """Make MLX's CPU matmul use an optimized BLAS; call it before anything imports ``mlx.core``.

    ``mode``: ``"auto"`` (search the usual places), ``"off"``, or a library path. The environment
    variable ``IMPETUS_BLAS`` overrides it. Returns what was loaded, or None (nothing loaded,
    including on macOS, where MLX uses Accelerate). Never raises for a missing library: the engine
    still runs on the reference BLAS and the log says so once.
    """
    global _loaded, _warned_missing
    if _loaded is not None:  # already in the process; it cannot be taken out again
        return _loaded
    mode = os.environ.get(ENV_VAR, "").strip() or mode
    if mode.lower() == "off":
        log.info("optimized BLAS disabled (%s=off or mode='off')", ENV_VAR)
        return None
    if sys.platform != "linux":
        log.debug("no BLAS preload on %s: MLX brings its own fast BLAS there", sys.platform)
        return None
    if "mlx.core" in sys.modules:
        log.warning(
            "mlx.core is already imported, so an optimized BLAS can no longer take effect; "
            "call load_optimized_blas() before the first `import mlx.core`"
        )
        return None

    if mode.lower() == "auto":
        for candidate in candidate_libraries():
            info = _try_load(candidate, core_source=_pick_core(candidate))
            if info is not None:
                break
        else:
            if not _warned_missing:
                _warned_missing = True
                log.warning(
                    "no optimized BLAS found; float32 matmul uses the reference BLAS (slow); %s",
                    _INSTALL_HINT,
                )
            return None
    else:
        info = _try_load(mode, explicit=True, core_source=_pick_core(mode))
        if info is None:
            return None

    _loaded = info
    log.info("optimized BLAS loaded: %s; %s", info.describe(), info.config or "")
    return info


def _try_load(
    candidate: str, explicit: bool = False, core_source: str | None = None
) -> BlasInfo | None:
    # Open locally first: a library without the CBLAS symbols MLX needs must not enter the global
    # scope, where it could shadow LAPACK or BLAS symbols of something else.
    try:
        lib = ctypes.CDLL(candidate, mode=os.RTLD_LAZY | os.RTLD_LOCAL)
    except OSError as exc:
        if explicit:
            log.error(
                "%s=%s could not be loaded (%s); float32 matmul uses the reference BLAS (slow)",
                ENV_VAR,
                candidate,
                exc,
            )
        return None
    missing = [s for s in REQUIRED_SYMBOLS if not hasattr(lib, s)]
    if missing:
        level = logging.ERROR if explicit else logging.DEBUG
        log.log(level, "%s lacks %s; not used as BLAS", candidate, ", ".join(missing))
        return None
    core = _corename(lib)
    error = _sgemm_error(lib)
    if not error < CHECK_TOLERANCE:  # NaN too
        log.error(
            "%s%s computed a wrong float32 product (relative error %.2g against exact); not used, "
            "float32 matmul uses the reference BLAS (slow)%s",
            candidate,
            f" with its {core} kernels" if core else "",
            error,
            f"; check {CORETYPE_VAR}" if os.environ.get(CORETYPE_VAR) else "",
        )
        return None
    # Opening the same file again with RTLD_GLOBAL promotes the loaded object into the global
    # scope (glibc), which is what libmlx.so's symbol lookup will see.
    ctypes.CDLL(candidate, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
    path = _library_path(lib, "cblas_sgemm") or candidate
    return BlasInfo(
        name=_blas_name(lib, path),
        path=path,
        config=_blas_config(lib),
        core=core,
        core_source=(core_source or "the library's choice") if core else None,
        check_error=error,
    )


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _library_path(lib: ctypes.CDLL, symbol: str) -> str | None:
    """The file that really provides ``symbol`` (a soname may have been searched for)."""
    try:
        dladdr = ctypes.CDLL(None).dladdr
    except AttributeError:  # libc without dladdr in its main namespace (not glibc >= 2.34)
        return None
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    addr = ctypes.cast(getattr(lib, symbol), ctypes.c_void_p)
    if dladdr(addr, ctypes.byref(info)) == 0 or not info.dli_fname:
        return None
    return os.path.realpath(info.dli_fname.decode())


def _blas_name(lib: ctypes.CDLL, path: str) -> str:
    if hasattr(lib, "openblas_get_config"):
        return "openblas"
    if hasattr(lib, "bli_info_get_version_str"):
        return "blis"
    if hasattr(lib, "MKL_Get_Version_String"):
        return "mkl"
    return Path(path).name


def _blas_config(lib: ctypes.CDLL) -> str | None:
    for fn_name in ("openblas_get_config", "bli_info_get_version_str"):
        if hasattr(lib, fn_name):
            fn = getattr(lib, fn_name)
            fn.restype = ctypes.c_char_p
            fn.argtypes = []
            raw = fn()
            return raw.decode(errors="replace").strip() if raw else None
    return None


# ---- OpenBLAS kernel choice ---------------------------------------------------------------------


def cpu_features() -> tuple[set[str], str]:
    """(instruction-set flags, vendor) of this processor from /proc/cpuinfo; empty off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set(), ""
    flags: set[str] = set()
    vendor = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "vendor_id" and not vendor:
            vendor = value.strip()
    return flags, vendor


def cpu_level(flags: set[str]) -> int:
    """The processor's instruction-set level on CORE_LEVELS's scale."""
    if flags >= _AVX512:
        return 4
    if {"avx2", "fma"} <= flags:
        return 3
    if "avx" in flags:
        return 2
    return 1


def preferred_cores(flags: set[str], vendor: str) -> list[str]:
    """OpenBLAS cores this processor can run, best first (OPENBLAS_CORETYPE spellings)."""
    cores: list[str] = []
    level = cpu_level(flags)
    if level >= 4:
        if {"amx_tile", "avx512_bf16", "avx512_fp16"} <= flags:
            cores.append("SapphireRapids")
        if "avx512_bf16" in flags:
            cores.append("Cooperlake")
        cores.append("SkylakeX")
    if level >= 3:
        cores += ["Zen", "Haswell"] if vendor == "AuthenticAMD" else ["Haswell"]
    if level >= 2:
        cores.append("Sandybridge")
    return cores


Probe = Callable[[str | None], "tuple[str, float] | None"]


def choose_coretype(
    default_core: str, default_error: float, flags: set[str], vendor: str, probe: Probe
) -> tuple[str | None, str]:
    """The OPENBLAS_CORETYPE to set (None: leave the library's pick) and why, for the log.

    `default_core` / `default_error`: what the library picks by itself and how its check came
    out. `probe(coretype)` loads the library elsewhere with that OPENBLAS_CORETYPE and returns
    (the core it then reports, the check's relative error), or None when that failed or crashed.
    A better core is tried only when the library's pick is of a lower level than the processor
    supports, or when the pick computes wrong results; a candidate counts only if the library
    really switched to a core of that level and its product is right.
    """
    level = CORE_LEVELS.get(default_core.lower())
    default_ok = default_error < CHECK_TOLERANCE
    if level is None and default_ok:
        return None, "the library's choice"
    for cand in preferred_cores(flags, vendor):
        cand_level = CORE_LEVELS[cand.lower()]
        if default_ok and (level is None or cand_level <= level):
            break  # nothing better than what the library already runs
        if cand.lower() == default_core.lower():
            continue
        got = probe(cand)
        if got is None:
            continue
        core, error = got
        if CORE_LEVELS.get(core.lower(), 0) >= cand_level and error < CHECK_TOLERANCE:
            why = f"set by impetus: the library picked {default_core}, " + (
                "whose product was wrong" if not default_ok else "generic for this processor"
            )
            return cand, why
    return None, "the library's choice"


def _looks_like_openblas(candidate: str) -> bool:
    return (
        "openblas" in Path(candidate).name.lower()
        or "openblas" in str(Path(candidate).resolve()).lower()
    )


def _pick_core(candidate: str) -> str | None:
    """Set OPENBLAS_CORETYPE for `candidate` before it loads, when the library's own pick is
    generic or wrong here; returns the reason for the log (None: not OpenBLAS or nothing done)."""
    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    if not _looks_like_openblas(candidate):
        return None
    user = os.environ.get(CORETYPE_VAR, "").strip()
    if user:
        return f"{CORETYPE_VAR}={user} set by the user"
    default = _probe_in_child(candidate, None)
    if default is None:
        return None
    flags, vendor = cpu_features()
    chosen, why = choose_coretype(
        default[0], default[1], flags, vendor, lambda ct: _probe_in_child(candidate, ct)
    )
    if chosen is not None:
        os.environ[CORETYPE_VAR] = chosen
        log.info("OpenBLAS: using %s kernels (%s=%s; %s)", chosen, CORETYPE_VAR, chosen, why)
    return why


def _probe_in_child(candidate: str, coretype: str | None) -> tuple[str, float] | None:
    """Load `candidate` in a child process (a core the CPU cannot run may crash it) and return
    (its core name, the check's relative error); None when it fails or is not OpenBLAS."""
    env = {k: v for k, v in os.environ.items() if k != CORETYPE_VAR}
    if coretype:
        env[CORETYPE_VAR] = coretype
    code = (
        "import importlib.util as u,sys;"
        "s=u.spec_from_file_location('impetus_blas_probe',sys.argv[1]);m=u.module_from_spec(s);"
        "sys.modules[s.name]=m;s.loader.exec_module(m);m._child_report(sys.argv[2])"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-I", "-c", code, __file__, candidate],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            log.debug(
                "OpenBLAS probe (%s=%s) failed: %s", CORETYPE_VAR, coretype, out.stderr[-500:]
            )
            return None
        report = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as e:
        log.debug("OpenBLAS probe (%s=%s) failed: %s", CORETYPE_VAR, coretype, e)
        return None
    if not report.get("core"):
        return None
    return str(report["core"]), float(report["error"])


def _child_report(candidate: str) -> None:
    """In the probe's child: load the library, print its core and the check's error as JSON."""
    lib = ctypes.CDLL(candidate, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    core = _corename(lib) if hasattr(lib, "cblas_sgemm") else None
    error = _sgemm_error(lib) if core else float("nan")
    print(json.dumps({"core": core, "error": error if math.isfinite(error) else 1e30}))


def _corename(lib: ctypes.CDLL) -> str | None:
    if not hasattr(lib, "openblas_get_corename"):
        return None
    fn = lib.openblas_get_corename
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    raw = fn()
    return raw.decode(errors="replace").strip() if raw else None


def _sgemm_error(lib: ctypes.CDLL) -> float:
    """Relative (Frobenius) error of `cblas_sgemm` against an exact reference, the worse of two
    products: a small one checked whole (odd sizes, so that the kernels' edge cases run; OpenBLAS
    sends products this small to its small-matrix kernels) and a larger one (its main, threaded
    kernels) checked on a random sample of entries. Inputs are float32 values and the reference
    sums their exact products (math.fsum), so only the library's error remains."""
    rng = random.Random(20261127)
    return max(
        _product_error(lib, 37, 29, 41, rng, None), _product_error(lib, 131, 97, 143, rng, 256)
    )


def _product_error(
    lib: ctypes.CDLL, m: int, n: int, k: int, rng: random.Random, sample: int | None
) -> float:
    c_float_p = ctypes.POINTER(ctypes.c_float)
    sgemm = lib.cblas_sgemm
    sgemm.restype = None
    sgemm.argtypes = [ctypes.c_int] * 6 + [
        ctypes.c_float,
        c_float_p,
        ctypes.c_int,
        c_float_p,
        ctypes.c_int,
        ctypes.c_float,
        c_float_p,
        ctypes.c_int,
    ]
    a = (ctypes.c_float * (m * k))(*(rng.uniform(-1, 1) for _ in range(m * k)))
    b = (ctypes.c_float * (k * n))(*(rng.uniform(-1, 1) for _ in range(k * n)))
    c = (ctypes.c_float * (m * n))(*([float("nan")] * (m * n)))  # poisoned: all must be written
    row_major, no_trans = 101, 111
    sgemm(row_major, no_trans, no_trans, m, n, k, 1.0, a, k, b, n, 0.0, c, n)
    if not all(math.isfinite(x) for x in c):
        return float("inf")
    cells = [(i, j) for i in range(m) for j in range(n)]
    if sample is not None:
        cells = rng.sample(cells, sample)
    diff = norm = 0.0
    for i, j in cells:
        ref = math.fsum(a[i * k + t] * b[t * n + j] for t in range(k))
        diff += (c[i * n + j] - ref) ** 2
        norm += ref * ref
    return math.sqrt(diff / norm) if norm else float("inf")


def sgemm_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Best float32 ``n x n`` matmul throughput of MLX on the CPU, in GFLOP/s (for `doctor` and
    benchmarks; imports ``mlx.core``, so call :func:`load_optimized_blas` first)."""
    import mlx.core as mx

    a = mx.random.normal((n, n), dtype=mx.float32, stream=mx.cpu)
    b = mx.random.normal((n, n), dtype=mx.float32, stream=mx.cpu)
    mx.eval(a, b)
    mx.eval(mx.matmul(a, b, stream=mx.cpu))  # warm-up: thread pools, page faults
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mx.eval(mx.matmul(a, b, stream=mx.cpu))
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9
