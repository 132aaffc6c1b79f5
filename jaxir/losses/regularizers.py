"""Sparsity regularizers for learned sparse representations (SPLADE), and their warm-up.

The regularizer weight of a SPLADE run grows quadratically from 0 to its final value
over the first steps (:func:`quadratic_warmup`, Paria et al., 2020; naver/splade
``RegWeightScheduler``; sentence-transformers ``SpladeRegularizerWeightSchedulerCallback``
with its default ``"quadratic"`` schedule): a randomly initialised MLM head activates
most of the vocabulary, so at step 0 the FLOPS term is orders of magnitude larger than
the ranking loss and, at full weight, zeroes every representation before the ranking
loss can shape them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["flops", "l1", "quadratic_warmup"]


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


def quadratic_warmup(step: jax.Array | int | None, warmup_steps: int) -> jax.Array:
    """The regularizer weight's warm-up factor ``min(1, step / warmup_steps) ** 2``.

    ``step`` is the optimizer step of the batch (0 for the first update: the same
    convention as sentence-transformers' scheduler, which reads ``global_step`` before
    the update); ``None`` (no step known, e.g. a direct loss call) and
    ``warmup_steps <= 0`` mean fully warmed up.

    Args:
      step: scalar or ``[B]`` int optimizer step (a ``[B]`` array must repeat one value;
        its first entry is read), or ``None``.
      warmup_steps: steps until the factor reaches 1.

    Returns:
      scalar float32 in ``[0, 1]``.

    Example:
      >>> [round(float(quadratic_warmup(s, 4)), 4) for s in (0, 1, 2, 4, 9)]
      [0.0, 0.0625, 0.25, 1.0, 1.0]
      >>> float(quadratic_warmup(None, 4)), float(quadratic_warmup(3, 0))
      (1.0, 1.0)
    """
    if step is None or warmup_steps <= 0:
        return jnp.ones((), jnp.float32)
    step = jnp.asarray(step).reshape(-1)[0].astype(jnp.float32)
    return jnp.square(jnp.clip(step / warmup_steps, 0.0, 1.0))
