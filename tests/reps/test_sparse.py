"""SPLADE math (jaxir.reps.sparse) against NumPy: saturation, chunked pooling, pruning, inference-free queries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxir.reps.sparse import inference_free_queries, pool_mlm, saturate, top_k_prune

B, L, H, V = 3, 11, 6, 40


def inputs(seed: int = 0):
    """hidden [B, L, H], a projection [H, V] and a mask with rows of 11, 5 and 0 real tokens."""
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(B, L, H)).astype(np.float32)
    proj = (2.0 * rng.normal(size=(H, V))).astype(np.float32)
    mask = (np.arange(L)[None] < np.array([[L], [5], [0]])).astype(np.int32)
    return hidden, proj, mask


def numpy_pool(hidden, proj, mask, pooling):
    weights = np.log1p(np.maximum(hidden @ proj, 0.0)) * mask[..., None]
    return weights.max(1) if pooling == "max" else weights.sum(1)


def reference_pool(hidden, proj, mask, pooling):
    """The formula in plain jnp, differentiated by JAX's own rules (no chunking, no custom VJP)."""
    weights = jnp.log1p(jax.nn.relu(hidden @ proj)) * mask[..., None]
    return weights.max(1) if pooling == "max" else weights.sum(1)


def test_saturate_is_log1p_relu_in_float32():
    x = np.array([-3.0, -0.0, 0.0, 0.5, 7.0], np.float32)
    np.testing.assert_allclose(saturate(x), np.log1p(np.maximum(x, 0)), rtol=1e-6)
    out = saturate(jnp.asarray(x, jnp.bfloat16))
    assert out.dtype == jnp.float32
    assert float(out[0]) == 0.0 and float(out[-1]) == pytest.approx(np.log1p(7.0), rel=1e-2)


@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("chunk", [1, 3, 4, 7, L, L + 5])
def test_pool_matches_numpy_for_every_chunk_size(pooling, chunk):
    hidden, proj, mask = inputs()
    got = pool_mlm(
        jnp.asarray(hidden), jnp.asarray(mask), lambda h: h @ proj, pooling=pooling, chunk=chunk
    )
    assert got.shape == (B, V) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, numpy_pool(hidden, proj, mask, pooling), rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(got)[2] == 0.0)  # the all-padding row: zeros, not -inf / NaN


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_padding_tokens_contribute_nothing(pooling):
    """Changing the states at padded positions (even to huge values) changes nothing."""
    hidden, proj, mask = inputs()
    noisy = np.where(mask[..., None] > 0, hidden, 1e4).astype(np.float32)
    for chunk in (4, L):
        clean = pool_mlm(
            jnp.asarray(hidden), mask, lambda h: h @ proj, pooling=pooling, chunk=chunk
        )
        dirty = pool_mlm(jnp.asarray(noisy), mask, lambda h: h @ proj, pooling=pooling, chunk=chunk)
        np.testing.assert_array_equal(clean, dirty)


@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("chunk", [2, 4, 5, L])
def test_gradients_match_the_unchunked_formula(pooling, chunk):
    """d/d hidden and d/d proj (closed over by logits_fn) equal plain autodiff of the formula."""
    hidden, proj, mask = inputs(1)
    cotangent = np.random.default_rng(2).normal(size=(B, V)).astype(np.float32)

    def loss(fn):
        return lambda h, p: (fn(h, p) * cotangent).sum()

    def chunked(h, p):
        return pool_mlm(h, jnp.asarray(mask), lambda x: x @ p, pooling=pooling, chunk=chunk)

    def reference(h, p):
        return reference_pool(h, p, jnp.asarray(mask), pooling)

    got = jax.jit(jax.grad(loss(chunked), argnums=(0, 1)))(hidden, proj)
    want = jax.grad(loss(reference), argnums=(0, 1))(hidden, proj)
    for g, w in zip(got, want):
        assert np.isfinite(np.asarray(g)).all()
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(got[0]).sum()) > 0  # the gradient is not trivially zero


def test_bfloat16_states_pool_in_float32():
    hidden, proj, mask = inputs()
    got = pool_mlm(
        jnp.asarray(hidden, jnp.bfloat16),
        jnp.asarray(mask),
        lambda h: h @ jnp.asarray(proj, jnp.bfloat16),
        chunk=4,
    )
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, numpy_pool(hidden, proj, mask, "max"), rtol=0.05, atol=0.05)


def test_bad_arguments_are_named():
    hidden, proj, mask = inputs()
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool_mlm(hidden, mask, lambda h: h @ proj, pooling="mean", chunk=4)
    with pytest.raises(ValueError, match="chunk must be an int >= 1"):
        pool_mlm(hidden, mask, lambda h: h @ proj, chunk=0)
    with pytest.raises(ValueError, match=r"hidden states \[B, L, H\] and a mask \[B, L\]"):
        pool_mlm(hidden, mask[:, :3], lambda h: h @ proj, chunk=4)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        top_k_prune(np.ones((1, 3), np.float32), 0)


def test_chunked_pool_never_holds_the_whole_logits():
    """Compiled temp memory of the chunked pool (forward and backward) is well below one [B, L, V] f32 array."""
    b, length, vocab, h = 8, 256, 30522, 8
    logits_bytes = b * length * vocab * 4  # 250 MB
    hidden = jax.ShapeDtypeStruct((b, length, h), jnp.float32)
    mask = jax.ShapeDtypeStruct((b, length), jnp.int32)
    emb = jax.ShapeDtypeStruct((vocab, h), jnp.float32)

    def temp_bytes(fn):
        return jax.jit(fn).lower(hidden, mask, emb).compile().memory_analysis().temp_size_in_bytes

    def pooled(chunk, pooling="max"):
        return lambda x, m, e: pool_mlm(x, m, lambda y: y @ e.T, pooling=pooling, chunk=chunk)

    def grads(chunk, pooling="max"):
        return jax.grad(lambda x, m, e: pooled(chunk, pooling)(x, m, e).sum(), argnums=(0, 2))

    # The measurement is meaningful: unchunked, the logits are there (at least once).
    assert temp_bytes(pooled(length)) >= logits_bytes
    # Chunks of 32 tokens: [B, 32, V] logits at a time (2 such buffers, plus partials).
    assert temp_bytes(pooled(32)) < 0.35 * logits_bytes
    assert temp_bytes(grads(32)) < 0.45 * logits_bytes
    assert temp_bytes(grads(32, "sum")) < 0.6 * logits_bytes
    assert temp_bytes(grads(length, "sum")) > 2 * logits_bytes  # what chunking saves


def test_top_k_prune_keeps_each_rows_largest_weights():
    rng = np.random.default_rng(3)
    reps = np.maximum(rng.normal(size=(5, 30)), 0).astype(np.float32)
    reps[4] = 0.0  # an all-zero row stays all zero
    for k in (1, 4, 29, 30, 45):
        got = np.asarray(top_k_prune(jnp.asarray(reps), k))
        for row, want in zip(got, reps):
            kept = np.sort(want)[::-1][:k]
            np.testing.assert_array_equal(np.sort(row[row > 0])[::-1], kept[kept > 0])
            assert np.count_nonzero(row) <= k
            np.testing.assert_array_equal(row[row > 0], want[row > 0])  # values unchanged


def test_top_k_prune_breaks_ties_by_term_id():
    got = top_k_prune(jnp.array([[1.0, 2.0, 2.0, 2.0]]), 2)
    assert got.tolist() == [[0.0, 2.0, 2.0, 0.0]]


def test_inference_free_queries_match_numpy():
    """Each present token's weight once (repeats count once), padding and special ids excluded."""
    rng = np.random.default_rng(4)
    vocab = 12
    weights = rng.uniform(0.5, 3.0, size=vocab).astype(np.float32)
    special = (1, 2)
    ids = np.array(
        [
            [1, 5, 5, 7, 2, 0, 0],  # [CLS] 5 5 7 [SEP] + padding
            [1, 2, 0, 0, 0, 0, 0],  # an empty query: specials only
            [1, 0, 9, 9, 2, 0, 4],  # token 0 (the pad id) as a real token; 4 in padding
            [1, 11, 3, 8, 6, 10, 2],
        ]
    )
    mask = np.array([[1, 1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0], [1] * 7])
    want = np.zeros((len(ids), vocab), np.float32)
    for row, (r_ids, r_mask) in enumerate(zip(ids, mask)):
        for token in set(r_ids[r_mask > 0].tolist()) - set(special):
            want[row, token] = weights[token]
    got = inference_free_queries(jnp.asarray(ids), jnp.asarray(mask), weights, special_ids=special)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, want)
    # d q / d weights = presence: a learned weight gets the gradient of its token once.
    grad = jax.grad(lambda w: inference_free_queries(ids, mask, w, special_ids=special).sum())
    np.testing.assert_array_equal(grad(jnp.asarray(weights)), (want > 0).sum(0))
    # Without special ids, [CLS] / [SEP] count like any token.
    plain = inference_free_queries(jnp.asarray(ids), jnp.asarray(mask), weights)
    assert float(plain[1, 1]) == weights[1] and float(plain[1, 2]) == weights[2]
