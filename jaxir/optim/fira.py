"""Fira (Chen et al. 2024): GaLore plus Adam-like scaling of the gradient outside the subspace.

GaLore throws away the part of each gradient outside its rank-``r`` subspace. Fira adds it
back, scaled per channel by the factor Adam applied inside the subspace, and bounds how
fast that term may grow. For a kernel ``G [m, n]`` (``m >= n``; the sides swap otherwise),
projector ``P [m, r]`` and ``R = P^T G [r, n]`` (:mod:`jaxir.optim.galore`)::

    psi   = adam(R)                                    # low-rank moments, as GaLore
    phi_j = ||psi[:, j]|| / ||R[:, j]||                # per column: norm-based scaling
    S     = phi * (G - P R)                            # the residual, Adam-scaled
    S     = S * min(1, gamma ||S_prev|| / ||S||)       # norm-growth limiter, gamma = 1.01
    update = scale * P psi + S

State per kernel: GaLore's (projector + two low-rank moments) plus one f32 scalar (the
last limited residual norm). Everything is ``jnp`` inside the jitted step: the limiter is a
``where``, there is no host synchronisation. The norms the limiter compares have Adam's
bias correction divided out, as in the reference implementation (which applies the
correction after the limiter), so the warm-up of the correction is not limited as growth.

Deviation from the reference code, on purpose: the residual is ``G - P R``, the exact
out-of-subspace part, and ``scale`` multiplies the low-rank term only (Fira's code
subtracts the *scaled* back-projection; with its default ``scale = 1`` the two agree, and
jaxir's Fira default is ``scale = 1``).

Reuse: the projection, refresh (staggered, randomized SVD) and moment transport are
GaLore's (:func:`jaxir.optim.galore.scale_by_low_rank_adam` with ``fira=True``); Adam is
``optax.scale_by_adam``; decay and learning rate are the optax chain of ``galore``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> params = {"w": jnp.ones((16, 8))}
    >>> opt = fira(1e-2, rank=2, update_gap=10)
    >>> state = opt.init(params)
    >>> g = {"w": jax.random.normal(jax.random.key(0), (16, 8))}
    >>> updates, state = opt.update(g, state, params)
    >>> float(state[0].residual_norm["w"]) > 0  # the residual was used, and remembered
    True
"""

from __future__ import annotations

from typing import Any

import optax
from flax import nnx

from jaxir.optim.build import OptimizerSpec, register_optimizer
from jaxir.optim.galore import (
    DimensionNumbers,
    adam_options,
    low_rank_options,
    scale_by_low_rank_adam,
)

#: Fira's default ``scale`` (the reference implementation's alpha).
DEFAULT_SCALE = 1.0


def scale_by_fira(
    rank: int = 128,
    update_gap: int = 200,
    scale: float = DEFAULT_SCALE,
    *,
    dimension_numbers: DimensionNumbers = None,
    stagger: bool = True,
    svd: str = "full",
    moments: str = "project",
    seed: int = 0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """Fira's gradient transformation; arguments as :func:`jaxir.optim.galore.scale_by_galore`.

    The state is :class:`jaxir.optim.galore.FiraState`.
    """
    return scale_by_low_rank_adam(
        rank=rank,
        update_gap=update_gap,
        scale=scale,
        dimension_numbers=dimension_numbers,
        stagger=stagger,
        svd=svd,
        moments=moments,
        seed=seed,
        b1=b1,
        b2=b2,
        eps=eps,
        fira=True,
    )


def fira(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 128,
    update_gap: int = 200,
    scale: float = DEFAULT_SCALE,
    *,
    weight_decay: float = 0.0,
    mask: Any = None,
    **kwargs: Any,
) -> optax.GradientTransformation:
    """Fira-AdamW: :func:`scale_by_fira`, decoupled decay in full space, then the learning rate."""
    return optax.chain(
        scale_by_fira(rank, update_gap, scale, **kwargs),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def _fira_factory(spec: OptimizerSpec, schedule: optax.Schedule, labels: nnx.State):
    return fira(
        schedule,
        **low_rank_options(spec, DEFAULT_SCALE),
        **adam_options(spec, labels),
    )


register_optimizer("fira", _fira_factory)
