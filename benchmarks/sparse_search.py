"""Learned-sparse search side by side: jaxir ``InvertedIndex`` vs scipy CSC vs Seismic.

Collections (``--collection``, default both):

* ``synthetic`` -- ``--docs`` (default 1M and 100k, ``--quick`` 100k and 20k) documents
  with SPLADE-like
  statistics (:func:`synthetic_collection`): a 30,522-term vocabulary (BERT's) with
  Zipf-Mandelbrot term popularity, 100-200 distinct terms per document (half drawn
  from one of 2,000 topics, half from the whole vocabulary), log-normal weights; and
  ``--queries`` queries of 20-40 terms, each built from a random document (about 60%
  of its terms, the rest from the vocabulary), so a query's top 10 holds its source
  document and its topic's neighbours. Seeded (``--seed``).
* ``scifact`` -- ``--scifact-store DIR`` (a sparse store written by ``jaxir encode`` from
  a SPLADE model) and ``--scifact-queries DIR`` (its queries, ``jaxir encode --what
  queries``).

Every system searches the *same* vectors: the jaxir worker builds the ``uint8``-quantized
index (``InvertedIndex(docs, quantize=True, block_size=4)``) and writes
``index.to_csr()`` -- the dequantized float32 vectors the index scores -- which the
other workers load; so quantization is not counted as a recall loss of jaxir's (nor of
anyone's). The exact top-10 (the recall reference) is float64 ``X @ q`` over those
vectors in the parent, ties by lower document id.

Systems, each in a process of its own (:class:`protocol.Worker`), at its best:

* **jaxir exact** / **jaxir approx** [jaxir] -- ``InvertedIndex.search(Q, k,
  mode="exact")`` (block-max safe pruning, switching to the term-at-a-time scan where the
  bounds cannot prune) and ``mode="approx"`` at ``alpha`` in ``--alphas``; numba,
  ``NUMBA_NUM_THREADS=--threads``. **jaxir blocks-only exact** is the same index built
  with ``term_postings=False`` (no scan), so the run measures what the scan adds.
* **scipy CSC** [scipy] -- the exhaustive inverted index a NumPy user writes: the
  term-major ``csc_matrix`` (build = ``tocsc()``), then (a) *per query*: slice the
  query's columns, multiply by its weights (``X[:, t] @ w``, a dense ``[N]`` score
  vector), ``np.argpartition`` for the top ``k``, sort them; (b) the same as a sparse
  product ``q @ X.T`` (``X.T`` is the CSC arrays read as CSR: no column copy, a sparse
  result over the matched documents only); (c) *batched*: the same as (a)
  for ``--scipy-batch`` queries at once (``X[:, union] @ Q[:, union].T``, dense
  ``[N, B]``, ``argpartition`` along the documents). The fastest is the headline. float32
  products, single-threaded (scipy's sparse products have no threads).
* **Seismic** [seismic] -- ``pyseismic-lsr``: a ``SeismicDataset`` filled with
  ``add_documents_by_id``, ``SeismicIndex.build_from_dataset`` (``--seismic-postings``,
  ``centroid_fraction=0.1``, ``summary_energy=0.4``: its README's settings, with the
  postings kept per term scaled to the collection), ``batch_search(...,
  num_threads=--threads)`` at every ``(query_cut, heap_factor)`` of ``--seismic-grid``.
  Its batch search returns queries out of order: results are matched by query id.
  Index bytes: what ``print_space_usage_byte`` reports. Seismic is built only on
  collections of at most ``--seismic-max-docs`` documents (default 100k): its build
  clusters every posting list (``centroid_fraction`` x list length centroids, so its cost
  grows about with the square of the list length) and computes summaries; on one core
  it took 44 s at 100k synthetic documents with ``n_postings=294`` but 440 s with
  ``n_postings=1000``, and 1M (``n_postings`` ~2,950) would take over an hour.
* **bm25s** is not run: its retrieval (``_compute_relevance_from_scores``) adds the
  stored column of every query *token* with weight 1, so it cannot take real-valued
  query impacts (only integer ones as repeated tokens), and its algorithm is the
  scipy CSC one above (sum of column slices into a dense ``[N]`` vector, then top-k).

Timings: QPS is ``Q`` over the median of ``--repeats`` passes over all queries, after one
warm-up pass; passes of all systems alternate across the processes (load from other jobs
hits all alike). Build seconds: from the float32 CSR in memory to a searchable index.
Threads: every process gets ``--threads`` (default: the cores in this process's
affinity mask) -- numba's, Seismic's ``num_threads`` (and ``RAYON_NUM_THREADS``),
``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` for the rest. Pin the run with ``taskset``.

RESULT lines: ``inverted_exact_vs_scipy`` (QPS on the largest synthetic collection;
target >= 5x the faster scipy variant) and ``inverted_approx_vs_seismic`` (on the
largest synthetic collection Seismic was built on: QPS of the fastest jaxir point with
recall@10 >= 0.95 over the fastest Seismic point with recall@10 >= 0.95; target >=
0.5x), plus ``..._scifact`` twins. ``roofline_fraction`` is ``null``: the work is not a
dense GEMM; instead the script prints the pruning counters that bound it (postings a
query's terms hold, the share of them jaxir scores, the share of blocks skipped). Run::

    taskset -c 0 python benchmarks/sparse_search.py \\
        --scifact-store /tmp/splade_bench_store --scifact-queries /tmp/splade_bench_queries
    taskset -c 0 python benchmarks/sparse_search.py --quick    # 100k + 20k docs, ~2 min
    # both cores of an idle machine: taskset -c 0,1 python ... --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
import protocol
import scipy.sparse

VOCAB = 30522  # BERT WordPiece, what SPLADE models use
TOPICS = 2000
TOPIC_TERMS = 400
K = 10
RECALL_TARGET = 0.95


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100k synthetic documents")
    parser.add_argument("--collection", choices=("synthetic", "scifact", "both"), default="both")
    parser.add_argument(
        "--docs",
        default=None,
        help="synthetic collection sizes, comma-separated (default 1000000,100000; --quick "
        "100000,20000)",
    )
    parser.add_argument(
        "--seismic-max-docs",
        type=int,
        default=None,
        help="build Seismic only on collections up to this size (default 100000, --quick "
        "20000): its single-threaded build grows about quadratically with list length",
    )
    parser.add_argument("--queries", type=int, default=None, help="default 500 (--quick 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (--quick 2)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--block-size", type=int, default=4)
    parser.add_argument("--alphas", default="0.95,0.9,0.8,0.7,0.6,0.5")
    parser.add_argument("--scipy-batch", type=int, default=32)
    parser.add_argument(
        "--seismic-postings",
        type=int,
        default=None,
        help="n_postings (average postings kept per term); default 60%% of the mean list length",
    )
    parser.add_argument(
        "--seismic-grid",
        default="10:0.9,20:0.9,20:0.8,30:0.7,40:0.6",
        help="query_cut:heap_factor points of Seismic's batch search",
    )
    parser.add_argument("--scifact-store", default=None, help="sparse store of the corpus")
    parser.add_argument("--scifact-queries", default=None, help="sparse store of the queries")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# =========================================================================== data


def _first_distinct(rows_rd: np.ndarray, counts_r: np.ndarray, vocab: int):
    """Per row the first ``counts_r[r]`` distinct values of ``rows_rd[r]`` in draw order.

    Keeping the first distinct draws of i.i.d. draws is sampling without replacement in
    proportion to the draw probabilities. Returns ``(row, term, position)`` of the kept
    draws, row-major.
    """
    import numba

    @numba.njit(cache=True)
    def kernel(rows_rd, counts_r, vocab):
        r, d = rows_rd.shape
        seen = np.full(vocab, -1, np.int64)
        total = 0
        keep = np.empty(r * d, np.int64)
        for i in range(r):
            kept = 0
            for j in range(d):
                t = rows_rd[i, j]
                if kept < counts_r[i] and seen[t] != i:
                    seen[t] = i
                    keep[total] = i * d + j
                    total += 1
                    kept += 1
        return keep[:total]

    d = rows_rd.shape[1]
    keep = kernel(np.ascontiguousarray(rows_rd, np.int64), counts_r.astype(np.int64), vocab)
    return keep // d, rows_rd.ravel()[keep], keep % d


def synthetic_collection(
    num_docs: int, num_queries: int, seed: int, vocab: int = VOCAB, chunk: int = 50_000
) -> tuple[scipy.sparse.csr_matrix, scipy.sparse.csr_matrix]:
    """SPLADE-like ``docs [N, V]`` and ``queries [Q, V]`` (float32 CSR, see the module docstring).

    Term popularity is Zipf-Mandelbrot ``p_t ~ 1 / (rank_t + 10)`` over a random
    permutation of the vocabulary (so no term is in every document). A document takes
    100-200 distinct terms from 2 * 200 draws, alternately from its topic (a list of 400
    terms drawn by popularity, Zipfian within the list) and from the whole vocabulary;
    weights are log-normal (``exp(N(-0.4, 0.6))``, topic terms x 1.5: a document's own
    terms weigh more than its expansions), so most lie in 0.2-3 like SPLADE's
    ``log(1 + relu(.))``. A query takes 20-40 distinct terms: ~60% sampled from a random
    document's terms by weight, the rest by popularity, with fresh log-normal weights.
    """
    rng = np.random.default_rng(seed)
    ranks = rng.permutation(vocab)
    popularity = 1.0 / (np.arange(vocab) + 10.0)
    cdf = np.cumsum(popularity / popularity.sum())

    def popular(size):
        return ranks[np.minimum(np.searchsorted(cdf, rng.random(size)), vocab - 1)]

    # Each topic: 400 distinct terms drawn by popularity, in draw order (its head first).
    row, term, _ = _first_distinct(
        popular((TOPICS, 8 * TOPIC_TERMS)), np.full(TOPICS, TOPIC_TERMS), vocab
    )
    assert np.bincount(row, minlength=TOPICS).min() == TOPIC_TERMS
    topic_terms = term.reshape(TOPICS, TOPIC_TERMS)
    within = 1.0 / np.arange(1, TOPIC_TERMS + 1)
    within_cdf = np.cumsum(within / within.sum())
    parts = []
    for start in range(0, num_docs, chunk):
        r = min(chunk, num_docs - start)
        counts = rng.integers(100, 201, r)
        draws = 400
        topic = rng.integers(0, TOPICS, r)
        slots = np.minimum(
            np.searchsorted(within_cdf, rng.random((r, draws // 2))), TOPIC_TERMS - 1
        )
        from_topic = topic_terms[topic[:, None], slots]
        background = popular((r, draws // 2))
        mixed = np.empty((r, draws), np.int64)
        mixed[:, 0::2], mixed[:, 1::2] = from_topic, background
        row, term, pos = _first_distinct(mixed, counts, vocab)
        weight = np.exp(rng.normal(-0.4, 0.6, len(row))) * np.where(pos % 2 == 0, 1.5, 1.0)
        parts.append(
            scipy.sparse.csr_matrix(
                (weight.astype(np.float32), (row, term)), shape=(r, vocab), dtype=np.float32
            )
        )
    docs = scipy.sparse.vstack(parts, format="csr")
    del parts
    docs.sort_indices()
    # Queries: from a source document's terms (by weight) plus popular terms.
    sources = rng.integers(0, num_docs, num_queries)
    q_rows, q_cols = [], []
    for i, d in enumerate(sources):
        lo, hi = docs.indptr[d], docs.indptr[d + 1]
        n = int(rng.integers(20, 41))
        own_n = min(hi - lo, round(0.6 * n))
        w = docs.data[lo:hi].astype(np.float64)
        own = rng.choice(docs.indices[lo:hi], own_n, replace=False, p=w / w.sum())
        extra = np.setdiff1d(np.unique(popular(3 * n)), own)
        extra = rng.permutation(extra)[: n - own_n]
        terms = np.concatenate([own, extra])
        q_rows.append(np.full(len(terms), i))
        q_cols.append(terms)
    q_rows, q_cols = np.concatenate(q_rows), np.concatenate(q_cols)
    q_vals = np.exp(rng.normal(-0.4, 0.6, len(q_rows))).astype(np.float32)
    queries = scipy.sparse.csr_matrix(
        (q_vals, (q_rows, q_cols)), shape=(num_queries, vocab), dtype=np.float32
    )
    queries.sort_indices()
    return docs, queries


def scifact_collection(store: str, queries: str) -> tuple[scipy.sparse.csr_matrix, ...]:
    from jaxir.sparse_store import load_sparse_store

    docs = load_sparse_store(store).matrix.astype(np.float32).tocsr()
    q = load_sparse_store(queries).matrix.astype(np.float32).tocsr()
    return docs, q


def save_csr(path: pathlib.Path, m: scipy.sparse.csr_matrix) -> None:
    scipy.sparse.save_npz(path, m, compressed=False)


def load_csr(path: str | pathlib.Path) -> scipy.sparse.csr_matrix:
    return scipy.sparse.load_npz(path).tocsr()


def describe(m: scipy.sparse.csr_matrix) -> str:
    nnz = np.diff(m.indptr)
    df = np.bincount(m.indices, minlength=m.shape[1])
    top = np.sort(df)[::-1]
    return (
        f"{m.shape[0]:,} x {m.shape[1]:,}, nnz/row mean {nnz.mean():.1f} (min {nnz.min()}, "
        f"max {nnz.max()}), terms used {np.count_nonzero(df):,}, document frequency of the "
        f"most common terms {', '.join(f'{v / m.shape[0]:.2f}' for v in top[:3])} "
        f"(10th {top[min(9, len(top) - 1)] / m.shape[0]:.2f}, 100th "
        f"{top[min(99, len(top) - 1)] / m.shape[0]:.3f}), weights p5/p50/p95 "
        f"{', '.join(f'{v:.2f}' for v in np.percentile(m.data, [5, 50, 95]))}"
    )


def exact_top_k(docs: scipy.sparse.csr_matrix, queries: scipy.sparse.csr_matrix, k: int):
    """float64 ``X @ q`` top-``k`` per query, score descending then document id ascending."""
    csc = docs.astype(np.float64).tocsc()
    out = np.empty((queries.shape[0], k), np.int64)
    for i in range(queries.shape[0]):
        lo, hi = queries.indptr[i], queries.indptr[i + 1]
        scores = csc[:, queries.indices[lo:hi]] @ queries.data[lo:hi].astype(np.float64)
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        cand = np.flatnonzero(scores >= kth)
        order = np.lexsort((cand, -scores[cand]))[:k]
        out[i] = cand[order]
    return out


def recall_at(reference: np.ndarray, found: np.ndarray) -> float:
    k = reference.shape[1]
    return float(
        np.mean([len(set(a.tolist()) & set(b[:k].tolist())) / k for a, b in zip(reference, found)])
    )


# =========================================================================== the systems


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def scipy_per_query(csc: scipy.sparse.csc_matrix, queries: scipy.sparse.csr_matrix, k: int):
    """Column slice x weights -> dense [N] scores, argpartition, sort the k."""
    out = np.empty((queries.shape[0], k), np.int64)
    n = csc.shape[0]
    for i in range(queries.shape[0]):
        lo, hi = queries.indptr[i], queries.indptr[i + 1]
        scores = csc[:, queries.indices[lo:hi]] @ queries.data[lo:hi]
        top = np.argpartition(scores, n - k)[n - k :]
        out[i] = top[np.argsort(-scores[top], kind="stable")]
    return out


def scipy_spgemm(csc: scipy.sparse.csc_matrix, queries: scipy.sparse.csr_matrix, k: int):
    """``q [1, V] @ X.T [V, N]`` as a sparse product (no column copy, only matched documents)."""
    xt = csc.T  # CSR [V, N] over the same arrays
    out = np.empty((queries.shape[0], k), np.int64)
    for i in range(queries.shape[0]):
        row = queries[i] @ xt
        scores, docs = row.data, row.indices
        if len(scores) > k:
            top = np.argpartition(scores, len(scores) - k)[len(scores) - k :]
            scores, docs = scores[top], docs[top]
        order = np.lexsort((docs, -scores))[:k]
        out[i, : len(order)] = docs[order]
        out[i, len(order) :] = -1
    return out


def scipy_batched(csc, queries: scipy.sparse.csr_matrix, k: int, batch: int):
    """The same for ``batch`` queries at once: ``X[:, union] @ Q[:, union].T`` -> [N, B]."""
    out = np.empty((queries.shape[0], k), np.int64)
    n = csc.shape[0]
    for s in range(0, queries.shape[0], batch):
        q = queries[s : s + batch]
        union = np.unique(q.indices)
        scores_nb = csc[:, union] @ q[:, union].T.toarray()
        top_kb = np.argpartition(scores_nb, n - k, axis=0)[n - k :]
        top_s = np.take_along_axis(scores_nb, top_kb, axis=0)
        order = np.argsort(-top_s, axis=0, kind="stable")
        out[s : s + q.shape[0]] = np.take_along_axis(top_kb, order, axis=0).T
    return out


def thread_env() -> str:
    keys = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")
    affinity = sorted(os.sched_getaffinity(0))
    return f"affinity cores {affinity}; " + ", ".join(f"{k}={os.environ.get(k)}" for k in keys)


class JaxirServer(protocol.VariantServer):
    def config(self) -> str:
        import numba

        from jaxir.index import inverted

        return (
            f"jaxir InvertedIndex (numba {numba.__version__}, {numba.get_num_threads()} "
            f"threads, threading layer {numba.config.THREADING_LAYER}); DEFAULT_ALPHA="
            f"{inverted.DEFAULT_ALPHA}; {thread_env()}"
        )

    def load(self, data: str, block_size: int, alphas: list[float], out: str) -> dict:
        from jaxir.index.inverted import InvertedIndex

        docs = load_csr(pathlib.Path(data) / "docs.npz")
        self.queries = load_csr(pathlib.Path(data) / "queries.npz")
        # Compile (or load the cached kernels) on a small index first: not build time.
        InvertedIndex(docs[:1000], block_size=block_size).search(self.queries[:4], K)
        build_s, index = timed(lambda: InvertedIndex(docs, quantize=True, block_size=block_size))
        blocks = InvertedIndex(docs, quantize=True, block_size=block_size, term_postings=False)
        docs = None  # free the CSR copy (the closure is done with it)
        self.index = index
        save_csr(pathlib.Path(out), index.to_csr())
        self.variants["jaxir exact"] = lambda: index.search(self.queries, K)[1]
        self.variants["jaxir blocks-only exact (term_postings=False)"] = lambda: blocks.search(
            self.queries, K
        )[1]
        for a in alphas:
            self.variants[f"jaxir approx alpha={a}"] = lambda a=a: index.search(
                self.queries, K, mode="approx", alpha=a
            )[1]
        return {
            "build_s": build_s,
            "bytes": index.nbytes,
            "postings": index.num_postings,
            "entries": index.num_entries,
            "dense_terms": index.num_dense_terms,
            "scanned": float(index.exhaustive_queries(self.queries, K).mean()),
            "blocks_bytes": blocks.nbytes,
        }

    def pruning(self, alphas: list[float]) -> list[dict]:
        """Per mode: blocks a query's terms touch and the share scored; postings in them."""
        idx = self.index
        a = idx.arrays
        num_blocks = -(-idx.num_docs // idx.block_size)
        lut = idx._lut if idx.quantized else None
        df = np.bincount(a["doc_terms"], minlength=idx.dim)
        csr = self.queries
        out = []
        for mode, alpha in [("exact", 1.0)] + [("approx", x) for x in alphas]:
            touched = scored_blocks = postings_all = postings_scored = 0
            sample = range(0, csr.shape[0], max(1, csr.shape[0] // 100))  # 100 queries
            for i in sample:
                q = csr[i]
                # Upper bounds per block, as the kernel computes them (in float64 here).
                bound = np.zeros(num_blocks)
                for t, w in zip(q.indices, q.data.astype(np.float64)):
                    row = a["term_row"][t]
                    if row >= 0:
                        blocks, maxima = slice(None), a["dense_max"][row]
                    else:
                        lo, hi = a["sparse_ptr"][t], a["sparse_ptr"][t + 1]
                        blocks, maxima = a["sparse_block"][lo:hi], a["sparse_max"][lo:hi]
                    bound[blocks] += w * (lut[maxima] if lut is not None else maxima)
                scores, _ = idx.search(q, K, mode=mode, alpha=alpha if mode == "approx" else None)
                theta = float(scores[0, -1])
                live = bound > 0
                kept = np.flatnonzero(live & (alpha * bound >= theta))  # blocks scored, at least
                touched += int(live.sum())
                scored_blocks += len(kept)
                postings_all += int(df[q.indices].sum())
                docs = (kept[:, None] * idx.block_size + np.arange(idx.block_size)).ravel()
                docs = docs[docs < idx.num_docs]
                rows = [a["doc_terms"][a["doc_ptr"][d] : a["doc_ptr"][d + 1]] for d in docs]
                if rows:
                    postings_scored += int(np.isin(np.concatenate(rows), q.indices).sum())
            n = len(sample)
            out.append(
                {
                    "mode": mode if mode == "exact" else f"approx alpha={alpha}",
                    "blocks_touched": touched / n,
                    "blocks_scored": scored_blocks / n,
                    "postings": postings_all / n,
                    "postings_scored": postings_scored / n,
                }
            )
        return out


class ScipyServer(protocol.VariantServer):
    def config(self) -> str:
        return f"scipy {scipy.__version__}, numpy {np.__version__}; {thread_env()}"

    def load(self, scored: str, data: str, batch: int) -> dict:
        docs = load_csr(scored)
        queries = load_csr(pathlib.Path(data) / "queries.npz")
        build_s, csc = timed(lambda: docs.tocsc())
        docs = None  # free the CSR copy (the closure is done with it)
        csc.sort_indices()
        self.variants["scipy CSC per query"] = lambda: scipy_per_query(csc, queries, K)
        self.variants["scipy CSC per query, sparse q @ X.T"] = lambda: scipy_spgemm(csc, queries, K)
        self.variants[f"scipy CSC batched ({batch})"] = lambda: scipy_batched(
            csc, queries, K, batch
        )
        return {
            "build_s": build_s,
            "bytes": csc.data.nbytes + csc.indices.nbytes + csc.indptr.nbytes,
        }


@contextlib.contextmanager
def captured_stdout():
    """Collects what C/Rust code writes to file descriptor 1 (a list of one string)."""
    text: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as f:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(f.fileno(), 1)
        try:
            yield text
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            f.seek(0)
            text.append(f.read())


class SeismicServer(protocol.VariantServer):
    def config(self) -> str:
        from importlib import metadata

        return f"pyseismic-lsr {metadata.version('pyseismic-lsr')}; {thread_env()}"

    def load(self, scored: str, data: str, postings: int, grid: list, threads: int) -> dict:
        import seismic

        docs = load_csr(scored)
        queries = load_csr(pathlib.Path(data) / "queries.npz")
        string = seismic.get_seismic_string()

        def build():
            dataset = seismic.SeismicDataset(dim=docs.shape[1])
            dataset.add_documents_by_id(
                [str(i) for i in range(docs.shape[0])],
                docs.indices.astype(np.int64),
                docs.data.astype(np.float32),
                docs.indptr.astype(np.int64),
            )
            return seismic.SeismicIndex.build_from_dataset(
                dataset,
                n_postings=postings,
                centroid_fraction=0.1,
                summary_energy=0.4,
                num_threads=threads,
            )

        build_s, index = timed(build)
        docs = None  # free the CSR copy (the closure is done with it)
        with captured_stdout() as text:
            index.print_space_usage_byte()
        usage = text[0].strip()
        numbers = [int(tok) for tok in usage.replace(",", " ").split() if tok.isdigit()]
        qids = np.array([str(i) for i in range(queries.shape[0])], string)
        components = [
            np.array([str(t) for t in queries[i].indices], string) for i in range(queries.shape[0])
        ]
        values = [queries[i].data.astype(np.float32) for i in range(queries.shape[0])]
        num_queries = queries.shape[0]

        def search(cut: int, heap: float):
            results = index.batch_search(
                qids, components, values, K, cut, heap, num_threads=threads
            )
            out = np.full((num_queries, K), -1, np.int64)
            for hits in results:  # out of order: match by query id
                if hits:
                    q = int(hits[0][0])
                    docs_found = [int(doc) for _, _, doc in hits][:K]
                    out[q, : len(docs_found)] = docs_found
            return out

        for cut, heap in grid:
            self.variants[f"Seismic query_cut={cut} heap_factor={heap}"] = lambda c=cut, h=heap: (
                search(c, h)
            )
        return {"build_s": build_s, "bytes": max(numbers) if numbers else None, "usage": usage}


SERVERS = {"jaxir": JaxirServer, "scipy": ScipyServer, "seismic": SeismicServer}


# =========================================================================== the parent


def run_collection(name: str, make, args, tmp: pathlib.Path) -> dict:
    """All systems on the collection ``make()`` returns; returns its rows.

    The parent holds the float32 CSR only until it is written for the workers.
    """
    docs, queries = make()
    print(f"\n=== {name}: documents {describe(docs)}")
    print(f"    queries {describe(queries)}", flush=True)
    data = tmp / name
    data.mkdir()
    save_csr(data / "docs.npz", docs)
    save_csr(data / "queries.npz", queries)
    num_queries, num_docs = queries.shape[0], docs.shape[0]
    mean_list = docs.nnz / max(1, np.count_nonzero(np.bincount(docs.indices)))
    postings = args.seismic_postings or max(100, int(0.6 * mean_list))
    del docs
    alphas = [float(a) for a in args.alphas.split(",") if a]
    grid = [(int(c), float(h)) for c, h in (p.split(":") for p in args.seismic_grid.split(","))]
    env = {
        "NUMBA_NUM_THREADS": str(args.threads),
        "OMP_NUM_THREADS": str(args.threads),
        "OPENBLAS_NUM_THREADS": str(args.threads),
        "RAYON_NUM_THREADS": str(args.threads),
    }
    scored = str(data / "scored.npz")
    rows, info = [], {}
    with_seismic = num_docs <= args.seismic_max_docs
    names = ("jaxir", "scipy", "seismic") if with_seismic else ("jaxir", "scipy")
    if not with_seismic:
        print(
            f"Seismic not built: {num_docs:,} documents > --seismic-max-docs "
            f"{args.seismic_max_docs:,} (its single-threaded build is too slow here)"
        )
    workers = [protocol.Worker(__file__, w, env=env) for w in names]
    jaxir, scipy_w = workers[:2]
    try:
        for w in workers:
            print(f"{w.name} process: {w.call('config')}", flush=True)
        info["jaxir"] = jaxir.call(
            "load", data=str(data), block_size=args.block_size, alphas=alphas, out=scored
        )
        print(f"jaxir index built in {info['jaxir']['build_s']:.1f}s", flush=True)
        info["scipy"] = scipy_w.call("load", scored=scored, data=str(data), batch=args.scipy_batch)
        if with_seismic:
            print(f"Seismic: building (n_postings={postings}) ...", flush=True)
            info["seismic"] = workers[2].call(
                "load",
                scored=scored,
                data=str(data),
                postings=postings,
                grid=grid,
                threads=args.threads,
            )
            print(
                f"Seismic built in {info['seismic']['build_s']:.1f}s; space usage: "
                f"{info['seismic']['usage']!r}",
                flush=True,
            )
        print("exact top-10 (float64 X @ q over the scored vectors) ...", flush=True)
        reference = exact_top_k(load_csr(scored), queries, K)
        plan = [(w, v) for w in workers for v in w.call("names")]
        print(f"timing {len(plan)} variants, {args.repeats} passes ...", flush=True)
        protocol.alternate(plan, 1)  # warm-up
        save = {(w.name, v): str(data / f"found-{i}.npy") for i, (w, v) in enumerate(plan)}
        times = protocol.alternate(plan, args.repeats, save=save)
        pruning = jaxir.call("pruning", alphas=alphas)
    finally:
        for w in workers:
            w.close()
    for (wname, variant), seconds in times.items():
        found = np.load(save[wname, variant]).astype(np.int64)
        rows.append(
            {
                "system": variant,
                "worker": wname,
                "build_s": info[wname]["build_s"],
                "bytes": info[wname]["bytes"],
                "qps": num_queries / protocol.median(seconds),
                "recall": recall_at(reference, found),
            }
        )
    shutil.rmtree(data)  # the collection's files (GBs at 1M documents)
    print(f"\n{name}: {num_queries} queries, k={K}, {args.threads} thread(s) per process")
    print("| system | build s | index MiB | QPS | recall@10 vs exact |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        mib = "-" if r["bytes"] is None else f"{r['bytes'] / 2**20:,.0f}"
        print(
            f"| {r['system']} | {r['build_s']:.1f} | {mib} | {r['qps']:,.1f} | {r['recall']:.4f} |"
        )
    j = info["jaxir"]
    print(
        f"\njaxir index: {j['postings']:,} postings, {j['dense_terms']} dense terms (a row of "
        f"block maxima each), {j['entries']:,} block entries of the others, "
        f"{j['bytes'] / max(1, j['postings']):.2f} bytes "
        f"per posting (the blocks-only row's index: {j['blocks_bytes'] / 2**20:,.0f} MiB, the "
        f"table shows the default's); Seismic n_postings={postings}; exact search scanned "
        f"{j['scanned']:.1%} of the queries term at a time"
    )
    print("jaxir pruning, mean over 100 queries (blocks with bound >= the final 10th score):")
    print("| mode | blocks touched | blocks scored | share skipped | postings | share scored |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for p in pruning:
        print(
            f"| {p['mode']} | {p['blocks_touched']:,.0f} | {p['blocks_scored']:,.0f} | "
            f"{1 - p['blocks_scored'] / max(1, p['blocks_touched']):.3f} | "
            f"{p['postings']:,.0f} | {p['postings_scored'] / max(1, p['postings']):.3f} |"
        )
    return {"rows": rows, "postings": postings, "num_docs": num_docs}


def best(rows, prefix: str, min_recall: float = 0.0):
    cands = [r for r in rows if r["system"].startswith(prefix) and r["recall"] >= min_recall]
    return max(cands, key=lambda r: r["qps"]) if cands else None


def report_exact(name: str, rows: list[dict], suffix: str) -> None:
    exact = best(rows, "jaxir exact")
    scipy_best = best(rows, "scipy")
    protocol.result(
        f"inverted_exact_vs_scipy{suffix}",
        "QPS",
        exact["qps"],
        f"scipy CSC ({scipy_best['system']})",
        scipy_best["qps"],
        None,
        collection=name,
        recall=exact["recall"],
        target=5.0,
        met=exact["qps"] >= 5.0 * scipy_best["qps"],
    )


def report_approx(name: str, rows: list[dict], suffix: str) -> None:
    exact = best(rows, "jaxir exact")
    approx = best(rows, "jaxir approx", RECALL_TARGET) or exact
    seis = best(rows, "Seismic", RECALL_TARGET)
    if seis is None:
        top = max((r for r in rows if r["system"].startswith("Seismic")), key=lambda r: r["recall"])
        print(
            f"no Seismic point reached recall@10 >= {RECALL_TARGET} on {name} (best "
            f"{top['recall']:.4f}, {top['system']}); its most accurate point is the peer"
        )
        seis = top
    protocol.result(
        f"inverted_approx_vs_seismic{suffix}",
        "QPS",
        approx["qps"],
        f"pyseismic-lsr ({seis['system']}, recall {seis['recall']:.3f})",
        seis["qps"],
        None,
        collection=name,
        jaxir_point=approx["system"],
        recall=approx["recall"],
        peer_recall=seis["recall"],
        target=0.5,
        met=approx["qps"] >= 0.5 * seis["qps"] and seis["recall"] >= RECALL_TARGET,
    )


def main() -> None:
    args = parse_args()
    if args.worker:
        sys.path.insert(0, str(protocol.REPO))
        protocol.serve(SERVERS[args.worker]())
        return
    sizes = args.docs or ("100000,20000" if args.quick else "1000000,100000")
    num_queries = args.queries or (200 if args.quick else 500)
    args.repeats = args.repeats or (2 if args.quick else 3)
    if args.seismic_max_docs is None:
        args.seismic_max_docs = 20_000 if args.quick else 100_000
    print(protocol.machine())
    print(f"parent: {thread_env()}; --threads {args.threads} for every worker", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="sparse_search_") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        if args.collection in ("synthetic", "both"):
            for num_docs in (int(v) for v in sizes.split(",")):

                def make(n=num_docs):
                    gen_s, collection = timed(
                        lambda: synthetic_collection(n, num_queries, args.seed)
                    )
                    print(f"\nsynthetic collection generated in {gen_s:.1f}s (seed {args.seed})")
                    return collection

                name = f"synthetic-{num_docs // 1000}k"
                results[name] = run_collection(name, make, args, tmp)
        if args.collection in ("scifact", "both") and args.scifact_store:
            results["scifact"] = run_collection(
                "scifact",
                lambda: scifact_collection(args.scifact_store, args.scifact_queries),
                args,
                tmp,
            )
    print(f"\n{protocol.machine()} (at the end)\n")
    synthetic = [key for key in results if key.startswith("synthetic")]
    largest = max(synthetic, key=lambda key: results[key]["num_docs"], default=None)
    with_seismic = [
        key for key in synthetic if any(r["worker"] == "seismic" for r in results[key]["rows"])
    ]
    largest_seismic = max(with_seismic, key=lambda key: results[key]["num_docs"], default=None)
    if largest:
        report_exact(largest, results[largest]["rows"], "")
    if largest_seismic:
        report_approx(largest_seismic, results[largest_seismic]["rows"], "")
    if "scifact" in results:
        report_exact("scifact", results["scifact"]["rows"], "_scifact")
        report_approx("scifact", results["scifact"]["rows"], "_scifact")


if __name__ == "__main__":
    main()
