"""Retrieval runs: ``run[query_id][doc_id] = score``, and the TREC run file format.

A TREC run line has 6 whitespace-separated columns::

    query_id  Q0  doc_id  rank  score  tag

:func:`write_trec_run` sorts each query's documents by score (descending; ties by
doc id so files are reproducible) and numbers ranks from 1; :func:`read_trec_run`
parses the file back. Scores are written with Python's shortest round-trip ``repr``,
so a run survives a write/read cycle bit for bit. ``.gz`` paths are (de)compressed.

Example:
    >>> import numpy as np
    >>> run = run_from_topk(["q1", "q2"], ["d0", "d1", "d2"],
    ...                     scores_qk=np.array([[0.9, 0.5], [0.7, 0.0]]),
    ...                     indices_qk=np.array([[2, 0], [1, -1]]))
    >>> run
    {'q1': {'d2': 0.9, 'd0': 0.5}, 'q2': {'d1': 0.7}}
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "run.trec"
    >>> write_trec_run(run, p, tag="demo")
    >>> print(p.read_text(), end="")
    q1 Q0 d2 1 0.9 demo
    q1 Q0 d0 2 0.5 demo
    q2 Q0 d1 1 0.7 demo
    >>> read_trec_run(p) == run
    True
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxir.data.errors import DataError
from jaxir.data.records import PathLike, iter_lines, open_text

__all__ = ["Run", "read_trec_run", "run_from_topk", "write_trec_run"]

Run = dict[str, dict[str, float]]
"""``run[query_id][doc_id] = score`` (higher is better)."""


def _check_token(path: PathLike, value: str, field: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise DataError(
            path,
            f"{value!r} is empty or contains whitespace, which the TREC format cannot hold; "
            "use ids without spaces",
            field=field,
        )


def write_trec_run(
    run: Mapping[str, Mapping[str, float]], path: PathLike, tag: str = "jaxir"
) -> None:
    """Write ``run`` as a 6-column TREC run file.

    Args:
      run: ``query_id -> {doc_id -> score}``; queries are written in dict order.
      path: output file (parent directories are created; ``.gz`` compresses).
      tag: the run name in column 6 (no whitespace).

    Raises DataError if an id or the tag contains whitespace or a score is not finite.
    """
    _check_token(path, tag, "tag")
    with open_text(path, "w") as f:
        for qid, scores in run.items():
            _check_token(path, qid, "query_id")
            ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (did, score) in enumerate(ranked, start=1):
                _check_token(path, did, "doc_id")
                score = float(score)
                if not math.isfinite(score):
                    raise DataError(
                        path,
                        f"score of ({qid!r}, {did!r}) is {score}; TREC runs need finite scores",
                        field="score",
                    )
                f.write(f"{qid} Q0 {did} {rank} {score!r} {tag}\n")


def read_trec_run(path: PathLike) -> Run:
    """Read a 6-column TREC run file into ``run[query_id][doc_id] = score``.

    The rank column is checked to be an integer but otherwise ignored (trec_eval ranks
    by score too). Blank lines are skipped; an empty file gives ``{}``.
    Raises DataError naming the line for a wrong column count, a non-numeric score or
    rank, and a document listed twice for one query.
    """
    run: Run = {}
    for number, text in iter_lines(path):
        cols = text.split()
        if not cols:
            continue
        if len(cols) != 6:
            raise DataError(
                path,
                f"expected 6 whitespace-separated columns (query_id Q0 doc_id rank score tag), "
                f"found {len(cols)}",
                line=number,
            )
        qid, _, did, rank, score_text, _ = cols
        try:
            int(rank)
        except ValueError:
            raise DataError(
                path, f"expected an integer rank, got {rank!r}", line=number, field="rank"
            ) from None
        try:
            score = float(score_text)
        except ValueError:
            raise DataError(
                path, f"expected a number, got {score_text!r}", line=number, field="score"
            ) from None
        scores = run.setdefault(qid, {})
        if did in scores:
            raise DataError(
                path,
                f"document {did!r} is listed twice for query {qid!r}; a run ranks each "
                "document once per query",
                line=number,
                field="doc_id",
            )
        scores[did] = score
    return run


def run_from_topk(
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    scores_qk: Any,
    indices_qk: Any,
    k: int | None = None,
) -> Run:
    """Turn top-k arrays (e.g. from ``jax.lax.top_k`` or a searcher) into a :data:`Run`.

    Args:
      query_ids: ``[Q]`` ids, row ``i`` of the arrays belongs to ``query_ids[i]``.
      doc_ids: ``[N]`` ids; ``indices_qk`` index into it.
      scores_qk: ``[Q, K]`` scores (numpy or jax array).
      indices_qk: ``[Q, K]`` integer document indices; entries ``< 0`` are padding
        (fewer than K results) and are skipped.

      k: keep at most this many documents per query (the best); ``None``: all.

    If a row names a document twice the higher score is kept, so an index with several
    rows (passages) per document scores each document by its best row (MaxP). Every
    query gets an entry, possibly ``{}``, best first. Raises ValueError on mismatched
    shapes or indices ``>= N``.

    >>> run_from_topk(["q"], ["a", "b", "a"], [[0.9, 0.8, 0.7]], [[0, 2, 1]], k=2)
    {'q': {'a': 0.9, 'b': 0.7}}
    """
    scores_qk = np.asarray(scores_qk, dtype=np.float64)
    indices_qk = np.asarray(indices_qk)
    if scores_qk.ndim != 2 or scores_qk.shape != indices_qk.shape:
        raise ValueError(
            f"scores_qk and indices_qk must both be [Q, K]; got {scores_qk.shape} and "
            f"{indices_qk.shape}"
        )
    if scores_qk.shape[0] != len(query_ids):
        raise ValueError(f"{len(query_ids)} query_ids for {scores_qk.shape[0]} rows of scores")
    if indices_qk.size and indices_qk.max() >= len(doc_ids):
        raise ValueError(
            f"indices_qk has index {int(indices_qk.max())} but there are only {len(doc_ids)} doc_ids"
        )
    run: Run = {}
    for qid, scores, indices in zip(query_ids, scores_qk.tolist(), indices_qk.tolist()):
        row = run.setdefault(qid, {})
        for score, index in zip(scores, indices):
            if index < 0:
                continue
            did = doc_ids[index]
            if did not in row or score > row[did]:
                row[did] = score
        if k is not None and len(row) > k:
            run[qid] = dict(heapq.nlargest(k, row.items(), key=lambda item: item[1]))
    return run
