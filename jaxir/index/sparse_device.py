"""Exact sparse top-k on device, for in-training validation and hard-negative mining.

Documents are *packed* into two fixed-width arrays (:class:`PackedDocs`)::

    ids_nk      int32   [N, K]   term ids of each document's non-zeros
    weights_nk  float32 [N, K]   their weights; padding slots hold weight 0 (any id)

with ``K`` the largest number of non-zeros kept per document: :func:`pack_csr` packs a
``scipy.sparse`` matrix on the host, :func:`pack_dense` packs ``[N, V]`` vectors that
are already on device (``lax.top_k`` per row, no host round trip). :func:`search` scores
``s_qn = sum_j weights_nk[n, j] * queries_qv[q, ids_nk[n, j]]`` for every document and
returns the exact top-``k`` per query: best first, ties broken by the lower document
index, ``-1`` / ``-inf`` in the slots beyond ``N``. All of it is one jitted program.

**How a block is scored: scatter to dense, then a matmul.** Documents are processed in
blocks of ``C`` rows (``lax.scan``): a block is scattered into a dense ``[C, V]`` float32
matrix (``C * K`` scatter-adds) and scored by one ``[Q, V] x [V, C]`` matmul
(``Precision.HIGHEST``, float32 accumulation), then reduced to the block's top-``k`` and
merged into a running top-``k`` (carried, so memory stays ``O(Q k)`` whatever ``N``).
The alternative, gathering ``queries_qv[:, ids]`` into ``[Q, C, K]`` and reducing over
``K``, does ``Q N K`` work instead of ``Q N V`` and is the cheaper one on a CPU, but it
is a lane gather with a ``[Q, C, K]`` intermediate that TPUs run far below their matmul
rate, while the dense form is a plain MXU matmul whose ``[C, V]`` operand is built once
per block and shared by all ``Q`` queries. Validation (a few hundred to a few thousand
queries against tens of thousands of documents) is matmul-bound either way, so the
dense form was chosen: exact on CPU, and the fast path on TPU and GPU. Memory per block:
``C * V * 4`` bytes (32 MiB for ``C = 256``, ``V = 30522``) plus ``Q * C * 4``; the
queries ``[Q, V]`` are replicated on every device, so batch very large query sets.

**Sharding.** With ``mesh``, documents are split over *all* of its axes along ``N``
(like :class:`jaxir.index.exact.ExactSearcher`; with a data-only mesh that is the
``data`` axis), each device runs the block scan on its shard under ``shard_map``, and a
last ``lax.top_k`` over the ``[Q, devices * k]`` candidates gives the answer. Candidates
are laid out in document order, and ``lax.top_k`` prefers the lower position among equal
values, so ties go to the lower document index on any mesh.

Scores are float32 sums; when every partial sum is exactly representable (e.g. weights
that are multiples of a power of two) they equal float64 brute force exactly, otherwise
to float32 rounding.

Compiled programs: one per ``(N, K, Q, V, k, block_size, mesh)``.

Example:
    >>> import scipy.sparse
    >>> docs = scipy.sparse.csr_matrix(np.array(
    ...     [[0.0, 1.0, 0.0], [2.0, 0.0, 1.0], [0.0, 0.5, 0.5]], np.float32))
    >>> packed = pack_csr(docs)
    >>> packed.ids_nk.shape, packed.vocab_size
    ((3, 2), 3)
    >>> scores_qk, indices_qk = search(packed, jnp.array([[1.0, 0.0, 1.0]]), k=4)
    >>> indices_qk.tolist(), scores_qk.tolist()
    ([[1, 2, 0, -1]], [[3.0, 0.5, 0.0, -inf]])
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from jax.sharding import Mesh, PartitionSpec

__all__ = ["DEFAULT_BLOCK_SIZE", "PackedDocs", "pack_csr", "pack_dense", "search"]

#: Documents scored per matmul (``C`` in the module docstring).
DEFAULT_BLOCK_SIZE = 256


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["ids_nk", "weights_nk"],
    meta_fields=["vocab_size"],
)
@dataclasses.dataclass(frozen=True)
class PackedDocs:
    """``N`` documents as fixed-width ``(term id, weight)`` pairs (a JAX pytree).

    Attributes:
      ids_nk: int32 ``[N, K]`` term ids (padding slots: any valid id).
      weights_nk: float32 ``[N, K]`` weights (padding slots: 0).
      vocab_size: ``V``, the number of terms (static: not traced under ``jit``).
    """

    ids_nk: Any
    weights_nk: Any
    vocab_size: int

    @property
    def num_docs(self) -> int:
        """Number of documents ``N``."""
        return int(self.ids_nk.shape[0])

    @property
    def max_terms(self) -> int:
        """Slots per document ``K``."""
        return int(self.ids_nk.shape[1])


def pack_csr(matrix: Any, max_terms: int | None = None) -> PackedDocs:
    """Packs a ``scipy.sparse`` matrix ``[N, V]`` into :class:`PackedDocs` (NumPy arrays, host).

    Args:
      matrix: document weights (any ``scipy.sparse`` format; duplicates are summed,
        explicit zeros dropped).
      max_terms: ``K``; default the largest non-zero count of a row (at least 1), which
        keeps every document whole. A smaller ``K`` keeps each row's ``K`` largest
        weights (ties: the lower term id), like :func:`pack_dense`.

    Example:
      >>> m = scipy.sparse.csr_matrix(np.array([[0.0, 3.0, 1.0, 2.0], [0.0, 0.0, 0.0, 0.0]]))
      >>> p = pack_csr(m, max_terms=2)
      >>> p.ids_nk.tolist(), p.weights_nk.tolist()
      ([[1, 3], [0, 0]], [[3.0, 2.0], [0.0, 0.0]])
    """
    if not scipy.sparse.issparse(matrix) or matrix.ndim != 2:
        raise TypeError(
            f"pack_csr: matrix must be a 2-d scipy.sparse matrix [N, V], got "
            f"{type(matrix).__name__}; use pack_dense for dense arrays on device."
        )
    csr = scipy.sparse.csr_matrix(matrix, dtype=np.float32, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    if not np.isfinite(csr.data).all():
        raise ValueError("pack_csr: matrix holds NaN or inf weights.")
    num_docs, vocab_size = csr.shape
    counts = np.diff(csr.indptr)
    if max_terms is None:
        max_terms = max(int(counts.max()) if num_docs else 0, 1)
    if max_terms < 1:
        raise ValueError(f"pack_csr: max_terms must be >= 1, got {max_terms}.")
    rows = np.repeat(np.arange(num_docs), counts)
    # Within each row: weight descending, then term id ascending.
    order = np.lexsort((csr.indices, -csr.data, rows))
    rank = np.arange(csr.nnz) - csr.indptr[rows[order]]
    keep = rank < max_terms
    ids_nk = np.zeros((num_docs, max_terms), np.int32)
    weights_nk = np.zeros((num_docs, max_terms), np.float32)
    ids_nk[rows[order][keep], rank[keep]] = csr.indices[order][keep]
    weights_nk[rows[order][keep], rank[keep]] = csr.data[order][keep]
    return PackedDocs(ids_nk, weights_nk, int(vocab_size))


@functools.partial(jax.jit, static_argnames=("max_terms",))
def _pack_dense(reps_nv: jax.Array, max_terms: int) -> tuple[jax.Array, jax.Array]:
    weights_nk, ids_nk = jax.lax.top_k(reps_nv.astype(jnp.float32), max_terms)
    return ids_nk.astype(jnp.int32), weights_nk


def pack_dense(reps_nv: jax.Array, max_terms: int) -> PackedDocs:
    """Packs ``[N, V]`` vectors on device into :class:`PackedDocs` (``lax.top_k`` per row).

    Each row keeps its ``max_terms`` largest weights (ties: the lower term id); rows
    with fewer non-zeros keep zeros in the remaining slots, which score nothing. The
    result is exact for rows with at most ``max_terms`` non-zeros and pruned otherwise
    (for SPLADE vectors, pass the ``max_active_dims`` or a high quantile of the
    non-zero counts). Jitted; runs where ``reps_nv`` lives, keeping its sharding along
    ``N``; no host round trip.

    Args:
      reps_nv: ``[N, V]`` document vectors (float; SPLADE weights are ``>= 0``).
      max_terms: ``K``, ``1 <= K <= V``.

    Example:
      >>> p = pack_dense(jnp.array([[0.0, 3.0, 1.0, 2.0]]), max_terms=2)
      >>> p.ids_nk.tolist(), p.weights_nk.tolist(), p.vocab_size
      ([[1, 3]], [[3.0, 2.0]], 4)
    """
    if getattr(reps_nv, "ndim", None) != 2:
        raise ValueError(
            f"pack_dense: reps_nv must be an [N, V] array, got shape "
            f"{getattr(reps_nv, 'shape', type(reps_nv))}."
        )
    vocab_size = int(reps_nv.shape[1])
    if isinstance(max_terms, bool) or not isinstance(max_terms, (int, np.integer)):
        raise TypeError(f"pack_dense: max_terms must be an int, got {max_terms!r}.")
    if not 1 <= max_terms <= vocab_size:
        raise ValueError(f"pack_dense: max_terms must be in 1..{vocab_size} (V), got {max_terms}.")
    ids_nk, weights_nk = _pack_dense(reps_nv, int(max_terms))
    return PackedDocs(ids_nk, weights_nk, vocab_size)


def _scan_top_k(
    ids_nk: jax.Array,
    weights_nk: jax.Array,
    queries_qv: jax.Array,
    start: jax.Array | int,
    *,
    k: int,
    block: int,
    num_docs: int,
    axes: tuple[str, ...] = (),
) -> tuple[jax.Array, jax.Array]:
    """Top-``k`` of ``[n, K]`` documents (global indices from ``start``), block by block.

    ``axes``: the mesh axes the documents vary over under ``shard_map`` (the running
    top-``k`` carry is made device-varying along them, as its updates are).
    """
    n, width = ids_nk.shape
    num_queries, vocab_size = queries_qv.shape
    num_blocks = n // block
    block_k = min(k, block)
    rows_c1 = jnp.arange(block)[:, None]

    def body(carry, xs):
        best_s, best_i = carry
        ids_ck, weights_ck, offset = xs
        docs_cv = jnp.zeros((block, vocab_size), jnp.float32).at[rows_c1, ids_ck].add(weights_ck)
        s_qc = jnp.dot(
            queries_qv,
            docs_cv.T,
            precision=jax.lax.Precision.HIGHEST,
            preferred_element_type=jnp.float32,
        )
        index_c = offset + jnp.arange(block, dtype=jnp.int32)
        s_qc = jnp.where(index_c < num_docs, s_qc, -jnp.inf)
        s_qb, j_qb = jax.lax.top_k(s_qc, block_k)
        # The carry holds lower indices than this block: it goes first, so ties keep it.
        cand_s = jnp.concatenate([best_s, s_qb], axis=1)
        cand_i = jnp.concatenate([best_i, index_c[j_qb]], axis=1)
        top_s, pos = jax.lax.top_k(cand_s, k)
        return (top_s, jnp.take_along_axis(cand_i, pos, axis=1)), None

    init = (
        jnp.full((num_queries, k), -jnp.inf, jnp.float32),
        jnp.full((num_queries, k), -1, jnp.int32),
    )
    if axes:
        init = jax.lax.pcast(init, axes, to="varying")
    offsets = start + jnp.arange(num_blocks, dtype=jnp.int32) * block
    xs = (
        ids_nk.reshape(num_blocks, block, width),
        weights_nk.reshape(num_blocks, block, width),
        offsets,
    )
    (scores_qk, indices_qk), _ = jax.lax.scan(body, init, xs)
    return scores_qk, indices_qk


@functools.partial(jax.jit, static_argnames=("k", "block", "rows", "num_docs", "mesh"))
def _search_program(
    ids_nk: jax.Array,
    weights_nk: jax.Array,
    queries_qv: jax.Array,
    *,
    k: int,
    block: int,
    rows: int,
    num_docs: int,
    mesh: Mesh | None,
) -> tuple[jax.Array, jax.Array]:
    pad = ((0, rows - num_docs), (0, 0))
    ids_nk = jnp.pad(ids_nk.astype(jnp.int32), pad)
    weights_nk = jnp.pad(weights_nk.astype(jnp.float32), pad)
    queries_qv = queries_qv.astype(jnp.float32)
    scan = functools.partial(_scan_top_k, k=k, block=block, num_docs=num_docs)
    if mesh is None:
        return scan(ids_nk, weights_nk, queries_qv, 0)
    axes = tuple(mesh.axis_names)

    def local(ids_nk, weights_nk, queries_qv):
        start = jax.lax.axis_index(axes) * ids_nk.shape[0]
        return scan(ids_nk, weights_nk, queries_qv, start, axes=axes)

    docs_spec = PartitionSpec(axes, None)
    scores_qm, indices_qm = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(docs_spec, docs_spec, PartitionSpec()),
        out_specs=(PartitionSpec(None, axes), PartitionSpec(None, axes)),
    )(ids_nk, weights_nk, queries_qv)
    scores_qk, pos = jax.lax.top_k(scores_qm, k)
    return scores_qk, jnp.take_along_axis(indices_qm, pos, axis=1)


def search(
    packed: PackedDocs,
    queries_qv: jax.Array,
    k: int,
    *,
    mesh: Mesh | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> tuple[jax.Array, jax.Array]:
    """Exact top-``k`` documents per query by ``sum_t q_t x_dt``, on device.

    Args:
      packed: the ``N`` documents (:func:`pack_csr` or :func:`pack_dense`).
      queries_qv: ``[Q, V]`` float query vectors (a ``jax.Array``, or NumPy).
      k: documents per query, ``>= 1``; slots beyond ``N`` get index ``-1``, score
        ``-inf``.
      mesh: shard the documents over all axes of this mesh (see the module docstring);
        ``None`` runs on the default device.
      block_size: about how many documents one matmul scores (rounded so that the
        shards split into equal blocks, a multiple of 8).

    Returns:
      ``(scores_qk float32 [Q, k], indices_qk int32 [Q, k])`` as ``jax.Array`` (not
      copied to the host), best first, ties by lower document index. Documents that
      share no term with a query score 0 and rank after those that do, by index.

    Example:
      >>> p = pack_dense(jnp.array([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]]), max_terms=1)
      >>> _, indices_qk = search(p, jnp.array([[1.0, 0.0]]), k=2)
      >>> indices_qk.tolist()  # documents 0 and 2 tie: the lower index first
      [[0, 2]]
    """
    if not isinstance(packed, PackedDocs):
        raise TypeError(
            f"search: packed must be PackedDocs (from pack_csr / pack_dense), got "
            f"{type(packed).__name__}."
        )
    num_docs, width = packed.ids_nk.shape
    if packed.weights_nk.shape != (num_docs, width) or num_docs == 0:
        raise ValueError(
            f"search: packed holds ids {packed.ids_nk.shape} and weights "
            f"{packed.weights_nk.shape}; both must be the same non-empty [N, K]."
        )
    if getattr(queries_qv, "ndim", None) != 2 or queries_qv.shape[1] != packed.vocab_size:
        raise ValueError(
            f"search: queries_qv must be [Q, {packed.vocab_size}] (V of the packed "
            f"documents), got shape {getattr(queries_qv, 'shape', type(queries_qv))}."
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"search: k must be an integer >= 1, got {k!r}.")
    if block_size < 1:
        raise ValueError(f"search: block_size must be >= 1, got {block_size}.")
    devices = 1 if mesh is None else mesh.devices.size
    local = -(-num_docs // devices)
    num_blocks = -(-local // block_size)
    block = -(-local // (num_blocks * 8)) * 8
    k_eff = min(int(k), num_docs)
    scores_qk, indices_qk = _search_program(
        packed.ids_nk,
        packed.weights_nk,
        queries_qv,
        k=k_eff,
        block=block,
        rows=devices * num_blocks * block,
        num_docs=num_docs,
        mesh=mesh,
    )
    if k_eff < k:
        pad = ((0, 0), (0, int(k) - k_eff))
        scores_qk = jnp.pad(scores_qk, pad, constant_values=-jnp.inf)
        indices_qk = jnp.pad(indices_qk, pad, constant_values=-1)
    return scores_qk, indices_qk
