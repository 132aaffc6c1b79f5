"""ScannSearcher: recall vs exact, padding, save/load verification."""

import json

import numpy as np
import pytest

pytest.importorskip("scann")

from jaxir.index import base, exact_search, load_searcher, recall_against
from jaxir.index.scann_index import ScannSearcher, default_params


def _clustered(rng, n, d, clusters=30, noise=0.3):
    centers_cd = rng.standard_normal((clusters, d)).astype(np.float32)
    x_nd = centers_cd[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, d)).astype(
        np.float32
    )
    return x_nd / np.linalg.norm(x_nd, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return _clustered(rng, 4000, 32), _clustered(rng, 64, 32)


@pytest.fixture(scope="module")
def tree_searcher(data):
    docs_nd, _ = data
    return ScannSearcher.build(
        docs_nd, num_leaves=40, num_leaves_to_search=8, training_sample_size=4000
    )


def test_default_params_table():
    assert default_params(19_999).brute_force
    p = default_params(100_000)
    assert (p.num_leaves, p.num_leaves_to_search, p.reorder) == (630, 32, 100)
    with pytest.raises(ValueError, match="num_leaves_to_search"):
        default_params(100_000, num_leaves=100, num_leaves_to_search=101)


def test_tree_ah_recall_vs_exact(data, tree_searcher):
    docs_nd, queries_qd = data
    _, exact_qk = exact_search(queries_qd, docs_nd, 10)
    scores_qk, indices_qk = tree_searcher.search(queries_qd, 10)
    assert scores_qk.dtype == np.float32 and indices_qk.dtype == np.int32
    assert recall_against(exact_qk, indices_qk) >= 0.9
    # Reordered scores are exact inner products of the returned rows.
    np.testing.assert_allclose(
        scores_qk, np.einsum("qd,qkd->qk", queries_qd, docs_nd[indices_qk]), atol=1e-5
    )


def test_brute_force_is_exact_and_pads(data):
    docs_nd, queries_qd = data
    small_nd = docs_nd[:20]
    searcher = ScannSearcher.build(small_nd)
    assert searcher.params.brute_force
    scores_qk, indices_qk = searcher.search(queries_qd, 25)
    ref_scores, ref_indices = exact_search(queries_qd, small_nd, 25)
    np.testing.assert_array_equal(indices_qk, ref_indices)
    np.testing.assert_allclose(scores_qk, ref_scores, atol=1e-5)
    assert (indices_qk[:, 20:] == -1).all() and np.isneginf(scores_qk[:, 20:]).all()


def test_save_load_round_trip(tmp_path, data, tree_searcher):
    _, queries_qd = data
    tree_searcher.save(tmp_path / "index")
    moved = tmp_path / "moved"
    (tmp_path / "index").rename(moved)  # serialized with relative asset paths
    loaded = load_searcher(moved)
    assert isinstance(loaded, ScannSearcher)
    assert (loaded.num_docs, loaded.dim, loaded.params) == (4000, 32, tree_searcher.params)
    for got, want in zip(loaded.search(queries_qd, 10), tree_searcher.search(queries_qd, 10)):
        np.testing.assert_array_equal(got, want)


def test_load_errors(tmp_path, tree_searcher):
    tree_searcher.save(tmp_path)
    manifest = json.loads((tmp_path / base.MANIFEST).read_text())

    (tmp_path / "scann_docids.pkl").write_bytes(b"x")
    with pytest.raises(ValueError, match="refuses to unpickle"):
        load_searcher(tmp_path)
    (tmp_path / "scann_docids.pkl").unlink()

    # Probes that disagree with the index (checksum updated so only the probe check fires).
    with np.load(tmp_path / "probes.npz") as probes:
        fields = dict(probes)
    fields["indices_qk"] = fields["indices_qk"][:, ::-1].copy()
    with open(tmp_path / "probes.npz", "wb") as f:
        np.savez(f, **fields)
    tampered = {
        **manifest,
        "sha256": {**manifest["sha256"], "probes.npz": base.file_sha256(tmp_path / "probes.npz")},
    }
    (tmp_path / base.MANIFEST).write_text(json.dumps(tampered))
    with pytest.raises(ValueError, match="probe queries"):
        load_searcher(tmp_path)

    (tmp_path / base.MANIFEST).write_text(json.dumps({**tampered, "num_docs": 5}))
    with pytest.raises(ValueError, match="holds 4000 documents"):
        load_searcher(tmp_path)

    (tmp_path / base.MANIFEST).write_text(json.dumps(manifest))
    (tmp_path / "hashed_dataset.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"hashed_dataset\.npy: missing"):
        load_searcher(tmp_path)

    (tmp_path / base.MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_searcher(tmp_path)
