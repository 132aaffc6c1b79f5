"""Split long documents into overlapping passages that fit the encoder (MaxP indexing).

An encoder reads at most ``max_length`` tokens, so a document longer than that is only
seen through its first tokens ("FirstP"). :func:`split_passages` instead cuts every
document into windows of tokens that fit, each a row of the index under its
document's id; a query's score for a document is then its best passage's score
("MaxP", Dai & Callan 2019). :func:`jaxir.search.retrieve.retrieve` does that
aggregation whenever the index holds several rows per document id.

Windows hold whole words (the tokenizer's pre-tokenized words, cut back into the text
through character offsets), so every passage fits ``max_length`` with the special
tokens and is tokenized as it was inside the document (exactly for WordPiece; a
byte-level BPE tokenizer may spell a window's first word without its leading space). A document's
title starts each of its passages, as in BEIR's ``title + " " + text``; a title longer
than half the window is not repeated (it is read as the start of the text). Windows
start about ``stride`` tokens apart (default: half a window) and overlap, and the last
window ends at the document's last token, so no text is left out.

Training can match MaxP: :func:`best_passages` picks, for each (query, document) pair
of the training groups, the document's passage that BM25 scores highest for the query
(instead of the document's first ``max_length`` tokens, which often miss the part the
query is about).

Rows are :class:`Passage` tuples ``(doc_id, text)``: consumers that must tell passage
rows from documents (:func:`jaxir.encode.encode_corpus` checks that document ids are
unique, and a document's passages legitimately share its id) recognize them by type.
:func:`split_passages` itself rejects two documents with one id
(:class:`DuplicateIdError`): their passages would merge into one document.

Long documents are expected here, so tokenizing them does not print transformers'
"Token indices sequence length is longer than the specified maximum" warning.

Example:
    >>> from tokenizers import Tokenizer, models, pre_tokenizers, processors
    >>> from transformers import PreTrainedTokenizerFast
    >>> words = "[PAD] [UNK] [CLS] [SEP] aa bb cc dd ee ff gg hh title".split()
    >>> core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    >>> core.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> core.post_processor = processors.TemplateProcessing(
    ...     single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    >>> tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]")
    >>> docs = [Document("d1", "aa bb cc dd ee ff gg hh", "title"), Document("d2", "aa bb")]
    >>> [tuple(row) for row in split_passages(docs, tok, max_length=7)]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('d1', 'title aa bb cc dd'), ('d1', 'title cc dd ee ff'), ('d1', 'title ee ff gg hh'),
     ('d2', 'aa bb')]
    >>> docs = {"d1": docs[0], "d2": docs[1]}
    >>> best_passages({"q": "why gg"}, docs, {"q": ["d1", "d2"]}, tok, max_length=7)
    {'q': {'d1': 'title ee ff gg hh', 'd2': 'aa bb'}}
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

import numpy as np
import transformers

from jaxir.data.negatives import bm25_index
from jaxir.data.records import Document, Query

__all__ = [
    "DuplicateIdError",
    "Passage",
    "UniqueIds",
    "best_passages",
    "split_passages",
    "word_windows",
]


class Passage(NamedTuple):
    """One row of a MaxP index: a passage of document ``doc_id`` (a plain 2-tuple otherwise)."""

    doc_id: str
    text: str


class DuplicateIdError(ValueError):
    """Two documents of one stream have the same id.

    Attributes:
      doc_id: the repeated id.
      first, second: 0-based positions of the two documents in the stream (a caller
        that read the stream from a file can turn them into line numbers).

    >>> ids = UniqueIds()
    >>> ids.add("a", 0); ids.add("b", 1); ids.add("a", 2)
    Traceback (most recent call last):
    ...
    jaxir.data.passages.DuplicateIdError: documents #0 and #2 have the same id 'a'; document ids must be unique
    """

    def __init__(self, doc_id: str, first: int, second: int) -> None:
        self.doc_id, self.first, self.second = doc_id, first, second
        super().__init__(
            f"documents #{first} and #{second} have the same id {doc_id!r}; document ids "
            "must be unique"
        )

    def __reduce__(self):
        return (DuplicateIdError, (self.doc_id, self.first, self.second))


class UniqueIds:
    """Ids seen so far in a document stream, with the position of each.

    Memory grows with the stream (one dict entry per document, ~100 bytes each: about
    1 GB for MS MARCO's 8.8M passages).
    """

    def __init__(self) -> None:
        self._first: dict[str, int] = {}

    def add(self, doc_id: str, position: int) -> None:
        """Records document ``position``'s id; :class:`DuplicateIdError` if it was seen."""
        first = self._first.setdefault(doc_id, position)
        if first != position:
            raise DuplicateIdError(doc_id, first, position)


def word_windows(
    word_starts: list[int], num_tokens: int, budget: int, stride: int
) -> list[tuple[int, int]]:
    """Token ranges ``(start, end)`` of windows of whole words, each at most ``budget`` tokens.

    ``word_starts`` are the first token of every word (ascending, from 0). Each window
    packs as many whole words as fit; the next one starts at the first word at least
    ``stride`` tokens after the current start, and never after the current window's
    end, so every token is in some window; the last window ends at ``num_tokens`` and
    reaches back as far as ``budget`` allows (not to its predecessor's start).
    A single word longer than ``budget`` gets a window of its own (the encoder
    truncates it).

    >>> word_windows([0, 1, 3, 4, 6], 8, budget=4, stride=2)  # words of 1, 2, 1, 2, 2 tokens
    [(0, 4), (3, 6), (4, 8)]
    >>> word_windows([0, 1, 2, 3], 4, budget=8, stride=2)  # fits: one window
    [(0, 4)]
    >>> word_windows([], 0, budget=4, stride=2)
    [(0, 0)]
    """
    if budget < 1 or stride < 1:
        raise ValueError(f"budget and stride must be >= 1, got {budget} and {stride}")
    bounds = [*word_starts, num_tokens]  # word w is tokens bounds[w]:bounds[w + 1]
    words, first, previous, windows = len(word_starts), 0, -1, []
    while True:
        last = first + 1  # one past the window's last word
        while last < words and bounds[last + 1] - bounds[first] <= budget:
            last += 1
        if last >= words:  # the final window: reach back as far as the budget allows
            while first - 1 > previous and num_tokens - bounds[first - 1] <= budget:
                first -= 1
            windows.append((bounds[first], num_tokens))
            return windows
        windows.append((bounds[first], bounds[last]))
        step = first + 1
        while step < last and bounds[step] < bounds[first] + stride:
            step += 1
        previous, first = first, step


def _title_and_text(item: Document | tuple[str, str]) -> tuple[str, str, str]:
    if isinstance(item, Document):
        return item.id, item.title, item.text
    doc_id, text = item
    return doc_id, "", text


def split_passages(
    documents: Iterable[Document | tuple[str, str]],
    tokenizer: transformers.PreTrainedTokenizerBase,
    *,
    max_length: int,
    stride: int = 0,
    prefix: str = "",
    batch_size: int = 512,
) -> Iterator[Passage]:
    """``(doc_id, passage_text)`` rows covering every document in windows that fit ``max_length``.

    Args:
      documents: :class:`~jaxir.data.records.Document` records or ``(id, text)`` tuples,
        read lazily ``batch_size`` at a time.
      tokenizer: a fast tokenizer (offsets are needed): the encoder's.
      max_length: the encoder's maximum length in tokens, special tokens included.
      stride: tokens between window starts; 0: half a window.
      prefix: text the encoder prepends to every input (its tokens take room too).
      batch_size: documents tokenized together.

    Yields:
      One or more :class:`Passage` rows per document, in input order (a document's rows
      are consecutive); a document that fits is one row with its full text
      (``title + " " + text``).

    Raises:
      DuplicateIdError: two documents have the same id (positions in ``documents``).
    """
    if not tokenizer.is_fast:
        raise TypeError("split_passages needs a fast tokenizer (character offsets)")
    # verbose=False: documents longer than the model are the point here, so transformers'
    # "Token indices sequence length is longer than the specified maximum sequence
    # length" warning (the only one verbose gates without padding/truncation) is noise.
    tokenize = functools.partial(tokenizer, add_special_tokens=False, verbose=False)
    encode = functools.partial(tokenize, return_offsets_mapping=True)
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    if prefix:
        specials += len(tokenize(prefix)["input_ids"])
    if max_length - specials < 2:
        raise ValueError(
            f"max_length {max_length} leaves no room for text after the special tokens and prefix"
        )
    stream = iter(documents)
    seen, position = UniqueIds(), 0
    while batch := [_title_and_text(item) for item in itertools.islice(stream, batch_size)]:
        for doc_id, _, _ in batch:
            seen.add(doc_id, position)
            position += 1
        titles = tokenize([t for _, t, _ in batch])["input_ids"]
        bodies = encode([text for _, _, text in batch])
        for row, ((doc_id, title, text), title_ids) in enumerate(zip(batch, titles)):
            offsets, words = bodies["offset_mapping"][row], bodies.word_ids(row)
            budget = max_length - specials
            if len(title_ids) > budget // 2:  # a long title is read as the start of the text
                title, text = "", f"{title} {text}".strip()
                body = encode(text)
                offsets, words = body["offset_mapping"], body.word_ids()
            else:
                budget -= len(title_ids)
            word_starts = [t for t, w in enumerate(words) if t == 0 or w != words[t - 1]]
            step = stride or max(budget // 2, 1)
            for start, end in word_windows(word_starts, len(offsets), budget, step):
                chunk = text[offsets[start][0] : offsets[end - 1][1]] if end > start else text
                yield Passage(doc_id, f"{title} {chunk}".strip() if title else chunk)


def best_passages(
    queries: Mapping[str, Query | str],
    corpus: Mapping[str, Document],
    pairs: Mapping[str, Iterable[str]],
    tokenizer: transformers.PreTrainedTokenizerBase,
    *,
    max_length: int,
    stride: int = 0,
    prefix: str = "",
) -> dict[str, dict[str, str]]:
    """For each query, the passage of each of its documents that best matches it (BM25).

    The documents named in ``pairs`` are cut with :func:`split_passages` (same
    arguments); BM25 (:func:`jaxir.data.negatives.bm25_index`, statistics over those
    passages) scores each query against its documents' passages and keeps the best;
    ties go to the earlier passage, so a document without any query term gives its
    first passage.

    Args:
      queries: ``{query_id: Query | text}``.
      corpus: ``{doc_id: Document}``.
      pairs: ``{query_id: [doc_id, ...]}``, e.g. positives and hard negatives.
      tokenizer, max_length, stride, prefix: as for :func:`split_passages`.

    Returns:
      ``{query_id: {doc_id: passage_text}}`` for every pair.

    Raises:
      KeyError: a pair names an unknown query or document.

    Example: see the module's (``best_passages(...)``).
    """
    for qid, doc_ids in pairs.items():
        missing = [d for d in doc_ids if d not in corpus] + ([qid] if qid not in queries else [])
        if missing:
            raise KeyError(f"query {qid!r}: ids not in the queries/corpus: {missing[:5]}")
    wanted = dict.fromkeys(d for doc_ids in pairs.values() for d in doc_ids)
    rows = list(
        split_passages(
            (corpus[d] for d in wanted),
            tokenizer,
            max_length=max_length,
            stride=stride,
            prefix=prefix,
        )
    )
    rows_of: dict[str, list[int]] = {}
    for r, (doc_id, _) in enumerate(rows):
        rows_of.setdefault(doc_id, []).append(r)
    index = bm25_index({str(r): text for r, (_, text) in enumerate(rows)})
    chosen: dict[str, dict[str, str]] = {}
    for qid, doc_ids in pairs.items():
        query = queries[qid]
        scores = index.scores(query if isinstance(query, str) else query.full_text)
        chosen[qid] = {}
        for d in doc_ids:
            candidates = rows_of[d]
            chosen[qid][d] = rows[candidates[int(np.argmax(scores[candidates]))]][1]
    return chosen
