"""Device meshes, logical-axis rules, and helpers that place params and batches.

jaxir shards with plain ``jax.jit`` over a ``jax.sharding.Mesh`` with three named
axes (the same vocabulary as MaxText / big_vision):

* ``data``   -- pure data parallelism: the batch is split, params are replicated;
* ``fsdp``   -- the batch is split *and* params are sharded along their ``embed`` axis
  (ZeRO-3 style; XLA inserts the all-gathers);
* ``tensor`` -- Megatron-style model parallelism over ``mlp`` / ``heads`` / ``vocab``.

Parameters are annotated with *logical* axis names (``embed``, ``mlp``, ``heads``,
``vocab`` ...) when they are created; :data:`LOGICAL_RULES` maps those names to mesh
axes, so one model definition serves every mesh shape. A mesh axis is used at most once
per array, by its first dimension that asks for it: ``rank`` (the low-rank side of
GaLore / Fira / APOLLO projectors and moments, LoRA and SLTrain factors) maps to
``fsdp`` too, so a low-rank moment ``[rank, mlp]`` is sharded under FSDP instead of
replicated, while a projector ``[embed, rank]`` keeps ``fsdp`` on ``embed``; ``nnz``
(SLTrain's sparse support and values) maps to ``fsdp`` as well.

Example:
    >>> import jax
    >>> from jaxir import sharding
    >>> mesh = sharding.make_mesh(data=-1, fsdp=2, tensor=1)
    >>> dict(mesh.shape) == {"data": jax.device_count() // 2, "fsdp": 2, "tensor": 1}
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = "data"
FSDP = "fsdp"
TENSOR = "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)

#: The batch is split over every axis that carries distinct examples.
BATCH_AXES = (DATA, FSDP)

#: Logical axis name -> mesh axis (or axes, or None for replicated).
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("embed", FSDP),
    ("mlp", TENSOR),
    ("heads", TENSOR),
    ("kv", None),
    ("vocab", TENSOR),
    ("length", None),
    ("norm", None),
    ("rank", FSDP),  # only where the array's earlier axes leave fsdp unused (module doc)
    ("nnz", FSDP),  # the entries of a sparse factor (SLTrain's support and values)
)


def make_mesh(
    data: int = -1,
    fsdp: int = 1,
    tensor: int = 1,
    *,
    devices: Sequence[jax.Device] | None = None,
    physical_layout: bool | None = None,
) -> Mesh:
    """Builds a ``(data, fsdp, tensor)`` mesh; one size may be ``-1`` (inferred).

    Args:
      data, fsdp, tensor: axis sizes; their product must equal the device count.
      devices: devices to use (default: all of ``jax.devices()``, i.e. the devices of
        every process of a multi-host job).
      physical_layout: lay the devices out along the physical topology
        (:func:`device_grid`: neighbouring mesh positions are neighbouring chips; with
        several slices the ``data`` axis spans them). Default: on for ``jax.devices()``,
        off for explicit ``devices``, which are then used in the order given.

    Raises:
      ValueError: if the sizes do not multiply to the number of devices, or ``data`` is
        not a multiple of the slice count.

    Example:
      >>> mesh = make_mesh(data=1, fsdp=1, tensor=1, devices=jax.devices()[:1])
      >>> mesh.axis_names
      ('data', 'fsdp', 'tensor')
    """
    if physical_layout is None:
        physical_layout = devices is None
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(
            f"At most one mesh axis may be -1 (inferred); got {dict(zip(MESH_AXES, sizes))}."
        )
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(
                f"Cannot infer a mesh axis: {len(devices)} devices are not divisible by {known} "
                f"({dict(zip(MESH_AXES, sizes))})."
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"Mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
            f"{len(devices)} are available; use -1 for one axis to infer it."
        )
    if physical_layout:
        grid = device_grid(sizes, devices)
    else:
        grid = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES)


def slice_count(devices: Sequence[Any]) -> int:
    """Number of distinct slices (``device.slice_index``; 1 for CPU/GPU devices)."""
    return len({getattr(d, "slice_index", 0) for d in devices})


def device_grid(sizes: Sequence[int], devices: Sequence[Any]) -> np.ndarray:
    """``devices`` as a ``(data, fsdp, tensor)``-shaped grid along the physical topology.

    One slice: :func:`jax.experimental.mesh_utils.create_device_mesh` (neighbouring
    positions are neighbouring chips of the torus; the given order where it has no
    layout for the shape, e.g. CPU devices). Several slices (a multi-slice TPU job, its
    slices joined by the data-center network): the ``data`` axis spans the slices --
    only gradient all-reduces cross DCN -- and ``data / slices`` of it, ``fsdp`` and
    ``tensor`` stay inside a slice (ICI), by ``create_hybrid_device_mesh``.

    Raises:
      ValueError: ``data`` is not a multiple of the slice count (the message says which
        sizes to change).

    Example:
      >>> device_grid([2, 1, 1], jax.devices()[:2]).shape
      (2, 1, 1)
    """
    slices = slice_count(devices)
    if slices > 1:
        data, *inner = sizes
        if data % slices:
            raise ValueError(
                f"mesh data={data} must be a multiple of the {slices} slices of the devices: "
                "the data axis spans the slices (DCN). Lower fsdp/tensor or use fewer slices."
            )
        return mesh_utils.create_hybrid_device_mesh(
            (data // slices, *inner), (slices, 1, 1), devices, allow_split_physical_axes=True
        )
    try:
        return mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
        # No torus-aware layout for this shape: the given order (collectives may cross
        # more links; bytes and FLOPs per device are the same).
        return np.asarray(devices, dtype=object).reshape(sizes)


def logical_to_spec(logical: Sequence[str | None], rules=LOGICAL_RULES) -> PartitionSpec:
    """Maps logical axis names to a ``PartitionSpec`` under ``rules``.

    Rules are applied in their order, as flax's ``logical_to_mesh_axes`` does: a mesh
    axis already taken by an earlier rule's dimension is not used again, so
    ``("embed", "rank")`` gives ``fsdp`` to ``embed`` and ``("rank", "mlp")`` gives it to
    ``rank``. A name without a rule is kept as given (a mesh axis name).

    Example:
      >>> tuple(logical_to_spec(("embed", "mlp")))
      ('fsdp', 'tensor')
      >>> tuple(logical_to_spec(("rank", "embed"))), tuple(logical_to_spec(("rank", "mlp")))
      ((None, 'fsdp'), ('fsdp', 'tensor'))
    """
    logical = tuple(logical)
    table = dict(rules)
    out: list[Any] = [None if n is None or n in table else n for n in logical]
    used = {n for n in out if n is not None}
    for name, mesh_axes in rules:
        if name not in logical or mesh_axes is None:
            continue
        group = set(mesh_axes) if isinstance(mesh_axes, tuple) else {mesh_axes}
        if not used & group:
            out[logical.index(name)] = mesh_axes
            used |= group
    return PartitionSpec(*out)


def param_specs(state: Any, rules=LOGICAL_RULES) -> Any:
    """PartitionSpec tree for an NNX state (or model) annotated with logical axes.

    Example:
      >>> from jaxir.layers.linear import axes_metadata
      >>> p = nnx.Param(jax.numpy.zeros((4, 2)), **axes_metadata(("embed", "rank")))
      >>> tuple(param_specs({"p": p})["p"].get_value())  # fsdp once, on embed
      ('fsdp', None)
    """

    def spec(x: Any) -> Any:
        if isinstance(x, nnx.Variable):
            axes = x.get_metadata().get("out_sharding")
            return x.replace(logical_to_spec(axes, rules) if axes else PartitionSpec())
        return PartitionSpec() if hasattr(x, "shape") else None

    return jax.tree.map(spec, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def param_shardings(state: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """NamedSharding tree for an NNX state whose Variables carry logical ``out_sharding``.

    An axis whose size does not divide the mesh axis size falls back to replication
    for that dimension (e.g. a 30-token vocabulary on a 4-way ``tensor`` axis), so
    tiny test models still shard on any mesh.
    """
    specs = param_specs(state, rules)

    def fit(x, spec):
        shape = x.shape if hasattr(x, "shape") else ()
        axes = []
        for dim, names in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
            group = names if isinstance(names, tuple) else ((names,) if names else ())
            size = math.prod(mesh.shape[n] for n in group) if group else 1
            axes.append(names if dim % size == 0 else None)
        return NamedSharding(mesh, PartitionSpec(*axes))

    is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
    return jax.tree.map(
        lambda v, s: v.replace(fit(v.get_value(), s.get_value())) if is_var(v) else fit(v, s),
        state,
        specs,
        is_leaf=is_var,
    )


def shard_model(model: nnx.Module, mesh: Mesh, rules=LOGICAL_RULES) -> nnx.Module:
    """Places every parameter of ``model`` on ``mesh`` per its logical annotations (in place).

    Returns the same model for chaining.
    """
    state = nnx.state(model)
    shardings = param_shardings(state, mesh, rules)
    nnx.update(model, jax.device_put(state, shardings))
    return model


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a batch array ``[B, ...]``: B split over ``data`` x ``fsdp``."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding on ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def process_rows(mesh: Mesh, rows: int) -> np.ndarray:
    """The rows of a global ``[rows, ...]`` batch that this process's devices hold.

    Sorted and unique (devices that replicate a slice, e.g. along ``tensor``, share it),
    which is the order ``jax.make_array_from_process_local_data`` expects the
    process-local rows in. With one process: all rows.

    Example:
      >>> process_rows(make_mesh(data=-1), 16).tolist() == list(range(16))
      True
    """
    indices = batch_sharding(mesh, 1).addressable_devices_indices_map((rows,)).values()
    spans = sorted({(index[0].start or 0, index[0].stop or rows) for index in indices})
    return np.concatenate([np.arange(start, stop) for start, stop in spans])


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Puts every array of a host batch (pytree of ``[B, ...]`` arrays) on ``mesh``, split over the batch axes.

    ``B`` must be divisible by ``data * fsdp``. In a multi-process job every process
    passes the same global batch and contributes only its own rows
    (:func:`process_rows`, ``jax.make_array_from_process_local_data``); the result is
    one global array spanning all processes.
    """
    n = mesh.shape[DATA] * mesh.shape[FSDP]

    def put(x):
        x = np.asarray(x)
        if x.shape[0] % n:
            raise ValueError(
                f"Batch dimension {x.shape[0]} is not divisible by data*fsdp={n}; "
                "pad the batch or choose a batch size that is a multiple of it."
            )
        target = batch_sharding(mesh, x.ndim)
        if target.is_fully_addressable:
            return jax.device_put(x, target)
        local = x[process_rows(mesh, x.shape[0])]
        return jax.make_array_from_process_local_data(target, local, x.shape)

    return jax.tree.map(put, batch)
