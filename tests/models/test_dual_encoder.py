"""Saving and loading dual encoders: one ``jaxir_encoder.json`` per tower, legacy layouts."""

import dataclasses
import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from jaxir.data.errors import DataError
from jaxir.encode import load_encoder
from jaxir.models import hf
from jaxir.models.dual_encoder import (
    is_dual_encoder_dir,
    load_dual_encoder,
    load_spec,
    save_dual_encoder,
    tower_dir,
)
from jaxir.reps.contract import CONTRACT_FILE, RoleContract, describe_tokenizer, read_contract
from tests.search.tiny import SPEC, bert_tokenizer, tiny_dual_encoder

SPEC_PREFIXED = dataclasses.replace(SPEC, query_prefix="query: ", passage_prefix="passage: ")
LEGACY_FILES = ("dual_encoder.json", "jaxir_tokenizer.json")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return bert_tokenizer(tmp_path_factory.mktemp("vocab"))


def prefixed_model(*, tied: bool, learned: float | None = None):
    """A tiny dual encoder with prefixes; ``learned``: a learned temperature set to that value."""
    model = tiny_dual_encoder(tied=tied)
    spec = dataclasses.replace(
        SPEC_PREFIXED, tied=tied, temperature=0.1, learn_temperature=learned is not None
    )
    model = type(model)(model.query_encoder, model.passage_encoder, spec)
    if learned is not None:  # as if training moved it from 0.1
        model.log_scale[...] = jnp.log(jnp.float32(1.0 / learned))
    return model


def files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def assert_same_vectors(a, b):
    ids = jnp.array([[2, 7, 9, 3, 0]])
    mask = ids > 0
    for name in ("encode_queries", "encode_passages"):
        np.testing.assert_allclose(
            getattr(a, name)(ids, mask), getattr(b, name)(ids, mask), atol=1e-6
        )
    np.testing.assert_allclose(a.scale(), b.scale(), rtol=1e-6)


def test_tied_round_trip_writes_one_contract_serving_both_roles(tokenizer, tmp_path):
    model = prefixed_model(tied=True, learned=0.07)
    save_dual_encoder(model, tmp_path / "m", tokenizer=tokenizer)
    root = tmp_path / "m"
    listed = files(root)
    assert all(f.startswith("query/") for f in listed)  # one tower, nothing at the root
    assert "query/jaxir_encoder.json" in listed and "query/model.safetensors" in listed
    assert not [f for f in listed if f.endswith(LEGACY_FILES)]
    contract = read_contract(root / "query")
    assert contract.roles == {
        "query": RoleContract("query: ", 16),
        "passage": RoleContract("passage: ", 32),
    }
    assert (contract.kind, contract.pooling, contract.normalize) == ("dense", "mean", True)
    assert contract.tokenizer == describe_tokenizer(tokenizer)
    assert contract.temperature == pytest.approx(0.07)

    assert is_dual_encoder_dir(root) and not is_dual_encoder_dir(root / "query")
    spec = load_spec(root)
    assert spec.temperature == pytest.approx(0.07) and spec.tied
    assert dataclasses.replace(spec, temperature=0.1) == dataclasses.replace(
        model.spec, learn_temperature=False
    )
    assert_same_vectors(load_dual_encoder(root), model)
    assert tower_dir(root, "passage") == root / "query"


def test_untied_round_trip_writes_one_contract_per_tower(tokenizer, tmp_path):
    model = prefixed_model(tied=False)
    root = tmp_path / "m"
    save_dual_encoder(model, root, tokenizer=tokenizer)
    assert not [f for f in files(root) if not f.startswith(("query/", "passage/"))]
    assert not [f for f in files(root) if f.endswith(LEGACY_FILES)]
    query, passage = read_contract(root / "query"), read_contract(root / "passage")
    assert query.roles == {"query": RoleContract("query: ", 16)}
    assert passage.roles == {"passage": RoleContract("passage: ", 32)}
    assert query.temperature == passage.temperature == pytest.approx(0.1)
    spec = load_spec(root)
    assert spec == model.spec and not spec.tied
    assert_same_vectors(load_dual_encoder(root), model)
    assert tower_dir(root, "passage") == root / "passage"


def test_load_encoder_defaults_from_the_contract_and_explicit_arguments_win(tokenizer, tmp_path):
    root = tmp_path / "m"
    save_dual_encoder(prefixed_model(tied=True), root / "tied", tokenizer=tokenizer)
    save_dual_encoder(prefixed_model(tied=False), root / "untied", tokenizer=tokenizer)
    settings = {"pooling": "mean", "normalize": True, "dtype": "float32"}
    query = {"max_length": 16, "prefix": "query: "} | settings
    passage = {"max_length": 32, "prefix": "passage: "} | settings
    assert load_encoder(root / "tied" / "query").settings == query  # a tied tower: queries
    assert load_encoder(root / "tied" / "query", role="passage").settings == passage
    assert load_encoder(root / "untied" / "query").settings == query
    assert load_encoder(root / "untied" / "passage").settings == passage  # its only role

    explicit = load_encoder(
        root / "tied" / "query",
        role="passage",
        pooling="cls",
        normalize=False,
        max_length=8,
        prefix="",
    )
    assert explicit.settings == {
        "pooling": "cls",
        "normalize": False,
        "max_length": 8,
        "prefix": "",
        "dtype": "float32",
    }
    with pytest.raises(DataError) as info:
        load_encoder(root / "untied" / "query", role="passage")
    assert str(root / "untied" / "query" / CONTRACT_FILE) in str(info.value)
    assert "encodes ['query'] only, not 'passage'" in str(info.value)


def test_a_tokenizer_that_disagrees_with_the_contract_fails_naming_the_file(tokenizer, tmp_path):
    root = tmp_path / "m"
    save_dual_encoder(prefixed_model(tied=True), root, tokenizer=tokenizer)
    tower = root / "query"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tower / name).unlink(missing_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cats", "purr"]
    (tower / "vocab.txt").write_text("\n".join(words) + "\n")  # another tokenizer
    with pytest.raises(DataError) as info:
        load_encoder(tower)
    message = str(info.value)
    assert message.startswith(f"{tower / CONTRACT_FILE}: tokenizer disagrees")
    assert f"vocab_size: contract {len(tokenizer)}, tokenizer {len(words)}" in message
    with pytest.raises(DataError, match="tokenizer disagrees"):
        load_encoder(tower, pooling="cls")  # explicit settings do not skip the check


def write_legacy(root, model, tokenizer):
    """The layout before per-tower contracts: dual_encoder.json + jaxir_tokenizer.json."""
    towers = {"query": model.query_encoder}
    if model.passage_encoder is not None:
        towers["passage"] = model.passage_encoder
    spec = model.spec
    for name, encoder in towers.items():
        hf.save_pretrained(encoder, root / name)
        tokenizer.save_pretrained(root / name)
        facts = describe_tokenizer(tokenizer)
        legacy = {
            "format": "jaxir_tokenizer/1",
            "max_length": getattr(spec, f"{name}_max_length"),
            "query_prefix": spec.query_prefix,
            "document_prefix": spec.passage_prefix,
            **facts,
        }
        (root / name / "jaxir_tokenizer.json").write_text(json.dumps(legacy))
    old_spec = dataclasses.asdict(spec) | {"temperature": float(1.0 / model.scale())}
    (root / "dual_encoder.json").write_text(
        json.dumps({"format": "jaxir-dual-encoder/1", "spec": old_spec})
    )


@pytest.mark.parametrize("tied", [True, False])
def test_a_legacy_directory_still_loads(tokenizer, tmp_path, tied):
    model = prefixed_model(tied=tied)
    root = tmp_path / "legacy"
    write_legacy(root, model, tokenizer)
    assert is_dual_encoder_dir(root)
    spec = load_spec(root)  # the old writer stored 1 / float32(scale)
    assert spec == dataclasses.replace(model.spec, temperature=spec.temperature)
    assert spec.temperature == pytest.approx(0.1)
    assert_same_vectors(load_dual_encoder(root), model)
    passage = tower_dir(root, "passage")
    assert load_encoder(passage, role="passage").settings["prefix"] == "passage: "
    assert load_encoder(root / "query").settings["max_length"] == 16

    # Saving over it leaves only the new layout.
    save_dual_encoder(load_dual_encoder(root), root, tokenizer=tokenizer)
    assert not [f for f in files(root) if f.endswith(LEGACY_FILES)]
    assert load_spec(root) == spec


def test_not_a_dual_encoder_directory_is_named(tmp_path):
    (tmp_path / "query").mkdir()
    assert not is_dual_encoder_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"query/jaxir_encoder.json: not found"):
        load_spec(tmp_path)
    shutil.rmtree(tmp_path / "query")
    with pytest.raises(ValueError, match="role must be one of"):
        tower_dir(tmp_path, "document")
