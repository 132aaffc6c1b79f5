"""Distillation losses: a student ranker learns a teacher's scores (e.g. a cross-encoder).

Teacher scores are constants: they pass through ``jax.lax.stop_gradient``, so calling
these inside a step that also computes the teacher never trains the teacher.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["GROUP_DISTILLATION", "group_distillation", "kl_distill", "margin_mse"]

#: The kinds :func:`group_distillation` computes.
GROUP_DISTILLATION = ("kl", "margin_mse")


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(jnp.float32)
    return (jnp.where(mask > 0, values, 0.0)).sum() / jnp.maximum(mask.sum(), 1.0)


def margin_mse(
    student_pos_b: jax.Array,
    student_neg_bk: jax.Array,
    teacher_pos_b: jax.Array,
    teacher_neg_bk: jax.Array,
    *,
    where: jax.Array | None = None,
) -> jax.Array:
    """Margin-MSE (Hofstätter et al., 2020): match the teacher's positive-negative margins.

    ``loss = mean_{b,k} ((s_pos[b] - s_neg[b,k]) - (t_pos[b] - t_neg[b,k]))^2``, over the
    valid ``(b, k)`` pairs; with ``K = 1`` this is the paper's loss.

    Args:
      student_pos_b: [B] student score of each query's positive.
      student_neg_bk: [B, K] student scores of ``K`` negatives per query.
      teacher_pos_b: [B] teacher score of the positive.
      teacher_neg_bk: [B, K] teacher scores of the negatives.
      where: [B, K] bool (or [B], per query), False for padded pairs.

    Returns:
      scalar float32 (0 if no pair is valid).

    Example:
      >>> import jax.numpy as jnp
      >>> margin_mse(jnp.array([2.0]), jnp.array([[1.0, 0.0]]),
      ...            jnp.array([5.0]), jnp.array([[4.0, 4.0]])).tolist()  # (0 + 1) / 2
      0.5
    """
    student_bk = student_pos_b[:, None] - student_neg_bk
    teacher_bk = jax.lax.stop_gradient(teacher_pos_b[:, None] - teacher_neg_bk)
    squared_bk = jnp.square(student_bk.astype(jnp.float32) - teacher_bk.astype(jnp.float32))
    if where is None:
        return squared_bk.mean()
    where = jnp.asarray(where, bool)
    where_bk = jnp.broadcast_to(where[:, None] if where.ndim == 1 else where, squared_bk.shape)
    return _masked_mean(squared_bk, where_bk)


def kl_distill(
    student_scores_bn: jax.Array,
    teacher_scores_bn: jax.Array,
    *,
    temperature: float = 1.0,
    where: jax.Array | None = None,
) -> jax.Array:
    """KL(teacher || student) between softmaxes over each query's candidates.

    With ``p = softmax(teacher / T)`` and ``q = softmax(student / T)`` over the valid
    candidates of row ``b``: ``KL_b = sum_n p_n (log p_n - log q_n)``; the loss is the
    mean over rows with at least one valid candidate. It is not rescaled by ``T^2``
    (scale the loss weight for that).

    Args:
      student_scores_bn: [B, N] student scores of ``N`` candidates per query.
      teacher_scores_bn: [B, N] teacher scores of the same candidates.
      temperature: ``T``, divides both score sets.
      where: [B, N] bool, False for padded candidates (fully padded rows are skipped).

    Returns:
      scalar float32 >= 0 (0 if no row is valid).

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.array([[1.0, 2.0, 9.0]])
      >>> kl_distill(s, s + 3.0).tolist()  # same distribution
      0.0
      >>> w = jnp.array([[True, True, False]])
      >>> round(float(kl_distill(s, jnp.array([[2.0, 1.0, 0.0]]), where=w)), 4)
      0.4621
    """
    student_bn = student_scores_bn.astype(jnp.float32) / temperature
    teacher_bn = jax.lax.stop_gradient(teacher_scores_bn.astype(jnp.float32) / temperature)
    if where is None:
        mask_bn = jnp.ones(student_bn.shape, bool)
    else:
        mask_bn = jnp.broadcast_to(jnp.asarray(where, bool), student_bn.shape)
    row_ok_b = mask_bn.any(-1)
    # Fully padded rows keep every entry so that their softmax stays finite.
    mask_bn = mask_bn | ~row_ok_b[:, None]
    log_q_bn = jax.nn.log_softmax(jnp.where(mask_bn, student_bn, -jnp.inf), axis=-1)
    log_p_bn = jax.nn.log_softmax(jnp.where(mask_bn, teacher_bn, -jnp.inf), axis=-1)
    log_q_bn = jnp.where(mask_bn, log_q_bn, 0.0)
    log_p_bn = jnp.where(mask_bn, log_p_bn, 0.0)
    p_bn = jnp.where(mask_bn, jnp.exp(log_p_bn), 0.0)
    kl_b = (p_bn * (log_p_bn - log_q_bn)).sum(-1)
    return _masked_mean(kl_b, row_ok_b)


def group_distillation(
    kind: str,
    student_bg: jax.Array,
    teacher_bg: jax.Array | None,
    *,
    temperature: float = 1.0,
) -> jax.Array:
    """A student's fit to a teacher's scores over each query's own group of passages.

    Column 0 of a group is its positive, the others its negatives (the training batch
    layout of :mod:`jaxir.data.pipeline`). NaN teacher scores mark passages without one
    (random negatives): they are left out. ``kind`` is ``"kl"``
    (:func:`kl_distill` over each group at ``temperature``) or ``"margin_mse"``
    (:func:`margin_mse` of the positive against every negative with a score).

    Args:
      kind: ``"kl"`` or ``"margin_mse"``.
      student_bg: [B, G] student scores (the logits its ranking loss sees).
      teacher_bg: [B, G] teacher scores, NaN where unknown; ``None`` is a clear error.
      temperature: divides both score sets in the KL (unused by Margin-MSE).

    Returns:
      scalar float32 (0 if no pair / row is valid).

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.array([[2.0, 1.0, 0.0]])
      >>> t = jnp.array([[5.0, 4.0, jnp.nan]])  # the last negative has no teacher score
      >>> group_distillation("margin_mse", s, t).tolist()  # ((2 - 1) - (5 - 4))^2
      0.0
      >>> round(float(group_distillation("kl", s, t)), 4)  # same softmax over known columns
      0.0
    """
    if kind not in GROUP_DISTILLATION:
        raise ValueError(f"train.distill must be 'none', 'kl' or 'margin_mse', got {kind!r}.")
    if teacher_bg is None:
        raise ValueError(
            f"train.distill={kind!r} needs teacher scores in the batch; build the "
            "training data with TrainingData.build(..., teacher_scores=True)."
        )
    known_bg = jnp.isfinite(teacher_bg)
    teacher_bg = jnp.where(known_bg, teacher_bg, 0.0)
    if kind == "kl":
        return kl_distill(student_bg, teacher_bg, temperature=temperature, where=known_bg)
    return margin_mse(
        student_bg[:, 0],
        student_bg[:, 1:],
        teacher_bg[:, 0],
        teacher_bg[:, 1:],
        where=known_bg[:, 1:] & known_bg[:, :1],
    )
