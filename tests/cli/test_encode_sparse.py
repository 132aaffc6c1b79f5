"""``jaxir encode`` of a SPLADE model writes a sparse store equal to ``load_splade(...).encode``."""

import numpy as np
import pytest
from flax import nnx

from jaxir.cli.main import main
from jaxir.data.records import load_corpus, load_queries
from jaxir.data.synthetic import write_collection
from jaxir.models.bert import PRESETS
from jaxir.models.splade import Splade, SpladeSpec, save_splade
from jaxir.sparse_encode import load_splade
from jaxir.sparse_store import load_sparse_store
from tests.fixtures import VOCAB_SIZE, vocab_tokenizer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A train workdir layout: ``model/`` is a saved tiny SPLADE model; and a BEIR collection."""
    root = tmp_path_factory.mktemp("splade-run")
    tokenizer = vocab_tokenizer(root / "vocab")
    spec = SpladeSpec(query_max_length=8, passage_max_length=24, max_active_dims=12)
    config = PRESETS["tiny"].replace(vocab_size=VOCAB_SIZE, num_layers=1)
    save_splade(Splade.create(config, spec, rngs=nnx.Rngs(0)), root / "model", tokenizer=tokenizer)
    write_collection(root / "beir", num_topics=4, num_train_queries=2, num_test_queries=3)
    return root


@pytest.mark.parametrize("what", ["corpus", "queries"])
def test_encode_writes_a_sparse_store(run_dir, what, capsys):
    out = run_dir / f"store-{what}"
    args = ["encode", "--model", str(run_dir), "--data", str(run_dir / "beir"), "--what", what]
    assert main([*args, "--out", str(out)]) == 0
    assert "sparse, vocabulary" in capsys.readouterr().out
    store = load_sparse_store(out)
    beir = run_dir / "beir"
    records = load_corpus(beir) if what == "corpus" else load_queries(beir)
    texts = [r.full_text if what == "corpus" else r.text for r in records.values()]
    role = "passage" if what == "corpus" else "query"
    want = load_splade(run_dir / "model").encode(texts, role=role)
    assert store.ids == list(records)
    np.testing.assert_allclose(store.matrix.toarray(), want.toarray(), rtol=1e-5, atol=1e-6)
    assert store.matrix.getnnz(axis=1).max() <= (12 if what == "corpus" else VOCAB_SIZE)


def test_dense_only_flags_are_refused_for_a_splade_model(run_dir, capsys):
    args = ["encode", "--model", str(run_dir / "model"), "--data", str(run_dir / "beir")]
    assert main([*args, "--out", str(run_dir / "x"), "--normalize"]) == 1
    assert "--normalize: not for a SPLADE model" in capsys.readouterr().err
