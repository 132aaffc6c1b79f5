"""Ahead-of-time compilation of a run's train step: per-chip memory and cost, no chips needed.

``jaxir train`` runs one jitted step (:func:`jaxir.training.loop.config_train_step`).
This module builds that step's inputs abstractly -- the sharded train state
(``jax.eval_shape``: nothing is allocated) and one batch of the configured shape -- and
compiles it with ``jit(...).lower(...).compile()`` for a set of devices:

* the local devices (``jaxir memory``: :func:`lower_train_step` on :func:`run_state`
  without ``devices``);
* an abstract TPU topology (``jaxir compile``: :func:`compile_for_topology`), whose
  compile-only devices come from ``libtpu`` through
  :func:`jax.experimental.topologies.get_topology_desc`: the real TPU compiler runs on
  this CPU host (no TPU backend is initialised, so it works under
  ``JAX_PLATFORMS=cpu``), as MaxText's ``train_compile.py`` does.

From the compiled program come XLA's ``memory_analysis()`` (argument, output, alias,
temporary bytes per chip) and ``cost_analysis()`` (FLOPs and HBM bytes accessed per
chip). With the chip's published peak rates (:data:`CHIPS`) the report gives a roofline
step time ``max(FLOPs / peak, bytes / bandwidth)`` and the MFU bound
``(FLOPs / peak) / roofline`` -- the best model-FLOPs utilisation the program allows if
every op ran at the chip's peak compute or HBM bandwidth (it ignores collectives,
latency and overlap, so real steps are slower; its FLOPs are XLA's, recomputation under
remat included, so remat raises the bound without shortening the roofline).
``cost_analysis`` counts a ``while`` loop's body once, so with ``train.grad_accum`` /
``train.gradcache_chunk`` (``lax.scan``) the FLOPs are those of one iteration.

Topologies are written ``CHIP:SHAPE`` (``v5e:2x4``, ``v6e:4x8``, ``v4:2x2x2``,
``v5p:4x4x4``; the shape is chips per axis: 2D for v5e / v6e, 3D for v4 / v5p), with a
separate slice count for multi-slice (DCN-connected) jobs; ``v5p-128`` in Cloud's
naming (cores) is ``v5p:4x4x4`` (64 chips).

Example:
    >>> t = parse_topology("v5e:2x4", slices=2)
    >>> t.chips, t.chip.hbm_bytes // 2**30, str(t)
    (16, 16, 'v5e:2x4 x 2 slices')
    >>> parse_topology("v5e:2x2x2")
    Traceback (most recent call last):
    ...
    jaxir.training.aot.AotError: Topology 'v5e:2x2x2': v5e shapes have 2 axes (e.g. v5e:2x4), got 3.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import pathlib
import re
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxir import sharding

#: Fields of ``compiled.memory_analysis()`` kept in reports (bytes per device).
MEMORY_FIELDS = (
    "argument_size_in_bytes",
    "output_size_in_bytes",
    "alias_size_in_bytes",
    "temp_size_in_bytes",
    "generated_code_size_in_bytes",
)


class AotError(ValueError):
    """An ahead-of-time compile that cannot proceed; the message names the topology / mesh and the fix."""


class DoesNotFitError(AotError):
    """The step needs more HBM per chip than the chip has; the message names the largest arrays."""


# --------------------------------------------------------------------------- chips


@dataclasses.dataclass(frozen=True)
class Chip:
    """A TPU generation as the compiler and the roofline see it (one chip = one JAX device).

    Attributes:
      name: jaxir's name (``v5e``), the prefix of a topology string.
      libtpu_name: libtpu's topology prefix (v5p is ``v5``).
      chip_config: libtpu's chip configuration (``megacore``: the two TensorCores of a
        v4 / v5p chip are one device).
      axes: axes of a slice's chip grid (2: 2D torus, 3: 3D torus).
      hbm_bytes: HBM per chip.
      peak_flops: peak bf16 FLOP/s per chip.
      hbm_bandwidth: HBM bytes/s per chip.
    """

    name: str
    libtpu_name: str
    chip_config: str
    axes: int
    hbm_bytes: int
    peak_flops: float
    hbm_bandwidth: float


GiB = 2**30

#: Per-chip specs from Google's Cloud TPU system-architecture pages
#: (https://cloud.google.com/tpu/docs/v4, .../v5e, .../v5p, .../v6e):
#:   v4:  275 TFLOP/s bf16, HBM2 32 GiB, 1200 GB/s;
#:   v5e: 197 TFLOP/s bf16, HBM2 16 GB, 819 GB/s;
#:   v5p: 459 TFLOP/s bf16, HBM2e 95 GB, 2765 GB/s;
#:   v6e: 918 TFLOP/s bf16, HBM 32 GB, 1640 GB/s ("1638 GBps" in the v6e table).
#: HBM stacks come in binary sizes, so the capacities are read as GiB (the v4 page's
#: unit); bandwidths are decimal (10**9 bytes/s).
CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", "v4", "megacore", 3, 32 * GiB, 275e12, 1200e9),
    "v5e": Chip("v5e", "v5e", "default", 2, 16 * GiB, 197e12, 819e9),
    "v5p": Chip("v5p", "v5", "megacore", 3, 95 * GiB, 459e12, 2765e9),
    "v6e": Chip("v6e", "v6e", "default", 2, 32 * GiB, 918e12, 1640e9),
}


@dataclasses.dataclass(frozen=True)
class Topology:
    """``slices`` identical slices of ``chip`` chips laid out as ``shape`` (chips per axis)."""

    chip: Chip
    shape: tuple[int, ...]
    slices: int = 1

    @property
    def chips(self) -> int:
        """Chips (= devices) in all slices together."""
        return math.prod(self.shape) * self.slices

    @property
    def libtpu_name(self) -> str:
        """libtpu's name of one slice, e.g. ``v5:4x4x4`` for ``v5p:4x4x4``."""
        return f"{self.chip.libtpu_name}:{'x'.join(map(str, self.shape))}"

    def __str__(self) -> str:
        text = f"{self.chip.name}:{'x'.join(map(str, self.shape))}"
        return text + (f" x {self.slices} slices" if self.slices > 1 else "")


def parse_topology(text: str, *, slices: int = 1) -> Topology:
    """The :class:`Topology` written ``CHIP:AxB`` (v5e, v6e) or ``CHIP:AxBxC`` (v4, v5p).

    Raises:
      AotError: an unknown chip, a shape with the wrong number of axes or a
        non-positive size, or ``slices < 1``; the message shows a valid spelling.
    """
    match = re.fullmatch(r"\s*([a-z0-9]+):(\d+(?:x\d+)*)\s*", text.lower())
    if not match:
        raise AotError(
            f"Topology {text!r} is not CHIP:SHAPE; write e.g. v5e:2x4, v6e:4x8, v4:2x2x2 or "
            f"v5p:4x4x4 (chips: {', '.join(CHIPS)})."
        )
    name, shape_text = match.groups()
    if name not in CHIPS:
        raise AotError(
            f"Topology {text!r}: unknown chip {name!r}; choose one of {', '.join(CHIPS)}."
        )
    chip = CHIPS[name]
    shape = tuple(int(s) for s in shape_text.split("x"))
    if len(shape) != chip.axes:
        example = "2x4" if chip.axes == 2 else "2x2x2"
        raise AotError(
            f"Topology {text!r}: {name} shapes have {chip.axes} axes (e.g. {name}:{example}), "
            f"got {len(shape)}."
        )
    if min(shape) < 1 or slices < 1:
        raise AotError(f"Topology {text!r} x {slices} slices: sizes must be >= 1.")
    return Topology(chip, shape, slices)


def _wrap(topology: Topology) -> tuple[bool, bool, bool]:
    """Torus wrap-around links per axis: v4 / v5p slices of whole 4x4x4 cubes are tori;
    v5e / v6e axes wrap at the full pod edge (16), as MaxText's topology table has them."""
    shape = topology.shape
    if topology.chip.axes == 3:
        cube = all(s % 4 == 0 for s in shape)
        return (cube, cube, cube)
    return (shape[0] == 16, shape[1] == 16, False)


def libtpu_available() -> bool:
    """Whether the TPU compiler (the ``libtpu`` package, ``pip install "jaxir[tpu]"``) is installed."""
    return importlib.util.find_spec("libtpu") is not None


def topology_devices(topology: Topology) -> list[jax.Device]:
    """Compile-only devices of ``topology`` (one per chip, slice-major), from libtpu.

    Needs only the libtpu plugin, not a TPU: works on any host and under
    ``JAX_PLATFORMS=cpu``.

    Raises:
      AotError: libtpu is not installed (the message says how to install it) or
        rejects the topology.
    """
    if not libtpu_available():
        raise AotError(
            f'Compiling for {topology} needs the TPU compiler: pip install "jaxir[tpu]" '
            "(libtpu; no TPU needed)."
        )
    from jax.experimental import topologies

    # libtpu takes a host-wide lock (/tmp/libtpu_lockfile) meant for processes that drive
    # real chips; compile-only use must not block a second compile (or pytest-xdist
    # worker) on the same host, nor a training process on a TPU VM.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    shape3 = (*topology.shape, 1)[:3]
    try:
        desc = topologies.get_topology_desc(
            topology_name=topology.libtpu_name,
            platform="tpu",
            chip_config_name=topology.chip.chip_config,
            chips_per_host_bounds=tuple(min(s, b) for s, b in zip(shape3, (2, 2, 1))),
            num_slices=topology.slices,
            wrap=_wrap(topology),
        )
    except Exception as e:  # libtpu raises XlaRuntimeError / RuntimeError with its reason
        raise AotError(f"libtpu rejected topology {topology}: {e}") from e
    return list(desc.devices)


def topology_mesh(topology: Topology, devices: Sequence[Any], mesh_sizes: Sequence[int]) -> Mesh:
    """The run's ``(data, fsdp, tensor)`` mesh over ``topology``'s devices.

    ``mesh_sizes`` are the config's ``mesh.data/fsdp/tensor`` (one may be ``-1``). The
    layout is the one a training job on that topology gets
    (:func:`jaxir.sharding.device_grid`): along the physical torus, and with several
    slices the ``data`` axis spans the slices (DCN) while ``data / slices`` of it,
    ``fsdp`` and ``tensor`` stay inside a slice (ICI).

    Raises:
      AotError: the sizes do not multiply to the chip count, or ``data`` is not a
        multiple of the slice count; the message names the flag to change.
    """
    try:
        return sharding.make_mesh(*mesh_sizes, devices=devices, physical_layout=True)
    except ValueError as e:
        raise AotError(
            f"--mesh / mesh.* {dict(zip(sharding.MESH_AXES, mesh_sizes))} does not fit "
            f"{topology} ({topology.chips} chips): {e} Choose sizes whose product is "
            f"{topology.chips}, e.g. --mesh data=-1,fsdp={_divisor(topology.chips)}."
        ) from e


def _divisor(n: int) -> int:
    """A mesh size that divides ``n`` (for error messages): 4 if it does, else 1."""
    return 4 if n % 4 == 0 else 1


# --------------------------------------------------------------------------- run state


@dataclasses.dataclass(frozen=True)
class RunState:
    """A run's train state as shapes, laid out on a mesh (what :func:`run_state` builds).

    Attributes:
      config: the run config.
      family: the retriever family (:func:`jaxir.training.family.make_family`).
      tokenizer, corpus: the run's tokenizer and collection (for the example batch).
      mesh: the ``(data, fsdp, tensor)`` mesh.
      graphdef: the model's graph.
      optimizer: the run's optax transformation.
      abstract: a :class:`~jaxir.training.state.TrainState` of ``ShapeDtypeStruct``.
      shardings: the matching ``TrainState`` of ``NamedSharding``.
    """

    config: Any
    family: Any
    tokenizer: Any
    corpus: Any
    mesh: Mesh
    graphdef: Any
    optimizer: Any
    abstract: Any
    shardings: Any

    def bytes(self) -> dict[str, int]:
        """Per-device bytes of ``params``, ``grads`` (laid out like them), ``opt_state``, ``frozen``."""
        params = per_device_bytes(self.abstract.params, self.shardings.params)
        return {
            "params": params,
            "grads": params,
            "opt_state": per_device_bytes(self.abstract.opt_state, self.shardings.opt_state),
            "frozen": per_device_bytes(self.abstract.frozen, self.shardings.frozen),
        }


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
    total = 0
    for leaf, shard in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True):
        total += math.prod(shard.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    return total


def run_state(
    config: Any,
    workdir: pathlib.Path,
    *,
    devices: Sequence[Any] | None = None,
    mesh: Mesh | None = None,
) -> RunState:
    """The abstract sharded train state ``jaxir train`` would build for ``config``.

    ``workdir`` holds the synthetic collection and a trained tokenizer when the run
    needs them. The mesh is ``mesh`` if given, else the config's ``mesh.*`` over
    ``devices`` (default: the local devices).
    """
    from jaxir import data as data_lib
    from jaxir import optim
    from jaxir.data.prepare import run_tokenizer
    from jaxir.training import loop
    from jaxir.training.family import make_family
    from jaxir.training.state import abstract_params, state_init

    tc, mc = config.train, config.model
    family = make_family(config.family, config)
    corpus = data_lib.load_corpus(loop.collection_dir(config, workdir))
    tokenizer = run_tokenizer(mc.init, mc.vocab, corpus, workdir)
    if mesh is None:
        m = config.mesh
        mesh = sharding.make_mesh(m.data, m.fsdp, m.tensor, devices=devices)
    make_model = lambda: family.init_model(vocab_size=len(tokenizer), rngs=nnx.Rngs(tc.seed))  # noqa: E731
    optimizer = optim.build(loop.optimizer_spec(config), abstract_params(make_model))

    abstract = jax.eval_shape(state_init(make_model, optimizer, seed=tc.seed))
    graphdef = nnx.split(nnx.eval_shape(make_model), nnx.Param, ...)[0]
    return RunState(
        config=config,
        family=family,
        tokenizer=tokenizer,
        corpus=corpus,
        mesh=mesh,
        graphdef=graphdef,
        optimizer=optimizer,
        abstract=abstract,
        shardings=sharding.param_shardings(abstract, mesh),
    )


def example_batch(state: RunState) -> dict[str, Any]:
    """One training batch of the configured shape (``train.batch_size`` groups of
    ``train.group_size`` passages) from the corpus' texts, tokenized as training does."""
    from jaxir.data import TrainGroup

    tc = state.config.train
    texts = [d.full_text for d in state.corpus.values()] or ["empty"]
    pick = lambda j: texts[j % len(texts)]  # noqa: E731
    groups = []
    for i in range(tc.batch_size * 2):
        negatives = tuple(pick(i * tc.group_size + k + 1) for k in range(tc.group_size - 1))
        groups.append(TrainGroup(query=pick(i)[:200], positives=(pick(i),), negatives=negatives))
    data = state.family.training_data(groups, state.tokenizer)
    return next(data.batches(batch_size=tc.batch_size, group_size=tc.group_size, seed=0))


def _shapes(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def lower_train_step(
    state: RunState, batch: dict[str, Any], *, compiler_options: dict[str, Any] | None = None
) -> jax.stages.Lowered:
    """The step ``jaxir.train`` runs for ``state.config``, lowered for ``state.mesh``.

    It is :func:`jaxir.training.loop.config_train_step`'s function jitted at top level
    with the same shardings and donation (its :func:`jaxir.xla.jit` wrapper picks the
    program by backend at call time and cannot be lowered). ``compiler_options`` go to
    ``jax.jit`` (the CPU ones of :data:`jaxir.xla.CPU_COMPILER_OPTIONS` only on CPU).
    """
    from jaxir.training import loop
    from jaxir.training import step as step_lib

    mesh = state.mesh
    train_step = loop.config_train_step(
        state.config, state.family, state.graphdef, state.optimizer, state.shardings, mesh, batch
    )
    jitted = jax.jit(
        train_step.__wrapped__,
        in_shardings=(state.shardings, step_lib.batch_shardings(mesh, batch)),
        out_shardings=(state.shardings, sharding.replicated(mesh)),
        donate_argnums=0,
        **({"compiler_options": compiler_options} if compiler_options else {}),
    )
    return jitted.lower(_shapes(state.abstract), _shapes(batch))


def lower_encode(state: RunState, rows: int, length: int) -> jax.stages.Lowered:
    """The passage encoder of the model (``encode_passages``, no dropout: what indexing
    runs) on ``rows`` texts of ``length`` tokens, batch split over ``data`` x ``fsdp``."""
    mesh, graphdef = state.mesh, state.graphdef

    def encode(params, frozen, ids_bl, mask_bl):
        return nnx.merge(graphdef, params, frozen).encode_passages(ids_bl, mask_bl)

    tokens = jax.ShapeDtypeStruct((rows, length), jnp.int32)
    split = sharding.batch_sharding(mesh, 2)
    jitted = jax.jit(
        encode,
        in_shardings=(state.shardings.params, state.shardings.frozen, split, split),
        out_shardings=split,
    )
    return jitted.lower(state.abstract.params, state.abstract.frozen, tokens, tokens)


# --------------------------------------------------------------------------- reports


@dataclasses.dataclass(frozen=True)
class ProgramCost:
    """One compiled program, per chip: XLA's memory and cost analyses.

    Attributes:
      memory: ``memory_analysis()`` fields (:data:`MEMORY_FIELDS`), bytes.
      flops: ``cost_analysis()["flops"]``.
      bytes_accessed: ``cost_analysis()["bytes accessed"]`` (HBM traffic).
      compile_seconds: wall time of ``compile()``.
    """

    memory: dict[str, int]
    flops: float
    bytes_accessed: float
    compile_seconds: float

    @property
    def total(self) -> int:
        """Peak bytes the program holds: arguments + outputs - aliased (donated) + temporaries."""
        m = self.memory
        return (
            m["argument_size_in_bytes"]
            + m["output_size_in_bytes"]
            - m["alias_size_in_bytes"]
            + m["temp_size_in_bytes"]
        )


def compile_program(
    lowered: jax.stages.Lowered, *, where: str, cache: bool = True
) -> tuple[Any, ProgramCost]:
    """``(compiled, cost)`` of ``lowered``; ``where`` (topology and mesh) goes in errors.

    ``cache=False`` bypasses the persistent compilation cache: programs compiled for
    compile-only (topology) devices cannot be read back from it (jax 0.10.2: "PjRtCompiler
    must be constructed with a Client"), so writing them would only cost time and disk.

    Raises:
      DoesNotFitError: the compiler ran out of device memory.
      AotError: any other compile failure, with the compiler's first lines.
    """
    start = time.perf_counter()
    enabled = jax.config.jax_enable_compilation_cache
    try:
        jax.config.update("jax_enable_compilation_cache", cache and enabled)
        compiled = lowered.compile()
    except Exception as e:  # XlaRuntimeError and friends: turn into a readable message
        text = str(e)
        head = "\n".join(text.strip().splitlines()[:6])
        if "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text:
            raise DoesNotFitError(
                f"{where}: the step does not fit in device memory (compiler: {head}). "
                "Shard the parameters (--mesh data=-1,fsdp=N), lower train.batch_size, or "
                "use a chip with more HBM."
            ) from e
        raise AotError(f"{where}: XLA could not compile the step:\n{head}") from e
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)
    seconds = time.perf_counter() - start
    analysis = compiled.memory_analysis()
    memory = {f: int(getattr(analysis, f)) for f in MEMORY_FIELDS} if analysis else {}
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older jax: one dict per program
        cost = cost[0] if cost else {}
    return compiled, ProgramCost(
        memory=memory,
        flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        compile_seconds=seconds,
    )


@dataclasses.dataclass(frozen=True)
class ArrayInfo:
    """One array of the train state: path, global shape, dtype, sharding and bytes per chip."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    spec: str
    bytes: int

    def __str__(self) -> str:
        shape = ",".join(map(str, self.shape))
        return f"{self.path}: {self.dtype}[{shape}] {self.spec} = {_gib(self.bytes)} per chip"


def largest_arrays(state: RunState, n: int = 5) -> list[ArrayInfo]:
    """The ``n`` arrays of the train state (params, optimizer state, frozen) with the most
    bytes per chip, largest first."""
    rows = []
    for part in ("params", "opt_state", "frozen"):
        leaves = jax.tree_util.tree_leaves_with_path(getattr(state.abstract, part))
        shards = jax.tree.leaves(getattr(state.shardings, part))
        for (path, leaf), shard in zip(leaves, shards, strict=True):
            size = math.prod(shard.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
            name = f"{part}/{jax.tree_util.keystr(path, simple=True, separator='/')}"
            name = name.removesuffix("/value")  # nnx.Variable's leaf
            pieces = math.prod(leaf.shape) // max(1, math.prod(shard.shard_shape(leaf.shape)))
            how = "replicated" if pieces == 1 else f"split {pieces} ways"
            spec = f"{shard.spec} ({how})"
            rows.append(ArrayInfo(name, tuple(leaf.shape), str(leaf.dtype), spec, size))
    return sorted(rows, key=lambda r: -r.bytes)[:n]


def _gib(n: float) -> str:
    """Bytes in GiB, or MiB / KiB below one (``_gib(3 * 2**20)`` is ``'3.0 MiB'``)."""
    for unit, size in (("GiB", GiB), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.2f} {unit}" if unit == "GiB" else f"{n / size:.1f} {unit}"
    return f"{n / 2**10:.1f} KiB"


@dataclasses.dataclass(frozen=True)
class AotReport:
    """The train step (and optionally the encoder) of a run compiled for a TPU topology.

    Bytes, FLOPs and HBM traffic are per chip (every chip runs the same SPMD program).

    Attributes:
      topology: the :class:`Topology`.
      mesh: mesh axis sizes.
      params, opt_state, frozen: state bytes per chip (from the shardings).
      step: the train step's :class:`ProgramCost`.
      encode: the encoder's, when compiled.
      largest: the largest state arrays per chip.
    """

    topology: Topology
    mesh: dict[str, int]
    params: int
    opt_state: int
    frozen: int
    step: ProgramCost
    encode: ProgramCost | None
    largest: tuple[ArrayInfo, ...]

    @property
    def chip(self) -> Chip:
        """The chip of the topology."""
        return self.topology.chip

    @property
    def flop_seconds(self) -> float:
        """Step FLOPs at the chip's peak bf16 rate."""
        return self.step.flops / self.chip.peak_flops

    @property
    def hbm_seconds(self) -> float:
        """Step HBM traffic at the chip's bandwidth."""
        return self.step.bytes_accessed / self.chip.hbm_bandwidth

    @property
    def roofline_seconds(self) -> float:
        """Lower bound on the step time: ``max(flop_seconds, hbm_seconds)``."""
        return max(self.flop_seconds, self.hbm_seconds)

    @property
    def mfu_bound(self) -> float:
        """``flop_seconds / roofline_seconds``: 1 when compute-bound, below when HBM-bound."""
        return self.flop_seconds / self.roofline_seconds if self.roofline_seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready values (bytes, FLOPs, seconds; per chip)."""

        def program(cost: ProgramCost) -> dict[str, Any]:
            return {
                **{k.removesuffix("_size_in_bytes"): v for k, v in cost.memory.items()},
                "total": cost.total,
                "flops": cost.flops,
                "bytes_accessed": cost.bytes_accessed,
                "compile_seconds": round(cost.compile_seconds, 2),
            }

        return {
            "topology": str(self.topology),
            "chip": dataclasses.asdict(self.chip),
            "chips": self.topology.chips,
            "mesh": self.mesh,
            "params": self.params,
            "opt_state": self.opt_state,
            "frozen": self.frozen,
            "hbm": self.chip.hbm_bytes,
            "step": program(self.step),
            "roofline_seconds": self.roofline_seconds,
            "flop_seconds": self.flop_seconds,
            "hbm_seconds": self.hbm_seconds,
            "mfu_bound": self.mfu_bound,
            "encode": program(self.encode) if self.encode else None,
            "largest": [dataclasses.asdict(a) for a in self.largest],
        }

    def format(self) -> str:
        """A readable table: per-chip HBM by category, then the roofline of the step."""
        c, s = self.chip, self.step
        mesh = ",".join(f"{k}={v}" for k, v in self.mesh.items())
        rows = [
            ("parameters", self.params),
            ("optimizer state", self.opt_state),
            ("frozen weights", self.frozen),
            ("xla arguments", s.memory["argument_size_in_bytes"]),
            ("xla activations/temporaries", s.memory["temp_size_in_bytes"]),
            (
                "xla outputs (not donated)",
                s.memory["output_size_in_bytes"] - s.memory["alias_size_in_bytes"],
            ),
            ("total", s.total),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{self.topology} ({self.topology.chips} chips, mesh {mesh}): per-chip HBM"]
        lines += [f"  {name:<{width}}  {_gib(value):>11}" for name, value in rows]
        lines.append(
            f"  {'chip HBM':<{width}}  {_gib(c.hbm_bytes):>11}  ({100 * s.total / c.hbm_bytes:.0f}% used)"
        )
        lines.append(
            f"step: {s.flops / 1e12:.3g} TFLOP per chip, {s.bytes_accessed / 1e9:.3g} GB HBM traffic "
            f"-> roofline >= {self.roofline_seconds * 1e3:.3g} ms/step "
            f"({c.name}: {c.peak_flops / 1e12:.0f} TFLOP/s bf16, {c.hbm_bandwidth / 1e9:.0f} GB/s); "
            f"MFU bound {self.mfu_bound:.2f}"
        )
        lines.append(f"compiled in {s.compile_seconds:.1f} s")
        if self.encode:
            e = self.encode
            t = max(e.flops / c.peak_flops, e.bytes_accessed / c.hbm_bandwidth)
            lines.append(
                f"encode: {_gib(e.total)} per chip, {e.flops / 1e12:.3g} TFLOP, "
                f"{e.bytes_accessed / 1e9:.3g} GB -> roofline >= {t * 1e3:.3g} ms/batch"
            )
        return "\n".join(lines)


def _check_fits(
    total: int, topology: Topology, where: str, largest: Sequence[ArrayInfo], what: str
) -> None:
    if total <= topology.chip.hbm_bytes:
        return
    arrays = "\n".join(f"  {a}" for a in largest)
    raise DoesNotFitError(
        f"{where}: {what} needs {_gib(total)} per chip but a {topology.chip.name} chip has "
        f"{_gib(topology.chip.hbm_bytes)} of HBM. Largest arrays (bytes per chip):\n{arrays}\n"
        "Shard them (--mesh data=-1,fsdp=N shards the 'embed' axis), use a low-rank "
        "optimizer (optim.kind=galore), lower train.batch_size, or a chip with more HBM."
    )


def compile_for_topology(
    config: Any,
    workdir: pathlib.Path,
    topology: Topology,
    *,
    encode: bool = False,
    check_fit: bool = True,
) -> AotReport:
    """Compiles ``config``'s train step (and with ``encode`` its passage encoder on one
    batch of ``train.batch_size * train.group_size`` passages) for ``topology``.

    The mesh is the config's ``mesh.data/fsdp/tensor`` over the topology's chips.
    With ``check_fit`` the state is checked against the chip's HBM before compiling,
    and the compiled step's total after.

    Raises:
      DoesNotFitError: the state or the step exceeds the chip's HBM (names the largest
        arrays and their shardings).
      AotError: libtpu missing, a bad mesh for the topology, or a compile failure.
    """
    devices = topology_devices(topology)
    m = config.mesh
    mesh = topology_mesh(topology, devices, (m.data, m.fsdp, m.tensor))
    state = run_state(config, workdir, mesh=mesh)
    sizes = {a: int(mesh.shape[a]) for a in sharding.MESH_AXES}
    where = f"{topology}, mesh " + ",".join(f"{k}={v}" for k, v in sizes.items())
    largest = tuple(largest_arrays(state))
    held = state.bytes()
    if check_fit:
        resident = held["params"] + held["opt_state"] + held["frozen"]
        _check_fits(resident, topology, where, largest, "the train state alone")
    batch = example_batch(state)
    n = sizes["data"] * sizes["fsdp"]
    if config.train.batch_size % n:
        raise AotError(
            f"{where}: train.batch_size={config.train.batch_size} is not divisible by "
            f"data*fsdp={n}; choose a multiple of {n} (--set train.batch_size=...)."
        )
    try:
        _, step = compile_program(lower_train_step(state, batch), where=where, cache=False)
    except DoesNotFitError as e:  # the compiler's verdict: name the state's largest arrays too
        arrays = "\n".join(f"  {a}" for a in largest)
        raise DoesNotFitError(f"{e}\nLargest state arrays (bytes per chip):\n{arrays}") from e
    if check_fit:
        _check_fits(step.total, topology, where, largest, "the train step")
    encode_cost = None
    if encode:
        rows = config.train.batch_size * config.train.group_size
        lowered = lower_encode(state, rows, config.data.max_passage_length)
        _, encode_cost = compile_program(lowered, where=f"{where} (encode)", cache=False)
    return AotReport(
        topology=topology,
        mesh=sizes,
        params=held["params"],
        opt_state=held["opt_state"],
        frozen=held["frozen"],
        step=step,
        encode=encode_cost,
        largest=largest,
    )
