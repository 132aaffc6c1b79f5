"""InvertedIndex against float64 brute force (``X @ q``) on the same vectors, ties by doc id."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

from jaxir.index import Searcher, load_searcher, recall_against
from jaxir.index.inverted import (
    _ARRAYS,
    _TERM_ARRAYS,
    DEFAULT_ALPHA,
    DEFAULT_BLOCK_SIZE,
    InvertedIndex,
)


def zipf_docs(rng, rows, vocab, nnz, *, grid=None, s=1.0):
    """``[rows, vocab]`` CSR float32 with Zipfian term ids (~``nnz`` distinct per row).

    Weights are lognormal; with ``grid`` they are rounded up to multiples of ``grid``, so
    sums of products are exact in float32 and equal vectors (and many unequal ones) tie.
    """
    p = 1.0 / np.arange(1, vocab + 1) ** s
    p /= p.sum()
    draws = int(nnz * 1.35) + 1
    cols = rng.permutation(vocab)[rng.choice(vocab, size=rows * draws, p=p)]
    vals = rng.lognormal(-0.5, 0.6, size=rows * draws)
    coo = scipy.sparse.coo_matrix(
        (vals, (np.repeat(np.arange(rows), draws), cols)), shape=(rows, vocab)
    )
    m = coo.tocsr()
    m.sum_duplicates()
    if grid is not None:
        m.data = np.ceil(np.minimum(m.data, 4.0) / grid) * grid
    return m.astype(np.float32)


def brute_force(docs, queries, k):
    """Exact top-k in float64 by ``docs @ q``: score descending, then doc id ascending."""
    docs = scipy.sparse.csr_matrix(docs, dtype=np.float64)
    scores_qn = np.asarray(
        (docs @ scipy.sparse.csr_matrix(queries, dtype=np.float64).T).todense()
    ).T
    ids_qn = np.broadcast_to(np.arange(docs.shape[0]), scores_qn.shape)
    order_qk = np.lexsort((ids_qn, -scores_qn), axis=1)[:, :k]
    return np.take_along_axis(scores_qn, order_qk, axis=1), order_qk


def with_ties(rng, rows=1200, vocab=3000, nnz=100):
    """Zipfian docs on a 1/8 grid, with 40 exact duplicates appended and 30 empty rows."""
    docs = zipf_docs(rng, rows, vocab, nnz, grid=0.125)
    dupes = docs[rng.choice(rows, 40, replace=False)]
    return scipy.sparse.vstack([docs, dupes, scipy.sparse.csr_matrix((30, vocab))]).tocsr()


def queries_for(rng, docs, count=60):
    """Zipfian queries (~30 terms): query 0 is empty, 1 and 2 hold only rare terms."""
    vocab = docs.shape[1]
    queries = zipf_docs(rng, count, vocab, 30, grid=0.125).tolil()
    df = docs.getnnz(axis=0)
    rare = np.flatnonzero(df > 0)[np.argsort(df[df > 0], kind="stable")][:3]
    queries[0, :] = 0  # empty query: every document scores 0
    queries[1, :] = 0
    queries[1, rare[0]] = 1.0  # fewer matching documents than k
    queries[2, :] = 0
    queries[2, rare[1:]] = [0.5, 2.0]
    return queries.tocsr()


def assert_matches_brute_force(index, queries, k, **kwargs):
    scores_qk, indices_qk = index.search(queries, k, **kwargs)
    kk = min(k, index.num_docs)
    ref_scores, ref_indices = brute_force(index.to_csr(), queries, kk)
    assert scores_qk.dtype == np.float32 and indices_qk.dtype == np.int32
    assert scores_qk.shape == indices_qk.shape == (queries.shape[0], k)
    np.testing.assert_array_equal(indices_qk[:, :kk], ref_indices)
    np.testing.assert_allclose(scores_qk[:, :kk], ref_scores, rtol=1e-6, atol=0)
    assert (indices_qk[:, kk:] == -1).all() and np.isneginf(scores_qk[:, kk:]).all()
    return scores_qk, indices_qk


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    docs = with_ties(rng)
    return docs, queries_for(rng, docs)


@pytest.mark.parametrize("quantize", [True, False])
@pytest.mark.parametrize("block_size", [1, 4, 7, 64, 256])
def test_exact_equals_brute_force_with_ties_zero_scores_and_empty_queries(
    data, quantize, block_size
):
    docs, queries = data
    index = InvertedIndex(docs, quantize=quantize, block_size=block_size)
    for k in (1, 10, 100):
        scores_qk, indices_qk = assert_matches_brute_force(index, queries, k)
    # The empty query ranks every document 0, in id order.
    assert indices_qk[0].tolist() == list(range(100)) and (scores_qk[0] == 0).all()
    # A query matching few documents: the matches first, then score-0 documents by id.
    matched = int((scores_qk[1] > 0).sum())
    assert 0 < matched < 100
    zero_ids = indices_qk[1, matched:]
    assert (np.diff(zero_ids) > 0).all() and (scores_qk[1, matched:] == 0).all()
    if not quantize:  # the float index scores the input vectors themselves
        np.testing.assert_array_equal(index.to_csr().toarray(), docs.toarray())


def test_exhaustive_scan_equals_block_max_bit_for_bit():
    """The term-at-a-time scan, chosen where the bounds cannot prune, adds the same float64
    products in the same order as a forward-index row: identical scores, not just close."""
    rng = np.random.default_rng(3)
    small = zipf_docs(rng, 600, 400, 80, s=0.6)  # every document shares the common terms
    queries = scipy.sparse.vstack(
        [zipf_docs(rng, 20, 400, 40, s=0.6), queries_for(rng, small, count=3)]
    ).tocsr()
    for quantize in (True, False):
        scanned = InvertedIndex(small, quantize=quantize)
        blocks = InvertedIndex(small, quantize=quantize, term_postings=False)
        assert scanned.term_postings and not blocks.term_postings
        per_posting = 4 + (1 if quantize else 4)  # int32 document id + the impact
        assert scanned.nbytes - blocks.nbytes == per_posting * scanned.num_postings + 8 * 401
        for k in (1, 10, 100):
            got_s, got_i, got_x = scanned._run(queries, k, "exact", None)
            want_s, want_i, want_x = blocks._run(queries, k, "exact", None)
            # Most long queries are scanned (the choice projects a sample of the blocks), the
            # empty one (nothing to walk) is not, and nothing is without term postings.
            assert got_x[:20].mean() >= 0.75 and not got_x[20] and not want_x.any()
            np.testing.assert_array_equal(got_i, want_i)
            np.testing.assert_array_equal(got_s, want_s)
            assert_matches_brute_force(scanned, queries, k)
        assert_matches_brute_force(scanned, queries, 700)  # k > N: the seeds score it all
        # mode="approx" falls back to the (exact) scan on the same queries.
        approx_x = scanned.exhaustive_queries(queries, 10, mode="approx", alpha=0.9)
        assert approx_x[:20].mean() >= 0.75
        np.testing.assert_array_equal(
            scanned.search(queries[:20][approx_x[:20]], 10, mode="approx", alpha=0.9)[1],
            blocks.search(queries[:20][approx_x[:20]], 10)[1],
        )


def test_ties_are_present_and_broken_by_lower_id(data):
    docs, queries = data
    index = InvertedIndex(docs, quantize=False)
    scores_qk, indices_qk = index.search(queries, 50)
    tied = scores_qk[:, 1:] == scores_qk[:, :-1]
    assert tied[3:].sum() > 20, "the data must hold ties among positive scores"
    assert (indices_qk[:, 1:][tied] > indices_qk[:, :-1][tied]).all()


def test_k_larger_than_corpus_pads():
    rng = np.random.default_rng(1)
    docs = zipf_docs(rng, 9, 50, 5, grid=0.25)
    index = InvertedIndex(docs, block_size=4)
    assert_matches_brute_force(index, zipf_docs(rng, 4, 50, 3), 20)


def test_quantized_impacts_stay_within_half_a_step(data):
    docs, _ = data
    index = InvertedIndex(docs)
    assert index.quantized and index.scale == pytest.approx(docs.max() / 255, rel=1e-6)
    error = np.abs(index.to_csr().toarray() - docs.toarray())
    assert error.max() <= index.scale / 2 * (1 + 1e-5)
    assert index.num_postings <= docs.nnz and index.nbytes > 0


def test_zipfian_collection_with_100_terms_per_doc():
    rng = np.random.default_rng(2)
    docs = zipf_docs(rng, 3000, 8000, 100)
    assert 90 < docs.nnz / docs.shape[0] < 110
    queries = zipf_docs(rng, 80, 8000, 30)
    index = InvertedIndex(docs)
    # Both kinds of bounds are exercised: dense rows of block maxima and sparse entries.
    assert index.block_size == DEFAULT_BLOCK_SIZE
    assert index.num_dense_terms > 0 and index.num_entries > 0
    assert_matches_brute_force(index, queries, 10)
    assert_matches_brute_force(InvertedIndex(docs, quantize=False, block_size=32), queries, 10)


def test_long_queries_and_tiny_weights_stay_exact(data):
    """The float32 bound slack grows with the query length; tiny weights still bound > 0."""
    docs, queries = data
    rng = np.random.default_rng(5)
    index = InvertedIndex(docs)
    every_term = rng.lognormal(-0.5, 0.6, size=(3, docs.shape[1])).astype(np.float32)
    assert_matches_brute_force(index, every_term, 20)
    tiny = queries[3:6].copy()
    tiny.data[:] = 1e-44  # subnormal in float32: q * scale underflows float32
    scores_qk, indices_qk = index.search(tiny, 10)
    np.testing.assert_array_equal(indices_qk, brute_force(index.to_csr(), tiny, 10)[1])
    assert (scores_qk[:, 0] > 0).all()  # (float32 scores this small are subnormal)


def test_documents_without_terms():
    """A collection with no postings (and one with a single posting) ranks by id."""
    empty = InvertedIndex(scipy.sparse.csr_matrix((6, 10), dtype=np.float32), block_size=4)
    assert empty.num_postings == 0
    scores_qk, indices_qk = empty.search(np.ones((2, 10), np.float32), 8)
    assert indices_qk.tolist() == [[0, 1, 2, 3, 4, 5, -1, -1]] * 2
    assert (scores_qk[:, :6] == 0).all() and np.isneginf(scores_qk[:, 6:]).all()
    one = scipy.sparse.csr_matrix(([2.0], ([4], [3])), shape=(6, 10), dtype=np.float32)
    assert_matches_brute_force(InvertedIndex(one, block_size=4), np.ones((1, 10)), 6)


def test_dense_and_jax_queries_equal_sparse_ones(data):
    docs, queries = data
    index = InvertedIndex(docs.toarray(), block_size=16)  # a dense matrix builds too
    want = index.search(queries, 10)
    for dense in (queries.toarray(), jnp.asarray(queries.toarray())):
        for got, expected in zip(index.search(dense, 10), want):
            np.testing.assert_array_equal(got, expected)
    scores_qk, indices_qk = index.search(np.zeros((0, docs.shape[1]), np.float32), 5)
    assert scores_qk.shape == indices_qk.shape == (0, 5)


def test_approx_recall_at_default_alpha_and_exact_at_full():
    rng = np.random.default_rng(3)
    docs = zipf_docs(rng, 6000, 8000, 100)
    queries = zipf_docs(rng, 100, 8000, 30)
    index = InvertedIndex(docs)
    exact = index.search(queries, 10)
    _, approx = index.search(queries, 10, mode="approx")
    recall = recall_against(exact[1], approx)
    assert DEFAULT_ALPHA == 0.9 and recall >= 0.9, recall
    _, lossy = index.search(queries, 10, mode="approx", alpha=0.3)
    assert recall_against(exact[1], lossy) < recall  # the knob trades recall away
    full = index.search(queries, 10, mode="approx", alpha=1.0)
    assert recall_against(exact[1], full[1]) == 1.0
    for got, want in zip(full, exact):
        np.testing.assert_array_equal(got, want)


def test_save_load_round_trip_via_load_searcher(data, tmp_path):
    docs, queries = data
    index = InvertedIndex(docs, block_size=32)
    assert isinstance(index, Searcher)
    index.save(tmp_path)
    manifest = json.loads((tmp_path / "searcher.json").read_text())
    assert (manifest["kind"], manifest["representation"]) == ("inverted", "sparse")
    assert (manifest["num_docs"], manifest["dim"], manifest["block_size"]) == (
        docs.shape[0],
        docs.shape[1],
        32,
    )
    npy = len(_ARRAYS) + len(_TERM_ARRAYS)
    assert not list(tmp_path.glob("*.pkl")) and len(list(tmp_path.glob("*.npy"))) == npy
    loaded = load_searcher(tmp_path)
    assert isinstance(loaded, InvertedIndex) and loaded.scale == index.scale
    assert loaded.term_postings and loaded.nbytes == index.nbytes
    for got, want in zip(
        loaded._run(queries, 10, "exact", None), index._run(queries, 10, "exact", None)
    ):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loaded.to_csr().toarray(), index.to_csr().toarray())
    # A float index without the term-major copy round-trips too.
    InvertedIndex(docs, quantize=False, term_postings=False).save(tmp_path / "f")
    assert len(list((tmp_path / "f").glob("*.npy"))) == len(_ARRAYS)
    loaded = load_searcher(tmp_path / "f")
    assert not loaded.quantized and not loaded.term_postings
    # An index saved before the field existed loads without the term-major copy.
    manifest = json.loads((tmp_path / "f" / "searcher.json").read_text())
    del manifest["term_postings"]
    (tmp_path / "f" / "searcher.json").write_text(json.dumps(manifest))
    assert not load_searcher(tmp_path / "f").term_postings


def test_load_rejects_damaged_files(data, tmp_path):
    docs, _ = data
    InvertedIndex(docs).save(tmp_path)
    manifest_file = tmp_path / "searcher.json"
    manifest = json.loads(manifest_file.read_text())
    terms = np.load(tmp_path / "doc_terms.npy")
    np.save(tmp_path / "doc_terms.npy", terms[::-1].copy())
    with pytest.raises(ValueError, match=r"doc_terms\.npy: SHA-256 does not match"):
        load_searcher(tmp_path)
    np.save(tmp_path / "doc_terms.npy", terms)
    manifest_file.write_text(json.dumps({**manifest, "block_size": "64"}))
    with pytest.raises(ValueError, match="field 'block_size' must be int"):
        load_searcher(tmp_path)
    manifest_file.write_text(json.dumps({**manifest, "num_entries": manifest["num_entries"] + 1}))
    with pytest.raises(ValueError, match=r"sparse_block\.npy holds int32"):
        load_searcher(tmp_path)
    manifest_file.write_text(json.dumps({**manifest, "version": 1}))
    with pytest.raises(
        ValueError, match=r"'version' is 1: an inverted index of an older .*Rebuild"
    ):
        load_searcher(tmp_path)
    manifest_file.write_text(json.dumps({**manifest, "representation": "dense"}))
    with pytest.raises(ValueError, match=r"a 'dense' store is indexed by .* not 'inverted'"):
        load_searcher(tmp_path)
    manifest_file.write_text(json.dumps(manifest))
    assert load_searcher(tmp_path).num_docs == docs.shape[0]
    (tmp_path / "dense_max.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"dense_max\.npy: missing"):
        load_searcher(tmp_path)


def test_bad_inputs_raise_clear_errors(data):
    docs, queries = data
    index = InvertedIndex(docs)
    bad = docs.copy()
    bad.data[5] = -1.0
    with pytest.raises(ValueError, match="row 0 has a negative weight"):
        InvertedIndex(bad)
    bad.data[5] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        InvertedIndex(bad)
    with pytest.raises(ValueError, match=r"block_size must be in 1\.\.256"):
        InvertedIndex(docs, block_size=257)
    with pytest.raises(ValueError, match="at least one document"):
        InvertedIndex(scipy.sparse.csr_matrix((0, 5)))
    with pytest.raises(ValueError, match=r"must have 3000 columns"):
        index.search(np.ones((2, 5), np.float32), 3)
    negative = queries.copy()
    negative.data[0] = -0.5
    with pytest.raises(ValueError, match="queries row .* negative weight"):
        index.search(negative, 3)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        index.search(queries, 0)
    with pytest.raises(ValueError, match="mode must be one of"):
        index.search(queries, 3, mode="fast")
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\]"):
        index.search(queries, 3, mode="approx", alpha=1.5)
    with pytest.raises(ValueError, match="alpha only applies to mode='approx'"):
        index.search(queries, 3, alpha=0.5)


def test_load_rejects_out_of_range_arrays_with_valid_checksums(data, tmp_path):
    """The kernels do no bounds checks: load validates what the checksums cannot."""
    from jaxir.index import base

    docs, _ = data
    InvertedIndex(docs).save(tmp_path)
    manifest = json.loads((tmp_path / "searcher.json").read_text())
    damages = (("doc_terms", docs.shape[1]), ("sparse_block", 10**6), ("term_docs", docs.shape[0]))
    for name, damage in damages:
        path = tmp_path / f"{name}.npy"
        good = np.load(path)
        bad = good.copy()
        bad[-1] = damage
        np.save(path, bad)
        sums = {**manifest["sha256"], path.name: base.file_sha256(path)}
        (tmp_path / "searcher.json").write_text(json.dumps({**manifest, "sha256": sums}))
        with pytest.raises(ValueError, match=rf"{name}\.npy is inconsistent"):
            load_searcher(tmp_path)
        np.save(path, good)
