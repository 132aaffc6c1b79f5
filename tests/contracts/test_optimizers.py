"""Optimizer contracts, in the style of optax's ``contrib/_common_test.py``.

Every optimizer registered in :data:`jaxir.optim.OPTIMIZERS` is built through
:func:`jaxir.optim.build` and must: converge on a small problem, run under ``jax.jit``
(same result as eager), keep parameter/update dtypes (float32 and bfloat16), keep its
state's shardings across updates on the 8-device mesh, resume bit-for-bit from an
Orbax checkpoint, accumulate micro-gradients like one mean-gradient step
(``optax.MultiSteps``), and decay exactly the :data:`~jaxir.optim.DECAY_LABELS`.

Labels, the decay mask, the unknown-kind error and the schedules are tested below the
contracts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from jaxir import optim, sharding
from jaxir.layers.linear import Dense
from jaxir.models.bert import PRESETS, Model
from jaxir.optim import DECAY_LABELS, OPTIMIZERS, OptimizerSpec

KINDS = sorted(OPTIMIZERS)

#: Per-kind spec overrides for the convergence problem (a new optimizer adds a line
#: here only if the defaults below do not suit it).
CONVERGENCE_SPECS: dict[str, dict] = {
    "adamw": dict(learning_rate=0.1),
    "sgd": dict(learning_rate=0.1),
    # Rank 2 of a [6, 3] kernel: the subspace must move often to reach the optimum.
    "galore": dict(learning_rate=0.1, options=dict(update_gap=5, scale=1.0)),
    "fira": dict(learning_rate=0.1, options=dict(update_gap=5)),
    "apollo": dict(learning_rate=0.1),
    # Tensor-wise scaling is SGD with one adaptive step size: a larger rate, steadier
    # projections (each redraw restarts its moments' coordinates).
    "apollo_mini": dict(learning_rate=0.2, options=dict(update_gap=20)),
}

#: Options every contract runs a kind with: the low-rank kinds at a rank the test problems
#: have (least squares: a [6, 3] kernel) and a short refresh gap, so two updates cross a
#: projector refresh (staggered: some matrices refresh at step 1).
KIND_OPTIONS: dict[str, dict] = {
    "galore": dict(rank=2, update_gap=2),
    "fira": dict(rank=2, update_gap=2),
    "apollo": dict(rank=2, update_gap=2),
    "apollo_mini": dict(update_gap=2),
}


#: jit vs eager tolerance: an SVD (GaLore, Fira) under jit differs from the eager one in
#: the last f32 bits, which its singular vectors amplify by 1 / (singular-value gap).
JIT_TOLERANCE: dict[str, dict] = {
    "galore": dict(rtol=1e-2, atol=1e-5),
    "fira": dict(rtol=1e-2, atol=1e-5),
}


def spec_for(kind: str, options: dict | None = None, **changes) -> OptimizerSpec:
    merged = {**KIND_OPTIONS.get(kind, {}), **(options or {})}
    return OptimizerSpec(kind=kind, options=tuple(sorted(merged.items())), **changes)


def tiny_bert(**changes) -> Model:
    return Model(PRESETS["tiny"].replace(pooler=True, **changes), rngs=nnx.Rngs(0))


def bert_params(seed: int = 0, **changes) -> nnx.State:
    """Trainable params of a tiny BERT (pooler + MLM head), every leaf random.

    Init values (zero biases, unit LayerNorm scales) would hide a wrong decay mask.
    """
    params = nnx.state(tiny_bert(**changes), nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)


def random_like(tree, seed: int, scale: float = 1.0):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef,
        [
            scale * jax.random.normal(k, x.shape, jnp.float32).astype(x.dtype)
            for x, k in zip(leaves, keys)
        ],
    )


def flat(tree) -> dict[str, np.ndarray]:
    """``{"a/b/c": array}`` of an nnx.State (paths as in the labels)."""
    return {
        "/".join(map(str, path)): np.asarray(var.get_value())
        for path, var in nnx.to_flat_state(tree)
    }


def rel_l2(a, b) -> float:
    num = sum(
        float(jnp.sum((x - y).astype(jnp.float32) ** 2))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )
    den = sum(float(jnp.sum(y.astype(jnp.float32) ** 2)) for y in jax.tree.leaves(b))
    return (num / den) ** 0.5


def make_step(opt: optax.GradientTransformation):
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


# --- a small problem: least squares through a Dense layer --------------------------------


class LeastSquares(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.proj = Dense(6, 3, ("embed", "mlp"), dtype=jnp.float32, rngs=rngs)


def least_squares():
    """``(params, loss_fn, (kernel*, bias*))``: ``min |X W + b - Y|^2`` with a known optimum."""
    kx, kw, kb = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(kx, (64, 6))
    w_star = jax.random.normal(kw, (6, 3))
    b_star = jax.random.normal(kb, (3,))
    y = x @ w_star + b_star

    def loss_fn(params):
        pred = x @ params["proj"]["kernel"][...] + params["proj"]["bias"][...]
        return jnp.mean(jnp.sum((pred - y) ** 2, axis=-1))

    return nnx.state(LeastSquares(nnx.Rngs(0)), nnx.Param), loss_fn, (w_star, b_star)


# --- contracts over every registered optimizer ---------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_converges_on_least_squares(kind):
    params, loss_fn, (w_star, b_star) = least_squares()
    steps = 400
    spec = spec_for(
        kind,
        total_steps=steps,
        schedule="cosine",
        weight_decay=0.0,
        **CONVERGENCE_SPECS.get(kind, dict(learning_rate=0.05)),
    )
    opt = optim.build(spec, params)

    @jax.jit
    def run(params):
        def body(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            return make_step(opt)(params, state, grads), loss

        (params, _), losses = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
        return params, losses

    final, losses = run(params)
    assert float(loss_fn(final)) < 1e-4 * float(losses[0]), (
        kind,
        float(losses[0]),
        float(loss_fn(final)),
    )
    np.testing.assert_allclose(np.asarray(final["proj"]["kernel"][...]), w_star, atol=3e-2)
    np.testing.assert_allclose(np.asarray(final["proj"]["bias"][...]), b_star, atol=3e-2)


@pytest.mark.parametrize("kind", KINDS)
def test_jit_matches_eager(kind):
    params = bert_params(num_layers=1)  # eager dispatch is op by op: keep the tree small
    opt = optim.build(spec_for(kind, total_steps=10, warmup_steps=2), params)
    grads = random_like(params, seed=3, scale=0.05)
    step = make_step(opt)
    eager_p, eager_s = step(params, opt.init(params), grads)
    eager_p, eager_s = step(eager_p, eager_s, grads)
    jit_step = jax.jit(step)
    jit_p, jit_s = jit_step(params, jax.jit(opt.init)(params), grads)
    jit_p, jit_s = jit_step(jit_p, jit_s, grads)
    assert jax.tree.structure(jit_s) == jax.tree.structure(eager_s)
    for got, want in zip(jax.tree.leaves((jit_p, jit_s)), jax.tree.leaves((eager_p, eager_s))):
        np.testing.assert_allclose(
            np.asarray(got), np.asarray(want), **JIT_TOLERANCE.get(kind, dict(rtol=1e-5, atol=1e-7))
        )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("kind", KINDS)
def test_dtype_of_params_and_updates_is_preserved(kind, dtype):
    params = jax.tree.map(lambda x: x.astype(dtype), bert_params())
    opt = optim.build(spec_for(kind, total_steps=10), params)
    grads = random_like(params, seed=4, scale=0.05)

    @jax.jit
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return updates, optax.apply_updates(params, updates), state

    state = opt.init(params)
    for _ in range(2):
        updates, new_params, state = step(params, state, grads)
        for u, p, q in zip(
            jax.tree.leaves(updates), jax.tree.leaves(params), jax.tree.leaves(new_params)
        ):
            assert u.dtype == dtype and p.dtype == dtype and q.dtype == dtype, (u.dtype, q.dtype)
        assert any(np.any(np.asarray(u) != 0) for u in jax.tree.leaves(updates))
        params = new_params


@pytest.mark.parametrize("kind", KINDS)
def test_state_shardings_are_stable_across_updates(kind):
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    params = nnx.state(tiny_bert(), nnx.Param)
    opt = optim.build(spec_for(kind, total_steps=10), params)
    p_sh = sharding.param_shardings(params, mesh)
    s_sh = sharding.param_shardings(jax.eval_shape(opt.init, params), mesh)
    params = jax.device_put(params, p_sh)
    state = jax.jit(opt.init, out_shardings=s_sh)(params)
    grads = jax.device_put(random_like(params, seed=5, scale=0.05), p_sh)
    initial = [x.sharding for x in jax.tree.leaves(state)]
    assert sum(not s.is_fully_replicated for s in initial) > 0, "nothing is sharded: vacuous test"

    # The state's out sharding is left to XLA: it must come back as it went in.
    step = jax.jit(make_step(opt), in_shardings=(p_sh, s_sh, p_sh), out_shardings=(p_sh, None))
    for _ in range(2):
        params, state = step(params, state, grads)
    leaves = jax.tree.leaves(state)
    assert len(leaves) == len(initial)
    for before, leaf in zip(initial, leaves):
        assert leaf.sharding.is_equivalent_to(before, leaf.ndim), (
            leaf.shape,
            before,
            leaf.sharding,
        )
    # Per-parameter state (moments, traces) is sharded like its parameter; a low-rank
    # state leaf ([m, r] projector, [r, n] moment) like its parameter along the side it
    # keeps, and along the rank over fsdp when that side leaves fsdp unused.
    param_leaves = dict(flat_shardings(params))
    per_param = [
        t
        for t in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.State))
        if isinstance(t, nnx.State)
    ]
    assert per_param, "no per-parameter state found"
    for tree in per_param:
        leaves = dict(flat_shardings(tree))
        assert leaves.keys() == param_leaves.keys()
        for path, (leaf, sh) in leaves.items():
            p, p_sh = param_leaves[path]
            if leaf.shape == p.shape:
                assert sh.is_equivalent_to(p_sh, p.ndim), (path, leaf.shape, p_sh)
            elif leaf.ndim == 2 and p.ndim == 2:
                assert_low_rank_sharding(
                    path, leaf.shape, sh.spec, p.shape, p_sh.spec, fsdp=mesh.shape["fsdp"]
                )


def flat_shardings(tree):
    """``{path: (array, sharding)}`` of an nnx.State of arrays."""
    return [
        ("/".join(map(str, path)), (var.get_value(), var.get_value().sharding))
        for path, var in nnx.to_flat_state(tree)
    ]


def assert_low_rank_sharding(path, shape, spec, p_shape, p_spec, *, fsdp):
    """A ``[k, r]`` / ``[r, k]`` state leaf of a ``[m, n]`` kernel (``r`` the smaller side):
    its ``k`` side is sharded as the kernel's side of that size; its rank side over
    ``fsdp`` exactly when the ``k`` side does not use it (and ``r`` divides by it).

    ``[r, k]`` keeps the kernel's ``n`` (GaLore's ``P^T G``, APOLLO's ``P G``); ``[k, r]``
    keeps ``m`` when ``k == m`` (a square kernel projects its ``m`` side), else ``n``.
    """
    spec = tuple(spec) + (None,) * (2 - len(spec))
    p_spec = tuple(p_spec) + (None,) * (2 - len(p_spec))
    if 0 in shape:  # no projector for this leaf
        return
    rank_side = 0 if shape[0] < shape[1] else 1
    side = 1 - rank_side
    source = 1 if rank_side == 0 else (0 if p_shape[0] == shape[side] else 1)
    assert shape[side] == p_shape[source], (path, shape, p_shape)
    assert spec[side] == p_spec[source], (path, shape, spec, p_shape, p_spec)
    kept = spec[side] if isinstance(spec[side], tuple) else (spec[side],)
    free = "fsdp" not in kept and shape[rank_side] % fsdp == 0
    assert spec[rank_side] == ("fsdp" if free else None), (path, shape, spec)


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_round_trip_gives_the_identical_next_update(kind, tmp_path):
    params = bert_params()
    opt = optim.build(spec_for(kind, total_steps=10, warmup_steps=1), params)
    step = jax.jit(make_step(opt))
    grads = [random_like(params, seed=s, scale=0.05) for s in (6, 7)]
    params, state = step(params, opt.init(params), grads[0])  # non-trivial state (count, moments)
    tree = {"params": params, "opt_state": state}

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", tree)
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(
        tmp_path / "ckpt", jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    )
    checkpointer.close()

    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    want = step(params, state, grads[1])
    got = step(restored["params"], restored["opt_state"], grads[1])
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def with_spectral_gap(g, noise):
    """A 2-d gradient plus a rank-2 part well above the rest of its spectrum (1-d: unchanged).

    Real gradients are low-rank dominated (GaLore's premise). Without a gap the top-r
    subspace is ill-defined: the last-bit difference between an accumulated and a direct
    mean would move a GaLore projector by ``eps / gap``, and the test would measure that.
    """
    if g.ndim != 2:
        return g
    u, _, vt = jnp.linalg.svd(noise.astype(jnp.float32), full_matrices=False)
    top = float(jnp.linalg.norm(g.astype(jnp.float32), ord=2))
    spike = 4 * top * jnp.outer(u[:, 0], vt[0]) + 2 * top * jnp.outer(u[:, 1], vt[1])
    return (g + spike).astype(g.dtype)


def micro_gradients(params, k: int, seed: int = 10):
    """``k`` gradients that differ by up to +-50% per element but whose mean stays away from 0.

    Adam's ``g / (|g| + eps)`` amplifies rounding where a mean cancels to ~eps; this
    keeps the comparison about accumulation, not cancellation. Their global norm is
    below the clipping threshold, so clipping does not hide a sum-instead-of-mean.
    """
    base = random_like(params, seed)
    base = jax.tree.map(lambda b: 1e-3 * jnp.sign(b) * (0.1 + jnp.abs(b)), base)
    base = jax.tree.map(with_spectral_gap, base, random_like(params, seed + 100))
    return [
        jax.tree.map(
            lambda b, u: b * (1 + 0.5 * jnp.clip(u, -1, 1)), base, random_like(params, seed + 1 + i)
        )
        for i in range(k)
    ]


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("kind", KINDS)
def test_multisteps_accumulation_equals_one_mean_gradient_step(kind, k):
    params = bert_params()
    spec = spec_for(kind, total_steps=10)
    opt = optim.build(spec, params)
    micro = micro_gradients(params, k)
    mean = jax.tree.map(lambda *g: sum(g) / len(g), *micro)
    assert float(optax.global_norm(mean)) < spec.grad_clip

    want, _ = jax.jit(opt.update)(mean, opt.init(params), params)

    accumulated = optax.MultiSteps(opt, every_k_schedule=k)
    update = jax.jit(accumulated.update)
    state = accumulated.init(params)
    for i, g in enumerate(micro):
        got, state = update(g, state, params)
        if i < k - 1:  # no step until the k-th micro-gradient
            assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(got))
    assert rel_l2(got, want) <= 1e-6


# --- labels and the weight-decay mask --------------------------------------------------------


def expected_label(path: str) -> str:
    parts = path.split("/")
    if parts[-1] == "embedding":
        return "embedding"
    if "norm" in parts[-2] or parts[-2] == "norm":
        return "norm"
    if parts[-1] == "bias":
        return "bias"
    if parts[0] in ("pooler", "mlm"):
        return "head"
    return "matrix"


def test_param_labels_of_a_tiny_bert_with_pooler_and_mlm_head():
    labels = dict(
        ("/".join(map(str, p)), label)
        for p, label in optim.label_items(optim.param_labels(nnx.state(tiny_bert(), nnx.Param)))
    )
    for i in range(PRESETS["tiny"].num_layers):
        for name in (
            "attention/query",
            "attention/key",
            "attention/value",
            "attention/output",
            "mlp/up",
            "mlp/down",
        ):
            assert labels[f"layers/{i}/{name}/kernel"] == "matrix"
            assert labels[f"layers/{i}/{name}/bias"] == "bias"
        for norm in ("attention_norm", "mlp_norm"):
            assert labels[f"layers/{i}/{norm}/scale"] == "norm"
            assert labels[f"layers/{i}/{norm}/bias"] == "norm"
    assert labels["embeddings/word/embedding"] == "embedding"
    assert labels["embeddings/position/embedding"] == "embedding"
    assert labels["embeddings/token_type/embedding"] == "embedding"
    assert labels["embeddings/norm/scale"] == labels["embeddings/norm/bias"] == "norm"
    assert labels["pooler/kernel"] == "head"
    assert labels["mlm/transform/kernel"] == "head"
    assert labels["pooler/bias"] == labels["mlm/transform/bias"] == labels["mlm/bias"] == "bias"
    assert labels["mlm/norm/scale"] == "norm"
    # Nothing unlabelled, nothing outside the vocabulary; rules cover every leaf.
    assert set(labels.values()) <= set(optim.LABELS)
    assert labels == {path: expected_label(path) for path in labels}


def test_labels_of_abstract_params_equal_concrete_ones():
    concrete = optim.param_labels(nnx.state(tiny_bert(), nnx.Param))
    abstract = optim.param_labels(nnx.state(nnx.eval_shape(tiny_bert), nnx.Param))
    assert list(optim.label_items(abstract)) == list(optim.label_items(concrete))


class WithTemperature(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.proj = Dense(4, 4, ("embed", "mlp"), dtype=jnp.float32, rngs=rngs)
        self.temperature = nnx.Param(jnp.ones(()))


def test_a_scalar_parameter_is_labelled_scalar_and_not_decayed():
    params = nnx.state(WithTemperature(nnx.Rngs(0)), nnx.Param)
    labels = dict(
        ("/".join(map(str, p)), v) for p, v in optim.label_items(optim.param_labels(params))
    )
    assert labels == {"proj/kernel": "matrix", "proj/bias": "bias", "temperature": "scalar"}
    opt = optim.build(
        spec_for("adamw", schedule="constant", learning_rate=0.1, weight_decay=0.5), params
    )
    new, _ = make_step(opt)(params, opt.init(params), jax.tree.map(jnp.zeros_like, params))
    assert float(new["temperature"][...]) == 1.0


def test_mask_for_selects_labels_and_rejects_unknown_ones():
    labels = optim.param_labels(nnx.state(tiny_bert(), nnx.Param))
    mask = flat(optim.mask_for(labels, ("bias", "norm")))
    label_of = dict(("/".join(map(str, p)), v) for p, v in optim.label_items(labels))
    assert mask == {p: np.asarray(label_of[p] in ("bias", "norm")) for p in mask}
    with pytest.raises(ValueError, match="biases"):
        optim.mask_for(labels, ("biases",))


@pytest.mark.parametrize("kind", KINDS)
def test_weight_decay_moves_only_decay_labels(kind):
    """Zero gradients: the only update left is decoupled decay, and only on DECAY_LABELS."""
    params = bert_params()
    lr, wd = 0.1, 0.5
    spec = spec_for(kind, learning_rate=lr, schedule="constant", weight_decay=wd, total_steps=10)
    opt = optim.build(spec, params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    new, _ = jax.jit(make_step(opt))(params, opt.init(params), zeros)
    labels = dict(
        ("/".join(map(str, p)), v) for p, v in optim.label_items(optim.param_labels(params))
    )
    before, after = flat(params), flat(new)
    decayed = set()
    for path, label in labels.items():
        if label in DECAY_LABELS:
            decayed.add(label)
            np.testing.assert_allclose(
                after[path], before[path] * (1 - lr * wd), rtol=1e-6, err_msg=path
            )
        else:
            assert after[path].tobytes() == before[path].tobytes(), (path, label)
    assert decayed == set(DECAY_LABELS)
    assert {"norm", "bias"} <= set(labels.values())


def test_zero_weight_decay_moves_nothing_on_zero_gradients():
    params = bert_params()
    opt = optim.build(spec_for("adamw", schedule="constant", weight_decay=0.0), params)
    new, _ = make_step(opt)(params, opt.init(params), jax.tree.map(jnp.zeros_like, params))
    assert flat(new).keys() == flat(params).keys()
    for path, value in flat(new).items():
        assert value.tobytes() == flat(params)[path].tobytes(), path


def test_unknown_kind_names_the_registered_ones():
    params = nnx.state(LeastSquares(nnx.Rngs(0)), nnx.Param)
    with pytest.raises(ValueError, match=r"optim\.kind='nope'") as err:
        optim.build(OptimizerSpec(kind="nope"), params)
    for kind in OPTIMIZERS:
        assert repr(kind) in str(err.value)
    assert "register_optimizer" in str(err.value)


def test_registered_optimizer_is_built_with_spec_schedule_and_labels():
    seen = {}

    def factory(spec, schedule, labels):
        seen.update(spec=spec, lr=float(schedule(spec.total_steps)), labels=labels)
        return optax.sgd(schedule)

    optim.register_optimizer("test-sgd", factory)
    try:
        params = nnx.state(LeastSquares(nnx.Rngs(0)), nnx.Param)
        spec = OptimizerSpec(
            kind="test-sgd", schedule="constant", learning_rate=0.3, grad_clip=None
        )
        opt = optim.build(spec, params)
        assert seen["spec"] is spec and seen["lr"] == pytest.approx(0.3)
        assert dict(("/".join(map(str, p)), v) for p, v in optim.label_items(seen["labels"])) == {
            "proj/kernel": "matrix",
            "proj/bias": "bias",
        }
        grads = jax.tree.map(jnp.ones_like, params)
        updates, _ = opt.update(grads, opt.init(params), params)
        for u in jax.tree.leaves(updates):
            np.testing.assert_allclose(np.asarray(u), -0.3)
    finally:
        del OPTIMIZERS["test-sgd"]


def test_register_optimizer_refuses_to_replace_a_registered_kind():
    builtin = OPTIMIZERS["adamw"]
    optim.register_optimizer("adamw", builtin)  # the same factory again: no-op
    with pytest.raises(ValueError, match="'adamw' is already registered"):
        optim.register_optimizer("adamw", lambda spec, schedule, labels: optax.sgd(schedule))
    assert OPTIMIZERS["adamw"] is builtin
    with pytest.raises(ValueError, match="non-empty"):
        optim.register_optimizer("", builtin)


def test_gradient_clipping_bounds_the_global_norm():
    params = nnx.state(LeastSquares(nnx.Rngs(0)), nnx.Param)
    spec = OptimizerSpec(
        kind="sgd",
        schedule="constant",
        learning_rate=1.0,
        weight_decay=0.0,
        grad_clip=0.5,
        options=(("momentum", 0.0),),
    )
    opt = optim.build(spec, params)
    grads = jax.tree.map(lambda x: 10 * jnp.ones_like(x), params)
    updates, _ = opt.update(grads, opt.init(params), params)
    assert float(optax.global_norm(updates)) == pytest.approx(0.5, rel=1e-5)
    unclipped = optim.build(
        OptimizerSpec(
            kind="sgd",
            schedule="constant",
            learning_rate=1.0,
            weight_decay=0.0,
            grad_clip=None,
            options=(("momentum", 0.0),),
        ),
        params,
    )
    updates, _ = unclipped.update(grads, unclipped.init(params), params)
    assert float(optax.global_norm(updates)) == pytest.approx(
        float(optax.global_norm(grads)), rel=1e-5
    )


# --- schedules ----------------------------------------------------------------------------------


def values(schedule, steps):
    return [float(schedule(s)) for s in steps]


def test_linear_schedule_warms_up_then_decays_to_zero():
    s = optim.make_schedule("linear", 1e-3, total_steps=10, warmup_steps=2)
    np.testing.assert_allclose(
        values(s, [0, 1, 2, 6, 10, 12]), [0, 5e-4, 1e-3, 5e-4, 0, 0], atol=1e-9
    )


def test_cosine_schedule_is_half_way_at_mid_decay():
    s = optim.make_schedule("cosine", 2.0, total_steps=12, warmup_steps=2)
    np.testing.assert_allclose(values(s, [0, 1, 2, 7, 12]), [0, 1.0, 2.0, 1.0, 0], atol=1e-6)


def test_constant_schedule_stays_at_peak_after_warmup():
    s = optim.make_schedule("constant", 0.5, total_steps=10, warmup_steps=4)
    np.testing.assert_allclose(values(s, [0, 2, 4, 9, 100]), [0, 0.25, 0.5, 0.5, 0.5], atol=1e-7)


@pytest.mark.parametrize("name", optim.SCHEDULES)
def test_no_warmup_starts_at_peak(name):
    s = optim.make_schedule(name, 0.1, total_steps=5, warmup_steps=0)
    assert float(s(0)) == pytest.approx(0.1)


def test_warmup_longer_than_the_run_still_reaches_peak():
    s = optim.make_schedule("linear", 1.0, total_steps=3, warmup_steps=10)
    assert max(values(s, range(4))) == pytest.approx(1.0)


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ValueError, match="optim.schedule") as err:
        optim.make_schedule("exp", 1.0, total_steps=10)
    for name in optim.SCHEDULES:
        assert name in str(err.value)
    params = nnx.state(LeastSquares(nnx.Rngs(0)), nnx.Param)
    with pytest.raises(ValueError, match="optim.schedule"):
        optim.build(OptimizerSpec(schedule="exp"), params)


def test_build_follows_the_schedule():
    """Plain SGD on unit gradients: update at step t is ``-lr(t)``."""
    params = nnx.state(LeastSquares(nnx.Rngs(0)), nnx.Param)
    spec = OptimizerSpec(
        kind="sgd",
        learning_rate=0.2,
        total_steps=6,
        warmup_steps=2,
        weight_decay=0.0,
        grad_clip=None,
        options=(("momentum", 0.0),),
    )
    opt = optim.build(spec, params)
    schedule = optim.make_schedule("linear", 0.2, total_steps=6, warmup_steps=2)
    grads = jax.tree.map(jnp.ones_like, params)
    state = opt.init(params)
    update = jax.jit(functools.partial(opt.update, params=params))
    for t in range(6):
        updates, state = update(grads, state)
        np.testing.assert_allclose(
            np.asarray(updates["proj"]["bias"][...]), -float(schedule(t)), atol=1e-7
        )
