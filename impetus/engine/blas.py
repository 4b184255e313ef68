"""Load an optimized BLAS into the engine process before MLX, on Linux.

The ``mlx-cpu`` wheel links the reference (Netlib) BLAS, whose ``cblas_sgemm`` runs at a few
GFLOP/s. ``libmlx.so`` resolves its BLAS symbols (``cblas_sgemm``, ``cblas_dgemm``,
``cblas_cgemm``; LAPACK's ``sgetrf_`` and friends too) through the dynamic linker, which looks in
the global scope first. A library opened with ``RTLD_GLOBAL`` *before* ``libmlx.so`` is loaded
therefore wins, and float32 matmul becomes ~50x faster with OpenBLAS. Once ``mlx.core`` is
imported its symbols are bound and loading a library changes nothing, hence the order rule.

Quantized and bf16 kernels do not use BLAS; float32 matmul (the CPU serving dtype) does.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENV_VAR", "BlasInfo", "candidate_libraries", "load_optimized_blas", "sgemm_gflops"]

log = logging.getLogger(__name__)

ENV_VAR = "IMPETUS_BLAS"
"""Overrides the ``mode`` argument: ``off``, ``auto``, or the path of a BLAS library."""

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
            info = _try_load(candidate)
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
        info = _try_load(mode, explicit=True)
        if info is None:
            return None

    _loaded = info
    log.info("optimized BLAS loaded: %s (%s) %s", info.name, info.path, info.config or "")
    return info


def _try_load(candidate: str, explicit: bool = False) -> BlasInfo | None:
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
    # Opening the same file again with RTLD_GLOBAL promotes the loaded object into the global
    # scope (glibc), which is what libmlx.so's symbol lookup will see.
    ctypes.CDLL(candidate, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
    path = _library_path(lib, "cblas_sgemm") or candidate
    return BlasInfo(name=_blas_name(lib, path), path=path, config=_blas_config(lib))


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
