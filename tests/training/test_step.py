"""Train step: GradCache / accumulation gradients, distillation, aux metrics, frozen state, sharding."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from jaxir import optim, sharding
from jaxir.families.dense import DenseObjective
from jaxir.layers.variables import Frozen
from jaxir.models.bert import PRESETS
from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec
from jaxir.training import state as train_state
from jaxir.training import step as train_step

CONFIG = PRESETS["tiny"].replace(dropout=0.0)


def make_model(learn_temperature=False):
    spec = DualEncoderSpec(temperature=0.1, learn_temperature=learn_temperature)
    return DualEncoder.create(CONFIG, spec, rngs=nnx.Rngs(0))


def make_batch(b=8, g=2, lq=8, lp=12, seed=0, teacher=False):
    rng = np.random.default_rng(seed)

    def tokens(shape, length):
        ids = rng.integers(3, CONFIG.vocab_size, (*shape, length)).astype(np.int32)
        mask = (np.arange(length) < rng.integers(2, length + 1, (*shape, 1))).astype(np.int32)
        return ids * mask, mask

    q_ids, q_mask = tokens((b,), lq)
    p_ids, p_mask = tokens((b, g), lp)
    keys = np.arange(b * g, dtype=np.int32).reshape(b, g)
    keys[1, 0] = keys[0, 0]  # a duplicated positive: must be masked, not a negative
    return {
        "query_ids": q_ids,
        "query_mask": q_mask,
        "passage_ids": p_ids,
        "passage_mask": p_mask,
        "passage_key": keys,
        "query_key": np.arange(b, dtype=np.int32),
    } | ({"teacher_scores": teacher_scores(rng, b, g)} if teacher else {})


def teacher_scores(rng, b, g):
    scores = rng.normal(scale=3.0, size=(b, g)).astype(np.float32)
    scores[2, -1] = np.nan  # a random negative: no teacher score, left out of the term
    return scores


OBJECTIVES = {
    "contrastive": DenseObjective(),
    "kl": DenseObjective(distill="kl", distill_weight=0.5, distill_temperature=2.0),
    "margin_mse": DenseObjective(distill="margin_mse", distill_weight=0.1),
}


def split(model):
    """``(graphdef, params, frozen)`` as the train state holds them."""
    return nnx.split(model, nnx.Param, ...)


def adamw(learning_rate, total_steps, warmup_steps=0):
    spec = optim.OptimizerSpec(
        learning_rate=learning_rate, total_steps=total_steps, warmup_steps=warmup_steps
    )
    return lambda params: optim.build(spec, params)


@pytest.mark.parametrize(
    "learn_temperature, objective",
    [(False, "contrastive"), (True, "contrastive"), (True, "kl"), (False, "margin_mse")],
)
def test_gradcache_equals_full_batch_gradients_on_mesh(learn_temperature, objective):
    mesh = sharding.make_mesh(data=4, fsdp=2)
    graphdef, params, frozen = split(make_model(learn_temperature))
    params = jax.device_put(params, sharding.param_shardings(params, mesh))
    batch = sharding.shard_batch(make_batch(teacher=objective != "contrastive"), mesh)
    key = jax.random.key(0)
    grad_fn = functools.partial(train_step.make_grad_fn, OBJECTIVES[objective], graphdef)
    (loss, aux), grads = jax.jit(grad_fn())(params, frozen, batch, key)
    (c_loss, c_aux), c_grads = jax.jit(grad_fn(gradcache_chunk=2))(params, frozen, batch, key)
    np.testing.assert_allclose(float(c_loss), float(loss), rtol=1e-6)
    assert sorted(c_aux) == sorted(aux)
    for name in aux:
        np.testing.assert_allclose(float(c_aux[name]), float(aux[name]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(c_grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)


def test_grad_accumulation_is_mean_of_micro_batches():
    objective = OBJECTIVES["contrastive"]
    graphdef, params, frozen = split(make_model())
    batch = make_batch()
    key = jax.random.key(1)
    grad_fn = train_step.make_grad_fn(objective, graphdef, grad_accum=2)
    (loss, aux), grads = jax.jit(grad_fn)(params, frozen, batch, key)
    halves = [jax.tree.map(lambda x, i=i: x[i * 4 : (i + 1) * 4], batch) for i in range(2)]
    keys = jax.random.split(key, 2)
    plain = jax.jit(train_step.make_grad_fn(objective, graphdef))
    parts = [plain(params, frozen, h, k) for h, k in zip(halves, keys)]
    np.testing.assert_allclose(float(loss), np.mean([float(p[0][0]) for p in parts]), rtol=1e-5)
    np.testing.assert_allclose(
        float(aux["accuracy"]), np.mean([float(p[0][1]["accuracy"]) for p in parts]), rtol=1e-6
    )
    want = jax.tree.map(lambda a, b: (a + b) / 2, parts[0][1], parts[1][1])
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def numpy_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("kind", ["kl", "margin_mse"])
def test_distillation_adds_the_weighted_term_on_each_group(kind):
    """loss(objective) - loss(contrastive) == weight * a NumPy KL / Margin-MSE on the group logits."""
    model = make_model(learn_temperature=True)
    graphdef, params, frozen = split(model)
    batch = make_batch(g=3, teacher=True)
    objective = OBJECTIVES[kind]
    key = jax.random.key(0)
    (total, aux), _ = jax.jit(train_step.make_grad_fn(objective, graphdef))(
        params, frozen, batch, key
    )
    contrastive = OBJECTIVES["contrastive"]
    (plain, _), _ = jax.jit(train_step.make_grad_fn(contrastive, graphdef))(
        params, frozen, batch, key
    )
    total, plain = float(total), float(plain)

    q = np.asarray(model.encode_queries(batch["query_ids"], batch["query_mask"]))
    p = np.asarray(
        model.encode_passages(
            batch["passage_ids"].reshape(-1, 12), batch["passage_mask"].reshape(-1, 12)
        )
    ).reshape(8, 3, -1)
    student = np.einsum("bd,bgd->bg", q, p) * float(model.scale())
    teacher = batch["teacher_scores"]
    known = np.isfinite(teacher)
    if kind == "kl":
        temp = objective.distill_temperature
        rows = []
        for s, t, k in zip(student / temp, teacher / temp, known):
            log_q, log_p = numpy_log_softmax(s[k]), numpy_log_softmax(t[k])
            rows.append((np.exp(log_p) * (log_p - log_q)).sum())
        term = np.mean(rows)
    else:
        margins = (student[:, :1] - student[:, 1:]) - (teacher[:, :1] - teacher[:, 1:])
        term = np.mean(np.square(margins)[known[:, 1:]])
    assert term > 1e-3
    np.testing.assert_allclose(total - plain, objective.distill_weight * term, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(float(aux["distill"]), term, rtol=2e-4, atol=1e-5)


def test_distillation_without_teacher_scores_is_a_clear_error():
    graphdef, params, frozen = split(make_model())
    grad_fn = train_step.make_grad_fn(OBJECTIVES["kl"], graphdef)
    with pytest.raises(ValueError, match="needs teacher scores in the batch"):
        grad_fn(params, frozen, make_batch(), jax.random.key(0))
    with pytest.raises(ValueError, match="train.distill must be 'none', 'kl' or 'margin_mse'"):
        DenseObjective(distill="mse")


def test_sharded_train_step_reduces_loss_and_keeps_shardings():
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    optimizer = adamw(3e-3, total_steps=20, warmup_steps=1)(train_state.abstract_params(make_model))
    graphdef, state, shardings = train_state.create_state(make_model, optimizer, mesh, seed=0)
    batch = sharding.shard_batch(make_batch(), mesh)
    step = train_step.make_train_step(
        train_step.make_grad_fn(OBJECTIVES["contrastive"], graphdef),
        optimizer,
        state_shardings=shardings,
        mesh=mesh,
        example_batch=batch,
    )
    losses = []
    for _ in range(8):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert sorted(metrics) == ["accuracy", "contrastive", "grad_norm", "loss"]
    assert losses[-1] < losses[0] * 0.7, losses
    assert int(state.step) == 8
    word = state.params["query_encoder"]["embeddings"]["word"]["embedding"].get_value()
    assert (
        word.sharding.spec
        == shardings.params["query_encoder"]["embeddings"]["word"]["embedding"].get_value().spec
    )


class FrozenTower(nnx.Module):
    """A dual encoder whose passage tower is frozen (every variable a Frozen, not a Param)."""

    def __init__(self):
        model = DualEncoder.create(CONFIG, DualEncoderSpec(tied=False), rngs=nnx.Rngs(0))
        for path, var in nnx.iter_graph(model.passage_encoder):
            if isinstance(var, nnx.Param):
                parent = model.passage_encoder
                for key in path[:-1]:
                    parent = (
                        parent[key]
                        if isinstance(parent, (nnx.List, nnx.Dict))
                        else getattr(parent, key)
                    )
                setattr(parent, path[-1], Frozen(var.get_value()))
        self.model = model

    def encode_queries(self, *args, **kwargs):
        return self.model.encode_queries(*args, **kwargs)

    def encode_passages(self, *args, **kwargs):
        return self.model.encode_passages(*args, **kwargs)

    def scale(self):
        return self.model.scale()


def test_frozen_subtree_has_no_optimizer_state_and_never_changes():
    mesh = sharding.make_mesh(data=-1)
    optimizer = adamw(1e-2, total_steps=5)(train_state.abstract_params(FrozenTower))
    graphdef, state, shardings = train_state.create_state(FrozenTower, optimizer, mesh, seed=0)
    assert "passage_encoder" not in state.params["model"]
    assert "passage_encoder" in state.frozen["model"]
    opt_paths = {
        tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
    }
    assert any("query_encoder" in path for path in opt_paths)  # moments of the trainable tower
    assert not any("passage_encoder" in path for path in opt_paths)
    before_frozen = jax.tree.map(np.asarray, state.frozen)
    before_params = jax.tree.map(np.asarray, state.params)
    step = train_step.make_train_step(
        train_step.make_grad_fn(OBJECTIVES["contrastive"], graphdef),
        optimizer,
        state_shardings=shardings,
        mesh=mesh,
        example_batch=make_batch(),
    )
    for _ in range(5):
        state, _ = step(state, make_batch())
    for a, b in zip(jax.tree.leaves(before_frozen), jax.tree.leaves(state.frozen)):
        np.testing.assert_array_equal(a, np.asarray(b))
    changed = [
        not np.array_equal(a, np.asarray(b))
        for a, b in zip(jax.tree.leaves(before_params), jax.tree.leaves(state.params))
    ]
    assert sum(changed) > len(changed) // 2


class NoReps:
    def loss(self, model, batch, rngs):
        return jax.numpy.zeros(()), {}


def test_gradcache_needs_a_representation_loss():
    graphdef, _, _ = split(make_model())
    with pytest.raises(ValueError, match="use train.grad_accum instead"):
        train_step.make_grad_fn(NoReps(), graphdef, gradcache_chunk=2)
