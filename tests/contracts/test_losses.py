"""Loss contracts: values vs loop-based NumPy references, masking, NaN-freedom, sharding."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxir import losses

RTOL = 1e-5


def jitted(fn, **static):
    return jax.jit(functools.partial(fn, **static))


def _logsumexp(xs):
    xs = np.asarray(xs, np.float64)
    return xs.max() + np.log(np.exp(xs - xs.max()).sum())


def ref_in_batch(q, p, *, temperature, group_size, ids=None, qids=None, where=None, sym=False):
    """Straightforward loops over queries and passage columns (float64)."""
    q, p = np.asarray(q, np.float64), np.asarray(p, np.float64)
    b_size, n_size = len(q), len(p)
    ids = np.arange(n_size) if ids is None else np.asarray(ids)
    qids = np.arange(b_size) if qids is None else np.asarray(qids)
    valid = np.ones(b_size, bool) if where is None else np.asarray(where)
    s = q @ p.T / temperature

    def relevant(b, n):  # is passage n a positive of query b (or of a copy of b)?
        return any(qids[c] == qids[b] and ids[n] == ids[c * group_size] for c in range(b_size))

    forward, backward = [], []
    for b in range(b_size):
        if not valid[b]:
            continue
        target = b * group_size
        cols = [
            n
            for n in range(n_size)
            if valid[n // group_size] and (n == target or not relevant(b, n))
        ]
        forward.append(_logsumexp([s[b, n] for n in cols]) - s[b, target])
        rows = [c for c in range(b_size) if valid[c] and (c == b or not relevant(c, target))]
        backward.append(_logsumexp([s[c, target] for c in rows]) - s[b, target])
    if not forward:
        return 0.0
    if sym:
        return 0.5 * (np.mean(forward) + np.mean(backward))
    return np.mean(forward)


def _vectors(seed, b=4, g=3, d=8):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, d)).astype(np.float32)
    p = rng.normal(size=(b * g, d)).astype(np.float32)
    return q, p


# Query 0 and 2 share their positive (id 10); query 1 lists its own positive (id 11)
# among its hard negatives and query 3's hard negative is query 0's positive.
IDS = np.array([10, 1, 2, 11, 11, 3, 10, 4, 5, 12, 6, 10])


@pytest.mark.parametrize("symmetric", [False, True])
def test_in_batch_softmax_matches_reference(symmetric):
    q, p = _vectors(0)
    got = jitted(losses.in_batch_softmax, temperature=0.5, group_size=3, symmetric=symmetric)(q, p)
    want = ref_in_batch(q, p, temperature=0.5, group_size=3, sym=symmetric)
    np.testing.assert_allclose(got, want, rtol=RTOL)


@pytest.mark.parametrize("symmetric", [False, True])
def test_duplicate_positives_are_masked_like_the_reference(symmetric):
    # Each positive is its query's vector (so it dominates the softmax) and duplicated
    # documents are duplicated vectors, as they would be in a real batch.
    q, p = _vectors(1)
    q[2] = q[0] + 0.1 * q[2]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    p[::3] = q
    p[6] = p[11] = p[0]
    p[4] = p[3]
    fn = jitted(losses.in_batch_softmax, temperature=0.1, group_size=3, symmetric=symmetric)
    masked = fn(q, p, positive_ids=IDS)
    want = ref_in_batch(q, p, temperature=0.1, group_size=3, ids=IDS, sym=symmetric)
    np.testing.assert_allclose(masked, want, rtol=RTOL)
    unmasked = fn(q, p)
    assert float(unmasked) > float(masked) + 0.1  # duplicates were false negatives


def test_duplicate_queries_share_positives():
    q, p = _vectors(2)
    qids = np.array([5, 6, 5, 7])
    fn = jitted(losses.in_batch_softmax, temperature=0.2, group_size=3, symmetric=True)
    got = fn(q, p, positive_ids=IDS, query_ids=qids)
    want = ref_in_batch(q, p, temperature=0.2, group_size=3, ids=IDS, qids=qids, sym=True)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    # query_ids alone: query 2's positive is no negative for query 0 and vice versa.
    got = fn(q, p, query_ids=qids)
    want = ref_in_batch(q, p, temperature=0.2, group_size=3, qids=qids, sym=True)
    np.testing.assert_allclose(got, want, rtol=RTOL)


def test_padded_queries_equal_the_smaller_batch():
    q, p = _vectors(3)
    where = np.array([True, False, True, True])
    fn = jitted(losses.in_batch_softmax, temperature=0.3, group_size=3, symmetric=True)
    got = fn(q, p, positive_ids=IDS, where=where)
    keep = np.repeat(where, 3)
    want = fn(q[where], p[keep], positive_ids=IDS[keep])
    np.testing.assert_allclose(got, want, rtol=RTOL)
    ref = ref_in_batch(q, p, temperature=0.3, group_size=3, ids=IDS, where=where, sym=True)
    np.testing.assert_allclose(got, ref, rtol=RTOL)


@pytest.mark.parametrize("symmetric", [False, True])
def test_all_masked_gives_zero_and_finite_gradients(symmetric):
    q, p = _vectors(4)
    where = np.zeros(4, bool)

    def loss(q, p, where):
        return losses.in_batch_softmax(
            q, p, temperature=0.05, group_size=3, positive_ids=IDS, where=where, symmetric=symmetric
        )

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(q, p, where)
    assert float(value) == 0.0
    for g in grads:
        assert np.all(g == 0.0)
    # Partially masked, with duplicates masked too: finite, nonzero gradients.
    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(
        q, p, np.array([True, True, False, True])
    )
    assert np.isfinite(float(value))
    for g in grads:
        assert np.all(np.isfinite(g)) and np.any(g != 0.0)


def test_group_size_mismatch_is_reported():
    q, p = _vectors(5)
    with pytest.raises(ValueError, match=r"B \* group_size = 4 \* 2 = 8 rows, got 12"):
        losses.in_batch_softmax(q, p, temperature=1.0, group_size=2)


def test_sharded_batch_equals_unsharded():
    mesh = Mesh(np.array(jax.devices()).reshape(8), ("data",))
    batch = NamedSharding(mesh, P("data"))
    q, p = _vectors(6, b=16, g=2, d=16)
    rng = np.random.default_rng(6)
    ids = rng.integers(0, 20, size=32)  # plenty of duplicate ids
    where = rng.uniform(size=16) > 0.2

    def loss(q, p, ids, where):
        return losses.in_batch_softmax(
            q, p, temperature=0.05, group_size=2, positive_ids=ids, where=where, symmetric=True
        )

    unsharded = jax.jit(loss)(q, p, ids, where)
    args = [jax.device_put(x, batch) for x in (q, p, ids, where)]
    assert args[0].sharding.spec == P("data")
    sharded = jax.jit(loss, in_shardings=(batch,) * 4)(*args)
    np.testing.assert_allclose(sharded, unsharded, rtol=RTOL)
    want = ref_in_batch(q, p, temperature=0.05, group_size=2, ids=ids, where=where, sym=True)
    np.testing.assert_allclose(sharded, want, rtol=RTOL)


def test_softmax_cross_entropy_with_mask_matches_reference():
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(5, 6)).astype(np.float32)
    target = np.array([0, 3, 5, 2, 1])
    mask = rng.uniform(size=(5, 6)) > 0.3
    mask[np.arange(5), target] = True
    mask[4] = False  # fully masked row
    got = jitted(losses.softmax_cross_entropy_with_mask)(scores, target, mask)
    want = [
        _logsumexp(scores[b][mask[b]]) - scores[b, target[b]] if mask[b].any() else 0.0
        for b in range(5)
    ]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-7)
    np.testing.assert_allclose(
        jitted(losses.softmax_cross_entropy_with_mask)(scores, target),
        [_logsumexp(scores[b]) - scores[b, target[b]] for b in range(5)],
        rtol=RTOL,
    )


def test_margin_mse_matches_reference_and_ignores_teacher_gradients():
    rng = np.random.default_rng(8)
    sp, sn, tp, tn = (rng.normal(size=s).astype(np.float32) for s in [(4,), (4, 3), (4,), (4, 3)])
    where = rng.uniform(size=(4, 3)) > 0.4
    terms = [
        ((sp[b] - sn[b, k]) - (tp[b] - tn[b, k])) ** 2
        for b in range(4)
        for k in range(3)
        if where[b, k]
    ]
    fn = jax.jit(losses.margin_mse)
    np.testing.assert_allclose(fn(sp, sn, tp, tn, where=where), np.mean(terms), rtol=RTOL)
    all_terms = [((sp[b] - sn[b, k]) - (tp[b] - tn[b, k])) ** 2 for b in range(4) for k in range(3)]
    np.testing.assert_allclose(fn(sp, sn, tp, tn), np.mean(all_terms), rtol=RTOL)
    row_mask = np.array([True, False, True, True])
    np.testing.assert_allclose(
        fn(sp, sn, tp, tn, where=row_mask),
        fn(sp, sn, tp, tn, where=np.repeat(row_mask[:, None], 3, 1)),
        rtol=RTOL,
    )
    assert float(fn(sp, sn, tp, tn, where=np.zeros((4, 3), bool))) == 0.0
    grads = jax.jit(jax.grad(losses.margin_mse, argnums=(0, 2)))(sp, sn, tp, tn)
    assert np.any(grads[0] != 0) and np.all(grads[1] == 0)


def test_kl_distill_matches_reference_with_masks():
    rng = np.random.default_rng(9)
    s = rng.normal(size=(4, 5)).astype(np.float32)
    t = rng.normal(size=(4, 5)).astype(np.float32)
    where = rng.uniform(size=(4, 5)) > 0.3
    where[0] = True
    where[2] = False  # fully padded row: skipped

    def ref(temperature):
        kls = []
        for b in range(4):
            if not where[b].any():
                continue
            ls = s[b][where[b]] / temperature
            lt = t[b][where[b]] / temperature
            log_q = ls - _logsumexp(ls)
            log_p = lt - _logsumexp(lt)
            kls.append(np.sum(np.exp(log_p) * (log_p - log_q)))
        return np.mean(kls)

    for temperature in (1.0, 2.5):
        fn = jitted(losses.kl_distill, temperature=temperature)
        np.testing.assert_allclose(fn(s, t, where=where), ref(temperature), rtol=RTOL)
    value, grads = jax.jit(jax.value_and_grad(losses.kl_distill, argnums=(0, 1)))(s, t, where=where)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grads[0])) and np.all(grads[1] == 0)
    assert np.all(grads[0][~where] == 0)
    assert float(jax.jit(losses.kl_distill)(s, t, where=np.zeros((4, 5), bool))) == 0.0


def test_flops_and_l1_match_reference():
    rng = np.random.default_rng(10)
    reps = np.maximum(rng.normal(size=(6, 9)), 0).astype(np.float32)
    reps[1, 2] = -0.5  # |w| is used
    where = np.array([True, True, False, True, False, True])
    for mask in (None, where):
        rows = [b for b in range(6) if mask is None or mask[b]]
        flops_ref = sum(np.mean([abs(reps[b, v]) for b in rows]) ** 2 for v in range(9))
        l1_ref = np.mean([sum(abs(reps[b, v]) for v in range(9)) for b in rows])
        np.testing.assert_allclose(jax.jit(losses.flops)(reps, where=mask), flops_ref, rtol=RTOL)
        np.testing.assert_allclose(jax.jit(losses.l1)(reps, where=mask), l1_ref, rtol=RTOL)
    none = np.zeros(6, bool)
    value, grads = jax.jit(
        jax.value_and_grad(lambda r: losses.flops(r, where=none) + losses.l1(r, where=none))
    )(reps)
    assert float(value) == 0.0 and np.all(grads == 0.0)
