"""The dual-encoder train step: one pure jitted function with shardings and donation.

Three ways to get the gradient of the in-batch softmax over a global batch of ``B``
queries (each with ``G`` passages):

* plain: one forward/backward over the whole batch;
* ``grad_accum = k``: ``k`` micro-batches, each with its own in-batch negatives
  (memory / k, but fewer negatives per query);
* ``gradcache_chunk = c`` (GradCache, Gao et al. 2021): representations of all ``B``
  queries and ``B*G`` passages are computed chunk by chunk without activations, the loss
  and its gradient w.r.t. the representations are computed on the *full* batch, then each
  chunk is re-encoded and back-propagated with its slice of that gradient. Same gradient
  as the plain path (tested to 1e-5) with activation memory of one chunk.

The loss is the in-batch softmax, plus (:class:`Objective`) a weighted distillation
term fitting the batch's ``teacher_scores`` over each query's own group (KL or
Margin-MSE, :mod:`jaxir.losses.distill`) when the training groups carry teacher scores.

Dropout keys are ``fold_in(base_key, step)`` (and the chunk index), so a step is a pure
function of the state and the batch: a resumed run is bit-identical.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxir import sharding, xla
from jaxir.losses.contrastive import in_batch_softmax
from jaxir.losses.distill import kl_distill, margin_mse
from jaxir.training.state import PRNG_IMPL, TrainState

Batch = dict[str, jax.Array]


def _flat_passages(batch: Batch) -> tuple[jax.Array, jax.Array]:
    ids = batch["passage_ids"]
    return ids.reshape(-1, ids.shape[-1]), batch["passage_mask"].reshape(-1, ids.shape[-1])


def _representations(graphdef, params, batch: Batch, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    model = nnx.merge(graphdef, params)
    rngs = nnx.Rngs(dropout=key)
    q_bd = model.encode_queries(batch["query_ids"], batch["query_mask"], rngs=rngs)
    p_nd = model.encode_passages(*_flat_passages(batch), rngs=rngs)
    return q_bd, p_nd


@dataclasses.dataclass(frozen=True)
class Objective:
    """What a step minimizes: ``in_batch_softmax + distill_weight * distillation``.

    Attributes:
      symmetric: add the passage-to-query direction to the in-batch softmax.
      distill: ``"none"``, ``"kl"`` (KL from the teacher's softmax over each query's
        group, at ``distill_temperature``) or ``"margin_mse"`` (positive minus each
        negative, teacher vs student). The student's scores are the model's logits
        (similarity times its scale, the same logits the softmax sees); the batch must
        hold ``teacher_scores`` ``[B, G]`` (NaN marks passages without one).
      distill_weight: weight of the distillation term.
      distill_temperature: divides student and teacher scores in the KL.
    """

    symmetric: bool = False
    distill: str = "none"
    distill_weight: float = 1.0
    distill_temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.distill not in ("none", "kl", "margin_mse"):
            raise ValueError(
                f"train.distill must be 'none', 'kl' or 'margin_mse', got {self.distill!r}."
            )


def _distillation(objective: Objective, q_bd, p_nd, teacher_bg: jax.Array) -> jax.Array:
    """The distillation term on each query's own group (``[B, G]`` student logits)."""
    p_bgd = p_nd.reshape(*teacher_bg.shape, -1)
    student_bg = jnp.einsum("bd,bgd->bg", q_bd, p_bgd, preferred_element_type=jnp.float32)
    known_bg = jnp.isfinite(teacher_bg)
    teacher_bg = jnp.where(known_bg, teacher_bg, 0.0)
    if objective.distill == "kl":
        return kl_distill(
            student_bg, teacher_bg, temperature=objective.distill_temperature, where=known_bg
        )
    return margin_mse(
        student_bg[:, 0],
        student_bg[:, 1:],
        teacher_bg[:, 0],
        teacher_bg[:, 1:],
        where=known_bg[:, 1:] & known_bg[:, :1],
    )


def _loss_on_representations(graphdef, params, q_bd, p_nd, batch: Batch, *, objective: Objective):
    scale = nnx.merge(graphdef, params).scale()
    loss = in_batch_softmax(
        q_bd * scale,
        p_nd,
        temperature=1.0,
        group_size=batch["passage_ids"].shape[1],
        positive_ids=batch["passage_key"].reshape(-1),
        query_ids=batch["query_key"],
        symmetric=objective.symmetric,
    )
    if objective.distill == "none":
        return loss
    if "teacher_scores" not in batch:
        raise ValueError(
            f"train.distill={objective.distill!r} needs teacher scores in the batch; build the "
            "training data with TrainingData.build(..., teacher_scores=True)."
        )
    distill = _distillation(objective, q_bd * scale, p_nd, batch["teacher_scores"])
    return loss + objective.distill_weight * distill


def objective_loss(
    graphdef, params, batch: Batch, key: jax.Array, *, objective: Objective = Objective()
):
    """The :class:`Objective` of the dual encoder ``merge(graphdef, params)`` on ``batch``."""
    q_bd, p_nd = _representations(graphdef, params, batch, key)
    return _loss_on_representations(graphdef, params, q_bd, p_nd, batch, objective=objective)


def _chunks(batch: Batch, n: int) -> Batch:
    return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)


def gradcache_grads(
    graphdef, params, batch: Batch, key: jax.Array, *, chunk: int, objective: Objective
):
    """``(loss, grads)`` of :func:`objective_loss` on the full batch, encoding ``chunk`` queries at a time."""
    size = batch["query_ids"].shape[0]
    if size % chunk:
        raise ValueError(f"gradcache_chunk {chunk} must divide the batch size {size}.")
    n = size // chunk
    chunks = _chunks(batch, n)
    keys = jax.random.split(key, n)
    encode = functools.partial(_representations, graphdef)

    q_ncd, p_nmd = jax.lax.map(lambda a: encode(jax.lax.stop_gradient(params), *a), (chunks, keys))
    q_bd = q_ncd.reshape(size, -1)
    p_nd = p_nmd.reshape(-1, p_nmd.shape[-1])
    loss_fn = functools.partial(_loss_on_representations, graphdef, objective=objective)
    loss, (grads, g_q, g_p) = jax.value_and_grad(loss_fn, argnums=(0, 1, 2))(
        params, q_bd, p_nd, batch
    )

    def add_chunk(acc, args):
        chunk_batch, chunk_key, gq, gp = args
        _, vjp = jax.vjp(lambda prm: encode(prm, chunk_batch, chunk_key), params)
        (g,) = vjp((gq, gp))
        return jax.tree.map(jnp.add, acc, g), None

    cotangents = (g_q.reshape(q_ncd.shape), g_p.reshape(p_nmd.shape))
    grads, _ = jax.lax.scan(add_chunk, grads, (chunks, keys, *cotangents))
    return loss, grads


def accumulated_grads(
    graphdef, params, batch: Batch, key: jax.Array, *, steps: int, objective: Objective
):
    """Mean ``(loss, grads)`` over ``steps`` micro-batches (each its own in-batch negatives)."""
    grad_fn = jax.value_and_grad(functools.partial(objective_loss, graphdef, objective=objective))

    def add(acc, args):
        micro, micro_key = args
        loss, grads = grad_fn(params, micro, micro_key)
        return jax.tree.map(jnp.add, acc, (loss, grads)), None

    zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    (loss, grads), _ = jax.lax.scan(
        add, zeros, (_chunks(batch, steps), jax.random.split(key, steps))
    )
    return jax.tree.map(lambda x: x / steps, (loss, grads))


def make_grad_fn(
    graphdef,
    *,
    grad_accum: int = 1,
    gradcache_chunk: int = 0,
    objective: Objective = Objective(),
) -> Callable[[Any, Batch, jax.Array], tuple[jax.Array, Any]]:
    """``(params, batch, key) -> (loss, grads)`` of ``objective`` for the chosen gradient strategy."""
    if gradcache_chunk and grad_accum > 1:
        raise ValueError("Use either gradcache_chunk or grad_accum, not both.")
    if gradcache_chunk:
        return functools.partial(
            gradcache_grads, graphdef, chunk=gradcache_chunk, objective=objective
        )
    if grad_accum > 1:
        return functools.partial(accumulated_grads, graphdef, steps=grad_accum, objective=objective)
    return jax.value_and_grad(functools.partial(objective_loss, graphdef, objective=objective))


def batch_shardings(mesh: Mesh, batch: Batch) -> Batch:
    """Batch arrays split on their leading axis over ``data`` x ``fsdp``."""
    return jax.tree.map(lambda x: sharding.batch_sharding(mesh, jnp.ndim(x)), batch)


def make_train_step(
    grad_fn: Callable,
    optimizer: optax.GradientTransformation,
    *,
    state_shardings: TrainState,
    mesh: Mesh,
    example_batch: Batch,
    gemm_dtype: str = "float32",
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Jitted ``(state, batch) -> (state, metrics)``; the input state is donated.

    Compiles once (fixed batch shapes). ``gemm_dtype`` is the model's compute dtype
    (it selects the CPU compiler options, :func:`jaxir.xla.jit`). Metrics: ``loss``,
    ``grad_norm``.
    """

    def step(state: TrainState, batch: Batch):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key, impl=PRNG_IMPL), state.step)
        loss, grads = grad_fn(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(params, opt_state, state.step + 1, state.key)
        return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}

    replicated = NamedSharding(mesh, PartitionSpec())
    return xla.jit(
        step,
        gemm_dtype=gemm_dtype,
        in_shardings=(state_shardings, batch_shardings(mesh, example_batch)),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
