"""Sparsity of learned sparse vectors: non-zeros per query and document, and FLOPS.

The cost of scoring SPLADE vectors with an inverted index grows with how many query
terms meet how many document postings. The SPLADE papers measure it by **FLOPS**, the
expected number of multiplications in one query-document dot product::

    FLOPS = sum_j  P(q_j != 0) * P(d_j != 0)

with ``P(q_j != 0)`` the share of queries and ``P(d_j != 0)`` the share of documents
in which term ``j`` is active (Paria et al. 2020; Formal et al. 2021). It is the
quantity the FLOPS regularizer makes small during training (there on mean activations
of a batch, here on the actual non-zero pattern of the whole set).

Example:
    >>> import scipy.sparse
    >>> docs = scipy.sparse.csr_matrix(np.array([[1.0, 0, 2.0], [0, 0, 1.0]]))
    >>> queries = scipy.sparse.csr_matrix(np.array([[0, 0, 3.0]]))
    >>> sparsity_stats(queries, docs)
    {'query_nnz': 1.0, 'document_nnz': 1.5, 'flops': 1.0}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse

__all__ = ["sparsity_stats"]


def _active_share(matrix: Any, what: str) -> tuple[np.ndarray, float]:
    """``(share of rows in which each column is non-zero [V], mean non-zeros per row)``."""
    if not scipy.sparse.issparse(matrix):
        raise TypeError(f"{what}: expected a scipy.sparse matrix, got {type(matrix).__name__}")
    csr = scipy.sparse.csr_matrix(matrix)
    csr.eliminate_zeros()
    rows = csr.shape[0]
    if rows == 0:
        raise ValueError(f"{what}: no rows; sparsity is undefined for an empty set")
    counts = np.bincount(csr.indices, minlength=csr.shape[1]).astype(np.float64)
    return counts / rows, csr.nnz / rows


def sparsity_stats(queries_qv: Any, docs_nv: Any) -> dict[str, float]:
    """Mean non-zeros per query and per document, and the FLOPS of the pair (module docstring).

    Args:
      queries_qv: ``[Q, V]`` query vectors (``scipy.sparse``).
      docs_nv: ``[N, V]`` document vectors (``scipy.sparse``), same vocabulary.

    Returns:
      ``{"query_nnz": ..., "document_nnz": ..., "flops": ...}``.

    Raises:
      ValueError: a set is empty or the vocabularies differ.
    """
    if queries_qv.shape[1] != docs_nv.shape[1]:
        raise ValueError(
            f"queries have {queries_qv.shape[1]} columns but documents {docs_nv.shape[1]}; "
            "encode both with the same model"
        )
    q_share, q_nnz = _active_share(queries_qv, "queries")
    d_share, d_nnz = _active_share(docs_nv, "documents")
    return {"query_nnz": q_nnz, "document_nnz": d_nnz, "flops": float(q_share @ d_share)}
