"""Contracts of every built-in linear-layer parameterization (LoRA, SLTrain).

Each kind must: compute exactly what its merged dense kernel computes; merge and export
to plain dense Hugging Face weights that load back with the same outputs; give optimizer
state only to its trainable factors (a LoRA base never moves); keep state shardings
across updates on the fake 8-device mesh; restore from an Orbax checkpoint (SLTrain's
support exactly) and continue with the identical next update; converge on a small
problem; reject bad options naming the config key. One test trains through
:func:`jaxir.train` with each kind and loads the saved model as plain dense.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import safetensors.numpy
from flax import nnx

import jaxir
from jaxir import optim, sharding
from jaxir.config import RunConfig, from_dict, load_config, override, to_dict
from jaxir.families.dense import DenseFamily, DenseObjective
from jaxir.families.splade import SpladeFamily
from jaxir.layers.linear import (
    LAYER_TYPES,
    LINEAR_KINDS,
    Dense,
    LinearSpec,
    merge_linears,
    parameterize_linears,
)
from jaxir.layers.lora import LoRA
from jaxir.layers.sparse_lowrank import SparseLowRank
from jaxir.layers.variables import Buffer, Frozen
from jaxir.models import hf
from jaxir.models.bert import PRESETS, Model
from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec
from jaxir.training import state as train_state
from jaxir.training import step as train_step
from jaxir.training.checkpoint import Checkpointer
from jaxir.training.loop import losses_by_step
from tests.training.test_step import make_batch

KINDS = ("lora", "sltrain")
CLASSES = {"lora": LoRA, "sltrain": SparseLowRank}
#: Small options that still leave every factor non-trivial in the tiny model (hidden 32).
OPTIONS = {"lora": {"rank": 4, "alpha": 8.0}, "sltrain": {"rank": 4, "density": 0.1, "alpha": 4.0}}
#: The trainable leaf names of each kind (besides a trainable SLTrain bias).
FACTORS = {"lora": ("lora_a", "lora_b"), "sltrain": ("a", "b", "values")}
#: One layer keeps compiles short; the layer types are all there.
TINY = PRESETS["tiny"].replace(num_layers=1)
ENCODER = TINY.replace(dropout=0.0)
CONFIG_FILE = pathlib.Path(__file__).parents[2] / "configs" / "dense_tiny.py"


def spec_of(kind: str, layer_types=("attention", "mlp")) -> LinearSpec:
    return LinearSpec(kind, layer_types, OPTIONS[kind])


def randomized(module: nnx.Module, seed: int = 0, only=nnx.Variable) -> nnx.Module:
    """``module`` with every float variable of type ``only`` perturbed (a zero ``lora_b``
    would hide bugs)."""
    graphdef, state = nnx.split(module)
    flat = []
    for i, (path, var) in enumerate(nnx.to_flat_state(state)):
        value = var.get_value()
        if isinstance(var, only) and jnp.issubdtype(value.dtype, jnp.floating):
            key = jax.random.fold_in(jax.random.key(seed), i)
            value = value + 0.1 * jax.random.normal(key, value.shape, value.dtype)
        flat.append((path, var.replace(value)))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def flat_paths(state) -> dict[str, np.ndarray]:
    return {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


def ids_and_mask():
    ids = jnp.array([[101, 7, 8, 9, 102], [101, 11, 102, 0, 0]])
    return ids, (ids > 0).astype(jnp.int32)


# --- forward = materialized dense ------------------------------------------------------------


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", KINDS)
def test_forward_equals_the_materialized_dense_kernel(kind, use_bias):
    layer = CLASSES[kind](
        24,
        40,
        ("embed", "mlp"),
        use_bias=use_bias,
        dtype=jnp.float32,
        rngs=nnx.Rngs(1),
        **OPTIONS[kind],
    )
    layer = randomized(layer)
    kernel, bias = layer.merged()
    assert kernel.shape == (24, 40) and kernel.dtype == jnp.float32
    x = jax.random.normal(jax.random.key(2), (3, 5, 24))
    want = jnp.einsum("...i,io->...o", x, kernel, precision=jax.lax.Precision.HIGHEST)
    if use_bias:
        want = want + bias
    else:
        assert bias is None
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(want), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(layer)(x)), np.asarray(want), atol=1e-5)
    # The merged kernel is what the parameterization says.
    if kind == "lora":
        delta = layer.scale * np.asarray(layer.lora_a[...]) @ np.asarray(layer.lora_b[...])
        np.testing.assert_allclose(kernel, np.asarray(layer.kernel[...]) + delta, atol=1e-6)
    else:
        dense = layer.scale * np.asarray(layer.a[...]) @ np.asarray(layer.b[...])
        rows, cols = np.asarray(layer.indices[...]).T
        dense[rows, cols] += np.asarray(layer.values[...])
        np.testing.assert_allclose(kernel, dense, atol=1e-6)
        assert len(set(zip(rows.tolist(), cols.tolist()))) == layer.values.shape[0]


def test_sltrain_support_density_and_key():
    make = lambda seed: SparseLowRank(  # noqa: E731
        30, 50, (None, None), rank=3, density=0.2, dtype=jnp.float32, rngs=nnx.Rngs(seed)
    )
    layer = make(0)
    assert layer.indices.shape == (300, 2) and layer.indices[...].dtype == jnp.int32
    assert isinstance(layer.indices, Buffer)
    flat = np.asarray(layer.indices[...]) @ np.array([50, 1])
    assert (np.diff(flat) > 0).all()  # distinct, sorted row-major
    np.testing.assert_array_equal(np.asarray(make(0).indices[...]), np.asarray(layer.indices[...]))
    assert not np.array_equal(np.asarray(make(1).indices[...]), np.asarray(layer.indices[...]))
    full = SparseLowRank(
        4, 5, (None, None), rank=1, density=1.0, dtype=jnp.float32, rngs=nnx.Rngs(0)
    )
    assert full.indices.shape == (20, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_from_dense_starts_from_the_dense_weights(kind):
    dense = randomized(Dense(16, 12, ("embed", "mlp"), dtype=jnp.float32, rngs=nnx.Rngs(0)))
    layer = CLASSES[kind].from_dense(dense, key=jax.random.key(3), **OPTIONS[kind])
    x = jax.random.normal(jax.random.key(4), (6, 16))
    if kind == "lora":  # exact: lora_b is zero, the base is the dense kernel
        assert isinstance(layer.kernel, Frozen) and isinstance(layer.bias, Frozen)
        assert layer.kernel.get_metadata()["out_sharding"] == ("embed", "mlp")
        assert layer.lora_a.get_metadata()["out_sharding"] == ("embed", "rank")
        np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(dense(x)))
        assert np.asarray(layer.merged()[0]).tobytes() == np.asarray(dense.kernel[...]).tobytes()
        return
    w = np.asarray(dense.kernel[...])
    kernel, bias = layer.merged()
    np.testing.assert_array_equal(np.asarray(bias), np.asarray(dense.bias[...]))
    assert layer.b.get_metadata()["out_sharding"] == ("rank", "mlp")
    # scale * a @ b is the best rank-r approximation (Eckart-Young) ...
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    r = OPTIONS[kind]["rank"]
    low = layer.scale * np.asarray(layer.a[...]) @ np.asarray(layer.b[...])
    np.testing.assert_allclose(low, (u[:, :r] * s[:r]) @ vt[:r], atol=1e-5)
    # ... and S holds the residual's largest entries at their exact values.
    residual = np.abs(w - low)
    on = np.zeros_like(residual, bool)
    rows, cols = np.asarray(layer.indices[...]).T
    on[rows, cols] = True
    assert residual[on].min() >= residual[~on].max() - 1e-6
    np.testing.assert_allclose(np.asarray(kernel)[on], w[on], atol=1e-5)
    err = np.linalg.norm(np.asarray(kernel) - w)
    assert err < np.linalg.norm(w - low)  # the sparse part helps
    # Full rank, or full density, reproduces the dense layer.
    for options in ({"rank": 12, "density": 0.01}, {"rank": 1, "density": 1.0}):
        exact = SparseLowRank.from_dense(dense, **options)
        np.testing.assert_allclose(np.asarray(exact(x)), np.asarray(dense(x)), atol=1e-4)


# --- merge, export, parameterize ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_merge_and_hf_export_round_trip(kind, tmp_path):
    config = TINY.replace(pooler=True, linear=spec_of(kind, LAYER_TYPES))
    model = randomized(Model(config, rngs=nnx.Rngs(0)))
    assert sum(isinstance(m, CLASSES[kind]) for _, m in nnx.iter_modules(model)) == 6 + 2
    merged = merge_linears(model)
    assert not any(isinstance(m, CLASSES[kind]) for _, m in nnx.iter_modules(merged))
    # The merged Dense keeps the projection's recorded layer type.
    assert merged.layers[0].attention.query.layer_type == "attention"
    assert merged.pooler.layer_type == "head"
    ids, mask = ids_and_mask()
    want = model(ids, mask)
    np.testing.assert_allclose(np.asarray(merged(ids, mask)), np.asarray(want), atol=1e-5)

    hf.save_pretrained(model, tmp_path / "export")
    weights = safetensors.numpy.load_file(str(tmp_path / "export" / "model.safetensors"))
    expected = hf.to_hf_weights(merged)
    assert weights.keys() == expected.keys()
    for key in expected:  # bit-exact: the export is the merged kernels
        assert weights[key].tobytes() == expected[key].tobytes(), key
    loaded = hf.load_pretrained(tmp_path / "export")
    assert loaded.config.linear == LinearSpec()
    assert all(type(m) is not CLASSES[kind] for _, m in nnx.iter_modules(loaded))
    np.testing.assert_allclose(np.asarray(loaded(ids, mask)), np.asarray(want), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(loaded.pooler_output(want)), np.asarray(model.pooler_output(want)), atol=1e-5
    )


@pytest.mark.parametrize("kind", KINDS)
def test_parameterize_linears_is_the_inverse_of_merge(kind):
    dense = randomized(Model(TINY.replace(pooler=True), rngs=nnx.Rngs(0)))
    spec = spec_of(kind)
    model = parameterize_linears(dense, spec, key=jax.random.key(0))
    assert model.config.linear == spec and dense.config.linear == LinearSpec()
    assert type(dense.layers[0].mlp.up) is Dense  # the input is untouched
    # Same state structure (paths and variable types) as a model built parameterized.
    built = Model(TINY.replace(pooler=True, linear=spec), rngs=nnx.Rngs(0))
    types = lambda m: {p: type(v) for p, v in nnx.to_flat_state(nnx.state(m))}  # noqa: E731
    assert types(model) == types(built)
    assert type(model.pooler) is Dense  # "head" was not selected
    ids, mask = ids_and_mask()
    if kind == "lora":  # starts exactly at the dense model; merge gives it back bit for bit
        np.testing.assert_array_equal(np.asarray(model(ids, mask)), np.asarray(dense(ids, mask)))
        back = flat_paths(nnx.state(merge_linears(model)))
        for path, value in flat_paths(nnx.state(dense)).items():
            assert back[path].tobytes() == value.tobytes(), path
    # Independent draws per projection, reproducible from the key.
    if kind == "lora":
        a0 = np.asarray(model.layers[0].attention.query.lora_a[...])
        a1 = np.asarray(model.layers[0].attention.key.lora_a[...])
        assert not np.array_equal(a0, a1)
        again = parameterize_linears(dense, spec, key=jax.random.key(0))
        np.testing.assert_array_equal(np.asarray(again.layers[0].attention.query.lora_a[...]), a0)


@pytest.mark.parametrize(
    "family, kind", [("dense", "lora"), ("dense", "sltrain"), ("splade", "lora")]
)
def test_a_family_starts_a_parameterized_model_from_dense_hf_weights(
    family, kind, tmp_path, capsys
):
    """``model.init=<HF dir>`` with ``model.linear=lora|sltrain``: loaded dense, then parameterized;
    a lossy start (SLTrain) is reported with its error, once."""
    saved = randomized(Model(TINY.replace(mlm_head=True), rngs=nnx.Rngs(3)))
    hf.save_pretrained(saved, tmp_path)
    cls = DenseFamily if family == "dense" else SpladeFamily
    fam = cls(init=str(tmp_path), linear=spec_of(kind), seed=7)
    model = fam.init_model(vocab_size=TINY.vocab_size, rngs=nnx.Rngs(0))
    capsys.readouterr()
    state, source = fam.pretrained(model)
    assert source == str(tmp_path)
    warnings = [line for line in capsys.readouterr().out.splitlines() if "away from the" in line]
    if kind == "lora":
        assert warnings == []
    else:
        (line,) = warnings
        assert "model.linear='sltrain' starts " in line and "model.sltrain.rank" in line
        error = int(line.split(" starts ")[1].split("%")[0])
        assert 1 <= error < 100
    types = lambda st: {p: type(v) for p, v in nnx.to_flat_state(st)}  # noqa: E731
    assert types(state) == types(nnx.state(model))  # what the loop's with_weights needs
    tower = "query_encoder" if family == "dense" else "document_encoder"
    started = nnx.merge(nnx.graphdef(model), state)
    query = getattr(started, tower).layers[0].attention.query
    assert type(query) is CLASSES[kind]
    want = np.asarray(saved.layers[0].attention.query.kernel[...])
    got = np.asarray(query.merged()[0])
    if kind == "lora":  # the checkpoint's kernel, frozen, exactly
        assert np.asarray(query.kernel[...]).tobytes() == want.tobytes()
        np.testing.assert_array_equal(got, want)
    else:  # truncated SVD + largest residuals: closer than the best rank-r matrix, not exact
        s = np.linalg.svd(want, compute_uv=False)
        tail = np.sqrt((s[OPTIONS[kind]["rank"] :] ** 2).sum())
        assert 0 < np.linalg.norm(got - want) < tail


# --- training: optimizer state, frozen base, shardings, checkpoints ------------------------------


#: In the mixed model of :func:`setup`: the projection of each kind.
PROJ = {
    "lora": "query_encoder/layers/0/attention/query",
    "sltrain": "query_encoder/layers/0/mlp/up",
}


def mixed_dual_encoder() -> DualEncoder:
    """A tiny dual encoder with LoRA on attention and SLTrain on the MLP: both kinds, one compile.

    Built as a run starting from dense weights builds it (:func:`parameterize_linears`).
    """
    model = DualEncoder.create(ENCODER, DualEncoderSpec(temperature=0.1), rngs=nnx.Rngs(0))
    model = parameterize_linears(model, spec_of("lora", ("attention",)), key=jax.random.key(1))
    # Density 0.125: the up projection's 256-entry support divides the fsdp axis.
    sltrain = LinearSpec("sltrain", ("mlp",), {**OPTIONS["sltrain"], "density": 0.125})
    return parameterize_linears(model, sltrain, key=jax.random.key(2))


@pytest.fixture(scope="module")
def setup():
    """``(make_state, shardings, step)`` for :func:`mixed_dual_encoder` on the 2x2x2 mesh."""
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    spec = optim.OptimizerSpec(learning_rate=1e-2, total_steps=10, warmup_steps=0)
    optimizer = optim.build(spec, train_state.abstract_params(mixed_dual_encoder))
    graphdef, initial, shardings = train_state.create_state(
        mixed_dual_encoder, optimizer, mesh, seed=0
    )
    copy = jax.jit(lambda s: jax.tree.map(jnp.copy, s), out_shardings=shardings)

    def make_state():  # a fresh copy each time: the step donates its input
        return copy(initial)

    step = train_step.make_train_step(
        train_step.make_grad_fn(DenseObjective(), graphdef),
        optimizer,
        state_shardings=shardings,
        mesh=mesh,
        example_batch=make_batch(),
    )
    return make_state, shardings, step


def test_only_factors_have_optimizer_state_and_the_lora_base_never_changes(setup):
    make_state, _, step = setup
    state = make_state()
    params = flat_paths(state.params)
    frozen = flat_paths(state.frozen)
    assert isinstance(
        state.frozen["query_encoder"]["layers"][0]["attention"]["query"]["kernel"], Frozen
    )
    for kind, proj in PROJ.items():
        trainable = {p.rsplit("/", 1)[1] for p in params if p.startswith(proj + "/")}
        assert trainable == set(FACTORS[kind]) | ({"bias"} if kind == "sltrain" else set())
    assert {f"{PROJ['lora']}/kernel", f"{PROJ['lora']}/bias"} <= frozen.keys()
    assert f"{PROJ['sltrain']}/indices" in frozen
    # Per-parameter optimizer state (Adam moments) has exactly the params' structure.
    per_param = [
        t
        for t in jax.tree.leaves(state.opt_state, is_leaf=lambda x: isinstance(x, nnx.State))
        if isinstance(t, nnx.State)
    ]
    assert per_param
    for tree in per_param:
        assert set(flat_paths(tree)) == set(params)
    # Labels: the factors are "factor" -- not decayed, not low-rank projected.
    labels = {
        "/".join(map(str, p)): v for p, v in optim.label_items(optim.param_labels(state.params))
    }
    for kind, proj in PROJ.items():
        for name in FACTORS[kind]:
            assert labels[f"{proj}/{name}"] == "factor"
    assert labels[f"{PROJ['sltrain']}/bias"] == "bias"
    assert "factor" not in optim.DECAY_LABELS

    for seed in range(5):
        state, _ = step(state, make_batch(seed=seed))
    after_frozen = flat_paths(state.frozen)
    for path, value in frozen.items():  # the LoRA base and the SLTrain support never move
        assert after_frozen[path].tobytes() == value.tobytes(), path
    after = flat_paths(state.params)
    for kind, proj in PROJ.items():
        for name in FACTORS[kind]:
            path = f"{proj}/{name}"
            assert not np.array_equal(after[path], params[path]), path


def test_state_shardings_are_stable_across_updates(setup):
    make_state, shardings, step = setup
    state = make_state()
    initial = [x.sharding for x in jax.tree.leaves(state)]
    specs = list(jax.tree.leaves(shardings))
    assert sum(not s.is_fully_replicated for s in initial) > 0, "nothing is sharded: vacuous test"
    for seed in range(2):
        state, _ = step(state, make_batch(seed=seed))
    leaves = jax.tree.leaves(state)
    assert len(leaves) == len(initial) == len(specs)
    for before, spec, leaf in zip(initial, specs, leaves):
        assert leaf.sharding.is_equivalent_to(before, leaf.ndim), (
            leaf.shape,
            before,
            leaf.sharding,
        )
        assert leaf.sharding.is_equivalent_to(spec, leaf.ndim)
    # Factors shard along the dense kernel's in/out axes; the rank axis takes fsdp where
    # the other axis leaves it unused ([rank, mlp]), so no factor is replicated over fsdp.
    layer = state.params["query_encoder"]["layers"][0]
    assert tuple(layer["attention"]["query"]["lora_a"].get_value().sharding.spec) == ("fsdp", None)
    assert tuple(layer["mlp"]["up"]["b"].get_value().sharding.spec) == ("fsdp", "tensor")
    # The sparse support and its values (and so their moments) shard over fsdp.
    up = layer["mlp"]["up"]
    support = state.frozen["query_encoder"]["layers"][0]["mlp"]["up"]["indices"]
    assert tuple(up["values"].get_value().sharding.spec) == ("fsdp",)
    assert tuple(support.get_value().sharding.spec)[:1] == ("fsdp",)
    moments = [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(state.opt_state)
        if "values" in jax.tree_util.keystr(path) and getattr(leaf, "ndim", 0) == 1
    ]
    assert moments and all(tuple(m.sharding.spec) == ("fsdp",) for m in moments)


def test_checkpoint_restores_the_support_and_gives_the_identical_next_update(setup, tmp_path):
    make_state, _, step = setup
    state, _ = step(make_state(), make_batch(seed=0))  # non-trivial moments
    ckpt = Checkpointer(tmp_path, keep=1, async_save=False)
    ckpt.save(1, state, data_state={"i": 1}, config={})
    ckpt.wait()
    saved = jax.tree.map(lambda x: np.asarray(x).copy(), state)
    target = make_state()  # same layout, other values (step 0)
    restored = Checkpointer(tmp_path, keep=1).restore_latest(target).state
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(restored)):
        assert a.dtype == b.dtype and a.tobytes() == np.asarray(b).tobytes()
    indices = restored.frozen["query_encoder"]["layers"][0]["mlp"]["up"]["indices"]
    assert isinstance(indices, Buffer) and indices.get_value().dtype == jnp.int32
    assert int(restored.step) == 1 and int(target.step) == 0
    want, _ = step(state, make_batch(seed=1))
    got, _ = step(restored, make_batch(seed=1))
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


@pytest.mark.parametrize("kind", KINDS)
def test_converges_on_least_squares(kind):
    """Fit ``x @ W* + b``, ``W*`` reachable by the parameterization, to ~0 loss."""
    layer = CLASSES[kind](
        16, 8, ("embed", "mlp"), dtype=jnp.float32, rngs=nnx.Rngs(0), **OPTIONS[kind]
    )
    target = randomized(layer, seed=5, only=nnx.Param)  # same base / support, other factors
    x = jax.random.normal(jax.random.key(1), (128, 16))
    y = target(x)
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
    opt = optax.adam(0.03)

    def loss_fn(params):
        return jnp.mean((nnx.merge(graphdef, params, rest)(x) - y) ** 2)

    @jax.jit
    def run(params):
        def body(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        (params, _), losses = jax.lax.scan(body, (params, opt.init(params)), None, length=600)
        return params, losses

    final, losses = run(params)
    assert float(loss_fn(final)) < 1e-4 * float(losses[0]), (
        float(losses[0]),
        float(loss_fn(final)),
    )


# --- bad configuration names the key ------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, options, key",
    [
        ("lora", {"rank": 33}, r"model\.lora\.rank=33 is larger than a dimension"),
        ("lora", {"rank": 0}, r"model\.lora\.rank must be a positive integer"),
        ("sltrain", {"rank": 33}, r"model\.sltrain\.rank=33 is larger than a dimension"),
        ("sltrain", {"rank": 4, "density": 0.0}, r"model\.sltrain\.density must be in \(0, 1\]"),
        ("sltrain", {"rank": 4, "density": 1.5}, r"model\.sltrain\.density must be in \(0, 1\]"),
    ],
)
def test_bad_options_fail_naming_the_config_key(kind, options, key):
    spec = LinearSpec(kind, ("attention",), options)
    with pytest.raises(ValueError, match=key):
        nnx.eval_shape(lambda: Model(TINY.replace(linear=spec), rngs=nnx.Rngs(0)))


@pytest.mark.parametrize(
    "assignment, key",
    [
        ("model.sltrain.density=0", r"model\.sltrain\.density must be in \(0, 1\]"),
        ("model.sltrain.density=-0.5", r"model\.sltrain\.density must be in \(0, 1\]"),
        ("model.sltrain.density=1.01", r"model\.sltrain\.density must be in \(0, 1\]"),
        ("model.lora.rank=0", r"model\.lora\.rank must be a positive integer"),
        ("model.sltrain.rank=-1", r"model\.sltrain\.rank must be a positive integer"),
        ("model.linear_layers=attention,embeddings", r"model\.linear_layers: .*'embeddings'"),
    ],
)
def test_bad_config_overrides_fail_naming_the_key(assignment, key):
    with pytest.raises(ValueError, match=key):
        override(RunConfig(), ["model.linear=lora", assignment]).model.linear_spec()


def test_lora_on_a_layer_type_the_model_lacks_names_model_linear_layers():
    tower = Model(ENCODER.replace(pooler=False, mlm_head=False), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"model\.linear_layers: the model has no head projection"):
        parameterize_linears(
            tower, LinearSpec("lora", ("attention", "head")), key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match=r"model\.linear_layers: unknown layer type"):
        LinearSpec("lora", ("embeddings",))


def test_config_overrides_reach_the_linear_spec_and_round_trip():
    config = override(
        RunConfig(), ["model.linear=lora", "model.lora.rank=8", "model.lora.alpha=16"]
    )
    assert config.model.linear_spec() == LinearSpec(
        "lora", ("attention", "mlp"), {"rank": 8, "alpha": 16.0}
    )
    config = override(config, ["model.linear=sltrain", "model.sltrain.density=0.05"])
    assert dict(config.model.linear_spec().options) == {"rank": 64, "density": 0.05, "alpha": 16.0}
    assert from_dict(RunConfig, to_dict(config)) == config
    assert override(config, ["model.linear=dense"]).model.linear_spec() == LinearSpec()
    assert {"lora", "sltrain"} <= set(LINEAR_KINDS)


# --- through the public training loop -------------------------------------------------------------


@pytest.mark.slow
def test_train_lora_from_a_checkpoint_and_sltrain_from_scratch_save_plain_dense(tmp_path):
    base = jaxir.train(load_config(CONFIG_FILE, "2"), tmp_path / "dense", progress=False)
    runs = {
        "lora": [
            "model.linear=lora",
            "model.lora.rank=4",
            f"model.init={base.model_dir / 'query'}",
        ],
        "sltrain": ["model.linear=sltrain", "model.sltrain.rank=4", "model.sltrain.density=0.1"],
    }
    for kind, settings in runs.items():
        config = override(load_config(CONFIG_FILE, "3"), settings)
        result = jaxir.train(config, tmp_path / kind, progress=False)
        assert sorted(losses_by_step(result.workdir)) == [1, 2, 3]
        tower = hf.load_pretrained(result.model_dir / "query")
        assert tower.config.linear == LinearSpec()
        assert all(type(m) is not CLASSES[kind] for _, m in nnx.iter_modules(tower))
        encoder = jaxir.load_encoder(result.model_dir / "query")
        vectors = encoder.encode(["a query about proteins", "another text"])
        assert np.isfinite(np.asarray(vectors)).all()
        if kind == "lora":  # trained adapters moved the weights off the starting checkpoint
            start = hf.load_pretrained(base.model_dir / "query")
            assert not np.allclose(
                np.asarray(tower.layers[0].attention.query.kernel[...]),
                np.asarray(start.layers[0].attention.query.kernel[...]),
            )
