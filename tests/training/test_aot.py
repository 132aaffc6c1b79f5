"""Ahead-of-time TPU compiles (jaxir.training.aot, ``jaxir compile``) on this CPU host.

libtpu (the ``tpu`` extra, part of ``test``) provides abstract TPU chips; nothing runs
on a TPU. The compiles use configs/dense_tiny.py (2 layers, 32 wide) and hit the
persistent compilation cache the root conftest configures.
"""

import dataclasses
import json
import pathlib

import pytest

from jaxir.cli.main import main
from jaxir.config import load_config, override
from jaxir.training import aot

ROOT = pathlib.Path(__file__).parents[2]
CONFIG = ROOT / "configs" / "dense_tiny.py"
V5E_8 = aot.parse_topology("v5e:2x4")


def tiny(*settings: str):
    return override(load_config(CONFIG), list(settings))


def expected_param_bytes(vocab: int, fsdp: int) -> int:
    """Per-chip float32 parameter bytes of the tiny dual encoder (tied towers) under
    ``fsdp``, from its shapes: every array with a hidden (``embed``) axis is split
    ``fsdp`` ways; LayerNorms, q/k/v biases and the MLP up bias are replicated."""
    h, m, positions, layers = 32, 64, 64, 2
    split = vocab * h + positions * h + 2 * h + layers * (4 * h * h + 2 * h * m + 2 * h)
    whole = 2 * h + layers * (4 * h + 3 * h + m)
    return 4 * (split // fsdp + whole)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """The tiny step compiled for v5e:2x4 with data=8 and with data=2,fsdp=4."""
    workdir = tmp_path_factory.mktemp("aot")
    out = {}
    for name, mesh in (("data8", ("mesh.data=8",)), ("fsdp4", ("mesh.data=2", "mesh.fsdp=4"))):
        out[name] = aot.compile_for_topology(tiny(*mesh), workdir, V5E_8, encode=name == "data8")
    vocab = len(aot.run_state(tiny(), workdir, mesh=None).tokenizer)
    return out, vocab


def test_fsdp_splits_the_parameters_four_ways(reports):
    (by_mesh, vocab) = reports
    replicated, sharded = by_mesh["data8"], by_mesh["fsdp4"]
    assert replicated.mesh == {"data": 8, "fsdp": 1, "tensor": 1}
    assert sharded.mesh == {"data": 2, "fsdp": 4, "tensor": 1}
    assert replicated.params == expected_param_bytes(vocab, 1)
    assert sharded.params == expected_param_bytes(vocab, 4)
    assert 0.25 < sharded.params / replicated.params < 0.3
    # AdamW: two moments per parameter (+ a step counter), laid out like the parameters.
    assert 2 * sharded.params <= sharded.opt_state <= 2 * sharded.params + 64
    # The compiler agrees: the arguments (state + batch) shrink with the parameters.
    for r in (replicated, sharded):
        assert r.step.memory["argument_size_in_bytes"] >= r.params + r.opt_state
        assert 0 < r.step.total < aot.CHIPS["v5e"].hbm_bytes
    assert (
        sharded.step.memory["argument_size_in_bytes"]
        < replicated.step.memory["argument_size_in_bytes"]
    )


def test_report_has_cost_roofline_and_the_encoder(reports):
    r = reports[0]["data8"]
    assert r.step.flops > 0 and r.step.bytes_accessed > 0
    assert r.roofline_seconds == max(r.flop_seconds, r.hbm_seconds)
    assert 0 < r.mfu_bound <= 1
    assert r.encode is not None and 0 < r.encode.flops < r.step.flops
    text = r.format()
    assert "v5e:2x4 (8 chips, mesh data=8,fsdp=1,tensor=1): per-chip HBM" in text
    assert "MFU bound" in text and "encode:" in text
    assert json.loads(json.dumps(r.to_json()))["step"]["total"] == r.step.total


def test_a_state_larger_than_the_chip_fails_naming_its_largest_arrays(tmp_path):
    small = dataclasses.replace(aot.CHIPS["v5e"], hbm_bytes=64 * 2**10)
    topology = dataclasses.replace(V5E_8, chip=small)
    with pytest.raises(aot.DoesNotFitError) as e:
        aot.compile_for_topology(tiny("mesh.data=8"), tmp_path, topology)
    message = str(e.value)
    assert "v5e:2x4, mesh data=8,fsdp=1,tensor=1: the train state alone needs" in message
    assert "params/query_encoder/embeddings/word/embedding: float32[" in message
    assert "P('tensor', 'fsdp') (replicated) = " in message
    assert "fsdp" in message  # the fix


def test_topology_strings():
    assert str(aot.parse_topology("v5p:4x4x4")) == "v5p:4x4x4"
    assert aot.parse_topology("v5p:4x4x4").libtpu_name == "v5:4x4x4"
    assert aot.parse_topology("v6e:4x8", slices=4).chips == 128
    for bad, says in (
        ("v5e", "is not CHIP:SHAPE"),
        ("tpu9:2x2", "unknown chip 'tpu9'"),
        ("v4:2x2", "v4 shapes have 3 axes"),
        ("v5e:0x4", "sizes must be >= 1"),
    ):
        with pytest.raises(aot.AotError, match=says):
            aot.parse_topology(bad)


def test_multislice_mesh_puts_data_across_slices():
    topology = aot.parse_topology("v5e:2x4", slices=2)
    devices = aot.topology_devices(topology)
    assert len(devices) == 16
    mesh = aot.topology_mesh(topology, devices, (-1, 4, 1))
    assert dict(mesh.shape) == {"data": 4, "fsdp": 4, "tensor": 1}
    slices = [[d.slice_index for d in row.reshape(-1)] for row in mesh.devices]
    assert slices == [[0] * 4, [0] * 4, [1] * 4, [1] * 4]
    with pytest.raises(aot.AotError, match="multiple of the 2 slices"):
        aot.topology_mesh(topology, devices, (1, 16, 1))


def test_missing_libtpu_says_how_to_install(monkeypatch):
    monkeypatch.setattr(aot, "libtpu_available", lambda: False)
    with pytest.raises(aot.AotError, match=r'pip install "jaxir\[tpu\]"'):
        aot.topology_devices(V5E_8)


def test_cli_json(reports, tmp_path, capsys):
    argv = ["compile", "--config", str(CONFIG), "--topology", "v5e:2x4", "--json"]
    assert main([*argv, "--mesh", "data=2,fsdp=4", "--workdir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["topology"] == "v5e:2x4" and out["chips"] == 8
    assert out["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert out["params"] == reports[0]["fsdp4"].params
    assert out["hbm"] == 16 * 2**30 and 0 < out["mfu_bound"] <= 1


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--topology", "v5e:2x2x2"], "v5e shapes have 2 axes"),
        (["--topology", "v5e:2x4", "--mesh", "data=3"], "does not fit v5e:2x4 (8 chips)"),
        (["--topology", "v5e:2x4", "--mesh", "pipeline=2"], "--mesh 'pipeline=2'"),
    ],
)
def test_cli_errors_name_the_flag(flags, says, tmp_path, capsys):
    argv = ["compile", "--config", str(CONFIG), "--workdir", str(tmp_path), *flags]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxir compile: error:") and says in err, err
