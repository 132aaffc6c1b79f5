"""Multi-host training as a local CPU "pod": real processes joined by jax.distributed (gloo).

Every job here is launched with :class:`jaxir.distributed.LocalJob` (directly or through
``jaxir pod-test``), so the processes are real, the collectives cross process
boundaries, and no process outlives its test. The default lane runs one 2 x 4 job
against the 1 x 8 run (``jaxir pod-test``) plus the launcher's failure handling; the
other process layouts, cross-layout resumes and the kill-and-resume run are slow.
"""

import os
import pathlib
import shutil
import signal
import sys
import time

import pytest

from jaxir import distributed
from jaxir.cli.main import main
from jaxir.cli.pod_test import train_command
from jaxir.training.loop import losses_by_step

ROOT = pathlib.Path(__file__).parents[2]
CONFIG = str(ROOT / "configs" / "dense_tiny.py")
STEPS = 6  # checkpoints every 2 steps (dense_tiny), validation at 4 and 6
OVERRIDES = [f"train.steps={STEPS}"]
TOLERANCE = 1e-5
ENV = {"JAX_COMPILATION_CACHE_DIR": str(ROOT / ".jax_cache")}


@pytest.fixture(scope="module")
def pod_test_runs(tmp_path_factory):
    """``jaxir pod-test`` (2 x 4 processes vs 1 x 8) kept in a directory: ``(root, exit code)``."""
    root = tmp_path_factory.mktemp("pod")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAX_COMPILATION_CACHE_DIR", ENV["JAX_COMPILATION_CACHE_DIR"])
        code = main(
            [
                "pod-test",
                "--processes=2",
                "--devices-per-process=4",
                f"--config={CONFIG}",
                f"--steps={STEPS}",
                f"--workdir={root}",
                "--timeout=400",
            ]
        )
    return root, code


def _job(workdir: pathlib.Path, processes: int, devices: int) -> distributed.LocalJob:
    return distributed.LocalJob(
        train_command(CONFIG, workdir, OVERRIDES),
        num_processes=processes,
        devices_per_process=devices,
        log_dir=workdir / "logs",
        env=ENV,
    )


def _assert_close(got: dict[int, float], want: dict[int, float], tolerance: float = TOLERANCE):
    assert sorted(got) == sorted(want)
    worst = max(abs(got[s] - want[s]) for s in want)
    assert worst <= tolerance, (got, want)


def _rewind(source: pathlib.Path, target: pathlib.Path, step: int) -> None:
    """``target`` = ``source`` as it was after ``step``: later checkpoints, metrics and the model removed."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("logs", "model", "tensorboard"))
    for ckpt in (target / "checkpoints").iterdir():
        if ckpt.name.isdigit() and int(ckpt.name) > step:
            shutil.rmtree(ckpt)
    metrics = target / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("".join(line + "\n" for line in lines[:step]))


def test_two_processes_match_one_process(pod_test_runs):
    root, code = pod_test_runs
    assert code == 0
    pod, single = losses_by_step(root / "2x4"), losses_by_step(root / "1x8")
    assert sorted(pod) == list(range(1, STEPS + 1))
    _assert_close(pod, single)
    # Only process 0 wrote the run's files; every process took part in the checkpoints.
    assert (root / "2x4" / "model" / "query" / "model.safetensors").exists()
    steps = [sorted(p.name for p in (root / r / "checkpoints").iterdir()) for r in ("2x4", "1x8")]
    assert steps[0] == steps[1] == ["2", "4", "6"]
    logs = root / "2x4" / "logs"
    assert "Model:" in (logs / "process_0.out").read_text()
    assert "Model:" not in (logs / "process_1.out").read_text()


@pytest.mark.slow
def test_four_processes_match_one_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", ENV["JAX_COMPILATION_CACHE_DIR"])
    args = ["pod-test", "--processes=4", "--devices-per-process=2", f"--config={CONFIG}"]
    assert main([*args, f"--steps={STEPS}", f"--workdir={tmp_path}", "--timeout=600"]) == 0
    _assert_close(losses_by_step(tmp_path / "4x2"), losses_by_step(tmp_path / "1x8"))
    assert "overhead x" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(("source", "layout"), [("2x4", (1, 8)), ("1x8", (2, 4))])
def test_checkpoint_resumes_across_process_counts(pod_test_runs, tmp_path, source, layout):
    root, _ = pod_test_runs
    resumed = tmp_path / "resumed"
    _rewind(root / source, resumed, step=4)
    with _job(resumed, *layout) as job:
        job.wait(timeout=400)
    assert "Resumed from checkpoint step 4." in job.stdout(0)
    got = losses_by_step(resumed)
    _assert_close(got, losses_by_step(root / source))
    _assert_close(got, losses_by_step(root / "2x4"))


@pytest.mark.slow
def test_killed_process_fails_the_job_and_a_restart_resumes_exactly(pod_test_runs, tmp_path):
    root, _ = pod_test_runs
    workdir = tmp_path / "run"
    with _job(workdir, 2, 4) as job:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and job.processes[0].poll() is None:
            if (workdir / "checkpoints" / "2").exists() and len(_logged(workdir)) >= 3:
                break
            time.sleep(0.05)
        assert all(p.poll() is None for p in job.processes), "the job ended before the kill"
        os.kill(job.processes[1].pid, signal.SIGKILL)
        killed = time.monotonic()
        with pytest.raises(
            distributed.ProcessFailedError, match="process 1 of 2 killed by SIGKILL"
        ):
            job.wait(timeout=120)
        assert time.monotonic() - killed < 30
        assert all(p.poll() is not None for p in job.processes)
    assert len(losses_by_step(workdir)) < STEPS
    with _job(workdir, 2, 4) as restart:
        restart.wait(timeout=400)
    assert "Resumed from checkpoint step" in restart.stdout(0)
    assert losses_by_step(workdir) == losses_by_step(root / "2x4")  # same layout: bit-identical


def _logged(workdir: pathlib.Path) -> dict[int, float]:
    """The losses logged so far (none while ``metrics.jsonl`` does not exist yet)."""
    try:
        return losses_by_step(workdir)
    except (FileNotFoundError, ValueError):
        return {}


# --- the launcher and initialize() without JAX jobs: fast -------------------------------

_FAIL_ONE = (
    "import os, sys, time\n"
    "if os.environ['JAXIR_PROCESS_ID'] == '1':\n"
    "    sys.stderr.write('first line\\nprocess one gives up\\n'); sys.exit(3)\n"
    "time.sleep(600)\n"
)


def test_a_failing_process_stops_the_job_and_is_named(tmp_path):
    job = distributed.LocalJob(
        [sys.executable, "-c", _FAIL_ONE], num_processes=3, devices_per_process=1, log_dir=tmp_path
    )
    start = time.monotonic()
    with job, pytest.raises(distributed.ProcessFailedError) as failure:
        job.wait(timeout=60)
    message = str(failure.value)
    assert "process 1 of 3 exited with code 3" in message
    assert "process one gives up" in message and "process_1.err" in message
    assert all(p.poll() is not None for p in job.processes)  # the sleepers were stopped
    assert time.monotonic() - start < 20


def test_a_job_past_its_timeout_is_stopped(tmp_path):
    job = distributed.LocalJob(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        num_processes=2,
        devices_per_process=1,
        log_dir=tmp_path,
    )
    with job, pytest.raises(distributed.JobTimeoutError, match=r"stopped processes \[0, 1\]"):
        job.wait(timeout=1)
    assert all(p.poll() is not None for p in job.processes)


def test_each_process_gets_its_rank_and_devices(tmp_path):
    code = "import os; print(os.environ['JAXIR_PROCESS_ID'], os.environ['XLA_FLAGS'])"
    with distributed.LocalJob(
        [sys.executable, "-c", code], num_processes=2, devices_per_process=3, log_dir=tmp_path
    ) as job:
        job.wait(timeout=60)
    for i in range(2):
        rank, flags = job.stdout(i).split(maxsplit=1)
        assert rank == str(i)
        assert flags.split().count("--xla_force_host_platform_device_count=3") == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"coordinator": "127.0.0.1:1", "num_processes": 2}, r"missing: --process-id"),
        ({"coordinator": "h:1", "num_processes": 2, "process_id": 2}, r"outside \[0, "),
        ({"num_processes": "two"}, r"--num-processes \(or \$JAXIR_NUM_PROCESSES\)"),
    ],
)
def test_initialize_names_the_bad_setting(kwargs, message, monkeypatch):
    for name in (distributed.ENV_COORDINATOR, distributed.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=message):
        distributed.initialize(**kwargs)


def test_initialize_reads_the_environment(monkeypatch):
    monkeypatch.setenv(distributed.ENV_COORDINATOR, "127.0.0.1:1")
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "2")
    monkeypatch.delenv(distributed.ENV_PROCESS_ID, raising=False)
    with pytest.raises(ValueError, match=r"\$JAXIR_PROCESS_ID"):
        distributed.initialize()
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "1")
    distributed.initialize()  # one process: nothing to join
