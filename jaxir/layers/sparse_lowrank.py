"""SLTrain: a projection whose kernel is a low-rank product plus a sparse matrix of fixed support.

``kernel = scale * a @ b + S``, ``y = x @ kernel + bias`` (Han et al. 2024, "SLTrain: a
sparse plus low-rank approach for parameter and memory efficient pretraining",
arXiv:2406.02214; the paper's ``W = BA + S`` in PyTorch's ``[out, in]`` layout is this
``[in, out]`` kernel with ``a = A^T``, ``b = B^T``).

* ``a [in, rank]`` and ``b [rank, out]`` are ``nnx.Param``; ``scale = alpha / rank``.
* ``S`` has ``nnz = round(density * in * out)`` non-zeros at positions drawn uniformly
  without replacement from an explicit key when the layer is built, stored row-major
  sorted in ``indices [nnz, 2]`` (``(row, col)``, int32) as a
  :class:`~jaxir.layers.variables.Buffer`: not trained, but carried in the train state
  and every checkpoint, so a resumed run has exactly the same support. Only the
  ``values [nnz]`` (an ``nnx.Param``), ``a``, ``b`` and ``bias`` are trained.

Initialisation follows the reference implementation (andyjm3/SLTrain,
``splora/splora_linear.py``): ``a`` and the sparse values uniform in
``+-1/sqrt(in)`` (PyTorch's ``kaiming_uniform_(a=sqrt(5))``), ``b`` zero, so training
starts from the random sparse matrix alone. :meth:`SparseLowRank.from_dense` is the
fine-tuning start instead: truncated SVD of a dense kernel for ``a``, ``b`` and its
largest-magnitude residual entries for ``S``.

How the sparse part is computed (pure JAX, no custom kernel): the values are
scattered into the low-rank product, ``(scale * a @ b).at[rows, cols].add(values)``,
and the merged kernel meets ``x`` in one GEMM (:func:`jaxir.layers.dot.affine`); the
gradient of the values is then a gather of the dense kernel gradient. The alternative,
``x @ S`` as a gather of ``x[..., rows] * values`` and a ``segment_sum`` over ``cols``,
never materializes ``[in, out]`` but moves ``tokens * nnz`` elements through a
gather and a scatter-add. Measured on this project's CPU (XLA:CPU, float32, jitted
forward + backward of one BERT-base projection over 4096 tokens, rank 64, density 0.03,
2 cores shared with other jobs, median of 7): scatter-into-kernel 768x768 0.36 s,
768x3072 1.95 s; gather + segment-sum 8.9 s and 49 s -- about 25x slower -- so the
scatter form is the one used (it also keeps the activation memory of a dense layer;
the saving SLTrain is about is parameters and optimizer state, not activations).

Sharding: ``a`` is ``(axes[0], "rank")``, ``b`` ``("rank", axes[1])``, ``values`` and
``indices`` ``("nnz", ...)``: the in/out axes shard like the dense kernel's, ``rank``
takes ``fsdp`` where the other axis leaves it free (``b [rank, mlp]``) and ``nnz`` takes
``fsdp`` (:data:`jaxir.sharding.LOGICAL_RULES`; the support size is a multiple of
:data:`NNZ_MULTIPLE`), so under FSDP no factor, value or moment of it is replicated.
XLA all-gathers the support for the scatter, as it all-gathers a dense kernel. Optimizer labels (:mod:`jaxir.optim.labels`):
``a``, ``b`` and ``values`` are ``factor`` (see there), ``bias`` is ``bias``.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = SparseLowRank(8, 6, (None, None), rank=2, density=0.25, dtype=jnp.float32,
    ...                       rngs=nnx.Rngs(0))
    >>> layer.indices.shape, layer.values.shape, layer.a.shape, layer.b.shape
    ((12, 2), (12,), (8, 2), (2, 6))
    >>> x = jnp.ones((3, 8))
    >>> kernel, bias = layer.merged()
    >>> bool(jnp.allclose(layer(x), x @ kernel + bias))
    True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxir.layers.dot import affine, dot_general
from jaxir.layers.linear import Dense, axes_metadata, register_linear
from jaxir.layers.variables import Buffer


def _check_options(in_features: int, out_features: int, rank: int, density: float) -> None:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"model.sltrain.rank must be a positive integer, got {rank!r}")
    if rank > min(in_features, out_features):
        raise ValueError(
            f"model.sltrain.rank={rank} is larger than a dimension of a {in_features}x"
            f"{out_features} projection; use a rank <= {min(in_features, out_features)}"
        )
    if not 0.0 < float(density) <= 1.0:
        raise ValueError(f"model.sltrain.density must be in (0, 1], got {density!r}")


#: A large support is rounded to a multiple of this, so that its ``values`` and ``indices``
#: shard evenly over an ``fsdp`` axis of up to this many devices.
NNZ_MULTIPLE = 128


def num_nonzeros(in_features: int, out_features: int, density: float) -> int:
    """The size of the sparse support: ``density * in * out``, rounded to shard evenly.

    ``max(1, round(density * in * out))``; from ``50 * NNZ_MULTIPLE`` entries on it is
    rounded to the nearest multiple of :data:`NNZ_MULTIPLE` (a change of at most 1%; 31
    of a BERT-base attention projection's 17,695), so the support shards over FSDP
    instead of being replicated. A smaller or full support stays exact (and replicates unless
    its size divides the axis).

    Example:
      >>> num_nonzeros(768, 768, 0.03), num_nonzeros(8, 6, 0.25)
      (17664, 12)
    """
    nnz = max(1, round(float(density) * in_features * out_features))
    if nnz < 50 * NNZ_MULTIPLE or nnz == in_features * out_features:
        return nnz
    return min(round(nnz / NNZ_MULTIPLE) * NNZ_MULTIPLE, in_features * out_features)


def random_support(key: jax.Array, in_features: int, out_features: int, nnz: int) -> jax.Array:
    """``[nnz, 2]`` int32 ``(row, col)`` positions, distinct, uniform, sorted row-major.

    Example:
      >>> random_support(jax.random.key(0), 3, 4, 5).shape
      (5, 2)
    """
    flat = jax.random.choice(key, in_features * out_features, (nnz,), replace=False)
    flat = jnp.sort(flat.astype(jnp.int32))
    return jnp.stack([flat // out_features, flat % out_features], axis=-1)


class SparseLowRank(nnx.Module):
    """``y = x @ (scale * a @ b + S) + bias``, ``S`` sparse with a fixed random support.

    Args:
      in_features, out_features: the projection's shape ``[in, out]``.
      axes: logical axes of the equivalent dense kernel (``(in_axis, out_axis)``).
      use_bias: add a trainable ``bias [out]``.
      dtype: compute dtype (parameters are float32; the merged kernel is cast per call).
      rngs: ``rngs.params()`` draws ``a``, the sparse values and then the support.
      rank: rank of ``a @ b``, ``1 <= rank <= min(in, out)`` (``model.sltrain.rank``).
      density: share of kernel entries in the support, in ``(0, 1]``
        (``model.sltrain.density``).
      alpha: ``scale = alpha / rank`` (``model.sltrain.alpha``).

    Shapes: ``[..., in] -> [..., out]``.

    Raises:
      ValueError: naming ``model.sltrain.rank`` / ``model.sltrain.density`` when out of range.

    Example:
      >>> layer = SparseLowRank(4, 4, (None, None), rank=1, density=0.5, alpha=1.0,
      ...                       use_bias=False, dtype=jnp.float32, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 4))).shape, layer.bias is None, layer.scale
      ((2, 4), True, 1.0)
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
        rank: int = 64,
        density: float = 0.03,
        alpha: float = 16.0,
    ):
        _check_options(in_features, out_features, rank, density)
        self.axes = tuple(axes)
        self.dtype = dtype
        self.rank = rank
        self.density = float(density)
        self.alpha = float(alpha)
        self.scale = float(alpha) / rank
        nnz = num_nonzeros(in_features, out_features, density)
        bound = 1.0 / in_features**0.5
        uniform = lambda key, shape: jax.random.uniform(  # noqa: E731
            key, shape, jnp.float32, -bound, bound
        )
        self.a = nnx.Param(
            uniform(rngs.params(), (in_features, rank)), **axes_metadata((axes[0], "rank"))
        )
        self.b = nnx.Param(
            jnp.zeros((rank, out_features), jnp.float32), **axes_metadata(("rank", axes[1]))
        )
        self.values = nnx.Param(uniform(rngs.params(), (nnz,)), **axes_metadata(("nnz",)))
        self.indices = Buffer(
            random_support(rngs.params(), in_features, out_features, nnz),
            **axes_metadata(("nnz", None)),
        )
        self.bias = (
            nnx.Param(jnp.zeros((out_features,), jnp.float32), **axes_metadata(axes[1:]))
            if use_bias
            else None
        )

    @classmethod
    def from_dense(
        cls,
        dense: Dense,
        *,
        rank: int = 64,
        density: float = 0.03,
        alpha: float = 16.0,
        key: jax.Array | None = None,
    ) -> SparseLowRank:
        """The SLTrain layer closest to ``dense``: truncated SVD plus the largest residuals.

        With ``W = U diag(s) V^T`` (float32 SVD of the ``[in, out]`` kernel),
        ``a = U_r diag(sqrt(s_r / scale))``, ``b = diag(sqrt(s_r / scale)) V_r^T`` (so
        ``scale * a @ b`` is the best rank-``r`` approximation), and ``S`` holds the
        ``nnz`` entries of largest magnitude of the residual ``W - scale * a @ b`` at
        their exact values. The bias is copied. ``key`` is accepted for the shared
        ``from_dense`` signature and unused: this initialisation is deterministic.

        Example:
          >>> dense = Dense(6, 5, ("embed", "mlp"), dtype=jnp.float32, rngs=nnx.Rngs(0))
          >>> full = SparseLowRank.from_dense(dense, rank=5, density=0.1)
          >>> float(jnp.abs(full.merged()[0] - dense.kernel[...]).max()) < 1e-5
          True
        """
        del key
        kernel = jnp.asarray(dense.kernel[...], jnp.float32)
        in_features, out_features = kernel.shape
        axes = tuple(dense.kernel.get_metadata().get("out_sharding") or (None, None))
        bias = None if dense.bias is None else jnp.asarray(dense.bias[...], jnp.float32)
        layer = nnx.eval_shape(
            lambda: cls(
                in_features,
                out_features,
                axes,
                use_bias=bias is not None,
                dtype=dense.dtype,
                rngs=nnx.Rngs(0),
                rank=rank,
                density=density,
                alpha=alpha,
            )
        )
        u, s, vt = jnp.linalg.svd(kernel, full_matrices=False)
        root = jnp.sqrt(s[:rank] / layer.scale)
        a = u[:, :rank] * root
        b = root[:, None] * vt[:rank]
        residual = kernel - layer.scale * jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
        nnz = num_nonzeros(in_features, out_features, density)
        _, flat = jax.lax.top_k(jnp.abs(residual).reshape(-1), nnz)
        flat = jnp.sort(flat.astype(jnp.int32))
        indices = jnp.stack([flat // out_features, flat % out_features], axis=-1)
        layer.a = nnx.Param(a, **axes_metadata((axes[0], "rank")))
        layer.b = nnx.Param(b, **axes_metadata(("rank", axes[1])))
        layer.values = nnx.Param(residual.reshape(-1)[flat], **axes_metadata(("nnz",)))
        layer.indices = Buffer(indices, **axes_metadata(("nnz", None)))
        if bias is not None:
            layer.bias = nnx.Param(bias, **axes_metadata(axes[1:]))
        return layer

    def _kernel(self) -> jax.Array:
        """The merged ``[in, out]`` float32 kernel: ``scale * a @ b`` with ``S`` scattered in."""
        a, b = self.a[...], self.b[...]
        low_rank = self.scale * dot_general(a, b, (((1,), (0,)), ((), ())))
        rows, cols = self.indices[...][:, 0], self.indices[...][:, 1]
        return low_rank.at[rows, cols].add(self.values[...], unique_indices=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        kernel = self._kernel().astype(self.dtype)
        if self.bias is None:
            return dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
        return affine(x, kernel, self.bias[...].astype(self.dtype))

    def merged(self) -> tuple[jax.Array, jax.Array | None]:
        """``(kernel [in, out], bias [out] | None)``, float32: the equivalent :class:`Dense` weights."""
        return self._kernel(), None if self.bias is None else self.bias[...]


register_linear("sltrain", SparseLowRank)
