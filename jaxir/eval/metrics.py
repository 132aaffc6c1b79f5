"""On-device ranking metrics with trec_eval semantics, for validation inside training.

Every metric is a pure ``jnp`` function over the last axis of a ``[Q, N]`` block of
candidate scores and graded labels, returns one value per query (``[Q]``) and can be
traced under ``jit`` with its cutoff ``k`` static::

    scores_qn:      [Q, N] float  candidate scores (e.g. the top-N of a search, or all docs)
    labels_qn:      [Q, N] int    graded relevance of each candidate (0 = non-relevant)
    num_relevant_q: [Q]    int    relevant docs per query in the qrels (may exceed those
                                  among the candidates; needed by recall and AP)
    where:          [Q, N] bool   False for padded candidates (they are never ranked)
    tiebreak_qn:    [Q, N] int    among equal scores, the larger key ranks first

The numbers match ``trec_eval`` (and so ``ir_measures`` / ``pytrec_eval``):

* a document is relevant when its grade is >= 1;
* nDCG uses gain = grade and discount ``log2(rank + 1)``; the ideal DCG comes from all the
  grades of the query (``ideal_labels_qr``), not only the retrieved ones;
* P@k always divides by ``k``; recall and AP divide by ``num_relevant_q``;
* a query without relevant documents scores 0 (:func:`mean_over_valid` leaves it out of
  the mean);
* ties: trec_eval orders by score descending, then by docid descending (``strcmp``).
  Arrays carry no docids, so pass ``tiebreak_qn`` = the position of each candidate's
  docid in ascending byte order of the docids (a larger docid ranks first among ties).
  Without it, ties keep index order (stable sort).

Rationale for the layout: ranking is one ``lax.sort`` per call (``O(N log N)``), after
which every metric is a masked cumulative sum, so all of them run unchanged under ``jit``
and ``vmap`` and on a sharded ``Q`` axis.

:func:`compute_metrics` is the host-side glue that turns ``{qid: {docid: score}}`` runs
and qrels into padded arrays and returns ``{measure name: mean}``.

Example:
    >>> import jax.numpy as jnp
    >>> scores = jnp.array([[0.9, 0.5, 0.1]])
    >>> labels = jnp.array([[0, 2, 1]])
    >>> rr_at_k(scores, labels, k=10).tolist()
    [0.5]
    >>> round(float(ndcg_at_k(scores, labels, k=3)[0]), 4)
    0.6697
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "average_precision",
    "compute_metrics",
    "mean_over_valid",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "rr_at_k",
]


def _ranked(
    scores_qn: jax.Array,
    labels_qn: jax.Array,
    where: jax.Array | None,
    tiebreak_qn: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
    """Labels and validity of the candidates in rank order, padding last.

    Returns ``(labels_qn, valid_qn)`` permuted so that column ``i`` holds the candidate at
    rank ``i + 1`` (score descending, then ``tiebreak_qn`` descending, then index).
    """
    scores_qn = jnp.asarray(scores_qn)
    labels_qn = jnp.asarray(labels_qn)
    valid_qn = jnp.ones(scores_qn.shape, bool) if where is None else jnp.asarray(where, bool)
    valid_qn = jnp.broadcast_to(valid_qn, scores_qn.shape)
    # lax.sort orders floats totally (-0.0 before 0.0); trec_eval compares them equal.
    neg_scores = jnp.where(scores_qn == 0, 0, -scores_qn)
    tiebreak = jnp.zeros(scores_qn.shape, jnp.int32) if tiebreak_qn is None else tiebreak_qn
    keys = (jnp.logical_not(valid_qn).astype(jnp.int32), neg_scores, -jnp.asarray(tiebreak))
    _, _, _, labels_sorted, valid_sorted = jax.lax.sort(
        (*keys, labels_qn, valid_qn), dimension=-1, is_stable=True, num_keys=3
    )
    return jnp.where(valid_sorted, labels_sorted, 0), valid_sorted


def _relevant(labels_qn: jax.Array) -> jax.Array:
    return (labels_qn >= 1).astype(jnp.float32)


def _num_relevant(num_relevant_q, labels_qn, where) -> jax.Array:
    if num_relevant_q is not None:
        return jnp.asarray(num_relevant_q, jnp.float32)
    rel = _relevant(jnp.asarray(labels_qn))
    if where is not None:
        rel = rel * jnp.asarray(where, jnp.float32)
    return rel.sum(-1)


def _safe_divide(num_q: jax.Array, den_q: jax.Array) -> jax.Array:
    return jnp.where(den_q > 0, num_q / jnp.where(den_q > 0, den_q, 1), 0.0)


def _discounts(n: int) -> jax.Array:
    return 1.0 / jnp.log2(jnp.arange(2, n + 2, dtype=jnp.float32))


def ndcg_at_k(
    scores_qn: jax.Array,
    labels_qn: jax.Array,
    *,
    k: int | None,
    ideal_labels_qr: jax.Array | None = None,
    where: jax.Array | None = None,
    tiebreak_qn: jax.Array | None = None,
) -> jax.Array:
    """nDCG@k per query (trec_eval ``ndcg_cut_k``): gain = grade, discount ``log2(rank+1)``.

    ``DCG@k = sum_{i<=k} grade_i / log2(i + 1)``; ``nDCG@k = DCG@k / IDCG@k`` where the
    ideal ranking sorts ``ideal_labels_qr`` (every grade of the query, from the qrels).

    Args:
      scores_qn: [Q, N] candidate scores.
      labels_qn: [Q, N] int grades of the candidates (0 = non-relevant).
      k: cutoff (static); ``None`` ranks all ``N`` candidates (trec_eval ``ndcg``).
      ideal_labels_qr: [Q, R] all grades of each query padded with 0; defaults to
        ``labels_qn`` (right only when every judged document is a candidate).
      where: [Q, N] bool, False marks padded candidates.
      tiebreak_qn: [Q, N] int, larger ranks first among equal scores (see module doc).

    Returns:
      [Q] float32; 0 for queries whose ideal DCG is 0.

    Example:
      >>> import jax.numpy as jnp
      >>> ndcg_at_k(jnp.array([[3.0, 2.0, 1.0]]), jnp.array([[2, 1, 0]]), k=2).tolist()
      [1.0]
    """
    labels_sorted, _ = _ranked(scores_qn, labels_qn, where, tiebreak_qn)
    if ideal_labels_qr is None:
        ideal_labels_qr = labels_qn if where is None else jnp.where(where, labels_qn, 0)
    ideal_sorted = -jnp.sort(-jnp.maximum(jnp.asarray(ideal_labels_qr), 0), axis=-1)
    gains = labels_sorted[..., :k].astype(jnp.float32)
    ideal = ideal_sorted[..., :k].astype(jnp.float32)
    dcg = (gains * _discounts(gains.shape[-1])).sum(-1)
    idcg = (ideal * _discounts(ideal.shape[-1])).sum(-1)
    return _safe_divide(dcg, idcg)


def rr_at_k(
    scores_qn: jax.Array,
    labels_qn: jax.Array,
    *,
    k: int | None,
    where: jax.Array | None = None,
    tiebreak_qn: jax.Array | None = None,
) -> jax.Array:
    """Reciprocal rank of the first relevant candidate within the top ``k`` (else 0).

    Args:
      scores_qn: [Q, N] candidate scores.
      labels_qn: [Q, N] int grades (relevant when >= 1).
      k: cutoff (static); ``None`` looks at all ``N`` candidates.
      where: [Q, N] bool, False marks padded candidates.
      tiebreak_qn: [Q, N] int, larger ranks first among equal scores.

    Returns:
      [Q] float32.

    Example:
      >>> import jax.numpy as jnp
      >>> rr_at_k(jnp.array([[0.2, 0.9, 0.5]]), jnp.array([[1, 0, 1]]), k=3).tolist()
      [0.5]
    """
    labels_sorted, _ = _ranked(scores_qn, labels_qn, where, tiebreak_qn)
    rel = _relevant(labels_sorted[..., :k])
    ranks = jnp.arange(1, rel.shape[-1] + 1, dtype=jnp.float32)
    return (rel / ranks).max(-1, initial=0.0)


def precision_at_k(
    scores_qn: jax.Array,
    labels_qn: jax.Array,
    *,
    k: int,
    where: jax.Array | None = None,
    tiebreak_qn: jax.Array | None = None,
) -> jax.Array:
    """P@k: relevant candidates in the top ``k`` divided by ``k`` (even when ``N < k``).

    Args:
      scores_qn: [Q, N] candidate scores.
      labels_qn: [Q, N] int grades (relevant when >= 1).
      k: cutoff (static).
      where: [Q, N] bool, False marks padded candidates.
      tiebreak_qn: [Q, N] int, larger ranks first among equal scores.

    Returns:
      [Q] float32.

    Example:
      >>> import jax.numpy as jnp
      >>> precision_at_k(jnp.array([[0.9, 0.5]]), jnp.array([[1, 1]]), k=4).tolist()
      [0.5]
    """
    labels_sorted, _ = _ranked(scores_qn, labels_qn, where, tiebreak_qn)
    return _relevant(labels_sorted[..., :k]).sum(-1) / k


def recall_at_k(
    scores_qn: jax.Array,
    labels_qn: jax.Array,
    *,
    k: int,
    num_relevant_q: jax.Array | None = None,
    where: jax.Array | None = None,
    tiebreak_qn: jax.Array | None = None,
) -> jax.Array:
    """R@k: relevant candidates in the top ``k`` divided by the query's relevant count.

    Args:
      scores_qn: [Q, N] candidate scores.
      labels_qn: [Q, N] int grades (relevant when >= 1).
      k: cutoff (static).
      num_relevant_q: [Q] relevant documents per query in the qrels; defaults to the
        relevant candidates (right only when every relevant document is a candidate).
      where: [Q, N] bool, False marks padded candidates.
      tiebreak_qn: [Q, N] int, larger ranks first among equal scores.

    Returns:
      [Q] float32; 0 for queries without relevant documents.

    Example:
      >>> import jax.numpy as jnp
      >>> s, y = jnp.array([[0.9, 0.5]]), jnp.array([[1, 0]])
      >>> recall_at_k(s, y, k=2, num_relevant_q=jnp.array([4])).tolist()
      [0.25]
    """
    labels_sorted, _ = _ranked(scores_qn, labels_qn, where, tiebreak_qn)
    hits = _relevant(labels_sorted[..., :k]).sum(-1)
    return _safe_divide(hits, _num_relevant(num_relevant_q, labels_qn, where))


def average_precision(
    scores_qn: jax.Array,
    labels_qn: jax.Array,
    *,
    k: int | None = None,
    num_relevant_q: jax.Array | None = None,
    where: jax.Array | None = None,
    tiebreak_qn: jax.Array | None = None,
) -> jax.Array:
    """Average precision over the ranking of the ``N`` candidates (trec_eval ``map``).

    ``AP = (1 / num_relevant) * sum_{i: rel_i} P@i``: relevant documents missing from the
    candidates count as retrieved at infinity (they add 0 but stay in the divisor).

    Args:
      scores_qn: [Q, N] candidate scores.
      labels_qn: [Q, N] int grades (relevant when >= 1).
      k: optional cutoff (static; trec_eval ``map_cut_k``); ``None`` uses all ``N``.
      num_relevant_q: [Q] relevant documents per query in the qrels; defaults to the
        relevant candidates.
      where: [Q, N] bool, False marks padded candidates.
      tiebreak_qn: [Q, N] int, larger ranks first among equal scores.

    Returns:
      [Q] float32; 0 for queries without relevant documents.

    Example:
      >>> import jax.numpy as jnp
      >>> s, y = jnp.array([[0.9, 0.5, 0.1]]), jnp.array([[1, 0, 1]])
      >>> round(float(average_precision(s, y)[0]), 4)  # (1/1 + 2/3) / 2
      0.8333
    """
    labels_sorted, _ = _ranked(scores_qn, labels_qn, where, tiebreak_qn)
    rel = _relevant(labels_sorted[..., :k])
    ranks = jnp.arange(1, rel.shape[-1] + 1, dtype=jnp.float32)
    precision_sum = (rel * jnp.cumsum(rel, axis=-1) / ranks).sum(-1)
    return _safe_divide(precision_sum, _num_relevant(num_relevant_q, labels_qn, where))


def mean_over_valid(values_q: jax.Array, num_relevant_q: jax.Array) -> jax.Array:
    """Mean of per-query values over the queries with at least one relevant document.

    Queries without relevant documents (``num_relevant_q == 0``, e.g. padding rows) say
    nothing about the ranker, so they are left out; with no valid query the mean is 0.

    Args:
      values_q: [Q] per-query metric values.
      num_relevant_q: [Q] relevant documents per query.

    Returns:
      scalar float32.

    Example:
      >>> import jax.numpy as jnp
      >>> mean_over_valid(jnp.array([1.0, 0.0, 0.5]), jnp.array([2, 0, 1])).tolist()
      0.75
    """
    valid = (jnp.asarray(num_relevant_q) > 0).astype(jnp.float32)
    return _safe_divide((jnp.asarray(values_q) * valid).sum(), valid.sum())


# ---------------------------------------------------------------------------------------
# Host-side glue: dict runs / qrels -> padded arrays -> on-device metrics.

_MEASURE = re.compile(r"^(nDCG|RR|R|AP|P)(?:@(\d+))?$")
_NEEDS_CUTOFF = ("R", "P")


def _parse_measure(name: str) -> tuple[str, int | None]:
    match = _MEASURE.match(name.strip())
    if match is None or (match.group(1) in _NEEDS_CUTOFF and match.group(2) is None):
        raise ValueError(
            f"jaxir/eval/metrics.py: unsupported measure {name!r}; on-device metrics "
            "accept ir_measures names nDCG[@k], RR[@k], AP[@k], R@k and P@k "
            "(use jaxir.eval.evaluate for any other ir_measures measure)."
        )
    cutoff = match.group(2)
    return match.group(1), None if cutoff is None else int(cutoff)


def _metric_fn(family: str, k: int | None) -> Callable[..., jax.Array]:
    if family == "nDCG":
        return lambda s, y, ideal, nrel, w, t: ndcg_at_k(
            s, y, k=k, ideal_labels_qr=ideal, where=w, tiebreak_qn=t
        )
    if family == "RR":
        return lambda s, y, ideal, nrel, w, t: rr_at_k(s, y, k=k, where=w, tiebreak_qn=t)
    if family == "AP":
        return lambda s, y, ideal, nrel, w, t: average_precision(
            s, y, k=k, num_relevant_q=nrel, where=w, tiebreak_qn=t
        )
    if family == "R":
        return lambda s, y, ideal, nrel, w, t: recall_at_k(
            s, y, k=k, num_relevant_q=nrel, where=w, tiebreak_qn=t
        )
    return lambda s, y, ideal, nrel, w, t: precision_at_k(s, y, k=k, where=w, tiebreak_qn=t)


@functools.lru_cache(maxsize=64)
def _compiled(family: str, k: int | None) -> Callable[..., jax.Array]:
    fn = _metric_fn(family, k)
    return jax.jit(lambda *args: mean_over_valid(fn(*args), args[3]))


def _bucket(n: int) -> int:
    """Next power of two (>= 1), so repeated calls reuse a handful of compiled programs."""
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def compute_metrics(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    measures: Iterable[str],
) -> dict[str, float]:
    """Means of on-device metrics for a dict run, e.g. ``{"nDCG@10": 0.71, "AP": 0.64}``.

    The queries are those of ``qrels``; a query absent from ``run`` scores 0, queries of
    ``run`` without qrels are ignored (like trec_eval). Means leave out queries without a
    relevant document (:func:`mean_over_valid`), which is the only way this can differ
    from :func:`jaxir.eval.evaluate`: trec_eval counts such queries as 0.

    Ties follow trec_eval exactly: each candidate's ``tiebreak_qn`` key is its rank in
    the host ordering (score as float64 descending, then docid descending), so neither
    float32 rounding nor equal scores can reorder the ranking. ``N`` and the number of
    judged grades are padded to powers of two: one compiled program per
    ``(measure, N bucket, R bucket, Q)``.

    Args:
      run: ``{qid: {docid: score}}``.
      qrels: ``{qid: {docid: grade}}`` (grade >= 1 is relevant).
      measures: ir_measures names: ``nDCG[@k]``, ``RR[@k]``, ``AP[@k]``, ``R@k``, ``P@k``.

    Returns:
      ``{name: mean}`` as Python floats, keyed by the names as given.

    Example:
      >>> run = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d3": 1.0}}
      >>> qrels = {"q1": {"d2": 1}, "q2": {"d3": 2, "d4": 1}}
      >>> compute_metrics(run, qrels, ["RR@10", "R@100"])
      {'RR@10': 0.75, 'R@100': 0.75}
    """
    measures = list(measures)
    parsed = [_parse_measure(name) for name in measures]
    qids = sorted(qrels)
    if not qids:
        raise ValueError("jaxir/eval/metrics.py: compute_metrics got empty qrels.")
    n = _bucket(max((len(run.get(q, {})) for q in qids), default=1))
    r = _bucket(max(len(qrels[q]) for q in qids))
    scores = np.zeros((len(qids), n), np.float32)
    tiebreak = np.zeros((len(qids), n), np.int32)
    labels = np.zeros((len(qids), n), np.int32)
    where = np.zeros((len(qids), n), bool)
    ideal = np.zeros((len(qids), r), np.int32)
    num_relevant = np.zeros((len(qids),), np.int32)
    for i, qid in enumerate(qids):
        grades = {doc: int(g) for doc, g in qrels[qid].items()}
        ranked = sorted(((float(s), doc) for doc, s in run.get(qid, {}).items()), reverse=True)
        for j, (score, doc) in enumerate(ranked):
            scores[i, j] = score
            tiebreak[i, j] = len(ranked) - j
            labels[i, j] = grades.get(doc, 0)
            where[i, j] = True
        positive = sorted((g for g in grades.values() if g > 0), reverse=True)
        ideal[i, : len(positive)] = positive
        num_relevant[i] = len(positive)
    args = (scores, labels, ideal, num_relevant, where, tiebreak)
    return {name: float(_compiled(family, k)(*args)) for name, (family, k) in zip(measures, parsed)}
