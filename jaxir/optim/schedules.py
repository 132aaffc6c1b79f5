"""Learning-rate schedules by name: warmup then linear decay, cosine decay, or constant.

Example:
    >>> schedule = make_schedule("linear", 1e-3, total_steps=10, warmup_steps=2)
    >>> [round(float(schedule(s)), 6) for s in (0, 1, 2, 6, 10)]
    [0.0, 0.0005, 0.001, 0.0005, 0.0]
"""

from __future__ import annotations

import optax

SCHEDULES = ("linear", "cosine", "constant")


def make_schedule(
    name: str, peak: float, *, total_steps: int, warmup_steps: int = 0
) -> optax.Schedule:
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then ``name``'s decay.

    ``linear`` and ``cosine`` reach 0 at ``total_steps``; ``constant`` stays at ``peak``.
    """
    if name not in SCHEDULES:
        raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {name!r}.")
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    decay_steps = max(total_steps - warmup_steps, 1)
    decay = {
        "linear": optax.linear_schedule(peak, 0.0, decay_steps),
        "cosine": optax.cosine_decay_schedule(peak, decay_steps),
        "constant": optax.constant_schedule(peak),
    }[name]
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, max(warmup_steps, 1)), decay], boundaries=[warmup_steps]
    )
