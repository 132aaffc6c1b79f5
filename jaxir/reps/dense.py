"""Dense representations: token states -> one float32 vector per text, and the jitted encoder forward.

Every dense path computes its vectors with the same two functions, so training,
validation, corpus encoding, export and serving cannot drift apart:

* :func:`embed` -- the math: ``pool(hidden_blh, mask_bl)`` (:func:`jaxir.reps.pooling.pool`,
  float32), then :func:`l2_normalize` when ``normalize``. Used inside the jitted train
  step by :class:`jaxir.models.dual_encoder.DualEncoder` and by :func:`forward`.
* :data:`FORWARD` -- the one jitted inference program ``(graphdef, state, ids_bl,
  mask_bl) -> vectors_bh``, one per compute dtype (``"float32"``, ``"bfloat16"``; on
  CPU each compiles with the options :func:`jaxir.xla.jit` picks for it). Used by
  :class:`jaxir.encode.TextEncoder` (hence by ``jaxir encode``, bundles and search) and
  by in-training validation (:mod:`jaxir.training.validation`). The parameters are
  arguments, not constants, so a model trained in place is encoded with its current
  weights without recompiling, and a BERT-base program does not embed 440 MB of
  constants. It compiles one program per (model graph, ``[B, L]`` shape, pooling,
  normalize).

Normalization follows ``torch.nn.functional.normalize``: ``x / max(||x||_2, eps)`` with
``eps = 1e-12``, so an all-zero vector stays zero and nothing else is changed.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxir.models.bert import PRESETS, Model
    >>> hidden_blh = jnp.array([[[3.0, 4.0], [1.0, 1.0], [9.0, 9.0]]])
    >>> mask_bl = jnp.array([[1, 1, 0]])
    >>> embed(hidden_blh, mask_bl, pooling="cls", normalize=True).tolist()
    [[0.6000000238418579, 0.800000011920929]]
    >>> embed(hidden_blh, mask_bl, pooling="mean", normalize=False).tolist()
    [[2.0, 2.5]]
    >>> model = Model(PRESETS["tiny"], rngs=nnx.Rngs(0))
    >>> ids_bl = jnp.array([[2, 7, 3, 0]])
    >>> vectors_bh = encode(model, ids_bl, ids_bl > 0, pooling="mean", normalize=True)
    >>> vectors_bh.shape, vectors_bh.dtype
    ((1, 32), dtype('float32'))
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxir import xla
from jaxir.reps.pooling import pool

__all__ = ["FORWARD", "KIND", "NORM_EPS", "embed", "encode", "forward", "l2_normalize"]

#: The representation kind of this module (stores, searchers and bundles record it).
KIND = "dense"

#: ``torch.nn.functional.normalize``'s epsilon: the one used for every dense vector.
NORM_EPS = 1e-12


def l2_normalize(x: jax.Array, eps: float = NORM_EPS) -> jax.Array:
    """``x / max(||x||_2, eps)`` over the last axis (``torch.nn.functional.normalize``).

    Rows keep their direction and get unit length; an all-zero row stays zero.

    Example:
      >>> l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
      [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def embed(hidden_blh: jax.Array, mask_bl: jax.Array, *, pooling: str, normalize: bool) -> jax.Array:
    """Vectors ``[B, H]`` float32 from token states ``[B, L, H]`` and a 0/1 mask ``[B, L]``.

    ``pool(hidden_blh, mask_bl, pooling)`` in float32 whatever the input dtype, then
    :func:`l2_normalize` when ``normalize`` (cosine similarity = dot product).

    Example:
      >>> h = jnp.arange(12.0).reshape(1, 3, 4)
      >>> embed(h, jnp.array([[1, 1, 0]]), pooling="mean", normalize=False).tolist()
      [[2.0, 3.0, 4.0, 5.0]]
    """
    vectors_bh = pool(hidden_blh, mask_bl, pooling)
    return l2_normalize(vectors_bh) if normalize else vectors_bh


def forward(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    ids_bl: jax.Array,
    mask_bl: jax.Array,
    *,
    pooling: str,
    normalize: bool,
) -> jax.Array:
    """:func:`embed` of an encoder's output: ``[B, L]`` ids and mask -> ``[B, H]`` float32.

    ``nnx.merge(graphdef, state)`` must be an encoder ``(ids_bl, mask_bl) -> hidden_blh``
    (e.g. :class:`jaxir.models.bert.Model`, run without dropout). Not jitted: call
    :data:`FORWARD` (or :func:`encode`), the jitted program.
    """
    model = nnx.merge(graphdef, state)
    return embed(model(ids_bl, mask_bl), mask_bl, pooling=pooling, normalize=normalize)


#: :func:`forward` jitted, by compute dtype (CPU compiler options differ, see :mod:`jaxir.xla`).
FORWARD: dict[str, Callable[..., jax.Array]] = {
    dtype: xla.jit(
        forward, gemm_dtype=dtype, static_argnums=(0,), static_argnames=("pooling", "normalize")
    )
    for dtype in xla.CPU_COMPILER_OPTIONS
}


def encode(
    model: nnx.Module, ids_bl: jax.Array, mask_bl: jax.Array, *, pooling: str, normalize: bool
) -> jax.Array:
    """``FORWARD[model.config.dtype]`` on ``model``'s current parameters: vectors ``[B, H]`` float32.

    Splits the model on every call; loops over many batches should split once and call
    :data:`FORWARD` themselves (as :class:`jaxir.encode.TextEncoder` does).
    """
    graphdef, state = nnx.split(model)
    program = FORWARD[model.config.dtype]
    return program(graphdef, state, ids_bl, mask_bl, pooling=pooling, normalize=normalize)
