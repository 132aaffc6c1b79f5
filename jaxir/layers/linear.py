"""Factories for NNX layers annotated with logical sharding axes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

#: BERT-style initialisation (truncated normal, std 0.02), as in ``transformers``.
INIT_STD = 0.02


def axes_metadata(axes: tuple[str | None, ...]) -> dict:
    """Variable metadata recording logical ``axes`` without placing the value.

    Placement happens once, explicitly (``jaxir.sharding.shard_model`` or a jitted
    init with ``out_shardings``), so a model can be built outside any mesh context.
    """
    return {"out_sharding": axes, "eager_sharding": False}


def dense(
    in_features: int,
    out_features: int,
    axes: tuple[str | None, str | None],
    *,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """``nnx.Linear`` whose kernel ``[in, out]`` carries logical ``axes`` and whose bias carries ``axes[1]``."""
    return nnx.Linear(
        in_features,
        out_features,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=jax.nn.initializers.truncated_normal(INIT_STD),
        kernel_metadata=axes_metadata(axes),
        bias_metadata=axes_metadata((axes[1],)),
        rngs=rngs,
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
