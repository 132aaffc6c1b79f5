"""LoRA: a frozen dense projection plus a trainable low-rank update.

``y = x @ kernel + bias + scale * (x @ lora_a) @ lora_b`` (Hu et al. 2021, "LoRA:
Low-Rank Adaptation of Large Language Models"), ``scale = alpha / rank``.

* ``kernel [in, out]`` and ``bias [out]`` are :class:`~jaxir.layers.variables.Frozen`:
  carried in the train state and checkpoints, never differentiated, no optimizer state
  (the variable-type split flax's ``nnx.LoRA`` uses, here through jaxir's train state);
  their names and logical axes are a :class:`~jaxir.layers.linear.Dense`'s, so a LoRA
  model's base weights sit at the paths of the dense model they came from.
* ``lora_a [in, rank]`` (uniform in ``+-1/sqrt(in)``, PyTorch's
  ``kaiming_uniform_(a=sqrt(5))`` as in ``peft``) and ``lora_b [rank, out]`` (zeros, so
  the layer starts as its base) are the only ``nnx.Param``.

The update is applied unmerged, ``(x @ a) @ b``: the backward pass then needs no
``[in, out]`` weight gradient (the frozen base has none), ``2 * tokens * rank * (in +
out)`` extra flops instead of ``2 * tokens * in * out``. :meth:`LoRA.merged` gives the
plain dense weights for export (:func:`jaxir.layers.linear.merge_linears`,
:func:`jaxir.models.hf.save_pretrained`).

Sharding: ``lora_a`` is ``(axes[0], "rank")``, ``lora_b`` ``("rank", axes[1])`` (the rank
axis replicated, the in/out axes sharded like the base kernel's). Optimizer labels
(:mod:`jaxir.optim.labels`): ``lora_a`` and ``lora_b`` are ``factor``.

Start from pretrained weights with :meth:`LoRA.from_dense` (one layer) or
:func:`jaxir.layers.linear.parameterize_linears` (a whole model, e.g. one loaded by
:func:`jaxir.models.hf.load_pretrained`).

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxir.layers.linear import Dense
    >>> dense = Dense(8, 4, ("embed", "mlp"), dtype=jnp.float32, rngs=nnx.Rngs(0))
    >>> layer = LoRA.from_dense(dense, rank=2, alpha=4.0, key=jax.random.key(0))
    >>> layer.lora_a.shape, layer.lora_b.shape, layer.scale
    ((8, 2), (2, 4), 2.0)
    >>> x = jnp.ones((3, 8))
    >>> bool(jnp.allclose(layer(x), dense(x)))  # lora_b starts at zero
    True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxir.layers.dot import affine, dot_general
from jaxir.layers.linear import INIT_STD, Dense, axes_metadata, register_linear
from jaxir.layers.variables import Frozen


def _check_rank(in_features: int, out_features: int, rank: int) -> None:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"model.lora.rank must be a positive integer, got {rank!r}")
    if rank > min(in_features, out_features):
        raise ValueError(
            f"model.lora.rank={rank} is larger than a dimension of a {in_features}x"
            f"{out_features} projection; use a rank <= {min(in_features, out_features)}"
        )


def _lora_a(key: jax.Array, in_features: int, rank: int) -> jax.Array:
    bound = 1.0 / in_features**0.5
    return jax.random.uniform(key, (in_features, rank), jnp.float32, -bound, bound)


class LoRA(nnx.Module):
    """``y = x @ kernel + bias + (alpha / rank) * (x @ lora_a) @ lora_b``, base frozen.

    Args:
      in_features, out_features: the projection's shape ``[in, out]``.
      axes: logical axes of the base kernel (``(in_axis, out_axis)``).
      use_bias: whether the base has a (frozen) ``bias [out]``.
      dtype: compute dtype (variables are float32, cast per call).
      rngs: ``rngs.params()`` draws the base kernel (truncated normal, std 0.02, as a
        :class:`~jaxir.layers.linear.Dense`) and ``lora_a``. A randomly initialised base
        only makes sense in tests; real use starts from :meth:`from_dense`.
      rank: adapter rank, ``1 <= rank <= min(in, out)`` (``model.lora.rank``).
      alpha: ``scale = alpha / rank`` (``model.lora.alpha``).

    Shapes: ``[..., in] -> [..., out]``.

    Raises:
      ValueError: naming ``model.lora.rank`` when it is out of range.

    Example:
      >>> layer = LoRA(4, 3, (None, None), rank=2, dtype=jnp.float32, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((5, 4))).shape
      (5, 3)
      >>> sorted(k for k, _ in nnx.state(layer, nnx.Param).items())
      ['lora_a', 'lora_b']
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
        rank: int = 16,
        alpha: float = 32.0,
    ):
        _check_rank(in_features, out_features, rank)
        self.axes = tuple(axes)
        self.dtype = dtype
        self.rank = rank
        self.alpha = float(alpha)
        self.scale = float(alpha) / rank
        init = jax.nn.initializers.truncated_normal(INIT_STD)
        self.kernel = Frozen(
            init(rngs.params(), (in_features, out_features), jnp.float32), **axes_metadata(axes)
        )
        self.bias = (
            Frozen(jnp.zeros((out_features,), jnp.float32), **axes_metadata(axes[1:]))
            if use_bias
            else None
        )
        self.lora_a = nnx.Param(
            _lora_a(rngs.params(), in_features, rank), **axes_metadata((axes[0], "rank"))
        )
        self.lora_b = nnx.Param(
            jnp.zeros((rank, out_features), jnp.float32), **axes_metadata(("rank", axes[1]))
        )

    @classmethod
    def from_dense(
        cls,
        dense: Dense,
        *,
        rank: int = 16,
        alpha: float = 32.0,
        key: jax.Array,
    ) -> LoRA:
        """LoRA on top of ``dense``: its kernel and bias frozen, ``lora_a`` drawn from ``key``, ``lora_b = 0``.

        The result computes exactly what ``dense`` does until ``lora_b`` is trained.

        Example:
          >>> dense = Dense(4, 4, (None, None), use_bias=False, dtype=jnp.float32,
          ...               rngs=nnx.Rngs(0))
          >>> LoRA.from_dense(dense, rank=1, key=jax.random.key(1)).bias is None
          True
        """
        kernel = jnp.asarray(dense.kernel[...], jnp.float32)
        in_features, out_features = kernel.shape
        axes = tuple(dense.kernel.get_metadata().get("out_sharding") or (None, None))
        layer = nnx.eval_shape(
            lambda: cls(
                in_features,
                out_features,
                axes,
                use_bias=dense.bias is not None,
                dtype=dense.dtype,
                rngs=nnx.Rngs(0),
                rank=rank,
                alpha=alpha,
            )
        )
        layer.kernel = Frozen(kernel, **axes_metadata(axes))
        if dense.bias is not None:
            layer.bias = Frozen(
                jnp.asarray(dense.bias[...], jnp.float32), **axes_metadata(axes[1:])
            )
        layer.lora_a = nnx.Param(
            _lora_a(key, in_features, rank), **axes_metadata((axes[0], "rank"))
        )
        layer.lora_b = nnx.Param(
            jnp.zeros((rank, out_features), jnp.float32), **axes_metadata(("rank", axes[1]))
        )
        return layer

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        dims = (((x.ndim - 1,), (0,)), ((), ()))
        kernel = self.kernel[...].astype(self.dtype)
        if self.bias is None:
            y = dot_general(x, kernel, dims)
        else:
            y = affine(x, kernel, self.bias[...].astype(self.dtype))
        xa = dot_general(x, self.lora_a[...].astype(self.dtype), dims)
        update = dot_general(xa, self.lora_b[...].astype(self.dtype), dims)
        return y + (self.scale * update.astype(jnp.float32)).astype(y.dtype)

    def merged(self) -> tuple[jax.Array, jax.Array | None]:
        """``(kernel + scale * lora_a @ lora_b, bias)``, float32: the equivalent :class:`Dense` weights."""
        delta = jnp.matmul(self.lora_a[...], self.lora_b[...], precision=jax.lax.Precision.HIGHEST)
        kernel = self.kernel[...] + self.scale * delta
        return kernel, None if self.bias is None else self.bias[...]


register_linear("lora", LoRA)
