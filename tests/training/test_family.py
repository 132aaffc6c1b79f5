"""The training core's seams: a new retriever family and a new optimizer plug in by registration.

``ToyFamily`` is a retriever the core has never seen (a bag-of-embeddings dual encoder
with a frozen random projection); it trains through the public ``jaxir.train`` with
only ``register_family`` / ``register_optimizer`` calls. Also: label-free training
(``data.train_groups=ict``), init from a Hugging Face BERT with a pooler, and init
mismatch errors.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxir
from jaxir import optim
from jaxir.config import load_config, override
from jaxir.data import load_corpus, load_tokenizer, read_groups, train_wordpiece
from jaxir.data.pipeline import TrainingData
from jaxir.layers.variables import Frozen
from jaxir.losses.contrastive import in_batch_softmax
from jaxir.models import hf
from jaxir.models.bert import PRESETS, Model
from jaxir.training import family as family_lib
from jaxir.training.loop import InitMismatchError, _check_weights, collection_dir

ROOT = pathlib.Path(__file__).parents[2]
CONFIG = ROOT / "configs" / "dense_tiny.py"


class BagOfWords(nnx.Module):
    """``normalize(mean(embed(ids)) @ projection)``: trainable table, frozen projection."""

    def __init__(self, vocab_size: int, *, rngs: nnx.Rngs):
        self.table = nnx.Param(0.1 * jax.random.normal(rngs.params(), (vocab_size, 16)))
        self.projection = Frozen(jax.random.normal(rngs.params(), (16, 16)))

    def __call__(self, ids_bl, mask_bl):
        m = mask_bl.astype(jnp.float32)[..., None]
        pooled = (self.table[...][ids_bl] * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
        v = pooled @ self.projection[...]
        return v / jnp.linalg.norm(v, axis=-1, keepdims=True).clip(1e-6)


class ToyFamily:
    """A retriever family written outside jaxir: only the protocol, nothing registered in the core."""

    def __init__(self, config):
        self.max_length = config.data.max_passage_length

    def init_model(self, *, vocab_size, rngs):
        return BagOfWords(vocab_size, rngs=rngs)

    def pretrained(self, model):
        return None

    def loss(self, model, batch, rngs):
        q = model(batch["query_ids"], batch["query_mask"])
        ids, mask = batch["passage_ids"], batch["passage_mask"]
        p = model(ids.reshape(-1, ids.shape[-1]), mask.reshape(-1, ids.shape[-1]))
        loss = in_batch_softmax(q, p, temperature=0.1, group_size=ids.shape[1])
        return loss, {"table_norm": jnp.linalg.norm(model.table[...])}

    def training_data(self, groups, tokenizer):
        return TrainingData.build(
            groups, tokenizer, max_query_length=self.max_length, max_passage_length=self.max_length
        )

    def validation_set(self, queries, rows, qrels, tokenizer):
        return None

    def validate(self, model, dev, *, progress=False):
        return {"nDCG@10": 0.0}

    def save(self, model, directory, tokenizer):
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "table.npy", np.asarray(model.table[...]))
        np.save(directory / "projection.npy", np.asarray(model.projection[...]))


def plain_sgd(spec, schedule, labels):
    """A registered optimizer: SGD with no momentum and no weight decay."""
    return optax.sgd(schedule)


@pytest.fixture
def toy_registered():
    family_lib.register_family("toy", ToyFamily)
    optim.register_optimizer("plain_sgd", plain_sgd)
    yield
    del family_lib.FAMILIES["toy"]
    del optim.OPTIMIZERS["plain_sgd"]


def test_a_new_family_and_optimizer_train_through_the_public_loop(tmp_path, toy_registered):
    config = override(
        load_config(CONFIG),
        ["family=toy", "optim.kind=plain_sgd", "train.steps=6", "train.learning_rate=0.5"],
    )
    result = jaxir.train(config, tmp_path, progress=False)
    assert result.steps == 6
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("table_norm" in r for r in records)  # the family's aux metric is logged
    assert records[-1]["loss"] < records[0]["loss"]
    model_dir = result.model_dir
    initial = BagOfWords(
        len(load_tokenizer(tmp_path / "tokenizer", check_contract=False)),
        rngs=nnx.Rngs(config.train.seed),
    )
    np.testing.assert_array_equal(  # frozen: bit-identical after training
        np.load(model_dir / "projection.npy"), np.asarray(initial.projection[...])
    )
    assert not np.array_equal(np.load(model_dir / "table.npy"), np.asarray(initial.table[...]))


def test_unknown_family_names_the_registered_ones(tmp_path):
    config = override(load_config(CONFIG), ["family=nope"])
    with pytest.raises(
        ValueError, match=r"family='nope' is not a registered retriever family.*dense"
    ):
        jaxir.train(config, tmp_path, progress=False)


def test_label_free_training_on_inverse_cloze_groups_with_bm25_negatives(tmp_path):
    config = override(
        load_config(CONFIG),
        ["data.train_groups=ict", "data.validation_queries=0", "train.steps=2"],
    )
    result = jaxir.train(config, tmp_path, progress=False)
    assert result.steps == 2 and result.validation == {}
    groups = read_groups(tmp_path / "groups.jsonl")
    corpus = load_corpus(collection_dir(config, tmp_path))
    docs = {d.full_text for d in corpus.values()}
    assert len(groups) > len(corpus) // 2  # one group per document with two sentences
    assert sum(bool(g.negatives) for g in groups) > len(groups) // 2  # BM25 negatives
    assert all(n in docs for g in groups for n in g.negatives)


def test_init_from_a_bert_checkpoint_with_a_pooler_trains(tmp_path, capsys):
    config = load_config(CONFIG)
    beir = collection_dir(config, tmp_path / "run")
    tokenizer = train_wordpiece(
        (d.full_text for d in load_corpus(beir).values()),
        tmp_path / "bert",
        vocab_size=600,
    )
    encoder = Model(
        PRESETS["tiny"].replace(vocab_size=len(tokenizer), pooler=True, mlm_head=True),
        rngs=nnx.Rngs(3),
    )
    hf.save_pretrained(encoder, tmp_path / "bert")
    config = override(config, [f"model.init={tmp_path / 'bert'}", "train.steps=2"])
    result = jaxir.train(config, tmp_path / "run", progress=False)
    assert "dropped: pooler, MLM head" in capsys.readouterr().out
    assert result.steps == 2
    trained = hf.load_pretrained(result.model_dir / "query")
    assert trained.pooler is None and trained.mlm is None


def test_init_weights_that_do_not_fit_name_the_source_and_keys():
    small = nnx.state(Model(PRESETS["tiny"].replace(mlm_head=False), rngs=nnx.Rngs(0)))
    wide = nnx.state(
        Model(PRESETS["tiny"].replace(mlm_head=False, vocab_size=99), rngs=nnx.Rngs(0))
    )
    with pytest.raises(
        InitMismatchError,
        match=r"(?s)ckpt-dir: .*shape.*embeddings/word/embedding: \(99, 32\) vs \(128, 32\)",
    ):
        _check_weights(small, wide, "ckpt-dir")
    _check_weights(small, small, "ckpt-dir")


class GuardedToyFamily(ToyFamily):
    """ToyFamily whose loss reports the step it sees and whose guard stops at step 3."""

    def loss(self, model, batch, rngs):
        loss, aux = super().loss(model, batch, rngs)
        return loss, aux | {"seen_step": batch["step"].astype(jnp.float32).mean()}

    def check_metrics(self, step, metrics):
        if step == 3:
            raise family_lib.TrainingGuardError(f"stopped at step {step}")


def test_the_loss_sees_the_step_and_a_guard_stops_training(tmp_path):
    family_lib.register_family("guarded", GuardedToyFamily)
    try:
        config = override(load_config(CONFIG), ["family=guarded", "train.steps=6"])
        with pytest.raises(family_lib.TrainingGuardError, match="stopped at step 3"):
            jaxir.train(config, tmp_path, progress=False)
    finally:
        del family_lib.FAMILIES["guarded"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # Steps 1-2 were logged with the optimizer step their batch carried (0 and 1).
    assert [r["seen_step"] for r in records] == [0.0, 1.0]
