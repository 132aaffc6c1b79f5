"""Optimizers: optax transformations built from explicit arguments."""

from jaxir.optim.adamw import adamw, decay_mask, warmup_linear_decay

__all__ = ["adamw", "decay_mask", "warmup_linear_decay"]
