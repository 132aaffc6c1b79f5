"""Run a multi-host training job on this machine and check it against a single process.

Launches --processes copies of `jaxir train` as one job (each process with
--devices-per-process fake CPU devices, joined by jax.distributed on loopback with gloo
collectives: the code path of a TPU pod, one process per host), then the same run as
one process with processes x devices devices -- the same mesh, the same global batch.
Prints the per-step losses of both side by side and the step-time overhead of the
multi-process job, and exits 1 when a loss differs by more than --tolerance. A process
that dies fails the job at once (the others are stopped) and its last stderr lines are
shown.

Example:
  jaxir pod-test --processes 2 --devices-per-process 4
  jaxir pod-test --processes 4 --devices-per-process 2 --config configs/dense_tiny.py --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence

from jaxir.cli.config_flags import CONFIG_HELP, add_set_flag

HELP = "run multi-host training as local CPU processes and compare it with one process"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir pod-test``."""
    parser.add_argument("--processes", type=int, default=2, help="processes in the job")
    parser.add_argument(
        "--devices-per-process", type=int, default=4, help="fake CPU devices of each process"
    )
    parser.add_argument("--config", default="configs/dense_tiny.py", help=CONFIG_HELP)
    parser.add_argument("--steps", type=int, help="training steps (default: the config's)")
    add_set_flag(parser)
    parser.add_argument(
        "--workdir",
        type=pathlib.Path,
        help="keep both runs and their logs here (default: a temporary directory, removed "
        "unless a run fails)",
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-5, help="largest allowed per-step loss difference"
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds each job may run before it is stopped"
    )


def train_command(config: str, workdir: pathlib.Path, overrides: Sequence[str] = ()) -> list[str]:
    """The argv of one ``jaxir train`` process (no progress bar); the job topology comes from
    the ``JAXIR_*`` environment a :class:`~jaxir.distributed.LocalJob` sets."""
    sets = [word for item in overrides for word in ("--set", item)]
    return [
        sys.executable,
        "-m",
        "jaxir.cli.main",
        "train",
        "--config",
        config,
        "--workdir",
        str(workdir),
        "--no-progress",
        *sets,
    ]


def run_training(
    config: str,
    workdir: pathlib.Path,
    *,
    processes: int,
    devices_per_process: int,
    overrides: Sequence[str] = (),
    timeout: float = 900,
    env: Mapping[str, str] | None = None,
) -> None:
    """Trains ``config`` into ``workdir`` as a ``processes``-process local job (logs in
    ``workdir/logs``); raises :class:`~jaxir.distributed.ProcessFailedError` /
    :class:`~jaxir.distributed.JobTimeoutError` when it does not finish cleanly."""
    from jaxir.distributed import LocalJob

    command = train_command(config, workdir, overrides)
    job = LocalJob(
        command,
        num_processes=processes,
        devices_per_process=devices_per_process,
        log_dir=workdir / "logs",
        env=env,
    )
    with job:
        job.wait(timeout)


def median_step_seconds(metrics: Mapping[int, Mapping[str, float]]) -> float:
    """Median ``step_s`` over the steps after the first (whose time includes compilation)."""
    times = [m["step_s"] for step, m in sorted(metrics.items()) if step > 1 and "step_s" in m]
    return statistics.median(times) if times else float("nan")


def compare(
    pod: Mapping[int, Mapping[str, float]],
    single: Mapping[int, Mapping[str, float]],
    *,
    pod_name: str,
    single_name: str,
) -> tuple[str, float]:
    """``(table, largest |loss difference|)`` of two runs' ``{step: metrics}``; a step only one
    run has counts as an infinite difference."""
    rows = [f"{'step':>4}  {'loss ' + pod_name:>14}  {'loss ' + single_name:>14}  {'|diff|':>9}"]
    show = lambda x: f"{x:14.8f}" if x is not None else f"{'-':>14}"  # noqa: E731
    worst = 0.0
    for step in sorted(set(pod) | set(single)):
        a, b = pod.get(step, {}).get("loss"), single.get(step, {}).get("loss")
        diff = abs(a - b) if a is not None and b is not None else float("inf")
        worst = max(worst, diff)
        rows.append(f"{step:>4}  {show(a)}  {show(b)}  {diff:9.2e}")
    return "\n".join(rows), worst


def run(args: argparse.Namespace) -> int:
    """Runs the job, then the single process; prints the comparison; 1 on a mismatch or failure."""
    # This process only launches and reads files: keep JAX (started by the imports below)
    # off any accelerator the machine has.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from jaxir.distributed import JobTimeoutError, ProcessFailedError
    from jaxir.training.loop import metrics_by_step

    if args.processes < 2:
        raise ValueError(
            f"--processes must be at least 2 to test a multi-process job, got {args.processes}."
        )
    overrides = [*args.set, *([f"train.steps={args.steps}"] if args.steps else [])]
    root = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix="jaxir-pod-test-"))
    pod_name = f"{args.processes}x{args.devices_per_process}"
    single_name = f"1x{args.processes * args.devices_per_process}"
    runs = {
        pod_name: (args.processes, args.devices_per_process),
        single_name: (1, args.processes * args.devices_per_process),
    }
    try:
        for name, (processes, devices) in runs.items():
            print(
                f"Training with {processes} process(es) x {devices} CPU devices in {root / name} ...",
                flush=True,
            )
            run_training(
                args.config,
                root / name,
                processes=processes,
                devices_per_process=devices,
                overrides=overrides,
                timeout=args.timeout,
            )
        pod, single = metrics_by_step(root / pod_name), metrics_by_step(root / single_name)
    except (ProcessFailedError, JobTimeoutError) as e:
        print(f"jaxir pod-test: error: {e}\n(runs and logs kept in {root})", file=sys.stderr)
        return 1
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    table, worst = compare(pod, single, pod_name=pod_name, single_name=single_name)
    print(table)
    pod_s, single_s = median_step_seconds(pod), median_step_seconds(single)
    print(
        f"median step time (steps 2+): {pod_name} {pod_s:.4f}s, {single_name} {single_s:.4f}s "
        f"-> overhead x{pod_s / single_s:.2f}"
    )
    # The machine-readable line of benchmarks/ (DESIGN principle 8): roofline_fraction is
    # the job's step rate over the best step rate of the two runs.
    result = {
        "name": f"pod_test_step_time_{pod_name}_vs_{single_name}",
        "unit": "s/step",
        "jaxir": pod_s,
        "peer": f"jaxir, 1 process x {args.processes * args.devices_per_process} devices",
        "peer_value": single_s,
        "ratio": pod_s / single_s,
        "roofline_fraction": min(1.0, single_s / pod_s),
    }
    print("RESULT " + json.dumps(result))
    if worst > args.tolerance:
        print(
            f"jaxir pod-test: losses differ by {worst:.2e} > --tolerance {args.tolerance:g}.",
            file=sys.stderr,
        )
        return 1
    print(
        f"OK: every step's loss agrees within {args.tolerance:g} (largest difference {worst:.2e})."
    )
    return 0
