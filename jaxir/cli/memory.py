"""Bytes per device of parameters, gradients and optimizer state, before training.

Builds the run's train state abstractly (``jax.eval_shape``: nothing is allocated),
shards it as ``jaxir train`` would (logical axes -> the ``mesh.*`` mesh) and sums each
device's shard of the parameters, the gradients (laid out like the parameters), the
optimizer state and the frozen weights. Then it compiles the train step for one batch of
the configured shape and prints XLA's ``memory_analysis()`` of it: per-device argument,
output, temporary (activations, gradients, workspaces) and code bytes -- the compiler's
number, not an estimate from parameter counts.

The batch shapes come from the configured lengths and batch size, with texts from the
collection (the embedded synthetic one when ``data.path`` is unset); the tokenizer is the
run's (``model.init``'s, ``model.vocab`` or one trained on the corpus, kept in WORKDIR).

Example:
  jaxir memory --config configs/dense_scifact.py --set optim.kind=galore
  jaxir memory --config configs/dense_tiny.py --set optim.kind=apollo_mini --no-compile
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import tempfile
from typing import Any

from jaxir.cli.config_flags import CONFIG_HELP, add_set_flag

HELP = "bytes per device of params / gradients / optimizer state, and XLA's analysis of the step"


@dataclasses.dataclass(frozen=True)
class MemoryReport:
    """Per-device bytes (the largest shard over devices) of a run's state and train step.

    Attributes:
      params, grads, opt_state, frozen: bytes on one device.
      devices: devices in the mesh.
      compiled: XLA's ``memory_analysis()`` fields (``argument_size_in_bytes``, ...) of
        the jitted train step, per device; empty when not compiled.
    """

    params: int
    grads: int
    opt_state: int
    frozen: int
    devices: int
    compiled: dict[str, int]

    @property
    def state(self) -> int:
        """Params + gradients + optimizer state + frozen weights on one device."""
        return self.params + self.grads + self.opt_state + self.frozen


def memory_report(config: Any, workdir: pathlib.Path, *, compile: bool = True) -> MemoryReport:
    """The :class:`MemoryReport` of ``config`` (a :class:`jaxir.config.RunConfig`) on the local devices.

    ``workdir`` holds the synthetic collection and a trained tokenizer when the run needs
    them. ``compile=False`` skips the train step's compilation (and ``compiled``). The
    state and the step are :mod:`jaxir.training.aot`'s, as ``jaxir compile`` builds them
    for a TPU topology.
    """
    import jax

    from jaxir import xla
    from jaxir.training import aot

    state = aot.run_state(config, workdir)
    compiled: dict[str, int] = {}
    if compile:
        cpu = jax.default_backend() == "cpu"
        options = xla.CPU_COMPILER_OPTIONS[config.model.dtype] if cpu else None
        lowered = aot.lower_train_step(state, aot.example_batch(state), compiler_options=options)
        compiled = aot.compile_program(lowered, where=f"{jax.default_backend()} devices")[1].memory
    return MemoryReport(**state.bytes(), devices=state.mesh.size, compiled=compiled)


def _mib(n: int) -> str:
    return f"{n / 2**20:12.3f} MiB  {n:>14,d} B"


def format_report(report: MemoryReport, title: str) -> str:
    """The report as an aligned text table (one row per quantity, bytes on one device)."""
    rows = [
        ("parameters", report.params),
        ("gradients", report.grads),
        ("optimizer state", report.opt_state),
        ("frozen weights", report.frozen),
        ("state total", report.state),
    ]
    rows += [(f"xla {k.removesuffix('_size_in_bytes')}", v) for k, v in report.compiled.items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{title}: bytes per device ({report.devices} devices)"]
    lines += [f"  {name:<{width}}  {_mib(value)}" for name, value in rows]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir memory``."""
    parser.add_argument("--config", required=True, help=CONFIG_HELP)
    add_set_flag(parser, "optim.kind=galore")
    parser.add_argument(
        "--workdir",
        type=pathlib.Path,
        help="where a synthetic collection / trained tokenizer go (default: a temporary dir)",
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="skip compiling the train step (state only)"
    )


def run(args: argparse.Namespace) -> int:
    """Loads the config, applies overrides, prints the per-device memory table."""
    from jaxir.config import load_config, override

    config = override(load_config(args.config), args.set)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or pathlib.Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = memory_report(config, workdir, compile=not args.no_compile)
    title = f"{config.name} optim.kind={config.optim.kind}"
    print(format_report(report, title))
    return 0
