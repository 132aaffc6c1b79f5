"""Evaluate a trained retriever (a model directory or its training run) on a BEIR split.

:func:`evaluate_model` is what ``jaxir evaluate RUN_DIR --data DATA --split test`` runs,
for a dense dual encoder and a SPLADE model alike (the kind is read from the model
directory: ``query/jaxir_encoder.json`` or ``jaxir_splade.json``):

1. **documents**: the store given, else ``RUN_DIR/store`` (what ``jaxir encode ... --out
   RUN_DIR/store`` writes); a missing or incomplete store is encoded (resumably) with the
   model's document side first. A store with no run directory to live in goes to a
   temporary directory. A dense run whose ``config.json`` splits documents
   (``index.split_documents``) is encoded as passages and scored MaxP.
2. **searcher**: the one given, else ``RUN_DIR/index`` when it exists (``jaxir index``),
   else exact search: on device for dense vectors, the inverted index over the
   store's float32 weights for sparse ones (its exact mode is the exhaustive top-k).
3. **queries**: those judged in ``DATA/qrels/SPLIT.tsv``, encoded by the model's query
   side, searched to depth ``k``, scored by :func:`jaxir.eval.evaluate`.

For sparse models the result also holds :func:`jaxir.eval.sparsity.sparsity_stats`:
average non-zeros per query and per document and the FLOPS of the pair.

:func:`evaluate_bm25` scores the BM25 baseline the same way (``jaxir evaluate --bm25``),
so its run can be fused with the models' (``jaxir fuse``).

Example (a run directory written by ``jaxir train``)::

    from jaxir.eval.model_eval import evaluate_model
    result = evaluate_model("runs/s1", "../shared/data/scifact", "test")
    result.metrics["nDCG@10"], result.stats["query_nnz"]
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
from collections.abc import Sequence
from typing import Any

from jaxir.data.records import load_beir
from jaxir.data.runs import Run
from jaxir.eval.evaluate import evaluate
from jaxir.eval.sparsity import sparsity_stats
from jaxir.index import Searcher, build_searcher, load_searcher
from jaxir.models.dual_encoder import is_dual_encoder_dir, tower_dir
from jaxir.models.splade import is_splade_dir
from jaxir.search.retrieve import query_texts, retrieve

__all__ = ["ModelEvaluation", "TrainedModel", "evaluate_bm25", "evaluate_model", "find_model"]

PathLike = str | os.PathLike[str]

DEFAULT_METRICS = ("nDCG@10", "RR@10", "R@100")


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A saved retriever: its kind (``"dense"`` / ``"sparse"``), directory and run directory.

    ``run_dir`` is the training workdir holding ``model/`` (``None`` when a model
    directory was given directly).
    """

    kind: str
    model_dir: pathlib.Path
    run_dir: pathlib.Path | None

    def query_encoder(self) -> Any:
        """The model's query side: a ``TextEncoder`` (dense) or ``SparseEncoder`` (role query)."""
        return self._encoder("query")

    def document_encoder(self) -> Any:
        """The model's document side, as :meth:`query_encoder`."""
        return self._encoder("passage")

    def _encoder(self, role: str) -> Any:
        if self.kind == "sparse":
            from jaxir.sparse_encode import load_splade

            return load_splade(self.model_dir, role=role)
        from jaxir.encode import load_encoder

        return load_encoder(tower_dir(self.model_dir, role), role=role)


def find_model(path: PathLike) -> TrainedModel:
    """The retriever saved at ``path``, or in ``path/model`` (a ``jaxir train`` workdir).

    Raises:
      FileNotFoundError: neither holds a dual encoder or a SPLADE model.
    """
    root = pathlib.Path(path)
    for directory in (root, root / "model"):
        run_dir = root if directory != root else None
        if is_splade_dir(directory):
            return TrainedModel("sparse", directory, run_dir)
        if is_dual_encoder_dir(directory):
            return TrainedModel("dense", directory, run_dir)
    raise FileNotFoundError(
        f"{root}: no retriever here nor in {root / 'model'} (a dual encoder has "
        "query/jaxir_encoder.json, a SPLADE model jaxir_splade.json); pass a model "
        "directory or the workdir of `jaxir train`"
    )


@dataclasses.dataclass
class ModelEvaluation:
    """What :func:`evaluate_model` measured.

    Attributes:
      kind: ``"dense"``, ``"sparse"`` or ``"bm25"``.
      metrics: ``{measure: mean over the split's queries}``.
      stats: sparse models: ``query_nnz``, ``document_nnz``, ``flops``; dense: empty.
      run: the ``{query_id: {doc_id: score}}`` that was scored.
      store: the document store directory searched (``None`` for BM25).
      searcher: a description of the searcher (``"inverted (RUN/index)"``, ...).
    """

    kind: str
    metrics: dict[str, float]
    stats: dict[str, float]
    run: Run
    store: pathlib.Path | None
    searcher: str


def _split_documents(run_dir: pathlib.Path | None) -> tuple[bool, int]:
    """A dense run's ``index.split_documents`` and ``index.passage_stride`` (config.json)."""
    file = None if run_dir is None else run_dir / "config.json"
    if file is None or not file.is_file():
        return False, 0
    index = json.loads(file.read_text(encoding="utf-8")).get("index", {})
    return bool(index.get("split_documents", False)), int(index.get("passage_stride", 0))


def _open_store(model: TrainedModel, corpus: dict, directory: pathlib.Path, progress: bool) -> Any:
    """The document store at ``directory``, encoding (or finishing) it first when needed."""
    from jaxir.store_files import MANIFEST, load_store

    manifest = directory / MANIFEST
    complete = manifest.is_file() and json.loads(manifest.read_text()).get("complete", False)
    if not complete:
        if progress:
            print(f"Encoding {len(corpus)} documents into {directory} ...")
        encoder = model.document_encoder()
        if model.kind == "sparse":
            from jaxir.sparse_store import encode_sparse_corpus

            encode_sparse_corpus(encoder, corpus.values(), directory, progress=progress)
        else:
            from jaxir.encode import encode_corpus

            split, stride = _split_documents(model.run_dir)
            docs = encoder.passages(corpus.values(), stride=stride) if split else corpus.values()
            encode_corpus(encoder, docs, directory, progress=progress)
    store = load_store(directory)
    kind = store.manifest.get("kind", "dense")
    if kind != model.kind:
        raise ValueError(
            f"{directory / MANIFEST}: a {kind} store for a {model.kind} model "
            f"({model.model_dir}); pass the store this model encoded"
        )
    return store


def _searcher(store: Any, index: pathlib.Path | None) -> tuple[Searcher, str]:
    if index is not None:
        searcher = load_searcher(index)
        if searcher.num_docs != len(store):
            raise ValueError(
                f"{index}: the searcher holds {searcher.num_docs} documents but {store.path} "
                f"{len(store)}; pass the index built from this store (jaxir index STORE ...)"
            )
        return searcher, f"{type(searcher).__name__} ({index})"
    if store.manifest.get("kind", "dense") == "sparse":
        return build_searcher("inverted", store.matrix, quantize=False), "exact (inverted, float32)"
    return build_searcher("exact", store.vectors), "exact (on device)"


def _check_documents(store: Any, qrels: dict, data: pathlib.Path) -> None:
    """Raises unless the store holds every document the qrels judge (same collection)."""
    held = set(store.ids)
    missing = sorted({d for docs in qrels.values() for d in docs} - held)
    if missing:
        raise ValueError(
            f"{store.path}: {len(missing)} documents judged in {data}'s qrels are not in the "
            f"store (e.g. {missing[:3]}); it was encoded from another corpus. Encode "
            f"{data} (jaxir encode --model MODEL --data {data} --out DIR) or pass its store"
        )


def _check_query_side(store: Any, encoder: Any, model: TrainedModel) -> None:
    """Raises when the model's queries would not be encoded the way the store's documents were."""
    where = store.path / "manifest.json"
    if model.kind == "sparse":
        if store.vocab_size != encoder.vocab_size:
            raise ValueError(
                f'{where}: field "vocab_size" is {store.vocab_size} but {model.model_dir} has '
                f"{encoder.vocab_size} terms; pass the store this model encoded"
            )
        return
    for name in ("pooling", "normalize"):
        if store.manifest["encoder"].get(name) != getattr(encoder, name):
            raise ValueError(
                f'{where}: field "encoder.{name}" is {store.manifest["encoder"].get(name)!r} '
                f"but {model.model_dir} encodes queries with {getattr(encoder, name)!r}; pass "
                "the store this model encoded"
            )


def evaluate_model(
    path: PathLike,
    data: PathLike,
    split: str = "test",
    *,
    store: PathLike | None = None,
    index: PathLike | None = None,
    k: int = 100,
    metrics: Sequence[str] = DEFAULT_METRICS,
    progress: bool = True,
) -> ModelEvaluation:
    """Search the queries of ``data``'s ``split`` with a saved retriever and score the run.

    Args:
      path: a dual-encoder or SPLADE model directory, or a ``jaxir train`` workdir
        holding one in ``model/``.
      data: a BEIR directory (``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``,
        ``qrels/SPLIT.tsv``).
      split: the qrels split whose queries are searched and scored.
      store: the document store (default ``RUN_DIR/store``; encoded when missing).
      index: a saved searcher over that store (default ``RUN_DIR/index`` when it
        exists, else exact search).
      k: documents retrieved per query (the deepest cutoff of ``metrics`` should not
        exceed it).
      metrics: ir_measures names.
      progress: progress bars and a line per phase.

    Returns:
      A :class:`ModelEvaluation`.

    Raises:
      FileNotFoundError: no model at ``path``; DataError: a missing split or qrels ids
      unknown to the collection; ValueError: a store of another kind or collection, or
      an index of another store.
    """
    model = find_model(path)
    data = pathlib.Path(data)
    beir = load_beir(data, split)
    temporary = None
    if store is not None:
        store_dir = pathlib.Path(store)
    elif model.run_dir is not None:
        store_dir = model.run_dir / "store"
    else:
        temporary = tempfile.TemporaryDirectory(prefix="jaxir-eval-store-")
        store_dir = pathlib.Path(temporary.name)
    try:
        docs = _open_store(model, beir.corpus, store_dir, progress)
        _check_documents(docs, beir.qrels, data)
        if index is None and model.run_dir is not None and (model.run_dir / "index").is_dir():
            index = model.run_dir / "index"
        searcher, described = _searcher(docs, None if index is None else pathlib.Path(index))
        encoder = model.query_encoder()
        _check_query_side(docs, encoder, model)
        if progress:
            print(f"Searching {len(beir.queries)} {split} queries ({described}) ...")
        run = retrieve(encoder, searcher, docs.ids, beir.queries, k)
        stats = {}
        if model.kind == "sparse":
            _, texts = query_texts(beir.queries)
            stats = sparsity_stats(encoder.encode(texts), docs.matrix)
        scores = evaluate(run, beir.qrels, metrics)
    finally:
        if temporary is not None:
            temporary.cleanup()
    return ModelEvaluation(model.kind, scores, stats, run, store_dir, described)


def evaluate_bm25(
    data: PathLike,
    split: str = "test",
    *,
    k: int = 100,
    metrics: Sequence[str] = DEFAULT_METRICS,
    progress: bool = True,
) -> ModelEvaluation:
    """The BM25 baseline on ``data``'s ``split``, scored like :func:`evaluate_model`.

    BM25 is :func:`jaxir.data.bm25_search` (bm25s, English stopwords, Snowball stemming:
    the index ``jaxir mine`` draws hard negatives from) over the whole corpus, searched
    to depth ``k`` with each judged query's text.

    Args:
      data: a BEIR directory.
      split: a qrels split name, or a qrels TSV path (see :func:`jaxir.data.load_beir`).
      k: documents retrieved per query.
      metrics: ir_measures names.
      progress: a line per phase.

    Returns:
      A :class:`ModelEvaluation` of kind ``"bm25"`` (no store, no stats).

    Example::

        >>> import tempfile
        >>> from jaxir.data.synthetic import write_collection
        >>> d = write_collection(tempfile.mkdtemp(), num_topics=20, num_train_queries=10,
        ...                      num_test_queries=10)
        >>> result = evaluate_bm25(d, "test", progress=False)
        >>> result.kind, sorted(result.metrics), len(result.run)
        ('bm25', ['R@100', 'RR@10', 'nDCG@10'], 10)
    """
    from jaxir.data.negatives import bm25_search

    beir = load_beir(pathlib.Path(data), split)
    if progress:
        print(f"BM25 over {len(beir.corpus)} documents, {len(beir.queries)} {split} queries ...")
    run = bm25_search(beir.corpus, beir.queries, k)
    searcher = "bm25s (stopwords, Snowball stemming)"
    return ModelEvaluation("bm25", evaluate(run, beir.qrels, metrics), {}, run, None, searcher)
