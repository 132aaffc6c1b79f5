"""The SPLADE path through the CLI: encode -> index -> evaluate -> export (bundle, Anserini, Seismic) -> search.

Every command runs on a train-workdir layout (``model/`` a saved tiny SPLADE model,
``config.json`` naming the collection) and is checked against a direct computation on
the same vectors: float64 brute force ``X @ q`` for the search results and scores,
:func:`jaxir.eval.evaluate` for the measures, the store's matrix for the exports.
"""

import json
import shutil

import numpy as np
import pytest
from flax import nnx

from jaxir.cli.main import main
from jaxir.data.records import load_beir
from jaxir.data.synthetic import write_collection
from jaxir.eval.evaluate import evaluate
from jaxir.eval.sparsity import sparsity_stats
from jaxir.export import BundleError, export_bundle, load_bundle
from jaxir.models.bert import PRESETS
from jaxir.models.splade import Splade, SpladeSpec, save_splade
from jaxir.sparse_encode import load_splade
from jaxir.sparse_export import read_anserini, read_seismic
from jaxir.sparse_store import load_sparse_store
from tests.fixtures import VOCAB_SIZE, vocab_tokenizer

METRICS = ["nDCG@10", "RR@10", "R@100", "AP"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """``model/`` (tiny SPLADE, documents pruned to 12 terms), ``config.json``, a BEIR collection."""
    root = tmp_path_factory.mktemp("splade-cli")
    tokenizer = vocab_tokenizer(root / "vocab")
    spec = SpladeSpec(query_max_length=8, passage_max_length=24, max_active_dims=12)
    config = PRESETS["tiny"].replace(vocab_size=VOCAB_SIZE, num_layers=1)
    save_splade(Splade.create(config, spec, rngs=nnx.Rngs(0)), root / "model", tokenizer=tokenizer)
    beir = write_collection(root / "beir", num_topics=6, num_train_queries=2, num_test_queries=5)
    (root / "config.json").write_text(json.dumps({"data": {"path": str(beir)}}))
    encode = ["encode", "--model", str(root), "--data", str(beir)]
    assert main([*encode, "--out", str(root / "store")]) == 0
    assert not main(
        ["encode", "--model", str(root), "--data", str(beir), "--out", str(root / "store")]
    )
    return root


def brute_force(run_dir, texts, k):
    """``(scores, rows)`` of float64 ``X @ q`` over the store, ties by row (the reference)."""
    store = load_sparse_store(run_dir / "store")
    queries = load_splade(run_dir / "model", role="query").encode(texts)
    scores_qn = (queries.astype(np.float64) @ store.matrix.astype(np.float64).T).toarray()
    order = np.argsort(-scores_qn, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores_qn, order, 1), order


def test_index_inverted_reports_recall_against_exact(run_dir, capsys):
    capsys.readouterr()
    args = ["index", str(run_dir / "store"), "--out", str(run_dir / "idx-float"), "-k", "5"]
    assert main([*args, "--float-impacts", "--no-term-postings", "--alpha", "0.5"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((run_dir / "idx-float" / "searcher.json").read_text())
    assert not saved["quantized"] and not saved["term_postings"]
    assert "inverted searcher over 18 x " in out and "sparse vectors" in out
    assert "recall@5 vs exact (exact mode): 1.0000 (18 stored vectors as queries" in out
    assert "recall@5 vs exact (approx mode, alpha 0.5):" in out
    # Default: uint8 impacts, queries from a query store; recall is printed for both modes.
    beir = run_dir / "beir"
    queries = ["encode", "--model", str(run_dir), "--data", str(beir), "--what", "queries"]
    assert main([*queries, "--out", str(run_dir / "qstore")]) == 0
    args = ["index", str(run_dir / "store"), "--out", str(run_dir / "idx"), "--kind", "inverted"]
    assert main([*args, "--queries-embeddings", str(run_dir / "qstore")]) == 0
    out = capsys.readouterr().out
    assert "recall@10 vs exact (exact mode):" in out and "queries from" in out
    saved = json.loads((run_dir / "idx" / "searcher.json").read_text())
    assert saved["kind"] == "inverted" and saved["term_postings"]


def test_index_refuses_flags_and_kinds_of_other_stores(run_dir, capsys):
    capsys.readouterr()
    store = str(run_dir / "store")
    assert main(["index", store, "--out", str(run_dir / "x"), "--num-leaves", "4"]) == 1
    assert "--num-leaves: only for --kind scann, not inverted" in capsys.readouterr().err
    assert main(["index", store, "--out", str(run_dir / "x"), "--kind", "scann"]) == 1
    assert "a 'sparse' store is indexed by ['inverted'], not 'scann'" in capsys.readouterr().err


def test_evaluate_a_splade_run_equals_brute_force(run_dir, tmp_path, capsys):
    """Model mode on a run without a store: it encodes one, scores exactly, reports sparsity."""
    work = tmp_path / "run"
    shutil.copytree(run_dir / "model", work / "model")
    beir = run_dir / "beir"
    flags = ["--data", str(beir), "--split", "test", "--json", str(tmp_path / "m.json")]
    assert main(["evaluate", str(work), *flags, "--out", str(tmp_path / "run.trec")]) == 0
    out = capsys.readouterr().out
    assert f"Encoding 18 documents into {work / 'store'}" in out
    assert "exact (inverted, float32)" in out and "non-zeros per query" in out
    got = json.loads((tmp_path / "m.json").read_text())["run"]

    test = load_beir(beir, "test")
    scores, rows = brute_force(run_dir, [q.full_text for q in test.queries.values()], 100)
    ids = load_sparse_store(work / "store").ids
    want_run = {
        qid: {ids[r]: float(s) for r, s in zip(rows[i], scores[i])}
        for i, qid in enumerate(test.queries)
    }
    assert {m: got[m] for m in METRICS} == pytest.approx(evaluate(want_run, test.qrels, METRICS))
    queries = load_splade(work / "model", role="query").encode(
        [q.full_text for q in test.queries.values()]
    )
    stats = sparsity_stats(queries, load_sparse_store(work / "store").matrix)
    assert {k: got[k] for k in stats} == pytest.approx(stats)
    assert got["document_nnz"] <= 12  # max_active_dims
    assert (tmp_path / "run.trec").is_file()


def test_export_bundle_and_search_it(run_dir, capsys):
    capsys.readouterr()
    out = run_dir / "bundle"
    corpus = str(run_dir / "beir" / "corpus.jsonl")
    assert main(["export", str(run_dir), "--out", str(out), "--corpus", corpus]) == 0
    printed = capsys.readouterr().out
    assert "18 documents, sparse, dim" in printed and "inverted index" in printed
    bundle = load_bundle(out)
    assert bundle.kind == "sparse" and bundle.manifest["index"]["kind"] == "inverted"
    texts = ["a fishing village", "cats and dogs"]
    results = bundle.search(texts, k=4)
    # The bundle scores the index's uint8 impacts: compare with brute force over those.
    queries = bundle.encoder.encode(texts)
    impacts_qn = queries.astype(np.float64) @ bundle.searcher.to_csr().astype(np.float64).T
    order = np.argsort(-impacts_qn.toarray(), axis=1, kind="stable")[:, :4]
    assert [[doc for doc, _ in r] for r in results] == [
        [bundle.doc_ids[i] for i in row] for row in order
    ]
    assert main(["search", str(out), "a fishing village", "-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n    1  doc") == 1 and results[0][0][0] in printed


def test_export_anserini_and_seismic_read_back(run_dir, capsys):
    store = load_sparse_store(run_dir / "store")
    test_queries = load_beir(run_dir / "beir", "test").queries
    want_q = load_splade(run_dir / "model", role="query").encode(
        [q.full_text for q in test_queries.values()]
    )
    out = run_dir / "anserini"
    args = ["export", str(run_dir), "--format", "anserini", "--out", str(out), "--split", "test"]
    assert main([*args, "--quantization", "50"]) == 0
    assert "18 documents, 5 queries" in capsys.readouterr().out
    ids, matrix, query_ids, queries = read_anserini(out)
    assert ids == store.ids and query_ids == list(test_queries)
    assert abs(matrix - store.matrix).max() <= 0.5 / 50 + 1e-6
    assert abs(queries - want_q).max() <= 0.5 / 50 + 1e-6

    out = run_dir / "seismic"
    assert main(["export", str(run_dir), "--format", "seismic", "--out", str(out)]) == 0
    ids, matrix, query_ids, queries = read_seismic(out)
    assert ids == store.ids and (matrix != store.matrix).nnz == 0
    assert len(query_ids) == 2 + 5  # every query of the run's collection (config.json)


def test_export_usage_errors(run_dir, tmp_path, capsys):
    capsys.readouterr()
    assert main(["export", str(run_dir), "--out", str(tmp_path / "b"), "--split", "test"]) == 1
    assert "--split: only for --format anserini or seismic" in capsys.readouterr().err
    work = tmp_path / "no-config"
    shutil.copytree(run_dir / "model", work / "model")
    shutil.copytree(run_dir / "store", work / "store")
    assert main(["export", str(work), "--format", "seismic", "--out", str(tmp_path / "s")]) == 1
    assert "no queries to export" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                str(work),
                "--format",
                "seismic",
                "--out",
                str(tmp_path / "s"),
                "--no-queries",
            ]
        )
        == 0
    )


def test_export_bundle_refuses_a_store_of_another_model(run_dir, tmp_path):
    tokenizer = vocab_tokenizer(tmp_path / "vocab")
    spec = SpladeSpec(pooling="sum", query_max_length=8, passage_max_length=24)
    config = PRESETS["tiny"].replace(vocab_size=VOCAB_SIZE, num_layers=1)
    save_splade(
        Splade.create(config, spec, rngs=nnx.Rngs(1)), tmp_path / "sum", tokenizer=tokenizer
    )
    with pytest.raises(BundleError, match="field \"encoder.pooling\" is 'max' but the model"):
        export_bundle(tmp_path / "sum", run_dir / "store", tmp_path / "b")
    with pytest.raises(BundleError, match="index='exact'.*indexed by \\['inverted'\\]"):
        export_bundle(run_dir / "model", run_dir / "store", tmp_path / "b", index="exact")
    assert not (tmp_path / "b").exists()


def test_export_hf_writes_a_plain_masked_lm_directory(run_dir, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "hf"
    assert main(["export", str(run_dir), "--format", "hf", "--out", str(out)]) == 0
    assert "load with transformers" in capsys.readouterr().out
    assert not (out / "jaxir_splade.json").exists() and (out / "config.json").is_file()
    model = transformers.AutoModelForMaskedLM.from_pretrained(out)
    assert model.config.vocab_size == VOCAB_SIZE
    assert main(["export", str(run_dir), "--format", "hf", "--out", str(out), "--split", "x"]) == 1
    assert "--split: only for --format anserini or seismic" in capsys.readouterr().err
