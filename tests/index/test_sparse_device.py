"""On-device exact sparse top-k against float64 brute force, on one device and the 8-device mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

from jaxir import sharding
from jaxir.index.sparse_device import PackedDocs, pack_csr, pack_dense, search
from tests.index.test_inverted import brute_force, queries_for, with_ties, zipf_docs


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    docs = with_ties(rng, rows=900, vocab=1500, nnz=100)
    return docs, queries_for(rng, docs, count=40)


def assert_matches_brute_force(packed, docs, queries, k, **kwargs):
    scores_qk, indices_qk = search(packed, jnp.asarray(queries.toarray()), k, **kwargs)
    assert isinstance(scores_qk, jax.Array) and isinstance(indices_qk, jax.Array)
    assert scores_qk.dtype == jnp.float32 and indices_qk.dtype == jnp.int32
    scores_qk, indices_qk = np.asarray(scores_qk), np.asarray(indices_qk)
    assert scores_qk.shape == indices_qk.shape == (queries.shape[0], k)
    kk = min(k, docs.shape[0])
    ref_scores, ref_indices = brute_force(docs, queries, kk)
    np.testing.assert_array_equal(indices_qk[:, :kk], ref_indices)
    np.testing.assert_allclose(scores_qk[:, :kk], ref_scores, rtol=1e-6, atol=0)
    assert (indices_qk[:, kk:] == -1).all() and np.isneginf(scores_qk[:, kk:]).all()
    return scores_qk, indices_qk


def test_pack_csr_keeps_every_non_zero_and_pack_dense_matches_it(data):
    docs, _ = data
    packed = pack_csr(docs)
    assert packed.max_terms == docs.getnnz(axis=1).max() and packed.vocab_size == docs.shape[1]
    assert packed.ids_nk.dtype == np.int32 and packed.weights_nk.dtype == np.float32
    rebuilt = np.zeros(docs.shape, np.float32)
    np.add.at(rebuilt, (np.arange(docs.shape[0])[:, None], packed.ids_nk), packed.weights_nk)
    np.testing.assert_array_equal(rebuilt, docs.toarray())
    on_device = pack_dense(jnp.asarray(docs.toarray()), packed.max_terms)
    np.testing.assert_array_equal(np.asarray(on_device.weights_nk), packed.weights_nk)
    positive = packed.weights_nk > 0  # ties among weights: both take the lower term id
    np.testing.assert_array_equal(np.asarray(on_device.ids_nk)[positive], packed.ids_nk[positive])


def test_max_terms_keeps_the_largest_weights():
    m = scipy.sparse.csr_matrix(np.array([[0.0, 3.0, 1.0, 2.0, 2.0]], np.float32))
    for packed in (pack_csr(m, max_terms=3), pack_dense(jnp.asarray(m.toarray()), 3)):
        assert np.asarray(packed.ids_nk).tolist() == [[1, 3, 4]]
        assert np.asarray(packed.weights_nk).tolist() == [[3.0, 2.0, 2.0]]


@pytest.mark.parametrize("block_size", [8, 64, 2048])
def test_search_equals_brute_force_with_ties_zero_scores_and_empty_queries(data, block_size):
    docs, queries = data
    packed = pack_csr(docs)
    for k in (1, 10, 100):
        scores_qk, indices_qk = assert_matches_brute_force(
            packed, docs, queries, k, block_size=block_size
        )
    assert indices_qk[0].tolist() == list(range(100)) and (scores_qk[0] == 0).all()
    tied = scores_qk[3:, 1:] == scores_qk[3:, :-1]
    assert tied.sum() > 20, "the data must hold ties among positive scores"


def test_k_larger_than_corpus_pads(data):
    docs, queries = data
    small = docs[:13]
    assert_matches_brute_force(pack_csr(small), small, queries, 20, block_size=4)


def test_zipfian_collection_with_100_terms_per_doc_and_pack_dense():
    rng = np.random.default_rng(1)
    docs = zipf_docs(rng, 2000, 3000, 100, grid=1 / 16)
    queries = zipf_docs(rng, 50, 3000, 30, grid=1 / 16)
    packed = pack_dense(jnp.asarray(docs.toarray()), int(docs.getnnz(axis=1).max()))
    assert_matches_brute_force(packed, docs, queries, 10)


def test_sharded_mesh_equals_single_device(data):
    assert jax.device_count() == 8, "conftest.py sets an 8-device fake CPU platform"
    rng = np.random.default_rng(2)
    docs = zipf_docs(rng, 1003, 1500, 100)  # not a multiple of 8; float weights
    queries = jnp.asarray(zipf_docs(rng, 37, 1500, 30).toarray())
    packed = pack_csr(docs)
    single = search(packed, queries, 10, block_size=64)
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    sharded = search(packed, queries, 10, mesh=mesh, block_size=64)
    np.testing.assert_array_equal(np.asarray(single[1]), np.asarray(sharded[1]))
    np.testing.assert_allclose(np.asarray(single[0]), np.asarray(sharded[0]), rtol=1e-6)
    # Exact ties (duplicates, a 1/8 grid) across shard boundaries, and k > N on the mesh.
    tied_docs, tied_queries = data
    assert_matches_brute_force(pack_csr(tied_docs), tied_docs, tied_queries, 50, mesh=mesh)
    assert_matches_brute_force(pack_csr(tied_docs[:5]), tied_docs[:5], tied_queries, 7, mesh=mesh)
    # Vectors encoded on the mesh (batch-sharded) are packed there, without a host copy.
    reps = jax.device_put(jnp.asarray(docs.toarray()[:1000]), sharding.batch_sharding(mesh, ndim=2))
    on_mesh = pack_dense(reps, packed.max_terms)
    assert len(on_mesh.ids_nk.sharding.device_set) > 1
    got = search(on_mesh, queries, 10, mesh=mesh)
    want = search(pack_csr(docs[:1000]), queries, 10)
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))


def test_search_runs_under_jit_with_packed_as_a_pytree(data):
    docs, queries = data
    packed = pack_csr(docs)
    leaves = jax.tree_util.tree_leaves(packed)
    assert len(leaves) == 2  # vocab_size is static metadata
    moved = jax.tree_util.tree_map(jnp.asarray, packed)
    assert isinstance(moved, PackedDocs) and moved.vocab_size == packed.vocab_size
    got = search(moved, jnp.asarray(queries.toarray()), 5)
    want = search(packed, queries.toarray(), 5)
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))


def test_bad_inputs_raise_clear_errors(data):
    docs, queries = data
    packed = pack_csr(docs)
    with pytest.raises(ValueError, match=r"queries_qv must be \[Q, 1500\]"):
        search(packed, jnp.ones((2, 7)), 3)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        search(packed, jnp.asarray(queries.toarray()), 0)
    with pytest.raises(TypeError, match="packed must be PackedDocs"):
        search((packed.ids_nk, packed.weights_nk), jnp.asarray(queries.toarray()), 3)
    with pytest.raises(TypeError, match="use pack_dense for dense arrays"):
        pack_csr(docs.toarray())
    with pytest.raises(ValueError, match=r"max_terms must be in 1\.\.1500"):
        pack_dense(jnp.ones((2, 1500)), 0)
    with pytest.raises(ValueError, match=r"reps_nv must be an \[N, V\] array"):
        pack_dense(jnp.ones(5), 2)
    bad = docs.copy()
    bad.data[0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        pack_csr(bad)
