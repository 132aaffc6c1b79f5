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

Example:
    >>> from tokenizers import Tokenizer, models, pre_tokenizers, processors
    >>> from transformers import PreTrainedTokenizerFast
    >>> words = "[PAD] [UNK] [CLS] [SEP] a b c d e f g h title".split()
    >>> core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    >>> core.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> core.post_processor = processors.TemplateProcessing(
    ...     single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    >>> tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]")
    >>> docs = [Document("d1", "a b c d e f g h", "title"), Document("d2", "a b")]
    >>> list(split_passages(docs, tok, max_length=7))
    [('d1', 'title a b c d'), ('d1', 'title c d e f'), ('d1', 'title e f g h'), ('d2', 'a b')]
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator

import transformers

from jaxir.data.records import Document

__all__ = ["split_passages", "word_windows"]


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
) -> Iterator[tuple[str, str]]:
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
      One or more rows per document, in input order; a document that fits is one row
      with its full text (``title + " " + text``).
    """
    if not tokenizer.is_fast:
        raise TypeError("split_passages needs a fast tokenizer (character offsets)")
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    if prefix:
        specials += len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    if max_length - specials < 2:
        raise ValueError(
            f"max_length {max_length} leaves no room for text after the special tokens and prefix"
        )
    stream = iter(documents)
    encode = functools.partial(tokenizer, add_special_tokens=False, return_offsets_mapping=True)
    while batch := [_title_and_text(item) for item in itertools.islice(stream, batch_size)]:
        titles = tokenizer([t for _, t, _ in batch], add_special_tokens=False)["input_ids"]
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
                yield doc_id, f"{title} {chunk}".strip() if title else chunk
