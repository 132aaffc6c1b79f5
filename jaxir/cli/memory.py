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
import math
import pathlib
import tempfile
from typing import Any

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


def per_device_bytes(tree: Any, shardings: Any) -> int:
    """Bytes of the largest per-device shard of ``tree`` (``ShapeDtypeStruct`` leaves) under
    ``shardings`` (a matching tree of ``NamedSharding``).

    Example:
        >>> import jax, numpy as np
        >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec
        >>> mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
        >>> x = jax.ShapeDtypeStruct((4, 8), np.float32)
        >>> per_device_bytes([x], [NamedSharding(mesh, PartitionSpec())])
        128
    """
    import jax
    import numpy as np

    total = 0
    for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True):
        shape = sharding.shard_shape(leaf.shape)
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def _example_batch(config: Any, family: Any, tokenizer: Any, corpus: Any) -> dict[str, Any]:
    """One training batch of the configured shape, from the corpus' texts (no mining)."""
    from jaxir.data import TrainGroup

    tc = config.train
    texts = [d.full_text for d in corpus.values()] or ["empty"]
    need = tc.batch_size * 2
    groups = []
    for i in range(need):
        pick = lambda j: texts[j % len(texts)]  # noqa: E731
        negatives = tuple(pick(i * tc.group_size + k + 1) for k in range(tc.group_size - 1))
        groups.append(TrainGroup(query=pick(i)[:200], positives=(pick(i),), negatives=negatives))
    data = family.training_data(groups, tokenizer)
    return next(data.batches(batch_size=tc.batch_size, group_size=tc.group_size, seed=0))


def memory_report(config: Any, workdir: pathlib.Path, *, compile: bool = True) -> MemoryReport:
    """The :class:`MemoryReport` of ``config`` (a :class:`jaxir.config.RunConfig`).

    ``workdir`` holds the synthetic collection and a trained tokenizer when the run needs
    them. ``compile=False`` skips the train step's compilation (and ``compiled``).
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxir import data as data_lib
    from jaxir import optim, sharding, xla
    from jaxir.data.prepare import run_tokenizer
    from jaxir.training import loop
    from jaxir.training import step as step_lib
    from jaxir.training.family import make_family
    from jaxir.training.state import PRNG_IMPL, TrainState, abstract_params

    tc, mc = config.train, config.model
    family = make_family(config.family, config)
    corpus = data_lib.load_corpus(loop.collection_dir(config, workdir))
    tokenizer = run_tokenizer(mc.init, mc.vocab, corpus, workdir)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    make_model = lambda: family.init_model(vocab_size=len(tokenizer), rngs=nnx.Rngs(tc.seed))  # noqa: E731
    optimizer = optim.build(loop.optimizer_spec(config), abstract_params(make_model))

    def init() -> TrainState:  # create_state's init, only ever traced here
        _, params, frozen = nnx.split(make_model(), nnx.Param, ...)
        return TrainState(
            params=params,
            frozen=frozen,
            opt_state=optimizer.init(params),
            step=jnp.zeros((), jnp.int32),
            key=jax.random.key_data(jax.random.key(tc.seed, impl=PRNG_IMPL)),
        )

    abstract = jax.eval_shape(init)
    shardings = sharding.param_shardings(abstract, mesh)
    params = per_device_bytes(abstract.params, shardings.params)
    report = dict(
        params=params,
        grads=params,
        opt_state=per_device_bytes(abstract.opt_state, shardings.opt_state),
        frozen=per_device_bytes(abstract.frozen, shardings.frozen),
        devices=mesh.size,
        compiled={},
    )
    if compile:
        batch = _example_batch(config, family, tokenizer, corpus)
        graphdef = nnx.split(nnx.eval_shape(make_model), nnx.Param, ...)[0]
        train_step = loop.config_train_step(
            config, family, graphdef, optimizer, shardings, mesh, batch
        )
        # The step jaxir.train runs, jitted at top level as jaxir.xla.jit does (its
        # wrapper picks the program by backend at call time and cannot be lowered).
        options = xla.CPU_COMPILER_OPTIONS[mc.dtype] if jax.default_backend() == "cpu" else {}
        jitted = jax.jit(
            train_step.__wrapped__,
            in_shardings=(shardings, step_lib.batch_shardings(mesh, batch)),
            out_shardings=(shardings, sharding.replicated(mesh)),
            donate_argnums=0,
            **({"compiler_options": options} if options else {}),
        )
        state_in = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract)
        batch_in = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
        analysis = jitted.lower(state_in, batch_in).compile().memory_analysis()
        fields = (
            "argument_size_in_bytes",
            "output_size_in_bytes",
            "alias_size_in_bytes",
            "temp_size_in_bytes",
            "generated_code_size_in_bytes",
        )
        if analysis is not None:
            report["compiled"] = {f: int(getattr(analysis, f)) for f in fields}
    return MemoryReport(**report)


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
    parser.add_argument("--config", required=True, help="config file (path.py or path.py:arg)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set optim.kind=galore (repeatable)",
    )
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
