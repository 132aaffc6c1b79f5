"""The train step: one pure jitted function with shardings and donation, for any objective.

The step differentiates ``objective.loss(model, batch, rngs) -> (loss, aux)``
(:class:`~jaxir.training.family.Objective`) with respect to the trainable parameters
only (``nnx.Param``); frozen weights and buffers ride along in the state untouched.
Three ways to get the gradient over a global batch:

* plain: one forward/backward over the whole batch;
* ``grad_accum = k``: ``k`` micro-batches, each its own loss (for a contrastive loss:
  its own in-batch negatives), gradients and aux averaged (memory / k);
* ``gradcache_chunk = c`` (GradCache, Gao et al. 2021), for objectives that factor
  through per-example representations (:class:`~jaxir.training.family.RepresentationLoss`):
  representations of the whole batch are computed ``c`` rows at a time without
  activations, the loss and its gradient w.r.t. the representations are computed on the
  *full* batch, then each chunk is re-encoded and back-propagated with its slice of that
  gradient. Same gradient as the plain path (tested) with activation memory of one chunk.

Dropout keys are ``fold_in(base_key, step)`` (and the chunk index), so a step is a pure
function of the state and the batch: a resumed run is bit-identical.

Example:
    >>> import jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> from jaxir import sharding
    >>> from jaxir.training.state import create_state
    >>> class Scale(nnx.Module):
    ...     def __init__(self):
    ...         self.w = nnx.Param(jnp.ones(()))
    >>> class Fit:
    ...     def loss(self, model, batch, rngs):
    ...         err = (model.w[...] * batch["x"] - batch["y"]) ** 2
    ...         return err.mean(), {"max_err": err.max()}
    >>> mesh = sharding.make_mesh(data=-1)
    >>> opt = optax.sgd(0.1)
    >>> graphdef, state, shardings = create_state(Scale, opt, mesh, seed=0)
    >>> batch = {"x": jnp.ones(8), "y": jnp.full(8, 3.0)}
    >>> step = make_train_step(make_grad_fn(Fit(), graphdef), opt, state_shardings=shardings,
    ...                        mesh=mesh, example_batch=batch)
    >>> state, metrics = step(state, batch)
    >>> sorted(metrics), float(metrics["loss"])
    (['grad_norm', 'loss', 'max_err'], 4.0)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxir import sharding, xla
from jaxir.training.family import Aux, Batch, Objective, RepresentationLoss
from jaxir.training.state import PRNG_IMPL, TrainState

#: ``(params, frozen, batch, key) -> ((loss, aux), grads)``
GradFn = Callable[[Any, Any, Batch, jax.Array], tuple[tuple[jax.Array, Aux], Any]]


def _loss(objective: Objective, graphdef, params, frozen, batch: Batch, key: jax.Array):
    model = nnx.merge(graphdef, params, frozen)
    return objective.loss(model, batch, nnx.Rngs(dropout=key))


def _chunks(tree: Any, n: int) -> Any:
    """Leading axis ``[R, ...]`` -> ``[n, R / n, ...]`` on every leaf."""
    return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), tree)


def _unchunk(tree: Any) -> Any:
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), tree)


def _rows(batch: Batch) -> int:
    return jax.tree.leaves(batch)[0].shape[0]


def gradcache_grads(
    objective: RepresentationLoss, graphdef, params, frozen, batch: Batch, key, *, chunk: int
):
    """``((loss, aux), grads)`` on the full batch, encoding ``chunk`` rows at a time."""
    size = _rows(batch)
    if size % chunk:
        raise ValueError(f"train.gradcache_chunk={chunk} must divide the batch size {size}.")
    n = size // chunk
    chunks, keys = _chunks(batch, n), jax.random.split(key, n)

    def represent(prm, chunk_batch, chunk_key):
        model = nnx.merge(graphdef, prm, frozen)
        return objective.represent(model, chunk_batch, nnx.Rngs(dropout=chunk_key))

    reps_n = jax.lax.map(lambda a: represent(jax.lax.stop_gradient(params), *a), (chunks, keys))
    reps = _unchunk(reps_n)

    def loss_from_reps(prm, all_reps):
        return objective.loss_from_reps(nnx.merge(graphdef, prm, frozen), all_reps, batch)

    (loss, aux), (grads, g_reps) = jax.value_and_grad(loss_from_reps, argnums=(0, 1), has_aux=True)(
        params, reps
    )

    def add_chunk(acc, args):
        chunk_batch, chunk_key, g_chunk = args
        _, vjp = jax.vjp(lambda prm: represent(prm, chunk_batch, chunk_key), params)
        (g,) = vjp(g_chunk)
        return jax.tree.map(jnp.add, acc, g), None

    grads, _ = jax.lax.scan(add_chunk, grads, (chunks, keys, _chunks(g_reps, n)))
    return (loss, aux), grads


def accumulated_grads(objective: Objective, graphdef, params, frozen, batch: Batch, key, *, steps):
    """Mean ``((loss, aux), grads)`` over ``steps`` micro-batches."""
    size = _rows(batch)
    if size % steps:
        raise ValueError(f"train.grad_accum={steps} must divide the batch size {size}.")
    grad_fn = jax.value_and_grad(functools.partial(_loss, objective, graphdef), has_aux=True)

    def add(acc, args):
        micro, micro_key = args
        out = grad_fn(params, frozen, micro, micro_key)
        return jax.tree.map(jnp.add, acc, out), None

    first = jax.eval_shape(
        grad_fn, params, frozen, jax.tree.map(lambda x: x[: size // steps], batch), key
    )
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first)
    total, _ = jax.lax.scan(add, zeros, (_chunks(batch, steps), jax.random.split(key, steps)))
    return jax.tree.map(lambda x: x / steps, total)


def make_grad_fn(
    objective: Objective, graphdef: nnx.GraphDef, *, grad_accum: int = 1, gradcache_chunk: int = 0
) -> GradFn:
    """``(params, frozen, batch, key) -> ((loss, aux), grads)`` for the chosen strategy.

    Raises:
      ValueError: both strategies at once, or GradCache for an objective that is not a
        :class:`~jaxir.training.family.RepresentationLoss`.
    """
    if gradcache_chunk and grad_accum > 1:
        raise ValueError("Use either train.gradcache_chunk or train.grad_accum, not both.")
    if gradcache_chunk:
        if not isinstance(objective, RepresentationLoss):
            raise ValueError(
                f"train.gradcache_chunk needs an objective with represent() and loss_from_reps(); "
                f"{type(objective).__name__} has not: use train.grad_accum instead."
            )
        return functools.partial(gradcache_grads, objective, graphdef, chunk=gradcache_chunk)
    if grad_accum > 1:
        return functools.partial(accumulated_grads, objective, graphdef, steps=grad_accum)
    return jax.value_and_grad(functools.partial(_loss, objective, graphdef), has_aux=True)


def with_step(batch: Batch, step: jax.Array) -> Batch:
    """``batch`` plus ``"step"``: the optimizer step as int32 ``[B]`` (one copy per row).

    Objectives whose loss depends on the schedule (SPLADE's regularizer warm-up) read it;
    it is per row so that GradCache and accumulation cut it into chunks like any other
    batch array.
    """
    if "step" in batch:
        raise ValueError('A training batch must not hold a "step" array; the train step adds it.')
    rows = _rows(batch)
    return {**batch, "step": jnp.full((rows,), step, jnp.int32)}


def batch_shardings(mesh: Mesh, batch: Batch) -> Batch:
    """Batch arrays split on their leading axis over ``data`` x ``fsdp``."""
    return jax.tree.map(lambda x: sharding.batch_sharding(mesh, jnp.ndim(x)), batch)


def make_train_step(
    grad_fn: GradFn,
    optimizer: optax.GradientTransformation,
    *,
    state_shardings: TrainState,
    mesh: Mesh,
    example_batch: Batch,
    gemm_dtype: str = "float32",
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Jitted ``(state, batch) -> (state, metrics)``; the input state is donated.

    Compiles once (fixed batch shapes). ``gemm_dtype`` is the model's compute dtype
    (it selects the CPU compiler options, :func:`jaxir.xla.jit`). The objective sees the
    batch with ``"step"`` added (:func:`with_step`). Metrics: ``loss``, ``grad_norm`` and
    the objective's aux metrics (their names must not clash).
    """

    def step(state: TrainState, batch: Batch):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key, impl=PRNG_IMPL), state.step)
        batch = with_step(batch, state.step)
        (loss, aux), grads = grad_fn(state.params, state.frozen, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(params, state.frozen, opt_state, state.step + 1, state.key)
        return new_state, {**aux, "loss": loss, "grad_norm": optax.global_norm(grads)}

    replicated = NamedSharding(mesh, PartitionSpec())
    return xla.jit(
        step,
        gemm_dtype=gemm_dtype,
        in_shardings=(state_shardings, batch_shardings(mesh, example_batch)),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
