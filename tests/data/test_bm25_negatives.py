import numpy as np
import pytest

from jaxir.data import (
    Document,
    Query,
    bm25_index,
    bm25_search,
    groups_from_qrels,
    make_collection,
    mine_bm25_negatives,
)


@pytest.fixture(scope="module")
def beir():
    return make_collection(num_topics=100, num_train_queries=60, num_test_queries=40, split="train")


@pytest.fixture(scope="module")
def index(beir):
    return bm25_index(beir.corpus)


def test_search_ranks_and_stems():
    corpus = {
        "d1": Document("d1", "The runner was running fast"),
        "d2": Document("d2", "Slow walks"),
    }
    run = bm25_search(corpus, {"q": Query("q", "runs"), "stop": "the of and"}, k=10)
    assert list(run["q"]) == ["d1"]  # stemmed match, d2 (score 0) left out
    assert run["stop"] == {}  # only stopwords


def test_negatives_exclude_positives_and_respect_window(beir, index):
    mined = mine_bm25_negatives(
        beir.queries, beir.corpus, beir.qrels, num_negatives=5, rank_window=(3, 30), index=index
    )
    assert set(mined) == set(beir.qrels)
    run = index.search(beir.queries, k=30)
    for qid, negatives in mined.items():
        assert 0 < len(negatives) <= 5
        assert not set(negatives) & set(beir.qrels[qid])
        ranked = list(run[qid])
        assert all(ranked.index(d) >= 3 for d in negatives)
        assert negatives == sorted(negatives, key=ranked.index)


def test_positives_kept_when_asked(beir, index):
    mined = mine_bm25_negatives(
        beir.queries, beir.corpus, beir.qrels, num_negatives=3, exclude_positives=False, index=index
    )
    hits = sum(bool(set(n) & set(beir.qrels[q])) for q, n in mined.items())
    assert hits > len(mined) // 2  # BM25 often ranks the positive in its top 3


def test_margin_drops_near_positive_scores(beir, index):
    margin = 1.0
    mined = mine_bm25_negatives(
        beir.queries, beir.corpus, beir.qrels, num_negatives=10, margin=margin, index=index
    )
    plain = mine_bm25_negatives(
        beir.queries, beir.corpus, beir.qrels, num_negatives=10, index=index
    )
    position = {d: i for i, d in enumerate(index.doc_ids)}
    dropped = 0
    for qid, negatives in mined.items():
        scores = index.scores(beir.queries[qid].text)
        best_positive = max(scores[position[d]] for d in beir.qrels[qid])
        assert all(scores[position[d]] < best_positive - margin for d in negatives)
        dropped += len(set(plain[qid]) - set(negatives))
    assert dropped > 0


def test_search_arrays_shapes(index):
    indices, scores = index.search_arrays(["stone bridge", "owl"], k=10_000)
    assert indices.shape == scores.shape == (2, len(index.doc_ids))
    assert (np.diff(scores, axis=1) <= 0).all()


def test_groups_from_mined_negatives(beir, index):
    mined = mine_bm25_negatives(beir.queries, beir.corpus, beir.qrels, num_negatives=2, index=index)
    groups = groups_from_qrels(beir.queries, beir.corpus, beir.qrels, mined)
    assert len(groups) == len(beir.qrels)
    assert all(len(g.negatives) == 2 and len(g.positives) >= 1 for g in groups)


def test_argument_errors(beir):
    with pytest.raises(ValueError, match="rank_window"):
        mine_bm25_negatives(
            beir.queries, beir.corpus, beir.qrels, num_negatives=1, rank_window=(5, 5)
        )
    with pytest.raises(KeyError, match="not in queries"):
        mine_bm25_negatives({}, beir.corpus, beir.qrels, num_negatives=1)
    with pytest.raises(ValueError, match="empty"):
        bm25_index({})
