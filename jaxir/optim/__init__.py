"""Optimizers: an optax transformation built from an :class:`OptimizerSpec` and parameter labels."""

from jaxir.optim.build import (
    DECAY_LABELS,
    OPTIMIZERS,
    OptimizerSpec,
    build,
    register_optimizer,
)
from jaxir.optim.labels import LABELS, label_items, mask_for, param_labels
from jaxir.optim.schedules import SCHEDULES, make_schedule

# Low-rank optimizers: importing registers "galore", "fira", "apollo", "apollo_mini".
from jaxir.optim import apollo, fira, galore  # noqa: F401  (isort: skip)

__all__ = [
    "DECAY_LABELS",
    "LABELS",
    "OPTIMIZERS",
    "SCHEDULES",
    "OptimizerSpec",
    "build",
    "label_items",
    "make_schedule",
    "mask_for",
    "param_labels",
    "register_optimizer",
]
