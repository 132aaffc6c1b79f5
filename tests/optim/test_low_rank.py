"""GaLore, Fira and APOLLO beyond the optimizer contracts (tests/contracts/test_optimizers.py).

Equality with ``optax.contrib.galore`` with every extension off, state sizes, staggered
and randomized refreshes, moment transport, Fira's limiter, APOLLO-Mini's SGD-like state,
config errors, the train step (accumulation / GradCache: one projection per optimizer
step) and one ``jaxir.train`` run with ``optim.kind=galore``.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxir import optim, sharding
from jaxir.config import load_config, override
from jaxir.layers.linear import Dense
from jaxir.models.bert import PRESETS, Model
from jaxir.optim import galore as galore_lib
from jaxir.optim.galore import GaLoreState, state_bytes
from jaxir.training import loop
from jaxir.training import state as train_state
from jaxir.training import step as train_step
from tests.training.test_step import OBJECTIVES, make_batch, make_model

ROOT = pathlib.Path(__file__).parents[2]


def tiny_bert_params() -> nnx.State:
    return nnx.state(Model(PRESETS["tiny"].replace(pooler=True), rngs=nnx.Rngs(0)), nnx.Param)


def random_grads(params, seed: int, scale: float = 0.05):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    )


def flat(tree) -> dict[str, np.ndarray]:
    return {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(tree)}


def rel_l2(a, b) -> float:
    num = sum(float(jnp.sum((x - y) ** 2)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    return (num / sum(float(jnp.sum(y**2)) for y in jax.tree.leaves(b))) ** 0.5


def spec(kind: str, **options) -> optim.OptimizerSpec:
    return optim.OptimizerSpec(
        kind=kind, total_steps=20, grad_clip=None, options=tuple(sorted(options.items()))
    )


class Matrix(nnx.Module):
    """One ``[m, n]`` kernel labelled ``matrix`` (and its bias)."""

    def __init__(self, m: int, n: int, rngs: nnx.Rngs):
        self.proj = Dense(m, n, ("embed", "mlp"), dtype=jnp.float32, rngs=rngs)


def matrix_params(m: int, n: int) -> nnx.State:
    return nnx.state(nnx.eval_shape(lambda: Matrix(m, n, nnx.Rngs(0))), nnx.Param)


# --- equality with optax.contrib.galore -------------------------------------------------


def test_galore_with_every_extension_off_equals_optax_contrib_galore():
    params = tiny_bert_params()
    labels = optim.param_labels(params)
    decay = optim.mask_for(labels, optim.DECAY_LABELS)
    dims = galore_lib.dimension_numbers_from_labels(labels)
    kwargs = dict(rank=4, scale=0.25, weight_decay=0.1, mask=decay)
    reference = optax.contrib.galore(
        1e-2,
        update_proj_gap=2,
        base_optimizer=optax.scale_by_adam(eps=1e-6),
        weight_dimension_numbers=dims,
        **kwargs,
    )
    ours = galore_lib.galore(
        1e-2,
        update_gap=2,
        stagger=False,
        svd="full",
        moments="keep",
        eps=1e-6,
        dimension_numbers=dims,
        **kwargs,
    )
    a, b = ours.init(params), reference.init(params)
    step_a, step_b = jax.jit(ours.update), jax.jit(reference.update)
    projected = 0
    for t in range(5):  # crosses refreshes at steps 0, 2, 4
        g = random_grads(params, seed=t)
        ua, a = step_a(g, a, params)
        ub, b = step_b(g, b, params)
        for x, y in zip(jax.tree.leaves(ua), jax.tree.leaves(ub)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=0)
        projected = sum(p.ndim == 2 for p in jax.tree.leaves(a[0].projector))
    # Only the attention / MLP kernels are projected, as labelled.
    matrices = sum(label == "matrix" for _, label in optim.label_items(labels))
    assert projected == matrices == 12


# --- state size ------------------------------------------------------------------------------


@pytest.mark.parametrize("m, n", [(256, 64), (64, 256)], ids=["tall", "wide"])
@pytest.mark.parametrize("kind", ["galore", "fira", "apollo"])
def test_state_of_a_projected_matrix_is_order_rank_times_max_dim(kind, m, n):
    rank = 8
    params = matrix_params(m, n)
    opt = optim.build(spec(kind, rank=rank), params)
    state = jax.eval_shape(opt.init, params)  # abstract: no allocation
    bias_adam = 2 * n * 4  # the bias gets full Adam (mu, nu)
    matrix_bytes = state_bytes(state) - bias_adam
    # GaLore: P [max, r] + mu, nu [r, min]; APOLLO: mu, nu [max, r]; + a few scalars.
    assert matrix_bytes <= 3 * rank * max(m, n) * 4 + 64, matrix_bytes
    adam = state_bytes(jax.eval_shape(optim.build(spec("adamw"), params).init, params))
    assert matrix_bytes < 0.2 * (adam - bias_adam)


def test_apollo_mini_state_is_sgd_sized():
    """Rank 1, tensor-wise: two ``[max(m, n)]`` vectors and a scalar per kernel."""

    class Stack(nnx.Module):
        def __init__(self, rngs):
            self.a = Dense(128, 256, ("embed", "mlp"), dtype=jnp.float32, rngs=rngs)
            self.b = Dense(256, 128, ("mlp", "embed"), dtype=jnp.float32, rngs=rngs)

    params = nnx.state(nnx.eval_shape(lambda: Stack(nnx.Rngs(0))), nnx.Param)
    sizes = {
        kind: state_bytes(jax.eval_shape(optim.build(spec(kind), params).init, params))
        for kind in ("apollo_mini", "sgd", "adamw")
    }
    biases = 2 * (256 + 128) * 4  # full Adam on the biases
    kernels = sizes["apollo_mini"] - biases
    assert kernels <= 2 * (2 * 256 * 4) + 64, sizes  # [256, 1] mu and nu per kernel
    assert sizes["apollo_mini"] < 0.05 * sizes["sgd"] < 0.05 * sizes["adamw"], sizes


# --- refreshes ---------------------------------------------------------------------------------


def projector_refresh_steps(stagger: bool, steps: int = 13, gap: int = 12):
    """``{path: [steps at which its projector changed]}`` over ``steps`` GaLore updates."""
    params = tiny_bert_params()
    opt = optim.build(spec("galore", rank=2, update_gap=gap, stagger=stagger), params)
    state = opt.init(params)
    update = jax.jit(opt.update)
    changes: dict[str, list[int]] = {}
    before = flat(state[0].projector)
    for t in range(steps):
        _, state = update(random_grads(params, seed=t), state, params)
        after = flat(state[0].projector)
        for path, p in after.items():
            if p.ndim == 2 and not np.array_equal(p, before[path]):
                changes.setdefault(path, []).append(t)
        before = after
    return changes


def test_staggered_refresh_puts_each_layers_svd_on_a_different_step():
    staggered = projector_refresh_steps(stagger=True)
    layer0 = staggered["layers/0/attention/query/kernel"]
    layer1 = staggered["layers/1/attention/query/kernel"]
    assert layer0[0] == layer1[0] == 0  # every projector is built at the first step
    assert layer0[1:] != layer1[1:] and layer0[1:] and layer1[1:], (layer0, layer1)
    # 12 kernels over a gap of 12: after step 0, at most one SVD per step.
    per_step = [sum(t in s for s in staggered.values()) for t in range(1, 13)]
    assert max(per_step) == 1, per_step
    together = projector_refresh_steps(stagger=False)
    assert {tuple(s) for s in together.values()} == {(0, 12)}


def test_randomized_svd_finds_the_top_subspace_of_a_low_rank_dominated_gradient():
    key_u, key_v, key_n = jax.random.split(jax.random.key(0), 3)
    u = jnp.linalg.qr(jax.random.normal(key_u, (96, 4)))[0]
    v = jnp.linalg.qr(jax.random.normal(key_v, (48, 4)))[0]
    g = (u * jnp.array([10.0, 8.0, 6.0, 4.0])) @ v.T + 0.01 * jax.random.normal(key_n, (96, 48))
    p = galore_lib.randomized_range(g, 4, jax.random.key(1))
    assert p.shape == (96, 4)
    np.testing.assert_allclose(np.asarray(p.T @ p), np.eye(4), atol=1e-5)
    # The subspace is the full SVD's top 4 (cosines of the principal angles ~ 1) and
    # close to the planted one (noise tilts both by ~ |noise| / sigma_4).
    top = jnp.linalg.svd(g, full_matrices=False)[0][:, :4]
    np.testing.assert_allclose(np.linalg.svd(np.asarray(p.T @ top))[1], 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.svd(np.asarray(p.T @ u))[1], 1.0, atol=1e-3)

    params = {"w": jnp.zeros((96, 48))}
    dims = {"w": optax.contrib.GaLoreDimensionNumbers(0, 1)}
    updates = {}
    for svd in ("full", "randomized"):
        opt = galore_lib.scale_by_galore(4, 10, 1.0, dimension_numbers=dims, svd=svd)
        updates[svd], _ = jax.jit(opt.update)({"w": g}, opt.init(params))
    assert rel_l2(updates["randomized"], updates["full"]) < 1e-3


def test_moment_transport_is_exact_for_a_signed_permutation_of_the_basis():
    """``project``: P_new mu_new == P_old mu_old when the new basis is the old one permuted
    with sign flips (what an SVD of the same subspace may return); ``nu`` is permuted."""
    (plan,) = galore_lib.make_plans(
        [jnp.zeros((32, 16))],
        [optax.contrib.GaLoreDimensionNumbers(0, 1)],
        rank=3,
        update_gap=10,
        stagger=False,
    )
    p_old = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (32, 3)))[0]
    q = jnp.array([[0.0, -1, 0], [1, 0, 0], [0, 0, -1]])
    p_new = p_old @ q
    mu = jax.random.normal(jax.random.key(1), (3, 16))
    nu = jnp.abs(jax.random.normal(jax.random.key(2), (3, 16)))
    t = p_new.T @ p_old
    mu_new = galore_lib.transport(plan, t, mu, squared=False)
    nu_new = galore_lib.transport(plan, t, nu, squared=True)
    np.testing.assert_allclose(np.asarray(p_new @ mu_new), np.asarray(p_old @ mu), atol=1e-5)
    np.testing.assert_allclose(np.asarray(nu_new), np.asarray((q.T**2) @ nu), atol=1e-6)
    assert bool(jnp.all(nu_new >= 0))


# --- Fira ------------------------------------------------------------------------------------


def test_fira_limiter_bounds_the_growth_of_the_residual_norm():
    """A gradient whose out-of-subspace part grows 10x per step: the scaled residual's norm
    grows at most 1.01x per step (Adam's bias correction divided out)."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    u = jnp.linalg.qr(jax.random.normal(key_a, (32, 32)))[0]
    v = jnp.linalg.qr(jax.random.normal(key_b, (16, 16)))[0]
    inside = (u[:, :2] * jnp.array([5.0, 4.0])) @ v[:, :2].T  # the rank-2 subspace
    outside = (u[:, 2:6] * 0.01) @ v[:, 2:6].T  # orthogonal to it
    params = {"w": jnp.zeros((32, 16))}
    dims = {"w": optax.contrib.GaLoreDimensionNumbers(0, 1)}
    opt = galore_lib.scale_by_low_rank_adam(
        rank=2,
        update_gap=1000,
        scale=1.0,
        dimension_numbers=dims,
        stagger=False,
        svd="full",
        moments="project",
        seed=0,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        fira=True,
    )
    state = opt.init(params)
    update = jax.jit(opt.update)
    norms, residuals = [], []
    for t in range(6):
        g = {"w": inside + 10.0**t * outside}
        u_t, state = update(g, state)
        norms.append(float(state.residual_norm["w"]))
        p = state.projector["w"]
        residuals.append(float(jnp.linalg.norm(u_t["w"] - p @ (p.T @ u_t["w"]))))
    assert norms[0] > 0
    ratios = np.array(norms[1:]) / np.array(norms[:-1])
    assert np.all(ratios <= 1.01 * (1 + 1e-5)), ratios
    # The update's out-of-subspace part is that residual (times the bias correction).
    corrections = [float(galore_lib.bias_correction(jnp.int32(t), 0.9, 0.999)) for t in range(6)]
    np.testing.assert_allclose(residuals, np.array(norms) * corrections, rtol=1e-4)


def test_fira_adds_the_residual_galore_drops():
    params = {"w": jnp.zeros((32, 16))}
    dims = {"w": optax.contrib.GaLoreDimensionNumbers(0, 1)}
    g = {"w": jax.random.normal(jax.random.key(3), (32, 16))}
    kwargs = dict(dimension_numbers=dims, stagger=False)
    g_up, g_state = galore_lib.scale_by_galore(2, 10, 1.0, **kwargs).update(
        g, galore_lib.scale_by_galore(2, 10, 1.0, **kwargs).init(params)
    )
    fira = optim.fira.scale_by_fira(2, 10, 1.0, **kwargs)
    f_up, _ = fira.update(g, fira.init(params))
    p = g_state.projector["w"]
    np.testing.assert_allclose(p @ (p.T @ f_up["w"]), g_up["w"], atol=1e-5)  # same in-subspace
    outside = f_up["w"] - p @ (p.T @ f_up["w"])
    assert float(jnp.linalg.norm(outside)) > 0.1 * float(jnp.linalg.norm(f_up["w"]))


# --- configuration -------------------------------------------------------------------------------


def test_config_selects_the_kind_and_passes_the_options():
    config = override(
        load_config(ROOT / "configs" / "dense_tiny.py"),
        ["optim.kind=galore", "optim.rank=16", "optim.svd=randomized", "optim.stagger=false"],
    )
    s = loop.optimizer_spec(config)
    assert s.kind == "galore"
    assert (s.option("rank"), s.option("svd"), s.option("stagger")) == (16, "randomized", False)
    assert s.option("update_gap") == 200 and s.option("scale") is None


@pytest.mark.parametrize("kind", ["galore", "fira", "apollo"])
def test_rank_larger_than_every_projected_matrix_names_the_key(kind):
    params = matrix_params(16, 8)
    opt = optim.build(spec(kind, rank=9), params)
    with pytest.raises(ValueError, match=r"optim\.rank=9 is larger than a dimension"):
        jax.eval_shape(opt.init, params)
    jax.eval_shape(optim.build(spec(kind, rank=8), params).init, params)  # fits


@pytest.mark.parametrize(
    "options, key",
    [(dict(svd="lanczos"), "optim.svd"), (dict(moments="reset"), "optim.moments")],
)
@pytest.mark.parametrize("kind", ["galore", "fira"])
def test_unknown_choice_names_the_key(kind, options, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        optim.build(spec(kind, **options), matrix_params(16, 8))


def test_non_positive_rank_or_gap_names_the_key():
    for kind in ("galore", "apollo"):
        with pytest.raises(ValueError, match=r"optim\.rank must be a positive integer"):
            optim.build(spec(kind, rank=0), matrix_params(16, 8))
        with pytest.raises(ValueError, match=r"optim\.update_gap must be a positive integer"):
            optim.build(spec(kind, update_gap=0), matrix_params(16, 8))


# --- the train step: one projection per optimizer step -------------------------------------------


@pytest.mark.parametrize("strategy", ["grad_accum", "gradcache"])
def test_train_step_projects_the_accumulated_gradient_once(strategy):
    """With accumulation or GradCache the sharded step applies the optimizer once, to the
    strategy's full-batch gradient: GaLore's count is 1 after one step and the update is
    ``opt.update`` of that gradient.

    The tolerance is not the bitwise one: the step fuses the gradient with the update, so
    its f32 gradient differs from the separately jitted one in the last bits, which the
    SVD of a gradient without a spectral gap amplifies. (Bit-level accumulation
    equivalence is the MultiSteps contract in tests/contracts/test_optimizers.py.)
    """
    mesh = sharding.make_mesh(data=4, fsdp=2)
    objective = OBJECTIVES["contrastive"]
    opt = optim.build(spec("galore", rank=4, update_gap=1), train_state.abstract_params(make_model))
    batch = sharding.shard_batch(make_batch(), mesh)
    kwargs = dict(grad_accum=2) if strategy == "grad_accum" else dict(gradcache_chunk=2)
    graphdef, state, shardings = train_state.create_state(make_model, opt, mesh, seed=0)
    grad_fn = train_step.make_grad_fn(objective, graphdef, **kwargs)
    step = train_step.make_train_step(
        grad_fn, opt, state_shardings=shardings, mesh=mesh, example_batch=batch
    )
    key = jax.random.fold_in(
        jax.random.wrap_key_data(state.key, impl=train_state.PRNG_IMPL), state.step
    )
    stepped = train_step.with_step(batch, state.step)

    @jax.jit
    def reference(params, frozen, opt_state):
        _, grads = grad_fn(params, frozen, stepped, key)
        return opt.update(grads, opt_state, params)[0]

    want = reference(state.params, state.frozen, state.opt_state)
    start = jax.tree.map(np.asarray, state.params)  # the step donates the state
    new, _ = step(state, batch)
    got = jax.tree.map(lambda a, b: np.asarray(a) - b, new.params, start)
    galore_state = new.opt_state[0]
    assert isinstance(galore_state, GaLoreState)
    assert int(galore_state.count) == 1  # the optimizer (and its projection) ran once
    assert rel_l2(got, want) <= 5e-4  # applying it twice, or per micro-batch, is O(1)


# --- end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_jaxir_train_with_galore(tmp_path):
    config = override(
        load_config(ROOT / "configs" / "dense_tiny.py", "4"),
        ["optim.kind=galore", "optim.rank=8", "optim.update_gap=2", "optim.svd=randomized"],
    )
    result = loop.train(config, tmp_path, progress=False)
    losses = loop.losses_by_step(result.workdir)
    assert sorted(losses) == [1, 2, 3, 4] and all(np.isfinite(list(losses.values())))
    assert (result.model_dir / "query" / "model.safetensors").exists()
