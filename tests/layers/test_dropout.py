"""jaxir.layers.dropout: recomputed masks equal stored ones, statistics, no stored mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

from jaxir.layers.dropout import Dropout, hash_bits, keep_mask


def _loss(drop: Dropout, x, seed: int):
    return jnp.sum(jnp.sin(drop(x * 3.0, rngs=nnx.Rngs(dropout=seed))) ** 2)


@pytest.mark.parametrize("mask", ["key", "hash"])
def test_gradient_equals_the_stored_mask_gradient(mask):
    """The backward pass regenerates the forward mask: the gradient equals that of an
    explicit ``select`` with the mask drawn once from the same key."""
    rate, seed = 0.3, 7
    x = jax.random.normal(jax.random.key(0), (4, 16, 8))
    drop = Dropout(rate, mask=mask)
    key = nnx.Rngs(dropout=seed).dropout()
    keep = keep_mask(key, rate, x.shape, mask)

    def stored(x):
        y = jax.lax.select(keep, x * 3.0 / (1 - rate), jnp.zeros_like(x))
        return jnp.sum(jnp.sin(y) ** 2)

    value, grad = jax.jit(jax.value_and_grad(lambda x: _loss(drop, x, seed)))(x)
    ref_value, ref_grad = jax.jit(jax.value_and_grad(stored))(x)
    np.testing.assert_array_equal(grad == 0, ~keep)  # the very same mask
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6)
    assert 0 < int((grad == 0).sum()) < x.size  # some dropped, some kept


def test_key_mask_is_nnx_dropouts_mask():
    """``mask="key"`` reproduces ``nnx.Dropout`` exactly (forward and gradient)."""
    x = jax.random.normal(jax.random.key(1), (3, 5, 32))
    ref = Dropout(0.1, mask="stored")
    new = Dropout(0.1, mask="key")
    for seed in (0, 3):
        np.testing.assert_array_equal(
            new(x, rngs=nnx.Rngs(dropout=seed)), ref(x, rngs=nnx.Rngs(dropout=seed))
        )
        g_new = jax.jit(jax.grad(lambda x, s=seed: _loss(new, x, s)))(x)
        g_ref = jax.jit(jax.grad(lambda x, s=seed: _loss(ref, x, s)))(x)
        np.testing.assert_array_equal(g_new, g_ref)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_hash_keep_rate_and_independence(rate):
    n = 1 << 18
    keep = keep_mask(jax.random.key(3), rate, (n // 512, 512), "hash")
    p = 1 - rate
    tol = 5 * np.sqrt(p * (1 - p) / n)  # 5 sigma
    assert abs(float(keep.mean()) - p) < tol
    # neighbours (adjacent indices) are uncorrelated, and two keys give different masks
    flat = np.asarray(keep, np.float64).ravel()
    corr = np.corrcoef(flat[:-1], flat[1:])[0, 1]
    assert abs(corr) < 5 / np.sqrt(n)
    other = np.asarray(keep_mask(jax.random.key(4), rate, keep.shape, "hash"))
    assert abs(float((np.asarray(keep) == other).mean()) - (p * p + (1 - p) ** 2)) < 2 * tol


def test_hash_bits_are_uniform_bytes():
    bits = np.asarray(hash_bits(jnp.array([5, 9], jnp.uint32), (1 << 16,)))
    for shift in (0, 8, 16, 24):
        counts = np.bincount((bits >> shift) & 0xFF, minlength=256)
        chi2 = float((((counts - counts.mean()) ** 2) / counts.mean()).sum())
        assert chi2 < 400  # 255 degrees of freedom: p ~ 1e-8 above this


@pytest.mark.parametrize("mask", ["stored", "key", "hash"])
def test_only_the_stored_mask_is_saved_for_the_backward_pass(mask, capsys):
    """Under ``jax.checkpoint`` the backward pass keeps the key, nothing ``x``-shaped."""
    x = jnp.ones((8, 64), jnp.bfloat16)
    drop = Dropout(0.1, mask=mask)
    print_saved_residuals(lambda x: drop(x, rngs=nnx.Rngs(dropout=0)), x)
    saved = capsys.readouterr().out
    assert ("[8,64]" in saved) == (mask == "stored"), saved


def test_identity_without_rngs_and_bad_arguments():
    x = jnp.arange(6.0).reshape(2, 3)
    for mask in ("stored", "key", "hash"):
        np.testing.assert_array_equal(Dropout(0.5, mask=mask)(x), x)
    assert float(Dropout(1.0, mask="hash")(x, rngs=nnx.Rngs(dropout=0)).sum()) == 0.0
    with pytest.raises(ValueError, match="dropout mask 'bits' is not one of"):
        Dropout(0.1, mask="bits")
    with pytest.raises(ValueError, match="hash dropout indexes elements with 32 bits"):
        hash_bits(jnp.zeros(2, jnp.uint32), (1 << 16, 1 << 16))
