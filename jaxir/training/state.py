"""Train state built abstractly, sharded from logical axes, then materialized in place.

``TrainState`` holds everything a step needs and everything a resumed run must restore:
params, optimizer state, step and the base PRNG key (DESIGN principles 2 and 7).

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
    """``params`` (NNX state), ``opt_state`` (optax), ``step`` (int32 []), ``key`` (uint32 raw key data of :data:`PRNG_IMPL`)."""

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


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
      ``NamedSharding`` for ``jax.jit`` in/out shardings.
    """

    def init() -> TrainState:
        _, params = nnx.split(make_model())
        return TrainState(
            params=params,
            opt_state=optimizer.init(params),
            step=jnp.zeros((), jnp.int32),
            key=jax.random.key_data(jax.random.key(seed, impl=PRNG_IMPL)),
        )

    graphdef, _ = nnx.split(nnx.eval_shape(make_model))
    abstract = jax.eval_shape(init)
    shardings = sharding.param_shardings(abstract, mesh)
    state = jax.jit(init, out_shardings=shardings)()
    return graphdef, state, shardings
