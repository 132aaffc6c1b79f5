"""Run the whole dense pipeline: train -> encode -> index -> evaluate -> export.

Without --data it uses the embedded synthetic collection (generated, no download), so
it runs on a fresh machine in a few minutes of CPU. With --data DIR it uses any BEIR
directory (corpus.jsonl[.gz], queries.jsonl, qrels/train.tsv, qrels/test.tsv).

Prints a table comparing BM25 with the trained dual encoder on the test split
(nDCG@10, RR@10, R@100), the ScaNN recall against exact search, and the path of the
serving bundle, which `jaxir search BUNDLE "question"` answers from.

Example:
  jaxir quickstart
  jaxir quickstart --data ../shared/data/scifact --set train.steps=600
"""

from __future__ import annotations

import argparse
import pathlib

from jaxir.cli.config_flags import add_set_flag

HELP = "train, index, evaluate and export a dense retriever in one go (embedded data by default)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir quickstart``."""
    parser.add_argument("--data", type=pathlib.Path, help="BEIR directory (default: embedded)")
    parser.add_argument(
        "--workdir",
        type=pathlib.Path,
        default=pathlib.Path("runs/quickstart"),
        help="output directory (default: %(default)s)",
    )
    parser.add_argument(
        "--config", help="config file to start from (default: the built-in quickstart settings)"
    )
    add_set_flag(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Builds the config and runs :func:`jaxir.pipeline.quickstart`."""
    from jaxir.config import load_config, override
    from jaxir.pipeline import QUICKSTART, quickstart

    config = load_config(args.config) if args.config else QUICKSTART
    if args.data:
        config = override(config, [f"data.path={args.data}"])
    config = override(config, args.set)
    result = quickstart(config, args.workdir, progress=not args.no_progress)
    print()
    print(result.table)
    return 0
