"""Inverse Cloze Task (ICT) training groups: unsupervised pairs cut out of a corpus.

ICT (Lee et al. 2019, "Latent Retrieval for Weakly Supervised Open Domain Question
Answering", the ORQA pre-training task) turns every document with at least two
sentences into one training group: a random sentence is the pseudo-query and the rest
of the document (title kept) is its positive passage. With probability
``keep_probability`` (ORQA: 0.1) the sentence stays in the passage, so the encoder also
learns that lexical overlap matters instead of learning to avoid it.

The groups have no hard negatives: they train with in-batch negatives only (the
training pipeline fills any ``group_size > 1`` slots with random passages). Used as a
warm-up phase before supervised training when a model starts from random weights.

Sentences are split after ``.``, ``!`` or ``?`` followed by whitespace and an
upper-case letter, digit or opening bracket/quote, which keeps decimals ("0.5 mg")
and most lower-case abbreviations ("e.g. the") together.

Example:
    >>> from jaxir.data.records import Document
    >>> corpus = {"d1": Document("d1", "Cats purr. They are happy. Dogs bark.", "Pets"),
    ...           "d2": Document("d2", "One sentence only.")}
    >>> [group] = ict_groups(corpus, seed=0, keep_probability=0.0)
    >>> group.query, group.positives
    ('They are happy.', ('Pets Cats purr. Dogs bark.',))
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Mapping

from jaxir.data.groups import TrainGroup
from jaxir.data.negatives import bm25_search
from jaxir.data.records import Document

__all__ = ["ict_groups", "split_sentences", "with_bm25_negatives"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (non-empty, stripped), split as described in the module doc.

    >>> split_sentences("IL-6 rose 2.5 fold. No change was seen, e.g. in mice. (See below.)")
    ['IL-6 rose 2.5 fold.', 'No change was seen, e.g. in mice.', '(See below.)']
    """
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def ict_groups(
    corpus: Mapping[str, Document | str],
    *,
    seed: int,
    max_groups: int | None = None,
    keep_probability: float = 0.1,
) -> list[TrainGroup]:
    """One ICT group per document with >= 2 sentences: (sentence, document without it).

    Args:
      corpus: ``{doc_id: Document | text}``; a Document's ``title`` is kept at the front
        of the passage (never used as a query), its ``text`` is split into sentences.
      seed: seeds the choice of sentences, of the kept ones and of the documents; the
        same seed and corpus give the same groups.
      max_groups: keep at most this many groups (a seeded sample of the eligible
        documents, in corpus order); ``None`` keeps all.
      keep_probability: chance that the query sentence also stays in the passage.

    Returns:
      ``[TrainGroup(query=sentence, positives=(title + rest,), negatives=())]`` in corpus
      order. Documents with fewer than two sentences are skipped.

    Raises:
      ValueError: ``max_groups < 1`` or ``keep_probability`` outside ``[0, 1]``.
    """
    if max_groups is not None and max_groups < 1:
        raise ValueError(f"max_groups must be >= 1 or None, got {max_groups}")
    if not 0.0 <= keep_probability <= 1.0:
        raise ValueError(f"keep_probability must be in [0, 1], got {keep_probability}")
    rng = random.Random(seed)
    eligible: list[tuple[str, list[str]]] = []
    for doc in corpus.values():
        title, text = ("", doc) if isinstance(doc, str) else (doc.title, doc.text)
        sentences = split_sentences(text)
        if len(sentences) >= 2:
            eligible.append((title, sentences))
    if max_groups is not None and max_groups < len(eligible):
        chosen = sorted(rng.sample(range(len(eligible)), max_groups))
        eligible = [eligible[i] for i in chosen]
    groups = []
    for title, sentences in eligible:
        index = rng.randrange(len(sentences))
        keep = rng.random() < keep_probability
        rest = sentences if keep else sentences[:index] + sentences[index + 1 :]
        passage = " ".join([title, *rest] if title else rest)
        groups.append(TrainGroup(sentences[index], (passage,)))
    return groups


def with_bm25_negatives(
    groups: list[TrainGroup],
    corpus: Mapping[str, Document],
    *,
    rank_window: tuple[int, int],
    count: int = 8,
) -> list[TrainGroup]:
    """ICT ``groups`` plus up to ``count`` BM25 hard negatives of their query sentence.

    The source document (the one holding the sentence) is left out; ranks
    ``rank_window[0]..rank_window[1]`` of the other documents give the negatives. Groups
    with no negative in the window keep none (random negatives fill their slots).

    Example:
      >>> corpus = {"d1": Document("d1", "Cats purr loudly. Cats nap."),
      ...           "d2": Document("d2", "Cats purr too. Dogs bark.")}
      >>> [g] = ict_groups({"d1": corpus["d1"]}, seed=0, keep_probability=0.0)
      >>> with_bm25_negatives([g], corpus, rank_window=(0, 5))[0].negatives
      ('Cats purr too. Dogs bark.',)
    """
    queries = {str(i): g.query for i, g in enumerate(groups)}
    run = bm25_search(corpus, queries, k=rank_window[1] + 2)
    out = []
    for i, g in enumerate(groups):
        others = [d for d in run.get(str(i), {}) if g.query not in corpus[d].text]
        chosen = others[rank_window[0] : rank_window[1]][:count]
        out.append(dataclasses.replace(g, negatives=tuple(corpus[d].full_text for d in chosen)))
    return out
