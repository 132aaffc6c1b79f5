"""Multi-head self-attention over padded batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxir.layers.linear import dense


class SelfAttention(nnx.Module):
    """Bidirectional multi-head self-attention (BERT layout: separate q/k/v/output projections).

    Uses ``jax.nn.dot_product_attention`` so XLA picks the fused kernel where one exists.

    Shapes: ``x_blh: [B, L, H]``, ``mask_bl: [B, L]`` (True/1 = real token) -> ``[B, L, H]``.

    Example:
      >>> attn = SelfAttention(8, 2, dtype=jnp.float32, rngs=nnx.Rngs(0))
      >>> attn(jnp.ones((1, 3, 8)), jnp.array([[1, 1, 0]])).shape
      (1, 3, 8)
    """

    def __init__(self, hidden: int, num_heads: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        if hidden % num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.query = dense(hidden, hidden, ("embed", "heads"), dtype=dtype, rngs=rngs)
        self.key = dense(hidden, hidden, ("embed", "heads"), dtype=dtype, rngs=rngs)
        self.value = dense(hidden, hidden, ("embed", "heads"), dtype=dtype, rngs=rngs)
        self.output = dense(hidden, hidden, ("heads", "embed"), dtype=dtype, rngs=rngs)

    def __call__(self, x_blh: jax.Array, mask_bl: jax.Array) -> jax.Array:
        b, length, _ = x_blh.shape
        split = lambda t: t.reshape(b, length, self.num_heads, self.head_dim)  # noqa: E731
        q, k, v = split(self.query(x_blh)), split(self.key(x_blh)), split(self.value(x_blh))
        key_mask = mask_bl.astype(bool)[
            :, None, None, :
        ]  # [B, 1, 1, L] broadcast over heads/queries
        out = jax.nn.dot_product_attention(q, k, v, mask=key_mask)
        return self.output(out.reshape(b, length, -1))
