"""Multi-head self-attention over padded batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxir.layers.dot import dot_general
from jaxir.layers.linear import LinearSpec, linear

#: Attention kernels of :class:`SelfAttention`: ``"xla"`` (:func:`attend`: head-folded
#: products, float32 softmax) and ``"dot_product"`` (:func:`jax.nn.dot_product_attention`
#: with its XLA implementation; float32 logits and softmax, probabilities in the compute
#: dtype). Both compute the same function; they differ in the HLO they hand to XLA.
ATTENTION = ("xla", "dot_product")


class SelfAttention(nnx.Module):
    """Bidirectional multi-head self-attention (BERT layout: separate q/k/v/output projections).

    Scores and the value mix are :func:`jaxir.layers.dot.dot_general` products (float32
    accumulation under bf16 compute); the softmax runs in float32. Padded keys get the
    lowest float32 logit, so a row whose keys are all padding attends uniformly (as in
    ``transformers``) instead of producing NaN.

    The four projections are ``"attention"`` projections of :func:`jaxir.layers.linear.linear`
    (``spec`` picks their parameterization; default: :class:`~jaxir.layers.linear.Dense`);
    ``kernel`` (one of :data:`ATTENTION`) picks the attention product.

    Shapes: ``x_blh: [B, L, H]``, ``mask_bl: [B, L]`` (True/1 = real token) -> ``[B, L, H]``.

    Example:
      >>> attn = SelfAttention(8, 2, dtype=jnp.float32, rngs=nnx.Rngs(0))
      >>> attn(jnp.ones((1, 3, 8)), jnp.array([[1, 1, 0]])).shape
      (1, 3, 8)
    """

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        *,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
        spec: LinearSpec | None = None,
        kernel: str = "xla",
    ):
        if kernel not in ATTENTION:
            raise ValueError(f"attention kernel {kernel!r} is not one of {ATTENTION}")
        if hidden % num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.kernel = kernel
        self.head_dim = hidden // num_heads
        spec = LinearSpec() if spec is None else spec

        def proj(axes):
            return linear("attention", hidden, hidden, axes, spec=spec, dtype=dtype, rngs=rngs)

        self.query = proj(("embed", "heads"))
        self.key = proj(("embed", "heads"))
        self.value = proj(("embed", "heads"))
        self.output = proj(("heads", "embed"))

    def __call__(self, x_blh: jax.Array, mask_bl: jax.Array) -> jax.Array:
        b, length, _ = x_blh.shape
        split = lambda t: t.reshape(b, length, self.num_heads, self.head_dim)  # noqa: E731
        q, k, v = split(self.query(x_blh)), split(self.key(x_blh)), split(self.value(x_blh))
        mix = attend if self.kernel == "xla" else attend_dot_product
        return self.output(mix(q, k, v, mask_bl).reshape(b, length, -1))


def attend(
    q_blnd: jax.Array, k_bsnd: jax.Array, v_bsnd: jax.Array, mask_bs: jax.Array
) -> jax.Array:
    """Scaled dot-product attention ``softmax(q k^T / sqrt(d)) v`` over unmasked keys.

    Heads are folded into one batch axis first: XLA:CPU sends these ``[B*N, L, D]``
    products to its GEMM library in float32 and bfloat16 alike, while products with
    two batch axes fall back to a kernel without bf16 -> f32 support.

    Shapes: ``q: [B, L, N, D]``, ``k, v: [B, S, N, D]``, ``mask_bs: [B, S]`` -> ``[B, L, N, D]``.
    """
    b, length, n, d = q_blnd.shape
    keys = k_bsnd.shape[1]

    def by_head(t):  # [B, T, N, D] -> [B*N, T, D]
        return t.transpose(0, 2, 1, 3).reshape(b * n, t.shape[1], d)

    q, k, v = by_head(q_blnd), by_head(k_bsnd), by_head(v_bsnd)
    scores = dot_general(q, k, (((2,), (2,)), ((0,), (0,)))).astype(jnp.float32)
    scores = scores.reshape(b, n, length, keys) * (d**-0.5)
    valid = mask_bs.astype(bool)[:, None, None, :]
    scores = jnp.where(valid, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype).reshape(b * n, length, keys)
    out = dot_general(probs, v, (((2,), (1,)), ((0,), (0,))))
    return out.reshape(b, n, length, d).transpose(0, 2, 1, 3)


def attend_dot_product(
    q_blnd: jax.Array, k_bsnd: jax.Array, v_bsnd: jax.Array, mask_bs: jax.Array
) -> jax.Array:
    """:func:`attend` through :func:`jax.nn.dot_product_attention` (``implementation="xla"``).

    A row whose keys are all padding attends uniformly, as in :func:`attend`.

    Shapes: ``q: [B, L, N, D]``, ``k, v: [B, S, N, D]``, ``mask_bs: [B, S]`` -> ``[B, L, N, D]``.

    Example:
      >>> q = jnp.ones((1, 3, 2, 4))
      >>> attend_dot_product(q, q, q, jnp.array([[1, 1, 0]])).shape
      (1, 3, 2, 4)
    """
    valid = mask_bs.astype(bool)[:, None, None, :]
    return jax.nn.dot_product_attention(q_blnd, k_bsnd, v_bsnd, mask=valid, implementation="xla")
