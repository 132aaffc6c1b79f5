"""Exact search over a corpus split across the processes of a multi-host job.

For an embedding store too large for one host. Process ``r`` of ``P`` holds only rows
``[r * N // P, (r + 1) * N // P)`` of the ``N``-row corpus (:func:`row_range`; read by
:func:`read_rows` from the memory-mapped store shards that overlap them) and searches
them with an :class:`~jaxir.index.exact.ExactSearcher` on its own devices (its jitted
search program, unchanged). Each process's ``(scores, global row indices) [Q, k]`` are
all-gathered (:func:`jaxir.distributed.gather`, i.e. ``process_allgather``) and
:func:`merge_top_k` reduces the ``[Q, P * k]`` candidates to the global top-``k`` on
every process. Every process must call :meth:`DistributedExactSearcher.search` with the
same queries (checked: a process with other queries fails the call, naming it).

**Ties and exactness.** The global top-``k`` is among the union of the per-process
top-``k``, so the merge is exact. :func:`merge_top_k` takes the candidates in process
order (ascending rows) and keeps, of equal scores, the earlier one, the rule of
``lax.top_k`` (the lower index first) that :class:`ExactSearcher` reduces its per-device
candidates with: the merged result is the single-process ``ExactSearcher`` result over
the whole corpus, indices exactly and scores up to the float rounding of a matmul of
another shape (1e-6). (One exception, which ``ExactSearcher`` shares across device
counts: when its group-max prefilter runs, ``chunk_size >= 128 k``, exactly equal scores
within one chunk are ordered by group, so which of several equal rows is returned at
the ``k``-th place may depend on the chunking.)

Example (one process: the merge of a single part is that part):
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> docs_nd = rng.standard_normal((50, 8)).astype(np.float32)
    >>> queries_qd = rng.standard_normal((3, 8)).astype(np.float32)
    >>> searcher = DistributedExactSearcher(docs_nd, row_offset=0, num_docs=50)
    >>> scores_qk, indices_qk = searcher.search(queries_qd, k=4)
    >>> want_scores, want_indices = ExactSearcher(docs_nd).search(queries_qd, k=4)
    >>> bool((indices_qk == want_indices).all())
    True
    >>> row_range(10, process_index=1, process_count=3)
    (3, 6)
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jaxir import distributed, sharding
from jaxir.encode import EmbeddingStore, load_embeddings
from jaxir.index.base import CorpusShape
from jaxir.index.exact import ExactSearcher

__all__ = ["DistributedExactSearcher", "merge_top_k", "read_rows", "row_range"]


def row_range(num_docs: int, process_index: int, process_count: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of an ``N``-row corpus held by one process: contiguous, in
    process order, sizes differing by at most one."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is outside [0, {process_count}).")
    return num_docs * process_index // process_count, num_docs * (
        process_index + 1
    ) // process_count


def read_rows(store: EmbeddingStore, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of ``store``'s vectors as one float32 ``[stop - start, D]`` array.

    Reads only the shards that overlap the range (memory-mapped by
    :func:`~jaxir.encode.load_embeddings`), never the whole matrix.
    """
    parts, offset = [], 0
    for shard in store.shards:
        lo, hi = max(start, offset), min(stop, offset + len(shard))
        if lo < hi:
            parts.append(np.asarray(shard[lo - offset : hi - offset], np.float32))
        offset += len(shard)
    if not parts:
        return np.zeros((0, store.dim), np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def merge_top_k(
    scores_pqk: np.ndarray, indices_pqk: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The global top-``k`` of ``P`` per-process results ``[P, Q, k']`` (global row indices).

    Candidates are ranked by score, best first; of equal scores the one of the lower
    process (then the earlier slot) comes first, ``lax.top_k``'s rule. Empty slots
    (index ``-1``, score ``-inf``) come last.

    Returns ``(scores_qk float32 [Q, k], indices_qk int32 [Q, k])``.

    Example:
      >>> scores = np.array([[[3.0, 1.0]], [[3.0, 2.0]]], np.float32)  # P=2, Q=1, k'=2
      >>> indices = np.array([[[0, 1]], [[5, 6]]], np.int32)
      >>> merge_top_k(scores, indices, 3)[1].tolist()  # the tie at 3.0: process 0's first
      [[0, 5, 6]]
    """
    p, q, width = scores_pqk.shape
    scores_qm = np.moveaxis(np.asarray(scores_pqk, np.float32), 0, 1).reshape(q, p * width)
    indices_qm = np.moveaxis(np.asarray(indices_pqk, np.int32), 0, 1).reshape(q, p * width)
    order_qk = np.argsort(-scores_qm, axis=1, kind="stable")[:, :k]
    return (
        np.take_along_axis(scores_qm, order_qk, axis=1),
        np.take_along_axis(indices_qm, order_qk, axis=1),
    )


class DistributedExactSearcher(CorpusShape):
    """Exact top-k over a corpus whose rows are split across the processes of a job.

    Each process builds one with its own rows; :meth:`search` (a collective: every
    process calls it, with the same queries) returns the global result on all of them.

    Args:
      local_docs_nd: this process's rows ``[n, D]`` (``n`` may be 0), rows
        ``[row_offset, row_offset + n)`` of the corpus.
      row_offset: the corpus row of ``local_docs_nd[0]``.
      num_docs: rows ``N`` of the whole corpus.
      mesh: the devices this process searches on (default: all of its own devices,
        ``make_mesh(data=-1, devices=jax.local_devices())``); it must not hold other
        processes' devices, since each process searches alone.
      **options: the :class:`ExactSearcher` options (``chunk_size``, ``query_batch``,
        ``group_size``, ``dtype``).
    """

    def __init__(
        self,
        local_docs_nd: np.ndarray,
        *,
        row_offset: int,
        num_docs: int,
        mesh: Mesh | None = None,
        **options: Any,
    ):
        if getattr(local_docs_nd, "ndim", None) != 2:
            raise ValueError(
                f"DistributedExactSearcher: local_docs_nd must be an [n, D] array, got shape "
                f"{getattr(local_docs_nd, 'shape', type(local_docs_nd))}."
            )
        rows = int(local_docs_nd.shape[0])
        if not (row_offset >= 0 and row_offset + rows <= num_docs):
            raise ValueError(
                f"DistributedExactSearcher: rows [{row_offset}, {row_offset + rows}) are not "
                f"inside the corpus's {num_docs} rows."
            )
        if mesh is None:
            mesh = sharding.make_mesh(data=-1, devices=jax.local_devices())
        if any(d.process_index != jax.process_index() for d in mesh.devices.flat):
            raise ValueError(
                "DistributedExactSearcher: mesh holds other processes' devices; each process "
                "searches its rows alone, pass make_mesh(data=-1, devices=jax.local_devices())."
            )
        self.row_offset, self._num_docs, self._dim = (
            row_offset,
            num_docs,
            int(local_docs_nd.shape[1]),
        )
        self.local = ExactSearcher(local_docs_nd, mesh=mesh, **options) if rows else None

    @classmethod
    def from_store(
        cls,
        store: EmbeddingStore | str | os.PathLike[str],
        *,
        mesh: Mesh | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
        **options: Any,
    ) -> DistributedExactSearcher:
        """This process's part (:func:`row_range`) of an embedding store, ready to search.

        Args:
          store: an :class:`~jaxir.encode.EmbeddingStore` or its directory (read
            memory-mapped; only this process's rows are loaded).
          mesh, **options: see the class.
          process_index, process_count: which part to hold (default: this process's,
            ``jax.process_index()`` of ``jax.process_count()``).
        """
        if not isinstance(store, EmbeddingStore):
            store = load_embeddings(store)
        count = jax.process_count() if process_count is None else process_count
        index = jax.process_index() if process_index is None else process_index
        start, stop = row_range(len(store), index, count)
        return cls(
            read_rows(store, start, stop),
            row_offset=start,
            num_docs=len(store),
            mesh=mesh,
            **options,
        )

    def local_search(self, queries_qd: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """This process's top-``k`` ``(scores [Q, k], global row indices [Q, k])`` (no collective).

        Slots beyond this process's rows hold ``-inf`` / ``-1``.
        """
        queries_qd = np.asarray(queries_qd, np.float32)
        if queries_qd.ndim != 2 or queries_qd.shape[1] != self._dim:
            raise ValueError(
                f"DistributedExactSearcher.search: queries_qd must be [Q, {self._dim}], got "
                f"{queries_qd.shape}."
            )
        if k < 1:
            raise ValueError(f"DistributedExactSearcher.search: k must be >= 1, got {k}.")
        if self.local is None:
            shape = (queries_qd.shape[0], k)
            return np.full(shape, -np.inf, np.float32), np.full(shape, -1, np.int32)
        scores_qk, indices_qk = self.local.search(queries_qd, k)
        return scores_qk, np.where(indices_qk >= 0, indices_qk + self.row_offset, -1).astype(
            np.int32
        )

    def search(self, queries_qd: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` over the whole corpus, on every process (a collective).

        Args:
          queries_qd: ``[Q, D]`` queries, the same on every process.
          k: neighbours per query; slots beyond ``num_docs`` get index ``-1``, score ``-inf``.

        Returns:
          ``(scores_qk float32 [Q, k], indices_qk int32 [Q, k])``, best first, indices
          global rows of the corpus.

        Raises:
          ValueError: the processes passed different queries (naming the first that did).
        """
        queries_qd = np.asarray(queries_qd, np.float32)
        scores_qk, indices_qk = self.local_search(queries_qd, k)
        fingerprint = np.asarray([queries_qd.astype(np.float64).sum()], np.float64)
        got = distributed.gather((scores_qk, indices_qk, fingerprint))
        differ = [
            i for i, f in enumerate(got[2]) if not np.array_equal(f, got[2][0], equal_nan=True)
        ]
        if differ:
            raise ValueError(
                f"DistributedExactSearcher.search: process {differ[0]} passed other "
                "queries than process 0; every process must search the same queries_qd."
            )
        return merge_top_k(got[0], got[1], k)
