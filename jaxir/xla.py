"""XLA compilation choices shared by every jitted program (encode, train, search).

XLA:CPU sends every dot to YNNPACK by default. For float32 GEMMs of the BERT shapes
jaxir runs (M = batch x length, K/N = 384..3072) XLA's own dot emitter (Eigen) measured
1.4-1.6x faster on this project's 2-core AVX-512 CPUs; for bfloat16 products accumulated
in float32 (:mod:`jaxir.layers.dot`) it is the other way round: YNNPACK uses the CPU's
bf16 dot-product units (243-317 GFLOP/s) and Eigen does not (140-171)
(``benchmarks/encode_throughput.py --gemm``). :func:`jit` picks
the options by the program's GEMM dtype on CPU only; GPU and TPU programs compile with
XLA's defaults.

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

#: Per-program XLA options on the CPU backend, by the dtype the program's GEMMs run in.
CPU_COMPILER_OPTIONS: dict[str, dict[str, Any]] = {
    "float32": {"xla_cpu_experimental_ynn_fusion_type": ""},  # Eigen dots
    "bfloat16": {},  # YNNPACK dots
}


def jit(fn: Callable, *, gemm_dtype: str = "float32", **kwargs: Any) -> Callable:
    """``jax.jit(fn, **kwargs)``, plus ``CPU_COMPILER_OPTIONS[gemm_dtype]`` when the default backend is CPU.

    ``gemm_dtype`` is the compute dtype of the model the program runs (``"float32"`` or
    ``"bfloat16"``). The backend is read at call time, so importing jaxir never
    initialises devices.
    """
    if gemm_dtype not in CPU_COMPILER_OPTIONS:
        raise ValueError(
            f"gemm_dtype must be one of {sorted(CPU_COMPILER_OPTIONS)}, got {gemm_dtype!r}."
        )
    default = jax.jit(fn, **kwargs)
    cpu = jax.jit(fn, compiler_options=CPU_COMPILER_OPTIONS[gemm_dtype], **kwargs)

    @functools.wraps(fn)
    def call(*args, **kw):
        return (cpu if jax.default_backend() == "cpu" else default)(*args, **kw)

    return call
