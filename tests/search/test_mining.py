"""Model-mined hard negatives: filters (positives, rank window, margin, teacher) and group files."""

import numpy as np
import pytest

from jaxir.data.groups import read_groups
from jaxir.data.synthetic import make_collection
from jaxir.search import mine_model_negatives, tower_encoders, write_mined_groups
from tests.search.tiny import bert_tokenizer, tiny_dual_encoder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tokenizer = bert_tokenizer(tmp_path_factory.mktemp("vocab"))
    beir = make_collection(num_topics=8, num_train_queries=0, num_test_queries=6)
    query_enc, passage_enc = tower_encoders(tiny_dual_encoder(), tokenizer)
    doc_ids = list(beir.corpus)
    d_nd = passage_enc.encode([d.full_text for d in beir.corpus.values()])
    q_qd = query_enc.encode([q.full_text for q in beir.queries.values()])
    scores = {qid: dict(zip(doc_ids, (d_nd @ q).tolist())) for qid, q in zip(beir.queries, q_qd)}
    return beir, query_enc, passage_enc, doc_ids, d_nd, scores


def ranked(scores_of_query):
    return sorted(scores_of_query, key=lambda d: -scores_of_query[d])


def test_negatives_follow_model_rank_and_skip_positives(setup):
    beir, query_enc, passage_enc, doc_ids, d_nd, scores = setup
    mined = mine_model_negatives(
        query_enc, beir.queries, beir.qrels, num_negatives=3, doc_ids=doc_ids, doc_vectors=d_nd
    )
    assert list(mined) == list(beir.qrels)
    for qid, negatives in mined.items():
        expected = [d for d in ranked(scores[qid]) if d not in beir.qrels[qid]][:3]
        assert negatives == expected
    # Encoding the corpus here gives the same result as precomputed vectors.
    again = mine_model_negatives(
        query_enc,
        beir.queries,
        beir.qrels,
        num_negatives=3,
        corpus=beir.corpus,
        passage_encoder=passage_enc,
    )
    assert again == mined


def test_rank_window_margin_and_teacher_filters(setup):
    beir, query_enc, _, doc_ids, d_nd, scores = setup
    common = dict(doc_ids=doc_ids, doc_vectors=d_nd, num_negatives=5)
    window = mine_model_negatives(query_enc, beir.queries, beir.qrels, rank_window=(2, 8), **common)
    margin = 0.05
    filtered = mine_model_negatives(query_enc, beir.queries, beir.qrels, margin=margin, **common)
    for qid in beir.qrels:
        order = ranked(scores[qid])
        positives = set(beir.qrels[qid])
        assert window[qid] == [d for d in order[2:8] if d not in positives][:5]
        ceiling = min(scores[qid][d] for d in positives) - margin
        assert (
            filtered[qid]
            == [d for d in order if d not in positives and scores[qid][d] < ceiling][:5]
        )
        assert all(scores[qid][d] < ceiling for d in filtered[qid])
    plain = mine_model_negatives(query_enc, beir.queries, beir.qrels, **common)
    assert filtered != plain  # the margin did drop near-positive candidates

    qid = next(iter(beir.qrels))
    teacher = {qid: {plain[qid][0]: 9.0, plain[qid][1]: 0.5}}
    denoised = mine_model_negatives(
        query_enc, beir.queries, beir.qrels, teacher_scores=teacher, teacher_threshold=1.0, **common
    )
    assert plain[qid][0] not in denoised[qid] and plain[qid][1] in denoised[qid]
    others = [q for q in beir.qrels if q != qid]
    assert all(denoised[q] == plain[q] for q in others)


class VectorTexts:
    """A stand-in query encoder: a text ``"x,y"`` is the vector ``[x, y]``."""

    def encode(self, texts, batch_size=64):
        return np.array([[float(v) for v in t.split(",")] for t in texts], np.float32)


def test_margin_is_measured_from_the_lowest_positive():
    """The one rule shared with BM25 mining: ``mid`` scores between the two positives, so it
    is dropped (it would be kept if the margin were measured from the best positive)."""
    doc_ids = ["strong", "mid", "weak", "low", "far"]
    doc_vectors = np.array([[1.0, 0], [0.75, 0], [0.5, 0], [0.25, 0], [-1.0, 0]], np.float32)

    def mine(qrels=None, **kw):
        qrels = qrels or {"q": {"strong": 1, "weak": 1}}
        return mine_model_negatives(
            VectorTexts(),
            {"q": "1,0"},
            qrels,
            doc_ids=doc_ids,
            doc_vectors=doc_vectors,
            num_negatives=5,
            **kw,
        )["q"]

    assert mine() == ["mid", "low", "far"]
    assert mine(margin=0.0) == ["low", "far"]  # best-positive rule: ["mid", "low", "far"]
    assert mine(margin=0.375) == ["far"]  # ceiling 0.125 drops low (0.25) too
    assert mine(margin=-0.375) == ["mid", "low", "far"]  # ceiling 0.875 lets mid back in
    # A positive outside the corpus takes no part; with none scored nothing is dropped.
    assert mine({"q": {"strong": 1, "weak": 1, "absent": 1}}, margin=0.0) == ["low", "far"]
    assert mine({"q": {"absent": 1}}, margin=0.0) == doc_ids


def test_write_mined_groups_round_trip(setup, tmp_path):
    beir, query_enc, _, doc_ids, d_nd, _ = setup
    mined = mine_model_negatives(
        query_enc, beir.queries, beir.qrels, num_negatives=2, doc_ids=doc_ids, doc_vectors=d_nd
    )
    path = tmp_path / "groups.jsonl"
    assert write_mined_groups(path, beir.queries, beir.corpus, beir.qrels, mined) == len(beir.qrels)
    groups = read_groups(path)
    first = next(iter(beir.qrels))
    assert groups[0].query == beir.queries[first].full_text
    assert groups[0].negatives == tuple(beir.corpus[d].full_text for d in mined[first])
    assert all(len(g.negatives) == 2 for g in groups)


def test_bad_arguments_are_named(setup):
    beir, query_enc, _passage_enc, doc_ids, d_nd, _ = setup
    with pytest.raises(ValueError, match=r"either doc_ids= and doc_vectors=.*or corpus="):
        mine_model_negatives(query_enc, beir.queries, beir.qrels, num_negatives=1)
    with pytest.raises(ValueError, match=r"N = len\(doc_ids\) = 2"):
        mine_model_negatives(
            query_enc,
            beir.queries,
            beir.qrels,
            num_negatives=1,
            doc_ids=doc_ids[:2],
            doc_vectors=d_nd,
        )
    with pytest.raises(ValueError, match="rank_window"):
        mine_model_negatives(
            query_enc,
            beir.queries,
            beir.qrels,
            num_negatives=1,
            rank_window=(3, 3),
            doc_ids=doc_ids,
            doc_vectors=d_nd,
        )
    with pytest.raises(ValueError, match="teacher_scores and teacher_threshold"):
        mine_model_negatives(
            query_enc,
            beir.queries,
            beir.qrels,
            num_negatives=1,
            teacher_scores={},
            doc_ids=doc_ids,
            doc_vectors=d_nd,
        )
    with pytest.raises(KeyError, match="not in queries"):
        mine_model_negatives(
            query_enc,
            {},
            beir.qrels,
            num_negatives=1,
            doc_ids=doc_ids,
            doc_vectors=np.asarray(d_nd),
        )
