"""The SPLADE family: loss terms vs NumPy, warm-up, aux metrics, GradCache, guards, init, validation, a run."""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxir
from jaxir import sharding
from jaxir.config import load_config, override
from jaxir.data.synthetic import make_collection
from jaxir.eval import evaluate
from jaxir.families.splade import SpladeFamily, SpladeObjective, passage_idf, validate_sparse
from jaxir.losses.regularizers import quadratic_warmup
from jaxir.models import hf
from jaxir.models.bert import PRESETS, Model
from jaxir.models.splade import FORWARD, Splade, SpladeSpec, load_splade_model
from jaxir.training import step as train_step
from jaxir.training.family import TrainingGuardError
from jaxir.training.validation import ValidationSet
from tests.fixtures import VOCAB_SIZE, vocab_tokenizer

ROOT = pathlib.Path(__file__).parents[2]
CONFIG_FILE = ROOT / "configs" / "splade_scifact.py"
ENCODER = PRESETS["tiny"].replace(vocab_size=VOCAB_SIZE, num_layers=1, dropout=0.0)
SPEC = SpladeSpec(query_max_length=8, passage_max_length=12, chunk=4)


# --------------------------------------------------------------------------- NumPy references


def sparse_reps(b=4, g=2, v=12, seed=0):
    """Non-negative vectors with ~half their entries exactly zero, as SPLADE produces."""
    rng = np.random.default_rng(seed)

    def draw(*shape):
        x = rng.gamma(1.0, 1.0, shape).astype(np.float32)
        return np.where(rng.random(shape) < 0.5, 0.0, x).astype(np.float32)

    q, p = draw(b, v), draw(b, g, v)
    p[3] = 0.0  # an all-zero group: scores 0, never NaN
    return q, p


def reps_batch(b=4, g=2, step=None):
    keys = np.arange(b * g, dtype=np.int32).reshape(b, g)
    keys[1, 0] = keys[0, 0]  # the same positive for queries 0 and 1: not a negative of either
    batch = {"passage_key": keys, "query_key": np.arange(b, dtype=np.int32)}
    if step is not None:
        batch["step"] = np.full((b,), step, np.int32)
    return batch


def numpy_contrastive(q, p, keys):
    b, g, v = p.shape
    scores = q.astype(np.float64) @ p.reshape(b * g, v).astype(np.float64).T
    flat = keys.reshape(-1)
    losses = []
    for i in range(b):
        target = i * g
        allowed = [n for n in range(b * g) if n == target or flat[n] != flat[target]]
        row = scores[i, allowed]
        losses.append(np.log(np.exp(row - row.max()).sum()) + row.max() - scores[i, target])
    return float(np.mean(losses))


def loss_from_reps(objective, reps, batch):
    """``objective.loss_from_reps`` under jit (eager dispatch compiles every op: slow)."""
    return jax.jit(objective.loss_from_reps, static_argnums=0)(None, reps, batch)


def numpy_flops(x):
    return float((np.abs(x.reshape(-1, x.shape[-1])).mean(0) ** 2).sum())


def numpy_l1(x):
    return float(np.abs(x.reshape(-1, x.shape[-1])).sum(-1).mean())


# --------------------------------------------------------------------------- loss terms


@pytest.mark.parametrize("regularizer", ["flops", "l1"])
@pytest.mark.parametrize("step", [None, 0, 3, 10, 25])
def test_loss_is_contrastive_plus_warmed_up_regularizers(regularizer, step):
    q, p = sparse_reps()
    objective = SpladeObjective(
        regularizer=regularizer, query_weight=0.02, document_weight=0.03, warmup_steps=10
    )
    batch = reps_batch(step=step)
    loss, aux = loss_from_reps(objective, (q, p), batch)
    reference = numpy_flops if regularizer == "flops" else numpy_l1
    contrastive = numpy_contrastive(q, p, batch["passage_key"])
    factor = 1.0 if step is None else min(1.0, step / 10) ** 2
    np.testing.assert_allclose(float(aux["contrastive"]), contrastive, rtol=1e-5)
    np.testing.assert_allclose(float(aux["flops_query"]), reference(q), rtol=1e-5)
    np.testing.assert_allclose(float(aux["flops_document"]), reference(p), rtol=1e-5)
    np.testing.assert_allclose(float(aux["reg_weight"]), factor, rtol=1e-6)
    want = contrastive + factor * (0.02 * reference(q) + 0.03 * reference(p))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_warmup_factor_is_quadratic_and_full_without_a_step():
    steps = np.array([0, 1, 5, 9, 10, 11, 1000])
    got = [float(quadratic_warmup(jnp.full((3,), s), 10)) for s in steps]
    np.testing.assert_allclose(got, np.minimum(1.0, steps / 10) ** 2, rtol=1e-6)
    assert float(quadratic_warmup(None, 10)) == 1.0
    assert float(quadratic_warmup(4, 0)) == 1.0


def test_inference_free_objective_leaves_the_query_regularizer_out():
    q, p = sparse_reps()
    on = SpladeObjective(query_weight=0.5, document_weight=0.0)
    off = dataclasses.replace(on, regularize_queries=False)
    loss_on, aux = loss_from_reps(on, (q, p), reps_batch())
    loss_off, aux_off = loss_from_reps(off, (q, p), reps_batch())
    np.testing.assert_allclose(float(loss_off), float(aux["contrastive"]), rtol=1e-6)
    np.testing.assert_allclose(float(loss_on - loss_off), 0.5 * numpy_flops(q), rtol=1e-5)
    assert float(aux_off["flops_query"]) == pytest.approx(numpy_flops(q), rel=1e-5)  # still logged


def test_aux_metrics_on_hand_made_vectors():
    q = np.array([[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    p = np.array(
        [
            [[0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
            [[0.0, 3.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]],
        ],
        np.float32,
    )
    batch = reps_batch(b=2, g=2)
    batch["passage_key"] = np.arange(4, dtype=np.int32).reshape(2, 2)
    _, aux = loss_from_reps(SpladeObjective(), (q, p), batch)
    got = {k: float(v) for k, v in aux.items()}
    assert got["nnz_query"] == 1.0  # (2 + 0) / 2
    assert got["nnz_document"] == 1.0  # (1 + 0 + 2 + 1) / 4
    assert got["density_query"] == got["density_document"] == 0.25
    assert got["active_vocab"] == 0.75  # terms 0, 1, 3 of 4
    # Query 0 scores 0.5 on its positive and 2 on query 1's: wrong; query 1 scores 0 on
    # everything and argmax picks column 0, not its positive 2: wrong.
    assert got["accuracy"] == 0.0


def test_distillation_adds_the_weighted_group_term():
    q, p = sparse_reps(g=3)
    rng = np.random.default_rng(1)
    batch = reps_batch(g=3) | {"teacher_scores": rng.normal(size=(4, 3)).astype(np.float32)}
    batch["passage_key"] = np.arange(12, dtype=np.int32).reshape(4, 3)
    batch["teacher_scores"][2, 2] = np.nan  # a random negative without a teacher score
    plain = SpladeObjective(query_weight=0.0, document_weight=0.0)
    distilled = dataclasses.replace(plain, distill="margin_mse", distill_weight=0.25)
    base, _ = loss_from_reps(plain, (q, p), batch)
    total, aux = loss_from_reps(distilled, (q, p), batch)
    student = np.einsum("bv,bgv->bg", q, p)
    teacher = batch["teacher_scores"]
    margins = [
        ((student[b, 0] - student[b, k]) - (teacher[b, 0] - teacher[b, k])) ** 2
        for b in range(4)
        for k in (1, 2)
        if np.isfinite(teacher[b, k])
    ]
    np.testing.assert_allclose(float(aux["distill"]), np.mean(margins), rtol=1e-5)
    np.testing.assert_allclose(float(total - base), 0.25 * np.mean(margins), rtol=1e-5)
    with pytest.raises(ValueError, match="needs teacher scores"):
        loss_from_reps(distilled, (q, p), reps_batch(g=3))


def test_bad_objective_settings_are_named():
    with pytest.raises(ValueError, match="model.splade.regularizer must be one of"):
        SpladeObjective(regularizer="l0")
    with pytest.raises(ValueError, match="model.splade.document_weight must be"):
        SpladeObjective(document_weight=-1.0)
    with pytest.raises(ValueError, match="train.distill must be"):
        SpladeObjective(distill="mse")


# --------------------------------------------------------------------------- GradCache


def token_batch(b=8, g=2, seed=0, teacher=False):
    rng = np.random.default_rng(seed)

    def tokens(shape, length):
        ids = rng.integers(5, VOCAB_SIZE, (*shape, length)).astype(np.int32)
        mask = (np.arange(length) < rng.integers(2, length + 1, (*shape, 1))).astype(np.int32)
        return ids * mask, mask

    q_ids, q_mask = tokens((b,), SPEC.query_max_length)
    p_ids, p_mask = tokens((b, g), SPEC.passage_max_length)
    keys = np.arange(b * g, dtype=np.int32).reshape(b, g)
    keys[1, 0] = keys[0, 0]
    batch = {
        "query_ids": q_ids,
        "query_mask": q_mask,
        "passage_ids": p_ids,
        "passage_mask": p_mask,
        "passage_key": keys,
        "query_key": np.arange(b, dtype=np.int32),
        "step": np.full((b,), 3, np.int32),  # mid warm-up: the factor matters
    }
    if teacher:
        batch["teacher_scores"] = rng.normal(scale=3.0, size=(b, g)).astype(np.float32)
    return batch


@pytest.mark.parametrize(
    "spec, objective, mesh_axes",
    [
        (
            SPEC,
            SpladeObjective(query_weight=1e-2, document_weight=2e-2, warmup_steps=6),
            {"data": 4, "fsdp": 2},
        ),
        (
            dataclasses.replace(SPEC, inference_free=True),
            SpladeObjective(
                distill="kl", regularizer="l1", warmup_steps=6, regularize_queries=False
            ),
            None,  # one device: the sharded case above covers the global batch
        ),
    ],
    ids=["tied-flops-mesh", "inference-free-kl-l1"],
)
def test_gradcache_equals_full_batch_gradients(spec, objective, mesh_axes):
    idf = np.linspace(0.5, 2.0, VOCAB_SIZE, dtype=np.float32) if spec.inference_free else None
    model = Splade.create(ENCODER, spec, rngs=nnx.Rngs(0), idf=idf)
    graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
    batch = token_batch(teacher=objective.distill != "none")
    if mesh_axes is not None:
        mesh = sharding.make_mesh(**mesh_axes)
        params = jax.device_put(params, sharding.param_shardings(params, mesh))
        batch = sharding.shard_batch(batch, mesh)
    key = jax.random.key(0)
    grad_fn = functools.partial(train_step.make_grad_fn, objective, graphdef)
    (loss, aux), grads = jax.jit(grad_fn())(params, frozen, batch, key)
    (c_loss, c_aux), c_grads = jax.jit(grad_fn(gradcache_chunk=2))(params, frozen, batch, key)
    assert 0.0 < float(aux["reg_weight"]) < 1.0
    np.testing.assert_allclose(float(c_loss), float(loss), rtol=1e-6)
    assert sorted(c_aux) == sorted(aux)
    for name in aux:
        np.testing.assert_allclose(float(c_aux[name]), float(aux[name]), rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(c_grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


# --------------------------------------------------------------------------- guards


HEALTHY = {
    "nnz_query": 20.0,
    "nnz_document": 120.0,
    "density_query": 0.01,
    "density_document": 0.05,
    "active_vocab": 0.3,
    "flops_query": 1.0,
    "flops_document": 2.0,
    "reg_weight": 1.0,
    "contrastive": 1.5,
}


def family(**changes):
    return SpladeFamily(warmup_steps=10, saturation_after=10, **changes)


def test_guard_stops_a_collapsed_run_naming_the_step_and_the_fix():
    family().check_metrics(3, HEALTHY)
    with pytest.raises(TrainingGuardError, match=r"Step 7: .*document .*collapsed to 0.4.*"):
        family().check_metrics(7, HEALTHY | {"nnz_document": 0.4})
    with pytest.raises(TrainingGuardError, match=r"lower model.splade.query_weight \(now 5e-05\)"):
        family().check_metrics(2, HEALTHY | {"nnz_query": 0.0})
    # Inference-free queries are their tokens: no query guard; collapse_nnz=0 turns it off.
    family(regularize_queries=False).check_metrics(2, HEALTHY | {"nnz_query": 0.0})
    family(collapse_nnz=0.0).check_metrics(2, HEALTHY | {"nnz_document": 0.0})


def test_guard_stops_a_saturated_run_once_the_regularizer_is_at_full_weight():
    dense = HEALTHY | {"density_document": 0.9, "nnz_document": 900.0}
    family().check_metrics(9, dense)  # a fresh head starts dense: not before saturation_after
    with pytest.raises(
        TrainingGuardError,
        match=r"Step 10: .*document .*saturate.*90\.0%.*raise model.splade.document_weight",
    ):
        family().check_metrics(10, dense)
    family(saturation_share=1.0).check_metrics(50, dense)


# --------------------------------------------------------------------------- config, init, IDF


def test_from_config_reads_model_splade_and_the_shared_fields():
    config = override(
        load_config(CONFIG_FILE, "tiny"),
        [
            "train.steps=30",
            "model.tied=false",
            "model.splade.pooling=sum",
            "model.splade.regularizer=l1",
            "model.splade.document_weight=0.5",
            "model.splade.head_bias=-0.5",
            "model.dropout_mask=hash",
            "model.attention=dot_product",
        ],
    )
    fam = SpladeFamily.from_config(config)
    assert fam.warmup_steps == 10 and fam.saturation_after == 10  # -1: a third of train.steps
    assert fam.head_bias == -0.5
    encoder = fam.encoder_config(VOCAB_SIZE)
    assert (encoder.dropout_mask, encoder.attention) == ("hash", "dot_product")
    assert load_config(CONFIG_FILE).model.splade.head_bias == -1.0  # the SciFact recipe's
    assert fam.spec.tied is False and fam.spec.pooling == "sum"
    assert fam.regularizer == "l1" and fam.document_weight == 0.5 and fam.regularize_queries
    assert fam.spec.query_max_length == config.data.max_query_length
    free = SpladeFamily.from_config(
        override(config, ["model.tied=true", "model.splade.inference_free=true"])
    )
    assert not free.regularize_queries
    assert (
        SpladeFamily.from_config(override(config, ["model.splade.warmup_steps=0"])).warmup_steps
        == 0
    )


def test_passage_idf_matches_a_direct_count():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 20, (30, 9))
    mask = (np.arange(9) < rng.integers(1, 10, (30, 1))).astype(np.int32)
    df = np.array([sum(v in set(row[m > 0]) for row, m in zip(ids, mask)) for v in range(25)])
    want = np.log(1 + (30 - df + 0.5) / (df + 0.5))
    np.testing.assert_allclose(passage_idf(ids, mask, 25), want, rtol=1e-6)
    with pytest.raises(ValueError, match="outside the model's vocabulary of 10"):
        passage_idf(ids, mask, 10)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return vocab_tokenizer(tmp_path_factory.mktemp("vocab"))


def test_inference_free_query_weights_start_from_the_training_passages_idf(tokenizer):
    from jaxir.data.groups import TrainGroup

    groups = [TrainGroup(f"q {i}", (f"cells divide {i}",), ("protein binds",)) for i in range(4)]
    fam = SpladeFamily(init="tiny", spec=dataclasses.replace(SPEC, inference_free=True))
    data = fam.training_data(groups, tokenizer)
    model = fam.init_model(vocab_size=len(tokenizer), rngs=nnx.Rngs(0))
    want = passage_idf(data.passage_ids, data.passage_mask, len(tokenizer))
    np.testing.assert_array_equal(np.asarray(model.query_weights[...]), want)
    assert set(tokenizer.all_special_ids) <= set(model.query_special_ids)
    cells = tokenizer.convert_tokens_to_ids("cells")
    assert want[cells] < want[tokenizer.convert_tokens_to_ids("protein")]  # in 4 passages vs 1


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory, tokenizer):
    """A ``BertForMaskedLM``-layout directory and a ``BertModel`` one (no MLM head)."""
    root = tmp_path_factory.mktemp("hf")
    dirs = {}
    for name, head in (("mlm", True), ("bare", False)):
        encoder = Model(ENCODER.replace(mlm_head=head, pooler=not head), rngs=nnx.Rngs(7))
        hf.save_pretrained(encoder, root / name)
        tokenizer.save_pretrained(root / name)
        dirs[name] = root / name
    return dirs


def test_pretrained_loads_the_mlm_head_and_refuses_a_checkpoint_without_one(hf_dirs, capsys):
    fam = SpladeFamily(init=str(hf_dirs["mlm"]), spec=dataclasses.replace(SPEC, tied=False))
    model = fam.init_model(vocab_size=VOCAB_SIZE, rngs=nnx.Rngs(0))
    state, source = fam.pretrained(model)
    want = nnx.state(hf.load_pretrained(hf_dirs["mlm"], mlm_head=True))
    for tower in ("document_encoder", "query_encoder"):
        for (path, a), (_, b) in zip(nnx.to_flat_state(state[tower]), nnx.to_flat_state(want)):
            np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=str(path))
    assert source == str(hf_dirs["mlm"])

    bare = SpladeFamily(init=str(hf_dirs["bare"]), spec=SPEC)
    model = bare.init_model(vocab_size=VOCAB_SIZE, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"has no MLM head .*model.splade.fresh_head=true"):
        bare.pretrained(model)
    fresh = dataclasses.replace(bare, fresh_head=True)
    state, _ = fresh.pretrained(model)
    out = capsys.readouterr().out
    assert "dropped: pooler" in out and "training a fresh one" in out
    loaded = hf.load_pretrained(hf_dirs["bare"], mlm_head=False, pooler=False)
    np.testing.assert_array_equal(  # the encoder from the checkpoint, the head as initialised
        np.asarray(state["document_encoder"]["embeddings"]["word"]["embedding"][...]),
        np.asarray(loaded.embeddings.word.embedding[...]),
    )
    np.testing.assert_array_equal(
        np.asarray(state["document_encoder"]["mlm"]["bias"][...]),
        np.asarray(model.document_encoder.mlm.bias[...]),
    )


def test_head_bias_starts_a_fresh_head_sparse_and_a_loaded_head_keeps_its_own(hf_dirs):
    """``model.splade.head_bias`` sets every output bias of a fresh head (both towers):
    with -1 the pooled vectors start far sparser than with 0; a loaded head is untouched."""
    spec = dataclasses.replace(SPEC, tied=False)
    ids = jax.random.randint(jax.random.key(0), (4, 16), 5, VOCAB_SIZE)
    densities = {}
    for bias in (0.0, -1.0):
        fam = SpladeFamily(init="tiny", spec=spec, head_bias=bias)
        model = fam.init_model(vocab_size=VOCAB_SIZE, rngs=nnx.Rngs(0))
        for tower in (model.document_encoder, model.query_encoder):
            np.testing.assert_array_equal(np.asarray(tower.mlm.bias[...]), bias)
        densities[bias] = float((model.encode_passages(ids, ids > 0) > 0).mean())
    assert densities[-1.0] < 0.25 * densities[0.0], densities
    loaded = SpladeFamily(init=str(hf_dirs["mlm"]), spec=spec, head_bias=-1.0)
    state, _ = loaded.pretrained(loaded.init_model(vocab_size=VOCAB_SIZE, rngs=nnx.Rngs(0)))
    want = hf.load_pretrained(hf_dirs["mlm"], mlm_head=True).mlm.bias[...]
    np.testing.assert_array_equal(np.asarray(state["document_encoder"]["mlm"]["bias"][...]), want)
    with pytest.raises(ValueError, match="model.splade.head_bias must be a finite number"):
        SpladeFamily(head_bias=float("nan"))


# --------------------------------------------------------------------------- validation, a run


def test_validation_on_device_equals_brute_force_maxp_and_ir_measures(tokenizer):
    beir = make_collection(num_topics=6, num_train_queries=0, num_test_queries=10)
    rows = []
    for doc_id, doc in beir.corpus.items():  # two passages per document: MaxP matters
        words = doc.full_text.split()
        rows += [
            (doc_id, " ".join(words[: len(words) // 2])),
            (doc_id, " ".join(words[len(words) // 2 :])),
        ]
    queries = {q: query.full_text for q, query in beir.queries.items()}
    dev = ValidationSet.build(
        queries, rows, beir.qrels, tokenizer, max_query_length=8, max_passage_length=32
    )
    model = Splade.create(ENCODER, dataclasses.replace(SPEC, max_active_dims=7), rngs=nnx.Rngs(3))
    got = validate_sparse(model, dev)

    graphdef, state = nnx.split(model)
    q = np.asarray(FORWARD["float32"](graphdef, state, dev.query_ids, dev.query_mask, role="query"))
    p = np.asarray(
        FORWARD["float32"](
            graphdef, state, dev.passage_ids, dev.passage_mask, role="passage", max_active_dims=7
        )
    )
    assert ((p != 0).sum(1) <= 7).all()
    scores = q.astype(np.float64) @ p.astype(np.float64).T
    # No ties: ir_measures and top-k would break them differently (by doc id / by row).
    assert all(len(np.unique(row)) == len(row) for row in scores)
    doc_ids = list(dict.fromkeys(d for d, _ in rows))
    run = {}
    for i, qid in enumerate(queries):
        best = {}
        for n, (doc_id, _) in enumerate(rows):
            best[doc_id] = max(best.get(doc_id, -np.inf), scores[i, n])
        top = sorted(doc_ids, key=lambda d: -best[d])[:100]
        run[qid] = {d: float(best[d]) for d in top}
    want = evaluate(run, beir.qrels, ("nDCG@10", "R@100"))
    assert got == pytest.approx(want, abs=1e-5)


def test_a_tiny_splade_run_trains_validates_and_saves_a_loadable_model(tmp_path):
    config = override(load_config(CONFIG_FILE, "tiny,4"), ["train.eval_every=4"])
    result = jaxir.train(config, tmp_path, progress=False)
    assert result.steps == 4
    assert np.isfinite(result.validation["nDCG@10"]) and 0 <= result.validation["nDCG@10"] <= 1
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for name in ("contrastive", "flops_query", "flops_document", "nnz_document", "active_vocab"):
        assert all(np.isfinite(r[name]) for r in records), name
    warmup = config.train.steps // 3  # model.splade.warmup_steps=-1
    assert [r["reg_weight"] for r in records] == pytest.approx(
        [min(1.0, s / warmup) ** 2 for s in range(4)]  # the step of each update, from 0
    )
    model = load_splade_model(result.model_dir)
    assert model.spec.passage_max_length == config.data.max_passage_length
    trained = validate_sparse(model, _dev(config, tmp_path))
    assert trained == pytest.approx(result.validation, abs=1e-6)


def _dev(config, workdir):
    from jaxir.data import load_corpus, load_qrels, load_queries, load_tokenizer
    from jaxir.data.prepare import split_dev
    from jaxir.training.loop import _dev_set, collection_dir

    beir = collection_dir(config, workdir)
    qrels = load_qrels(beir / "qrels" / f"{config.data.train_split}.tsv")
    _, dev_qrels = split_dev(qrels, config.data.validation_queries, config.train.seed)
    tokenizer = load_tokenizer(workdir / "tokenizer", check_contract=False)
    fam = SpladeFamily.from_config(config)
    return _dev_set(fam, config, load_corpus(beir), load_queries(beir), dev_qrels, tokenizer)
