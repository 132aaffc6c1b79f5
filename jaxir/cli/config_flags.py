"""``--config`` / ``--set`` flags shared by the subcommands that take a run config."""

from __future__ import annotations

import argparse

CONFIG_HELP = "config file (path.py or path.py:arg)"


def add_set_flag(parser: argparse.ArgumentParser, example: str = "train.steps=100") -> None:
    """``--set KEY=VALUE`` (repeatable; ``args.set`` is the list, for :func:`jaxir.config.override`).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_set_flag(parser)
        >>> parser.parse_args(["--set", "a.b=1", "--set", "c=2"]).set
        ['a.b=1', 'c=2']
    """
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config field, e.g. --set {example} (repeatable)",
    )
