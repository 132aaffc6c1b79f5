"""Mixed-precision products (jaxir.layers.dot) and the attention built on them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jaxir import xla
from jaxir.layers.attention import attend
from jaxir.layers.dot import affine, dot_general
from jaxir.models import bert

BF16 = jnp.bfloat16

# (lhs shape, rhs shape, dimension numbers): plain, transposed rhs, attention-like batched
CASES = [
    ((6, 5), (5, 4), (((1,), (0,)), ((), ()))),
    ((2, 6, 5), (4, 5), (((2,), (1,)), ((), ()))),
    ((3, 6, 5), (3, 7, 5), (((2,), (2,)), ((0,), (0,)))),
    ((2, 6, 3, 5), (2, 7, 3, 5), (((3,), (3,)), ((0, 2), (0, 2)))),
]


def _bf16_values(key, shape):
    """Random float32 values that bfloat16 represents exactly."""
    return jax.random.normal(key, shape).astype(BF16).astype(jnp.float32)


@pytest.mark.parametrize("lhs_shape,rhs_shape,dims", CASES)
def test_float32_is_plain_dot_general(lhs_shape, rhs_shape, dims):
    k1, k2 = jax.random.split(jax.random.key(0))
    lhs, rhs = jax.random.normal(k1, lhs_shape), jax.random.normal(k2, rhs_shape)
    np.testing.assert_array_equal(dot_general(lhs, rhs, dims), lax.dot_general(lhs, rhs, dims))


@pytest.mark.parametrize("lhs_shape,rhs_shape,dims", CASES)
def test_bfloat16_forward_and_gradients_match_float32(lhs_shape, rhs_shape, dims):
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    lhs, rhs = _bf16_values(k1, lhs_shape), _bf16_values(k2, rhs_shape)
    out_shape = jax.eval_shape(lambda a, b: lax.dot_general(a, b, dims), lhs, rhs).shape
    g = _bf16_values(k3, out_shape)

    def loss(dot, a, b):
        return jnp.sum(dot(a, b, dims).astype(jnp.float32) * g)

    ref_out = lax.dot_general(lhs, rhs, dims)
    ref_grads = jax.grad(lambda a, b: loss(lax.dot_general, a, b), argnums=(0, 1))(lhs, rhs)
    out = dot_general(lhs.astype(BF16), rhs.astype(BF16), dims)
    grads = jax.grad(lambda a, b: loss(dot_general, a, b), argnums=(0, 1))(
        lhs.astype(BF16), rhs.astype(BF16)
    )
    assert out.dtype == BF16 and out.shape == ref_out.shape
    # f32 accumulation: one bf16 rounding of the exact result (rel. error <= 2^-8)
    np.testing.assert_allclose(out.astype(jnp.float32), ref_out, rtol=2**-8, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.dtype == BF16 and got.shape == want.shape
        np.testing.assert_allclose(got.astype(jnp.float32), want, rtol=2**-8, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, BF16])
def test_affine_gradients_including_the_bias(dtype):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(2), 4)
    x, w = _bf16_values(k1, (2, 7, 5)), _bf16_values(k2, (5, 3))
    b, g = _bf16_values(k3, (3,)), _bf16_values(k4, (2, 7, 3))

    def loss(fn, *args):
        return jnp.sum(fn(*args).astype(jnp.float32) * g)

    reference = jax.grad(lambda *a: loss(lambda x, w, b: x @ w + b, *a), argnums=(0, 1, 2))
    ours = jax.grad(lambda *a: loss(affine, *a), argnums=(0, 1, 2))
    cast = [t.astype(dtype) for t in (x, w, b)]
    for got, want in zip(ours(*cast), reference(x, w, b), strict=True):
        assert got.dtype == dtype
        np.testing.assert_allclose(got.astype(jnp.float32), want, rtol=2**-8, atol=1e-5)


def test_attention_matches_jax_reference_and_fully_masked_rows_stay_finite():
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    q = jax.random.normal(k1, (2, 5, 3, 4))
    k = jax.random.normal(k2, (2, 6, 3, 4))
    v = jax.random.normal(k3, (2, 6, 3, 4))
    mask = jnp.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    want = jax.nn.dot_product_attention(q, k, v, mask=mask.astype(bool)[:, None, None, :])
    np.testing.assert_allclose(attend(q, k, v, mask), want, rtol=1e-5, atol=1e-6)

    none = attend(q, k, v, jnp.zeros_like(mask))  # no valid key: uniform weights, no NaN
    np.testing.assert_allclose(
        none, jnp.broadcast_to(v.mean(1, keepdims=True), none.shape), atol=1e-5
    )


def test_bfloat16_encoder_gradient_compiles_and_runs_with_cpu_options():
    """Regression: products with two batch axes made XLA:CPU fail on bf16 x bf16 -> f32
    ("Unsupported element type for DotThunk"); the bf16 CPU options must compile a full
    encoder gradient."""
    config = bert.PRESETS["tiny"].replace(dtype="bfloat16", dropout=0.1)
    graphdef, params = nnx.split(bert.Model(config, rngs=nnx.Rngs(0)))
    ids = jnp.arange(2 * 16, dtype=jnp.int32).reshape(2, 16) % config.vocab_size
    mask = jnp.ones_like(ids).at[1, 9:].set(0)

    def loss(p):
        hidden = nnx.merge(graphdef, p)(ids, mask, rngs=nnx.Rngs(dropout=1))
        return jnp.mean(hidden.astype(jnp.float32) ** 2)

    grads = xla.jit(jax.grad(loss), gemm_dtype="bfloat16")(params)
    leaves = jax.tree.leaves(grads)
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)
    assert all(bool(jnp.isfinite(leaf).all()) for leaf in leaves)
    assert sum(float(jnp.abs(leaf).sum()) for leaf in leaves) > 0
