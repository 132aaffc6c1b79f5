"""APOLLO and APOLLO-Mini (Zhu et al. 2024): Adam's per-channel learning-rate scaling,
estimated in a random low-rank projection, applied to the raw gradient. No SVD.

For a kernel seen as ``G [m, n]`` (``m >= n``; the sides swap otherwise) and a Gaussian
random projection ``P [r, n]`` with entries ``N(0, 1/r)``::

    R      = G P^T                          [m, r]   (moments live here: 2 m r floats)
    psi    = adam(R)
    s_i    = ||psi[i, :]|| / ||R[i, :]||    one factor per channel (row) -- "channel"
    s      = ||psi|| / ||R||                one factor for the tensor    -- "tensor" (Mini)
    update = limit(scale * s * G)           Fira's norm-growth limiter (gamma = 1.01)

``P`` is never stored: it is regenerated from ``fold_in(fold_in(key(seed), leaf),
step // update_gap)``, so it changes every ``update_gap`` steps and a resumed run
regenerates the same one. At rank 1 with tensor-wise scaling (APOLLO-Mini) a kernel's
state is two ``[max(m, n)]`` vectors and one scalar: SGD-with-momentum holds ``m n``.
The moments are kept as they are when ``P`` is regenerated (the paper's choice): only
norm ratios of them are used, and a fresh Gaussian projection preserves norms in
expectation (Johnson-Lindenstrauss), so no transport is needed -- unlike GaLore, where
the moments are coordinates in a basis. The projections are cheap (a few RNG draws and
one ``[m, n] x [n, r]`` product), so there is no refresh spike to stagger.

Which arrays are projected comes from the labels (``matrix``); all others get plain Adam
(``optax.scale_by_adam``, the base here as in GaLore). Decay is decoupled, in full space.

``scale``: APOLLO's ``--apollo_scale a`` (applied as ``sqrt(a)``) is ``scale = sqrt(a)``
here. Defaults: 1 for channel-wise scaling; for tensor-wise, ``sqrt(min(m, n) / 4)`` per
matrix -- the reference recipe's ``a = d_model / 4`` for transformer kernels, whose
smaller side is ``d_model``.

The norm limiter compares norms with Adam's bias correction divided out, as the reference
(which applies the correction after it) does.

Example:
    >>> import jax, jax.numpy as jnp
    >>> params = {"w": jnp.ones((64, 32)), "b": jnp.zeros((32,))}
    >>> dims = {"w": GaLoreDimensionNumbers(0, 1), "b": None}
    >>> opt = apollo(1e-2, rank=1, dimension_numbers=dims)  # APOLLO-Mini
    >>> state = opt.init(params)
    >>> state[0].base_optimizer_state.mu["w"].shape  # 64 floats, not 64 * 32
    (64, 1)
    >>> g = {"w": jax.random.normal(jax.random.key(0), (64, 32)), "b": jnp.ones(32)}
    >>> updates, state = opt.update(g, state, params)
    >>> updates["w"].shape
    (64, 32)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from optax.contrib import GaLoreDimensionNumbers

from jaxir.optim.build import OptimizerSpec, register_optimizer
from jaxir.optim.galore import (
    DimensionNumbers,
    LeafPlan,
    _check_positive,
    _resolve_dims,
    adam_options,
    bias_correction,
    flatten,
    like,
    limit_growth,
    make_plans,
    value_of,
)

SCALE_TYPES = ("channel", "tensor")

__all__ = ["SCALE_TYPES", "ApolloState", "GaLoreDimensionNumbers", "apollo", "scale_by_apollo"]


class ApolloState(NamedTuple):
    """State of :func:`scale_by_apollo`.

    Attributes:
      count: optimizer steps taken (int32 ``[]``).
      base_optimizer_state: Adam over ``R`` (``[m, r]`` or ``[r, n]``) on projected leaves
        and over the full gradient elsewhere.
      scaled_norm: params' structure, f32 ``[]``: the limiter's last norm (0 = none yet).
    """

    count: jax.Array
    base_optimizer_state: optax.OptState
    scaled_norm: Any


def _rows(plan: LeafPlan) -> bool:
    """True when channels are the rows (``m >= n``: project the smaller ``n`` side)."""
    return plan.m >= plan.n


def _low_shape(plan: LeafPlan) -> tuple[int, int]:
    return (plan.m, plan.rank) if _rows(plan) else (plan.rank, plan.n)


def _low_axes(plan: LeafPlan) -> tuple[str | None, ...] | None:
    if plan.axes is None:
        return None
    return (plan.axes[0], "rank") if _rows(plan) else ("rank", plan.axes[1])


def random_projection(plan: LeafPlan, key: jax.Array) -> jax.Array:
    """``P [r, n]`` (or ``[r, m]``) with ``N(0, 1/r)`` entries, f32."""
    side = plan.n if _rows(plan) else plan.m
    return jax.random.normal(key, (plan.rank, side), jnp.float32) / math.sqrt(plan.rank)


def scale_by_apollo(
    rank: int = 128,
    update_gap: int = 200,
    scale: float | None = None,
    *,
    scale_type: str | None = None,
    dimension_numbers: DimensionNumbers = None,
    seed: int = 0,
    limiter: bool = True,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """APOLLO's gradient transformation (no learning rate, no decay); see the module docstring.

    Args:
      rank: projection rank (1 = APOLLO-Mini).
      update_gap: steps between regenerations of the random projection.
      scale: update multiplier; None: 1 (channel) or ``sqrt(min(m, n) / 4)`` (tensor).
      scale_type: ``"channel"`` or ``"tensor"``; None: tensor at rank 1, else channel.
      dimension_numbers: which leaves are projected (as in
        :func:`jaxir.optim.galore.scale_by_galore`).
      seed: seed of the random projections.
      limiter: apply the norm-growth limiter.
      b1, b2, eps: Adam's.
    """
    _check_positive("optim.rank", rank)
    _check_positive("optim.update_gap", update_gap)
    scale_type = scale_type or ("tensor" if rank == 1 else "channel")
    if scale_type not in SCALE_TYPES:
        raise ValueError(f"optim.scale_type must be one of {SCALE_TYPES}, got {scale_type!r}.")
    base = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def setup(tree):
        leaves, treedef = flatten(tree)
        dims = _resolve_dims(dimension_numbers, tree)
        plans = make_plans(leaves, dims, rank=rank, update_gap=update_gap, stagger=False)
        return leaves, treedef, plans

    def leaf_scale(plan: LeafPlan) -> float:
        if scale is not None:
            return scale
        return 1.0 if scale_type == "channel" else math.sqrt(min(plan.m, plan.n) / 4)

    def init_fn(params):
        leaves, treedef, plans = setup(params)
        proxies, norms = [], []
        for leaf, plan in zip(leaves, plans):
            x = value_of(leaf)
            norms.append(like(leaf, jnp.zeros((), jnp.float32), ()))
            if plan is None:
                proxies.append(like(leaf, jnp.zeros_like(x)))
            else:
                proxies.append(like(leaf, jnp.zeros(_low_shape(plan), x.dtype), _low_axes(plan)))
        base_state = base.init(treedef.unflatten(proxies))
        return ApolloState(jnp.zeros([], jnp.int32), base_state, treedef.unflatten(norms))

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef, plans = setup(updates)
        count = state.count
        root = jax.random.key(seed)
        low, g2ds = list(leaves), [None] * len(leaves)
        for i, (leaf, plan) in enumerate(zip(leaves, plans)):
            if plan is None:
                continue
            g = value_of(leaf)
            g2d = plan.matrix(g).astype(jnp.float32)
            key = jax.random.fold_in(jax.random.fold_in(root, plan.order), count // update_gap)
            p = random_projection(plan, key)
            r = g2d @ p.T if _rows(plan) else p @ g2d
            low[i] = like(leaf, r.astype(g.dtype), _low_axes(plan))
            g2ds[i] = g2d

        low_updates, base_state = base.update(
            treedef.unflatten(low), state.base_optimizer_state, None
        )
        out = treedef.flatten_up_to(low_updates)
        norms = treedef.flatten_up_to(state.scaled_norm)
        correction = bias_correction(count, b1, b2)
        for i, (leaf, plan) in enumerate(zip(leaves, plans)):
            if plan is None:
                continue
            g = value_of(leaf)
            r = value_of(low[i]).astype(jnp.float32)
            psi = value_of(out[i]).astype(jnp.float32)
            if scale_type == "tensor":
                s = jnp.linalg.norm(psi) / (jnp.linalg.norm(r) + 1e-8)
            else:
                axis = 1 if _rows(plan) else 0  # over the rank dimension
                s = jnp.linalg.norm(psi, axis=axis, keepdims=True) / (
                    jnp.linalg.norm(r, axis=axis, keepdims=True) + 1e-8
                )
            scaled = leaf_scale(plan) * s * g2ds[i]
            if limiter:
                scaled, norm = limit_growth(scaled, value_of(norms[i]), correction)
                norms[i] = like(norms[i], norm)
            out[i] = like(leaf, plan.unmatrix(scaled, g).astype(g.dtype))
        new_state = ApolloState(
            optax.safe_int32_increment(count), base_state, treedef.unflatten(norms)
        )
        return treedef.unflatten(out), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def apollo(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 128,
    update_gap: int = 200,
    scale: float | None = None,
    *,
    weight_decay: float = 0.0,
    mask: Any = None,
    **kwargs: Any,
) -> optax.GradientTransformation:
    """APOLLO-AdamW: :func:`scale_by_apollo`, decoupled decay in full space, learning rate."""
    return optax.chain(
        scale_by_apollo(rank, update_gap, scale, **kwargs),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def _factory(mini: bool):
    def factory(spec: OptimizerSpec, schedule: optax.Schedule, labels: nnx.State):
        rank = 1 if mini else spec.option("rank", 128)
        return apollo(
            schedule,
            rank=rank,
            update_gap=spec.option("update_gap", 200),
            scale=spec.option("scale"),
            scale_type="tensor" if mini else spec.option("scale_type"),
            seed=spec.option("seed", 0),
            **adam_options(spec, labels),
        )

    factory.__qualname__ = "apollo_mini" if mini else "apollo"
    return factory


#: ``apollo`` takes ``optim.rank`` (rank 1 is APOLLO-Mini: tensor-wise scaling);
#: ``apollo_mini`` is rank 1, tensor-wise, whatever ``optim.rank`` says.
_APOLLO, _APOLLO_MINI = _factory(False), _factory(True)
register_optimizer("apollo", _APOLLO)
register_optimizer("apollo_mini", _APOLLO_MINI)
