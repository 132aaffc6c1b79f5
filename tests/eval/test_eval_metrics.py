"""On-device metrics agree with ir_measures (trec_eval) per query and on average."""

from __future__ import annotations

import functools

import ir_measures
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxir.eval import metrics

TOL = 1e-6


def call(fn, *args, **kwargs):
    """Runs ``fn`` under jit (one compile instead of many eager ops); kwargs are static."""
    return np.asarray(jax.jit(functools.partial(fn, **kwargs))(*args))


def _random_case(seed: int, num_queries: int = 40):
    """A run with many ties, graded qrels, unjudged and unretrieved relevant docs."""
    rng = np.random.default_rng(seed)
    # Docids of varied length so that string order differs from numeric order.
    pool = [f"d{i}" for i in rng.choice(500, size=120, replace=False)]
    run, qrels = {}, {}
    for q in range(num_queries):
        qid = f"q{q}"
        docs = list(rng.choice(pool, size=rng.integers(1, 60), replace=False))
        if q != 0:  # q0 is judged but absent from the run
            run[qid] = {d: float(np.round(rng.uniform(0, 1), 1)) for d in docs}
        judged = list(rng.choice(docs, size=min(len(docs), rng.integers(1, 12)), replace=False))
        judged += [d for d in pool[:5] if d not in docs]  # relevant docs never retrieved
        if q % 7 == 3:  # judged, nothing relevant
            qrels[qid] = {d: 0 for d in judged}
        else:
            qrels[qid] = {d: int(rng.integers(0, 4)) for d in judged}
    run["unjudged"] = {pool[0]: 1.0}
    return run, qrels


def _arrays(run, qrels, qids, *, descending_docid_ties: bool = True):
    """Padded arrays; tiebreak = rank of the docid in ascending (or descending) order."""
    n = max(len(run.get(q, {})) for q in qids)
    r = max(len(qrels[q]) for q in qids)
    scores = np.zeros((len(qids), n), np.float32)
    labels = np.zeros((len(qids), n), np.int32)
    tiebreak = np.zeros((len(qids), n), np.int32)
    where = np.zeros((len(qids), n), bool)
    ideal = np.zeros((len(qids), r), np.int32)
    num_rel = np.zeros(len(qids), np.int32)
    for i, q in enumerate(qids):
        docs = run.get(q, {})
        order = {d: j for j, d in enumerate(sorted(docs))}
        for j, (d, s) in enumerate(docs.items()):
            scores[i, j], labels[i, j], where[i, j] = s, qrels[q].get(d, 0), True
            tiebreak[i, j] = order[d] if descending_docid_ties else -order[d]
        grades = [g for g in qrels[q].values() if g > 0]
        ideal[i, : len(grades)] = grades
        num_rel[i] = len(grades)
    return scores, labels, tiebreak, where, ideal, num_rel


def _reference(run, qrels, names):
    """Per-query ir_measures values ``{name: {qid: value}}``."""
    out = {n: {} for n in names}
    measures = [ir_measures.parse_measure(n) for n in names]
    for m in ir_measures.iter_calc(measures, qrels, run):
        out[str(m.measure)][m.query_id] = m.value
    return out


def _device(name, scores, labels, tiebreak, where, ideal, num_rel):
    fns = {
        "nDCG@10": functools.partial(metrics.ndcg_at_k, k=10, ideal_labels_qr=ideal),
        "RR@10": functools.partial(metrics.rr_at_k, k=10),
        "R@100": functools.partial(metrics.recall_at_k, k=100, num_relevant_q=num_rel),
        "AP": functools.partial(metrics.average_precision, num_relevant_q=num_rel),
        "P@5": functools.partial(metrics.precision_at_k, k=5),
        "AP@5": functools.partial(metrics.average_precision, k=5, num_relevant_q=num_rel),
        "nDCG": functools.partial(metrics.ndcg_at_k, k=None, ideal_labels_qr=ideal),
    }
    fn = jax.jit(lambda s, y, w, t: fns[name](s, y, where=w, tiebreak_qn=t))
    return np.asarray(fn(scores, labels, where, tiebreak))


TREC_MEASURES = ["nDCG@10", "R@100", "AP", "P@5", "AP@5", "nDCG"]


@pytest.mark.parametrize("seed", [0, 1])
def test_per_query_agreement_with_ir_measures(seed):
    run, qrels = _random_case(seed)
    qids = sorted(qrels)
    arrays = _arrays(run, qrels, qids)
    ref = _reference(run, qrels, TREC_MEASURES)
    for name in TREC_MEASURES:
        got = _device(name, *arrays)
        want = np.array([ref[name][q] for q in qids])
        np.testing.assert_allclose(got, want, atol=TOL, err_msg=name)


def test_rr_at_k_agreement_with_ir_measures_msmarco_ties():
    # ir_measures computes RR@k with the MS MARCO script: ties by docid ascending.
    run, qrels = _random_case(2)
    qids = sorted(qrels)
    arrays = _arrays(run, qrels, qids, descending_docid_ties=False)
    want = _reference(run, qrels, ["RR@10"])["RR@10"]
    got = _device("RR@10", *arrays)
    np.testing.assert_allclose(got, [want[q] for q in qids], atol=TOL)


def test_ties_matter_in_the_random_case():
    run, qrels = _random_case(0)
    qids = sorted(qrels)
    scores, labels, tiebreak, where, _, num_rel = _arrays(run, qrels, qids)
    with_ties = call(
        metrics.average_precision,
        scores,
        labels,
        num_relevant_q=num_rel,
        where=where,
        tiebreak_qn=tiebreak,
    )
    by_index = call(metrics.average_precision, scores, labels, num_relevant_q=num_rel, where=where)
    assert not np.allclose(with_ties, by_index)


@pytest.mark.parametrize("seed", [0, 3])
def test_compute_metrics_means_match_ir_measures(seed):
    run, qrels = _random_case(seed)
    names = ["nDCG@10", "RR@10", "R@100", "AP", "P@5"]
    got = metrics.compute_metrics(run, qrels, names)
    # compute_metrics leaves queries without a relevant document out of the means.
    with_relevant = {q: d for q, d in qrels.items() if any(g > 0 for g in d.values())}
    # RR@10: compare with the trec_eval tie order (pytrec_eval RR on the top 10).
    top10 = {
        q: dict(sorted(d.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:10])
        for q, d in run.items()
    }
    want = ir_measures.calc_aggregate(
        [ir_measures.parse_measure(n) for n in names if n != "RR@10"], with_relevant, run
    )
    want = {str(m): v for m, v in want.items()}
    want["RR@10"] = ir_measures.calc_aggregate([ir_measures.RR], with_relevant, top10)[
        ir_measures.RR
    ]
    assert got.keys() == set(names)
    for name in names:
        assert got[name] == pytest.approx(want[name], abs=TOL), name


def test_compute_metrics_keeps_float64_order_and_ties():
    # 1 + 1e-9 and 1 collapse in float32; the host rank keeps them apart.
    run = {"q": {"a": 1.0 + 1e-9, "b": 1.0, "c": 1.0}}
    qrels = {"q": {"a": 1, "c": 1}}
    # trec_eval order: a, then the tie b/c broken by docid descending -> c, b.
    assert metrics.compute_metrics(run, qrels, ["P@2", "RR", "AP"]) == {
        "P@2": 1.0,
        "RR": 1.0,
        "AP": 1.0,
    }


def test_compute_metrics_rejects_unknown_measures():
    with pytest.raises(ValueError, match=r"unsupported measure 'Bpref'"):
        metrics.compute_metrics({"q": {"d": 1.0}}, {"q": {"d": 1}}, ["Bpref"])
    with pytest.raises(ValueError, match="R@k"):
        metrics.compute_metrics({"q": {"d": 1.0}}, {"q": {"d": 1}}, ["R"])


def test_perfect_ranking_scores_one():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(6, 20)).astype(np.int32)
    labels[:, 0] = 3  # every query has a relevant document
    scores = labels + rng.uniform(0, 0.5, size=labels.shape)  # orders by grade
    num_rel = (labels > 0).sum(-1)
    for values in (
        call(metrics.ndcg_at_k, scores, labels, k=10),
        call(metrics.rr_at_k, scores, labels, k=10),
        call(metrics.recall_at_k, scores, labels, k=20),
        call(metrics.average_precision, scores, labels, num_relevant_q=num_rel),
        call(metrics.precision_at_k, scores, labels, k=1),
    ):
        np.testing.assert_allclose(values, 1.0, atol=TOL)


def test_padding_is_never_ranked():
    scores = jnp.array([[0.3, 9.0, 0.2, 9.0]])
    labels = jnp.array([[1, 5, 0, 5]])
    where = jnp.array([[True, False, True, False]])
    assert call(metrics.rr_at_k, scores, labels, k=10, where=where).tolist() == [1.0]
    assert call(metrics.ndcg_at_k, scores, labels, k=10, where=where).tolist() == [1.0]
    assert call(metrics.precision_at_k, scores, labels, k=2, where=where).tolist() == [0.5]


def test_ties_without_tiebreak_keep_index_order_and_tiebreak_reorders():
    scores = jnp.zeros((1, 3))
    labels = jnp.array([[0, 0, 1]])
    assert call(metrics.rr_at_k, scores, labels, k=3).tolist() == [pytest.approx(1 / 3)]
    tiebreak = jnp.array([[0, 1, 2]])  # largest key first
    assert call(metrics.rr_at_k, scores, labels, k=3, tiebreak_qn=tiebreak).tolist() == [1.0]


def test_queries_without_relevant_documents_score_zero_and_leave_the_mean():
    scores = jnp.array([[0.9, 0.1], [0.9, 0.1]])
    labels = jnp.array([[1, 0], [0, 0]])
    num_rel = jnp.array([1, 0])
    for fn in (metrics.recall_at_k, metrics.average_precision):
        values = call(fn, scores, labels, k=2, num_relevant_q=num_rel)
        assert values.tolist() == [1.0, 0.0]
        assert float(metrics.mean_over_valid(values, num_rel)) == 1.0
    assert call(metrics.ndcg_at_k, scores, labels, k=2).tolist() == [1.0, 0.0]
    assert float(metrics.mean_over_valid(jnp.zeros(2), jnp.zeros(2, int))) == 0.0
