"""Multi-process (multi-host) jobs: joining one, agreeing inside one, and launching one here.

A TPU pod runs one process per host; the processes join through ``jax.distributed``
and from then on every ``jax.Array`` on the global mesh spans all of them, and every
jitted computation on such arrays must be called by *all* processes (in the same
order), or the job deadlocks. This module holds the few pieces the training loop and
the CLI need for that:

* :func:`initialize` joins the job from explicit arguments, the ``JAXIR_COORDINATOR`` /
  ``JAXIR_NUM_PROCESSES`` / ``JAXIR_PROCESS_ID`` environment, or the cluster
  auto-detection of ``jax.distributed.initialize()`` on a Cloud TPU VM or a SLURM job;
  it is a no-op for a single process;
* :func:`main_first` lets process 0 write shared files (data caches) before the others
  read them; :func:`agree` makes every process take process 0's decision (time budgets);
  :func:`fetch` copies global arrays to every host (for saving a model); :func:`barrier`
  waits for every process (before process 0 writes a store's manifest) and
  :func:`gather` stacks each process's host arrays on every host (per-host top-k
  results, merged by :mod:`jaxir.index.distributed_exact`);
* :class:`LocalJob` launches ``N`` processes of one command on this machine, joined on
  loopback with CPU (gloo) collectives and ``K`` fake CPU devices each: a CPU "pod" that
  runs the real multi-host code path in tests (``jaxir pod-test``). A process that dies
  fails the whole job at once, naming it and showing its last stderr lines.

Example (a single process: everything is a no-op):
    >>> initialize(num_processes=1)
    >>> with main_first("prepare"):
    ...     pass
    >>> agree(True)
    True
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

#: Environment variables :func:`initialize` reads when its arguments are not given.
ENV_COORDINATOR = "JAXIR_COORDINATOR"
ENV_NUM_PROCESSES = "JAXIR_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXIR_PROCESS_ID"

#: The XLA flag that gives a CPU process ``K`` (fake) devices.
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def _int_setting(value: int | str | None, flag: str, env: str) -> int | None:
    raw = os.environ.get(env) if value is None else value
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{flag} (or ${env}) must be an integer, got {raw!r}.") from None


def _on_cluster() -> bool:
    """Whether ``jax.distributed.initialize()`` can find the job by itself: a Cloud TPU VM
    (its metadata server names the workers) or a SLURM step of several tasks."""
    if int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1"))) > 1:
        return True
    try:  # jax's own TPU probe (PCI device ids), private: absent -> not a TPU VM
        from jax._src import hardware_utils

        return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
    except (ImportError, AttributeError):
        return False


def initialize(
    coordinator: str | None = None,
    num_processes: int | str | None = None,
    process_id: int | str | None = None,
) -> None:
    """Joins this process to a multi-process JAX job (call before anything touches devices).

    Each argument falls back to its environment variable (:data:`ENV_COORDINATOR`,
    :data:`ENV_NUM_PROCESSES`, :data:`ENV_PROCESS_ID`). With none of them set, a Cloud
    TPU VM or a multi-task SLURM step is joined by ``jax.distributed.initialize()``'s own
    cluster detection (so ``tpu/run.sh -- jaxir train ...`` needs no flags); anywhere
    else, and whenever ``num_processes`` is 1, this is a no-op. Cross-process collectives
    on CPU use gloo (pinned here; MPI stays if it was chosen).

    Args:
      coordinator: ``host:port`` of process 0's coordination service.
      num_processes: how many processes the job has.
      process_id: this process's index in ``[0, num_processes)``.

    Raises:
      ValueError: a coordinator without a process count or id (or the reverse), an id out
        of range, or a non-integer setting; the message names the flag and variable.
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    count = _int_setting(num_processes, "--num-processes", ENV_NUM_PROCESSES)
    index = _int_setting(process_id, "--process-id", ENV_PROCESS_ID)
    if count == 1:
        return
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator is None and count is None and index is None:
        if _on_cluster():
            _join()
        return
    missing = [
        f"{flag} (or ${env})"
        for flag, env, value in (
            ("--coordinator", ENV_COORDINATOR, coordinator),
            ("--num-processes", ENV_NUM_PROCESSES, count),
            ("--process-id", ENV_PROCESS_ID, index),
        )
        if value is None
    ]
    if missing:
        raise ValueError(
            f"A multi-process job needs a coordinator address, a process count and a process "
            f"id; missing: {', '.join(missing)}."
        )
    if not 0 <= index < count:
        raise ValueError(f"--process-id={index} is outside [0, --num-processes={count}).")
    _join(coordinator_address=coordinator, num_processes=count, process_id=index)


def _join(**settings: Any) -> None:
    """``jax.distributed.initialize(**settings)``, with the fix named when it comes too late."""
    try:
        jax.distributed.initialize(**settings)
    except RuntimeError as e:
        if "must be called before" not in str(e):
            raise
        raise RuntimeError(
            "jaxir.distributed.initialize() came after JAX started its backend in this "
            "process. Call it first thing, before importing jaxir.training or jaxir.data "
            "(importing bm25s runs a JAX computation) and before any jax.devices() call."
        ) from None


@contextlib.contextmanager
def main_first(name: str) -> Iterator[None]:
    """Runs the block on process 0, then (after a barrier named ``name``) on the others.

    For work that writes files into a directory all processes may share (the synthetic
    collection, the tokenizer, mined training groups): process 0 writes them, the
    others find them written and only read. On hosts with their own disks each
    process writes its own copy, which is just as correct. Every process must enter.
    """
    if jax.process_count() == 1:
        yield
        return
    from jax.experimental import multihost_utils

    if jax.process_index() != 0:
        multihost_utils.sync_global_devices(name)
    yield
    if jax.process_index() == 0:
        multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
    """Process 0's ``flag`` on every process (a collective: all processes must call it).

    For decisions taken from per-host readings, like a wall-clock budget: if one
    process stopped training while another took a step, the job would deadlock.
    """
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def fetch(tree: Any) -> Any:
    """``tree`` with every ``jax.Array`` as a numpy array of its global value on this host.

    With several processes this is an all-gather that every process must call (arrays
    sharded across hosts are not readable from one of them); with one it is
    ``jax.device_get``.
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def barrier(name: str) -> None:
    """Waits until every process of the job reached the barrier ``name`` (no-op for one).

    For files one process writes after all the others wrote theirs (a store's manifest
    after every process wrote its shards). Every process must call it, with the same
    names in the same order.
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def gather(tree: Any) -> Any:
    """Every process's host value of each leaf of ``tree``, stacked: ``[processes, ...]``.

    Each process passes its own NumPy (or host-local) arrays, of the same shapes and
    dtypes on every process; every process gets them all back, process ``i``'s at index
    ``i`` of the new leading axis. A collective: all processes must call it. With one
    process it just adds the axis.

    Example:
      >>> gather({"scores": np.zeros((2, 3), np.float32)})["scores"].shape
      (1, 2, 3)
    """
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: np.asarray(x)[None], tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=False)


# --- launching a job on this machine ---------------------------------------------------


class ProcessFailedError(RuntimeError):
    """A process of a :class:`LocalJob` exited with an error; the rest were stopped."""


class JobTimeoutError(TimeoutError):
    """A :class:`LocalJob` ran past its timeout; all its processes were stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_process_env(devices: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) set up for a CPU JAX process with
    ``devices`` fake devices (``XLA_FLAGS`` keeps its other flags)."""
    env = dict(os.environ if base is None else base)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
    env["XLA_FLAGS"] = " ".join([*flags, f"{DEVICE_COUNT_FLAG}={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class LocalJob:
    """``num_processes`` copies of ``command`` on this machine, joined into one JAX job.

    Process ``i`` gets ``JAXIR_COORDINATOR=127.0.0.1:<free port>``,
    ``JAXIR_NUM_PROCESSES``, ``JAXIR_PROCESS_ID=i`` (what :func:`initialize` reads) and
    ``devices_per_process`` CPU devices; its stdout / stderr go to
    ``log_dir/process_<i>.{out,err}``. Use it as a context manager: leaving the block
    stops whatever still runs (SIGTERM, then SIGKILL), so no process outlives it.

    Args:
      command: the argv every process runs, e.g. ``[sys.executable, "-m", "jaxir.cli.main",
        "train", ...]``.
      num_processes: processes in the job (1: a plain single-process run).
      devices_per_process: fake CPU devices of each process.
      log_dir: where the per-process logs go (created).
      env: extra environment variables for every process.
      cwd: working directory of the processes.

    Example:
      >>> import sys, tempfile
      >>> code = "import os; print(os.environ['JAXIR_PROCESS_ID'])"
      >>> with LocalJob([sys.executable, "-c", code], num_processes=2, devices_per_process=1,
      ...               log_dir=tempfile.mkdtemp()) as job:
      ...     job.wait(timeout=60)
      >>> [job.stdout(i).strip() for i in range(2)]
      ['0', '1']
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        num_processes: int,
        devices_per_process: int,
        log_dir: str | pathlib.Path,
        env: Mapping[str, str] | None = None,
        cwd: str | pathlib.Path | None = None,
    ):
        if num_processes < 1 or devices_per_process < 1:
            raise ValueError(
                f"A local job needs >= 1 process and >= 1 device per process, got "
                f"num_processes={num_processes}, devices_per_process={devices_per_process}."
            )
        self.command = list(command)
        self.num_processes = num_processes
        self.devices_per_process = devices_per_process
        self.log_dir = pathlib.Path(log_dir)
        self.env = dict(env or {})
        self.cwd = cwd
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> LocalJob:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self, index: int, stream: str) -> pathlib.Path:
        """The log file of process ``index``'s ``stream`` (``"out"`` or ``"err"``)."""
        return self.log_dir / f"process_{index}.{stream}"

    def stdout(self, index: int) -> str:
        """Everything process ``index`` printed so far."""
        return self.log(index, "out").read_text(errors="replace")

    def stderr_tail(self, index: int, lines: int = 15) -> str:
        """The last ``lines`` lines process ``index`` wrote to stderr."""
        text = self.log(index, "err").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> LocalJob:
        """Starts every process (a fresh coordinator port each time)."""
        if self.processes:
            raise RuntimeError("This LocalJob was started already; make a new one.")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        coordinator = f"127.0.0.1:{free_port()}"
        base = cpu_process_env(self.devices_per_process) | self.env
        try:
            for i in range(self.num_processes):
                env = base | {
                    ENV_COORDINATOR: coordinator,
                    ENV_NUM_PROCESSES: str(self.num_processes),
                    ENV_PROCESS_ID: str(i),
                }
                with self.log(i, "out").open("wb") as out, self.log(i, "err").open("wb") as err:
                    self.processes.append(
                        subprocess.Popen(
                            self.command, env=env, cwd=self.cwd, stdout=out, stderr=err
                        )
                    )
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self, timeout: float, *, poll: float = 0.1) -> None:
        """Returns when every process exited 0; stops them all at the first failure.

        Raises:
          ProcessFailedError: a process exited non-zero or was killed; the message names
            it, how it ended and its last stderr lines.
          JobTimeoutError: ``timeout`` seconds passed; names the processes still running.
        """
        deadline = time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in self.processes]
            failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                self.stop()
                first = failed[0]
                others = f" (also failed: processes {failed[1:]})" if len(failed) > 1 else ""
                raise ProcessFailedError(
                    f"process {first} of {self.num_processes} {_exit_reason(codes[first])}"
                    f"{others}; stopped the others. Last stderr lines of process {first} "
                    f"({self.log(first, 'err')}):\n{self.stderr_tail(first)}"
                )
            if all(code == 0 for code in codes):
                return
            if time.monotonic() > deadline:
                running = [i for i, code in enumerate(codes) if code is None]
                self.stop()
                raise JobTimeoutError(
                    f"The {self.num_processes}-process job ran past {timeout:.0f}s; stopped "
                    f"processes {running}. Logs: {self.log_dir}"
                )
            time.sleep(poll)

    def stop(self, grace: float = 5.0) -> None:
        """Terminates every process still running (SIGKILL after ``grace`` seconds) and reaps it."""
        alive = [p for p in self.processes if p.poll() is None]
        for p in alive:
            p.terminate()
        deadline = time.monotonic() + grace
        for p in alive:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
