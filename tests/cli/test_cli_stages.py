"""The index / search / evaluate / export subcommands, run through ``jaxir.cli.main.main``."""

import json
import shutil

import numpy as np
import pytest

from jaxir.cli.main import main
from jaxir.data.negatives import bm25_search
from jaxir.data.records import load_beir, load_qrels, write_qrels
from jaxir.data.runs import read_trec_run
from jaxir.data.synthetic import write_collection
from jaxir.eval.evaluate import evaluate, format_table
from tests.search.tiny import bert_tokenizer, save_tiny_dual_encoder


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """A tiny BEIR collection, a saved tiny dual encoder and its corpus embeddings."""
    root = tmp_path_factory.mktemp("stages")
    tokenizer = bert_tokenizer(root / "vocab")
    beir = write_collection(root / "beir", num_topics=8, num_train_queries=2, num_test_queries=6)
    model = save_tiny_dual_encoder(root / "model", tokenizer)
    encode = ["encode", "--model", str(model / "query"), "--data", str(beir)]
    flags = ["--pooling", "mean", "--normalize", "--max-length", "32", "--out", str(root / "emb")]
    assert main([*encode, *flags]) == 0
    return root


def test_encode_split_documents_writes_passage_rows(stage, capsys):
    model, beir = stage / "model" / "query", stage / "beir"
    args = ["encode", "--model", str(model), "--data", str(beir), "--max-length", "16"]
    assert main([*args, "--out", str(stage / "emb_split"), "--split-documents"]) == 0
    ids = (stage / "emb_split" / "ids-00000.txt").read_text().split()
    assert len(ids) > len(set(ids)) == 24  # every document, the longer ones in passages
    capsys.readouterr()
    assert main([*args, "--out", str(stage / "q"), "--what", "queries", "--split-documents"]) == 1
    assert "--split-documents applies to --what corpus only" in capsys.readouterr().err


def test_encode_settings_default_to_the_models_contract(stage, capsys):
    from jaxir.encode import load_embeddings

    args = ["encode", "--model", str(stage / "model"), "--data", str(stage / "beir")]
    assert main([*args, "--out", str(stage / "emb_contract")]) == 0  # passages: passage role
    got, want = load_embeddings(stage / "emb_contract"), load_embeddings(stage / "emb")
    assert got.manifest["encoder"] == want.manifest["encoder"]  # the flags the fixture gave
    np.testing.assert_array_equal(got.vectors, want.vectors)
    assert main([*args, "--what", "queries", "--out", str(stage / "q_contract")]) == 0
    settings = load_embeddings(stage / "q_contract").manifest["encoder"]
    assert (settings["max_length"], settings["normalize"]) == (16, True)  # the query role
    assert main([*args, "--no-normalize", "--out", str(stage / "emb_plain")]) == 0  # flags win
    assert load_embeddings(stage / "emb_plain").manifest["encoder"]["normalize"] is False
    # Searching those with the model's query role is refused, naming the store's field.
    index = [
        "index",
        str(stage / "emb_plain"),
        "--out",
        str(stage / "idx_plain"),
        "--kind",
        "exact",
    ]
    assert main(index) == 0
    parts = ["--model", str(stage / "model"), "--index", str(stage / "idx_plain")]
    parts += ["--embeddings", str(stage / "emb_plain"), *batch_flags(stage, stage / "plain.trec")]
    capsys.readouterr()
    assert main(["search", *parts]) == 1
    assert 'emb_plain/manifest.json: field "encoder.normalize" is False' in capsys.readouterr().err


def test_index_reports_recall_and_build_time(stage, capsys):
    assert main(["index", str(stage / "emb"), "--out", str(stage / "idx"), "--kind", "exact"]) == 0
    out = capsys.readouterr().out
    assert "exact searcher over 24 x 32 vectors" in out and "build + save:" in out
    assert "recall@10 vs exact: 1.0000 (24 stored vectors as queries" in out
    assert (stage / "idx" / "searcher.json").is_file()


def test_index_scann_with_query_embeddings(stage, capsys):
    pytest.importorskip("scann")
    pytest.importorskip("jaxir.index.scann_index")
    args = ["index", str(stage / "emb"), "--out", str(stage / "scann"), "--num-leaves", "2"]
    assert main([*args, "-k", "5", "--queries-embeddings", str(stage / "emb")]) == 0
    out = capsys.readouterr().out
    assert "scann searcher over 24 x 32" in out and "recall@5 vs exact:" in out
    assert "24 queries from" in out


@pytest.fixture(scope="module")
def bundle(stage):
    """An exact-index bundle with the corpus, written by ``jaxir export``."""
    out = stage / "bundle"
    args = ["export", str(stage / "model"), "--embeddings", str(stage / "emb")]
    corpus = str(stage / "beir" / "corpus.jsonl")
    assert main([*args, "--out", str(out), "--index", "exact", "--corpus", corpus]) == 0
    return out


def batch_flags(stage, run):
    qrels = stage / "beir" / "qrels" / "test.tsv"
    return ["--queries", str(stage / "beir"), "--qrels", str(qrels), "--out", str(run), "-k", "20"]


def test_search_a_bundle(stage, bundle, capsys):
    assert (
        main(["search", str(bundle), "who was born in a fishing village", "cats", "-k", "3"]) == 0
    )
    out = capsys.readouterr().out
    assert out.count("query: ") == 2 and out.count("\n    1  doc") == 2
    lines = [line for line in out.splitlines() if line.startswith("    3  doc")]
    assert len(lines) == 2 and all(len(line.split()) > 3 for line in lines)  # text shown

    run = stage / "bundle.trec"
    assert main(["search", str(bundle), *batch_flags(stage, run)]) == 0
    assert "6 queries, top 20" in capsys.readouterr().out
    assert sorted(read_trec_run(run)) == sorted(load_qrels(stage / "beir" / "qrels" / "test.tsv"))


def test_search_from_parts_equals_bundle(stage, bundle, capsys):
    assert main(["index", str(stage / "emb"), "--out", str(stage / "idx"), "--kind", "exact"]) == 0
    parts = ["--model", str(stage / "model"), "--index", str(stage / "idx")]
    parts += ["--embeddings", str(stage / "emb")]
    assert main(["search", *parts, *batch_flags(stage, stage / "parts.trec")]) == 0
    assert main(["search", str(bundle), *batch_flags(stage, stage / "b.trec")]) == 0
    got, want = read_trec_run(stage / "parts.trec"), read_trec_run(stage / "b.trec")
    assert {q: list(d) for q, d in got.items()} == {q: list(d) for q, d in want.items()}
    capsys.readouterr()


def test_search_fuses_several_bundles(stage, bundle, capsys):
    twin = stage / "bundle_twin"
    if not twin.exists():
        shutil.copytree(bundle, twin)
    single, fused = stage / "single.trec", stage / "fused.trec"
    assert main(["search", str(bundle), *batch_flags(stage, single)]) == 0
    fuse = ["--fuse", "rrf", "--fuse-depth", "20"]
    assert main(["search", str(bundle), str(twin), *fuse, *batch_flags(stage, fused)]) == 0
    want, got = read_trec_run(single), read_trec_run(fused)
    # RRF of one ranking with itself is that ranking.
    assert {q: list(d) for q, d in got.items()} == {q: list(d) for q, d in want.items()}
    capsys.readouterr()
    assert main(["search", str(bundle), "cats", "--fuse", "rrf"]) == 1
    assert "bundle" in capsys.readouterr().err


def test_export_from_a_train_workdir(stage, capsys):
    work = stage / "work"
    shutil.copytree(stage / "model", work / "model")
    shutil.copytree(stage / "emb", work / "embeddings")
    assert main(["export", str(work), "--out", str(stage / "b2"), "--index", "exact"]) == 0
    out = capsys.readouterr().out
    assert f"{work / 'model'} + {work / 'embeddings'}" in out
    assert "24 documents, dense, dim 32, exact index" in out
    assert main(["export", str(stage / "model"), "--out", str(stage / "b3")]) == 1
    assert "--embeddings is required" in capsys.readouterr().err


def test_evaluate_prints_the_table(stage, capsys):
    run = stage / "run.trec"
    run.write_text("q0002 Q0 doc00001 1 2.0 t\nq0002 Q0 doc00002 2 1.0 t\n")
    qrels = stage / "beir" / "qrels" / "test.tsv"
    assert main(["evaluate", "--run", str(run), "--qrels", str(qrels)]) == 0
    want = format_table({"run": evaluate(run, qrels, ["nDCG@10", "RR@10", "R@100", "AP"])})
    assert capsys.readouterr().out == want + "\n"
    args = ["evaluate", "--run", str(run), "--qrels", str(qrels), "--metrics", "P@5,nDCG@3"]
    assert main([*args, "--json", str(stage / "m.json")]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["system", "P@5", "nDCG@3"]
    assert main(["evaluate", "--run", str(run), "--qrels", str(qrels), "--metrics", "bogus"]) == 1
    assert "'bogus' is not an ir_measures measure" in capsys.readouterr().err


def test_evaluate_a_model_equals_searching_its_bundle(stage, bundle, capsys):
    """Model mode scores what ``jaxir search`` of the exact bundle retrieves to depth 100."""
    beir, qrels = stage / "beir", stage / "beir" / "qrels" / "test.tsv"
    flags = ["--data", str(beir), "--store", str(stage / "emb"), "--json", str(stage / "e.json")]
    assert main(["evaluate", str(stage / "model"), *flags]) == 0
    out = capsys.readouterr().out
    assert "Searching 6 test queries (exact (on device))" in out and "sparsity" not in out
    run = stage / "exact100.trec"
    batch = ["--queries", str(beir), "--qrels", str(qrels), "--out", str(run), "-k", "100"]
    assert main(["search", str(bundle), *batch]) == 0
    want = evaluate(run, qrels, ["nDCG@10", "RR@10", "R@100", "AP"])
    got = json.loads((stage / "e.json").read_text())["model"]
    assert got == pytest.approx(want, abs=1e-9)
    assert main(["evaluate", str(stage / "model")]) == 1
    assert "--data is required" in capsys.readouterr().err
    assert main(["evaluate", str(stage / "model"), "--run", str(run), "--data", str(beir)]) == 1
    assert "not both" in capsys.readouterr().err


def test_search_usage_errors(stage, bundle, capsys):
    assert main(["search", "--queries", str(stage / "beir"), "--out", str(stage / "x.trec")]) == 1
    assert "--model, --index, --embeddings are needed" in capsys.readouterr().err
    assert main(["search", str(stage / "nope"), "query"]) == 1
    assert "nope: no such bundle directory" in capsys.readouterr().err
    assert main(["search", str(stage / "bundle")]) == 1
    assert "give query texts" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["index", "search", "evaluate", "export"])
def test_help_explains_inputs_outputs_and_example(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "Example" in text and "usage: jaxir " + command in text


def test_export_hf_copies_the_tied_tower_without_jaxir_files(stage, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "hf"
    assert main(["export", str(stage / "model"), "--format", "hf", "--out", str(out)]) == 0
    assert "hf: one tower" in capsys.readouterr().out
    assert not (out / "jaxir_encoder.json").exists()
    assert transformers.AutoModel.from_pretrained(out).config.hidden_size == 32
    assert main(["export", str(stage / "model"), "--format", "hf", "--out", str(out)]) == 1
    assert "exists and is not empty" in capsys.readouterr().err


def test_evaluate_bm25_writes_the_baseline_run(stage, capsys):
    """``--bm25`` scores bm25s like a model, on a split or a qrels file, and writes its run."""
    beir, run = stage / "beir", stage / "bm25.trec"
    args = ["evaluate", "--bm25", "--data", str(beir)]
    assert main([*args, "--out", str(run), "--json", str(stage / "b.json")]) == 0
    assert "BM25 over 24 documents, 6 test queries" in capsys.readouterr().out
    test = load_beir(beir, "test")
    want, got = bm25_search(test.corpus, test.queries, k=100), read_trec_run(run)
    assert got.keys() == want.keys()
    assert all(got[qid] == pytest.approx(docs, rel=1e-6) for qid, docs in want.items())
    scores = json.loads((stage / "b.json").read_text())["bm25"]
    assert scores == pytest.approx(evaluate(run, test.qrels, ["nDCG@10", "RR@10", "R@100", "AP"]))
    # A qrels file (e.g. a training run's dev_qrels.tsv) as the split: its queries only.
    two = dict(list(test.qrels.items())[:2])
    write_qrels(two, stage / "two.tsv")
    assert main([*args, "--out", str(run), "--split", str(stage / "two.tsv")]) == 0
    assert read_trec_run(run).keys() == two.keys()
    capsys.readouterr()
    assert main([*args, "--split", str(stage / "nope.tsv")]) == 1
    assert "nope.tsv: no such qrels file" in capsys.readouterr().err
    assert main([*args, "--store", str(stage / "emb")]) == 1
    assert "--bm25 indexes the corpus itself" in capsys.readouterr().err
    assert main([*args, str(stage / "model")]) == 1
    assert "or --bm25, not both" in capsys.readouterr().err
    assert main(["evaluate", "--bm25"]) == 1
    assert "--data is required to evaluate BM25" in capsys.readouterr().err
