"""Host memory: let glibc keep what XLA:CPU frees, instead of returning it to the kernel.

XLA:CPU allocates each executable's temporary buffers in one block per call (2.99 GB for
the MiniLM-shaped training step of ``benchmarks/train_throughput.py``) and frees it when
the call ends. glibc serves a block that large with a fresh ``mmap`` and gives it back
with ``munmap``, so every step page-faults the whole block in again: 730k minor faults
and ~1.1 s of kernel time per 3.1 s step on this project's CPU, and far more when
another framework in the process has just freed memory (a 6.3 s step).

:func:`keep_freed_memory` switches glibc's allocator to one heap that grows with ``brk``
and is never trimmed (``mallopt``: one arena, no ``mmap`` for large blocks, no trimming),
so the block of step ``n`` is reused by step ``n + 1`` without a fault (measured: 0
faults after one step that grows the heap, step 3.15 s -> 2.59-2.85 s). The prices: the
process keeps its peak host memory until it exits (as every accelerator allocator does),
and threads share one arena, so allocation-heavy threads of *other* libraries in the
process contend for its lock (PyTorch's bf16 autocast training step under these
settings: 1.99 s -> 3.12 s; its f32 step got faster, 4.07 s -> 3.63 s;
``benchmarks/train_RESULTS.md``).

A library must not change a process-wide allocator behind its user's back, so
``import jaxir`` leaves it alone: the ``jaxir`` command calls it first thing, and a
training script opts in with one call at its top, before JAX starts its CPU threads (a
thread that has already allocated keeps its own arena). ``JAXIR_SYSTEM_MALLOC=1`` makes
the call a no-op (e.g. for the ``jaxir`` command when PyTorch trains in the same
process). On a C library other than glibc (macOS, musl) it does nothing.

Example (Linux with glibc):
    >>> import jaxir.host_memory
    >>> jaxir.host_memory.keep_freed_memory()
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

# glibc <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

#: Environment variable that leaves glibc's allocator settings alone when set to 1.
OPT_OUT = "JAXIR_SYSTEM_MALLOC"

#: The same settings as a ``GLIBC_TUNABLES`` value, for a process that does not import
#: jaxir (``benchmarks/train_throughput.py`` gives them to its PyTorch peer this way).
GLIBC_TUNABLES = (
    "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
    "glibc.malloc.trim_threshold=18446744073709551615"
)


@functools.cache
def keep_freed_memory() -> bool:
    """Configures glibc ``malloc`` to reuse freed blocks; returns whether it applied.

    Idempotent. Returns ``False`` without changing anything when ``JAXIR_SYSTEM_MALLOC=1``
    or when the C library is not glibc.
    """
    if os.environ.get(OPT_OUT) == "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl has mallopt as a no-op stub
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # -1 is SIZE_MAX to glibc's size_t trim threshold: never trim the heap top.
    return all(
        mallopt(param, value)
        for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
    )
