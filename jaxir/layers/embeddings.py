"""Token + position (+ segment) embeddings with LayerNorm, BERT style."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxir.layers.dropout import Dropout
from jaxir.layers.linear import embed, layer_norm


class TokenEmbeddings(nnx.Module):
    """``LN(word[ids] + position[pos] + type[types])`` followed by dropout.

    ``position_offset`` reproduces RoBERTa / XLM-R: positions count only non-pad tokens
    and start at ``pad_token_id + 1`` (``padding_idx`` in ``transformers``); with
    ``position_offset=None`` positions are ``0..L-1`` (BERT, DistilBERT). ``dropout_mask``
    picks the dropout mask generator (:class:`jaxir.layers.dropout.Dropout`).

    Shapes: ``ids_bl: [B, L]`` int -> ``[B, L, H]``.

    Example:
      >>> e = TokenEmbeddings(10, 4, 16, 2, None, 1e-12, 0.0, dtype=jnp.float32, rngs=nnx.Rngs(0))
      >>> e(jnp.array([[1, 2, 0]])).shape
      (1, 3, 4)
    """

    def __init__(
        self,
        vocab_size: int,
        hidden: int,
        max_positions: int,
        type_vocab_size: int,
        position_offset: int | None,
        layer_norm_eps: float,
        dropout: float,
        *,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
        dropout_mask: str = "stored",
    ):
        self.dtype = dtype
        self.position_offset = position_offset
        self.word = embed(vocab_size, hidden, ("vocab", "embed"), dtype=dtype, rngs=rngs)
        self.position = embed(max_positions, hidden, (None, "embed"), dtype=dtype, rngs=rngs)
        self.token_type = (
            embed(type_vocab_size, hidden, (None, "embed"), dtype=dtype, rngs=rngs)
            if type_vocab_size
            else None
        )
        self.norm = layer_norm(hidden, epsilon=layer_norm_eps, dtype=dtype, rngs=rngs)
        self.dropout = Dropout(dropout, mask=dropout_mask)

    def positions(self, ids_bl: jax.Array) -> jax.Array:
        """Position ids ``[B, L]`` for ``ids_bl`` (offset/pad-aware for RoBERTa)."""
        if self.position_offset is None:
            return jnp.broadcast_to(jnp.arange(ids_bl.shape[1]), ids_bl.shape)
        pad = self.position_offset - 1
        real = (ids_bl != pad).astype(jnp.int32)
        return jnp.cumsum(real, axis=1) * real + pad

    def __call__(
        self,
        ids_bl: jax.Array,
        token_types_bl: jax.Array | None = None,
        *,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        x = self.word(ids_bl) + self.position(self.positions(ids_bl))
        if self.token_type is not None:
            types = jnp.zeros_like(ids_bl) if token_types_bl is None else token_types_bl
            x = x + self.token_type(types)
        return self.dropout(self.norm(x).astype(self.dtype), rngs=rngs)
