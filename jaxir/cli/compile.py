"""Compile a run's train step for a TPU topology on this machine: per-chip HBM and a roofline.

The TPU compiler (libtpu, ``pip install "jaxir[tpu]"``) runs here, on the CPU, for
abstract TPU chips: no TPU is needed. It compiles the very step ``jaxir train`` runs
(the config's family, model, optimizer, batch shape and mesh) and reports, per chip:
the parameters, optimizer state and frozen weights (from their shardings), XLA's
arguments / activations and temporaries / total against the chip's HBM, the step's
FLOPs and HBM traffic, the roofline step time ``max(FLOPs / peak, bytes / bandwidth)``
and the MFU bound (FLOP time over roofline time). A state or step that does not fit the
chip's HBM fails (exit 1) naming its largest arrays and their shardings.

Topologies: CHIP:SHAPE, chips per axis, 2 axes for v5e / v6e, 3 for v4 / v5p:
  v5e:2x4     8 chips (a v5litepod-8)       v5e:8x8     64 chips (v5litepod-64)
  v6e:4x8     32 chips                       v4:2x2x2    8 chips (v4-16: 16 cores)
  v5p:4x4x4   64 chips (v5p-128: 128 cores)  --slices 4  four DCN-connected slices
The mesh is the run's mesh.data/fsdp/tensor (``--mesh`` sets them); their product must
be the chip count (one may be -1); with slices, ``data`` spans them.

Example:
  jaxir compile --config configs/dense_scifact.py --topology v5e:2x4 --mesh data=-1,fsdp=4
  jaxir compile --config configs/dense_tiny.py --topology v5e:2x4 --slices 2 --json
  jaxir compile --config configs/dense_scifact.py --topology v5p:4x4x4 \\
      --set model.init=bert-base --set model.dtype=bfloat16 --set optim.kind=galore --encode
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile

from jaxir.cli.config_flags import CONFIG_HELP, add_set_flag

HELP = "compile the train step for a TPU topology here (libtpu): per-chip HBM, FLOPs, roofline"


def mesh_settings(text: str) -> list[str]:
    """``data=-1,fsdp=4`` -> config overrides ``["mesh.data=-1", "mesh.fsdp=4"]``.

    Example:
        >>> mesh_settings("data=-1,fsdp=4")
        ['mesh.data=-1', 'mesh.fsdp=4']
    """
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in ("data", "fsdp", "tensor"):
            raise ValueError(
                f"--mesh {text!r}: expected AXIS=SIZE pairs over data, fsdp, tensor "
                "(e.g. --mesh data=-1,fsdp=4)."
            )
        out.append(f"mesh.{name}={value}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir compile``."""
    parser.add_argument("--config", required=True, help=CONFIG_HELP)
    parser.add_argument(
        "--topology", required=True, help="TPU slice as CHIP:SHAPE, e.g. v5e:2x4, v5p:4x4x4"
    )
    parser.add_argument(
        "--slices", type=int, default=1, help="number of slices (multi-slice, DCN); default 1"
    )
    parser.add_argument(
        "--mesh",
        default="",
        metavar="AXIS=SIZE,...",
        help="mesh axis sizes, e.g. data=-1,fsdp=4 (default: the config's mesh.*)",
    )
    add_set_flag(parser, "optim.kind=galore")
    parser.add_argument(
        "--encode", action="store_true", help="also compile the passage encoder (indexing)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--workdir",
        type=pathlib.Path,
        help="where a synthetic collection / trained tokenizer go (default: a temporary dir)",
    )


def run(args: argparse.Namespace) -> int:
    """Loads the config, compiles for the topology, prints the report (table or JSON)."""
    from jaxir.config import load_config, override
    from jaxir.training import aot

    topology = aot.parse_topology(args.topology, slices=args.slices)
    config = override(load_config(args.config), [*args.set, *mesh_settings(args.mesh)])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or pathlib.Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = aot.compile_for_topology(config, workdir, topology, encode=args.encode)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(f"{config.name} family={config.family} optim.kind={config.optim.kind}")
        print(report.format())
    return 0
