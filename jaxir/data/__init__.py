"""Data: BEIR records, TREC runs, training groups, tokenization, synthetic data, BM25.

Everything a training or evaluation run reads from disk enters jaxir here, and every
reader raises :class:`DataError` (file, line, field, fix) on bad input.

Example:
    >>> from jaxir import data
    >>> beir = data.make_collection(num_topics=4, num_train_queries=4, num_test_queries=4)
    >>> run = data.bm25_search(beir.corpus, beir.queries, k=5)
    >>> sorted(run) == sorted(beir.queries)
    True
"""

from jaxir.data.errors import DataError
from jaxir.data.groups import (
    TrainGroup,
    groups_from_qrels,
    iter_groups,
    read_groups,
    write_groups,
)
from jaxir.data.negatives import BM25Index, bm25_index, bm25_search, mine_bm25_negatives
from jaxir.data.records import (
    BeirCollection,
    Document,
    Qrels,
    Query,
    count_lines,
    iter_corpus,
    iter_lines,
    iter_queries,
    load_beir,
    load_corpus,
    load_qrels,
    load_queries,
    open_text,
    write_corpus,
    write_qrels,
    write_queries,
)
from jaxir.data.runs import Run, read_trec_run, run_from_topk, write_trec_run
from jaxir.data.synthetic import make_collection, write_collection
from jaxir.data.tokenizer import (
    CONTRACT_FILE,
    DEFAULT_BUCKETS,
    SortedBatch,
    TokenizerContract,
    bucket_length,
    check_tokenizer_contract,
    encode_batch,
    length_buckets,
    load_tokenizer,
    load_tokenizer_contract,
    pad_batch_rows,
    tokenize_texts_sorted,
    tokenizer_contract,
    train_wordpiece,
)

__all__ = [
    "CONTRACT_FILE",
    "DEFAULT_BUCKETS",
    "BM25Index",
    "BeirCollection",
    "DataError",
    "Document",
    "Qrels",
    "Query",
    "Run",
    "SortedBatch",
    "TokenizerContract",
    "TrainGroup",
    "bm25_index",
    "bm25_search",
    "bucket_length",
    "check_tokenizer_contract",
    "count_lines",
    "encode_batch",
    "groups_from_qrels",
    "iter_corpus",
    "iter_groups",
    "iter_lines",
    "iter_queries",
    "length_buckets",
    "load_beir",
    "load_corpus",
    "load_qrels",
    "load_queries",
    "load_tokenizer",
    "load_tokenizer_contract",
    "make_collection",
    "mine_bm25_negatives",
    "open_text",
    "pad_batch_rows",
    "read_groups",
    "read_trec_run",
    "run_from_topk",
    "tokenize_texts_sorted",
    "tokenizer_contract",
    "train_wordpiece",
    "write_collection",
    "write_corpus",
    "write_groups",
    "write_qrels",
    "write_queries",
    "write_trec_run",
]
