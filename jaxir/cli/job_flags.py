"""``--coordinator`` / ``--num-processes`` / ``--process-id``: the multi-process job flags.

Shared by the subcommands that run as one process per host (``jaxir train``, ``jaxir
encode``); their values go to :func:`jaxir.distributed.initialize`, which falls back to
``$JAXIR_COORDINATOR`` / ``$JAXIR_NUM_PROCESSES`` / ``$JAXIR_PROCESS_ID`` and to the
cluster auto-detection of a Cloud TPU VM or a SLURM job.
"""

from __future__ import annotations

import argparse


def add_job_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the job flags (``args.coordinator``, ``args.num_processes``, ``args.process_id``).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_job_flags(parser)
        >>> args = parser.parse_args(["--coordinator", "h:1234", "--num-processes", "2",
        ...                           "--process-id", "1"])
        >>> args.coordinator, args.num_processes, args.process_id
        ('h:1234', 2, 1)
        >>> parser.parse_args([]).num_processes is None  # unset: environment / auto-detection
        True
    """
    job = parser.add_argument_group("multi-process job (default: $JAXIR_* or auto-detected)")
    job.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    job.add_argument("--num-processes", type=int, metavar="N", help="processes in the job")
    job.add_argument("--process-id", type=int, metavar="I", help="this process, in [0, N)")
