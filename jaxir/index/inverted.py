"""A CPU inverted index over learned-sparse vectors: quantized impacts, fine block-max bounds, numba.

**Layout.** Documents ``X [N, V]`` (non-negative weights, e.g. a SPLADE store's
``csr_matrix``) are held as arrays next to ``searcher.json`` (``.npy``, no
pickle):

* the *forward index*, ``X`` itself as CSR, which scores documents::

      doc_ptr      int64 [N + 1]    postings of document d: doc_ptr[d] .. doc_ptr[d + 1]
      doc_terms    uint16/int32 [Z] term ids, ascending within a document (uint16 if V <= 65536)
      doc_impacts  impact [Z]       the quantized weights

* *block maxima* over blocks of ``B`` consecutive documents (``block_size``, default 4),
  which bound them: ``m_tb = max_{d in b} x_dt``. A term present in at least
  :data:`DENSE_FRACTION` of the ``nb = ceil(N / B)`` blocks (the frequent ones, which hold
  most postings) has a dense row of ``nb`` maxima; every other term a list of
  ``(block, max)`` entries::

      term_row      int32 [V]         row of term t in dense_max, -1 for a sparse term
      dense_max     impact [D, nb]    block maxima of the D dense terms
      sparse_ptr    int64 [V + 1]     entries of sparse term t: sparse_ptr[t] .. sparse_ptr[t + 1]
      sparse_block  int32 [M]         block of each entry, ascending within a term
      sparse_max    impact [M]        the term's largest impact in that block

* with ``term_postings=True`` (default), the postings again in *term-major* order, for
  the exhaustive scan below (5 more bytes per posting with ``uint8`` impacts)::

      term_ptr      int64 [V + 1]     postings of term t: term_ptr[t] .. term_ptr[t + 1]
      term_docs     int32 [Z]         document ids, ascending within a term
      term_impacts  impact [Z]        the same quantized weights

With ``quantize=True`` (default) impacts are ``uint8``: ``impact = rint(w / scale)`` with
one global ``scale = max(X) / 255``, and the index scores the *dequantized* vectors
``float32(impact) * float32(scale)`` (:meth:`InvertedIndex.to_csr`); weights that round to
0 are dropped. ``quantize=False`` keeps float32 weights as they are. On SPLADE-like
synthetic data (1M documents, 150 terms each, ``B = 4``) that is 3 bytes per posting
for the forward index plus 3.8 for the maxima (968 MiB; scipy CSC: 1,144 MiB).

**Exact search** (``mode="exact"``) returns the top-``k`` of ``s_d = sum_t q_t x_dt``
over *all* documents, like the dense exact searcher: best score first, ties broken by the
lower document id, and documents that match no query term (score 0) fill the slots left
after the matching ones, in id order; only ``k > N`` pads with ``-1`` / ``-inf``. A
document's score is its forward-index row dotted with the query in float64, in ascending
term order (what a CSR row product does; adding the ``+0.0`` of non-query terms changes
nothing), returned as float32. Per query:

1. *block upper bounds* ``u_b = sum_t q_t m_tb`` into a float32 ``[nb]`` array, term at a
   time: a dense term's row in one vectorized pass, a sparse term's entries scattered;
2. *seeding*: the ``~2k / B + 4`` blocks with the largest ``u_b`` are scored first, so
   the current ``k``-th score ``theta`` starts high;
3. *block-max pruning*: the other blocks are visited in id order and a block is scored
   only if ``u_b`` times a float32 round-off slack ``1 + (n_terms + 4) 2^-22`` reaches
   ``theta`` (else none of its documents can enter the top-``k``: safe pruning, the same
   result as an exhaustive scan). Scoring a block walks its ``B`` forward-index rows
   against a dense ``[V]`` table of the query weights and offers them to a size-``k``
   heap.

4. *exhaustive fallback* (with ``term_postings``): after the first ``2 / 32`` of the blocks
   (:data:`CHECKPOINT_DIVISOR`), the forward postings walked in the second ``1 / 32``
   are projected over all blocks; if that exceeds what a term-at-a-time scan walks (the
   query terms' term-major postings plus one pass over ``N`` accumulators), the bounds
   are not pruning and the scan scores every document instead: a float64 ``[N]``
   accumulator filled term by term in ascending term order, so each document adds the
   same products in the same order as its forward-index row and the result is
   identical, bit for bit (:meth:`InvertedIndex.exhaustive_queries` says which queries
   took it). On SciFact (5,183 documents, SPLADE vectors of ~345 terms, ~255-term
   queries) block-max skips 5.7% of the blocks and walks whole rows, ~1.7M postings a
   query, where the scan walks the query terms' ~366k: in one run of
   ``benchmarks/sparse_search.py`` the scan was 2.6x the same index without it. On 1M synthetic documents the bounds prune and the
   scan is not taken; ``term_postings=False`` then saves its memory.

Small blocks are what makes this prune: SPLADE-like weights are heavy-tailed, so the
maximum over 64 documents sits far above any one document's weight, while over 4 it
stays close. On 1M synthetic documents (common terms in 61-81% of them, every block
holding some query term) ``B = 4`` scores ~400 of 250,000 blocks per query (0.6% of
the documents) where ``B = 64`` scored 83% of its blocks. The price is the bounds pass,
``nb`` floats per dense query term: about half of the query time. Measured
(``benchmarks/sparse_search.py``, BENCHMARKS.md), 1M documents, one shared core: exact
search 348 QPS against scipy CSC's 40.1 (8.7x; the previous 64-document block-posting
layout reached 0.38x), build 34 s (was 241 s).
Queries run in parallel (numba ``prange`` over query chunks, ``nogil``): set the thread
count with ``numba.set_num_threads`` or ``NUMBA_NUM_THREADS``.

**Approximate search** (``mode="approx"``) scores a block only if ``alpha * u_b >=
theta``, with ``0 < alpha <= 1`` (the BMP paper's threshold over-estimation): smaller
``alpha`` skips more blocks and may miss documents whose block bound was loose.
``alpha=1.0`` is the exact search. The default :data:`DEFAULT_ALPHA` = 0.9 kept
recall@10 against exact search at 0.96-0.98 on SPLADE-like synthetic data (Zipfian terms,
~150 non-zeros per document, ~30 per query, 200k and 1M documents, ``B = 4``);
``tests/index/test_inverted.py`` checks >= 0.9 on a small collection. The bounds of
step 1 are computed whatever ``alpha``, so the gain is bounded by the share of time
spent scoring blocks.

Not used, measured on the 200k collection (scratch prototypes): *document reordering*
(even the generator's own topic order, an upper bound on what a clustering could find,
cut the blocks scored at ``B = 4`` by 27% but not the query time, which the bounds pass
dominates) and *MaxScore* over terms (with per-term maxima over all documents only 7 of
a query's 30 terms are non-essential: heavy-tailed weights make every global maximum
large).

Exactness: the bound of a block and the scores of its documents add the same products,
the bound in float32 (hence the slack), the scores in float64; float32 bound weights are
floored at the smallest positive float32 so a block holding a query term never bounds
to 0. With ``quantize=False``, products ``q_t m_tb`` below float32's range (< 1e-45)
would bound to 0 and such documents count as unmatched.

Compiled kernels are cached on disk by numba (``cache=True``): the first call in a fresh
environment compiles them (tens of seconds on a small CPU), later processes load them.

Example:
    >>> import scipy.sparse
    >>> docs = scipy.sparse.csr_matrix(np.array(
    ...     [[0.0, 1.0, 0.0], [2.0, 0.0, 1.0], [0.0, 0.5, 0.5], [0.0, 0.0, 0.0]], np.float32))
    >>> index = InvertedIndex(docs, quantize=False, block_size=2)
    >>> scores_qk, indices_qk = index.search(np.array([[1.0, 0.0, 1.0]], np.float32), k=5)
    >>> indices_qk.tolist(), scores_qk.tolist()
    ([[1, 2, 0, 3, -1]], [[3.0, 0.5, 0.0, 0.0, -inf]])
"""

from __future__ import annotations

import pathlib
from typing import Any

import numba
import numpy as np
import scipy.sparse
from numba import prange, types
from numba.extending import overload

from jaxir.index import base

KIND = "inverted"
#: On-disk format. 1: block postings (term-major, 64-document blocks), read no more.
VERSION = 2
REPRESENTATION = "sparse"
MODES = ("exact", "approx")
#: ``alpha`` of ``mode="approx"`` when none is given (see the module docstring).
DEFAULT_ALPHA = 0.9
DEFAULT_BLOCK_SIZE = 4
#: A term in at least this fraction of the blocks keeps a dense row of block maxima (one
#: vectorized pass per query instead of one scattered add per entry).
DENSE_FRACTION = 0.125
MAX_BLOCK_SIZE = 256
#: Exact search checks after ``1 / CHECKPOINT_DIVISOR`` of the blocks whether to switch to
#: the term-at-a-time scan (see the module docstring).
CHECKPOINT_DIVISOR = 32
_LEVELS = 255  # uint8 impacts 0..255
_TINY32 = np.float32(np.finfo(np.float32).smallest_subnormal)
_ARRAYS = (
    "doc_ptr",
    "doc_terms",
    "doc_impacts",
    "term_row",
    "dense_max",
    "sparse_ptr",
    "sparse_block",
    "sparse_max",
)
#: The term-major copy of the postings (``term_postings=True``): the exhaustive scan's.
_TERM_ARRAYS = ("term_ptr", "term_docs", "term_impacts")


# --------------------------------------------------------------------------- kernels


def _value(lut, impact):
    """The float64 weight of one stored impact: ``lut[impact]`` (uint8) or the float itself."""
    raise NotImplementedError("only called from numba kernels")


@overload(_value, inline="always")
def _value_impl(lut, impact):
    if isinstance(impact, types.Integer):
        return lambda lut, impact: lut[impact]
    return lambda lut, impact: np.float64(impact)


@numba.njit(cache=True, nogil=True)
def _build(indptr, terms, impacts, num_docs, vocab_size, block_size, dense_fraction):
    """Block maxima of every term from the forward index (canonical CSR ``[N, V]``, no zeros).

    Returns ``(term_row, dense_max, sparse_ptr, sparse_block, sparse_max)`` (see the module
    docstring): a term in at least ``dense_fraction`` of the blocks gets a dense row.
    """
    num_blocks = (num_docs + block_size - 1) // block_size
    blocks = np.zeros(vocab_size, np.int64)
    last = np.full(vocab_size, -1, np.int64)
    for d in range(num_docs):
        b = d // block_size
        for p in range(indptr[d], indptr[d + 1]):
            t = terms[p]
            if last[t] != b:
                last[t] = b
                blocks[t] += 1
    term_row = np.full(vocab_size, -1, np.int32)
    sparse_ptr = np.zeros(vocab_size + 1, np.int64)
    num_dense = 0
    for t in range(vocab_size):
        if blocks[t] > 0 and blocks[t] >= dense_fraction * num_blocks:
            term_row[t] = num_dense
            num_dense += 1
            sparse_ptr[t + 1] = sparse_ptr[t]
        else:
            sparse_ptr[t + 1] = sparse_ptr[t] + blocks[t]
    dense_max = np.zeros((num_dense, num_blocks), impacts.dtype)
    sparse_block = np.empty(sparse_ptr[vocab_size], np.int32)
    sparse_max = np.zeros(sparse_ptr[vocab_size], impacts.dtype)
    next_entry = sparse_ptr[:-1].copy()
    last[:] = -1
    for d in range(num_docs):
        b = d // block_size
        for p in range(indptr[d], indptr[d + 1]):
            t, impact, row = terms[p], impacts[p], term_row[terms[p]]
            if row >= 0:
                if impact > dense_max[row, b]:
                    dense_max[row, b] = impact
            elif last[t] != b:
                last[t] = b
                e = next_entry[t]
                next_entry[t] += 1
                sparse_block[e], sparse_max[e] = b, impact
            elif impact > sparse_max[next_entry[t] - 1]:
                sparse_max[next_entry[t] - 1] = impact
    return term_row, dense_max, sparse_ptr, sparse_block, sparse_max


@numba.njit(cache=True, nogil=True, inline="always")
def _worse(s1, d1, s2, d2):
    """Whether ``(s1, d1)`` ranks below ``(s2, d2)``: lower score, or equal score and higher id."""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@numba.njit(cache=True, nogil=True, inline="always")
def _sift_down(heap_s, heap_d, size, i):
    while True:
        child = 2 * i + 1
        if child >= size:
            return
        right = child + 1
        if right < size and _worse(heap_s[right], heap_d[right], heap_s[child], heap_d[child]):
            child = right
        if not _worse(heap_s[child], heap_d[child], heap_s[i], heap_d[i]):
            return
        heap_s[i], heap_s[child] = heap_s[child], heap_s[i]
        heap_d[i], heap_d[child] = heap_d[child], heap_d[i]
        i = child


@numba.njit(cache=True, nogil=True, inline="always")
def _offer(heap_s, heap_d, size, k, score, doc):
    """Offers a document to the size-``k`` heap (root = worst kept); returns the new size."""
    if size < k:
        i = size
        heap_s[i], heap_d[i] = score, doc
        while i > 0:
            parent = (i - 1) // 2
            if not _worse(heap_s[i], heap_d[i], heap_s[parent], heap_d[parent]):
                break
            heap_s[i], heap_s[parent] = heap_s[parent], heap_s[i]
            heap_d[i], heap_d[parent] = heap_d[parent], heap_d[i]
            i = parent
        return size + 1
    if _worse(heap_s[0], heap_d[0], score, doc):
        heap_s[0], heap_d[0] = score, doc
        _sift_down(heap_s, heap_d, size, 0)
    return size


@numba.njit(cache=True, nogil=True, inline="always")
def _score_block(b, index, q_table, heap_s, heap_d, size, k):
    """Scores the documents of block ``b`` (forward-index rows) and offers them to the heap."""
    doc_ptr, doc_terms, doc_impacts, lut = index[0], index[1], index[2], index[8]
    num_docs, block_size = index[10], index[11]
    first = b * block_size
    for d in range(first, min(first + block_size, num_docs)):
        score = 0.0
        for p in range(doc_ptr[d], doc_ptr[d + 1]):
            score += q_table[doc_terms[p]] * _value(lut, doc_impacts[p])
        # The cheap test first: most documents cannot enter the heap.
        if score > 0.0 and (size < k or _worse(heap_s[0], heap_d[0], score, d)):
            size = _offer(heap_s, heap_d, size, k, score, d)
    return size


@numba.njit(cache=True, nogil=True, inline="always")
def _scan_terms(q_terms, q_weights, index, acc, heap_s, heap_d, k):
    """Scores every document term at a time over the term-major postings; returns the heap size.

    Query terms are taken in ascending id order, so each document's float64 sum adds the
    same products in the same order as its forward-index row (:func:`_score_block`).
    """
    term_ptr, term_docs, term_impacts, lut = index[12], index[13], index[14], index[8]
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        w = q_weights[j]
        for p in range(term_ptr[t], term_ptr[t + 1]):
            acc[term_docs[p]] += w * _value(lut, term_impacts[p])
    size = 0
    for d in range(acc.shape[0]):
        score = acc[d]
        if score > 0.0:
            acc[d] = 0.0
            if size < k or _worse(heap_s[0], heap_d[0], score, d):
                size = _offer(heap_s, heap_d, size, k, score, d)
    return size


@numba.njit(cache=True, nogil=True, inline="always")
def _scan_cost(q_terms, index):
    """Postings the term-at-a-time scan walks for this query, plus its pass over the documents;
    -1 without term-major postings."""
    term_ptr = index[12]
    if term_ptr.shape[0] == 0:
        return -1
    cost = index[10]
    for j in range(q_terms.shape[0]):
        cost += term_ptr[q_terms[j] + 1] - term_ptr[q_terms[j]]
    return cost


@numba.njit(cache=True, nogil=True)
def _search_one(q_terms, q_weights, index, k, alpha, num_seeds, scratch, out_s, out_d):
    """Top-``k`` of one query into ``out_s`` / ``out_d`` (see the module docstring).

    Returns whether the query was answered by the exhaustive term-at-a-time scan.
    """
    term_row, dense_max, sparse_ptr, sparse_block, sparse_max = index[3:8]
    scale, num_docs = index[9], index[10]
    bound, q_table, seed_s, seed_b, heap_s, heap_d, acc = scratch
    num_blocks = bound.shape[0]
    # 1. Block upper bounds in float32, term at a time.
    bound[:] = 0.0
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        q_table[t] = q_weights[j]
        w = max(np.float32(q_weights[j] * scale), _TINY32)
        row = term_row[t]
        if row >= 0:
            maxima = dense_max[row]
            for b in range(num_blocks):
                bound[b] += w * np.float32(maxima[b])
        else:
            for e in range(sparse_ptr[t], sparse_ptr[t + 1]):
                bound[sparse_block[e]] += w * np.float32(sparse_max[e])
    # Skip a block if bound * slack * alpha < theta: slack covers the float32 round-off
    # of the bound (n + 3 roundings of 2^-24 each, with room to spare).
    divisor = alpha * (1.0 + (q_terms.shape[0] + 4) * 2.0**-22)
    # 2. Seeds: the blocks with the largest bounds, scored first so that the k-th score
    #    theta starts high; marked scored (bound -1).
    num = 0
    floor = np.float32(0.0)
    for b in range(num_blocks):
        u = bound[b]
        if u > floor:
            num = _offer(seed_s, seed_b, num, num_seeds, u, b)
            if num == num_seeds:
                floor = np.float32(seed_s[0])
    size = 0
    for i in range(num):
        size = _score_block(seed_b[i], index, q_table, heap_s, heap_d, size, k)
        bound[seed_b[i]] = -1.0
    # 3. The other blocks in id order, skipping those whose bound cannot reach theta. After
    #    the first 1/16 of them, if the postings walked so far project past what the
    #    term-at-a-time scan walks in all, the bounds are not pruning: switch to the scan.
    cut = np.float32(heap_s[0] / divisor) if size == k else np.float32(0.0)
    doc_ptr, block_size = index[0], index[11]
    scan_cost = _scan_cost(q_terms, index)
    window = num_blocks // CHECKPOINT_DIVISOR if scan_cost >= 0 else 0
    walked = 0
    exhaustive = False
    for b in range(num_blocks):
        if window > 0 and b == window:
            walked = 0  # project from the second window, where theta has risen
        if window > 0 and b == 2 * window and walked * (num_blocks / window) > scan_cost:
            exhaustive = True
            break
        u = bound[b]
        if u > 0.0 and u >= cut:
            size = _score_block(b, index, q_table, heap_s, heap_d, size, k)
            walked += doc_ptr[min((b + 1) * block_size, num_docs)] - doc_ptr[b * block_size]
            if size == k:
                cut = np.float32(heap_s[0] / divisor)
    if exhaustive:
        size = _scan_terms(q_terms, q_weights, index, acc, heap_s, heap_d, k)
    for j in range(q_terms.shape[0]):
        q_table[q_terms[j]] = 0.0
    # Best first: pop the worst to the back.
    for i in range(size - 1, -1, -1):
        out_s[i], out_d[i] = heap_s[0], heap_d[0]
        heap_s[0], heap_d[0] = heap_s[i], heap_d[i]
        _sift_down(heap_s, heap_d, i, 0)
    # Documents with score 0 fill the remaining slots in id order (skipping matched ones).
    if size < k:
        matched = np.sort(out_d[:size])
        m, d, i = 0, 0, size
        while i < k and d < num_docs:
            if m < size and matched[m] == d:
                m += 1
            else:
                out_s[i], out_d[i] = 0.0, d
                i += 1
            d += 1
    return exhaustive


@numba.njit(cache=True, nogil=True, parallel=True)
def _search(
    q_indptr, q_terms, q_weights, index, k, alpha, num_seeds, chunks, out_s, out_d, out_exhaustive
):
    """Runs :func:`_search_one` for every query, query chunks in parallel."""
    num_blocks = (index[10] + index[11] - 1) // index[11]
    for c in prange(chunks.shape[0] - 1):
        scratch = (
            np.empty(num_blocks, np.float32),
            np.zeros(index[3].shape[0], np.float64),
            np.empty(num_seeds, np.float64),
            np.empty(num_seeds, np.int64),
            np.empty(k, np.float64),
            np.empty(k, np.int64),
            np.zeros(index[10] if index[12].shape[0] else 0, np.float64),
        )
        scores = np.empty(k, np.float64)
        docs = np.empty(k, np.int64)
        for q in range(chunks[c], chunks[c + 1]):
            lo, hi = q_indptr[q], q_indptr[q + 1]
            out_exhaustive[q] = _search_one(
                q_terms[lo:hi], q_weights[lo:hi], index, k, alpha, num_seeds, scratch, scores, docs
            )
            for i in range(k):
                out_s[q, i] = scores[i]
                out_d[q, i] = docs[i]


# --------------------------------------------------------------------------- host side


def _as_csr(matrix: Any, what: str, cols: int | None = None) -> scipy.sparse.csr_matrix:
    """``matrix`` (sparse or dense ``[rows, cols]``) as a canonical CSR matrix without zeros."""
    if scipy.sparse.issparse(matrix):
        csr = scipy.sparse.csr_matrix(matrix, copy=True)
    else:
        dense = np.asarray(matrix)
        if dense.ndim != 2:
            raise ValueError(f"{what} must be a [rows, vocab] matrix, got shape {dense.shape}.")
        csr = scipy.sparse.csr_matrix(dense)
    if cols is not None and csr.shape[1] != cols:
        raise ValueError(f"{what} must have {cols} columns (the vocabulary), got {csr.shape}.")
    if not np.issubdtype(csr.dtype, np.floating) and not np.issubdtype(csr.dtype, np.integer):
        raise ValueError(f"{what} must hold real numbers, got dtype {csr.dtype}.")
    csr.sum_duplicates()
    csr.eliminate_zeros()
    if not np.isfinite(csr.data).all():
        raise ValueError(f"{what} holds NaN or inf weights.")
    if (csr.data < 0).any():
        row = int(np.searchsorted(csr.indptr, np.flatnonzero(csr.data < 0)[0], side="right") - 1)
        raise ValueError(
            f"{what} row {row} has a negative weight; the inverted index needs non-negative "
            "weights (SPLADE vectors are log(1 + relu(.)) >= 0)."
        )
    return csr


def _quantize(data: np.ndarray, scale: np.float32) -> np.ndarray:
    out = np.empty(data.shape, np.uint8)
    step = 1 << 22
    for lo in range(0, data.shape[0], step):
        chunk = data[lo : lo + step].astype(np.float32) / scale
        out[lo : lo + step] = np.clip(np.rint(chunk), 0, _LEVELS)
    return out


class InvertedIndex(base.CorpusShape):
    """A forward index over ``[N, V]`` sparse vectors with fine block-max bounds per term.

    Args:
      docs: ``[N, V]`` non-negative document weights: a ``scipy.sparse`` matrix (e.g.
        :attr:`jaxir.sparse_store.SparseStore.matrix`) or a dense array.
      quantize: store ``uint8`` impacts with one global scale (default) or float32
        weights (see the module docstring).
      block_size: documents per block ``B`` (1..256). Smaller blocks bound tighter but
        cost a longer bounds pass (``N / B`` floats per dense query term); 4 measured
        faster than 2 and 8 at 1M SPLADE-like synthetic documents.
      term_postings: also store the postings term-major (5 bytes per posting with uint8
        impacts) for the exhaustive scan that exact and approximate search switch to when
        the bounds cannot prune (small or uniform collections; see the module docstring).

    Example:
      >>> docs = scipy.sparse.random(50, 20, density=0.2, format="csr", random_state=0)
      >>> index = InvertedIndex(docs)
      >>> index.num_docs, index.dim, index.quantized
      (50, 20, True)
      >>> queries = scipy.sparse.random(2, 20, density=0.3, format="csr", random_state=1)
      >>> scores_qk, indices_qk = index.search(queries, k=3)
      >>> brute_qn = (index.to_csr() @ queries.T).T.toarray()  # the dequantized vectors
      >>> bool((indices_qk == np.argsort(-brute_qn, axis=1, kind="stable")[:, :3]).all())
      True
    """

    def __init__(
        self,
        docs: Any,
        *,
        quantize: bool = True,
        block_size: int = DEFAULT_BLOCK_SIZE,
        term_postings: bool = True,
    ):
        if not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(
                f"InvertedIndex: block_size must be in 1..{MAX_BLOCK_SIZE}, got {block_size}."
            )
        csr = _as_csr(docs, "InvertedIndex: docs")
        num_docs, vocab_size = csr.shape
        if num_docs == 0:
            raise ValueError("InvertedIndex: docs must hold at least one document, got 0 rows.")
        if quantize:
            top = float(csr.data.max()) if csr.nnz else 0.0
            scale = np.float32(top / _LEVELS) if top > 0 else np.float32(1.0)
            impacts = _quantize(csr.data, scale)
        else:
            scale, impacts = np.float32(1.0), csr.data.astype(np.float32)
        keep = impacts != 0  # weights that round to 0 (or underflow float32)
        indptr = csr.indptr.astype(np.int64)
        terms = csr.indices.astype(np.uint16 if vocab_size <= 1 << 16 else np.int32)
        if not keep.all():
            indptr = np.concatenate([[0], np.cumsum(keep)])[indptr]
            terms, impacts = terms[keep], impacts[keep]
        del csr, keep
        arrays = dict(doc_ptr=indptr, doc_terms=terms, doc_impacts=impacts)
        maxima = _build(indptr, terms, impacts, num_docs, vocab_size, block_size, DENSE_FRACTION)
        arrays.update(zip(_ARRAYS[3:], maxima))
        if term_postings:
            by_term = scipy.sparse.csr_matrix(
                (impacts, terms, indptr), shape=(num_docs, vocab_size)
            ).tocsc()
            arrays.update(
                term_ptr=by_term.indptr.astype(np.int64),
                term_docs=by_term.indices.astype(np.int32),
                term_impacts=by_term.data,
            )
            del by_term
        self._set(
            arrays,
            num_docs=num_docs,
            vocab_size=vocab_size,
            block_size=block_size,
            quantized=bool(quantize),
            scale=float(scale),
        )

    def _set(self, arrays: dict[str, np.ndarray], **meta: Any) -> None:
        self._num_docs = int(meta["num_docs"])
        self._dim = int(meta["vocab_size"])
        self.block_size = int(meta["block_size"])
        self.quantized = bool(meta["quantized"])
        self.scale = float(meta["scale"])
        names = _ARRAYS + (_TERM_ARRAYS if _TERM_ARRAYS[0] in arrays else ())
        self.arrays = {name: np.ascontiguousarray(arrays[name]) for name in names}
        # Dequantized value of each uint8 impact (float32, as to_csr() holds them).
        self._lut = (
            (np.arange(_LEVELS + 1, dtype=np.float32) * np.float32(self.scale)).astype(np.float64)
            if self.quantized
            else np.zeros(1, np.float64)
        )

    @property
    def num_postings(self) -> int:
        """Stored postings ``Z`` (non-zero impacts)."""
        return int(self.arrays["doc_terms"].shape[0])

    @property
    def num_dense_terms(self) -> int:
        """Terms ``D`` with a dense row of block maxima."""
        return int(self.arrays["dense_max"].shape[0])

    @property
    def num_entries(self) -> int:
        """``(block, max)`` entries ``M`` of the sparse terms."""
        return int(self.arrays["sparse_block"].shape[0])

    @property
    def term_postings(self) -> bool:
        """Whether the index holds the term-major postings of the exhaustive scan."""
        return _TERM_ARRAYS[0] in self.arrays

    @property
    def nbytes(self) -> int:
        """Bytes of the index arrays (what :meth:`save` writes, headers aside)."""
        return sum(a.nbytes for a in self.arrays.values())

    def _index(self) -> tuple:
        a = self.arrays
        impacts = a["doc_impacts"]
        absent = (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, impacts.dtype))
        return (
            *(a[name] for name in _ARRAYS),
            self._lut,
            np.float64(np.float32(self.scale)),
            self._num_docs,
            self.block_size,
            *(tuple(a[name] for name in _TERM_ARRAYS) if self.term_postings else absent),
        )

    def to_csr(self) -> scipy.sparse.csr_matrix:
        """The ``[N, V]`` float32 document vectors the index scores (dequantized impacts)."""
        a = self.arrays
        impacts = a["doc_impacts"]
        values = self._lut.astype(np.float32)[impacts] if self.quantized else impacts.copy()
        return scipy.sparse.csr_matrix(
            (values, a["doc_terms"].astype(np.int32), a["doc_ptr"].copy()),
            shape=(self._num_docs, self._dim),
        )

    def search(
        self,
        queries: Any,
        k: int,
        *,
        mode: str = "exact",
        alpha: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents per query by ``sum_t q_t x_dt``.

        Args:
          queries: ``[Q, V]`` non-negative query weights: a ``scipy.sparse`` matrix or a
            dense NumPy / JAX array.
          k: documents per query; ``k > num_docs`` pads with index ``-1``, score ``-inf``.
          mode: ``"exact"`` (block-max safe pruning; equals an exhaustive scan) or
            ``"approx"`` (prunes with ``alpha``; see the module docstring).
          alpha: ``mode="approx"`` only: score a block when ``alpha * bound >= theta``,
            ``0 < alpha <= 1`` (default :data:`DEFAULT_ALPHA`; ``1.0`` is exact).

        Returns:
          ``(scores_qk float32 [Q, k], indices_qk int32 [Q, k])``, best first, ties by
          lower document id; documents with score 0 fill the slots after the matches.
        """
        scores_qk, indices_qk, _ = self._run(queries, k, mode, alpha)
        return scores_qk, indices_qk

    def exhaustive_queries(
        self, queries: Any, k: int, *, mode: str = "exact", alpha: float | None = None
    ) -> np.ndarray:
        """``bool [Q]``: which queries :meth:`search` answers by the term-at-a-time scan.

        Runs the search with the same arguments; a query is scanned exhaustively when the
        blocks its bounds cannot skip hold more postings than its terms' term-major
        postings (see the module docstring). Always all ``False`` without
        ``term_postings``.

        Example:
          >>> docs = scipy.sparse.random(1000, 30, density=0.5, format="csr", random_state=0)
          >>> index = InvertedIndex(docs)
          >>> index.exhaustive_queries(docs[:3], k=5).tolist()  # every block could reach theta
          [True, True, True]
          >>> InvertedIndex(docs, term_postings=False).exhaustive_queries(docs[:3], k=5).tolist()
          [False, False, False]
        """
        return self._run(queries, k, mode, alpha)[2]

    def _run(
        self, queries: Any, k: int, mode: str, alpha: float | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`search`'s ``(scores_qk, indices_qk)`` and :meth:`exhaustive_queries`'s ``[Q]``."""
        if mode not in MODES:
            raise ValueError(f"InvertedIndex.search: mode must be one of {MODES}, got {mode!r}.")
        if mode == "exact":
            if alpha is not None:
                raise ValueError(
                    "InvertedIndex.search: alpha only applies to mode='approx' (exact search "
                    "prunes safely)."
                )
            alpha = 1.0
        elif alpha is None:
            alpha = DEFAULT_ALPHA
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"InvertedIndex.search: alpha must be in (0, 1], got {alpha}.")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"InvertedIndex.search: k must be an integer >= 1, got {k!r}.")
        csr = _as_csr(queries, "InvertedIndex.search: queries", cols=self._dim)
        num_queries = csr.shape[0]
        scores_qk = np.full((num_queries, k), -np.inf, np.float32)
        indices_qk = np.full((num_queries, k), -1, np.int32)
        exhaustive_q = np.zeros(num_queries, np.bool_)
        if num_queries == 0:
            return scores_qk, indices_qk, exhaustive_q
        k_eff = min(int(k), self._num_docs)
        # Seed blocks: enough to fill the heap about twice (plus a few) before pruning.
        num_seeds = min(-(-2 * k_eff // self.block_size) + 4, -(-self._num_docs // self.block_size))
        num_chunks = min(num_queries, 8 * numba.get_num_threads())
        chunks = np.linspace(0, num_queries, num_chunks + 1).astype(np.int64)
        _search(
            csr.indptr.astype(np.int64),
            csr.indices.astype(np.int32),
            csr.data.astype(np.float64),
            self._index(),
            k_eff,
            float(alpha),
            num_seeds,
            chunks,
            scores_qk,
            indices_qk,
            exhaustive_q,
        )
        return scores_qk, indices_qk, exhaustive_q

    # ----------------------------------------------------------------------- files

    def save(self, directory: str | pathlib.Path) -> None:
        """Writes the index arrays (``<name>.npy``) and ``searcher.json`` into ``directory``."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        checksums = {}
        for name in self.arrays:
            path = directory / f"{name}.npy"
            np.save(path, self.arrays[name], allow_pickle=False)
            checksums[path.name] = base.file_sha256(path)
        base.write_manifest(
            directory,
            kind=KIND,
            version=VERSION,
            num_docs=self._num_docs,
            dim=self._dim,
            representation=REPRESENTATION,
            block_size=self.block_size,
            quantized=self.quantized,
            scale=self.scale,
            num_postings=self.num_postings,
            num_dense_terms=self.num_dense_terms,
            num_entries=self.num_entries,
            term_postings=self.term_postings,
            sha256=checksums,
        )

    @classmethod
    def load(cls, directory: str | pathlib.Path) -> InvertedIndex:
        """Loads an index written by :meth:`save`, verifying checksums and array shapes.

        Raises:
          FileNotFoundError: ``searcher.json`` or an array file is missing.
          ValueError: an index of an older on-disk format (rebuild it), a corrupted
            manifest, a checksum mismatch, or arrays that disagree with the manifest or
            each other.
        """
        directory = pathlib.Path(directory)
        manifest = base.read_manifest(directory)
        where = directory / base.MANIFEST
        if manifest["kind"] == KIND and manifest["version"] != VERSION:
            raise ValueError(
                f"{where}: field 'version' is {manifest['version']}: an inverted index of an "
                f"older on-disk layout; this jaxir reads version {VERSION} (forward index + "
                "fine block maxima). Rebuild it from its sparse store (`jaxir index STORE "
                "OUT`, or InvertedIndex(docs).save(directory))."
            )
        base.check_manifest(manifest, directory, kind=KIND, version=VERSION)
        manifest.setdefault("term_postings", False)  # written by jaxir before the scan existed
        for field, kind in (
            ("block_size", int),
            ("quantized", bool),
            ("scale", float),
            ("num_postings", int),
            ("num_dense_terms", int),
            ("num_entries", int),
            ("term_postings", bool),
            ("sha256", dict),
        ):
            if not isinstance(manifest.get(field), kind):
                raise ValueError(
                    f"{where}: corrupted manifest, field {field!r} must be {kind.__name__}, got "
                    f"{manifest.get(field)!r}; re-save the index."
                )
        arrays = {}
        for name in _ARRAYS + (_TERM_ARRAYS if manifest["term_postings"] else ()):
            path = directory / f"{name}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing array of the inverted index.")
            if manifest["sha256"].get(path.name) != base.file_sha256(path):
                raise ValueError(
                    f"{path}: SHA-256 does not match field 'sha256' of {where}; the file was "
                    "modified or truncated, re-save the index."
                )
            arrays[name] = np.load(path, allow_pickle=False)
        _check_arrays(arrays, manifest, where)
        index = cls.__new__(cls)
        index._set(
            arrays,
            num_docs=manifest["num_docs"],
            vocab_size=manifest["dim"],
            block_size=manifest["block_size"],
            quantized=manifest["quantized"],
            scale=manifest["scale"],
        )
        return index


def _check_arrays(arrays: dict[str, np.ndarray], manifest: dict[str, Any], where: Any) -> None:
    """Raises ``ValueError`` unless the arrays form a valid index (the kernels do no bounds checks)."""
    n, v, z = manifest["num_docs"], manifest["dim"], manifest["num_postings"]
    dense, m = manifest["num_dense_terms"], manifest["num_entries"]
    if not 1 <= manifest["block_size"] <= MAX_BLOCK_SIZE or n < 1:
        raise ValueError(
            f"{where}: fields 'block_size' ({manifest['block_size']}) / 'num_docs' "
            f"({n}) must be in 1..{MAX_BLOCK_SIZE} / >= 1; re-save the index."
        )
    if not (np.isfinite(manifest["scale"]) and manifest["scale"] > 0):
        raise ValueError(f"{where}: field 'scale' must be a positive number; re-save the index.")
    num_blocks = -(-n // manifest["block_size"])
    impact = (np.dtype(np.uint8 if manifest["quantized"] else np.float32),)
    int32, int64 = (np.dtype(np.int32),), (np.dtype(np.int64),)
    term_ids = (np.dtype(np.uint16), *int32) if v <= 1 << 16 else int32
    expected = {
        "doc_ptr": ((n + 1,), int64),
        "doc_terms": ((z,), term_ids),
        "doc_impacts": ((z,), impact),
        "term_row": ((v,), int32),
        "dense_max": ((dense, num_blocks), impact),
        "sparse_ptr": ((v + 1,), int64),
        "sparse_block": ((m,), int32),
        "sparse_max": ((m,), impact),
    }
    if manifest["term_postings"]:
        expected.update(
            term_ptr=((v + 1,), int64), term_docs=((z,), int32), term_impacts=((z,), impact)
        )
    for name, (shape, dtypes) in expected.items():
        a = arrays[name]
        if a.shape != shape or a.dtype not in dtypes:
            raise ValueError(
                f"{where}: {name}.npy holds {a.dtype} {a.shape}, expected "
                f"{'/'.join(d.name for d in dtypes)} {shape} (fields num_docs / dim / "
                "num_postings / num_dense_terms / num_entries); re-save the index."
            )
    doc_ptr, terms, rows = arrays["doc_ptr"], arrays["doc_terms"], arrays["term_row"]
    sparse_ptr, blocks = arrays["sparse_ptr"], arrays["sparse_block"]
    problems = (
        (doc_ptr[0] != 0 or doc_ptr[-1] != z or (np.diff(doc_ptr) < 0).any(), "doc_ptr"),
        (z and (int(terms.min()) < 0 or int(terms.max()) >= v), "doc_terms"),
        (v and (rows.min() < -1 or rows.max() >= dense or (rows >= 0).sum() != dense), "term_row"),
        (
            sparse_ptr[0] != 0 or sparse_ptr[-1] != m or (np.diff(sparse_ptr) < 0).any(),
            "sparse_ptr",
        ),
        (m and (blocks.min() < 0 or blocks.max() >= num_blocks), "sparse_block"),
    )
    if manifest["term_postings"]:
        term_ptr, docs = arrays["term_ptr"], arrays["term_docs"]
        problems += (
            (term_ptr[0] != 0 or term_ptr[-1] != z or (np.diff(term_ptr) < 0).any(), "term_ptr"),
            (z and (int(docs.min()) < 0 or int(docs.max()) >= n), "term_docs"),
        )
    for bad, name in problems:
        if bad:
            raise ValueError(f"{where}: {name}.npy is inconsistent with the manifest; re-save it.")
