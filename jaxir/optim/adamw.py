"""AdamW with warmup + linear decay, global-norm clipping and a weight-decay mask.

Example:
    >>> import jax.numpy as jnp
    >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
    >>> opt = adamw(1e-3, total_steps=10, warmup_steps=2)
    >>> state = opt.init(params)
    >>> updates, state = opt.update(params, state, params)
    >>> decay_mask(params)
    {'dense': {'bias': False, 'kernel': True}}
"""

from __future__ import annotations

from typing import Any

import jax
import optax


def warmup_linear_decay(peak: float, *, total_steps: int, warmup_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, max(warmup_steps, 1)),
            optax.linear_schedule(peak, 0.0, max(total_steps - warmup_steps, 1)),
        ],
        boundaries=[warmup_steps],
    )


def decay_mask(params: Any) -> Any:
    """True for matrices (weight decay), False for biases, LayerNorm and scalars (BERT recipe)."""
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def adamw(
    learning_rate: float,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    weight_decay: float = 0.01,
    grad_clip: float | None = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW under :func:`warmup_linear_decay`.

    Args:
      learning_rate: peak learning rate.
      total_steps: steps of the whole run (the schedule reaches 0 there).
      warmup_steps: linear warmup length.
      weight_decay: decoupled weight decay, applied to matrices only (:func:`decay_mask`).
      grad_clip: max global gradient norm (``None``: no clipping).
    """
    schedule = warmup_linear_decay(
        learning_rate, total_steps=total_steps, warmup_steps=warmup_steps
    )
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip else []
    parts.append(
        optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask)
    )
    return optax.chain(*parts)
