"""The retriever-family protocol the training loop runs, and the registry of families.

A family (dense dual encoder, SPLADE, generative, ...) is a small object that knows its
model, batches, loss, validation and export; the loop (:mod:`jaxir.training.loop`) only
orchestrates. Adding a family = one module + one :func:`register_family` call; nothing in
``training/`` or the CLI changes.

The loss contract is ``loss(model, batch, rngs) -> (loss [], aux)`` with ``aux`` a dict of
scalar ``jax.Array`` metrics (logged next to the loss). In training the batch also holds
``"step"`` (int32 ``[B]``, the optimizer step; :func:`jaxir.training.step.with_step`) for
losses that follow a schedule. A family may define ``check_metrics(step, metrics)``: the
loop calls it after every step with the step's metrics as floats, and a
:class:`TrainingGuardError` it raises stops training (e.g. SPLADE representations that
collapse to zero). A family whose loss is a
function of per-example representations also implements :class:`RepresentationLoss`
(``represent`` + ``loss_from_reps``), which makes GradCache available to it.

Example (the registry; ``"dense"`` is built in):
    >>> "dense" in FAMILIES
    True
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import jax
from flax import nnx

from jaxir.reps.kinds import resolve

Batch = dict[str, jax.Array]
Aux = dict[str, jax.Array]


class TrainingGuardError(RuntimeError):
    """A family's ``check_metrics`` found training degenerate; the message names the step and the fix."""


@runtime_checkable
class Objective(Protocol):
    """What a train step minimizes: ``loss(model, batch, rngs) -> (loss, aux)``."""

    def loss(self, model: nnx.Module, batch: Batch, rngs: nnx.Rngs) -> tuple[jax.Array, Aux]:
        """Scalar float32 loss and a dict of scalar metrics, on one (micro-)batch."""
        ...


@runtime_checkable
class RepresentationLoss(Objective, Protocol):
    """An objective that factors through per-example representations (GradCache-able).

    ``represent`` maps a batch to a pytree whose leaves have the batch's rows on their
    leading axis (in order, so a batch cut into ``n`` equal chunks gives representations
    cut into ``n`` equal chunks); ``loss_from_reps`` sees the whole batch's
    representations at once. ``loss`` must equal ``loss_from_reps(represent(...))``.
    """

    def represent(self, model: nnx.Module, batch: Batch, rngs: nnx.Rngs) -> Any:
        """Per-example representations of ``batch`` (leading axes proportional to its rows)."""
        ...

    def loss_from_reps(self, model: nnx.Module, reps: Any, batch: Batch) -> tuple[jax.Array, Aux]:
        """The loss of the whole batch from its representations."""
        ...


class TrainingBatches(Protocol):
    """Training examples that yield fixed-shape batches from a checkpointable iterator."""

    def batches(self, *, batch_size: int, group_size: int, seed: int) -> Iterator[Batch]:
        """A grain iterator (``get_state`` / ``set_state``) of numpy batches."""
        ...


@runtime_checkable
class Family(Objective, Protocol):
    """A retriever family as the training loop sees it.

    The loop calls, in order: :meth:`init_model` (under ``nnx.eval_shape`` for shapes,
    then jitted with shardings), :meth:`pretrained` (weights to start from), the
    objective's :meth:`loss` in every step, :meth:`validate` on :meth:`validation_set`
    every ``eval_every`` steps, and :meth:`save` at the end.
    """

    def init_model(self, *, vocab_size: int, rngs: nnx.Rngs) -> nnx.Module:
        """A randomly initialised model (trainable arrays are ``nnx.Param``)."""
        ...

    def pretrained(self, model: nnx.Module) -> tuple[nnx.State, str] | None:
        """``(state, source)``: the whole model's state (``nnx.state(model)``'s structure)
        from the weights the run starts from, or ``None`` to start from ``init_model``."""
        ...

    def training_data(self, groups: Sequence[Any], tokenizer: Any) -> TrainingBatches:
        """Training examples built from training groups."""
        ...

    def validation_set(
        self,
        queries: Mapping[str, str],
        rows: Sequence[tuple[str, str]],
        qrels: Mapping[str, Mapping[str, int]],
        tokenizer: Any,
    ) -> Any:
        """A dev set from query texts, ``(doc_id, text)`` rows and qrels."""
        ...

    def validate(self, model: nnx.Module, dev: Any, *, progress: bool = False) -> dict[str, float]:
        """Dev metrics; the loop keeps the best checkpoint by ``nDCG@10``; ``progress``: a bar."""
        ...

    def save(self, model: nnx.Module, directory: pathlib.Path, tokenizer: Any) -> None:
        """Writes the trained model for encoding / export."""
        ...


#: Family name -> ``"module:factory"`` (imported lazily) or a factory; a factory takes the
#: run config and returns a :class:`Family` (the config stops there: DESIGN principle 1).
FAMILIES: dict[str, str | Callable[[Any], Family]] = {
    "dense": "jaxir.families.dense:DenseFamily.from_config",
    "splade": "jaxir.families.splade:SpladeFamily.from_config",
}


def register_family(name: str, factory: Callable[[Any], Family]) -> None:
    """Makes ``family=<name>`` in a run config train with ``factory(config)``."""
    FAMILIES[name] = factory


def make_family(name: str, config: Any) -> Family:
    """The :class:`Family` registered as ``name``, built from the run ``config``."""
    if name not in FAMILIES:
        raise ValueError(
            f"family={name!r} is not a registered retriever family; choose one of "
            f"{sorted(FAMILIES)} (or register one with jaxir.training.family.register_family)."
        )
    factory = FAMILIES[name]
    return (resolve(factory) if isinstance(factory, str) else factory)(config)
