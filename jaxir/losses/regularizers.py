"""Sparsity regularizers for learned sparse representations (SPLADE)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["flops", "l1"]


def _valid_rows(reps_bv: jax.Array, where: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(|reps| with padded rows zeroed, number of valid rows >= 1)."""
    abs_bv = jnp.abs(reps_bv.astype(jnp.float32))
    if where is None:
        return abs_bv, jnp.asarray(reps_bv.shape[0], jnp.float32)
    valid_b = jnp.asarray(where, bool)
    abs_bv = jnp.where(valid_b[:, None], abs_bv, 0.0)
    return abs_bv, jnp.maximum(valid_b.sum(), 1).astype(jnp.float32)


def flops(reps_bv: jax.Array, *, where: jax.Array | None = None) -> jax.Array:
    """FLOPS regularizer (Paria et al., 2020; SPLADE): ``sum_v (mean_b |w_bv|)^2``.

    It penalises terms that are active across many rows of the batch, which is what
    makes inverted-index posting lists long. Under ``jit`` with ``reps_bv`` sharded along
    the batch, the mean spans the global batch.

    Args:
      reps_bv: [B, V] term weights (e.g. ``log1p(relu(logits))`` max-pooled).
      where: [B] bool, False for padded rows (left out of the mean).

    Returns:
      scalar float32.

    Example:
      >>> import jax.numpy as jnp
      >>> flops(jnp.array([[1.0, 0.0], [3.0, 2.0]])).tolist()  # 2^2 + 1^2
      5.0
    """
    abs_bv, count = _valid_rows(reps_bv, where)
    return jnp.square(abs_bv.sum(0) / count).sum()


def l1(reps_bv: jax.Array, *, where: jax.Array | None = None) -> jax.Array:
    """L1 regularizer: ``mean_b sum_v |w_bv|`` over valid rows.

    Args:
      reps_bv: [B, V] term weights.
      where: [B] bool, False for padded rows.

    Returns:
      scalar float32.

    Example:
      >>> import jax.numpy as jnp
      >>> l1(jnp.array([[1.0, -1.0], [3.0, 2.0]]), where=jnp.array([True, False])).tolist()
      2.0
    """
    abs_bv, count = _valid_rows(reps_bv, where)
    return abs_bv.sum() / count
