"""Search a serving bundle interactively, or a whole query file into a TREC run.

Interactive: embeds each QUERY with the bundle's query encoder, searches its index and
prints the ranked document ids with their scores, plus the first 80 characters of each
document when the bundle holds a corpus file (or one is given with --corpus).

Batch: with --queries FILE (BEIR queries.jsonl[.gz] or a BEIR directory) and --out
RUN, every query is searched and the run is written as a 6-column TREC file
(query_id Q0 doc_id rank score tag) for `jaxir evaluate`. --qrels restricts the
queries to those judged in a qrels file (e.g. the test split). The searcher comes
from a BUNDLE, or from the parts:
  --model DIR       a dual-encoder directory or a tower directory (its query role's
                    contract, jaxir_encoder.json, is used), or a plain Hugging Face
                    encoder directory (pooling, normalization and max length then come
                    from the embedding store's manifest); for a sparse store, the SPLADE
                    model or its training run
  --index DIR       a saved searcher (`jaxir index`)
  --embeddings DIR  the store the index was built from (for the doc ids)

Hybrid: with --fuse rrf|convex, every leading BUNDLE directory is searched (its top
--fuse-depth documents) and the lists are fused per query (jaxir.search.fusion, the
same functions as `jaxir fuse`; bundles are named by their directory names in
--fuse-weights). The bundles must index the same collection.

Examples:
  jaxir search --fuse rrf bundles/dense bundles/splade "what causes cramps" -k 5
  jaxir search bundles/dense bundles/splade --fuse convex --fuse-weights dense=0.6,splade=0.4 \\
      --queries ../shared/data/scifact --qrels ../shared/data/scifact/qrels/test.tsv \\
      --out runs/hybrid.trec
  jaxir search bundles/d1 "what causes muscle cramps" "aspirin and heart attacks" -k 5
  jaxir search bundles/d1 --queries ../shared/data/scifact --qrels \\
      ../shared/data/scifact/qrels/test.tsv --out runs/d1.trec
  jaxir search --model runs/d1/model --index index/ --embeddings emb/ \\
      --queries queries.jsonl --out run.trec
"""

from __future__ import annotations

import argparse
import pathlib
import time

from jaxir.cli.fuse import parse_weights

HELP = "query a bundle (ranked ids + scores) or write a TREC run for a query file"

TEXT_CHARS = 80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir search``."""
    parser.add_argument(
        "bundle",
        nargs="?",
        type=pathlib.Path,
        metavar="BUNDLE",
        help="bundle directory written by `jaxir export` (omit with --model/--index)",
    )
    parser.add_argument("texts", nargs="*", metavar="QUERY", help="query texts to search")
    parser.add_argument(
        "-k", type=int, default=10, help="documents per query (default: %(default)s)"
    )
    parser.add_argument(
        "--corpus",
        type=pathlib.Path,
        metavar="PATH",
        help="corpus.jsonl[.gz] or BEIR directory, to print document text "
        "(default: the bundle's corpus, if any)",
    )
    batch = parser.add_argument_group("batch mode (writes a TREC run)")
    batch.add_argument(
        "--queries", type=pathlib.Path, metavar="FILE", help="queries.jsonl[.gz] or BEIR dir"
    )
    batch.add_argument(
        "--qrels", type=pathlib.Path, metavar="FILE", help="search only queries judged here"
    )
    batch.add_argument("--out", type=pathlib.Path, metavar="RUN", help="TREC run file to write")
    batch.add_argument("--tag", default="jaxir", help="run name in column 6 (default: %(default)s)")
    batch.add_argument(
        "--batch-size",
        type=int,
        default=1024,
        help="queries per search step (default: %(default)s)",
    )
    hybrid = parser.add_argument_group("hybrid search over several bundles (BUNDLE BUNDLE ...)")
    hybrid.add_argument(
        "--fuse",
        choices=("rrf", "convex"),
        help="fuse the results of every leading BUNDLE argument by this method",
    )
    hybrid.add_argument(
        "--fuse-weights",
        type=parse_weights,
        metavar="NAME=W,...",
        help="one weight per bundle, named by its directory name (default: equal; "
        "e.g. the weights `jaxir fuse --tune-on` chose)",
    )
    hybrid.add_argument(
        "--fuse-k", type=float, default=60, help="RRF's constant (default: %(default)s)"
    )
    hybrid.add_argument(
        "--fuse-normalization",
        choices=("minmax", "zscore", "none"),
        default="minmax",
        help="convex score normalization (default: %(default)s)",
    )
    hybrid.add_argument(
        "--fuse-depth",
        type=int,
        default=100,
        help="documents taken from each bundle per query, at least -k (default: %(default)s)",
    )
    parts = parser.add_argument_group("searcher from parts (instead of BUNDLE)")
    parts.add_argument("--model", type=pathlib.Path, metavar="DIR", help="model directory")
    parts.add_argument("--index", type=pathlib.Path, metavar="DIR", help="saved searcher")
    parts.add_argument("--embeddings", type=pathlib.Path, metavar="DIR", help="embedding store")


def _encoder_from_model(model: pathlib.Path, store: pathlib.Path, store_settings: dict):
    """Query TextEncoder of a dual-encoder, tower or plain Hugging Face directory."""
    from jaxir.encode import load_encoder
    from jaxir.models.dual_encoder import is_dual_encoder_dir
    from jaxir.reps.contract import read_contract

    if is_dual_encoder_dir(model):
        model = model / "query"
    if read_contract(model) is None:  # documents' settings; queries get no prefix
        return load_encoder(
            model,
            pooling=store_settings["pooling"],
            normalize=store_settings["normalize"],
            max_length=store_settings["max_length"],
        )
    encoder = load_encoder(model, role="query")
    for name in ("pooling", "normalize"):
        if store_settings.get(name) != getattr(encoder, name):
            raise ValueError(
                f'{store / "manifest.json"}: field "encoder.{name}" is '
                f"{store_settings.get(name)!r} but {model} encodes queries with "
                f"{getattr(encoder, name)!r}; pass the embeddings this model encoded"
            )
    return encoder


def _open(args: argparse.Namespace):
    """``(search_run(queries, k) function, corpus path or None)`` from a bundle or the parts."""
    parts = {"--model": args.model, "--index": args.index, "--embeddings": args.embeddings}
    if args.bundle is not None:
        given = [name for name, value in parts.items() if value is not None]
        if given:
            raise ValueError(f"give a BUNDLE or {', '.join(parts)}, not both (got {given})")
        from jaxir.export import load_bundle

        bundle = load_bundle(args.bundle)
        corpus = args.corpus if args.corpus is not None else bundle.corpus_path

        def search(queries, k):
            return bundle.search_run(queries, k, batch_size=args.batch_size)

        return search, corpus
    missing = [name for name, value in parts.items() if value is None]
    if missing:
        raise ValueError(
            f"no BUNDLE given, so {', '.join(missing)} are needed; pass a bundle directory or "
            "all of --model, --index and --embeddings"
        )
    from jaxir.index import load_searcher
    from jaxir.search.retrieve import retrieve
    from jaxir.store_files import load_store

    store = load_store(args.embeddings)
    sparse = store.manifest.get("kind") == "sparse"
    dim = store.vocab_size if sparse else store.dim
    searcher = load_searcher(args.index)
    if searcher.num_docs != len(store) or searcher.dim != dim:
        raise ValueError(
            f"{args.index}: the searcher holds {searcher.num_docs} x {searcher.dim} vectors but "
            f"{args.embeddings} holds {len(store)} x {dim}; pass the store the index was "
            "built from"
        )
    if sparse:
        from jaxir.eval.model_eval import find_model

        encoder = find_model(args.model).query_encoder()
    else:
        encoder = _encoder_from_model(args.model, args.embeddings, store.manifest["encoder"])

    def search(queries, k):
        return retrieve(encoder, searcher, store.ids, queries, k, batch_size=args.batch_size)

    return search, args.corpus


def _split_bundles(args: argparse.Namespace) -> list[pathlib.Path]:
    """With --fuse: the leading positional bundle directories; the rest stay query texts."""
    from jaxir.export import MANIFEST

    bundles = [] if args.bundle is None else [args.bundle]
    texts = list(args.texts)
    while texts and (pathlib.Path(texts[0]) / MANIFEST).is_file():
        bundles.append(pathlib.Path(texts.pop(0)))
    args.texts = texts
    if len(bundles) < 2:
        raise ValueError(
            f"--fuse needs at least two BUNDLE directories before the queries, got {len(bundles)} "
            "(a bundle directory holds manifest.json)"
        )
    if args.fuse_depth < 1:
        raise ValueError(f"--fuse-depth must be >= 1, got {args.fuse_depth}")
    return bundles


def _open_fused(args: argparse.Namespace, paths: list[pathlib.Path]):
    """``(search_run(queries, k), corpus)`` fusing the runs of several bundles."""
    from jaxir.export import load_bundle
    from jaxir.search.fusion import fuse_runs

    given = [
        flag
        for flag, v in (
            ("--model", args.model),
            ("--index", args.index),
            ("--embeddings", args.embeddings),
        )
        if v is not None
    ]
    if given:
        raise ValueError(f"--fuse searches bundles; drop {', '.join(given)}")
    bundles = {}
    for path in paths:
        name = path.resolve().name
        if name in bundles:
            raise ValueError(
                f"two bundles are named {name!r}; give the bundle directories distinct names"
            )
        bundles[name] = load_bundle(path)
    first_name, first = next(iter(bundles.items()))
    collection = set(first.doc_ids)
    for name, bundle in bundles.items():
        if set(bundle.doc_ids) != collection:
            raise ValueError(
                f"{bundle.path}: bundle {name!r} indexes {len(set(bundle.doc_ids))} documents but "
                f"{first_name!r} indexes {len(collection)} others; fuse bundles of one collection"
            )
    corpus = args.corpus
    if corpus is None:
        corpus = next((b.corpus_path for b in bundles.values() if b.corpus_path), None)

    def search(queries, k):
        depth = max(k, args.fuse_depth)
        runs = {
            name: bundle.search_run(queries, depth, batch_size=args.batch_size)
            for name, bundle in bundles.items()
        }
        return fuse_runs(
            runs,
            method=args.fuse,
            weights=args.fuse_weights,
            k=args.fuse_k,
            normalization=args.fuse_normalization,
            depth=k,
        )

    return search, corpus


def _doc_texts(corpus: pathlib.Path, wanted: set[str]) -> dict[str, str]:
    from jaxir.data.records import iter_corpus

    return {
        doc.id: " ".join(doc.full_text.split())
        for doc in iter_corpus(corpus, allow_empty_docs=True)
        if doc.id in wanted
    }


def _print_results(texts: list[str], run: dict, corpus: pathlib.Path | None) -> None:
    wanted = {d for docs in run.values() for d in docs}
    doc_text = _doc_texts(corpus, wanted) if corpus is not None else {}
    width = max((len(d) for d in wanted), default=6)
    for i, text in enumerate(texts):
        print(f"query: {text}")
        ranked = list(run[str(i)].items())
        if not ranked:
            print("  (no results)")
        for rank, (doc_id, score) in enumerate(ranked, start=1):
            line = f"  {rank:>3}  {doc_id:<{width}}  {score:9.4f}"
            if doc_id in doc_text:
                line += f"  {doc_text[doc_id][:TEXT_CHARS]}"
            print(line)
        if i + 1 < len(texts):
            print()


def run(args: argparse.Namespace) -> int:
    """Runs interactive or batch search (see the module docstring)."""
    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    if args.fuse is None and args.fuse_weights is not None:
        raise ValueError("--fuse-weights applies with --fuse rrf|convex only")
    bundles = _split_bundles(args) if args.fuse is not None else None
    batch = args.queries is not None or args.out is not None
    if batch and (args.queries is None or args.out is None):
        raise ValueError("batch mode needs both --queries FILE and --out RUN")
    if batch == bool(args.texts):
        raise ValueError(
            'give query texts (jaxir search BUNDLE "query" ...) or --queries/--out, '
            "exactly one of the two"
        )
    search, corpus = _open(args) if bundles is None else _open_fused(args, bundles)
    if not batch:
        _print_results(args.texts, search(list(args.texts), args.k), corpus)
        return 0

    from jaxir.data.records import load_qrels, load_queries
    from jaxir.data.runs import write_trec_run

    queries = load_queries(args.queries)
    if args.qrels is not None:
        judged = load_qrels(args.qrels)
        unknown = [q for q in judged if q not in queries]
        if unknown:
            raise ValueError(
                f"{args.qrels}: {len(unknown)} judged queries are not in {args.queries}, e.g. "
                f"{unknown[:3]}; pass the queries file of the same collection"
            )
        queries = {q: queries[q] for q in judged}
    start = time.perf_counter()
    result = search(queries, args.k)
    seconds = time.perf_counter() - start
    write_trec_run(result, args.out, tag=args.tag)
    print(
        f"jaxir search: {len(result)} queries, top {args.k} -> {args.out} "
        f"({seconds:.1f} s, {len(result) / max(seconds, 1e-9):.1f} queries/s)"
    )
    return 0
