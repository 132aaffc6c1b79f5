"""Factories for NNX layers annotated with logical sharding axes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxir.layers.dot import affine

#: BERT-style initialisation (truncated normal, std 0.02), as in ``transformers``.
INIT_STD = 0.02


def axes_metadata(axes: tuple[str | None, ...]) -> dict:
    """Variable metadata recording logical ``axes`` without placing the value.

    Placement happens once, explicitly (``jaxir.sharding.shard_model`` or a jitted
    init with ``out_shardings``), so a model can be built outside any mesh context.
    """
    return {"out_sharding": axes, "eager_sharding": False}


class Dense(nnx.Module):
    """``y = x @ kernel + bias`` in the compute ``dtype`` via :func:`jaxir.layers.dot.affine`.

    Parameters are float32 (``kernel [in, out]``, ``bias [out]``, the names
    ``nnx.Linear`` uses) and cast to ``dtype`` per call; products accumulate in float32.

    Shapes: ``[..., in] -> [..., out]``.

    Example:
      >>> layer = Dense(3, 2, (None, None), dtype=jnp.float32, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((4, 3))).shape
      (4, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        axes: tuple[str | None, str | None],
        *,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        init = jax.nn.initializers.truncated_normal(INIT_STD)
        self.dtype = dtype
        self.kernel = nnx.Param(
            init(rngs.params(), (in_features, out_features), jnp.float32), **axes_metadata(axes)
        )
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32), **axes_metadata(axes[1:]))

    def __call__(self, x: jax.Array) -> jax.Array:
        return affine(
            x.astype(self.dtype),
            self.kernel[...].astype(self.dtype),
            self.bias[...].astype(self.dtype),
        )


def layer_norm(features: int, *, epsilon: float, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """``nnx.LayerNorm`` computed in float32 (stable under bf16 compute), params replicated."""
    del dtype  # statistics always in float32; the caller casts the result
    return nnx.LayerNorm(
        features,
        epsilon=epsilon,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        use_fast_variance=False,
        scale_metadata=axes_metadata(("norm",)),
        bias_metadata=axes_metadata(("norm",)),
        rngs=rngs,
    )


def embed(
    num: int,
    features: int,
    axes: tuple[str | None, str | None],
    *,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
) -> nnx.Embed:
    """``nnx.Embed`` ``[num, features]`` annotated with logical ``axes``."""
    return nnx.Embed(
        num,
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        embedding_init=jax.nn.initializers.truncated_normal(INIT_STD),
        embedding_metadata=axes_metadata(axes),
        rngs=rngs,
    )
