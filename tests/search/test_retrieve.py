"""retrieve / dense_search_run against brute-force numpy search with a tiny random model."""

import numpy as np
import pytest

from jaxir.data.synthetic import make_collection
from jaxir.index import ExactSearcher
from jaxir.search import dense_search_run, query_texts, retrieve, tower_encoders
from tests.search.tiny import bert_tokenizer, tiny_dual_encoder


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return bert_tokenizer(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def beir():
    return make_collection(num_topics=8, num_train_queries=0, num_test_queries=6)


def brute_force(q_qd, d_nd, k):
    s = q_qd @ d_nd.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def test_retrieve_matches_brute_force(tokenizer, beir):
    query_enc, passage_enc = tower_encoders(tiny_dual_encoder(), tokenizer)
    doc_ids = list(beir.corpus)
    d_nd = passage_enc.encode([d.full_text for d in beir.corpus.values()])
    run = retrieve(query_enc, ExactSearcher(d_nd), doc_ids, beir.queries, k=5, batch_size=4)
    assert list(run) == list(beir.queries)
    q_qd = query_enc.encode([q.full_text for q in beir.queries.values()])
    scores, order = brute_force(q_qd, d_nd, 5)
    for row, qid in enumerate(beir.queries):
        assert list(run[qid]) == [doc_ids[i] for i in order[row]]
        np.testing.assert_allclose(list(run[qid].values()), scores[row], atol=1e-5)


def test_list_queries_get_positional_ids_and_k_beyond_corpus(tokenizer):
    query_enc, passage_enc = tower_encoders(tiny_dual_encoder(), tokenizer)
    d_nd = passage_enc.encode(["cats purr", "dogs bark", "fish swim"])
    run = retrieve(query_enc, ExactSearcher(d_nd), ["a", "b", "c"], ["cats", "dogs"], k=10)
    assert list(run) == ["0", "1"]
    assert all(sorted(docs) == ["a", "b", "c"] for docs in run.values())  # -1 padding dropped


def test_retrieve_rejects_inconsistent_inputs(tokenizer):
    query_enc, _ = tower_encoders(tiny_dual_encoder(), tokenizer)
    searcher = ExactSearcher(np.eye(3, 32, dtype=np.float32))
    with pytest.raises(ValueError, match="2 doc_ids for a searcher over 3 vectors"):
        retrieve(query_enc, searcher, ["a", "b"], ["cats"], k=2)
    with pytest.raises(ValueError, match="32-d vectors but the searcher holds 8-d"):
        retrieve(query_enc, ExactSearcher(np.eye(3, 8, dtype=np.float32)), "abc", ["x"], k=2)
    with pytest.raises(TypeError, match="not a str"):
        query_texts("cats")


def test_dense_search_run_untied_uses_each_tower(tokenizer, beir):
    model = tiny_dual_encoder(1, tied=False)
    run = dense_search_run(model, tokenizer, beir.corpus, beir.queries, k=4, batch_size=8)
    query_enc, passage_enc = tower_encoders(model, tokenizer)
    assert passage_enc.model is model.passage_encoder and query_enc.model is model.query_encoder
    d_nd = passage_enc.encode([d.full_text for d in beir.corpus.values()])
    q_qd = query_enc.encode([q.full_text for q in beir.queries.values()])
    _, order = brute_force(q_qd, d_nd, 4)
    doc_ids = list(beir.corpus)
    assert [list(docs) for docs in run.values()] == [[doc_ids[i] for i in o] for o in order]


def test_maxp_scores_a_document_by_its_best_passage(tokenizer):
    """Several rows per id: k distinct documents, each with its best row's score."""
    query_enc, passage_enc = tower_encoders(tiny_dual_encoder(), tokenizer)
    texts = ["cats purr", "dogs bark", "fish swim", "birds sing", "cats sleep", "dogs run"]
    doc_ids = ["a", "b", "c", "a", "b", "d"]
    d_nd = passage_enc.encode(texts)
    q_qd = query_enc.encode(["cats", "dogs bark loudly"])
    run = retrieve(query_enc, ExactSearcher(d_nd), doc_ids, ["cats", "dogs bark loudly"], k=3)
    for row, qid in enumerate(("0", "1")):
        best = {}
        for doc, score in zip(doc_ids, (q_qd @ d_nd.T)[row]):
            best[doc] = max(best.get(doc, -np.inf), score)
        expected = sorted(best.items(), key=lambda x: -x[1])[:3]
        assert [d for d, _ in expected] == list(run[qid])
        np.testing.assert_allclose([s for _, s in expected], list(run[qid].values()), atol=1e-5)


def test_dense_search_run_split_documents(tokenizer):
    """Long documents split into passages find a match in their tail that FirstP misses."""
    model = tiny_dual_encoder()
    filler = " ".join(["the study measured outcomes in patients"] * 12)
    corpus = {"long": filler + " zebra giraffe savanna", "other": "kitchen recipes bread"}
    queries = {"q": "zebra giraffe savanna"}
    split = dense_search_run(model, tokenizer, corpus, queries, k=2, split_documents=True)
    whole = dense_search_run(model, tokenizer, corpus, queries, k=2)
    assert set(split["q"]) == {"long", "other"}
    _, passage_enc = tower_encoders(model, tokenizer)
    query_enc, _ = tower_encoders(model, tokenizer)
    rows = list(passage_enc.passages(corpus.items()))
    assert len(rows) > 2
    best = max(
        float(query_enc.encode(["zebra giraffe savanna"])[0] @ passage_enc.encode([t])[0])
        for d, t in rows
        if d == "long"
    )
    np.testing.assert_allclose(split["q"]["long"], best, atol=1e-5)
    assert split["q"]["long"] > whole["q"]["long"]
