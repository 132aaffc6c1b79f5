"""Checkpoint families by ``config.json`` ``model_type``, and optional heads (pooler, MLM).

``load_pretrained`` picks the family from :data:`jaxir.models.hf.HF_FAMILIES`; a new
family is one ``register_family`` call. Checkpoints are tiny random ``transformers``
models (helpers shared with ``tests/parity``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxir.models import bert, hf  # noqa: E402
from tests.parity.conftest import FAMILIES, hf_config, perturbed  # noqa: E402
from tests.parity.test_encoders import padded_batch  # noqa: E402

ATOL = 1e-4
ALIAS = "test-bert-alias"
HAS_POOLER = {"bert": True, "roberta": True, "xlm-roberta": True, "distilbert": False}


def save(model, path):
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=FAMILIES)
def bare(request, tmp_path_factory):
    """(family, directory, torch model): a bare ``AutoModel`` (pooler where the family has one)."""
    family = request.param
    torch.manual_seed(0)
    model = perturbed(transformers.AutoModel.from_config(hf_config(family)), seed=3)
    return family, save(model, tmp_path_factory.mktemp(f"bare-{family}")), model


@pytest.fixture(scope="module", params=FAMILIES)
def mlm(request, tmp_path_factory):
    """(family, directory): a ``*ForMaskedLM`` checkpoint (MLM head, no pooler)."""
    family = request.param
    torch.manual_seed(0)
    model = perturbed(transformers.AutoModelForMaskedLM.from_config(hf_config(family)), seed=4)
    return family, save(model, tmp_path_factory.mktemp(f"mlm-{family}"))


@pytest.fixture(scope="module")
def bert_with_pooler(tmp_path_factory):
    torch.manual_seed(0)
    model = perturbed(transformers.BertModel(hf_config("bert")), seed=5)
    assert model.pooler is not None  # transformers' default: add_pooling_layer=True
    return save(model, tmp_path_factory.mktemp("bert-pooler")), model


@pytest.fixture(scope="module")
def bert_without_pooler(tmp_path_factory):
    torch.manual_seed(0)
    model = perturbed(transformers.BertModel(hf_config("bert"), add_pooling_layer=False), seed=6)
    return save(model, tmp_path_factory.mktemp("bert-no-pooler"))


@pytest.fixture
def alias():
    """Registers ``ALIAS`` as another name for the BERT family; removed afterwards."""

    def from_hf_config(config):
        return bert.from_hf_config({**config, "model_type": "bert"})

    family = dataclasses.replace(
        hf.HF_FAMILIES["bert"], model_type=ALIAS, from_hf_config=from_hf_config
    )
    hf.register_family(family)
    yield family
    del hf.HF_FAMILIES[ALIAS]


def with_model_type(src, dst, model_type):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["model_type"] = model_type
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def torch_forward(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))


# --- dispatch on model_type ------------------------------------------------------------------


def test_every_family_is_registered():
    assert set(FAMILIES) <= set(hf.HF_FAMILIES)
    for model_type, family in hf.HF_FAMILIES.items():
        assert family.model_type == model_type


def test_load_dispatches_on_model_type(bare):
    family, path, theirs = bare
    model = hf.load_pretrained(path)
    assert model.config.family == family
    assert model.config.type_vocab_size == (0 if family == "distilbert" else 2)
    assert model.config.position_offset == (2 if family in ("roberta", "xlm-roberta") else None)
    assert (model.pooler is not None) == HAS_POOLER[family]
    assert model.mlm is None

    ids, mask = padded_batch(family)
    want = torch_forward(theirs, ids, mask)
    hidden = model(jnp.asarray(ids), jnp.asarray(mask))
    real = mask.astype(bool)
    np.testing.assert_allclose(
        np.asarray(hidden)[real], want.last_hidden_state.numpy()[real], atol=ATOL, rtol=0
    )
    if HAS_POOLER[family]:
        np.testing.assert_allclose(
            np.asarray(model.pooler_output(hidden)), want.pooler_output.numpy(), atol=ATOL, rtol=0
        )


def test_load_builds_through_the_registered_family(bare, monkeypatch):
    """Replacing a registry entry changes what ``load_pretrained`` does: nothing is hard-coded."""
    family, path, _ = bare
    built = []
    registered = hf.HF_FAMILIES[family]

    def build(config, rngs):
        built.append(config)
        return registered.build(config, rngs)

    monkeypatch.setitem(hf.HF_FAMILIES, family, dataclasses.replace(registered, build=build))
    hf.load_pretrained(path)
    assert [c.family for c in built] == [family]


def test_unregistered_model_type_names_the_file_and_the_registered_types(
    bert_with_pooler, tmp_path
):
    path = with_model_type(bert_with_pooler[0], tmp_path / "t5", "t5")
    for call in (
        lambda: hf.load_pretrained(path),
        lambda: hf.encoder_config(path),
        lambda: hf.unused_heads(path, mlm_head=False, pooler=False),
    ):
        with pytest.raises(hf.CheckpointError) as err:
            call()
        message = str(err.value)
        assert str(path / "config.json") in message
        assert "'t5'" in message and "register_family" in message
        for model_type in hf.HF_FAMILIES:
            assert repr(model_type) in message


def test_missing_model_type_is_reported(bert_with_pooler, tmp_path):
    path = tmp_path / "no-type"
    shutil.copytree(bert_with_pooler[0], path)
    config = json.loads((path / "config.json").read_text())
    del config["model_type"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(hf.CheckpointError, match="'model_type' is None"):
        hf.load_pretrained(path)


def test_register_family_of_an_alias_loads_like_the_original(bert_with_pooler, tmp_path, alias):
    path = with_model_type(bert_with_pooler[0], tmp_path / "aliased", ALIAS)
    original = hf.load_pretrained(bert_with_pooler[0])
    aliased = hf.load_pretrained(path)
    assert aliased.config == original.config
    ids, mask = padded_batch("bert")
    np.testing.assert_array_equal(
        np.asarray(aliased(jnp.asarray(ids), jnp.asarray(mask))),
        np.asarray(original(jnp.asarray(ids), jnp.asarray(mask))),
    )
    assert hf.unused_heads(path, mlm_head=False, pooler=False) == ["pooler"]
    assert hf.family_for(ALIAS) is alias


def test_register_family_refuses_a_different_family_under_a_taken_type(alias):
    hf.register_family(alias)  # equal family again: no-op
    assert hf.HF_FAMILIES[ALIAS] is alias
    with pytest.raises(ValueError, match="already registered"):
        hf.register_family(dataclasses.replace(alias, base_prefix="other."))
    with pytest.raises(ValueError, match="already registered"):
        hf.register_family(dataclasses.replace(hf.HF_FAMILIES["roberta"], model_type="bert"))
    assert hf.HF_FAMILIES["bert"].base_prefix == "bert."


def test_family_for_an_unknown_type_names_the_registered_ones():
    with pytest.raises(ValueError, match="'t5' is not registered") as err:
        hf.family_for("t5")
    for model_type in hf.HF_FAMILIES:
        assert repr(model_type) in str(err.value)


# --- optional heads: pooler -------------------------------------------------------------------


def test_pooler_false_drops_a_checkpoint_pooler(bert_with_pooler):
    path, _ = bert_with_pooler
    model = hf.load_pretrained(path, pooler=False)
    assert model.pooler is None and not model.config.pooler
    with pytest.raises(ValueError, match="no pooler"):
        model.pooler_output(jnp.zeros((1, 2, 32)))
    assert hf.unused_heads(path, mlm_head=False, pooler=False) == ["pooler"]
    kept = hf.load_pretrained(path)
    ids, mask = padded_batch("bert")
    np.testing.assert_array_equal(
        np.asarray(model(jnp.asarray(ids), jnp.asarray(mask))),
        np.asarray(kept(jnp.asarray(ids), jnp.asarray(mask))),
    )


@pytest.mark.parametrize("pooler", [True, None])
def test_pooler_true_or_default_keeps_it(bert_with_pooler, pooler):
    path, theirs = bert_with_pooler
    model = hf.load_pretrained(path, pooler=pooler)
    assert model.pooler is not None and model.config.pooler
    assert hf.unused_heads(path, mlm_head=False, pooler=True) == []
    ids, mask = padded_batch("bert", seed=1)
    hidden = model(jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(
        np.asarray(model.pooler_output(hidden)),
        torch_forward(theirs, ids, mask).pooler_output.numpy(),
        atol=ATOL,
        rtol=0,
    )


def test_pooler_true_without_pooler_weights_is_a_clear_error(bert_without_pooler):
    with pytest.raises(
        hf.CheckpointError,
        match=r"pooler=True but the checkpoint has no pooler weights \(pooler\.\*\)",
    ) as err:
        hf.load_pretrained(bert_without_pooler, pooler=True)
    assert str(bert_without_pooler) in str(err.value)
    model = hf.load_pretrained(bert_without_pooler)  # default: keep what is there
    assert model.pooler is None
    assert hf.unused_heads(bert_without_pooler, mlm_head=False, pooler=False) == []


def test_pooler_true_on_a_family_without_poolers_says_so(tmp_path):
    torch.manual_seed(0)
    path = save(transformers.DistilBertModel(hf_config("distilbert")), tmp_path)
    with pytest.raises(hf.CheckpointError, match=r"distilbert has none"):
        hf.load_pretrained(path, pooler=True)


# --- optional heads: MLM ---------------------------------------------------------------------


def test_mlm_head_false_drops_the_head(mlm):
    family, path = mlm
    assert hf.unused_heads(path, mlm_head=False, pooler=False) == ["MLM head"]
    assert hf.unused_heads(path, mlm_head=True, pooler=False) == []
    dropped = hf.load_pretrained(path, mlm_head=False)
    assert dropped.mlm is None and not dropped.config.mlm_head
    kept = hf.load_pretrained(path, mlm_head=True)
    assert kept.mlm is not None and kept.config.mlm_head
    assert hf.load_pretrained(path).mlm is not None  # default keeps it
    ids, mask = padded_batch(family)
    np.testing.assert_array_equal(
        np.asarray(dropped(jnp.asarray(ids), jnp.asarray(mask))),
        np.asarray(kept(jnp.asarray(ids), jnp.asarray(mask))),
    )


def test_mlm_head_true_without_head_weights_is_a_clear_error(bare):
    _, path, _ = bare
    with pytest.raises(
        hf.CheckpointError, match="mlm_head=True but the checkpoint has no MLM head"
    ) as err:
        hf.load_pretrained(path, mlm_head=True)
    assert str(path) in str(err.value)


def test_pretraining_checkpoint_with_pooler_mlm_and_nsp(tmp_path):
    torch.manual_seed(0)
    path = save(perturbed(transformers.BertForPreTraining(hf_config("bert")), seed=7), tmp_path)
    assert "cls.seq_relationship.weight" in hf.checkpoint_keys(path)
    model = hf.load_pretrained(path)
    assert model.pooler is not None and model.mlm is not None
    assert hf.unused_heads(path, mlm_head=False, pooler=False) == ["pooler", "MLM head"]
    bare = hf.load_pretrained(path, mlm_head=False, pooler=False)
    assert bare.pooler is None and bare.mlm is None


def test_checkpoint_keys_lists_every_tensor_sorted(mlm):
    _, path = mlm
    keys = hf.checkpoint_keys(path)
    assert keys == sorted(hf.read_hf_weights(path))
