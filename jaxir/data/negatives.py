"""BM25 retrieval (the lexical baseline) and BM25 hard-negative mining, with ``bm25s``.

Text analysis: lowercase, ``bm25s`` word tokens (2+ word characters), English
stopwords removed, Snowball English stemming (PyStemmer); BM25 with bm25s defaults
(Lucene variant, ``k1=1.5``, ``b=0.75``). Documents are indexed as
``Document.full_text`` (``title + " " + text``).

Hard negatives are the documents BM25 ranks highest that are not judged relevant.
Two knobs keep likely *false* negatives (relevant but unjudged passages) out:

* ``rank_window=(start, end)``: take candidates from 0-based ranks ``start..end-1``;
  skipping the top few (``start > 0``) avoids the passages most likely to be relevant.
* ``margin``: the false-negative filter of :func:`false_negative_ceiling`, shared
  with model mining (:mod:`jaxir.search.mining`): a candidate whose BM25 score is at
  least ``lowest_positive_score - margin`` is dropped: it matches the query as well as
  (or almost as well as) a known positive, so it is more likely unjudged-relevant than
  negative. ``margin=0`` drops candidates scoring at or above the weakest positive;
  larger margins drop more, negative ones fewer; ``None`` disables the filter.

Example:
    >>> from jaxir.data.records import Document, Query
    >>> corpus = {"d1": Document("d1", "Cats purr when they are happy."),
    ...           "d2": Document("d2", "Dogs bark at cats."),
    ...           "d3": Document("d3", "Stock markets fell sharply.")}
    >>> queries = {"q1": Query("q1", "why do cats purr")}
    >>> run = bm25_search(corpus, queries, k=2)
    >>> list(run["q1"])
    ['d1', 'd2']
    >>> mine_bm25_negatives(queries, corpus, {"q1": {"d1": 1}}, num_negatives=1)
    {'q1': ['d2']}
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import Stemmer

from jaxir.data.records import Document, Qrels, Query
from jaxir.data.runs import Run

if TYPE_CHECKING:
    import bm25s

__all__ = [
    "BM25Index",
    "bm25_index",
    "bm25_search",
    "false_negative_ceiling",
    "mine_bm25_negatives",
]

_STOPWORDS = "en"


def _texts(items: Mapping[str, Document | Query | str]) -> tuple[list[str], list[str]]:
    ids = list(items)
    return ids, [v if isinstance(v, str) else v.full_text for v in items.values()]


def false_negative_ceiling(positive_scores: Iterable[float], margin: float | None) -> float:
    """The score at or above which a mined candidate counts as a likely false negative.

    The one false-negative margin rule of jaxir, used by BM25 mining
    (:func:`mine_bm25_negatives`) and model mining
    (:func:`jaxir.search.mining.mine_model_negatives`): a candidate scoring
    ``>= min(positive_scores) - margin`` is dropped.

    Why the *lowest* positive and not the best: the two agree for single-positive
    queries and differ only for multi-positive ones, where the lowest-positive rule
    drops a superset. A candidate the scorer ranks above *any* judged positive looks,
    by the scorer's own evidence, at least as relevant as a passage known to be
    relevant; training it as a negative pushes it below that positive, which is what a
    false negative does. The best-positive rule keeps exactly those candidates that sit
    between the positives, the ones most likely to be relevant but unjudged (e.g. a
    third passage on the same topic as two judged ones). The cost is fewer, slightly
    easier negatives; the rank window still supplies more candidates.

    Args:
      positive_scores: the scorer's scores of the query's judged positives (those
        absent from the scored corpus left out).
      margin: ``0`` drops candidates at or above the weakest positive; larger margins
        drop more, negative ones fewer; ``None`` disables the filter.

    Returns the ceiling, ``inf`` (keep every candidate) when ``margin`` is ``None`` or
    there is no positive score.

    >>> false_negative_ceiling([9.0, 4.0], margin=0.5)
    3.5
    >>> false_negative_ceiling([], margin=0.5), false_negative_ceiling([9.0], margin=None)
    (inf, inf)
    """
    if margin is None:
        return float("inf")
    scores = [float(s) for s in positive_scores]
    return min(scores) - float(margin) if scores else float("inf")


@dataclasses.dataclass(frozen=True)
class BM25Index:
    """A bm25s index over a corpus and the analysis used to build it.

    Attributes:
      doc_ids: ``[N]`` document ids; bm25s document ``i`` is ``doc_ids[i]``.
      retriever: the ``bm25s.BM25`` model.
      stemmer: the PyStemmer stemmer applied to documents and queries.
    """

    doc_ids: tuple[str, ...]
    retriever: bm25s.BM25
    stemmer: Stemmer.Stemmer

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """Analyse query texts exactly like the documents were (stopwords, stemming)."""
        return _bm25s().tokenize(
            list(texts),
            stopwords=_STOPWORDS,
            stemmer=self.stemmer,
            return_ids=False,
            show_progress=False,
        )

    def search_arrays(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` for each text: ``(indices_qk, scores_qk)``, both ``[Q, min(k, N)]``.

        ``indices_qk`` index into :attr:`doc_ids`; rows are sorted by score, descending.
        """
        k = min(k, len(self.doc_ids))
        indices, scores = self.retriever.retrieve(self.tokenize(texts), k=k, show_progress=False)
        return np.asarray(indices), np.asarray(scores)

    def scores(self, text: str) -> np.ndarray:
        """BM25 score of every document for one query text: ``[N]`` (zeros if no term is left
        after analysis, e.g. only stopwords)."""
        tokens = self.tokenize([text])[0]
        if not tokens:
            return np.zeros(len(self.doc_ids), dtype=np.float32)
        return np.asarray(self.retriever.get_scores(tokens))

    def search(self, queries: Mapping[str, Query | str], k: int = 100) -> Run:
        """Top-``k`` run for ``queries``; documents with score 0 (no term match) are left out."""
        qids, texts = _texts(queries)
        indices, scores = self.search_arrays(texts, k)
        run: Run = {}
        for qid, row_idx, row_scores in zip(qids, indices.tolist(), scores.tolist()):
            run[qid] = {self.doc_ids[i]: s for i, s in zip(row_idx, row_scores) if s > 0}
        return run


def _bm25s() -> ModuleType:
    """``bm25s``, imported on first use: importing it runs a JAX computation, which
    starts JAX's backend, after which ``jax.distributed.initialize`` (multi-host
    training) can no longer be called; so ``import jaxir.data`` must not import it."""
    import bm25s

    # bm25s sets its own logger to DEBUG at import; keep its per-call chatter out of user output.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def bm25_index(corpus: Mapping[str, Document | str]) -> BM25Index:
    """Build a BM25 index over ``corpus`` (``doc_id -> Document`` or text).

    Cost: one pass of tokenization and a sparse matrix of ``N x vocabulary``; about a
    second for 100k short passages.
    """
    if not corpus:
        raise ValueError("corpus is empty; BM25 needs at least one document")
    doc_ids, texts = _texts(corpus)
    stemmer = Stemmer.Stemmer("english")
    bm25s = _bm25s()
    tokens = bm25s.tokenize(texts, stopwords=_STOPWORDS, stemmer=stemmer, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
    return BM25Index(tuple(doc_ids), retriever, stemmer)


def bm25_search(
    corpus: Mapping[str, Document | str], queries: Mapping[str, Query | str], k: int = 100
) -> Run:
    """BM25 baseline run: index ``corpus``, return the top ``k`` documents per query.

    Documents that share no term with the query (score 0) are left out, so a query can
    have fewer than ``k`` results.
    """
    return bm25_index(corpus).search(queries, k)


def mine_bm25_negatives(
    queries: Mapping[str, Query | str],
    corpus: Mapping[str, Document | str],
    qrels: Qrels,
    *,
    num_negatives: int,
    rank_window: tuple[int, int] = (0, 100),
    exclude_positives: bool = True,
    margin: float | None = None,
    min_relevance: int = 1,
    index: BM25Index | None = None,
) -> dict[str, list[str]]:
    """Mine up to ``num_negatives`` BM25 hard negatives for every judged query.

    Args:
      queries: ``query_id -> Query`` (or text); queries judged in ``qrels`` are mined.
      corpus: ``doc_id -> Document`` (or text).
      qrels: ``query_id -> {doc_id -> grade}``; ``grade >= min_relevance`` is positive.
      num_negatives: how many negatives to keep per query (fewer if the window runs out).
      rank_window: 0-based ``(start, end)`` BM25 ranks to draw candidates from, in
        rank order (see the module doc).
      exclude_positives: drop judged positives from the candidates (turn off only to
        inspect what BM25 returns).
      margin: false-negative filter; drop candidates scoring
        ``>= lowest_positive_score - margin`` (:func:`false_negative_ceiling`).
        ``None`` disables it.
      min_relevance: smallest grade counted as positive.
      index: a prebuilt :func:`bm25_index` over the same corpus, to reuse it.

    Candidates with BM25 score 0 (no shared term) are never returned: they are random,
    not hard, negatives.

    Returns ``query_id -> [doc_id, ...]`` in BM25 rank order, for each judged query that
    is in ``queries`` (queries absent from ``queries`` raise KeyError).
    """
    start, end = rank_window
    if not 0 <= start < end:
        raise ValueError(
            f"rank_window must be (start, end) with 0 <= start < end, got {rank_window}"
        )
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise KeyError(f"{len(missing)} qrels queries are not in queries, e.g. {missing[:5]}")
    index = index if index is not None else bm25_index(corpus)
    qids = list(qrels)
    texts = [q if isinstance(q, str) else q.full_text for q in (queries[qid] for qid in qids)]
    indices, scores = index.search_arrays(texts, end)
    position = {d: i for i, d in enumerate(index.doc_ids)} if margin is not None else {}
    mined: dict[str, list[str]] = {}
    for row, qid in enumerate(qids):
        positives = {d for d, g in qrels[qid].items() if g >= min_relevance}
        ceiling = np.inf
        if margin is not None and positives:
            all_scores = index.scores(texts[row])
            scored = [all_scores[position[d]] for d in positives if d in position]
            ceiling = false_negative_ceiling(scored, margin)
        negatives = []
        for i, score in zip(indices[row, start:].tolist(), scores[row, start:].tolist()):
            if len(negatives) == num_negatives:
                break
            doc_id = index.doc_ids[i]
            if (exclude_positives and doc_id in positives) or score >= ceiling or score <= 0:
                continue
            negatives.append(doc_id)
        mined[qid] = negatives
    return mined
