"""``sparsity_stats`` against a direct count over every (query, document) pair."""

import numpy as np
import pytest
import scipy.sparse

from jaxir.eval.sparsity import sparsity_stats


def test_flops_is_the_mean_number_of_shared_terms_per_pair():
    rng = np.random.default_rng(0)
    queries = scipy.sparse.random(7, 40, density=0.2, format="csr", random_state=1)
    docs = scipy.sparse.random(11, 40, density=0.3, format="csr", random_state=2)
    docs.data[rng.random(docs.nnz) < 0.1] = 0.0  # explicit zeros are not active terms
    q_on, d_on = queries.toarray() != 0, docs.toarray() != 0
    shared = np.mean([(q_on[i] & d_on[j]).sum() for i in range(7) for j in range(11)])
    got = sparsity_stats(queries, docs)
    assert got["flops"] == pytest.approx(shared)
    assert got["query_nnz"] == pytest.approx(q_on.sum(1).mean())
    assert got["document_nnz"] == pytest.approx(d_on.sum(1).mean())


def test_bad_inputs_are_named():
    docs = scipy.sparse.csr_matrix((3, 5))
    with pytest.raises(ValueError, match="queries have 4 columns but documents 5"):
        sparsity_stats(scipy.sparse.csr_matrix((2, 4)), docs)
    with pytest.raises(ValueError, match="queries: no rows"):
        sparsity_stats(scipy.sparse.csr_matrix((0, 5)), docs)
    with pytest.raises(TypeError, match="documents: expected a scipy.sparse matrix"):
        sparsity_stats(scipy.sparse.csr_matrix((1, 5)), np.zeros((3, 5)))
