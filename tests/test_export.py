"""Serving bundles: export/load round trip, verification errors, version handling."""

import json
import shutil

import numpy as np
import pytest

from jaxir.data.synthetic import make_collection
from jaxir.encode import encode_corpus, load_encoder
from jaxir.export import BUNDLE_VERSION, BundleError, export_bundle, load_bundle
from jaxir.index import load_searcher
from jaxir.reps.contract import read_contract
from jaxir.search import dense_search_run, retrieve, tower_encoders
from tests.search.tiny import bert_tokenizer, save_tiny_dual_encoder, tiny_dual_encoder


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A saved tiny dual encoder, its embedding store and the collection."""
    root = tmp_path_factory.mktemp("export")
    tokenizer = bert_tokenizer(root / "vocab")
    model_dir = save_tiny_dual_encoder(root / "model", tokenizer)
    beir = make_collection(root / "beir", num_topics=8, num_train_queries=0, num_test_queries=6)
    model = tiny_dual_encoder()
    query_enc, passage_enc = tower_encoders(model, tokenizer)
    store = encode_corpus(passage_enc, beir.corpus.values(), root / "emb", progress=False)
    return model_dir, store, beir, query_enc, tokenizer, model


@pytest.fixture(scope="module")
def exact_bundle(parts, tmp_path_factory):
    model_dir, store, _beir, *_ = parts
    out = tmp_path_factory.mktemp("bundles") / "exact"
    corpus = beir_corpus_file(parts)
    return export_bundle(
        model_dir, store.path, out, index="exact", metrics={"nDCG@10": 0.5}, corpus=corpus
    )


def assert_same_run(got, want):
    assert list(got) == list(want)
    for qid in want:
        assert list(got[qid]) == list(want[qid])
        np.testing.assert_allclose(list(got[qid].values()), list(want[qid].values()), atol=1e-5)


def beir_corpus_file(parts):
    return parts[1].path.parent / "beir" / "corpus.jsonl"


def test_round_trip_equals_direct_search(parts, exact_bundle):
    _, store, beir, query_enc, *_ = parts
    bundle = load_bundle(exact_bundle)
    direct = retrieve(query_enc, load_searcher(exact_bundle / "index"), store.ids, beir.queries, 5)
    assert_same_run(bundle.search_run(beir.queries, k=5), direct)
    texts = [q.full_text for q in beir.queries.values()]
    pairs = bundle.search(texts[:2], k=3)
    assert [[d for d, _ in row] for row in pairs] == [list(direct[q])[:3] for q in list(direct)[:2]]
    manifest = bundle.manifest
    assert (manifest["format"], manifest["bundle_version"]) == ("jaxir-bundle", BUNDLE_VERSION)
    assert manifest["encoder"] == {
        "pooling": "mean",
        "normalize": True,
        "prefix": "",
        "max_length": 16,
    }
    assert (manifest["num_docs"], manifest["dim"], manifest["index"]) == (24, 32, {"kind": "exact"})
    assert bundle.metrics == {"nDCG@10": 0.5}
    assert bundle.corpus_path == exact_bundle / "corpus.jsonl"
    listed = {f["path"] for f in manifest["files"]}
    assert {
        "doc_ids.txt",
        "query_encoder/model.safetensors",
        "query_encoder/jaxir_encoder.json",
    } <= listed
    assert not [f for f in listed if f.endswith(("jaxir_tokenizer.json", "dual_encoder.json"))]


def test_bundle_query_encoder_contract_is_the_query_role(parts, exact_bundle):
    model_dir, *_ = parts
    contract = read_contract(exact_bundle / "query_encoder")
    assert contract == read_contract(model_dir / "query").with_roles("query")
    assert list(contract.roles) == ["query"] and contract.temperature == pytest.approx(0.05)
    assert load_bundle(exact_bundle).encoder.settings == load_encoder(model_dir / "query").settings


def test_scann_bundle_equals_its_searcher(parts, tmp_path):
    pytest.importorskip("scann")
    pytest.importorskip("jaxir.index.scann_index")
    model_dir, store, beir, query_enc, *_ = parts
    out = export_bundle(model_dir, store, tmp_path / "scann")
    assert load_bundle(out).manifest["index"]["kind"] == "scann"
    direct = retrieve(query_enc, load_searcher(out / "index"), store.ids, beir.queries, 5)
    assert_same_run(load_bundle(out).search_run(beir.queries, k=5), direct)


def test_dual_encoder_object_export(parts, tmp_path):
    _, store, beir, query_enc, tokenizer, model = parts
    with pytest.raises(BundleError, match="needs tokenizer="):
        export_bundle(model, store, tmp_path / "b", index="exact")
    out = export_bundle(model, store, tmp_path / "b", index="exact", tokenizer=tokenizer)
    texts = [q.full_text for q in beir.queries.values()]
    direct = retrieve(query_enc, load_searcher(out / "index"), store.ids, texts, 4)
    got = load_bundle(out).search(texts, k=4)
    assert_same_run({str(i): dict(row) for i, row in enumerate(got)}, direct)


def copy(bundle, tmp_path):
    return shutil.copytree(bundle, tmp_path / "copy")


def test_missing_and_corrupted_files_are_named(exact_bundle, tmp_path):
    bundle = copy(exact_bundle, tmp_path)
    (bundle / "doc_ids.txt").unlink()
    with pytest.raises(BundleError, match=r"doc_ids.txt: missing .*copy it again or re-run"):
        load_bundle(bundle)
    shutil.copy(exact_bundle / "doc_ids.txt", bundle / "doc_ids.txt")
    weights = bundle / "query_encoder" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # same size, different bytes
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.safetensors: SHA-256 differs"):
        load_bundle(bundle)
    load_bundle(bundle, verify=False)  # sizes only: loads (a trusted-copy escape hatch)
    with (bundle / "index" / "embeddings.npy").open("ab") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match=r"embeddings.npy: \d+ bytes, but .*records \d+"):
        load_bundle(bundle, verify=False)
    (bundle / "manifest.json").unlink()
    with pytest.raises(
        BundleError, match=r"manifest.json: missing; .* not a complete jaxir bundle"
    ):
        load_bundle(bundle)


def edit_manifest(bundle, **changes):
    path = bundle / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_format_version_is_an_error_package_version_a_warning(exact_bundle, tmp_path):
    bundle = copy(exact_bundle, tmp_path)
    edit_manifest(bundle, bundle_version=BUNDLE_VERSION + 1, jaxir_version="9.0.0")
    with pytest.raises(
        BundleError, match=r'"bundle_version" is 2 \(written by jaxir 9.0.0\).*Re-export'
    ):
        load_bundle(bundle)
    edit_manifest(bundle, bundle_version=BUNDLE_VERSION, jaxir_version="0.0.1")
    with pytest.warns(UserWarning, match="written by jaxir 0.0.1.*it loads"):
        assert load_bundle(bundle).doc_ids
    edit_manifest(bundle, format="something-else")
    with pytest.raises(BundleError, match='"format" must be "jaxir-bundle"'):
        load_bundle(bundle)


def test_export_refuses_inconsistent_inputs(parts, exact_bundle, tmp_path):
    model_dir, store, _beir, *_ = parts
    manifest = store.path / "manifest.json"
    bad = tmp_path / "emb"
    shutil.copytree(store.path, bad)
    data = json.loads(manifest.read_text())
    data["encoder"]["normalize"] = False
    (bad / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r'"encoder.normalize" is False .* --normalize'):
        export_bundle(model_dir, bad, tmp_path / "b", index="exact")
    with pytest.raises(BundleError, match=r"exists and is not empty.*--overwrite"):
        export_bundle(model_dir, store, exact_bundle, index="exact")
    with pytest.raises(
        BundleError, match=r"a 'dense' store is indexed by \['scann', 'exact'\], not"
    ):
        export_bundle(model_dir, store, tmp_path / "c", index="faiss")


def test_passage_split_store_serves_documents_by_their_best_passage(parts, tmp_path):
    """A MaxP store (several rows per id) exports and serves whole documents."""
    model_dir, _, beir, _, tokenizer, model = parts
    _, passage_enc = tower_encoders(model, tokenizer)
    rows = list(passage_enc.passages(beir.corpus.values()))
    assert len(rows) > len(beir.corpus)  # the 32-token towers split the longer documents
    store = encode_corpus(passage_enc, rows, tmp_path / "emb", progress=False)
    bundle = load_bundle(export_bundle(model_dir, store, tmp_path / "maxp", index="exact"))
    assert bundle.rows_per_doc > 1
    served = bundle.search_run(beir.queries, k=5)
    assert all(len(docs) == 5 for docs in served.values())
    want = dense_search_run(model, tokenizer, beir.corpus, beir.queries, k=5, split_documents=True)
    assert_same_run(served, want)
