"""``jaxir memory``: per-device bytes from the abstract sharded state, and XLA's analysis."""

import pathlib

import pytest

from jaxir.cli.main import main
from jaxir.cli.memory import memory_report
from jaxir.config import load_config, override

ROOT = pathlib.Path(__file__).parents[2]
CONFIG = ROOT / "configs" / "dense_tiny.py"


def report(tmp_path, *settings):
    config = override(load_config(CONFIG), list(settings))
    return memory_report(config, tmp_path, compile=False)


def test_state_bytes_follow_the_optimizer_and_the_mesh(tmp_path):
    adamw = report(tmp_path, "optim.kind=adamw")
    galore = report(tmp_path, "optim.kind=galore", "optim.rank=4")
    mini = report(tmp_path, "optim.kind=apollo_mini")
    assert adamw.devices == 8 and adamw.grads == adamw.params
    # Adam: two moments per parameter (the data-parallel mesh replicates everything).
    assert adamw.params * 2 <= adamw.opt_state <= adamw.params * 2 + 64
    assert galore.params == adamw.params
    assert mini.opt_state < galore.opt_state < adamw.opt_state
    # FSDP over 8 devices: each holds about an eighth of what a replica holds.
    sharded = report(tmp_path, "optim.kind=adamw", "mesh.data=1", "mesh.fsdp=8")
    assert sharded.params < 0.25 * adamw.params
    assert sharded.opt_state < 0.25 * adamw.opt_state


@pytest.mark.slow
def test_cli_prints_state_and_compiled_memory(tmp_path, capsys):
    argv = ["memory", "--config", str(CONFIG), "--workdir", str(tmp_path)]
    assert main([*argv, "--set", "optim.kind=galore", "--set", "optim.rank=4"]) == 0
    out = capsys.readouterr().out
    assert "dense_tiny optim.kind=galore: bytes per device (8 devices)" in out
    for row in ("parameters", "gradients", "optimizer state", "xla temp", "xla argument"):
        assert row in out, out


def test_cli_without_compile_prints_the_state_rows(tmp_path, capsys):
    argv = ["memory", "--config", str(CONFIG), "--workdir", str(tmp_path), "--no-compile"]
    assert main([*argv, "--set", "optim.kind=fira", "--set", "optim.rank=4"]) == 0
    out = capsys.readouterr().out
    assert "optimizer state" in out and "xla" not in out
