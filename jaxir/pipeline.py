"""The whole dense pipeline in one call: train -> encode -> index -> evaluate -> export.

``jaxir quickstart`` (and ``make quickstart``) runs this on the embedded synthetic
collection, so a fresh machine needs no downloads; ``data_path`` points it at any BEIR
directory instead. The result table compares BM25 (``bm25s``) with the trained dual
encoder on the test split.

Example (tiny settings, about a minute on CPU)::

    from jaxir.config import load_config
    from jaxir.pipeline import quickstart
    result = quickstart(load_config("configs/dense_tiny.py"), "runs/qs")
    print(result.table)
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np

from jaxir import config as config_lib
from jaxir import data as data_lib
from jaxir.encode import encode_corpus
from jaxir.eval.evaluate import evaluate, format_table
from jaxir.export import export_bundle, load_bundle
from jaxir.index.base import recall_against
from jaxir.index.exact import ExactSearcher
from jaxir.models.dual_encoder import load_dual_encoder
from jaxir.reps.contract import load_tower_tokenizer
from jaxir.search.retrieve import tower_encoders
from jaxir.training.loop import train

METRICS = ("nDCG@10", "RR@10", "R@100")

#: What ``jaxir quickstart`` runs without ``--config``: the embedded collection (documents
#: are <= 61 tokens, queries <= 31, so 64/32-token shapes waste no compute), the 2-layer
#: ``small`` encoder over a corpus WordPiece vocabulary, 150 steps of batch 32 with one
#: BM25 hard negative each. Kept in the package (not ``configs/``) so an installed jaxir
#: runs its quickstart from any directory.
QUICKSTART = config_lib.RunConfig(
    name="quickstart",
    data=config_lib.DataConfig(max_query_length=32, max_passage_length=64),
    train=config_lib.TrainConfig(steps=150, warmup_steps=15, eval_every=50, checkpoint_every=50),
)


@dataclasses.dataclass
class QuickstartResult:
    """Paths and numbers of a quickstart run."""

    workdir: pathlib.Path
    bundle: pathlib.Path
    scores: dict[str, dict[str, float]]
    scann_recall_at_10: float | None
    seconds: dict[str, float]
    table: str


def _index_recall(searcher, vectors: np.ndarray, k: int = 10, sample: int = 500) -> float:
    """ScaNN recall@10 against exact search, stored vectors as queries."""
    queries = vectors[
        np.random.default_rng(0).choice(len(vectors), min(sample, len(vectors)), replace=False)
    ]
    _, exact = ExactSearcher(vectors).search(queries, k)
    _, approx = searcher.search(queries, k)
    return recall_against(exact, approx)


def quickstart(
    config: config_lib.RunConfig, workdir: str | pathlib.Path, *, progress: bool = True
) -> QuickstartResult:
    """Trains, encodes, indexes, evaluates (BM25 vs dense) and exports a serving bundle.

    Returns a :class:`QuickstartResult`; ``result.table`` is the printed summary.
    """
    workdir = pathlib.Path(workdir)
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    trained = train(config, workdir, progress=progress)
    seconds["train"] = time.perf_counter() - tick

    tick = time.perf_counter()
    beir = trained.data_dir
    test = data_lib.load_beir(beir, config.data.eval_split, allow_empty_docs=True)
    model = load_dual_encoder(trained.model_dir)
    tokenizer = load_tower_tokenizer(trained.model_dir / "query")
    _, passage_encoder = tower_encoders(model, tokenizer)
    documents = data_lib.iter_corpus(beir)
    if config.index.split_documents:  # MaxP: rows are passages, several per document id
        documents = passage_encoder.passages(documents, stride=config.index.passage_stride)
    store = encode_corpus(
        passage_encoder,
        documents,
        workdir / "embeddings",
        progress=progress,
        total=None if config.index.split_documents else len(test.corpus),
    )
    seconds["encode"] = time.perf_counter() - tick

    tick = time.perf_counter()
    corpus_file = next(f for f in (beir / "corpus.jsonl", beir / "corpus.jsonl.gz") if f.exists())
    export = dict(index=config.index.kind, overwrite=True, corpus=corpus_file)
    bundle = export_bundle(trained.model_dir, store, workdir / "bundle", **export)
    served = load_bundle(bundle)
    seconds["index+export"] = time.perf_counter() - tick
    recall = None
    if config.index.kind == "scann":
        recall = _index_recall(served.searcher, np.asarray(store.vectors))

    tick = time.perf_counter()
    k = max(100, config.index.k)
    dense_run = served.search_run(test.queries, k=k)
    bm25_run = data_lib.bm25_search(test.corpus, test.queries, k=k)
    dense_scores = evaluate(dense_run, test.qrels, METRICS)
    scores = {
        "BM25 (bm25s)": evaluate(bm25_run, test.qrels, METRICS),
        f"jaxir dense ({config.index.kind})": dense_scores,
    }
    seconds["evaluate"] = time.perf_counter() - tick
    # Re-export so the bundle's manifest records the metrics it was evaluated at.
    export_bundle(trained.model_dir, store, bundle, metrics=dense_scores, **export)
    data_lib.write_trec_run(dense_run, workdir / "dense.trec")
    data_lib.write_trec_run(bm25_run, workdir / "bm25.trec", tag="bm25")

    lines = [
        f"Collection: {beir} ({len(test.corpus)} docs, {len(test.queries)} test queries)",
        format_table(scores),
        f"ScaNN recall@10 vs exact: {recall:.3f}" if recall is not None else "Index: exact",
        "Time: " + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items()),
        f"Serving bundle: {bundle}",
        f'Try it: jaxir search {bundle} "your question here"',
    ]
    return QuickstartResult(workdir, bundle, scores, recall, seconds, "\n".join(lines))
