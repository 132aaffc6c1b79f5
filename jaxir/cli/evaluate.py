"""Score TREC run files against BEIR qrels and print a results table.

Reads one or more runs (6-column TREC files: query_id Q0 doc_id rank score tag) and a
qrels TSV (query-id <TAB> corpus-id <TAB> score, header optional) and prints one row
per run with the mean of each measure over the queries of the qrels, computed by
ir_measures with trec_eval semantics. Queries of the qrels that a run does not answer
score 0 (--missing-queries ignore averages only over answered queries, like BEIR).

Example:
  jaxir evaluate --run runs/dense.trec --run runs/bm25.trec \\
      --qrels ../shared/data/scifact/qrels/test.tsv --metrics nDCG@10,RR@10,R@100,AP
"""

from __future__ import annotations

import argparse
import json
import pathlib

HELP = "score TREC runs against qrels (nDCG@10, RR@10, R@100, AP, ...)"

DEFAULT_METRICS = "nDCG@10,RR@10,R@100,AP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir evaluate``."""
    parser.add_argument(
        "--run",
        required=True,
        action="append",
        type=pathlib.Path,
        metavar="RUN",
        help="TREC run file (.gz ok); repeat to compare several runs in one table",
    )
    parser.add_argument(
        "--qrels",
        required=True,
        type=pathlib.Path,
        metavar="QRELS",
        help="BEIR qrels TSV, e.g. DATA/qrels/test.tsv",
    )
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
        help="also write {run name: {metric: value}} to this JSON file",
    )


def run(args: argparse.Namespace) -> int:
    """Evaluates every ``--run`` and prints the table."""
    from jaxir.data.records import load_qrels
    from jaxir.eval.evaluate import evaluate, format_table

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not metrics:
        raise ValueError("--metrics is empty; pass names like nDCG@10,RR@10")
    qrels = load_qrels(args.qrels)
    rows = {}
    for path in args.run:
        name = path.name.removesuffix(".gz").removesuffix(".trec").removesuffix(".txt")
        if name in rows:
            name = str(path)
        rows[name] = evaluate(path, qrels, metrics, missing_queries=args.missing_queries)
    print(format_table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0
