"""Dropout whose mask is recomputed in the backward pass instead of being stored.

``nnx.Dropout`` draws its keep-mask in the forward pass; autodiff then keeps that mask
(a ``pred`` array the size of the activation) alive until the backward pass, and with
the ``unsafe_rbg`` key of :data:`jaxir.training.state.PRNG_IMPL` the random bits come
from the ``RngBitGenerator`` primitive, which the SPMD partitioner does not split: every
chip draws the bits of the *global* batch. :class:`Dropout` keeps the same semantics
(keep with probability ``1 - rate``, scale kept values by ``1 / (1 - rate)``) with one of
two mask generators, both applied under :func:`jax.checkpoint` with a policy that saves
nothing, so the backward pass regenerates the identical mask from the key:

* ``"key"``: ``jax.random.bernoulli`` of the key -- bit-for-bit the mask ``nnx.Dropout``
  draws from the same key (random bits still materialised, twice);
* ``"hash"``: a counter-based hash of ``(seed, flat element index)``
  (:func:`hash_bits`): element-wise integer arithmetic over an ``iota`` that XLA fuses
  into the consumer of the masked activation, partitions like the activation (each
  chip hashes only its shard) and never writes to HBM. The seed is two words drawn
  from the key, so the mask is still a pure function of the step key (resumable).

Shapes: any ``x`` -> same shape and dtype.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> drop = Dropout(0.5, mask="hash")
  >>> y = drop(jnp.ones((2, 1000)), rngs=nnx.Rngs(dropout=0))
  >>> bool(jnp.all((y == 0) | (y == 2))), 0.45 < float((y > 0).mean()) < 0.55
  (True, True)
  >>> bool(jnp.all(drop(jnp.ones((2, 3)), rngs=None) == 1))  # no rngs: deterministic
  True
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

#: Mask generators of :class:`Dropout` (``"stored"``: ``nnx.Dropout``'s own, mask kept
#: for the backward pass).
MASKS = ("stored", "key", "hash")

_M1, _M2 = 0x7FEB352D, 0x846CA68B  # lowbias32 (C. Wellons' integer-hash prospector)


def _mix32(h: jax.Array) -> jax.Array:
    """``lowbias32``: a bijective 32-bit avalanche mixer (uint32 -> uint32)."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(_M1)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(_M2)
    return h ^ (h >> 16)


def hash_bits(seed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform uint32 bits ``[*shape]``: a hash of ``(seed, flat row-major element index)``.

    ``seed`` is ``uint32[2]``. Each element is ``mix(mix(index ^ seed[0]) ^ seed[1])``
    with the bijective ``lowbias32`` mixer, so distinct indices never collide under one
    seed. The index is built from ``iota`` per axis, which XLA's SPMD partitioner splits
    like the array it is combined with.

    Example:
      >>> bits = hash_bits(jnp.array([1, 2], jnp.uint32), (4, 3))
      >>> bits.shape, bits.dtype, int(jnp.unique(bits).size)
      ((4, 3), dtype('uint32'), 12)
    """
    if math.prod(shape) >= 2**32:
        raise ValueError(
            f"hash dropout indexes elements with 32 bits; an array of shape {shape} has "
            f"{math.prod(shape)} elements. Use Dropout(mask='key') for arrays this large."
        )
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
        stride *= shape[axis]
    return _mix32(_mix32(index ^ seed[0]) ^ seed[1])


def keep_mask(key: jax.Array, rate: float, shape: tuple[int, ...], mask: str) -> jax.Array:
    """Boolean keep-mask ``[*shape]`` (True with probability ``1 - rate``) from ``key``.

    ``mask="key"`` is ``jax.random.bernoulli(key, 1 - rate, shape)`` (``nnx.Dropout``'s
    mask); ``mask="hash"`` compares :func:`hash_bits` of a seed drawn from ``key``
    against ``(1 - rate) * 2**32``.
    """
    if mask == "hash":
        seed = jax.random.bits(key, (2,), jnp.uint32)
        threshold = min(round((1.0 - rate) * 2**32), 2**32 - 1)
        return hash_bits(seed, shape) < jnp.uint32(threshold)
    return jax.random.bernoulli(key, 1.0 - rate, shape)


def _apply(x: jax.Array, key: jax.Array, rate: float, mask: str) -> jax.Array:
    keep = keep_mask(key, rate, x.shape, mask)
    return jax.lax.select(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros_like(x))


class Dropout(nnx.Module):
    """Inverted dropout whose mask the backward pass regenerates (``mask`` in :data:`MASKS`).

    ``mask="stored"`` is ``nnx.Dropout`` itself; ``"key"`` draws the same mask from the
    same key but recomputes it in the backward pass; ``"hash"`` uses :func:`hash_bits`.
    The key is taken from ``rngs`` exactly as ``nnx.Dropout`` takes it (one draw of the
    ``dropout`` stream per call); without ``rngs`` the layer is the identity.

    Shapes: ``x: [...]`` -> ``[...]``.
    """

    def __init__(self, rate: float, *, mask: str = "key"):
        if mask not in MASKS:
            raise ValueError(f"dropout mask {mask!r} is not one of {MASKS}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"dropout rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.mask = mask
        self.stored = nnx.Dropout(rate)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        if self.mask == "stored":
            return self.stored(x, deterministic=rngs is None, rngs=rngs)
        if rngs is None or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        key = rngs.dropout()
        body = jax.checkpoint(
            _apply, policy=jax.checkpoint_policies.nothing_saveable, static_argnums=(2, 3)
        )
        return body(x, key, self.rate, self.mask)
