"""A CPU inverted index over learned-sparse vectors: quantized impacts, block-max pruning, numba.

**Layout.** Documents ``X [N, V]`` (non-negative weights, e.g. a SPLADE store's
``csr_matrix``) are cut into *blocks* of ``B`` consecutive document ids (``B <= 256``,
default 64). For each term ``t`` the index holds one *entry* per block where ``t`` occurs,
and each entry the postings of that block (in ascending document order)::

    block_ptr      int64 [V + 1]   entries of term t: block_ptr[t] .. block_ptr[t + 1]
    entry_block    int32 [M]       block id of each entry (ascending within a term)
    entry_max      impact [M]      the largest impact of the term in that block (block-max)
    entry_start    int32/64 [M+1]  postings of entry e: entry_start[e] .. entry_start[e + 1]
    posting_offset uint8 [Z]       document id - block id * B (the document within its block)
    posting_impact impact [Z]      the term's quantized weight in that document

so posting ``p`` of entry ``e`` is document ``entry_block[e] * B + posting_offset[p]``.
A term present in at least :data:`DENSE_FRACTION` of the blocks stores an entry for
*every* block (empty ones with ``entry_max = 0``), so its entry for block ``b`` is
``block_ptr[t] + b``; a term is dense exactly when it has ``ceil(N / B)`` entries.
With ``quantize=True`` (default) impacts are ``uint8``: ``impact = rint(w / scale)``
with one global ``scale = max(X) / 255``, and the index scores the *dequantized*
vectors ``float32(impact) * float32(scale)`` (:meth:`InvertedIndex.to_csr`); weights
that round to 0 are dropped. ``quantize=False`` keeps float32 weights as they are. All
arrays are ``.npy`` files next to ``searcher.json`` (no pickle): 2 bytes per posting
(quantized) plus 9 bytes per entry, ~6.4 bytes per posting in all on SPLADE-like
synthetic data with ``B = 64``.

**Exact search** (``mode="exact"``) returns the top-``k`` of ``s_d = sum_t q_t x_dt``
over *all* documents, like the dense exact searcher: best score first, ties broken by the
lower document id, and documents that match no query term (score 0) fill the slots left
after the matching ones, in id order; only ``k > N`` pads with ``-1`` / ``-inf``. Scores
accumulate in float64 in ascending term order (the order of a CSR row's dot product) and
are returned as float32. Per query:

1. *block upper bounds* ``u_b = sum_t q_t max_{d in b} x_dt``, term at a time over the
   query terms' entries (cost: the number of entries, at most ``N/B`` per term), which
   also links each block to the list of the query's entries in it;
2. *seeding*: the few blocks with the largest ``u_b`` are scored first, best first, so
   the current ``k``-th score ``theta`` starts high;
3. *block-max pruning*: the remaining blocks are visited in id order and a block is
   scored only if ``u_b >= theta`` (else none of its documents can enter the top-``k``:
   safe pruning, the same result as an exhaustive scan). Scoring a block walks its list
   of entries (no search) and their postings into a ``B``-slot accumulator, then offers
   its documents to a size-``k`` heap.

Nothing costs ``O(N)`` per query (no dense ``[N]`` score vector, no ``argpartition``
over all documents). How much it saves depends on how many blocks pruning skips: on
a 1M-document synthetic collection whose most frequent terms occur in 61-81% of the
documents it skipped 17% of the blocks and ran at 0.38x the QPS of a scipy CSC product
(``benchmarks/sparse_search.py``, BENCHMARKS.md), whose per-posting work is cheaper
(term-major rows scored block by block cost scattered reads). ``u_b`` and ``s_d`` add the same rounded products in the same term
order, so ``s_d <= u_b`` also holds in floating point and the pruning stays exact.
Queries run in parallel (numba ``prange`` over query chunks, ``nogil``): set the thread
count with ``numba.set_num_threads`` or ``NUMBA_NUM_THREADS``.

**Approximate search** (``mode="approx"``) scores a block only if ``alpha * u_b >=
theta``, with ``0 < alpha <= 1`` (the BMP paper's threshold over-estimation): smaller
``alpha`` skips more blocks and may miss documents whose block bound was loose.
``alpha=1.0`` is the exact search. The default :data:`DEFAULT_ALPHA` = 0.9 kept
recall@10 against exact search at 0.98 on SPLADE-like synthetic data (Zipfian terms,
~120 non-zeros per document, ~30 per query, 200k and 1M documents, ``B = 64``);
``tests/index/test_inverted.py`` checks >= 0.9 on a small collection. The bounds of
step 1 are computed whatever ``alpha``, so the gain is bounded by the share of time
spent scoring blocks.

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
VERSION = 1
REPRESENTATION = "sparse"
MODES = ("exact", "approx")
#: ``alpha`` of ``mode="approx"`` when none is given (see the module docstring).
DEFAULT_ALPHA = 0.9
DEFAULT_BLOCK_SIZE = 64
#: A term in at least this fraction of the blocks stores an entry for every block (its
#: entry for block b is found without reading a block id; it costs at most
#: 1 / DENSE_FRACTION times its entries).
DENSE_FRACTION = 0.5
MAX_BLOCK_SIZE = 256  # in-block offsets are uint8
_LEVELS = 255  # uint8 impacts 0..255
_ARRAYS = (
    "block_ptr",
    "entry_block",
    "entry_max",
    "entry_start",
    "posting_offset",
    "posting_impact",
)


# --------------------------------------------------------------------------- kernels


def _contribution(table_j, q_j, impact):
    """``q_j * x`` for one posting: ``table_j[impact]`` (uint8 impacts) or ``q_j * impact``."""
    raise NotImplementedError("only called from numba kernels")


@overload(_contribution, inline="always")
def _contribution_impl(table_j, q_j, impact):
    if isinstance(impact, types.Integer):
        return lambda table_j, q_j, impact: table_j[impact]
    return lambda table_j, q_j, impact: q_j * np.float64(impact)


@numba.njit(cache=True, nogil=True)
def _build(indptr, indices, impacts, num_docs, vocab_size, block_size, dense_fraction):
    """Term-major postings and block-max entries from a canonical CSR ``[N, V]`` (zeros dropped).

    A term present in at least ``dense_fraction`` of the blocks gets an entry for every
    block (empty ones included), so its entry for block ``b`` is ``block_ptr[t] + b``.
    """
    num_blocks = (num_docs + block_size - 1) // block_size
    df = np.zeros(vocab_size, np.int64)
    entries = np.zeros(vocab_size, np.int64)
    last = np.full(vocab_size, -1, np.int64)
    for d in range(num_docs):
        b = d // block_size
        for p in range(indptr[d], indptr[d + 1]):
            if impacts[p] == 0:
                continue
            t = indices[p]
            df[t] += 1
            if last[t] != b:
                last[t] = b
                entries[t] += 1
    dense = entries >= dense_fraction * num_blocks
    term_ptr = np.zeros(vocab_size + 1, np.int64)
    block_ptr = np.zeros(vocab_size + 1, np.int64)
    for t in range(vocab_size):
        term_ptr[t + 1] = term_ptr[t] + df[t]
        block_ptr[t + 1] = block_ptr[t] + (num_blocks if dense[t] else entries[t])
    num_postings, num_entries = term_ptr[vocab_size], block_ptr[vocab_size]
    posting_offset = np.empty(num_postings, np.uint8)
    posting_impact = np.empty(num_postings, impacts.dtype)
    entry_block = np.empty(num_entries, np.int32)
    entry_max = np.zeros(num_entries, impacts.dtype)
    entry_start = np.full(num_entries + 1, -1, np.int64)
    entry_start[num_entries] = num_postings
    for t in range(vocab_size):
        if dense[t]:
            for b in range(num_blocks):
                entry_block[block_ptr[t] + b] = b
    next_posting = term_ptr[:-1].copy()
    next_entry = block_ptr[:-1].copy()
    last[:] = -1
    for d in range(num_docs):
        b = d // block_size
        offset = d - b * block_size
        for p in range(indptr[d], indptr[d + 1]):
            impact = impacts[p]
            if impact == 0:
                continue
            t = indices[p]
            if last[t] != b:
                last[t] = b
                if dense[t]:
                    e = block_ptr[t] + b
                else:
                    e = next_entry[t]
                    next_entry[t] += 1
                    entry_block[e] = b
                entry_start[e] = next_posting[t]
                entry_max[e] = impact
            else:
                e = block_ptr[t] + b if dense[t] else next_entry[t] - 1
                if impact > entry_max[e]:
                    entry_max[e] = impact
            q = next_posting[t]
            next_posting[t] += 1
            posting_offset[q] = offset
            posting_impact[q] = impact
    # Empty entries (of dense terms) start where the next entry starts.
    for e in range(num_entries - 1, -1, -1):
        if entry_start[e] < 0:
            entry_start[e] = entry_start[e + 1]
    return block_ptr, entry_block, entry_max, entry_start, posting_offset, posting_impact


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
def _score_block(b, tables, q_weights, links, head, index, acc, heap_s, heap_d, size, k):
    """Scores block ``b`` from its list of ``(entry, term)`` links and offers its documents."""
    entry_start, offsets, impacts = index[3], index[4], index[5]
    num_docs, block_size = index[6], index[7]
    link_entry, link_term, link_next = links
    acc[:] = 0.0
    c = head[b]
    while c >= 0:
        e, j = link_entry[c], link_term[c]
        table_j, q_j = tables[j], q_weights[j]
        for p in range(entry_start[e], entry_start[e + 1]):
            acc[offsets[p]] += _contribution(table_j, q_j, impacts[p])
        c = link_next[c]
    head[b] = -1  # scored
    first = b * block_size
    for i in range(min(block_size, num_docs - first)):
        score = acc[i]
        # The cheap test first: most documents cannot enter the heap.
        if score > 0.0 and (size < k or _worse(heap_s[0], heap_d[0], score, first + i)):
            size = _offer(heap_s, heap_d, size, k, score, first + i)
    return size


@numba.njit(cache=True, nogil=True)
def _search_one(q_terms, q_weights, lut, index, k, alpha, num_seeds, scratch, out_s, out_d):
    """Top-``k`` of one query into ``out_s`` / ``out_d`` (see the module docstring)."""
    block_ptr, entry_block, entry_max = index[0], index[1], index[2]
    num_docs = index[6]
    bound, head, tail, link_entry, link_term, link_next = scratch
    links = (link_entry, link_term, link_next)
    num_terms = q_terms.shape[0]
    num_blocks = bound.shape[0]
    tables = np.empty((num_terms, lut.shape[0]), np.float64)
    for j in range(num_terms):
        for i in range(lut.shape[0]):
            tables[j, i] = q_weights[j] * lut[i]
    # 1. Block upper bounds, term at a time in ascending term order (the order in which a
    #    block's scores add the same products, so score <= bound holds after rounding), and
    #    per block the list of the query's entries in it, in the same order.
    bound[:] = 0.0
    head[:] = -1
    c = 0
    for j in range(num_terms):
        t = q_terms[j]
        first, end = block_ptr[t], block_ptr[t + 1]
        table_j, q_j = tables[j], q_weights[j]
        dense = end - first == num_blocks
        for e in range(first, end):
            impact = entry_max[e]
            if impact == 0:  # an empty block of a dense term
                continue
            b = e - first if dense else entry_block[e]
            bound[b] += _contribution(table_j, q_j, impact)
            link_entry[c], link_term[c], link_next[c] = e, j, -1
            if head[b] < 0:
                head[b] = c
            else:
                link_next[tail[b]] = c
            tail[b] = c
            c += 1
    # 2. Seeds: the num_seeds blocks with the largest bounds, scored best first so that the
    #    k-th score theta starts high.
    seed_s = np.empty(num_seeds, np.float64)
    seed_b = np.empty(num_seeds, np.int64)
    num = 0
    for b in range(num_blocks):
        u = bound[b]
        if u > 0.0 and (num < num_seeds or u > seed_s[0]):
            num = _offer(seed_s, seed_b, num, num_seeds, u, b)
    heap_s = np.empty(k, np.float64)
    heap_d = np.empty(k, np.int64)
    acc = np.empty(index[7], np.float64)
    size = 0
    order = np.empty(num, np.int64)
    for i in range(num - 1, -1, -1):  # pop the seed heap's worst to the back: best first
        order[i] = seed_b[0]
        seed_s[0], seed_b[0] = seed_s[i], seed_b[i]
        _sift_down(seed_s, seed_b, i, 0)
    for i in range(num):
        size = _score_block(
            order[i], tables, q_weights, links, head, index, acc, heap_s, heap_d, size, k
        )
    # 3. The other blocks in id order, skipping those whose bound cannot reach theta.
    for b in range(num_blocks):
        if head[b] < 0 or (size == k and alpha * bound[b] < heap_s[0]):
            continue
        size = _score_block(b, tables, q_weights, links, head, index, acc, heap_s, heap_d, size, k)
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


@numba.njit(cache=True, nogil=True, parallel=True)
def _search(
    q_indptr, q_terms, q_weights, lut, index, k, alpha, num_seeds, max_links, chunks, out_s, out_d
):
    """Runs :func:`_search_one` for every query, query chunks in parallel."""
    num_blocks = (index[6] + index[7] - 1) // index[7]
    for c in prange(chunks.shape[0] - 1):
        scratch = (
            np.empty(num_blocks, np.float64),
            np.empty(num_blocks, np.int64),
            np.empty(num_blocks, np.int64),
            np.empty(max_links, np.int64),
            np.empty(max_links, np.int32),
            np.empty(max_links, np.int64),
        )
        scores = np.empty(k, np.float64)
        docs = np.empty(k, np.int64)
        for q in range(chunks[c], chunks[c + 1]):
            lo, hi = q_indptr[q], q_indptr[q + 1]
            _search_one(
                q_terms[lo:hi],
                q_weights[lo:hi],
                lut,
                index,
                k,
                alpha,
                num_seeds,
                scratch,
                scores,
                docs,
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


class InvertedIndex:
    """A document-ordered inverted index over ``[N, V]`` sparse vectors, with block-max metadata.

    Args:
      docs: ``[N, V]`` non-negative document weights: a ``scipy.sparse`` matrix (e.g.
        :attr:`jaxir.sparse_store.SparseStore.matrix`) or a dense array.
      quantize: store ``uint8`` impacts with one global scale (default) or float32
        weights (see the module docstring).
      block_size: documents per block ``B`` (1..256). Smaller blocks bound tighter but
        cost more entries; 64 measured faster than 32 and 16 at 1M SPLADE-like
        synthetic documents (and gives the smallest index).

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
    ):
        if not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(
                f"InvertedIndex: block_size must be in 1..{MAX_BLOCK_SIZE} (in-block offsets "
                f"are uint8), got {block_size}."
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
        arrays = _build(
            csr.indptr.astype(np.int64),
            csr.indices.astype(np.int32),
            impacts,
            num_docs,
            vocab_size,
            block_size,
            DENSE_FRACTION,
        )
        self._set(
            dict(zip(_ARRAYS, arrays)),
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
        if arrays["entry_start"][-1] < np.iinfo(np.int32).max:
            arrays["entry_start"] = arrays["entry_start"].astype(np.int32)
        self.arrays = {name: np.ascontiguousarray(arrays[name]) for name in _ARRAYS}
        # Dequantized value of each uint8 impact (float32, as to_csr() holds them).
        self._lut = (
            (np.arange(_LEVELS + 1, dtype=np.float32) * np.float32(self.scale)).astype(np.float64)
            if self.quantized
            else np.zeros(1, np.float64)
        )

    @property
    def num_docs(self) -> int:
        """Number of documents ``N``."""
        return self._num_docs

    @property
    def dim(self) -> int:
        """Vocabulary size ``V``."""
        return self._dim

    @property
    def num_postings(self) -> int:
        """Stored postings ``Z`` (non-zero impacts)."""
        return int(self.arrays["posting_impact"].shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the index arrays (what :meth:`save` writes, headers aside)."""
        return sum(a.nbytes for a in self.arrays.values())

    def _index(self) -> tuple:
        a = self.arrays
        return (
            a["block_ptr"],
            a["entry_block"],
            a["entry_max"],
            a["entry_start"],
            a["posting_offset"],
            a["posting_impact"],
            self._num_docs,
            self.block_size,
        )

    def to_csr(self) -> scipy.sparse.csr_matrix:
        """The ``[N, V]`` float32 document vectors the index scores (dequantized impacts)."""
        a = self.arrays
        counts = np.diff(a["entry_start"].astype(np.int64))
        docs = np.repeat(a["entry_block"].astype(np.int64) * self.block_size, counts)
        docs += a["posting_offset"]
        impacts = a["posting_impact"]
        values = self._lut.astype(np.float32)[impacts] if self.quantized else impacts
        term_ptr = a["entry_start"].astype(np.int64)[a["block_ptr"]]
        csc = scipy.sparse.csc_matrix(
            (values.astype(np.float32), docs, term_ptr), shape=(self._num_docs, self._dim)
        )
        return csc.tocsr()

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
        if num_queries == 0:
            return scores_qk, indices_qk
        k_eff = min(int(k), self._num_docs)
        # Seed blocks: enough to fill the heap about twice (plus a few) before pruning.
        num_seeds = min(-(-2 * k_eff // self.block_size) + 4, -(-self._num_docs // self.block_size))
        num_chunks = min(num_queries, 8 * numba.get_num_threads())
        chunks = np.linspace(0, num_queries, num_chunks + 1).astype(np.int64)
        # Links per query: one per entry of its terms (an upper bound for dense terms).
        entries = np.diff(self.arrays["block_ptr"])[csr.indices]
        cumulative = np.concatenate([[0], np.cumsum(entries)])
        per_query = cumulative[csr.indptr[1:]] - cumulative[csr.indptr[:-1]]
        _search(
            csr.indptr.astype(np.int64),
            csr.indices.astype(np.int32),
            csr.data.astype(np.float64),
            self._lut,
            self._index(),
            k_eff,
            float(alpha),
            max(num_seeds, 1),
            max(int(per_query.max()), 1),
            chunks,
            scores_qk,
            indices_qk,
        )
        return scores_qk, indices_qk

    # ----------------------------------------------------------------------- files

    def save(self, directory: str | pathlib.Path) -> None:
        """Writes the index arrays (``<name>.npy``) and ``searcher.json`` into ``directory``."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        checksums = {}
        for name in _ARRAYS:
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
            num_entries=int(self.arrays["entry_block"].shape[0]),
            sha256=checksums,
        )

    @classmethod
    def load(cls, directory: str | pathlib.Path) -> InvertedIndex:
        """Loads an index written by :meth:`save`, verifying checksums and array shapes.

        Raises:
          FileNotFoundError: ``searcher.json`` or an array file is missing.
          ValueError: a corrupted manifest, a checksum mismatch, or arrays that disagree
            with the manifest or each other.
        """
        directory = pathlib.Path(directory)
        manifest = base.read_manifest(directory)
        base.check_manifest(manifest, directory, kind=KIND, version=VERSION)
        where = directory / base.MANIFEST
        for field, kind in (
            ("block_size", int),
            ("quantized", bool),
            ("scale", float),
            ("num_postings", int),
            ("num_entries", int),
            ("sha256", dict),
        ):
            if not isinstance(manifest.get(field), kind):
                raise ValueError(
                    f"{where}: corrupted manifest, field {field!r} must be {kind.__name__}, got "
                    f"{manifest.get(field)!r}; re-save the index."
                )
        arrays = {}
        for name in _ARRAYS:
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
    v, z, m = manifest["dim"], manifest["num_postings"], manifest["num_entries"]
    if not 1 <= manifest["block_size"] <= MAX_BLOCK_SIZE or manifest["num_docs"] < 1:
        raise ValueError(
            f"{where}: fields 'block_size' ({manifest['block_size']}) / 'num_docs' "
            f"({manifest['num_docs']}) must be in 1..{MAX_BLOCK_SIZE} / >= 1; re-save the index."
        )
    if not (np.isfinite(manifest["scale"]) and manifest["scale"] > 0):
        raise ValueError(f"{where}: field 'scale' must be a positive number; re-save the index.")
    num_blocks = -(-manifest["num_docs"] // manifest["block_size"])
    impact = np.dtype(np.uint8 if manifest["quantized"] else np.float32)
    expected = {
        "block_ptr": ((v + 1,), (np.dtype(np.int64),)),
        "entry_block": ((m,), (np.dtype(np.int32),)),
        "entry_max": ((m,), (impact,)),
        "entry_start": ((m + 1,), (np.dtype(np.int32), np.dtype(np.int64))),
        "posting_offset": ((z,), (np.dtype(np.uint8),)),
        "posting_impact": ((z,), (impact,)),
    }
    for name, (shape, dtypes) in expected.items():
        a = arrays[name]
        if a.shape != shape or a.dtype not in dtypes:
            raise ValueError(
                f"{where}: {name}.npy holds {a.dtype} {a.shape}, expected "
                f"{'/'.join(d.name for d in dtypes)} {shape} (fields dim / num_postings / "
                "num_entries); re-save the index."
            )
    ptr, start, blocks = arrays["block_ptr"], arrays["entry_start"], arrays["entry_block"]
    problems = (
        (ptr[0] != 0 or ptr[-1] != m or (np.diff(ptr) < 0).any(), "block_ptr"),
        (start[0] != 0 or start[-1] != z or (np.diff(start) < 0).any(), "entry_start"),
        (m and (blocks.min() < 0 or blocks.max() >= num_blocks), "entry_block"),
        (z and int(arrays["posting_offset"].max()) >= manifest["block_size"], "posting_offset"),
    )
    for bad, name in problems:
        if bad:
            raise ValueError(f"{where}: {name}.npy is inconsistent with the manifest; re-save it.")
