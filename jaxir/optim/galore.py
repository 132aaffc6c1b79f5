"""GaLore (Zhao et al. 2024) on ``optax.contrib``, with the extensions jaxir's users need.

GaLore keeps Adam's moments in a rank-``r`` subspace of each attention / MLP kernel's
gradient: for a kernel seen as a matrix ``G [m, n]`` (``m >= n``; otherwise the roles of
the sides swap, exactly as in :func:`optax.contrib.scale_by_galore`)::

    P [m, r]  = top-r left singular vectors of G        (refreshed every update_gap steps)
    R [r, n]  = P^T G                                   (the low-rank gradient)
    update    = scale * P adam(R)                       (back to full space)

so the optimizer state of that kernel is ``P`` plus two ``[r, n]`` moments:
``O(r * max(m, n))`` instead of Adam's ``2 m n``. Which arrays are projected comes from the
parameter labels (:mod:`jaxir.optim.labels`): ``matrix`` only, never embeddings, norms,
biases or heads; everything else gets plain Adam. Weight decay is decoupled and applied in
full space (:func:`galore` = this, then ``add_decayed_weights``, then the learning rate,
the same chain as ``optax.contrib.galore``).

What is reused from optax and what is added
-------------------------------------------
Reused: ``GaLoreDimensionNumbers`` and optax's reshape of a multi-axis kernel to its
``(reduction, output)`` matrix, the choice of side (project the larger dimension), the
effective rank ``min(rank, m, n)``, the f32 SVD and dtype handling, the base optimizer
(``optax.scale_by_adam``) run on the low-rank tree, and the chain with decoupled weight
decay. With every extension off (``stagger=False, svd="full", moments="keep"``) the update
equals ``optax.contrib.galore``'s with the same dimension numbers (tested).

Added, because ``optax.contrib.scale_by_galore`` cannot express it (one global
``count % update_proj_gap == 0`` test for every leaf, a hard-coded ``jnp.linalg.svd``, and
moments left in the old basis), so the transformation is re-assembled here from the same
optax building blocks rather than wrapped:

* **Staggered refresh** (``stagger=True``): the ``i``-th of ``L`` projected kernels
  refreshes at steps where ``(step + offset_i) % update_gap == 0`` with
  ``offset_i = i * update_gap // L`` (and every kernel at step 0, when no projector exists
  yet), so at most ``ceil(L / update_gap)`` SVDs land on one step instead of ``L``: no
  step-time spike every ``update_gap`` steps. A per-leaf offset needs a per-leaf refresh
  predicate, which optax's update does not take.
* **Randomized SVD** (``svd="randomized"``): the top-``r`` singular vectors by a Gaussian
  range finder with oversampling and power iterations (Halko, Martinsson & Tropp 2011,
  Alg. 4.4), ``O(m n (r + p))`` instead of the full SVD's ``O(m n min(m, n))``. The random
  test matrix is drawn from ``fold_in(fold_in(key(seed), leaf), step)``: nothing is stored,
  a resumed run draws the same one.
* **Moments at a refresh** (``moments``): ``"keep"`` (optax, the paper) leaves Adam's
  moments in the old basis, so a singular vector whose sign or order flips between
  refreshes gets its momentum with the wrong sign. ``"project"`` (jaxir's default)
  transports them into the new basis with ``T = P_new^T P_old [r, r]``: ``mu <- T mu`` (the
  exact change of basis of the in-subspace part; components outside the new subspace are
  dropped) and ``nu <- (T * T) nu`` (elementwise-squared ``T``, which keeps ``nu >= 0`` and
  is exact for sign flips and permutations). It costs an ``[r, r]`` product per refresh.
  Adam's step count (bias correction) is kept.

Under the sharded train step each projector ``[m, r]`` is sharded like its kernel along
``m`` (logical axis of ``m``, then ``"rank"``, replicated) and each low-rank moment
``[r, n]`` like the kernel along ``n``; nothing is replicated that the kernel shards. The
step sees the already-accumulated gradient (``train.grad_accum`` / GradCache reduce inside
the step, ``optax.MultiSteps`` calls the update once per ``k``), so each gradient is
projected once per optimizer step.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> params = {"w": jnp.ones((16, 8)), "b": jnp.zeros((8,))}
    >>> dims = {"w": optax.contrib.GaLoreDimensionNumbers(0, 1), "b": None}
    >>> opt = galore(1e-2, rank=4, update_gap=10, dimension_numbers=dims)
    >>> state = opt.init(params)
    >>> state[0].projector["w"].shape, state[0].base_optimizer_state.mu["w"].shape
    ((16, 4), (4, 8))
    >>> updates, state = opt.update(jax.tree.map(jnp.ones_like, params), state, params)
    >>> updates["w"].shape
    (16, 8)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from optax.contrib import GaLoreDimensionNumbers

# optax's reshape of a multi-axis kernel to its (reduction, output) matrix: reused, not
# rewritten, so multi-axis kernels are seen exactly as optax.contrib.galore sees them.
from optax.contrib._galore import _compute_galore_reshape

from jaxir.optim.build import DECAY_LABELS, OptimizerSpec, register_optimizer
from jaxir.optim.labels import label_items, mask_for

SVD_KINDS = ("full", "randomized")
MOMENT_RULES = ("project", "keep")

#: Fira's norm-growth limit per step (gamma in Chen et al. 2024; APOLLO uses the same).
GROWTH_LIMIT = 1.01

DimensionNumbers = Any  # a pytree of GaLoreDimensionNumbers | None, or params -> such a pytree


def _is_var(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _is_dim_leaf(x: Any) -> bool:
    return x is None or isinstance(x, GaLoreDimensionNumbers)


def value_of(leaf: Any) -> Any:
    """The array of a leaf that may be an ``nnx.Variable``."""
    return leaf.get_value() if _is_var(leaf) else leaf


def like(leaf: Any, value: Any, axes: tuple[str | None, ...] | None = None) -> Any:
    """``value`` wrapped like ``leaf`` (same Variable type and metadata; ``axes`` replaces
    the logical ``out_sharding``); a plain array when ``leaf`` is one."""
    if not _is_var(leaf):
        return value
    if axes is None:
        return leaf.replace(value)
    return leaf.replace(value, out_sharding=axes)


def flatten(tree: Any) -> tuple[list[Any], Any]:
    """Leaves of ``tree`` with ``nnx.Variable`` s kept whole (their metadata travels)."""
    return jax.tree.flatten(tree, is_leaf=_is_var)


def dimension_numbers_from_labels(labels: nnx.State) -> Callable[[Any], Any]:
    """``params -> pytree`` of ``GaLoreDimensionNumbers`` on ``matrix``-labelled leaves, else None.

    A 2-d kernel is ``(reduction=0, output=1)``. A multi-axis kernel (e.g. an attention
    projection stored ``[embed, heads, head_dim]``) is seen as a matrix with the ``embed``
    side as one dimension: ``(0, (1, ...))`` when its first logical axis is ``embed`` (an
    input projection), else ``((0, ..., -2), -1)`` (an output projection).
    """
    chosen = [label == "matrix" for _, label in label_items(labels)]

    def dims(params: Any) -> Any:
        leaves, treedef = flatten(params)
        if len(leaves) != len(chosen):
            raise ValueError(
                f"The optimizer was built for {len(chosen)} parameters but got {len(leaves)}."
            )
        out = []
        for leaf, on in zip(leaves, chosen):
            ndim = len(value_of(leaf).shape)
            if not on or ndim < 2:
                out.append(None)
            elif ndim == 2:
                out.append(GaLoreDimensionNumbers(0, 1))
            else:
                axes = _logical_axes(leaf) or (None,) * ndim
                if axes[0] == "embed":
                    out.append(GaLoreDimensionNumbers(0, tuple(range(1, ndim))))
                else:
                    out.append(GaLoreDimensionNumbers(tuple(range(ndim - 1)), ndim - 1))
        return treedef.unflatten(like(leaf, d) for leaf, d in zip(leaves, out))

    return dims


def _logical_axes(leaf: Any) -> tuple[str | None, ...] | None:
    if not _is_var(leaf):
        return None
    axes = leaf.get_metadata().get("out_sharding")
    return tuple(axes) if axes else None


def _resolve_dims(dimension_numbers: DimensionNumbers, params: Any) -> list[Any]:
    """One ``GaLoreDimensionNumbers | None`` per leaf of ``flatten(params)`` (optax's rules)."""
    leaves, _ = flatten(params)
    if dimension_numbers is None:  # optax's default: every 2-d array
        return [GaLoreDimensionNumbers(0, 1) if value_of(x).ndim == 2 else None for x in leaves]
    if isinstance(dimension_numbers, GaLoreDimensionNumbers):
        return [dimension_numbers if value_of(x).ndim >= 2 else None for x in leaves]
    tree = dimension_numbers(params) if callable(dimension_numbers) else dimension_numbers
    dims = jax.tree.leaves(tree, is_leaf=_is_dim_leaf)
    if len(dims) != len(leaves):
        raise ValueError(
            f"dimension_numbers has {len(dims)} leaves but the parameters have {len(leaves)}."
        )
    return dims


@dataclasses.dataclass(frozen=True)
class LeafPlan:
    """Static facts of one projected leaf (shapes are static under ``jit``).

    Attributes:
      order: position among the projected leaves (stagger offset, random keys).
      offset: refresh offset in steps (0 without stagger).
      dims: how the leaf is read as a matrix ``[m, n]``.
      m, n: the matrix's shape; ``left`` = ``m >= n`` (project the ``m`` side).
      rank: effective rank ``min(rank, m, n)``.
      axes: logical axes of ``(m, n)`` (first named axis of each group) or None.
    """

    order: int
    offset: int
    dims: GaLoreDimensionNumbers
    m: int
    n: int
    rank: int
    axes: tuple[str | None, str | None] | None

    @property
    def left(self) -> bool:
        return self.m >= self.n

    def matrix(self, x: jax.Array) -> jax.Array:
        """The leaf's array as its ``[m, n]`` matrix."""
        return _compute_galore_reshape(x, self.dims)[0](x)

    def unmatrix(self, x2d: jax.Array, like_array: jax.Array) -> jax.Array:
        """Inverse of :meth:`matrix` (to ``like_array``'s shape)."""
        return _compute_galore_reshape(like_array, self.dims)[1](x2d)

    @property
    def projector_shape(self) -> tuple[int, int]:
        return (self.m, self.rank) if self.left else (self.n, self.rank)

    @property
    def projector_axes(self) -> tuple[str | None, ...] | None:
        if self.axes is None:
            return None
        return (self.axes[0] if self.left else self.axes[1], "rank")

    @property
    def low_rank_shape(self) -> tuple[int, int]:
        return (self.rank, self.n) if self.left else (self.m, self.rank)

    @property
    def low_rank_axes(self) -> tuple[str | None, ...] | None:
        if self.axes is None:
            return None
        return ("rank", self.axes[1]) if self.left else (self.axes[0], "rank")


def make_plans(
    leaves: Sequence[Any],
    dims: Sequence[Any],
    *,
    rank: int,
    update_gap: int,
    stagger: bool,
    rank_key: str = "optim.rank",
) -> list[LeafPlan | None]:
    """A :class:`LeafPlan` per projected leaf (None for the others).

    Raises:
      ValueError: ``rank`` exceeds a dimension of every projected matrix (naming
        ``rank_key`` and the shapes).
    """
    plans: list[LeafPlan | None] = []
    count = sum(d is not None for d in dims)
    order = 0
    shapes = []
    for leaf, d in zip(leaves, dims):
        if d is None:
            plans.append(None)
            continue
        x = value_of(leaf)
        _compute_galore_reshape(x, d)  # optax's checks (disjoint, complete axes)
        red, out = _normalized_axes(len(x.shape), d)
        m, n = math.prod(x.shape[a] for a in red), math.prod(x.shape[a] for a in out)
        shapes.append((m, n))
        axes = _logical_axes(leaf)
        axes2d = (_first_named(axes, red), _first_named(axes, out)) if axes else None
        offset = (order * update_gap) // max(count, 1) if stagger else 0
        plans.append(LeafPlan(order, offset, d, m, n, min(rank, m, n), axes2d))
        order += 1
    if shapes and all(rank > min(s) for s in shapes):
        raise ValueError(
            f"{rank_key}={rank} is larger than a dimension of every projected matrix "
            f"(their [m, n] shapes: {sorted(set(shapes))}); choose {rank_key} <= "
            f"{max(min(s) for s in shapes)}."
        )
    return plans


def _normalized_axes(ndim: int, d: GaLoreDimensionNumbers) -> tuple[tuple[int, ...], ...]:
    norm = lambda a: (a % ndim,) if isinstance(a, int) else tuple(x % ndim for x in a)  # noqa: E731
    return norm(d.reduction_axis), norm(d.output_axis)


def _first_named(axes: tuple[str | None, ...], group: tuple[int, ...]) -> str | None:
    # A merged dimension (a, b) -> a*b is split like its leading axis in row-major order.
    return axes[group[0]] if group[0] < len(axes) else None


def bias_correction(count: jax.Array, b1: float, b2: float) -> jax.Array:
    """``sqrt(1 - b2^t) / (1 - b1^t)`` at Adam step ``t = count + 1`` (f32 ``[]``)."""
    t = (count + 1).astype(jnp.float32)
    return jnp.sqrt(1 - b2**t) / (1 - b1**t)


def limit_growth(
    x: jax.Array, previous_norm: jax.Array, correction: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Fira's norm-growth limiter: ``x`` rescaled so its norm grows at most x1.01 per step.

    ``||x_t|| / ||x_{t-1}|| > gamma`` -> ``x_t * gamma ||x_{t-1}|| / ||x_t||``; the limited
    norm is remembered. The norms compared are of ``x / correction`` (Adam's bias
    correction taken out, as in the reference implementations, which apply it after the
    limiter), so the warm-up of the correction itself is not mistaken for growth.
    ``previous_norm == 0`` means no previous step (no limiting). Pure ``jnp``: no host sync.

    Returns:
      ``(limited x, norm to remember)``.
    """
    raw = x.astype(jnp.float32) / correction
    norm = jnp.linalg.norm(raw)
    ratio = jnp.maximum(norm / (previous_norm + 1e-8), GROWTH_LIMIT) / GROWTH_LIMIT
    limiter = jnp.where(previous_norm > 0, ratio, 1.0)
    return (raw / limiter * correction).astype(x.dtype), norm / limiter


def randomized_range(
    a: jax.Array, rank: int, key: jax.Array, *, oversample: int = 8, power_iters: int = 1
) -> jax.Array:
    """Top-``rank`` left singular vectors of ``a [m, n]`` by randomized SVD, ``[m, rank]`` f32.

    Halko et al. (2011) Alg. 4.4 + 5.1: ``Y = A Omega`` with ``Omega [n, rank + oversample]``
    Gaussian, ``power_iters`` rounds of ``Y <- A (A^T Y)`` re-orthonormalized by QR, then the
    SVD of the small ``Q^T A [k, n]``. Cost ``O(m n k)``, ``k = rank + oversample``; falls
    back to the full SVD when ``k >= min(m, n)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> u, s, _ = jnp.linalg.svd(jax.random.normal(jax.random.key(0), (64, 64)))
        >>> a = (u[:, :4] * jnp.array([9.0, 7, 5, 3])) @ u[:, 4:8].T  # rank 4
        >>> p = randomized_range(a, 4, jax.random.key(1))
        >>> float(jnp.linalg.norm(a - p @ (p.T @ a)) / jnp.linalg.norm(a)) < 1e-4
        True
    """
    a = a.astype(jnp.float32)
    m, n = a.shape
    k = min(rank + oversample, min(m, n))
    if k >= min(m, n):
        return jnp.linalg.svd(a, full_matrices=False)[0][:, :rank]
    q, _ = jnp.linalg.qr(a @ jax.random.normal(key, (n, k), jnp.float32))
    for _ in range(power_iters):
        q, _ = jnp.linalg.qr(a.T @ q)
        q, _ = jnp.linalg.qr(a @ q)
    u_small, _, _ = jnp.linalg.svd(q.T @ a, full_matrices=False)
    return q @ u_small[:, :rank]


def compute_projector(
    plan: LeafPlan, g2d: jax.Array, svd: str, key: jax.Array, dtype: jnp.dtype
) -> jax.Array:
    """The projector of ``g2d [m, n]``: ``[m, r]`` left (``m >= n``) or ``[n, r]`` right vectors.

    ``svd="full"`` is optax's computation (f32 ``jnp.linalg.svd``, cast to ``dtype``).
    """
    g32 = g2d.astype(jnp.float32)
    if svd == "full":
        if plan.left:
            return jnp.linalg.svd(g32, full_matrices=False)[0][:, : plan.rank].astype(dtype)
        return jnp.linalg.svd(g32, full_matrices=False)[2][: plan.rank, :].T.astype(dtype)
    side = g32 if plan.left else g32.T
    return randomized_range(side, plan.rank, key).astype(dtype)


def project(plan: LeafPlan, g2d: jax.Array, p: jax.Array) -> jax.Array:
    """Low-rank gradient: ``P^T G [r, n]`` (left) or ``G P [m, r]`` (right)."""
    return p.T @ g2d if plan.left else g2d @ p


def project_back(plan: LeafPlan, low: jax.Array, p: jax.Array) -> jax.Array:
    """Full-space ``[m, n]`` of a low-rank array: ``P low`` (left) or ``low P^T`` (right)."""
    return p @ low if plan.left else low @ p.T


def transport(plan: LeafPlan, t: jax.Array, moment: jax.Array, squared: bool) -> jax.Array:
    """A low-rank moment in the new basis: ``T mu`` (left) / ``mu T^T`` (right); ``T * T`` for nu."""
    t = t * t if squared else t
    m32 = moment.astype(jnp.float32)
    out = t @ m32 if plan.left else m32 @ t.T
    return out.astype(moment.dtype)


class GaLoreState(NamedTuple):
    """State of :func:`scale_by_galore`.

    Attributes:
      count: optimizer steps taken (int32 ``[]``).
      base_optimizer_state: Adam over the low-rank gradients (projected leaves, ``[r, n]``
        or ``[m, r]``) and the full gradients (all other leaves).
      projector: params' structure; ``[m, r]`` / ``[n, r]`` on projected leaves, a
        ``[]`` placeholder on the others.
    """

    count: jax.Array
    base_optimizer_state: optax.OptState
    projector: Any


class FiraState(NamedTuple):
    """State of :func:`jaxir.optim.fira.scale_by_fira`: :class:`GaLoreState`'s fields plus
    ``residual_norm`` (params' structure, f32 ``[]``: the limited norm of the last scaled
    residual; 0 before the first step and on unprojected leaves)."""

    count: jax.Array
    base_optimizer_state: optax.OptState
    projector: Any
    residual_norm: Any


def check_choices(svd: str, moments: str) -> None:
    """Raises ValueError naming ``optim.svd`` / ``optim.moments`` for an unknown choice."""
    if svd not in SVD_KINDS:
        raise ValueError(f"optim.svd must be one of {SVD_KINDS}, got {svd!r}.")
    if moments not in MOMENT_RULES:
        raise ValueError(f"optim.moments must be one of {MOMENT_RULES}, got {moments!r}.")


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def scale_by_low_rank_adam(
    *,
    rank: int,
    update_gap: int,
    scale: float,
    dimension_numbers: DimensionNumbers,
    stagger: bool,
    svd: str,
    moments: str,
    seed: int,
    b1: float,
    b2: float,
    eps: float,
    fira: bool,
) -> optax.GradientTransformation:
    """GaLore (``fira=False``) or Fira (``fira=True``); see :func:`scale_by_galore`."""
    _check_positive("optim.rank", rank)
    _check_positive("optim.update_gap", update_gap)
    check_choices(svd, moments)
    base = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def setup(tree: Any):
        leaves, treedef = flatten(tree)
        dims = _resolve_dims(dimension_numbers, tree)
        plans = make_plans(leaves, dims, rank=rank, update_gap=update_gap, stagger=stagger)
        return leaves, treedef, plans

    def init_fn(params):
        leaves, treedef, plans = setup(params)
        projectors, proxies, norms = [], [], []
        for leaf, plan in zip(leaves, plans):
            x = value_of(leaf)
            norms.append(like(leaf, jnp.zeros((), jnp.float32), ()))
            if plan is None:
                # A scalar, not optax's [0, 0]: Orbax cannot save zero-size arrays.
                projectors.append(like(leaf, jnp.zeros((), x.dtype), ()))
                proxies.append(like(leaf, jnp.zeros_like(x)))
            else:
                projectors.append(
                    like(leaf, jnp.zeros(plan.projector_shape, x.dtype), plan.projector_axes)
                )
                proxies.append(
                    like(leaf, jnp.zeros(plan.low_rank_shape, x.dtype), plan.low_rank_axes)
                )
        base_state = base.init(treedef.unflatten(proxies))
        count = jnp.zeros([], jnp.int32)
        projector = treedef.unflatten(projectors)
        if fira:
            return FiraState(count, base_state, projector, treedef.unflatten(norms))
        return GaLoreState(count, base_state, projector)

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef, plans = setup(updates)
        count = state.count
        old_p = treedef.flatten_up_to(state.projector)
        base_state = state.base_optimizer_state
        mus = treedef.flatten_up_to(base_state.mu)
        nus = treedef.flatten_up_to(base_state.nu)
        root = jax.random.key(seed)

        new_p, low, g2ds = list(old_p), list(leaves), [None] * len(leaves)
        for i, (leaf, plan) in enumerate(zip(leaves, plans)):
            if plan is None:
                continue
            g = value_of(leaf)
            g2d = plan.matrix(g)
            p_old, mu, nu = value_of(old_p[i]), value_of(mus[i]), value_of(nus[i])
            refresh = ((count + plan.offset) % update_gap == 0) | (count == 0)
            key = jax.random.fold_in(jax.random.fold_in(root, plan.order), count)

            def renew(g2d=g2d, key=key, plan=plan, p_old=p_old, mu=mu, nu=nu, dtype=g.dtype):
                p = compute_projector(plan, g2d, svd, key, dtype)
                if moments == "keep":
                    return p, mu, nu
                t = p.astype(jnp.float32).T @ p_old.astype(jnp.float32)
                return p, transport(plan, t, mu, False), transport(plan, t, nu, True)

            p, mu, nu = jax.lax.cond(
                refresh, renew, lambda p_old=p_old, mu=mu, nu=nu: (p_old, mu, nu)
            )
            mus[i], nus[i] = like(mus[i], mu), like(nus[i], nu)
            new_p[i] = like(old_p[i], p)
            # Wrapped like the proxies the base state was initialised with.
            low[i] = like(leaf, project(plan, g2d, p), plan.low_rank_axes)
            g2ds[i] = g2d

        base_state = base_state._replace(mu=treedef.unflatten(mus), nu=treedef.unflatten(nus))
        low_updates, base_state = base.update(treedef.unflatten(low), base_state, None)
        low_updates = treedef.flatten_up_to(low_updates)

        out = list(low_updates)
        norms = treedef.flatten_up_to(state.residual_norm) if fira else None
        correction = bias_correction(count, b1, b2) if fira else None
        for i, (leaf, plan) in enumerate(zip(leaves, plans)):
            if plan is None:
                continue
            g = value_of(leaf)
            p = value_of(new_p[i])
            psi = value_of(low_updates[i])
            full = scale * project_back(plan, psi, p)
            if fira:
                full, norm = fira_update(
                    plan, g2ds[i], value_of(low[i]), psi, p, full, value_of(norms[i]), correction
                )
                norms[i] = like(norms[i], norm)
            out[i] = like(leaf, plan.unmatrix(full, g).astype(g.dtype))

        count_inc = optax.safe_int32_increment(count)
        projector = treedef.unflatten(new_p)
        if fira:
            new_state = FiraState(count_inc, base_state, projector, treedef.unflatten(norms))
        else:
            new_state = GaLoreState(count_inc, base_state, projector)
        return treedef.unflatten(out), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def fira_update(
    plan: LeafPlan,
    g2d: jax.Array,
    r: jax.Array,
    psi: jax.Array,
    p: jax.Array,
    low_full: jax.Array,
    previous_norm: jax.Array,
    correction: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Fira's full-space update ``low_full + limit(phi * (G - P R))`` and the norm to remember.

    ``G [m, n]`` the gradient, ``R`` its low-rank projection, ``psi = adam(R)``, ``P`` the
    projector. ``phi`` is one factor per channel (per column of ``[r, n]``, per row of
    ``[m, r]``): ``||psi_channel|| / ||R_channel||``, Adam's scaling of that channel
    estimated in the subspace and applied to the residual outside it.
    """
    g32, r32, psi32 = (x.astype(jnp.float32) for x in (g2d, r, psi))
    axis = 0 if plan.left else 1  # over the rank dimension: one factor per channel
    phi = jnp.linalg.norm(psi32, axis=axis, keepdims=True) / (
        jnp.linalg.norm(r32, axis=axis, keepdims=True) + 1e-8
    )
    residual = (g32 - project_back(plan, r32, p.astype(jnp.float32))) * phi
    residual, norm = limit_growth(residual, previous_norm, correction)
    return low_full.astype(jnp.float32) + residual, norm


def scale_by_galore(
    rank: int = 128,
    update_gap: int = 200,
    scale: float = 0.25,
    *,
    dimension_numbers: DimensionNumbers = None,
    stagger: bool = True,
    svd: str = "full",
    moments: str = "project",
    seed: int = 0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """GaLore's gradient transformation (no learning rate, no decay): see the module docstring.

    Args:
      rank: projection rank ``r`` (clipped to ``min(m, n)`` per matrix).
      update_gap: steps between projector refreshes of one matrix.
      scale: factor on the back-projected update (GaLore's alpha).
      dimension_numbers: which leaves are projected and how they read as ``[m, n]``:
        None (every 2-d array, optax's default), one ``GaLoreDimensionNumbers``, a pytree of
        them (None = not projected) or ``params -> pytree``
        (:func:`dimension_numbers_from_labels`).
      stagger: spread the refreshes of different matrices over the gap.
      svd: ``"full"`` or ``"randomized"`` refresh.
      moments: ``"project"`` (transport Adam's moments into the new basis) or ``"keep"``.
      seed: seed of the randomized SVD's test matrices.
      b1, b2, eps: Adam's.

    Returns:
      A transformation whose state is :class:`GaLoreState`.
    """
    return scale_by_low_rank_adam(
        rank=rank,
        update_gap=update_gap,
        scale=scale,
        dimension_numbers=dimension_numbers,
        stagger=stagger,
        svd=svd,
        moments=moments,
        seed=seed,
        b1=b1,
        b2=b2,
        eps=eps,
        fira=False,
    )


def galore(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 128,
    update_gap: int = 200,
    scale: float = 0.25,
    *,
    weight_decay: float = 0.0,
    mask: Any = None,
    **kwargs: Any,
) -> optax.GradientTransformation:
    """GaLore-AdamW: :func:`scale_by_galore`, decoupled decay in full space, learning rate.

    ``mask`` selects the decayed leaves (an optax mask); ``kwargs`` go to
    :func:`scale_by_galore`. The chain is ``optax.contrib.galore``'s.

    Example:
        >>> import jax.numpy as jnp
        >>> opt = galore(1e-3, rank=2, update_gap=5, weight_decay=0.01)
        >>> params = {"w": jnp.ones((4, 6))}
        >>> updates, _ = opt.update({"w": jnp.ones((4, 6))}, opt.init(params), params)
        >>> updates["w"].shape
        (4, 6)
    """
    return optax.chain(
        scale_by_galore(rank, update_gap, scale, **kwargs),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def low_rank_options(spec: OptimizerSpec, default_scale: float | None) -> dict[str, Any]:
    """``rank``, ``update_gap``, ``scale``, ``stagger``, ``svd``, ``moments`` of a spec, checked.

    ``scale=None`` in the spec means ``default_scale`` (the kind's).
    """
    options = dict(
        rank=spec.option("rank", 128),
        update_gap=spec.option("update_gap", 200),
        scale=spec.option("scale") if spec.option("scale") is not None else default_scale,
        stagger=bool(spec.option("stagger", True)),
        svd=spec.option("svd", "full"),
        moments=spec.option("moments", "project"),
        seed=spec.option("seed", 0),
    )
    _check_positive("optim.rank", options["rank"])
    _check_positive("optim.update_gap", options["update_gap"])
    check_choices(options["svd"], options["moments"])
    return options


def adam_options(spec: OptimizerSpec, labels: nnx.State) -> dict[str, Any]:
    """What every low-rank Adam (GaLore, Fira, APOLLO) takes from the spec and the labels:
    decoupled decay and its mask, the projected kernels' dimension numbers, Adam's betas
    and epsilon."""
    return dict(
        weight_decay=spec.weight_decay,
        mask=mask_for(labels, DECAY_LABELS),
        dimension_numbers=dimension_numbers_from_labels(labels),
        b1=spec.b1,
        b2=spec.b2,
        eps=spec.eps,
    )


def _galore_factory(spec: OptimizerSpec, schedule: optax.Schedule, labels: nnx.State):
    return galore(
        schedule,
        **low_rank_options(spec, 0.25),
        **adam_options(spec, labels),
    )


register_optimizer("galore", _galore_factory)


def state_bytes(tree: Any) -> int:
    """Bytes of every array in ``tree`` (concrete or ``ShapeDtypeStruct`` leaves)."""
    return sum(
        math.prod(x.shape) * jnp.dtype(x.dtype).itemsize
        for x in jax.tree.leaves(tree)
        if hasattr(x, "shape")
    )
