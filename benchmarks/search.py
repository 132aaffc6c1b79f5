"""Dense search side by side: jaxir exact vs NumPy exact, jaxir ScaNN vs raw ScaNN, faiss HNSW.

Data: ``--n`` synthetic vectors (default 1M x 128) drawn around 1,000 seeded Gaussian
clusters and L2-normalized, plus 1,000 queries drawn near random clusters (or, with
``--scifact-embeddings PATH.npy``, a real embedding matrix as corpus and its rows
``--queries`` sampled and perturbed as queries). All methods run in this one process
on the same arrays; recall@k is measured against jaxir exact search.

Methods:
  * jaxir exact   -- ``ExactSearcher`` (on device, corpus sharded over ``--devices``);
  * numpy exact   -- ``q @ d.T`` in 256-query batches + ``np.argpartition`` + sort;
  * jaxir ScaNN   -- ``ScannSearcher.build(...)`` / ``.search`` (tree + AH + reorder);
  * raw ScaNN     -- the same parameters through ``scann_ops_pybind.builder(...)`` and
    ``search_batched_parallel``;
  * faiss HNSW    -- ``IndexHNSWFlat`` (M=32, efConstruction=128, efSearch=64, inner product).

Timings are the median of ``--repeats`` passes over all queries (at least 10 for
ScaNN), passes of competing methods interleaved so machine load hits both alike. Run::

    python benchmarks/search.py            # 1M x 128 (several minutes)
    python benchmarks/search.py --quick    # 100k x 128 (about a minute)

The script ends with one ``RESULT {json}`` line per headline figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import metadata


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100k vectors instead of 1M")
    parser.add_argument(
        "--n", type=int, default=None, help="corpus size (default 1M, --quick 100k)"
    )
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument(
        "--noise", type=float, default=1.0, help="per-dim noise std around unit-variance centers"
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--devices", type=int, default=1, help="CPU devices the exact corpus is sharded over"
    )
    parser.add_argument(
        "--hnsw-n",
        type=int,
        default=None,
        help="build HNSW on the first N vectors only (--quick: 50k)",
    )
    parser.add_argument("--skip-hnsw", action="store_true")
    parser.add_argument("--scifact-embeddings", default=None, help="[N, D] .npy corpus embeddings")
    return parser.parse_args(argv)


ARGS = parse_args()
# The fake CPU device count must be fixed before jax is imported.
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={ARGS.devices}")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

from jaxir.index import ExactSearcher, recall_against  # noqa: E402
from jaxir.index.scann_index import ScannSearcher, default_params  # noqa: E402


def clustered_data(
    n: int, num_queries: int, dim: int, clusters: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``docs_nd [n, dim]`` and ``queries_qd``: ``center + noise * N(0, I)``, L2-normalized."""
    rng = np.random.default_rng(seed)
    centers_cd = rng.standard_normal((clusters, dim), dtype=np.float32)
    docs_nd = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        labels = rng.integers(0, clusters, stop - start)
        docs_nd[start:stop] = centers_cd[labels] + noise * rng.standard_normal(
            (stop - start, dim), dtype=np.float32
        )
    queries_qd = centers_cd[rng.integers(0, clusters, num_queries)]
    queries_qd = queries_qd + noise * rng.standard_normal(queries_qd.shape, dtype=np.float32)
    docs_nd /= np.linalg.norm(docs_nd, axis=1, keepdims=True)
    return docs_nd, queries_qd / np.linalg.norm(queries_qd, axis=1, keepdims=True)


def embedding_data(path: str, num_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Corpus from ``path``; queries are sampled rows plus noise (re-normalized)."""
    docs_nd = np.ascontiguousarray(np.load(path, allow_pickle=False), dtype=np.float32)
    docs_nd /= np.linalg.norm(docs_nd, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    queries_qd = docs_nd[rng.choice(len(docs_nd), min(num_queries, len(docs_nd)), replace=False)]
    queries_qd = queries_qd + 0.05 * rng.standard_normal(queries_qd.shape, dtype=np.float32)
    return docs_nd, queries_qd / np.linalg.norm(queries_qd, axis=1, keepdims=True)


def numpy_exact(
    queries_qd: np.ndarray, docs_nd: np.ndarray, k: int, batch: int = 256
) -> np.ndarray:
    """Exact top-k indices with NumPy: batched matmul, argpartition, sort of the k."""
    out = []
    for start in range(0, len(queries_qd), batch):
        scores_bn = queries_qd[start : start + batch] @ docs_nd.T
        part_bk = np.argpartition(-scores_bn, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores_bn, part_bk, axis=1), axis=1)
        out.append(np.take_along_axis(part_bk, order, axis=1))
    return np.concatenate(out)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median_interleaved(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Median wall time of each function over ``repeats`` interleaved passes, and its last result.

    Interleaving and the median keep load spikes on a shared machine from favouring
    whichever method happened to run during a quiet moment.
    """
    times, results = {name: [] for name in fns}, {}
    for _ in range(repeats):
        for name, fn in fns.items():
            seconds, results[name] = timed(fn)
            times[name].append(seconds)
    return {name: float(np.median(t)) for name, t in times.items()}, results


def blas_report() -> str:
    libs = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads, "
        f"{i.get('architecture', '-')}, {os.path.basename(i.get('filepath', ''))})"
        for i in threadpool_info()
    ]
    coretype = os.environ.get("OPENBLAS_CORETYPE", "<unset>")
    return f"OPENBLAS_CORETYPE={coretype}; cpus={os.cpu_count()}; " + "; ".join(libs)


def main() -> None:
    args = ARGS
    import faiss  # imported before the BLAS report so its OpenBLAS is listed
    import jax
    import scann

    n = args.n or (100_000 if args.quick else 1_000_000)
    if args.scifact_embeddings:
        docs_nd, queries_qd = embedding_data(args.scifact_embeddings, args.queries, args.seed)
        source = f"embeddings {args.scifact_embeddings}"
    else:
        docs_nd, queries_qd = clustered_data(
            n, args.queries, args.dim, args.clusters, args.noise, args.seed
        )
        source = (
            f"synthetic: {args.clusters} Gaussian clusters, noise {args.noise}, seed {args.seed}"
        )
    n, dim = docs_nd.shape
    num_queries, k = len(queries_qd), args.k
    print(f"corpus {n:,} x {dim} ({source}); {num_queries} queries; k={k}")
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("jax", "scann", "faiss-cpu", "numpy")
    )
    print(f"{versions}; {jax.device_count()} {jax.devices()[0].platform} device(s) for jaxir exact")
    print("BLAS:", blas_report())
    rows = []  # (method, build_s, qps, recall)
    print("exact search: jaxir vs numpy ...", flush=True)

    # --- exact: jaxir on device vs NumPy ---------------------------------------------
    build_s, exact = timed(lambda: ExactSearcher(docs_nd))
    compile_s, _ = timed(lambda: exact.search(queries_qd, k))
    best, results = median_interleaved(
        {
            "numpy": lambda: numpy_exact(queries_qd, docs_nd, k),
            "jaxir": lambda: exact.search(queries_qd, k),
        },
        args.repeats,
    )
    exact_idx = results["jaxir"][1]
    numpy_recall = recall_against(exact_idx, results["numpy"])
    exact_qps, numpy_qps = num_queries / best["jaxir"], num_queries / best["numpy"]
    rows.append(
        (f"jaxir exact (first call {compile_s:.1f}s incl. compile)", build_s, exact_qps, 1.0)
    )
    rows.append(("numpy exact (matmul + argpartition)", 0.0, numpy_qps, numpy_recall))

    # --- ScaNN: jaxir wrapper vs raw, same parameters -----------------------------------
    params = default_params(n)
    print("building ScaNN twice (jaxir, raw) ...", flush=True)
    print(
        f"ScaNN params: leaves={params.num_leaves} search={params.num_leaves_to_search} "
        f"AH dims/block={params.dims_per_block} reorder={params.reorder} train={params.training_sample_size}"
    )
    jaxir_build_s, jaxir_scann = timed(
        lambda: ScannSearcher.build(
            docs_nd,
            num_leaves=params.num_leaves,
            num_leaves_to_search=params.num_leaves_to_search,
            reorder=params.reorder,
            training_sample_size=params.training_sample_size,
        )
    )

    def build_raw():
        builder = scann.scann_ops_pybind.builder(docs_nd, k, "dot_product")
        if params.brute_force:
            return builder.score_brute_force().build()
        return (
            builder.tree(
                num_leaves=params.num_leaves,
                num_leaves_to_search=params.num_leaves_to_search,
                training_sample_size=params.training_sample_size,
            )
            .score_ah(
                params.dims_per_block,
                anisotropic_quantization_threshold=params.anisotropic_quantization_threshold,
            )
            .reorder(params.reorder)
            .build()
        )

    raw_build_s, raw_scann = timed(build_raw)
    # The wrapper overhead is measured on the *same* raw index, so only jaxir's code differs.
    wrapped_raw = ScannSearcher(
        raw_scann, num_docs=n, dim=dim, params=params, probes_qd=queries_qd[:1]
    )
    fns = {
        "jaxir": lambda: jaxir_scann.search(queries_qd, k),
        "wrapped": lambda: wrapped_raw.search(queries_qd, k),
        "raw": lambda: raw_scann.search_batched_parallel(queries_qd, final_num_neighbors=k),
    }
    for fn in fns.values():
        fn()
    best, results = median_interleaved(fns, max(args.repeats, 10))
    scann_recall = recall_against(exact_idx, results["jaxir"][1])
    raw_recall = recall_against(exact_idx, results["raw"][0].astype(np.int64))
    scann_qps, wrapped_qps, raw_qps = (
        num_queries / best[name] for name in ("jaxir", "wrapped", "raw")
    )
    rows.append(
        ("jaxir ScaNN (ScannSearcher.build + search)", jaxir_build_s, scann_qps, scann_recall)
    )
    rows.append(("jaxir ScaNN wrapper around the raw index below", 0.0, wrapped_qps, raw_recall))
    rows.append(("raw ScaNN (builder + search_batched_parallel)", raw_build_s, raw_qps, raw_recall))

    # --- faiss HNSW --------------------------------------------------------------------
    if not args.skip_hnsw:
        hnsw_n = min(n, args.hnsw_n or (50_000 if args.quick else n))
        print(f"building faiss HNSW on {hnsw_n:,} vectors ...", flush=True)
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 128
        hnsw_build_s, _ = timed(lambda: index.add(docs_nd[:hnsw_n]))
        index.hnsw.efSearch = 64
        best, results = median_interleaved(
            {"hnsw": lambda: index.search(queries_qd, k)}, args.repeats
        )
        if hnsw_n == n:
            hnsw_recall = recall_against(exact_idx, results["hnsw"][1])
            label = "faiss HNSW (M=32, efC=128, efS=64)"
        else:
            _, sub_exact = ExactSearcher(docs_nd[:hnsw_n]).search(queries_qd, k)
            hnsw_recall = recall_against(sub_exact, results["hnsw"][1])
            label = f"faiss HNSW (M=32, efC=128, efS=64) on first {hnsw_n:,}"
        rows.append((label, hnsw_build_s, num_queries / best["hnsw"], hnsw_recall))

    print()
    print(f"| method | build s | QPS | recall@{k} vs exact |")
    print("| --- | ---: | ---: | ---: |")
    for name, build, qps, recall in rows:
        print(f"| {name} | {build:.1f} | {qps:,.0f} | {recall:.4f} |")
    print()
    results_lines = [
        {
            "name": "exact_vs_numpy",
            "unit": "QPS",
            "jaxir": exact_qps,
            "peer": "numpy exact",
            "peer_value": numpy_qps,
        },
        {
            "name": "scann_wrapper_vs_raw",
            "unit": "QPS",
            "jaxir": wrapped_qps,
            "peer": "raw ScaNN",
            "peer_value": raw_qps,
        },
        {
            "name": "scann_qps_vs_exact",
            "unit": "QPS",
            "jaxir": scann_qps,
            "peer": "jaxir exact",
            "peer_value": exact_qps,
            "recall": scann_recall,
        },
    ]
    for line in results_lines:
        line["ratio"] = line["jaxir"] / line["peer_value"]
        line = {key: round(v, 4) if isinstance(v, float) else v for key, v in line.items()}
        print("RESULT " + json.dumps(line))


if __name__ == "__main__":
    main()
