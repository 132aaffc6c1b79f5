"""``jaxir.load_splade`` / ``SparseEncoder``: paths it accepts, bad input, order, pruning, decode."""

import json

import numpy as np
import pytest
import scipy.sparse
import transformers
from flax import nnx

import jaxir
from jaxir.data.errors import DataError
from jaxir.models import hf
from jaxir.models.bert import PRESETS, Model
from jaxir.models.splade import Splade, SpladeSpec, save_splade
from jaxir.sparse_encode import SparseEncoder, load_splade
from tests.fixtures import VOCAB_SIZE, vocab_tokenizer

CONFIG = PRESETS["tiny"].replace(vocab_size=VOCAB_SIZE, num_layers=1)
TEXTS = [
    "protein folding",
    "a much longer passage about protein folding and the structure of proteins in cells " * 3,
    "",
    "cells",
    "the structure of proteins",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return vocab_tokenizer(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, tokenizer):
    """A plain Hugging Face BertForMaskedLM directory (jaxir-written) with the test tokenizer."""
    path = tmp_path_factory.mktemp("hf-mlm")
    hf.save_pretrained(Model(CONFIG, rngs=nnx.Rngs(0)), path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def encoder(hf_dir):
    return load_splade(hf_dir)


def test_plain_checkpoint_defaults(encoder):
    assert isinstance(encoder, SparseEncoder) and encoder.vocab_size == VOCAB_SIZE
    assert encoder.spec.pooling == "max" and encoder.spec.tied and not encoder.spec.inference_free
    assert encoder.max_lengths == {"query": 64, "passage": 64}  # the tiny preset's 64 positions
    description = encoder.describe()
    assert json.loads(json.dumps(description)) == description
    assert description["kind"] == "sparse" and description["max_length"] == 64
    assert description["max_active_dims"] == 0 and description["dtype"] == "float32"
    assert jaxir.load_splade is load_splade


def test_rows_come_back_in_input_order(encoder):
    together = encoder.encode(TEXTS, batch_size=2)  # sorted by length, bucketed
    assert together.shape == (len(TEXTS), VOCAB_SIZE) and together.dtype == np.float32
    assert isinstance(together, scipy.sparse.csr_matrix) and (together.data != 0).all()
    for i, text in enumerate(TEXTS):
        alone = encoder.encode([text], batch_size=1)
        np.testing.assert_allclose(together[i].toarray(), alone.toarray(), rtol=1e-5, atol=1e-6)
    assert together.getnnz(axis=1).min() > 0  # the empty string encodes as [CLS] [SEP]


def test_empty_inputs(encoder):
    empty = encoder.encode([])
    assert empty.shape == (0, VOCAB_SIZE) and isinstance(empty, scipy.sparse.csr_matrix)
    with pytest.raises(TypeError, match="not one string"):
        encoder.encode("protein")
    with pytest.raises(ValueError, match="role must be one of"):
        encoder.encode(["x"], role="document")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        encoder.encode(["x"], batch_size=0)


def test_decode_lists_heaviest_terms(encoder, tokenizer):
    vecs = encoder.encode(TEXTS[:2])
    dense = vecs[0].toarray()[0]
    top = encoder.decode(vecs[0], top=5)
    ids = np.argsort(-dense, kind="stable")[:5]
    assert top == [(tokenizer.convert_ids_to_tokens(int(i)), float(dense[i])) for i in ids]
    assert encoder.decode(dense, top=5) == top  # a dense row decodes alike
    assert len(encoder.decode(vecs[1], top=None)) == vecs[1].nnz
    assert encoder.decode(scipy.sparse.csr_matrix((1, VOCAB_SIZE), dtype=np.float32)) == []
    assert encoder.decode(np.zeros(VOCAB_SIZE)) == []
    assert encoder.terms[:3] == tokenizer.convert_ids_to_tokens([0, 1, 2])
    assert len(encoder.terms) == VOCAB_SIZE
    with pytest.raises(ValueError, match=f"expected one row of {VOCAB_SIZE} columns"):
        encoder.decode(vecs)


def test_max_active_dims_prunes_documents_not_queries(hf_dir, encoder):
    pruned = load_splade(hf_dir, max_active_dims=6)
    assert pruned.describe()["max_active_dims"] == 6
    docs = pruned.encode(TEXTS)
    full = encoder.encode(TEXTS).toarray()
    assert docs.getnnz(axis=1).max() == 6
    for row, want in zip(docs.toarray(), full):
        np.testing.assert_allclose(np.sort(row)[-6:], np.sort(want)[-6:], rtol=1e-6)
    queries = pruned.encode_queries(TEXTS)
    np.testing.assert_allclose(queries.toarray(), full, rtol=1e-5, atol=1e-6)


def test_checkpoint_without_mlm_head_is_refused(tmp_path, tokenizer):
    hf.save_pretrained(Model(CONFIG.replace(mlm_head=False), rngs=nnx.Rngs(0)), tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="has no MLM head") as info:
        load_splade(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "*ForMaskedLM" in message and "BertForMaskedLM" in message
    assert "fresh_head" in message


def test_vocabulary_mismatch_names_both_sizes(tmp_path, tokenizer):
    hf.save_pretrained(Model(PRESETS["tiny"], rngs=nnx.Rngs(0)), tmp_path)  # 128 tokens
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(
        ValueError, match=rf"the tokenizer has {VOCAB_SIZE} tokens, but the MLM head"
    ) as info:
        load_splade(tmp_path)
    assert "scores 128" in str(info.value) and str(tmp_path) in str(info.value)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not a SPLADE model.*model/"):
        load_splade(tmp_path)


def test_saved_model_in_a_run_workdir(tmp_path, tokenizer):
    """A training run's workdir (model/ inside): spec, prefixes and pruning come from the contract."""
    spec = SpladeSpec(
        inference_free=True,
        query_max_length=8,
        passage_max_length=24,
        query_prefix="query: ",
        max_active_dims=10,
    )
    idf = np.linspace(0.1, 3.0, VOCAB_SIZE).astype(np.float32)
    model = Splade.create(
        CONFIG, spec, rngs=nnx.Rngs(1), idf=idf, special_token_ids=tokenizer.all_special_ids
    )
    save_splade(model, tmp_path / "model", tokenizer=tokenizer)
    (tmp_path / "config.json").write_text(
        '{"name": "splade_tiny", "family": "splade"}'
    )  # the run's
    encoder = load_splade(tmp_path)
    assert encoder.spec == spec and encoder.max_lengths == {"query": 8, "passage": 24}
    assert encoder.describe()["inference_free"] is True
    queries = encoder.encode_queries(["protein protein folding", ""])
    for row, text in enumerate(["query: protein protein folding", "query: "]):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # [CLS] / [SEP] never count
        want = np.zeros(VOCAB_SIZE, np.float32)
        want[ids] = idf[ids]
        np.testing.assert_allclose(queries[row].toarray()[0], want, rtol=1e-6)
    encoder.model.spec = spec.replace(query_prefix="")
    empty = encoder.encode_queries([""])
    assert empty.nnz == 0 and encoder.decode(empty[0]) == []  # all-zero: an empty row
    docs = encoder.encode_documents(TEXTS)
    assert docs.getnnz(axis=1).max() <= 10 and np.isfinite(docs.data).all()
    # An explicit argument wins over the contract.
    assert load_splade(tmp_path, max_active_dims=0).encode(TEXTS[:1]).nnz > 10


def test_prefix_is_prepended(encoder, tokenizer):
    spec = SpladeSpec(query_prefix="protein ", query_max_length=32, passage_max_length=32)
    model = Splade(encoder.model.document_encoder, None, None, spec)
    prefixed = SparseEncoder(model, tokenizer).encode_queries(["folding"])
    plain = encoder.encode(["protein folding"])
    np.testing.assert_allclose(prefixed.toarray(), plain.toarray(), rtol=1e-5, atol=1e-6)


def test_tokenizer_that_disagrees_with_the_contract(tmp_path, tokenizer):
    model = Splade.create(CONFIG, SpladeSpec(passage_max_length=32), rngs=nnx.Rngs(0))
    save_splade(model, tmp_path, tokenizer=tokenizer)
    cased = transformers.BertTokenizerFast.from_pretrained(tmp_path, do_lower_case=False)
    cased.save_pretrained(tmp_path)
    with pytest.raises(DataError, match=r"jaxir_splade.json: tokenizer disagrees.*lowercase"):
        load_splade(tmp_path)


def test_non_finite_weights_raise_naming_the_text(hf_dir, tokenizer):
    broken = load_splade(hf_dir)
    broken.model.document_encoder.mlm.bias[...] = np.full(VOCAB_SIZE, np.nan, np.float32)
    with pytest.raises(ValueError, match=r"text #0: the model produced non-finite weights"):
        broken.encode(TEXTS[:1])


def test_max_length_beyond_the_positions_is_refused(hf_dir):
    with pytest.raises(ValueError, match=r"max_length=65 is out of range.*1\.\.64"):
        load_splade(hf_dir, max_length=65)


def test_a_query_role_encoder_encodes_queries_by_default(hf_dir):
    queries = load_splade(hf_dir, max_active_dims=6, role="query")
    assert queries.role == "query" and queries.dim == queries.vocab_size
    np.testing.assert_array_equal(
        queries.encode(TEXTS).toarray(), queries.encode_queries(TEXTS).toarray()
    )
    assert queries.encode(TEXTS, role="passage").getnnz(axis=1).max() == 6
    with pytest.raises(ValueError, match="role must be one of"):
        load_splade(hf_dir, role="title")
