"""Score TREC run files, or a trained model, against BEIR qrels and print a results table.

Model mode: `jaxir evaluate RUN_DIR --data DATA --split test` searches the split's
queries with the model in RUN_DIR/model (a dual encoder or a SPLADE model; or a model
directory given directly) over the document store RUN_DIR/store (encoded first when
missing; --store to use another) with RUN_DIR/index when it exists (--index; else exact
search), and prints the measures; for a SPLADE model also the average non-zeros per
query and per document and the FLOPS (expected multiplications per query-document
pair). --out writes the run (jaxir.eval.model_eval has the details). --bm25 instead of
RUN_OR_MODEL_DIR scores the BM25 baseline (bm25s, stopwords, Snowball stemming) the same
way, e.g. to write its run for `jaxir fuse`. --split also takes a qrels TSV path, such
as the dev_qrels.tsv of the queries `jaxir train` held out.

Run mode: reads one or more runs (6-column TREC files: query_id Q0 doc_id rank score tag) and a
qrels TSV (query-id <TAB> corpus-id <TAB> score, header optional) and prints one row
per run with the mean of each measure over the queries of the qrels, computed by
ir_measures with trec_eval semantics. Queries of the qrels that a run does not answer
score 0 (--missing-queries ignore averages only over answered queries, like BEIR).

Examples:
  jaxir evaluate runs/s1 --data ../shared/data/scifact --split test
  jaxir evaluate runs/s1 --data ../shared/data/scifact --split runs/s1/dev_qrels.tsv \\
      --out runs/s1/dev.trec
  jaxir evaluate --bm25 --data ../shared/data/scifact --split test --out runs/bm25.trec
  jaxir evaluate --run runs/dense.trec --run runs/bm25.trec \\
      --qrels ../shared/data/scifact/qrels/test.tsv --metrics nDCG@10,RR@10,R@100,AP
"""

from __future__ import annotations

import argparse
import json
import pathlib

HELP = "score a trained model on a BEIR split, or TREC runs against qrels (nDCG@10, ...)"

DEFAULT_METRICS = "nDCG@10,RR@10,R@100,AP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir evaluate``."""
    parser.add_argument(
        "model",
        nargs="?",
        type=pathlib.Path,
        metavar="RUN_OR_MODEL_DIR",
        help="model mode: a `jaxir train` workdir or a model directory (dense or SPLADE)",
    )
    parser.add_argument(
        "--run",
        action="append",
        type=pathlib.Path,
        metavar="RUN",
        help="run mode: TREC run file (.gz ok); repeat to compare several runs in one table",
    )
    parser.add_argument(
        "--qrels",
        type=pathlib.Path,
        metavar="QRELS",
        help="run mode: BEIR qrels TSV, e.g. DATA/qrels/test.tsv",
    )
    mode = parser.add_argument_group("model mode")
    mode.add_argument("--data", type=pathlib.Path, metavar="DIR", help="BEIR dataset directory")
    mode.add_argument(
        "--bm25",
        action="store_true",
        help="score the BM25 baseline (bm25s) instead of a model",
    )
    mode.add_argument(
        "--split",
        default="test",
        help="qrels split to score, or a qrels TSV path (default: %(default)s)",
    )
    mode.add_argument(
        "--store",
        type=pathlib.Path,
        metavar="DIR",
        help="document store to search (default: RUN_DIR/store, encoded when missing)",
    )
    mode.add_argument(
        "--index",
        type=pathlib.Path,
        metavar="DIR",
        help="saved searcher over the store (default: RUN_DIR/index if present, else exact)",
    )
    mode.add_argument(
        "-k", type=int, default=100, help="documents retrieved per query (default: %(default)s)"
    )
    mode.add_argument("--out", type=pathlib.Path, metavar="RUN", help="write the run (TREC)")
    parser.add_argument(
        "--metrics",
        default=DEFAULT_METRICS,
        help="comma-separated ir_measures names (default: %(default)s)",
    )
    parser.add_argument(
        "--missing-queries",
        choices=("zero", "ignore"),
        default="zero",
        help="how qrels queries absent from a run count (default: %(default)s)",
    )
    parser.add_argument(
        "--json",
        type=pathlib.Path,
        metavar="FILE",
        help="also write {name: {metric: value}} to this JSON file",
    )


def _write_json(path: pathlib.Path | None, rows: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=2) + "\n")


def _metrics(text: str) -> list[str]:
    metrics = [m.strip() for m in text.split(",") if m.strip()]
    if not metrics:
        raise ValueError("--metrics is empty; pass names like nDCG@10,RR@10")
    return metrics


def _run_model(args: argparse.Namespace, metrics: list[str]) -> int:
    """Model mode: search the split with the model and print its row."""
    from jaxir.data.runs import write_trec_run
    from jaxir.eval.evaluate import format_table
    from jaxir.eval.model_eval import evaluate_bm25, evaluate_model

    if args.run or args.qrels is not None:
        raise ValueError(
            "give RUN_OR_MODEL_DIR or --bm25 (model mode, with --data) or --run/--qrels "
            "(run mode), not both"
        )
    if args.bm25 and args.model is not None:
        raise ValueError(f"give RUN_OR_MODEL_DIR ({args.model}) or --bm25, not both")
    if args.bm25 and (args.store is not None or args.index is not None):
        raise ValueError("--store and --index are a model's; --bm25 indexes the corpus itself")
    if args.data is None:
        what = "BM25" if args.bm25 else args.model
        raise ValueError(f"--data is required to evaluate {what}: the BEIR directory")
    if args.bm25:
        result = evaluate_bm25(args.data, args.split, k=args.k, metrics=metrics)
        name = "bm25"
    else:
        result = evaluate_model(
            args.model,
            args.data,
            args.split,
            store=args.store,
            index=args.index,
            k=args.k,
            metrics=metrics,
        )
        name = args.model.name
    print(format_table({name: result.metrics}))
    if result.stats:
        s = result.stats
        print(
            f"sparsity: {s['query_nnz']:.1f} non-zeros per query, {s['document_nnz']:.1f} per "
            f"document, FLOPS {s['flops']:.2f} (expected multiplications per query-document pair)"
        )
    if args.out is not None:
        write_trec_run(result.run, args.out, tag=name.replace(" ", "_") or "jaxir")
        print(f"run written to {args.out}")
    _write_json(args.json, {name: {**result.metrics, **result.stats}})
    return 0


def run(args: argparse.Namespace) -> int:
    """Evaluates the model, or every ``--run``, and prints the table."""
    from jaxir.data.records import load_qrels
    from jaxir.eval.evaluate import evaluate, format_table

    metrics = _metrics(args.metrics)
    if args.model is not None or args.bm25:
        return _run_model(args, metrics)
    if not args.run or args.qrels is None:
        raise ValueError(
            "nothing to evaluate: pass RUN_OR_MODEL_DIR (or --bm25) with --data, or --run RUN "
            "(repeatable) with --qrels QRELS"
        )
    given = {"--data": args.data, "--store": args.store, "--index": args.index, "--out": args.out}
    extra = [flag for flag, value in given.items() if value is not None]
    if extra:
        raise ValueError(f"{', '.join(extra)}: only for model mode (RUN_OR_MODEL_DIR)")
    qrels = load_qrels(args.qrels)
    rows = {}
    for path in args.run:
        name = path.name.removesuffix(".gz").removesuffix(".trec").removesuffix(".txt")
        if name in rows:
            name = str(path)
        rows[name] = evaluate(path, qrels, metrics, missing_queries=args.missing_queries)
    print(format_table(rows))
    _write_json(args.json, rows)
    return 0
