"""Dense retrieval: encode queries, search a :class:`~jaxir.index.Searcher`, return a run.

:func:`retrieve` is the serving path for any searcher (exact on device or ScaNN):
queries are encoded in chunks of ``batch_size`` texts by a
:class:`~jaxir.encode.TextEncoder`, each chunk ``q_bd [B, D]`` is searched with
``searcher.search(q_bd, k) -> (scores_bk, indices_bk)``, and row indices become
document ids through ``doc_ids`` (row ``i`` of the indexed vectors is ``doc_ids[i]``).
Chunking bounds host memory to ``batch_size * k`` results in flight and lets the
exact searcher reuse one compiled program per chunk size.

:func:`dense_search_run` is the one-call evaluation path for a
:class:`~jaxir.models.dual_encoder.DualEncoder`: encode the corpus with the passage
tower, search it exactly on device and return the run that
:func:`jaxir.eval.evaluate` scores.

Example:
    >>> import numpy as np
    >>> from flax import nnx
    >>> from tokenizers import Tokenizer, models, pre_tokenizers, processors
    >>> from transformers import PreTrainedTokenizerFast
    >>> from jaxir.models.bert import PRESETS
    >>> from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec
    >>> vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "cats": 4, "purr": 5, "dogs": 6}
    >>> core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    >>> core.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> core.post_processor = processors.TemplateProcessing(
    ...     single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    >>> tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]")
    >>> spec = DualEncoderSpec(query_max_length=8, passage_max_length=16)
    >>> model = DualEncoder.create(PRESETS["tiny"], spec, rngs=nnx.Rngs(0))
    >>> corpus = {"d1": "cats purr", "d2": "dogs", "d3": "purr purr"}
    >>> run = dense_search_run(model, tok, corpus, {"q1": "cats purr"}, k=2)
    >>> list(run), len(run["q1"]), list(run["q1"])[0]
    (['q1'], 2, 'd1')
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

import transformers
from jax.sharding import Mesh

from jaxir.data.records import Document, Query
from jaxir.data.runs import Run, run_from_topk
from jaxir.encode import TextEncoder
from jaxir.index import ExactSearcher, Searcher
from jaxir.models.dual_encoder import DualEncoder

__all__ = ["dense_search_run", "max_rows_per_doc", "query_texts", "retrieve", "tower_encoders"]


def query_texts(
    queries: Mapping[str, Query | str] | Sequence[str],
) -> tuple[list[str], list[str]]:
    """``(query_ids, texts)`` of a ``{qid: Query | text}`` mapping or a list of texts.

    A list gets the ids ``"0"``, ``"1"``, ... (its positions). A :class:`Query`
    contributes its ``full_text``.

    >>> query_texts(["cats", "dogs"])
    (['0', '1'], ['cats', 'dogs'])
    >>> query_texts({"q7": Query("q7", "why do cats purr")})
    (['q7'], ['why do cats purr'])
    """
    if isinstance(queries, str):
        raise TypeError("queries must be a list of texts or a {query_id: text} mapping, not a str")
    if isinstance(queries, Mapping):
        ids = [str(q) for q in queries]
        values = list(queries.values())
    else:
        values = list(queries)
        ids = [str(i) for i in range(len(values))]
    texts = []
    for qid, value in zip(ids, values):
        text = value.full_text if isinstance(value, Query) else value
        if not isinstance(text, str):
            raise TypeError(f"query {qid!r}: expected a str or Query, got {type(value).__name__}")
        texts.append(text)
    return ids, texts


def max_rows_per_doc(doc_ids: Sequence[str]) -> int:
    """The most rows any one document id has (1 for an index of whole documents).

    >>> max_rows_per_doc(["a", "b", "a"]), max_rows_per_doc([])
    (2, 1)
    """
    return max(collections.Counter(doc_ids).values(), default=1)


def retrieve(
    query_encoder: TextEncoder,
    searcher: Searcher,
    doc_ids: Sequence[str],
    queries: Mapping[str, Query | str] | Sequence[str],
    k: int = 100,
    *,
    batch_size: int = 1024,
    encode_batch_size: int = 64,
    rows_per_doc: int | None = None,
) -> Run:
    """Top-``k`` documents for every query: ``{query_id: {doc_id: score}}``.

    An index may hold several rows (passages) per document id, as
    :func:`jaxir.data.passages.split_passages` makes them: a document then scores its
    best row's score (MaxP), and ``k * rows_per_doc`` rows are searched so that ``k``
    distinct documents come back.

    Args:
      query_encoder: turns query texts into ``[Q, D]`` vectors; its pooling,
        normalization, prefix and max length must be those the documents were
        indexed with (the serving contract).
      searcher: a :class:`~jaxir.index.Searcher` over ``N`` document vectors.
      doc_ids: ``[N]`` ids; row ``i`` of the searcher is ``doc_ids[i]``.
      queries: ``{query_id: Query | text}``, or a list of texts (ids ``"0"``, ``"1"``...).
      k: documents per query (fewer when the searcher returns padding).
      batch_size: queries encoded and searched per step.
      encode_batch_size: rows per encoder forward pass.
      rows_per_doc: the most rows any document has in ``doc_ids`` (``None``: counted
        here, ``O(N)``; pass it when calling repeatedly over a large index).

    Returns:
      A :data:`~jaxir.data.runs.Run` with an entry for every query, in input order.
      Scores are inner products of the query and document vectors.

    Raises:
      ValueError: ``doc_ids`` does not have ``searcher.num_docs`` entries, the encoder
        dimension differs from the searcher's, or ``k`` / ``batch_size`` < 1.
    """
    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}")
    if len(doc_ids) != searcher.num_docs:
        raise ValueError(
            f"{len(doc_ids)} doc_ids for a searcher over {searcher.num_docs} vectors; pass the "
            "ids of the vectors the searcher was built from, in row order"
        )
    if query_encoder.dim != searcher.dim:
        raise ValueError(
            f"the query encoder makes {query_encoder.dim}-d vectors but the searcher holds "
            f"{searcher.dim}-d ones; use the encoder the documents were encoded with"
        )
    if rows_per_doc is None:
        rows_per_doc = max_rows_per_doc(doc_ids)
    rows = min(k * rows_per_doc, searcher.num_docs)
    qids, texts = query_texts(queries)
    run: Run = {}
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        q_bd = query_encoder.encode(chunk, batch_size=encode_batch_size)
        scores_bk, indices_bk = searcher.search(q_bd, rows)
        batch_qids = qids[start : start + batch_size]
        run.update(run_from_topk(batch_qids, doc_ids, scores_bk, indices_bk, k=k))
    return run


def tower_encoders(
    model: DualEncoder,
    tokenizer: transformers.PreTrainedTokenizerBase,
    *,
    mesh: Mesh | None = None,
) -> tuple[TextEncoder, TextEncoder]:
    """``(query_encoder, passage_encoder)`` applying the model's :class:`DualEncoderSpec`.

    Pooling, normalization, prefixes and max lengths come from ``model.spec``; a tied
    model uses its one tower for both. The encoders read the model's parameters at
    every call, so they follow a model trained in place.
    """
    spec = model.spec
    passage_tower = model.query_encoder if model.passage_encoder is None else model.passage_encoder
    common = dict(pooling=spec.pooling, normalize=spec.normalize, mesh=mesh)
    query = TextEncoder(
        model.query_encoder,
        tokenizer,
        max_length=spec.query_max_length,
        prefix=spec.query_prefix,
        **common,
    )
    passage = TextEncoder(
        passage_tower,
        tokenizer,
        max_length=spec.passage_max_length,
        prefix=spec.passage_prefix,
        **common,
    )
    return query, passage


def dense_search_run(
    model: DualEncoder,
    tokenizer: transformers.PreTrainedTokenizerBase,
    corpus: Mapping[str, Document | str],
    queries: Mapping[str, Query | str] | Sequence[str],
    *,
    k: int = 100,
    batch_size: int = 64,
    mesh: Mesh | None = None,
    split_documents: bool = False,
    stride: int = 0,
) -> Run:
    """Encode ``corpus`` and ``queries`` with ``model`` and return the exact top-``k`` run.

    Args:
      model: the dual encoder (its spec sets pooling, prefixes and lengths).
      tokenizer: the tokenizer the model was trained with.
      corpus: ``{doc_id: Document | text}`` (a Document contributes ``full_text``).
      queries: ``{query_id: Query | text}`` or a list of texts.
      k: documents per query.
      batch_size: rows per encoder forward pass.
      mesh: optional device mesh for encoding and search (default: all devices for
        the search, one device for encoding).
      split_documents: index every document as overlapping passages that fit the
        passage tower (:func:`~jaxir.data.passages.split_passages`) and score it by its
        best one (MaxP); ``False`` reads each document's first ``passage_max_length``
        tokens (FirstP).
      stride: tokens between passage starts when splitting (0: half a window).

    Cost: one pass of the passage tower over the corpus (``[N, D]`` float32 on the
    host, then on device) and one of the query tower; search is exact.
    """
    if not corpus:
        raise ValueError("corpus is empty; there is nothing to search")
    query_encoder, passage_encoder = tower_encoders(model, tokenizer, mesh=mesh)
    if split_documents:
        documents = (doc if isinstance(doc, Document) else (d, doc) for d, doc in corpus.items())
        rows = list(passage_encoder.passages(documents, stride=stride))
    else:
        rows = [
            (d, doc.full_text if isinstance(doc, Document) else doc) for d, doc in corpus.items()
        ]
    doc_ids = [d for d, _ in rows]
    docs_nd = passage_encoder.encode([text for _, text in rows], batch_size=batch_size)
    searcher = ExactSearcher(docs_nd, mesh=mesh)
    return retrieve(query_encoder, searcher, doc_ids, queries, k=k, encode_batch_size=batch_size)
