"""Anserini and Seismic exports: exact file formats, round trips, edge cases, Seismic queries."""

import json
import struct

import numpy as np
import pytest
import scipy.sparse as sp
import seismic

from jaxir.data.errors import DataError
from jaxir.sparse_export import (
    ANSERINI_MANIFEST,
    SEISMIC_MANIFEST,
    SparseExportError,
    read_anserini,
    read_seismic,
    write_anserini,
    write_seismic,
)

VOCAB = 400


def _terms(size=VOCAB):
    """WordPiece-like strings; every one distinct and free of whitespace."""
    return ["[PAD]", "[CLS]", "[SEP]"] + [f"t{i}" if i % 3 else f"##t{i}" for i in range(3, size)]


def _collection(seed=0, num_docs=300, num_queries=20, vocab=VOCAB):
    """Zipf-ish sparse documents (~30 non-zeros) and queries (~8), SPLADE-like weights."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, vocab + 1) ** 0.8
    popularity /= popularity.sum()

    def rows(n, nnz):
        out = sp.lil_matrix((n, vocab), dtype=np.float32)
        for i in range(n):
            cols = rng.choice(vocab, size=nnz, replace=False, p=popularity)
            out[i, cols] = rng.gamma(2.0, 0.5, size=nnz).astype(np.float32)
        return out.tocsr()

    doc_ids = [f"doc-{i}" for i in range(num_docs)]
    query_ids = [f"q{i}" for i in range(num_queries)]
    return doc_ids, rows(num_docs, 30), query_ids, rows(num_queries, 8)


def _rerecord_sizes(out, manifest_name):
    """Make the manifest agree with edited files' sizes, so the parsers themselves are reached."""
    info = json.loads((out / manifest_name).read_text())
    for entry in info["files"]:
        entry["size"] = (out / entry["path"]).stat().st_size
    (out / manifest_name).write_text(json.dumps(info))


def _top10(docs, query_row):
    scores = (docs.astype(np.float64) @ query_row.astype(np.float64).T).toarray().ravel()
    order = np.lexsort((np.arange(len(scores)), -scores))
    return [int(i) for i in order[:10] if scores[i] > 0]


# --------------------------------------------------------------------------- Anserini


def test_anserini_line_matches_hand_written(tmp_path):
    terms = ["[CLS]", '"q', "a\\b", "caf\u00e9", "##ing", "unused"]
    weights = np.array([[0.125, 2.5, 0.031, 0.996, 0.004, 0.0]], np.float32)
    query = np.array([[0.0, 0.02, 0.0, 0.0, 0.01, 0.0]], np.float32)
    manifest = write_anserini(
        tmp_path / "a",
        ["d-1"],
        sp.csr_matrix(weights),
        terms,
        queries=(["q1"], sp.csr_matrix(query)),
    )
    line = (tmp_path / "a/corpus/docs-00000.jsonl").read_text(encoding="utf-8")
    # 12.5 rounds half to even, 99.6 up to 100; 0.004 * 100 = 0.4 rounds to 0 and is dropped.
    assert line == (
        '{"id": "d-1", "contents": "", "vector": {"[CLS]": 12, "\\"q": 250, "a\\\\b": 3, '
        '"caf\u00e9": 100}}\n'
    )
    assert json.loads(line)["vector"] == {"[CLS]": 12, '"q': 250, "a\\b": 3, "caf\u00e9": 100}
    assert (tmp_path / "a/queries.tsv").read_text(encoding="utf-8") == 'q1\t"q "q ##ing\n'
    info = json.loads(manifest.read_text())
    assert manifest.name == ANSERINI_MANIFEST
    assert info["quantization"] == 100.0 and info["vocab_size"] == 6 and info["num_docs"] == 1
    assert info["format_version"] == 1 and info["nnz"] == 4 and info["max_impact"] == 250
    assert json.loads((tmp_path / "a/terms.json").read_text(encoding="utf-8")) == terms
    listed = {f["path"] for f in info["files"]}
    assert listed == {"corpus/docs-00000.jsonl", "queries.tsv", "terms.json"}


@pytest.mark.parametrize("quantization", [100.0, 7.0])
def test_anserini_round_trip(tmp_path, quantization):
    ids, docs, qids, queries = _collection()
    terms = _terms()
    write_anserini(
        tmp_path / "a",
        ids,
        docs,
        terms,
        queries=(qids, queries),
        quantization=quantization,
        shard_size=64,
    )
    shards = sorted(p.name for p in (tmp_path / "a/corpus").iterdir())
    assert shards == [f"docs-{i:05d}.jsonl" for i in range(5)]
    got_ids, got_docs, got_qids, got_queries = read_anserini(tmp_path / "a")
    assert got_ids == ids and got_qids == qids
    assert got_docs.dtype == np.float32 and got_docs.shape == docs.shape
    tolerance = 0.5 / quantization + 1e-6
    np.testing.assert_allclose(got_docs.toarray(), docs.toarray(), atol=tolerance, rtol=0)
    np.testing.assert_allclose(got_queries.toarray(), queries.toarray(), atol=tolerance, rtol=0)
    # Impacts are exact integers: dequantized * quantization is integral.
    impacts = got_docs.data.astype(np.float64) * quantization
    assert np.abs(impacts - np.rint(impacts)).max() < 1e-4
    # Every impact of each query line is its term repeated that many times.
    lines = (tmp_path / "a/queries.tsv").read_text().splitlines()
    first_qid, text = lines[0].split("\t")
    row = queries.getrow(0)
    expected = sorted(
        (terms[t], int(np.rint(w * quantization))) for t, w in zip(row.indices, row.data)
    )
    tokens = text.split(" ")
    assert first_qid == "q0"
    assert sorted((t, tokens.count(t)) for t in set(tokens)) == [e for e in expected if e[1]]


def test_anserini_whitespace_term_is_refused_where_used(tmp_path):
    terms = ["ok", "two words", "tab\there", "fine"]
    used_in_doc = sp.csr_matrix(np.array([[1.0, 0.5, 0, 0], [0, 0, 0, 1.0]], np.float32))
    with pytest.raises(
        SparseExportError,
        match=r"terms\[1\] = 'two words' contains whitespace.*"
        r"document 'd0' \(row 0\)",
    ):
        write_anserini(tmp_path / "a", ["d0", "d1"], used_in_doc, terms)
    docs = sp.csr_matrix(np.array([[1.0, 0, 0, 0], [0, 0, 0, 1.0]], np.float32))
    query = sp.csr_matrix(np.array([[0, 0, 0.3, 0]], np.float32))
    with pytest.raises(SparseExportError, match=r"terms\[2\] = 'tab\\there'.*query 'q7'"):
        write_anserini(tmp_path / "b", ["d0", "d1"], docs, terms, queries=(["q7"], query))
    # Unused whitespace tokens are fine, and a weight that rounds to 0 does not use a term.
    query = sp.csr_matrix(np.array([[0.5, 0, 0.001, 0]], np.float32))
    write_anserini(tmp_path / "c", ["d0", "d1"], docs, terms, queries=(["q7"], query))
    assert (tmp_path / "c/queries.tsv").read_text() == "q7\t" + " ".join(["ok"] * 50) + "\n"


def test_anserini_duplicate_empty_and_long_terms(tmp_path):
    docs = sp.csr_matrix(np.array([[0, 1.0, 0]], np.float32))
    with pytest.raises(SparseExportError, match=r"terms\[1\] = 'x' is also terms\[2\]"):
        write_anserini(tmp_path / "a", ["d"], docs, ["y", "x", "x"])
    with pytest.raises(SparseExportError, match=r"terms\[1\] = '' is empty"):
        write_anserini(tmp_path / "b", ["d"], docs, ["y", "", "z"])
    with pytest.raises(SparseExportError, match="256 characters long"):
        write_anserini(tmp_path / "c", ["d"], docs, ["y", "x" * 256, "z"])
    with pytest.raises(SparseExportError, match=r"terms\[2\] is None"):
        write_anserini(tmp_path / "d", ["d"], docs, ["y", "x", None])


def test_anserini_all_zero_document_and_queries(tmp_path):
    ids, docs, qids, queries = _collection(num_docs=12, num_queries=6)
    docs = docs.tolil()
    docs[3, :] = 0
    docs[4, :] = 0
    docs[4, 5] = 0.001  # rounds to impact 0: empty too
    docs = docs.tocsr()
    queries = queries.tolil()
    queries[0, :] = 0
    queries[4, :] = 0
    queries[4, 7] = 0.002
    queries = queries.tocsr()
    with pytest.warns(
        UserWarning, match=r"2 of 6 queries have no term with impact >= 1.*'q0', 'q4'"
    ):
        manifest = write_anserini(tmp_path / "a", ids, docs, _terms(), queries=(qids, queries))
    lines = (tmp_path / "a/corpus/docs-00000.jsonl").read_text().splitlines()
    assert lines[3] == '{"id": "doc-3", "contents": "", "vector": {}}'
    assert lines[4] == '{"id": "doc-4", "contents": "", "vector": {}}'
    tsv = (tmp_path / "a/queries.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in tsv] == ["q1", "q2", "q3", "q5"]
    info = json.loads(manifest.read_text())
    assert info["empty_docs"] == 2
    assert info["queries"]["empty_queries"] == [{"row": 0, "id": "q0"}, {"row": 4, "id": "q4"}]
    assert info["queries"]["num_queries"] == 6 and info["queries"]["num_written"] == 4
    got_ids, got_docs, got_qids, got_queries = read_anserini(tmp_path / "a")
    assert got_ids == ids and got_qids == qids
    assert got_docs[3].nnz == 0 and got_docs[4].nnz == 0 and got_docs[5].nnz > 0
    assert got_queries[0].nnz == 0 and got_queries[4].nnz == 0 and got_queries[1].nnz > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda m: m.__setitem__((2, 7), -0.25),
            r"matrix\[row 2 \(id 'doc-2'\), term 7\] is -0.25.*>= 0",
        ),
        (lambda m: m.__setitem__((1, 3), np.nan), r"matrix\[row 1 \(id 'doc-1'\), term 3\] is nan"),
        (lambda m: m.__setitem__((0, 0), 3e7), r"quantizes to 3000000000, beyond 2\*\*31 - 1"),
    ],
)
def test_bad_weights_are_refused(tmp_path, change, message):
    ids, docs, _, _ = _collection(num_docs=5, num_queries=1)
    docs = docs.tolil()
    change(docs)
    with pytest.raises(SparseExportError, match=message):
        write_anserini(tmp_path / "a", ids, docs.tocsr(), _terms())
    assert not (tmp_path / "a").exists()
    if "quantizes" not in message:
        with pytest.raises(SparseExportError, match=message):
            write_seismic(tmp_path / "s", ids, docs.tocsr())


def test_bad_ids_shapes_and_options(tmp_path):
    ids, docs, qids, queries = _collection(num_docs=4, num_queries=2)
    terms = _terms()
    with pytest.raises(SparseExportError, match=r"ids\[2\] = 'doc-1' repeats ids\[1\]"):
        write_anserini(tmp_path / "a", ["doc-0", "doc-1", "doc-1", "doc-3"], docs, terms)
    with pytest.raises(SparseExportError, match=r"query ids\[1\] = 'q 1' is empty or contains"):
        write_anserini(tmp_path / "a", ids, docs, terms, queries=(["q0", "q 1"], queries))
    with pytest.raises(SparseExportError, match="has 4 rows but 3 ids"):
        write_anserini(tmp_path / "a", ids[:3], docs, terms)
    with pytest.raises(SparseExportError, match=f"has {VOCAB} columns but the vocabulary has 10"):
        write_anserini(tmp_path / "a", ids, docs, terms[:10])
    with pytest.raises(SparseExportError, match="expected a scipy.sparse matrix"):
        write_anserini(tmp_path / "a", ids, docs.toarray(), terms)
    with pytest.raises(SparseExportError, match="quantization=0.0: must be a finite number > 0"):
        write_anserini(tmp_path / "a", ids, docs, terms, quantization=0)
    with pytest.raises(SparseExportError, match="shard_size=0"):
        write_anserini(tmp_path / "a", ids, docs, terms, shard_size=0)
    with pytest.raises(SparseExportError, match="expected a pair"):
        write_seismic(tmp_path / "s", ids, docs, queries=queries)
    with pytest.raises(
        SparseExportError, match="queries has 300 columns but the vocabulary has 400"
    ):
        write_seismic(tmp_path / "s", ids, docs, queries=(qids, queries[:, :300]), terms=terms)


def test_output_directory_and_corruption_checks(tmp_path):
    ids, docs, qids, queries = _collection(num_docs=10, num_queries=3)
    out = tmp_path / "a"
    write_anserini(out, ids, docs, _terms(), queries=(qids, queries))
    with pytest.raises(SparseExportError, match="not empty.*overwrite=True"):
        write_anserini(out, ids, docs, _terms())
    with pytest.raises(SparseExportError, match="not empty; choose a new output directory$"):
        write_seismic(out, ids, docs)  # an Anserini export is not replaced by a Seismic one
    write_anserini(out, ids, docs, _terms(), overwrite=True)  # now without queries
    assert read_anserini(out)[2] == [] and read_anserini(out)[3].shape == (0, VOCAB)

    shard = out / "corpus/docs-00000.jsonl"
    text = shard.read_text()
    shard.write_text(text.replace('"doc-0"', '"doc-X"'))  # same size, other bytes
    with pytest.raises(DataError, match="SHA-256 differs"):
        read_anserini(out)
    assert read_anserini(out, verify=False)[0][0] == "doc-X"
    shard.write_text(text + "\n")
    with pytest.raises(DataError, match="bytes, but .* records"):
        read_anserini(out)
    (out / ANSERINI_MANIFEST).unlink()
    with pytest.raises(DataError, match="missing; this is not a complete export"):
        read_anserini(out)


def test_anserini_reader_names_bad_lines(tmp_path):
    ids, docs, _, _ = _collection(num_docs=3, num_queries=1)
    out = tmp_path / "a"
    write_anserini(out, ids, docs, _terms())
    shard = out / "corpus/docs-00000.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text(
        lines[0] + lines[1].replace('"vector": {', '"vector": {"nope": 2, ') + lines[2]
    )
    _rerecord_sizes(out, ANSERINI_MANIFEST)
    with pytest.raises(DataError, match=r"docs-00000.jsonl:2: field 'vector': term 'nope' is not"):
        read_anserini(out, verify=False)


# --------------------------------------------------------------------------- Seismic


def test_seismic_binary_layout_matches_hand_written(tmp_path):
    matrix = sp.csr_matrix(np.array([[0, 0.5, 0, 2.0], [0, 0, 0, 0], [1.5, 0, 0, 0]], np.float32))
    write_seismic(tmp_path / "s", ["a", "b", "c"], matrix, queries=(["q"], matrix[2:]))
    expected = (
        struct.pack("<I", 3)
        + struct.pack("<I2I2f", 2, 1, 3, 0.5, 2.0)
        + struct.pack("<I", 0)
        + struct.pack("<IIf", 1, 0, 1.5)
    )
    assert (tmp_path / "s/documents.bin").read_bytes() == expected
    assert (tmp_path / "s/queries.bin").read_bytes() == struct.pack("<IIIf", 1, 1, 0, 1.5)
    assert np.load(tmp_path / "s/doc_ids.npy").tolist() == ["a", "b", "c"]
    assert (tmp_path / "s/documents.jsonl").read_text().splitlines() == [
        '{"id": "a", "vector": {"1": 0.5, "3": 2.0}}',
        '{"id": "b", "vector": {}}',
        '{"id": "c", "vector": {"0": 1.5}}',
    ]
    info = json.loads((tmp_path / "s" / SEISMIC_MANIFEST).read_text())
    assert info["num_docs"] == 3 and info["empty_docs"] == 1 and info["vocab_size"] == 4
    assert info["component_type"] == "u16" and info["queries"]["num_queries"] == 1


@pytest.mark.parametrize("source", ["bin", "jsonl"])
def test_seismic_round_trip_is_exact(tmp_path, source):
    ids, docs, qids, queries = _collection(seed=1, num_docs=120, num_queries=9)
    docs = docs.tolil()
    docs[5, :] = 0
    docs = docs.tocsr()
    docs.data[::7] = np.float32(1) / np.float32(3)  # needs 9 significant digits
    write_seismic(tmp_path / "s", ids, docs, queries=(qids, queries), terms=_terms())
    got_ids, got_docs, got_qids, got_queries = read_seismic(tmp_path / "s", source=source)
    assert got_ids == ids and got_qids == qids
    assert got_docs.shape == docs.shape and got_docs.dtype == np.float32
    assert (got_docs != docs).nnz == 0 and (got_queries != queries).nnz == 0
    assert got_docs[5].nnz == 0


def test_seismic_without_jsonl_and_large_vocabulary(tmp_path):
    vocab = 70_000
    docs = sp.csr_matrix(
        (np.array([1.0, 2.0, 0.5], np.float32), np.array([5, 6, 69_999]), [0, 1, 3]),
        shape=(2, vocab),
    )
    query = sp.csr_matrix((np.array([3.0], np.float32), np.array([69_999]), [0, 1]), (1, vocab))
    manifest = write_seismic(tmp_path / "s", ["x", "y"], docs, queries=(["q"], query), jsonl=False)
    info = json.loads(manifest.read_text())
    assert info["component_type"] == "u32"
    assert info["index_classes"] == ["SeismicIndexLV", "SeismicIndexRawLV"]
    assert not (tmp_path / "s/documents.jsonl").exists()
    assert info["queries"]["jsonl"] is None
    assert (read_seismic(tmp_path / "s")[1] != docs).nnz == 0
    # Term ids beyond u16 need the large-vocabulary index, as the manifest says.
    raw = seismic.SeismicIndexRawLV.build(str(tmp_path / "s/documents.bin"))
    hits = raw.batch_search(str(tmp_path / "s/queries.bin"), 2, 10, 0.5, 0, True, 1)
    assert [row for _, row in hits[0]] == [1] and hits[0][0][0] == pytest.approx(1.5, rel=1e-3)
    with pytest.raises(DataError, match="no JSONL files were written"):
        read_seismic(tmp_path / "s", source="jsonl")
    raw = (tmp_path / "s/documents.bin").read_bytes()
    (tmp_path / "s/documents.bin").write_bytes(raw[:-4])
    _rerecord_sizes(tmp_path / "s", SEISMIC_MANIFEST)
    with pytest.raises(DataError, match="ends inside the last vector"):
        read_seismic(tmp_path / "s", verify=False)


def test_seismic_indexes_built_from_the_export_find_the_exact_top10(tmp_path):
    ids, docs, qids, queries = _collection(seed=2, num_docs=400, num_queries=24)
    docs = docs.tolil()
    docs[0, :] = 0  # an all-zero document keeps its row
    docs = docs.tocsr()
    write_seismic(tmp_path / "s", ids, docs, queries=(qids, queries))
    exact = {qid: [ids[i] for i in _top10(docs, queries[row])] for row, qid in enumerate(qids)}
    build = {"n_postings": 10_000, "summary_energy": 1.0, "centroid_fraction": 0.2}
    search = {"k": 10, "query_cut": 1_000, "heap_factor": 0.1}

    # The JSONL form: SeismicIndex keeps the doc ids; components are term ids as strings.
    index = seismic.SeismicIndex.build(str(tmp_path / "s/documents.jsonl"), num_threads=1, **build)
    assert index.len == len(ids)
    string = seismic.get_seismic_string()
    _, _, read_qids, read_queries = read_seismic(tmp_path / "s", source="jsonl")
    components = [np.array([str(t) for t in r.indices], string) for r in read_queries]
    values = [r.data.astype(np.float32) for r in read_queries]
    results = index.batch_search(
        np.array(read_qids, string), components, values, num_threads=1, **search
    )
    found = {hits[0][0]: [doc for _, _, doc in hits] for hits in results if hits}

    # The binary form: SeismicIndexRaw answers rows, mapped to ids by doc_ids.npy.
    raw = seismic.SeismicIndexRaw.build(str(tmp_path / "s/documents.bin"), **build)
    assert raw.len == len(ids)
    doc_ids = np.load(tmp_path / "s/doc_ids.npy").tolist()
    rows = raw.batch_search(
        str(tmp_path / "s/queries.bin"),
        search["k"],
        search["query_cut"],
        search["heap_factor"],
        0,
        True,
        1,
    )
    found_raw = {qids[q]: [doc_ids[row] for _, row in hits] for q, hits in enumerate(rows)}

    for name, got in (("SeismicIndex", found), ("SeismicIndexRaw", found_raw)):
        recall = np.mean(
            [len(set(got.get(q, [])) & set(want)) / len(want) for q, want in exact.items()]
        )
        assert recall >= 0.9, (name, recall)
