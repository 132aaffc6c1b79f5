"""Build a dense searcher from an embedding store and measure its recall against exact search.

Input: an embedding store written by `jaxir encode` (manifest.json + vectors-*.npy +
ids-*.txt). Output: the saved searcher in --out (searcher.json + the index files),
loadable with jaxir.index.load_searcher(OUT) and used by `jaxir search --index OUT`
(with --embeddings STORE for the document ids) or packaged by `jaxir export`.

--kind scann (default) builds a ScaNN index: below 20k vectors brute force (exact),
above it k-means partitioning into --num-leaves leaves + anisotropic quantization +
exact re-ranking of --reorder candidates (jaxir.index.scann_index has the defaults);
--kind exact saves the vectors for exact top-k on device.

After building, the command reports the build time and the recall@k of the searcher
against exact search, on --sample vectors drawn from the store itself used as queries
(or on the vectors of --queries-embeddings, e.g. real queries encoded with
`jaxir encode --what queries`).

Example:
  jaxir index emb/scifact --out index/scifact --kind scann --num-leaves 100
"""

from __future__ import annotations

import argparse
import pathlib
import time

HELP = "build a ScaNN or exact searcher from an embedding store; report recall vs exact"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir index``."""
    parser.add_argument(
        "embeddings", type=pathlib.Path, metavar="EMBEDDINGS_DIR", help="embedding store"
    )
    parser.add_argument(
        "--out", required=True, type=pathlib.Path, metavar="DIR", help="searcher directory"
    )
    parser.add_argument(
        "--kind",
        default="scann",
        help="searcher kind for the store's representation; dense stores: scann (approximate) "
        "or exact (on-device brute force) (default: %(default)s)",
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
        help="embedding store of queries to measure recall on, instead of --sample",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")


def _build(kind: str, vectors, args: argparse.Namespace):
    from jaxir.index import ExactSearcher

    if kind == "exact":
        return ExactSearcher(vectors)
    from jaxir.index import ScannSearcher

    options = {
        "num_leaves": args.num_leaves,
        "num_leaves_to_search": args.leaves_to_search,
        "reorder": args.reorder,
    }
    return ScannSearcher.build(vectors, **{k: v for k, v in options.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    """Builds, saves and evaluates the searcher; prints a report."""
    import numpy as np

    from jaxir.encode import load_embeddings
    from jaxir.index import ExactSearcher, recall_against
    from jaxir.index.base import check_searcher_kind
    from jaxir.reps.kinds import DEFAULT_KIND

    if args.k < 1 or args.sample < 1:
        raise ValueError(f"-k and --sample must be >= 1, got {args.k} and {args.sample}")
    store = load_embeddings(args.embeddings)
    check_searcher_kind(store.manifest.get("kind", DEFAULT_KIND), args.kind, str(store.path))
    vectors = np.asarray(store.vectors, dtype=np.float32)
    start = time.perf_counter()
    searcher = _build(args.kind, vectors, args)
    searcher.save(args.out)
    build_s = time.perf_counter() - start

    if args.queries_embeddings is not None:
        queries = np.asarray(load_embeddings(args.queries_embeddings).vectors, np.float32)
        if queries.shape[1] != store.dim:
            raise ValueError(
                f"{args.queries_embeddings}: {queries.shape[1]}-d query vectors for a "
                f"{store.dim}-d index; encode the queries with the same model"
            )
        source = f"{len(queries)} queries from {args.queries_embeddings}"
    else:
        rng = np.random.default_rng(args.seed)
        rows = rng.choice(len(store), size=min(args.sample, len(store)), replace=False)
        queries = vectors[np.sort(rows)]
        source = f"{len(queries)} stored vectors as queries"
    exact = searcher if args.kind == "exact" else ExactSearcher(vectors)
    _, exact_idx = exact.search(queries, args.k)
    start = time.perf_counter()
    _, approx_idx = searcher.search(queries, args.k)
    search_s = time.perf_counter() - start
    recall = recall_against(exact_idx, approx_idx)
    print(
        f"jaxir index: {args.kind} searcher over {len(store)} x {store.dim} vectors -> {args.out}\n"
        f"  build + save: {build_s:.2f} s\n"
        f"  recall@{args.k} vs exact: {recall:.4f} ({source}; "
        f"{1e3 * search_s / len(queries):.3f} ms/query)"
    )
    return 0
