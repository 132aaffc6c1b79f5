"""jaxir.layers.attention: every ATTENTION kernel equals the default ("xla") on CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxir.layers.attention import ATTENTION, SelfAttention, attend, attend_dot_product
from jaxir.models import bert


def _inputs():
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (3, 7, 2, 8)) for key in keys)
    mask = jnp.array([[1] * 7, [1] * 4 + [0] * 3, [0] * 7])  # full, padded, all padding
    return q, k, v, mask


def test_dot_product_kernel_equals_attend_in_float32():
    q, k, v, mask = _inputs()
    np.testing.assert_allclose(
        attend_dot_product(q, k, v, mask), attend(q, k, v, mask), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("kernel", [k for k in ATTENTION if k != "xla"])
def test_encoder_with_kernel_equals_default_forward_and_gradient(kernel):
    config = bert.PRESETS["tiny"]
    ids = jnp.array([[101, 7, 8, 9, 102, 0], [101, 5, 102, 0, 0, 0]])
    mask = ids > 0
    ref = bert.Model(config, rngs=nnx.Rngs(0))
    alt = bert.Model(config.replace(attention=kernel), rngs=nnx.Rngs(0))

    def loss(model):
        return jnp.sum(jnp.where(mask[..., None], model(ids, mask), 0.0) ** 2)

    np.testing.assert_allclose(loss(alt), loss(ref), rtol=1e-5)
    g_ref = jax.tree.leaves(nnx.state(nnx.grad(loss)(ref), nnx.Param))
    g_alt = jax.tree.leaves(nnx.state(nnx.grad(loss)(alt), nnx.Param))
    for a, b in zip(g_alt, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_unknown_kernel_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="attention kernel 'flashy' is not one of"):
        SelfAttention(8, 2, dtype=jnp.float32, rngs=nnx.Rngs(0), kernel="flashy")
    with pytest.raises(ValueError, match="attention must be one of"):
        bert.PRESETS["tiny"].replace(attention="flashy")
    with pytest.raises(ValueError, match="dropout_mask must be one of"):
        bert.PRESETS["tiny"].replace(dropout_mask="bits")
