"""Matrix products for mixed precision: low-precision operands, float32 accumulation.

Every GEMM in jaxir's encoders goes through :func:`dot_general` or :func:`affine`. With
float32 operands they compute in float32. With bfloat16 operands they accumulate in
float32 and round the result to bfloat16, in the forward pass *and* in the backward
products: the incoming cotangent is rounded to bfloat16 (exact, the forward output was
bfloat16) and ``dx`` / ``dW`` are accumulated in float32.

Why custom VJPs: differentiating ``lax.dot_general(..., preferred_element_type=f32)``
gives backward products of a float32 cotangent with a bfloat16 operand, which XLA:CPU
runs as float32 GEMMs, while bf16 x bf16 -> f32 products run on the CPU's bf16 matrix
units (AMX / AVX512-BF16) 1.5-1.8x faster than XLA's float32 GEMMs
(``benchmarks/encode_throughput.py --gemm``); and the bias gradient of ``x @ W + b``
is a sum over all tokens that XLA:CPU lowers to a slow tree of ``reduce-window`` ops,
while written as ``ones @ g`` it is one fast GEMV. On TPU and GPU this is the usual
mixed-precision recipe (bf16 operands, f32 accumulation), so one path serves all.

Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.ones((2, 3), jnp.bfloat16)
    >>> w = jnp.ones((3, 4), jnp.bfloat16)
    >>> y = dot_general(x, w, (((1,), (0,)), ((), ())))
    >>> y.dtype, y.shape, float(y[0, 0])
    (dtype(bfloat16), (2, 4), 3.0)
    >>> affine(x, w, jnp.ones((4,), jnp.bfloat16))[0, 0].item()
    4.0
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

DimensionNumbers = tuple[tuple[tuple[int, ...], tuple[int, ...]], tuple[tuple[int, ...], ...]]

_F32 = jnp.float32


def _subscripts(lhs_ndim: int, rhs_ndim: int, dims: DimensionNumbers) -> tuple[str, str, str]:
    """Einsum subscripts ``(lhs, rhs, out)`` of ``lax.dot_general`` with ``dims``."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dims
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lhs = [next(letters) for _ in range(lhs_ndim)]
    rhs = [next(letters) for _ in range(rhs_ndim)]
    for i, j in zip(lhs_contract + lhs_batch, rhs_contract + rhs_batch, strict=True):
        rhs[j] = lhs[i]
    kept_lhs = [c for i, c in enumerate(lhs) if i not in lhs_contract + lhs_batch]
    kept_rhs = [c for j, c in enumerate(rhs) if j not in rhs_contract + rhs_batch]
    out = [lhs[i] for i in lhs_batch] + kept_lhs + kept_rhs
    return "".join(lhs), "".join(rhs), "".join(out)


def _einsum_f32(spec: str, a: jax.Array, b: jax.Array, dtype: Any) -> jax.Array:
    return jnp.einsum(spec, a, b, preferred_element_type=_F32).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dot(lhs: jax.Array, rhs: jax.Array, dims: DimensionNumbers) -> jax.Array:
    return lax.dot_general(lhs, rhs, dims, preferred_element_type=_F32).astype(lhs.dtype)


def _dot_fwd(lhs, rhs, dims):
    return _dot(lhs, rhs, dims), (lhs, rhs)


def _dot_bwd(dims, residuals, g):
    lhs, rhs = residuals
    lhs_s, rhs_s, out_s = _subscripts(lhs.ndim, rhs.ndim, dims)
    g = g.astype(lhs.dtype)
    return (
        _einsum_f32(f"{out_s},{rhs_s}->{lhs_s}", g, rhs, lhs.dtype),
        _einsum_f32(f"{lhs_s},{out_s}->{rhs_s}", lhs, g, rhs.dtype),
    )


_dot.defvjp(_dot_fwd, _dot_bwd)


def dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers: DimensionNumbers) -> jax.Array:
    """``lax.dot_general`` accumulated in float32, result in the operands' (shared) dtype.

    Shapes: as ``lax.dot_general`` (``dimension_numbers = ((lhs_contract, rhs_contract),
    (lhs_batch, rhs_batch))``).
    """
    if lhs.dtype != rhs.dtype:
        raise ValueError(f"operands must share one dtype, got {lhs.dtype} and {rhs.dtype}")
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    dims = ((tuple(lhs_contract), tuple(rhs_contract)), (tuple(lhs_batch), tuple(rhs_batch)))
    return _dot(lhs, rhs, dims)


@jax.custom_vjp
def affine(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """``x @ kernel + bias`` accumulated in float32, result in ``x.dtype``.

    All three operands must share one dtype (the compute dtype).

    Shapes: ``x: [..., I]``, ``kernel: [I, O]``, ``bias: [O]`` -> ``[..., O]``.
    """
    y = jnp.einsum("...i,io->...o", x, kernel, preferred_element_type=_F32)
    return (y + bias.astype(_F32)).astype(x.dtype)


def _affine_fwd(x, kernel, bias):
    return affine(x, kernel, bias), (x, kernel)


def _affine_bwd(residuals, g):
    x, kernel = residuals
    g = g.astype(x.dtype)
    x_ti, g_to = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    ones_t = jnp.ones(g_to.shape[:1], g.dtype)
    return (
        _einsum_f32("...o,io->...i", g, kernel, x.dtype),
        _einsum_f32("ti,to->io", x_ti, g_to, kernel.dtype),
        _einsum_f32("t,to->o", ones_t, g_to, kernel.dtype),
    )


affine.defvjp(_affine_fwd, _affine_bwd)
