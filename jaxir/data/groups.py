"""Training groups: a query with its positive and (hard) negative passages.

One JSONL line is one group, in either of two forms.

Text form (self-contained; what :func:`write_groups` writes)::

    {"query": "why do cats purr", "positives": ["Cats purr when ..."],
     "negatives": ["Dogs bark ...", "..."],
     "positive_scores": [9.1], "negative_scores": [3.2, 1.0]}

Id form (small files; resolved against a BEIR corpus and queries when read)::

    {"query_id": "q1", "positive_ids": ["d1"], "negative_ids": ["d7", "d9"]}

Rules (violations raise :class:`~jaxir.data.errors.DataError` with line and field):
``positives`` is a non-empty list of strings; ``negatives`` is a list of strings and
may be empty or absent (in-batch negatives still apply); ``positive_scores`` /
``negative_scores`` are optional teacher scores for distillation, given together,
one number per passage; unknown keys are rejected (they are usually typos).
In the id form documents become ``Document.full_text`` (``title + " " + text``).

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "groups.jsonl"
    >>> g = TrainGroup("why do cats purr", positives=("Cats purr.",), negatives=("Dogs bark.",))
    >>> write_groups([g], p)
    >>> read_groups(p) == [g]
    True
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from jaxir.data.errors import DataError
from jaxir.data.records import (
    Document,
    PathLike,
    Qrels,
    Query,
    iter_json_objects,
    open_text,
)

__all__ = ["TrainGroup", "groups_from_qrels", "iter_groups", "read_groups", "write_groups"]


@dataclasses.dataclass(frozen=True)
class TrainGroup:
    """A query, its positive passages, its negatives, and optional teacher scores.

    Attributes:
      query: query text.
      positives: ``[P]`` positive passage texts, ``P >= 1``.
      negatives: ``[M]`` negative passage texts, ``M >= 0``.
      positive_scores: ``[P]`` teacher scores for ``positives`` or ``None``.
      negative_scores: ``[M]`` teacher scores for ``negatives`` or ``None``
        (given together with ``positive_scores``).

    Lists are converted to tuples; inconsistent lengths raise ValueError.
    """

    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...] = ()
    positive_scores: tuple[float, ...] | None = None
    negative_scores: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("positives", "negatives", "positive_scores", "negative_scores"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if not self.positives:
            raise ValueError("a TrainGroup needs at least one positive passage")
        if (self.positive_scores is None) != (self.negative_scores is None):
            raise ValueError("give both positive_scores and negative_scores, or neither")
        if self.positive_scores is not None:
            if len(self.positive_scores) != len(self.positives):
                raise ValueError(
                    f"{len(self.positive_scores)} positive_scores for {len(self.positives)} positives"
                )
            if len(self.negative_scores) != len(self.negatives):
                raise ValueError(
                    f"{len(self.negative_scores)} negative_scores for {len(self.negatives)} negatives"
                )

    @property
    def has_scores(self) -> bool:
        """Whether teacher scores are present (for distillation losses)."""
        return self.positive_scores is not None


_TEXT_KEYS = ("query", "positives", "negatives")
_ID_KEYS = ("query_id", "positive_ids", "negative_ids")
_SCORE_KEYS = ("positive_scores", "negative_scores")
_ALLOWED = frozenset(_TEXT_KEYS + _ID_KEYS + _SCORE_KEYS)


class _Line:
    """Validation helpers bound to one line of one file, so errors name both."""

    def __init__(self, path: pathlib.Path, number: int, obj: dict[str, Any]) -> None:
        self.path, self.number, self.obj = path, number, obj

    def error(self, field: str | None, message: str) -> DataError:
        return DataError(self.path, message, line=self.number, field=field)

    def string(self, key: str) -> str:
        value = self.obj[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, got {json.dumps(value)[:40]}")
        return value

    def strings(self, key: str, *, required: bool) -> list[str]:
        if key not in self.obj:
            if required:
                raise self.error(key, f'missing; a group needs a non-empty "{key}" list')
            return []
        value = self.obj[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {json.dumps(value)[:60]}")
        if required and not value:
            raise self.error(key, "empty; a group needs at least one positive")
        return value

    def scores(self, key: str, count: int, what: str) -> tuple[float, ...]:
        value = self.obj[key]
        ok = isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        )
        if not ok:
            raise self.error(key, f"expected a list of numbers, got {json.dumps(value)[:60]}")
        if len(value) != count:
            raise self.error(
                key, f"has {len(value)} scores but there are {count} {what}; give one per passage"
            )
        return tuple(float(v) for v in value)


def _parse_group(
    line: _Line,
    corpus: Mapping[str, Document] | None,
    queries: Mapping[str, Query] | None,
) -> TrainGroup:
    obj = line.obj
    unknown = sorted(set(obj) - _ALLOWED)
    if unknown:
        raise line.error(unknown[0], f"unknown key; allowed keys are {', '.join(sorted(_ALLOWED))}")
    if "query" in obj and "query_id" in obj:
        raise line.error("query_id", 'give either "query" (text form) or "query_id" (id form)')
    if "query" in obj:
        query = line.string("query")
        pos_key, neg_key = "positives", "negatives"
        positives = line.strings(pos_key, required=True)
        negatives = line.strings(neg_key, required=False)
    elif "query_id" in obj:
        if corpus is None or queries is None:
            raise line.error(
                "query_id",
                "id-form groups need the collection: pass corpus= and queries= "
                "(e.g. from load_beir) to read_groups",
            )
        qid = line.string("query_id")
        if qid not in queries:
            raise line.error("query_id", f"{qid!r} is not a known query id")
        query = queries[qid].full_text
        pos_key, neg_key = "positive_ids", "negative_ids"
        positives = _resolve_docs(line, pos_key, line.strings(pos_key, required=True), corpus)
        negatives = _resolve_docs(line, neg_key, line.strings(neg_key, required=False), corpus)
    else:
        raise line.error("query", 'missing; a group needs "query" (text) or "query_id" (id)')
    for key in (pos_key, neg_key):
        for value in obj.get(key, ()):
            if not value.strip():
                raise line.error(key, "contains an empty string; remove it")
    has = [k in obj for k in _SCORE_KEYS]
    if any(has) and not all(has):
        missing = _SCORE_KEYS[has.index(False)]
        raise line.error(
            missing, "missing; give both positive_scores and negative_scores or neither"
        )
    pos_scores = neg_scores = None
    if all(has):
        pos_scores = line.scores("positive_scores", len(positives), "positives")
        neg_scores = line.scores("negative_scores", len(negatives), "negatives")
    return TrainGroup(query, tuple(positives), tuple(negatives), pos_scores, neg_scores)


def _resolve_docs(
    line: _Line, key: str, ids: list[str], corpus: Mapping[str, Document]
) -> list[str]:
    missing = [i for i in ids if i not in corpus]
    if missing:
        raise line.error(key, f"ids not in the corpus: {', '.join(map(repr, missing[:5]))}")
    return [corpus[i].full_text for i in ids]


def iter_groups(
    path: PathLike,
    corpus: Mapping[str, Document] | None = None,
    queries: Mapping[str, Query] | None = None,
) -> Iterator[TrainGroup]:
    """Stream :class:`TrainGroup` s from a JSONL file (text or id form; ``.gz`` ok).

    Args:
      path: the groups file.
      corpus, queries: needed only for id-form lines (``query_id`` / ``*_ids``).

    Blank lines are skipped; an empty file raises DataError.
    """
    path = pathlib.Path(path)
    seen_any = False
    example = '{"query": "...", "positives": ["..."], "negatives": []}'
    for number, obj in iter_json_objects(path, example):
        seen_any = True
        yield _parse_group(_Line(path, number, obj), corpus, queries)
    if not seen_any:
        raise DataError(path, "empty file: expected one JSON training group per line")


def read_groups(
    path: PathLike,
    corpus: Mapping[str, Document] | None = None,
    queries: Mapping[str, Query] | None = None,
) -> list[TrainGroup]:
    """Read every group of a JSONL file; see :func:`iter_groups`."""
    return list(iter_groups(path, corpus, queries))


def write_groups(groups: Iterable[TrainGroup], path: PathLike) -> None:
    """Write groups in the text form, one JSON object a line (``.gz`` compresses)."""
    with open_text(path, "w") as f:
        for g in groups:
            obj: dict[str, Any] = {
                "query": g.query,
                "positives": list(g.positives),
                "negatives": list(g.negatives),
            }
            if g.has_scores:
                obj["positive_scores"] = list(g.positive_scores)
                obj["negative_scores"] = list(g.negative_scores)
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


def groups_from_qrels(
    queries: Mapping[str, Query],
    corpus: Mapping[str, Document],
    qrels: Qrels,
    negatives: Mapping[str, Sequence[str]] | None = None,
    *,
    min_relevance: int = 1,
    passages: Mapping[str, Mapping[str, str]] | None = None,
) -> list[TrainGroup]:
    """Build one group per judged query: qrels positives plus (mined) negatives.

    Args:
      queries, corpus: the collection (``Query`` / ``Document`` by id).
      qrels: ``query_id -> {doc_id -> grade}``; docs with ``grade >= min_relevance``
        are positives.
      negatives: optional ``query_id -> [doc_id, ...]`` (e.g. from
        :func:`jaxir.data.negatives.mine_bm25_negatives`); positives that appear in it
        are removed. Queries missing from it get no negatives.
      min_relevance: the smallest grade that counts as relevant.
      passages: optional ``query_id -> {doc_id -> text}`` used instead of the
        documents' full texts (e.g. :func:`jaxir.data.passages.best_passages`); it must
        cover every (query, document) pair of the groups.

    Queries without any positive are skipped. Groups follow qrels order. Raises
    KeyError naming the id if qrels or negatives refer to an unknown query or document.

    >>> corpus = {"d1": Document("d1", "Cats purr."), "d2": Document("d2", "Dogs bark.")}
    >>> queries = {"q1": Query("q1", "cat sounds")}
    >>> groups_from_qrels(queries, corpus, {"q1": {"d1": 1}}, {"q1": ["d2", "d1"]})
    [TrainGroup(query='cat sounds', positives=('Cats purr.',), negatives=('Dogs bark.',), positive_scores=None, negative_scores=None)]
    """
    negatives = negatives or {}
    groups = []
    for qid, judged in qrels.items():
        pos_ids = [d for d, grade in judged.items() if grade >= min_relevance]
        if not pos_ids:
            continue
        if qid not in queries:
            raise KeyError(f"qrels query {qid!r} is not in queries")
        pos_set = set(pos_ids)
        neg_ids = [d for d in negatives.get(qid, ()) if d not in pos_set]
        texts = []
        for ids in (pos_ids, neg_ids):
            missing = [d for d in ids if d not in corpus]
            if missing:
                raise KeyError(f"query {qid!r}: doc ids not in the corpus: {missing[:5]}")
            if passages is None:
                texts.append(tuple(corpus[d].full_text for d in ids))
                continue
            uncovered = [d for d in ids if d not in passages.get(qid, {})]
            if uncovered:
                raise KeyError(f"query {qid!r}: no passage given for doc ids {uncovered[:5]}")
            texts.append(tuple(passages[qid][d] for d in ids))
        groups.append(TrainGroup(queries[qid].full_text, texts[0], texts[1]))
    return groups
