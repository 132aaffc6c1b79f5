"""Post-LayerNorm transformer encoder layer (BERT / RoBERTa / DistilBERT)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxir.layers.attention import SelfAttention
from jaxir.layers.dropout import Dropout
from jaxir.layers.linear import LinearSpec, layer_norm, linear

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def activation(name: str):
    """Looks up an activation by its Hugging Face name (``hidden_act``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"Unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class Mlp(nnx.Module):
    """Position-wise feed-forward block ``down(act(up(x)))``: ``[..., H] -> [..., H]``.

    ``up`` and ``down`` are ``"mlp"`` projections of :func:`jaxir.layers.linear.linear`.
    """

    def __init__(
        self,
        hidden: int,
        intermediate: int,
        act: str,
        *,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
        spec: LinearSpec | None = None,
    ):
        spec = LinearSpec() if spec is None else spec
        self.up = linear(
            "mlp", hidden, intermediate, ("embed", "mlp"), spec=spec, dtype=dtype, rngs=rngs
        )
        self.down = linear(
            "mlp", intermediate, hidden, ("mlp", "embed"), spec=spec, dtype=dtype, rngs=rngs
        )
        self.act = activation(act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(self.act(self.up(x)))


class TransformerLayer(nnx.Module):
    """``x = LN(x + Drop(Attn(x))); x = LN(x + Drop(MLP(x)))`` (post-LN, as in BERT).

    Dropout randomness is passed per call (``rngs``), not stored in the module, so the
    model state is exactly its parameters and a training step's randomness is a pure
    function of the step key (resumable bit-for-bit). ``spec`` picks the parameterization
    of the attention and MLP projections (:class:`~jaxir.layers.linear.LinearSpec`),
    ``dropout_mask`` the dropout mask generator (:class:`jaxir.layers.dropout.Dropout`)
    and ``attention`` the attention kernel (:data:`jaxir.layers.attention.ATTENTION`).

    Shapes: ``x_blh: [B, L, H]``, ``mask_bl: [B, L]`` -> ``[B, L, H]``.

    Example:
      >>> layer = TransformerLayer(8, 2, 16, "gelu", 1e-12, 0.0, dtype=jnp.float32, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 4, 8)), jnp.ones((2, 4))).shape
      (2, 4, 8)
    """

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        intermediate: int,
        act: str,
        layer_norm_eps: float,
        dropout: float,
        *,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
        spec: LinearSpec | None = None,
        dropout_mask: str = "stored",
        attention: str = "xla",
    ):
        self.dtype = dtype
        self.attention = SelfAttention(
            hidden, num_heads, dtype=dtype, rngs=rngs, spec=spec, kernel=attention
        )
        self.attention_norm = layer_norm(hidden, epsilon=layer_norm_eps, dtype=dtype, rngs=rngs)
        self.mlp = Mlp(hidden, intermediate, act, dtype=dtype, rngs=rngs, spec=spec)
        self.mlp_norm = layer_norm(hidden, epsilon=layer_norm_eps, dtype=dtype, rngs=rngs)
        self.dropout = Dropout(dropout, mask=dropout_mask)

    def __call__(
        self, x_blh: jax.Array, mask_bl: jax.Array, *, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        """Applies the layer; dropout is active only when ``rngs`` is given (training)."""
        drop = lambda t: self.dropout(t, rngs=rngs)  # noqa: E731
        h = self.attention_norm(x_blh + drop(self.attention(x_blh, mask_bl))).astype(self.dtype)
        return self.mlp_norm(h + drop(self.mlp(h))).astype(self.dtype)
