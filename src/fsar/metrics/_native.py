"""Small C kernels for the metrics, compiled on first use with the system C compiler.

``kernels/matching.c`` holds OTAM's dynamic programme (in torch two calls per column, each a few
microseconds of dispatch for a few thousand numbers; in C one pass), OTAM's path from the frame
dots straight to the logits (forward and backward), and Bi-MHM's no-autograd path (cosines,
nearest frames and sums in one pass). The source is plain C with no torch headers, so it
compiles in well under a second; the shared library is cached per source hash under
``$FSAR_KERNEL_CACHE`` (default ``$XDG_CACHE_HOME/fsar/kernels`` or ``~/.cache/fsar/kernels``)
and written atomically, so concurrent processes (DDP ranks) are safe.

Without a working compiler, or with ``FSAR_NATIVE_KERNELS=0``, :func:`native_kernels` returns None
and the callers compute the same values with torch operations; a single warning says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("kernels") / "matching.c"
_SOURCES = (_SOURCE, _SOURCE.with_name("otam_body.h"))  # the body is #included per weight type
# -march=native: the kernels are compiled for the CPU they run on; the cache key includes the
# CPU's description so that a cache directory shared between different machines stays safe.
_FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c99")
_PORTABLE_FLAGS = tuple(flag for flag in _FLAGS if flag != "-march=native")


def _cpu_description() -> bytes:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.encode()
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}".encode()


def _cache_dir() -> Path:
    if os.environ.get("FSAR_KERNEL_CACHE"):
        return Path(os.environ["FSAR_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fsar" / "kernels"


def _compile(source: Path, target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise OSError("no C compiler found (cc, gcc or clang; or set CC)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        for flags in (_FLAGS, _PORTABLE_FLAGS):  # some compilers/CPUs refuse -march=native
            result = subprocess.run(
                [compiler, *flags, "-o", partial, str(source), "-lm"], capture_output=True, text=True, timeout=120
            )
            if result.returncode == 0:
                break
        else:
            raise OSError(f"{compiler} failed on {source.name}: {result.stderr.strip()[:500]}")
        os.replace(partial, target)  # atomic: other processes see the whole library or none
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    pointer, size, flag = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for suffix in ("f32", "f64"):
        forward = getattr(library, f"otam_forward_{suffix}")
        forward.argtypes = [pointer, size, size, size, size, flag, flag, pointer]
        forward.restype = ctypes.c_int
        backward = getattr(library, f"otam_backward_{suffix}")
        backward.argtypes = [pointer, size, size, size, size, flag, flag, pointer, pointer]
        backward.restype = ctypes.c_int
    fused = library.otam_cosine_forward_f32
    real = ctypes.c_double
    fused.argtypes = [pointer, pointer, pointer, size, size, size, size, real, real, flag, flag, pointer, real, pointer,
                      size, pointer]
    fused.restype = ctypes.c_int
    fused_backward = library.otam_cosine_backward_f32
    fused_backward.argtypes = [pointer, pointer, pointer, size, size, size, size, real, real, flag, flag, pointer,
                               pointer, pointer, pointer]
    fused_backward.restype = ctypes.c_int
    head = library.otam_totals_to_logits
    head.argtypes = [pointer, flag, size, size, real, pointer, size, pointer, pointer]
    head.restype = ctypes.c_int
    bimhm = library.bimhm_cosine_f32
    bimhm.argtypes = [pointer, pointer, pointer, size, size, size, size, pointer, pointer, real, real, pointer, size,
                      pointer]
    bimhm.restype = ctypes.c_int
    return library


@lru_cache(maxsize=1)
def native_kernels() -> ctypes.CDLL | None:
    """The compiled kernels (OTAM and Bi-MHM), or None (torch fallback) with one warning saying why."""
    if os.environ.get("FSAR_NATIVE_KERNELS", "1") == "0":
        return None
    digest = hashlib.sha256(
        b"".join(path.read_bytes() for path in _SOURCES) + " ".join(_FLAGS).encode() + _cpu_description()
    )
    digest = digest.hexdigest()[:16]
    target = _cache_dir() / f"matching-{digest}.so"
    try:
        if not target.exists():
            _compile(_SOURCE, target)
        return _declare(ctypes.CDLL(str(target)))
    except (OSError, subprocess.SubprocessError, AttributeError) as error:
        log.warning("fsar: OTAM and Bi-MHM run without their C kernels (slower, same results): %s", error)
        return None


def float32_kernels(*tensors) -> ctypes.CDLL | None:
    """The kernels when every tensor is float32 on the CPU (the fused paths' inputs), else None."""
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return native_kernels()
    return None
