"""Hard negatives mined with the model being trained (ANCE / RocketQA style).

For every judged query the current query encoder ranks the corpus exactly on device
(:class:`~jaxir.index.ExactSearcher`); negatives are the highest-ranked documents that
are not judged relevant. Dense hard negatives are more often *false* negatives
(relevant but unjudged) than BM25 ones, so three filters keep them out:

* ``rank_window=(start, end)``: candidates come from 0-based ranks ``start..end-1``;
  skipping the first few ranks avoids the passages most likely to be relevant.
* ``margin``: with ``s_min`` the model's score of the *lowest*-scoring judged positive,
  a candidate scoring ``>= s_min - margin`` is dropped: the model finds it as relevant
  as (or, within ``margin``, almost as relevant as) a known positive. ``margin=0``
  drops candidates at or above the weakest positive; larger margins drop more,
  negative ones fewer; ``None`` disables the filter. Positives absent from the
  indexed corpus do not take part. This is the rule BM25 mining uses too, from one
  place: :func:`jaxir.data.negatives.false_negative_ceiling` (which says why the
  lowest positive, not the best).
* ``teacher_scores`` + ``teacher_threshold``: drop a candidate that a teacher (e.g. a
  cross-encoder run ``{qid: {docid: score}}``) scores above the threshold (RocketQA's
  denoising). Candidates the teacher did not score are kept.

Judged positives (grade ``>= min_relevance``) are never negatives.
:func:`write_mined_groups` turns the result into a training-group JSONL file
(:func:`jaxir.data.groups.write_groups`).

Example:
    >>> import numpy as np
    >>> class Identity:  # a stand-in query encoder: texts are "x,y" vectors
    ...     def encode(self, texts, batch_size=64):
    ...         return np.array([[float(v) for v in t.split(",")] for t in texts], np.float32)
    >>> doc_ids = ["pos", "near", "far", "mid"]
    >>> doc_vectors = np.array([[1, 0], [0.95, 0], [0.1, 0], [0.5, 0]], np.float32)
    >>> mine_model_negatives(Identity(), {"q": "1,0"}, {"q": {"pos": 1}},
    ...                      doc_ids=doc_ids, doc_vectors=doc_vectors, num_negatives=2)
    {'q': ['near', 'mid']}
    >>> mine_model_negatives(Identity(), {"q": "1,0"}, {"q": {"pos": 1}}, margin=0.1,
    ...                      doc_ids=doc_ids, doc_vectors=doc_vectors, num_negatives=2)
    {'q': ['mid', 'far']}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jaxir.data.groups import groups_from_qrels, write_groups
from jaxir.data.negatives import false_negative_ceiling
from jaxir.data.records import Document, PathLike, Qrels, Query
from jaxir.encode import TextEncoder
from jaxir.index import ExactSearcher
from jaxir.search.retrieve import query_texts

__all__ = ["mine_model_negatives", "write_mined_groups"]


def _doc_matrix(
    doc_ids: Sequence[str] | None,
    doc_vectors: np.ndarray | None,
    corpus: Mapping[str, Document | str] | None,
    passage_encoder: TextEncoder | None,
    batch_size: int,
) -> tuple[list[str], np.ndarray]:
    """``(ids [N], vectors [N, D])`` from precomputed vectors or from corpus + encoder."""
    given_vectors = doc_ids is not None or doc_vectors is not None
    given_corpus = corpus is not None or passage_encoder is not None
    if given_vectors == given_corpus:
        raise ValueError(
            "pass either doc_ids= and doc_vectors= (precomputed passage vectors) or corpus= "
            "and passage_encoder= (encode the corpus now), not both and not neither"
        )
    if given_vectors:
        if doc_ids is None or doc_vectors is None:
            raise ValueError("doc_ids and doc_vectors go together; pass both")
        vectors = np.asarray(doc_vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(doc_ids):
            raise ValueError(
                f"doc_vectors must be [N, D] with N = len(doc_ids) = {len(doc_ids)}, got "
                f"{vectors.shape}"
            )
        return list(doc_ids), vectors
    if corpus is None or passage_encoder is None:
        raise ValueError("corpus and passage_encoder go together; pass both")
    ids = list(corpus)
    texts = [d.full_text if isinstance(d, Document) else d for d in corpus.values()]
    return ids, passage_encoder.encode(texts, batch_size=batch_size)


def mine_model_negatives(
    query_encoder: TextEncoder,
    queries: Mapping[str, Query | str],
    qrels: Qrels,
    *,
    num_negatives: int,
    doc_ids: Sequence[str] | None = None,
    doc_vectors: np.ndarray | None = None,
    corpus: Mapping[str, Document | str] | None = None,
    passage_encoder: TextEncoder | None = None,
    rank_window: tuple[int, int] = (0, 100),
    margin: float | None = None,
    teacher_scores: Mapping[str, Mapping[str, float]] | None = None,
    teacher_threshold: float | None = None,
    min_relevance: int = 1,
    batch_size: int = 64,
) -> dict[str, list[str]]:
    """Mine up to ``num_negatives`` model-ranked hard negatives for every judged query.

    Args:
      query_encoder: encodes query texts ``-> [Q, D]`` (the current model's query tower).
      queries: ``{query_id: Query | text}``; every query of ``qrels`` must be in it.
      qrels: ``{query_id: {doc_id: grade}}``; ``grade >= min_relevance`` is positive.
      num_negatives: negatives kept per query (fewer if the window runs out).
      doc_ids, doc_vectors: ``[N]`` ids and ``[N, D]`` passage vectors (e.g. an
        :class:`~jaxir.encode.EmbeddingStore`'s ``ids`` and ``vectors``), or instead
      corpus, passage_encoder: ``{doc_id: Document | text}`` encoded here.
      rank_window: 0-based ``(start, end)`` ranks candidates come from, in rank order.
      margin: drop candidates scoring ``>= lowest_positive_score - margin``
        (:func:`~jaxir.data.negatives.false_negative_ceiling`); ``None`` disables it.
      teacher_scores: ``{query_id: {doc_id: score}}`` from a teacher; with
        ``teacher_threshold``, candidates scored ``> teacher_threshold`` are dropped.
      teacher_threshold: see ``teacher_scores`` (both or neither).
      min_relevance: smallest grade counted as positive.
      batch_size: rows per encoder forward pass.

    Returns:
      ``{query_id: [doc_id, ...]}`` in model rank order, for every query of ``qrels``.

    Cost: one exact search of ``[Q, D]`` queries for the top ``end`` of ``N`` documents
    on device, plus ``O(Q * positives * D)`` on the host for the margin filter.

    Raises:
      ValueError: bad window / counts, or inconsistent passage arguments.
      KeyError: a qrels query is not in ``queries``.
    """
    start, end = rank_window
    if not 0 <= start < end:
        raise ValueError(
            f"rank_window must be (start, end) with 0 <= start < end, got {rank_window}"
        )
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
    if (teacher_scores is None) != (teacher_threshold is None):
        raise ValueError("teacher_scores and teacher_threshold go together; pass both or neither")
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise KeyError(f"{len(missing)} qrels queries are not in queries, e.g. {missing[:5]}")
    ids, docs_nd = _doc_matrix(doc_ids, doc_vectors, corpus, passage_encoder, batch_size)
    if not ids:
        raise ValueError("the corpus is empty; there is nothing to mine")
    qids = list(qrels)
    if not qids:
        return {}
    _, texts = query_texts({q: queries[q] for q in qids})
    q_qd = np.asarray(query_encoder.encode(texts, batch_size=batch_size), dtype=np.float32)
    scores_qk, indices_qk = ExactSearcher(docs_nd).search(q_qd, min(end, len(ids)))
    row_of = {d: i for i, d in enumerate(ids)} if margin is not None else {}
    mined: dict[str, list[str]] = {}
    for r, qid in enumerate(qids):
        positives = {d for d, g in qrels[qid].items() if g >= min_relevance}
        rows = [row_of[d] for d in positives if d in row_of]
        ceiling = false_negative_ceiling((docs_nd[rows] @ q_qd[r]).tolist(), margin)
        teacher = teacher_scores.get(qid, {}) if teacher_scores is not None else {}
        negatives: list[str] = []
        for i, score in zip(indices_qk[r, start:].tolist(), scores_qk[r, start:].tolist()):
            if len(negatives) == num_negatives:
                break
            if i < 0:
                break
            doc_id = ids[i]
            if doc_id in positives or score >= ceiling:
                continue
            if doc_id in teacher and teacher[doc_id] > teacher_threshold:
                continue
            negatives.append(doc_id)
        mined[qid] = negatives
    return mined


def write_mined_groups(
    path: PathLike,
    queries: Mapping[str, Query],
    corpus: Mapping[str, Document],
    qrels: Qrels,
    negatives: Mapping[str, Sequence[str]],
    *,
    min_relevance: int = 1,
) -> int:
    """Write one training group per judged query (qrels positives + mined negatives).

    The text-form JSONL of :mod:`jaxir.data.groups` (``.gz`` compresses); queries
    without a positive are skipped. Returns the number of groups written.
    """
    groups = groups_from_qrels(queries, corpus, qrels, negatives, min_relevance=min_relevance)
    write_groups(groups, path)
    return len(groups)
