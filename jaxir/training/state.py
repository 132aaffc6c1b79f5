"""Train state built abstractly, sharded from logical axes, then materialized in place.

``TrainState`` holds everything a step needs and everything a resumed run must restore:
trainable params, frozen state, optimizer state, step and the base PRNG key (DESIGN
principles 2 and 7). The model is split with ``nnx.split(model, nnx.Param, ...)``:
``params`` are the ``nnx.Param`` variables (differentiated, with optimizer state);
``frozen`` is everything else (:class:`~jaxir.layers.variables.Frozen` weights,
:class:`~jaxir.layers.variables.Buffer` indices), checkpointed, never differentiated,
and the optimizer never sees it.

Example:
    >>> import optax
    >>> from flax import nnx
    >>> from jaxir import sharding
    >>> from jaxir.models.bert import PRESETS, Model
    >>> mesh = sharding.make_mesh(data=-1)
    >>> make = lambda: Model(PRESETS["tiny"].replace(mlm_head=False), rngs=nnx.Rngs(0))
    >>> graphdef, state, shardings = create_state(make, optax.sgd(0.1), mesh, seed=0)
    >>> int(state.step)
    0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from jaxir import sharding

#: PRNG for dropout: ``unsafe_rbg`` (as MaxText / T5X use) generates random bits from the
#: hardware RNG primitive instead of threefry hashing; it cut gradient time 12.5% for
#: MiniLM on CPU (benchmarks/train_RESULTS.md). Keys still derive from (seed, step).
PRNG_IMPL = "unsafe_rbg"


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    """``params`` (trainable NNX state), ``frozen`` (the rest of the model's state),
    ``opt_state`` (optax, over ``params`` only), ``step`` (int32 []), ``key`` (uint32 raw
    key data of :data:`PRNG_IMPL`)."""

    params: Any
    frozen: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


def abstract_params(make_model: Callable[[], nnx.Module]) -> nnx.State:
    """The trainable parameters of ``make_model()`` as ``ShapeDtypeStruct`` leaves (no memory).

    What :func:`jaxir.optim.build` reads labels from before the state exists.
    """
    return nnx.state(nnx.eval_shape(make_model), nnx.Param)


def with_weights(
    state: TrainState,
    shardings: TrainState,
    weights: nnx.State,
    optimizer: optax.GradientTransformation,
) -> TrainState:
    """``state`` with the model's variables replaced by ``weights`` (``nnx.state(model)``'s structure).

    The weights are placed on the devices ``shardings`` says and the optimizer state is
    re-initialized for them; step and key are kept.
    """
    params, frozen = nnx.split_state(weights, nnx.Param, ...)
    params = jax.device_put(params, shardings.params)
    frozen = jax.device_put(frozen, shardings.frozen)
    opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
    return TrainState(params, frozen, opt_state, state.step, state.key)


def state_init(
    make_model: Callable[[], nnx.Module], optimizer: optax.GradientTransformation, *, seed: int
) -> Callable[[], TrainState]:
    """The function that builds a fresh :class:`TrainState` (model, optimizer state, step 0,
    RNG key from ``seed``): jitted with ``out_shardings`` by :func:`create_state`, traced
    by ``jax.eval_shape`` for abstract state (:mod:`jaxir.training.aot`)."""

    def init() -> TrainState:
        _, params, frozen = nnx.split(make_model(), nnx.Param, ...)
        return TrainState(
            params=params,
            frozen=frozen,
            opt_state=optimizer.init(params),
            step=jnp.zeros((), jnp.int32),
            key=jax.random.key_data(jax.random.key(seed, impl=PRNG_IMPL)),
        )

    return init


def create_state(
    make_model: Callable[[], nnx.Module],
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    seed: int,
) -> tuple[nnx.GraphDef, TrainState, TrainState]:
    """Builds the train state directly in its sharded layout.

    ``make_model`` runs once under ``nnx.eval_shape`` (no memory) to read shapes and
    logical axes; then one jitted init with ``out_shardings`` creates each shard on its
    own device, so a model larger than one device's memory never exists unsharded.

    Returns:
      ``(graphdef, state, shardings)``, ``shardings`` being a :class:`TrainState` of
      ``NamedSharding`` for ``jax.jit`` in/out shardings. ``nnx.merge(graphdef,
      state.params, state.frozen)`` is the model.
    """

    init = state_init(make_model, optimizer, seed=seed)
    graphdef, _, _ = nnx.split(nnx.eval_shape(make_model), nnx.Param, ...)
    abstract = jax.eval_shape(init)
    shardings = sharding.param_shardings(abstract, mesh)
    state = jax.jit(init, out_shardings=shardings)()
    return graphdef, state, shardings
