"""Contrastive (InfoNCE) losses over in-batch and hard negatives.

The global-batch story (DESIGN principle 3): :func:`in_batch_softmax` computes one
``q_bd @ p_nd.T`` score matrix. Called inside ``jax.jit`` on arrays sharded along the
batch (``NamedSharding(mesh, P("data"))``), that matmul already spans every device:
XLA inserts the collectives, so every query is contrasted with the passages of the
whole global batch. Never all-gather by hand; the loss is identical to the unsharded
one (tested on an 8-device mesh in ``tests/contracts/test_losses.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["in_batch_softmax", "softmax_cross_entropy_with_mask"]


def softmax_cross_entropy_with_mask(
    scores_bn: jax.Array, target_b: jax.Array, mask_bn: jax.Array | None = None
) -> jax.Array:
    """Per-row cross-entropy ``-log softmax(scores_bn[b, mask_bn[b]])[target_b[b]]``.

    Entries where ``mask_bn`` is False are left out of the softmax. A row whose target
    entry is masked (in particular a fully masked row) gives 0, with finite gradients:
    no ``-inf - -inf`` ever reaches the output.

    Args:
      scores_bn: [B, N] logits.
      target_b: [B] int index of the correct entry of each row.
      mask_bn: [B, N] bool, True where an entry takes part; default all True.

    Returns:
      [B] float32 losses, 0 for rows whose target is masked.

    Example:
      >>> import jax.numpy as jnp
      >>> scores = jnp.array([[2.0, 0.0, 9.0], [1.0, 1.0, 1.0]])
      >>> mask = jnp.array([[True, True, False], [False, False, False]])
      >>> loss = softmax_cross_entropy_with_mask(scores, jnp.array([0, 1]), mask)
      >>> [round(x, 4) for x in loss.tolist()]  # log(1 + e^-2), masked row
      [0.1269, 0.0]
    """
    scores_bn = scores_bn.astype(jnp.float32)
    target_b = jnp.asarray(target_b)
    target_score_b = jnp.take_along_axis(scores_bn, target_b[:, None], axis=-1)[:, 0]
    if mask_bn is None:
        return jax.nn.logsumexp(scores_bn, axis=-1) - target_score_b
    mask_bn = jnp.asarray(mask_bn, bool)
    row_ok_b = jnp.take_along_axis(mask_bn, target_b[:, None], axis=-1)[:, 0]
    # Rows without a valid target keep every entry so their logsumexp stays finite.
    mask_bn = mask_bn | ~row_ok_b[:, None]
    lse_b = jax.nn.logsumexp(jnp.where(mask_bn, scores_bn, -jnp.inf), axis=-1)
    return jnp.where(row_ok_b, lse_b - target_score_b, 0.0)


def _relevant_columns(
    target_b: jax.Array,
    num_passages: int,
    positive_ids: jax.Array | None,
    query_ids: jax.Array | None,
) -> jax.Array:
    """[B, N] bool: column ``n`` holds a positive of query ``b`` (or of a copy of it).

    The positives of query ``b`` are the target columns of every query with the same id
    (``query_ids``) and, with ``positive_ids``, every column carrying one of their ids.
    """
    if positive_ids is None:
        is_pos_bn = jnp.arange(num_passages)[None, :] == target_b[:, None]
    else:
        positive_ids = jnp.asarray(positive_ids)
        is_pos_bn = positive_ids[target_b][:, None] == positive_ids[None, :]
    if query_ids is None:
        return is_pos_bn
    query_ids = jnp.asarray(query_ids)
    same_bb = (query_ids[:, None] == query_ids[None, :]).astype(jnp.float32)
    # 0/1 operands and integer counts <= B: exact in any matmul precision.
    counts_bn = jnp.matmul(same_bb, is_pos_bn.astype(jnp.float32))
    return counts_bn > 0


def in_batch_softmax(
    q_bd: jax.Array,
    p_nd: jax.Array,
    *,
    temperature: float,
    group_size: int,
    positive_ids: jax.Array | None = None,
    query_ids: jax.Array | None = None,
    where: jax.Array | None = None,
    symmetric: bool = False,
) -> jax.Array:
    """InfoNCE over the global batch: each query against all ``N = B * G`` passages.

    ``p_nd`` holds ``B`` groups of ``group_size`` (``G``) passages; the first of group
    ``b`` is the positive of query ``b``, the others its hard negatives; every other
    group's passages are in-batch negatives. With ``s = q_bd @ p_nd.T / temperature``::

        loss_b = logsumexp_{n in allowed(b)} s[b, n] - s[b, b * G]

    **False negatives are masked**: with ``positive_ids`` (an id per passage column,
    e.g. a doc id or a hash of the text) any column other than ``b * G`` whose id equals
    the id of a positive of query ``b`` is dropped from row ``b`` -- the same document
    sampled as the positive of two queries, or listed among the hard negatives, is not
    pushed away. ``query_ids`` extends "positive of query ``b``" to the positives of
    every copy of query ``b`` in the batch.

    ``symmetric=True`` averages this with the passage->query direction over positives:
    ``logsumexp_{b'} s[b' , b * G] - s[b, b * G]`` (``b'`` over allowed queries).

    Under ``jax.jit`` with the batch sharded over a mesh (``P("data")``) the matmul
    spans every device; no all-gather by hand (module docstring).

    Args:
      q_bd: [B, D] query vectors.
      p_nd: [N, D] passage vectors, ``N = B * group_size``, grouped per query.
      temperature: softmax temperature ``tau`` (scores are divided by it).
      group_size: ``G``, passages per query (1 positive + ``G - 1`` hard negatives).
      positive_ids: [N] int id of every passage column, for false-negative masking
        (int32 unless ``jax_enable_x64``: hash long doc ids to 31 bits on the host).
      query_ids: [B] int id of every query, for duplicated queries.
      where: [B] bool, False for padded queries: they add nothing to the loss and their
        passages are not negatives for anyone.
      symmetric: also add the passage->query loss (mean of the two directions).

    Returns:
      scalar float32, the mean loss over valid queries (0 if none is valid).

    Example:
      >>> import jax.numpy as jnp
      >>> q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> p = jnp.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # B=2, G=2
      >>> round(float(in_batch_softmax(q, p, temperature=1.0, group_size=2)), 4)
      0.7437
      >>> # Both queries share their positive: the copy is no longer a negative.
      >>> ids = jnp.array([7, 1, 7, 2])
      >>> q = jnp.array([[1.0, 0.0], [1.0, 0.0]])
      >>> p = jnp.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
      >>> loss = in_batch_softmax(q, p, temperature=1.0, group_size=2, positive_ids=ids)
      >>> round(float(loss), 4)  # log(e + 1 + 1) - 1
      0.5514
    """
    batch, num_passages = q_bd.shape[0], p_nd.shape[0]
    if num_passages != batch * group_size:
        raise ValueError(
            "jaxir/losses/contrastive.py: in_batch_softmax expects p_nd with "
            f"B * group_size = {batch} * {group_size} = {batch * group_size} rows, got "
            f"{num_passages} (q_bd {q_bd.shape}, p_nd {p_nd.shape}); lay passages out as "
            "B groups of group_size, positive first."
        )
    scores_bn = jnp.einsum("bd,nd->bn", q_bd, p_nd, preferred_element_type=jnp.float32)
    scores_bn = scores_bn / temperature
    target_b = jnp.arange(batch) * group_size
    valid_b = jnp.ones((batch,), bool) if where is None else jnp.asarray(where, bool)
    valid_n = jnp.repeat(valid_b, group_size, total_repeat_length=num_passages)

    relevant_bn = _relevant_columns(target_b, num_passages, positive_ids, query_ids)
    is_target_bn = jnp.arange(num_passages)[None, :] == target_b[:, None]
    mask_bn = valid_b[:, None] & valid_n[None, :] & (is_target_bn | ~relevant_bn)
    loss_b = softmax_cross_entropy_with_mask(scores_bn, target_b, mask_bn)
    count = jnp.maximum(valid_b.sum(), 1)
    loss = loss_b.sum() / count
    if not symmetric:
        return loss

    # Passage -> query, positives only: row b is positive b, column b' is query b'.
    scores_bb = scores_bn.reshape(batch, batch, group_size)[:, :, 0].T
    relevant_bb = relevant_bn.reshape(batch, batch, group_size)[:, :, 0].T
    eye_bb = jnp.eye(batch, dtype=bool)
    mask_bb = valid_b[:, None] & valid_b[None, :] & (eye_bb | ~relevant_bb)
    loss_p_b = softmax_cross_entropy_with_mask(scores_bb, jnp.arange(batch), mask_bb)
    return 0.5 * (loss + loss_p_b.sum() / count)
