"""NNX variable types that say how training treats each array.

* ``nnx.Param`` -- trainable: differentiated, updated by the optimizer, has optimizer state;
* :class:`Frozen` -- float weights kept fixed (a LoRA base, a frozen tower): carried in
  the train state and the checkpoint, never differentiated, no optimizer state;
* :class:`Buffer` -- non-float state fixed at construction (SLTrain's sparse support
  indices, random projections): carried and checkpointed like :class:`Frozen`.

:func:`jaxir.training.state.create_state` splits a model with ``nnx.split(model,
nnx.Param, ...)``: everything that is not an ``nnx.Param`` lands in the frozen part of
the :class:`~jaxir.training.state.TrainState`.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> class Scaled(nnx.Module):
    ...     def __init__(self):
    ...         self.base = Frozen(jnp.ones(3))
    ...         self.scale = nnx.Param(jnp.ones(()))
    >>> _, trainable, frozen = nnx.split(Scaled(), nnx.Param, ...)
    >>> sorted(trainable.keys()), sorted(frozen.keys())
    (['scale'], ['base'])
"""

from __future__ import annotations

from flax import nnx


class Frozen(nnx.Variable):
    """Float weights that training keeps fixed (no gradient, no optimizer state)."""


class Buffer(nnx.Variable):
    """Non-trainable state fixed at construction (indices, masks, random projections)."""
