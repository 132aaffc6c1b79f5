"""Sequence pooling: ``[B, L, H]`` hidden states -> ``[B, H]`` vectors (parameter-free).

Used by every dense path (training, :class:`jaxir.encode.TextEncoder`, validation,
export) through :func:`jaxir.reps.dense.embed`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

POOLINGS = ("cls", "mean", "last", "max")


def pool(hidden_blh: jax.Array, mask_bl: jax.Array, how: str) -> jax.Array:
    """Pools hidden states over real (mask=1) tokens.

    * ``cls``  -- the first token (BERT ``[CLS]``, DPR, TAS-B);
    * ``mean`` -- mean over real tokens (Contriever, sentence-transformers);
    * ``last`` -- the last real token (decoder-style embedders);
    * ``max``  -- element-wise max over real tokens.

    Computed in float32 whatever the input dtype.

    Example:
      >>> h = jnp.arange(12.0).reshape(1, 3, 4)
      >>> pool(h, jnp.array([[1, 1, 0]]), "mean").tolist()
      [[2.0, 3.0, 4.0, 5.0]]
    """
    h = hidden_blh.astype(jnp.float32)
    m = mask_bl.astype(jnp.float32)
    if how == "cls":
        return h[:, 0]
    if how == "mean":
        return (h * m[..., None]).sum(1) / jnp.maximum(m.sum(1, keepdims=True), 1.0)
    if how == "last":
        last = jnp.maximum(m.sum(1).astype(jnp.int32) - 1, 0)
        return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]
    if how == "max":
        return jnp.where(m[..., None] > 0, h, -jnp.inf).max(1)
    raise ValueError(f"Unknown pooling {how!r}; choose one of {POOLINGS}.")
