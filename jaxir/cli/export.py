"""Package a trained retriever for serving: a jaxir bundle, or Anserini / Seismic input.

Input: a model directory (a dual encoder: query/ [+ passage/] Hugging Face towers; or a
SPLADE model: jaxir_splade.json), or a `jaxir train` workdir, in which case
WORKDIR/model is the model and WORKDIR/store (or WORKDIR/embeddings, where earlier
jaxir versions put it) the default document store (pass --embeddings if yours differs).
The store, written by `jaxir encode` with the model's document side, must use the
model's settings (dense: pooling and normalization; sparse: the same vocabulary).

--format bundle (default) writes a serving bundle for `jaxir search`:

  OUT/manifest.json    format + bundle version, jaxir version, creation time, encoder
                       contract, kind (dense / sparse), index kind, num_docs, dim,
                       metrics, every file with its size and SHA-256 (checked on load)
  OUT/query_encoder/   dense: the query tower + tokenizer + jaxir_encoder.json;
                       sparse: the SPLADE model (jaxir_splade.json, head, tokenizer)
  OUT/index/           dense: ScaNN (default) or exact; sparse: the inverted index
  OUT/doc_ids.txt      one document id a line, in index row order
  OUT/corpus.jsonl     only with --corpus: lets `jaxir search` print document text

A bundle from another bundle format version, or with a missing or modified file, is
refused with the file named; one from another jaxir version of the same format loads
with a warning.

--format hf copies the model's plain dense Hugging Face weights (what jaxir saves:
LoRA / SLTrain projections merged) without jaxir's contract files.

--format anserini and --format seismic (SPLADE models) write the store's documents,
and the queries of --queries (default: the run's training collection, config.json's
data.path; --split keeps the queries judged in that split) encoded by the model's
query side, as an Anserini JsonVectorCollection with integer impacts (--quantization)
or as Seismic's binary + JSONL input (jaxir.sparse_export has the layouts and the
Anserini / Pyserini / Seismic commands that read them).

Examples:
  jaxir export runs/d1 --out bundles/d1 --corpus ../shared/data/scifact/corpus.jsonl.gz
  jaxir export runs/d1/model --embeddings emb/scifact --out bundles/d1 --index exact
  jaxir export runs/s1 --out bundles/s1                      # SPLADE: inverted index
  jaxir export runs/s1 --format anserini --out anserini/ --split test
  jaxir export runs/s1 --format seismic --out seismic/
  jaxir export runs/l1 --format hf --out merged/   # LoRA / SLTrain merged: plain HF weights
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

HELP = "package a model + store as a serving bundle, or as Anserini / Seismic input"

FORMATS = ("bundle", "anserini", "seismic", "hf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir export``."""
    parser.add_argument(
        "model",
        type=pathlib.Path,
        metavar="RUN_OR_MODEL_DIR",
        help="dual-encoder or SPLADE model directory, or a train workdir holding model/",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="bundle",
        help="bundle (jaxir search), anserini (JsonVectorCollection + query TSV), seismic "
        "(SPLADE models only for these two) or hf (the model's plain dense Hugging Face "
        "weights, LoRA / SLTrain merged) (default: %(default)s)",
    )
    parser.add_argument(
        "--embeddings",
        type=pathlib.Path,
        metavar="DIR",
        help="document store (default: WORKDIR/store, else WORKDIR/embeddings)",
    )
    parser.add_argument(
        "--out", required=True, type=pathlib.Path, metavar="DIR", help="output directory"
    )
    parser.add_argument(
        "--index",
        default=None,
        help="bundle searcher: dense scann (default; approximate) or exact (on device); "
        "sparse inverted (default)",
    )
    parser.add_argument(
        "--corpus",
        type=pathlib.Path,
        metavar="FILE",
        help="corpus.jsonl[.gz] to include, so search results show document text",
    )
    parser.add_argument(
        "--metrics",
        type=pathlib.Path,
        metavar="FILE",
        help='JSON file {"nDCG@10": 0.61, ...} (or {system: {metric: value}}: the first '
        "system) to record in the manifest",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier export of this format at --out"
    )
    sparse = parser.add_argument_group("anserini / seismic")
    sparse.add_argument(
        "--queries",
        type=pathlib.Path,
        metavar="PATH",
        help="BEIR directory or queries.jsonl[.gz] whose queries are exported (default: the "
        "run's config.json data.path)",
    )
    sparse.add_argument(
        "--split", default=None, help="only the queries judged in PATH/qrels/SPLIT.tsv"
    )
    sparse.add_argument("--no-queries", action="store_true", help="export the documents only")
    sparse.add_argument(
        "--quantization",
        type=float,
        default=100.0,
        help="anserini: impact = round(weight * QUANTIZATION) (default: %(default)s)",
    )


def resolve_inputs(model: pathlib.Path, embeddings: pathlib.Path | None):
    """``(TrainedModel, store dir)``: a train workdir's ``model/`` and ``store/`` as defaults."""
    from jaxir.eval.model_eval import find_model

    found = find_model(model)
    if embeddings is None and found.run_dir is not None:
        candidates = [found.run_dir / "store", found.run_dir / "embeddings"]
        embeddings = next((d for d in candidates if (d / "manifest.json").is_file()), None)
    if embeddings is None:
        raise ValueError(
            f"--embeddings is required: no document store in {model} (looked for store/ and "
            "embeddings/ in a train workdir); encode the corpus first "
            f"(jaxir encode --model {model} --data DATA --out DIR)"
        )
    if not (embeddings / "manifest.json").is_file():
        raise FileNotFoundError(
            f"{embeddings / 'manifest.json'}: no store there; write one with `jaxir encode` "
            "(or pass --embeddings)"
        )
    return found, embeddings


def _export_queries(args: argparse.Namespace, found) -> tuple[list[str], list[str]] | None:
    """``(query ids, texts)`` to export with the documents, or ``None`` (--no-queries)."""
    import json

    from jaxir.data.records import load_qrels, load_queries
    from jaxir.search.retrieve import query_texts

    if args.no_queries:
        return None
    source = args.queries
    if source is None and found.run_dir is not None and (found.run_dir / "config.json").is_file():
        path = json.loads((found.run_dir / "config.json").read_text()).get("data", {}).get("path")
        source = pathlib.Path(path) if path else None
    if source is None:
        raise ValueError(
            "no queries to export: pass --queries DATA (a BEIR directory or queries.jsonl), "
            "or --no-queries for the documents only"
        )
    queries = load_queries(source)
    if args.split is not None:
        if not source.is_dir():
            raise ValueError(f"--split needs --queries to be a BEIR directory, got {source}")
        judged = load_qrels(source / "qrels" / f"{args.split}.tsv")
        queries = {qid: q for qid, q in queries.items() if qid in judged}
    return query_texts(queries)


def _run_sparse_format(args: argparse.Namespace, found, embeddings: pathlib.Path) -> int:
    """``--format anserini|seismic``: the sparse store (+ encoded queries) in that layout."""
    from jaxir.sparse_export import write_anserini, write_seismic
    from jaxir.store_files import load_store

    if found.kind != "sparse":
        raise ValueError(
            f"--format {args.format} exports learned sparse vectors; {found.model_dir} is a "
            f"{found.kind} model (use --format bundle)"
        )
    start = time.perf_counter()
    store = load_store(embeddings)
    if store.manifest.get("kind") != "sparse":
        raise ValueError(f"{embeddings}: a dense store; --format {args.format} needs a sparse one")
    selected = _export_queries(args, found)
    queries = None
    if selected is not None:
        ids, texts = selected
        queries = (ids, found.query_encoder().encode(texts))
    if args.format == "anserini":
        manifest = write_anserini(
            args.out,
            store.ids,
            store.matrix,
            store.terms,
            queries=queries,
            quantization=args.quantization,
            overwrite=args.overwrite,
        )
    else:
        manifest = write_seismic(
            args.out,
            store.ids,
            store.matrix,
            queries=queries,
            terms=store.terms,
            overwrite=args.overwrite,
        )
    held = "no queries" if queries is None else f"{len(queries[0])} queries"
    print(
        f"jaxir export: {found.model_dir} + {embeddings} -> {args.out} ({args.format})\n"
        f"  {len(store)} documents, {held}, {time.perf_counter() - start:.1f} s; "
        f"manifest {manifest.name}"
    )
    return 0


def _read_metrics(path: pathlib.Path | None) -> dict[str, float] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if data and all(isinstance(v, dict) for v in data.values()):
        data = next(iter(data.values()))
    if not isinstance(data, dict) or not all(isinstance(v, int | float) for v in data.values()):
        raise ValueError(f'{path}: expected a JSON object of numbers like {{"nDCG@10": 0.61}}')
    return data


def _run_hf(args: argparse.Namespace) -> int:
    """``--format hf``: the model's Hugging Face directories, jaxir's own files left out.

    A saved model already holds merged plain dense weights (``save_pretrained`` merges
    LoRA / SLTrain projections), so this copies them: a dual encoder's tower (``OUT`` for
    a tied model, ``OUT/query`` + ``OUT/passage`` otherwise), a SPLADE model's document
    ``*ForMaskedLM`` directory; each loads with ``transformers``' ``from_pretrained``.
    """
    import shutil

    from jaxir.data.tokenizer import CONTRACT_FILE as TOKENIZER_CONTRACT
    from jaxir.eval.model_eval import find_model
    from jaxir.models.dual_encoder import load_spec
    from jaxir.models.splade import CONTRACT_FILE as SPLADE_CONTRACT
    from jaxir.reps.contract import CONTRACT_FILE

    found = find_model(args.model)
    if args.out.exists() and any(args.out.iterdir()):
        if not args.overwrite:
            raise ValueError(f"{args.out}: exists and is not empty; choose a new directory")
        shutil.rmtree(args.out)
    jaxir_files = shutil.ignore_patterns(CONTRACT_FILE, TOKENIZER_CONTRACT, SPLADE_CONTRACT)
    if found.kind == "sparse":
        towers = {"": found.model_dir}
        jaxir_files = shutil.ignore_patterns(
            CONTRACT_FILE, TOKENIZER_CONTRACT, SPLADE_CONTRACT, "query", "query_weights.npy"
        )
    elif load_spec(found.model_dir).tied:
        towers = {"": found.model_dir / "query"}
    else:
        towers = {name: found.model_dir / name for name in ("query", "passage")}
    for name, tower in towers.items():
        shutil.copytree(tower, args.out / name, ignore=jaxir_files, dirs_exist_ok=True)
    print(
        f"jaxir export: {found.model_dir} -> {args.out} (hf: "
        f"{', '.join(n or 'one tower' for n in towers)}); load with "
        "transformers.AutoModel.from_pretrained"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    """Writes the bundle (or the Anserini / Seismic / Hugging Face export) and prints what it holds."""
    from jaxir.export import export_bundle

    only_sparse = {
        "--queries": args.queries,
        "--split": args.split,
        "--no-queries": args.no_queries or None,
    }
    given = [flag for flag, value in only_sparse.items() if value is not None]
    if args.format in ("bundle", "hf") and given:
        raise ValueError(f"{', '.join(given)}: only for --format anserini or seismic")
    if args.format != "bundle" and args.index is not None:
        raise ValueError(f"--index: only for --format bundle (not {args.format})")
    if args.format == "hf":
        store_flags = {
            "--embeddings": args.embeddings,
            "--corpus": args.corpus,
            "--metrics": args.metrics,
        }
        extra = [flag for flag, value in store_flags.items() if value is not None]
        if extra:
            raise ValueError(f"{', '.join(extra)}: not for --format hf (it exports the model only)")
        return _run_hf(args)
    found, embeddings = resolve_inputs(args.model, args.embeddings)
    if args.format != "bundle":
        return _run_sparse_format(args, found, embeddings)
    start = time.perf_counter()
    out = export_bundle(
        found.model_dir,
        embeddings,
        args.out,
        index=args.index,
        metrics=_read_metrics(args.metrics),
        corpus=args.corpus,
        overwrite=args.overwrite,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    size = sum(f["size"] for f in manifest["files"])
    print(
        f"jaxir export: {found.model_dir} + {embeddings} -> {out}\n"
        f"  {manifest['num_docs']} documents, {manifest['kind']}, dim {manifest['dim']}, "
        f"{manifest['index']['kind']} index, {len(manifest['files'])} files, "
        f"{size / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s\n"
        f'  try: jaxir search {out} "your query"'
    )
    return 0
