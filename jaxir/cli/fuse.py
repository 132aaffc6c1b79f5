"""Fuse the TREC runs of several retrievers into one run (hybrid search), optionally tuned.

Each --run NAME=PATH is a 6-column TREC run (query_id Q0 doc_id rank score tag) of one
retriever over the same collection (e.g. BM25, dense, SPLADE). They are fused per query
by
  --method rrf      reciprocal-rank fusion: score = sum_s w_s / (k + rank_s); ranks
                    only, so score scales need not agree (Cormack et al. 2009)
  --method convex   sum_s w_s * normalized score_s, scores normalized per query and
                    system (--normalization minmax|zscore|none); a document a system
                    did not return gets that system's lowest normalized score
                    (Bruch et al. 2023); weights must sum to 1
Ranks come from the scores (ties by doc id); a document missing from a run gets
nothing from it under RRF. Runs that answer different queries are fused over the
union of their queries (a warning gives the counts).

Weights come from --weights NAME=W,... (default: equal), or from a grid search on a
dev split with --tune-on DATA_DIR:SPLIT: every weight vector on the simplex at
--weight-step (0 to 1, corners included, so tuning may keep one system alone), times
each k of --ks for RRF, is scored by --tune-metric on the queries of
DATA_DIR/qrels/SPLIT.tsv, and the best is used (ties prefer weights closer to equal,
then k closer to 60). The runs must include the dev queries. The tuning split must
not share queries with the split you report: with --evaluate, a warning says how many
queries they share.

--evaluate DATA_DIR:SPLIT scores every input run and the fused run on that split's
qrels (ir_measures, trec_eval semantics, like `jaxir evaluate`) and prints one table.
Either flag also takes a qrels TSV path instead of DATA_DIR:SPLIT.

The runs: `jaxir evaluate MODEL --data DATA_DIR --split SPLIT --out RUN` writes a
model's, `jaxir evaluate --bm25 ...` BM25's. A collection without a dev split (SciFact)
has one in every `jaxir train` workdir: WORKDIR/dev_qrels.tsv, the training queries that
run held out (data.validation_queries; the same queries for the same train.seed), so
models trained that way can be fused with weights tuned on queries none of them saw,
and the weights then given to the final models' test runs with --weights.

Examples:
  jaxir fuse --run bm25=runs/bm25.trec --run dense=runs/dense.trec --method rrf \\
      --out runs/fused.trec --evaluate ../shared/data/scifact:test
  jaxir fuse --run bm25=runs/bm25.trec --run dense=runs/dense.trec \\
      --run splade=runs/splade.trec --method convex --tune-on ../shared/data/scifact:dev \\
      --evaluate ../shared/data/scifact:test --out runs/fused.trec --json runs/fused.json
  jaxir fuse --run bm25=runs/bm25.trec --run dense=runs/dense.trec --method convex \\
      --weights bm25=0.3,dense=0.7 --out runs/fused.trec
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys

from jaxir.cli.evaluate import DEFAULT_METRICS

HELP = "fuse runs of several retrievers (RRF or convex), weights tuned on a dev split"

DEFAULT_DEPTH = 1000
DEFAULT_TOP = 5


def parse_weights(text: str) -> dict[str, float]:
    """``"bm25=0.3,dense=0.7"`` -> ``{"bm25": 0.3, "dense": 0.7}`` (argparse type).

    Also used by ``jaxir search --fuse`` for its weights.

    >>> parse_weights("bm25=0.3, dense=0.7")
    {'bm25': 0.3, 'dense': 0.7}
    """
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        name = name.strip()
        if not sep or not name:
            raise argparse.ArgumentTypeError(
                f"expected NAME=WEIGHT,... (e.g. bm25=0.3,dense=0.7), got {text!r}"
            )
        if name in weights:
            raise argparse.ArgumentTypeError(f"{name!r} is weighted twice in {text!r}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"weight of {name!r} must be a number, got {value.strip()!r} in {text!r}"
            ) from None
    return weights


def _run_spec(text: str) -> tuple[str | None, pathlib.Path]:
    """``NAME=PATH`` or ``PATH`` (the name is then the file name without .trec/.gz)."""
    name, sep, path = text.partition("=")
    if not sep:
        return None, pathlib.Path(text)
    if not name or not path:
        raise argparse.ArgumentTypeError(
            f"expected NAME=PATH (e.g. bm25=runs/bm25.trec), got {text!r}"
        )
    if "," in name:
        raise argparse.ArgumentTypeError(
            f"run name {name!r} may not contain ',' (it separates --weights)"
        )
    return name, pathlib.Path(path)


def _numbers(text: str) -> tuple[float, ...]:
    """``"10,60"`` -> ``(10, 60)`` (argparse type; integral values become ints)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return tuple(int(v) if v.is_integer() else v for v in values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir fuse``."""
    parser.add_argument(
        "--run",
        dest="runs",
        required=True,
        action="append",
        type=_run_spec,
        metavar="NAME=PATH",
        help="a system's TREC run (.gz ok); repeat for each system (at least two)",
    )
    parser.add_argument(
        "--method",
        choices=("rrf", "convex"),
        default="rrf",
        help="reciprocal-rank fusion or convex combination of normalized scores "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--out", required=True, type=pathlib.Path, metavar="RUN", help="fused TREC run to write"
    )
    parser.add_argument(
        "--weights",
        type=parse_weights,
        metavar="NAME=W,...",
        help="one weight per system (default: equal; convex weights must sum to 1)",
    )
    parser.add_argument(
        "--k", type=float, metavar="K", help="RRF's constant (default: 60; rrf only, no --tune-on)"
    )
    parser.add_argument(
        "--normalization",
        choices=("minmax", "zscore", "none"),
        help="per-query score normalization (convex only; default: minmax)",
    )
    parser.add_argument(
        "--depth",
        type=int,
        default=DEFAULT_DEPTH,
        help="documents per query taken from each run and kept in the fused run "
        "(default: %(default)s)",
    )
    tune = parser.add_argument_group("tuning on a dev split")
    tune.add_argument(
        "--tune-on",
        metavar="DATA_DIR:SPLIT",
        help="choose weights (and RRF's k) on this split's qrels, e.g. ../shared/data/scifact:dev",
    )
    tune.add_argument(
        "--tune-metric", metavar="METRIC", help="ir_measures name to maximize (default: nDCG@10)"
    )
    tune.add_argument(
        "--weight-step", type=float, metavar="STEP", help="simplex grid step (default: 0.1)"
    )
    tune.add_argument(
        "--ks", type=_numbers, metavar="K,...", help="RRF k values tried (default: 10,20,40,60,100)"
    )
    tune.add_argument(
        "--top",
        type=int,
        default=DEFAULT_TOP,
        help="best candidates printed (default: %(default)s)",
    )
    report = parser.add_argument_group("evaluation and output")
    report.add_argument(
        "--evaluate",
        metavar="DATA_DIR:SPLIT",
        help="score every run and the fused run on this split, e.g. ../shared/data/scifact:test",
    )
    report.add_argument(
        "--metrics",
        default=DEFAULT_METRICS,
        help="comma-separated ir_measures names for --evaluate (default: %(default)s)",
    )
    report.add_argument("--tag", help="run name in column 6 (default: fused-METHOD)")
    report.add_argument(
        "--json",
        type=pathlib.Path,
        metavar="FILE",
        help="also write the choice, the tuning table and the metrics as JSON",
    )


def _warn(message: str) -> None:
    print(f"jaxir fuse: warning: {message}", file=sys.stderr)


def _qrels_path(text: str, flag: str) -> pathlib.Path:
    """The qrels TSV of ``DATA_DIR:SPLIT`` (or ``text`` itself when it is a file)."""
    from jaxir.data.errors import DataError

    if pathlib.Path(text).is_file():
        return pathlib.Path(text)
    root, sep, split = text.rpartition(":")
    if not sep or not root or not split:
        raise ValueError(
            f"{flag} {text!r}: expected DATA_DIR:SPLIT (a BEIR directory and a qrels split, "
            "e.g. ../shared/data/scifact:dev) or the path of a qrels TSV"
        )
    data = pathlib.Path(root)
    if not data.is_dir():
        raise DataError(data, f"not a directory; {flag} takes DATA_DIR:SPLIT with a BEIR directory")
    path = data / "qrels" / f"{split}.tsv"
    if not path.is_file():
        present = sorted(p.stem for p in (data / "qrels").glob("*.tsv"))
        raise DataError(
            path, f"no qrels for split {split!r} ({flag}); splits present: {present or 'none'}"
        )
    return path


def _read_runs(
    specs: list[tuple[str | None, pathlib.Path]], out: pathlib.Path
) -> tuple[dict, dict]:
    """``({name: run}, {name: path})`` in the order given; checks names and contents."""
    from jaxir.data.errors import DataError
    from jaxir.data.runs import read_trec_run

    if len(specs) < 2:
        raise ValueError("fusion needs at least two --run NAME=PATH (one per system)")
    runs, paths = {}, {}
    for name, path in specs:
        if name is None:
            name = path.name.removesuffix(".gz").removesuffix(".trec").removesuffix(".txt")
        if name in runs:
            raise ValueError(
                f"two runs are named {name!r} ({paths[name]} and {path}); name them with "
                "--run NAME=PATH"
            )
        if os.path.abspath(path) == os.path.abspath(out):
            raise ValueError(f"--out {out} is also the run {name!r}; write the fused run elsewhere")
        run = read_trec_run(path)
        if not run:
            raise DataError(
                path,
                f"run {name!r} is empty: expected TREC lines (query_id Q0 doc_id rank score tag)",
            )
        runs[name], paths[name] = run, path
    return runs, paths


def _check_flags(args: argparse.Namespace) -> None:
    if args.depth < 1:
        raise ValueError(f"--depth must be >= 1, got {args.depth}")
    if args.method == "rrf" and args.normalization is not None:
        raise ValueError("--normalization applies to --method convex only (RRF uses ranks)")
    if args.method == "convex" and args.k is not None:
        raise ValueError("--k is RRF's constant; it does not apply to --method convex")
    if args.method == "convex" and args.ks is not None:
        raise ValueError("--ks lists RRF constants; it does not apply to --method convex")
    if args.tune_on is not None:
        if args.weights is not None:
            raise ValueError("give --weights or --tune-on (which chooses the weights), not both")
        if args.k is not None:
            raise ValueError("--tune-on chooses k; list the values to try with --ks, not --k")
    else:
        tuning = {
            "--tune-metric": args.tune_metric,
            "--weight-step": args.weight_step,
            "--ks": args.ks,
        }
        given = [flag for flag, value in tuning.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --tune-on DATA_DIR:SPLIT")
    if args.top < 0:
        raise ValueError(f"--top must be >= 0, got {args.top}")


def _warn_query_sets(runs: dict) -> None:
    union = set().union(*(set(run) for run in runs.values()))
    if all(len(run) == len(union) for run in runs.values()):
        return
    counts = ", ".join(f"{name}: {len(run)}" for name, run in runs.items())
    _warn(
        f"the runs answer different queries ({counts}; union: {len(union)}); fusing the "
        "union, where a run that lacks a query adds nothing to it"
    )


def _coverage(runs: dict, qrels: dict, flag: str, text: str, *, strict: bool) -> None:
    """Errors (``strict``) or warns when a run answers few of the split's queries."""
    for name, run in runs.items():
        answered = sum(q in run for q in qrels)
        if answered == len(qrels):
            continue
        message = f"run {name!r} answers {answered} of the {len(qrels)} queries of {flag} {text}"
        if strict and answered == 0:
            raise ValueError(f"{message}; search the {flag} queries with every system first")
        _warn(f"{message}; it adds nothing to the other {len(qrels) - answered}")


def _format_weight(w: float) -> str:
    return f"{w:g}"


def _candidate_table(choice, names: list[str], top: int) -> str:
    """Best ``top`` candidates and the single systems, one aligned row each."""
    rrf = choice.method == "rrf"
    header = ["rank", *names, *(["k"] if rrf else []), choice.metric]
    ranked = list(enumerate(choice.candidates, start=1))
    rows = ranked[:top]
    singles = [
        r for r in ranked if max(r[1].weights.values()) == 1.0 and (not rrf or r[1].k == choice.k)
    ]

    def cells(rank, c):
        return [
            str(rank),
            *(_format_weight(c.weights[n]) for n in names),
            *([f"{c.k:g}"] if rrf else []),
            f"{c.score:.4f}",
        ]

    body = [cells(*r) for r in rows]
    single_body = [cells(*r) for r in singles]
    table = [header, *body, *single_body]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]

    def line(cells_):
        return "  " + "  ".join(c.rjust(w) for c, w in zip(cells_, widths))

    out = [line(header), *(line(c) for c in body)]
    if single_body:
        out.append("  single systems:")
        out += [line(c) for c in single_body]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    """Fuses the runs (tuning on --tune-on if given), writes --out, prints the summary."""
    from jaxir.data.records import load_qrels
    from jaxir.data.runs import write_trec_run
    from jaxir.eval.evaluate import evaluate, format_table
    from jaxir.search.fusion import (
        DEFAULT_RRF_K,
        FusionGrid,
        fuse_runs,
        tune_fusion,
    )

    _check_flags(args)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not metrics:
        raise ValueError("--metrics is empty; pass names like nDCG@10,RR@10")
    runs, paths = _read_runs(args.runs, args.out)
    names = list(runs)
    counts = ", ".join(f"{name} ({len(run)} queries)" for name, run in runs.items())
    print(f"jaxir fuse: {len(runs)} runs: {counts}; method {args.method}")
    _warn_query_sets(runs)
    normalization = args.normalization or "minmax"
    eval_qrels = None
    if args.evaluate is not None:  # read before tuning, so a bad path fails fast
        eval_qrels = load_qrels(_qrels_path(args.evaluate, "--evaluate"))

    choice = None
    if args.tune_on is not None:
        dev_qrels = load_qrels(_qrels_path(args.tune_on, "--tune-on"))
        _coverage(runs, dev_qrels, "--tune-on", args.tune_on, strict=True)
        defaults = FusionGrid()
        grid = FusionGrid(
            weight_step=defaults.weight_step if args.weight_step is None else args.weight_step,
            ks=defaults.ks if args.ks is None else args.ks,
        )
        choice = tune_fusion(
            runs,
            dev_qrels,
            method=args.method,
            metric=args.tune_metric or "nDCG@10",
            grid=grid,
            normalization=normalization,
            depth=args.depth,
        )
        print(
            f"tuned on {args.tune_on} ({choice.num_queries} queries, {choice.metric}): "
            f"{len(choice.candidates)} candidates; best {min(args.top, len(choice.candidates))}:"
        )
        print(_candidate_table(choice, names, args.top))
        weights, k = {name: choice.weights[name] for name in names}, choice.k
        if eval_qrels is not None:
            shared = set(dev_qrels) & set(eval_qrels)
            if shared:
                _warn(
                    f"{len(shared)} of the {len(eval_qrels)} --evaluate queries are also "
                    f"--tune-on queries; the weights were chosen on them, so the fused score "
                    "below is not a fair test number: tune on a split disjoint from the one "
                    "you report"
                )
    else:
        weights = args.weights
        k = DEFAULT_RRF_K if args.k is None else args.k

    fused = fuse_runs(
        runs,
        method=args.method,
        weights=weights,
        k=k,
        normalization=normalization,
        depth=args.depth,
    )
    shown = ",".join(f"{n}={_format_weight(w)}" for n, w in weights.items()) if weights else "equal"
    setting = f"k={k:g}" if args.method == "rrf" else f"normalization={normalization}"
    dev = f" (dev {choice.metric} {choice.score_on_dev:.4f})" if choice is not None else ""
    print(f"fused with {args.method} {setting}, weights {shown}{dev}")
    write_trec_run(fused, args.out, tag=args.tag or f"fused-{args.method}")
    print(f"wrote {args.out}: {len(fused)} queries, up to {args.depth} documents each")

    rows = None
    if eval_qrels is not None:
        _coverage(runs, eval_qrels, "--evaluate", args.evaluate, strict=False)
        rows = {name: evaluate(run, eval_qrels, metrics) for name, run in runs.items()}
        label = f"fused ({args.method})"
        rows[label if label not in rows else "fused"] = evaluate(fused, eval_qrels, metrics)
        print(f"evaluated on {args.evaluate} ({len(eval_qrels)} queries):")
        print(format_table(rows))

    if args.json is not None:
        summary = {
            "method": args.method,
            "weights": weights,
            "k": k if args.method == "rrf" else None,
            "normalization": normalization if args.method == "convex" else None,
            "depth": args.depth,
            "runs": {name: str(path) for name, path in paths.items()},
            "out": str(args.out),
            "tuned_on": None
            if choice is None
            else {
                "split": args.tune_on,
                "metric": choice.metric,
                "score": choice.score_on_dev,
                "num_queries": choice.num_queries,
                "candidates": [dataclasses.asdict(c) for c in choice.candidates],
            },
            "evaluated_on": None if rows is None else {"split": args.evaluate, "metrics": rows},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0
