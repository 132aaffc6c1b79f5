"""The injectable projection factory: ``LinearSpec`` validation, per-layer-type selection,
``merge_linears`` and Hugging Face export of merged weights, ``Dense(use_bias=False)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from jaxir.layers.dot import dot_general
from jaxir.layers.linear import (
    LAYER_TYPES,
    LINEAR_KINDS,
    Dense,
    LinearSpec,
    axes_metadata,
    linear,
    merge_linears,
    register_linear,
)
from jaxir.layers.variables import Frozen
from jaxir.models import hf
from jaxir.models.bert import PRESETS, Model

KIND = "test-lowrank"

#: Every projection of a tiny BERT with pooler and MLM head, by layer type.
PROJECTIONS = {
    "attention": [
        f"layers/{i}/attention/{p}"
        for i in range(PRESETS["tiny"].num_layers)
        for p in ("query", "key", "value", "output")
    ],
    "mlp": [
        f"layers/{i}/mlp/{p}" for i in range(PRESETS["tiny"].num_layers) for p in ("up", "down")
    ],
    "head": ["pooler", "mlm/transform"],
}


class LowRank(nnx.Module):
    """A toy LoRA: frozen base kernel + trainable ``scale * a @ b`` (nonzero at init)."""

    def __init__(
        self, in_features, out_features, axes, *, use_bias, dtype, rngs, rank=2, scale=1.0
    ):
        init = jax.nn.initializers.normal(0.3)
        self.axes, self.dtype, self.scale = axes, dtype, scale
        self.base = Frozen(
            jax.nn.initializers.normal(0.02)(rngs.params(), (in_features, out_features)),
            **axes_metadata(axes),
        )
        self.a = nnx.Param(
            init(rngs.params(), (in_features, rank)), **axes_metadata((axes[0], "rank"))
        )
        self.b = nnx.Param(
            init(rngs.params(), (rank, out_features)), **axes_metadata(("rank", axes[1]))
        )
        self.bias = (
            nnx.Param(0.1 * jnp.ones((out_features,)), **axes_metadata(axes[1:]))
            if use_bias
            else None
        )

    def __call__(self, x):
        dims = (((x.ndim - 1,), (0,)), ((), ()))
        y = dot_general(x, self.base[...], dims)
        y = y + self.scale * dot_general(dot_general(x, self.a[...], dims), self.b[...], dims)
        return y if self.bias is None else y + self.bias[...]

    def merged(self):
        kernel = self.base[...] + self.scale * self.a[...] @ self.b[...]
        return kernel, None if self.bias is None else self.bias[...]


@pytest.fixture
def lowrank():
    register_linear(KIND, LowRank)
    yield KIND
    del LINEAR_KINDS[KIND]


def modules_by_path(model) -> dict[str, nnx.Module]:
    return {"/".join(map(str, path)): m for path, m in nnx.iter_modules(model) if path}


def tiny(spec: LinearSpec | None = None, **changes) -> Model:
    config = PRESETS["tiny"].replace(pooler=True, **changes)
    if spec is not None:
        config = config.replace(linear=spec)
    return Model(config, rngs=nnx.Rngs(0))


def batch():
    ids = jnp.array([[101, 7, 8, 9, 102], [101, 11, 102, 0, 0]])
    return ids, (ids > 0).astype(jnp.int32)


# --- LinearSpec validation ---------------------------------------------------------------


def test_unknown_kind_names_the_config_key_and_registered_kinds():
    with pytest.raises(ValueError, match=r"model\.linear: unknown linear kind 'lora-typo'") as err:
        LinearSpec("lora-typo")
    for kind in LINEAR_KINDS:
        assert repr(kind) in str(err.value)


def test_unknown_layer_type_names_the_config_key():
    with pytest.raises(ValueError, match=r"model\.linear_layers: .*'embeddings'") as err:
        LinearSpec(layer_types=("attention", "embeddings"))
    for layer_type in LAYER_TYPES:
        assert layer_type in str(err.value)


def test_options_on_dense_are_an_error_naming_the_config_key():
    with pytest.raises(ValueError, match=r"model\.linear: kind 'dense' takes no options.*rank"):
        LinearSpec(options={"rank": 4})


def test_spec_normalises_layer_types_and_options_and_is_hashable(lowrank):
    spec = LinearSpec(lowrank, layer_types="attention", options={"scale": 2.0, "rank": 3})
    assert spec.layer_types == ("attention",)
    assert spec.options == (("rank", 3), ("scale", 2.0))
    assert hash(spec) == hash(LinearSpec(lowrank, ("attention",), (("rank", 3), ("scale", 2.0))))


def test_linear_rejects_an_unknown_layer_type():
    with pytest.raises(ValueError, match="'pooler'"):
        linear("pooler", 3, 2, (None, None), spec=LinearSpec(), dtype=jnp.float32, rngs=nnx.Rngs(0))


def test_a_kind_unregistered_after_the_spec_was_built_is_a_clear_error():
    register_linear(KIND, LowRank)
    spec = LinearSpec(KIND, options={"rank": 1})
    del LINEAR_KINDS[KIND]
    with pytest.raises(ValueError, match=r"model\.linear: unknown linear kind"):
        linear("mlp", 3, 2, (None, None), spec=spec, dtype=jnp.float32, rngs=nnx.Rngs(0))


def test_register_linear_is_idempotent_and_refuses_a_taken_kind(lowrank):
    register_linear(lowrank, LowRank)  # same class again: no-op
    assert LINEAR_KINDS[lowrank] is LowRank
    with pytest.raises(ValueError, match="already registered"):
        register_linear(lowrank, Dense)
    with pytest.raises(ValueError, match="already registered"):
        register_linear("dense", LowRank)
    assert LINEAR_KINDS["dense"] is Dense
    with pytest.raises(ValueError, match="non-empty"):
        register_linear("", LowRank)


# --- selection by layer type -------------------------------------------------------------


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_a_parameterization_replaces_exactly_the_selected_layer_type(lowrank, layer_type):
    model = tiny(LinearSpec(lowrank, layer_types=(layer_type,), options={"rank": 2}))
    modules = modules_by_path(model)
    for kind, paths in PROJECTIONS.items():
        for path in paths:
            want = LowRank if kind == layer_type else Dense
            assert type(modules[path]) is want, (path, type(modules[path]))
    # No other module changed type: the parameterization appears only at these paths.
    assert sorted(p for p, m in modules.items() if isinstance(m, LowRank)) == sorted(
        PROJECTIONS[layer_type]
    )
    assert modules[PROJECTIONS[layer_type][0]].a.shape[1] == 2  # options reached the constructor


def test_attention_only_parameterization_changes_only_attention_params(lowrank):
    """Plain vs LoRA-on-attention: the parameter trees differ exactly at q/k/v/o."""

    def shapes(model, kind=nnx.Param):
        return {
            "/".join(map(str, p)): v.shape for p, v in nnx.to_flat_state(nnx.state(model, kind))
        }

    plain = shapes(tiny())
    model = tiny(LinearSpec(lowrank, ("attention",)))
    lora = shapes(model)
    attention = tuple(f"{path}/" for path in PROJECTIONS["attention"])
    assert {k: v for k, v in plain.items() if not k.startswith(attention)} == {
        k: v for k, v in lora.items() if not k.startswith(attention)
    }
    assert {k for k in plain if k.startswith(attention)} == {
        f"{p}{n}" for p in attention for n in ("kernel", "bias")
    }
    assert {k for k in lora if k.startswith(attention)} == {
        f"{p}{n}" for p in attention for n in ("a", "b", "bias")
    }
    assert set(shapes(model, Frozen)) == {f"{p}base" for p in attention}


def test_trainable_and_frozen_variables_split(lowrank):
    model = tiny(LinearSpec(lowrank, ("attention",)))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    params = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(params)}
    rest = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(rest)}
    query = PROJECTIONS["attention"][0]
    assert {f"{query}/a", f"{query}/b", f"{query}/bias"} <= params
    assert f"{query}/base" in rest and f"{query}/base" not in params


# --- merge to dense and export --------------------------------------------------------------


@pytest.fixture
def parameterized(lowrank):
    spec = LinearSpec(lowrank, layer_types=LAYER_TYPES, options={"rank": 2, "scale": 1.5})
    return tiny(spec)


def test_merge_linears_gives_plain_dense_with_the_same_forward(parameterized):
    merged = merge_linears(parameterized)
    assert not any(isinstance(m, LowRank) for _, m in nnx.iter_modules(merged))
    assert merged.config.linear == LinearSpec()
    assert merged.config.replace(linear=parameterized.config.linear) == parameterized.config
    # The original is untouched.
    assert type(parameterized.layers[0].attention.query) is LowRank
    assert parameterized.config.linear.kind == KIND
    # Merged structure is that of a plain model built from the merged config.
    plain_paths = {p for p, _ in nnx.to_flat_state(nnx.state(tiny()))}
    assert {p for p, _ in nnx.to_flat_state(nnx.state(merged))} == plain_paths

    ids, mask = batch()
    want = parameterized(ids, mask)
    got = merged(ids, mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(merged.mlm_logits(got)), np.asarray(parameterized.mlm_logits(want)), atol=1e-4
    )
    np.testing.assert_allclose(
        np.asarray(merged.pooler_output(got)),
        np.asarray(parameterized.pooler_output(want)),
        atol=1e-5,
    )
    # The parameterization actually changed the function (the test is not vacuous).
    assert np.abs(np.asarray(tiny()(ids, mask)) - np.asarray(want)).max() > 1e-3


def test_merge_linears_on_a_single_module(lowrank):
    layer = LowRank(3, 2, (None, None), use_bias=False, dtype=jnp.float32, rngs=nnx.Rngs(0))
    dense = merge_linears(layer)
    assert type(dense) is Dense and dense.bias is None
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(np.asarray(dense(x)), np.asarray(layer(x)), rtol=1e-6)


def test_save_pretrained_writes_merged_weights_under_plain_keys(parameterized, tmp_path):
    hf.save_pretrained(parameterized, tmp_path / "lora")
    hf.save_pretrained(merge_linears(parameterized), tmp_path / "merged")
    hf.save_pretrained(tiny(), tmp_path / "plain")
    lora = safetensors.numpy.load_file(str(tmp_path / "lora" / "model.safetensors"))
    merged = safetensors.numpy.load_file(str(tmp_path / "merged" / "model.safetensors"))
    plain = safetensors.numpy.load_file(str(tmp_path / "plain" / "model.safetensors"))
    assert lora.keys() == merged.keys() == plain.keys()
    for key in plain:
        assert lora[key].shape == plain[key].shape, key
        assert lora[key].tobytes() == merged[key].tobytes(), key
    assert (tmp_path / "lora" / "config.json").read_text() == (
        tmp_path / "plain" / "config.json"
    ).read_text()
    # jaxir loads it back as a plain model equal to the merged one.
    loaded = hf.load_pretrained(tmp_path / "lora")
    assert loaded.config == merge_linears(parameterized).config
    ids, mask = batch()
    np.testing.assert_allclose(
        np.asarray(loaded(ids, mask)), np.asarray(parameterized(ids, mask)), atol=1e-5, rtol=1e-5
    )


def test_merged_export_loads_in_transformers_with_the_same_hidden_states(parameterized, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    merged = merge_linears(parameterized)
    hf.save_pretrained(parameterized, tmp_path)
    theirs = transformers.AutoModel.from_pretrained(tmp_path).eval()
    ids, mask = batch()
    with torch.no_grad():
        out = theirs(
            input_ids=torch.from_numpy(np.array(ids)),
            attention_mask=torch.from_numpy(np.array(mask)),
        )
    hidden = merged(ids, mask)
    real = np.asarray(mask).astype(bool)
    np.testing.assert_allclose(
        out.last_hidden_state.numpy()[real], np.asarray(hidden)[real], atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(
        out.pooler_output.numpy(), np.asarray(merged.pooler_output(hidden)), atol=1e-4, rtol=0
    )


# --- Dense ------------------------------------------------------------------------------------


def test_dense_without_bias_has_no_bias_param():
    layer = Dense(3, 2, ("embed", "mlp"), use_bias=False, dtype=jnp.float32, rngs=nnx.Rngs(0))
    assert layer.bias is None
    assert [p for p, _ in nnx.to_flat_state(nnx.state(layer, nnx.Param))] == [("kernel",)]
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(x @ layer.kernel[...]), rtol=1e-6)
    kernel, bias = layer.merged()
    assert bias is None and kernel.shape == (3, 2)
    with_bias = Dense(3, 2, ("embed", "mlp"), dtype=jnp.float32, rngs=nnx.Rngs(0))
    assert {p for p, _ in nnx.to_flat_state(nnx.state(with_bias, nnx.Param))} == {
        ("kernel",),
        ("bias",),
    }


def test_linear_forwards_use_bias_to_dense_and_parameterizations(lowrank):
    for spec in (LinearSpec(), LinearSpec(lowrank, ("mlp",))):
        layer = linear(
            "mlp",
            3,
            2,
            (None, None),
            spec=spec,
            use_bias=False,
            dtype=jnp.float32,
            rngs=nnx.Rngs(0),
        )
        assert layer.bias is None
        assert "bias" not in {p[-1] for p, _ in nnx.to_flat_state(nnx.state(layer))}


def test_dense_from_weights_round_trips_kernel_bias_and_axes():
    kernel = jnp.arange(6.0).reshape(3, 2)
    layer = Dense.from_weights(kernel, jnp.array([1.0, -1.0]), ("embed", "mlp"), dtype=jnp.float32)
    assert layer.kernel.get_metadata()["out_sharding"] == ("embed", "mlp")
    assert layer.bias.get_metadata()["out_sharding"] == ("mlp",)
    np.testing.assert_array_equal(np.asarray(layer(jnp.ones((1, 3)))), [[7.0, 8.0]])
    assert Dense.from_weights(kernel, None, (None, None), dtype=jnp.float32).bias is None
