"""Build a searcher from a dense or sparse store and measure its recall against exact search.

Input: a store written by `jaxir encode`: dense (manifest.json + vectors-*.npy +
ids-*.txt) or sparse (a SPLADE model's CSR shards + terms.txt). Output: the saved
searcher in --out (searcher.json + the index files), loadable with
jaxir.index.load_searcher(OUT) and used by `jaxir search --index OUT` (with
--embeddings STORE for the document ids) or packaged by `jaxir export`.

Dense stores: --kind scann (default) builds a ScaNN index: below 20k vectors brute
force (exact), above it k-means partitioning into --num-leaves leaves + anisotropic
quantization + exact re-ranking of --reorder candidates (jaxir.index.scann_index has
the defaults); --kind exact saves the vectors for exact top-k on device.

Sparse stores: --kind inverted (the default and only kind) builds the impact-scored
inverted index (jaxir.index.inverted): a forward index scored document by document,
with per-term maxima over blocks of --block-size documents bounding which blocks can
reach the top k (safe pruning), uint8 impacts with one global scale (--float-impacts
keeps float32 weights). Its exact mode returns the exhaustive top-k of the impacts
it stores; the report also gives its approximate mode at --alpha.

After building, the command reports the build time, the index size and the recall@k
of the searcher against exact search over the store's float32 vectors, on --sample
vectors drawn from the store itself used as queries (or on the vectors of
--queries-embeddings, e.g. real queries encoded with `jaxir encode --what queries`).

Examples:
  jaxir index emb/scifact --out index/scifact --kind scann --num-leaves 100
  jaxir index runs/s1/store --kind inverted --out runs/s1/index \\
      --queries-embeddings runs/s1/query-store
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

HELP = "build a searcher (ScaNN / exact / inverted) from a store; report recall vs exact"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir index``."""
    parser.add_argument(
        "embeddings",
        type=pathlib.Path,
        metavar="STORE_DIR",
        help="dense embedding store or sparse store (jaxir encode)",
    )
    parser.add_argument(
        "--out", required=True, type=pathlib.Path, metavar="DIR", help="searcher directory"
    )
    parser.add_argument(
        "--kind",
        default=None,
        help="searcher kind for the store's representation; dense stores: scann (approximate, "
        "the default) or exact (on-device brute force); sparse stores: inverted (the default)",
    )
    parser.add_argument(
        "--num-leaves",
        type=int,
        default=None,
        help="ScaNN k-means partitions, 0 = brute force (default: brute force below 20k "
        "vectors, else 2*sqrt(N) rounded to 10)",
    )
    parser.add_argument(
        "--leaves-to-search",
        type=int,
        default=None,
        help="ScaNN partitions probed per query (default: 5%% of the leaves, at least 20)",
    )
    parser.add_argument(
        "--reorder",
        type=int,
        default=None,
        help="ScaNN candidates re-scored exactly after quantized scoring (default: 100)",
    )
    sparse = parser.add_argument_group("inverted index (sparse stores)")
    sparse.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="documents per block of the block-max bounds, 1..256 (default: 4; smaller "
        "blocks bound tighter and store more maxima)",
    )
    sparse.add_argument(
        "--float-impacts",
        action="store_true",
        help="store float32 weights instead of uint8 impacts (4x the postings' size)",
    )
    sparse.add_argument(
        "--no-term-postings",
        action="store_true",
        help="skip the term-major copy of the postings (5 bytes per posting) that exact "
        "search scans when block-max bounds cannot prune, as on small collections",
    )
    sparse.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="approximate mode's pruning factor whose recall is reported, 0 < alpha <= 1 "
        "(default: jaxir.index.inverted.DEFAULT_ALPHA)",
    )
    parser.add_argument(
        "-k", type=int, default=10, help="k of the reported recall@k (default: %(default)s)"
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=1000,
        help="stored vectors used as recall queries (default: %(default)s)",
    )
    parser.add_argument(
        "--queries-embeddings",
        type=pathlib.Path,
        metavar="DIR",
        help="store of queries (same kind and model) to measure recall on, instead of --sample",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")


def _options(kind: str, args: argparse.Namespace) -> dict:
    """The searcher's build options given on the command line (``None``: its default)."""
    given = {
        "scann": {
            "num_leaves": args.num_leaves,
            "num_leaves_to_search": args.leaves_to_search,
            "reorder": args.reorder,
        },
        "inverted": {
            "block_size": args.block_size,
            "quantize": False if args.float_impacts else None,
            "term_postings": False if args.no_term_postings else None,
        },
    }.get(kind, {})
    return {name: value for name, value in given.items() if value is not None}


def _check_flags(kind: str, args: argparse.Namespace) -> None:
    """Refuses the flags of another searcher kind (they would be silently ignored)."""
    flags = {
        "scann": {
            "--num-leaves": args.num_leaves,
            "--leaves-to-search": args.leaves_to_search,
            "--reorder": args.reorder,
        },
        "inverted": {
            "--block-size": args.block_size,
            "--float-impacts": args.float_impacts or None,
            "--no-term-postings": args.no_term_postings or None,
            "--alpha": args.alpha,
        },
    }
    for owner, values in flags.items():
        given = [flag for flag, value in values.items() if value is not None]
        if given and owner != kind:
            raise ValueError(f"{', '.join(given)}: only for --kind {owner}, not {kind}")


def _queries(args: argparse.Namespace, store, docs):
    """``(query vectors, description)``: --queries-embeddings, or --sample stored rows."""
    from jaxir.store_files import load_store

    if args.queries_embeddings is not None:
        queries = load_store(args.queries_embeddings)
        kind = queries.manifest.get("kind", "dense")
        if kind != store.manifest.get("kind", "dense"):
            raise ValueError(
                f"{args.queries_embeddings}: a {kind} store of queries for a "
                f"{store.manifest.get('kind', 'dense')} index; encode the queries with the "
                "model that encoded the documents"
            )
        vectors = queries.matrix if kind == "sparse" else np.asarray(queries.vectors, np.float32)
        if vectors.shape[1] != docs.shape[1]:
            raise ValueError(
                f"{args.queries_embeddings}: {vectors.shape[1]}-d query vectors for a "
                f"{docs.shape[1]}-d index; encode the queries with the same model"
            )
        return vectors, f"{vectors.shape[0]} queries from {args.queries_embeddings}"
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(len(store), size=min(args.sample, len(store)), replace=False))
    return docs[rows], f"{len(rows)} stored vectors as queries"


def _timed_search(searcher, queries, k: int, **options) -> tuple[np.ndarray, float]:
    """``(indices [Q, k], ms per query)``, after one warm-up query (compilation excluded)."""
    searcher.search(queries[:1], k, **options)
    start = time.perf_counter()
    _, indices = searcher.search(queries, k, **options)
    return indices, 1e3 * (time.perf_counter() - start) / max(queries.shape[0], 1)


def run(args: argparse.Namespace) -> int:
    """Builds, saves and evaluates the searcher; prints a report."""
    from jaxir.index import build_searcher, recall_against
    from jaxir.index.base import SEARCHERS_FOR, check_searcher_kind
    from jaxir.reps.kinds import DEFAULT_KIND
    from jaxir.store_files import load_store

    if args.k < 1 or args.sample < 1:
        raise ValueError(f"-k and --sample must be >= 1, got {args.k} and {args.sample}")
    store = load_store(args.embeddings)
    representation = store.manifest.get("kind", DEFAULT_KIND)
    kind = SEARCHERS_FOR[representation][0] if args.kind is None else args.kind
    check_searcher_kind(representation, kind, str(store.path / "manifest.json"))
    _check_flags(kind, args)
    if representation == "sparse":
        docs, shape = store.matrix, f"{len(store)} x {store.vocab_size} sparse vectors"
    else:
        docs = np.asarray(store.vectors, dtype=np.float32)
        shape = f"{len(store)} x {store.dim} vectors"
    start = time.perf_counter()
    searcher = build_searcher(kind, docs, **_options(kind, args))
    searcher.save(args.out)
    build_s = time.perf_counter() - start
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())

    queries, source = _queries(args, store, docs)
    # Exact search over the store's float32 vectors: on device (dense), or the inverted
    # index over float weights, whose exact mode equals brute force (sparse).
    exact_kind, exact_options = (
        ("inverted", {"quantize": False}) if kind == "inverted" else ("exact", {})
    )
    exact = searcher if kind == "exact" else build_searcher(exact_kind, docs, **exact_options)
    _, exact_idx = exact.search(queries, args.k)
    lines = [
        f"jaxir index: {kind} searcher over {shape} -> {args.out}",
        f"  build + save: {build_s:.2f} s, {size / 2**20:.1f} MiB on disk",
    ]
    modes = [("", {})]
    if kind == "inverted":
        from jaxir.index.inverted import DEFAULT_ALPHA

        alpha = DEFAULT_ALPHA if args.alpha is None else args.alpha
        modes = [
            (" (exact mode)", {"mode": "exact"}),
            (f" (approx mode, alpha {alpha})", {"mode": "approx", "alpha": alpha}),
        ]
    for label, options in modes:
        found, ms = _timed_search(searcher, queries, args.k, **options)
        lines.append(
            f"  recall@{args.k} vs exact{label}: {recall_against(exact_idx, found):.4f} "
            f"({source}; {ms:.3f} ms/query)"
        )
    print("\n".join(lines))
    return 0
