"""Train a dense dual encoder from a config file; rerunning the same command resumes exactly.

The config is a Python file defining get_config(arg) (see configs/). Any field can be
overridden with --set section.field=value (an unknown key fails with the closest
valid names). Everything a run needs to continue -- params, optimizer state, step,
RNG, data position, config -- is checkpointed under WORKDIR/checkpoints, so after a
crash or preemption the identical command continues where it stopped.

Outputs in WORKDIR: metrics.jsonl, tensorboard/, checkpoints/, groups.jsonl (training
groups with BM25 hard negatives), model/ (Hugging Face towers, each with jaxir_encoder.json).

Multi-host: run the same command on every host (one process each). On a Cloud TPU VM
pod or in a SLURM job the processes find each other by themselves; elsewhere give
--coordinator HOST:PORT --num-processes N --process-id I (or $JAXIR_COORDINATOR,
$JAXIR_NUM_PROCESSES, $JAXIR_PROCESS_ID). `jaxir pod-test` runs such a job on this
machine with CPU processes and checks it against a single process.

Example:
  jaxir train --config configs/dense_scifact.py --workdir runs/d1
  jaxir train --config configs/dense_tiny.py --workdir runs/t --set train.steps=50 --set model.pooling=cls
"""

from __future__ import annotations

import argparse
import pathlib

from jaxir.cli.config_flags import CONFIG_HELP, add_set_flag
from jaxir.cli.job_flags import add_job_flags

HELP = "train a retriever, dense or SPLADE (resumes from WORKDIR if it has checkpoints)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir train``."""
    parser.add_argument("--config", required=True, help=CONFIG_HELP)
    parser.add_argument("--workdir", required=True, type=pathlib.Path, help="output directory")
    add_set_flag(parser)
    parser.add_argument(
        "--resume",
        type=pathlib.Path,
        help="another run's checkpoints/ directory to start from when WORKDIR has none",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_job_flags(parser)


def run(args: argparse.Namespace) -> int:
    """Joins the job (if any), loads the config, applies overrides, trains, prints where the model is."""
    import jax

    from jaxir import distributed

    # First: importing the training code (bm25s, via jaxir.data) already starts the XLA backend.
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    from jaxir.config import load_config, override
    from jaxir.eval.evaluate import format_table
    from jaxir.training.loop import train

    config = override(load_config(args.config), args.set)
    result = train(config, args.workdir, resume=args.resume, progress=not args.no_progress)
    if jax.process_index() == 0:
        if result.validation:
            print(format_table({f"dev ({config.data.train_split} hold-out)": result.validation}))
        print(f"Model: {result.model_dir}")
    return 0
