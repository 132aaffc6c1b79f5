"""One place that turns an optimizer spec into an ``optax.GradientTransformation``.

:func:`build` = global-norm clipping, then the registered optimizer ``spec.kind`` under
the spec's learning-rate schedule, told each parameter's label
(:mod:`jaxir.optim.labels`): which arrays decay, which a low-rank projection may touch.
A new optimizer is one :func:`register_optimizer` call with a factory
``(spec, schedule, labels) -> GradientTransformation``; nothing in training changes.

Only trainable parameters (``nnx.Param``) reach the optimizer: frozen weights and
buffers (:mod:`jaxir.layers.variables`) get no state.

Example:
    >>> from flax import nnx
    >>> from jaxir.models.bert import PRESETS, Model
    >>> model = Model(PRESETS["tiny"].replace(mlm_head=False), rngs=nnx.Rngs(0))
    >>> params = nnx.state(model, nnx.Param)
    >>> opt = build(OptimizerSpec(learning_rate=1e-2, total_steps=10), params)
    >>> updates, state = opt.update(params, opt.init(params), params)
    >>> {"adamw", "sgd", "galore", "fira", "apollo"} <= set(OPTIMIZERS)
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import optax
from flax import nnx

from jaxir.optim.labels import mask_for, param_labels
from jaxir.optim.schedules import make_schedule

#: Labels whose parameters get decoupled weight decay (BERT recipe: not biases or norms).
DECAY_LABELS = ("matrix", "embedding", "head")


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """What to optimize with; ``options`` are ``(name, value)`` pairs for ``kind``'s factory.

    Attributes:
      kind: a name in :data:`OPTIMIZERS`.
      learning_rate: peak learning rate.
      total_steps: steps of the run (``linear`` / ``cosine`` reach 0 there).
      warmup_steps: linear warmup length.
      schedule: ``"linear"``, ``"cosine"`` or ``"constant"`` after warmup.
      weight_decay: decoupled weight decay on :data:`DECAY_LABELS`.
      grad_clip: max global gradient norm (0 or ``None``: no clipping).
    """

    kind: str = "adamw"
    learning_rate: float = 5e-4
    total_steps: int = 1000
    warmup_steps: int = 0
    schedule: str = "linear"
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, name: str, default: Any = None) -> Any:
        """The value of option ``name`` (``default`` when unset)."""
        return dict(self.options).get(name, default)


Factory = Callable[[OptimizerSpec, optax.Schedule, nnx.State], optax.GradientTransformation]

#: ``kind`` -> factory ``(spec, schedule, labels) -> GradientTransformation`` (no clipping:
#: :func:`build` adds it).
OPTIMIZERS: dict[str, Factory] = {}


def register_optimizer(kind: str, factory: Factory) -> None:
    """Makes ``optim.kind=<kind>`` build ``factory(spec, schedule, labels)``.

    Registering the same factory twice is a no-op; another factory under a taken kind is
    an error (a plug-in must not silently replace ``adamw``).
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"optimizer kind must be a non-empty string, got {kind!r}")
    if OPTIMIZERS.get(kind, factory) is not factory:
        raise ValueError(
            f"optimizer kind {kind!r} is already registered to "
            f"{getattr(OPTIMIZERS[kind], '__qualname__', OPTIMIZERS[kind])}"
        )
    OPTIMIZERS[kind] = factory


def _adamw(spec: OptimizerSpec, schedule: optax.Schedule, labels: nnx.State):
    return optax.adamw(
        schedule,
        b1=spec.b1,
        b2=spec.b2,
        eps=spec.eps,
        weight_decay=spec.weight_decay,
        mask=mask_for(labels, DECAY_LABELS),
    )


def _sgd(spec: OptimizerSpec, schedule: optax.Schedule, labels: nnx.State):
    return optax.chain(
        optax.add_decayed_weights(spec.weight_decay, mask=mask_for(labels, DECAY_LABELS)),
        optax.sgd(schedule, momentum=spec.option("momentum", 0.9)),
    )


register_optimizer("adamw", _adamw)
register_optimizer("sgd", _sgd)


def build(spec: OptimizerSpec, params: nnx.State) -> optax.GradientTransformation:
    """Clipping + ``spec.kind`` under ``spec``'s schedule, with labels from ``params``.

    Args:
      spec: the optimizer spec.
      params: the trainable parameters (arrays or abstract ``ShapeDtypeStruct`` leaves);
        only paths, shapes and logical axes are read, to compute labels.

    Raises:
      ValueError: an unknown ``kind`` (naming the registered ones) or schedule.
    """
    if spec.kind not in OPTIMIZERS:
        raise ValueError(
            f"optim.kind={spec.kind!r} is not a registered optimizer; choose one of "
            f"{sorted(OPTIMIZERS)} (or register one with jaxir.optim.register_optimizer)."
        )
    schedule = make_schedule(
        spec.schedule,
        spec.learning_rate,
        total_steps=spec.total_steps,
        warmup_steps=spec.warmup_steps,
    )
    core = OPTIMIZERS[spec.kind](spec, schedule, param_labels(params))
    return optax.chain(optax.clip_by_global_norm(spec.grad_clip), core) if spec.grad_clip else core
