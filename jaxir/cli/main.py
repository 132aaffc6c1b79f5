"""``jaxir`` entry point: dispatches to one module per subcommand.

Each subcommand module in :mod:`jaxir.cli` defines ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``; adding a subcommand means adding its module name to
:data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxir import host_memory

#: Subcommand name -> module under jaxir.cli (imported lazily so ``--help`` is instant).
SUBCOMMANDS = {
    "quickstart": "quickstart",
    "mine": "mine",
    "train": "train",
    "encode": "encode",
    "index": "index",
    "search": "search",
    "evaluate": "evaluate",
    "fuse": "fuse",
    "export": "export",
    "memory": "memory",
    "compile": "compile",
    "serve": "serve",
    "pod-test": "pod_test",
}

DESCRIPTION = """\
jaxir: train, evaluate and serve neural retrievers with JAX.

Typical flow:
  jaxir quickstart                                  # everything, on the embedded collection
  jaxir mine --data ../shared/data/scifact --negatives bm25 --out groups.jsonl
  jaxir train --config configs/dense_scifact.py --workdir runs/d1 --set data.groups=groups.jsonl
  jaxir encode --model runs/d1/export/model --data ../shared/data/scifact --out emb/
  jaxir index emb/ --out index/                     # ScaNN (or exact) index
  jaxir search BUNDLE "what causes ..."            # query a serving bundle
  jaxir evaluate --run run.trec --qrels qrels/test.tsv

Run `jaxir SUBCOMMAND --help` for the options of each step.
"""


def _available() -> dict[str, object]:
    modules = {}
    for name, module in SUBCOMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"jaxir.cli.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"jaxir.cli.{module}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The full ``jaxir`` argument parser (subcommands included)."""
    parser = argparse.ArgumentParser(
        prog="jaxir", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name, module in _available().items():
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs ``jaxir`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    Makes glibc keep freed host memory first (:func:`jaxir.host_memory.keep_freed_memory`).
    """
    host_memory.keep_freed_memory()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # Library errors are written to be read by people: print them, not a traceback.
        print(f"jaxir {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
