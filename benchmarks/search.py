"""Dense search side by side: jaxir exact vs faiss and NumPy exact, jaxir ScaNN vs raw ScaNN, HNSW.

Data: ``--n`` synthetic vectors (default 1M x 128) drawn around 1,000 seeded Gaussian
clusters and L2-normalized, plus 1,000 queries drawn near random clusters (or, with
``--scifact-embeddings PATH.npy``, a real embedding matrix as corpus and its rows
``--queries`` sampled and perturbed as queries). The parent process writes them to one
.npy pair; every method reads the same arrays in a process of its own
(:class:`protocol.Worker`), and recall@k is measured against jaxir exact search.

Methods (process in brackets):
  * jaxir exact [jaxir] -- ``ExactSearcher`` (on device, corpus sharded over ``--devices``);
  * faiss exact [faiss] -- ``IndexFlatIP``, what users run for exact search (BLAS
    products + per-query heaps, OpenMP). The peer at its best: the BLAS block of corpus
    rows (``faiss.cvar.distance_compute_blas_database_bs``) among 1,024 (faiss's
    default), 4,096, 16,384 and 65,536, the fastest counted;
  * numpy exact [numpy] -- :func:`numpy_top_k`: per block of 512 queries x 32,768 corpus
    rows one matmul into a reused buffer, ``argpartition``, merge with the running top-k;
  * faiss HNSW [faiss] -- ``IndexHNSWFlat`` (M=32, efConstruction=128, efSearch=64);
  * jaxir ScaNN, raw ScaNN, and jaxir's wrapper around that raw index [scann] --
    ``ScannSearcher.build`` / ``.search`` vs ``scann_ops_pybind.builder(...)`` with the
    same parameters and ``search_batched_parallel``. These share one process: the
    wrapper's overhead is measured around the *same* raw index.

Timings are the median of ``--repeats`` passes over all queries (at least 10 for ScaNN)
after one warm-up pass, passes of competing methods interleaved (across processes) so
machine load hits all alike.

Roofline: :func:`protocol.gemm_roofline` times the exact searches' score products
(``[512, D] x [D, 32768]``, faiss's ``[Q, D] x [D, block]``) under XLA:CPU's default dots,
its Eigen emitter and NumPy's BLAS; ``roofline_fraction`` of the exact lines is jaxir's
``2 Q N D`` FLOP rate over the best. The ScaNN lines have none (``null``): their work is
not a dense GEMM. Run::

    python benchmarks/search.py --hnsw-n 100000   # 1M x 128 (~20 min on 2 cores)
    python benchmarks/search.py --quick           # 100k x 128, HNSW on 50k (a few minutes)

The script ends with one ``RESULT {json}`` line per headline figure.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
import protocol

FAISS_DATABASE_BLOCKS = (1024, 4096, 16384, 65536)
NUMPY_QUERY_BLOCK, NUMPY_DOC_BLOCK = 512, 32768


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
    parser.add_argument("--skip-scann", action="store_true")
    parser.add_argument("--scifact-embeddings", default=None, help="[N, D] .npy corpus embeddings")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# =========================================================================== data


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


def load_data(data: str, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The parent's arrays: corpus memory-mapped (first ``rows``), queries in memory."""
    docs_nd = np.load(pathlib.Path(data) / "docs.npy", mmap_mode="r")
    return docs_nd[:rows], np.load(pathlib.Path(data) / "queries.npy")


# =========================================================================== the methods


def numpy_top_k(
    queries_qd: np.ndarray,
    docs_nd: np.ndarray,
    k: int,
    query_block: int = NUMPY_QUERY_BLOCK,
    doc_block: int = NUMPY_DOC_BLOCK,
) -> np.ndarray:
    """Exact top-k indices by inner product with NumPy, best first.

    Per block of ``query_block`` queries and ``doc_block`` corpus rows: one matmul into a
    reused buffer (no copy of the corpus or of the scores), ``argpartition`` for the
    block's ``k`` best per query, merged with the running top-k by an ``argpartition``
    of the ``2k`` candidates; the final ``k`` are sorted.
    """
    n = len(docs_nd)
    k = min(k, n)
    buffer = np.empty(query_block * min(doc_block, n), np.float32)
    out = np.empty((len(queries_qd), k), np.int64)
    for qs in range(0, len(queries_qd), query_block):
        q_bd = queries_qd[qs : qs + query_block]
        b = len(q_bd)
        best_s = np.full((b, k), -np.inf, np.float32)
        best_i = np.zeros((b, k), np.int64)
        for ds in range(0, n, doc_block):
            d_cd = docs_nd[ds : ds + doc_block]
            c = len(d_cd)
            s_bc = np.matmul(q_bd, d_cd.T, out=buffer[: b * c].reshape(b, c))
            kc = min(k, c)
            part = np.argpartition(s_bc, c - kc, axis=1)[:, c - kc :]
            cand_s = np.concatenate([best_s, np.take_along_axis(s_bc, part, axis=1)], axis=1)
            cand_i = np.concatenate([best_i, part + ds], axis=1)
            keep = np.argpartition(cand_s, cand_s.shape[1] - k, axis=1)[:, -k:]
            best_s = np.take_along_axis(cand_s, keep, axis=1)
            best_i = np.take_along_axis(cand_i, keep, axis=1)
        order = np.argsort(-best_s, axis=1, kind="stable")
        out[qs : qs + b] = np.take_along_axis(best_i, order, axis=1)
    return out


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def blas_report() -> str:
    from threadpoolctl import threadpool_info

    libs = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads, "
        f"{i.get('architecture', '-')}, {os.path.basename(i.get('filepath', ''))})"
        for i in threadpool_info()
    ]
    return f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '<unset>')}; " + "; ".join(libs)


class JaxirServer(protocol.VariantServer):
    """``ExactSearcher`` over the corpus (the exact reference)."""

    def config(self) -> str:
        return protocol.jax_config()

    def load(self, data: str, k: int) -> dict:
        from jaxir.index import ExactSearcher

        docs_nd, queries_qd = load_data(data)
        build_s, searcher = timed(lambda: ExactSearcher(docs_nd))
        run = lambda: searcher.search(queries_qd, k)[1]  # noqa: E731
        compile_s, _ = timed(run)
        self.variants["jaxir exact"] = run
        return {
            "build_s": build_s,
            "compile_s": compile_s,
            "query_batch": searcher.query_batch,
            "chunk_size": searcher.chunk_size,
        }

    def exact_subset(self, data: str, rows: int, k: int, save: str) -> None:
        """Exact top-k over the first ``rows`` documents (HNSW's reference)."""
        from jaxir.index import ExactSearcher

        docs_nd, queries_qd = load_data(data, rows)
        np.save(save, ExactSearcher(docs_nd).search(queries_qd, k)[1])


class NumpyServer(protocol.VariantServer):
    def config(self) -> str:
        return f"numpy {np.__version__}; BLAS: {blas_report()}"

    def load(self, data: str, k: int) -> dict:
        docs_nd, queries_qd = load_data(data)
        self.variants["numpy exact"] = lambda: numpy_top_k(queries_qd, docs_nd, k)
        return {"build_s": 0.0}


class FaissServer(protocol.VariantServer):
    def config(self) -> str:
        import faiss

        return (
            f"faiss {faiss.__version__} ({faiss.get_compile_options()}), "
            f"{faiss.omp_get_max_threads()} OpenMP threads, distance_compute_blas_threshold="
            f"{faiss.cvar.distance_compute_blas_threshold}, distance_compute_blas_query_bs="
            f"{faiss.cvar.distance_compute_blas_query_bs}; BLAS: {blas_report()}"
        )

    def load(self, data: str, k: int) -> dict:
        import faiss

        docs_nd, queries_qd = load_data(data)
        index = faiss.IndexFlatIP(docs_nd.shape[1])
        build_s, _ = timed(lambda: index.add(np.ascontiguousarray(docs_nd)))

        def search(block: int):
            faiss.cvar.distance_compute_blas_database_bs = block
            return index.search(queries_qd, k)[1]

        for block in FAISS_DATABASE_BLOCKS:
            self.variants[f"faiss exact, BLAS block {block}"] = lambda b=block: search(b)
        return {"build_s": build_s}

    def load_hnsw(self, data: str, rows: int, k: int) -> dict:
        import faiss

        docs_nd, queries_qd = load_data(data, rows)
        index = faiss.IndexHNSWFlat(docs_nd.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 128
        build_s, _ = timed(lambda: index.add(np.ascontiguousarray(docs_nd)))
        index.hnsw.efSearch = 64
        self.variants["faiss HNSW"] = lambda: index.search(queries_qd, k)[1]
        return {"build_s": build_s}


class ScannServer(protocol.VariantServer):
    """jaxir's ScaNN path, the raw ScaNN index with the same parameters, and the wrapper."""

    def config(self) -> str:
        from importlib import metadata

        return f"scann {metadata.version('scann')}; {protocol.jax_config()}"

    def load(self, data: str, k: int) -> dict:
        import scann

        from jaxir.index.scann_index import ScannSearcher, default_params

        docs_nd, queries_qd = load_data(data)
        docs_nd = np.ascontiguousarray(docs_nd)
        n, dim = docs_nd.shape
        params = default_params(n)
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
        # The wrapper's overhead is measured on the *same* raw index: only jaxir's code differs.
        wrapped = ScannSearcher(
            raw_scann, num_docs=n, dim=dim, params=params, probes_qd=queries_qd[:1]
        )
        self.variants = {
            "jaxir ScaNN": lambda: jaxir_scann.search(queries_qd, k)[1],
            "wrapper": lambda: wrapped.search(queries_qd, k)[1],
            "raw ScaNN": lambda: raw_scann.search_batched_parallel(
                queries_qd, final_num_neighbors=k
            )[0].astype(np.int64),
        }
        return {
            "build_s": {"jaxir ScaNN": jaxir_build_s, "raw ScaNN": raw_build_s},
            "params": (
                f"leaves={params.num_leaves} search={params.num_leaves_to_search} "
                f"AH dims/block={params.dims_per_block} reorder={params.reorder} "
                f"train={params.training_sample_size}"
            ),
        }


SERVERS = {"jaxir": JaxirServer, "numpy": NumpyServer, "faiss": FaissServer, "scann": ScannServer}


# =========================================================================== the parent


def timed_passes(workers, repeats: int, tmp: pathlib.Path) -> tuple[dict, dict]:
    """Median seconds per ``(worker, variant)`` and the path of its last pass's indices."""
    plan = [(w, v) for w in workers for v in w.call("names")]
    protocol.alternate(plan, 1)  # warm-up
    save = {(w.name, v): str(tmp / f"indices-{i}.npy") for i, (w, v) in enumerate(plan)}
    times = protocol.alternate(plan, repeats, save=save)
    return {key: protocol.median(t) for key, t in times.items()}, save


def main() -> None:
    args = parse_args()
    if args.worker:
        if args.worker in ("jaxir", "scann"):
            # The fake CPU device count must be fixed before jax is imported.
            os.environ.setdefault(
                "XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}"
            )
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
        sys.path.insert(0, str(protocol.REPO))
        protocol.serve(SERVERS[args.worker]())
        return
    from jaxir.index import recall_against

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
    print(protocol.machine())
    print(f"corpus {n:,} x {dim} ({source}); {num_queries} queries; k={k}")
    flops = 2.0 * num_queries * n * dim  # the score products of one pass of exact search

    shapes = [(512, dim, 32768)] + [(min(num_queries, 4096), dim, b) for b in FAISS_DATABASE_BLOCKS]
    roofline = protocol.gemm_roofline(
        shapes, "float32", ("xla", "xla-eigen", "numpy"), iters=3 if args.quick else 5
    )
    print("\n" + roofline.report())

    rows = []  # (method, build_s, qps, recall)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        np.save(tmp / "docs.npy", docs_nd)
        np.save(tmp / "queries.npy", queries_qd)
        del docs_nd
        data = str(tmp)

        # --- exact: jaxir vs faiss IndexFlatIP vs blocked NumPy, one process each --------
        print("\nexact search: jaxir vs faiss vs numpy ...", flush=True)
        workers = [
            protocol.Worker(__file__, name, [f"--devices={args.devices}"])
            for name in ("jaxir", "faiss", "numpy")
        ]
        jaxir, faiss_worker, _ = workers
        try:
            for w in workers:
                print(f"{w.name} process: {w.call('config')}")
            loaded = {w.name: w.call("load", data=data, k=k) for w in workers}
            seconds, indices = timed_passes(workers, args.repeats, tmp)
            exact_idx = np.load(indices["jaxir", "jaxir exact"])
            qps = {key: num_queries / s for key, s in seconds.items()}
            info = loaded["jaxir"]
            rows.append(
                (
                    f"jaxir exact (first call {info['compile_s']:.1f}s incl. compile)",
                    info["build_s"],
                    qps["jaxir", "jaxir exact"],
                    1.0,
                )
            )
            for (name, variant), rate in qps.items():
                if name != "jaxir":
                    recall = recall_against(exact_idx, np.load(indices[name, variant]))
                    rows.append((variant, loaded[name]["build_s"], rate, recall))
            if not args.skip_hnsw:
                hnsw_n = min(n, args.hnsw_n or (50_000 if args.quick else n))
                print(f"building faiss HNSW on {hnsw_n:,} vectors ...", flush=True)
                hnsw = faiss_worker.call("load_hnsw", data=data, rows=hnsw_n, k=k)
                hnsw_times = protocol.alternate(
                    [(faiss_worker, "faiss HNSW")],
                    args.repeats,
                    save={("faiss", "faiss HNSW"): str(tmp / "hnsw.npy")},
                )
                reference = exact_idx
                if hnsw_n < n:
                    reference_file = str(tmp / "hnsw-exact.npy")
                    jaxir.call("exact_subset", data=data, rows=hnsw_n, k=k, save=reference_file)
                    reference = np.load(reference_file)
                label = "faiss HNSW (M=32, efC=128, efS=64)" + (
                    f" on first {hnsw_n:,}" if hnsw_n < n else ""
                )
                rows.append(
                    (
                        label,
                        hnsw["build_s"],
                        num_queries / protocol.median(hnsw_times["faiss", "faiss HNSW"]),
                        recall_against(reference, np.load(tmp / "hnsw.npy")),
                    )
                )
        finally:
            for w in workers:
                w.close()
        exact_qps = qps["jaxir", "jaxir exact"]
        faiss_best = max((v for w, v in qps if w == "faiss"), key=lambda v: qps["faiss", v])
        numpy_qps = qps["numpy", "numpy exact"]

        # --- ScaNN: jaxir wrapper vs raw, same parameters, one process -------------------
        scann = None
        if not args.skip_scann:
            print("building ScaNN twice (jaxir, raw) ...", flush=True)
            with protocol.Worker(__file__, "scann", [f"--devices={args.devices}"]) as worker:
                print(f"scann process: {worker.call('config')}")
                built = worker.call("load", data=data, k=k)
                print(f"ScaNN params: {built['params']}")
                plan = [(worker, v) for v in ("jaxir ScaNN", "wrapper", "raw ScaNN")]
                protocol.alternate(plan, 1)
                save = {("scann", v): str(tmp / f"scann-{i}.npy") for i, (_, v) in enumerate(plan)}
                times = protocol.alternate(plan, max(args.repeats, 10), save=save)
            scann = {v: num_queries / protocol.median(times["scann", v]) for _, v in plan}
            recall = {v: recall_against(exact_idx, np.load(save["scann", v])) for _, v in plan}
            rows.append(
                (
                    "jaxir ScaNN (ScannSearcher.build + search)",
                    built["build_s"]["jaxir ScaNN"],
                    scann["jaxir ScaNN"],
                    recall["jaxir ScaNN"],
                )
            )
            rows.append(
                (
                    "jaxir ScaNN wrapper around the raw index below",
                    0.0,
                    scann["wrapper"],
                    recall["wrapper"],
                )
            )
            rows.append(
                (
                    "raw ScaNN (builder + search_batched_parallel)",
                    built["build_s"]["raw ScaNN"],
                    scann["raw ScaNN"],
                    recall["raw ScaNN"],
                )
            )

    print()
    print(f"| method | build s | QPS | recall@{k} vs exact |")
    print("| --- | ---: | ---: | ---: |")
    for name, build, rate, row_recall in rows:
        print(f"| {name} | {build:.1f} | {rate:,.0f} | {row_recall:.4f} |")
    fraction = roofline.fraction(flops * exact_qps / num_queries)
    print(
        f"\njaxir exact: {flops / 1e9:.1f} GFLOP of score products per pass, "
        f"{flops * exact_qps / num_queries / 1e9:.0f} GFLOP/s = {fraction:.2f} of the "
        f"{roofline.best_gflops:.0f} GFLOP/s roofline; faiss IndexFlatIP at its best: {faiss_best}"
    )
    print(f"{protocol.machine()} (at the end)\n")
    faiss_configs = {v: qps["faiss", v] for w, v in qps if w == "faiss"}
    protocol.result(
        "exact_vs_faiss",
        "QPS",
        exact_qps,
        f"faiss IndexFlatIP ({faiss_best})",
        qps["faiss", faiss_best],
        fraction,
        peer_configs=faiss_configs,
    )
    protocol.result(
        "exact_vs_numpy", "QPS", exact_qps, "numpy blocked argpartition", numpy_qps, fraction
    )
    if scann is not None:
        protocol.result(
            "scann_wrapper_vs_raw", "QPS", scann["wrapper"], "raw ScaNN", scann["raw ScaNN"], None
        )
        protocol.result(
            "scann_qps_vs_exact",
            "QPS",
            scann["jaxir ScaNN"],
            "jaxir exact",
            exact_qps,
            None,
            recall=recall["jaxir ScaNN"],
        )


if __name__ == "__main__":
    main()
