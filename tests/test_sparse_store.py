"""The sparse store: write / shard / resume / read, duplicate ids, damage, dense-vs-sparse kinds."""

import json
import zlib

import numpy as np
import pytest
import scipy.sparse

from jaxir.data.records import Document
from jaxir.encode import load_embeddings
from jaxir.sparse_store import MANIFEST, encode_sparse_corpus, load_sparse_store

WORDS = ["cats", "dogs", "purr", "bark", "fish", "swim", "birds", "fly", "gene", "cell"]


class HashBag:
    """A deterministic toy sparse encoder: each word adds weight to its hashed term id."""

    def __init__(self, vocab_size=13, scale=1.0):
        self.vocab_size = vocab_size
        self.terms = [f"t{i}" for i in range(vocab_size)]
        self.scale = scale
        self.calls = []

    def describe(self):
        return {"kind": "hash-bag", "scale": self.scale, "terms": (0, self.vocab_size)}

    def encode(self, texts, *, batch_size=32, role="passage"):
        self.calls.append((len(texts), batch_size, role))
        rows, cols, vals = [], [], []
        for r, text in enumerate(texts):
            for word in text.split():
                rows.append(r)
                cols.append(zlib.crc32(word.encode()) % self.vocab_size)
                vals.append(self.scale * (1 + len(word) % 3))
        return scipy.sparse.csr_matrix(
            (np.array(vals, np.float32), (rows, cols)), shape=(len(texts), self.vocab_size)
        )


def make_docs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Document(f"d{i}", " ".join(rng.choice(WORDS, size=int(rng.integers(0, 8)))))
        for i in range(n)
    ]


def interrupted(docs, after):
    for i, doc in enumerate(docs):
        if i == after:
            raise RuntimeError("simulated interruption")
        yield doc


def test_round_trip_shards_and_manifest(tmp_path):
    docs = make_docs(11)
    encoder = HashBag()
    store = encode_sparse_corpus(
        encoder, docs, tmp_path, shard_size=4, batch_size=3, progress=False
    )
    want = HashBag().encode([d.full_text for d in docs])
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert (manifest["format"], manifest["version"], manifest["kind"]) == (
        "jaxir-sparse",
        1,
        "sparse",
    )
    assert (manifest["vocab_size"], manifest["count"], manifest["complete"]) == (13, 11, True)
    assert manifest["nnz"] == want.nnz == sum(s["nnz"] for s in manifest["shards"])
    assert [s["count"] for s in manifest["shards"]] == [4, 4, 3]
    assert manifest["shards"][1] == {
        "indptr": "indptr-00001.npy",
        "indices": "indices-00001.npy",
        "values": "values-00001.npy",
        "ids": "ids-00001.txt",
        "count": 4,
        "nnz": manifest["shards"][1]["nnz"],
    }
    assert manifest["encoder"] == {"kind": "hash-bag", "scale": 1.0, "terms": [0, 13]}
    assert manifest["terms"] == "terms.txt"
    assert (tmp_path / "terms.txt").read_text().splitlines() == encoder.terms
    assert np.load(tmp_path / "indptr-00000.npy").dtype == np.int64
    assert np.load(tmp_path / "indices-00000.npy").dtype == np.int32
    loaded = load_sparse_store(tmp_path)
    assert loaded.ids == [d.id for d in docs] == store.ids and len(loaded) == 11
    assert loaded.matrix.dtype == np.float32 and loaded.matrix.shape == (11, 13)
    np.testing.assert_array_equal(loaded.matrix.toarray(), want.toarray())
    assert loaded.terms == encoder.terms and loaded.vocab_size == 13 and loaded.nnz == want.nnz
    assert loaded.encoder == manifest["encoder"]
    assert all(call[1:] == (3, "passage") for call in encoder.calls)
    assert not list(tmp_path.glob(".*.tmp"))
    # An empty text is a valid, empty row.
    assert loaded.matrix[[i for i, d in enumerate(docs) if not d.text]].nnz == 0


def test_id_text_tuples_and_query_role(tmp_path):
    encoder = HashBag()
    store = encode_sparse_corpus(
        encoder, [("q1", "cats purr"), ("q2", "dogs")], tmp_path, role="query", progress=False
    )
    assert store.ids == ["q1", "q2"] and encoder.calls[-1][2] == "query"


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    docs = make_docs(11)
    kwargs = dict(shard_size=4, progress=False)
    reference = encode_sparse_corpus(HashBag(), docs, tmp_path / "ref", **kwargs)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated"):
        encode_sparse_corpus(HashBag(), interrupted(docs, 6), out, **kwargs)
    manifest = json.loads((out / MANIFEST).read_text())
    assert (manifest["complete"], manifest["count"], len(manifest["shards"])) == (False, 4, 1)
    with pytest.raises(ValueError, match=r"incomplete \(4 documents.*resume=True"):
        load_sparse_store(out)
    first = {f: (out / f"{f}-00000.npy").stat().st_mtime_ns for f in ("indptr", "values")}
    encoder = HashBag()
    resumed = encode_sparse_corpus(encoder, docs, out, resume=True, **kwargs)
    assert {f: (out / f"{f}-00000.npy").stat().st_mtime_ns for f in first} == first  # kept
    assert [c[0] for c in encoder.calls] == [4, 3]  # only the rest was encoded
    assert resumed.ids == reference.ids
    np.testing.assert_array_equal(resumed.matrix.toarray(), reference.matrix.toarray())
    assert resumed.manifest["shards"] == reference.manifest["shards"]
    assert resumed.manifest["nnz"] == reference.manifest["nnz"]
    # resume=False (the default) starts over and leaves no stale shard behind.
    again = encode_sparse_corpus(HashBag(), docs[:3], out, shard_size=10, progress=False)
    assert len(again) == 3 and sorted(p.name for p in out.glob("values-*")) == ["values-00000.npy"]


def test_resume_refuses_changed_input_encoder_or_vocabulary(tmp_path):
    docs = make_docs(6)
    with pytest.raises(RuntimeError):
        encode_sparse_corpus(
            HashBag(), interrupted(docs, 5), tmp_path, shard_size=2, progress=False
        )
    kwargs = dict(shard_size=2, resume=True, progress=False)
    changed = [Document("other", "cats"), *docs[1:]]
    with pytest.raises(ValueError, match=r"ids-00000.txt:1: stored id 'd0'.*'other'"):
        encode_sparse_corpus(HashBag(), changed, tmp_path, **kwargs)
    with pytest.raises(ValueError, match="more documents than the input"):
        encode_sparse_corpus(HashBag(), docs[:3], tmp_path, **kwargs)
    with pytest.raises(ValueError, match=r"encoded with .*'scale': 1\.0.*--no-resume"):
        encode_sparse_corpus(HashBag(scale=2.0), docs, tmp_path, **kwargs)
    other_vocab = HashBag()
    other_vocab.terms = [f"w{i}" for i in range(13)]
    with pytest.raises(ValueError, match=r"vocab_size\" / terms.txt differ"):
        encode_sparse_corpus(other_vocab, docs, tmp_path, **kwargs)
    (tmp_path / "values-00001.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"values-00001.npy: listed in .* missing"):
        encode_sparse_corpus(HashBag(), docs, tmp_path, **kwargs)


def test_duplicate_ids_are_rejected_with_both_positions(tmp_path):
    with pytest.raises(ValueError, match=r"documents #0 and #2 have the same id 'a'"):
        encode_sparse_corpus(
            HashBag(), [("a", "cats"), ("b", "dogs"), ("a", "fish")], tmp_path, progress=False
        )
    docs = [*make_docs(5), Document("d3", "gene")]
    with pytest.raises(ValueError, match=r"documents #3 and #5 have the same id 'd3'"):
        encode_sparse_corpus(HashBag(), docs, tmp_path, shard_size=2, progress=False)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert (manifest["complete"], manifest["count"]) == (False, 4)  # shards before it kept


def test_bad_documents_encoders_and_terms_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"document #1: id 'a\\nb'.*line breaks"):
        encode_sparse_corpus(
            HashBag(), [("ok", "cats"), ("a\nb", "dogs")], tmp_path, progress=False
        )
    with pytest.raises(ValueError, match="documents is empty"):
        encode_sparse_corpus(HashBag(), [], tmp_path, progress=False)

    class Dense(HashBag):
        def encode(self, texts, **kwargs):
            return super().encode(texts, **kwargs).toarray()

    with pytest.raises(TypeError, match=r"returned ndarray; a sparse store needs"):
        encode_sparse_corpus(Dense(), [("a", "cats")], tmp_path, progress=False)

    class Wide(HashBag):
        def encode(self, texts, **kwargs):
            return scipy.sparse.csr_matrix((len(texts), self.vocab_size + 1), dtype=np.float32)

    with pytest.raises(ValueError, match=r"shape \(1, 14\) for 1 texts; expected \(1, 13\)"):
        encode_sparse_corpus(Wide(), [("a", "cats")], tmp_path, progress=False)

    class Broken(HashBag):
        def encode(self, texts, **kwargs):
            m = super().encode(texts, **kwargs)
            m.data[-1] = np.nan
            return m

    with pytest.raises(ValueError, match=r"non-finite weight for document #2"):
        encode_sparse_corpus(
            Broken(), [("a", "cats"), ("b", "dogs"), ("c", "fish")], tmp_path, progress=False
        )
    newline = HashBag()
    newline.terms = [*newline.terms[:-1], "bad\nterm"]
    with pytest.raises(ValueError, match=r"encoder.terms\[12\] is 'bad\\nterm'"):
        encode_sparse_corpus(newline, [("a", "cats")], tmp_path, progress=False)
    short = HashBag()
    short.terms = short.terms[:5]
    with pytest.raises(ValueError, match="has 5 strings but encoder.vocab_size is 13"):
        encode_sparse_corpus(short, [("a", "cats")], tmp_path, progress=False)


def test_corrupted_store_errors_name_the_file_and_field(tmp_path):
    encode_sparse_corpus(HashBag(), make_docs(5), tmp_path, shard_size=2, progress=False)
    file = tmp_path / MANIFEST
    manifest = json.loads(file.read_text())

    def fails(change, error, match):
        file.write_text(change if isinstance(change, str) else json.dumps(change))
        with pytest.raises(error, match=match):
            load_sparse_store(tmp_path)
        file.write_text(json.dumps(manifest))

    fails('{"format": ', ValueError, r"manifest.json:1: invalid JSON")
    fails({**manifest, "version": 7}, ValueError, r'field "version" is 7')
    fails({k: v for k, v in manifest.items() if k != "nnz"}, ValueError, r'field "nnz" is missing')
    fails({**manifest, "count": 6}, ValueError, r'field "count" is 6 but its shards hold 5')
    fails({**manifest, "vocab_size": -1}, ValueError, r'field "vocab_size" must be a non-negative')
    shards = [dict(manifest["shards"][0], nnz=manifest["shards"][0]["nnz"] + 1)]
    fails(
        {**manifest, "shards": shards + manifest["shards"][1:]},
        ValueError,
        r"indices-00000.npy: holds int32 \(3,\).*\(shards\[0\].nnz\) expects int32 \(4,\)",
    )
    fails({**manifest, "shards": [{"indptr": "x"}]}, ValueError, r'field "shards\[0\]" lacks')
    fails({**manifest, "vocab_size": 12}, ValueError, r"terms.txt: has 13 terms.*\"vocab_size\"")
    assert load_sparse_store(tmp_path).vocab_size == 13

    indices = np.load(tmp_path / "indices-00001.npy")
    np.save(tmp_path / "indices-00001.npy", indices + 13)
    with pytest.raises(ValueError, match=r"indices-00001.npy: term ids must lie in \[0, 13\)"):
        load_sparse_store(tmp_path)
    np.save(tmp_path / "indices-00001.npy", indices)
    (tmp_path / "ids-00002.txt").write_text("")
    with pytest.raises(ValueError, match=r"ids-00002.txt: has 0 ids.*expects 1"):
        load_sparse_store(tmp_path)
    (tmp_path / "values-00002.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"values-00002.npy: listed in .* missing"):
        load_sparse_store(tmp_path)
    file.unlink()
    with pytest.raises(FileNotFoundError, match="no sparse store manifest"):
        load_sparse_store(tmp_path)


def test_dense_and_sparse_stores_refuse_each_other(tmp_path):
    # A dense embedding store as jaxir.encode writes it (checked: load_embeddings reads it).
    dense = tmp_path / "dense"
    dense.mkdir()
    np.save(dense / "vectors-00000.npy", np.ones((2, 4), np.float32))
    (dense / "ids-00000.txt").write_text("a\nb\n")
    manifest = {
        "format": "jaxir-embeddings",
        "version": 1,
        "kind": "dense",
        "dim": 4,
        "count": 2,
        "dtype": "float32",
        "complete": True,
        "shards": [{"vectors": "vectors-00000.npy", "ids": "ids-00000.txt", "count": 2}],
        "encoder": {},
    }
    (dense / MANIFEST).write_text(json.dumps(manifest))
    assert load_embeddings(dense).ids == ["a", "b"]
    with pytest.raises(
        ValueError,
        match=r"field \"format\" is 'jaxir-embeddings': this is a dense store, not a sparse one; "
        r"read it with jaxir.encode.load_embeddings\(\)",
    ):
        load_sparse_store(dense)
    sparse = tmp_path / "sparse"
    encode_sparse_corpus(HashBag(), make_docs(3), sparse, progress=False)
    with pytest.raises(
        ValueError,
        match=r"field \"format\" is 'jaxir-sparse': this is a sparse store, not a dense one; "
        r"read it with jaxir.sparse_store.load_sparse_store\(\)",
    ):
        load_embeddings(sparse)
    # A manifest of the right format but the other kind is named too.
    sparse_manifest = json.loads((sparse / MANIFEST).read_text())
    (sparse / MANIFEST).write_text(json.dumps({**sparse_manifest, "kind": "dense"}))
    with pytest.raises(ValueError, match=r"field \"kind\" is 'dense'.*load_embeddings\(\)"):
        load_sparse_store(sparse)
