"""What a training run reads before its first step: tokenizer, training groups, dev set.

The training loop (:mod:`jaxir.training.loop`) calls these with values unpacked from the
run config; nothing here knows a retriever family.

* :func:`run_tokenizer` -- the tokenizer of an init directory, a given vocabulary
  directory, or a WordPiece vocabulary trained on the corpus (cached in the workdir);
* :func:`split_dev` -- a seeded dev set held out of the *training* queries (never test);
* :func:`training_groups` -- supervised groups (train qrels + BM25 negatives, optionally
  each document's BM25-best window, optionally mixed with inverse-cloze groups), or
  label-free inverse-cloze groups of any corpus (optionally with BM25 negatives), or a
  groups file; cached in the workdir;
* :func:`dev_rows` -- the dev set's ``(doc_id, text)`` rows: the dev queries' relevant
  documents plus a seeded sample, split into passages like the index when asked (MaxP).

Example:
    >>> from jaxir.data.synthetic import make_collection
    >>> beir = make_collection(split="train", num_topics=4, num_train_queries=8, num_test_queries=2)
    >>> train, dev = split_dev(beir.qrels, 2, seed=0)
    >>> len(train), len(dev)
    (7, 1)
    >>> groups = training_groups(beir.queries, beir.corpus, train, source="qrels",
    ...                          negatives="bm25", num_negatives=2, rank_window=(0, 10))
    >>> len(groups), len(groups[0].negatives) <= 2
    (7, True)
"""

from __future__ import annotations

import pathlib
import random
from collections.abc import Iterator, Mapping
from typing import Any

from jaxir.data.groups import TrainGroup, groups_from_qrels, read_groups, write_groups
from jaxir.data.ict import ict_groups, with_bm25_negatives
from jaxir.data.negatives import mine_bm25_negatives
from jaxir.data.passages import best_passages, split_passages
from jaxir.data.records import Document, Qrels, Query
from jaxir.data.tokenizer import load_tokenizer, train_wordpiece

__all__ = [
    "SOURCES",
    "dev_rows",
    "run_tokenizer",
    "split_dev",
    "training_groups",
]

#: ``data.train_groups``: where training groups come from.
SOURCES = ("qrels", "ict")
NEGATIVES = ("bm25", "none")
TRAIN_PASSAGES = ("first", "best")


def run_tokenizer(
    init: str, vocab: str | None, corpus: Mapping[str, Document], workdir: pathlib.Path
) -> Any:
    """The run's tokenizer: ``init``'s when it is a model directory, else ``vocab``'s,
    else (``vocab`` unset or ``"corpus"``) a 8,192-token WordPiece vocabulary trained on
    the corpus and kept in ``workdir/tokenizer``."""
    if (pathlib.Path(init) / "config.json").exists():
        return load_tokenizer(init)
    if vocab and vocab != "corpus":
        return load_tokenizer(vocab)
    out = workdir / "tokenizer"
    if (out / "tokenizer.json").exists():
        return load_tokenizer(out, check_contract=False)
    return train_wordpiece((d.full_text for d in corpus.values()), out, vocab_size=8192)


def split_dev(qrels: Qrels, size: int, seed: int) -> tuple[Qrels, Qrels]:
    """``(train, dev)``: ``size`` training queries (seeded; at most a fifth) held out as dev."""
    qids = sorted(qrels)
    random.Random(seed).shuffle(qids)
    size = min(size, len(qids) // 5)
    dev = set(qids[:size])
    return {q: v for q, v in qrels.items() if q not in dev}, {q: qrels[q] for q in qids[:size]}


def _check(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")


def training_groups(
    queries: Mapping[str, Query],
    corpus: Mapping[str, Document],
    qrels: Qrels,
    *,
    source: str = "qrels",
    groups_file: str | None = None,
    cache: pathlib.Path | None = None,
    negatives: str = "bm25",
    num_negatives: int = 8,
    rank_window: tuple[int, int] = (3, 30),
    train_passages: str = "first",
    tokenizer: Any = None,
    max_passage_length: int = 128,
    passage_stride: int = 0,
    passage_prefix: str = "",
    ict_mix: int = 0,
    seed: int = 0,
) -> list[TrainGroup]:
    """The training groups of a run.

    Args:
      queries, corpus, qrels: the collection and its training qrels (unused for
        ``source="ict"``).
      source: ``"qrels"`` (one group per judged query) or ``"ict"`` (label-free: one
        inverse-cloze group per document with two sentences or more,
        :func:`jaxir.data.ict.ict_groups`, seeded with ``seed``).
      groups_file: train on this groups JSONL instead (``source`` then does not apply).
      cache: JSONL path where mined groups are written and read back on the next call
        (a resumed run does not mine again); ``None``: no cache.
      negatives: ``"bm25"`` hard negatives (``num_negatives`` from BM25 ranks
        ``rank_window``) or ``"none"`` (in-batch negatives only).
      train_passages: ``"first"`` (the document; the tokenizer truncates it) or
        ``"best"`` (its window BM25 scores highest for the query; needs ``tokenizer``).
      max_passage_length, passage_stride, passage_prefix: the windows of ``"best"``.
      ict_mix: ``> 0`` mixes ``ict_mix`` copies of the qrels (or file) groups with one
        inverse-cloze group per document (seeded with ``seed + 1``).

    Raises:
      ValueError: a setting outside its choices (naming the config key).
    """
    _check("data.train_groups", source, SOURCES)
    _check("data.negatives", negatives, NEGATIVES)
    _check("data.train_passages", train_passages, TRAIN_PASSAGES)
    if ict_mix < 0:
        raise ValueError(f"data.ict_mix must be >= 0 (0: no inverse-cloze groups), got {ict_mix}.")
    if groups_file:
        return _mix(read_groups(groups_file, corpus=corpus, queries=queries), corpus, ict_mix, seed)
    if cache is not None and cache.exists():
        return read_groups(cache)
    if source == "ict":
        groups = ict_groups(corpus, seed=seed)
        if negatives == "bm25":
            groups = with_bm25_negatives(
                groups, corpus, rank_window=rank_window, count=num_negatives
            )
    else:
        mined = None
        if negatives == "bm25":
            mined = mine_bm25_negatives(
                queries, corpus, qrels, num_negatives=num_negatives, rank_window=rank_window
            )
        passages = None
        if train_passages == "best":
            pairs = {q: [*judged, *(mined or {}).get(q, ())] for q, judged in qrels.items()}
            passages = best_passages(
                queries,
                corpus,
                pairs,
                tokenizer,
                max_length=max_passage_length,
                stride=passage_stride,
                prefix=passage_prefix,
            )
        groups = _mix(
            groups_from_qrels(queries, corpus, qrels, mined, passages=passages),
            corpus,
            ict_mix,
            seed,
        )
    if cache is not None:
        write_groups(groups, cache)
    return groups


def _mix(groups: list[TrainGroup], corpus, mix: int, seed: int) -> list[TrainGroup]:
    """``groups`` repeated ``mix`` times + one inverse-cloze group per document (``mix > 0``)."""
    return groups * mix + ict_groups(corpus, seed=seed + 1) if mix else groups


def dev_rows(
    corpus: Mapping[str, Document],
    dev_qrels: Qrels,
    *,
    size: int,
    seed: int,
    split_documents: bool = False,
    tokenizer: Any = None,
    max_length: int = 128,
    stride: int = 0,
    prefix: str = "",
) -> Iterator[tuple[str, str]]:
    """``(doc_id, text)`` rows of the dev corpus: relevant documents + a seeded sample (``size`` in all).

    With ``split_documents`` each document becomes the passages the index would hold
    (:func:`jaxir.data.passages.split_passages`), so validation scores documents by their
    best passage (MaxP), as search will.
    """
    relevant = {d for q in dev_qrels.values() for d in q if d in corpus}
    others = sorted(set(corpus) - relevant)
    random.Random(seed).shuffle(others)
    chosen = sorted(relevant) + others[: max(0, size - len(relevant))]
    if split_documents:
        return split_passages(
            (corpus[d] for d in chosen),
            tokenizer,
            max_length=max_length,
            stride=stride,
            prefix=prefix,
        )
    return ((d, corpus[d].full_text) for d in chosen)
