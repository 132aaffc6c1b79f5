"""Factories for NNX layers annotated with logical sharding axes."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxir.layers.dot import affine, dot_general

#: BERT-style initialisation (truncated normal, std 0.02), as in ``transformers``.
INIT_STD = 0.02


def axes_metadata(axes: tuple[str | None, ...]) -> dict:
    """Variable metadata recording logical ``axes`` without placing the value.

    Placement happens once, explicitly (``jaxir.sharding.shard_model`` or a jitted
    init with ``out_shardings``), so a model can be built outside any mesh context.
    """
    return {"out_sharding": axes, "eager_sharding": False}


class Dense(nnx.Module):
    """``y = x @ kernel + bias`` in the compute ``dtype`` via :func:`jaxir.layers.dot.affine`.

    Parameters are float32 (``kernel [in, out]``, ``bias [out]``, the names
    ``nnx.Linear`` uses) and cast to ``dtype`` per call; products accumulate in float32.
    With ``use_bias=False`` there is no ``bias`` parameter (``self.bias is None``).

    Shapes: ``[..., in] -> [..., out]``.

    Example:
      >>> layer = Dense(3, 2, (None, None), dtype=jnp.float32, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((4, 3))).shape
      (4, 2)
      >>> Dense(3, 2, (None, None), use_bias=False, dtype=jnp.float32, rngs=nnx.Rngs(0)).bias is None
      True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        axes: tuple[str | None, str | None],
        *,
        use_bias: bool = True,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        init = jax.nn.initializers.truncated_normal(INIT_STD)
        self.dtype = dtype
        self.kernel = nnx.Param(
            init(rngs.params(), (in_features, out_features), jnp.float32), **axes_metadata(axes)
        )
        self.bias = (
            nnx.Param(jnp.zeros((out_features,), jnp.float32), **axes_metadata(axes[1:]))
            if use_bias
            else None
        )

    @classmethod
    def from_weights(
        cls,
        kernel: jax.Array,
        bias: jax.Array | None,
        axes: tuple[str | None, str | None],
        *,
        dtype: jnp.dtype,
    ) -> Dense:
        """A :class:`Dense` holding ``kernel [in, out]`` and ``bias [out]`` (or no bias), no random init.

        Example:
          >>> d = Dense.from_weights(jnp.ones((3, 2)), None, (None, None), dtype=jnp.float32)
          >>> d(jnp.ones((1, 3))).tolist()
          [[3.0, 3.0]]
        """
        in_features, out_features = kernel.shape
        layer = nnx.eval_shape(
            lambda: cls(
                in_features,
                out_features,
                axes,
                use_bias=bias is not None,
                dtype=dtype,
                rngs=nnx.Rngs(0),
            )
        )
        layer.kernel = nnx.Param(jnp.asarray(kernel, jnp.float32), **axes_metadata(axes))
        if bias is not None:
            layer.bias = nnx.Param(jnp.asarray(bias, jnp.float32), **axes_metadata(axes[1:]))
        return layer

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        kernel = self.kernel[...].astype(self.dtype)
        if self.bias is None:
            return dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
        return affine(x, kernel, self.bias[...].astype(self.dtype))

    def merged(self) -> tuple[jax.Array, jax.Array | None]:
        """``(kernel [in, out], bias [out] | None)``, float32: a Dense is its own merge."""
        return self.kernel[...], None if self.bias is None else self.bias[...]


def layer_norm(features: int, *, epsilon: float, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """``nnx.LayerNorm`` computed in float32 (stable under bf16 compute), params replicated."""
    del dtype  # statistics always in float32; the caller casts the result
    return nnx.LayerNorm(
        features,
        epsilon=epsilon,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        use_fast_variance=False,
        scale_metadata=axes_metadata(("norm",)),
        bias_metadata=axes_metadata(("norm",)),
        rngs=rngs,
    )


def embed(
    num: int,
    features: int,
    axes: tuple[str | None, str | None],
    *,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
) -> nnx.Embed:
    """``nnx.Embed`` ``[num, features]`` annotated with logical ``axes``."""
    return nnx.Embed(
        num,
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        embedding_init=jax.nn.initializers.truncated_normal(INIT_STD),
        embedding_metadata=axes_metadata(axes),
        rngs=rngs,
    )


# --- Injectable projections ---------------------------------------------------------------
#
# Every projection of an encoder (attention q/k/v/o, MLP up/down, the pooler and MLM-head
# transform) is built by :func:`linear`, so a parameterization (LoRA, SLTrain, ...) plugs in
# with one :func:`register_linear` call and a config change -- no model edits.

#: Layer types a :class:`LinearSpec` can select (config key ``model.linear_layers``).
LAYER_TYPES = ("attention", "mlp", "head")

#: Registered linear parameterizations by kind (config key ``model.linear``).
LINEAR_KINDS: dict[str, type] = {"dense": Dense}


def register_linear(kind: str, cls: type) -> None:
    """Registers parameterization ``cls`` under ``kind`` (the value of ``model.linear``).

    ``cls`` follows the :class:`Dense` protocol:

    * ``cls(in_features, out_features, axes, *, use_bias, dtype, rngs, **options)``;
    * ``__call__(x) -> y``: ``[..., in] -> [..., out]``;
    * ``merged() -> (kernel [in, out], bias [out] | None)``: the equivalent plain dense
      weights, float32 (:func:`merge_linears` uses them for export);
    * optionally ``axes`` and ``dtype`` attributes (the constructor's arguments), which the
      merged :class:`Dense` inherits.

    Trainable arrays are ``nnx.Param``; fixed ones :class:`~jaxir.layers.variables.Frozen`
    (float) or :class:`~jaxir.layers.variables.Buffer` (anything else). Registering the
    same class twice is a no-op; another class under a taken kind is an error.

    Example:
      >>> class Scaled(Dense):
      ...     def __call__(self, x):
      ...         return 2 * super().__call__(x)
      >>> register_linear("scaled_doc", Scaled)
      >>> "scaled_doc" in LINEAR_KINDS
      True
      >>> del LINEAR_KINDS["scaled_doc"]
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"linear kind must be a non-empty string, got {kind!r}")
    if LINEAR_KINDS.get(kind, cls) is not cls:
        raise ValueError(
            f"linear kind {kind!r} is already registered to {LINEAR_KINDS[kind].__qualname__}"
        )
    LINEAR_KINDS[kind] = cls


@dataclasses.dataclass(frozen=True)
class LinearSpec:
    """Which parameterization builds the projections of which layer types (hashable).

    ``kind`` is a :data:`LINEAR_KINDS` key (config ``model.linear``), ``layer_types`` a
    subset of :data:`LAYER_TYPES` (config ``model.linear_layers``) -- projections of other
    types stay :class:`Dense` -- and ``options`` the keyword arguments of the
    parameterization's constructor as ``(name, value)`` pairs (a mapping is accepted and
    stored sorted).

    Example:
      >>> LinearSpec()
      LinearSpec(kind='dense', layer_types=('attention', 'mlp'), options=())
      >>> LinearSpec("nope")
      Traceback (most recent call last):
        ...
      ValueError: model.linear: unknown linear kind 'nope'; registered kinds: ['dense', 'lora', 'sltrain']
    """

    kind: str = "dense"
    layer_types: tuple[str, ...] = ("attention", "mlp")
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if isinstance(self.layer_types, str):
            object.__setattr__(self, "layer_types", (self.layer_types,))
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        options = self.options
        items = sorted(options.items()) if isinstance(options, Mapping) else options
        object.__setattr__(self, "options", tuple((str(k), v) for k, v in items))
        if self.kind not in LINEAR_KINDS:
            raise ValueError(
                f"model.linear: unknown linear kind {self.kind!r}; registered kinds: "
                f"{sorted(LINEAR_KINDS)}"
            )
        unknown = [t for t in self.layer_types if t not in LAYER_TYPES]
        if unknown:
            raise ValueError(
                f"model.linear_layers: unknown layer type(s) {unknown}; expected a subset of "
                f"{LAYER_TYPES}"
            )
        if self.kind == "dense" and self.options:
            raise ValueError(
                f"model.linear: kind 'dense' takes no options, got {dict(self.options)}"
            )


def linear(
    layer_type: str,
    in_features: int,
    out_features: int,
    axes: tuple[str | None, str | None],
    *,
    spec: LinearSpec,
    use_bias: bool = True,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Builds one projection of ``layer_type`` (one of :data:`LAYER_TYPES`) as ``spec`` says.

    A :class:`Dense` unless ``layer_type`` is in ``spec.layer_types`` and ``spec.kind`` is not
    ``"dense"``; then ``LINEAR_KINDS[spec.kind](in_features, out_features, axes,
    use_bias=use_bias, dtype=dtype, rngs=rngs, **dict(spec.options))``. The result's
    ``layer_type`` attribute records ``layer_type`` (what :func:`parameterize_linears` and
    :func:`merge_linears` select and keep).

    Shapes: the result maps ``[..., in_features] -> [..., out_features]``.

    Example:
      >>> layer = linear("mlp", 3, 2, (None, None), spec=LinearSpec(), dtype=jnp.float32,
      ...                rngs=nnx.Rngs(0))
      >>> type(layer).__name__, layer(jnp.ones((4, 3))).shape
      ('Dense', (4, 2))
    """
    if layer_type not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {layer_type!r}; expected one of {LAYER_TYPES}")
    if spec.kind == "dense" or layer_type not in spec.layer_types:
        layer = Dense(in_features, out_features, axes, use_bias=use_bias, dtype=dtype, rngs=rngs)
    else:
        if spec.kind not in LINEAR_KINDS:  # unregistered after the spec was built
            raise ValueError(
                f"model.linear: unknown linear kind {spec.kind!r}; registered kinds: "
                f"{sorted(LINEAR_KINDS)}"
            )
        layer = LINEAR_KINDS[spec.kind](
            in_features,
            out_features,
            axes,
            use_bias=use_bias,
            dtype=dtype,
            rngs=rngs,
            **dict(spec.options),
        )
    # Recorded (a static attribute) so parameterize_linears can pick projections by type.
    layer.layer_type = layer_type
    return layer


def _is_parameterized(module: Any) -> bool:
    return (
        isinstance(module, nnx.Module)
        and type(module) is not Dense
        and callable(getattr(module, "merged", None))
    )


def merge_linears(model: nnx.Module) -> nnx.Module:
    """A copy of ``model`` with every parameterized projection replaced by its merged :class:`Dense`.

    Each module with a ``merged()`` method (other than a plain :class:`Dense`) becomes a
    :class:`Dense` holding ``merged()``'s kernel and bias at the same attribute path, so
    Hugging Face key maps apply unchanged. Every submodule's ``config.linear`` (a
    :class:`LinearSpec` field) is reset to the dense default, so the copy describes itself.
    ``model`` is not modified (arrays are shared, not copied).

    Example:
      >>> class Twice(Dense):
      ...     def __call__(self, x):
      ...         return super().__call__(x) * 2
      ...     def merged(self):
      ...         return 2 * self.kernel[...], 2 * self.bias[...]
      >>> outer = nnx.List([Twice(3, 2, (None, None), dtype=jnp.float32, rngs=nnx.Rngs(0))])
      >>> plain = merge_linears(outer)
      >>> type(plain[0]).__name__, type(outer[0]).__name__
      ('Dense', 'Twice')
      >>> x = jnp.ones((1, 3))
      >>> bool(jnp.allclose(plain[0](x), outer[0](x)))
      True
    """
    copy = nnx.clone(model)
    if _is_parameterized(copy):
        return _merged_dense(copy)
    replacements: dict[int, Dense] = {}
    for _, parent in list(nnx.iter_modules(copy)):
        config = getattr(parent, "config", None)
        if (
            dataclasses.is_dataclass(config)
            and not isinstance(config, type)
            and isinstance(getattr(config, "linear", None), LinearSpec)
        ):
            parent.config = dataclasses.replace(config, linear=LinearSpec())
        for key, child in list(nnx.iter_children(parent)):
            if not _is_parameterized(child):
                continue
            if id(child) not in replacements:
                replacements[id(child)] = _merged_dense(child)
            if isinstance(parent, (nnx.List, nnx.Dict)):
                parent[key] = replacements[id(child)]
            else:
                setattr(parent, key, replacements[id(child)])
    return copy


def _merged_dense(module: nnx.Module) -> Dense:
    kernel, bias = module.merged()
    axes = getattr(module, "axes", (None, None))
    dtype = getattr(module, "dtype", jnp.float32)
    dense = Dense.from_weights(kernel, bias, axes, dtype=dtype)
    if getattr(module, "layer_type", None) is not None:
        dense.layer_type = module.layer_type
    return dense


def _set_linear_spec(module: nnx.Module, spec: LinearSpec) -> None:
    """Sets ``module.config.linear`` to ``spec`` when the module has such a config field."""
    config = getattr(module, "config", None)
    if (
        dataclasses.is_dataclass(config)
        and not isinstance(config, type)
        and isinstance(getattr(config, "linear", None), LinearSpec)
    ):
        module.config = dataclasses.replace(config, linear=spec)


def _path_key(key: jax.Array, path: tuple[Any, ...]) -> jax.Array:
    """``key`` folded with a stable hash of ``path``: one independent key per projection."""
    return jax.random.fold_in(key, zlib.crc32("/".join(map(str, path)).encode()) & 0x7FFFFFFF)


def parameterize_linears(model: nnx.Module, spec: LinearSpec, *, key: jax.Array) -> nnx.Module:
    """A copy of ``model`` whose :class:`Dense` projections of ``spec.layer_types`` are ``spec.kind``.

    The inverse of :func:`merge_linears`: each plain :class:`Dense` whose recorded
    ``layer_type`` (set by :func:`linear`) is in ``spec.layer_types`` becomes
    ``LINEAR_KINDS[spec.kind].from_dense(dense, key=k, **dict(spec.options))`` at the same
    attribute path, ``k`` being ``key`` folded with a hash of that path (so each
    projection draws independently and reproducibly). Every submodule's
    ``config.linear`` becomes ``spec``, so the copy has the structure of a model built
    from the parameterized config (a Hugging Face checkpoint loaded dense, then made
    LoRA / SLTrain). ``model`` is not modified.

    Raises:
      ValueError: ``spec.kind``'s class has no ``from_dense``; or a type of
        ``spec.layer_types`` has no projection in ``model`` (the message names
        ``model.linear_layers``).

    Example:
      >>> import jaxir.layers.lora
      >>> from jaxir.models.bert import PRESETS, Model
      >>> dense = Model(PRESETS["tiny"].replace(mlm_head=False), rngs=nnx.Rngs(0))
      >>> spec = LinearSpec("lora", ("attention",), {"rank": 2})
      >>> lora = parameterize_linears(dense, spec, key=jax.random.key(0))
      >>> type(lora.layers[0].attention.query).__name__, type(lora.layers[0].mlp.up).__name__
      ('LoRA', 'Dense')
      >>> lora.config.linear == spec
      True
      >>> ids = jnp.array([[101, 7, 102]])
      >>> bool(jnp.allclose(lora(ids, ids > 0), dense(ids, ids > 0)))  # lora_b starts at 0
      True
    """
    copy = nnx.clone(model)
    if spec.kind == "dense":
        return copy
    cls = LINEAR_KINDS[spec.kind]
    if not callable(getattr(cls, "from_dense", None)):
        raise ValueError(
            f"model.linear={spec.kind!r}: {cls.__qualname__} has no from_dense(dense, *, key, "
            "**options), so it cannot start from dense weights"
        )
    options = dict(spec.options)

    def convert(dense: Dense, path: tuple[Any, ...]) -> nnx.Module:
        layer = cls.from_dense(dense, key=_path_key(key, path), **options)
        layer.layer_type = dense.layer_type
        return layer

    def selected(module: Any) -> bool:
        return type(module) is Dense and getattr(module, "layer_type", None) in spec.layer_types

    if selected(copy):
        return convert(copy, ())
    found: set[str] = set()
    for path, parent in list(nnx.iter_modules(copy)):
        _set_linear_spec(parent, spec)
        for name, child in list(nnx.iter_children(parent)):
            if not selected(child):
                continue
            found.add(child.layer_type)
            layer = convert(child, (*path, name))
            if isinstance(parent, (nnx.List, nnx.Dict)):
                parent[name] = layer
            else:
                setattr(parent, name, layer)
    missing = [t for t in spec.layer_types if t not in found]
    if missing:
        raise ValueError(
            f"model.linear_layers: the model has no {'/'.join(missing)} projection to make "
            f"{spec.kind!r} (layer types present: {sorted(found) or 'none'}); choose from "
            "the model's projections"
        )
    return copy


def conversion_error(dense: nnx.Module, converted: nnx.Module) -> float:
    """Relative Frobenius distance of ``converted``'s merged projections from ``dense``'s.

    ``sqrt(sum ||merged_l - W_l||^2 / sum ||W_l||^2)`` over the projections ``l`` that
    :func:`parameterize_linears` changed (0.0 when none did): how much of a checkpoint a
    parameterization keeps at the start of fine-tuning. LoRA keeps it exactly; SLTrain's
    truncated SVD plus residual support is lossy unless the kernels are low-rank (on
    all-MiniLM-L6-v2, rank 64 with density 0.03 on attention and MLP kernels: 0.60).

    Example:
      >>> from jaxir.models.bert import PRESETS, Model
      >>> dense = Model(PRESETS["tiny"].replace(mlm_head=False), rngs=nnx.Rngs(0))
      >>> spec = LinearSpec("sltrain", ("attention",), {"rank": 4, "density": 0.05})
      >>> sltrain = parameterize_linears(dense, spec, key=jax.random.key(0))
      >>> 0.0 < conversion_error(dense, sltrain) < 1.0
      True
      >>> lora = parameterize_linears(dense, LinearSpec("lora", ("attention",), {"rank": 2}),
      ...                             key=jax.random.key(0))
      >>> conversion_error(dense, lora)
      0.0
    """
    changed = [path for path, module in nnx.iter_modules(converted) if _is_parameterized(module)]
    before = dict(nnx.iter_modules(dense))
    after = dict(nnx.iter_modules(merge_linears(converted)))
    error = norm = 0.0
    for path in changed:
        w = jnp.asarray(before[path].kernel[...], jnp.float32)
        error += float(jnp.sum((jnp.asarray(after[path].kernel[...], jnp.float32) - w) ** 2))
        norm += float(jnp.sum(w**2))
    return (error / norm) ** 0.5 if norm else 0.0


def parameterize_pretrained(
    tower: nnx.Module, spec: LinearSpec, *, key: jax.Array, source: Any, warn: bool = True
) -> nnx.Module:
    """:func:`parameterize_linears` on a loaded checkpoint, warning when it loses > 1% of it.

    With ``warn``, prints the :func:`conversion_error` of the conversion when it exceeds
    0.01 (an SLTrain start far from the checkpoint trains from a degraded model: on
    all-MiniLM-L6-v2 at rank 64 the first dual-encoder loss was 3.27 instead of 0.87).
    """
    converted = parameterize_linears(tower, spec, key=key)
    error = conversion_error(tower, converted) if warn else 0.0
    if error > 0.01:
        print(
            f"{source}: model.linear={spec.kind!r} starts {error:.0%} away from the "
            f"checkpoint's {'/'.join(spec.layer_types)} kernels (relative Frobenius error of "
            "the merged weights), so training starts from a degraded model; raise the rank "
            f"(model.{spec.kind}.rank) to keep more of it, or fine-tune with model.linear=lora."
        )
    return converted


# The built-in parameterizations register themselves on import; importing them here makes
# ``model.linear=lora|sltrain`` valid wherever the factory is. (At the end: they import
# this module's names.)
from jaxir.layers import lora as _lora  # noqa: E402, F401
from jaxir.layers import sparse_lowrank as _sparse_lowrank  # noqa: E402, F401
