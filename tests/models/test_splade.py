"""The SPLADE model (jaxir.models.splade): towers, inference-free queries, gradients, save / load."""

import dataclasses
import functools
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxir.data.errors import DataError
from jaxir.models import hf
from jaxir.models.bert import PRESETS
from jaxir.models.splade import (
    CONTRACT_FILE,
    FORWARD,
    QUERY_WEIGHTS_FILE,
    Splade,
    SpladeSpec,
    is_splade_dir,
    load_splade_model,
    save_splade,
)
from tests.fixtures import VOCAB_SIZE, vocab_tokenizer

CONFIG = PRESETS["tiny"].replace(vocab_size=VOCAB_SIZE, num_layers=1)
SPEC = SpladeSpec(query_max_length=16, passage_max_length=32, chunk=3)
IDS = jnp.array([[2, 700, 801, 902, 3, 0, 0], [2, 1500, 3, 0, 0, 0, 0], [0] * 7])
MASK = (IDS > 0).astype(jnp.int32)
SPECIAL = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return vocab_tokenizer(tmp_path_factory.mktemp("vocab"))


@functools.cache
def model_of(kind: str, seed: int = 0) -> Splade:
    """A tiny random model of ``kind``, built once per (kind, seed): eager init is slow. Do not mutate."""
    spec = {
        "tied": SPEC,
        "untied": dataclasses.replace(SPEC, tied=False),
        "inference_free": dataclasses.replace(SPEC, inference_free=True, pooling="sum"),
    }[kind]
    idf = np.linspace(0.5, 2.0, VOCAB_SIZE, dtype=np.float32) if kind == "inference_free" else None
    return Splade.create(
        CONFIG,
        spec,
        rngs=nnx.Rngs(seed),
        idf=idf,
        special_token_ids=SPECIAL if idf is not None else (),
    )


@nnx.jit(static_argnames="role")
def encode(model: Splade, ids, mask, role: str = "passage"):
    """``model.encode_passages`` / ``encode_queries`` under jit (eager dispatch is slow)."""
    return model.encode_queries(ids, mask) if role == "query" else model.encode_passages(ids, mask)


@nnx.jit
def full_logits(encoder, ids, mask):
    return encoder.mlm_logits(encoder(ids, mask))


def manual_reps(encoder, ids, mask, pooling="max"):
    """The formula on the encoder's full [B, L, V] logits, in NumPy."""
    logits = np.asarray(full_logits(encoder, ids, mask))
    weights = np.log1p(np.maximum(logits, 0.0)) * np.asarray(mask)[..., None]
    return weights.max(1) if pooling == "max" else weights.sum(1)


@pytest.mark.parametrize("kind", ["tied", "untied", "inference_free"])
def test_encode_shapes_and_towers(kind):
    model = model_of(kind)
    p = encode(model, IDS, MASK)
    q = encode(model, IDS, MASK, "query")
    assert p.shape == q.shape == (3, VOCAB_SIZE) and p.dtype == q.dtype == jnp.float32
    assert np.isfinite(np.asarray(p)).all() and float(p.min()) >= 0
    np.testing.assert_array_equal(p[2], 0.0)  # an all-padding row
    np.testing.assert_allclose(
        p, manual_reps(model.document_encoder, IDS, MASK, model.spec.pooling), rtol=1e-5, atol=1e-5
    )
    if kind == "tied":
        assert model.query_encoder is None and model.query_weights is None
        np.testing.assert_array_equal(p, q)
    elif kind == "untied":
        assert model.query_encoder is not model.document_encoder and model.query_weights is None
        np.testing.assert_allclose(
            q, manual_reps(model.query_encoder, IDS, MASK), rtol=1e-5, atol=1e-5
        )
        assert not np.allclose(p, q)
    else:
        assert model.query_encoder is None and model.query_weights.shape == (VOCAB_SIZE,)
        idf = np.linspace(0.5, 2.0, VOCAB_SIZE, dtype=np.float32)
        want = np.zeros((3, VOCAB_SIZE), np.float32)
        want[0, [700, 801, 902]] = idf[[700, 801, 902]]
        want[1, 1500] = idf[1500]
        np.testing.assert_array_equal(q, want)  # [CLS] / [SEP] / padding never count


def test_inference_free_weights_default_to_ones():
    model = Splade.create(CONFIG, SpladeSpec(inference_free=True), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(model.query_weights[...], np.ones(VOCAB_SIZE, np.float32))


def test_chunk_size_changes_neither_vectors_nor_gradients():
    """The model's gradient (through the MLM head and the encoder) is the same chunked or not."""
    base = model_of("tied")
    graphdef, state = nnx.split(base)

    def grads(chunk):
        model = nnx.merge(graphdef, state)
        model.spec = dataclasses.replace(SPEC, chunk=chunk)
        weights = jnp.linspace(-1.0, 1.0, VOCAB_SIZE)

        def loss(m):
            return (m.encode_passages(IDS, MASK) * weights).sum()

        return nnx.jit(nnx.grad(loss))(model)

    chunked, whole = nnx.to_flat_state(grads(2)), dict(nnx.to_flat_state(grads(100)))
    for path, value in chunked:  # float32 sums in another order: atol 1e-5 of O(1) grads
        np.testing.assert_allclose(value[...], whole[path][...], rtol=1e-4, atol=1e-5)
    word = dict(chunked)[("document_encoder", "embeddings", "word", "embedding")][...]
    assert np.isfinite(np.asarray(word)).all() and float(jnp.abs(word).sum()) > 0


def test_inference_free_query_weights_get_gradients():
    model = model_of("inference_free")
    grads = nnx.jit(nnx.grad(lambda m: m.encode_queries(IDS, MASK).sum()))(model)
    g = np.asarray(grads["query_weights"][...])
    assert g[[700, 801, 902, 1500]].tolist() == [1.0, 1.0, 1.0, 1.0] and g.sum() == 4.0


def test_dropout_rngs_are_used_in_training():
    model = model_of("tied")
    dropped = model.encode_passages(IDS, MASK, rngs=nnx.Rngs(dropout=1))
    assert dropped.shape == (3, VOCAB_SIZE) and not np.allclose(
        dropped, model.encode_passages(IDS, MASK)
    )


def test_forward_prunes_passages_only():
    model = model_of("tied")
    graphdef, state = nnx.split(model)
    pruned = FORWARD["float32"](graphdef, state, IDS, MASK, role="passage", max_active_dims=7)
    query = FORWARD["float32"](graphdef, state, IDS, MASK, role="query", max_active_dims=7)
    assert (np.count_nonzero(np.asarray(pruned), axis=1) <= 7).all()
    np.testing.assert_allclose(query, encode(model, IDS, MASK, "query"), rtol=1e-5, atol=1e-6)
    full = np.asarray(encode(model, IDS, MASK))
    assert np.count_nonzero(full[0]) > 7
    np.testing.assert_allclose(np.sort(pruned[0])[-7:], np.sort(full[0])[-7:], rtol=1e-5)


def test_bad_construction_is_explained():
    with pytest.raises(ValueError, match=r"mlm_head=True"):
        Splade.create(CONFIG.replace(mlm_head=False), SPEC, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=rf"idf must be {VOCAB_SIZE} finite numbers"):
        Splade.create(CONFIG, SpladeSpec(inference_free=True), rngs=nnx.Rngs(0), idf=np.ones(3))
    with pytest.raises(ValueError, match="set inference_free"):
        Splade.create(CONFIG, SPEC, rngs=nnx.Rngs(0), idf=np.ones(VOCAB_SIZE))
    with pytest.raises(ValueError, match="leave tied=True"):
        SpladeSpec(inference_free=True, tied=False)
    with pytest.raises(ValueError, match="pooling must be one of"):
        SpladeSpec(pooling="mean")
    with pytest.raises(ValueError, match="chunk must be an int >= 1"):
        SpladeSpec(chunk=0)


# --------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("kind", ["tied", "untied", "inference_free"])
def test_save_load_round_trip(kind, tokenizer, tmp_path):
    model = model_of(kind)
    save_splade(model, tmp_path, tokenizer=tokenizer)
    assert is_splade_dir(tmp_path) and not is_splade_dir(tmp_path / "query")
    assert (tmp_path / "query" / "config.json").is_file() == (kind == "untied")
    assert (tmp_path / QUERY_WEIGHTS_FILE).is_file() == (kind == "inference_free")
    assert (tmp_path / "tokenizer.json").is_file()
    contract = json.loads((tmp_path / CONTRACT_FILE).read_text())
    assert contract["kind"] == "sparse" and contract["vocab_size"] == VOCAB_SIZE
    assert contract["tokenizer"]["vocab_size"] == VOCAB_SIZE

    loaded = load_splade_model(tmp_path)
    assert loaded.spec == model.spec and loaded.query_special_ids == model.query_special_ids
    for name in ("encode_passages", "encode_queries"):
        np.testing.assert_array_equal(
            getattr(loaded, name)(IDS, MASK), getattr(model, name)(IDS, MASK)
        )
    if kind == "inference_free":
        np.testing.assert_array_equal(loaded.query_weights[...], model.query_weights[...])


def test_transformers_loads_the_saved_directory(tokenizer, tmp_path):
    """The saved directory (and an untied query/) is a *ForMaskedLM checkpoint for transformers."""
    torch = pytest.importorskip("torch", reason="needs pretrained extra: torch")
    transformers = pytest.importorskip("transformers")
    model = model_of("untied", seed=4)  # only this test uses seed 4
    model.document_encoder.mlm.bias[...] = jnp.linspace(-1.0, 1.0, VOCAB_SIZE)  # not at init
    save_splade(model, tmp_path, tokenizer=tokenizer)
    for path, encoder in (
        (tmp_path, model.document_encoder),
        (tmp_path / "query", model.query_encoder),
    ):
        theirs = transformers.AutoModelForMaskedLM.from_pretrained(path).eval()
        assert type(theirs).__name__ == "BertForMaskedLM"
        with torch.no_grad():
            want = theirs(
                input_ids=torch.tensor(np.asarray(IDS[:2])),
                attention_mask=torch.tensor(np.asarray(MASK[:2])),
            ).logits.numpy()
        got = np.asarray(full_logits(encoder, IDS[:2], MASK[:2]))
        real = np.asarray(MASK[:2]).astype(bool)
        np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=0)
    assert len(transformers.AutoTokenizer.from_pretrained(tmp_path)) == VOCAB_SIZE


def test_saving_with_another_vocabulary_fails(tmp_path, tokenizer):
    small = Splade.create(PRESETS["tiny"], SPEC, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=rf"tokenizer has {VOCAB_SIZE} tokens but the model's MLM head has 128"
    ):
        save_splade(small, tmp_path, tokenizer=tokenizer)


def test_damaged_directories_are_named(tokenizer, tmp_path):
    save_splade(model_of("inference_free"), tmp_path, tokenizer=tokenizer)
    file = tmp_path / CONTRACT_FILE
    good = json.loads(file.read_text())

    def fails_with(obj, match):
        file.write_text(json.dumps(obj))
        with pytest.raises(DataError, match=match) as info:
            load_splade_model(tmp_path)
        assert str(file) in str(info.value) or str(tmp_path) in str(info.value)

    fails_with(good | {"spec": good["spec"] | {"chunk": "32"}}, r"field 'spec.chunk': expected int")
    fails_with(
        good | {"spec": good["spec"] | {"pooling": "mean"}}, r"field 'spec': pooling must be"
    )
    fails_with(good | {"spec": good["spec"] | {"heads": 2}}, r"unknown fields \['heads'\]")
    fails_with(good | {"format": "x"}, r"field 'format'")
    fails_with(
        good | {"vocab_size": 5},
        rf"field 'vocab_size': 5, but .*config.json has vocab_size {VOCAB_SIZE}",
    )
    fails_with(good | {"query_special_ids": [-1]}, r"field 'query_special_ids'")
    file.write_text(json.dumps(good))
    np.save(tmp_path / QUERY_WEIGHTS_FILE, np.ones(3, np.float32))
    with pytest.raises(
        DataError,
        match=rf"query_weights.npy: holds float32 \(3,\), expected float32 \({VOCAB_SIZE},\)",
    ):
        load_splade_model(tmp_path)
    (tmp_path / QUERY_WEIGHTS_FILE).unlink()
    with pytest.raises(DataError, match=r"query_weights.npy: not found"):
        load_splade_model(tmp_path)
    file.unlink()
    with pytest.raises(DataError, match=r"jaxir_splade.json: not found"):
        load_splade_model(tmp_path)
    assert hf.load_pretrained(tmp_path).mlm is not None  # still a plain HF checkpoint
