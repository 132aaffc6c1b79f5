"""Multi-host corpus encoding (each process writes its own shards) and exact search that
merges per-host top-k, as local CPU "pods" of real processes (jax.distributed, gloo).

Each job is :class:`jaxir.distributed.LocalJob` running ``multihost_job.py``: ``jaxir
encode`` with the job flags from the environment, a corpus with a duplicate id, then
:class:`~jaxir.index.distributed_exact.DistributedExactSearcher` over the store. The
default lane runs one 2-process job (encode + search in one, resuming a store left as
a killed job leaves it); the 4-process job and a real SIGKILL-and-rerun are slow. The
merge itself is also checked in one process, against ``ExactSearcher``, with ties.
"""

import json
import os
import pathlib
import shutil
import sys

import numpy as np
import pytest
from flax import nnx

from jaxir import distributed
from jaxir.data.records import Document, write_corpus
from jaxir.encode import MANIFEST, encode_corpus, load_embeddings, load_encoder
from jaxir.index.distributed_exact import DistributedExactSearcher, merge_top_k, read_rows
from jaxir.index.exact import ExactSearcher
from jaxir.models import hf
from jaxir.models.bert import PRESETS, Model

ROOT = pathlib.Path(__file__).parents[2]
JOB = pathlib.Path(__file__).with_name("multihost_job.py")
ENV = {"JAX_COMPILATION_CACHE_DIR": str(ROOT / ".jax_cache")}
WORDS = ["cats", "dogs", "purr", "bark", "fish", "swim", "birds", "fly", "gene", "cell"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SHARD_SIZE, BATCH, MAX_LENGTH = 4, 4, 16
KS = (5, 30)  # 30 > the 22 documents: slots padded with -1 / -inf
ATOL = 1e-6


def make_docs(n: int, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [
        Document(f"d{i}", " ".join(rng.choice(WORDS, size=int(rng.integers(1, 12)))))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random BERT, a 22-document corpus, its single-process store and queries."""
    root = tmp_path_factory.mktemp("multihost")
    model = root / "model"
    hf.save_pretrained(Model(PRESETS["tiny"], rngs=nnx.Rngs(0)), model)
    (model / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n")
    write_corpus(make_docs(22), root / "corpus.jsonl")
    duplicated = make_docs(10, seed=1)
    duplicated[7] = Document("d1", "fish swim")  # shard 0 (process 0), shard 3 (process 1 or 3)
    write_corpus(duplicated, root / "duplicates.jsonl")
    encoder = load_encoder(model, pooling="mean", max_length=MAX_LENGTH)
    reference = encode_corpus(
        encoder,
        make_docs(22),
        root / "reference",
        shard_size=SHARD_SIZE,
        batch_size=BATCH,
        progress=False,
    )
    rng = np.random.default_rng(1)
    queries_qd = rng.standard_normal((6, reference.dim)).astype(np.float32)
    np.save(root / "queries.npy", queries_qd)
    return root, reference, queries_qd


def run_job(root: pathlib.Path, name: str, processes: int, *, store=None, **spec) -> pathlib.Path:
    """Runs ``multihost_job.py`` as one ``processes`` x 2-device job; returns its results dir."""
    work = root / name
    spec = {
        "model": str(root / "model"),
        "corpus": str(root / "corpus.jsonl"),
        "store": str(store or work / "store"),
        "results": str(work / "results"),
        "encode_args": [
            f"--shard-size={SHARD_SIZE}",
            f"--batch-size={BATCH}",
            f"--max-length={MAX_LENGTH}",
            "--pooling=mean",
        ],
        **spec,
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text(json.dumps(spec))
    command = [sys.executable, str(JOB), str(work / "spec.json")]
    with distributed.LocalJob(
        command, num_processes=processes, devices_per_process=2, log_dir=work / "logs", env=ENV
    ) as job:
        job.wait(timeout=300)
    return work / "results"


def assert_same_store(got, want):
    assert got.ids == want.ids
    np.testing.assert_allclose(got.vectors, want.vectors, atol=ATOL, rtol=0)
    assert got.manifest == want.manifest  # same shard files, counts, settings, complete


def assert_searches_match_one_process(results: pathlib.Path, store, queries_qd, processes: int):
    exact = ExactSearcher(store.vectors)
    for rank in range(processes):
        found = np.load(results / f"search-{rank}.npz")
        for k in KS:
            scores_qk, indices_qk = exact.search(queries_qd, k)
            np.testing.assert_array_equal(found[f"indices_{k}"], indices_qk)
            np.testing.assert_allclose(found[f"scores_{k}"], scores_qk, atol=ATOL, rtol=0)


def assert_duplicate_named_by_every_process(results: pathlib.Path, processes: int):
    for rank in range(processes):
        message = (results / f"duplicate-{rank}.txt").read_text()
        assert "documents #1 and #7 have the same id 'd1'" in message


def leave_as_killed(reference_dir: pathlib.Path, store: pathlib.Path) -> None:
    """``store`` as a killed 2-process job leaves it: the manifest lists no shard, process 1
    wrote shard 1 (kept on resume) and died writing shard 3 (vectors, no ids: redone); a
    stale shard 99 of a longer, older input lies there too (removed)."""
    store.mkdir(parents=True)
    manifest = json.loads((reference_dir / MANIFEST).read_text())
    manifest.update(count=0, complete=False, shards=[])
    (store / MANIFEST).write_text(json.dumps(manifest))
    for name in ("vectors-00001.npy", "ids-00001.txt", "vectors-00003.npy"):
        shutil.copy2(reference_dir / name, store / name)
    np.save(store / "vectors-00099.npy", np.zeros((1, 32), np.float32))
    (store / "ids-00099.txt").write_text("old\n")
    os.utime(store / "vectors-00003.npy", ns=(0, 0))


def test_two_processes_encode_one_store_and_search_it_exactly(setup):
    root, reference, queries_qd = setup
    store_dir = root / "2p" / "store"
    leave_as_killed(reference.path, store_dir)
    kept = (store_dir / "vectors-00001.npy").stat().st_mtime_ns
    results = run_job(
        root,
        "2p",
        2,
        store=store_dir,
        duplicates=str(root / "duplicates.jsonl"),
        queries=str(root / "queries.npy"),
        ks=list(KS),
    )
    store = load_embeddings(store_dir)
    assert_same_store(store, reference)
    assert (store_dir / "vectors-00001.npy").stat().st_mtime_ns == kept  # resumed, not redone
    assert (store_dir / "vectors-00003.npy").stat().st_mtime_ns > 0  # no ids: encoded again
    assert not list(store_dir.glob("*-00099.*"))
    assert_duplicate_named_by_every_process(results, 2)
    assert_searches_match_one_process(results, store, queries_qd, 2)
    log = (root / "2p" / "logs" / "process_0.out").read_text()
    assert "jaxir encode: 22 corpus texts" in log
    assert "jaxir encode" not in (root / "2p" / "logs" / "process_1.out").read_text()


@pytest.mark.slow
def test_four_processes_encode_one_store_and_search_it_exactly(setup):
    root, reference, queries_qd = setup
    results = run_job(
        root,
        "4p",
        4,
        duplicates=str(root / "duplicates.jsonl"),
        queries=str(root / "queries.npy"),
        ks=list(KS),
    )
    store = load_embeddings(root / "4p" / "store")
    assert_same_store(store, reference)
    assert_duplicate_named_by_every_process(results, 4)
    assert_searches_match_one_process(results, store, queries_qd, 4)


@pytest.mark.slow
def test_a_killed_job_resumes_and_equals_one_process(setup, tmp_path):
    root, _, _ = setup
    docs = make_docs(400, seed=2)
    write_corpus(docs, tmp_path / "corpus.jsonl")
    encoder = load_encoder(root / "model", pooling="mean", max_length=MAX_LENGTH)
    kwargs = {"shard_size": 8, "batch_size": BATCH}
    reference = encode_corpus(encoder, docs, tmp_path / "reference", progress=False, **kwargs)
    spec = {"corpus": str(tmp_path / "corpus.jsonl"), "encode_kwargs": kwargs}
    store = tmp_path / "store"
    with pytest.raises(distributed.ProcessFailedError, match="process 1 of 2 killed by SIGKILL"):
        run_job(root, "killed", 2, store=store, die_at=300, **spec)
    with pytest.raises(ValueError, match="incomplete"):
        load_embeddings(store)
    written = {p.name: p.stat().st_mtime_ns for p in store.glob("ids-*.txt")}
    first = _shards_written_by(root / "killed" / "results", 2)
    # Process 1 wrote its shards 1, 3, ..., 35, then died reading document 300 (shard 37).
    assert first[1] == set(range(1, 36, 2)) and all(i % 2 == 0 for i in first[0])
    assert set(written) == {f"ids-{i:05d}.txt" for i in first[0] | first[1]}
    run_job(root, "rerun", 2, store=store, die_at=-1, **spec)  # -1: nobody dies
    assert_same_store(load_embeddings(store), reference)
    assert all((store / name).stat().st_mtime_ns == t for name, t in written.items())
    # The rerun wrote only the missing shards, each process its own.
    again = _shards_written_by(root / "rerun" / "results", 2)
    assert all(i % 2 == rank for rank in (0, 1) for i in again[rank])
    assert again[0] | again[1] == set(range(50)) - first[0] - first[1]


def _shards_written_by(results: pathlib.Path, processes: int) -> list[set[int]]:
    """Per process, the shards whose id file it wrote (``multihost_job.py``'s log)."""
    logs = [results / f"written-{rank}.txt" for rank in range(processes)]
    return [
        {int(line[4:9]) for line in log.read_text().split()} if log.exists() else set()
        for log in logs
    ]


# --- the merge, in one process -----------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 2, 3, 5])
def test_merged_parts_equal_one_exact_search_with_ties(processes):
    rng = np.random.default_rng(0)
    docs_nd = rng.standard_normal((41, 16)).astype(np.float32)
    docs_nd /= np.linalg.norm(docs_nd, axis=1, keepdims=True)
    docs_nd[[3, 20, 38]] = docs_nd[7]  # exact ties across parts: lower rows first
    queries_qd = np.concatenate([docs_nd[[7]], rng.standard_normal((4, 16)).astype(np.float32)])
    parts = [
        DistributedExactSearcher.from_store(
            _store(docs_nd), process_index=i, process_count=processes
        )
        for i in range(processes)
    ]
    assert sum(p.local.num_docs for p in parts) == 41
    for k in (1, 4, 50):
        results = [p.local_search(queries_qd, k) for p in parts]
        scores_qk, indices_qk = merge_top_k(
            np.stack([r[0] for r in results]), np.stack([r[1] for r in results]), k
        )
        want_scores, want_indices = ExactSearcher(docs_nd).search(queries_qd, k)
        np.testing.assert_array_equal(indices_qk, want_indices)
        np.testing.assert_allclose(scores_qk, want_scores, atol=ATOL, rtol=0)
    assert indices_qk[0, :4].tolist() == [3, 7, 20, 38]


def _store(docs_nd: np.ndarray):
    """A stand-in for an EmbeddingStore of 3 shards (``read_rows`` reads ``shards``)."""
    from jaxir.encode import EmbeddingStore

    cuts = np.split(docs_nd, [10, 25])
    ids = [f"d{i}" for i in range(len(docs_nd))]
    return EmbeddingStore(pathlib.Path("."), {"dim": docs_nd.shape[1]}, ids, tuple(cuts))


def test_read_rows_spans_shards():
    docs_nd = np.arange(41 * 2, dtype=np.float32).reshape(41, 2)
    store = _store(docs_nd)
    for start, stop in [(0, 41), (8, 27), (10, 25), (12, 13), (30, 30)]:
        np.testing.assert_array_equal(read_rows(store, start, stop), docs_nd[start:stop])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"rows \[40, 42\) are not inside the corpus's 41"):
        DistributedExactSearcher(np.zeros((2, 4), np.float32), row_offset=40, num_docs=41)
    searcher = DistributedExactSearcher(np.zeros((2, 4), np.float32), row_offset=0, num_docs=2)
    with pytest.raises(ValueError, match=r"queries_qd must be \[Q, 4\]"):
        searcher.search(np.zeros((1, 3), np.float32), 1)
    with pytest.raises(ValueError, match=r"process_index=3 is outside \[0, 3\)"):
        DistributedExactSearcher.from_store(
            _store(np.zeros((5, 4), np.float32)), process_index=3, process_count=3
        )
