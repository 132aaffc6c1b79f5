"""XLA compilation choices shared by every jitted program (encode, train, search).

XLA:CPU sends every dot to YNNPACK by default; for the BERT-shaped f32 GEMMs jaxir runs
(M = batch x length, K/N = 256..3072) its own dot emitter (Eigen) measured 1.3-1.8x
faster on this project's 2-core AVX-512 CPUs (``benchmarks/encode_throughput.py --gemm``,
numbers in BENCHMARKS.md). :func:`jit` applies that option on CPU only; GPU and TPU
programs compile with XLA's defaults.

Example:
    >>> import jax.numpy as jnp
    >>> double = jit(lambda x: 2 * x)
    >>> double(jnp.arange(3)).tolist()
    [0, 2, 4]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

#: Per-program XLA options used on the CPU backend.
CPU_COMPILER_OPTIONS: dict[str, Any] = {"xla_cpu_experimental_ynn_fusion_type": ""}


def jit(fn: Callable, **kwargs: Any) -> Callable:
    """``jax.jit(fn, **kwargs)``, plus :data:`CPU_COMPILER_OPTIONS` when the default backend is CPU.

    The backend is read at call time, so importing jaxir never initialises devices.
    """
    default = jax.jit(fn, **kwargs)
    cpu = jax.jit(fn, compiler_options=CPU_COMPILER_OPTIONS, **kwargs)

    @functools.wraps(fn)
    def call(*args, **kw):
        return (cpu if jax.default_backend() == "cpu" else default)(*args, **kw)

    return call
