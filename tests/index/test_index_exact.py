"""ExactSearcher against NumPy brute force, on one device and on the 8-device fake CPU mesh."""

import jax
import numpy as np
import pytest

from jaxir import sharding
from jaxir.index import ExactSearcher, exact_search, load_searcher


def _brute_force(queries_qd, docs_nd, k):
    scores_qn = np.asarray(queries_qd, np.float64) @ docs_nd.astype(np.float64).T
    order_qk = np.argsort(-scores_qn, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores_qn, order_qk, axis=1), order_qk


def _clustered(rng, n, d, clusters=20, noise=0.3):
    centers_cd = rng.standard_normal((clusters, d)).astype(np.float32)
    x_nd = centers_cd[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, d)).astype(
        np.float32
    )
    return x_nd / np.linalg.norm(x_nd, axis=1, keepdims=True)


def _single_device_mesh():
    return sharding.make_mesh(devices=jax.devices()[:1])


def _assert_matches(searcher, queries_qd, docs_nd, k):
    scores_qk, indices_qk = searcher.search(queries_qd, k)
    ref_scores, ref_indices = _brute_force(queries_qd, docs_nd, k)
    assert scores_qk.dtype == np.float32 and indices_qk.dtype == np.int32
    assert scores_qk.shape == indices_qk.shape == (len(queries_qd), k)
    np.testing.assert_array_equal(indices_qk, ref_indices)
    np.testing.assert_allclose(scores_qk, ref_scores, atol=1e-5)


def test_random_data_matches_numpy():
    rng = np.random.default_rng(0)
    docs_nd = rng.standard_normal((1000, 16)).astype(np.float32)
    queries_qd = rng.standard_normal((37, 16)).astype(np.float32)
    _assert_matches(ExactSearcher(docs_nd), queries_qd, docs_nd, k=7)


@pytest.mark.parametrize("group_size", [1, 8])
def test_clustered_data_with_and_without_group_prefilter(group_size):
    rng = np.random.default_rng(1)
    docs_nd = _clustered(rng, 5000, 32)
    queries_qd = _clustered(rng, 50, 32)
    # 4 * k * group_size <= chunk_size, so group_size=8 takes the group-max path.
    searcher = ExactSearcher(
        docs_nd, mesh=_single_device_mesh(), chunk_size=1024, query_batch=32, group_size=group_size
    )
    _assert_matches(searcher, queries_qd, docs_nd, k=10)


def test_k_larger_than_corpus_pads():
    rng = np.random.default_rng(2)
    docs_nd = rng.standard_normal((5, 4)).astype(np.float32)
    queries_qd = rng.standard_normal((3, 4)).astype(np.float32)
    scores_qk, indices_qk = ExactSearcher(docs_nd).search(queries_qd, k=8)
    ref_scores, ref_indices = _brute_force(queries_qd, docs_nd, 5)
    np.testing.assert_array_equal(indices_qk[:, :5], ref_indices)
    np.testing.assert_allclose(scores_qk[:, :5], ref_scores, atol=1e-5)
    assert (indices_qk[:, 5:] == -1).all() and np.isneginf(scores_qk[:, 5:]).all()


def test_sharded_mesh_equals_single_device():
    assert jax.device_count() == 8, "conftest.py sets an 8-device fake CPU platform"
    rng = np.random.default_rng(3)
    docs_nd = rng.standard_normal((3001, 24)).astype(np.float32)
    queries_qd = rng.standard_normal((300, 24)).astype(np.float32)
    kwargs = dict(chunk_size=128, query_batch=128, group_size=4)
    single = ExactSearcher(docs_nd, mesh=_single_device_mesh(), **kwargs).search(queries_qd, 10)
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    sharded_searcher = ExactSearcher(docs_nd, mesh=mesh, **kwargs)
    assert len(sharded_searcher.docs_nd.sharding.device_set) == 8
    sharded = sharded_searcher.search(queries_qd, 10)
    np.testing.assert_array_equal(single[1], sharded[1])
    np.testing.assert_allclose(single[0], sharded[0], atol=1e-6)
    _assert_matches(sharded_searcher, queries_qd, docs_nd, k=10)


def test_jax_array_inputs_single_query_and_functional_form():
    rng = np.random.default_rng(4)
    docs_nd = rng.standard_normal((200, 8)).astype(np.float32)
    queries_qd = rng.standard_normal((1, 8)).astype(np.float32)
    searcher = ExactSearcher(jax.numpy.asarray(docs_nd))
    _assert_matches(searcher, jax.numpy.asarray(queries_qd), docs_nd, k=3)
    np.testing.assert_array_equal(
        exact_search(queries_qd, docs_nd, 3)[1], searcher.search(queries_qd, 3)[1]
    )


def test_bad_inputs_raise_clear_errors():
    searcher = ExactSearcher(np.ones((10, 4), np.float32))
    with pytest.raises(ValueError, match=r"queries_qd must be \[Q, 4\]"):
        searcher.search(np.ones((2, 5), np.float32), 3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        searcher.search(np.ones((2, 4), np.float32), 0)
    with pytest.raises(ValueError, match=r"non-empty \[N, D\]"):
        ExactSearcher(np.ones((0, 4), np.float32))


def test_save_load_round_trip_and_checksum(tmp_path):
    rng = np.random.default_rng(5)
    docs_nd = rng.standard_normal((300, 8)).astype(np.float32)
    queries_qd = rng.standard_normal((5, 8)).astype(np.float32)
    searcher = ExactSearcher(docs_nd, chunk_size=64)
    searcher.save(tmp_path)
    loaded = load_searcher(tmp_path)
    assert isinstance(loaded, ExactSearcher) and loaded.chunk_size == 64
    for got, want in zip(loaded.search(queries_qd, 5), searcher.search(queries_qd, 5)):
        np.testing.assert_array_equal(got, want)
    np.save(tmp_path / "embeddings.npy", docs_nd[::-1].copy())
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        load_searcher(tmp_path)
    (tmp_path / "embeddings.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"embeddings\.npy"):
        load_searcher(tmp_path)


def test_searcher_manifest_records_and_checks_its_representation_kind(tmp_path):
    import json

    ExactSearcher(np.eye(3, 4, dtype=np.float32)).save(tmp_path)
    manifest = json.loads((tmp_path / "searcher.json").read_text())
    assert manifest["kind"] == "exact" and manifest["representation"] == "dense"
    for representation, message in (
        ("sparse", r"searcher.json: a 'sparse' store is indexed by \['inverted'\], not 'exact'"),
        (
            "docids",
            r'searcher.json: field "representation" is \'docids\'; known kinds: '
            r"\['dense', 'sparse'\]",
        ),
        (None, r"known kinds"),
    ):
        manifest["representation"] = representation
        (tmp_path / "searcher.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=message):
            load_searcher(tmp_path)
    del manifest["representation"]  # written before kinds existed: dense
    (tmp_path / "searcher.json").write_text(json.dumps(manifest))
    assert load_searcher(tmp_path).num_docs == 3
