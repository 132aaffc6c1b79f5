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
from jaxir.data.negatives import false_negative_ceiling


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
        lowest_positive = min(scores[position[d]] for d in beir.qrels[qid])
        assert all(scores[position[d]] < lowest_positive - margin for d in negatives)
        dropped += len(set(plain[qid]) - set(negatives))
    assert dropped > 0


# BM25 scores for "cats purr loudly": strong 1.33 > mid 0.55 > weak 0.15 > low 0.08 > none 0.
MULTI_POSITIVE = {
    "strong": "cats purr loudly, cats purr loudly",
    "mid": "cats purr at night",
    "weak": "cats sleep",
    "low": "the dogs and birds and cats and fish live in the big old house by the river",
    "none": "stock markets fell",
}


def test_margin_is_measured_from_the_lowest_positive():
    """The one rule shared with model mining: ``mid`` scores between the two positives, so
    it is dropped (it would be kept if the margin were measured from the best positive)."""
    queries, qrels = {"q": "cats purr loudly"}, {"q": {"strong": 1, "weak": 1}}
    index = bm25_index(MULTI_POSITIVE)
    scores = dict(zip(index.doc_ids, index.scores("cats purr loudly").tolist()))
    assert scores["strong"] > scores["mid"] > scores["weak"] > scores["low"] > 0
    mine = dict(queries=queries, corpus=MULTI_POSITIVE, qrels=qrels, num_negatives=5, index=index)
    assert mine_bm25_negatives(**mine) == {"q": ["mid", "low"]}
    assert mine_bm25_negatives(**mine, margin=0.0) == {"q": ["low"]}
    # A margin just above the gap to "low" drops it too; a negative one lets "mid" back in.
    gap = scores["weak"] - scores["low"]
    assert mine_bm25_negatives(**mine, margin=gap + 1e-3) == {"q": []}
    lenient = scores["weak"] - scores["mid"] - 1e-3
    assert mine_bm25_negatives(**mine, margin=lenient) == {"q": ["mid", "low"]}
    # A positive outside the corpus takes no part; with no scored positive nothing is dropped.
    assert mine_bm25_negatives(**{**mine, "qrels": {"q": {"weak": 1, "gone": 1}}}, margin=0.0) == {
        "q": ["low"]
    }


def test_false_negative_ceiling():
    assert false_negative_ceiling([3.0, 1.0, 2.0], margin=0.25) == 0.75
    assert false_negative_ceiling(np.array([3.0, 1.0]), margin=-1.0) == 2.0
    assert false_negative_ceiling([], margin=0.0) == np.inf
    assert false_negative_ceiling([3.0], margin=None) == np.inf


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
