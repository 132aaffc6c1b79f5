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
                    from the embedding store's manifest)
  --index DIR       a saved searcher (`jaxir index`)
  --embeddings DIR  the embedding store the index was built from (for the doc ids)

Examples:
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
    from jaxir.encode import load_embeddings
    from jaxir.index import load_searcher
    from jaxir.search.retrieve import retrieve

    store = load_embeddings(args.embeddings)
    searcher = load_searcher(args.index)
    if searcher.num_docs != len(store) or searcher.dim != store.dim:
        raise ValueError(
            f"{args.index}: the searcher holds {searcher.num_docs} x {searcher.dim} vectors but "
            f"{args.embeddings} holds {len(store)} x {store.dim}; pass the store the index was "
            "built from"
        )
    encoder = _encoder_from_model(args.model, args.embeddings, store.manifest["encoder"])

    def search(queries, k):
        return retrieve(encoder, searcher, store.ids, queries, k, batch_size=args.batch_size)

    return search, args.corpus


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
    batch = args.queries is not None or args.out is not None
    if batch and (args.queries is None or args.out is None):
        raise ValueError("batch mode needs both --queries FILE and --out RUN")
    if batch == bool(args.texts):
        raise ValueError(
            'give query texts (jaxir search BUNDLE "query" ...) or --queries/--out, '
            "exactly one of the two"
        )
    search, corpus = _open(args)
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
